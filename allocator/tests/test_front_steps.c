/*
 * test_front_steps.c - how far ahead of a fast grower the daemon pre-faults
 * (issue 14, point 2: peak RSS of real programs within 1.1x the best peer,
 * with the paced-growth guarantees kept).
 *
 * sqlite3 under the preload ends on a burst (17 MiB in 40 ms) and larson
 * starts with one (7 MiB in 5 ms). Whatever the daemon has pre-faulted
 * ahead of the allocating thread when a burst stops is resident and never
 * used: it sets the program's peak RSS. The allocation path wakes the daemon
 * when the pre-faulted part falls under half the front (what covers the
 * daemon's latency); each pass used to fill it back to the whole front, so
 * a burst that stopped left between a half and the whole front (8 MiB for
 * sqlite3) pre-faulted. Filled in steps of an eighth past the half the
 * thread wakes it at, the daemon keeps the same half ahead and at most
 * 5/8 of the front. Measured here: filled whole, 8,192 KiB ahead and
 * 8,740 KiB resident past prefault:off when the burst stopped; in steps,
 * 5,120 and 5,240. The front is now also at most a ramp that doubles each
 * time the burst overran it, at most once per 5 ms (daemon.c,
 * KP_RAMP_START; test_burst_ramp): 2,560 KiB ahead and 2,524 resident past
 * prefault:off when this burst stops, with the bytes past its first 8 MiB
 * faulted on the allocating thread until the ramp caught up (10 of 16 MiB:
 * a 24 ms burst is over before a front sized for it would pay; a program
 * that grows on gets it, test_burst_ramp's paced grower).
 *
 * Driven with kp_daemon_step (daemon:off, the test's clock): 24 MiB at 2 MiB
 * per 2 ms (1 GB/s, test_burst's model), every byte written, a pass every
 * 2 MiB; the burst stops right after a pass, the worst case. The same burst
 * with prefault:off is the baseline for RSS. RSS is meaningless under a
 * sanitizer: the RSS bound is checked in the release variant, the
 * pre-faulted figures in every variant.
 */
/* Tests the grow daemon's growth, front and purge of the inline primary (daemon.c, primary.c; layout:outline's: test_outline_grow.c, test_outline_memory.c): every pool layout:inline (ktest.h, KT_LAYOUT_INLINE). */
#define KT_LAYOUT_INLINE 1
#include "ktest.h"

#define KiB ((size_t)1 << 10)
#define MiB ((size_t)1 << 20)

enum { CREEP = 192 * 1024, BLOCK = 60 * 1024, PER_PASS = 34, PASSES = 12, NB = PER_PASS * PASSES + 32 };
static void *b[NB];

struct burst {
	long rss_kb;		/* RSS the pool added, at the end of the burst */
	int64_t most_ready;	/* the most pre-faulted ahead after a pass */
	int64_t front_then;	/* the target at that pass */
	int64_t ready_end;	/* pre-faulted ahead when the burst stopped */
	int64_t faulted_steady; /* bytes the allocation path took before they were pre-faulted, past the first 8 MiB */
};

static struct burst run(const char *conf)
{
	struct burst r = {0};
	unsetenv("KPOOL_CONF");
	long r0 = kt_rss_kb();
	kp_pool *pool = kp_create(conf);
	CHECK(pool != NULL, "kp_create(\"%s\"): %s", conf, kp_last_error());
	if (pool == NULL)
		return r;
	kp_daemon_step(pool, 0);
	int64_t faulted_at = -1;
	for (int i = 0; i < NB; i++) {
		b[i] = kp_alloc(pool, BLOCK, 0);
		CHECK(b[i] != NULL, "kp_alloc #%d: %s", i, kp_last_error());
		if (b[i] == NULL)
			break;
		memset(b[i], 0x5a, BLOCK);
		if ((i + 1) % PER_PASS)
			continue;
		kp_daemon_step(pool, 2);
		int64_t ready = kt_stat(pool, "daemon.prefaulted_bytes");
		if (ready > r.most_ready) {
			r.most_ready = ready;
			r.front_then = kt_stat(pool, "daemon.target_bytes");
		}
		if (i + 1 == 4 * PER_PASS) /* 8 MiB: the rate is measured */
			faulted_at = kt_stat(pool, "daemon.alloc_faulted_bytes");
	}
	r.rss_kb = kt_rss_kb() - r0;
	r.ready_end = kt_stat(pool, "daemon.prefaulted_bytes");
	r.faulted_steady = kt_stat(pool, "daemon.alloc_faulted_bytes") - faulted_at;
	printf("   %s: RSS %+ld KiB at the end of the burst; pre-faulted ahead at most %lld KiB (target %lld KiB), "
	       "%lld KiB at the end; %lld KiB taken unfaulted past 8 MiB\n",
	       conf, r.rss_kb, (long long)(r.most_ready >> 10), (long long)(r.front_then >> 10),
	       (long long)(r.ready_end >> 10), (long long)(r.faulted_steady >> 10));
	for (int i = 0; i < NB; i++)
		kp_free(pool, b[i]);
	kp_destroy(pool);
	return r;
}

static void test_front_filled_in_steps(void)
{
	struct burst off = run("daemon:off,step_clock:on,seed:7,prefault:off");
	struct burst on = run("daemon:off,step_clock:on,seed:7");
	long excess = on.rss_kb - off.rss_kb;
	printf("   pre-faulting left %ld KiB resident past the prefault:off run when the burst stopped\n", excess);
	/* the front the rate asks for at 1 GB/s: KP_TARGET_SMALL, 8 MiB */
	CHECK(on.front_then >= (int64_t)(4 * MiB), "a target of %lld KiB at 1 GB/s: the rate did not count",
	      (long long)(on.front_then >> 10));
	CHECK(on.most_ready * 8 <= on.front_then * 5 + (int64_t)(64 * KiB) * 8,
	      "%lld KiB pre-faulted ahead for a front of %lld KiB: more than 5/8 of it",
	      (long long)(on.most_ready >> 10), (long long)(on.front_then >> 10));
	/* the ramp followed the burst: overrun at every pass, it doubled
	 * four times in 24 ms (256 KiB -> 4 MiB), and the allocation path
	 * faulted less than all it took past its first 8 MiB */
	CHECK(on.ready_end >= (int64_t)(2 * MiB), "%lld KiB pre-faulted ahead of a 1 GB/s grower after 24 ms",
	      (long long)(on.ready_end >> 10));
	CHECK(on.faulted_steady < (int64_t)(16 * MiB),
	      "the allocation path took all %lld KiB past its first 8 MiB before they were pre-faulted",
	      (long long)(on.faulted_steady >> 10));
	if (KT_SANITIZED)
		printf("   (sanitizer build: the RSS bound is checked in the release variant)\n");
	else
		CHECK(excess <= (long)(3 * MiB + 512 * KiB) / 1024,
		      "%ld KiB resident past prefault:off when a 1 GB/s burst stopped", excess);
}

/* A burst that slows to a creep: filled in steps, the front wakes the
 * daemon more often, and a pass that came less than KP_SLOWED_MS (80 ms)
 * after the last never measured the growth as slowed (larson under the
 * preload: passes 26 and 79 ms apart after its burst, each finding a few
 * hundred KB past its peak, kept the burst's 3.6 MiB front for 200 ms,
 * 12.4 MiB peak). Slowed growth is measured over a window of passes since
 * the rate last rose. Here: 12 MiB at 1 GB/s, then one block of 192 KiB
 * per 20 ms pass, 10 MB/s, for 300 ms. */
static void test_creep_after_a_burst(void)
{
	unsetenv("KPOOL_CONF");
	KT_POOL(pool, "daemon:off,step_clock:on,seed:7");
	kp_daemon_step(pool, 0);
	int n = 0;
	for (; n < 6 * PER_PASS; n++) {
		b[n] = kp_alloc(pool, BLOCK, 0);
		CHECK(b[n] != NULL, "kp_alloc #%d: %s", n, kp_last_error());
		memset(b[n], 0x5a, BLOCK);
		if ((n + 1) % PER_PASS == 0)
			kp_daemon_step(pool, 2);
	}
	int64_t burst = kt_stat(pool, "daemon.rate_bytes_per_s");
	for (int k = 0; k < 15; k++, n++) { /* large blocks: each takes free units */
		b[n] = kp_alloc(pool, CREEP, 0);
		CHECK(b[n] != NULL, "kp_alloc #%d: %s", n, kp_last_error());
		memset(b[n], 0x5a, CREEP);
		kp_daemon_step(pool, 20);
	}
	int64_t rate = kt_stat(pool, "daemon.rate_bytes_per_s"), ready = kt_stat(pool, "daemon.prefaulted_bytes");
	printf("   rate %lld MB/s in the burst, %lld MB/s after 300 ms at 10 MB/s; %lld KiB pre-faulted ahead\n",
	       (long long)(burst / 1000000), (long long)(rate / 1000000), (long long)(ready >> 10));
	CHECK(burst >= 200000000, "a rate of %lld B/s during a 1 GB/s burst", (long long)burst);
	CHECK(rate * 8 < burst, "the rate read %lld B/s 300 ms into a 10 MB/s creep after a %lld B/s burst",
	      (long long)rate, (long long)burst);
	CHECK(ready <= (int64_t)(512 * KiB), "%lld KiB pre-faulted ahead of a 10 MB/s creep", (long long)(ready >> 10));
	for (int i = 0; i < n; i++)
		kp_free(pool, b[i]);
	kp_destroy(pool);
}

int main(void)
{
	RUN(test_front_filled_in_steps);
	RUN(test_creep_after_a_burst);
	return ktest_summary();
}
