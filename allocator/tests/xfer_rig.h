/*
 * xfer_rig.h - the rig of the attacks on whole parked batches
 * (test_xfer_attack2.c, test_xfer_relocate_attack2.c): two persistent
 * threads A and B take turns allocating and freeing NB blocks of a 64-byte
 * class (REQ) for PHASES phases, so both bins grow to 256 and two batches
 * or more are parked, the top one a whole bin (slots 0 and 1 of batch_at
 * and relink: the top two); live[] holds B's LIVE live blocks.
 * setup() builds it (NULL and a failed check if the batches are not there),
 * teardown() ends it; batch_at() and relink() read and rewrite a parked
 * batch's links. Included once by each test, after ktest.h and internal.h.
 */
#ifndef XFER_RIG_H
#define XFER_RIG_H

#include <limits.h>
#include <pthread.h>
#define CONF "primary_initial:16m,daemon:off,backup:0,seed:43"
#define REQ 40 /* a 64-byte class: its bins start at 16, their cap 256 */
#define NB 4096
#define PHASES 6
#define TAKE 1024
#define LIVE 8
#ifndef RIG_ALIGN /* do_alloc's alignment for how 2 (16: taken from the bin) */
#define RIG_ALIGN 64
#endif

#include "kt_worker.h"

/* ---- the pool with two batches of 256 parked ----------------------------- */
typedef struct job {
	kp_pool *pool;
	char **v;
	unsigned n;
	int how; /* 0 kp_alloc, 1 kp_realloc of a 16-byte block, 2 kp_alloc_aligned(RIG_ALIGN) */
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
			p = kp_alloc_aligned(j->pool, REQ, RIG_ALIGN, 0);
			if (p && ((uintptr_t)p & (RIG_ALIGN - 1)))
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

static void do_free(void *arg)
{
	job *j = arg;
	for (unsigned i = 0; i < j->n; i++)
		if (j->v[i] && kp_free(j->pool, j->v[i]) != 0)
			atomic_store(&j->failed, 1);
}

static kp_pool *pool;
static unsigned cls;
static unsigned base_slot; /* batch_at's slot 0: the second from the top (slot 1 the top one) */
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
	/* Read under the class lock: the daemon (on in these pools) returns
	 * stale batches under it (a read without it was a TSan report). */
	pthread_mutex_lock(kp__class_lock(pool, cls));
	unsigned k = atomic_load(&pool->central[cls].nxfer);
	base_slot = k >= 2 ? k - 2 : 0;
	unsigned n0 = k > 1 ? kp__xfer_slot(pool, cls, base_slot)->n : 0,
		 n1 = k > 1 ? kp__xfer_slot(pool, cls, base_slot + 1)->n : 0;
	pthread_mutex_unlock(kp__class_lock(pool, cls));
	/* the top one a whole bin of 256 (the first parked in the phase may
	 * be a half flush of a bin that grew: 128); the class's room grew in
	 * the phases (transfer.c), so more may be parked below them */
	bool ok = k >= 2 && n0 >= 64 && n1 == KP_XFER_KEYS && !atomic_load(&j.failed) && !atomic_load(&l.failed);
	CHECK(ok, "%u batches parked, the top two of %u and %u (want 2 or more, the top of %d)", k, n0, n1,
	      KP_XFER_KEYS);
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
	char *at = kp__xfer_slot(pool, cls, base_slot + slot)->list;
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

#endif
