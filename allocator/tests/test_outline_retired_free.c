/*
 * test_outline_retired_free.c - the owner's free of a block of its own
 * retired span (outline.h, kp__ol_free_check's retired case, inline since s37-fast: outline.h's
 * kp__ol_free_own, since s29-fast, where it went through
 * kp__ol_free_other). One thread, checks
 * on and off, blocks of 2000 B until the first spans of the class retire
 * (OL_OWN_FULL in the span's owner). Into a retired span: a free is made
 * (the block reusable), a second free of it is a double free, an overflow
 * past a block's request is reported (checks on) and the block stays out,
 * an interior pointer is an invalid free; and the span is relisted (its
 * owner's OL_OWN_FULL cleared) at its relist_at'th free block, not before.
 * kp_stats counts the allocations and frees (kp__stats_primary).
 * A guard: all held on main too (kp__ol_free_other's retired case).
 */
#define _GNU_SOURCE 1
#include "ktest.h"
#include "outline.h"

#define REQ 2000 /* a class of 32 blocks a span: a few allocations retire one */
#define NBLK 400 /* blocks allocated: a dozen spans */

static struct ol_span *span_of(kp_pool *pool, const void *p)
{
	return kp__ol_map_span(pool->ol->map, (uintptr_t)p >> OL_SLICE_SHIFT);
}

static bool retired(const struct ol_span *pg)
{
	return atomic_load_explicit(&pg->owner, memory_order_relaxed) == (kp__ol_self() | OL_OWN_FULL);
}

static void run(bool checks)
{
	kp_pool *pool = kp_create(checks ? "layout:outline,daemon:off" : "layout:outline,checks:off,daemon:off");
	REQUIRE(pool != NULL, "kp_create: %s", kp_last_error());
	static char *blk[NBLK];
	for (int i = 0; i < NBLK; i++) {
		blk[i] = kp_alloc(pool, REQ, 0);
		REQUIRE(blk[i] != NULL, "kp_alloc(%d)", REQ);
		memset(blk[i], 0x11, REQ);
	}
	/* the first block's span retired by the allocations past it */
	struct ol_span *pg = span_of(pool, blk[0]);
	REQUIRE(pg != NULL && retired(pg), "checks %d: the first span is not retired", checks);
	uint32_t need = pg->relist_at;
	REQUIRE(need >= 3, "checks %d: relist_at %u: too few frees to test before it", checks, need);
	int in_pg[NBLK], n = 0;
	for (int i = 0; i < NBLK; i++)
		if (span_of(pool, blk[i]) == pg)
			in_pg[n++] = i;
	REQUIRE((uint32_t)n > need, "checks %d: %d blocks in the span, relist_at %u", checks, n, need);

	/* an interior pointer: invalid */
	CHECK(kp_free(pool, blk[in_pg[0]] + 16) == KP_ENOTOURS, "checks %d: interior free taken", checks);
	/* a free, then a double free */
	CHECK(kp_free(pool, blk[in_pg[0]]) == 0, "checks %d: free into the retired span", checks);
	CHECK(kp_free(pool, blk[in_pg[0]]) == KP_EDOUBLEFREE, "checks %d: double free not reported", checks);
	int freed = 1, next = 1;
	if (checks) { /* an overflow past the request: reported, the block never handed out again */
		blk[in_pg[next]][REQ] ^= 0x40;
		CHECK(kp_free(pool, blk[in_pg[next]]) == KP_EOVERFLOW, "overflow not reported");
		CHECK(kp_free(pool, blk[in_pg[next]]) == KP_EDOUBLEFREE, "the quarantined block freed again");
		next++;
	}
	CHECK(retired(pg), "checks %d: relisted after %d free of %u", checks, freed, need);
	/* frees up to relist_at: retired until the last */
	while ((uint32_t)freed < need) {
		CHECK(retired(pg), "checks %d: relisted after %d frees of %u", checks, freed, need);
		CHECK(kp_free(pool, blk[in_pg[next]]) == 0, "checks %d: free %d", checks, freed);
		blk[in_pg[next++]] = NULL;
		freed++;
	}
	CHECK(!retired(pg) && atomic_load_explicit(&pg->owner, memory_order_relaxed) == kp__ol_self(),
	      "checks %d: not relisted after %d frees (relist_at %u)", checks, freed, need);
	blk[in_pg[0]] = NULL;
	if (checks)
		blk[in_pg[1]] = NULL; /* quarantined */
	for (int i = 0; i < NBLK; i++)
		if (blk[i])
			CHECK(kp_free(pool, blk[i]) == 0, "checks %d: free of block %d", checks, i);
	kp__primary_stats ps;
	kp__stats_primary(pool, &ps);
	CHECK(ps.allocs == NBLK, "checks %d: %llu allocations counted, not %d", checks, (unsigned long long)ps.allocs,
	      NBLK);
	/* the quarantined block (checks on) stays out: neither freed nor reusable */
	CHECK(ps.frees == NBLK - (uint64_t)checks, "checks %d: %llu frees counted", checks,
	      (unsigned long long)ps.frees);
	kp_destroy(pool);
}

static void test_retired_checks_on(void)
{
	run(true);
}

static void test_retired_checks_off(void)
{
	run(false);
}

int main(void)
{
	RUN(test_retired_checks_on);
	RUN(test_retired_checks_off);
	return ktest_summary();
}
