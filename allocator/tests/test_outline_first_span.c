/*
 * test_outline_first_span.c - a heap's first span of a class of blocks over
 * 4 KiB takes 2 slices (128 KiB) at the most, and its next spans grow from
 * there (outline.c, span_blocks: OL_FIRST_BYTES), so that a class a thread
 * uses for one block carves no slices for 32 of them.
 *
 * CPython grows a list by realloc, 1/8 more each time, one block live:
 * through every class from 9 to 64 KiB, each first span of 32 blocks (5 to
 * 32 slices). Its test_unicode under the preload carved 344 slices (21.5
 * MiB) of such spans for 1.4 MiB live at its peak, 6.7-7 MiB of them
 * resident (the daemon pre-faults whole segments ahead of the heaps; s30).
 * Checked, the daemon off:
 *   - a buffer grown by kp_realloc as CPython's list_resize grows its item
 *     array (n + n / 8 + 6 pointers) from 8 to 64 KiB: its bytes kept, and
 *     the slices carved at most 2 per class it passed through;
 *   - 100 blocks of 60 KiB (the 64 KiB class) in one heap: in at most 6
 *     spans (2, 8, 32, the 22 slices left in the segment, 32, 32), where
 *     spans of 32 blocks from the first take 4: a class used much keeps
 *     its spans long.
 */
#define _GNU_SOURCE 1
#include "ktest.h"
#include "outline.h"

static uint32_t slices_carved(kp_pool *pool)
{
	uint32_t n = 0;
	pthread_mutex_lock(&pool->ol->lock);
	for (struct ol_seg *s = pool->ol->segs; s; s = s->next)
		n += s->used;
	pthread_mutex_unlock(&pool->ol->lock);
	return n;
}

static void test_list_growth_carves_little(void)
{
	KT_POOL(pool, "layout:outline,daemon:off,prefault:off,seed:9");
	REQUIRE(pool->ol != NULL, "an outline pool");
	uint32_t before = slices_carved(pool);
	size_t n = 1024; /* pointers: 8 KiB */
	unsigned char *p = kp_alloc(pool, n * 8, 0);
	REQUIRE(p != NULL, "kp_alloc: %s", kp_last_error());
	kt_fill(p, n * 8, 1);
	unsigned steps = 1;
	while (n * 8 < OL_SMALL_MAX - 1024) {
		size_t m = n + (n >> 3) + 6;
		if (m * 8 + OL_CANARY > OL_SMALL_MAX)
			break;
		uintptr_t origin = (uintptr_t)p; /* the pattern's address: realloc may move it */
		unsigned char *q = kp_realloc(pool, p, m * 8, 0);
		REQUIRE(q != NULL, "kp_realloc(%zu): %s", m * 8, kp_last_error());
		CHECK(kt_verify_from(q, (const void *)origin, n * 8, 1) == KT_OK,
		      "the buffer's %zu bytes kept by the realloc to %zu", n * 8, m * 8);
		kt_fill(q, m * 8, 1);
		p = q;
		n = m;
		steps++;
	}
	uint32_t carved = slices_carved(pool) - before;
	/* a class per step at the most, 2 slices a first span */
	CHECK(carved <= 2 * steps, "%u slices (%u KiB) carved for one buffer grown in %u steps to %zu KiB", carved,
	      carved * (uint32_t)(OL_SLICE_SIZE >> 10), steps, n * 8 >> 10);
	REQUIRE(kp_free(pool, p) == KP_OK, "kp_free");
	kp_destroy(pool);
}

static void test_many_big_blocks_few_spans(void)
{
	KT_POOL(pool, "layout:outline,daemon:off,prefault:off,seed:9");
	enum { N = 100, SIZE = 60 << 10 };
	void *p[N];
	for (unsigned i = 0; i < N; i++) {
		p[i] = kp_alloc(pool, SIZE, 0);
		REQUIRE(p[i] != NULL, "kp_alloc: %s", kp_last_error());
		memset(p[i], (int)i, SIZE);
	}
	struct ol_span *seen[N];
	unsigned nspans = 0;
	for (unsigned i = 0; i < N; i++) {
		struct ol_span *pg = kp__ol_map_span(pool->ol->map, (uintptr_t)p[i] >> OL_SLICE_SHIFT);
		bool known = false;
		for (unsigned k = 0; k < nspans; k++)
			known |= seen[k] == pg;
		if (!known)
			seen[nspans++] = pg;
	}
	/* 2, 8, 32, then the 22 slices left in the segment (span_slices'
	 * tail), 32, 32: 6, where 32-block spans alone take 4 */
	CHECK(nspans <= 6, "%u spans for %u blocks of %u KiB", nspans, (unsigned)N, (unsigned)(SIZE >> 10));
	for (unsigned i = 0; i < N; i++) {
		CHECK(((unsigned char *)p[i])[SIZE - 1] == (unsigned char)i, "block %u kept", i);
		REQUIRE(kp_free(pool, p[i]) == KP_OK, "kp_free");
	}
	kp_destroy(pool);
}

int main(void)
{
	RUN(test_list_growth_carves_little);
	RUN(test_many_big_blocks_few_spans);
	return ktest_summary();
}
