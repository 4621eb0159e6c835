/*
 * test_bin_walk.c - a bin whose count walks at random stays near the size
 * the walk needs (tcache.c, kp__bin_miss): it does not ratchet up to its cap
 * over a long run.
 *
 * Issue 14, bench-small-objects under the preload (one thread, a working set
 * of 1,000 objects of 8-256 bytes, each step frees a random one and
 * allocates another): its peak RSS was 1.16x glibc's. Growth takes a swing
 * whose window is under KP_BIN_GROW x max operations; a random walk of
 * max blocks usually needs (max / 2)^2, but now and then comes in under it,
 * and a bin never shrank: after 20M steps every one of its 11 classes' bins
 * stood at 256 blocks (row_used 3,136 keys, grown 288 KiB), holding about
 * 90 KiB more of the thread's blocks (peak in use 270 KiB against 181 with
 * no growth) and 25 KiB of key rows.
 *
 * 1. One thread replaces random slots of a table of LIVE objects of 8-256
 *    bytes for STEPS steps: the bytes its bins hold, sampled through the
 *    second half, average at most MEAN_HELD (the largest bin is printed).
 */
#define _GNU_SOURCE 1
#include "ktest.h"

#include "internal.h"

#define CONF "primary_initial:16m,daemon:off,backup:0,seed:31"
#define LIVE 1000
#define STEPS 4000000
/* 87 KiB before the shrink (KP_BIN_SHRINK), 55 with it */
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

static void bins(uint32_t *most, size_t *held)
{
	kp__tcache *tc = kp__tls_state.tc[0];
	*most = 0;
	*held = 0;
	if (!tc || kp__tls_state.id[0] != pool->id)
		return;
	for (unsigned c = 0; c <= kp__class_of(256 + KP_HDR + KP_CANARY); c++) {
		*most = tc->bin[c].max > *most ? tc->bin[c].max : *most;
		*held += (size_t)tc->bin[c].count * kp__class_size[c];
	}
}

static void test_random_walk(void)
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
			uint32_t most;
			size_t held;
			bins(&most, &held);
			sum += held;
			samples++;
		}
	}
	uint32_t most;
	size_t held;
	bins(&most, &held);
	size_t mean = (size_t)(sum / samples);
	printf("   largest bin %u blocks, held %zu KiB on average over the second half\n", most, mean >> 10);
	CHECK(failures == 0, "%u allocations failed", failures);
	CHECK(mean <= MEAN_HELD, "the bins held %zu KiB on average (at most %zu)", mean >> 10, MEAN_HELD >> 10);
	for (unsigned k = 0; k < LIVE; k++)
		kp_free(pool, table[k]);
	kp_destroy(pool);
}

int main(void)
{
	RUN(test_random_walk);
	return ktest_summary();
}
