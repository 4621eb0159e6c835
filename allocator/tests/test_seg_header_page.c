/*
 * test_seg_header_page.c - a segment's header unit keeps one page resident
 * while only its low units hold runs (primary.c, kp__primary_grow: the span
 * slots are left as the fresh mapping has them).
 *
 * Issue 14, small programs under the preload (bench-small-objects: one
 * segment, its blocks in units 1-13): the header unit had two pages
 * resident, the second only because the new segment's span table was
 * written whole (every slot's head), and its last 9 slots (units 55-63)
 * lie past the first page.
 *
 * 1. A pool whose blocks take a few units: its segment's header unit has
 *    one page resident (two on main).
 * 2. A unit no run has held is still refused as a block's home: a pointer
 *    into it, freed, is an invalid free (an event, nothing handed out), as
 *    it was when its slot's head named itself.
 * 3. A run that takes the high units, whose slots lie in the second page
 *    (a large block of every free unit but one: units 2-62), is written
 *    and read whole, and freed, its units come back.
 */
#define _GNU_SOURCE 1
/* Tests the inline primary's segments, spans and units (primary.c): every pool layout:inline (ktest.h, KT_LAYOUT_INLINE). */
#define KT_LAYOUT_INLINE 1
#include "ktest.h"

#include "internal.h"

#include <sys/mman.h>

#define CONF "primary_initial:4m,daemon:off,backup:0,seed:5"

static unsigned header_pages(const kp__seg *s)
{
	static unsigned char vec[KP_UNIT_SIZE / KP_PAGE];
	if (mincore((void *)s, KP_UNIT_SIZE, vec) != 0)
		return 0; /* CHECKed by the caller: never 1 */
	unsigned n = 0;
	for (size_t i = 0; i < sizeof vec; i++)
		n += vec[i] & 1;
	return n;
}

static void test_one_header_page(void)
{
	kp_pool *pool = kp_create(CONF);
	REQUIRE(pool, "kp_create: %s", kp_last_error());
	void *b[12];
	for (unsigned i = 0; i < 12; i++) /* a dozen classes: a unit each */
		REQUIRE((b[i] = kp_alloc(pool, 16 + 24 * i, 0)) != NULL, "alloc");
	kp__seg *s = kp__pagemap_get(b[0]);
	REQUIRE(s && s->kind == KP_SEG_NORMAL, "a normal segment");
	unsigned n = header_pages(s);
	printf("   header unit: %u of %zu pages resident (kp__seg is %zu bytes)\n", n, KP_UNIT_SIZE / KP_PAGE,
	       sizeof(kp__seg));
	CHECK(n == 1, "%u pages of the header unit resident", n);
	/* a pointer into a unit no run has held: refused */
	char *far = (char *)s + (size_t)(KP_SEG_END - 2) * KP_UNIT_SIZE + 64;
	long long before = kt_stat(pool, "integrity.invalid_frees");
	CHECK(kp_free(pool, far) != 0, "a free into a unit no run held was taken");
	CHECK(kt_stat(pool, "integrity.invalid_frees") == before + 1, "no invalid-free event");
	for (unsigned i = 0; i < 12; i++)
		kp_free(pool, b[i]);
	kp_destroy(pool);
}

static void test_last_units_run(void)
{
	kp_pool *pool = kp_create(CONF);
	REQUIRE(pool, "kp_create: %s", kp_last_error());
	void *small = kp_alloc(pool, 100, 0);
	REQUIRE(small, "alloc");
	kp__seg *s = kp__pagemap_get(small);
	size_t left = (size_t)s->nfree_units;
	/* a large block of every free unit but one: its run reaches the last unit */
	size_t size = (left - 1) * KP_UNIT_SIZE - KP_HDR - KP_CANARY;
	char *big = kp_alloc(pool, size, 0);
	REQUIRE(big, "alloc of %zu", size);
	CHECK(kp__pagemap_get(big) == s, "the large block in the same segment");
	kt_fill(big, size, 7);
	CHECK(kt_verify(big, size, 7) == KT_OK, "its bytes");
	CHECK(kp_free(pool, big) == 0, "free");
	CHECK(s->nfree_units == left, "free units %u, want %zu", s->nfree_units, left);
	kp_free(pool, small);
	kp_destroy(pool);
}

int main(void)
{
	RUN(test_one_header_page);
	RUN(test_last_units_run);
	return ktest_summary();
}
