/*
 * test_burst_ramp.c - how far ahead of a burst the daemon pre-faults, and
 * that a program that grows on still gets its whole front (issue 14, point
 * 2: peak RSS of real programs within 1.1x the best peer, with the
 * paced-growth guarantees kept).
 *
 * What the daemon has pre-faulted ahead when a burst stops is resident and
 * never used: it adds to the program's peak RSS. The front was what the
 * measured rate asked for from the first pass of a burst (8 MiB for sqlite3
 * under the preload, whose last 16 MB come in 40 ms; 2.5 MiB for larson's
 * first 5 MB in 5 ms), filled to 5/8. It now starts small and doubles each
 * time the allocation path overran it, at most once per 5 ms (daemon.c,
 * KP_RAMP_START), so that a short burst ends with a small front while a
 * program that grows on reaches the rate's within a few doublings.
 *
 * Each model is driven with kp_daemon_step (daemon:off, the test's clock),
 * every byte written:
 *   - larson's start: 5 MiB at 1 GB/s from a fresh pool, a pass every MiB;
 *   - sqlite3's last burst: a pool that held 16 MiB and went quiet for 2 s
 *     (its front back to the start) grows 16 MiB at 300 MB/s, woken every
 *     300 KiB (the half of a small front);
 *   - the paced grower of test_pool_behaviour: 64 MiB, 1 MiB per 5 ms: under
 *     1% taken before it was pre-faulted past its first 16 MiB (128 KiB of
 *     48 MiB; none before the ramp), and a front of 2 MiB or more ahead.
 * Before the ramp: 1,600 and 5,120 KiB ahead at the ends of the two bursts.
 */
/* Tests the grow daemon's growth, front and purge of the inline primary (daemon.c, primary.c; layout:outline's: test_outline_grow.c, test_outline_memory.c): every pool layout:inline (ktest.h, KT_LAYOUT_INLINE). */
#define KT_LAYOUT_INLINE 1
#include "ktest.h"

#define KiB ((size_t)1 << 10)
#define MiB ((size_t)1 << 20)

enum { BLOCK = 60 * 1024, NB = 1200 };
static void *b[NB];
static int nb;

static void take(kp_pool *pool)
{
	b[nb] = kp_alloc(pool, BLOCK, 0);
	CHECK(b[nb] != NULL, "kp_alloc #%d: %s", nb, kp_last_error());
	if (b[nb])
		memset(b[nb++], 0x5a, BLOCK);
}

static void drop(kp_pool *pool)
{
	while (nb)
		kp_free(pool, b[--nb]);
	kp_destroy(pool);
}

/* Grow by bytes in BLOCKs, a pass of ms after every per bytes; returns the
 * most pre-faulted ahead after a pass. */
static int64_t burst(kp_pool *pool, size_t bytes, size_t per, uint64_t ms)
{
	int64_t most = 0;
	size_t done = 0, since = 0;
	while (done < bytes && nb < NB) {
		take(pool);
		done += BLOCK, since += BLOCK;
		if (since < per)
			continue;
		since = 0;
		kp_daemon_step(pool, ms);
		int64_t ready = kt_stat(pool, "daemon.prefaulted_bytes");
		most = ready > most ? ready : most;
	}
	return most;
}

static void test_larson_start(void)
{
	unsetenv("KPOOL_CONF");
	KT_POOL(pool, "daemon:off,step_clock:on,seed:7");
	kp_daemon_step(pool, 0);
	int64_t most = burst(pool, 5 * MiB, MiB, 1);
	kp_daemon_step(pool, 1); /* the pass after it stopped */
	int64_t end = kt_stat(pool, "daemon.prefaulted_bytes");
	printf("   5 MiB at 1 GB/s: at most %lld KiB pre-faulted ahead, %lld KiB when it stopped\n",
	       (long long)(most >> 10), (long long)(end >> 10));
	CHECK(most <= (int64_t)MiB, "%lld KiB pre-faulted ahead of a 5 MiB burst", (long long)(most >> 10));
	drop(pool);
}

static void test_sqlite3_last_burst(void)
{
	unsetenv("KPOOL_CONF");
	KT_POOL(pool, "daemon:off,step_clock:on,seed:7");
	kp_daemon_step(pool, 0);
	burst(pool, 16 * MiB, 2 * MiB, 20); /* 100 MB/s */
	for (int half = nb / 2; nb > half;) /* half of it given back, as sqlite3's cache */
		kp_free(pool, b[--nb]);
	for (int i = 0; i < 20; i++) /* 2 s quiet */
		kp_daemon_step(pool, 100);
	int64_t faulted0 = kt_stat(pool, "daemon.alloc_faulted_bytes");
	int64_t most = burst(pool, 16 * MiB, 300 * KiB, 1);
	int64_t faulted = kt_stat(pool, "daemon.alloc_faulted_bytes") - faulted0;
	printf("   16 MiB at 300 MB/s after 2 s quiet: at most %lld KiB pre-faulted ahead; %lld KiB taken unfaulted\n",
	       (long long)(most >> 10), (long long)(faulted >> 10));
	CHECK(most <= (int64_t)(2 * MiB), "%lld KiB pre-faulted ahead of a 16 MiB burst", (long long)(most >> 10));
	/* the small front kept ahead: woken at its half, a pass per 300 KiB */
	CHECK(faulted <= (int64_t)MiB, "the allocation path took %lld KiB before they were pre-faulted",
	      (long long)(faulted >> 10));
	drop(pool);
}

static void test_paced_grower_ramps_up(void)
{
	unsetenv("KPOOL_CONF");
	KT_POOL(pool, "daemon:off,step_clock:on,seed:7");
	kp_daemon_step(pool, 0);
	burst(pool, 16 * MiB, MiB, 5);
	int64_t faulted0 = kt_stat(pool, "daemon.alloc_faulted_bytes");
	burst(pool, 48 * MiB, MiB, 5);
	int64_t faulted = kt_stat(pool, "daemon.alloc_faulted_bytes") - faulted0;
	int64_t ready = kt_stat(pool, "daemon.prefaulted_bytes");
	printf("   64 MiB at 200 MB/s: %lld KiB taken unfaulted past 16 MiB; %lld KiB pre-faulted ahead at the end\n",
	       (long long)(faulted >> 10), (long long)(ready >> 10));
	/* the paced guarantee: under 1% of what it took past its start */
	CHECK(faulted * 100 < (int64_t)(48 * MiB),
	      "the allocation path took %lld KiB before they were pre-faulted, past its first 16 MiB",
	      (long long)(faulted >> 10));
	CHECK(ready >= (int64_t)(2 * MiB), "%lld KiB pre-faulted ahead of a 200 MB/s grower", (long long)(ready >> 10));
	drop(pool);
}

int main(void)
{
	RUN(test_larson_start);
	RUN(test_sqlite3_last_burst);
	RUN(test_paced_grower_ramps_up);
	return ktest_summary();
}
