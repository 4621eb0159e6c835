/*
 * test_huge_unlink_attack4.c - FAILING (sess16-hA4): a huge block's segment
 * header links (next, prev), rewritten by an overflow past the block mapped
 * right before it, turn kp_free of the huge block into a write of an
 * attacker's value at an attacker's address (a classic unlink), or a
 * SIGSEGV inside libkpool.
 *
 * A huge block's mapping starts with its segment header, the next bytes
 * after the previous mapping (here another huge block's payload, which ends
 * at its mapping's end). Its magic covers the address, kind and size; the
 * live list links next and prev are covered by nothing, and kp__huge_free
 * unlinks the segment (huge.c, huge_unlink: prev->next = next, next->prev =
 * prev) after kp_free checked the block header and the magic alone. The
 * attacker of test_forgery.c reads the header past its block, keeps the
 * magic and rewrites the links:
 *   - test_huge_unlink_write: prev = T - offsetof(next), next = X: kp_free
 *     writes X at T (here T and X in the attacker's own blocks; the header
 *     also gives away the pool's address, s->pool, so T may be any field of
 *     the pool: its key's multiplier, its lists);
 *   - test_huge_unlink_crash: prev = 0x1000: kp_free dies of SIGSEGV.
 *
 * Build and run (from the repository root):
 *   make -C allocator VARIANT=release build/release/tests/attack4/test_huge_unlink_attack4 &&
 *     allocator/build/release/tests/attack4/test_huge_unlink_attack4
 *   (VARIANT=asan: the same with asan in both paths)
 */
#define _GNU_SOURCE 1
#include "huge_rig.h"

static void test_huge_unlink_write(void)
{
	hrig r;
	if (!hrig_open(&r)) {
		printf("   no two huge mappings back to back (skipped)\n");
		if (r.pool)
			kp_destroy(r.pool);
		return;
	}
	kp_pool *pool = r.pool;
	char *w1 = kp_alloc(pool, 256, 0), *w2 = kp_alloc(pool, 256, 0);
	REQUIRE(w1 && w2, "attacker blocks");
	memset(w1, 0, 256);
	memset(w2, 0, 256);
	char *T = w1 + 64; /* where the attacker wants to write */
	char *X = w2 + 64; /* what it writes (a pointer whose ->prev is writable) */
	hrig_links(&r, X, T - offsetof(kp__seg, next));
	int64_t ev0 = rig_events(pool);
	int rc = kp_free(pool, r.h[r.b]);
	uint64_t got = kt_raw_get(T);
	printf("   kp_free(huge) with rewritten links: rc %d, events %lld -> %lld, *T = %#llx (X = %p)\n", rc,
	       (long long)ev0, (long long)rig_events(pool), (unsigned long long)got, (void *)X);
	CHECK(got != (uintptr_t)X, "kp_free wrote the attacker's value X at the attacker's address T");
	CHECK(rc != 0 && rig_events(pool) > ev0, "the rewritten links were followed with no event (rc %d)", rc);
	/* The pool's real list still holds B's neighbours' links to B: not
	 * destroyed (kp_destroy walks it). */
}

static void test_huge_unlink_crash(void)
{
	hrig r;
	if (!hrig_open(&r)) {
		printf("   no two huge mappings back to back (skipped)\n");
		if (r.pool)
			kp_destroy(r.pool);
		return;
	}
	hrig_links(&r, NULL, (void *)0x1000);
	int rc = kp_free(r.pool, r.h[r.b]); /* SIGSEGV here before the fix */
	CHECK(rc != 0, "kp_free accepted a huge block whose links were rewritten (rc %d)", rc);
}

int main(void)
{
	RUN(test_huge_unlink_write);
	RUN(test_huge_unlink_crash);
	return ktest_summary();
}
