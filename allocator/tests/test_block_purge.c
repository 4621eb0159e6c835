/*
 * test_block_purge.c - the pages inside free blocks given back (issue 14,
 * point 2: peak RSS on kpbench's workload b).
 *
 * kp__primary_purge gave back free units only. A span of a big class that
 * keeps one live block never goes back to the units, and its free blocks
 * kept every page a former occupant wrote: on workload b (16 B-64 KiB, 10000
 * live blocks, the first and last byte of each written) 9 MiB of the 71 MiB
 * peak were pages of free blocks, and 23 MiB pages inside live blocks that a
 * former occupant of the block had written at another offset. The daemon
 * now gives back the whole pages inside free blocks of the big classes that
 * stayed free in the central lists from one checkpoint to the next (primary.c,
 * "purging free blocks").
 *
 *   - stepped: 40 KiB blocks, every page written, every other one freed (no
 *     span empties, so no unit goes back); passes driven by kp_daemon_step:
 *     the freed blocks' inner pages are not resident (mincore), the stats
 *     count what was given back, idle passes make no more madvise calls, the
 *     live blocks hold every byte, and the freed blocks serve again (their
 *     contents, and KP_ZERO's zeros);
 *   - poison: with poisoning on, a free block's payload is checked on reuse,
 *     so it is not given back (the check would see zeros);
 *   - racing: one thread allocates, fills, checks and frees big blocks while
 *     the main thread drives passes (the daemon takes blocks off the lists
 *     while that thread takes and returns them): no block loses a byte.
 */
#define _GNU_SOURCE
/* Tests the inline primary's segments, spans and units (primary.c): every pool layout:inline (ktest.h, KT_LAYOUT_INLINE). */
#define KT_LAYOUT_INLINE 1
#include "ktest.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <sys/mman.h>

#define KiB ((size_t)1 << 10)
#define PAGE ((size_t)4096)
#define BLK (40 * KiB - 64) /* the 40 KiB class: ten pages, a span of five units holds eight */
#define NBLK 512	    /* 20 MiB */

static char *blk[NBLK];

/* Resident pages among the whole pages inside [p, p + n). */
static size_t resident_pages(const char *p, size_t n, size_t *whole)
{
	uintptr_t a = ((uintptr_t)p + PAGE - 1) & ~(uintptr_t)(PAGE - 1);
	uintptr_t e = ((uintptr_t)p + n) & ~(uintptr_t)(PAGE - 1);
	unsigned char vec[64];
	*whole = e > a ? (e - a) / PAGE : 0;
	if (e <= a || (e - a) / PAGE > sizeof vec || mincore((void *)a, e - a, vec) != 0)
		return 0;
	size_t r = 0;
	for (size_t i = 0; i < (e - a) / PAGE; i++)
		r += vec[i] & 1;
	return r;
}

/* Share (%) of the freed blocks' whole pages still resident, past their
 * first 64 bytes (the header, the list link: the allocator's words). */
static unsigned freed_resident_pct(void)
{
	size_t r = 0, all = 0;
	for (unsigned i = 1; i < NBLK; i += 2) {
		size_t w;
		r += resident_pages(blk[i] + 64, BLK - 64, &w);
		all += w;
	}
	return all ? (unsigned)(r * 100 / all) : 100;
}

/* Take NBLK blocks, write every byte, free every other one. */
static void take_and_free_half(kp_pool *pool)
{
	for (unsigned i = 0; i < NBLK; i++) {
		blk[i] = kp_alloc(pool, BLK, 0);
		REQUIRE(blk[i] != NULL, "kp_alloc: %s", kp_last_error());
		kt_fill(blk[i], BLK, i);
	}
	for (unsigned i = 1; i < NBLK; i += 2)
		CHECK(kp_free(pool, blk[i]) == 0, "kp_free: %s", kp_last_error());
	kp_thread_flush(pool); /* the cached blocks go back to their spans */
}

static void check_kept(kp_pool *pool, bool free_them)
{
	unsigned bad = 0;
	for (unsigned i = 0; i < NBLK; i += 2) {
		bad += kt_verify(blk[i], BLK, i) != KT_OK;
		if (free_them)
			CHECK(kp_free(pool, blk[i]) == 0, "kp_free: %s", kp_last_error());
	}
	CHECK(bad == 0, "%u live blocks lost bytes to the purge", bad);
}

/* The freed blocks serve again: half of them filled and checked, half
 * taken with KP_ZERO (every byte zero, purged pages or not). */
static void reuse(kp_pool *pool)
{
	static char *p[NBLK / 2];
	unsigned bad = 0, dirty = 0, fails = 0;
	for (unsigned i = 0; i < NBLK / 2; i++) {
		p[i] = kp_alloc(pool, BLK, i % 2 ? KP_ZERO : 0);
		if (p[i] == NULL) {
			fails++;
			continue;
		}
		if (i % 2)
			for (size_t k = 0; k < BLK; k++)
				dirty += p[i][k] != 0;
		kt_fill(p[i], BLK, 1000 + i);
	}
	for (unsigned i = 0; i < NBLK / 2; i++) {
		if (p[i] == NULL)
			continue;
		bad += kt_verify(p[i], BLK, 1000 + i) != KT_OK;
		bad += kp_free(pool, p[i]) != 0;
	}
	CHECK(fails == 0, "%u allocations failed after the purge", fails);
	CHECK(dirty == 0, "%u bytes of KP_ZERO blocks were not zero", dirty);
	CHECK(bad == 0, "%u blocks served from purged ones lost bytes or failed to free", bad);
}

static void test_stepped(void)
{
	kp_pool *pool = kp_create("daemon:off,prefault:off,seed:11"); /* RSS: no headroom faulted in */
	REQUIRE(pool != NULL, "kp_create: %s", kp_last_error());
	kp_daemon_step(pool, 0);
	take_and_free_half(pool);
	long rss1 = kt_rss_kb();
	unsigned pct0 = freed_resident_pct();
	int64_t purged0 = kt_stat(pool, "primary.purged_bytes");
	for (int i = 0; i < 4; i++)
		kp_daemon_step(pool, 100);
	long rss2 = kt_rss_kb();
	unsigned pct = freed_resident_pct();
	int64_t purged = kt_stat(pool, "primary.purged_bytes") - purged0;
	int64_t madv = kt_stat(pool, "syscalls.daemon.madvise");
	for (int i = 0; i < 4; i++)
		kp_daemon_step(pool, 100);
	int64_t madv2 = kt_stat(pool, "syscalls.daemon.madvise");
	printf("   freed blocks' pages resident: %u%% before the passes, %u%% after; RSS %ld -> %ld KiB; "
	       "purged %lld KiB; daemon madvise %lld, %lld after 4 idle passes\n",
	       pct0, pct, rss1, rss2, (long long)purged / 1024, (long long)madv, (long long)madv2);
	CHECK(pct <= 5, "%u%% of the free blocks' inner pages still resident after 400 ms free", pct);
	/* 256 blocks of nine whole inner pages, at least 8 of them given back */
	CHECK(purged >= (int64_t)(NBLK / 2 * 8 * PAGE), "primary.purged_bytes grew by %lld", (long long)purged);
	CHECK(madv2 == madv, "idle passes made %lld madvise calls (the same blocks purged again?)",
	      (long long)(madv2 - madv));
	if (!KT_SANITIZED)
		CHECK(rss1 - rss2 >= (long)(NBLK / 2 * 8 * PAGE / KiB), "RSS fell by %ld KiB only", rss1 - rss2);
	check_kept(pool, false);
	reuse(pool);
	check_kept(pool, true);
	kp_destroy(pool);
}

static void test_poison_keeps(void)
{
	kp_pool *pool = kp_create("daemon:off,poison:on,seed:12");
	REQUIRE(pool != NULL, "kp_create: %s", kp_last_error());
	kp_daemon_step(pool, 0);
	take_and_free_half(pool);
	for (int i = 0; i < 4; i++)
		kp_daemon_step(pool, 100);
	int64_t uaf = kt_stat(pool, "integrity.use_after_frees");
	reuse(pool);
	CHECK(kt_stat(pool, "integrity.use_after_frees") == uaf, "poisoned blocks reported written after free");
	check_kept(pool, true);
	kp_destroy(pool);
}

struct racer {
	kp_pool *pool;
	_Atomic int stop;
	_Atomic unsigned long iters;
	unsigned bad, fails;
};

/* Big blocks of a few classes, each filled, kept a while, checked, freed. */
static void *racer_main(void *arg)
{
	struct racer *r = arg;
	enum { LIVE = 48 };
	char *p[LIVE] = {0};
	size_t n[LIVE] = {0};
	uint64_t seed = 99, salt = 0;
	while (!atomic_load(&r->stop)) {
		unsigned i = (unsigned)kt_rand_range(&seed, 0, LIVE - 1);
		if (p[i]) {
			r->bad += kt_verify(p[i], n[i], (uintptr_t)p[i] ^ n[i]) != KT_OK;
			kp_free(r->pool, p[i]);
		}
		n[i] = kt_rand_range(&seed, 16 * KiB, 64 * KiB);
		p[i] = kp_alloc(r->pool, n[i], salt++ % 4 ? 0 : KP_ZERO);
		if (!p[i]) {
			r->fails++;
			continue;
		}
		kt_fill(p[i], n[i], (uintptr_t)p[i] ^ n[i]);
		atomic_fetch_add(&r->iters, 1);
		if (salt % 64 == 0)
			kp_thread_flush(r->pool); /* blocks back to the spans, where the daemon sees them */
	}
	for (unsigned i = 0; i < LIVE; i++)
		if (p[i]) {
			r->bad += kt_verify(p[i], n[i], (uintptr_t)p[i] ^ n[i]) != KT_OK;
			kp_free(r->pool, p[i]);
		}
	return NULL;
}

static void test_racing(void)
{
	struct racer r = {.pool = kp_create("daemon:off,seed:13")};
	REQUIRE(r.pool != NULL, "kp_create: %s", kp_last_error());
	pthread_t t;
	REQUIRE(pthread_create(&t, NULL, racer_main, &r) == 0, "pthread_create");
	/* a pass (20 ms on the pool's clock: a checkpoint) every few blocks
	 * the racer takes, until it has taken enough */
	unsigned long want = KT_SANITIZED ? 5000 : 50000;
	unsigned passes = 0;
	while (atomic_load(&r.iters) < want) {
		kp_daemon_step(r.pool, 20);
		passes++;
	}
	atomic_store(&r.stop, 1);
	pthread_join(t, NULL);
	int64_t purged = kt_stat(r.pool, "primary.purged_bytes");
	printf("   %u passes; purged %lld KiB; %u bad blocks, %u failed allocations\n", passes,
	       (long long)purged / 1024, r.bad, r.fails);
	CHECK(r.bad == 0, "%u blocks lost bytes while the daemon purged", r.bad);
	CHECK(r.fails == 0, "%u allocations failed", r.fails);
	CHECK(kt_stat(r.pool, "integrity.corruptions") == 0 && kt_stat(r.pool, "integrity.freelist_errors") == 0,
	      "integrity events while purging");
	kp_destroy(r.pool);
}

int main(void)
{
	RUN(test_stepped);
	RUN(test_poison_keeps);
	RUN(test_racing);
	return ktest_summary();
}
