/*
 * test_block_purge_classes.c - every class the block purge serves (free
 * blocks of 16 KiB and more: primary.c, "purging free blocks") has the
 * pages inside its free blocks given back, whatever other classes hold.
 *
 *   - every class: blocks of each class from 16 KiB to 128 KiB, every page
 *     written, every other one freed (no span empties); after four passes
 *     the freed blocks' inner pages are not resident (mincore), in every
 *     class. The checkpoint's budget (KP_BPURGE_ROUNDS) was spent one round
 *     per class visited, blocks or not: with 8 classes per doubling the 16
 *     rounds ended at the 60 KiB class, and free blocks of 64-128 KiB (the
 *     classes with the most pages to give back) were never looked at;
 *   - budget: more free blocks than one checkpoint takes, in the lowest
 *     class; the highest class's are given back all the same within a few
 *     checkpoints.
 */
#define _GNU_SOURCE
/* Tests the inline primary's segments, spans and units (primary.c): every pool layout:inline (ktest.h, KT_LAYOUT_INLINE). */
#define KT_LAYOUT_INLINE 1
#include "ktest.h"

#include "internal.h"

#include <stdbool.h>
#include <sys/mman.h>

#define PAGE ((size_t)4096)
#define PER_CLASS 16 /* blocks of each class: two spans at least, none emptied */
#define MIN_BLOCK 16384

/* Resident and whole pages among the whole pages inside [p, p + n). */
static void resident_pages(const char *p, size_t n, size_t *res, size_t *whole)
{
	uintptr_t a = ((uintptr_t)p + PAGE - 1) & ~(uintptr_t)(PAGE - 1);
	uintptr_t e = ((uintptr_t)p + n) & ~(uintptr_t)(PAGE - 1);
	unsigned char vec[64];
	if (e <= a || (e - a) / PAGE > sizeof vec || mincore((void *)a, e - a, vec) != 0)
		return;
	*whole += (e - a) / PAGE;
	for (size_t i = 0; i < (e - a) / PAGE; i++)
		*res += vec[i] & 1;
}

/* The request that fills class cls's block (header and canary included). */
static size_t fill_size(unsigned cls)
{
	return kp__class_size[cls] - KP_HDR - KP_CANARY;
}

static char *blk[KP_NCLASS][PER_CLASS];

/* Take PER_CLASS blocks of cls, every byte written, every other one freed. */
static void take_and_free_half(kp_pool *pool, unsigned cls)
{
	for (unsigned i = 0; i < PER_CLASS; i++) {
		blk[cls][i] = kp_alloc(pool, fill_size(cls), 0);
		REQUIRE(blk[cls][i] != NULL, "kp_alloc: %s", kp_last_error());
		memset(blk[cls][i], 0x5a, fill_size(cls));
	}
	for (unsigned i = 1; i < PER_CLASS; i += 2)
		CHECK(kp_free(pool, blk[cls][i]) == 0, "kp_free: %s", kp_last_error());
}

/* Share (%) of cls's freed blocks' inner pages (past their first 64 bytes)
 * still resident, in spans that keep a live block (a span emptied went back
 * to the free units, which the unit purge gives back after decay_ms). */
static unsigned freed_resident_pct(unsigned cls)
{
	size_t res = 0, whole = 0;
	for (unsigned i = 1; i < PER_CLASS; i += 2) {
		kp__seg *s = kp__pagemap_get(blk[cls][i]);
		unsigned u = (unsigned)(((uintptr_t)blk[cls][i] - (uintptr_t)s) >> KP_UNIT_SHIFT);
		if (s->span[s->span[u].head].kind == KP_SPAN_SMALL)
			resident_pages(blk[cls][i] + 64, fill_size(cls) - 64, &res, &whole);
	}
	return whole ? (unsigned)(res * 100 / whole) : 100;
}

static void test_every_class(void)
{
	kp_pool *pool = kp_create("daemon:off,prefault:off,seed:31");
	REQUIRE(pool != NULL, "kp_create: %s", kp_last_error());
	unsigned first = kp__class_of(MIN_BLOCK), kept = 0, classes = 0;
	for (unsigned cls = first; cls < KP_NCLASS; cls++)
		take_and_free_half(pool, cls);
	kp_thread_flush(pool); /* the cached blocks go back to their spans */
	/* 5 passes: the first finds the memory taken above (growth: no block
	 * purge), the other 4 purge */
	for (int i = 0; i < 5; i++)
		kp_daemon_step(pool, 100);
	char line[1024];
	size_t at = 0;
	for (unsigned cls = first; cls < KP_NCLASS; cls++, classes++) {
		unsigned pct = freed_resident_pct(cls);
		if (pct > 5) {
			kept++;
			at += (size_t)snprintf(line + at, sizeof line - at, " %u B (%u%%)", kp__class_size[cls], pct);
		}
	}
	printf("   %u classes of %u B and more: %u kept their free blocks' pages%s\n", classes, MIN_BLOCK, kept,
	       kept ? ":" : "");
	if (kept)
		printf("  %s\n", line);
	CHECK(kept == 0, "%u of %u classes kept the pages of free blocks after 500 ms:%s", kept, classes, line);
	for (unsigned cls = first; cls < KP_NCLASS; cls++)
		for (unsigned i = 0; i < PER_CLASS; i += 2) {
			bool ok = true;
			for (size_t k = 0; k < fill_size(cls); k += 509)
				ok &= (unsigned char)blk[cls][i][k] == 0x5a;
			CHECK(ok, "a live block of %u B lost bytes", kp__class_size[cls]);
			kp_free(pool, blk[cls][i]);
		}
	kp_destroy(pool);
}

/* More free blocks in the lowest class than a checkpoint takes (16 batches
 * of 64): the highest class still gets its turn within a few checkpoints. */
static void test_budget_reaches_the_top(void)
{
	enum { LOW = 2048 + 128 };
	static char *low[LOW];
	kp_pool *pool = kp_create("daemon:off,prefault:off,seed:32");
	REQUIRE(pool != NULL, "kp_create: %s", kp_last_error());
	unsigned lo = kp__class_of(MIN_BLOCK), top = KP_NCLASS - 1;
	for (unsigned i = 0; i < LOW; i++) {
		low[i] = kp_alloc(pool, fill_size(lo), 0);
		REQUIRE(low[i] != NULL, "kp_alloc: %s", kp_last_error());
		memset(low[i], 1, fill_size(lo));
	}
	take_and_free_half(pool, top);
	for (unsigned i = 1; i < LOW; i += 2)
		kp_free(pool, low[i]);
	kp_thread_flush(pool);
	for (int i = 0; i < 8; i++)
		kp_daemon_step(pool, 100);
	unsigned pct = freed_resident_pct(top);
	printf("   %u free blocks of %u B ahead of it: %u%% of the %u B class's free pages resident after 8 passes\n",
	       LOW / 2, kp__class_size[lo], pct, kp__class_size[top]);
	CHECK(pct <= 5, "%u%% of the top class's free pages still resident", pct);
	for (unsigned i = 0; i < LOW; i += 2)
		kp_free(pool, low[i]);
	for (unsigned i = 0; i < PER_CLASS; i += 2)
		kp_free(pool, blk[top][i]);
	kp_destroy(pool);
}

int main(void)
{
	RUN(test_every_class);
	RUN(test_budget_reaches_the_top);
	return ktest_summary();
}
