/*
 * test_churn_front.c - what the daemon keeps pre-faulted for a program that
 * has stopped growing but keeps replacing blocks (issue 14, point 2: the
 * headroom follows the measured allocation rate; peak RSS within 1.1x the
 * best peer).
 *
 * larson under the preload grows to ~7 MB in 20 ms and then only replaces
 * blocks: its use swings up and down but never past its peak. The daemon
 * read each upward swing as demand (a "rate" of 13-50 MB/s for seconds) and
 * kept the high_wm:auto floor (1 MiB) and more pre-faulted beside it: 13.4
 * MiB peak RSS against 9.7 with prefault:off and glibc's 9.1. Memory a
 * program gives back and takes again is already resident; only growth past
 * the peak needs pages faulted ahead.
 *
 * The same program is run twice, prefault on and off, each on its own pool
 * driven with kp_daemon_step (daemon:off, the test's clock): a burst of 12
 * MiB, then 3 s of churn (blocks freed and the same sizes allocated again,
 * a pass every 10 ms). What the pool holds resident past what the
 * prefault:off pool does (less the backup reserve, which only prefault:on
 * pre-faults) is what pre-faulting left: at most 512 KiB once the churn has
 * lasted past decay_ms twice. RSS is meaningless under a sanitizer: the
 * bound is checked in the release variant.
 */
/* Tests the grow daemon's growth, front and purge of the inline primary (daemon.c, primary.c; layout:outline's: test_outline_grow.c, test_outline_memory.c): every pool layout:inline (ktest.h, KT_LAYOUT_INLINE). */
#define KT_LAYOUT_INLINE 1
#include "ktest.h"

#define KiB ((size_t)1 << 10)
#define MiB ((size_t)1 << 20)

enum { BLOCK = 60 * 1024, NB = 200, SWAP = 8, ROUNDS = 150 };
static void *b[NB];

static void take(kp_pool *pool, int i)
{
	b[i] = kp_alloc(pool, BLOCK, 0);
	CHECK(b[i] != NULL, "kp_alloc #%d: %s", i, kp_last_error());
	if (b[i])
		memset(b[i], 0x5a, BLOCK);
}

/* RSS the pool added over the run (KiB), its pre-faulted front at the end */
static long run(const char *conf, int64_t *ready, int64_t *backup)
{
	unsetenv("KPOOL_CONF");
	long r0 = kt_rss_kb();
	kp_pool *pool = kp_create(conf);
	CHECK(pool != NULL, "kp_create(\"%s\"): %s", conf, kp_last_error());
	if (pool == NULL)
		return 0;
	kp_daemon_step(pool, 0);
	for (int i = 0; i < NB; i++) { /* 12 MiB at 1 GB/s */
		take(pool, i);
		if ((i + 1) % 34 == 0)
			kp_daemon_step(pool, 2);
	}
	uint64_t rng = 99;
	for (int r = 0; r < ROUNDS; r++) { /* churn: never past the peak */
		int k[SWAP];
		for (int j = 0; j < SWAP; j++) {
			k[j] = (int)kt_rand_range(&rng, 0, NB - 1);
			if (b[k[j]] == NULL) {
				k[j] = -1;
				continue;
			}
			kp_free(pool, b[k[j]]);
			b[k[j]] = NULL;
		}
		kp_daemon_step(pool, 10);
		for (int j = 0; j < SWAP; j++)
			if (k[j] >= 0)
				take(pool, k[j]);
		kp_daemon_step(pool, 10);
	}
	long r1 = kt_rss_kb();
	*ready = kt_stat(pool, "daemon.prefaulted_bytes");
	*backup = kt_stat(pool, "backup.capacity_bytes");
	printf("   %s: RSS %+ld KiB, target %lld KiB, pre-faulted front %lld KiB, rate %lld KB/s\n", conf, r1 - r0,
	       (long long)(kt_stat(pool, "daemon.target_bytes") >> 10), (long long)(*ready >> 10),
	       (long long)kt_stat(pool, "daemon.rate_bytes_per_s") / 1000);
	for (int i = 0; i < NB; i++)
		kp_free(pool, b[i]);
	kp_destroy(pool);
	return r1 - r0;
}

static void test_churn_keeps_no_front(void)
{
	int64_t ready_on, ready_off, backup_on, backup_off;
	long off = run("daemon:off,step_clock:on,seed:7,prefault:off", &ready_off, &backup_off);
	long on = run("daemon:off,step_clock:on,seed:7", &ready_on, &backup_on);
	long excess = on - off - (long)(backup_on >> 10);
	printf("   pre-faulting left %ld KiB resident past the prefault:off run (backup %lld KiB)\n", excess,
	       (long long)(backup_on >> 10));
	CHECK(ready_on <= (int64_t)(256 * KiB), "a pre-faulted front of %lld KiB for a program that stopped growing",
	      (long long)(ready_on >> 10));
	if (KT_SANITIZED)
		printf("   (sanitizer build: the RSS bound is checked in the release variant)\n");
	else
		CHECK(excess <= (long)(512 * KiB / 1024),
		      "%ld KiB resident past prefault:off after 3 s of churn below the peak", excess);
}

int main(void)
{
	RUN(test_churn_keeps_no_front);
	return ktest_summary();
}
