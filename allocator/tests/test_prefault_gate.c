/*
 * test_prefault_gate.c - the allocation path wakes the daemon when the pool
 * crosses the size from which the daemon pre-faults (KP_PREFAULT_MIN in
 * daemon.c: 1 MiB handed out).
 *
 * A pass that ran before the pool had handed out 1 MiB pre-faulted nothing
 * and left the wake mark at half its target (128 KiB of free units): a
 * program that then grew past 1 MiB faulted every page of the segment it
 * was in on its own thread before the daemon ran again (the 100 ms timer,
 * or the segment running dry). test_pool_behaviour's paced start read
 * 1,833 faults in its first 16 MiB in 2 runs of 12 (its bound is 1,536;
 * ~1,100 when the daemon's first pass came after the first 1 MiB).
 */
/* Tests the grow daemon's growth, front and purge of the inline primary (daemon.c, primary.c; layout:outline's: test_outline_grow.c, test_outline_memory.c): every pool layout:inline (ktest.h, KT_LAYOUT_INLINE). */
#define KT_LAYOUT_INLINE 1
#include "ktest.h"

#define KiB ((size_t)1 << 10)
#define MiB ((size_t)1 << 20)
#define BLOCK (32 * KiB)

static void *blk[96];

static unsigned take(kp_pool *pool, unsigned from, size_t bytes)
{
	unsigned i = from;
	for (size_t done = 0; done < bytes && i < 96; done += BLOCK, i++) {
		blk[i] = kp_alloc(pool, BLOCK, 0);
		if (blk[i] == NULL) {
			CHECK(0, "kp_alloc #%u: %s", i, kp_last_error());
			break;
		}
		memset(blk[i], 0x3c, BLOCK);
	}
	return i;
}

static void test_crossing_the_gate_wakes_the_daemon(void)
{
	unsetenv("KPOOL_CONF");
	KT_POOL(pool, "primary_initial:1m,seed:5");
	/* half the gate, and a pass that finds the pool under it */
	unsigned n = take(pool, 0, 512 * KiB);
	kp_daemon_step(pool, 0);
	kt_sleep_ms(5);
	int64_t w0 = kt_stat(pool, "daemon.wakeups");
	/* past the gate by 1 MiB: the daemon must be woken, and pre-fault */
	n = take(pool, n, 1536 * KiB);
	int64_t w1 = w0;
	for (int i = 0; i < 40 && w1 == w0; i++) { /* a loaded machine: up to 200 ms for the wake */
		kt_sleep_ms(5);
		w1 = kt_stat(pool, "daemon.wakeups");
	}
	printf("   daemon wakeups %lld -> %lld\n", (long long)w0, (long long)w1);
	CHECK(w1 > w0, "the pool went from 512 KiB to 2 MiB handed out and the daemon was not woken");
	for (unsigned i = 0; i < n; i++)
		kp_free(pool, blk[i]);
	kp_destroy(pool);
}

int main(void)
{
	RUN(test_crossing_the_gate_wakes_the_daemon);
	return ktest_summary();
}
