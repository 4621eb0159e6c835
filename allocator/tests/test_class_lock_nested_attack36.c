/*
 * test_class_lock_nested_attack36.c - a call into the pool that needs the
 * class lock its own thread holds (a signal handler's, the lock taken by
 * the call it interrupted), while more signals come: kpool's refusal (one
 * line, SIGABRT: kp__mutex_lock), or handlers nested without end?
 * kp__class_lock_wait spins up to 50 us before it takes the mutex (whose
 * kp__mutex_lock refuses a lock the thread holds); a signal taken in the
 * spin ran a handler that needed the same lock and spun in turn. The
 * moment made on purpose: the test thread holds the class lock of 48-byte
 * blocks (kp__class_lock, as a refill does) and calls kp_alloc of that
 * class on a fresh layout:inline pool (its cache empty: a refill); a
 * timer signals it every 40 us, and the handler (SA_NODEFER)
 * allocates a block of the class too, counting how deep handlers nest.
 * Asserted, in each of 10 rounds (a child each): it ends with SIGABRT, no
 * handler nested past 64 deep.
 * Found (s36-robust): test_outline_signal_nested_attack33's ASan deaths
 * (KNOWN_FAILING: DEADLYSIGNAL with no report; 2 of ~40 runs beside the
 * TSan suite, a core: 1,423 handlers deep in kp__class_lock_wait, the
 * stack run out). Here on main f41f419: 30 of 30 rounds (3 runs) nested
 * past 64 deep; with the fix (transfer.c: kp__mutex_mine first) 100 of 100
 * refused at once.
 * Reproduce:
 *   make -C allocator VARIANT=release build/release/tests/test_class_lock_nested_attack36 &&
 *   allocator/build/release/tests/test_class_lock_nested_attack36
 */
#define _GNU_SOURCE 1
#include "ktest.h"

#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <sys/time.h>
#include <sys/wait.h>

#include "internal.h"

#define DEEP 64	  /* a refusal at once: 1-2 deep (more: the thread slowed, ASan, preempted); main's 1,423 */
#define ROUNDS 10 /* each a few ms; main nests past 64 in every one */

static kp_pool *pool;
static _Atomic int depth;
static _Atomic bool armed;
static _Atomic unsigned seen;

static void handler(int sig)
{
	(void)sig;
	atomic_fetch_add(&seen, 1);
	if (!atomic_load(&armed))
		return;
	if (atomic_fetch_add(&depth, 1) + 1 > DEEP) {
		static const char msg[] = "  handlers nested past 64 deep\n";
		(void)!write(2, msg, sizeof msg - 1);
		_exit(99);
	}
	kp_free(pool, kp_alloc(pool, 48, 0));
	atomic_fetch_sub(&depth, 1);
}

static int child(int r)
{
	(void)r;
	pool = kp_create("layout:inline,daemon:off");
	if (!pool)
		return 2;
	unsigned cls = kp__class_of(48 + KP_HDR + KP_CANARY);
	/* the thread's cache made first (its mappings faulted in), with a
	 * block of another class: the refill below is all that is left */
	kp_free(pool, kp_alloc(pool, 1000, 0));
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = handler;
	sa.sa_flags = SA_RESTART | SA_NODEFER;
	sigaction(SIGALRM, &sa, NULL);
	pthread_mutex_lock(kp__class_lock(pool, cls)); /* as a refill of the class holds it */
	/* SIGALRM every 40 us from a timer on this thread's CPU (hrtimer):
	 * a few inside each 50 us spin, none nested, with no other thread to schedule */
	struct itimerval it = {{0, 40}, {0, 40}};
	setitimer(ITIMER_REAL, &it, NULL);
	while (atomic_load(&seen) < 10) /* the signals coming already */
		sched_yield();
	atomic_store(&armed, true);
	void *p = kp_alloc(pool, 48, 0); /* its cache empty: a refill, the lock held */
	struct itimerval off = {{0, 0}, {0, 0}};
	setitimer(ITIMER_REAL, &off, NULL);
	fprintf(stderr, "  kp_alloc returned %p with the class lock held\n", p);
	return 3;
}

static void test_refused_not_nested(void)
{
	int refused;
	int clean = kt_fork_rounds(ROUNDS, child, "not kpool's refusal: handlers nested deep (99), or the call went on",
				   &refused);
	CHECK(refused == ROUNDS && clean == 0, "%d of %d refused, %d clean", refused, ROUNDS, clean);
}

int main(void)
{
	RUN(test_refused_not_nested);
	return ktest_summary();
}
