/*
 * test_relocate_attack3.c - the relocation attack of
 * test_xfer_relocate_attack2.c (a free block's header copied into the
 * attacker's live block, the link before it rewritten to lead there) against
 * the other places blocks are taken from, now that key stacks hold
 * K(h) ^ kp__kslot(h) (internal.h): attacks that held.
 *
 * The attacker of test_forgery.c reads headers and free-list links and
 * writes inside its live blocks and after free. Here the blocks are in the
 * thread's own bin (not parked): block k+1's header (tag and meta, which
 * give K away) is copied to F inside a live 1,000-byte block L with a link
 * to block k+2 under K, and block k's link rewritten to F. The takers:
 *
 *   0. kp_alloc (the fast path, alloc_fast / alloc_far);
 *   1. kp_alloc_aligned(16) (alloc_policy, small_alloc);
 *   2. kp_realloc of an 8-byte block to 40 bytes (the bin of the 40);
 *   3. kp_thread_flush (the flush walk), then allocations from the spans
 *      (and a second thread's);
 *   4. kp_alloc, with F at the same place as the block it copies but for one
 *      high bit (F = B ^ 2^d, d as high as the pool's segments allow: the
 *      mask's weak case, kp__kslot's comment: 63 - d bits unknown).
 *
 * Each: no block handed out inside L, L's bytes intact, and the damage
 * reported (a free-list event).
 */
#define _GNU_SOURCE 1
/* Tests the transfer cache and central lists (transfer.c, tcache.c): every pool layout:inline (ktest.h, KT_LAYOUT_INLINE). */
#define KT_LAYOUT_INLINE 1
#include "ktest.h"

#include "internal.h"

#include <pthread.h>

#define REQ 40
#define NLIVE 20480 /* 1,000-byte blocks: 20 MiB, several segments */
#define LSIZE 1000
#define TAKE 256

static kp_pool *pool;
static unsigned cls;
static char *live[NLIVE];

static char *bin_at(unsigned i)
{
	kp__bin *b = &kp__tls_state.tc[0]->bin[cls];
	char *at = b->head;
	for (; i && at; i--) {
		uint64_t k = kt_raw_get(at) ^ kt_raw_get(at + 8);
		at = (char *)(uintptr_t)(kt_raw_get(at + KP_HDR) ^ (uint64_t)kp__link_pad(k));
	}
	return at;
}

/* The live block whose payload holds [f, f + 32), or NULL. */
static char *live_holding(const char *f)
{
	for (unsigned i = 0; i < NLIVE; i++)
		if (live[i] && f >= live[i] && f + 32 <= live[i] + LSIZE)
			return live[i];
	return NULL;
}

static void *other_thread_take(void *arg)
{
	char **v = arg;
	for (unsigned i = 0; i < TAKE; i++)
		v[i] = kp_alloc(pool, REQ, 0);
	for (unsigned i = 0; i < TAKE; i++)
		kp_free(pool, v[i]);
	return NULL;
}

static void attack(int how, unsigned seed)
{
	char conf[128];
	snprintf(conf, sizeof conf, "primary_initial:48m,daemon:off,backup:0,seed:%u", seed);
	pool = kp_create(conf);
	REQUIRE(pool, "kp_create: %s", kp_last_error());
	cls = kp__class_of(REQ + KP_HDR + pool->canary);
	/* live blocks before and after the small ones: segments on both
	 * sides of theirs (the high-bit case wants one at B ^ 2^d) */
	char *v[24];
	for (unsigned i = 0; i < NLIVE; i++) {
		if (i == NLIVE / 2)
			for (int j = 0; j < 24; j++)
				v[j] = kp_alloc(pool, REQ, 0);
		live[i] = kp_alloc(pool, LSIZE, 0);
		REQUIRE(live[i], "live block %u", i);
		memset(live[i], 0x6c, LSIZE);
	}
	/* a bin of REQ's class with blocks in it, freed by this thread */
	for (int i = 0; i < 24; i++)
		kp_free(pool, v[i]);
	kp__bin *b = &kp__tls_state.tc[0]->bin[cls];
	REQUIRE(b->count >= 6, "%u blocks in the bin", b->count);
	unsigned k = 2;
	char *F = NULL, *L = NULL;
	int d_used = -1;
	if (how == 4) {
		/* the highest bit d for which some bin block B (k+1 in 1..count-2)
		 * has B ^ 2^d inside a live block */
		for (int d = 46; d >= 5 && !F; d--)
			for (unsigned j = 1; j + 1 < b->count && !F; j++) {
				char *B = bin_at(j), *f = (char *)((uintptr_t)B ^ ((uintptr_t)1 << d));
				char *l = live_holding(f);
				if (l) {
					F = f;
					L = l;
					k = j - 1;
					d_used = d;
				}
			}
		REQUIRE(F, "no live block at a bin block's address but one bit");
	} else {
		L = live[NLIVE / 2];
		F = L + 256;
	}
	char *at = bin_at(k), *B = bin_at(k + 1), *next = bin_at(k + 2);
	REQUIRE(at && B, "bin blocks");
	uint64_t key = kt_raw_get(B) ^ kt_raw_get(B + 8);
	kt_raw_put(F, kt_raw_get(B));
	kt_raw_put(F + 8, kt_raw_get(B + 8));
	kt_raw_put(F + KP_HDR, (uint64_t)(uintptr_t)next ^ (uint64_t)kp__link_pad(key));
	uint64_t kat = kt_raw_get(at) ^ kt_raw_get(at + 8);
	kt_raw_put(at + KP_HDR, (uint64_t)(uintptr_t)F ^ (uint64_t)kp__link_pad(kat));
	/* L's bytes as they are now (the copy included) */
	static char copy[LSIZE];
	memcpy(copy, L, LSIZE);

	char *taken[TAKE];
	memset(taken, 0, sizeof taken);
	if (how == 3) {
		kp_thread_flush(pool);
		pthread_t t;
		char *other[TAKE];
		REQUIRE(pthread_create(&t, NULL, other_thread_take, other) == 0, "thread");
		pthread_join(t, NULL);
	}
	for (unsigned i = 0; i < TAKE; i++) {
		char *p;
		if (how == 1) {
			p = kp_alloc_aligned(pool, REQ, 16, 0);
		} else if (how == 2) {
			char *q = kp_alloc(pool, 8, 0);
			REQUIRE(q, "8-byte block");
			p = kp_realloc(pool, q, REQ, 0);
		} else {
			p = kp_alloc(pool, REQ, 0);
		}
		taken[i] = p;
		if (p && !(p >= L && p < L + LSIZE))
			memset(p, 0x33, REQ);
	}
	unsigned inside = 0;
	for (unsigned i = 0; i < TAKE; i++)
		inside += taken[i] && taken[i] + REQ > L && taken[i] < L + LSIZE;
	long long errs = kt_stat(pool, "integrity.freelist_errors");
	printf("   taker %d%s: %u blocks handed out inside the live block, %lld freelist errors", how,
	       how == 3 ? " (kp_thread_flush, then the spans)" : "", inside, errs);
	if (how == 4)
		printf(" (F = B ^ 2^%d)", d_used);
	printf("\n");
	CHECK(inside == 0, "taker %d: %u blocks handed out inside a live block", how, inside);
	CHECK(memcmp(copy, L, LSIZE) == 0, "taker %d: the live block's bytes changed", how);
	CHECK(errs >= 1, "taker %d: the rewritten link was not reported", how);
	for (unsigned i = 0; i < TAKE; i++)
		if (taken[i])
			kp_free(pool, taken[i]);
	kp_destroy(pool);
	pool = NULL;
}

static void test_own_bin_takers(void)
{
	for (int how = 0; how <= 4; how++)
		for (unsigned seed = 1; seed <= 3; seed++)
			attack(how, seed);
}

int main(void)
{
	RUN(test_own_bin_takers);
	return ktest_summary();
}
