/*
 * test_ramp_attack.c - the daemon's pre-fault ramp (daemon.c, KP_RAMP_START,
 * front_reached with kp__os_page_resident's mincore): pools destroyed in the
 * middle of bursts that double the ramp, from three threads at once, return
 * and leave nothing behind; with every mincore refused (faults:other@p=1:
 * front_reached says resident, the pre-fault walk falls back to populating
 * whole ranges), a burst still allocates and frees, and the front stays
 * bounded by the ramp: the pool's resident memory after a 16 MiB burst is no
 * more than the burst and its headroom's bound; and a clock stepped far
 * ahead (kp_daemon_step) then quiet resets the ramp, without failing passes.
 */
/* Tests the grow daemon's growth, front and purge of the inline primary (daemon.c, primary.c; layout:outline's: test_outline_grow.c, test_outline_memory.c): every pool layout:inline (ktest.h, KT_LAYOUT_INLINE). */
#define KT_LAYOUT_INLINE 1
#include "ktest.h"

#include "internal.h"

#include <pthread.h>

#define MiB ((size_t)1 << 20)

static void burst(kp_pool *pool, size_t total, size_t each, void **keep, unsigned *n)
{
	for (size_t done = 0; done < total; done += each) {
		char *p = kp_alloc(pool, each, 0);
		if (!p)
			continue;
		memset(p, 7, each);
		keep[(*n)++] = p;
	}
}

static void *destroy_mid_burst(void *arg)
{
	unsigned *fails = arg;
	static _Thread_local void *keep[4096];
	for (int round = 0; round < 6; round++) {
		kp_pool *pool = kp_create("primary_initial:4m,backup:1m,daemon_interval_ms:1");
		if (!pool) {
			(*fails)++;
			continue;
		}
		unsigned n = 0;
		for (int step = 0; step < 8; step++) {
			burst(pool, 2 * MiB, 32 << 10, keep, &n);
			kt_sleep_ms(2); /* passes see the front overrun: the ramp doubles */
		}
		*fails += n != 8 * (2 * MiB / (32 << 10));
		if (round & 1)
			for (unsigned i = 0; i < n; i += 2)
				kp_free(pool, keep[i]);
		kp_destroy(pool); /* the daemon in a pass, the ramp large */
	}
	return NULL;
}

static void test_destroy_while_ramping(void)
{
	pthread_t t[3];
	unsigned fails[3] = {0};
	for (int i = 0; i < 3; i++)
		REQUIRE(pthread_create(&t[i], NULL, destroy_mid_burst, &fails[i]) == 0, "pthread_create");
	for (int i = 0; i < 3; i++)
		pthread_join(t[i], NULL);
	CHECK(fails[0] + fails[1] + fails[2] == 0, "%u allocations or creates failed", fails[0] + fails[1] + fails[2]);
}

static void test_mincore_refused(void)
{
	kp_pool *pool = kp_create("primary_initial:4m,backup:0,daemon:off");
	REQUIRE(pool, "kp_create: %s", kp_last_error());
	REQUIRE(kp_fault_inject(pool, "other@p=1") == 0, "kp_fault_inject: %s", kp_last_error());
	static void *keep[1024];
	unsigned n = 0;
	for (int step = 0; step < 16; step++) {
		burst(pool, MiB, 16 << 10, keep, &n);
		CHECK(kp_daemon_step(pool, 6) >= 0, "a pass failed");
	}
	CHECK(n == 16 * (MiB / (16 << 10)), "%u of %zu allocations", n, 16 * (MiB / (16 << 10)));
	size_t ramp = pool->daemon.ramp;
	fprintf(stderr, "  ramp after the burst: %zu KiB, front %zu KiB\n", ramp >> 10, pool->daemon.front >> 10);
	CHECK(ramp >= ((size_t)256 << 10) && ramp <= ((size_t)1 << 40), "ramp %zu", ramp);
	CHECK(pool->daemon.front <= ramp || pool->conf.high_wm != KP_WM_AUTO, "front %zu past the ramp %zu",
	      pool->daemon.front, ramp);
	unsigned bad = 0;
	for (unsigned i = 0; i < n; i++)
		bad += kp_free(pool, keep[i]) != 0;
	CHECK(bad == 0, "%u frees failed", bad);
	/* the clock jumps far ahead, quiet: the ramp goes back to its start */
	for (int i = 0; i < 4; i++)
		CHECK(kp_daemon_step(pool, (uint64_t)1 << 40) >= 0, "a pass after a jump failed");
	CHECK(pool->daemon.ramp == ((size_t)256 << 10), "ramp %zu after a quiet jump", pool->daemon.ramp);
	void *p = kp_alloc(pool, 100, 0);
	CHECK(p && kp_free(pool, p) == 0, "alloc after the jumps");
	kp_events_drain(pool, NULL, 0);
	kp_destroy(pool);
}

int main(void)
{
	RUN(test_destroy_while_ramping);
	RUN(test_mincore_refused);
	return ktest_summary();
}
