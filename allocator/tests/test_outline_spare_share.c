/*
 * test_outline_spare_share.c - the spare segments a layout:outline pool
 * keeps pre-faulted ahead of a growing program stay within their share of
 * the bytes in use (daemon.c, kp__daemon_grow_target: 1/32, at least one
 * segment while the program grows), between OL_PREFAULT_MIN (64 MiB) and
 * 256 MiB too.
 *
 * The share's floor for a small program (daemon.c's KP_TARGET_SMALL: half
 * the bytes in use while busy, at most 8 MiB, two segments) outweighed the
 * 1/32 there: every growing pool from 64 to 256 MiB in use had two spares,
 * 8 MiB, pre-faulted beside it (CPython's test_unicode under the preload,
 * 145 MiB at its peak: 8 MiB of the gap to mimalloc's peak). A thread grows
 * at 200 MB/s (2 MiB of 4-64 KiB blocks, written whole, between passes 10 ms
 * apart on the pool's clock: daemon:off, step_clock:on) to 120 MiB; past
 * 64 MiB, after every pass, the spares' resident pages are at most
 * max(in use / 32, one segment); and the thread still faults on under 1%
 * of the pages it writes past the warm-up (test_outline_grow's bound).
 * Failed on main 741539f: 2 spares (2,048 pages) resident at 66 MiB in use,
 * where at most 1,024 were due.
 */
#define _GNU_SOURCE /* RUSAGE_THREAD */
#include "ktest.h"
#include "outline.h"

#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>

#define KiB ((size_t)1 << 10)
#define MiB ((size_t)1 << 20)
#define TOTAL (120 * MiB)
#define WARM (64 * MiB) /* outline.c's OL_PREFAULT_MIN */
#define BURST (2 * MiB)
#define SHARE 32 /* daemon.c's KP_GROW_TARGET_SHARE */

static long thread_minflt(void)
{
	struct rusage ru;
	if (getrusage(RUSAGE_THREAD, &ru) != 0)
		return -1;
	return ru.ru_minflt;
}

/* pages of the spare segments resident */
static size_t spares_resident(kp_pool *pool)
{
	kp__ol *ol = pool->ol;
	size_t res = 0;
	pthread_mutex_lock(&ol->lock);
	for (struct ol_seg *s = ol->spare; s; s = s->next)
		res += OL_SEG_SIZE / KP_PAGE - kt_not_resident(s->base, OL_SEG_SIZE);
	pthread_mutex_unlock(&ol->lock);
	return res;
}

static void *blocks[16384];

static void test_spares_within_their_share(void)
{
	kp_pool *pool = kp_create("layout:outline,daemon:off,step_clock:on,seed:7");
	REQUIRE(pool, "kp_create: %s", kp_last_error());
	kp_daemon_step(pool, 0);
	uint64_t seed = 12345;
	size_t n = 0, done = 0, burst = 0, fpages = 0, from = 0, worst = 0, worst_at = 0, most = 0;
	long faults = 0, f0 = thread_minflt();
	unsigned over = 0, passes = 0;
	while (done < TOTAL && n < sizeof blocks / sizeof blocks[0]) {
		seed = seed * 6364136223846793005ull + 1442695040888963407ull;
		size_t sz = 4 * KiB + (size_t)(seed >> 33) % (60 * KiB - 8 + 1); /* up to 64 KiB with the canary */
		char *p = kp_alloc(pool, sz, 0);
		REQUIRE(p, "kp_alloc(%zu): %s", sz, kp_last_error());
		if (from >= WARM)
			fpages += (sz + 4095) / 4096;
		memset(p, 0x5a, sz);
		blocks[n++] = p;
		done += sz;
		burst += sz;
		if (burst < BURST)
			continue;
		burst = 0;
		if (from >= WARM) /* a burst that began past the warm-up */
			faults += thread_minflt() - f0;
		from = done;
		kp_daemon_step(pool, 10); /* its own faults are not counted */
		if (done >= WARM) {
			size_t in_use = (size_t)kt_stat(pool, "primary.in_use_bytes");
			size_t due = in_use / SHARE > OL_SEG_SIZE ? in_use / SHARE : OL_SEG_SIZE;
			size_t res = spares_resident(pool);
			passes++;
			most = res > most ? res : most;
			if (res * KP_PAGE > due) {
				over++;
				if (res > worst)
					worst = res, worst_at = in_use;
			}
		}
		f0 = thread_minflt();
	}
	printf("   %zu blocks, %zu MiB; %u passes past the warm-up, %u with the spares over their share (worst %zu "
	       "pages at %zu MiB in use); most spare pages resident %zu; the thread faulted %ld of %zu pages\n",
	       n, done >> 20, passes, over, worst, worst_at >> 20, most, faults, fpages);
	CHECK(passes > 0, "no pass past the warm-up");
	CHECK(over == 0, "%u passes of %u with the spares over max(in use / %d, a segment): %zu pages at %zu MiB", over,
	      passes, SHARE, worst, worst_at >> 20);
	CHECK(most > 0, "no spare pre-faulted past the warm-up");
	if (!KT_SANITIZED) /* a sanitizer's shadow faults on the thread too */
		CHECK(fpages > 0 && (size_t)faults * 100 < fpages, "the allocating thread faulted %ld of %zu pages",
		      faults, fpages);
	for (size_t i = 0; i < n; i++)
		kp_free(pool, blocks[i]);
	kp_destroy(pool);
}

int main(void)
{
	RUN(test_spares_within_their_share);
	return ktest_summary();
}
