/*
 * test_huge_cache_attack4.c - FAILING (sess16-hA4): the list of kept
 * (freed) huge mappings runs through their segment headers; its next link,
 * rewritten by an overflow past the block mapped right before one of them,
 * hands a live huge block out again, or crashes the allocation path.
 *
 * A freed huge mapping of up to 32 MiB is kept for reuse (huge.c): its
 * header stays in the pagemap and links the next kept one. huge_cache_vet
 * checks each kept mapping's magic (address, kind, size) before the list is
 * used: a link to another real huge segment passes, a live one included,
 * and a link to unmapped memory is read. The attacker (test_forgery.c's)
 * frees its huge block B, overflows past its huge block A (whose payload
 * ends where B's mapping starts) into B's header, keeps the magic, and sets
 * next to:
 *   - test_huge_cache_live: the segment of a live huge block V: the second
 *     allocation of that size returns V's payload, V still live;
 *   - test_huge_cache_crash: 0x1000: the next huge allocation dies of
 *     SIGSEGV (huge_cache_vet reads the magic there).
 *
 * Build and run (from the repository root):
 *   make -C allocator VARIANT=release build/release/tests/attack4/test_huge_cache_attack4 &&
 *     allocator/build/release/tests/attack4/test_huge_cache_attack4
 *   (VARIANT=asan: the same with asan in both paths)
 */
#define _GNU_SOURCE 1
#include "huge_rig.h"

static void test_huge_cache_live(void)
{
	hrig r;
	if (!hrig_open(&r)) {
		printf("   no two huge mappings back to back (skipped)\n");
		if (r.pool)
			kp_destroy(r.pool);
		return;
	}
	kp_pool *pool = r.pool;
	int v = 0;
	while (v == r.a || v == r.b)
		v++;
	char *V = r.h[v];
	memset(V, 0x56, 4096);
	REQUIRE(kp_free(pool, r.h[r.b]) == 0, "free of B");
	hrig_links(&r, V - 2 * KP_PAGE, NULL); /* B's next: V's segment */
	int64_t ev0 = rig_events(pool);
	char *q1 = kp_alloc(pool, H_REQ, 0), *q2 = kp_alloc(pool, H_REQ, 0);
	printf("   after B's next -> V's segment: kp_alloc %p, %p (V %p, B %p), events %lld -> %lld\n", (void *)q1,
	       (void *)q2, (void *)V, (void *)(r.segb + 2 * KP_PAGE), (long long)ev0, (long long)rig_events(pool));
	CHECK(q1 != V && q2 != V, "a huge allocation returned the live block V");
	CHECK(!(q1 && rig_overlaps(q1, H_REQ, V, H_REQ)) && !(q2 && rig_overlaps(q2, H_REQ, V, H_REQ)),
	      "a huge allocation overlaps the live block V");
}

static void test_huge_cache_crash(void)
{
	hrig r;
	if (!hrig_open(&r)) {
		printf("   no two huge mappings back to back (skipped)\n");
		if (r.pool)
			kp_destroy(r.pool);
		return;
	}
	REQUIRE(kp_free(r.pool, r.h[r.b]) == 0, "free of B");
	hrig_links(&r, (void *)0x1000, NULL);
	char *q = kp_alloc(r.pool, H_REQ, 0); /* SIGSEGV here before the fix */
	CHECK(q != NULL || kt_stat(r.pool, "integrity.corruptions") > 0, "no block and no event");
}

int main(void)
{
	RUN(test_huge_cache_live);
	RUN(test_huge_cache_crash);
	return ktest_summary();
}
