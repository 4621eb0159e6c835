/*
 * test_outline_signal.c - layout:outline (the default) and a signal handler
 * that allocates and frees while its thread allocates: test_reenter_attack19
 * for outline.c's slow path. Its refill (refill_span) holds its heap's avail
 * lock, a spin lock, and a handler's refill on the same thread spun on it
 * forever (test_preload_attack19's signal-malloc under the preload: 1 run in
 * 4). Now a call made inside a refill takes alloc.c's path (outline.c,
 * ol_busy), and the program ends: done, or kpool's one-line abort where
 * the handler interrupted a section holding a mutex its own path needs (as
 * layout:inline does, test_reenter_attack19; seen under TSan, 1 round in 6).
 * The second test: the same on five classes of about 1 KiB, where a
 * handler's refill relisted a span that the free it interrupted was
 * relisting (span_relist_locked).
 *
 * Each round runs in a child (a 50 us timer, as signal-malloc's, until the
 * handler has run HITS times); the parent is the hang guard: a child alive
 * after HANG_S is killed and counted as hung (a hang is the failure, not a
 * timing: a round takes well under a second).
 */
#define _GNU_SOURCE 1
#include "ktest.h"

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/time.h>

/* Far past a round's length, so that only a thread waiting for itself
 * reaches it. */
#define HANG_S 20
/* Handler runs a round: signal-malloc's 20,000, a few hundred of them
 * inside a refill on this machine. */
#define HITS 20000
/* Rounds: the hang was seen in about 1 run in 4 of signal-malloc; each
 * round here refills far more often (fewer blocks held, more classes). */
#define ROUNDS 6

static kp_pool *sig_pool;
static volatile long hits;
/* The second test's sizes: five classes of 600-1000 bytes (spans of 64 to
 * 100 blocks, so refills and retired spans come often), both in the
 * handler and in the loop, which holds 256 blocks. */
static int relist;
#define RELIST_SIZE(i) ((size_t)(600 + (i) % 5 * 100))
/* Its rounds and the handler's runs a round: on 3c2ec5c (ASan) 2 rounds
 * in 6 of 30,000 runs ended in the stack overflow below, 5 runs in 7 of
 * 100,000. */
#define RELIST_HITS 30000
#define RELIST_ROUNDS 6
static atomic_long bad; /* the freer's failures too */

static void handler(int sig)
{
	(void)sig;
	size_t n = relist ? RELIST_SIZE(hits) : (size_t)(hits % 3000 + 1);
	char *p = kp_alloc(sig_pool, n, 0);
	if (p)
		memset(p, 2, n);
	else
		bad++;
	if (kp_free(sig_pool, p) != 0)
		bad++;
	hits++;
}

/* Blocks the main loop hands to the freer thread: their frees come back
 * to the main thread's spans as cross-thread frees, which its refill takes
 * in under its avail lock (drain_remote): the window a signal must hit. */
#define RING 4096
static void *_Atomic ring[RING];
static atomic_long put_n, took_n;
static atomic_int stop;

static void *freer(void *arg)
{
	(void)arg;
	for (;;) {
		long t = atomic_load(&took_n);
		if (t == atomic_load(&put_n)) {
			if (atomic_load(&stop))
				return NULL;
			sched_yield();
			continue;
		}
		void *p = atomic_exchange(&ring[t % RING], NULL);
		atomic_store(&took_n, t + 1);
		if (kp_free(sig_pool, p) != 0)
			bad++;
	}
}

/* Events that report a block misused (a double or invalid free): none
 * happens in this program, so one is the allocator's own damage. */
static unsigned damage_events(kp_pool *pool)
{
	kp_event ev[64];
	size_t n;
	unsigned got = 0;
	while ((n = kp_events_drain(pool, ev, 64)) > 0)
		for (size_t i = 0; i < n; i++)
			got += ev[i].kind == KP_EV_DOUBLE_FREE || ev[i].kind == KP_EV_INVALID_FREE;
	return got;
}

/* The child: signal-malloc's loop on a pool of its own; 0 when every
 * allocation and free succeeded and no event reports damage. */
static int round_body(void)
{
	sig_pool = kp_create("layout:outline,daemon:off,seed:5");
	if (!sig_pool)
		return 3;
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = handler;
	sa.sa_flags = SA_RESTART;
	sigaction(SIGALRM, &sa, NULL);
	struct itimerval it = {{0, 50}, {0, 50}};
	setitimer(ITIMER_REAL, &it, NULL);
	/* the freer starts with every signal blocked: the timer's lands on the
	 * main thread */
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	pthread_t t;
	int rc = pthread_create(&t, NULL, freer, NULL);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (rc != 0)
		return 3;
	static void *held[256];
	int nheld = relist ? 256 : 64;
	for (long i = 0; i < 200000000 && hits < (relist ? RELIST_HITS : HITS); i++) {
		int k = (int)(i % nheld);
		long q = atomic_load(&put_n);
		if (held[k] && (i & 1) && q - atomic_load(&took_n) < RING) { /* every other block freed there */
			atomic_store(&ring[q % RING], held[k]);
			atomic_store(&put_n, q + 1);
		} else if (kp_free(sig_pool, held[k]) != 0)
			bad++;
		size_t n = relist ? RELIST_SIZE(i / 7) : (size_t)(i * 31) % 20000 + 1;
		held[k] = kp_alloc(sig_pool, n, 0);
		if (held[k])
			memset(held[k], 1, n < 64 ? n : 64);
		else
			bad++;
	}
	struct itimerval off = {{0, 0}, {0, 0}};
	setitimer(ITIMER_REAL, &off, NULL);
	atomic_store(&stop, 1);
	pthread_join(t, NULL);
	for (int k = 0; k < nheld; k++)
		if (kp_free(sig_pool, held[k]) != 0)
			bad++;
	unsigned damage = damage_events(sig_pool);
	kp_destroy(sig_pool);
	return atomic_load(&bad) ? 4 : damage ? 5 : 0;
}

/* One round in a child: its exit status, or -1 if it hung (killed). */
static int run_round(void)
{
	fflush(stdout);
	fflush(stderr);
	pid_t pid = fork();
	if (pid == 0)
		_exit(round_body());
	int status = 0;
	for (int ms = 0; ms < HANG_S * 1000; ms += 10) {
		if (waitpid(pid, &status, WNOHANG) == pid)
			return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
		kt_sleep_ms(10);
	}
	kill(pid, SIGKILL);
	waitpid(pid, &status, 0);
	return -1;
}

static void test_a_handler_that_allocates_inside_a_refill_never_hangs(void)
{
	int hung = 0, failed = 0, aborted = 0;
	for (int r = 0; r < ROUNDS; r++) {
		int st = run_round();
		hung += st == -1;
		/* kp__mutex_lock's one-line abort, as layout:inline's (the handler
		 * interrupted a section holding a mutex its own path needs: the
		 * pool lock in segment_new): allowed, as by signal-malloc's test */
		aborted += st == 128 + SIGABRT;
		failed += st > 0 && st != 128 + SIGABRT;
		if (st > 0)
			fprintf(stderr, "round %d: status %d\n", r, st);
	}
	printf("   %d of %d rounds ended in kpool's one-line abort\n", aborted, ROUNDS);
	CHECK(hung == 0, "%d of %d rounds hung (a handler's refill waiting for its own thread)", hung, ROUNDS);
	CHECK(failed == 0, "%d of %d rounds failed (3: no pool, 4: a call failed, 5: damage reported)", failed, ROUNDS);
}

/* A free to the thread's retired span that relists it (outline.c,
 * free_other_checked, span_relist_locked) and a handler's call that
 * relists the same span meanwhile (its refill's drain_span, the span's
 * cross-thread frees) listed it twice: its avail list then led back to
 * itself, and a refill that took it dry took it again (refill_again)
 * until the stack ran out (SIGSEGV, status 139; 1 under ASan, its
 * report). span_relist_locked relists a span still retired only, as
 * busy_later does. */
static void test_a_handler_that_relists_a_span_never_lists_it_twice(void)
{
	relist = 1;
	int failed = 0;
	for (int r = 0; r < RELIST_ROUNDS; r++) {
		int st = run_round();
		failed += st != 0 && st != 128 + SIGABRT; /* a hang too */
		if (st != 0)
			fprintf(stderr, "round %d: status %d\n", r, st);
	}
	relist = 0;
	CHECK(failed == 0,
	      "%d of %d rounds failed (139, 1 under ASan: the refill's recursion ran out of stack; -1: hung; 5: "
	      "damage)",
	      failed, RELIST_ROUNDS);
}

int main(void)
{
	RUN(test_a_handler_that_allocates_inside_a_refill_never_hangs);
	RUN(test_a_handler_that_relists_a_span_never_lists_it_twice);
	return ktest_summary();
}
