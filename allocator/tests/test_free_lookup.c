/*
 * test_free_lookup.c - kp_free's fast path asks the pagemap whether a pointer
 * lies in a normal segment of the pool (kp__pagemap_is_normal, internal.h)
 * before it reads a byte near it, and takes nothing else on trust.
 *
 * The lookup takes no separate test of the 47-bit user address space: the
 * root index is masked, so a pointer past it indexes the entry of some
 * chunk below it, and only the comparison of the entry with the pointer's
 * own chunk (entry == chunk | tag) refuses it. A pointer that differs from
 * a live block's only in bits 47 and up indexes that block's own segment:
 * the worst case. Each is refused with an invalid_free event, not read: a
 * read at such an address (non-canonical, or the kernel's half) faults, so a
 * lookup that trusted the tag bits alone crashes this test. The same for a
 * pointer into the pool's huge block's second chunk (an entry that holds the
 * huge segment's address, no tag), and into another pool's segment.
 */
#define _GNU_SOURCE 1
/* Tests the inline fast paths and their slot and grace words (alloc.c, kp__tls): every pool layout:inline (ktest.h, KT_LAYOUT_INLINE). */
#define KT_LAYOUT_INLINE 1
#include "ktest.h"

#include "internal.h"

#define SIZE 64

static void refused(kp_pool *pool, void *bad, const char *what)
{
	int64_t before = kt_stat(pool, "integrity.invalid_frees");
	int rc = kp_free(pool, bad);
	CHECK(rc == KP_ENOTOURS, "%s (%p): kp_free returned %d", what, bad, rc);
	CHECK(kt_stat(pool, "integrity.invalid_frees") == before + 1, "%s: no invalid_free counted", what);
}

static void test_aliases_of_a_live_block(void)
{
	kp_pool *pool = kp_create("primary_initial:4m,daemon:off,backup:0");
	kp_pool *other = kp_create("primary_initial:4m,daemon:off,backup:0");
	REQUIRE(pool && other, "kp_create: %s", kp_last_error());
	char *theirs = kp_alloc(other, SIZE, 0);
	REQUIRE(theirs, "alloc");
	/* The thread's first free takes the slow path (it registers the thread's
	 * grace record), and so does a free to a pool other than the one it used
	 * last (its cache slot): warm up, so that the attempts below meet the
	 * fast path. */
	void *w = kp_alloc(pool, SIZE, 0);
	REQUIRE(w, "alloc");
	CHECK(kp_free(pool, w) == 0, "free");
	char *p = kp_alloc(pool, SIZE, 0);
	REQUIRE(p, "alloc");
	static const unsigned bits[] = {47, 48, 56, 63};
	for (size_t i = 0; i < sizeof bits / sizeof bits[0]; i++) {
		char what[64];
		snprintf(what, sizeof what, "a live block's address with bit %u set", bits[i]);
		refused(pool, (void *)((uintptr_t)p | (uintptr_t)1 << bits[i]), what);
	}
	/* Every bit from 47 up: p's chunk index modulo the root's size again. */
	refused(pool, (void *)((uintptr_t)p | ~(((uintptr_t)1 << KP_VA_BITS) - 1)), "p with bits 47-63 set");
	refused(pool, theirs, "another pool's live block");

	size_t hsize = 2 * KP_SEG_SIZE; /* past the large runs: a huge segment */
	char *big = kp_alloc(pool, hsize, 0);
	REQUIRE(big, "huge alloc");
	char *t = (char *)(((uintptr_t)big + KP_SEG_SIZE) & ~(uintptr_t)(KP_SEG_SIZE - 1)) + KP_UNIT_SIZE + KP_HDR;
	REQUIRE(t + SIZE < big + hsize, "the target lies inside the huge block");
	refused(pool, t, "a header-like address in the huge block's second chunk");

	CHECK(kp_free(pool, p) == 0, "the live block still frees");
	CHECK(kp_free(pool, big) == 0, "the huge block still frees");
	CHECK(kp_free(other, theirs) == 0, "the other pool's block still frees");
	kp_events_drain(pool, NULL, 0);
	kp_destroy(pool);
	kp_destroy(other);
}

int main(void)
{
	RUN(test_aliases_of_a_live_block);
	return ktest_summary();
}
