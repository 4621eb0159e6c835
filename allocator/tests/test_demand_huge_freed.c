/*
 * test_demand_huge_freed.c - growth of the segments' use counts as demand
 * although a huge block freed before left the bytes in use under their peak.
 *
 * The daemon measures demand as the bytes taken from the free units, as far
 * as the bytes in use went past their peak (memory given back and taken
 * again is resident already). A huge block is no such memory: its mapping
 * is kept apart for huge requests (or unmapped), never handed to a span. A
 * program that freed a 32 MiB buffer and then grew its small heap by 16 MiB
 * stayed under the peak the buffer had set: the daemon saw no demand, kept
 * its rate at 0 and left the allocation path to fault (and map) all of it.
 * Checked with passes driven by kp_daemon_step: the rate measured while the
 * heap grows is not 0, and the daemon pre-faults for it.
 */
#define _GNU_SOURCE
/* Tests the grow daemon's growth, front and purge of the inline primary (daemon.c, primary.c; layout:outline's: test_outline_grow.c, test_outline_memory.c): every pool layout:inline (ktest.h, KT_LAYOUT_INLINE). */
#define KT_LAYOUT_INLINE 1
#include "ktest.h"

#include "internal.h"

#define MiB ((size_t)1 << 20)

static void test_growth_after_a_huge_free_is_demand(void)
{
	KT_POOL(pool, "daemon:off,step_clock:on,seed:3");
	char *big = kp_alloc(pool, 32 * MiB, 0);
	REQUIRE(big != NULL, "kp_alloc(32 MiB): %s", kp_last_error());
	memset(big, 1, 32 * MiB);
	REQUIRE(kp_free(pool, big) == KP_OK, "kp_free");
	kp_daemon_step(pool, 20);
	static void *blk[400];
	int64_t rate = 0, pre = 0;
	unsigned n = 0;
	for (unsigned step = 0; step < 16; step++) { /* 1 MiB every 10 ms: 100 MB/s */
		for (unsigned i = 0; i < 16; i++, n++) {
			blk[n] = kp_alloc(pool, 65000, 0);
			REQUIRE(blk[n] != NULL, "kp_alloc: %s", kp_last_error());
			memset(blk[n], 2, 65000);
		}
		kp_daemon_step(pool, 10);
		int64_t r = kt_stat(pool, "daemon.rate_bytes_per_s");
		rate = r > rate ? r : rate;
		int64_t p = kt_stat(pool, "daemon.prefaulted_bytes");
		pre = p > pre ? p : pre;
	}
	CHECK(rate > 0, "the daemon measured no demand while the heap grew by 16 MiB (rate %lld)", (long long)rate);
	CHECK(pre > 0, "the daemon pre-faulted nothing for it");
	for (unsigned i = 0; i < n; i++)
		kp_free(pool, blk[i]);
	kp_destroy(pool);
}

int main(void)
{
	RUN(test_growth_after_a_huge_free_is_demand);
	return ktest_summary();
}
