/*
 * test_over_4g.c - blocks of 4 GiB and more (issue 12, defect 2). The
 * request was kept in 32 bits: kp_alloc(5 GiB) reported a usable size of
 * 4294967295, and kp_realloc of a huge block refused sizes of 4 GiB and more
 * and fell back to a copy of the clamped size, losing what lay past it.
 *
 * Every size the pool can map must be served with usable size >= request
 * and its contents kept by realloc. The blocks are mapped, never filled:
 * prefault and transparent huge pages are off and only a few pages are
 * touched, so the test costs a few MiB of memory whatever the sizes.
 */
#include "ktest.h"

#define GiB ((size_t)1 << 30)
#define FOUR_G ((size_t)4 << 30)
/* A pool that may map all of the sizes below at once (realloc maps the new
 * window before it gives the old one up). */
#define CONF "primary_max:32g,primary_initial:0,daemon:off,prefault:off,thp:off,backup:0,seed:71"

static volatile unsigned char *at(void *p, size_t off)
{
	return (volatile unsigned char *)p + off;
}

/* kp_alloc of each size around 4 GiB: usable >= size, the last byte and a
 * byte past 4 GiB writable, and free finds the block (and its canary) whole. */
static void test_sizes_around_4g(void)
{
	KT_POOL(pool, CONF);
	const size_t sizes[] = {FOUR_G - 1, FOUR_G, FOUR_G + 1, 5 * GiB};
	for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
		size_t n = sizes[i];
		void *p = kp_alloc(pool, n, 0);
		REQUIRE(p != NULL, "kp_alloc(%zu): %s", n, kp_last_error());
		size_t u = kp_usable_size(pool, p);
		CHECK(u >= n, "kp_alloc(%zu): usable size %zu", n, u);
		*at(p, 0) = 1;
		*at(p, n - 1) = 2;
		if (n > FOUR_G + 12345)
			*at(p, FOUR_G + 12345) = 3;
		CHECK(*at(p, n - 1) == 2, "byte at %zu", n - 1);
		int rc = kp_free(pool, p);
		CHECK(rc == 0, "kp_free of a %zu-byte block: %d (%s)", n, rc, kp_last_error());
	}
	CHECK(kt_stat(pool, "integrity.overflows") == 0 && kt_stat(pool, "integrity.corruptions") == 0,
	      "integrity events on blocks written inside their size");
	kp_destroy(pool);
}

/* The reproducer: a byte at 4 GiB + 12345 survives growing to
 * 6 GiB, and shrinking back to 5 GiB and to just past it. */
static void test_realloc_over_4g(void)
{
	KT_POOL(pool, CONF);
	const size_t off = FOUR_G + 12345;
	char *p = kp_alloc(pool, 5 * GiB, 0);
	REQUIRE(p != NULL, "kp_alloc(5 GiB): %s", kp_last_error());
	*at(p, 0) = 0x11;
	*at(p, off) = 0x5a;
	*at(p, 5 * GiB - 1) = 0x77;
	char *q = kp_realloc(pool, p, 6 * GiB, 0);
	REQUIRE(q != NULL, "kp_realloc(5 GiB -> 6 GiB): %s", kp_last_error());
	CHECK(kp_usable_size(pool, q) >= 6 * GiB, "usable %zu after growing to 6 GiB", kp_usable_size(pool, q));
	CHECK(*at(q, 0) == 0x11 && *at(q, off) == 0x5a && *at(q, 5 * GiB - 1) == 0x77,
	      "bytes lost growing 5 GiB -> 6 GiB: [0] %#x, [4 GiB + 12345] %#x, [5 GiB - 1] %#x", *at(q, 0),
	      *at(q, off), *at(q, 5 * GiB - 1));
	*at(q, 6 * GiB - 1) = 0x66;
	char *r = kp_realloc(pool, q, 5 * GiB, 0);
	REQUIRE(r != NULL, "kp_realloc(6 GiB -> 5 GiB): %s", kp_last_error());
	CHECK(kp_usable_size(pool, r) >= 5 * GiB, "usable %zu after shrinking to 5 GiB", kp_usable_size(pool, r));
	CHECK(*at(r, 0) == 0x11 && *at(r, off) == 0x5a, "bytes lost shrinking 6 GiB -> 5 GiB");
	char *s = kp_realloc(pool, r, off + 1, 0);
	REQUIRE(s != NULL, "kp_realloc(5 GiB -> 4 GiB + 12346): %s", kp_last_error());
	CHECK(kp_usable_size(pool, s) >= off + 1, "usable %zu after shrinking to %zu", kp_usable_size(pool, s),
	      off + 1);
	CHECK(*at(s, 0) == 0x11 && *at(s, off) == 0x5a, "bytes lost shrinking to 4 GiB + 12346");
	/* and back under 4 GiB: the first bytes stay */
	char *t = kp_realloc(pool, s, 3 * GiB, 0);
	REQUIRE(t != NULL, "kp_realloc(-> 3 GiB): %s", kp_last_error());
	CHECK(*at(t, 0) == 0x11, "first byte lost shrinking to 3 GiB");
	CHECK(kp_free(pool, t) == 0, "kp_free: %s", kp_last_error());
	CHECK(kt_stat(pool, "integrity.overflows") == 0, "overflow reported for writes inside the block");
	kp_destroy(pool);
}

/* A write one byte past a block of more than 4 GiB is caught by its canary,
 * as for any other block (it was not: no canary past a clamped request). */
static void test_overflow_over_4g(void)
{
	if (KT_ASAN) {
		printf("   (ASan build: the write past the request is ASan's report, not the pool's)\n");
		return;
	}
	KT_POOL(pool, CONF);
	size_t n = 5 * GiB + 3;
	char *p = kp_alloc(pool, n, 0);
	REQUIRE(p != NULL, "kp_alloc: %s", kp_last_error());
	*at(p, n) = 0; /* one byte past the request, inside the slack */
	CHECK(kp_free(pool, p) == KP_EOVERFLOW, "a one-byte overflow of a %zu-byte block was not reported", n);
	kp_destroy(pool);
}

/* kp_alloc_aligned and KP_ZERO on a block over 4 GiB. */
static void test_aligned_and_zero_over_4g(void)
{
	KT_POOL(pool, CONF);
	size_t n = 4 * GiB + 4096;
	char *p = kp_alloc_aligned(pool, n, 4096, KP_ZERO);
	REQUIRE(p != NULL, "kp_alloc_aligned(%zu, 4096): %s", n, kp_last_error());
	CHECK(((uintptr_t)p & 4095) == 0, "%p not 4096-aligned", (void *)p);
	CHECK(kp_usable_size(pool, p) >= n, "aligned: usable %zu < %zu", kp_usable_size(pool, p), n);
	CHECK(*at(p, 0) == 0 && *at(p, FOUR_G + 100) == 0 && *at(p, n - 1) == 0, "KP_ZERO block not zero");
	*at(p, FOUR_G + 100) = 9;
	CHECK(kp_free(pool, p) == 0, "kp_free aligned: %s", kp_last_error());
	char *z = kp_alloc(pool, n, KP_ZERO);
	REQUIRE(z != NULL, "kp_alloc(%zu, KP_ZERO): %s", n, kp_last_error());
	CHECK(*at(z, FOUR_G + 100) == 0 && *at(z, n - 1) == 0, "KP_ZERO block over 4 GiB not zero");
	char *g = kp_realloc(pool, z, n + GiB, KP_ZERO);
	REQUIRE(g != NULL, "kp_realloc(KP_ZERO): %s", kp_last_error());
	CHECK(*at(g, n + 100) == 0 && *at(g, n + GiB - 1) == 0, "grown part not zero");
	CHECK(kp_free(pool, g) == 0, "kp_free: %s", kp_last_error());
	kp_destroy(pool);
}

int main(void)
{
	RUN(test_sizes_around_4g);
	RUN(test_realloc_over_4g);
	RUN(test_overflow_over_4g);
	RUN(test_aligned_and_zero_over_4g);
	return ktest_summary();
}
