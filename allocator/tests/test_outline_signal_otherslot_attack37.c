/*
 * test_outline_signal_otherslot_attack37.c - test_outline_signal_aligned_attack36
 * on a thread whose outline slot (outline.h, kp__ol_slot) names another
 * pool: the worker's first call is on pool B (layout:outline), then it
 * allocates 48-byte blocks aligned to 64 from pool A (layout:outline:
 * alloc.c's blocks, its thread cache) and frees them, and a second thread
 * signals it every ~20 us; the handler frees its slot's block of A and
 * allocates another aligned one. kp_free(A) on that thread passes neither
 * A's slot test nor the fast word (no outline pool has it: tcache.c) and
 * went to free_other, then free_body: straight into A's thread cache,
 * unmarked (alloc.c, classic_pool), so a handler's kp_alloc_aligned(A)
 * nested in it took the same cache (classic_call found no call to nest
 * in), and a handler's kp_free(A) nested in the thread's kp_alloc_aligned
 * pushed into the cache that call was changing. Asserted, in each of 3
 * rounds (a child each): no block held by two at once, no double free, no
 * other refusal (a damaged cache list), nothing in use; kpool's documented
 * refusal (one line, abort) allowed.
 * Found (s37-robust, main 74a960a, release): 2-3 rounds of 3 failed in each
 * of 5 runs, 4-15 cache lists found damaged a round (freelist_errors),
 * none with KT_NOSIG=1. Fixed in alloc.c (free_other: such a block to
 * kp__free_classic, marked): 15 rounds of 15 clean or refused.
 * KT_NOSIG=1 runs it without the signals, KT_STEPS the steps.
 * Reproduce:
 *   make -C allocator VARIANT=release build/release/tests/test_outline_signal_otherslot_attack37 &&
 *   allocator/build/release/tests/test_outline_signal_otherslot_attack37
 */
#define _GNU_SOURCE 1
#include "ktest.h"

#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>

static kp_pool *pool, *other;

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
	hold(h, kp_alloc_aligned(pool, SIZE, ALIGN, 0), SIZE);
	errno = e;
}

#define WSLOTS 64
static struct held v[WSLOTS];
static long steps = 4000000; /* or 3,000 handler calls */
static void warm(void)
{
	kp_free(other, kp_alloc(other, 16, 0)); /* the slot names the other pool */
	kp_free(pool, kp_alloc_aligned(pool, SIZE, ALIGN, 0));
}
static void work(void)
{
	uint64_t seed = 99;
	for (long i = 0; i < steps && atomic_load(&calls) < 3000; i++) {
		struct held *h = &v[kt_rand(&seed) % WSLOTS];
		if (h->p)
			release_held(h);
		else
			hold(h, kp_alloc_aligned(pool, SIZE, ALIGN, 0), SIZE);
	}
}
static void drain(void)
{
	free_held(v, WSLOTS);
}

/* One round (a child's): 0 clean, 77 blocks held twice, double frees,
 * refusals or bytes in use (the counts on stderr), 2 no pool. */
static int round_body(int r)
{
	(void)r;
	const char *conf = getenv("KT_CONF") ? getenv("KT_CONF") : "layout:outline,daemon:off";
	pool = kp_create(conf);
	other = kp_create(conf);
	if (!pool || !other)
		return 2;
	kt_pestered(handler, SA_RESTART, warm, work, drain, 1, 20000);
	int rc = round_verdict("other slot", true);
	kp_destroy(pool);
	kp_destroy(other);
	return rc;
}

#define ROUNDS 3
static void test_outline_other_slot(void)
{
	fork_rounds(ROUNDS, round_body);
}

int main(void)
{
	if (getenv("KT_STEPS"))
		steps = atol(getenv("KT_STEPS"));
	RUN(test_outline_other_slot);
	return ktest_summary();
}
