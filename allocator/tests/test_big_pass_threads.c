/*
 * test_big_pass_threads.c - while a pool has two or more threads' caches,
 * blocks of classes of KP_BIN_BIG (4 KiB) and more pass through no thread's
 * bin: a free gives the block back to its span, an allocation takes one
 * (tcache.c, kp__bin_miss; alloc.c). A thread alone caches them as before.
 *
 * Issue 14 (peak RSS within 1.1x the best peer): git pack-objects under the
 * preload peaked at 18.2-18.5 MiB against glibc's 16.0 (its own run, medians
 * of 9-15 alternated runs, session 22). At its peak (the delta search: two
 * threads walking blocks of 4-128 KiB, and the main thread's cache) its
 * bins held 1.0-1.9 MiB, almost all of classes of 4 KiB and more, 1-8
 * blocks of each of some 20 classes in each thread; a block in one thread's
 * bin serves no other thread, and no other class. With no thread cache at
 * all it peaked at 17.3-17.7 MiB; with big blocks passing through (this)
 * 17,524 KiB against 18,268 (1.10x glibc).
 *
 * A thread walks LIVE blocks of 4-64 KiB at random while a second thread
 * holds a cache of its own: its bins of classes of 4 KiB and more hold no
 * block at any point (2,271 KiB at most on main). Once the second thread has
 * ended, a block of such a class freed goes to the thread's bin again.
 */
#define _GNU_SOURCE 1
/* Tests the thread caches' bins (tcache.c): every pool layout:inline (ktest.h, KT_LAYOUT_INLINE). */
#define KT_LAYOUT_INLINE 1
#include "ktest.h"

#include <pthread.h>

#include "internal.h"

#define CONF "daemon:off,backup:0,seed:47"
#define LIVE 400
#define STEPS 100000

static kp_pool *pool;
static pthread_mutex_t gate = PTHREAD_MUTEX_INITIALIZER;

static uint64_t rnext(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

static void *other(void *arg)
{
	(void)arg;
	kp_free(pool, kp_alloc(pool, 64, 0)); /* a cache of its own */
	pthread_mutex_lock(&gate);	      /* held until the walk is done */
	pthread_mutex_unlock(&gate);
	return NULL;
}

/* Bytes this thread's bins hold in classes of KP_BIN_BIG and more. */
static size_t big_held(const kp__tcache *tc)
{
	size_t n = 0;
	for (unsigned c = 0; c < KP_NCLASS; c++)
		if (kp__class_size[c] >= KP_BIN_BIG)
			n += (size_t)tc->bin[c].count * kp__class_size[c];
	return n;
}

static size_t walk_size(uint64_t *s)
{
	return 4096 + rnext(s) % (65536 - 4096);
}

static void test_big_blocks_pass_through_with_two_caches(void)
{
	pool = kp_create(CONF);
	REQUIRE(pool, "kp_create: %s", kp_last_error());
	pthread_mutex_lock(&gate);
	pthread_t t;
	REQUIRE(pthread_create(&t, NULL, other, NULL) == 0, "pthread_create");
	kp_free(pool, kp_alloc(pool, 64, 0));
	while (atomic_load(&pool->tc_live) < 2)
		sched_yield();
	kp__tcache *tc = kp__tls_state.tc[0];
	REQUIRE(tc && tc->pool == pool, "the pool's cache in the first slot");
	static char *slot[LIVE];
	uint64_t s = 0x9e3779b97f4a7c15ull;
	for (unsigned i = 0; i < LIVE; i++) {
		slot[i] = kp_alloc(pool, walk_size(&s), 0);
		REQUIRE(slot[i], "alloc");
		memset(slot[i], 0x5a, 64);
	}
	size_t held_max = 0;
	for (unsigned k = 0; k < STEPS; k++) {
		unsigned i = (unsigned)(rnext(&s) % LIVE);
		REQUIRE(kp_free(pool, slot[i]) == 0, "kp_free: %s", kp_last_error());
		size_t held = big_held(tc);
		held_max = held > held_max ? held : held_max;
		slot[i] = kp_alloc(pool, walk_size(&s), 0);
		REQUIRE(slot[i], "alloc");
		memset(slot[i], 0x5a, 64);
	}
	printf("   two caches: bins of 4 KiB classes and up held %zu KiB at most\n", held_max >> 10);
	CHECK(held_max == 0, "bins of classes of 4 KiB and more held %zu KiB with two caches", held_max >> 10);

	/* the second thread ends: a thread alone caches big blocks again */
	pthread_mutex_unlock(&gate);
	pthread_join(t, NULL);
	while (atomic_load(&pool->tc_live) > 1)
		sched_yield();
	for (unsigned i = 0; i < LIVE; i++) {
		kp_free(pool, slot[i]);
		slot[i] = kp_alloc(pool, walk_size(&s), 0);
		REQUIRE(slot[i], "alloc");
	}
	size_t alone = 0;
	for (unsigned k = 0; k < 1000; k++) {
		unsigned i = (unsigned)(rnext(&s) % LIVE);
		kp_free(pool, slot[i]);
		size_t held = big_held(tc);
		alone = held > alone ? held : alone;
		slot[i] = kp_alloc(pool, walk_size(&s), 0);
		REQUIRE(slot[i], "alloc");
	}
	printf("   one cache: bins of 4 KiB classes and up held %zu KiB at most\n", alone >> 10);
	CHECK(alone > 0, "a thread alone cached no big block");
	for (unsigned i = 0; i < LIVE; i++)
		kp_free(pool, slot[i]);
	kp_destroy(pool);
}

int main(void)
{
	RUN(test_big_blocks_pass_through_with_two_caches);
	return ktest_summary();
}
