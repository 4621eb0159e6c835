/*
 * test_transfer.c - the transfer cache (transfer.c): a batch that a
 * thread's overflowing bin parks goes whole to the next bin of its class
 * that runs empty, and is vetted there like any bin's blocks.
 *
 * The pattern is kpbench c's and a server's: one thread frees what
 * another allocates. A thread P frees 17 blocks the main thread allocated:
 * its bin (16 blocks at its start) overflows and parks all 16 (a bin that
 * has only freed parks whole: tcache.c, kp__bin_miss; all but one block
 * before test_xfer_whole, and 8, half its max, before whole batches for
 * one-way bins). The main thread, its bin of the class emptied, takes that
 * batch.
 */
#define _GNU_SOURCE 1
/* Tests the transfer cache and central lists (transfer.c, tcache.c): every pool layout:inline (ktest.h, KT_LAYOUT_INLINE). */
#define KT_LAYOUT_INLINE 1
#include "ktest.h"

#include "internal.h"

#include <pthread.h>

#define CONF "primary_initial:4m,daemon:off,backup:0,seed:13"
#define REQ 48 /* an 80-byte class: a bin starts at 16 blocks (KP_BIN_START) */
#define NBLK 17
#define BATCH 16 /* what P parks: NBLK - 1, its whole bin */

static kp_pool *g_pool;
static char *g_blk[NBLK];

static void *free_them(void *arg)
{
	(void)arg;
	for (int i = 0; i < NBLK; i++)
		if (kp_free(g_pool, g_blk[i]) != 0)
			return (void *)1;
	return NULL; /* the thread's exit gives its bin back to the spans */
}

/* Main allocates NBLK blocks, P frees them: one batch parked. *binp: the
 * main thread's bin of the class, emptied (NULL: a step failed). */
static void park_one(kp_pool *pool, kp__bin **binp)
{
	*binp = NULL;
	g_pool = pool;
	for (int i = 0; i < NBLK; i++) {
		g_blk[i] = kp_alloc(pool, REQ, 0);
		REQUIRE(g_blk[i], "alloc %d", i);
	}
	unsigned cls = kp__class_of(REQ + KP_HDR + KP_CANARY);
	pthread_t t;
	void *rc;
	REQUIRE(pthread_create(&t, NULL, free_them, NULL) == 0, "pthread_create");
	pthread_join(t, &rc);
	CHECK(rc == NULL, "the frees of the other thread");
	CHECK(atomic_load(&pool->central[cls].nxfer) == 1, "one batch parked: %u",
	      atomic_load(&pool->central[cls].nxfer));
	kp__tcache *tc = kp__tls_state.tc[0];
	REQUIRE(tc && kp__tls_state.id[0] == pool->id, "the pool's cache is the thread's first");
	kp__bin *b = &tc->bin[cls];
	/* Empty the main thread's bin of the class: the next allocation refills. */
	while (b->count) {
		char *p = kp_alloc(pool, REQ, 0);
		REQUIRE(p, "alloc");
		kt_raw_put(p, 0); /* leaked: live till kp_destroy */
	}
	*binp = b;
}

/* A pool of conf with one batch parked (park_one; *binp as its), or NULL
 * (a failed check says why). */
static kp_pool *parked_pool(const char *conf, kp__bin **binp)
{
	*binp = NULL;
	kp_pool *pool = kp_create(conf);
	CHECK(pool, "kp_create: %s", kp_last_error());
	if (pool)
		park_one(pool, binp);
	CHECK(*binp, "a batch parked");
	if (pool && !*binp) {
		kp_destroy(pool);
		pool = NULL;
	}
	return pool;
}

/* The batch moves whole: the refill takes it, not blocks of the spans. */
static void test_batch_goes_to_the_next_empty_bin(void)
{
	kp__bin *b;
	kp_pool *pool = parked_pool(CONF, &b);
	REQUIRE(pool, "a pool with a batch parked");
	unsigned cls = kp__class_of(REQ + KP_HDR + KP_CANARY);
	kp__xfer *x = &pool->xfer[cls][0];
	unsigned n = x->n;
	char *head = x->list;
	CHECK(n == BATCH && head, "the batch: %u blocks, head %p", n, (void *)head);
	char *p = kp_alloc(pool, REQ, 0);
	CHECK(p == head + KP_HDR, "the refill took the parked batch: %p, its head %p", (void *)p, (void *)head);
	CHECK(atomic_load(&pool->central[cls].nxfer) == 0, "no batch left parked");
	CHECK(b->count == n - 1, "the bin holds the rest of it: %u", b->count);
	/* Every block of it once, none that the spans hand out again. */
	void *q[64];
	for (int i = 0; i < 64; i++) {
		q[i] = kp_alloc(pool, REQ, 0);
		REQUIRE(q[i], "alloc");
		CHECK(q[i] != p, "block %d handed out twice", i);
		for (int j = 0; j < i; j++)
			CHECK(q[i] != q[j], "blocks %d and %d are one", j, i);
	}
	for (int i = 0; i < 64; i++)
		CHECK(kp_free(pool, q[i]) == 0, "free %d", i);
	CHECK(kp_free(pool, p) == 0, "free");
	CHECK(kt_stat(pool, "integrity.freelist_errors") == 0, "no false alarm");
	kp_destroy(pool);
}

/* A parked block's link rewritten (a write after free, encoded with the
 * pad its header gives away, as test_keystack's) to a block on its span's
 * free list: the bin that takes the batch must not hand that block out
 * (it would be handed out again by its span), and must report it. */
static void test_parked_link_rewritten(void)
{
	kp__bin *b;
	kp_pool *pool = parked_pool(CONF, &b);
	REQUIRE(pool, "a pool with a batch parked");
	unsigned cls = kp__class_of(REQ + KP_HDR + KP_CANARY);
	kp__xfer *x = &pool->xfer[cls][0];
	char *h = x->list;
	REQUIRE(h && x->n == BATCH, "a batch parked");
	/* A block of the class on its span's free list: the one P's exit gave
	 * back (its last free, the only block its bin held then). */
	char *spare = g_blk[NBLK - 1] - KP_HDR;
	uint64_t k = kt_raw_get(h) ^ kt_raw_get(h + 8);
	kt_raw_put(h + KP_HDR, (uint64_t)(uintptr_t)spare ^ (uint64_t)kp__link_pad(k));
	char *p1 = kp_alloc(pool, REQ, 0), *p2 = kp_alloc(pool, REQ, 0);
	CHECK(p1 == h + KP_HDR, "the batch's head first: %p (%p)", (void *)p1, (void *)(h + KP_HDR));
	CHECK(p2 && p2 != spare + KP_HDR, "the rewritten link handed out %p, a block on its span's free list",
	      (void *)p2);
	CHECK(kt_stat(pool, "integrity.freelist_errors") == 1, "the damage reported: %llu",
	      (unsigned long long)kt_stat(pool, "integrity.freelist_errors"));
	void *q[64];
	unsigned dup = 0;
	for (int i = 0; i < 64; i++) {
		q[i] = kp_alloc(pool, REQ, 0);
		REQUIRE(q[i], "alloc");
		dup += q[i] == p1 || q[i] == p2;
		for (int j = 0; j < i; j++)
			dup += q[i] == q[j];
	}
	CHECK(dup == 0, "%u blocks handed out while live", dup);
	for (int i = 0; i < 64; i++)
		CHECK(kp_free(pool, q[i]) == 0, "free %d", i);
	CHECK(kp_free(pool, p1) == 0 && kp_free(pool, p2) == 0, "frees");
	kp_destroy(pool);
}

/* What a thread gives back when it leaves, or at kp_thread_flush, goes to
 * the spans (a parked batch is memory no span gets back), and a batch of
 * more than KP_XFER_BYTES is never parked. */
static void test_what_is_not_parked(void)
{
	kp_pool *pool = kp_create(CONF);
	REQUIRE(pool, "kp_create: %s", kp_last_error());
	unsigned cls = kp__class_of(REQ + KP_HDR + KP_CANARY);
	void *v[12];
	for (int i = 0; i < 12; i++)
		v[i] = kp_alloc(pool, REQ, 0);
	for (int i = 0; i < 12; i++)
		kp_free(pool, v[i]);
	kp_thread_flush(pool);
	CHECK(atomic_load(&pool->central[cls].nxfer) == 0, "kp_thread_flush parked a batch");
	/* 40 KiB blocks: any batch of them, one block or more, is over
	 * KP_XFER_BYTES (a bin starts at KP_BIN_LEAST blocks of a class past
	 * KP_BIN_START_BYTES, and a whole flush may move one). */
	size_t big = 40000;
	unsigned bc = kp__class_of(big + KP_HDR + KP_CANARY);
	REQUIRE(kp__class_size[bc] > KP_XFER_BYTES, "class %u: %u bytes", bc, kp__class_size[bc]);
	void *w[16];
	for (int i = 0; i < 16; i++)
		w[i] = kp_alloc(pool, big, 0);
	for (int i = 0; i < 16; i++)
		kp_free(pool, w[i]);
	CHECK(atomic_load(&pool->central[bc].nxfer) == 0, "a batch of %u-byte blocks parked", kp__class_size[bc]);
	kp_destroy(pool);
}

/* A batch parked and never taken is memory its spans never get back (a
 * thread that freed a burst and went quiet): the daemon gives back what
 * stayed parked from one of its checkpoints (decay_ms apart) to the next,
 * its blocks vetted again first (they are free memory: a write while
 * parked must not send a live block to its span). */
static void test_idle_batch_goes_back(void)
{
	kp__bin *b;
	kp_pool *pool = parked_pool(CONF ",decay_ms:100", &b);
	REQUIRE(pool, "a pool with a batch parked");
	unsigned cls = kp__class_of(REQ + KP_HDR + KP_CANARY);
	kp_daemon_step(pool, 0);
	CHECK(atomic_load(&pool->central[cls].nxfer) == 1, "given back before it stayed parked for decay_ms");
	kp_daemon_step(pool, 150);
	CHECK(atomic_load(&pool->central[cls].nxfer) == 0, "still parked after a checkpoint: %u",
	      atomic_load(&pool->central[cls].nxfer));
	CHECK(kt_stat(pool, "integrity.freelist_errors") == 0, "no false alarm");
	kp_destroy(pool);
}

/* kp_thread_flush gives back every parked batch too: a program that
 * frees all and flushes gets its memory back after one decay_ms, as
 * before the transfer cache (test_daemon's shrink). */
static void test_thread_flush_gives_parked_back(void)
{
	kp__bin *b;
	kp_pool *pool = parked_pool(CONF, &b);
	REQUIRE(pool, "a pool with a batch parked");
	unsigned cls = kp__class_of(REQ + KP_HDR + KP_CANARY);
	kp_thread_flush(pool);
	CHECK(atomic_load(&pool->central[cls].nxfer) == 0, "still parked after kp_thread_flush");
	CHECK(kt_stat(pool, "integrity.freelist_errors") == 0, "no false alarm");
	kp_destroy(pool);
}

static void test_idle_batch_vetted(void)
{
	kp_pool *pool = kp_create(CONF ",decay_ms:100");
	REQUIRE(pool, "kp_create: %s", kp_last_error());
	kp__bin *b;
	unsigned cls = kp__class_of(REQ + KP_HDR + KP_CANARY);
	char *live = kp_alloc(pool, REQ, 0);
	REQUIRE(live, "alloc");
	park_one(pool, &b);
	REQUIRE(b, "a batch parked");
	kp__xfer *x = &pool->xfer[cls][0];
	char *h = x->list;
	REQUIRE(h && x->n == BATCH, "a batch parked");
	/* Its head's link rewritten to a live block of the class. */
	uint64_t k = kt_raw_get(h) ^ kt_raw_get(h + 8);
	kt_raw_put(h + KP_HDR, (uint64_t)(uintptr_t)(live - KP_HDR) ^ (uint64_t)kp__link_pad(k));
	kp_daemon_step(pool, 0);
	kp_daemon_step(pool, 150);
	CHECK(atomic_load(&pool->central[cls].nxfer) == 0, "still parked");
	CHECK(kt_stat(pool, "integrity.freelist_errors") == 1, "the damage reported: %llu",
	      (unsigned long long)kt_stat(pool, "integrity.freelist_errors"));
	unsigned dup = 0;
	void *q[256];
	for (int i = 0; i < 256; i++) {
		q[i] = kp_alloc(pool, REQ, 0);
		REQUIRE(q[i], "alloc");
		dup += q[i] == live;
	}
	CHECK(dup == 0, "the live block was handed out %u times", dup);
	for (int i = 0; i < 256; i++)
		CHECK(kp_free(pool, q[i]) == 0, "free %d", i);
	CHECK(kp_free(pool, live) == 0, "free");
	kp_destroy(pool);
}

int main(void)
{
	RUN(test_batch_goes_to_the_next_empty_bin);
	RUN(test_parked_link_rewritten);
	RUN(test_what_is_not_parked);
	RUN(test_idle_batch_goes_back);
	RUN(test_thread_flush_gives_parked_back);
	RUN(test_idle_batch_vetted);
	return ktest_summary();
}
