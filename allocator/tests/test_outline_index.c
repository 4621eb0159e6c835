/*
 * test_outline_index.c - kp__ol_index (outline.h), kp_free's block index on
 * layout:outline by exact division (an odd inverse and a rotation, s25-off),
 * against the division it replaced: for every multiple of 16 up to 64 KiB
 * as a block size (the classes among them), every offset of a span of 32
 * blocks and more and the bytes past it gives the block's index when the
 * offset is a block start, the sentinel's at the span's end, and a number
 * past the span's last index for any other offset: an interior pointer is
 * never taken for a block. Then offsets from all of 64 bits (a pointer
 * below the span's start, or far past it). And through the API: a free of
 * each interior offset of a block is refused, the block stays live; and
 * so is a free of a pointer whose slice number aliases the block's in
 * kp_free's masked map lookup (2^47 and more past it). And kp_alloc's
 * class of a request past the table (kp__ol_class_big, s29-fast: no mask)
 * against the formula it had, for every size up to 64 KiB. And the slice
 * map's nil span (s32-fast): an empty entry refuses every index.
 */
#define _GNU_SOURCE 1
#include "ktest.h"
#include "outline.h"

/* An xorshift for the wide offsets. */
static uint64_t next_rand(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

static void test_index_matches_division(void)
{
	uint64_t seed = 0x9e3779b97f4a7c15ull, bad = 0, checked = 0;
	for (uint32_t bs = 16; bs <= 65536; bs += 16) {
		struct ol_span pg = {0};
		pg.bsize = bs;
		pg.rot = (uint8_t)__builtin_ctz(bs);
		pg.inv = kp__ol_inverse(bs >> pg.rot);
		/* as span_new: 32 blocks at least, whole 64 KiB slices */
		uint32_t nsl = (uint32_t)((32ul * bs + OL_SLICE_SIZE - 1) / OL_SLICE_SIZE);
		pg.nblocks = (uint32_t)(nsl * OL_SLICE_SIZE / bs);
		pg.lim = (uint64_t)pg.nblocks + 1;
		uint64_t end = (uint64_t)nsl * OL_SLICE_SIZE + 2 * (uint64_t)bs;
		/* every offset for the small sizes, an odd stride for the rest,
		 * and each start's neighbours */
		uint64_t step = bs <= 256 ? 1 : (bs / 64) | 1;
		for (uint64_t off = 0; off < end; off += step) {
			uint64_t q = kp__ol_index(&pg, off);
			bool start = off % bs == 0 && off / bs <= pg.nblocks;
			bad += start ? q != off / bs : q < pg.lim;
			checked++;
		}
		for (uint32_t i = 1; i <= pg.nblocks + 1; i++)
			for (uint64_t d = 1; d < 16; d++) {
				uint64_t lo = (uint64_t)i * bs - d, hi = (uint64_t)i * bs + d;
				bad += (kp__ol_index(&pg, lo) < pg.lim) + (kp__ol_index(&pg, hi) < pg.lim);
				checked += 2;
			}
		for (uint32_t i = 0; i <= pg.nblocks; i++) /* each start, whatever the stride */
			bad += kp__ol_index(&pg, (uint64_t)i * bs) != i;
		for (int k = 0; k < 20000; k++) {
			uint64_t off = next_rand(&seed);
			uint64_t q = kp__ol_index(&pg, off);
			bool start = off % bs == 0 && off / bs <= pg.nblocks;
			bad += start ? q != off / bs : q < pg.lim;
			checked++;
		}
	}
	CHECK(bad == 0, "%llu of %llu offsets given a wrong index", (unsigned long long)bad,
	      (unsigned long long)checked);
}

static void test_interior_frees_refused(void)
{
	static const size_t reqs[] = {8, 40, 100, 300, 1000, 3000, 20000, 60000};
	for (int checks = 0; checks < 2; checks++) {
		kp_pool *pool =
			kp_create(checks ? "layout:outline,daemon:off" : "layout:outline,checks:off,daemon:off");
		REQUIRE(pool != NULL, "kp_create: %s", kp_last_error());
		for (size_t k = 0; k < sizeof reqs / sizeof reqs[0]; k++) {
			char *p = kp_alloc(pool, reqs[k], 0);
			REQUIRE(p != NULL, "kp_alloc(%zu)", reqs[k]);
			size_t u = kp_usable_size(pool, p);
			for (size_t d = 1; d < u; d += d < 64 ? 1 : 61)
				CHECK(kp_free(pool, p + d) != 0, "checks %d: free of %zu-byte block + %zu taken",
				      checks, reqs[k], d);
			CHECK(kp_usable_size(pool, p) == u, "checks %d: the %zu-byte block not live after", checks,
			      reqs[k]);
			CHECK(kp_free(pool, p) == 0, "checks %d: free of the %zu-byte block", checks, reqs[k]);
		}
		kp_destroy(pool);
	}
}

/* kp_free masks a pointer's slice number (outline.h, kp__ol_free_check):
 * a pointer 2^47 and more past a live block finds its span through the
 * alias. It must be refused as any pointer past the map is (the same
 * code), the block left live. */
static void test_alias_frees_refused(void)
{
	static const size_t reqs[] = {8, 100, 1000, 20000};
	static const uint64_t adds[] = {1ull << 47, 1ull << 48, 3ull << 47, 1ull << 63, 0xffff800000000000ull};
	for (int checks = 0; checks < 2; checks++) {
		kp_pool *pool =
			kp_create(checks ? "layout:outline,daemon:off" : "layout:outline,checks:off,daemon:off");
		REQUIRE(pool != NULL, "kp_create: %s", kp_last_error());
		char *first = kp_alloc(pool, 8, 0); /* the slot names the pool from here */
		REQUIRE(first != NULL, "kp_alloc(8)");
		/* past the map, the alias of slice 0: no span */
		int far = kp_free(pool, (void *)((1ull << 47) + 16));
		CHECK(far != 0, "checks %d: free of 2^47 + 16 taken", checks);
		for (size_t k = 0; k < sizeof reqs / sizeof reqs[0]; k++) {
			char *p = kp_alloc(pool, reqs[k], 0);
			REQUIRE(p != NULL, "kp_alloc(%zu)", reqs[k]);
			size_t u = kp_usable_size(pool, p);
			for (size_t j = 0; j < sizeof adds / sizeof adds[0]; j++) {
				void *alias = (void *)((uintptr_t)p + adds[j]);
				int rc = kp_free(pool, alias);
				CHECK(rc == far, "checks %d: free of the %zu-byte block + %#llx: %d, not %d", checks,
				      reqs[k], (unsigned long long)adds[j], rc, far);
			}
			CHECK(kp_usable_size(pool, p) == u, "checks %d: the %zu-byte block not live after", checks,
			      reqs[k]);
			CHECK(kp_free(pool, p) == 0, "checks %d: free of the %zu-byte block", checks, reqs[k]);
		}
		CHECK(kp_free(pool, first) == 0, "checks %d: free of the first block", checks);
		kp_destroy(pool);
	}
}

/* The slice map's empty entry (0) names the nil span (outline.h,
 * kp__ol_map_nil, s32-fast): the map's own first 64 bytes, or the empty
 * slot's kp__ol_no_map, whose lim 0 refuses every index kp_free computes
 * there, so that kp_free takes no branch for a pointer the map does not
 * know. Each is all zero; and through the API a free of pointers in
 * slices with no span (near a block, below the first segments, the empty
 * slot's) is refused with the pool's answer for a pointer it never gave
 * out, the blocks left live. */
static void test_nil_span_refuses(void)
{
	uintptr_t *none_map = kp__ol_no_map;
	__asm__("" : "+r"(none_map)); /* as kp_free sees it: the slot's map, not the 64-byte array */
	CHECK(kp__ol_map_nil(none_map, 0)->lim == 0, "the empty slot's nil span: lim %llu",
	      (unsigned long long)kp__ol_map_nil(none_map, 0)->lim);
	for (int checks = 0; checks < 2; checks++) {
		kp_pool *pool =
			kp_create(checks ? "layout:outline,daemon:off" : "layout:outline,checks:off,daemon:off");
		REQUIRE(pool != NULL, "kp_create: %s", kp_last_error());
		/* before the slot names the pool: its empty map */
		static char data[64];
		int none = kp_free(pool, data + 16);
		CHECK(none != 0, "checks %d: free of a data pointer taken (empty slot)", checks);
		char *p = kp_alloc(pool, 100, 0);
		REQUIRE(p != NULL, "kp_alloc(100)");
		uintptr_t *map = pool->ol->map;
		const struct ol_span *nil = kp__ol_map_nil(map, 0);
		const uint8_t *b = (const uint8_t *)nil;
		int nonzero = 0;
		for (int i = 0; i < 64; i++)
			nonzero += b[i] != 0;
		CHECK(nonzero == 0 && nil->lim == 0, "checks %d: the map's nil span has %d bytes set", checks, nonzero);
		for (uint64_t off = 0; off < (1u << 20); off += 4096 + 16)
			CHECK(kp__ol_index(nil, off) >= nil->lim, "checks %d: nil span index of %#llx", checks,
			      (unsigned long long)off);
		static const uintptr_t ptrs[] = {16, 4096, 65536 + 32, (8u << 16) - 16};
		for (size_t k = 0; k < sizeof ptrs / sizeof ptrs[0]; k++)
			CHECK(kp_free(pool, (void *)ptrs[k]) == none, "checks %d: free of %#lx: not refused as %d",
			      checks, (unsigned long)ptrs[k], none);
		CHECK(kp_free(pool, data + 16) == none, "checks %d: free of a data pointer", checks);
		CHECK(kp_usable_size(pool, p) >= 100, "checks %d: the block not live after", checks);
		CHECK(kp_free(pool, p) == 0, "checks %d: free of the block", checks);
		kp_destroy(pool);
	}
}

/* kp__ol_class_big against its earlier form (24 + 8 per doubling past
 * 1 KiB + the 3 bits below the top one; + 1 past OL_CLASS_PAGE_PLUS, the
 * class off the grid), n = 1025..64 KiB. */
static void test_class_big_matches_formula(void)
{
	uint32_t bad = 0;
	for (size_t n = 1025; n <= OL_SMALL_MAX; n++) {
		size_t m = n - 1;
		uint32_t b = 63u - (uint32_t)__builtin_clzl(m);
		uint32_t want = 24u + (b - 10) * 8 + (uint32_t)((m >> (b - 3)) & 7) + (n > OL_CLASS_PAGE_PLUS);
		if (kp__ol_class_big(n) != want && bad++ < 5)
			CHECK(0, "kp__ol_class_big(%zu) = %u, not %u", n, kp__ol_class_big(n), want);
	}
	CHECK(bad == 0, "%u sizes in the wrong class", bad);
	CHECK(kp__ol_class_big(OL_SMALL_MAX) == OL_NCLASS - 1, "64 KiB: class %u", kp__ol_class_big(OL_SMALL_MAX));
}

int main(void)
{
	RUN(test_index_matches_division);
	RUN(test_interior_frees_refused);
	RUN(test_alias_frees_refused);
	RUN(test_class_big_matches_formula);
	RUN(test_nil_span_refuses);
	return ktest_summary();
}
