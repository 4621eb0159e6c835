/*
 * test_bin_drift.c - a bin grows for the swings of its count, not for a
 * drift (tcache.c, kp__bin_miss): while a thread's heap grows (a table of
 * objects filled: a class's bin runs empty again and again, every miss a
 * refill) its bins stay small, and in a table churned at random afterwards,
 * by another thread (the Larson server pattern: most objects freed by a
 * thread other than the one that allocated them), they hold what the
 * churn's swings need.
 *
 * Issue 14, bench-larson under the preload: 11.5 MiB of peak RSS against
 * glibc's 7.9. Each of its four threads' bins of the 640-1024 B classes grew
 * to 192-256 blocks in the first round (its table filling, misses that were
 * all refills, quick ones) and stayed there, holding 500-800 KiB a thread
 * through the rest of the run.
 *
 * 1. A thread fills most of a table of SLOTS slots (a random slot's object
 *    freed, a new one of 616-1000 bytes allocated, as Larson does): its
 *    bins of those classes stay under half their cap of 256 blocks (they
 *    reached it before; the swings of a bin that starts at 4-6 blocks grow
 *    it to 40-80).
 * 2. Another thread churns the same table (every free is of a block the
 *    first thread allocated): the bytes its bins of those classes hold,
 *    sampled through the churn, average at most MEAN_HELD (a guard: 121-124
 *    KiB before and after).
 */
#define _GNU_SOURCE 1
/* Tests the thread caches' bins (tcache.c): every pool layout:inline (ktest.h, KT_LAYOUT_INLINE). */
#define KT_LAYOUT_INLINE 1
#include "ktest.h"

#include "internal.h"

#include <pthread.h>

#define CONF "primary_initial:16m,daemon:off,backup:0,seed:29"
#define SLOTS 4000
#define FILL_OPS 6000
#define CHURN_OPS 200000
/* 4 classes of 640-1024 B, each a random walk of +-1 a step with
 * probability 1/4: swings of tens of blocks, so a bin of 64 misses about
 * every few thousand of its operations. */
#define MEAN_HELD ((size_t)160 << 10)

static kp_pool *pool;
static char *table[SLOTS];

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

static const size_t lo = 616, hi = 1000; /* classes 640 to 1024 */

static unsigned replace(uint64_t *seed)
{
	size_t k = rnext(seed) % SLOTS, n = lo + rnext(seed) % (hi - lo + 1);
	kp_free(pool, table[k]);
	table[k] = kp_alloc(pool, n, 0);
	if (!table[k])
		return 1;
	memset(table[k], 1, 64);
	return 0;
}

/* The bins of the table's classes in this thread's cache: the largest max
 * and the bytes held now. */
static void bins(uint32_t *most, size_t *held)
{
	kp__tcache *tc = my_cache();
	*most = 0;
	*held = 0;
	if (!tc)
		return;
	for (unsigned c = kp__class_of(lo + KP_HDR + KP_CANARY); c <= kp__class_of(hi + KP_HDR + KP_CANARY); c++) {
		*most = tc->bin[c].max > *most ? tc->bin[c].max : *most;
		*held += (size_t)tc->bin[c].count * kp__class_size[c];
	}
}

static uint32_t fill_max;
static size_t churn_mean, churn_peak;
static unsigned failures;

static void *filler(void *arg)
{
	(void)arg;
	uint64_t seed = 0x9e3779b97f4a7c15ull;
	size_t held;
	for (unsigned i = 0; i < FILL_OPS; i++)
		failures += replace(&seed);
	bins(&fill_max, &held);
	printf("   filler: largest bin %u blocks, %zu KiB held\n", fill_max, held >> 10);
	return NULL;
}

static void *churner(void *arg)
{
	(void)arg;
	uint64_t seed = 0x2545f4914f6cdd1dull, sum = 0, samples = 0;
	uint32_t most = 0;
	for (unsigned i = 0; i < CHURN_OPS; i++) {
		failures += replace(&seed);
		if (i % 64 == 0) {
			size_t held;
			bins(&most, &held);
			sum += held;
			samples++;
			churn_peak = held > churn_peak ? held : churn_peak;
		}
	}
	churn_mean = (size_t)(sum / samples);
	printf("   churner: largest bin %u blocks, held %zu KiB on average, %zu at most\n", most, churn_mean >> 10,
	       churn_peak >> 10);
	return NULL;
}

static void test_larson_pattern(void)
{
	pool = kp_create(CONF);
	REQUIRE(pool, "kp_create: %s", kp_last_error());
	pthread_t t;
	REQUIRE(pthread_create(&t, NULL, filler, NULL) == 0, "pthread_create");
	pthread_join(t, NULL);
	REQUIRE(pthread_create(&t, NULL, churner, NULL) == 0, "pthread_create");
	pthread_join(t, NULL);
	CHECK(failures == 0, "%u allocations failed", failures);
	CHECK(fill_max < 128, "a bin grew to %u blocks while its thread's table filled", fill_max);
	CHECK(churn_mean <= MEAN_HELD, "the churning thread's bins held %zu KiB on average (at most %zu)",
	      churn_mean >> 10, MEAN_HELD >> 10);
	for (unsigned k = 0; k < SLOTS; k++)
		kp_free(pool, table[k]);
	kp_destroy(pool);
}

int main(void)
{
	RUN(test_larson_pattern);
	return ktest_summary();
}
