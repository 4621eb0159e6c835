/*
 * test_xfer_relocate_attack3.c - the relocation attack of
 * test_xfer_relocate_attack2.c (a parked free block's header copied into
 * the attacker's live 1,000-byte block L, the link before it rewritten to
 * lead there) against the other takers of a parked batch, now that key
 * stacks are bound to the block's address (internal.h, kp__kslot): attacks
 * that held, checks on and off.
 *
 *   0. kp_thread_flush on a thread with no cache of the class: the drain of
 *      every parked batch (kp__xfer_drain all, batch_vet) to the spans;
 *   1. the daemon's drain of stale batches (kp_daemon_step past two
 *      checkpoints: batch_vet);
 *   2. a taker that reallocs 8-byte blocks to 40 bytes;
 *   3. a taker of kp_alloc_aligned(16) blocks (one of 64 takes no block of the 40 bytes' class).
 *
 * Each: after the taking (and for 0 and 1, a thread then allocating 1,024
 * blocks of the class from the spans) no block handed out inside L, L's
 * bytes as the attacker left them, and the damage reported.
 */
#define _GNU_SOURCE 1
#include "ktest.h"

#include "internal.h"

#include <limits.h>
#include <pthread.h>

#define CONF "primary_initial:16m,daemon:off,backup:0,seed:43"
#define REQ 40 /* a 64-byte class: its bins start at 16, their cap 256 */
#define NB 4096
#define PHASES 6
#define TAKE 1024
#define LIVE 8

/* ---- persistent workers ------------------------------------------------- */
typedef struct worker {
	pthread_t t;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	void (*fn)(void *);
	void *arg;
	int busy, quit;
} worker;

static void *worker_main(void *p)
{
	worker *w = p;
	pthread_mutex_lock(&w->mu);
	for (;;) {
		while (!w->busy && !w->quit)
			pthread_cond_wait(&w->cv, &w->mu);
		if (!w->busy)
			break;
		pthread_mutex_unlock(&w->mu);
		w->fn(w->arg);
		pthread_mutex_lock(&w->mu);
		w->busy = 0;
		pthread_cond_broadcast(&w->cv);
	}
	pthread_mutex_unlock(&w->mu);
	return NULL;
}

static void w_start(worker *w)
{
	memset(w, 0, sizeof *w);
	pthread_mutex_init(&w->mu, NULL);
	pthread_cond_init(&w->cv, NULL);
	if (pthread_create(&w->t, NULL, worker_main, w) != 0)
		abort();
}

static void w_call(worker *w, void (*fn)(void *), void *arg)
{
	pthread_mutex_lock(&w->mu);
	w->fn = fn;
	w->arg = arg;
	w->busy = 1;
	pthread_cond_broadcast(&w->cv);
	while (w->busy)
		pthread_cond_wait(&w->cv, &w->mu);
	pthread_mutex_unlock(&w->mu);
}

static void w_stop(worker *w)
{
	pthread_mutex_lock(&w->mu);
	w->quit = 1;
	pthread_cond_broadcast(&w->cv);
	pthread_mutex_unlock(&w->mu);
	pthread_join(w->t, NULL);
	pthread_mutex_destroy(&w->mu);
	pthread_cond_destroy(&w->cv);
}

/* ---- the pool with two batches of 256 parked ----------------------------- */
typedef struct job {
	kp_pool *pool;
	char **v;
	unsigned n;
	int how; /* 0 kp_alloc, 1 kp_realloc of a 16-byte block, 2 kp_alloc_aligned(16) */
	atomic_int failed;
} job;

static void do_alloc(void *arg)
{
	job *j = arg;
	for (unsigned i = 0; i < j->n; i++) {
		char *p;
		if (j->how == 1) {
			char *q = kp_alloc(j->pool, 8, 0);
			if (q)
				memset(q, 7, 8);
			p = kp_realloc(j->pool, q, REQ, 0);
			if (p && p[0] != 7)
				atomic_store(&j->failed, 1);
		} else if (j->how == 2) {
			p = kp_alloc_aligned(j->pool, REQ, 16, 0);
			if (p && ((uintptr_t)p & 15))
				atomic_store(&j->failed, 1);
		} else {
			p = kp_alloc(j->pool, REQ, 0);
		}
		j->v[i] = p;
		if (!p)
			atomic_store(&j->failed, 1);
		else
			memset(p, 0x5a, REQ);
	}
}

static void do_alloc_big(void *arg)
{
	job *j = arg;
	for (unsigned i = 0; i < j->n; i++)
		j->v[i] = kp_alloc(j->pool, 1000, 0);
}

static void do_free(void *arg)
{
	job *j = arg;
	for (unsigned i = 0; i < j->n; i++)
		if (j->v[i] && kp_free(j->pool, j->v[i]) != 0)
			atomic_store(&j->failed, 1);
}

static kp_pool *pool;
static unsigned cls;
static worker wa, wb;
static char *blocks[NB], *live[LIVE], *taken[TAKE];

/* A pool, A and B running, two whole batches of 256 parked (A's frees);
 * live[] B's. NULL (and a failed check) if the batches are not there. */
static kp_pool *setup(const char *conf)
{
	pool = kp_create(conf);
	CHECK(pool, "kp_create(%s): %s", conf, kp_last_error());
	if (!pool)
		return NULL;
	cls = kp__class_of(REQ + KP_HDR + pool->canary);
	w_start(&wa);
	w_start(&wb);
	job j = {.pool = pool, .v = blocks, .n = NB};
	for (unsigned p = 0; p < PHASES; p++) {
		w_call(p % 2 ? &wb : &wa, do_alloc, &j);
		w_call(p % 2 ? &wa : &wb, do_free, &j);
	}
	job l = {.pool = pool, .v = live, .n = LIVE};
	w_call(&wb, do_alloc, &l);
	unsigned k = atomic_load(&pool->central[cls].nxfer);
	/* the top one a whole bin of 256 (the first parked in the phase may
	 * be a half flush of a bin that grew: 128) */
	bool ok = k == KP_XFER_SLOTS && pool->xfer[cls][0].n >= 64 && pool->xfer[cls][1].n == KP_XFER_KEYS &&
		  !atomic_load(&j.failed) && !atomic_load(&l.failed);
	CHECK(ok, "%u batches parked, of %u and %u (want 2, the top of %d)", k, k ? pool->xfer[cls][0].n : 0,
	      k > 1 ? pool->xfer[cls][1].n : 0, KP_XFER_KEYS);
	CHECK(kt_stat(pool, "integrity.freelist_errors") == 0, "freelist errors while parking");
	if (!ok) {
		w_stop(&wa);
		w_stop(&wb);
		kp_destroy(pool);
		return pool = NULL;
	}
	return pool;
}

static void teardown(void)
{
	w_stop(&wa);
	w_stop(&wb);
	kp_destroy(pool);
	pool = NULL;
}

static char *batch_at(unsigned slot, unsigned i)
{
	char *at = pool->xfer[cls][slot].list;
	for (; i && at; i--) {
		uint64_t k = kt_raw_get(at) ^ kt_raw_get(at + 8);
		at = (char *)(uintptr_t)(kt_raw_get(at + KP_HDR) ^ (uint64_t)kp__link_pad(k));
	}
	return at;
}

static void relink(unsigned slot, unsigned i, const char *to)
{
	char *at = batch_at(slot, i);
	uint64_t k = kt_raw_get(at) ^ kt_raw_get(at + 8);
	kt_raw_put(at + KP_HDR, (uint64_t)(uintptr_t)to ^ (uint64_t)kp__link_pad(k));
}

static void relocated(const char *conf, unsigned pos, int how)
{
	if (!setup(conf))
		return;
	char *big_live[1];
	job lj = {.pool = pool, .v = big_live, .n = 1};
	w_call(&wb, do_alloc_big, &lj);
	char *L = big_live[0];
	REQUIRE(L, "no live block");
	char *at = batch_at(1, pos + 1), *next = batch_at(1, pos + 2);
	uint64_t k = kt_raw_get(at) ^ kt_raw_get(at + 8);
	char *fh = L + 256;
	kt_raw_put(fh, kt_raw_get(at));
	kt_raw_put(fh + 8, kt_raw_get(at + 8));
	kt_raw_put(fh + KP_HDR, (uint64_t)(uintptr_t)next ^ (uint64_t)kp__link_pad(k));
	relink(1, pos, fh);
	static char copy[1000];
	memcpy(copy, L, 1000);
	if (how == 0) {
		kp_thread_flush(pool); /* this thread has no cache of the class */
	} else if (how == 1) {
		kp_daemon_step(pool, 20);
		kp_daemon_step(pool, 20);
		kp_daemon_step(pool, 20);
	}
	job t = {.pool = pool, .v = taken, .n = TAKE, .how = how == 2 ? 1 : how == 3 ? 2 : 0};
	w_call(&wa, do_alloc, &t);
	unsigned inside = 0;
	for (unsigned i = 0; i < TAKE; i++)
		inside += taken[i] && taken[i] + REQ > L && taken[i] < L + 1000;
	long long errs = kt_stat(pool, "integrity.freelist_errors");
	unsigned parked = atomic_load(&pool->central[cls].nxfer);
	printf("   %s, taker %d: %u blocks handed out inside the live block, %lld freelist errors, %u batches still "
	       "parked\n",
	       conf, how, inside, errs, parked);
	CHECK(inside == 0, "%s, taker %d: %u blocks handed out inside a live block", conf, how, inside);
	CHECK(memcmp(copy, L, 1000) == 0, "%s, taker %d: the live block changed", conf, how);
	CHECK(errs >= 1, "%s, taker %d: the damage was not reported", conf, how);
	teardown();
}

static void test_other_takers(void)
{
	for (int how = 0; how <= 3; how++) {
		relocated(CONF, 100, how);
		relocated(CONF ",checks:off", 100, how);
	}
}

int main(void)
{
	RUN(test_other_takers);
	return ktest_summary();
}
