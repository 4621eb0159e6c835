/*
 * test_fast_slot_attack3.c - attacks on the fast paths' slot words
 * (kp__tls: fast_alloc, fast_free), which name the first slot's pool only
 * when it has checks on and poison off: attacks that held.
 *
 *   1. A worker thread's first slot names a pool that another thread then
 *      destroys; a new pool of another mode is made (most often at the same
 *      address: the same pool pointer), and the worker, its words still
 *      naming the old pool's id, uses the new one. Modes in turn: checked,
 *      checks off, poisoning, checked, ... 24 rounds. Each pool must keep
 *      its mode's behaviour on the worker: a checked pool refuses a
 *      one-byte overflow and a double free (with events) and reports the
 *      request as usable size; a checks-off pool reports the capacity; a
 *      poisoning pool catches a write after free. The worker's words after
 *      each call are the new pool's (or 0).
 *   2. Blocks freed with the wrong pool in the first slot: a checked
 *      pool's block given to kp_free of a checks-off pool in the first
 *      slot, and the reverse, are refused (never put in the wrong pool's
 *      bin: the blocks are not handed out by it after).
 */
#define _GNU_SOURCE 1
/* Tests the inline fast paths and their slot and grace words (alloc.c, kp__tls): every pool layout:inline (ktest.h, KT_LAYOUT_INLINE). */
#define KT_LAYOUT_INLINE 1
#include "ktest.h"

#include "internal.h"

#include <pthread.h>
#include <string.h>

#include "kt_worker.h"

static const char *const confs[3] = {"primary_initial:4m,daemon:off,backup:0",
				     "primary_initial:4m,daemon:off,backup:0,checks:off",
				     "primary_initial:4m,daemon:off,backup:0,poison:on"};

static void words_are(kp_pool *pool, int mode, const char *what)
{
	uint64_t want = mode == 0 ? pool->id : 0;
	CHECK(kp__tls_state.id[0] == pool->id, "%s: first slot %llu, pool %llu", what,
	      (unsigned long long)kp__tls_state.id[0], (unsigned long long)pool->id);
	/* no fast path: KP_FAST_NONE and the empty cache (internal.h, s33-sig) */
	uint64_t want_alloc = want ? want : KP_FAST_NONE;
	CHECK(kp__tls_state.fast_alloc == want_alloc, "%s (mode %d): fast_alloc %llu, want %llu", what, mode,
	      (unsigned long long)kp__tls_state.fast_alloc, (unsigned long long)want_alloc);
	CHECK(kp__tls_state.fast_tc == (want ? kp__tls_state.tc[0] : &kp__tcache_none), "%s (mode %d): fast_tc", what,
	      mode);
	CHECK(kp__tls_state.fast_free == (want && pool->secret.aes ? want : 0), "%s (mode %d): fast_free %llu", what,
	      mode, (unsigned long long)kp__tls_state.fast_free);
}

typedef struct round_arg {
	kp_pool *pool;
	int mode;
	int round;
} round_arg;

/* On the worker: the pool's mode, as seen through its slot. */
static void mode_round(void *arg)
{
	round_arg *r = arg;
	kp_pool *pool = r->pool;
	/* fill and empty a bin first: the fast paths, both ways */
	void *v[40];
	for (int i = 0; i < 40; i++) {
		v[i] = kp_alloc(pool, 40, 0);
		REQUIRE(v[i], "alloc %d, round %d", i, r->round);
		memset(v[i], 3, 40);
	}
	words_are(pool, r->mode, "after allocations");
	for (int i = 0; i < 40; i++)
		CHECK(kp_free(pool, v[i]) == 0, "free %d, round %d", i, r->round);
	words_are(pool, r->mode, "after frees");
	char *p = kp_alloc(pool, 40, 0);
	REQUIRE(p, "alloc, round %d", r->round);
	size_t us = kp_usable_size(pool, p);
	if (r->mode == 1) {
		CHECK(us > 40, "checks:off pool reports %zu usable (the capacity), round %d", us, r->round);
		CHECK(kp_free(pool, p) == 0, "free, round %d", r->round);
	} else if (r->mode == 0) {
		CHECK(us == 40, "checked pool reports %zu usable, want 40, round %d", us, r->round);
		if (!KT_ASAN) {
			p[40] = 'x'; /* one byte past the request: the canary */
			CHECK(kp_free(pool, p) == KP_EOVERFLOW, "one-byte overflow not refused, round %d", r->round);
			CHECK(kt_events_count(pool, KP_EV_OVERFLOW) == 1, "no overflow event, round %d", r->round);
		} else {
			CHECK(kp_free(pool, p) == 0, "free, round %d", r->round);
		}
		char *q = kp_alloc(pool, 40, 0);
		REQUIRE(q, "alloc, round %d", r->round);
		CHECK(kp_free(pool, q) == 0, "free, round %d", r->round);
		CHECK(kp_free(pool, q) == KP_EDOUBLEFREE, "double free not refused, round %d", r->round);
	} else {
		CHECK(kp_free(pool, p) == 0, "free, round %d", r->round);
		if (!KT_ASAN) {
			p[30] = 'w';
			char *q = kp_alloc(pool, 40, 0);
			CHECK(q && q != p, "a block written after free handed out again, round %d", r->round);
			CHECK(kt_events_count(pool, KP_EV_USE_AFTER_FREE) == 1, "write after free not caught, round %d",
			      r->round);
			if (q)
				kp_free(pool, q);
		}
	}
	words_are(pool, r->mode, "after the round");
}

static void test_destroyed_under_worker(void)
{
	worker w;
	w_start(&w);
	kp_pool *prev = NULL;
	unsigned same = 0;
	for (int round = 0; round < 24; round++) {
		int mode = round % 3;
		kp_pool *pool = kp_create(confs[mode]);
		REQUIRE(pool, "kp_create: %s", kp_last_error());
		same += pool == prev;
		round_arg a = {pool, mode, round};
		w_call(&w, mode_round, &a);
		/* destroyed by this thread while the worker's first slot (and
		 * its fast words) still name it */
		kp_destroy(pool);
		prev = pool;
	}
	printf("   24 pools in turn in a worker's first slot, destroyed by another thread: %u at the address of the "
	       "one before\n",
	       same);
	w_stop(&w);
}

/* Same address, modes in the other order, on this thread and with two pools
 * alive: the first slot moves between them and the destroyed one. */
static void test_wrong_pool_free(void)
{
	kp_pool *on = kp_create(confs[0]), *off = kp_create(confs[1]);
	REQUIRE(on && off, "kp_create: %s", kp_last_error());
	for (int round = 0; round < 4; round++) {
		char *a = kp_alloc(on, 40, 0), *b = kp_alloc(off, 40, 0);
		REQUIRE(a && b, "allocs");
		/* off in the first slot (its words 0), a block of on given to it */
		kp_free(off, kp_alloc(off, 16, 0));
		CHECK(kp_free(off, a) != 0, "a checked pool's block freed into a checks-off pool, round %d", round);
		/* on in the first slot, off's block given to it */
		kp_free(on, kp_alloc(on, 16, 0));
		words_are(on, 0, "checked pool");
		CHECK(kp_free(on, b) != 0, "a checks-off pool's block freed into a checked pool, round %d", round);
		/* neither pool hands out the other's block */
		void *got[64];
		unsigned wrong = 0;
		for (int i = 0; i < 64; i++) {
			got[i] = kp_alloc(off, 40, 0);
			wrong += got[i] == a;
		}
		for (int i = 0; i < 64; i++)
			kp_free(off, got[i]);
		for (int i = 0; i < 64; i++) {
			got[i] = kp_alloc(on, 40, 0);
			wrong += got[i] == b;
		}
		for (int i = 0; i < 64; i++)
			kp_free(on, got[i]);
		CHECK(wrong == 0, "%u blocks of one pool handed out by the other, round %d", wrong, round);
		CHECK(kp_free(on, a) == 0 && kp_free(off, b) == 0, "the blocks freed into their own pools, round %d",
		      round);
		kt_events_clear(on);
		kt_events_clear(off);
	}
	kp_destroy(on);
	kp_destroy(off);
}

int main(void)
{
	RUN(test_destroyed_under_worker);
	RUN(test_wrong_pool_free);
	return ktest_summary();
}
