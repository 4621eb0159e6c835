/*
 * test_xfer_attack.c - a bin parked whole (tcache.c, KP_FLUSH_WHOLE) is
 * parked unread: none of its blocks is vetted when it is parked. Each
 * damage to such a batch must be caught before a link is followed past
 * it, wherever the batch goes next, and no live block may be handed out
 * twice or given to its span:
 *
 * 1. a link in the middle, or the last one, rewritten to a live block; a
 *    link rewritten to end the list early; a block's header rewritten:
 *    the bin that takes the batch (alloc.c, bin_head_ok);
 * 2. the same batch given back by kp_thread_flush or by the daemon as
 *    stale (transfer.c, batch_vet), with checks on and off;
 * 3. a batch taken whole and then given back by its taker's exit
 *    (kp__tcache_release's walk), the damage deep in it;
 * 4. a double free into a bin about to be parked, or of a block already
 *    parked: reported, and nothing in the batch handed out twice;
 * 5. a fork while a batch is parked: parent and child each hand its
 *    blocks out once;
 * 6. the bytes in use (stats) through a whole park, a take and the frees;
 * 7. 1.'s damage, and a link forged to lead outside the pool and back,
 *    with checks off: the bin that takes the batch then vets no block it
 *    hands out (alloc.c, as its own blocks), so the batch is vetted when
 *    it is taken (transfer.c, kp__xfer_take): no block outside the pool,
 *    none live, none twice.
 *
 * The pattern is test_xfer_whole's: thread P allocates 17 blocks of a
 * 64-byte class, thread C frees them (its bin of 16 overflows and parks
 * whole: 16 blocks, the list's head the last freed), and a fresh thread T
 * takes the batch at its first allocation of the class.
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
#define BATCH 16
#define TAKE 40 /* the taker's allocations: the batch and more from the spans */

static kp_pool *pool;
static char *blocks[N + 1]; /* blocks[N]: stays live (the producer's) */
static char *taken[TAKE];
static unsigned cls;
/* the consumer's script: free blocks[order[i]] for i < nfree; a negative
 * entry -1 - k frees blocks[k] again (a double free), whose return is kept */
static int order[N + 4], nfree, double_rc;

static void *producer(void *arg)
{
	(void)arg;
	for (unsigned i = 0; i <= N; i++) {
		blocks[i] = kp_alloc(pool, REQ, 0);
		if (blocks[i])
			memset(blocks[i], 0x5a, REQ);
	}
	return NULL;
}

static void *consumer(void *arg)
{
	(void)arg;
	for (int i = 0; i < nfree; i++) {
		if (order[i] >= 0) {
			kp_free(pool, blocks[order[i]]);
		} else {
			int rc = kp_free(pool, blocks[-1 - order[i]]);
			double_rc = rc;
		}
	}
	return NULL;
}

static void *taker(void *arg)
{
	unsigned n = (unsigned)(uintptr_t)arg;
	for (unsigned i = 0; i < n; i++)
		taken[i] = kp_alloc(pool, REQ, 0);
	return NULL;
}

static void *take_one_and_leave(void *arg)
{
	(void)arg;
	taken[0] = kp_alloc(pool, REQ, 0);
	return NULL; /* the exit gives the rest of the batch back, walked */
}

static void run(void *(*fn)(void *), void *arg)
{
	pthread_t t;
	if (pthread_create(&t, NULL, fn, arg) == 0)
		pthread_join(t, NULL);
}

static void script_plain(void)
{
	nfree = N;
	for (int i = 0; i < N; i++)
		order[i] = i;
}

/* A pool with one whole batch parked (C's 16 frees), or NULL. */
static kp_pool *parked(const char *conf)
{
	pool = kp_create(conf);
	CHECK(pool, "kp_create(%s): %s", conf, kp_last_error());
	if (!pool)
		return NULL;
	cls = kp__class_of(REQ + KP_HDR + pool->canary);
	/* P and C run one after the other: a cache beside C's while it parks */
	worker *holder = kt_cache_holder(pool);
	run(producer, NULL);
	for (unsigned i = 0; i <= N; i++)
		if (!blocks[i]) {
			CHECK(0, "allocation %u failed", i);
			kp_destroy(pool);
			return pool = NULL;
		}
	run(consumer, NULL);
	kt_cache_release(holder); /* no thread but this one across a fork (kt_worker.h) */
	unsigned k = atomic_load(&pool->central[cls].nxfer);
	CHECK(k == 1 && pool->xfer[cls][0].n == BATCH, "%u batches parked (want one of %d, whole)", k, BATCH);
	if (k != 1) {
		kp_destroy(pool);
		return pool = NULL;
	}
	return pool;
}

/* The block at position i from the batch's head (each link decoded with
 * the key its block's header gives away, as test_transfer's). */
static char *batch_at(unsigned i)
{
	char *at = pool->xfer[cls][0].list;
	for (; i && at; i--) {
		uint64_t k = kt_raw_get(at) ^ kt_raw_get(at + 8);
		at = (char *)(uintptr_t)(kt_raw_get(at + KP_HDR) ^ (uint64_t)kp__link_pad(k));
	}
	return at;
}

/* Rewrite the link of the block at position i to point at to (a write
 * after free into its first word). */
static void relink(unsigned i, const char *to)
{
	char *at = batch_at(i);
	REQUIRE(at, "no block at position %u", i);
	uint64_t k = kt_raw_get(at) ^ kt_raw_get(at + 8);
	kt_raw_put(at + KP_HDR, (uint64_t)(uintptr_t)to ^ (uint64_t)kp__link_pad(k));
}

/* Every pointer of v[0..n) and of live[0..nl) distinct; none NULL. */
static unsigned dups(char *const *v, unsigned n, char *const *live, unsigned nl)
{
	unsigned d = 0;
	for (unsigned i = 0; i < n; i++) {
		d += v[i] == NULL;
		for (unsigned j = 0; j < i; j++)
			d += v[i] && v[i] == v[j];
		for (unsigned j = 0; j < nl; j++)
			d += v[i] && v[i] == live[j];
	}
	return d;
}

/* A fake block outside the pool, for a link forged to lead to it (7.). */
static _Alignas(64) char outside[256];

/* 1. The taker: the damage caught, the live block never handed out. how: 0
 * a link to a live block, 1 a link that ends the list, 2 a header
 * rewritten, 3 a link to a block outside the pool in place of the next
 * one, whose own link leads back to the one after (a forgery that needs
 * the key of the block it stands for, which its header gives away). */
static void taker_catches_conf(const char *conf, const char *what, unsigned pos, int how)
{
	script_plain();
	if (!parked(conf))
		return;
	char *live = blocks[N]; /* live through the test (not main's: its first allocation would take the batch) */
	if (how == 0) {
		relink(pos, live - KP_HDR);
	} else if (how == 1) {
		relink(pos, NULL);
	} else if (how == 2) {
		char *at = batch_at(pos);
		REQUIRE(at, "no block at %u", pos);
		kt_raw_put(at, kt_raw_get(at) ^ 0x100); /* its tag: no longer K(h) ^ meta */
	} else {
		/* the fake takes the place of block pos + 1, whose key the bin's
		 * key stack holds for it: its header and its link under that key,
		 * the link to block pos + 2 */
		char *at = batch_at(pos + 1), *next = batch_at(pos + 2);
		REQUIRE(at && next, "no block at %u", pos + 2);
		uint64_t k = kt_raw_get(at) ^ kt_raw_get(at + 8);
		kt_raw_put(outside, kt_raw_get(at)); /* its header (poisoned under ASan) */
		kt_raw_put(outside + 8, kt_raw_get(at + 8));
		kt_raw_put(outside + KP_HDR, (uint64_t)(uintptr_t)next ^ (uint64_t)kp__link_pad(k));
		relink(pos, outside);
	}
	run(taker, (void *)(uintptr_t)TAKE);
	unsigned d = dups(taken, TAKE, &live, 1), out = 0;
	for (unsigned i = 0; i < TAKE; i++)
		out += taken[i] && !kp__pagemap_owns(pool->id, taken[i] - KP_HDR);
	printf("   %s at %u: freelist errors %lld, quarantined %lld, %u bad hand-outs, %u outside the pool\n", what,
	       pos, (long long)kt_stat(pool, "integrity.freelist_errors"),
	       (long long)kt_stat(pool, "integrity.quarantined"), d, out);
	CHECK(d == 0, "%s at %u: %u blocks handed out twice or NULL", what, pos, d);
	CHECK(out == 0, "%s at %u: %u blocks outside the pool handed out", what, pos, out);
	CHECK(kt_stat(pool, "integrity.freelist_errors") == 1, "%s at %u: %lld freelist errors (want 1)", what, pos,
	      (long long)kt_stat(pool, "integrity.freelist_errors"));
	kp_destroy(pool);
}

static void taker_catches(const char *what, unsigned pos, int how)
{
	taker_catches_conf(CONF, what, pos, how);
}

static void test_taker_middle_link_to_live(void)
{
	taker_catches("middle link to a live block", 6, 0);
}

static void test_taker_last_link_to_live(void)
{
	taker_catches("last link to a live block", BATCH - 1, 0);
}

static void test_taker_list_cut_short(void)
{
	taker_catches("link ends the list early", 7, 1);
}

static void test_taker_header_rewritten(void)
{
	taker_catches("header rewritten", 9, 2);
}

static void test_taker_link_outside_pool(void)
{
	taker_catches("middle link out of the pool and back", 6, 3);
}

/* 7. The same, with checks off. */
static void test_taker_checks_off(void)
{
	const char *off = CONF ",checks:off";
	/* first the forgeries that a taker that vets nothing follows without
	 * a crash (it then hands out the block outside the pool); a link to a
	 * live block sends it on through the live block's bytes (SIGSEGV) */
	taker_catches_conf(off, "checks off, middle link out of the pool and back", 6, 3);
	taker_catches_conf(off, "checks off, first link out of the pool and back", 0, 3);
	taker_catches_conf(off, "checks off, link ends the list early", 7, 1);
	taker_catches_conf(off, "checks off, header rewritten", 9, 2);
	taker_catches_conf(off, "checks off, last link to a live block", BATCH - 1, 0);
	taker_catches_conf(off, "checks off, middle link to a live block", 6, 0);
}

/* 2. Given back to the spans: vetted there, checks on or off. */
static void given_back_vetted(const char *conf, bool by_daemon)
{
	script_plain();
	if (!parked(conf))
		return;
	char *live = blocks[N];
	relink(10, live - KP_HDR);
	if (by_daemon) {
		kp_daemon_step(pool, 0);
		kp_daemon_step(pool, 150);
	} else {
		kp_thread_flush(pool);
	}
	CHECK(atomic_load(&pool->central[cls].nxfer) == 0, "%s: the batch is still parked", conf);
	/* everything the spans hand out now: never the live block */
	static char *v[512];
	for (unsigned i = 0; i < 512; i++)
		v[i] = kp_alloc(pool, REQ, 0);
	unsigned d = dups(v, 512, &live, 1);
	printf("   %s, %s: freelist errors %lld, %u bad hand-outs in 512\n", conf,
	       by_daemon ? "daemon" : "kp_thread_flush", (long long)kt_stat(pool, "integrity.freelist_errors"), d);
	CHECK(d == 0, "%s: %u blocks handed out twice or NULL", conf, d);
	CHECK(kt_stat(pool, "integrity.freelist_errors") == 1, "%s: %lld freelist errors (want 1)", conf,
	      (long long)kt_stat(pool, "integrity.freelist_errors"));
	kp_destroy(pool);
}

static void test_flush_vets_whole_batch(void)
{
	given_back_vetted(CONF, false);
	given_back_vetted(CONF ",checks:off", false);
}

static void test_daemon_vets_whole_batch(void)
{
	given_back_vetted(CONF ",decay_ms:100,step_clock:on", true);
	given_back_vetted(CONF ",decay_ms:100,step_clock:on,checks:off", true);
}

/* 3. Taken whole, one block handed out, the rest given back by the
 * taker's exit: the walk of its release catches the damage deep in it. */
static void test_release_vets_taken_batch(void)
{
	script_plain();
	if (!parked(CONF))
		return;
	char *live = blocks[N];
	relink(12, live - KP_HDR);
	run(take_one_and_leave, NULL);
	CHECK(taken[0] != NULL && taken[0] != live, "the taker's block: %p", (void *)taken[0]);
	CHECK(atomic_load(&pool->central[cls].nxfer) == 0, "the batch was not taken");
	static char *v[512];
	for (unsigned i = 0; i < 512; i++)
		v[i] = kp_alloc(pool, REQ, 0);
	char *keep[2] = {live, taken[0]};
	unsigned d = dups(v, 512, keep, 2);
	CHECK(d == 0, "%u blocks handed out twice or NULL", d);
	CHECK(kt_stat(pool, "integrity.freelist_errors") == 1, "%lld freelist errors (want 1)",
	      (long long)kt_stat(pool, "integrity.freelist_errors"));
	kp_destroy(pool);
}

/* 4. A double free into the bin that is about to park whole: the bin's
 * head (the block freed last), a block inside it, or one already parked. */
static void double_free(const char *what, const char *conf, int at, int again)
{
	nfree = 0;
	for (int i = 0; i < N; i++) {
		if (i == at)
			order[nfree++] = -1 - again;
		order[nfree++] = i;
	}
	if (at >= N)
		order[nfree++] = -1 - again;
	double_rc = 0;
	if (!parked(conf))
		return;
	CHECK(double_rc != 0, "%s: the double free returned 0", what);
	CHECK(kt_stat(pool, "integrity.double_frees") == 1, "%s: %lld double frees reported", what,
	      (long long)kt_stat(pool, "integrity.double_frees"));
	run(taker, (void *)(uintptr_t)TAKE);
	unsigned d = dups(taken, TAKE, NULL, 0);
	CHECK(d == 0, "%s: %u blocks handed out twice or NULL", what, d);
	CHECK(kt_stat(pool, "integrity.freelist_errors") == 0, "%s: %lld freelist errors", what,
	      (long long)kt_stat(pool, "integrity.freelist_errors"));
	kp_destroy(pool);
}

static void test_double_free_into_parking_bin(void)
{
	double_free("the bin's head again", CONF, 15, 14);
	double_free("a block inside the bin", CONF, 15, 3);
	double_free("a parked block", CONF, N, 5); /* after the 17th free: parked */
	double_free("the bin's head again, checks off", CONF ",checks:off", 15, 14);
	double_free("a parked block, checks off", CONF ",checks:off", N, 5);
}

/* 5. A fork with a batch parked: each process hands its blocks out once. */
static long child_takes(void *arg)
{
	(void)arg;
	memset(taken, 0, sizeof taken);
	/* A new thread of the child, not the one that forked, takes the batch:
	 * the class lock the fork's prepare took must be free for it (under
	 * TSan too, which reported a double lock while fork_child
	 * re-initialised the locks instead of unlocking them). */
	run(taker, (void *)(uintptr_t)TAKE);
	long bad = (long)dups(taken, TAKE, NULL, 0);
	bad += kt_stat(pool, "integrity.freelist_errors") != 0;
	bad += atomic_load(&pool->central[cls].nxfer) != 0; /* the child's taker took it */
	return bad;
}

static void test_fork_with_parked_batch(void)
{
	script_plain();
	if (!parked(CONF))
		return;
	long child = kt_in_child(child_takes, NULL);
	CHECK(child == 0, "the child: %ld bad", child);
	run(taker, (void *)(uintptr_t)TAKE);
	unsigned d = dups(taken, TAKE, NULL, 0);
	CHECK(d == 0, "the parent: %u blocks handed out twice or NULL", d);
	CHECK(kt_stat(pool, "integrity.freelist_errors") == 0, "the parent: freelist errors");
	kp_destroy(pool);
}

/* 6. The bytes in use: a whole park changes nothing, a take of the batch
 * counts what is handed out, and the frees bring it back. */
static void *free_taken(void *arg)
{
	(void)arg;
	for (unsigned i = 0; i < TAKE; i++)
		kp_free(pool, taken[i]);
	kp_thread_flush(pool);
	return NULL;
}

static void test_accounting_through_whole_parks(void)
{
	pool = kp_create(CONF);
	REQUIRE(pool, "kp_create: %s", kp_last_error());
	int64_t u0 = kt_stat(pool, "primary.in_use_bytes");
	int64_t a0 = kt_stat(pool, "primary.allocs"), f0 = kt_stat(pool, "primary.frees");
	kp_destroy(pool);
	script_plain();
	if (!parked(CONF))
		return;
	size_t usable = kp__class_size[cls] - KP_HDR;
	u0 += (int64_t)usable; /* blocks[N], live */
	a0 += 2;	       /* and the cache holder's block, allocated and freed */
	f0 += 1;
	CHECK(kt_stat(pool, "primary.in_use_bytes") == u0, "in use %lld with the batch parked (want %lld)",
	      (long long)kt_stat(pool, "primary.in_use_bytes"), (long long)u0);
	CHECK(kt_stat(pool, "primary.allocs") - a0 == N && kt_stat(pool, "primary.frees") - f0 == N,
	      "allocs %lld frees %lld", (long long)kt_stat(pool, "primary.allocs"),
	      (long long)kt_stat(pool, "primary.frees"));
	run(taker, (void *)(uintptr_t)TAKE);
	CHECK(kt_stat(pool, "primary.in_use_bytes") == u0 + (int64_t)(TAKE * usable), "in use %lld after %d taken",
	      (long long)kt_stat(pool, "primary.in_use_bytes"), TAKE);
	run(free_taken, NULL);
	CHECK(kt_stat(pool, "primary.in_use_bytes") == u0, "in use %lld after all freed",
	      (long long)kt_stat(pool, "primary.in_use_bytes"));
	CHECK(kt_stat(pool, "primary.allocs") - kt_stat(pool, "primary.frees") == a0 - f0, "allocs %lld frees %lld",
	      (long long)kt_stat(pool, "primary.allocs"), (long long)kt_stat(pool, "primary.frees"));
	CHECK(kt_stat(pool, "integrity.freelist_errors") == 0 && kt_stat(pool, "integrity.double_frees") == 0,
	      "integrity events");
	kp_destroy(pool);
}

int main(void)
{
	RUN(test_taker_middle_link_to_live);
	RUN(test_taker_last_link_to_live);
	RUN(test_taker_list_cut_short);
	RUN(test_taker_header_rewritten);
	RUN(test_taker_link_outside_pool);
	RUN(test_taker_checks_off);
	RUN(test_flush_vets_whole_batch);
	RUN(test_daemon_vets_whole_batch);
	RUN(test_release_vets_taken_batch);
	RUN(test_double_free_into_parking_bin);
	RUN(test_fork_with_parked_batch);
	RUN(test_accounting_through_whole_parks);
	return ktest_summary();
}
