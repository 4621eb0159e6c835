/*
 * signal_stamp_attack33.h - what the signal attack tests
 * (test_outline_signal_{big,full,calls,nested}_attack33.c,
 * test_outline_signal_aligned_attack36.c) share beside ktest.h's
 * kt_pestered: a block stamped with its serial in its first and last 8
 * bytes (a block held by two at once shows as a mismatch), slots of held
 * blocks (the handler's hslot; the worker's own), the worker's steps on
 * its slots (held_steps), the checks and frees at a round's end
 * (free_held), its verdict (round_verdict) and the rounds in children
 * (fork_rounds). Include after <stdatomic.h>, <stdint.h> and <string.h>,
 * and after the file's `static kp_pool *pool`.
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

/* A round's end, its worker joined: the handler's blocks freed, then the
 * pool's counts on stderr (named `what`; KT_EVENTS=1: its events too) and
 * the round's exit: 0 clean, 77 blocks held twice, double frees, bytes in
 * use or, with refusals, other refusals (invalid frees, corruptions,
 * damaged cache lists). The pool is the caller's to destroy. */
static __attribute__((unused)) int round_verdict(const char *what, bool refusals)
{
	free_held(hslot, HSLOTS);
	int64_t df = kt_stat(pool, "integrity.double_frees");
	int64_t bad = !refusals ? 0
				: kt_stat(pool, "integrity.invalid_frees") + kt_stat(pool, "integrity.corruptions") +
					  kt_stat(pool, "integrity.freelist_errors");
	int64_t inuse = kt_stat(pool, "primary.in_use_bytes");
	long mm = atomic_load(&mismatches);
	if (getenv("KT_EVENTS")) {
		kp_event ev[64];
		size_t ne = kp_events_drain(pool, ev, 64);
		for (size_t i = 0; i < ne; i++)
			fprintf(stderr, "    event %s: %s\n", kp_event_name(ev[i].kind), ev[i].text);
	}
	fprintf(stderr,
		"  %s: %u handler calls, %ld mismatches, %lld double frees, %lld other refusals, %lld bytes in "
		"use\n",
		what, atomic_load(&calls), mm, (long long)df, (long long)bad, (long long)inuse);
	return mm == 0 && df == 0 && bad == 0 && inuse == 0 ? 0 : 77;
}

/* The rounds, each in a child (ktest.h, kt_fork_rounds): a handler's call
 * may find a lock its thread holds on alloc.c's path, kpool's documented
 * refusal (one line, abort), which is allowed; a wrong block is not. */
static __attribute__((unused)) void fork_rounds(int rounds, int (*round)(int r))
{
	int refused;
	int clean = kt_fork_rounds(
		rounds, round, "blocks held twice, double frees, refusals or bytes in use: the counts above", &refused);
	fprintf(stderr, "  %d rounds clean, %d refused by kpool's abort\n", clean, refused);
}

#endif
