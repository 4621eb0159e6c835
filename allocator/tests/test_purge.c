/*
 * test_purge.c - free units purged (issue 14, point 2: peak and idle RSS).
 *
 * A unit of a normal segment that went back free stayed resident until its
 * whole segment was released; a segment that still holds one live block is
 * never released, so a program that freed most of what it took kept all of
 * it resident. The daemon now gives back (MADV_DONTNEED) the pages of free
 * units that stayed free for decay_ms, past the headroom it keeps
 * pre-faulted for the allocation path (primary.c, kp__primary_purge).
 *
 * Each test takes 32 MiB in 64 KiB blocks (small spans of the 80 KiB
 * class), 200 KiB blocks (large page runs) and 256 B blocks, interleaved in
 * one set of segments, writes every page, and frees all of it but the first
 * block of each segment (so that no segment can be released):
 *   - stepped: the daemon off, passes driven by kp_daemon_step past
 *     decay_ms: the freed blocks' pages are not resident any more (mincore),
 *     the RSS fell by most of the freed bytes (release builds: a sanitizer's
 *     shadow moves RSS), no segment was released, further idle passes make
 *     no madvise call (the daemon does not pre-fault what it purged, nor
 *     purge it again), and the memory serves new blocks whose contents and
 *     headers hold;
 *   - the daemon thread (decay_ms:100): the same within a second.
 */
#define _GNU_SOURCE
/* Tests the grow daemon's growth, front and purge of the inline primary (daemon.c, primary.c; layout:outline's: test_outline_grow.c, test_outline_memory.c): every pool layout:inline (ktest.h, KT_LAYOUT_INLINE). */
#define KT_LAYOUT_INLINE 1
#include "ktest.h"

#include <stdbool.h>
#include <sys/mman.h>

#define KiB ((size_t)1 << 10)
#define MiB ((size_t)1 << 20)
#define SEG ((size_t)4 << 20)
#define PAGE ((size_t)4096)
#define TOTAL (32 * MiB)
#define MAXB 4096

struct blk {
	char *p;
	size_t n;
	bool kept;
};
static struct blk blk[MAXB];
static size_t nblk;

/* Resident pages of the whole pages inside [p, p + n). */
static size_t resident_pages(const char *p, size_t n)
{
	uintptr_t a = ((uintptr_t)p + PAGE - 1) & ~(uintptr_t)(PAGE - 1);
	uintptr_t e = ((uintptr_t)p + n) & ~(uintptr_t)(PAGE - 1);
	if (e <= a)
		return 0;
	static unsigned char vec[(256 * KiB) / PAGE + 1];
	size_t np = (e - a) / PAGE, r = 0;
	if (np > sizeof vec || mincore((void *)a, e - a, vec) != 0)
		return 0;
	for (size_t i = 0; i < np; i++)
		r += vec[i] & 1;
	return r;
}

static size_t whole_pages(const char *p, size_t n)
{
	uintptr_t a = ((uintptr_t)p + PAGE - 1) & ~(uintptr_t)(PAGE - 1);
	uintptr_t e = ((uintptr_t)p + n) & ~(uintptr_t)(PAGE - 1);
	return e > a ? (e - a) / PAGE : 0;
}

/* Is seg one of the first n segments seen? (keep one block in each) */
static bool seen_seg(uintptr_t *segs, size_t *nsegs, uintptr_t seg)
{
	for (size_t i = 0; i < *nsegs; i++)
		if (segs[i] == seg)
			return true;
	if (*nsegs < 64)
		segs[(*nsegs)++] = seg;
	return false;
}

/* Take TOTAL bytes, interleaved, every page written; free all but the first
 * block of each segment. Returns the bytes freed in whole pages. */
static size_t take_and_free(kp_pool *pool)
{
	static const size_t sizes[] = {64 * KiB - 64, 200 * KiB, 256, 256, 256, 256};
	size_t total = 0;
	nblk = 0;
	for (unsigned i = 0; total < TOTAL && nblk < MAXB; i++) {
		size_t n = sizes[i % (sizeof sizes / sizeof sizes[0])];
		char *p = kp_alloc(pool, n, 0);
		if (p == NULL) {
			CHECK(0, "kp_alloc(%zu): %s", n, kp_last_error());
			break;
		}
		memset(p, 0x5a, n);
		blk[nblk++] = (struct blk){p, n, false};
		total += n;
	}
	uintptr_t segs[64];
	size_t nsegs = 0, freed = 0;
	for (size_t i = 0; i < nblk; i++)
		if (!seen_seg(segs, &nsegs, (uintptr_t)blk[i].p & ~(uintptr_t)(SEG - 1)))
			blk[i].kept = true;
	for (size_t i = 0; i < nblk; i++) {
		if (blk[i].kept)
			continue;
		CHECK(kp_free(pool, blk[i].p) == 0, "kp_free: %s", kp_last_error());
		freed += whole_pages(blk[i].p, blk[i].n);
	}
	kp_thread_flush(pool); /* the small blocks' spans empty: their units go back */
	printf("   %zu blocks in %zu segments, %zu kept; %zu KiB freed\n", nblk, nsegs, nsegs, freed * PAGE / KiB);
	return freed * PAGE;
}

/* Share (%) of the freed blocks' whole pages still resident. */
static unsigned freed_resident_pct(void)
{
	size_t r = 0, all = 0;
	for (size_t i = 0; i < nblk; i++)
		if (!blk[i].kept && blk[i].n >= 64 * KiB - 64) {
			r += resident_pages(blk[i].p, blk[i].n);
			all += whole_pages(blk[i].p, blk[i].n);
		}
	return all ? (unsigned)(r * 100 / all) : 100;
}

/* The memory serves again: new blocks written and checked, then freed. */
static void reuse(kp_pool *pool)
{
	char *p[64];
	unsigned bad = 0, fails = 0;
	for (unsigned i = 0; i < 64; i++) {
		size_t n = i % 2 ? 200 * KiB : 64 * KiB - 64;
		p[i] = kp_alloc(pool, n, 0);
		if (p[i] == NULL) {
			fails++;
			continue;
		}
		kt_fill(p[i], n, i);
	}
	for (unsigned i = 0; i < 64; i++) {
		size_t n = i % 2 ? 200 * KiB : 64 * KiB - 64;
		if (p[i] == NULL)
			continue;
		for (size_t k = 0; k < n; k += 997)
			bad += ((unsigned char *)p[i])[k] != kt_pattern_byte(p[i], i, k);
		bad += kp_free(pool, p[i]) != 0;
	}
	CHECK(fails == 0, "%u of 64 allocations failed after the purge", fails);
	CHECK(bad == 0, "%u bad bytes or frees in blocks served from purged units", bad);
}

static void free_kept(kp_pool *pool)
{
	for (size_t i = 0; i < nblk; i++)
		if (blk[i].kept) {
			CHECK(blk[i].p[0] == 0x5a && blk[i].p[blk[i].n - 1] == 0x5a, "a kept block lost its contents");
			CHECK(kp_free(pool, blk[i].p) == 0, "kp_free of a kept block: %s", kp_last_error());
		}
}

#define DECAY_MS 100

static void test_stepped_purge(void)
{
	kp_pool *pool = kp_create("daemon:off,decay_ms:100,high_wm:64k,seed:7");
	REQUIRE(pool != NULL, "kp_create: %s", kp_last_error());
	kp_daemon_step(pool, 0);
	long rss0 = kt_rss_kb();
	size_t freed = take_and_free(pool);
	long rss1 = kt_rss_kb();
	int64_t segs = kt_stat(pool, "primary.segments");
	/* the demand measured while taking decays (a halving per decay/4): a
	 * few periods bring the target back to its floor */
	for (int i = 0; i < 6; i++)
		kp_daemon_step(pool, DECAY_MS + 1);
	long rss2 = kt_rss_kb();
	unsigned pct = freed_resident_pct();
	int64_t madv = kt_stat(pool, "syscalls.daemon.madvise");
	for (int i = 0; i < 4; i++)
		kp_daemon_step(pool, DECAY_MS + 1);
	int64_t madv2 = kt_stat(pool, "syscalls.daemon.madvise");
	printf("   RSS %ld KiB at the start, %ld after freeing, %ld after the passes; %u%% of the freed pages "
	       "resident; daemon madvise %lld, %lld after 4 idle passes\n",
	       rss0, rss1, rss2, pct, (long long)madv, (long long)madv2);
	CHECK(pct <= 10, "%u%% of the freed blocks' pages are still resident after %d ms free", pct,
	      6 * (DECAY_MS + 1));
	/* the stats say what the daemon gave back: most of the ~29 MiB freed */
	int64_t purged = kt_stat(pool, "primary.purged_bytes");
	CHECK(purged >= (int64_t)(16 << 20), "primary.purged_bytes is %lld after the purge", (long long)purged);
	CHECK(kt_stat(pool, "primary.segments") == segs, "segments went from %lld to %lld: the test needs them kept",
	      (long long)segs, (long long)kt_stat(pool, "primary.segments"));
	CHECK(madv2 == madv, "idle passes made %lld madvise calls (purge and pre-fault in a loop?)",
	      (long long)(madv2 - madv));
	if (!KT_SANITIZED)
		CHECK(rss1 - rss2 >= (long)(freed / KiB) * 3 / 4,
		      "RSS fell by %ld KiB of the %zu KiB freed (free units stay resident)", rss1 - rss2, freed / KiB);
	else
		printf("   (sanitizer build: the RSS bound is checked in the release variant)\n");
	reuse(pool);
	free_kept(pool);
	kp_destroy(pool);
}

static void test_daemon_thread_purges(void)
{
	kp_pool *pool = kp_create("decay_ms:100,daemon_interval_ms:20,high_wm:64k,seed:8");
	REQUIRE(pool != NULL, "kp_create: %s", kp_last_error());
	take_and_free(pool);
	unsigned pct = 100;
	uint64_t t0 = kt_now_ms();
	while (kt_now_ms() - t0 < 3000 && (pct = freed_resident_pct()) > 10)
		kt_sleep_ms(50);
	printf("   %u%% of the freed pages resident after %llu ms\n", pct, (unsigned long long)(kt_now_ms() - t0));
	CHECK(pct <= 10, "%u%% of the freed pages still resident 3 s after they were freed (decay_ms:100)", pct);
	reuse(pool);
	free_kept(pool);
	kp_destroy(pool);
}

int main(void)
{
	RUN(test_stepped_purge);
	RUN(test_daemon_thread_purges);
	return ktest_summary();
}
