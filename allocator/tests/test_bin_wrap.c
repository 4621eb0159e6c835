/*
 * test_bin_wrap.c - a bin's decisions at a miss (tcache.c, kp__bin_miss) do
 * not change when its thread's operations of the class pass 2^32.
 *
 * A bin counts its allocations and frees in 64 bits, but its miss logic
 * kept the sum truncated to 32 (ops, beside the 32-bit miss_at and
 * allocs_at of its last miss): past 2^32 operations the truncated sum
 * started again from 0, so the bin was young again (ops < KP_BIN_YOUNG *
 * start) for its next 256 operations: it did not grow, and a refill took a
 * quarter of its max, not half, as a new thread's bin does. Checked: the
 * same miss (a refill after a window of 20 allocations and 20 frees, the
 * last miss a flush: a swing, which grows a mature bin) with the bin's
 * operations just before 2^32, across it, and past 2^33 and 3 * 2^32:
 * the same refill and the same growth each time. The window itself is
 * counted modulo 2^32 (miss_at, allocs_at), which is exact while a window
 * is under 2^32 operations.
 */
#define _GNU_SOURCE 1
/* Tests the thread caches' bins (tcache.c): every pool layout:inline (ktest.h, KT_LAYOUT_INLINE). */
#define KT_LAYOUT_INLINE 1
#include "ktest.h"

#include "internal.h"

#define CONF "primary_initial:4m,daemon:off,backup:0,seed:9"

static kp_pool *pool;

static kp__tcache *my_cache(void)
{
	kp__tcache *tc = kp__tls_state.tc[0];
	return tc && kp__tls_state.id[0] == pool->id ? tc : NULL;
}

/* The miss of a bin whose operations before its window were ops0: the
 * refill it asks for and its max after. */
static void miss_after(uint64_t ops0, unsigned *want, unsigned *max)
{
	*want = *max = 0;
	pool = kp_create(CONF);
	REQUIRE(pool != NULL, "kp_create: %s", kp_last_error());
	void *p = kp_alloc(pool, 3000, 0); /* the thread's cache, another class */
	kp__tcache *tc = my_cache();
	REQUIRE(p && tc, "no cache");
	/* a class of 64 B or less, never used: its bin starts at 16 blocks */
	unsigned cls = 0;
	while (cls < KP_NCLASS && (kp__class_size[cls] < 32 || tc->bin[cls].count))
		cls++;
	REQUIRE(cls < KP_NCLASS && kp__class_size[cls] <= 64, "no small class");
	kp__bin *b = &tc->bin[cls];
	REQUIRE(b->max == KP_BIN_START && b->cap > 2 * KP_BIN_START, "class %u: max %u cap %u", cls, b->max, b->cap);
	uint64_t a0 = ops0 / 2, f0 = ops0 - a0;
	b->allocs_at = (uint32_t)a0;
	b->miss_at = (uint32_t)ops0;
	b->flushed = true; /* the last miss was a flush: this refill is a swing */
	atomic_store(&b->allocs, a0 + 20);
	atomic_store(&b->frees, f0 + 20);
	*want = kp__bin_miss(b);
	*max = b->max;
	atomic_store(&b->allocs, 0);
	atomic_store(&b->frees, 0);
	kp_free(pool, p);
	kp_destroy(pool);
}

static void test_same_miss_across_the_wrap(void)
{
	const uint64_t W = (uint64_t)1 << 32;
	unsigned want0, max0;
	miss_after(W - 100000, &want0, &max0);
	printf("   before 2^32: a refill of %u, max %u\n", want0, max0);
	CHECK(max0 > KP_BIN_START, "the control bin did not grow (max %u): the test's premise", max0);
	const uint64_t at[] = {W - 20, W, W + 5, 2 * W + 100, 3 * W - 30, ((uint64_t)1 << 40) + 7};
	for (unsigned i = 0; i < sizeof at / sizeof at[0]; i++) {
		unsigned want, max;
		miss_after(at[i], &want, &max);
		printf("   %llu operations before the window: a refill of %u, max %u\n", (unsigned long long)at[i],
		       want, max);
		CHECK(want == want0 && max == max0,
		      "after %llu operations: a refill of %u and max %u, not %u and %u (young again at the wrap)",
		      (unsigned long long)at[i], want, max, want0, max0);
	}
}

int main(void)
{
	RUN(test_same_miss_across_the_wrap);
	return ktest_summary();
}
