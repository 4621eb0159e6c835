/*
 * test_outline_grow_paced_attack31b.c - s31-att: layout:outline's spares
 * sized within 1/32 of the bytes in use from 64 MiB on, one segment at
 * least while growing (daemon.c, KP_GROW_SMALL; branch s31-mem), against
 * growth faster than test_outline_grow's 2 MiB a pass. A thread grows from
 * a 64 MiB warm-up (outline.c's OL_PREFAULT_MIN) to 160 MiB in 4-64 KiB
 * blocks written whole, BURST bytes between two passes 10 ms apart on the
 * pool's clock (daemon:off, step_clock:on); counted past the warm-up: the
 * thread's page faults (RUSAGE_THREAD) against the pages it wrote, and its
 * mmap calls (kp_stats' syscalls.alloc.mmap).
 * Asserted for bursts of 2 and 3 MiB (200-300 MB/s): under 1% of the pages
 * faulted on the thread, no mmap on it. The 4 and 6 MiB rounds are printed
 * (measured, not asserted: see the report for main against s31-mem).
 * Then the same with the daemon's own thread (daemon:on, its timer and the
 * allocation path's wake-ups), 1 MiB every 5 and 10 ms of real time (200
 * and 100 MB/s): no mmap on the thread, faults printed (1% is not met there
 * on main 741539f nor on s31-mem a08a69c at load 6: 2.1-2.6% against
 * main's 2.6-5.4% at 200 MB/s; see the report).
 */
#define _GNU_SOURCE /* RUSAGE_THREAD */
#include "ktest.h"
#include "outline.h"

#include <sys/resource.h>
#include <unistd.h>

#define KiB ((size_t)1 << 10)
#define MiB ((size_t)1 << 20)
/* under a sanitizer (no fault bound there: its shadow faults on the thread)
 * less, so that the file runs in a few seconds */
#define TOTAL (KT_SANITIZED ? 96 * MiB : 160 * MiB)
#define WARM (64 * MiB)

static long thread_minflt(void)
{
	struct rusage ru;
	if (getrusage(RUSAGE_THREAD, &ru) != 0)
		return -1;
	return ru.ru_minflt;
}

static void *blocks[16384];

/* faults and pages past the warm-up, and the thread's mmap calls there */
static void grow(const char *conf, size_t burst_sz, bool stepped, unsigned pace_ms, long *faults, size_t *fpages,
		 int64_t *mmaps)
{
	kp_pool *pool = kp_create(conf);
	REQUIRE(pool, "kp_create: %s", kp_last_error());
	if (stepped)
		kp_daemon_step(pool, 0);
	uint64_t seed = 12345;
	size_t n = 0, done = 0, burst = 0, from = 0;
	long f0 = thread_minflt();
	int64_t mm0 = -1;
	*faults = 0, *fpages = 0;
	while (done < TOTAL && n < sizeof blocks / sizeof blocks[0]) {
		seed = seed * 6364136223846793005ull + 1442695040888963407ull;
		size_t sz = 4 * KiB + (size_t)(seed >> 33) % (60 * KiB - 8 + 1);
		char *p = kp_alloc(pool, sz, 0);
		REQUIRE(p, "kp_alloc(%zu): %s", sz, kp_last_error());
		if (from >= WARM)
			*fpages += (sz + 4095) / 4096;
		memset(p, 0x5a, sz);
		blocks[n++] = p;
		done += sz;
		burst += sz;
		if (burst < burst_sz)
			continue;
		burst = 0;
		if (from >= WARM)
			*faults += thread_minflt() - f0;
		from = done;
		if (done >= WARM && mm0 < 0)
			mm0 = kt_stat(pool, "syscalls.alloc.mmap");
		if (stepped)
			kp_daemon_step(pool, 10);
		else if (done >= WARM)
			kt_sleep_ms(pace_ms); /* paced: its sleep's faults are none of the thread's pages */
		f0 = thread_minflt();
	}
	*mmaps = kt_stat(pool, "syscalls.alloc.mmap") - mm0;
	for (size_t i = 0; i < n; i++)
		kp_free(pool, blocks[i]);
	kp_destroy(pool);
}

static void test_stepped_bursts(void)
{
	static const size_t bursts[] = {2 * MiB, 3 * MiB, 4 * MiB, 6 * MiB};
	for (size_t k = 0; k < (KT_SANITIZED ? 2 : sizeof bursts / sizeof bursts[0]); k++) {
		long faults;
		size_t pages;
		int64_t mm;
		grow("layout:outline,daemon:off,step_clock:on,seed:7", bursts[k], true, 0, &faults, &pages, &mm);
		printf("   %zu MiB a pass (10 ms): the thread faulted %ld of %zu pages (%.2f%%), %lld mmap\n",
		       bursts[k] >> 20, faults, pages, 100.0 * (double)faults / (double)pages, (long long)mm);
		if (bursts[k] <= 3 * MiB) {
			if (!KT_SANITIZED)
				CHECK((size_t)faults * 100 < pages,
				      "%zu MiB a pass: %ld of %zu pages faulted on the thread", bursts[k] >> 20, faults,
				      pages);
			CHECK(mm == 0, "%zu MiB a pass: %lld mmap on the thread", bursts[k] >> 20, (long long)mm);
		}
	}
}

static void test_daemon_thread_paced(void)
{
	long faults;
	size_t pages;
	int64_t mm;
	for (unsigned pace = 5; pace <= (KT_SANITIZED ? 5 : 10); pace += 5) {
		grow("layout:outline,seed:7", 1 * MiB, false, pace, &faults, &pages, &mm);
		printf("   daemon thread, 1 MiB every %u ms: the thread faulted %ld of %zu pages (%.2f%%), %lld mmap\n",
		       pace, faults, pages, 100.0 * (double)faults / (double)pages, (long long)mm);
		CHECK(mm == 0, "%lld mmap on the allocating thread", (long long)mm);
	}
}

int main(void)
{
	RUN(test_stepped_bursts);
	RUN(test_daemon_thread_paced);
	return ktest_summary();
}
