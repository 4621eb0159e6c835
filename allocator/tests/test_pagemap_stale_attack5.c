/*
 * test_pagemap_stale_attack5.c - a huge mapping whose pagemap entries could
 * not all be written leaves none of them behind (sess16-hA5).
 *
 * kp__pagemap_set writes a huge mapping's entries chunk by chunk, mapping a
 * leaf (64 KiB, 32 GiB of address space) on first use. A mapping across a
 * leaf boundary whose second leaf's mmap was refused: kp__pagemap_set
 * returned -1 with the first leaf's entries written, and kp__huge_alloc
 * (kp__huge_resize's new window likewise) unmapped the mapping without
 * clearing them. A later lookup of an address there (kp_free,
 * kp_usable_size, kp_realloc of a wild or stale pointer) found the
 * unmapped header and read it: SIGSEGV, where bad input must be refused
 * ("never crashes", kpool.h); no os_fail event said the pagemap failed.
 * Older than the guards; on main at c1d60b4: "kp_free of a wild pointer in
 * the failed huge mapping's range: the child died (-3)". Now the entries
 * written are cleared and the mapping released as huge_release does (its
 * header pages after a grace period), with an os_fail event; clearing a
 * chunk whose leaf was never mapped has nothing to clear (it mapped the
 * leaf).
 *
 * The rig (release builds only: sanitizers own most of the address space):
 * in a child, every gap of the address space from a leaf boundary B two
 * leaves below the process's lowest mapping up to the stack is reserved
 * PROT_NONE, so that the kernel's next mapping ends just past B + 4 MiB,
 * across B; then the third mmap from now (the huge mapping, its first
 * leaf, its second leaf) is refused. Skips when the layout is not had.
 */
#define _GNU_SOURCE 1
#include "guard_rig5.h"

#define LEAF_SPAN ((uintptr_t)1 << (KP_LEAF_BITS + KP_SEG_SHIFT))

typedef struct {
	uintptr_t from, prev_hi, lowest;
	unsigned n;
	uintptr_t lo[4096], hi[4096];
} gaps;

static bool gap_cb(const vma *v, void *arg)
{
	gaps *g = arg;
	if (v->lo >= 0x7ff000000000ul) /* the stack and above */
		return true;
	if (v->lo >= 0x7e0000000000ul && v->lo < g->lowest)
		g->lowest = v->lo;
	if (g->prev_hi && v->lo > g->prev_hi && g->prev_hi >= g->from && g->n < 4096) {
		g->lo[g->n] = g->prev_hi;
		g->hi[g->n++] = v->lo;
	}
	g->prev_hi = v->hi;
	return true;
}

static void reserve(uintptr_t lo, uintptr_t hi)
{
	mmap((void *)lo, hi - lo, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED_NOREPLACE, -1, 0);
}

/* 0: no crash; 1: the layout was not had (skip); a crash: the pipe's -3 */
static long rig(void *arg)
{
	kp_pool *pool = arg;
	static gaps g;
	memset(&g, 0, sizeof g);
	g.lowest = UINTPTR_MAX;
	maps_walk(gap_cb, &g);
	if (g.lowest == UINTPTR_MAX)
		return 1;
	uintptr_t b = (g.lowest & ~(LEAF_SPAN - 1)) - LEAF_SPAN, lowest = g.lowest;
	memset(&g, 0, sizeof g);
	g.from = b + 4 * MiB;
	g.lowest = UINTPTR_MAX;
	maps_walk(gap_cb, &g);
	reserve(b + 4 * MiB, lowest);
	for (unsigned i = 0; i < g.n; i++)
		reserve(g.lo[i], g.hi[i]);
	kt_events_clear(pool);
	kp_fault_inject(pool, "mmap@nth=3");
	char *p = kp_alloc(pool, 8 * MiB, 0);
	kp_fault_inject(pool, "all@off");
	if (p)
		return 1;
	size_t fails = kt_events_count(pool, KP_EV_OS_FAIL);
	/* wild pointers at every chunk around b: refused, never a fault */
	for (uintptr_t c = b - 16 * MiB; c < b + 16 * MiB; c += 4 * MiB) {
		char *q = (char *)c + 2 * KP_PAGE;
		if (kp_usable_size(pool, q) != 0 || kp_free(pool, q) == 0)
			return 2;
	}
	return fails ? 0 : 3;
}

static void test_failed_huge_pagemap(void)
{
	if (KT_SANITIZED) {
		printf("   skipped: a release rig\n");
		return;
	}
	KT_POOL(pool, "daemon:off,seed:31");
	long v = kt_in_child(rig, pool);
	if (v == 1)
		printf("   skipped: no mapping across a leaf boundary\n");
	CHECK(v == 0 || v == 1, "kp_free of a wild pointer in the failed huge mapping's range: %s (%ld)",
	      v == -3  ? "the child died"
	      : v == 3 ? "no os_fail event"
		       : "accepted",
	      v);
	kp_destroy(pool);
}

int main(void)
{
	RUN(test_failed_huge_pagemap);
	return ktest_summary();
}
