/*
 * test_pool_pages_outline.c - a single-threaded program's pool keeps one
 * page of its own structure resident on the default layout (kp_pool, 872
 * KiB of address space; the page of its settings, its pointers and its
 * tail: internal.h).
 *
 * Issue 14, small programs under the preload (bench-small-objects, s33):
 * the pool's structure had 3 pages resident on layout:outline, whose small
 * blocks never take the inline primary's central lists: the first (the
 * settings), the second (the central lists' class locks, initialised one
 * by one at kp_create: 4.8 KiB of them) and the page of the tail (the
 * daemon, the backup's state, the system-call counts, the counters), apart
 * from the first since the transfer arrays grew between them.
 *
 * 1. One thread allocates and frees blocks of a dozen small classes, and
 *    reads the stats: at most 1 page of the pool's structure is resident.
 * 2. The same thread's pool keeps 2 pages resident for its structure, the
 *    outline layout's (kp__ol) and its heap: kp__ol had a mapping of its
 *    own, a page for 1.3 KiB (3 pages before s33); it shares the heap
 *    arena's first page with the first heap now.
 */
#define _GNU_SOURCE 1
#include "ktest.h"

#include "internal.h"
#include "outline.h"

#include <sys/mman.h>

#define CONF "layout:outline,daemon:off,seed:9"

/* Resident pages of [p, p + n), page-rounded outward, those already in seen
 * not counted again (at most 8 pages remembered). */
static unsigned resident_new(const void *p, size_t n, uintptr_t *seen, unsigned *nseen)
{
	uintptr_t a = (uintptr_t)p & ~(uintptr_t)(KP_PAGE - 1),
		  b = ((uintptr_t)p + n + KP_PAGE - 1) & ~(uintptr_t)(KP_PAGE - 1);
	unsigned k = 0;
	for (; a < b; a += KP_PAGE) {
		unsigned char v = 0;
		bool dup = false;
		for (unsigned i = 0; i < *nseen; i++)
			dup |= seen[i] == a;
		if (dup || mincore((void *)a, KP_PAGE, &v) != 0 || !(v & 1))
			continue;
		if (*nseen < 8)
			seen[(*nseen)++] = a;
		k++;
	}
	return k;
}

static void test_pool_and_heap_pages(void)
{
	kp_pool *pool = kp_create(CONF);
	REQUIRE(pool, "kp_create: %s", kp_last_error());
	REQUIRE(pool->ol != NULL, "not layout:outline");
	for (unsigned c = 0; c < 12; c++)
		kp_free(pool, kp_alloc(pool, 8 + 24 * c, 0));
	uintptr_t seen[8];
	unsigned nseen = 0;
	unsigned n = resident_new(pool, sizeof *pool, seen, &nseen);
	n += resident_new(pool->ol, sizeof *pool->ol, seen, &nseen);
	REQUIRE(pool->ol->heaps != NULL && pool->ol->heaps->next == NULL, "one heap");
	n += resident_new(pool->ol->heaps, sizeof(struct ol_heap), seen, &nseen);
	printf("   the pool's, the layout's and the heap's structures: %u pages resident\n", n);
	CHECK(n <= 2, "%u pages resident for the pool's, the layout's and the heap's structures", n);
	kp_destroy(pool);
}

static void test_single_thread_pool_pages(void)
{
	kp_pool *pool = kp_create(CONF);
	REQUIRE(pool, "kp_create: %s", kp_last_error());
	REQUIRE(pool->ol != NULL, "not layout:outline");
	static void *b[64];
	for (int round = 0; round < 200; round++)
		for (unsigned c = 0; c < 12; c++) {
			for (unsigned i = 0; i < 64; i++)
				REQUIRE((b[i] = kp_alloc(pool, 8 + 24 * c, 0)) != NULL, "alloc");
			for (unsigned i = 0; i < 64; i++)
				kp_free(pool, b[i]);
		}
	size_t len = (pool->self_size + KP_PAGE - 1) & ~(size_t)(KP_PAGE - 1);
	static unsigned char vec[(1u << 20) / KP_PAGE];
	REQUIRE(len / KP_PAGE <= sizeof vec && mincore(pool, len, vec) == 0, "mincore");
	unsigned n = 0;
	char at[256] = "";
	for (size_t i = 0; i < len / KP_PAGE; i++)
		if (vec[i] & 1) {
			n++;
			snprintf(at + strlen(at), sizeof at - strlen(at), " %zu", i);
		}
	printf("   the pool's structure: %u of %zu pages resident (pages%s)\n", n, len / KP_PAGE, at);
	CHECK(n <= 1, "%u pages of the pool's structure resident", n);
	/* (after mincore: the stats read every class's central list, zero
	 * pages that mincore counts and the RSS does not) */
	CHECK(kt_stat(pool, "primary.allocs") > 0, "stats: no allocation counted");
	kp_destroy(pool);
}

int main(void)
{
	RUN(test_single_thread_pool_pages);
	RUN(test_pool_and_heap_pages);
	return ktest_summary();
}
