/*
 * test_outline_meta_color.c - the segments' metadata (each segment's
 * ol_seg with its span records, then its spans' stacks and block records:
 * outline.c, segment_map) starts at a different offset in each segment's
 * mapping, so that the same structures of different segments do not share
 * a level-2 cache set (outline.h, OL_META_COLORS).
 *
 * Before (s33), every metadata mapping of a pool sat at the same address
 * modulo 1 MiB (mmap placed the 4 MiB + 2 pages mappings between the 4
 * MiB-aligned data segments: 0x...fff000, a page below each), so the span
 * records, stacks and block records of 20 segments fell into the same sets
 * of an 8-way 1 MiB L2. kpbench b under callgrind's cache simulation (D1
 * 32 KiB 8-way, L2 1 MiB 8-way, per kp_alloc + kp_free and the loop around
 * them): 2.65 L2 read misses, 1.67 with a 64-way L2 of the same size
 * (tcmalloc: 1.49 and 1.45), 1.77 now; kp_free's load of a block's record
 * alone 796,000 misses in kpbench b --ops 1000000 (2.1 M operations with
 * its warm-up and latency pass) against 119,000 at 64 ways and 135,000
 * now (tests/test_cache_lines.py has the bound).
 *
 * Checked, the daemon off: 24 segments' metadata mappings take at least 16
 * of the OL_META_COLORS offsets (the pages of 128 KiB: an L2 set of 1 MiB
 * and 8 ways every 128 KiB), and every block of them stays usable (written
 * whole at its ends, freed).
 */
#define _GNU_SOURCE 1
#include "ktest.h"
#include "outline.h"

static void test_segments_metadata_spread_over_cache_sets(void)
{
	KT_POOL(pool, "layout:outline,daemon:off,prefault:off,seed:3");
	REQUIRE(pool->ol != NULL, "an outline pool");
	/* 60 KiB blocks (the 64 KiB class): 64 a segment, 24 segments' worth;
	 * only the pages of each block's ends are touched */
	enum { SEGS = 24, N = SEGS * 64, SIZE = 60 << 10 };
	static void *p[N];
	for (unsigned i = 0; i < N; i++) {
		p[i] = kp_alloc(pool, SIZE, 0);
		REQUIRE(p[i] != NULL, "kp_alloc %u: %s", i, kp_last_error());
		((unsigned char *)p[i])[0] = (unsigned char)i;
		((unsigned char *)p[i])[SIZE - 1] = (unsigned char)i;
	}
	bool seen[OL_META_COLORS] = {0};
	unsigned nseg = 0, colors = 0;
	pthread_mutex_lock(&pool->ol->lock);
	for (struct ol_seg *s = pool->ol->segs; s; s = s->next, nseg++) {
		unsigned c = (unsigned)(((uintptr_t)s >> 12) % OL_META_COLORS);
		colors += !seen[c];
		seen[c] = true;
	}
	pthread_mutex_unlock(&pool->ol->lock);
	printf("   %u segments: their metadata at %u of %u page offsets modulo %u KiB\n", nseg, colors,
	       (unsigned)OL_META_COLORS, (unsigned)(OL_META_COLORS * 4));
	CHECK(nseg >= SEGS, "%u segments for %u blocks of %u KiB", nseg, (unsigned)N, (unsigned)(SIZE >> 10));
	CHECK(colors >= 16, "the metadata of %u segments at %u page offsets modulo %u KiB", nseg, colors,
	      (unsigned)(OL_META_COLORS * 4));
	for (unsigned i = 0; i < N; i++) {
		CHECK(((unsigned char *)p[i])[0] == (unsigned char)i &&
			      ((unsigned char *)p[i])[SIZE - 1] == (unsigned char)i,
		      "block %u kept", i);
		REQUIRE(kp_free(pool, p[i]) == KP_OK, "kp_free %u", i);
	}
	kp_destroy(pool);
}

int main(void)
{
	RUN(test_segments_metadata_spread_over_cache_sets);
	return ktest_summary();
}
