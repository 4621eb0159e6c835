/*
 * test_large_reuse_attack3.c - large blocks taking the run a large block of
 * their length last held (primary.c, units_take pass 0, units_give's
 * KP_LAST_LARGE + n mark; a run realloc moved away from leaves none), under
 * churn: attacks that held.
 *
 * Two threads allocate large blocks (the lengths of a few units, so that
 * runs of the same length come back often), grow and shrink them with
 * kp_realloc (in place and by moving), take aligned ones, and free them,
 * while the daemon purges and shrinks (decay_ms 0, a pass every ms). Every
 * block carries a pattern of its own (salted by a serial, at a stride):
 * checked before each realloc and free and at the end, so a run handed to
 * two blocks, or reused while live, or purged under a live block (its pages
 * read back as zeros), shows. And no two live blocks overlap (checked over
 * all of them at the end of each round), no integrity event.
 */
#define _GNU_SOURCE 1
#include "ktest.h"

#include "internal.h"

#include <pthread.h>

#define CONF "primary_initial:16m,primary_max:256m,daemon_interval_ms:1,decay_ms:0,backup:0,seed:21"
#define NW 2
#define SLOTS 48
#define ROUNDS 6
#define OPS (KT_SANITIZED ? 1200 : 3000)
#define STRIDE 509

static kp_pool *pool;
static atomic_uint bad;

typedef struct blk {
	unsigned char *p;
	size_t n;
	uint64_t salt;
} blk;

static blk all[NW][SLOTS];

static unsigned char pat(uint64_t salt, size_t i)
{
	uint64_t x = salt * 0x9E3779B97F4A7C15ull ^ (uint64_t)i * 0xff51afd7ed558ccdull;
	return (unsigned char)(x >> 56 ^ x >> 17 ^ 1); /* never the same run of zeros */
}

static void put(blk *b)
{
	for (size_t i = 0; i < b->n; i += STRIDE)
		b->p[i] = pat(b->salt, i);
	b->p[b->n - 1] = pat(b->salt, b->n - 1);
}

static bool ok(const blk *b, size_t upto)
{
	for (size_t i = 0; i < upto; i += STRIDE)
		if (b->p[i] != pat(b->salt, i))
			return false;
	return upto == b->n ? b->p[b->n - 1] == pat(b->salt, b->n - 1) : true;
}

static size_t a_size(uint64_t *s)
{
	/* 1-6 units, most often exactly a unit count less a header's worth */
	size_t units = kt_rand_range(s, 2, 7);
	size_t n = units * KP_UNIT_SIZE - (kt_rand_range(s, 0, 3) ? 64 : kt_rand_range(s, 64, 40000));
	return n < KP_SMALL_MAX + 1 ? KP_SMALL_MAX + 1 : n;
}

static void *worker(void *arg)
{
	unsigned w = (unsigned)(uintptr_t)arg;
	blk *v = all[w];
	uint64_t s = w * 1000003ull + 7, serial = (uint64_t)w << 40;
	for (unsigned op = 0; op < OPS; op++) {
		blk *b = &v[kt_rand_range(&s, 0, SLOTS - 1)];
		unsigned what = (unsigned)kt_rand_range(&s, 0, 5);
		if (b->p && what < 2) { /* realloc: grow or shrink */
			if (!ok(b, b->n))
				atomic_fetch_add(&bad, 1);
			size_t n = a_size(&s);
			unsigned char *q = kp_realloc(pool, b->p, n, 0);
			if (!q) {
				atomic_fetch_add(&bad, 1);
				continue;
			}
			b->p = q;
			if (!ok(b, n < b->n ? n : b->n))
				atomic_fetch_add(&bad, 1);
			b->n = n;
			b->salt = ++serial;
			put(b);
			continue;
		}
		if (b->p) {
			if (!ok(b, b->n))
				atomic_fetch_add(&bad, 1);
			if (kp_free(pool, b->p) != 0)
				atomic_fetch_add(&bad, 1);
			b->p = NULL;
		}
		size_t n = a_size(&s);
		b->p = what == 5 ? kp_alloc_aligned(pool, n, 4096, 0) : kp_alloc(pool, n, 0);
		if (!b->p) {
			atomic_fetch_add(&bad, 1);
			continue;
		}
		if (what == 5 && ((uintptr_t)b->p & 4095))
			atomic_fetch_add(&bad, 1);
		b->n = n;
		b->salt = ++serial;
		put(b);
	}
	return NULL;
}

static int by_addr(const void *a, const void *b)
{
	const blk *x = a, *y = b;
	return x->p < y->p ? -1 : x->p > y->p;
}

static void test_large_churn(void)
{
	pool = kp_create(CONF);
	REQUIRE(pool, "kp_create: %s", kp_last_error());
	unsigned overlaps = 0, broken = 0;
	for (unsigned r = 0; r < ROUNDS; r++) {
		pthread_t t[NW];
		for (uintptr_t i = 0; i < NW; i++)
			REQUIRE(pthread_create(&t[i], NULL, worker, (void *)i) == 0, "thread");
		for (int i = 0; i < NW; i++)
			pthread_join(t[i], NULL);
		blk live[NW * SLOTS];
		unsigned n = 0;
		for (int w = 0; w < NW; w++)
			for (int i = 0; i < SLOTS; i++)
				if (all[w][i].p) {
					broken += !ok(&all[w][i], all[w][i].n);
					live[n++] = all[w][i];
				}
		qsort(live, n, sizeof *live, by_addr);
		for (unsigned i = 1; i < n; i++)
			overlaps += live[i - 1].p + live[i - 1].n > live[i].p;
		kt_sleep_ms(5); /* the daemon purges what is free */
	}
	printf("   %u rounds of %u ops on %d threads: %u bad blocks, %u at the end, %u overlaps; %lld large allocs\n",
	       ROUNDS, OPS, NW, atomic_load(&bad), broken, overlaps, (long long)kt_stat(pool, "primary.allocs"));
	CHECK(atomic_load(&bad) == 0, "%u blocks changed, refused or misaligned", atomic_load(&bad));
	CHECK(broken == 0 && overlaps == 0, "%u blocks changed, %u overlap", broken, overlaps);
	CHECK(kt_stat(pool, "integrity.corruptions") == 0 && kt_stat(pool, "integrity.freelist_errors") == 0,
	      "integrity events");
	for (int w = 0; w < NW; w++)
		for (int i = 0; i < SLOTS; i++)
			if (all[w][i].p)
				CHECK(kp_free(pool, all[w][i].p) == 0, "final free");
	kp_destroy(pool);
}

int main(void)
{
	RUN(test_large_churn);
	return ktest_summary();
}
