/*
 * test_outline_huge_purge.c - in a layout:outline pool, a freed huge block's
 * kept mapping gives its pages back once the heaps grew (took segments),
 * as test_huge_purge checks for the inline primary's growth.
 *
 * A freed huge block's mapping is kept, every page its block wrote still
 * resident, until the daemon unmaps it decay_ms later, or gives its pages
 * back once the pool grew since the free (huge.c, kp__huge_cache_trim).
 * "Grew" was the inline primary's segment count (pool->grows) alone, which
 * a layout:outline pool's small blocks never move: sqlite3 under the
 * preload grows a buffer by realloc to 8 MiB, frees it, and then its page
 * cache takes 14 MiB of 4 KiB blocks in new segments, the 8 MiB mapping
 * resident beside them until its decay (peak 47.7 MiB against 43.3 when
 * the decay came first; glibc 37.5). Checked, with passes driven by
 * kp_daemon_step:
 *   - passes at once and 50 ms after the free, the heaps not grown, leave
 *     the pages (the next huge request finds them resident);
 *   - a pass after the heaps took new segments gives them back, and the
 *     mapping stays kept;
 *   - the kept mapping then serves the next huge request, no mmap on the
 *     allocation path, and the block is usable.
 * Failed on main 741539f: after the heaps took 3 segments, 0 of 2,046 pages
 * given back.
 */
#define _GNU_SOURCE
#include "ktest.h"

#include "outline.h"

#define HUGE ((size_t)8 << 20)
#define BLOCK 4000
#define MAXB 8192

static size_t payload_not_resident(const char *p)
{
	/* the payload's pages past its first one (the header's page stays) */
	return kt_not_resident(p + KP_PAGE, HUGE - 2 * KP_PAGE);
}

static void test_kept_mapping_gives_its_pages_back_when_the_heaps_grow(void)
{
	KT_POOL(pool, "layout:outline,daemon:off,step_clock:on,prefault:off,seed:9");
	REQUIRE(pool->ol != NULL, "a layout:outline pool");
	size_t pages = (HUGE - 2 * KP_PAGE) / KP_PAGE;
	static void *blk[MAXB];
	char *p = kp_alloc(pool, HUGE, 0);
	REQUIRE(p != NULL, "kp_alloc(8 MiB): %s", kp_last_error());
	memset(p, 0x5a, HUGE);
	REQUIRE(kp_free(pool, p) == KP_OK, "kp_free");
	int64_t kept = kt_stat(pool, "primary.huge_cached_bytes");
	REQUIRE(kept >= (int64_t)HUGE, "the mapping is kept: %lld bytes", (long long)kept);

	kp_daemon_step(pool, 0);
	CHECK(payload_not_resident(p) == 0, "a pass at once gave back %zu of %zu pages", payload_not_resident(p),
	      pages);
	/* small blocks freed and taken again: no new segment */
	for (unsigned i = 0; i < 64; i++)
		blk[i] = kp_alloc(pool, BLOCK, 0);
	for (unsigned i = 0; i < 64; i++)
		kp_free(pool, blk[i]);
	kp_daemon_step(pool, 50);
	CHECK(payload_not_resident(p) == 0, "a pass 50 ms later, no segment taken, gave back %zu of %zu pages",
	      payload_not_resident(p), pages);

	/* the heaps grow: 3 segments taken (12 MiB of blocks, written) */
	uint64_t taken = atomic_load(&pool->ol->taken);
	unsigned n = 0;
	while (n < MAXB && atomic_load(&pool->ol->taken) < taken + 3) {
		blk[n] = kp_alloc(pool, BLOCK, 0);
		REQUIRE(blk[n] != NULL, "kp_alloc(%d): %s", BLOCK, kp_last_error());
		memset(blk[n++], 1, BLOCK);
	}
	REQUIRE(atomic_load(&pool->ol->taken) >= taken + 3, "3 segments taken after %u blocks", n);
	kp_daemon_step(pool, 1);
	CHECK(payload_not_resident(p) >= pages - 1, "after the heaps took 3 segments, %zu of %zu pages given back",
	      payload_not_resident(p), pages);
	CHECK(kt_stat(pool, "primary.huge_cached_bytes") == kept, "the mapping stays kept");
	for (unsigned i = 0; i < n; i++)
		kp_free(pool, blk[i]);

	int64_t mmaps = kt_stat(pool, "syscalls.alloc.mmap");
	char *q = kp_alloc(pool, HUGE, 0);
	REQUIRE(q != NULL, "kp_alloc(8 MiB) again: %s", kp_last_error());
	CHECK(q == p, "the kept mapping serves it (%p, was %p)", (void *)q, (void *)p);
	CHECK(kt_stat(pool, "syscalls.alloc.mmap") == mmaps, "no mmap on the allocation path");
	kt_fill(q, HUGE, 3);
	CHECK(kt_verify(q, HUGE, 3) == KT_OK, "the reused block keeps what was written");
	REQUIRE(kp_free(pool, q) == KP_OK, "kp_free");
	CHECK(kt_stat(pool, "integrity.corruptions") == 0, "no corruption reported");
	kp_destroy(pool);
}

int main(void)
{
	RUN(test_kept_mapping_gives_its_pages_back_when_the_heaps_grow);
	return ktest_summary();
}
