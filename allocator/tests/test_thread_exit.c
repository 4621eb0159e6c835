/*
 * test_thread_exit.c - thread caches end with their threads, however late a
 * thread uses the pool (issue 12, defect 5): a thread whose own TLS
 * destructor, run after libkpool's exit hook, frees or allocates was given a
 * fresh cache that nobody released; after 4,096 such threads the pool had no
 * cache left and kp_alloc returned NULL in every new thread although the pool
 * had memory. Now a call made after the hook is served without a cache (the
 * shared path), and so is any call for which no cache can be made.
 *
 * KT_THREADS=<n> sets the number of short threads (default 5000: more than
 * the 4,096 caches a pool can have, so that the test failed before the fix in
 * every build; it takes about 1 s in release and a few under TSan).
 */
#include "ktest.h"

#include <pthread.h>

static kp_pool *pool;
static pthread_key_t late_key;
static unsigned long late_errors, late_calls;

/* The program's own destructor, registered after libkpool's: it frees the
 * block the thread left, allocates and frees again. */
static void late_dtor(void *arg)
{
	__atomic_fetch_add(&late_calls, 1, __ATOMIC_RELAXED);
	if (kp_free(pool, arg) != 0)
		__atomic_fetch_add(&late_errors, 1, __ATOMIC_RELAXED);
	void *q = kp_alloc(pool, 100, 0), *r = kp_alloc(pool, 300000, 0);
	if (!q || !r)
		__atomic_fetch_add(&late_errors, 1, __ATOMIC_RELAXED);
	if (kp_free(pool, q) != 0 || kp_free(pool, r) != 0)
		__atomic_fetch_add(&late_errors, 1, __ATOMIC_RELAXED);
}

static void *short_thread(void *arg)
{
	void *p = kp_alloc(pool, 64, 0);
	if (!p)
		__atomic_fetch_add(&late_errors, 1, __ATOMIC_RELAXED);
	pthread_setspecific(late_key, p ? p : arg);
	return NULL;
}

static void *probe_thread(void *arg)
{
	void *p = kp_alloc(pool, 64, 0);
	*(int *)arg = p != NULL;
	kp_free(pool, p);
	return NULL;
}

static unsigned nthreads(void)
{
	const char *v = getenv("KT_THREADS");
	return v && atoi(v) > 0 ? (unsigned)atoi(v) : 5000;
}

static void test_late_destructor_threads(void)
{
	pool = kp_create("primary_initial:8m,daemon:off,seed:5");
	REQUIRE(pool, "kp_create: %s", kp_last_error());
	kp_free(pool, kp_alloc(pool, 64, 0)); /* libkpool's exit key exists from here */
	REQUIRE(pthread_key_create(&late_key, late_dtor) == 0, "pthread_key_create");
	unsigned n = nthreads();
	/* Four at a time: short threads on two cores, without waiting on each. */
	for (unsigned i = 0; i < n; i += 4) {
		pthread_t th[4];
		unsigned k = 0;
		for (; k < 4 && i + k < n; k++)
			REQUIRE(pthread_create(&th[k], NULL, short_thread, NULL) == 0, "pthread_create %u", i + k);
		while (k)
			pthread_join(th[--k], NULL);
	}
	CHECK(late_calls == n, "%lu late destructors ran, not %u", late_calls, n);
	CHECK(late_errors == 0, "%lu of %u threads failed an alloc or free (in the thread or its late destructor)",
	      late_errors, n);
	int ok = 0;
	pthread_t th;
	REQUIRE(pthread_create(&th, NULL, probe_thread, &ok) == 0, "pthread_create");
	pthread_join(th, NULL);
	CHECK(ok, "a new thread's kp_alloc returned NULL after %u threads with late destructors", n);
	char *js = kt_stats(pool);
	int64_t threads = kt_json_int(js, "threads", -1);
	CHECK(threads >= 0 && threads <= 1, "%lld live thread caches after every thread but main ended (%u threads)",
	      (long long)threads, n);
	/* every block came back, whichever path served it */
	int64_t a = kt_json_int(js, "primary.allocs", -1), f = kt_json_int(js, "primary.frees", -1);
	CHECK(a == f && a >= 3 * (int64_t)n, "primary allocs %lld, frees %lld after %u threads", (long long)a,
	      (long long)f, n);
	CHECK(kt_json_int(js, "primary.in_use_bytes", -1) == 0, "in_use_bytes %lld with no live block",
	      (long long)kt_json_int(js, "primary.in_use_bytes", -1));
	free(js);
	pthread_key_delete(late_key);
	kp_destroy(pool);
}

/* More threads alive at once than there are caches to give (the first chunk
 * of 64, with every later mmap refused): each is served all the same. 64 MiB
 * mapped at creation and the smallest thread caches: room for every block
 * and every cache's batches without growing. */
#define CROWD 80
static pthread_barrier_t crowd_in, crowd_out;
static unsigned long crowd_fail;

static void *crowd_thread(void *arg)
{
	pthread_barrier_wait(&crowd_in); /* every thread alive before any allocates */
	void *p[4] = {kp_alloc(pool, 48, 0), kp_alloc(pool, 5000, KP_ZERO), kp_alloc(pool, 200000, 0),
		      kp_realloc(pool, NULL, 700, 0)};
	for (int i = 0; i < 4; i++)
		if (!p[i])
			__atomic_fetch_add(&crowd_fail, 1, __ATOMIC_RELAXED);
	void *q = p[3] ? kp_realloc(pool, p[3], 3000, 0) : NULL;
	if (q)
		p[3] = q;
	else
		__atomic_fetch_add(&crowd_fail, 1, __ATOMIC_RELAXED);
	pthread_barrier_wait(&crowd_out); /* every thread holds its cache (or has none) */
	for (int i = 0; i < 4; i++)
		if (p[i] && kp_free(pool, p[i]) != 0)
			__atomic_fetch_add(&crowd_fail, 1, __ATOMIC_RELAXED);
	return NULL;
}

static void test_served_without_a_cache(void)
{
	pool = kp_create("primary_initial:64m,tcache_bytes:0,daemon:off,seed:6");
	REQUIRE(pool, "kp_create: %s", kp_last_error());
	REQUIRE(kp_fault_inject(pool, "mmap@every=1") == 0, "fault spec: %s", kp_last_error());
	pthread_barrier_init(&crowd_in, NULL, CROWD);
	pthread_barrier_init(&crowd_out, NULL, CROWD);
	pthread_t th[CROWD];
	for (int i = 0; i < CROWD; i++)
		REQUIRE(pthread_create(&th[i], NULL, crowd_thread, NULL) == 0, "pthread_create %d", i);
	for (int i = 0; i < CROWD; i++)
		pthread_join(th[i], NULL);
	CHECK(crowd_fail == 0, "%lu calls failed with %d threads and caches for 64 (no cache could be made)",
	      crowd_fail, CROWD);
	kp_fault_inject(pool, "all@off");
	char *js = kt_stats(pool);
	REQUIRE(js, "kp_stats_json");
	CHECK(kt_json_int(js, "primary.allocs", -1) == kt_json_int(js, "primary.frees", -2),
	      "allocs and frees disagree: %s", js);
	CHECK(kt_json_int(js, "threads", -1) == 0, "live caches after every thread ended: %s", js);
	free(js);
	kp_destroy(pool);
}

int main(void)
{
	RUN(test_late_destructor_threads);
	RUN(test_served_without_a_cache);
	return ktest_summary();
}
