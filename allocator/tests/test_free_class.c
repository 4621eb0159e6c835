/*
 * test_free_class.c - kp_free trusts a small block's class only when its span
 * says it (the segment's unit_meta, internal.h).
 *
 * Whoever reads a block's header learns K(h) (tag ^ meta), so it can rewrite
 * that header with another class or state and a tag that verifies. What stops
 * such a header is the class the block's unit is carved in: kp_free's fast
 * path compares the header's class and state with unit_meta of its unit,
 * which span_new sets and units_give clears when the units go back. Two
 * attacks on that:
 *
 *  1. a live block's header rewritten in place with another class: freed
 *     into that class's bin, the next allocations of it would overlap its
 *     neighbours;
 *  2. a header kept from a small span whose units were given back and are
 *     now part of a large block: a header written there (inside the large
 *     block's payload, which its owner may write) with the old K(h) would
 *     be freed into a bin while the large block lives, if the unit still
 *     said "small span of class c".
 *
 *  3. unit_meta itself rewritten with the state of a free block (the segment
 *     header sits right after the previous mapping's last bytes, and the
 *     fast path reads unit_meta without checking the header's magic), and
 *     the freed block's canary (at its request size, 0 once free: over the
 *     list link) written after free with K(h), read from its header: the
 *     freed block's header, which says free, would then match, and a
 *     double free would go into the bin a second time.
 *
 * Each must be refused with an event, and no later allocation may overlap a
 * live block. The raw header reads and writes bypass ASan (the attack must
 * reach the pool, not ASan's report).
 */
#define _GNU_SOURCE 1
/* Tests the inline primary's segments, spans and units (primary.c): every pool layout:inline (ktest.h, KT_LAYOUT_INLINE). */
#define KT_LAYOUT_INLINE 1
#include "ktest.h"

#include "internal.h"

static bool overlaps(const char *a, size_t an, const char *b, size_t bn)
{
	return a < b + bn && b < a + an;
}

/* Write at h a header of an allocated block of request req, class cls, with
 * K(h) = key, and its canary: what kp_free would accept if it trusted the
 * header's class. */
static void forge(char *h, uint64_t key, size_t req, unsigned cls)
{
	uint64_t meta = kp__meta(req, (uint16_t)cls, KP_ST_ALLOC);
	kt_raw_put(h + 8, meta);
	kt_raw_put(h, key ^ meta);
	kt_raw_put(h + KP_HDR + req, kp__canary_word(key));
}

static int64_t refusals(kp_pool *pool)
{
	return kt_stat(pool, "integrity.corruptions") + kt_stat(pool, "integrity.invalid_frees") +
	       kt_stat(pool, "integrity.double_frees") + kt_stat(pool, "integrity.overflows");
}

#define LIVE_SIZE 200 /* class 224 with the canary */
#define OTHER_SIZE 40 /* a smaller class */
#define NLIVE 32

static void test_class_rewritten_in_place(void)
{
	kp_pool *pool = kp_create("primary_initial:4m,daemon:off");
	REQUIRE(pool, "kp_create: %s", kp_last_error());
	char *live[NLIVE];
	for (int i = 0; i < NLIVE; i++) {
		live[i] = kp_alloc(pool, LIVE_SIZE, 0);
		REQUIRE(live[i], "alloc");
	}
	/* One free first: the thread's first kp_free takes the slow path (it
	 * registers the thread's grace record); the attack must meet the fast
	 * path's check too. */
	CHECK(kp_free(pool, live[0]) == 0, "free");
	live[0] = kp_alloc(pool, LIVE_SIZE, 0);
	REQUIRE(live[0], "alloc");
	char *v = live[7], *h = v - KP_HDR;
	uint64_t key = kt_raw_get(h) ^ kt_raw_get(h + 8); /* K(h), from its header */
	unsigned other = kp__class_of(OTHER_SIZE + KP_HDR + KP_CANARY);
	REQUIRE(other != KP_META_CLS(kt_raw_get(h + 8)), "the classes differ");
	forge(h, key, OTHER_SIZE, other);
	int64_t before = refusals(pool);
	int rc = kp_free(pool, v);
	CHECK(rc != 0, "kp_free accepted a live block's header rewritten with class %u (rc %d)", other, rc);
	CHECK(refusals(pool) > before, "no integrity event for the rewritten header");
	unsigned bad = 0;
	void *more[256];
	for (int i = 0; i < 256; i++) {
		more[i] = kp_alloc(pool, OTHER_SIZE, 0);
		for (int j = 0; more[i] && j < NLIVE; j++)
			bad += overlaps(more[i], OTHER_SIZE, live[j], LIVE_SIZE);
	}
	CHECK(bad == 0, "%u later allocations overlap a live block", bad);
	for (int i = 0; i < 256; i++)
		kp_free(pool, more[i]);
	for (int i = 0; i < NLIVE; i++)
		if (i != 7)
			CHECK(kp_free(pool, live[i]) == 0, "free of a live block");
	kp_destroy(pool);
}

#define LARGE_SIZE (4 * KP_UNIT_SIZE) /* a large block: past KP_SMALL_MAX */

static void test_old_header_in_a_large_block(void)
{
	kp_pool *pool = kp_create("primary_initial:4m,daemon:off");
	REQUIRE(pool, "kp_create: %s", kp_last_error());
	/* A span of LIVE_SIZE's class, in the segment's first free units; the
	 * highest of its blocks taken sits inside any large run that starts
	 * at the span's first unit. */
	char *blk[4], *top = NULL;
	for (int i = 0; i < 4; i++) {
		blk[i] = kp_alloc(pool, LIVE_SIZE, 0);
		REQUIRE(blk[i], "alloc");
		if (blk[i] > top)
			top = blk[i];
	}
	char *h = top - KP_HDR;
	uint64_t key = kt_raw_get(h) ^ kt_raw_get(h + 8);
	unsigned cls = KP_META_CLS(kt_raw_get(h + 8));
	for (int i = 0; i < 4; i++)
		CHECK(kp_free(pool, blk[i]) == 0, "free");
	kp_thread_flush(pool); /* the span empties: its units go back */
	char *large = kp_alloc(pool, LARGE_SIZE, 0);
	REQUIRE(large, "large alloc");
	REQUIRE(h > large && h + 64 < large + LARGE_SIZE,
		"the old block %p lies inside the large block [%p, +%zu) (the units were reused)", (void *)h,
		(void *)large, (size_t)LARGE_SIZE);
	forge(h, key, LIVE_SIZE, cls); /* the large block's owner writes its own payload */
	int64_t before = refusals(pool);
	int rc = kp_free(pool, top);
	CHECK(rc != 0, "kp_free accepted an old header inside a live large block (rc %d)", rc);
	CHECK(refusals(pool) > before, "no integrity event for the old header");
	unsigned bad = 0;
	void *more[64];
	for (int i = 0; i < 64; i++) {
		more[i] = kp_alloc(pool, LIVE_SIZE, 0);
		bad += more[i] && overlaps(more[i], LIVE_SIZE, large, LARGE_SIZE);
	}
	CHECK(bad == 0, "%u later allocations overlap the live large block", bad);
	for (int i = 0; i < 64; i++)
		kp_free(pool, more[i]);
	CHECK(kp_free(pool, large) == 0, "free of the large block");
	kp_destroy(pool);
}

static void test_unit_meta_says_free(void)
{
	kp_pool *pool = kp_create("primary_initial:4m,daemon:off");
	REQUIRE(pool, "kp_create: %s", kp_last_error());
	char *blk[8];
	for (int i = 0; i < 8; i++) {
		blk[i] = kp_alloc(pool, LIVE_SIZE, 0);
		REQUIRE(blk[i], "alloc");
	}
	CHECK(kp_free(pool, blk[0]) == 0, "free"); /* the slow first free (see above) */
	blk[0] = kp_alloc(pool, LIVE_SIZE, 0);
	REQUIRE(blk[0], "alloc");
	char *v = blk[5];
	kp__seg *s = (kp__seg *)((uintptr_t)v & ~(uintptr_t)(KP_SEG_SIZE - 1));
	unsigned u = (unsigned)(((uintptr_t)v & (KP_SEG_SIZE - 1)) >> KP_UNIT_SHIFT);
	unsigned cls = KP_META_CLS(kt_raw_get(v - KP_HDR + 8));
	REQUIRE(s->unit_meta[u] == KP_UNIT_META(cls), "unit %u of the block's segment is of its class", u);
	uint64_t key = kt_raw_get(v - KP_HDR) ^ kt_raw_get(v - KP_HDR + 8); /* K(h), from its header */
	CHECK(kp_free(pool, v) == 0, "the first free");
	/* A free block's request is 0: the fast path reads its canary at v,
	 * over the free-list link. A write after free puts K(h) there. */
	kt_raw_put(v, kp__canary_word(key));
	s->unit_meta[u] = (uint16_t)(cls << 8 | KP_ST_FREE); /* what a free block's header says */
	int64_t before = refusals(pool);
	int rc = kp_free(pool, v);
	s->unit_meta[u] = KP_UNIT_META(cls);
	CHECK(rc != 0, "a double free was accepted with unit_meta saying free (rc %d)", rc);
	CHECK(refusals(pool) > before, "no integrity event for the double free");
	void *a = kp_alloc(pool, LIVE_SIZE, 0), *b = kp_alloc(pool, LIVE_SIZE, 0);
	CHECK(a != b, "two allocations returned the same block %p", a);
	kp_free(pool, a);
	if (b != a)
		kp_free(pool, b);
	for (int i = 0; i < 8; i++)
		if (i != 5)
			CHECK(kp_free(pool, blk[i]) == 0, "free of a live block");
	kp_destroy(pool);
}

int main(void)
{
	RUN(test_class_rewritten_in_place);
	RUN(test_old_header_in_a_large_block);
	RUN(test_unit_meta_says_free);
	return ktest_summary();
}
