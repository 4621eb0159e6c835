/*
 * test_zero_fresh.c - KP_ZERO (the preload's calloc) of a large block cut
 * from units its segment never handed out writes nothing: they are zero
 * since the segment was mapped, and a page that nobody writes stays out of
 * the resident set, as with glibc's, jemalloc's and the kernel's own fresh
 * memory. A block whose units held anything before is still zeroed.
 *
 * Found under the preload (kpool bench --programs, gcc-libkpool): cc1
 * compiling a file that includes <immintrin.h> callocs 98 x 5 tables of
 * 77-383 KiB (97.5 MB) and writes about 7% of them; every calloc was a
 * memset, so its peak RSS was 177 MB against glibc's 106 and jemalloc's 77
 * (1.66x glibc). The same pattern alone (98 x the five sizes, one byte
 * written in each): glibc 15.9 MB, jemalloc 5.9, kpool 99.1.
 */
#include "ktest.h"

#define NBLK 200
#define BLK (200u << 10) /* a large run (past the small classes, short of huge) */

/* resident KiB added by NBLK KP_ZERO blocks of BLK, one byte written in each;
 * every block is checked zero first */
static long fresh_growth(void *arg)
{
	kp_pool *pool = kp_create((const char *)arg);
	if (!pool)
		return -2;
	static unsigned char *b[NBLK];
	long before = kt_rss_kb();
	long bad = 0;
	for (int i = 0; i < NBLK; i++) {
		b[i] = kp_alloc(pool, BLK, KP_ZERO);
		if (!b[i])
			return -7;
		if (b[i][0] || b[i][BLK / 2] || b[i][BLK - 1])
			bad++;
		b[i][0] = 1;
	}
	long grew = kt_rss_kb() - before;
	for (int i = 0; i < NBLK; i++)
		kp_free(pool, b[i]);
	kp_destroy(pool);
	return bad ? -8 : grew;
}

static void test_fresh_units_stay_unwritten(void)
{
	const char *confs[] = {"", "layout:inline", "daemon:off"};
	for (unsigned c = 0; c < sizeof confs / sizeof *confs; c++) {
		long grew = kt_in_child(fresh_growth, (void *)confs[c]);
		long asked = (long)NBLK * BLK / 1024;
		printf("   [%s] %d KP_ZERO blocks of %u KiB, one byte written each: RSS +%ld KiB of %ld asked\n",
		       confs[c], NBLK, BLK >> 10, grew, asked);
		REQUIRE(grew >= 0, "[%s] the child failed (%ld: -7 NULL, -8 a block not zero)", confs[c], grew);
		/* the pages written (one a block) and the segments' headers; the
		 * daemon's pre-faulted headroom, at most 1/16 of what is held;
		 * under ASan the shadow of each unpoisoned payload (1/8 of it) */
		long bound = asked / 4 + (KT_ASAN ? asked / 8 : 0);
		CHECK(grew < bound, "[%s] %ld KiB resident for %ld KiB of KP_ZERO blocks nobody wrote", confs[c], grew,
		      asked);
	}
}

/* Units a block held are zeroed for the next KP_ZERO block that takes them:
 * freed whole, shrunk off a block's tail, and a block grown in place over
 * fresh units then freed. */
static void test_used_units_are_zeroed(void)
{
	kp_pool *pool = kp_create("daemon:off");
	REQUIRE(pool, "kp_create: %s", kp_last_error());
	size_t sizes[] = {BLK, 3 * BLK, 70u << 10, 1u << 20};
	long bad = 0;
	for (int round = 0; round < 40; round++) {
		unsigned char *b[8];
		for (int i = 0; i < 8; i++) {
			size_t n = sizes[(unsigned)(round + i) % 4];
			b[i] = kp_alloc(pool, n, KP_ZERO);
			REQUIRE(b[i], "round %d: NULL", round);
			for (size_t k = 0; k < n; k += 509)
				bad += b[i][k] != 0;
			bad += b[i][n - 1] != 0;
			memset(b[i], 0xa5, n);
		}
		/* grow one in place (or by moving), shrink another: both write */
		unsigned char *g = kp_realloc(pool, b[1], 2 * sizes[(unsigned)(round + 1) % 4] + BLK, 0);
		REQUIRE(g, "round %d: realloc NULL", round);
		memset(g, 0x5a, 2 * sizes[(unsigned)(round + 1) % 4] + BLK);
		b[1] = g;
		unsigned char *s = kp_realloc(pool, b[2], 4096, 0);
		REQUIRE(s, "round %d: shrink NULL", round);
		b[2] = s;
		for (int i = 0; i < 8; i++)
			kp_free(pool, b[i]);
	}
	CHECK(bad == 0, "%ld bytes not zero in KP_ZERO blocks over used units", bad);
	kp_destroy(pool);
}

/* A block grown in place over fresh units (kp__large_resize) wrote them: a
 * KP_ZERO block cut from those units alone, once it is freed, is zeroed
 * (test_used_units_are_zeroed grows blocks too, but its KP_ZERO blocks
 * always began on units run_take had cleared: the resize's own clear was
 * reached by no test). In a fresh segment of a pool with no daemon: X of
 * three units (a large run: past KP_SMALL_MAX) grown in place to six and
 * written; F takes the segment's fresh units after it (a run-taking
 * allocation prefers fresh units to freed ones); X freed; Y takes its first
 * three units back, Z (KP_ZERO) the three X grew over. */
static void test_grown_in_place_units_are_zeroed(void)
{
	const size_t unit = (size_t)1 << 16, three = 3 * unit - 4096, six = 6 * unit - 4096;
	long bad = 0;
	unsigned in_place = 0, over = 0;
	for (int round = 0; round < 8; round++) {
		kp_pool *pool = kp_create("daemon:off,prefault:off");
		REQUIRE(pool, "kp_create: %s", kp_last_error());
		unsigned char *x = kp_alloc(pool, three, 0);
		REQUIRE(x, "X");
		unsigned char *g = kp_realloc(pool, x, six, 0);
		REQUIRE(g, "grow");
		in_place += g == x;
		memset(g, 0xa5, six);
		/* units 7 up to the segment's guard unit (64: 4 MiB segments of 64 KiB units) */
		unsigned char *f = kp_alloc(pool, (64 - 7) * unit - 4096, 0);
		REQUIRE(f, "F");
		kp_free(pool, g);
		unsigned char *y = kp_alloc(pool, three, 0), *z = kp_alloc(pool, three, KP_ZERO);
		REQUIRE(y && z, "Y, Z");
		over += z >= g + three && z < g + six;
		for (size_t k = 0; k < three; k += 61)
			bad += z[k] != 0;
		kp_free(pool, y);
		kp_free(pool, z);
		kp_free(pool, f);
		kp_destroy(pool);
	}
	printf("   grown in place %u of 8, Z over the grown units %u of 8\n", in_place, over);
	REQUIRE(in_place == 8 && over == 8, "the rig no longer puts Z over units a grow in place took (%u, %u)",
		in_place, over);
	CHECK(bad == 0, "%ld sampled bytes not zero in KP_ZERO blocks over units a grow in place wrote", bad);
}

int main(void)
{
	RUN(test_fresh_units_stay_unwritten);
	RUN(test_used_units_are_zeroed);
	RUN(test_grown_in_place_units_are_zeroed);
	return ktest_summary();
}
