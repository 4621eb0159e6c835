/*
 * test_outline_signal_calls_attack33.c - layout:outline, a signal handler
 * that calls kp_realloc (a block grown and shrunk across calls, KP_ZERO
 * now and then), kp_alloc_aligned (64 B - 4 KiB alignment) and kp_alloc
 * with KP_ZERO while its thread allocates and frees 48-byte blocks: inside
 * the thread's marked call (outline.h, kp__ol_enter) those take alloc.c's
 * path, a realloc's old block goes to free_nested. Asserted, in each of 4
 * rounds (a child each): a realloc'd block's serial followed it, each
 * aligned block aligned and its stamp intact, each KP_ZERO block zero, the
 * worker's stamps intact, no double free reported, nothing in use at the
 * end; or kpool's documented refusal (one line, abort).
 * A guard for s33-sig's marked slot: on main 6e9c7bd (release) 3 rounds
 * of 4 failed (3, 3, 0, 0 blocks held twice; 1, 1, 0, 0 double frees;
 * 112, 56, 0, 112 bytes in use); on s33 atta 4 of 4 clean (release, ASan,
 * TSan), and with checks:off and daemon:on,decay_ms:1 (KT_CONF). poison:on:
 * test_outline_signal_poison_attack33 (fails).
 * Reproduce:
 *   make -C allocator VARIANT=release build/release/tests/test_outline_signal_calls_attack33 &&
 *   allocator/build/release/tests/test_outline_signal_calls_attack33
 */
/* The pool the rounds use (test_outline_signal_poison_attack33 includes this
 * file with its own). */
#ifndef SIGCALLS_CONF
#define SIGCALLS_CONF "layout:outline,daemon:off"
#endif
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
static _Atomic long nulls;

#define HN 8
/* realloc chains and aligned blocks, kept across calls in a slot each */
static void *kept_r, *kept_a;
static size_t kept_rn;
static uint64_t kept_rs, kept_as;
static void handler(int sig)
{
	(void)sig;
	int e = errno;
	unsigned c = atomic_fetch_add(&calls, 1);
	/* a block grown and shrunk by kp_realloc across calls: its first 8
	 * bytes (its serial) must follow it */
	size_t n = 8 + (size_t)(c * 37 % 3000);
	if (kept_r) {
		uint64_t a;
		memcpy(&a, kept_r, 8);
		if (a != kept_rs)
			atomic_fetch_add(&mismatches, 1);
	}
	void *r = kp_realloc(pool, kept_r, n, c % 5 == 0 ? KP_ZERO : 0);
	if (!r)
		atomic_fetch_add(&nulls, 1);
	else {
		kept_r = r;
		kept_rn = n;
		kept_rs = atomic_fetch_add(&serial, 1) + 1;
		memcpy(r, &kept_rs, 8);
	}
	/* an aligned block, 64 B - 4 KiB alignment, and calloc-like zeroed ones */
	if (kept_a) {
		uint64_t a;
		memcpy(&a, kept_a, 8);
		if (a != kept_as)
			atomic_fetch_add(&mismatches, 1);
		kp_free(pool, kept_a);
		kept_a = NULL;
	}
	size_t al = (size_t)64 << (c % 7);
	void *q = kp_alloc_aligned(pool, 24 + c % 500, al, 0);
	if (!q || ((uintptr_t)q & (al - 1)))
		atomic_fetch_add(&nulls, 1);
	else {
		kept_a = q;
		kept_as = atomic_fetch_add(&serial, 1) + 1;
		memcpy(q, &kept_as, 8);
	}
	for (int i = 0; i < HN; i++) {
		size_t zn = 16 + (size_t)i * 40;
		uint8_t *z = kp_alloc(pool, zn, KP_ZERO);
		if (!z) {
			atomic_fetch_add(&nulls, 1);
			continue;
		}
		for (size_t j = 0; j < zn; j++)
			if (z[j]) {
				atomic_fetch_add(&mismatches, 1);
				break;
			}
		memset(z, 0xee, zn);
		kp_free(pool, z);
	}
	errno = e;
}

#define WSLOTS 64
static struct held v[WSLOTS];
static long steps = 20000000;
static unsigned max_calls = 20000;
static void warm(void)
{
	kp_free(pool, kp_alloc(pool, 48, 0));
}
static void work(void)
{
	held_steps(v, WSLOTS, 7, steps, max_calls, 48, 0);
}
static void drain(void)
{
	free_held(v, WSLOTS);
}

static int round_body(int r)
{
	(void)r;
	pool = kp_create(getenv("KT_CONF") ? getenv("KT_CONF") : SIGCALLS_CONF);
	if (!pool)
		return 2;
	kt_pestered(handler, SA_RESTART, warm, work, drain, 2, 5000);
	kp_free(pool, kept_r);
	kp_free(pool, kept_a);
	kept_r = kept_a = NULL;
	int64_t df = kt_stat(pool, "integrity.double_frees");
	int64_t inuse = kt_stat(pool, "primary.in_use_bytes");
	long mm = atomic_load(&mismatches);
	fprintf(stderr,
		"  %u handler calls: %ld mismatches, %lld double frees, %lld bytes in use, "
		"%ld nulls\n",
		atomic_load(&calls), mm, (long long)df, (long long)inuse, atomic_load(&nulls));
	kp_destroy(pool);
	return mm == 0 && df == 0 && inuse == 0 ? 0 : 77;
}

/* Each round in a child: a handler nested in a handler on alloc.c's path
 * may find the class lock the outer one holds, kpool's documented refusal
 * (one line, abort), which is allowed; a wrong block is not. */
static void test_nested_handlers(void)
{
	fork_rounds(4, round_body);
}

int main(void)
{
	if (getenv("KT_CALLS"))
		max_calls = (unsigned)atol(getenv("KT_CALLS"));
	RUN(test_nested_handlers);
	return ktest_summary();
}
