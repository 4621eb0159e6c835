/*
 * test_destroy_links_attack4.c - FAILING (sess16-hA4): kp_destroy follows
 * a normal segment's next link unchecked (primary.c,
 * kp__primary_release_all): a link rewritten by an overflow into the
 * segment's header makes kp_destroy of one pool release another pool's
 * live segments (their blocks unmapped under their owner, kp_free of them
 * refused), or crash.
 *
 * Every other walk of the segment list vets each link (seg_step: the
 * pagemap must say the address is a segment of this pool); the teardown
 * walk does not, nor does it check the magic of what it reaches. The
 * attacker of test_forgery.c overflows past its big block in segment A
 * into segment B's header, keeps the magic and seal, and sets B's next:
 *   - test_destroy_other_pool: to a segment of a second pool that holds a
 *     live block V: kp_destroy(first pool) takes V's segment out of the
 *     pagemap and unmaps it; the second pool's owner then finds V gone
 *     (mincore: ENOMEM) and kp_free(second pool, V) refused;
 *   - test_destroy_crash: to 0x1000: kp_destroy dies of SIGSEGV.
 *
 * Build and run (from the repository root):
 *   make -C allocator VARIANT=release build/release/tests/attack4/test_destroy_links_attack4 &&
 *     allocator/build/release/tests/attack4/test_destroy_links_attack4
 *   (VARIANT=asan: the same with asan in both paths)
 */
#define _GNU_SOURCE 1
#include "seg_rig.h"

static void set_next(rig *r, void *next)
{
	unsigned char hdr[sizeof(kp__seg)];
	size_t n = offsetof(kp__seg, next) + sizeof(void *);
	rig_hdr_read(r, hdr, n);
	memcpy(hdr + offsetof(kp__seg, next), &next, sizeof next);
	rig_hdr_write(r, hdr, n);
}

static void test_destroy_other_pool(void)
{
	kp_pool *p2 = kp_create("primary_initial:4m,backup:1m,daemon:off");
	REQUIRE(p2, "second pool");
	char *V = kp_alloc(p2, 5000, 0);
	REQUIRE(V, "V");
	memset(V, 0x56, 5000);
	rig r;
	if (!rig_open(&r, "primary_initial:16m,primary_max:16m,backup:1m,daemon:off")) {
		printf("   no two segments back to back (skipped)\n");
		return;
	}
	kp__seg *vseg = kp__pagemap_get(V);
	set_next(&r, vseg);
	kp_destroy(r.pool);
	unsigned char vec;
	int gone = mincore((void *)((uintptr_t)V & ~(uintptr_t)(KP_PAGE - 1)), KP_PAGE, &vec) != 0 && errno == ENOMEM;
	int rc = kp_free(p2, V); /* the pagemap only: V's memory is not read */
	printf("   after kp_destroy(first pool): the second pool's live V %s; kp_free(second, V) = %d\n",
	       gone ? "is unmapped" : "is mapped", rc);
	CHECK(!gone, "kp_destroy of one pool unmapped another pool's live block");
	CHECK(rc == 0, "the second pool refused its own live block (rc %d)", rc);
}

static void test_destroy_crash(void)
{
	rig r;
	if (!rig_open(&r, "primary_initial:16m,primary_max:16m,backup:1m,daemon:off")) {
		printf("   no two segments back to back (skipped)\n");
		return;
	}
	set_next(&r, (void *)0x1000);
	kp_destroy(r.pool); /* SIGSEGV here before a fix */
	CHECK(1, "survived");
}

int main(void)
{
	RUN(test_destroy_other_pool);
	RUN(test_destroy_crash);
	return ktest_summary();
}
