/*
 * test_outline_fc_signal_attack31b.c - s31-att: a signal handler that
 * allocates while its thread is inside a cross-thread free (outline.c:
 * free_remote_slow -> fc_put -> fc_flush). The foreign cache is the
 * thread's and no lock or busy section covers it: kp__ol_refill pops it
 * (fc_pop) before refill_span's busy_enter, and fc_put/fc_flush run
 * outside any busy section. A handler's kp_alloc of the class being
 * flushed pops an entry fc_flush has claimed already (OL_LISTED: its
 * rec_claim fails, raced_dfree reports a double free no one made, and the
 * pop goes on: fc_n lowered again), so fc_flush's closing
 * memmove(ent, ent + m, (n - m) * 8) reads n < m: an unsigned wrap, a copy
 * of ~32 GiB, SIGSEGV. Found by test_outline_bpurge_race_attack31b's
 * signal round (backtrace: fc_flush <- fc_put <- free_remote_slow <- kp_free
 * on a worker; 2 of 25 runs).
 *
 * Here: thread A allocates blocks of 4,088 B and hands them to B; B frees
 * them (cross-thread: into its foreign cache, flushed each time it fills);
 * a third thread interrupts B with SIGUSR1 every ~20 us, and B's handler
 * allocates a block of the same class (kept, freed by B later outside the
 * handler). Each round runs in a child. Asserted: no child dies, and no
 * double free is reported (the program makes none).
 * Failed on s31-mem a08a69c and on main 741539f: 6 of 6 children killed by
 * SIGSEGV (0.03 s; gdb: fc_flush <- fc_put <- free_remote_slow <- kp_free);
 * reproduce:
 *   make -C allocator VARIANT=release build/release/tests/test_outline_fc_signal_attack31b && \
 *   allocator/build/release/tests/test_outline_fc_signal_attack31b
 * Fixed (s31-lead, outline.c's ol_st): fc_put in a busy section, the
 * cache's pushes and pops marked; a handler's allocation then takes
 * alloc.c's path and its cross-thread free lists its block. With the flush
 * alone marked, 1-14 double frees were reported a child (the handler's pop
 * inside its thread's push); 0 of 48 children now.
 */
#define _GNU_SOURCE 1
#include "ktest.h"

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <sys/wait.h>
#include <unistd.h>

#define ROUNDS 6
#define RUN_MS 700
#define SZ 4088 /* the 4 KiB class with its canary: 16 blocks fill a foreign cache (OL_FC_BYTES) */
#define Q 256

static kp_pool *pool;
static atomic_bool stop;
static pthread_t tb;
static void *_Atomic q[Q];
static void *hkept[4096];
static volatile sig_atomic_t nkept;

static void handler(int sig)
{
	(void)sig;
	int e = errno;
	if (nkept < (int)(sizeof hkept / sizeof hkept[0])) {
		void *p = kp_alloc(pool, SZ, 0);
		if (p) {
			memset(p, 0x5a, 64);
			hkept[nkept++] = p;
		}
	}
	errno = e;
}

static void *producer(void *arg)
{
	(void)arg;
	unsigned i = 0;
	while (!atomic_load(&stop)) {
		void *p = kp_alloc(pool, SZ, 0);
		if (!p)
			continue;
		memset(p, 1, 64);
		void *want = NULL;
		while (!atomic_compare_exchange_weak(&q[i % Q], &want, p)) {
			if (atomic_load(&stop)) {
				kp_free(pool, p);
				return NULL;
			}
			want = NULL;
			sched_yield();
		}
		i++;
	}
	return NULL;
}

static void *consumer(void *arg)
{
	(void)arg;
	unsigned i = 0;
	while (!atomic_load(&stop)) {
		void *p = atomic_exchange(&q[i % Q], NULL);
		if (!p) {
			sched_yield();
			continue;
		}
		kp_free(pool, p); /* cross-thread: the foreign cache */
		i++;
		if (nkept > 2048) { /* the handler's blocks, freed outside it */
			sigset_t s, o;
			sigemptyset(&s);
			sigaddset(&s, SIGUSR1);
			pthread_sigmask(SIG_BLOCK, &s, &o);
			for (int k = 0; k < nkept; k++)
				kp_free(pool, hkept[k]);
			nkept = 0;
			pthread_sigmask(SIG_SETMASK, &o, NULL);
		}
	}
	return NULL;
}

static void *signaller(void *arg)
{
	(void)arg;
	while (!atomic_load(&stop)) {
		pthread_kill(tb, SIGUSR1);
		usleep(20);
	}
	return NULL;
}

static int child(void)
{
	pool = kp_create("layout:outline,seed:9");
	if (!pool)
		return 2;
	struct sigaction sa = {.sa_handler = handler};
	sigemptyset(&sa.sa_mask);
	sa.sa_flags = SA_RESTART;
	sigaction(SIGUSR1, &sa, NULL);
	pthread_t ta, ts;
	pthread_create(&ta, NULL, producer, NULL);
	pthread_create(&tb, NULL, consumer, NULL);
	pthread_create(&ts, NULL, signaller, NULL);
	kt_sleep_ms(RUN_MS);
	atomic_store(&stop, true);
	pthread_join(ts, NULL);
	pthread_join(ta, NULL);
	pthread_join(tb, NULL);
	int64_t df = kt_stat(pool, "integrity.double_frees");
	printf("   child: %lld double frees reported\n", (long long)df);
	fflush(stdout);
	return df ? 3 : 0;
}

static void test_handler_alloc_during_remote_free(void)
{
	unsigned died = 0, reported = 0;
	for (int r = 0; r < ROUNDS; r++) {
		fflush(stdout);
		pid_t pid = fork();
		REQUIRE(pid >= 0, "fork");
		if (pid == 0)
			_exit(child());
		int st = 0;
		waitpid(pid, &st, 0);
		if (WIFSIGNALED(st)) {
			died++;
			printf("   round %d: killed by signal %d\n", r, WTERMSIG(st));
		} else if (WEXITSTATUS(st) == 3)
			reported++;
		else
			REQUIRE(WEXITSTATUS(st) == 0, "child exit %d", WEXITSTATUS(st));
	}
	printf("   %d rounds: %u children died, %u reported double frees no one made\n", ROUNDS, died, reported);
	CHECK(died == 0, "%u of %d children died", died, ROUNDS);
	CHECK(reported == 0, "%u of %d children reported a double free", reported, ROUNDS);
}

int main(void)
{
	RUN(test_handler_alloc_during_remote_free);
	return ktest_summary();
}
