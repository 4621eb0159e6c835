/*
 * test_huge_purge.c - a freed huge block's kept mapping gives its pages back
 * when the pool grows, and only then.
 *
 * A freed huge block's mapping is kept for the next huge request (no mmap or
 * munmap on the allocation path) and kept every page its block had written
 * until the daemon unmapped it decay_ms later (glibc unmaps at free): a
 * program that frees a big buffer and grows its heap within decay_ms held
 * both. Giving them back 10 ms after every free (branch sess10-hG-hugepurge)
 * cost kpbench f (a block grown by realloc to 16 MiB, freed, again) 6%: its
 * kept mappings faulted in again each round. Checked, with passes driven by
 * kp_daemon_step:
 *   - passes at once and 50 ms after the free, the pool not grown, leave the
 *     pages (the next huge request finds them resident);
 *   - a pass after the pool grew (a segment mapped: the process's memory
 *     grows while the kept pages sit unused) gives them back, and the
 *     mapping stays kept (huge_cached_bytes);
 *   - the kept mapping serves the next huge request without an mmap on the
 *     allocation path, and the block is usable (written and read back);
 *   - a zeroed request on a given-back mapping reads zero.
 */
#define _GNU_SOURCE
/* Tests the grow daemon's growth, front and purge of the inline primary (daemon.c, primary.c; layout:outline's: test_outline_grow.c, test_outline_memory.c): every pool layout:inline (ktest.h, KT_LAYOUT_INLINE). */
#define KT_LAYOUT_INLINE 1
#include "ktest.h"

#include "internal.h"

#define HUGE ((size_t)8 << 20)

static size_t payload_not_resident(const char *p)
{
	/* the payload's pages past its first one (the header's page stays) */
	return kt_not_resident(p + KP_PAGE, HUGE - 2 * KP_PAGE);
}

/* Grow the pool by at least one segment (allocation path: the daemon is off);
 * *n: the blocks to free. */
static void grow_pool(kp_pool *pool, void **blk, unsigned max, unsigned *n)
{
	int64_t grows = kt_stat(pool, "primary.grows");
	for (*n = 0; *n < max && kt_stat(pool, "primary.grows") == grows; ++*n) {
		blk[*n] = kp_alloc(pool, 60000, 0);
		REQUIRE(blk[*n] != NULL, "kp_alloc(60000): %s", kp_last_error());
	}
	REQUIRE(kt_stat(pool, "primary.grows") > grows, "the pool grew after %u blocks", *n);
}

static void test_kept_mapping_gives_its_pages_back_when_the_pool_grows(void)
{
	KT_POOL(pool, "daemon:off,step_clock:on,prefault:off,seed:9");
	size_t pages = (HUGE - 2 * KP_PAGE) / KP_PAGE;
	static void *blk[256];
	char *p = kp_alloc(pool, HUGE, 0);
	REQUIRE(p != NULL, "kp_alloc(8 MiB): %s", kp_last_error());
	memset(p, 0x5a, HUGE);
	CHECK(payload_not_resident(p) == 0, "written, %zu pages not resident", payload_not_resident(p));
	REQUIRE(kp_free(pool, p) == KP_OK, "kp_free");
	int64_t kept = kt_stat(pool, "primary.huge_cached_bytes");
	REQUIRE(kept >= (int64_t)HUGE, "the mapping is kept: %lld bytes", (long long)kept);

	kp_daemon_step(pool, 0);
	CHECK(payload_not_resident(p) == 0, "a pass at once gave back %zu of %zu pages", payload_not_resident(p),
	      pages);
	kp_daemon_step(pool, 50);
	CHECK(payload_not_resident(p) == 0, "a pass 50 ms later, the pool not grown, gave back %zu of %zu pages",
	      payload_not_resident(p), pages);

	unsigned n;
	grow_pool(pool, blk, 256, &n);
	kp_daemon_step(pool, 1);
	CHECK(payload_not_resident(p) >= pages - 1, "after the pool grew, %zu of %zu pages given back",
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
	kp_daemon_step(pool, 1);
	CHECK(payload_not_resident(q) == 0, "freed again, the pool not grown since: %zu pages given back",
	      payload_not_resident(q));
	CHECK(kt_stat(pool, "integrity.corruptions") == 0, "no corruption reported");
	kp_destroy(pool);
}

/* A kept mapping given back is reused for a zeroed request: it reads zero
 * (calloc through the preload). */
static void test_zeroed_request_on_a_given_back_mapping(void)
{
	KT_POOL(pool, "daemon:off,step_clock:on,prefault:off,seed:9");
	static void *blk[256];
	char *p = kp_alloc(pool, HUGE, 0);
	REQUIRE(p != NULL, "kp_alloc: %s", kp_last_error());
	memset(p, 0x77, HUGE);
	REQUIRE(kp_free(pool, p) == KP_OK, "kp_free");
	unsigned n;
	grow_pool(pool, blk, 256, &n);
	kp_daemon_step(pool, 1);
	char *q = kp_alloc(pool, HUGE - 4096, KP_ZERO);
	REQUIRE(q != NULL, "kp_alloc(KP_ZERO): %s", kp_last_error());
	size_t bad = 0;
	for (size_t i = 0; i < HUGE - 4096; i += 512)
		bad += q[i] != 0;
	CHECK(bad == 0, "%zu sampled bytes not zero", bad);
	kp_free(pool, q);
	for (unsigned i = 0; i < n; i++)
		kp_free(pool, blk[i]);
	kp_destroy(pool);
}

int main(void)
{
	RUN(test_kept_mapping_gives_its_pages_back_when_the_pool_grows);
	RUN(test_zeroed_request_on_a_given_back_mapping);
	return ktest_summary();
}
