/*
 * signal_stamp_attack33.h - what the signal attack tests
 * (test_outline_signal_{big,full,calls,nested}_attack33.c,
 * test_outline_signal_aligned_attack36.c) share beside ktest.h's
 * kt_pestered: a block stamped with its serial in its first and last 8
 * bytes (a block held by two at once shows as a mismatch), slots of held
 * blocks (the handler's hslot; the worker's own), the worker's steps on
 * its slots (held_steps) and the checks and frees at a round's end
 * (free_held). Include after <stdatomic.h>, <stdint.h> and <string.h>, and
 * after the file's `static kp_pool *pool`.
 */
#ifndef SIGNAL_STAMP_ATTACK33_H
#define SIGNAL_STAMP_ATTACK33_H

/* a block's stamp: its serial in its first and last 8 bytes */
static _Atomic uint64_t serial;
static _Atomic long mismatches;
static _Atomic unsigned calls; /* the handler's */
static void stamp(void *p, size_t n, uint64_t s)
{
	memcpy(p, &s, 8);
	memcpy((char *)p + n - 8, &s, 8);
}
static void check(const void *p, size_t n, uint64_t s)
{
	uint64_t a, b;
	memcpy(&a, p, 8);
	memcpy(&b, (const char *)p + n - 8, 8);
	if (a != s || b != s)
		atomic_fetch_add(&mismatches, 1);
}

#define HSLOTS 16
struct held {
	void *p;
	size_t n;
	uint64_t s;
};
static __attribute__((unused)) struct held hslot[HSLOTS]; /* the handler's, where it keeps blocks */

/* h's block, if any, checked and freed to pool; h emptied */
static void release_held(struct held *h)
{
	if (h->p) {
		check(h->p, h->n, h->s);
		kp_free(pool, h->p);
		h->p = NULL;
	}
}
/* p (n bytes; NULL: nothing) stamped with a new serial and held in h */
static void hold(struct held *h, void *p, size_t n)
{
	if (p) {
		uint64_t s = atomic_fetch_add(&serial, 1) + 1;
		stamp(p, n, s);
		*h = (struct held){p, n, s};
	}
}
/* each held block of v[0..n) released */
static void free_held(struct held *v, int n)
{
	for (int k = 0; k < n; k++)
		release_held(&v[k]);
}
/* The worker's steps, until `steps` or `max_calls` handler calls: a slot
 * of v[0..nv) at random released if held, else given a block of `size`
 * bytes (plus 0-3 x 4 KiB when spread) from kp_alloc. */
static __attribute__((unused)) void held_steps(struct held *v, int nv, uint64_t seed, long steps, unsigned max_calls,
					       size_t size, int spread)
{
	for (long i = 0; i < steps && atomic_load(&calls) < max_calls; i++) {
		struct held *h = &v[kt_rand(&seed) % (unsigned)nv];
		if (h->p) {
			release_held(h);
			continue;
		}
		size_t n = size + (spread ? (kt_rand(&seed) % 4) * 4096 : 0);
		hold(h, kp_alloc(pool, n, 0), n);
	}
}

#endif
