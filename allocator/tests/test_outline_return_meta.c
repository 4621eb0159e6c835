/*
 * test_outline_return_meta.c - a segment given back (outline.c,
 * return_idle) and taken again starts with metadata all zero: the records
 * of blocks never handed out read free (OL_FREE, 0), as span_extend and
 * every free's double-free test assume.
 *
 * Before (s27-span): return_idle purged a segment's metadata from the
 * first page past its record (meta_after_record), but its spans' arrays
 * start within the record's last page (meta_first): the first ~4 KiB of
 * stacks, links and records stayed as the segment's last spans left them.
 * A span made there with another layout found old stack entries in its
 * records: blocks never handed out read live, so a free of one was taken
 * (pushed onto the stack, no event) and the block was handed out twice
 * (here, on main a4e5691: 49 of 49 such records not zero, kp_free of a
 * block never handed out returned 0, then kp_alloc returned it twice).
 * s27-small's short spans (a heap's first span of a class 128 blocks)
 * put most spans' records in that page: 8,345 spans made over stale
 * metadata in 1,500 generations of test_outline_purge_live_attack27.
 *
 * Deterministic: checks off (no canary test: the stale state alone
 * decides), daemon off, the passes driven by kp_daemon_step on the
 * pool's own clock (step_clock).
 */
#define _GNU_SOURCE 1
#include "ktest.h"
#include "outline.h"

#include <pthread.h>

/* The first span of a segment: 2048 blocks of 16 bytes, freed, so that its
 * stack entries (2 bytes each, indices 0..2047) cover the segment's
 * metadata from its first span's arrays (meta_first) past the end of the
 * record's page. */
#define OLD_N 2048
#define OLD_SIZE 8
/* The next first span there: blocks of 1,000 bytes (the 1 KiB class, 64
 * blocks a slice), its records where the old stack was. */
#define NEW_SIZE 1000
#define NEW_BLOCKS 64
/* What takes the spares ahead of the segment given back: blocks of the
 * 64 KiB class, two spans of 32 slices a segment. */
#define CHEW_SIZE 65000

static kp_pool *pool;

/* REQUIRE in a thread's function */
#define NREQUIRE(cond, ...)               \
	do {                              \
		CHECK(cond, __VA_ARGS__); \
		if (!(cond))              \
			return NULL;      \
	} while (0)

static void *old_span(void *arg)
{
	(void)arg;
	static void *p[OLD_N];
	for (int i = 0; i < OLD_N; i++)
		p[i] = kp_alloc(pool, OLD_SIZE, 0);
	for (int i = 0; i < OLD_N; i++)
		kp_free(pool, p[i]);
	return NULL; /* its heap abandoned: the span listed, the segment let go */
}

static int by_addr(const void *a, const void *b)
{
	const uint8_t *x = *(uint8_t *const *)a, *y = *(uint8_t *const *)b;
	return x < y ? -1 : x > y;
}

/* The block of NEW_SIZE bytes a new heap takes first, and its span: made
 * in the segment given back (arg). */
static void *new_span(void *arg)
{
	kp__ol *ol = pool->ol;
	uint8_t *first = kp_alloc(pool, NEW_SIZE, 0);
	NREQUIRE(first && (uint8_t *)kp__ol_meta_of(pool, first) == (uint8_t *)arg,
		 "the block of %d B is not in the segment given back", NEW_SIZE);
	struct ol_span *pg = kp__ol_map_span(ol->map, (uintptr_t)first >> OL_SLICE_SHIFT);
	NREQUIRE(pg && pg->nblocks == NEW_BLOCKS && pg->start == first, "not the segment's first span of %d blocks",
		 NEW_BLOCKS);
	uint32_t stale = 0;
	for (uint32_t i = pg->fresh; i <= pg->nblocks; i++)
		stale += pg->rec[i].state != OL_FREE || pg->rec[i].canary != 0;
	CHECK(stale == 0, "%u of the %u records of blocks never handed out (and the sentinel) not zero", stale,
	      pg->nblocks + 1 - pg->fresh);
	/* a free of a block never handed out (nor made: past fresh): an
	 * invalid free (its record free) */
	kt_events_clear(pool);
	uint8_t *never = first + (size_t)(NEW_BLOCKS - 2) * pg->bsize;
	CHECK(kp_free(pool, never) != 0, "a free of a block never handed out taken");
	CHECK(kt_events_count(pool, KP_EV_INVALID_FREE) == 1, "no invalid free reported for it");
	/* and no block handed out twice */
	static uint8_t *got[2 * NEW_BLOCKS];
	got[0] = first;
	for (int i = 1; i < 2 * NEW_BLOCKS; i++)
		got[i] = kp_alloc(pool, NEW_SIZE, 0);
	qsort(got, 2 * NEW_BLOCKS, sizeof got[0], by_addr);
	int twice = 0;
	for (int i = 1; i < 2 * NEW_BLOCKS; i++)
		twice += got[i] && got[i] == got[i - 1];
	CHECK(twice == 0, "%d blocks handed out twice", twice);
	for (int i = 0; i < 2 * NEW_BLOCKS; i++)
		if (got[i] && (i == 0 || got[i] != got[i - 1]))
			kp_free(pool, got[i]);
	return NULL;
}

static void test_records_zero_after_return(void)
{
	pool = kp_create("layout:outline,daemon:off,step_clock:on,seed:3,decay_ms:1000,checks:off");
	REQUIRE(pool, "kp_create: %s", kp_last_error());
	kp__ol *ol = pool->ol;
	pthread_t t;
	pthread_create(&t, NULL, old_span, NULL);
	pthread_join(t, NULL);
	/* seen idle, then back decay_ms later (the pool's clock: its steps),
	 * onto the spares, at their tail, idle for decay_ms already: not
	 * decayed in this pass */
	kp_daemon_step(pool, 1);
	kp_daemon_step(pool, 1000);
	REQUIRE(atomic_load(&ol->returned) == 1, "%llu segments given back, not 1",
		(unsigned long long)atomic_load(&ol->returned));
	struct ol_seg *back = ol->spare;
	while (back && !back->used)
		back = back->next; /* the one spare whose spans were carved */
	REQUIRE(back, "the segment given back is not among the spares");
	/* the spares ahead of it taken (no pass runs meanwhile: none decays) */
	static void *chew[4096];
	int nchew = 0;
	while (ol->spare != back && nchew < 4096 && (chew[nchew] = kp_alloc(pool, CHEW_SIZE, 0)) != NULL)
		nchew++;
	REQUIRE(ol->spare == back, "the segment given back not at the spares' head after %d blocks", nchew);
	/* the next span is made there: by a heap with no segment yet (the
	 * main thread's has room in its last) */
	pthread_create(&t, NULL, new_span, back);
	pthread_join(t, NULL);
	for (int i = 0; i < nchew; i++)
		kp_free(pool, chew[i]);
	kp_destroy(pool);
}

int main(void)
{
	RUN(test_records_zero_after_return);
	return ktest_summary();
}
