/*
 * test_huge_fault_attack5.c - FAILING (sess16-hA5): a huge block's resize
 * when the OS refuses the calls that move its guard (kp_fault_inject).
 *
 *  - test_shrink_unmap_and_reprotect: kp_realloc shrinks a huge block in
 *    place (kp__huge_resize): its new end's page becomes the guard
 *    (mprotect read-only), then the tail past it is unmapped. The munmap
 *    refused, the guard's page is made read-write again (kp__os_protect);
 *    that refused too, the block keeps its old size with a read-only page
 *    inside its payload. kp_realloc then moves the block (a large block) and
 *    frees the old one: its mapping is kept, and the next huge request of
 *    its size gets it: a write at payload offset 3149824 of 8392704 faults
 *    (main at c1d60b4: "a kept mapping handed out with a read-only page at
 *    payload offset 3149824 of 8392704"). Were the move refused too (no
 *    room), the caller's own block would fault there.
 *  - test_grow_guard_event: a growing huge block's new window (a fresh
 *    mapping) whose guard is refused is unmapped and kp__huge_resize
 *    returns NULL with no os_fail event (the mmap refused there: none
 *    either); kp_realloc moves the block and nothing records that the OS
 *    refused a call (but the fault_injected event, when injected).
 *
 * Build and run from the repository root:
 *   make -C allocator VARIANT=release build/release/tests/attack4/test_huge_fault_attack5 &&
 *     allocator/build/release/tests/attack4/test_huge_fault_attack5
 */
#define _GNU_SOURCE 1
#include "guard_rig5.h"

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

int main(void)
{
	RUN(test_shrink_unmap_and_reprotect);
	RUN(test_grow_guard_event);
	return ktest_summary();
}
