/*
 * test_limbo_attack4.c - FAILING (sess16-hA4): a retired mapping's header
 * (the grace list, pagemap.c) is trusted for what it unmaps: its retired
 * size, rewritten by an overflow past the block mapped right before it,
 * makes the next reclaim unmap a live huge block of the pool (with no
 * event), and the huge allocation that made it reclaim is given the live
 * block's address.
 *
 * A huge block too big to keep (over 32 MiB) is released at its free: its
 * payload unmapped at once, its first two pages (segment and block
 * headers) retired to the pool's grace list (pool->limbo, linked through
 * the headers' next field, each unmapped with its retired size once no
 * reader can still see it: kp__grace_reclaim, grace_unmap). Nothing checks
 * those fields: no magic, no bound on retired. The attacker owns a huge
 * block A whose payload ends where the huge block B's mapping starts; V, a
 * live huge block, is mapped right after B. It frees B (40 MiB), overflows
 * past A into B's retired header (still mapped), sets retired to B's size
 * plus V's, and lets the pool reclaim (the next huge allocation does):
 *   - test_limbo_unmaps_live: V is unmapped, no event, and the huge
 *     allocation whose mapping made the pool reclaim gets V's place: it
 *     returns the live V's address (V's bytes zero). (Had nothing been
 *     mapped there, kp_free(V) would read V's unmapped header: SIGSEGV.)
 *
 * Build and run (from the repository root):
 *   make -C allocator VARIANT=release build/release/tests/attack4/test_limbo_attack4 &&
 *     allocator/build/release/tests/attack4/test_limbo_attack4
 *   (VARIANT=asan: the same with asan in both paths)
 */
#define _GNU_SOURCE 1
#include "seg_rig.h"

#define MAP_OF(req) ((size_t)(req) + 2 * KP_PAGE + KP_HDR + KP_CANARY)
#define V_REQ (KP_SEG_SIZE - 2 * KP_PAGE - KP_HDR - KP_CANARY)	      /* a 4 MiB mapping */
#define B_REQ (((size_t)40 << 20) - 2 * KP_PAGE - KP_HDR - KP_CANARY) /* 40 MiB: not kept */
#define A_REQ V_REQ

typedef struct lrig {
	kp_pool *pool;
	char *A, *B, *V;
} lrig;

static bool lrig_open(lrig *r)
{
	r->pool = kp_create("primary_initial:4m,primary_max:1g,backup:1m,daemon:off,prefault:off");
	if (!r->pool)
		return false;
	/* Mapped top down: V, then B right below it, then A right below B. */
	r->V = kp_alloc(r->pool, V_REQ, 0);
	r->B = kp_alloc(r->pool, B_REQ, 0);
	r->A = kp_alloc(r->pool, A_REQ, 0);
	if (!r->V || !r->B || !r->A)
		return false;
	char *a = r->A - 2 * KP_PAGE, *b = r->B - 2 * KP_PAGE, *v = r->V - 2 * KP_PAGE;
	printf("   A %p, B %p, V %p\n", (void *)a, (void *)b, (void *)v);
	return a + MAP_OF(A_REQ) == b && b + MAP_OF(B_REQ) == v;
}

/* Free B; the overflow past A: B's retired size over V's mapping too.
 * Returns the huge block whose mapping made the pool reclaim. */
static char *attack(lrig *r)
{
	char *b = r->B - 2 * KP_PAGE;
	kp_free(r->pool, r->B);
	size_t n = offsetof(kp__seg, retired) + sizeof(size_t);
	unsigned char hdr[sizeof(kp__seg)];
	rig_raw_read(hdr, b, n);
	size_t retired;
	memcpy(&retired, hdr + offsetof(kp__seg, retired), sizeof retired);
	printf("   B's header retired %#zx (B is %#zx bytes)\n", retired, (size_t)MAP_OF(B_REQ));
	retired = MAP_OF(B_REQ) + MAP_OF(V_REQ);
	memcpy(hdr + offsetof(kp__seg, retired), &retired, sizeof retired);
	char *from = r->A + A_REQ;
	rig_pass(from, b);
	rig_raw_write(b, hdr, n);
	return kp_alloc(r->pool, V_REQ, 0); /* maps: reclaims the grace list first */
}

static void test_limbo_unmaps_live(void)
{
	lrig r;
	if (!lrig_open(&r)) {
		printf("   not mapped back to back (skipped)\n");
		return;
	}
	memset(r.V, 0x56, 4096);
	int64_t ev0 = rig_events(r.pool);
	char *x = attack(&r);
	unsigned char vec;
	int gone = mincore(r.V - 2 * KP_PAGE, KP_PAGE, &vec) != 0 && errno == ENOMEM;
	int same = x == r.V, lost = kt_raw_get(r.V) != 0x5656565656565656ull;
	printf("   after the reclaim the live V %p is %s; the new huge block is %p%s; V's bytes %s; events %lld -> "
	       "%lld\n",
	       (void *)r.V, gone ? "unmapped" : "mapped", (void *)x, same ? " (V's place)" : "",
	       gone   ? "gone"
	       : lost ? "lost"
		      : "kept",
	       (long long)ev0, (long long)rig_events(r.pool));
	CHECK(!gone, "the grace list's reclaim unmapped the live huge block V");
	CHECK(!same, "the next huge allocation returned the live V's address");
	CHECK(gone || !lost, "V's bytes were lost (its pages unmapped and mapped again)");
}

int main(void)
{
	RUN(test_limbo_unmaps_live);
	return ktest_summary();
}
