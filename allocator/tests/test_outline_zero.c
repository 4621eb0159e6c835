/*
 * test_outline_zero.c - a KP_ZERO block known zero is not written: a block
 * of the outline layout never handed out since its span's pages were zero
 * (outline.c, pop_zero: OL_VIRGIN), and a request of 64 KiB or more, which
 * takes a page run cut from units no block has held (alloc.c, zero_run),
 * keep the pages the program does not write untouched, as calloc's fresh
 * memory does on glibc and jemalloc. A block that was handed out before is
 * zeroed whole. Pages counted with mincore, before any byte is read.
 */
#define _GNU_SOURCE 1
#include "ktest.h"
#include "outline.h"
#include "ol_resident.h"

#include <sys/mman.h>

enum { NB = 64 };

static bool all_zero(const unsigned char *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (p[i])
			return false;
	return true;
}

/* NB blocks of size bytes by KP_ZERO, left unwritten: at most a quarter of
 * their pages resident (the canary's, at each block's end; a block a
 * refill's new span gives is zeroed: pop_zero cannot tell). Then written,
 * freed and taken again by KP_ZERO: zero. */
static void fresh_untouched(size_t size)
{
	kp_pool *pool = kp_create("daemon:off,seed:5");
	REQUIRE(pool, "kp_create: %s", kp_last_error());
	unsigned char *p[NB];
	size_t pages = 0, res = 0;
	for (int i = 0; i < NB; i++) {
		p[i] = kp_alloc(pool, size, KP_ZERO);
		REQUIRE(p[i], "kp_alloc %zu", size);
		pages += (size + KP_PAGE - 1) / KP_PAGE;
	}
	for (int i = 0; i < NB; i++)
		res += resident(p[i], size) / 4096;
	printf("   %d blocks of %zu B by KP_ZERO: %zu of their %zu pages resident\n", NB, size, res, pages);
	CHECK(res * 4 <= pages, "%zu of %zu pages of fresh KP_ZERO blocks of %zu B resident", res, pages, size);
	int bad = 0;
	for (int i = 0; i < NB; i++) {
		bad += !all_zero(p[i], size);
		memset(p[i], 0xee, size);
		CHECK(kp_free(pool, p[i]) == 0, "free");
	}
	CHECK(bad == 0, "%d fresh KP_ZERO blocks of %zu B not zero", bad, size);
	for (int i = 0; i < NB; i++) {
		p[i] = kp_alloc(pool, size, KP_ZERO);
		REQUIRE(p[i], "kp_alloc %zu again", size);
		bad += !all_zero(p[i], size);
	}
	CHECK(bad == 0, "%d KP_ZERO blocks of %zu B handed out again not zero", bad, size);
	for (int i = 0; i < NB; i++)
		CHECK(kp_free(pool, p[i]) == 0, "free");
	kp_destroy(pool);
}

/* Outline blocks: before, every KP_ZERO block was zeroed whole (all
 * 512 pages of these 64 resident). */
static void test_outline_block(void)
{
	fresh_untouched(30000);
}

/* alloc.c's path past the outline's 64 KiB: before, a size class's block
 * (up to 128 KiB), zeroed whole (1,600 pages resident of 1,600). */
static void test_past_the_outline(void)
{
	fresh_untouched(100 << 10);
}

/* A block of a span made fresh but handed out once, freed, and taken again
 * by KP_ZERO after other blocks of its span were: zero, as the first. */
static void test_mixed_span(void)
{
	kp_pool *pool = kp_create("daemon:off,seed:6");
	REQUIRE(pool, "kp_create: %s", kp_last_error());
	unsigned char *a = kp_alloc(pool, 4000, 0), *b = kp_alloc(pool, 4000, KP_ZERO);
	REQUIRE(a && b, "kp_alloc");
	memset(a, 0x5a, 4000);
	CHECK(all_zero(b, 4000), "a fresh KP_ZERO block not zero");
	CHECK(kp_free(pool, a) == 0, "free");
	unsigned char *c = kp_alloc(pool, 4000, KP_ZERO);
	CHECK(c == a, "the freed block not taken first (%p, %p)", (void *)c, (void *)a);
	CHECK(c && all_zero(c, 4000), "a block handed out before, taken by KP_ZERO, not zero");
	kp_free(pool, b);
	kp_free(pool, c);
	kp_destroy(pool);
}

int main(void)
{
	RUN(test_outline_block);
	RUN(test_past_the_outline);
	RUN(test_mixed_span);
	return ktest_summary();
}
