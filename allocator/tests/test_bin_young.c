/*
 * test_bin_young.c - a short-lived thread's bins stay small (tcache.c,
 * kp__bin_miss, KP_BIN_YOUNG): until its thread made KP_BIN_YOUNG operations
 * of its class per block of its start a bin does not grow past its start,
 * and a refill of a small class's bin takes a quarter of its start, not half.
 *
 * Issue 14, bench-thread-churn under the preload: waves of 8 threads of 400
 * operations each (64 blocks of 16-512 bytes live, 16 classes, 10-120
 * operations of each) cached 184 KiB in their bins with all 8 alive, beside
 * 143 KiB of live blocks: each bin's first refill took 8 blocks, and the
 * swings of a random walk doubled a few bins within their first dozens of
 * operations. Blocks cached are blocks the spans hold touched.
 *
 * 1. A fresh thread's first allocation of a class leaves at most a quarter
 *    of the bin's start in it (7 of 16 before).
 * 2. 8 such threads alive at once (a barrier): no bin grew past its start
 *    (bins of 384-512 B classes had grown to 16-20 blocks) and their bins
 *    hold at most 128 KiB (184 before).
 * 3. A thread that keeps using a class still grows its bin: a random walk of
 *    one class, 20,000 operations, takes it past its start.
 */
#define _GNU_SOURCE 1
/* Tests the thread caches' bins (tcache.c): every pool layout:inline (ktest.h, KT_LAYOUT_INLINE). */
#define KT_LAYOUT_INLINE 1
#include "ktest.h"

#include "internal.h"

#include <pthread.h>

#define CONF "primary_initial:4m,daemon:off,backup:0,seed:7"
#define THREADS 8
#define LIVE 64
#define OPS 400

static kp_pool *pool;
static pthread_barrier_t bar;
static _Atomic unsigned errors, grown;
static _Atomic size_t cached;

static kp__tcache *my_cache(void)
{
	kp__tcache *tc = kp__tls_state.tc[0];
	return tc && kp__tls_state.id[0] == pool->id ? tc : NULL;
}

static uint32_t start_of(unsigned cls)
{
	size_t start = KP_BIN_START_BYTES / kp__class_size[cls];
	return start < KP_BIN_LEAST ? KP_BIN_LEAST : start > KP_BIN_START ? KP_BIN_START : (uint32_t)start;
}

static void *first_refill(void *arg)
{
	(void)arg;
	for (unsigned cls = 0; cls < 12; cls++) {
		void *p = kp_alloc(pool, kp__class_size[cls] - 32, 0);
		kp__tcache *tc = my_cache();
		if (!p || !tc) {
			atomic_fetch_add(&errors, 1);
			continue;
		}
		const kp__bin *b = &tc->bin[kp__class_of(kp__class_size[cls] - 32 + KP_HDR + KP_CANARY)];
		CHECK(b->count + 1 <= (b->max / 4 ? b->max / 4 : 1), "class %u: a first refill left %u of %u", cls,
		      b->count, b->max);
		kp_free(pool, p);
	}
	return NULL;
}

static void test_first_refill(void)
{
	KT_POOL(p, CONF);
	pool = p;
	pthread_t t;
	REQUIRE(pthread_create(&t, NULL, first_refill, NULL) == 0, "thread");
	pthread_join(t, NULL);
	CHECK(atomic_load(&errors) == 0, "%u failed calls", atomic_load(&errors));
	kp_destroy(pool);
}

/* thread_churn's worker: a random walk of 64 live blocks of 16-512 bytes */
static void *churn(void *arg)
{
	uint64_t seed = 0xA0761D6478BD642FULL ^ (uint64_t)(uintptr_t)arg;
	char *live[LIVE] = {0};
	pthread_barrier_wait(&bar);
	for (int i = 0; i < OPS; i++) {
		size_t n = 16 + (size_t)(kt_xorshift(&seed) % 497), k = (size_t)(kt_xorshift(&seed) % LIVE);
		if (live[k] && kp_free(pool, live[k]) != 0)
			atomic_fetch_add(&errors, 1);
		if (!(live[k] = kp_alloc(pool, n, 0)))
			atomic_fetch_add(&errors, 1);
	}
	kp__tcache *tc = my_cache();
	if (tc)
		for (unsigned c = 0; c < KP_NCLASS; c++) {
			const kp__bin *b = &tc->bin[c];
			atomic_fetch_add(&cached, (size_t)b->count * kp__class_size[c]);
			if (b->max > start_of(c)) {
				atomic_fetch_add(&grown, 1);
				printf("   class %u: bin of %u blocks after %llu operations (start %u)\n", c, b->max,
				       (unsigned long long)(b->allocs + b->frees), start_of(c));
			}
		}
	pthread_barrier_wait(&bar); /* every thread counted its bins with all alive */
	for (int k = 0; k < LIVE; k++)
		if (live[k])
			kp_free(pool, live[k]);
	return NULL;
}

static void test_short_threads(void)
{
	KT_POOL(p, CONF);
	pool = p;
	REQUIRE(pthread_barrier_init(&bar, NULL, THREADS) == 0, "barrier");
	pthread_t t[THREADS];
	for (uintptr_t i = 0; i < THREADS; i++)
		REQUIRE(pthread_create(&t[i], NULL, churn, (void *)i) == 0, "thread");
	for (int i = 0; i < THREADS; i++)
		pthread_join(t[i], NULL);
	printf("   %d threads' bins: %zu KiB cached, %u grown\n", THREADS, atomic_load(&cached) >> 10,
	       atomic_load(&grown));
	CHECK(atomic_load(&grown) == 0, "%u bins grew in threads of %d operations", atomic_load(&grown), OPS);
	CHECK(atomic_load(&cached) <= (size_t)128 << 10, "%zu KiB cached by %d short threads",
	      atomic_load(&cached) >> 10, THREADS);
	CHECK(atomic_load(&errors) == 0, "%u failed calls", atomic_load(&errors));
	pthread_barrier_destroy(&bar);
	kp_destroy(pool);
}

static void test_busy_bin_grows(void)
{
	KT_POOL(p, CONF);
	pool = p;
	enum { N = 48 };
	static char *v[N];
	uint64_t seed = 99;
	size_t req = 100;
	for (int i = 0; i < 20000; i++) {
		size_t k = (size_t)(kt_xorshift(&seed) % N);
		if (v[k]) {
			kp_free(pool, v[k]);
			v[k] = NULL;
		} else {
			v[k] = kp_alloc(pool, req, 0);
			REQUIRE(v[k] != NULL, "alloc");
		}
	}
	unsigned cls = kp__class_of(req + KP_HDR + KP_CANARY);
	kp__tcache *tc = my_cache();
	REQUIRE(tc != NULL, "no cache");
	printf("   a busy bin: %u blocks (start %u)\n", tc->bin[cls].max, start_of(cls));
	CHECK(tc->bin[cls].max > start_of(cls), "a busy bin did not grow: %u", tc->bin[cls].max);
	for (int k = 0; k < N; k++)
		if (v[k])
			kp_free(pool, v[k]);
	kp_destroy(pool);
}

int main(void)
{
	RUN(test_first_refill);
	RUN(test_short_threads);
	RUN(test_busy_bin_grows);
	return ktest_summary();
}
