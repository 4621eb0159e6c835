/*
 * test_large_units_attack4.c - FAILING (sess16-hA4): a large block's span
 * slot, rewritten by an overflow into its segment's header, frees a live
 * neighbour's units, and the next large allocations overlap the live block.
 *
 * A segment's header is the next bytes after the previous mapping's last
 * block (test_forgery.c). Its magic covers the address, kind and size, its
 * seal the free mask; the span slots (kp__seg.span[]) are covered by
 * neither. The central path checks a small span's slot before it uses it
 * (span_geometry_ok, test_span_table); the large path does not: kp_free of
 * a large block checks the slot's kind and start (class_fits), and
 * units_give trusts its head and units: the run [head, head + units) must
 * only be taken and inside the segment. The attacker overflows past the
 * last block of segment A into segment B's header, keeps every byte but
 * span[1].units (its own 3-unit block L at units 1-3; a victim V at units
 * 4-6), sets it to 6 and frees L: units 1-6 go back, V's with them, with no
 * event, and two 3-unit allocations later one of them is V.
 * test_large_resize_rewritten: the same slot's block and units rewritten
 * (3 -> 6 units), then kp_realloc of L to a 3-unit size: realloc_large
 * takes the slot's 6 units for L's, and kp__large_resize gives the "tail"
 * (V's run) back with no check that it was L's (it ORs the bits into the
 * mask). (kp_usable_size stays at the request with checks on; with checks
 * off it would report the capacity, 6 units.)
 * test_small_units_rewritten: the same through a small span (about 1 KiB blocks,
 * one unit, full, so off the central list where span_take_ok would check
 * it): its units rewritten to reach over V's run, its blocks freed and
 * flushed:
 * span_give checks nfree == bump and units_give gives back V's units.
 *
 * Build and run (from the repository root):
 *   make -C allocator VARIANT=release build/release/tests/attack4/test_large_units_attack4 &&
 *     allocator/build/release/tests/attack4/test_large_units_attack4
 *   (VARIANT=asan: the same with asan in both paths)
 */
#define _GNU_SOURCE 1
#include "seg_rig.h"

#define L_REQ 150000 /* need 150024: 3 units */
#define L_UNITS 3

static void test_large_units_rewritten(void)
{
	rig r;
	if (!rig_open(&r, "primary_initial:16m,primary_max:16m,backup:1m,daemon:off")) {
		printf("   no two segments back to back (skipped)\n");
		if (r.pool)
			kp_destroy(r.pool);
		return;
	}
	kp_pool *pool = r.pool;
	char *L = kp_alloc(pool, L_REQ, 0), *V = kp_alloc(pool, L_REQ, 0);
	REQUIRE(L && V, "large blocks");
	REQUIRE(L == r.segb + KP_UNIT_SIZE + KP_HDR && V == L + L_UNITS * KP_UNIT_SIZE,
		"L %p and V %p at units 1 and 4 of B %p", (void *)L, (void *)V, (void *)r.segb);
	memset(V, 0x56, L_REQ); /* the victim's data */
	/* The overflow: B's header up to span[1] read, span[1].units set to 6. */
	size_t n = offsetof(kp__seg, span) + 2 * sizeof(kp__span);
	unsigned char *hdr = malloc(n);
	REQUIRE(hdr, "malloc");
	rig_hdr_read(&r, hdr, n);
	kp__span *sp1 = (kp__span *)(hdr + offsetof(kp__seg, span) + sizeof(kp__span));
	REQUIRE(sp1->kind == KP_SPAN_LARGE && sp1->units == L_UNITS, "span[1] is L's (kind %u units %u)", sp1->kind,
		sp1->units);
	sp1->units = 2 * L_UNITS;
	rig_hdr_write(&r, hdr, n);
	free(hdr);
	int64_t ev0 = rig_events(pool);
	int rc = kp_free(pool, L);
	printf("   kp_free(L) after span[1].units 3 -> 6: rc %d, events %lld -> %lld\n", rc, (long long)ev0,
	       (long long)rig_events(pool));
	/* No allocation may overlap the live V. */
	char *q[4];
	unsigned bad = 0;
	for (int i = 0; i < 4; i++) {
		q[i] = kp_alloc(pool, L_REQ, 0);
		if (q[i] && rig_overlaps(q[i], L_REQ, V, L_REQ)) {
			bad++;
			printf("   allocation %d returned %p, inside the live V %p\n", i, (void *)q[i], (void *)V);
		}
	}
	CHECK(bad == 0, "%u large allocations overlap the live block V", bad);
	CHECK(rig_stopped || rc != 0 || rig_events(pool) > ev0, "the rewritten span slot freed with no event (rc %d)",
	      rc);
	for (int i = 0; i < 4; i++)
		if (q[i] && !rig_overlaps(q[i], L_REQ, V, L_REQ))
			kp_free(pool, q[i]);
	kp_destroy(pool);
}

static void test_large_resize_rewritten(void)
{
	rig r;
	if (!rig_open(&r, "primary_initial:16m,primary_max:16m,backup:1m,daemon:off")) {
		printf("   no two segments back to back (skipped)\n");
		if (r.pool)
			kp_destroy(r.pool);
		return;
	}
	kp_pool *pool = r.pool;
	char *L = kp_alloc(pool, L_REQ, 0), *V = kp_alloc(pool, L_REQ, 0);
	REQUIRE(L && V, "large blocks");
	REQUIRE(L == r.segb + KP_UNIT_SIZE + KP_HDR && V == L + L_UNITS * KP_UNIT_SIZE,
		"L %p and V %p at units 1 and 4 of B %p", (void *)L, (void *)V, (void *)r.segb);
	memset(V, 0x56, L_REQ);
	size_t n = offsetof(kp__seg, span) + 2 * sizeof(kp__span);
	unsigned char *hdr = malloc(n);
	REQUIRE(hdr, "malloc");
	rig_hdr_read(&r, hdr, n);
	kp__span *sp1 = (kp__span *)(hdr + offsetof(kp__seg, span) + sizeof(kp__span));
	sp1->units = 2 * L_UNITS;
	sp1->block = (uint32_t)(2 * L_UNITS * KP_UNIT_SIZE);
	rig_hdr_write(&r, hdr, n);
	free(hdr);
	int64_t ev0 = rig_events(pool);
	size_t u = kp_usable_size(pool, L);
	printf("   kp_usable_size(L) after the rewrite: %zu (L's run is %zu bytes)\n", u,
	       (size_t)L_UNITS * KP_UNIT_SIZE);
	char *L2 = kp_realloc(pool, L, L_REQ - 8, 0);
	char *q[4];
	unsigned bad = 0;
	for (int i = 0; i < 4; i++) {
		q[i] = kp_alloc(pool, L_REQ, 0);
		if (q[i] && rig_overlaps(q[i], L_REQ, V, L_REQ)) {
			bad++;
			printf("   allocation %d returned %p, over the live V %p (realloc gave %p)\n", i, (void *)q[i],
			       (void *)V, (void *)L2);
		}
	}
	printf("   events %lld -> %lld\n", (long long)ev0, (long long)rig_events(pool));
	CHECK(u <= L_UNITS * KP_UNIT_SIZE, "kp_usable_size(L) %zu reaches into V", u);
	CHECK(bad == 0, "%u large allocations overlap the live block V", bad);
	kp_destroy(pool);
}

#define S_REQ 1000 /* about 1 KiB blocks: a one-unit span */
#define S_N 256

static void test_small_units_rewritten(void)
{
	rig r;
	if (!rig_open(&r, "primary_initial:16m,primary_max:16m,backup:1m,daemon:off")) {
		printf("   no two segments back to back (skipped)\n");
		if (r.pool)
			kp_destroy(r.pool);
		return;
	}
	kp_pool *pool = r.pool;
	/* Two spans' worth: unit 1's span is then full (off the central list),
	 * the blocks its thread cache took included. */
	unsigned cls = kp__class_of(S_REQ + KP_HDR + KP_CANARY);
	int ns = 2 * (int)(KP_UNIT_SIZE / kp__class_size[cls]);
	REQUIRE(ns <= S_N, "class %u of %u bytes", cls, kp__class_size[cls]);
	static char *s[S_N];
	for (int i = 0; i < ns; i++)
		REQUIRE((s[i] = kp_alloc(pool, S_REQ, 0)) != NULL, "small %d", i);
	char *V = kp_alloc(pool, L_REQ, 0);
	REQUIRE(V && V > r.segb + 2 * KP_UNIT_SIZE && V < r.segb + KP_SEG_SIZE, "V %p in B %p, past unit 1", (void *)V,
		(void *)r.segb);
	memset(V, 0x56, L_REQ);
	unsigned vend = (unsigned)((uintptr_t)(V - KP_HDR - r.segb) >> KP_UNIT_SHIFT) + L_UNITS; /* past V's run */
	size_t n = offsetof(kp__seg, span) + 2 * sizeof(kp__span);
	unsigned char *hdr = malloc(n);
	REQUIRE(hdr, "malloc");
	rig_hdr_read(&r, hdr, n);
	kp__span *sp1 = (kp__span *)(hdr + offsetof(kp__seg, span) + sizeof(kp__span));
	REQUIRE(sp1->kind == KP_SPAN_SMALL && sp1->units == 1 && !sp1->in_partial,
		"span[1]: kind %u units %u listed %u", sp1->kind, sp1->units, sp1->in_partial);
	sp1->units = (uint16_t)(vend - 1); /* units 1 .. V's last */
	rig_hdr_write(&r, hdr, n);
	free(hdr);
	int64_t ev0 = rig_events(pool);
	/* The blocks of unit 1 back (the others stay live), flushed. */
	for (int i = 0; i < ns; i++)
		if (s[i] < r.segb + 2 * KP_UNIT_SIZE && s[i] > r.segb) {
			kp_free(pool, s[i]);
			s[i] = NULL;
		}
	kp_thread_flush(pool); /* the span's last block returns: its units go back */
	char *q[4];
	unsigned bad = 0;
	for (int i = 0; i < 4; i++) {
		q[i] = kp_alloc(pool, L_REQ, 0);
		if (q[i] && rig_overlaps(q[i], L_REQ, V, L_REQ)) {
			bad++;
			printf("   allocation %d returned %p, over the live V %p\n", i, (void *)q[i], (void *)V);
		}
	}
	printf("   small span's units 1 -> %u: events %lld -> %lld\n", vend - 1, (long long)ev0,
	       (long long)rig_events(pool));
	CHECK(bad == 0, "%u large allocations overlap the live block V", bad);
	kp_destroy(pool);
}

int main(void)
{
	RUN(test_large_units_rewritten);
	RUN(test_large_resize_rewritten);
	RUN(test_small_units_rewritten);
	return ktest_summary();
}
