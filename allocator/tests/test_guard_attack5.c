/*
 * test_guard_attack5.c - attacks on the guards (sess16-hA5): every normal
 * segment's last unit (KP_SEG_GUARD) and every huge mapping's page past its
 * end (KP_HUGE_GUARD, huge.c) are read-only, and no path leaves a huge
 * payload without its guard, leaks a guard or a mapping, or faults in the
 * pool. Checked against /proc/self/maps:
 *  - test_huge_shrink_paths: an in-place shrink (kp_realloc and, by one
 *    page, kp__huge_resize itself) moves the guard to the new end and unmaps
 *    the rest; a grow by one byte moves the block; a shrink below the huge
 *    sizes (one byte either side of need + 8 KiB == 2 MiB) moves it to a
 *    large block and keeps the huge mapping, guard and all;
 *  - test_grow_into_kept: a block grows into a kept mapping (its guard stays
 *    the end), the old mapping and guard go; a kept mapping serves a smaller
 *    request (its whole capacity writable);
 *  - test_daemon_purge_trim_evict: kept mappings purged (guards stay),
 *    trimmed after decay_ms and evicted by a huge request and by a segment
 *    under primary_max: nothing of them left mapped;
 *  - test_destroy_live_and_cached: kp_destroy with live (shrunk, grown,
 *    reused), kept and retired huge mappings leaves none of their ranges
 *    mapped (and, unsanitized, the process's anonymous mappings as before);
 *  - test_fork_child_frees: a fork child frees, reuses, grows the parent's
 *    huge blocks and destroys the pool; the parent's blocks stay intact;
 *  - test_cycles_no_leak: 400 random huge allocs, reallocs (grow, shrink in
 *    place, below the huge sizes) and frees with daemon passes: every live
 *    block's guard right after its capacity at each step, and the anonymous
 *    mappings and bytes after the pool settles as before;
 *  - test_threads_daemon_cycles: two threads resize and free huge blocks
 *    while the daemon purges and trims kept mappings: guards hold;
 *  - test_fault_huge_alloc, test_fault_segment_grow, test_fault_option_every,
 *    test_fault_huge_shrink, test_fault_huge_grow: mprotect refused
 *    (kp_fault_inject, the faults option) where a guard is set: NULL, an
 *    os_fail event, no crash, no mapping left behind, a block whose resize
 *    failed intact, its guard in place, its whole payload writable;
 *    test_shrink_unmap_and_reprotect: the shrink's munmap and the page's
 *    mprotect back both refused: the block keeps its new end, never a
 *    read-only page inside a payload; test_grow_guard_event: a refused
 *    grow window records an os_fail event;
 *  - test_guard_pointers_huge: pointers into a huge guard page, a kept
 *    mapping's guard, the range an in-place shrink unmapped, and a normal
 *    segment's guard unit (at its first byte, whose header would be the last
 *    16 bytes of a live large block) freed, sized, reallocated: refused with
 *    an event, never a fault;
 *  - test_large_max_boundary: KP_LARGE_MAX - 16 - 8 is a large block that
 *    ends at the guard, one more byte is huge (checks on and off, aligned,
 *    realloc across the boundary both ways, a large run grown in place up to
 *    the guard);
 *  - test_daemon_near_guard: daemon passes (pre-fault, purge, mincore
 *    probes) over free runs that end at the guard unit leave it read-only.
 */
#define _GNU_SOURCE 1
/* Tests the inline primary's segments, spans and units (primary.c): every pool layout:inline (ktest.h, KT_LAYOUT_INLINE). */
#define KT_LAYOUT_INLINE 1
#include "guard_rig5.h"

#include <pthread.h>

/* ---- 1. huge paths ------------------------------------------------------------ */

static void test_huge_shrink_paths(void)
{
	KT_POOL(pool, "daemon:off,step_clock:on,prefault:off,seed:5");
	char *p = kp_alloc(pool, 8 * MiB, 0);
	REQUIRE(p, "8 MiB");
	kt_fill(p, 8 * MiB, 1);
	huge_layout_ok(p, "alloc 8 MiB");
	char *s = huge_base(p);
	size_t old = seg_size(s);

	/* in place: 8 MiB to 3 MiB */
	char *q = kp_realloc(pool, p, 3 * MiB, 0);
	REQUIRE(q, "realloc to 3 MiB");
	CHECK(q == p, "3 MiB: moved (%p to %p), expected in place", (void *)p, (void *)q);
	CHECK(kt_verify(q, 3 * MiB, 1) == KT_OK, "3 MiB: content");
	huge_layout_ok(q, "shrunk to 3 MiB");
	size_t now = seg_size(s);
	CHECK(vmas_in(s + now + KP_PAGE, s + old + KP_PAGE) == 0,
	      "the %zu bytes given up (and the old guard) are mapped", old - now);

	/* by exactly one page (kp__huge_resize: kp_realloc shrinks in place only
	 * below half, so a one-page shrink is this call's edge case): the
	 * request first cut so that the canary stays inside */
	size_t req = now - 4 * KP_PAGE + 1;
	char *r = kp_realloc(pool, q, req, 0);
	REQUIRE(r == q, "in place request cut");
	kp__seg *n1 = kp__huge_resize(pool, (kp__seg *)s, req + KP_HDR + KP_CANARY, req);
	REQUIRE(n1 == (kp__seg *)s, "one-page shrink in place");
	CHECK(seg_size(s) == now - KP_PAGE, "one-page shrink: size %zu, expected %zu", seg_size(s), now - KP_PAGE);
	huge_layout_ok(q, "shrunk by one page");
	CHECK(vmas_in(s + now, s + now + KP_PAGE) == 0, "the old guard page is still mapped");
	CHECK(first_write_fault(q, seg_size(s) - 2 * KP_PAGE) == KT_OK, "a payload page is not writable");
	CHECK(kt_verify(q, req, 1) == KT_OK, "one-page shrink: content");

	/* grow by one byte past the capacity: moves (a new window) */
	size_t cap = seg_size(s) - 2 * KP_PAGE;
	char *g = kp_realloc(pool, q, cap + 1, 0);
	REQUIRE(g, "grow by a byte");
	CHECK(kt_verify_from(g, q, req, 1) == KT_OK, "grown: content");
	huge_layout_ok(g, "grown by a byte");
	settle(pool);
	CHECK(vmas_in(s, s + now) == 0, "the old mapping is still mapped after the move");
	kt_fill(g, cap + 1, 2);

	/* the huge sizes' floor: need + 8 KiB == 2 MiB stays huge (in place),
	 * one byte less moves to a large block */
	size_t floor_req = KP_SEG_SIZE / 2 - 2 * KP_PAGE - KP_HDR - KP_CANARY;
	char *h8 = kp_alloc(pool, 8 * MiB, 0);
	REQUIRE(h8, "8 MiB");
	kt_fill(h8, 8 * MiB, 3);
	char *f1 = kp_realloc(pool, h8, floor_req, 0);
	REQUIRE(f1, "realloc to the floor");
	CHECK(f1 == h8, "at the floor (%zu): moved", floor_req);
	CHECK(kt_verify(f1, floor_req, 3) == KT_OK, "floor: content");
	huge_layout_ok(f1, "shrunk to the floor");
	CHECK(kp_free(pool, f1) == 0, "free at the floor");

	char *h9 = kp_alloc(pool, 8 * MiB, 0);
	REQUIRE(h9, "8 MiB");
	kt_fill(h9, 8 * MiB, 4);
	char *s9 = huge_base(h9);
	size_t size9 = seg_size(s9);
	int64_t cached0 = kt_stat(pool, "primary.huge_cached_bytes");
	char *f2 = kp_realloc(pool, h9, floor_req - 1, 0);
	REQUIRE(f2, "realloc below the floor");
	CHECK(f2 != h9, "below the floor: not moved");
	kp__seg *ps = kp__pagemap_get(f2);
	CHECK(ps && ps->kind == KP_SEG_NORMAL, "below the floor: not in a normal segment");
	CHECK(kt_verify_from(f2, h9, floor_req - 1, 4) == KT_OK, "below the floor: content");
	CHECK(kp_usable_size(pool, h9) == 0, "the old huge block is still live");
	CHECK(kt_stat(pool, "primary.huge_cached_bytes") == cached0 + (int64_t)size9,
	      "the old huge mapping is not kept: cached %lld, was %lld",
	      (long long)kt_stat(pool, "primary.huge_cached_bytes"), (long long)cached0);
	vma gv;
	CHECK(vma_at(s9 + size9, &gv) && strcmp(gv.perm, "r--p") == 0 && gv.lo == (uintptr_t)(s9 + size9),
	      "the kept mapping lost its guard");
	CHECK(kp_free(pool, f2) == 0 && kp_free(pool, g) == 0, "frees");
	kp_destroy(pool);
}

static void test_grow_into_kept(void)
{
	KT_POOL(pool, "daemon:off,step_clock:on,prefault:off,seed:6");
	char *a = kp_alloc(pool, 20 * MiB, 0);
	REQUIRE(a, "20 MiB");
	memset(a, 0x5a, 20 * MiB);
	char *as = huge_base(a);
	size_t asize = seg_size(as);
	CHECK(kp_free(pool, a) == 0, "free");
	CHECK(kt_stat(pool, "primary.huge_cached_bytes") == (int64_t)asize, "kept");
	vma v;
	CHECK(vma_at(as + asize, &v) && strcmp(v.perm, "r--p") == 0, "a kept mapping's guard");

	char *b = kp_alloc(pool, 5 * MiB, 0);
	REQUIRE(b, "5 MiB");
	kt_fill(b, 5 * MiB, 7);
	char *bs = huge_base(b);
	size_t bsize = seg_size(bs);
	char *c = kp_realloc(pool, b, 15 * MiB, KP_ZERO);
	REQUIRE(c, "grow to 15 MiB");
	/* the kept mapping held 0x5a: what the block grew by reads zero */
	size_t nz = 0;
	for (size_t i = 5 * MiB; i < 15 * MiB; i += 512)
		nz += c[i] != 0;
	CHECK(nz == 0, "%zu of the grown bytes sampled are not zero (the kept mapping's old bytes)", nz);
	CHECK(c == a, "grew into %p, not the kept mapping's %p", (void *)c, (void *)a);
	CHECK(kt_verify_from(c, b, 5 * MiB, 7) == KT_OK, "grown: content");
	huge_layout_ok(c, "grown into a kept mapping");
	CHECK(seg_size(huge_base(c)) == asize, "took the whole kept mapping: %zu of %zu", seg_size(huge_base(c)),
	      asize);
	CHECK(vmas_in(bs + 2 * KP_PAGE, bs + bsize + KP_PAGE) == 0, "the old payload or guard is still mapped");
	settle(pool);
	CHECK(vmas_in(bs, bs + bsize + KP_PAGE) == 0, "the old header pages are still mapped");
	CHECK(kt_stat(pool, "primary.huge_cached_bytes") == 0, "cache not empty");
	CHECK(first_write_fault(c, asize - 2 * KP_PAGE) == KT_OK, "the grown block's capacity is not all writable");

	/* a kept mapping serves a smaller request: guard still at its end */
	CHECK(kp_free(pool, c) == 0, "free");
	char *d = kp_alloc(pool, 11 * MiB, 0);
	REQUIRE(d, "11 MiB");
	CHECK(d == a, "11 MiB: not served by the kept 20 MiB mapping");
	huge_layout_ok(d, "kept mapping reused for 11 MiB");
	CHECK(first_write_fault(d, asize - 2 * KP_PAGE) == KT_OK, "the reused mapping's capacity is not all writable");
	CHECK(write_faults(huge_base(d) + asize), "a write at the reused mapping's guard did not fault");
	/* and shrinks in place from there */
	kt_fill(d, 11 * MiB, 8);
	char *e = kp_realloc(pool, d, 4 * MiB, 0);
	REQUIRE(e == d, "shrink in place");
	huge_layout_ok(e, "reused then shrunk");
	CHECK(vmas_in(huge_base(e) + seg_size(huge_base(e)) + KP_PAGE, as + asize + KP_PAGE) == 0,
	      "the given-up tail is still mapped");
	CHECK(kt_verify(e, 4 * MiB, 8) == KT_OK, "content");
	CHECK(kp_free(pool, e) == 0, "free");
	kp_destroy(pool);
}

static void grow_pool(kp_pool *pool, void **blk, unsigned max, unsigned *n)
{
	int64_t grows = kt_stat(pool, "primary.grows");
	for (*n = 0; *n < max && kt_stat(pool, "primary.grows") == grows; ++*n) {
		blk[*n] = kp_alloc(pool, 60000, 0);
		REQUIRE(blk[*n] != NULL, "kp_alloc(60000)");
	}
}

static void test_daemon_purge_trim_evict(void)
{
	{
		KT_POOL(pool, "daemon:off,step_clock:on,prefault:off,decay_ms:1000,seed:7");
		static const size_t sz[4] = {5 * MiB, 6 * MiB, 7 * MiB, 9 * MiB};
		char *base[4];
		size_t size[4];
		char *p[4];
		for (int i = 0; i < 4; i++) {
			p[i] = kp_alloc(pool, sz[i], 0);
			REQUIRE(p[i], "alloc");
			memset(p[i], 0x11, sz[i]);
			base[i] = huge_base(p[i]);
			size[i] = seg_size(base[i]);
		}
		for (int i = 0; i < 4; i++)
			CHECK(kp_free(pool, p[i]) == 0, "free");
		CHECK(kt_stat(pool, "primary.huge_cached_bytes") > 0, "kept");
		static void *blk[256];
		unsigned nb = 0;
		grow_pool(pool, blk, 256, &nb);
		int64_t purges = kt_stat(pool, "primary.purges");
		kp_daemon_step(pool, 0);
		CHECK(kt_stat(pool, "primary.purges") > purges, "no purge of the kept mappings");
		for (int i = 0; i < 4; i++) {
			vma g, h;
			CHECK(vma_at(base[i] + size[i], &g) && strcmp(g.perm, "r--p") == 0 &&
				      g.lo == (uintptr_t)(base[i] + size[i]),
			      "purged mapping %d: guard lost", i);
			CHECK(vma_at(base[i], &h) && strcmp(h.perm, "rw-p") == 0, "purged mapping %d: header", i);
		}
		/* a purged kept mapping serves a request: writable, guard in place */
		char *r = kp_alloc(pool, 8 * MiB, KP_ZERO);
		REQUIRE(r, "8 MiB from a purged mapping");
		huge_layout_ok(r, "purged mapping reused");
		CHECK(first_write_fault(r, seg_size(huge_base(r)) - 2 * KP_PAGE) == KT_OK, "not writable");
		CHECK(kp_free(pool, r) == 0, "free");
		/* decay: all trimmed, nothing of them left */
		kp_daemon_step(pool, 2000);
		kp_daemon_step(pool, 2000);
		settle(pool);
		CHECK(kt_stat(pool, "primary.huge_cached_bytes") == 0, "trim left %lld bytes",
		      (long long)kt_stat(pool, "primary.huge_cached_bytes"));
		for (int i = 0; i < 4; i++)
			CHECK(vmas_in(base[i], base[i] + size[i] + KP_PAGE) == 0, "trimmed mapping %d still mapped", i);
		for (unsigned i = 0; i < nb; i++)
			kp_free(pool, blk[i]);
		kp_destroy(pool);
	}
	{
		/* evicted by a huge request: primary_max 32 MiB, a 20 MiB kept
		 * mapping, a 9 MiB request it cannot serve (more than twice) */
		KT_POOL(pool, "daemon:off,step_clock:on,prefault:off,primary_initial:4m,primary_max:32m,seed:8");
		char *a = kp_alloc(pool, 20 * MiB, 0);
		REQUIRE(a, "20 MiB");
		char *as = huge_base(a);
		size_t asize = seg_size(as);
		CHECK(kp_free(pool, a) == 0, "free");
		char *b = kp_alloc(pool, 9 * MiB, 0);
		REQUIRE(b, "9 MiB after eviction");
		huge_layout_ok(b, "after eviction");
		CHECK(kt_stat(pool, "primary.huge_cached_bytes") == 0, "not evicted");
		CHECK(stray_vmas(pool, as + 2 * KP_PAGE, as + asize + KP_PAGE) == 0,
		      "the evicted mapping's payload or guard is still mapped");
		settle(pool);
		CHECK(stray_vmas(pool, as, as + asize + KP_PAGE) == 0, "the evicted mapping's header is still mapped");
		CHECK(kp_free(pool, b) == 0, "free");
		kp_destroy(pool);
	}
	{
		/* evicted by a segment the allocation path needs */
		KT_POOL(pool, "daemon:off,step_clock:on,prefault:off,primary_initial:4m,primary_max:28m,seed:9");
		char *a = kp_alloc(pool, 22 * MiB, 0);
		REQUIRE(a, "22 MiB");
		char *as = huge_base(a);
		size_t asize = seg_size(as);
		CHECK(kp_free(pool, a) == 0, "free");
		static void *blk[256];
		unsigned nb = 0;
		int64_t g0 = kt_stat(pool, "primary.grows");
		while (nb < 256 && kt_stat(pool, "primary.grows") == g0 && (blk[nb] = kp_alloc(pool, 60000, 0)))
			nb++;
		CHECK(kt_stat(pool, "primary.grows") > g0, "the pool did not grow");
		CHECK(kt_stat(pool, "primary.huge_cached_bytes") == 0, "not evicted");
		settle(pool);
		CHECK(stray_vmas(pool, as, as + asize + KP_PAGE) == 0, "the evicted mapping is still mapped");
		for (unsigned i = 0; i < nb; i++)
			kp_free(pool, blk[i]);
		kp_destroy(pool);
	}
}

typedef struct {
	char *lo, *hi;
} range;

static void test_destroy_live_and_cached(void)
{
	/* once first: the pagemap leaves and the flat map stay for the process */
	kp_pool *warm = kp_create("daemon:off,seed:10");
	REQUIRE(warm, "create");
	void *w = kp_alloc(warm, 5 * MiB, 0);
	kp_free(warm, w);
	kp_destroy(warm);
	totals t0 = anon_totals();
	KT_POOL(pool, "daemon:off,step_clock:on,prefault:off,seed:10");
	range rg[16];
	unsigned nr = 0;
	char *shr = kp_alloc(pool, 8 * MiB, 0);
	REQUIRE(shr, "8 MiB");
	rg[nr++] = (range){huge_base(shr), huge_base(shr) + seg_size(huge_base(shr)) + KP_PAGE};
	shr = kp_realloc(pool, shr, 3 * MiB, 0); /* shrunk in place */
	REQUIRE(shr, "shrink");
	char *k1 = kp_alloc(pool, 6 * MiB, 0), *k2 = kp_alloc(pool, 12 * MiB, 0);
	REQUIRE(k1 && k2, "allocs");
	rg[nr++] = (range){huge_base(k1), huge_base(k1) + seg_size(huge_base(k1)) + KP_PAGE};
	rg[nr++] = (range){huge_base(k2), huge_base(k2) + seg_size(huge_base(k2)) + KP_PAGE};
	kp_free(pool, k1);
	kp_free(pool, k2); /* two kept */
	char *gr = kp_alloc(pool, 5 * MiB, 0);
	REQUIRE(gr, "5 MiB");
	rg[nr++] = (range){huge_base(gr), huge_base(gr) + seg_size(huge_base(gr)) + KP_PAGE};
	gr = kp_realloc(pool, gr, 40 * MiB, 0); /* grown: a new window, the old header retired */
	REQUIRE(gr, "grow");
	rg[nr++] = (range){huge_base(gr), huge_base(gr) + seg_size(huge_base(gr)) + KP_PAGE};
	char *re = kp_alloc(pool, 7 * MiB, 0); /* a kept mapping, reused */
	REQUIRE(re, "7 MiB");
	char *big = kp_alloc(pool, 50 * MiB, 0); /* past the cache's size: released at free */
	REQUIRE(big, "50 MiB");
	rg[nr++] = (range){huge_base(big), huge_base(big) + seg_size(huge_base(big)) + KP_PAGE};
	kp_free(pool, big); /* its header pages in limbo */
	char *large = kp_alloc(pool, 1 * MiB, 0);
	REQUIRE(large, "1 MiB");
	rg[nr++] = (range){SEGBASE(large), SEGBASE(large) + KP_SEG_SIZE};
	kp_destroy(pool);
	for (unsigned i = 0; i < nr; i++)
		CHECK(vmas_in(rg[i].lo, rg[i].hi) == 0, "after kp_destroy, range %u [%p, %p) is still mapped", i,
		      (void *)rg[i].lo, (void *)rg[i].hi);
	totals t1 = anon_totals();
	if (!KT_SANITIZED)
		CHECK(t1.n == t0.n && t1.bytes == t0.bytes && t1.ro == t0.ro,
		      "anonymous mappings before the pool %zu (%zu bytes, %zu read-only), after kp_destroy %zu (%zu "
		      "bytes, "
		      "%zu read-only)",
		      t0.n, t0.bytes, t0.ro, t1.n, t1.bytes, t1.ro);
}

/* ---- fork ------------------------------------------------------------------- */

typedef struct {
	kp_pool *pool;
	char *live, *shrunk, *keptbase;
	size_t keptsize;
} fork_arg;

static long fork_child_body(void *arg)
{
	fork_arg *f = arg;
	long bad = 0;
	bad += kt_verify(f->live, 8 * MiB, 21) != KT_OK;
	bad += kt_verify(f->shrunk, 3 * MiB, 22) != KT_OK;
	bad += !huge_layout_ok(f->live, "child: live") * 10;
	bad += !huge_layout_ok(f->shrunk, "child: shrunk") * 100;
	char *ls = huge_base(f->live), *ss = huge_base(f->shrunk);
	size_t lsize = seg_size(ls), ssize = seg_size(ss);
	bad += (kp_free(f->pool, f->live) != 0) * 1000;
	bad += (kp_free(f->pool, f->shrunk) != 0) * 1000;
	char *r = kp_alloc(f->pool, 7 * MiB, 0); /* a kept mapping: the parent's 8 MiB or the kept one */
	if (!r)
		return bad + 10000;
	bad += !huge_layout_ok(r, "child: reused") * 100000;
	memset(r, 1, 7 * MiB);
	char *g = kp_realloc(f->pool, r, 30 * MiB, 0);
	if (!g)
		return bad + 1000000;
	bad += !huge_layout_ok(g, "child: grown") * 10000000;
	kp_free(f->pool, g);
	kp_destroy(f->pool);
	bad += (long)(vmas_in(ls, ls + lsize + KP_PAGE) + vmas_in(ss, ss + ssize + KP_PAGE) +
		      vmas_in(f->keptbase, f->keptbase + f->keptsize + KP_PAGE)) *
	       100000000L;
	return bad;
}

static void test_fork_child_frees(void)
{
	KT_POOL(pool, "daemon:off,step_clock:on,prefault:off,seed:11");
	char *live = kp_alloc(pool, 8 * MiB, 0), *shr = kp_alloc(pool, 8 * MiB, 0), *kept = kp_alloc(pool, 6 * MiB, 0);
	REQUIRE(live && shr && kept, "allocs");
	kt_fill(live, 8 * MiB, 21);
	kt_fill(shr, 8 * MiB, 22);
	shr = kp_realloc(pool, shr, 3 * MiB, 0);
	REQUIRE(shr, "shrink");
	fork_arg f = {pool, live, shr, huge_base(kept), seg_size(huge_base(kept))};
	kp_free(pool, kept);
	long v = kt_in_child(fork_child_body, &f);
	CHECK(v == 0, "fork child: %ld (digits: content, layouts, frees, reuse, grow, leftover mappings)", v);
	CHECK(kt_verify(live, 8 * MiB, 21) == KT_OK && kt_verify(shr, 3 * MiB, 22) == KT_OK, "parent's blocks");
	huge_layout_ok(live, "parent: live");
	huge_layout_ok(shr, "parent: shrunk");
	CHECK(kp_free(pool, live) == 0 && kp_free(pool, shr) == 0, "parent frees");
	kp_destroy(pool);
}

/* ---- cycles -------------------------------------------------------------------- */

#define NLIVE 6
#define CYCLES 200
#define FILLN(n) ((n) < ((size_t)512 << 10) ? (n) : ((size_t)512 << 10))

static void test_cycles_no_leak(void)
{
	kp_pool *warm = kp_create("daemon:off,seed:12");
	REQUIRE(warm, "create");
	kp_destroy(warm);
	totals t0 = anon_totals();
	KT_POOL(pool, "daemon:off,step_clock:on,prefault:off,decay_ms:100,seed:12");
	totals t1 = anon_totals();
	int64_t segs1 = kt_stat(pool, "primary.segments");
	char *blk[NLIVE] = {0};
	size_t req[NLIVE] = {0};
	uint64_t seed = 0x5eed, salt[NLIVE] = {0};
	unsigned bad_layout = 0, bad_content = 0, failed = 0;
	for (unsigned it = 0; it < CYCLES; it++) {
		unsigned i = (unsigned)kt_rand_range(&seed, 0, NLIVE - 1);
		unsigned op = (unsigned)kt_rand_range(&seed, 0, 9);
		size_t sz = kt_rand_log(&seed, 2 * MiB, 24 * MiB);
		if (op == 9)
			sz = kt_rand_range(&seed, 100000, 2 * MiB - 20000); /* below the huge sizes */
		if (!blk[i]) {
			blk[i] = kp_alloc(pool, sz, op & 1 ? KP_ZERO : 0);
			if (!blk[i]) {
				failed++;
				continue;
			}
			req[i] = sz;
			salt[i] = it;
			kt_fill(blk[i], FILLN(sz), it);
		} else if (op < 3) {
			bad_content += kt_verify(blk[i], FILLN(req[i]), salt[i]) != KT_OK;
			kp_free(pool, blk[i]);
			blk[i] = NULL;
		} else {
			char *n = kp_realloc(pool, blk[i], sz, 0);
			if (!n) {
				failed++;
				continue;
			}
			size_t keep = sz < req[i] ? sz : req[i];
			bad_content += kt_verify_from(n, blk[i], FILLN(keep), salt[i]) != KT_OK;
			blk[i] = n;
			req[i] = sz;
			salt[i] = it + 1000;
			kt_fill(n, FILLN(sz), salt[i]);
		}
		for (unsigned j = 0; j < NLIVE; j++) {
			kp__seg *s = blk[j] ? kp__pagemap_get(blk[j]) : NULL;
			if (s && s->kind == KP_SEG_HUGE && !huge_layout_ok(blk[j], "cycle"))
				bad_layout++;
		}
		if (it % 37 == 0)
			kp_daemon_step(pool, it % 74 ? 0 : 500);
	}
	CHECK(bad_layout == 0 && bad_content == 0 && failed == 0, "%u bad layouts, %u bad contents, %u failed",
	      bad_layout, bad_content, failed);
	for (unsigned j = 0; j < NLIVE; j++)
		if (blk[j])
			kp_free(pool, blk[j]);
	kp_thread_flush(pool);
	for (int k = 0; k < 6; k++)
		kp_daemon_step(pool, 100000);
	totals t2 = anon_totals();
	int64_t segs2 = kt_stat(pool, "primary.segments");
	CHECK(kt_stat(pool, "primary.huge_cached_bytes") == 0 && kt_stat(pool, "primary.huge_bytes") == 0,
	      "huge bytes left: %lld kept, %lld live", (long long)kt_stat(pool, "primary.huge_cached_bytes"),
	      (long long)kt_stat(pool, "primary.huge_bytes"));
	/* each segment still held: 4 MiB and one read-only mapping (its guard) */
	int64_t dsegs = segs2 - segs1;
	if (!KT_SANITIZED)
		CHECK((int64_t)t2.ro - (int64_t)t1.ro == dsegs &&
			      (int64_t)t2.bytes - (int64_t)t1.bytes == dsegs * (int64_t)KP_SEG_SIZE,
		      "after create %zu mappings (%zu bytes, %zu read-only), settled after %u cycles %zu (%zu bytes, "
		      "%zu "
		      "read-only), %lld segments more",
		      t1.n, t1.bytes, t1.ro, CYCLES, t2.n, t2.bytes, t2.ro, (long long)dsegs);
	kp_destroy(pool);
	totals t3 = anon_totals();
	if (!KT_SANITIZED)
		CHECK(t3.n == t0.n && t3.bytes == t0.bytes && t3.ro == t0.ro,
		      "before create %zu mappings (%zu bytes, %zu read-only), after destroy %zu (%zu bytes, %zu "
		      "read-only)",
		      t0.n, t0.bytes, t0.ro, t3.n, t3.bytes, t3.ro);
}

/* Two threads resize and free huge blocks while the daemon runs (1 ms
 * passes, 5 ms decay: kept mappings purged, trimmed and taken meanwhile):
 * every block's guard right past its mapping at every step. */
typedef struct {
	kp_pool *pool;
	uint64_t seed;
	unsigned bad;
} thr_arg;

static void *thr_cycles(void *arg)
{
	thr_arg *t = arg;
	char *b = NULL;
	size_t req = 0;
	for (unsigned it = 0; it < 120; it++) {
		size_t sz = kt_rand_log(&t->seed, 4 * MiB + 1, 20 * MiB);
		unsigned op = (unsigned)kt_rand_range(&t->seed, 0, 3);
		if (!b) {
			b = kp_alloc(t->pool, sz, 0);
			req = sz;
		} else if (op == 0) {
			kp_free(t->pool, b);
			b = NULL;
			continue;
		} else {
			char *n = kp_realloc(t->pool, b, sz, 0);
			if (n) {
				t->bad += n[0] != (char)0x77 || (sz >= req && n[req - 1] != (char)0x77);
				b = n;
				req = sz;
			}
		}
		if (!b) {
			t->bad++;
			continue;
		}
		b[0] = b[req - 1] = 0x77;
		t->bad += !huge_layout_ok(b, "threads");
	}
	if (b)
		kp_free(t->pool, b);
	return NULL;
}

static void test_threads_daemon_cycles(void)
{
	KT_POOL(pool, "daemon:on,daemon_interval_ms:1,decay_ms:5,seed:24");
	pthread_t th[2];
	thr_arg a[2] = {{pool, 1, 0}, {pool, 2, 0}};
	for (int i = 0; i < 2; i++)
		REQUIRE(pthread_create(&th[i], NULL, thr_cycles, &a[i]) == 0, "thread");
	for (int i = 0; i < 2; i++)
		pthread_join(th[i], NULL);
	CHECK(a[0].bad + a[1].bad == 0, "%u + %u bad steps", a[0].bad, a[1].bad);
	kp_destroy(pool);
}

/* ---- 2. mprotect refused --------------------------------------------------------- */

static void test_fault_huge_alloc(void)
{
	KT_POOL(pool, "daemon:off,step_clock:on,prefault:off,seed:13");
	kt_events_clear(pool);
	totals t0 = anon_totals();
	REQUIRE(kp_fault_inject(pool, "mprotect@nth=1") == 0, "inject");
	char *p = kp_alloc(pool, 8 * MiB, 0);
	CHECK(p == NULL, "a huge block without its guard was handed out");
	CHECK(os_fails(pool) >= 1, "no os_fail event");
	totals t1 = anon_totals();
	if (!KT_SANITIZED)
		CHECK(t1.n == t0.n && t1.bytes == t0.bytes, "mappings %zu (%zu bytes) before, %zu (%zu bytes) after",
		      t0.n, t0.bytes, t1.n, t1.bytes);
	CHECK(kt_stat(pool, "primary.huge_bytes") == 0, "huge bytes counted");
	p = kp_alloc(pool, 8 * MiB, 0);
	REQUIRE(p, "the next one");
	huge_layout_ok(p, "after the refused mprotect");
	kp_free(pool, p);
	kp_destroy(pool);
}

static void test_fault_segment_grow(void)
{
	KT_POOL(pool, "daemon:off,step_clock:on,prefault:off,primary_initial:4m,seed:14");
	kt_events_clear(pool);
	REQUIRE(kp_fault_inject(pool, "mprotect@nth=1") == 0, "inject");
	static void *blk[512];
	unsigned n = 0, nulls = 0;
	int64_t cap0 = kt_stat(pool, "primary.capacity_bytes");
	int64_t grows0 = kt_stat(pool, "primary.grows");
	while (n < 512 && kt_stat(pool, "primary.grows") < grows0 + 2) {
		void *p = kp_alloc(pool, 60000, 0);
		if (!p) {
			nulls++;
			if (nulls > 3)
				break;
			continue;
		}
		blk[n++] = p;
	}
	CHECK(nulls <= 1, "%u allocations refused (at most the one whose segment's guard failed)", nulls);
	CHECK(os_fails(pool) >= 1, "no os_fail event");
	int64_t cap = kt_stat(pool, "primary.capacity_bytes"), segs = kt_stat(pool, "primary.segments");
	CHECK(cap == segs * (int64_t)KP_SEG_SIZE && cap > cap0, "capacity %lld, %lld segments", (long long)cap,
	      (long long)segs);
	/* every segment's guard in place */
	unsigned noguard = 0;
	for (unsigned i = 0; i < n; i++) {
		vma v;
		char *g = SEGBASE(blk[i]) + KP_SEG_GUARD * KP_UNIT_SIZE;
		noguard += !(vma_at(g, &v) && strcmp(v.perm, "r--p") == 0 && v.hi >= (uintptr_t)g + KP_UNIT_SIZE);
	}
	CHECK(noguard == 0, "%u blocks in a segment without its guard", noguard);
	for (unsigned i = 0; i < n; i++)
		kp_free(pool, blk[i]);
	kp_destroy(pool);
}

static void test_fault_option_every(void)
{
	kp_pool *warm = kp_create("daemon:off,seed:15");
	REQUIRE(warm, "create");
	kp_destroy(warm);
	totals t0 = anon_totals();
	KT_POOL(pool, "daemon:off,step_clock:on,prefault:off,primary_initial:4m,seed:15,faults:mprotect@every=1");
	static void *blk[512];
	unsigned n = 0;
	while (n < 512 && (blk[n] = kp_alloc(pool, 60000, 0)) != NULL)
		n++;
	CHECK(n > 0 && n < 512, "%u blocks from a pool that cannot grow", n);
	CHECK(kt_stat(pool, "primary.capacity_bytes") == (int64_t)KP_SEG_SIZE, "capacity %lld",
	      (long long)kt_stat(pool, "primary.capacity_bytes"));
	CHECK(kp_alloc(pool, 8 * MiB, 0) == NULL, "a huge block without a guard");
	CHECK(kp_alloc(pool, KP_LARGE_MAX - KP_HDR - KP_CANARY, 0) == NULL, "a full segment from nowhere");
	CHECK(os_fails(pool) >= 2, "os_fail events");
	for (unsigned i = 0; i < n; i++)
		CHECK(kp_free(pool, blk[i]) == 0, "free");
	kp_destroy(pool);
	totals t1 = anon_totals();
	if (!KT_SANITIZED)
		CHECK(t1.n == t0.n && t1.bytes == t0.bytes, "mappings %zu (%zu bytes) before, %zu (%zu bytes) after",
		      t0.n, t0.bytes, t1.n, t1.bytes);
}

static void test_fault_huge_shrink(void)
{
	KT_POOL(pool, "daemon:off,step_clock:on,prefault:off,seed:16");
	char *p = kp_alloc(pool, 16 * MiB, 0);
	REQUIRE(p, "8 MiB");
	kt_fill(p, 16 * MiB, 31);
	size_t size = seg_size(huge_base(p));
	kt_events_clear(pool);
	totals t0 = anon_totals();
	/* every mprotect refused: the shrink fails, and the move (a new huge
	 * block: 5 MiB is past KP_LARGE_MAX) too: NULL, the block as it was */
	REQUIRE(kp_fault_inject(pool, "mprotect@every=1") == 0, "inject");
	char *q = kp_realloc(pool, p, 5 * MiB, 0);
	REQUIRE(kp_fault_inject(pool, "mprotect@off") == 0, "off");
	CHECK(q == NULL, "realloc returned %p", (void *)q);
	CHECK(os_fails(pool) >= 1, "no os_fail event");
	CHECK(kp_usable_size(pool, p) == 16 * MiB, "usable %zu", kp_usable_size(pool, p));
	CHECK(seg_size(huge_base(p)) == size, "size %zu, was %zu", seg_size(huge_base(p)), size);
	CHECK(kt_verify(p, 16 * MiB, 31) == KT_OK, "content");
	huge_layout_ok(p, "after a refused shrink");
	CHECK(first_write_fault(p, size - 2 * KP_PAGE) == KT_OK, "a payload page is read-only after a refused shrink");
	totals t1 = anon_totals();
	if (!KT_SANITIZED)
		CHECK(t1.n == t0.n && t1.bytes == t0.bytes, "mappings %zu (%zu bytes) before, %zu (%zu bytes) after",
		      t0.n, t0.bytes, t1.n, t1.bytes);
	/* the shrink's mprotect refused once: the move serves it */
	REQUIRE(kp_fault_inject(pool, "mprotect@nth=1") == 0, "inject");
	q = kp_realloc(pool, p, 5 * MiB, 0);
	REQUIRE(q, "realloc with one refused mprotect");
	CHECK(kt_verify_from(q, p, 5 * MiB, 31) == KT_OK, "moved content");
	huge_layout_ok(q, "moved after a refused shrink");
	char *k = kp_alloc(pool, 16 * MiB, 0); /* the old mapping, kept */
	REQUIRE(k, "8 MiB");
	huge_layout_ok(k, "the old mapping reused");
	CHECK(first_write_fault(k, seg_size(huge_base(k)) - 2 * KP_PAGE) == KT_OK,
	      "the reused mapping: read-only page");
	kp_free(pool, k);
	kp_free(pool, q);
	/* the tail's munmap refused: the guard's page made writable again,
	 * the block moves; the old mapping kept, reused, all of it writable */
	p = kp_alloc(pool, 16 * MiB, 0);
	REQUIRE(p, "16 MiB");
	kt_fill(p, 16 * MiB, 32);
	REQUIRE(kp_fault_inject(pool, "munmap@nth=1") == 0, "inject");
	q = kp_realloc(pool, p, 5 * MiB, 0);
	kp_fault_inject(pool, "all@off");
	REQUIRE(q, "realloc with the tail's munmap refused");
	CHECK(kt_verify_from(q, p, 5 * MiB, 32) == KT_OK, "content");
	if (q == p) {
		huge_layout_ok(q, "shrunk, its tail's munmap refused");
	} else {
		huge_layout_ok(q, "moved, the tail's munmap refused");
		k = kp_alloc(pool, 16 * MiB, 0);
		REQUIRE(k, "16 MiB");
		huge_layout_ok(k, "reused after the refused munmap");
		CHECK(first_write_fault(k, seg_size(huge_base(k)) - 2 * KP_PAGE) == KT_OK, "a read-only payload page");
		kp_free(pool, k);
	}
	kp_free(pool, q);
	kp_destroy(pool);
}

static void test_fault_huge_grow(void)
{
	KT_POOL(pool, "daemon:off,step_clock:on,prefault:off,seed:17");
	char *p = kp_alloc(pool, 5 * MiB, 0);
	REQUIRE(p, "5 MiB");
	kt_fill(p, 5 * MiB, 41);
	settle(pool);
	kt_events_clear(pool);
	totals t0 = anon_totals();
	REQUIRE(kp_fault_inject(pool, "mprotect@every=1") == 0, "inject");
	char *q = kp_realloc(pool, p, 12 * MiB, 0);
	REQUIRE(kp_fault_inject(pool, "mprotect@off") == 0, "off");
	CHECK(q == NULL, "grown without a guard: %p", (void *)q);
	CHECK(os_fails(pool) >= 1, "no os_fail event");
	CHECK(kt_verify(p, 5 * MiB, 41) == KT_OK, "content");
	huge_layout_ok(p, "after a refused grow");
	settle(pool);
	totals t1 = anon_totals();
	if (!KT_SANITIZED)
		CHECK(t1.n == t0.n && t1.bytes == t0.bytes, "mappings %zu (%zu bytes) before, %zu (%zu bytes) after",
		      t0.n, t0.bytes, t1.n, t1.bytes);
	/* once: the grow's new window refused, the move serves it */
	REQUIRE(kp_fault_inject(pool, "mprotect@nth=1") == 0, "inject");
	q = kp_realloc(pool, p, 12 * MiB, 0);
	REQUIRE(q, "grow with one refused mprotect");
	CHECK(kt_verify_from(q, p, 5 * MiB, 41) == KT_OK, "content");
	huge_layout_ok(q, "grown after a refused mprotect");
	kp_free(pool, q);
	kp_destroy(pool);
}

/* The shrink's guard set, the tail's munmap refused, and the guard's page
 * made read-write again refused too: the block kept its old size with a
 * read-only page inside its payload, kept at its free and handed out again
 * (a write at payload offset 3149824 of 8392704 faulted: FAILING in
 * tests/attack4 until huge.c kept the new end). Now the shrink stands, the
 * tail left mapped, an os_fail event. A growing block's new window refused
 * (its guard's mprotect or its mmap): an os_fail event (none before). */
static void test_shrink_unmap_and_reprotect(void)
{
	KT_POOL(pool, "daemon:off,step_clock:on,prefault:off,seed:22");
	char *p = kp_alloc(pool, 8 * MiB, 0);
	REQUIRE(p, "8 MiB");
	kt_fill(p, 8 * MiB, 61);
	settle(pool);
	kt_events_clear(pool);
	/* the shrink: mprotect 1 the guard, munmap 1 the tail, mprotect 2 the
	 * guard's page back */
	REQUIRE(kp_fault_inject(pool, "munmap@nth=1;mprotect@nth=2") == 0, "inject");
	char *q = kp_realloc(pool, p, 3 * MiB, 0);
	kp_fault_inject(pool, "all@off");
	REQUIRE(q, "realloc");
	CHECK(os_fails(pool) >= 1, "no os_fail event");
	CHECK(kt_verify_from(q, p, 3 * MiB, 61) == KT_OK, "content");
	size_t off = KT_OK;
	if (q == p) {
		huge_layout_ok(q, "shrunk, the tail's munmap and the page's mprotect refused");
		off = first_write_fault(p, seg_size(huge_base(p)) - 2 * KP_PAGE);
		CHECK(off == KT_OK, "the block: payload offset %zu is read-only", off);
	} else {
		/* moved: the old mapping is kept, and the next 8 MiB takes it */
		char *k = kp_alloc(pool, 8 * MiB, 0);
		REQUIRE(k, "8 MiB");
		CHECK(k == p, "the kept mapping was not reused (%p, old %p)", (void *)k, (void *)p);
		huge_layout_ok(k, "reused after the refused shrink");
		off = first_write_fault(k, seg_size(huge_base(k)) - 2 * KP_PAGE);
		CHECK(off == KT_OK, "a kept mapping handed out with a read-only page at payload offset %zu of %zu", off,
		      seg_size(huge_base(k)) - 2 * KP_PAGE);
		kp_free(pool, k);
	}
	kp_free(pool, q);
	kp_destroy(pool);
}

static void test_grow_guard_event(void)
{
	KT_POOL(pool, "daemon:off,step_clock:on,prefault:off,seed:23");
	char *p = kp_alloc(pool, 5 * MiB, 0);
	REQUIRE(p, "5 MiB");
	kt_fill(p, 5 * MiB, 62);
	char *origin = p;
	for (int k = 0; k < 2; k++) {
		kt_events_clear(pool);
		/* once: the new window's guard (k 0) or its mmap (k 1) */
		REQUIRE(kp_fault_inject(pool, k ? "mmap@nth=1" : "mprotect@nth=1") == 0, "inject");
		char *q = kp_realloc(pool, p, (size_t)(12 + 4 * k) * MiB, 0);
		kp_fault_inject(pool, "all@off");
		REQUIRE(q, "grow with one refused call");
		CHECK(os_fails(pool) >= 1, "a grow whose new window's %s was refused recorded no os_fail event",
		      k ? "mmap" : "guard");
		CHECK(kt_verify_from(q, origin, 5 * MiB, 62) == KT_OK, "content");
		huge_layout_ok(q, "grown after a refused call");
		p = q;
	}
	kp_free(pool, p);
	kp_destroy(pool);
}

/* ---- 3. pointers into guards ------------------------------------------------------ */

static unsigned poke(kp_pool *pool, char *at, unsigned *events)
{
	unsigned accepted = 0;
	kt_events_clear(pool);
	accepted += kp_usable_size(pool, at) != 0;
	accepted += kp_free(pool, at) == 0;
	void *r = kp_realloc(pool, at, 64, 0);
	accepted += r != NULL;
	void *r2 = kp_realloc(pool, at, 9 * MiB, 0);
	accepted += r2 != NULL;
	*events += (unsigned)kt_events_count(pool, KP_EV_NONE);
	return accepted;
}

static void test_guard_pointers_huge(void)
{
	KT_POOL(pool, "daemon:off,step_clock:on,prefault:off,seed:18");
	char *p = kp_alloc(pool, 5 * MiB, 0);
	REQUIRE(p, "5 MiB");
	char *s = huge_base(p);
	size_t size = seg_size(s);
	unsigned accepted = 0, events = 0, tries = 0;
	for (size_t off = 0; off < KP_PAGE; off += off < 64 ? 16 : 1024, tries++)
		accepted += poke(pool, s + size + off, &events);
	accepted += poke(pool, s + size - KP_HDR, &events);  /* the payload's last 16 bytes */
	accepted += poke(pool, s + size + KP_PAGE, &events); /* past the guard */
	CHECK(accepted == 0 && events >= tries, "huge guard pointers: %u accepted, %u events for %u", accepted, events,
	      tries);
	/* an in-place shrink: its new guard (old payload) and the unmapped tail */
	char *q = kp_realloc(pool, p, 2500000, 0);
	REQUIRE(q == p, "shrink in place");
	size_t now = seg_size(s);
	accepted = events = 0;
	for (size_t off = 0; off < size + KP_PAGE - now; off += off < 64 ? 16 : 65536)
		accepted += poke(pool, s + now + off, &events);
	CHECK(accepted == 0, "shrunk block's guard and tail: %u accepted", accepted);
	CHECK(kp_usable_size(pool, q) == 2500000, "the block survived");
	/* a kept mapping's guard and payload */
	CHECK(kp_free(pool, q) == 0, "free");
	accepted = events = 0;
	accepted += poke(pool, s + now, &events);
	accepted += poke(pool, s + 2 * KP_PAGE, &events); /* a double free */
	accepted += poke(pool, s + 2 * KP_PAGE + KP_PAGE, &events);
	CHECK(accepted == 0 && events > 0, "kept mapping: %u accepted, %u events", accepted, events);
	/* a normal segment's guard unit, at its first byte: the header would be
	 * a live large block's last 16 bytes */
	char *big = kp_alloc(pool, KP_LARGE_MAX - KP_HDR - KP_CANARY, 0);
	REQUIRE(big, "a block of KP_LARGE_MAX");
	char *g = SEGBASE(big) + KP_SEG_GUARD * KP_UNIT_SIZE;
	accepted = events = 0;
	accepted += poke(pool, g, &events);
	accepted += poke(pool, g + KP_HDR, &events);
	accepted += poke(pool, g + KP_UNIT_SIZE - KP_HDR, &events);
	CHECK(accepted == 0 && events > 0, "segment guard: %u accepted, %u events", accepted, events);
	CHECK(kp_usable_size(pool, big) == KP_LARGE_MAX - KP_HDR - KP_CANARY, "the large block survived");
	CHECK(kp_free(pool, big) == 0, "free");
	kp_destroy(pool);
}

/* ---- 4. the KP_LARGE_MAX boundary ------------------------------------------------- */

static void test_large_max_boundary(void)
{
	static const char *const confs[2] = {"daemon:off,step_clock:on,seed:19",
					     "daemon:off,step_clock:on,seed:19,checks:off"};
	for (int c = 0; c < 2; c++) {
		KT_POOL(pool, confs[c]);
		size_t extra = c ? 0 : KP_CANARY, edge = KP_LARGE_MAX - KP_HDR - extra;
		char *a = kp_alloc(pool, edge, 0);
		REQUIRE(a, "edge");
		kp__seg *s = kp__pagemap_get(a);
		CHECK(s && s->kind == KP_SEG_NORMAL, "%s: the edge is not a large block", confs[c]);
		size_t u = kp_usable_size(pool, a);
		CHECK(a + u + extra == SEGBASE(a) + KP_SEG_GUARD * KP_UNIT_SIZE, "%s: ends %td bytes before the guard",
		      confs[c], SEGBASE(a) + KP_SEG_GUARD * KP_UNIT_SIZE - (a + u + extra));
		CHECK(first_write_fault(a, u) == KT_OK, "%s: the edge block is not all writable", confs[c]);
		memset(a, 0x33, u);
		char *b = kp_alloc(pool, edge + 1, 0);
		REQUIRE(b, "edge + 1");
		s = kp__pagemap_get(b);
		CHECK(s && s->kind == KP_SEG_HUGE, "%s: one byte past the edge is not huge", confs[c]);
		huge_layout_ok(b, "edge + 1");
		/* realloc across: large edge -> +1 (moves to huge), huge -> edge (stays huge in place) */
		kt_fill(a, edge, 51);
		char *a2 = kp_realloc(pool, a, edge + 1, 0);
		REQUIRE(a2, "realloc to edge + 1");
		CHECK(kt_verify_from(a2, a, edge, 51) == KT_OK, "content");
		s = kp__pagemap_get(a2);
		CHECK(s && s->kind == KP_SEG_HUGE, "grown past the edge: not huge");
		char *a3 = kp_realloc(pool, a2, edge, 0);
		REQUIRE(a3, "back to the edge");
		CHECK(kt_verify_from(a3, a, edge, 51) == KT_OK, "content");
		CHECK(kp_free(pool, a3) == 0 && kp_free(pool, b) == 0, "frees");
		/* aligned at the edge: want = size + 4096 */
		size_t asz = edge - 4096;
		char *al = kp_alloc_aligned(pool, asz, 4096, 0);
		REQUIRE(al, "aligned at the edge");
		CHECK(((uintptr_t)al & 4095) == 0, "alignment");
		CHECK(first_write_fault(al, asz) == KT_OK, "%s: the aligned edge block is not all writable", confs[c]);
		char *al2 = kp_alloc_aligned(pool, asz + 1, 4096, 0);
		REQUIRE(al2, "aligned edge + 1");
		CHECK(((uintptr_t)al2 & 4095) == 0, "alignment");
		CHECK(first_write_fault(al2, asz + 1) == KT_OK, "aligned edge + 1: not all writable");
		CHECK(kp_free(pool, al) == 0 && kp_free(pool, al2) == 0, "aligned frees");
		/* a large run grown in place up to the guard */
		char *r = kp_alloc(pool, 30 * KP_UNIT_SIZE, 0);
		REQUIRE(r, "30 units");
		kt_fill(r, 30 * KP_UNIT_SIZE, 52);
		char *r2 = kp_realloc(pool, r, edge, 0);
		REQUIRE(r2, "grown to the edge");
		CHECK(kt_verify_from(r2, r, 30 * KP_UNIT_SIZE, 52) == KT_OK, "content");
		CHECK(first_write_fault(r2, kp_usable_size(pool, r2)) == KT_OK, "grown to the edge: not all writable");
		char *r3 = kp_realloc(pool, r2, edge + 100, 0);
		REQUIRE(r3, "past the edge");
		CHECK(kt_verify_from(r3, r, 30 * KP_UNIT_SIZE, 52) == KT_OK, "content");
		CHECK(kp_free(pool, r3) == 0, "free");
		kp_destroy(pool);
	}
}

/* ---- daemon walks near the guard --------------------------------------------- */

static void test_daemon_near_guard(void)
{
	KT_POOL(pool, "daemon:off,step_clock:on,primary_initial:8m,decay_ms:10,seed:20");
	static void *blk[64];
	unsigned n = 0;
	/* runs ending at unit 62, freed: purged and pre-faulted by passes */
	while (n < 8) {
		blk[n] = kp_alloc(pool, 20 * KP_UNIT_SIZE, 0);
		REQUIRE(blk[n], "20 units");
		memset(blk[n], 0x44, 20 * KP_UNIT_SIZE);
		n++;
	}
	for (unsigned i = 0; i < n; i += 2)
		kp_free(pool, blk[i]);
	for (int k = 0; k < 20; k++) {
		void *t = kp_alloc(pool, 2 * MiB, 0);
		kp_daemon_step(pool, k % 3 ? 50 : 0);
		kp_free(pool, t);
	}
	kp__seg *segs[16];
	unsigned ns = 0;
	for (unsigned i = 1; i < n; i += 2) {
		char *sb = SEGBASE(blk[i]);
		bool dup = false;
		for (unsigned j = 0; j < ns; j++)
			dup |= (char *)segs[j] == sb;
		if (!dup && ns < 16)
			segs[ns++] = (kp__seg *)sb;
	}
	unsigned bad = 0;
	for (unsigned j = 0; j < ns; j++) {
		char *g = (char *)segs[j] + KP_SEG_GUARD * KP_UNIT_SIZE;
		vma v;
		bad += !(vma_at(g, &v) && strcmp(v.perm, "r--p") == 0 && v.lo == (uintptr_t)g);
		bad += !write_faults(g + KP_UNIT_SIZE - 1);
	}
	CHECK(bad == 0, "%u segment guards changed by daemon passes", bad);
	for (unsigned i = 1; i < n; i += 2)
		CHECK(kp_free(pool, blk[i]) == 0, "free");
	kp_destroy(pool);
}

int main(void)
{
	RUN(test_huge_shrink_paths);
	RUN(test_grow_into_kept);
	RUN(test_daemon_purge_trim_evict);
	RUN(test_destroy_live_and_cached);
	RUN(test_fork_child_frees);
	RUN(test_cycles_no_leak);
	RUN(test_threads_daemon_cycles);
	RUN(test_fault_huge_alloc);
	RUN(test_fault_segment_grow);
	RUN(test_fault_option_every);
	RUN(test_fault_huge_shrink);
	RUN(test_fault_huge_grow);
	RUN(test_shrink_unmap_and_reprotect);
	RUN(test_grow_guard_event);
	RUN(test_guard_pointers_huge);
	RUN(test_large_max_boundary);
	RUN(test_daemon_near_guard);
	return ktest_summary();
}
