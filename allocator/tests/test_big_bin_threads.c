/*
 * test_big_bin_threads.c - a pool's threads share the bound of a big class's
 * bin (tcache.c, shared_bin_bound): with n threads' caches, a bin of a class of
 * KP_BIN_BIG bytes or more grows to KP_BIN_CLASS_BYTES / n at most.
 *
 * git pack-objects under the preload: its three threads each walk classes of
 * 18-74 KiB (delta buffers) and their bins grew to 256 KiB of each, 1.5-3.1
 * MiB over the threads at its peak (git's peak RSS 1.2x glibc's).
 *
 * A thread alone walks a 20 KiB class at random and frees its blocks: its bin
 * grows past a quarter of KP_BIN_CLASS_BYTES (12 blocks). The same with four
 * threads' caches in the pool: its bin's max and what it holds after the
 * frees are at most a quarter of KP_BIN_CLASS_BYTES (it grew to 12 blocks and
 * held 8, 160 KiB, before big_bin_bound).
 */
#define _GNU_SOURCE 1
/* Tests the thread caches' bins (tcache.c): every pool layout:inline (ktest.h, KT_LAYOUT_INLINE). */
#define KT_LAYOUT_INLINE 1
#include "ktest.h"

#include "internal.h"

#include <pthread.h>

static kp__tcache *my_cache(kp_pool *pool)
{
	kp__tcache *tc = kp__tls_state.tc[0];
	return tc && kp__tls_state.id[0] == pool->id ? tc : NULL;
}

static unsigned cls_of(size_t req)
{
	return kp__class_of(req + KP_HDR + KP_CANARY);
}

static pthread_barrier_t held_open;

static void *other_thread(void *arg)
{
	kp_pool *pool = arg;
	kp_free(pool, kp_alloc(pool, 64, 0)); /* a cache of its own */
	pthread_barrier_wait(&held_open);     /* made */
	pthread_barrier_wait(&held_open);     /* the walk is over */
	return NULL;
}

static void walk_and_free(kp_pool *pool, size_t req, unsigned *max, unsigned *count)
{
	static char *slot[64];
	uint64_t rng = 0x2545f4914f6cdd1dull;
	for (int i = 0; i < 6000; i++) {
		rng ^= rng << 13;
		rng ^= rng >> 7;
		rng ^= rng << 17;
		unsigned k = (unsigned)(rng % 64);
		if (slot[k]) {
			kp_free(pool, slot[k]);
			slot[k] = NULL;
		} else {
			slot[k] = kp_alloc(pool, req, 0);
			REQUIRE(slot[k], "kp_alloc(%zu) in the walk", req);
		}
	}
	for (int k = 0; k < 64; k++) {
		kp_free(pool, slot[k]);
		slot[k] = NULL;
	}
	kp__tcache *tc = my_cache(pool);
	REQUIRE(tc, "the pool's cache is the thread's first");
	unsigned cls = cls_of(req);
	*max = tc->bin[cls].max;
	*count = tc->bin[cls].count;
}

static void test_threads_share_big_bound(void)
{
	size_t req = 20000;
	unsigned cls = cls_of(req), max_alone = 0, max_four = 0, alone = 0, four = 0;
	kp_pool *pool = kp_create("primary_initial:16m,daemon:off,backup:0,seed:37");
	REQUIRE(pool, "kp_create: %s", kp_last_error());
	walk_and_free(pool, req, &max_alone, &alone);
	kp_destroy(pool);
	pool = kp_create("primary_initial:16m,daemon:off,backup:0,seed:37");
	REQUIRE(pool, "kp_create: %s", kp_last_error());
	pthread_t t[3];
	pthread_barrier_init(&held_open, NULL, 4);
	for (int i = 0; i < 3; i++)
		REQUIRE(pthread_create(&t[i], NULL, other_thread, pool) == 0, "pthread_create");
	pthread_barrier_wait(&held_open);
	walk_and_free(pool, req, &max_four, &four);
	size_t live = atomic_load(&pool->tc_live);
	pthread_barrier_wait(&held_open);
	for (int i = 0; i < 3; i++)
		pthread_join(t[i], NULL);
	pthread_barrier_destroy(&held_open);
	kp_destroy(pool);
	size_t bytes = (size_t)four * kp__class_size[cls], bound = KP_BIN_CLASS_BYTES / 4;
	printf("   20 KiB bin: alone max %u, holds %u; with %zu caches max %u, holds %u (%zu KiB, bound %zu KiB)\n",
	       max_alone, alone, live, max_four, four, bytes >> 10, bound >> 10);
	CHECK(live == 4, "%zu caches in the pool, not 4: the test proves nothing", live);
	CHECK(max_alone * kp__class_size[cls] > bound,
	      "a thread alone's bin stayed at %u blocks: the test proves nothing", max_alone);
	CHECK(bytes <= bound, "with four threads' caches a 20 KiB bin holds %zu KiB after its blocks were freed",
	      bytes >> 10);
	CHECK((size_t)max_four * kp__class_size[cls] <= bound, "and its max grew to %u blocks", max_four);
}

int main(void)
{
	RUN(test_threads_share_big_bound);
	return ktest_summary();
}
