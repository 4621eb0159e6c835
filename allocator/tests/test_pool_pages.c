/*
 * test_pool_pages.c - a single-threaded program's pool keeps few pages of
 * its own structure resident (kp_pool, 800 KiB of address space: internal.h
 * keeps what every program touches together).
 *
 * Issue 14, small programs under the preload (bench-small-objects): the
 * pool's structure had 4 pages resident, its first two (the settings, the
 * central lists), the page of its tail (counters, daemon, the event ring's
 * head) and, between the transfer cache's arrays and that tail, a page for
 * transfer.c's per-class counts alone: every refill that finds no batch
 * parked counts one there, in every program.
 *
 * 1. One thread allocates and frees blocks of a dozen small classes (its
 *    bins refill and flush, and each refill looks for a parked batch): at
 *    most 3 pages of the pool's structure are resident (4 on main).
 */
#define _GNU_SOURCE 1
/* Tests the inline primary's segments, spans and units (primary.c): every pool layout:inline (ktest.h, KT_LAYOUT_INLINE). */
#define KT_LAYOUT_INLINE 1
#include "ktest.h"

#include "internal.h"

#include <sys/mman.h>

#define CONF "primary_initial:4m,daemon:off,backup:0,seed:9"

static void test_single_thread_pool_pages(void)
{
	kp_pool *pool = kp_create(CONF);
	REQUIRE(pool, "kp_create: %s", kp_last_error());
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
	CHECK(n <= 3, "%u pages of the pool's structure resident", n);
	/* (after mincore: the stats read every class's counts, a page more) */
	CHECK(kt_stat(pool, "transfer.empty") > 0, "no refill looked for a parked batch");
	kp_destroy(pool);
}

int main(void)
{
	RUN(test_single_thread_pool_pages);
	return ktest_summary();
}
