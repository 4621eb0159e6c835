/*
 * test_stale_shrink_attack4.c - stale pointers freed while the daemon
 * shrinks the pool (sess16-hA4's attack that held): a thread frees, sizes
 * and reallocs pointers of blocks freed long ago, into segments the daemon
 * releases meanwhile (kp_daemon_step on the main thread, the clock
 * advanced past decay_ms at each step, huge blocks mapped and freed between
 * steps, where the segments were): every call is refused (rc < 0, usable size 0, realloc NULL), none
 * crashes, and the blocks held live all along keep their bytes and free
 * with rc 0. And test_destroyed_while_freed: pools made and destroyed over
 * and over while another thread frees (into a second, live pool) and sizes
 * the pointers of their blocks: refused each time, no crash (the grace
 * periods keep a segment mapped while a lookup may read it). Run under ASan
 * and TSan too (make test).
 */
#define _GNU_SOURCE 1
#include "ktest.h"

#include "internal.h"

#include <pthread.h>
#include <stdatomic.h>

#define NSTALE 96
#define NLIVE 16
#define ROUNDS 40

static kp_pool *pool;
static char *stale[NSTALE];
static atomic_int stop;
static atomic_uint accepted, calls;

static void *stale_freer(void *arg)
{
	(void)arg;
	while (!atomic_load(&stop)) {
		for (int i = 0; i < NSTALE; i++) {
			char *p = stale[i];
			atomic_fetch_add(&calls, 1);
			if (kp_free(pool, p) == 0 || kp_usable_size(pool, p) != 0)
				atomic_fetch_add(&accepted, 1);
			if (i % 8 == 0 && kp_realloc(pool, p, 100, 0) != NULL)
				atomic_fetch_add(&accepted, 1);
		}
	}
	return NULL;
}

static void test_stale_during_shrink(void)
{
	pool = kp_create("primary_initial:4m,primary_max:256m,backup:0,daemon:off,decay_ms:1,high_wm:64k");
	REQUIRE(pool, "kp_create: %s", kp_last_error());
	char *live[NLIVE];
	for (int i = 0; i < NLIVE; i++) {
		live[i] = kp_alloc(pool, 64, 0);
		REQUIRE(live[i], "live");
		memset(live[i], 0x4c, 64);
	}
	/* Blocks over several segments (small, large and huge), freed: their
	 * pointers are stale from here on. */
	static const size_t sz[] = {40, 1000, 40000, 300000, 3000000};
	for (int i = 0; i < NSTALE; i++)
		stale[i] = kp_alloc(pool, sz[i % 5], 0);
	for (int i = 0; i < NSTALE; i++) {
		REQUIRE(stale[i], "stale %d", i);
		CHECK(kp_free(pool, stale[i]) == 0, "first free of %d", i);
	}
	kp_thread_flush(pool);
	pthread_t th;
	REQUIRE(pthread_create(&th, NULL, stale_freer, NULL) == 0, "thread");
	int64_t shrinks0 = kt_stat(pool, "primary.shrinks");
	for (int r = 0; r < ROUNDS; r++) {
		kp_daemon_step(pool, 100); /* past decay_ms: free segments go */
		kp_daemon_step(pool, 100);
		/* Grow again: mappings made anew, perhaps where the old segments
		 * were. Huge blocks, whose pointers (8 KiB into a mapping) are never
		 * a stale one (16 bytes past a block start in a span): a stale
		 * pointer that is a live block again is no longer stale. */
		void *g[6];
		for (int i = 0; i < 6; i++)
			g[i] = kp_alloc(pool, (size_t)(5 + i % 3) << 20, 0);
		for (int i = 0; i < 6; i++)
			if (g[i])
				kp_free(pool, g[i]);
		kp_thread_flush(pool);
	}
	atomic_store(&stop, 1);
	pthread_join(th, NULL);
	printf("   %u stale calls, %d shrinks\n", atomic_load(&calls),
	       (int)(kt_stat(pool, "primary.shrinks") - shrinks0));
	CHECK(atomic_load(&accepted) == 0, "%u stale calls accepted", atomic_load(&accepted));
	CHECK(kt_stat(pool, "primary.shrinks") > shrinks0, "the daemon never shrank the pool (the test tests nothing)");
	for (int i = 0; i < NLIVE; i++) {
		bool ok = true;
		for (int j = 0; j < 64; j++)
			ok &= live[i][j] == 0x4c;
		CHECK(ok, "live block %d lost its bytes", i);
		CHECK(kp_free(pool, live[i]) == 0, "free of live %d", i);
	}
	kp_destroy(pool);
}

static kp_pool *live_pool;
static char *_Atomic foreign[NSTALE];

static void *foreign_freer(void *arg)
{
	(void)arg;
	while (!atomic_load(&stop)) {
		for (int i = 0; i < NSTALE; i++) {
			char *p = atomic_load(&foreign[i]);
			if (!p)
				continue;
			atomic_fetch_add(&calls, 1);
			if (kp_free(live_pool, p) == 0 || kp_usable_size(live_pool, p) != 0)
				atomic_fetch_add(&accepted, 1);
		}
	}
	return NULL;
}

static void test_destroyed_while_freed(void)
{
	live_pool = kp_create("primary_initial:4m,backup:0,daemon:off");
	REQUIRE(live_pool, "kp_create");
	atomic_store(&stop, 0);
	atomic_store(&accepted, 0);
	atomic_store(&calls, 0);
	pthread_t th;
	REQUIRE(pthread_create(&th, NULL, foreign_freer, NULL) == 0, "thread");
	static const size_t sz[] = {40, 1000, 300000, 5000000};
	for (int round = 0; round < 30; round++) {
		kp_pool *a = kp_create("primary_initial:4m,backup:0,daemon:off");
		REQUIRE(a, "kp_create");
		for (int i = 0; i < NSTALE; i++)
			atomic_store(&foreign[i], kp_alloc(a, sz[i % 4], 0));
		kt_sleep_ms(2);
		kp_destroy(a); /* the other thread keeps freeing its pointers */
		kt_sleep_ms(1);
	}
	atomic_store(&stop, 1);
	pthread_join(th, NULL);
	printf("   %u calls with another pool's pointers\n", atomic_load(&calls));
	CHECK(atomic_load(&accepted) == 0, "%u foreign calls accepted", atomic_load(&accepted));
	kp_destroy(live_pool);
}

int main(void)
{
	RUN(test_stale_during_shrink);
	RUN(test_destroyed_while_freed);
	return ktest_summary();
}
