/*
 * test_burst.c - what the daemon holds once a burst of growth has ended
 * (issue 14, point 2: peak RSS of real programs within 1.1x the best peer).
 *
 * sqlite3 under the preload ends on a burst (13 MB in 50 ms): the daemon's
 * pass after it measured a rate of 500 MB/s and pre-faulted 8 MiB of
 * headroom for growth that had already stopped: its peak RSS went from
 * 48.5 to 55.7 MiB in that pass (glibc: 37.7). A pass that finds nothing
 * taken for longer than the headroom is meant to last (the horizon) keeps
 * the floor; growth that resumes gets its headroom back at the next pass.
 *
 * Driven with kp_daemon_step (daemon:off): the test's clock decides when a
 * pass runs.
 *
 * And the other end of growth, the start: a floor set past primary_initial
 * is mapped by kp_create, so the allocation path never maps while the
 * daemon's first pass is pending (workloads/paced-growth.yaml under two
 * busy loops: 2 mmap calls on the allocation path in 1 run of 10); and a
 * daemon late by more than the headroom lasts leaves the allocation path
 * faulting pages, not mapping segments. RSS is meaningless under a sanitizer: the RSS bound is checked
 * in the release variant, the target in every variant.
 */
/* Tests the grow daemon's growth, front and purge of the inline primary (daemon.c, primary.c; layout:outline's: test_outline_grow.c, test_outline_memory.c): every pool layout:inline (ktest.h, KT_LAYOUT_INLINE). */
#define KT_LAYOUT_INLINE 1
#include "ktest.h"

#define KiB ((size_t)1 << 10)
#define MiB ((size_t)1 << 20)

enum { BLOCK = 60 * 1024, NB = 512 }; /* 30 MiB at most */
static void *b[NB];

#define NO_PASS UINT64_MAX

/* n blocks, every byte written (the probe sees a program that writes what
 * it takes: pre-faulting on), a pass every 2 MiB at step_ms of the test's
 * clock each (NO_PASS: none, a daemon that is late). */
static int take(kp_pool *pool, int from, int n, uint64_t step_ms)
{
	for (int i = from; i < from + n; i++) {
		b[i] = kp_alloc(pool, BLOCK, 0);
		if (b[i] == NULL) {
			CHECK(0, "kp_alloc #%d: %s", i, kp_last_error());
			return i;
		}
		memset(b[i], 0x5a, BLOCK);
		if ((i + 1) % 34 == 0 && step_ms != NO_PASS)
			kp_daemon_step(pool, step_ms);
	}
	return from + n;
}

static void test_no_headroom_after_the_burst(void)
{
	unsetenv("KPOOL_CONF");
	KT_POOL(pool, "daemon:off,step_clock:on,seed:7");
	kp_daemon_step(pool, 0);
	/* 24 MiB at 2 MiB per 2 ms (1 GB/s), then nothing */
	int n = take(pool, 0, 400, 2);
	int64_t busy = kt_stat(pool, "daemon.target_bytes");
	long r0 = kt_rss_kb();
	/* the next pass, 50 ms after the last block was taken */
	kp_daemon_step(pool, 50);
	long r1 = kt_rss_kb();
	int64_t quiet = kt_stat(pool, "daemon.target_bytes");
	printf("   target %lld KiB during the burst, %lld KiB 50 ms after it; RSS %+ld KiB in that pass\n",
	       (long long)(busy >> 10), (long long)(quiet >> 10), r1 - r0);
	CHECK(busy >= (int64_t)(4 * MiB), "target %lld KiB during a 1 GB/s burst (the rate did not count)",
	      (long long)(busy >> 10));
	CHECK(quiet <= (int64_t)MiB, "target %lld KiB 50 ms after the burst ended: headroom for growth that stopped",
	      (long long)(quiet >> 10));
	if (KT_SANITIZED)
		printf("   (sanitizer build: the RSS bound is checked in the release variant)\n");
	else
		CHECK(r1 - r0 <= (long)(MiB + 256 * KiB) / 1024,
		      "the pass after the burst ended made %ld KiB resident (the floor is at most 1 MiB)", r1 - r0);
	/* growth resumes: the next pass sizes the headroom from the rate again */
	n = take(pool, n, 68, 2);
	int64_t again = kt_stat(pool, "daemon.target_bytes");
	printf("   target %lld KiB once growth resumed\n", (long long)(again >> 10));
	CHECK(again >= (int64_t)(4 * MiB), "target %lld KiB once a 1 GB/s growth resumed", (long long)(again >> 10));
	for (int i = 0; i < n; i++)
		kp_free(pool, b[i]);
	kp_destroy(pool);
}

/* A daemon late by more than its headroom lasts (descheduled on a loaded
 * machine: passes 30-150 ms apart were seen under other processes' busy
 * loops) leaves the allocation path faulting pages, never mapping: while
 * the program grows, a segment more than the target is mapped ahead. */
static void test_late_daemon_no_alloc_mmap(void)
{
	unsetenv("KPOOL_CONF");
	KT_POOL(pool, "daemon:off,step_clock:on,seed:7");
	kp_daemon_step(pool, 0);
	int n = take(pool, 0, 200, 2); /* 12 MiB at 1 GB/s */
	kp_daemon_step(pool, 2);
	int64_t target = kt_stat(pool, "daemon.target_bytes");
	int64_t mmap0 = kt_stat(pool, "syscalls.alloc.mmap");
	/* the daemon is late: the target and 1 MiB more taken without a pass */
	int more = (int)((target + (int64_t)MiB) / BLOCK) + 1;
	n = take(pool, n, more, NO_PASS);
	int64_t mmap1 = kt_stat(pool, "syscalls.alloc.mmap");
	printf("   target %lld KiB; %d KiB taken with no pass: %lld mmap calls on the allocation path\n",
	       (long long)(target >> 10), more * (BLOCK / 1024), (long long)(mmap1 - mmap0));
	CHECK(mmap1 == mmap0, "%lld mmap calls on the allocation path while the daemon was late by the target + 1 MiB",
	      (long long)(mmap1 - mmap0));
	for (int i = 0; i < n; i++)
		kp_free(pool, b[i]);
	kp_destroy(pool);
}

/* Right after kp_create, before the daemon thread has had time to grow. */
static void test_floor_mapped_at_create(void)
{
	unsetenv("KPOOL_CONF");
	KT_POOL(pool, "primary_initial:1m,low_wm:32m,high_wm:96m,prefault:off");
	int64_t cap = kt_stat(pool, "primary.capacity_bytes");
	int64_t alloc_mmap = kt_stat(pool, "syscalls.alloc.mmap");
	printf("   capacity right after kp_create: %lld MiB (high_wm 96 MiB)\n", (long long)(cap >> 20));
	CHECK(cap >= (int64_t)(96 * MiB),
	      "capacity %lld MiB after kp_create with high_wm:96m: the allocation path "
	      "maps if it comes before the daemon's first pass",
	      (long long)(cap >> 20));
	CHECK(alloc_mmap == 0, "%lld mmap calls on the allocation path", (long long)alloc_mmap);
	kp_destroy(pool);
}

int main(void)
{
	RUN(test_no_headroom_after_the_burst);
	RUN(test_floor_mapped_at_create);
	RUN(test_late_daemon_no_alloc_mmap);
	return ktest_summary();
}
