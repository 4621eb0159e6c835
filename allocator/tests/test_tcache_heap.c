/*
 * test_tcache_heap.c - a thread's bins grow with the heap, not to the whole
 * tcache_bytes budget (tcache.c, tc_budget: KP_TC_OUT_SHARE,
 * KP_TC_OUT_FLOOR).
 *
 * Issue 14, bench-small-objects under the preload (one thread, a working set
 * of 1,000 objects of 8-256 bytes, each step frees a random one and
 * allocates another): its peak RSS was 1.16x glibc's. Its bins grew by 288
 * KiB in all (every one of its 11 classes to 256 blocks) over a heap of
 * about 170 KiB, and what a bin held at its fullest stayed touched in its
 * class's span.
 *
 * 1. One thread replaces random slots of a table of LIVE objects of 8-256
 *    bytes for STEPS steps: its bins grew by at most GROWN_MAX bytes (288
 *    KiB before; the bound allows 64 KiB, or a quarter of what the pool
 *    handed out, and one class's last doubling past it), and the bytes they
 *    hold, sampled through the second half, average at most MEAN_HELD
 *    (87 KiB before, 43 now).
 */
#define _GNU_SOURCE 1
/* Tests the thread caches' bins (tcache.c): every pool layout:inline (ktest.h, KT_LAYOUT_INLINE). */
#define KT_LAYOUT_INLINE 1
#include "ktest.h"

#include "internal.h"

#define CONF "primary_initial:16m,daemon:off,backup:0,seed:31"
#define LIVE 1000
#define STEPS 4000000
#define GROWN_MAX ((size_t)96 << 10)
#define MEAN_HELD ((size_t)64 << 10)

static kp_pool *pool;
static char *table[LIVE];

static uint64_t rnext(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

static kp__tcache *my_cache(void)
{
	kp__tcache *tc = kp__tls_state.tc[0];
	return tc && kp__tls_state.id[0] == pool->id ? tc : NULL;
}

static size_t held(void)
{
	kp__tcache *tc = my_cache();
	size_t n = 0;
	for (unsigned c = 0; tc && c < KP_NCLASS; c++)
		n += (size_t)tc->bin[c].count * kp__class_size[c];
	return n;
}

static void test_small_heap(void)
{
	pool = kp_create(CONF);
	REQUIRE(pool, "kp_create: %s", kp_last_error());
	uint64_t seed = 42, sum = 0, samples = 0;
	unsigned failures = 0;
	for (unsigned i = 0; i < STEPS; i++) {
		size_t k = rnext(&seed) % LIVE, n = 8 + rnext(&seed) % 249;
		kp_free(pool, table[k]);
		if (!(table[k] = kp_alloc(pool, n, 0)))
			failures++;
		else
			table[k][0] = (char)n;
		if (i >= STEPS / 2 && i % 64 == 0) {
			sum += held();
			samples++;
		}
	}
	kp__tcache *tc = my_cache();
	REQUIRE(tc, "no cache");
	size_t mean = (size_t)(sum / samples), grown = tc->grown;
	printf("   bins grew by %zu KiB, held %zu KiB on average over the second half\n", grown >> 10, mean >> 10);
	CHECK(failures == 0, "%u allocations failed", failures);
	CHECK(grown <= GROWN_MAX, "the bins grew by %zu KiB (at most %zu)", grown >> 10, GROWN_MAX >> 10);
	CHECK(mean <= MEAN_HELD, "the bins held %zu KiB on average (at most %zu)", mean >> 10, MEAN_HELD >> 10);
	for (unsigned k = 0; k < LIVE; k++)
		kp_free(pool, table[k]);
	kp_destroy(pool);
}

int main(void)
{
	RUN(test_small_heap);
	return ktest_summary();
}
