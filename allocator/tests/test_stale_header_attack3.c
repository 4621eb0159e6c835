/*
 * test_stale_header_attack3.c - FAILING: a header forged inside a live
 * block from a key an old header gave away is accepted by kp_free, and the
 * next allocation overlaps the live block.
 *
 * K(h), the key of a block header at h (tag ^ meta), depends on the pool's
 * secret and h alone, for the pool's life: every header ever written at h
 * gives K(h) away to the attacker of test_forgery.c (reads headers, writes
 * inside its own live blocks). Units go from a span of one class to a span
 * of another (or to a large block) when they are freed: an address h that
 * was a 64-byte block's start can lie inside a live block L of another
 * class later. The attacker writes at h, inside L, the header of an
 * allocated block of L's class (tag K(h) ^ meta, meta with L's class) and
 * the canary (K(h) itself: kp__canary_word) and frees h + 16. kp_free
 * checks the header under K(h), the class against the unit's (unit_meta on
 * the fast path, class_fits on the slow one) and the canary: nothing asks
 * whether h is a block start of its span ((h - start) % block), so the
 * interior pointer passes, the block goes in the bin, and the next
 * allocation of L's class returns it, inside L.
 *
 * The pattern: 64-byte blocks (a 40-byte request) fill spans; their
 * headers are read; all are freed and flushed (the spans empty, their
 * units go back); 1,000-byte blocks take the units; the forged header is
 * written inside one of them at a former 64-byte block's start.
 */
#define _GNU_SOURCE 1
/* Tests the inline block headers and their keys (integrity.c; layout:outline's checks: test_outline_integrity.c): every pool layout:inline (ktest.h, KT_LAYOUT_INLINE). */
#define KT_LAYOUT_INLINE 1
#include "ktest.h"

#include "internal.h"

#define NSMALL 4096
#define NBIG 4096
#define BIG 1000

typedef struct old {
	char *h;
	uint64_t k;
} old;

static old olds[NSMALL];

static int by_h(const void *a, const void *b)
{
	const old *x = a, *y = b;
	return x->h < y->h ? -1 : x->h > y->h;
}

static void attack(const char *conf, bool slow)
{
	kp_pool *pool = kp_create(conf);
	REQUIRE(pool, "kp_create(%s): %s", conf, kp_last_error());
	char *v[NSMALL];
	for (unsigned i = 0; i < NSMALL; i++) {
		v[i] = kp_alloc(pool, 40, 0);
		REQUIRE(v[i], "small %u", i);
		char *h = v[i] - KP_HDR;
		olds[i].h = h;
		olds[i].k = kt_raw_get(h) ^ kt_raw_get(h + 8); /* K(h): what a header gives away */
	}
	for (unsigned i = 0; i < NSMALL; i++)
		kp_free(pool, v[i]);
	kp_thread_flush(pool); /* the spans get every block back and empty */
	qsort(olds, NSMALL, sizeof *olds, by_h);
	static char *big[NBIG];
	char *L = NULL, *h = NULL;
	uint64_t k = 0;
	for (unsigned i = 0; i < NBIG; i++) {
		big[i] = kp_alloc(pool, BIG, 0);
		REQUIRE(big[i], "big %u", i);
		memset(big[i], 0x4c, BIG);
		if (L)
			continue;
		/* a former block start inside this live block's payload, room for
		 * a header, 8 bytes and the canary */
		for (unsigned j = 0; j < NSMALL && !L; j++)
			if (olds[j].h >= big[i] + 16 && olds[j].h + 40 <= big[i] + BIG) {
				L = big[i];
				h = olds[j].h;
				k = olds[j].k;
			}
	}
	REQUIRE(L, "%s: no live 1,000-byte block over a former 64-byte block", conf);
	unsigned bcls = kp__class_of(BIG + KP_HDR + pool->canary);
	uint64_t meta = kp__meta(8, (uint16_t)bcls, KP_ST_ALLOC);
	kt_raw_put(h, k ^ meta);
	kt_raw_put(h + 8, meta);
	kt_raw_put(h + KP_HDR + 8, k); /* the canary: kp__canary_word(K(h)) */
	static char copy[BIG];
	memcpy(copy, L, BIG);
	int rc;
	if (slow) {
		/* the slow path: the pool not in the thread's first slot */
		kp_pool *other = kp_create("primary_initial:1m,daemon:off,backup:0");
		REQUIRE(other, "kp_create");
		kp_free(other, kp_alloc(other, 16, 0));
		rc = kp_free(pool, h + KP_HDR);
		kp_destroy(other);
	} else {
		rc = kp_free(pool, h + KP_HDR);
	}
	unsigned inside = 0;
	char *again[64];
	for (unsigned i = 0; i < 64; i++) {
		again[i] = kp_alloc(pool, BIG, 0);
		inside += again[i] && again[i] + BIG > L && again[i] < L + BIG;
	}
	printf("   %s%s: kp_free of a forged header at a former block start inside a live block: %d; %u blocks then "
	       "handed out inside it\n",
	       conf, slow ? " (slow path)" : "", rc, inside);
	CHECK(rc != 0, "%s%s: kp_free accepted a header forged inside a live block", conf, slow ? " (slow path)" : "");
	CHECK(inside == 0, "%s%s: %u blocks handed out inside a live block", conf, slow ? " (slow path)" : "", inside);
	kp_destroy(pool);
}

static void test_stale_key_forged_free(void)
{
	attack("primary_initial:4m,daemon:off,backup:0,seed:7", false);
	attack("primary_initial:4m,daemon:off,backup:0,seed:7", true);
	attack("primary_initial:4m,daemon:off,backup:0,seed:8,checks:off", false);
}

int main(void)
{
	RUN(test_stale_key_forged_free);
	return ktest_summary();
}
