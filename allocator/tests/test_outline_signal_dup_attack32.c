/*
 * test_outline_signal_dup_attack32.c - layout:outline, signal handlers that
 * allocate and free small blocks (kp_alloc and kp_free alone) while their
 * threads allocate and free blocks they pass to each other: blocks handed
 * out twice, double frees reported that no one made, bytes left in use.
 *
 * The churn (line_churn_attack32.h): 4 worker threads at a time, each
 * allocating blocks of 1-40 bytes (the classes under a cache line), stamped
 * with a serial, into 512 shared slots and freeing what it takes out of
 * them (cross-thread frees, half the time); a fifth thread sends SIGUSR1 to
 * the workers every ~30 us, and the handler allocates a block of 8, 24 or 40
 * bytes into one of 64 handler slots (atomic exchange) and frees the one it
 * found there (another handler's, often another thread's). Each worker
 * allocates once before it may be signalled (a handler's call while its
 * thread's first call makes its heap aborts, by design: kp__mutex_lock's
 * one line). Asserted: no block held by two at once, no double free
 * reported, nothing in use once every block is freed.
 *
 * Measured on s32-lead 2aee60a (release, KT_WAVES=1000 KT_FLAVOURS=1
 * KT_WARM=1: kp_alloc alone): 13, 121 and 48 mismatches (blocks held by two
 * at once), 18, 29 and 30 double frees reported, 232, 248 and 104 bytes left
 * in use, in 3 runs of ~4,000 handler calls; blocks 64 bytes larger
 * (KT_SHIFT=64, classes of whole lines) 46, 1 and 14 mismatches: not the
 * classes under a line's alone. 4 threads for 400,000 steps each (no
 * thread churn: KT_OPS=400000 KT_WAVES=10): 36 mismatches. On main 6e9c7bd
 * (with KP_ZERO and the rest too): 9 and 33 mismatches, 8 and 16 double
 * frees, 72 and 160 bytes in use. layout:inline under the same churn aborts
 * at once (KT_CONF=layout:inline,daemon:off: a handler's call finds its
 * thread holding the lock it needs: the documented refusal), so that layout
 * was not compared.
 *
 * One thread is enough (test_one_thread_and_its_handler): the thread
 * allocates and frees its own 8-byte blocks (256 slots), a second thread
 * signals it every ~20 us, and its handler allocates an 8-byte block, keeps
 * it, and frees the one it kept the call before (the same heap's: no
 * cross-thread free anywhere). 10-14 double frees reported in 170-310
 * handler calls (gdb: kp__violation <- kp__ol_free_slow why 2, st 0 <- the
 * thread's own kp_free of a block it holds); 350, 295, 295 calls: 13, 9, 9
 * here; on main 6e9c7bd 10 and 9 (199 and 341 calls). One cause, read from the code (not proven by a trace): the owner's fast pop (outline.h, kp__ol_alloc_fast ->
 * kp__ol_pop_fast) reads the index on top of the span's stack, then
 * stores sp - 1 and the record; a handler between the read and the stores
 * pops the same index (kept) and pushes its older block onto the slot the
 * index came from; the interrupted pop then hands out the index the
 * handler holds (two holders: the mismatches) and its sp - 1 drops the
 * handler's pushed block (never handed out again: the bytes left in use).
 * pop_zero's comment (outline.c) assumes a handler's pop frees its block
 * back on top (test_outline_zero_signal_attack29's handler does); one that
 * keeps it and frees another breaks that. The owner's push (kp__ol_free_fast)
 * was not read; a push interrupted alike would lose a block the same way. A fix needs the fast pop to
 * notice an intervening pop (h->allocs, as pop_zero reads it) or a handler
 * to keep off the fast paths while one runs: instructions on the fast path
 * (tests/test_instruction_counts.py budgets), not tried here.
 *
 * Fixed (s33-sig), three causes. (1) The one above: a call into an
 * outline pool now marks its thread's slot for its length (outline.h,
 * kp__ol_enter: kp_alloc's and kp_free's compare of the slot's id is a
 * compare-and-exchange without lock that writes the pool's address there;
 * the inline paths restore the id as they end, the slow paths they jump
 * to as they end), so a handler's call meanwhile matches no fast path and
 * keeps off the heap: its allocation takes alloc.c's path, its free puts
 * the block onto its span's cross-thread list (outline.c, free_nested).
 * The fast paths' instructions stay as they were: the mark is the compare,
 * the unmark one store, and the stack pointer moves by one add or subtract
 * to memory (2 stores fewer), which no handler can interleave with any
 * more (tests/test_instruction_counts.py: kpbench a 66.0 and b 80.4 a
 * pair, as on main; checks off 67.0 -> 66.0 and 81.4 -> 80.2, as checks
 * off now takes checks on's path; c 121.8-122.6). (2) A handler's call during
 * its thread's exit hooks (tcache.c's release of its caches, outline.c's
 * heap_abandon), the signal sent as the worker returned: it counted into
 * a cache already read (16-80 bytes in use in 2-3 runs of 10 once (1) was
 * in) or took the lock the hook held (kpool's abort, 1 run in 10); the
 * hooks now hold signals off (os.c, kp__os_signals_off). (3) A handler's
 * call inside its thread's free of an alloc.c block on alloc.c's thread
 * cache: outline.c's free_classic_marked marks the slot so, and such a
 * handler allocates from the heap and defers its frees of alloc.c blocks
 * (not seen here: these workers free no alloc.c block; by reading).
 * Before, on this branch's base b54c534 (release, 5 runs): the one-thread
 * test 12, 6, 16, 7 and 10 double frees reported; the churn 0, 0, 12, 0
 * and 2 mismatches, 2, 1, 2, 2 and 1 double frees, 104, 0, 8, 8 and 8
 * bytes in use: 5 runs of 5 failed. After: none in 30 runs (release).
 * Reproduce:
 *   make -C allocator VARIANT=release build/release/tests/test_outline_signal_dup_attack32 &&
 *   allocator/build/release/tests/test_outline_signal_dup_attack32
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

#include "line_churn_attack32.h"

static void test_signal_handlers_allocate_and_free(void)
{
	run(getenv("KT_CONF") ? getenv("KT_CONF") : "layout:outline,daemon:off,seed:6", true, false);
}

/* ---- one thread and its handler ---- */

#define OS_SLOTS 256
#define OS_STEPS 3000000
static pthread_t os_thread;
static _Atomic bool os_live, os_stop;
static void *_Atomic os_kept;
static _Atomic unsigned os_calls;
static void os_handler(int sig)
{
	(void)sig;
	int e = errno;
	atomic_fetch_add(&os_calls, 1);
	void *p = kp_alloc(pool, 8, 0);
	void *old = atomic_exchange(&os_kept, p);
	if (old)
		kp_free(pool, old);
	errno = e;
}
static void *os_work(void *arg)
{
	(void)arg;
	static void *v[OS_SLOTS];
	uint64_t seed = 12345;
	void *w = kp_alloc(pool, 8, 0); /* the heap made before the first signal */
	kp_free(pool, w);
	atomic_store(&os_live, true);
	for (long i = 0; i < OS_STEPS && atomic_load(&os_calls) < 400; i++) {
		unsigned k = (unsigned)(kt_rand(&seed) % OS_SLOTS);
		if (v[k]) {
			kp_free(pool, v[k]);
			v[k] = NULL;
		} else
			v[k] = kp_alloc(pool, 8, 0);
	}
	atomic_store(&os_live, false);
	for (int k = 0; k < OS_SLOTS; k++)
		kp_free(pool, v[k]);
	return NULL;
}
static void *os_pester(void *arg)
{
	(void)arg;
	while (!atomic_load(&os_stop)) {
		if (atomic_load(&os_live))
			pthread_kill(os_thread, SIGUSR1);
		struct timespec ts = {0, 20000};
		nanosleep(&ts, NULL);
	}
	return NULL;
}

static void test_one_thread_and_its_handler(void)
{
	pool = kp_create("layout:outline,daemon:off");
	REQUIRE(pool, "kp_create: %s", kp_last_error());
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = os_handler;
	sa.sa_flags = SA_RESTART;
	sigaction(SIGUSR1, &sa, NULL);
	pthread_create(&os_thread, NULL, os_work, NULL);
	pthread_t pt;
	pthread_create(&pt, NULL, os_pester, NULL);
	pthread_join(os_thread, NULL);
	atomic_store(&os_stop, true);
	pthread_join(pt, NULL);
	signal(SIGUSR1, SIG_IGN);
	kp_free(pool, atomic_exchange(&os_kept, NULL));
	int64_t df = kt_stat(pool, "integrity.double_frees");
	fprintf(stderr, "  %u handler calls: %lld double frees reported\n", atomic_load(&os_calls), (long long)df);
	CHECK(df == 0, "%lld double frees reported, none made (one thread, its handler)", (long long)df);
	kp_destroy(pool);
}

int main(void)
{
	RUN(test_one_thread_and_its_handler);
	warm = true;
	flavours = 1;
	waves = 250; /* ~1,000 handler calls: every run of 3 failed at 1,000 waves */
	churn_env();
	RUN(test_signal_handlers_allocate_and_free);
	return ktest_summary();
}
