/*
 * test_grace_exit_attack.c - the grace fast record (kp__grace_tls.fast) at
 * thread exit: 1,500 threads, one after another and two at a time, each
 * free blocks on its fast record, then at exit free and allocate again from
 * thread-exit destructors that run before the grace record's (a key made
 * before the pool's first use) and after it (a key made after). Every call
 * succeeds (after its record is given back a thread counts itself shared),
 * the records are given back (the last threads still claim a record of
 * their own and make it fast: the table of 1,024 is not used up), and a
 * segment released meanwhile is still reclaimed (no record left holding an
 * epoch: kp_destroy returns).
 */
/* Tests the inline fast paths and their slot and grace words (alloc.c, kp__tls): every pool layout:inline (ktest.h, KT_LAYOUT_INLINE). */
#define KT_LAYOUT_INLINE 1
#include "ktest.h"

#include "internal.h"

#include <pthread.h>

#define THREADS 1500

static kp_pool *pool;
static pthread_key_t early, late;
static atomic_uint failures, no_fast;

static void at_exit_free(void *arg)
{
	unsigned f = 0;
	f += kp_free(pool, arg) != 0;
	void *p = kp_alloc(pool, 48, 0);
	f += !p || kp_free(pool, p) != 0;
	char *big = kp_alloc(pool, (size_t)5 << 20, 0);
	f += !big || kp_free(pool, big) != 0;
	atomic_fetch_add(&failures, f);
}

static void *worker(void *arg)
{
	(void)arg;
	void *a = kp_alloc(pool, 100, 0), *b = kp_alloc(pool, 200, 0), *c = kp_alloc(pool, 300, 0);
	unsigned f = !a || !b || !c;
	f += kp_free(pool, c) != 0;
	if (!kp__grace_self.fast)
		atomic_fetch_add(&no_fast, 1);
	pthread_setspecific(early, a);
	pthread_setspecific(late, b);
	atomic_fetch_add(&failures, f);
	return NULL;
}

static void test_exit_destructors(void)
{
	REQUIRE(pthread_key_create(&early, at_exit_free) == 0, "key");
	pool = kp_create("primary_initial:4m,backup:1m,daemon_interval_ms:1,decay_ms:1");
	REQUIRE(pool, "kp_create: %s", kp_last_error());
	void *p = kp_alloc(pool, 16, 0); /* the grace record's key made */
	REQUIRE(p && kp_free(pool, p) == 0, "alloc");
	REQUIRE(pthread_key_create(&late, at_exit_free) == 0, "key");
	unsigned late_no_fast = 0;
	for (int i = 0; i < THREADS; i += 2) {
		pthread_t t[2];
		for (int k = 0; k < 2; k++)
			REQUIRE(pthread_create(&t[k], NULL, worker, NULL) == 0, "pthread_create %d", i);
		for (int k = 0; k < 2; k++)
			pthread_join(t[k], NULL);
		if (i == THREADS - 2)
			late_no_fast = atomic_load(&no_fast);
	}
	CHECK(atomic_load(&failures) == 0, "%u calls failed", atomic_load(&failures));
	CHECK(late_no_fast == 0, "%u threads had no fast record after their free", late_no_fast);
	kp_events_drain(pool, NULL, 0);
	kp_destroy(pool);
}

int main(void)
{
	RUN(test_exit_destructors);
	return ktest_summary();
}
