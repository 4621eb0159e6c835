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
 */
#define _GNU_SOURCE 1
#include "ktest.h"

#include "internal.h"

#include <sys/mman.h>

#define CONF "layout:outline,daemon:off,seed:9"

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
	return ktest_summary();
}
