/*
 * test_daemon_timeline.c - the daemon's capacity timeline after a burst
 * (issue 12, defect 6): growth and shrink aim at one target, so that after a
 * big free the capacity falls monotonically to it and stays there, with at
 * most a couple of grows; before, growth aimed at high_wm shifted by the
 * boost while shrink kept only high_wm, and the daemon grew back each
 * segment it had just released (51 grows, ~187 shrinks in 5 s).
 *
 * Time is driven with kp_daemon_step (daemon:off), so the test neither
 * sleeps nor depends on the machine's speed.
 */
/* Tests the grow daemon's growth, front and purge of the inline primary (daemon.c, primary.c; layout:outline's: test_outline_grow.c, test_outline_memory.c): every pool layout:inline (ktest.h, KT_LAYOUT_INLINE). */
#define KT_LAYOUT_INLINE 1
#include "ktest.h"

#define KiB ((size_t)1 << 10)
#define MiB ((size_t)1 << 20)

/* The reproducer: 500 MiB in blocks of 65,472 bytes (one 64 KiB
 * size class with the header and canary), nothing touched. */
#define BURST (500 * MiB)
#define BLOCK ((size_t)65472)
#define NBLK (BURST / BLOCK + 1)
/* 5 s of virtual time in daemon passes of the default timer period. */
#define STEP_MS 100
#define STEPS 50

static void *blk[NBLK];

static void burst_then_idle(const char *conf, const char *label)
{
	KT_POOL(pool, conf);
	size_t n = 0;
	/* Allocate as a program would, with the daemon's passes in between (it
	 * wakes at the watermark): the allocation path outruns it, grows by
	 * itself and raises the boost, as in the issue. */
	for (; n < NBLK; n++) {
		blk[n] = kp_alloc(pool, BLOCK, 0);
		REQUIRE(blk[n] != NULL, "kp_alloc #%zu: %s", n, kp_last_error());
		if (n % 256 == 255)
			kp_daemon_step(pool, 1);
	}
	for (size_t i = 0; i < n; i++)
		kp_free(pool, blk[i]);
	kp_thread_flush(pool);
	int64_t grows0 = kt_stat(pool, "primary.grows"), shrinks0 = kt_stat(pool, "primary.shrinks");
	int64_t cap[STEPS + 1];
	cap[0] = kt_stat(pool, "primary.capacity_bytes");
	int rises = 0;
	for (int i = 1; i <= STEPS; i++) {
		kp_daemon_step(pool, STEP_MS);
		cap[i] = kt_stat(pool, "primary.capacity_bytes");
		rises += cap[i] > cap[i - 1];
	}
	int64_t grows = kt_stat(pool, "primary.grows") - grows0, shrinks = kt_stat(pool, "primary.shrinks") - shrinks0;
	printf("   %s: capacity MiB after the free, every %d ms:", label, STEP_MS);
	for (int i = 0; i <= STEPS; i += 5)
		printf(" %lld", (long long)(cap[i] >> 20));
	printf("; %lld grows, %lld shrinks\n", (long long)grows, (long long)shrinks);
	CHECK(rises == 0, "%s: capacity rose %d times after the free (not monotonic)", label, rises);
	for (int i = 1; i <= STEPS; i++)
		if (cap[i] > cap[i - 1]) {
			printf("     step %d (+%d ms): %lld -> %lld MiB\n", i, i * STEP_MS,
			       (long long)(cap[i - 1] >> 20), (long long)(cap[i] >> 20));
			break;
		}
	CHECK(grows <= 2, "%s: %lld grows while idle after the free", label, (long long)grows);
	CHECK(shrinks > 0, "%s: no shrink in %d ms after a 500 MiB free", label, STEPS * STEP_MS);
	/* It reached the target: high_wm (32 MiB by default) and a segment of
	 * slack, the boost decayed, primary_initial kept. */
	CHECK(cap[STEPS] <= (int64_t)(48 * MiB), "%s: capacity still %lld MiB after %d ms idle", label,
	      (long long)(cap[STEPS] >> 20), STEPS * STEP_MS);
	/* ... and stays there. */
	int64_t g1 = kt_stat(pool, "primary.grows"), s1 = kt_stat(pool, "primary.shrinks");
	for (int i = 0; i < 20; i++)
		kp_daemon_step(pool, STEP_MS * 10);
	CHECK(kt_stat(pool, "primary.grows") == g1 && kt_stat(pool, "primary.shrinks") == s1,
	      "%s: a settled idle pool still grows (%lld) or shrinks (%lld)", label,
	      (long long)(kt_stat(pool, "primary.grows") - g1), (long long)(kt_stat(pool, "primary.shrinks") - s1));
	kp_destroy(pool);
}

/* The defaults of a pool (high_wm 32m, decay_ms 1000), pages not touched. */
static void test_burst_defaults(void)
{
	burst_then_idle("daemon:off,prefault:off,seed:61", "defaults");
}

/* A quicker decay and a smaller target: the same shape. */
static void test_burst_quick_decay(void)
{
	burst_then_idle("daemon:off,prefault:off,low_wm:4m,high_wm:16m,decay_ms:200,seed:62", "decay 200 ms");
}

int main(void)
{
	RUN(test_burst_defaults);
	RUN(test_burst_quick_decay);
	return ktest_summary();
}
