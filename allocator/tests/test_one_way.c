/*
 * test_one_way.c - a one-way bin moves whole batches (tcache.c,
 * kp__bin_miss): a thread that only allocates a class refills its bin to
 * its max, a thread that only frees it flushes all but one block, so a
 * producer and a consumer take a class lock about once per max blocks, not
 * once per max / 2 (issue 14: prodcons under the preload made 830K refills
 * and 806K flushes for 2M allocations, 2.5 blocks per lock).
 *
 * The main thread allocates N blocks of one class, counting its refills
 * (its bin's count rising across an allocation); a second thread frees
 * them, counting its flushes (its bin's count falling across a free). A
 * bin that stays at its start (16 blocks of an 80-byte class: one-way bins
 * do not grow) moving half batches makes 125 of each per 1000 blocks. And
 * a bin whose thread allocates and frees the class in equal measure still
 * moves half batches (a full refill would overflow at its next free),
 * once it is past its young first operations (KP_BIN_YOUNG per block of its
 * start: a quarter then).
 */
#define _GNU_SOURCE 1
/* Tests the thread caches' bins (tcache.c): every pool layout:inline (ktest.h, KT_LAYOUT_INLINE). */
#define KT_LAYOUT_INLINE 1
#include "ktest.h"

#include "internal.h"

#include <pthread.h>

#define CONF "primary_initial:8m,daemon:off,backup:0,seed:17"
#define REQ 48 /* an 80-byte class: a bin starts at 16 blocks (KP_BIN_START) */
#define N 4000
/* Per 1000 blocks: whole batches of 16 make 63 (1000 / 16) and a few for
 * the first half batch; half batches 125. */
#define MOVES_PER_1000 75

static kp_pool *g_pool;
static char *g_blk[N];
static unsigned g_flushes;

static kp__bin *my_bin(kp_pool *pool)
{
	kp__tcache *tc = kp__tls_state.tc[0];
	if (!tc || kp__tls_state.id[0] != pool->id)
		return NULL;
	return &tc->bin[kp__class_of(REQ + KP_HDR + KP_CANARY)];
}

static void *consumer(void *arg)
{
	(void)arg;
	for (int i = 0; i < N; i++) {
		kp__bin *b = my_bin(g_pool);
		unsigned before = b ? b->count : 0;
		if (kp_free(g_pool, g_blk[i]) != 0)
			return (void *)1;
		b = my_bin(g_pool);
		if (b && b->count < before)
			g_flushes++;
	}
	return NULL;
}

static void test_producer_and_consumer_move_whole_batches(void)
{
	kp_pool *pool = kp_create(CONF);
	REQUIRE(pool, "kp_create: %s", kp_last_error());
	g_pool = pool;
	unsigned refills = 0;
	for (int i = 0; i < N; i++) {
		kp__bin *b = my_bin(pool);
		unsigned before = b ? b->count : 0;
		g_blk[i] = kp_alloc(pool, REQ, 0);
		REQUIRE(g_blk[i], "alloc %d", i);
		b = my_bin(pool);
		REQUIRE(b, "the pool's cache is the thread's first");
		if (b->count >= before)
			refills++;
	}
	pthread_t t;
	void *rc;
	REQUIRE(pthread_create(&t, NULL, consumer, NULL) == 0, "pthread_create");
	pthread_join(t, &rc);
	CHECK(rc == NULL, "the frees of the consumer");
	CHECK(refills * 1000 / N <= MOVES_PER_1000, "producer: %u refills for %d blocks", refills, N);
	CHECK(g_flushes * 1000 / N <= MOVES_PER_1000, "consumer: %u flushes for %d blocks", g_flushes, N);
	CHECK(kt_stat(pool, "integrity.freelist_errors") == 0, "no false alarm");
	kp_destroy(pool);
}

/* Allocations and frees of the class interleaved (rounds of 3 and 2, the
 * live count climbing to 200, then of 2 and 3 back down, twice): every
 * window between two misses of the bin goes both ways, so each refill
 * takes half the bin's max (a full one would overflow within a few frees). */
static void test_two_way_bin_moves_half(void)
{
	kp_pool *pool = kp_create(CONF);
	REQUIRE(pool, "kp_create: %s", kp_last_error());
	static char *live[256];
	unsigned n = 0, bad = 0, refills = 0;
	for (int round = 0; round < 400; round++) {
		bool up = (round / 100) % 2 == 0;
		unsigned na = up ? 3 : 2, nf = up ? 2 : 3;
		for (unsigned k = 0; k < na; k++) {
			kp__bin *b = my_bin(pool);
			unsigned before = b ? b->count : 0;
			uint64_t ops = b ? b->allocs + b->frees : 0;
			live[n] = kp_alloc(pool, REQ, 0);
			REQUIRE(live[n], "alloc");
			n++;
			b = my_bin(pool);
			if (before == 0 && round > 0) {
				/* a young bin (KP_BIN_YOUNG) takes a quarter of its start */
				bool young = ops < KP_BIN_YOUNG * b->max;
				unsigned want = young ? b->max / 4 : b->max / 2;
				refills += !young;
				bad += b->count + 1 != want;
			}
		}
		for (unsigned k = 0; k < nf && n; k++)
			CHECK(kp_free(pool, live[--n]) == 0, "free");
	}
	CHECK(refills > 0, "no refill to look at");
	CHECK(bad == 0, "%u of %u refills of a two-way bin did not take half its max", bad, refills);
	while (n)
		kp_free(pool, live[--n]);
	kp_destroy(pool);
}

int main(void)
{
	RUN(test_producer_and_consumer_move_whole_batches);
	RUN(test_two_way_bin_moves_half);
	return ktest_summary();
}
