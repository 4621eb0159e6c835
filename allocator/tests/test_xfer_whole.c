/*
 * test_xfer_whole.c - a batch between threads moves whole, in one step
 * (tcache.c, kp__tcache_flush_bin with KP_FLUSH_WHOLE; alloc.c, small_alloc's
 * refill up to the bin's max).
 *
 * 1. A thread that only frees a class (blocks another thread allocated, as
 *    a server's consumer does) parks its whole bin when it overflows: every
 *    block of it in one batch, and the bin holds only the block being
 *    freed. Before, the flush kept one block and walked the other 15, one
 *    dependent header load after another, to cut the list.
 * 2. The next thread whose bin of the class runs empty takes that batch,
 *    bigger than the half its refill wants but within its max, instead of
 *    leaving it parked and carving blocks from the spans (kpbench c with
 *    bins of 64: 48K such refills in 10M operations, and as many flushes
 *    that found the slots full and went to the spans).
 * 3. The blocks come back good: no integrity event is raised.
 */
#define _GNU_SOURCE 1
/* Tests the transfer cache and central lists (transfer.c, tcache.c): every pool layout:inline (ktest.h, KT_LAYOUT_INLINE). */
#define KT_LAYOUT_INLINE 1
#include "ktest.h"

#include "internal.h"

#include <pthread.h>

#include "kt_worker.h"

#define CONF "primary_initial:8m,daemon:off,backup:0,seed:31"
#define REQ 40 /* a class of 64-byte blocks: a bin starts at 16 */
#define N 17

static kp_pool *pool;
static char *blocks[N];
static unsigned cls;

static kp__tcache *my_cache(void)
{
	kp__tcache *tc = kp__tls_state.tc[0];
	return tc && kp__tls_state.id[0] == pool->id ? tc : NULL;
}

static unsigned parked(unsigned *n)
{
	unsigned k = atomic_load(&pool->central[cls].nxfer);
	*n = k ? kp__xfer_slot(pool, cls, k - 1)->n : 0;
	return k;
}

static void *producer(void *arg)
{
	(void)arg;
	for (unsigned i = 0; i < N; i++) {
		blocks[i] = kp_alloc(pool, REQ, 0);
		if (blocks[i])
			memset(blocks[i], 0x5a, REQ);
	}
	return NULL;
}

static unsigned consumer_bin;

static void *consumer(void *arg)
{
	(void)arg;
	for (unsigned i = 0; i < N; i++)
		kp_free(pool, blocks[i]);
	kp__tcache *tc = my_cache();
	consumer_bin = tc ? tc->bin[cls].count : ~0u;
	return NULL;
}

static unsigned taken_left, taker_bin, bad;

static void *taker(void *arg)
{
	(void)arg;
	char *p = kp_alloc(pool, REQ, 0);
	taken_left = atomic_load(&pool->central[cls].nxfer);
	kp__tcache *tc = my_cache();
	taker_bin = tc ? tc->bin[cls].count : 0;
	bad += !p || kp_usable_size(pool, p) < REQ;
	kp_free(pool, p);
	return NULL;
}

static void run(void *(*fn)(void *))
{
	pthread_t t;
	if (pthread_create(&t, NULL, fn, NULL) == 0)
		pthread_join(t, NULL);
}

static void test_whole_batch(void)
{
	pool = kp_create(CONF);
	REQUIRE(pool, "kp_create: %s", kp_last_error());
	cls = kp__class_of(REQ + KP_HDR + KP_CANARY);
	REQUIRE(kp__class_size[cls] == 64, "a 64-byte class (%u)", kp__class_size[cls]);
	kt_cache_holder(pool); /* P and C run one after the other: a cache beside C's */
	run(producer);
	for (unsigned i = 0; i < N; i++)
		REQUIRE(blocks[i], "allocation %u failed", i);
	run(consumer); /* its exit flushes its bin to the spans: read it before */
	printf("   consumer's bin after %d frees: %u block(s)\n", N, consumer_bin);
	CHECK(consumer_bin == 1, "the bin kept %u blocks past its flush (the whole bin should park)", consumer_bin);
	unsigned n;
	unsigned k = parked(&n);
	printf("   parked: %u batch(es), the last of %u blocks\n", k, n);
	CHECK(k == 1 && n == N - 1, "%u batches parked, the last of %u blocks (want 1 of %d)", k, n, N - 1);
	run(taker);
	printf("   a new thread's first allocation: %u batch(es) left parked, its bin holds %u\n", taken_left,
	       taker_bin);
	CHECK(taken_left == 0, "the batch of %u stayed parked: the refill went to the spans", n);
	CHECK(taker_bin == N - 2, "the taker's bin holds %u (want the batch less the block handed out: %d)", taker_bin,
	      N - 2);
	CHECK(bad == 0, "%u bad blocks", bad);
	CHECK(kt_events_count(pool, KP_EV_FREELIST) == 0, "free-list events");
	CHECK(kt_events_count(pool, KP_EV_DOUBLE_FREE) == 0, "double-free events");
	kp_destroy(pool);
}

int main(void)
{
	RUN(test_whole_batch);
	return ktest_summary();
}
