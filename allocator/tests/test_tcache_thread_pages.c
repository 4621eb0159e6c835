/*
 * test_tcache_thread_pages.c - the pages a short-lived thread's cache
 * touches (issue 14's memory target, bench-thread-churn under the preload):
 * a thread that uses the classes of 16-512 byte requests for a few hundred
 * operations, its bins at their start, touches two pages of its cache: the
 * bins with their stack pointers and counts, and its bins' key stacks with
 * the first rows. Before, a cache's fields for one class were spread over
 * 6.7 KiB (bins, then stack pointers, counts and key stacks at strides of
 * 76 classes) and the caches were not page-aligned (306,240 bytes each), so
 * such a thread touched 3-5 pages: 8 threads alive at once held 120 KiB of
 * caches, thread_churn's 8 workers up to 136 KiB.
 *
 * 1. 8 threads alive at once (a barrier), each walking 16 classes at random
 *    as thread_churn does: their caches hold at most 2 pages each (+1 for a
 *    grown bin's row that crosses into a third).
 * 2. Waves of such threads reuse the caches the last wave left, with the
 *    pages they touched: after 20 waves the caches are still at most 2
 *    pages each, and no more caches than threads alive at once were made.
 */
#define _GNU_SOURCE 1
/* Tests the thread caches' bins (tcache.c): every pool layout:inline (ktest.h, KT_LAYOUT_INLINE). */
#define KT_LAYOUT_INLINE 1
#include "ktest.h"

#include "internal.h"

#include <pthread.h>

#define CONF "primary_initial:4m,daemon:off,backup:0,seed:11"
#define THREADS 8
#define LIVE 64
#define OPS 400

static kp_pool *pool;
static pthread_barrier_t bar;
static _Atomic unsigned errors;

/* thread_churn's worker: a random walk of 64 live blocks of 16-512 bytes */
static void *worker(void *arg)
{
	uint64_t seed = 0xA0761D6478BD642FULL ^ (uint64_t)(uintptr_t)arg;
	char *live[LIVE] = {0};
	pthread_barrier_wait(&bar); /* every thread alive before any works */
	for (int i = 0; i < OPS; i++) {
		size_t n = 16 + (size_t)(kt_xorshift(&seed) % 497), k = (size_t)(kt_xorshift(&seed) % LIVE);
		if (live[k] && kp_free(pool, live[k]) != 0)
			atomic_fetch_add(&errors, 1);
		if (!(live[k] = kp_alloc(pool, n, 0)))
			atomic_fetch_add(&errors, 1);
		else
			memset(live[k], 1, n < 32 ? n : 32);
	}
	pthread_barrier_wait(&bar); /* the caches at their fullest: counted now */
	pthread_barrier_wait(&bar);
	for (int k = 0; k < LIVE; k++)
		if (live[k])
			kp_free(pool, live[k]);
	return NULL;
}

static size_t cache_pages(void)
{
	size_t page = (size_t)sysconf(_SC_PAGESIZE), n = KP_TC_CHUNK * sizeof(kp__tcache), pages = 0;
	const size_t slice = (size_t)1 << 20; /* kt_not_resident reads at most 4096 pages at once */
	for (size_t i = 0; i < pool->tc_nchunks; i++)
		for (size_t at = 0; at < n; at += slice) {
			size_t len = n - at < slice ? n - at : slice;
			pages += (len + page - 1) / page - kt_not_resident((char *)pool->tc_chunks[i] + at, len);
		}
	return pages;
}

static unsigned caches_made(void)
{
	unsigned n = 0;
	for (kp__tcache *tc = pool->tcaches; tc; tc = tc->next)
		n++;
	for (kp__tcache *tc = pool->tc_free; tc; tc = tc->next)
		n++;
	return n;
}

/* One wave of THREADS workers; returns the caches' resident pages while
 * they were all alive. */
static size_t wave(void)
{
	pthread_t t[THREADS];
	for (uintptr_t i = 0; i < THREADS; i++)
		if (pthread_create(&t[i], NULL, worker, (void *)i) != 0)
			return 0;
	pthread_barrier_wait(&bar);
	pthread_barrier_wait(&bar);
	size_t pages = cache_pages();
	pthread_barrier_wait(&bar);
	for (int i = 0; i < THREADS; i++)
		pthread_join(t[i], NULL);
	return pages;
}

static void test_thread_pages(void)
{
	pool = kp_create(CONF);
	REQUIRE(pool != NULL, "kp_create: %s", kp_last_error());
	REQUIRE(pthread_barrier_init(&bar, NULL, THREADS + 1) == 0, "barrier");
	size_t page = (size_t)sysconf(_SC_PAGESIZE);
	size_t first = wave(), most = first;
	printf("   %d threads alive: %zu pages of caches (%zu bytes a cache)\n", THREADS, first, sizeof(kp__tcache));
	CHECK(first > 0, "no cache resident: the test does not test caches");
	CHECK(first <= 2 * THREADS + 1, "%zu pages of caches for %d threads (%zu KiB)", first, THREADS,
	      first * page >> 10);
	for (int w = 0; w < 20; w++) {
		size_t p = wave();
		most = p > most ? p : most;
	}
	printf("   after 20 more waves: at most %zu pages, %u caches made\n", most, caches_made());
	CHECK(most <= 2 * THREADS + 1, "%zu pages of caches for %d threads", most, THREADS);
	CHECK(caches_made() <= THREADS + 1, "%u caches made for waves of %d threads", caches_made(), THREADS);
	CHECK(atomic_load(&errors) == 0, "%u failed calls", atomic_load(&errors));
	CHECK(kt_stat(pool, "integrity.freelist_errors") == 0, "a false alarm");
	pthread_barrier_destroy(&bar);
	kp_destroy(pool);
}

int main(void)
{
	RUN(test_thread_pages);
	return ktest_summary();
}
