/*
 * test_free_fast_big.c - kp_free's fast path takes the blocks of every class
 * up to 64 KiB, the 64 KiB class included.
 *
 * The fast path reads where the canary may be from a table of 16-bit
 * offsets (alloc.c, canary_reach); a class whose offsets do not fit takes
 * free_slow and primary_free (the segment's keyed magic and seal, K(h) a
 * second time: about 520 instructions). The table was filled for classes of
 * at most UINT16_MAX bytes, so the 65,536-byte class, whose offsets (65,528
 * at most) fit, was left out: kpbench b (16 B-64 KiB, log-uniform) sent
 * 0.8% of its frees, every request of 61,417-65,512 bytes, through
 * primary_free (callgrind: 5,128 calls of free_slow in 640K frees, 4
 * instructions an operation). Each class of 4 KiB to 64 KiB here, a
 * request at each end of the class and in its middle, freed into a bin with
 * room: none may reach primary_free (tc->slow_frees, owning thread only).
 */
#define _GNU_SOURCE 1
/* Tests the inline fast paths and their slot and grace words (alloc.c, kp__tls): every pool layout:inline (ktest.h, KT_LAYOUT_INLINE). */
#define KT_LAYOUT_INLINE 1
#include "ktest.h"

#include "internal.h"

static void test_big_classes_free_fast(void)
{
	KT_POOL(pool, "primary_initial:16m,daemon:off");
	void *warm = kp_alloc(pool, 16, 0); /* the thread's cache, in the first slot */
	REQUIRE(warm, "alloc");
	kp_free(pool, warm);
	kp__tcache *tc = kp__tls_state.tc[0];
	REQUIRE(tc && tc->pool == pool, "the pool's cache in the first slot");
	unsigned tested = 0;
	for (unsigned c = 1; c < KP_NCLASS && kp__class_size[c] <= 65536; c++) {
		if (kp__class_size[c] < 4096)
			continue;
		size_t lo = kp__class_size[c - 1] - KP_HDR - KP_CANARY + 1, hi = kp__class_size[c] - KP_HDR - KP_CANARY;
		size_t reqs[3] = {lo, lo + (hi - lo) / 2, hi};
		for (unsigned k = 0; k < 3; k++) {
			void *p = kp_alloc(pool, reqs[k], 0);
			REQUIRE(p, "alloc %zu", reqs[k]);
			if (tc->bin[c].count + 1 >= tc->bin[c].max) { /* a full bin takes the slow path by design */
				kp_free(pool, p);
				continue;
			}
			uint64_t before = tc->slow_frees;
			CHECK(kp_free(pool, p) == 0, "free %zu", reqs[k]);
			CHECK(tc->slow_frees == before, "a block of %zu bytes (class %u, %u) went to primary_free",
			      reqs[k], c, kp__class_size[c]);
			tested++;
		}
	}
	CHECK(tested >= 60, "%u frees tested", tested);
	kp_destroy(pool);
}

int main(void)
{
	RUN(test_big_classes_free_fast);
	return ktest_summary();
}
