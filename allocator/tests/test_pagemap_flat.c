/*
 * test_pagemap_flat.c - the fast paths' flat pagemap (internal.h,
 * kp__pagemap_flat) says what the two-level map says: a normal segment's
 * chunk holds its pool's word, a huge segment's chunks and every chunk
 * nothing was ever placed in hold 0, and a released segment's word is
 * cleared with its two-level entry. Where the flat map is not reserved (an
 * address-space limit, an injected fault: kp__pagemap_flat_n 0), everything
 * still works through the two-level map: links into another segment are
 * vetted (no bin quarantined), blocks free, foreign pointers are refused.
 */
#define _GNU_SOURCE 1
/* Tests the inline primary's segments, spans and units (primary.c): every pool layout:inline (ktest.h, KT_LAYOUT_INLINE). */
#define KT_LAYOUT_INLINE 1
#include "ktest.h"

#include "internal.h"

#define N 20000

static uint32_t word(const void *p)
{
	uintptr_t chunk = (uintptr_t)p >> KP_SEG_SHIFT;
	if (chunk >= atomic_load(&kp__pagemap_flat_n)) {
		CHECK(0, "the chunk of %p is not covered by the flat map", p);
		return UINT32_MAX;
	}
	return atomic_load(&kp__pagemap_flat[chunk]);
}

static void test_flat_matches_two_level(void)
{
	kp_pool *pool = kp_create("primary_initial:8m,daemon:off,backup:0");
	REQUIRE(pool, "kp_create: %s", kp_last_error());
	CHECK(atomic_load(&kp__pagemap_flat_n) == (uintptr_t)1 << (KP_VA_BITS - KP_SEG_SHIFT),
	      "the flat map covers the 47 bits once a pool exists (n %zu)", (size_t)atomic_load(&kp__pagemap_flat_n));
	static void *p[N];
	unsigned bad = 0, normal = 0;
	for (unsigned i = 0; i < N; i++) {
		p[i] = kp_alloc(pool, 16 + (i * 37) % 2000, 0);
		REQUIRE(p[i], "alloc %u", i);
		kp__seg *s = kp__pagemap_get(p[i]);
		REQUIRE(s && s->kind == KP_SEG_NORMAL, "a small block lies in a normal segment");
		normal += (uintptr_t)s != (uintptr_t)kp__pagemap_get(p[0]);
		bad += word(p[i]) != kp__pagemap_flat_tag(pool->id);
	}
	CHECK(bad == 0, "%u small blocks' chunks without their pool's word", bad);
	CHECK(normal > 0, "the blocks span more than one segment");
	size_t hsize = 3 * KP_SEG_SIZE;
	char *big = kp_alloc(pool, hsize, 0);
	REQUIRE(big, "huge alloc");
	for (char *c = big; c < big + hsize; c += KP_SEG_SIZE)
		CHECK(word(c) == 0, "a huge segment's chunk %p holds %#x", (void *)c, word(c));
	int local;
	CHECK(word(&local) == 0, "the stack's chunk holds 0");
	CHECK(word((void *)((uintptr_t)1 << 46)) == 0, "a chunk nothing was placed in holds 0");
	/* Released: every word cleared (kp_destroy releases every segment). */
	void *first = p[0], *last = p[N - 1];
	kp_destroy(pool);
	CHECK(word(first) == 0 && word(last) == 0 && word(big) == 0, "released segments' words cleared");
}

static void test_unreserved_falls_back(void)
{
	kp_pool *pool = kp_create("primary_initial:8m,daemon:off,backup:0");
	kp_pool *other = kp_create("primary_initial:4m,daemon:off,backup:0");
	REQUIRE(pool && other, "kp_create: %s", kp_last_error());
	char *theirs = kp_alloc(other, 64, 0);
	REQUIRE(theirs, "alloc");
	/* As if the reservation had been refused (this test runs in a child
	 * process of its own). */
	atomic_store(&kp__pagemap_flat_n, 0);
	static void *p[N];
	unsigned fails = 0;
	for (int round = 0; round < 3; round++) {
		for (unsigned i = 0; i < N; i++)
			fails += !(p[i] = kp_alloc(pool, 16 + (i * 37 + round) % 3000, 0));
		/* Freed in an order that mixes segments in the bins: links that
		 * lead into another segment, vetted by kp__pagemap_owns. */
		for (unsigned i = 0; i < N; i += 2)
			fails += kp_free(pool, p[i]) != 0;
		for (unsigned i = 1; i < N; i += 2)
			fails += kp_free(pool, p[i]) != 0;
	}
	CHECK(fails == 0, "%u allocations or frees failed", fails);
	CHECK(kt_stat(pool, "integrity.quarantined") == 0, "no bin quarantined (%lld blocks)",
	      (long long)kt_stat(pool, "integrity.quarantined"));
	CHECK(kp_free(pool, theirs) == KP_ENOTOURS, "another pool's block refused");
	char *q = kp_alloc(pool, 64, 0);
	REQUIRE(q, "alloc");
	CHECK(kp_free(pool, q) == 0, "free");
	CHECK(kp_free(pool, q) == KP_EDOUBLEFREE, "a double free found");
	CHECK(kp_free(other, theirs) == 0, "the other pool's block frees to its pool");
	kp_events_drain(pool, NULL, 0);
	kp_destroy(pool);
	kp_destroy(other);
}

int main(void)
{
	RUN(test_flat_matches_two_level);
	RUN(test_unreserved_falls_back);
	return ktest_summary();
}
