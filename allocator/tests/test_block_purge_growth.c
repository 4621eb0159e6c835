/*
 * test_block_purge_growth.c - free blocks' pages are given back while the
 * program grows on its own page faults with free units to spare (issue 14:
 * git's peak RSS under the preload).
 *
 * The daemon gave back the pages inside free blocks of the big classes
 * (primary.c, "purging free blocks") only in passes that found no growth:
 * a pass that is late holds up the growth the allocation path waits for
 * when the daemon pre-faults for it. git pack-objects grows in all but a few
 * of its passes, and it never waits for one (the daemon pre-faults nothing
 * for a program that writes 70-75% of what it takes, and the pool had
 * megabytes of free units): at its peak about 0.8 MiB were pages of free
 * 16-28 KiB blocks that stayed in partial spans for the whole run.
 *
 *   - sparse growth: 20 KiB blocks, every page written, every other one
 *     freed (no span empties); then each pass follows new blocks taken past
 *     the peak (each pass is a busy one): the freed blocks' inner pages are
 *     given back, and the live blocks keep every byte;
 *   - pre-faulted growth: the same with the daemon pre-faulting for the
 *     program and headroom short: the busy passes leave the blocks alone
 *     (as before: the paced-growth guarantee).
 */
#define _GNU_SOURCE
/* Tests the inline primary's segments, spans and units (primary.c): every pool layout:inline (ktest.h, KT_LAYOUT_INLINE). */
#define KT_LAYOUT_INLINE 1
#include "ktest.h"

#include <stdbool.h>
#include <sys/mman.h>

#define KiB ((size_t)1 << 10)
#define PAGE ((size_t)4096)
#define BLK (20 * KiB - 64) /* the 20 KiB class: five pages, three whole ones past the header's */
#define NBLK 128	    /* 2.5 MiB */
#define NGROW 64	    /* blocks taken past the peak before each pass */
#define NBACK 240	    /* 6 KiB blocks that bring the use back to its peak */

static char *blk[NBLK];
static char *grow[8][NGROW];
static char *back[NBACK];

static size_t resident_pages(const char *p, size_t n, size_t *whole)
{
	uintptr_t a = ((uintptr_t)p + PAGE - 1) & ~(uintptr_t)(PAGE - 1);
	uintptr_t e = ((uintptr_t)p + n) & ~(uintptr_t)(PAGE - 1);
	unsigned char vec[16];
	*whole = e > a ? (e - a) / PAGE : 0;
	if (e <= a || (e - a) / PAGE > sizeof vec || mincore((void *)a, e - a, vec) != 0)
		return 0;
	size_t r = 0;
	for (size_t i = 0; i < (e - a) / PAGE; i++)
		r += vec[i] & 1;
	return r;
}

/* Share (%) of the freed blocks' whole pages past their first 64 bytes
 * still resident. */
static unsigned freed_resident_pct(void)
{
	size_t r = 0, all = 0;
	for (unsigned i = 1; i < NBLK; i += 2) {
		size_t w;
		r += resident_pages(blk[i] + 64, BLK - 64, &w);
		all += w;
	}
	return all ? (unsigned)(r * 100 / all) : 100;
}

/* Blocks taken, written whole and half freed; 6 KiB blocks (another class:
 * the freed 20 KiB blocks are not taken again) bring the use back to its
 * peak, then passes, each after NGROW more past the peak (each pass finds
 * growth). Returns the freed blocks' resident share. */
static unsigned run(kp_pool *pool, unsigned passes)
{
	kp_daemon_step(pool, 0);
	for (unsigned i = 0; i < NBLK; i++) {
		blk[i] = kp_alloc(pool, BLK, 0);
		if (!blk[i]) {
			CHECK(false, "kp_alloc: %s", kp_last_error());
			return 0;
		}
		kt_fill(blk[i], BLK, i);
	}
	for (unsigned i = 1; i < NBLK; i += 2)
		CHECK(kp_free(pool, blk[i]) == 0, "kp_free: %s", kp_last_error());
	kp_thread_flush(pool); /* the cached blocks go back to their spans */
	for (unsigned i = 0; i < NBACK; i++) {
		back[i] = kp_alloc(pool, 6000, 0);
		CHECK(back[i] != NULL, "kp_alloc: %s", kp_last_error());
		if (back[i])
			memset(back[i], 0x5a, 6000);
	}
	for (unsigned k = 0; k < passes && k < 8; k++) {
		for (unsigned i = 0; i < NGROW; i++) {
			grow[k][i] = kp_alloc(pool, 6000, 0);
			CHECK(grow[k][i] != NULL, "kp_alloc: %s", kp_last_error());
			if (grow[k][i])
				memset(grow[k][i], 0x5a, 6000);
		}
		kp_daemon_step(pool, 20);
	}
	unsigned pct = freed_resident_pct();
	unsigned bad = 0;
	for (unsigned i = 0; i < NBLK; i += 2) {
		bad += kt_verify(blk[i], BLK, i) != KT_OK;
		CHECK(kp_free(pool, blk[i]) == 0, "kp_free: %s", kp_last_error());
	}
	CHECK(bad == 0, "%u live blocks lost bytes to the purge", bad);
	for (unsigned k = 0; k < passes && k < 8; k++)
		for (unsigned i = 0; i < NGROW; i++)
			kp_free(pool, grow[k][i]);
	for (unsigned i = 0; i < NBACK; i++)
		kp_free(pool, back[i]);
	return pct;
}

static void test_sparse_growth(void)
{
	/* prefault:off: the daemon pre-faults nothing, the program faults its
	 * own pages; 16 MiB of free units at the start */
	kp_pool *pool = kp_create("daemon:off,prefault:off,primary_initial:16m,seed:21");
	REQUIRE(pool != NULL, "kp_create: %s", kp_last_error());
	unsigned pct = run(pool, 6);
	printf("   freed 20 KiB blocks' pages resident after 6 passes that each found growth: %u%%\n", pct);
	CHECK(pct <= 5, "%u%% of the free blocks' inner pages still resident after 6 busy passes", pct);
	kp_destroy(pool);
}

static void test_prefaulted_growth(void)
{
	/* prefault_touch:0: the daemon pre-faults for the program (it writes
	 * what it takes); the busy passes leave the free blocks alone */
	kp_pool *pool = kp_create("daemon:off,prefault_touch:0,seed:22");
	REQUIRE(pool != NULL, "kp_create: %s", kp_last_error());
	int64_t purged0 = kt_stat(pool, "primary.purged_bytes");
	unsigned pct = run(pool, 6);
	int64_t purged = kt_stat(pool, "primary.purged_bytes") - purged0;
	printf("   pre-faulted growth: freed blocks' pages resident %u%%, %lld KiB purged\n", pct,
	       (long long)purged / 1024);
	CHECK(pct >= 90, "the busy passes of a pre-faulted program gave back free blocks (%u%% resident)", pct);
	kp_destroy(pool);
}

int main(void)
{
	RUN(test_sparse_growth);
	RUN(test_prefaulted_growth);
	return ktest_summary();
}
