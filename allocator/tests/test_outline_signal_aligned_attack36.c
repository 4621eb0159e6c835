/*
 * test_outline_signal_aligned_attack36.c - kp_alloc_aligned and kp_realloc
 * on a layout:outline pool, nested in a signal handler inside its thread's
 * own call of them. An alignment past 16 takes alloc.c's blocks, and a
 * kp_realloc of such a block alloc.c's path (kp__realloc_classic): both on
 * alloc.c's thread cache. s35 kept a handler's kp_alloc and kp_free off the
 * cache its thread's call on that path is changing (alloc.c: classic_pool,
 * classic_nocache, classic_later); were these two calls kept off it too?
 * The worker allocates 48-byte blocks aligned to 64 in 64 slots, grows and
 * shrinks them by kp_realloc within their class and frees them, each
 * stamped with a serial at either end; a second thread signals it every
 * ~20 us, and the handler frees its slot's block, then allocates one
 * aligned (and reallocs it). Asserted: no block held by two at once, no
 * double free reported, nothing in use at the end.
 * Each of 3 rounds in a child: kpool's documented refusal (one line,
 * abort: the handler needs a class lock its thread holds on alloc.c's
 * path) is allowed, as in test_outline_signal_full_attack33.
 * Found (s36-robust, main f41f419 with the deferral's vetting) in release:
 * 9 of 9 rounds of 3 runs failed, 3-9 thread-cache lists found damaged a
 * round ("bad cache link, list quarantined", integrity.freelist_errors),
 * none without the signals. Fixed in alloc.c (classic_call: both calls on
 * that path marked, as kp__alloc_classic's): 0 of 30 rounds failed (3
 * refused by kpool's abort). KT_NOSIG=1 runs it without the signals (kt_pestered),
 * KT_STEPS the steps, KT_EVENTS=1 prints each round's events. Under TSan
 * every round met the refusal (0 clean of 9, s36-robust): there it shows
 * no crash only.
 * Reproduce:
 *   make -C allocator VARIANT=release build/release/tests/test_outline_signal_aligned_attack36 &&
 *   allocator/build/release/tests/test_outline_signal_aligned_attack36
 */
#define _GNU_SOURCE 1
#include "ktest.h"

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <sys/wait.h>

static kp_pool *pool;

#include "signal_stamp_attack33.h"
#define ALIGN 64 /* past 16: alloc.c's blocks (kp_alloc_aligned), not outline.c's */
#define SIZE 48	 /* a small class of alloc.c's, its thread cache's */
static void handler(int sig)
{
	(void)sig;
	int e = errno;
	unsigned c = atomic_fetch_add(&calls, 1);
	struct held *h = &hslot[c % HSLOTS];
	release_held(h);
	size_t n = SIZE;
	void *p = kp_alloc_aligned(pool, n, ALIGN, 0);
	if (p && (c & 1)) { /* every other one resized: kp_realloc's path nested too */
		void *q = kp_realloc(pool, p, n + 8, 0);
		if (q) {
			p = q;
			n += 8;
		}
	}
	hold(h, p, n);
	errno = e;
}

#define WSLOTS 64
static struct held v[WSLOTS];
static long steps = 4000000; /* or 3,000 handler calls */
static void warm(void)
{
	kp_free(pool, kp_alloc(pool, 16, 0)); /* the slot names the pool (outline.h) */
}
static void work(void)
{
	uint64_t seed = 99;
	for (long i = 0; i < steps && atomic_load(&calls) < 3000; i++) {
		unsigned k = (unsigned)(kt_rand(&seed) % WSLOTS);
		struct held *h = &v[k];
		if (h->p && (i & 3) == 0) { /* resized within the class, or moved */
			check(h->p, h->n, h->s);
			size_t n = h->n == SIZE ? SIZE + 8 : SIZE;
			hold(h, kp_realloc(pool, h->p, n, 0), n);
		} else if (h->p) {
			release_held(h);
		} else {
			hold(h, kp_alloc_aligned(pool, SIZE, ALIGN, 0), SIZE);
		}
	}
}
static void drain(void)
{
	free_held(v, WSLOTS);
}

/* One round (a child's): 0 clean, 77 blocks held twice, double frees or
 * bytes in use (the counts on stderr), 2 no pool. */
static int round_body(int r)
{
	(void)r;
	pool = kp_create(getenv("KT_CONF") ? getenv("KT_CONF") : "layout:outline,daemon:off");
	if (!pool)
		return 2;
	kt_pestered(handler, SA_RESTART, warm, work, drain, 1, 20000);
	int rc = round_verdict("outline aligned", true);
	kp_destroy(pool);
	return rc;
}

#define ROUNDS 3
static void test_outline_aligned(void)
{
	fork_rounds(ROUNDS, round_body);
}

int main(void)
{
	if (getenv("KT_STEPS"))
		steps = atol(getenv("KT_STEPS"));
	RUN(test_outline_aligned);
	return ktest_summary();
}
