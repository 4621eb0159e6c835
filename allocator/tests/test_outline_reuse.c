/*
 * test_outline_reuse.c - how soon a thread's freed blocks are handed out
 * again under kpbench b's pattern (10,000 slots of 16 B-64 KiB, log-uniform;
 * each step frees a random slot and allocates into it): the share of
 * allocations that return a block freed within the last 256 steps. A block
 * reused soon is a block whose lines (its record, its stack entry, its
 * first and last bytes) are still in the caches; one freed long ago misses
 * on each (issue 14: b's gap to tcmalloc is cache misses, not
 * instructions; tests/test_cache_lines.py).
 *
 * A span's stack hands out its latest free first, but only the span in
 * hand of a class is popped: a free into another of the class's spans waits
 * until that span is in hand. s35 (outline.c, OL_SPAN_BLOCKS): spans of
 * classes over 2 KiB sized for 64 blocks (32 before), so fewer spans a
 * class: 40.0% -> 44.3% here (through the preload and malloc, the same
 * pattern: 38.5% -> 42.9%; tcmalloc 74.1%, jemalloc 71.2%, glibc 45.2%,
 * mimalloc 8.7%). The bound lies between main's and this.
 */
#define _GNU_SOURCE 1
#include "ktest.h"
#include "outline.h"

enum {
	SLOTS = 10000,	     /* kpbench b's live blocks */
	STEPS = 400000,	     /* enough for the share to settle (+-0.3% from 200k on) */
	WARM = STEPS / 10,   /* kpbench's warm-up: the spans of each class made */
	NEAR = 256,	     /* "soon": a block freed within these many steps */
	HBITS = 17,	     /* the table of freed addresses: 128k entries, for ~30k blocks */
	BOUND_PERMILLE = 420 /* main 47b37d0: 400 (fails); s35: 443 */
};

static uintptr_t hkey[1u << HBITS];
static uint32_t hstep[1u << HBITS]; /* the step that freed the block (0: live or never freed) */

static uint32_t *step_of(uintptr_t a)
{
	uint32_t i = (uint32_t)((a >> 4) * 0x9E3779B97F4A7C15ull >> (64 - HBITS));
	while (hkey[i] && hkey[i] != a)
		i = (i + 1) & ((1u << HBITS) - 1);
	hkey[i] = a;
	return &hstep[i];
}

static void test_freed_blocks_come_back_soon(void)
{
	KT_POOL(pool, "layout:outline,daemon:off,seed:35");
	REQUIRE(pool->ol != NULL, "an outline pool");
	static void *slot[SLOTS];
	uint64_t seed = 35;
	for (unsigned i = 0; i < SLOTS; i++) {
		slot[i] = kp_alloc(pool, kt_rand_log(&seed, 16, OL_SMALL_MAX - OL_CANARY), 0);
		REQUIRE(slot[i] != NULL, "kp_alloc: %s", kp_last_error());
	}
	unsigned near = 0, counted = 0;
	for (uint32_t t = 1; t <= STEPS; t++) {
		uint32_t i = (uint32_t)(kt_rand(&seed) % SLOTS);
		*step_of((uintptr_t)slot[i]) = t;
		REQUIRE(kp_free(pool, slot[i]) == KP_OK, "kp_free");
		slot[i] = kp_alloc(pool, kt_rand_log(&seed, 16, OL_SMALL_MAX - OL_CANARY), 0);
		REQUIRE(slot[i] != NULL, "kp_alloc: %s", kp_last_error());
		uint32_t *f = step_of((uintptr_t)slot[i]);
		if (t > WARM) {
			counted++;
			near += *f && t - *f <= NEAR;
		}
		*f = 0;
	}
	printf("   %u allocations: %.1f%% return a block freed within %d steps\n", counted, 100.0 * near / counted,
	       NEAR);
	CHECK((uint64_t)near * 1000 >= (uint64_t)counted * BOUND_PERMILLE,
	      "%.1f%% of the allocations reuse a block freed within %d steps, under %.1f%%", 100.0 * near / counted,
	      NEAR, BOUND_PERMILLE / 10.0);
	for (unsigned i = 0; i < SLOTS; i++)
		REQUIRE(kp_free(pool, slot[i]) == KP_OK, "kp_free");
	kp_destroy(pool);
}

int main(void)
{
	RUN(test_freed_blocks_come_back_soon);
	return ktest_summary();
}
