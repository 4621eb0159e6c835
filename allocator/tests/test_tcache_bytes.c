/*
 * test_tcache_bytes.c - what a thread cache holds of big classes is bounded
 * by bytes, and a bin its thread stopped using goes back (tcache.c, bin_max
 * and the idle sweep in kp__bin_miss).
 *
 * Issue 14: git's largest process under the preload held 3-6 MiB in its
 * thread caches, bins of 16-128 KiB classes grown during one phase of its
 * work (a random walk of a class: frees and allocations in equal measure)
 * and left holding blocks after it, memory no other class could reuse.
 *
 * 1. A thread walks one 64 KiB class at random (up to 64 blocks live), then
 *    frees them all: its bin holds at most KP_BIN_CLASS_BYTES of them (a
 *    bin of 32 blocks, the bound by a quarter of tcache_bytes, kept 1.9 MiB).
 * 2. A thread walks several 16-48 KiB classes, frees those blocks, and goes on
 *    working with small blocks (16 B-4 KiB) only: after a while the idle bins
 *    hold nothing and are back at their start (they kept 6.6 MiB and their
 *    grown max for the thread's life). A thread that misses very rarely (one
 *    class in a bin of 256) sweeps as rarely: misses are the sweep's clock.
 * 3. A bin in use is not swept: a class used once every 20 operations,
 *    between other classes' misses, keeps its grown max.
 */
#define _GNU_SOURCE 1
/* Tests the thread caches' bins (tcache.c): every pool layout:inline (ktest.h, KT_LAYOUT_INLINE). */
#define KT_LAYOUT_INLINE 1
#include "ktest.h"

#include "internal.h"

#define CONF "primary_initial:8m,daemon:off,backup:0,seed:23"
#define LIVE 64

static kp__tcache *my_cache(kp_pool *pool)
{
	kp__tcache *tc = kp__tls_state.tc[0];
	return tc && kp__tls_state.id[0] == pool->id ? tc : NULL;
}

static unsigned cls_of(size_t req)
{
	return kp__class_of(req + KP_HDR + KP_CANARY);
}

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static unsigned rnd(unsigned n)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return (unsigned)(rng % n);
}

/* ops steps of a random walk over LIVE slots of blocks of size req. */
static void walk(kp_pool *pool, char **slot, size_t req, unsigned ops)
{
	for (unsigned i = 0; i < ops; i++) {
		unsigned k = rnd(LIVE);
		if (slot[k]) {
			kp_free(pool, slot[k]);
			slot[k] = NULL;
		} else {
			slot[k] = kp_alloc(pool, req, 0);
		}
	}
}

static void free_all(kp_pool *pool, char **slot)
{
	for (unsigned k = 0; k < LIVE; k++)
		if (slot[k]) {
			kp_free(pool, slot[k]);
			slot[k] = NULL;
		}
}

static size_t held(const kp__tcache *tc, unsigned cls)
{
	return (size_t)tc->bin[cls].count * kp__class_size[cls];
}

/* One step over 4096 slots of 16 B-4 KiB blocks: free the slot's block or
 * fill the slot (the small classes' bins miss, and sweep, now and then). */
static void small_step(kp_pool *pool, char **small)
{
	unsigned k = rnd(4096);
	if (small[k]) {
		kp_free(pool, small[k]);
		small[k] = NULL;
	} else {
		small[k] = kp_alloc(pool, 16 + rnd(4080), 0);
	}
}

static void test_big_class_bin_bounded_by_bytes(void)
{
	kp_pool *pool = kp_create(CONF);
	REQUIRE(pool, "kp_create: %s", kp_last_error());
	static char *slot[LIVE];
	size_t req = 64000, most = 0;
	unsigned cls = cls_of(req);
	REQUIRE(kp__class_size[cls] == 65536, "a 64 KiB class (%u)", kp__class_size[cls]);
	for (int round = 0; round < 4; round++) {
		walk(pool, slot, req, 4000);
		free_all(pool, slot);
		kp__tcache *tc = my_cache(pool);
		REQUIRE(tc, "the pool's cache is the thread's first");
		size_t h = held(tc, cls);
		most = h > most ? h : most;
		printf("   round %d: bin max %u, holds %u blocks (%zu KiB)\n", round, tc->bin[cls].max,
		       tc->bin[cls].count, h >> 10);
	}
	CHECK(most <= KP_BIN_CLASS_BYTES, "a 64 KiB class's bin held %zu KiB after its blocks were freed", most >> 10);
	kp_destroy(pool);
}

static void test_idle_bins_go_back(void)
{
	kp_pool *pool = kp_create(CONF);
	REQUIRE(pool, "kp_create: %s", kp_last_error());
	static char *slot[LIVE];
	static const size_t big[] = {16000, 20000, 24000, 30000, 40000, 48000};
	unsigned nbig = sizeof big / sizeof big[0];
	for (unsigned j = 0; j < nbig; j++) {
		walk(pool, slot, big[j], 3000);
		free_all(pool, slot);
	}
	kp__tcache *tc = my_cache(pool);
	REQUIRE(tc, "the pool's cache is the thread's first");
	size_t before = 0;
	for (unsigned j = 0; j < nbig; j++)
		before += held(tc, cls_of(big[j]));
	printf("   after the walks: %zu KiB in the big classes' bins\n", before >> 10);
	/* Then small blocks only, of 16 B to 4 KiB, over many slots: the thread
	 * goes on working, and its bins of those classes miss now and then. */
	static char *small[4096];
	for (unsigned i = 0; i < 400000; i++) {
		small_step(pool, small);
	}
	size_t after = 0;
	unsigned grown = 0;
	for (unsigned j = 0; j < nbig; j++) {
		kp__bin *b = &tc->bin[cls_of(big[j])];
		after += held(tc, cls_of(big[j]));
		size_t start = KP_BIN_START_BYTES / kp__class_size[b->cls];
		grown += b->max > (start < KP_BIN_LEAST ? KP_BIN_LEAST : start);
	}
	printf("   after 400K operations of 16 B-4 KiB blocks: %zu KiB, %u bins above their start\n", after >> 10,
	       grown);
	CHECK(before > 0, "the walks left nothing to sweep: the test proves nothing");
	CHECK(after == 0, "idle bins still hold %zu KiB", after >> 10);
	CHECK(grown == 0, "%u idle bins kept their grown max", grown);
	for (unsigned k = 0; k < 4096; k++)
		kp_free(pool, small[k]);
	kp_destroy(pool);
}

static void test_bins_in_use_are_kept(void)
{
	kp_pool *pool = kp_create(CONF);
	REQUIRE(pool, "kp_create: %s", kp_last_error());
	static char *slot[LIVE], *small[4096];
	size_t req = 20000;
	unsigned cls = cls_of(req);
	walk(pool, slot, req, 3000);
	kp__tcache *tc = my_cache(pool);
	REQUIRE(tc, "the pool's cache is the thread's first");
	uint32_t grown_to = tc->bin[cls].max;
	unsigned shrunk = 0;
	/* Small blocks of 16 B-4 KiB (their bins miss, and sweep, now and then)
	 * with a step of the 20 KiB class per 20 of them. */
	for (unsigned i = 0; i < 400000; i++) {
		small_step(pool, small);
		if (i % 20 == 0) {
			walk(pool, slot, req, 1);
			shrunk += tc->bin[cls].max < grown_to / 2;
		}
	}
	printf("   20 KiB bin grown to %u, now %u; %u steps with it below half\n", grown_to, tc->bin[cls].max, shrunk);
	CHECK(grown_to >= 8, "the 20 KiB bin did not grow (%u): the test proves nothing", grown_to);
	CHECK(shrunk < 100, "a bin in use was swept %u times", shrunk);
	free_all(pool, slot);
	for (unsigned k = 0; k < 4096; k++)
		kp_free(pool, small[k]);
	kp_destroy(pool);
}

int main(void)
{
	RUN(test_big_class_bin_bounded_by_bytes);
	RUN(test_idle_bins_go_back);
	RUN(test_bins_in_use_are_kept);
	return ktest_summary();
}
