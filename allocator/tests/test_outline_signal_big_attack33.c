/*
 * test_outline_signal_big_attack33.c - layout:outline, a signal handler
 * that allocates and frees blocks over 64 KiB (alloc.c's path, its thread
 * cache) while its thread allocates and frees small ones, and the other
 * way round: blocks held twice (a stamp of its serial at either end of
 * each block, checked as it is freed), double frees reported that no one
 * made, bytes left in use. A guard (held on s33 atta, release: 0, 0, 0 in
 * 5 runs of each, 1,000-3,000 handler calls a run). Both large is not
 * asserted: the handler's call finds its thread holding the class or pool
 * lock it needs at once and aborts with kpool's line (kp__mutex_lock's
 * documented refusal, 3 of 3 runs within 10 ms), as the inline layout does.
 * Reproduce:
 *   make -C allocator VARIANT=release build/release/tests/test_outline_signal_big_attack33 &&
 *   allocator/build/release/tests/test_outline_signal_big_attack33
 */
#define _GNU_SOURCE 1
#include "ktest.h"

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

static kp_pool *pool;

#include "signal_stamp_attack33.h"
static size_t hsize; /* the handler's sizes: hsize + (0..3) x 4 KiB */
static size_t wsize; /* the worker's */
static void handler(int sig)
{
	(void)sig;
	int e = errno;
	unsigned c = atomic_fetch_add(&calls, 1);
	struct held *h = &hslot[c % HSLOTS];
	release_held(h);
	size_t n = hsize + (c % 4) * 4096;
	hold(h, kp_alloc(pool, n, 0), n);
	errno = e;
}

#define WSLOTS 64
static struct held v[WSLOTS];
static long steps = 6000000; /* or 3,000 handler calls */
static void warm(void)
{
	kp_free(pool, kp_alloc(pool, 8, 0));
	kp_free(pool, kp_alloc(pool, wsize, 0));
}
static void work(void)
{
	held_steps(v, WSLOTS, 99, steps, 3000, wsize, 1);
}
static void drain(void)
{
	free_held(v, WSLOTS);
}

static void round_of(const char *what, size_t w, size_t hs)
{
	pool = kp_create("layout:outline,daemon:off");
	REQUIRE(pool, "kp_create: %s", kp_last_error());
	wsize = w;
	hsize = hs;
	atomic_store(&calls, 0);
	atomic_store(&mismatches, 0);
	memset(hslot, 0, sizeof hslot);
	kt_pestered(handler, SA_RESTART, warm, work, drain, 1, 20000);
	free_held(hslot, HSLOTS);
	int64_t df = kt_stat(pool, "integrity.double_frees");
	int64_t inuse = kt_stat(pool, "primary.in_use_bytes");
	long mm = atomic_load(&mismatches);
	fprintf(stderr, "  %s: %u handler calls, %ld mismatches, %lld double frees, %lld bytes in use\n", what,
		atomic_load(&calls), mm, (long long)df, (long long)inuse);
	CHECK(mm == 0, "%s: %ld blocks held by two at once", what, mm);
	CHECK(df == 0, "%s: %lld double frees reported, none made", what, (long long)df);
	CHECK(inuse == 0, "%s: %lld bytes in use with every block freed", what, (long long)inuse);
	kp_destroy(pool);
}

static void test_big_in_handler_small_in_thread(void)
{
	round_of("small thread/big handler", 256, 66 << 10);
}
static void test_small_in_handler_big_in_thread(void)
{
	round_of("big thread/small handler", 66 << 10, 256);
}

int main(void)
{
	if (getenv("KT_STEPS"))
		steps = atol(getenv("KT_STEPS"));
	RUN(test_big_in_handler_small_in_thread);
	RUN(test_small_in_handler_big_in_thread);
	return ktest_summary();
}
