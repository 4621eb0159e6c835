/*
 * test_outline_signal_stats_deadlock_attack32.c - s32-attm: a signal
 * handler's allocation on a thread that holds layout:outline's pool lock
 * (ol->lock: fc_steal, inside refill_span's busy section) against another
 * thread's kp_stats_json. The handler's call takes alloc.c's path
 * (ol_busy: kp__alloc_classic), whose first small block grows the
 * classic primary (kp__primary_grow: release_mu, then pool->lock), while
 * kp_stats_json holds pool->lock (kp__stats_primary) and asks for ol->lock
 * (kp__ol_in_use): each thread waits for the other's lock, for good.
 * kp__mutex_lock's abort catches only a lock its own thread holds. Found
 * by TSan in test_outline_hand_race_attack32's signal round
 * (lock-order-inversion, M97 ol->lock => M7 release_mu => M5 pool->lock
 * => M97); pre-existing (main 6e9c7bd), not s32-mem's.
 * Here the handler allocates only when its thread holds ol->lock (a way to
 * pick the moment: any handler that allocates meets it in time) and waits
 * 20 ms first, so that the stats thread is waiting for ol->lock. Rounds in
 * children with a watchdog: a child still running after 5 s hung (now
 * ROUND_LIMIT_S, below). On
 * s32-mem 3c14b0b: 1 round of 3 hung (2 where the moment never came in
 * 3 s); gdb: the handler in tcache_new waiting for pool->lock under
 * fc_steal (ol->lock held), the stats thread in kp__ol_in_use waiting for
 * ol->lock under kp__stats_primary (pool->lock held), the stepper waiting
 * for ol->lock in return_idle. fork_prepare takes the same order
 * (pool->lock, then kp__ol_fork's ol->lock), so a fork meets it too: the
 * fix is the handler's path under ol->lock (it may take no lock ordered
 * before ol->lock: refuse, or abort with kpool's line), not kp_stats alone.
 * Fixed (s33-sig): kp__alloc_classic, alloc.c's path for an outline
 * pool, finds its thread holding ol->lock (kp__mutex_mine: the lock's
 * holder, as kp__mutex_lock tests it; kpool never comes there holding
 * it, so the call is a handler's) and tries its locks without waiting
 * (pool.c, kp__mutex_nowait, lock_bounded): served while no holder waits
 * for this thread (test_outline_signal_dup_attack32's handlers, often
 * inside fc_steal, are), kpool's one line and abort after 2 s of tries
 * when one does, as kp__mutex_lock refuses a lock its thread holds. (An
 * abort at once on ol->lock held failed the dup test's handlers, which
 * the old path served.) test_handler_alloc_under_held_ol_lock makes the
 * moment every time (the test takes ol->lock itself, as fc_steal holds
 * it, waits until the stats thread holds pool->lock, and raises the
 * signal; the handler asks for 1 MiB: alloc.c's path without a busy
 * section): before the fix 3 of 3 rounds hung; after it 3 of 3 aborted
 * with the line. The rounds above (the moment by chance): 2 of 6 hung
 * before (4 never met it), none after.
 * Session 35 (s35-sig): in a make test one chance round of 6 "hung"
 * (KNOWN_FAILING since). No hang was found: 375 rounds alone ("one")
 * beside two busy loops (up to three such loops at once), 20 of them
 * with the moment, each ended by itself within 5.5 s; gdb in one with
 * the moment: the handler in lock_bounded (pool->lock), the stats thread
 * waiting for ol->lock, as designed. But a round's own length passes the
 * old 5 s watchdog: up to 3 s (300 sleeps of 10 ms, longer under load)
 * for the moment, then the handler's 20 ms and its tries for
 * KP_NOWAIT_NS (pool.c: 2 s) before kpool's abort; rounds without the
 * moment took up to 5.38 s, one with it 5.48 s. The watchdog is now
 * ROUND_LIMIT_S.
 * Reproduce: make -C allocator VARIANT=release build/release/tests/test_outline_signal_stats_deadlock_attack32
 * && allocator/build/release/tests/test_outline_signal_stats_deadlock_attack32
 */
#define _GNU_SOURCE 1
#include "ktest.h"
#include "outline.h"

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/syscall.h>
#include <time.h>

static kp_pool *pool;
static atomic_bool stop;
/* A child still running after this long hung. A round takes up to 3 s
 * waiting for the moment, 20 ms in the handler, and 2 s of tries
 * (pool.c, KP_NOWAIT_NS) before kpool's abort: up to 5.48 s seen beside
 * busy loops, where the old 5 s limit called such a round hung. A
 * deadlock never ends, so the limit can be far past that: about 6x. */
#define ROUND_LIMIT_S 30
static atomic_int fired, my_tid_a;
static pthread_t ta;

static void handler(int sig)
{
	(void)sig;
	int e = errno;
	int tid = atomic_load(&my_tid_a);
	if (!atomic_load(&fired) && tid && pool->ol->lock.__data.__owner == tid) {
		atomic_store(&fired, 1);
		struct timespec ts = {0, 20 * 1000 * 1000};
		nanosleep(&ts, NULL);		  /* the stats thread now waits for ol->lock */
		void *p = kp_alloc(pool, 200, 0); /* busy: alloc.c's path, its primary's first grow */
		(void)p;
		atomic_store(&fired, 2);
	}
	errno = e;
}

/* new spans all the time: its blocks of a page and more, a few MiB, all
 * freed, the stepper gives the wholly free segments back (decay_ms:1),
 * and the next round's spans come from span_adopt (ol->lock held, over
 * the other heaps' lists) and segment_for */
static void *alloc_thread(void *arg)
{
	(void)arg;
	atomic_store(&my_tid_a, (int)syscall(SYS_gettid));
	static void *p[1024];
	while (!atomic_load(&stop)) {
		for (int i = 0; i < 1024; i++)
			p[i] = kp_alloc(pool, 4000 + (size_t)(i % 16) * 1024, 0);
		for (int i = 0; i < 1024; i++)
			kp_free(pool, p[i]);
	}
	return NULL;
}

/* other heaps with listed spans: span_adopt walks them under ol->lock */
static void *other_thread(void *arg)
{
	(void)arg;
	void *q[256];
	while (!atomic_load(&stop)) {
		for (int i = 0; i < 256; i++)
			q[i] = kp_alloc(pool, 4000 + (size_t)(i % 16) * 1024, 0);
		for (int i = 0; i < 256; i++)
			kp_free(pool, q[i]);
		kp_daemon_step(pool, 50); /* segments wholly free given back */
	}
	return NULL;
}

static void *stats_thread(void *arg)
{
	(void)arg;
	char buf[8192];
	while (!atomic_load(&stop))
		kp_stats_json(pool, buf, sizeof buf);
	return NULL;
}

static void *signaller(void *arg)
{
	(void)arg;
	while (!atomic_load(&stop) && atomic_load(&fired) != 2) {
		pthread_kill(ta, SIGUSR1);
		struct timespec ts = {0, 20 * 1000};
		nanosleep(&ts, NULL);
	}
	return NULL;
}

static int one_round(void)
{
	pool = kp_create("layout:outline,daemon:off,step_clock:on,prefault:off,decay_ms:1,seed:9");
	if (!pool)
		return 100;
	struct sigaction sa = {.sa_handler = handler};
	sigemptyset(&sa.sa_mask);
	sa.sa_flags = SA_RESTART;
	sigaction(SIGUSR1, &sa, NULL);
	pthread_t tb, ts, tg;
	pthread_create(&ta, NULL, alloc_thread, NULL);
	pthread_create(&tb, NULL, other_thread, NULL);
	pthread_create(&ts, NULL, stats_thread, NULL);
	pthread_create(&tg, NULL, signaller, NULL);
	for (int i = 0; i < 300 && atomic_load(&fired) != 2; i++)
		kt_sleep_ms(10);
	kt_sleep_ms(50);
	atomic_store(&stop, true);
	pthread_join(tg, NULL);
	pthread_join(ta, NULL);
	pthread_join(tb, NULL);
	pthread_join(ts, NULL);
	return atomic_load(&fired) == 2 ? 0 : 50; /* 50: the moment never came */
}

static void test_handler_alloc_under_ol_lock_with_stats(void)
{
	unsigned hung = 0, done = 0, missed = 0, other = 0;
	for (int r = 0; r < 6; r++) {
		fflush(stdout);
		pid_t pid = fork();
		REQUIRE(pid >= 0, "fork");
		if (pid == 0)
			_exit(one_round());
		int st = 0;
		bool over = false;
		for (int t = 0; t < ROUND_LIMIT_S * 100 && !over; t++) {
			if (waitpid(pid, &st, WNOHANG) == pid)
				over = true;
			else
				usleep(10000);
		}
		if (!over) {
			hung++;
			kill(pid, SIGKILL);
			waitpid(pid, &st, 0);
			continue;
		}
		if (WIFEXITED(st) && WEXITSTATUS(st) == 0)
			done++;
		else if (WIFEXITED(st) && WEXITSTATUS(st) == 50)
			missed++;
		else if (WIFSIGNALED(st) && WTERMSIG(st) == SIGABRT)
			done++; /* kpool's one-line abort: by design */
		else
			other++;
	}
	printf("   6 rounds: %u hung, %u done, %u where the moment never came, %u other\n", hung, done, missed, other);
	CHECK(hung == 0, "%u of 6 rounds hung (ol->lock against pool->lock)", hung);
	CHECK(other == 0, "%u rounds died otherwise", other);
}

/* ---- the same moment, made: the thread holds ol->lock itself ---- */

/* The state a handler finds when its signal interrupts fc_steal or
 * span_adopt (ol->lock held), made by the test: it takes ol->lock, waits
 * until a stats thread holds pool->lock and waits for ol->lock, and raises
 * the signal; the handler asks for 1 MiB (alloc.c's path, its pool->lock:
 * kp__ol_alloc past the classes), so no busy section is needed. */
static atomic_int held_state; /* 1: the handler runs, 2: it returned */
static void held_handler(int sig)
{
	(void)sig;
	int e = errno;
	atomic_store(&held_state, 1);
	void *p = kp_alloc(pool, 1 << 20, 0);
	(void)p;
	atomic_store(&held_state, 2);
	errno = e;
}

static int one_held_round(void)
{
	pool = kp_create("layout:outline,daemon:off");
	if (!pool)
		return 100;
	struct sigaction sa = {.sa_handler = held_handler};
	sigemptyset(&sa.sa_mask);
	sigaction(SIGUSR1, &sa, NULL);
	void *w = kp_alloc(pool, 100, 0); /* this thread's heap */
	kp_free(pool, w);
	pthread_mutex_lock(&pool->ol->lock); /* as fc_steal holds it */
	pthread_t ts;
	pthread_create(&ts, NULL, stats_thread, NULL);
	/* the stats thread in kp__ol_in_use: pool->lock held, ol->lock awaited */
	for (int i = 0; i < 2000 && !pool->lock.__data.__owner; i++)
		kt_sleep_ms(1);
	kt_sleep_ms(20);
	if (!pool->lock.__data.__owner)
		return 50; /* the moment never came */
	raise(SIGUSR1);
	pthread_mutex_unlock(&pool->ol->lock);
	atomic_store(&stop, true);
	pthread_join(ts, NULL);
	return atomic_load(&held_state) == 2 ? 0 : 60;
}

static void test_handler_alloc_under_held_ol_lock(void)
{
	unsigned hung = 0, done = 0, missed = 0, other = 0;
	for (int r = 0; r < 3; r++) {
		fflush(stdout);
		pid_t pid = fork();
		REQUIRE(pid >= 0, "fork");
		if (pid == 0)
			_exit(one_held_round());
		int st = 0;
		bool over = false;
		for (int t = 0; t < ROUND_LIMIT_S * 100 && !over; t++) { /* a round: ~50 ms, or 2 s to the abort */
			if (waitpid(pid, &st, WNOHANG) == pid)
				over = true;
			else
				usleep(10000);
		}
		if (!over) {
			hung++;
			kill(pid, SIGKILL);
			waitpid(pid, &st, 0);
			continue;
		}
		if ((WIFEXITED(st) && WEXITSTATUS(st) == 0) || (WIFSIGNALED(st) && WTERMSIG(st) == SIGABRT))
			done++; /* served, or kpool's one-line abort: by design */
		else if (WIFEXITED(st) && WEXITSTATUS(st) == 50)
			missed++;
		else
			other++;
	}
	printf("   3 rounds: %u hung, %u done, %u where the moment never came, %u other\n", hung, done, missed, other);
	CHECK(hung == 0, "%u of 3 rounds hung (ol->lock against pool->lock)", hung);
	CHECK(other == 0, "%u rounds died otherwise", other);
	CHECK(missed == 0, "%u rounds never made the moment", missed);
}

int main(int argc, char **argv)
{
	if (argc > 1 && !strcmp(argv[1], "one")) /* one round in this process (a debugger's) */
		return one_round();
	RUN(test_handler_alloc_under_held_ol_lock);
	RUN(test_handler_alloc_under_ol_lock_with_stats);
	return ktest_summary();
}
