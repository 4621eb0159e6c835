/*
 * test_huge_outgrown.c - the kept huge mappings a growing program has
 * outgrown are given back when it maps a bigger one (huge.c,
 * huge_cache_missed), and those it asks for again stay kept.
 *
 * A freed huge block's mapping is kept (at most four) for the next request
 * it fits with at most half to spare. A program growing a buffer (a new
 * block half as big again, the old one copied and freed) never asks again
 * for a size it freed: its kept mappings held every page their blocks wrote
 * until the daemon saw the pool grow or decay_ms passed, four generations
 * of the buffer (CPython's test_unicode under the preload: a peak 14 MiB
 * above the same run with the cache compiled out). Checked, the daemon off
 * (no pass gives anything back):
 *   - growing a buffer from 5 MiB by half each step to 25 MiB, after each
 *     free the cache keeps at most the block just freed, by its count
 *     (huge_cached_bytes) and by the resident pages (mincore) of the blocks
 *     freed before it;
 *   - the last one freed serves a request of its size without an mmap;
 *   - a program alternating a 3 MiB and an 8 MiB block makes no mmap or
 *     munmap on the allocation path once both are kept.
 */
#define _GNU_SOURCE
#include "ktest.h"

#include "internal.h"

#define MIB ((size_t)1 << 20)
#define STEPS 4 /* 5 MiB grown to 7.5, 11.25, 16.9, 25.3: each under KP_HUGE_CACHE_MAX (32 MiB), so each is kept */

/* Resident bytes of [p, p + n) outside [live, live + live_n): a mapping
 * given back may be mapped again for the live block. */
static size_t resident_outside(const char *p, size_t n, const char *live, size_t live_n)
{
	size_t res = 0;
	for (size_t off = 0; off < n; off += KP_PAGE) {
		const char *pg = p + off;
		if (pg >= live && pg < live + live_n)
			continue;
		res += kt_not_resident(pg, KP_PAGE) == 0 ? KP_PAGE : 0;
	}
	return res;
}

static void test_growing_buffer_keeps_one_generation(void)
{
	KT_POOL(pool, "daemon:off,prefault:off,seed:9");
	char *freed[STEPS];
	size_t freed_n[STEPS];
	size_t size = 5 * MIB;
	char *cur = kp_alloc(pool, size, 0);
	REQUIRE(cur != NULL, "kp_alloc(%zu): %s", size, kp_last_error());
	memset(cur, 0x11, size);
	for (unsigned i = 0; i < STEPS; i++) {
		size_t next_n = size + size / 2;
		char *next = kp_alloc(pool, next_n, 0);
		REQUIRE(next != NULL, "kp_alloc(%zu): %s", next_n, kp_last_error());
		memcpy(next, cur, size); /* the copy, then the new part written */
		memset(next + size, 0x22, next_n - size);
		REQUIRE(kp_free(pool, cur) == KP_OK, "kp_free");
		freed[i] = cur;
		freed_n[i] = size;
		int64_t kept = kt_stat(pool, "primary.huge_cached_bytes");
		/* the block just freed, its mapping's header pages and guard */
		int64_t most = (int64_t)(size + 4 * KP_PAGE);
		CHECK(kept <= most, "step %u (%zu MiB live): %lld bytes kept, more than the %zu just freed", i,
		      next_n >> 20, (long long)kept, size);
		size_t older = 0;
		for (unsigned j = 0; j < i; j++)
			older += resident_outside(freed[j], freed_n[j], next, next_n);
		CHECK(older <= 4 * KP_PAGE, "step %u: %zu KiB of blocks freed before the last one still resident", i,
		      older >> 10);
		cur = next;
		size = next_n;
	}
	REQUIRE(kp_free(pool, cur) == KP_OK, "kp_free");
	int64_t mmaps = kt_stat(pool, "syscalls.alloc.mmap");
	char *again = kp_alloc(pool, size, 0);
	REQUIRE(again != NULL, "kp_alloc(%zu) again: %s", size, kp_last_error());
	CHECK(again == cur, "the last block's kept mapping serves its size again (%p, was %p)", (void *)again,
	      (void *)cur);
	CHECK(kt_stat(pool, "syscalls.alloc.mmap") == mmaps, "no mmap on the allocation path");
	kt_fill(again, size, 5);
	CHECK(kt_verify(again, size, 5) == KT_OK, "the reused block keeps what was written");
	REQUIRE(kp_free(pool, again) == KP_OK, "kp_free");
	CHECK(kt_stat(pool, "integrity.corruptions") == 0, "no corruption reported");
	kp_destroy(pool);
}

static void test_two_sizes_alternating_stay_kept(void)
{
	KT_POOL(pool, "daemon:off,prefault:off,seed:9");
	static const size_t sizes[2] = {3 * MIB, 8 * MIB};
	int64_t mmaps = 0, munmaps = 0;
	for (unsigned round = 0; round < 12; round++) {
		if (round == 2) {
			mmaps = kt_stat(pool, "syscalls.alloc.mmap");
			munmaps = kt_stat(pool, "syscalls.alloc.munmap");
		}
		for (unsigned k = 0; k < 2; k++) {
			char *p = kp_alloc(pool, sizes[k], 0);
			REQUIRE(p != NULL, "kp_alloc(%zu): %s", sizes[k], kp_last_error());
			p[0] = p[sizes[k] - 1] = (char)round;
			REQUIRE(kp_free(pool, p) == KP_OK, "kp_free");
		}
	}
	CHECK(kt_stat(pool, "syscalls.alloc.mmap") == mmaps, "%lld mmaps in 10 rounds once both were kept",
	      (long long)(kt_stat(pool, "syscalls.alloc.mmap") - mmaps));
	CHECK(kt_stat(pool, "syscalls.alloc.munmap") == munmaps, "%lld munmaps in 10 rounds once both were kept",
	      (long long)(kt_stat(pool, "syscalls.alloc.munmap") - munmaps));
	kp_destroy(pool);
}

int main(void)
{
	RUN(test_growing_buffer_keeps_one_generation);
	RUN(test_two_sizes_alternating_stay_kept);
	return ktest_summary();
}
