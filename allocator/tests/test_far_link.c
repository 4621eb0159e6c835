/*
 * test_far_link.c - a thread cache's free-list link that leaves its block's
 * segment is followed only into a normal segment of the same pool.
 *
 * The allocation fast path takes a link within the block's own segment at
 * once; any other goes to alloc_far, which asks the pagemap (its entry's
 * pool tag, kp__pagemap_owns) instead of reading the segment's header. Whoever
 * reads a free block's header knows K(h), so it can encode any pointer in
 * that block's link (the pad is derived from K(h)). Three such links here:
 * into a block of another pool, into a huge block of the same pool, and
 * into memory no pool maps (followed, the next allocation would read its
 * header there and crash). All must be refused (a free-list event, the bin
 * set aside), and no later allocation may return the target.
 */
#define _GNU_SOURCE 1
/* Tests the inline primary's segments, spans and units (primary.c): every pool layout:inline (ktest.h, KT_LAYOUT_INLINE). */
#define KT_LAYOUT_INLINE 1
#include "ktest.h"

#include "internal.h"

#include <sys/mman.h>

#define SIZE 64

/* Free two blocks of pool (the second freed heads the bin, its link leads
 * to the first), then rewrite the head's link to target, encoded with the
 * pad its header gives away. Allocate: the target must never come back. */
static void redirect_and_allocate(kp_pool *pool, char *target, const char *what)
{
	/* Warm the thread's cache and grace record: the fast paths. */
	void *w = kp_alloc(pool, SIZE, 0);
	REQUIRE(w, "alloc");
	kp_free(pool, w);
	char *x = kp_alloc(pool, SIZE, 0), *y = kp_alloc(pool, SIZE, 0);
	REQUIRE(x && y, "alloc");
	CHECK(kp_free(pool, y) == 0 && kp_free(pool, x) == 0, "free");
	char *h = x - KP_HDR;
	uint64_t key = kt_raw_get(h) ^ kt_raw_get(h + 8);
	kt_raw_put(x, (uint64_t)(uintptr_t)target ^ kp__link_pad(key));
	int64_t before = kt_stat(pool, "integrity.freelist_errors");
	unsigned got_target = 0;
	void *more[64];
	for (int i = 0; i < 64; i++) {
		more[i] = kp_alloc(pool, SIZE, 0);
		got_target += more[i] && (char *)more[i] == target + KP_HDR;
	}
	CHECK(got_target == 0, "%s: an allocation returned the link's target %p", what, (void *)(target + KP_HDR));
	CHECK(kt_stat(pool, "integrity.freelist_errors") > before, "%s: no free-list event", what);
	for (int i = 0; i < 64; i++)
		if (more[i] && (char *)more[i] != target + KP_HDR)
			kp_free(pool, more[i]);
}

static void test_link_into_another_pool(void)
{
	kp_pool *a = kp_create("primary_initial:4m,daemon:off");
	kp_pool *b = kp_create("primary_initial:4m,daemon:off");
	REQUIRE(a && b, "kp_create: %s", kp_last_error());
	char *pb = kp_alloc(b, SIZE, 0); /* a live block of the other pool */
	REQUIRE(pb, "alloc");
	redirect_and_allocate(a, pb - KP_HDR, "a link into another pool's block");
	CHECK(kp_free(b, pb) == 0, "the other pool's block is intact");
	kp_destroy(a);
	kp_destroy(b);
}

static void test_link_into_a_huge_block(void)
{
	kp_pool *a = kp_create("primary_initial:4m,daemon:off");
	REQUIRE(a, "kp_create: %s", kp_last_error());
	size_t hsize = 2 * KP_SEG_SIZE; /* past the large runs: a huge segment */
	char *big = kp_alloc(a, hsize, 0);
	REQUIRE(big, "huge alloc");
	/* A header-like address inside it, past the first unit of its chunk. */
	char *t = (char *)(((uintptr_t)big + KP_SEG_SIZE) & ~(uintptr_t)(KP_SEG_SIZE - 1)) + KP_UNIT_SIZE;
	REQUIRE(t + 64 < big + hsize, "the target lies inside the huge block");
	redirect_and_allocate(a, t, "a link into a huge block");
	CHECK(kp_free(a, big) == 0, "the huge block is intact");
	kp_destroy(a);
}

/* Mapped by nobody: a reservation released at once. */
static void test_link_into_unmapped_memory(void)
{
	kp_pool *a = kp_create("primary_initial:4m,daemon:off");
	REQUIRE(a, "kp_create: %s", kp_last_error());
	size_t n = 2 * KP_SEG_SIZE;
	char *r = mmap(NULL, n, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	REQUIRE(r != MAP_FAILED, "mmap");
	char *t = (char *)(((uintptr_t)r + KP_SEG_SIZE - 1) & ~(uintptr_t)(KP_SEG_SIZE - 1)) + KP_UNIT_SIZE;
	munmap(r, n);
	redirect_and_allocate(a, t, "a link into unmapped memory");
	kp_destroy(a);
}

int main(void)
{
	RUN(test_link_into_another_pool);
	RUN(test_link_into_a_huge_block);
	RUN(test_link_into_unmapped_memory);
	return ktest_summary();
}
