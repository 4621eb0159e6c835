/*
 * test_outline_page_plus.c - layout:outline's size classes past 1 KiB: a
 * page plus a caller's header (sqlite3's page cache, malloc(4368): 4376
 * bytes with the canary) takes a block of 4384 bytes, not 4608 (5.3% of
 * each of the ~7,700 such blocks sqlite3 holds at its peak: its peak RSS
 * under the preload was 1.10-1.11x glibc's, s31); and every request from
 * 1025 bytes to 64 KiB still gets the smallest class that holds it, a
 * multiple of 16 (kp_alloc's class, kp__ol_class_big, against the table).
 * As the inline primary's KP_CLASS_PAGE_PLUS (test_classes).
 */
#define _GNU_SOURCE 1
#include "ktest.h"
#include "outline.h"

/* 64 blocks of 4368 bytes from a fresh pool: one span, consecutive blocks
 * its block size apart. */
static void test_page_plus_block(void)
{
	enum { N = 64 };
	void *p[N];
	KT_POOL(pool, "daemon:off,layout:outline");
	size_t step = SIZE_MAX;
	for (int i = 0; i < N; i++) {
		p[i] = kp_alloc(pool, 4368, 0);
		REQUIRE(p[i] != NULL, "kp_alloc(4368): %s", kp_last_error());
		size_t d = i ? (size_t)((uint8_t *)p[i] - (uint8_t *)p[i - 1]) : SIZE_MAX;
		step = d < step ? d : step;
	}
	printf("   4368-byte requests: blocks %zu bytes apart (needs %u)\n", step, 4368 + OL_CANARY);
	CHECK(step == 4384, "4368-byte requests in blocks %zu bytes apart, not 4384 (4368 + canary, by 16)", step);
	for (int i = 0; i < N; i++)
		CHECK(kp_free(pool, p[i]) == 0, "free %d", i);
}

/* checks:off (kp_usable_size says the block's size; the class is that of
 * the request + OL_CANARY in either mode, outline.h): each need's block
 * holds it, is a multiple of 16, and is the smallest class that does (a
 * block larger than the last need's starts right past it). */
static void test_smallest_class_past_table(void)
{
	KT_POOL(pool, "daemon:off,layout:outline,checks:off");
	size_t prev = 0, bad = 0, first_bad = 0, classes = 0;
	for (size_t need = 1025; need <= OL_SMALL_MAX; need++) {
		size_t n = need - OL_CANARY;
		void *p = kp_alloc(pool, n, 0);
		REQUIRE(p != NULL, "kp_alloc(%zu)", n);
		size_t bs = kp_usable_size(pool, p);
		kp_free(pool, p);
		bool ok = bs >= need && bs % 16 == 0 && bs >= prev && (bs == prev || need == 1025 || prev == need - 1);
		if (!ok && !bad++)
			first_bad = need;
		classes += bs != prev;
		prev = bs;
	}
	printf("   1025..65536: %zu classes\n", classes);
	CHECK(bad == 0, "%zu sizes not in the smallest class that holds them (first need: %zu)", bad, first_bad);
	CHECK(prev == OL_SMALL_MAX, "64 KiB: a block of %zu", prev);
}

int main(void)
{
	RUN(test_page_plus_block);
	RUN(test_smallest_class_past_table);
	return ktest_summary();
}
