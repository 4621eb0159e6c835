/*
 * test_front_attack2.c - attacks on the daemon's pre-faulted front that
 * skips free runs shorter than the allocation path takes (daemon.c,
 * take_len, short_runs, take_min_prev kept for decay_ms).
 *
 * 1. Idle passes: a pass counts the short runs (passed) only when units
 *    were taken since the last one (an idle pass takes no pool lock), but
 *    its shrink keeps ahead + passed: a pass with a take grows the pool
 *    past the short runs, the passes without one count them as room and
 *    unmap what it grew once it is decay_ms idle. A pool of 3-unit holes
 *    (30 MiB) and a program taking a 7-unit run every 100 ms: on main
 *    (2a93ba1) 8 grows, 0 shrinks in 64 rounds; with the front's skip 29
 *    grows and 21 shrinks (a segment mapped, pre-faulted and unmapped
 *    every 3 rounds).
 */
#include "ktest.h"

#include "internal.h"

#define MiB ((size_t)1 << 20)
#define UNIT ((size_t)64 << 10)
#define RUN3 (3 * UNIT - 256) /* a large block: a run of 3 units */
#define RUN7 (7 * UNIT - 256) /* a run of 7 */

enum { NFRAG = 21 * 16, NBIG = 64 };
static void *frag[NFRAG], *big[NBIG];

/* A pool whose segments hold 3-unit holes between live 3-unit blocks
 * (free runs of 3), and a program that then takes runs of 7 alone (take_len
 * 7: the holes are passed over). One 7-unit block per round, then the
 * daemon's passes with nothing taken: the shortest run taken is kept for
 * decay_ms, but a pass with no take counts no short run as passed (it
 * takes no pool lock): does the pool grow and shrink a segment every
 * round? */
static void test_idle_pass_thrash(void)
{
	unsetenv("KPOOL_CONF");
	KT_POOL(pool, "daemon:off,step_clock:on,seed:7,decay_ms:50,primary_initial:4m");
	kp_daemon_step(pool, 0);
	for (int i = 0; i < NFRAG; i++) {
		frag[i] = kp_alloc(pool, RUN3, 0);
		REQUIRE(frag[i], "kp_alloc #%d: %s", i, kp_last_error());
		memset(frag[i], 1, 4096);
		if (i % 8 == 7)
			kp_daemon_step(pool, 10);
	}
	for (int i = 0; i < NFRAG; i += 2)
		kp_free(pool, frag[i]), frag[i] = NULL;
	for (int i = 0; i < 20; i++)
		kp_daemon_step(pool, 10);
	int64_t g0 = kt_stat(pool, "primary.grows"), s0 = kt_stat(pool, "primary.shrinks");
	for (int r = 0; r < NBIG; r++) {
		big[r] = kp_alloc(pool, RUN7, 0);
		REQUIRE(big[r], "kp_alloc big #%d: %s", r, kp_last_error());
		memset(big[r], 2, RUN7);
		for (int k = 0; k < 10; k++)
			kp_daemon_step(pool, 10);
	}
	int64_t g = kt_stat(pool, "primary.grows") - g0, s = kt_stat(pool, "primary.shrinks") - s0;
	printf("   %d rounds of one 7-unit block: %lld grows, %lld shrinks; capacity %lld MiB, headroom %lld MiB\n",
	       NBIG, (long long)g, (long long)s, (long long)(kt_stat(pool, "primary.capacity_bytes") >> 20),
	       (long long)(kt_stat(pool, "primary.headroom_bytes") >> 20));
	/* 64 blocks of 7 units are 7 segments of use: a grow per 9 rounds */
	CHECK(s <= 2, "%lld segments unmapped (and %lld mapped) over %d rounds of steady growth", (long long)s,
	      (long long)g, NBIG);
	for (int i = 0; i < NFRAG; i++)
		kp_free(pool, frag[i]);
	for (int i = 0; i < NBIG; i++)
		kp_free(pool, big[i]);
	kp_destroy(pool);
}

int main(void)
{
	RUN(test_idle_pass_thrash);
	return ktest_summary();
}
