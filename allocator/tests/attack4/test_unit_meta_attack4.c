/*
 * test_unit_meta_attack4.c - FAILING (sess16-hA4): a segment header's
 * unit_meta and unit_span, rewritten by an overflow, let kp_free's fast
 * path take a header forged inside a live large block, and the next small
 * allocation returns memory inside that live block.
 *
 * kp_free's fast path (alloc.c, free_fast) takes the class and the block
 * start test of a block from its segment header's unit_meta[u] and
 * unit_span[u], which neither the magic nor the seal covers, and reads no
 * span slot. The attacker (test_forgery.c's: reads headers, overflows past
 * a block into the next segment's header and keeps the magic and seal as
 * they were) first learns K(F) from the header of a 64-byte block at F in
 * segment B (tag ^ meta), frees those blocks so that their span empties,
 * then gets a large block L over the same units (F inside L's payload),
 * rewrites B's unit_meta[1] to the 64-byte class's and unit_span[1] to the
 * old span's start, writes at F the header of an allocated 40-byte block
 * (K(F) ^ meta, meta) and the canary (K(F)), and frees F + 16: accepted
 * (rc 0, no event), and kp_alloc(40) returns F + 16, inside the live L.
 * (test_stale_header_attack3's forgery, which the block-start test closed,
 * with the two words that test reads rewritten.)
 *
 * Build and run (from the repository root):
 *   make -C allocator VARIANT=release build/release/tests/attack4/test_unit_meta_attack4 &&
 *     allocator/build/release/tests/attack4/test_unit_meta_attack4
 *   (VARIANT=asan: the same with asan in both paths)
 */
#define _GNU_SOURCE 1
#include "seg_rig.h"

#define NSMALL 512
#define SREQ 40
#define L_REQ 150000

static void test_unit_meta_rewritten(void)
{
	rig r;
	if (!rig_open(&r, "primary_initial:16m,primary_max:16m,backup:1m,daemon:off")) {
		printf("   no two segments back to back (skipped)\n");
		if (r.pool)
			kp_destroy(r.pool);
		return;
	}
	kp_pool *pool = r.pool;
	/* 64-byte blocks: their span lands in B (the other segments are full). */
	static char *v[NSMALL];
	char *F = NULL;
	uint64_t kF = 0;
	for (int i = 0; i < NSMALL; i++) {
		v[i] = kp_alloc(pool, SREQ, 0);
		REQUIRE(v[i], "small %d", i);
		char *h = v[i] - KP_HDR;
		/* a block start well inside unit 1, past where L's header and first
		 * bytes go */
		if (!F && h >= r.segb + KP_UNIT_SIZE + 1024 && h < r.segb + 2 * KP_UNIT_SIZE - 1024) {
			F = h;
			kF = kt_raw_get(h) ^ kt_raw_get(h + 8); /* K(F), what the header gives away */
		}
	}
	REQUIRE(F, "no small block in unit 1 of B (%p)", (void *)r.segb);
	unsigned cls = KP_META_CLS(kt_raw_get(F + 8));
	for (int i = 0; i < NSMALL; i++)
		kp_free(pool, v[i]);
	kp_thread_flush(pool); /* the span empties, its unit goes back */
	char *L = kp_alloc(pool, L_REQ, 0);
	REQUIRE(L, "large block");
	REQUIRE(L == r.segb + KP_UNIT_SIZE + KP_HDR, "L %p at unit 1 of B %p", (void *)L, (void *)r.segb);
	REQUIRE(F >= L && F + KP_HDR + SREQ + 8 <= L + L_REQ, "F inside L");
	memset(L, 0x4c, L_REQ);
	/* The overflow: unit_meta[1] and unit_span[1] as a span of cls had them. */
	size_t n = offsetof(kp__seg, span);
	unsigned char *hdr = malloc(n);
	REQUIRE(hdr, "malloc");
	rig_hdr_read(&r, hdr, n);
	uint16_t um = KP_UNIT_META(cls);
	uint32_t us = (uint32_t)1 << KP_UNIT_SHIFT;
	memcpy(hdr + offsetof(kp__seg, unit_meta) + 2, &um, 2);
	memcpy(hdr + offsetof(kp__seg, unit_span) + 4, &us, 4);
	rig_hdr_write(&r, hdr, n);
	free(hdr);
	/* The forged block inside L. */
	uint64_t meta = kp__meta(SREQ, (uint16_t)cls, KP_ST_ALLOC);
	kt_raw_put(F, kF ^ meta);
	kt_raw_put(F + 8, meta);
	kt_raw_put(F + KP_HDR + SREQ, kF); /* the canary: kp__canary_word(K) */
	int64_t ev0 = rig_events(pool);
	int rc = kp_free(pool, F + KP_HDR);
	printf("   kp_free(F + 16) inside the live L: rc %d, events %lld -> %lld\n", rc, (long long)ev0,
	       (long long)rig_events(pool));
	CHECK(rc != 0, "kp_free accepted a header forged inside the live large block (rc %d)", rc);
	unsigned bad = 0;
	for (int i = 0; i < 64; i++) {
		char *q = kp_alloc(pool, SREQ, 0);
		if (q && rig_overlaps(q, SREQ, L, L_REQ)) {
			if (!bad)
				printf("   kp_alloc(%d) returned %p, inside the live L [%p, +%d)\n", SREQ, (void *)q,
				       (void *)L, L_REQ);
			bad++;
		}
	}
	CHECK(bad == 0, "%u small allocations inside the live large block", bad);
	kp_destroy(pool);
}

int main(void)
{
	RUN(test_unit_meta_rewritten);
	return ktest_summary();
}
