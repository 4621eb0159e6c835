/*
 * test_xfer_count_thread.c - the transfer cache's counts (stats
 * "transfer": parked, taken, full, empty) of two threads that free each
 * other's blocks (kpbench c) are written in their own thread caches, not
 * in the pool's shared counters, and the stats report the same totals.
 *
 * Up to 21fec7b every park and every take bumped its class's counter in the
 * pool (pool->xfer_count[cls], 40 bytes a class, packed: two or three
 * classes to a cache line), and a peek that found no room or nothing
 * parked did so with an atomic add: a line both CPUs write, once per batch
 * each way (kpbench c --ops 3000000: 86-99K such writes in its 6.3M
 * allocations, parks and takes 97-98% of them, besides the class lock's
 * own line). Now each thread cache counts its own
 * (kp__tcache.xcount, written by its thread alone), the pool's counters
 * keep what exited threads left (folded in by kp__tcache_release) and
 * what the shared path and kp__xfer_drain did, and kp_stats sums both.
 *
 * Threads A and B, kept alive between phases: phase p, one of them
 * (alternately) allocates N blocks of 16-256 bytes (kpbench c's sizes),
 * then the other frees them all. Phases are separated by barriers and the
 * daemon is off, so the run is the same every time and so are its counts:
 * TOTALS, measured at 21fec7b before the counters moved.
 *   1. The pool's shared counters hold nothing while both threads live
 *      (21fec7b: every count the run made, 2,398).
 *   2. The stats' totals are TOTALS, while the threads live and after
 *      they exit, when the pool's counters hold them all.
 */
/* Tests the transfer cache and central lists (transfer.c, tcache.c): every pool layout:inline (ktest.h, KT_LAYOUT_INLINE). */
#define KT_LAYOUT_INLINE 1
#include "ktest.h"

#include "internal.h"

#include <pthread.h>

#define CONF "primary_initial:16m,daemon:off,backup:0,seed:41"
#define N 4096
#define PHASES 8
/* parked, taken, full, empty of this run at 21fec7b, the counters still
 * in the pool (per class); the same on every run, in every build (the
 * phases are serialised, nothing else allocates, the daemon is off). A
 * change of what the transfer cache does (its room, the bins' sizes)
 * changes them: measure them again on the commit before that change,
 * which must agree with the one after it on where they are kept. */
static const uint64_t TOTALS[4] = {229, 199, 943, 1027};
static const char *const NAMES[4] = {"transfer.parked", "transfer.taken", "transfer.full", "transfer.empty"};

static kp_pool *pool;
static char *blocks[N];
static pthread_barrier_t turn;
static atomic_int failed;

static size_t size_of(unsigned p, unsigned i)
{
	uint32_t x = (p * N + i) * 2654435761u;
	return 16 + (x >> 8) % 241; /* 16-256 bytes */
}

static void *worker(void *arg)
{
	unsigned me = (unsigned)(uintptr_t)arg;
	for (unsigned p = 0; p < PHASES; p++) {
		if (p % 2 == me)
			for (unsigned i = 0; i < N; i++)
				if (!(blocks[i] = kp_alloc(pool, size_of(p, i), 0)))
					atomic_store(&failed, 1);
		pthread_barrier_wait(&turn);
		if (p % 2 != me)
			for (unsigned i = 0; i < N; i++)
				if (blocks[i] && kp_free(pool, blocks[i]) != 0)
					atomic_store(&failed, 1);
		pthread_barrier_wait(&turn);
	}
	pthread_barrier_wait(&turn); /* the main thread reads the counts, both caches alive */
	pthread_barrier_wait(&turn);
	return NULL;
}

/* Every word of the pool's own transfer counters, summed (whatever their
 * layout: each an _Atomic uint64_t). */
static uint64_t pool_words(void)
{
	const _Atomic uint64_t *w = (const _Atomic uint64_t *)(const void *)&pool->xfer_count;
	size_t words = sizeof pool->xfer_count / 8, sum = 0;
	for (size_t i = 0; i < words; i++)
		sum += atomic_load_explicit(&w[i], memory_order_relaxed);
	return sum;
}

static uint64_t totals(uint64_t got[4])
{
	uint64_t sum = 0;
	for (unsigned k = 0; k < 4; k++)
		sum += got[k] = (uint64_t)kt_stat(pool, NAMES[k]);
	return sum;
}

static void test_cross_counts_stay_in_the_thread_caches(void)
{
	pool = kp_create(CONF);
	REQUIRE(pool, "kp_create: %s", kp_last_error());
	uint64_t before = pool_words();
	pthread_barrier_init(&turn, NULL, 3);
	pthread_t t[2];
	for (unsigned i = 0; i < 2; i++)
		REQUIRE(pthread_create(&t[i], NULL, worker, (void *)(uintptr_t)i) == 0, "pthread_create");
	for (unsigned p = 0; p < PHASES; p++) {
		pthread_barrier_wait(&turn);
		pthread_barrier_wait(&turn);
	}
	pthread_barrier_wait(&turn);
	uint64_t live[4], live_sum = totals(live), shared = pool_words() - before;
	pthread_barrier_wait(&turn);
	for (unsigned i = 0; i < 2; i++)
		pthread_join(t[i], NULL);
	uint64_t gone[4], gone_sum = totals(gone), folded = pool_words() - before;
	uint64_t returned = (uint64_t)kt_stat(pool, "transfer.returned");
	printf("   both threads alive: parked %llu taken %llu full %llu empty %llu; pool's counters %llu\n",
	       (unsigned long long)live[0], (unsigned long long)live[1], (unsigned long long)live[2],
	       (unsigned long long)live[3], (unsigned long long)shared);
	printf("   after they exit:    parked %llu taken %llu full %llu empty %llu; pool's counters %llu\n",
	       (unsigned long long)gone[0], (unsigned long long)gone[1], (unsigned long long)gone[2],
	       (unsigned long long)gone[3], (unsigned long long)folded);
	CHECK(!atomic_load(&failed), "an allocation or a free failed");
	CHECK(live[0] > 100 && live[1] > 100, "the run parked %llu and took %llu batches: no hand-off to count",
	      (unsigned long long)live[0], (unsigned long long)live[1]);
	CHECK(shared == 0,
	      "the pool's shared counters took %llu writes' worth while both threads cached (want 0: "
	      "each thread counts in its own cache)",
	      (unsigned long long)shared);
	for (unsigned k = 0; k < 4; k++) {
		CHECK(live[k] == TOTALS[k], "%s %llu with both threads alive, 21fec7b's run %llu", NAMES[k],
		      (unsigned long long)live[k], (unsigned long long)TOTALS[k]);
		CHECK(gone[k] == live[k], "%s %llu after the threads exit, %llu before", NAMES[k],
		      (unsigned long long)gone[k], (unsigned long long)live[k]);
	}
	CHECK(folded == gone_sum + returned, "the pool's counters hold %llu after the threads exit, the stats %llu",
	      (unsigned long long)folded, (unsigned long long)(gone_sum + returned));
	(void)live_sum;
	pthread_barrier_destroy(&turn);
	CHECK(kt_stat(pool, "integrity.freelist_errors") == 0, "freelist errors");
	kp_destroy(pool);
}

int main(void)
{
	RUN(test_cross_counts_stay_in_the_thread_caches);
	return ktest_summary();
}
