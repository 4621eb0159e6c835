/*
 * test_seg_guard.c - no allocator metadata is the next bytes after a user
 * block (issue 14, point 4), and no header field a caller can rewrite makes
 * kp_free read outside the block.
 *
 * Normal segments are aligned 4 MiB chunks mapped back to back, each one's
 * header (magic, seal, free mask, span slots, unit_meta, unit_span) in its
 * first unit. An overflow past the last block of one segment rewrote the
 * next one's span slots and unit_meta/unit_span, which neither the magic nor
 * the seal covers (sess16-hA4's attacks: a live neighbour's units freed, a
 * header forged inside a live block accepted). Now each segment's chunk
 * is followed by a read-only guard (KP_SEG_MAP):
 *  - test_guard_unit: the 64 KiB past the chunk are mapped read-only:
 *    every large block of the largest size ends where the guard begins, and a
 *    write there faults (in a child); a pool full of 1 KiB blocks has none in
 *    it;
 *  - test_guard_pointers: pointers into the guard (stale or forged) freed,
 *    sized and reallocated are refused, never a crash;
 *  - test_huge_guard: a huge block's mapping ends in a read-only page, right
 *    after its payload's last page, also once kp_realloc shrank it in place
 *    (the hole it left was where a thread-cache chunk landed, right after the
 *    block: sess16-hA4) or moved it to grow; a write there faults;
 *  - test_req_rewritten: a caller who read its block's header knows K(h)
 *    (tag ^ meta) and can rewrite the request the header holds: kp_free's
 *    fast path read the canary at p + req, SIGSEGV for req 2^40 (on main
 *    before this test; past the capacity, 49 for a 48-byte block, freed).
 *    Now refused, as an integrity error.
 */
#define _GNU_SOURCE 1
/* Tests the inline primary's segments, spans and units (primary.c): every pool layout:inline (ktest.h, KT_LAYOUT_INLINE). */
#define KT_LAYOUT_INLINE 1
#include "ktest.h"

#include "internal.h"

#include "guard_rig5.h" /* write_faults, SEGBASE */

#include <signal.h>
#include <sys/wait.h>

static KT_RAW void raw_copy(void *dst, const void *src, size_t n)
{
	for (size_t i = 0; i < n; i++)
		((volatile char *)dst)[i] = ((const volatile char *)src)[i];
}

/* /proc/self/maps's protection of the page at p ("r--p", "rw-p"), or "". */
static void prot_of(const void *p, char out[5])
{
	strcpy(out, "");
	FILE *f = fopen("/proc/self/maps", "r");
	if (!f)
		return;
	char line[512];
	while (fgets(line, sizeof line, f)) {
		unsigned long lo, hi;
		char perm[5];
		if (sscanf(line, "%lx-%lx %4s", &lo, &hi, perm) == 3 && (uintptr_t)p >= lo && (uintptr_t)p < hi) {
			memcpy(out, perm, 5);
			break;
		}
	}
	fclose(f);
}

static void test_guard_unit(void)
{
	kp_pool *pool = kp_create("primary_initial:8m,daemon:off");
	REQUIRE(pool, "kp_create: %s", kp_last_error());
	size_t req = KP_LARGE_MAX - KP_HDR - KP_CANARY;
	char *big = kp_alloc(pool, req, 0);
	REQUIRE(big, "a block of KP_LARGE_MAX");
	char *guard = SEGBASE(big) + KP_SEG_GUARD * KP_UNIT_SIZE;
	CHECK(big + req + KP_CANARY == guard, "the largest large block ends %td bytes from the guard",
	      guard - (big + req + KP_CANARY));
	char perm[5];
	prot_of(guard, perm);
	CHECK(strcmp(perm, "r--p") == 0, "the guard unit is mapped '%s', not read-only", perm);
	prot_of(guard + KP_UNIT_SIZE - 1, perm);
	CHECK(strcmp(perm, "r--p") == 0, "the guard's last byte is mapped '%s'", perm);
	/* A write at the guard faults: the overflow stops there. */
	CHECK(write_faults(guard), "a write at the guard did not fault");
	kp_free(pool, big);
	/* 1 KiB blocks until 8 MiB are taken: none in a guard unit. */
	static void *b[8192];
	unsigned n = 0, in_guard = 0;
	while (n < 8192 && (b[n] = kp_alloc(pool, 1000, 0)) != NULL) {
		uintptr_t off = (uintptr_t)b[n] & (KP_SEG_SIZE - 1);
		in_guard += off + 1000 > (uintptr_t)KP_SEG_GUARD * KP_UNIT_SIZE;
		n++;
	}
	CHECK(n > 7000, "only %u blocks", n);
	CHECK(in_guard == 0, "%u blocks reach into a guard unit", in_guard);
	for (unsigned i = 0; i < n; i++)
		kp_free(pool, b[i]);
	kp_destroy(pool);
}

static void test_guard_pointers(void)
{
	kp_pool *pool = kp_create("primary_initial:4m,daemon:off");
	REQUIRE(pool, "kp_create: %s", kp_last_error());
	char *p = kp_alloc(pool, 100, 0);
	REQUIRE(p, "alloc");
	char *guard = SEGBASE(p) + KP_SEG_GUARD * KP_UNIT_SIZE;
	unsigned accepted = 0, sized = 0, moved = 0;
	for (size_t off = 0; off < KP_UNIT_SIZE; off += off < 256 ? 16 : 4096 - 16) {
		char *q = guard + off;
		sized += kp_usable_size(pool, q) != 0;
		accepted += kp_free(pool, q) == 0;
		moved += kp_realloc(pool, q, 64, 0) != NULL;
	}
	CHECK(accepted == 0 && sized == 0 && moved == 0, "guard pointers: %u freed, %u sized, %u reallocated", accepted,
	      sized, moved);
	CHECK(kt_stat(pool, "integrity.invalid_frees") + kt_stat(pool, "integrity.corruptions") > 0, "no event");
	CHECK(kp_free(pool, p) == 0, "the live block frees");
	kp_destroy(pool);
}

/* The first page at or past end that is not read-write: read-only, and
 * every page before it from p read-write. */
static bool guard_after(const char *p, size_t req, const char **guard)
{
	char perm[5];
	const char *g = (const char *)(((uintptr_t)p + req + 4095) & ~(uintptr_t)4095);
	for (int i = 0; i < 4; i++, g += 4096) {
		prot_of(g, perm);
		if (strcmp(perm, "rw-p") != 0)
			break;
	}
	*guard = g;
	prot_of(g, perm);
	return strcmp(perm, "r--p") == 0;
}

static void test_huge_guard(void)
{
	kp_pool *pool = kp_create("daemon:off");
	REQUIRE(pool, "kp_create: %s", kp_last_error());
	size_t sizes[] = {(size_t)5 << 20, (size_t)20 << 20, (size_t)9 << 20, (size_t)40 << 20};
	char *p = NULL;
	for (unsigned i = 0; i < 4; i++) {
		char *q = p ? kp_realloc(pool, p, sizes[i], 0) : kp_alloc(pool, sizes[i], 0);
		REQUIRE(q, "huge block of %zu", sizes[i]);
		p = q;
		memset(p, 0x5a, sizes[i]);
		const char *g;
		bool ok = guard_after(p, sizes[i], &g);
		CHECK(ok, "%s to %zu: no read-only page past the payload (the first other page %td bytes past it)",
		      i ? "realloc" : "alloc", sizes[i], g - (p + sizes[i]));
		if (ok)
			CHECK(write_faults(g), "a write at the guard past a block of %zu did not fault", sizes[i]);
	}
	CHECK(kp_free(pool, p) == 0, "free");
	kp_destroy(pool);
}

static void test_req_rewritten(void)
{
	kp_pool *pool = kp_create("daemon:off");
	REQUIRE(pool, "kp_create: %s", kp_last_error());
	static const uint64_t reqs[] = {1ull << 40, 1ull << 30, (uint64_t)5 << 20, 200000, 4096, 49};
	unsigned accepted = 0;
	for (unsigned i = 0; i < sizeof reqs / sizeof reqs[0]; i++) {
		char *p = kp_alloc(pool, 40, 0);
		REQUIRE(p, "alloc");
		char *h = p - KP_HDR;
		uint64_t tag, meta;
		raw_copy(&tag, h, 8);
		raw_copy(&meta, h + 8, 8);
		uint64_t k = tag ^ meta, m2 = (meta & 0xffff) | reqs[i] << 16, t2 = k ^ m2;
		raw_copy(h, &t2, 8);
		raw_copy(h + 8, &m2, 8);
		int rc = kp_free(pool, p);
		accepted += rc == 0;
		CHECK(rc != 0, "a request rewritten to %llu: kp_free returned 0", (unsigned long long)reqs[i]);
	}
	CHECK(accepted == 0, "%u rewritten headers freed", accepted);
	CHECK(kt_stat(pool, "integrity.corruptions") + kt_stat(pool, "integrity.overflows") > 0, "no event");
	kp_destroy(pool);
}

int main(void)
{
	RUN(test_guard_unit);
	RUN(test_guard_pointers);
	RUN(test_huge_guard);
	RUN(test_req_rewritten);
	return ktest_summary();
}
