/*
 * test_fork_locks.c - after fork, a new thread of the child (not the one
 * that forked, which held every lock across the fork) takes each of the
 * pool's locks with a plain lock: the registry lock (kp_create, a new
 * thread's cache), the pool lock (a page run), every class lock (a block
 * of each class and the flush that gives them back), the backup lock, the
 * daemon's step lock (kp_daemon_step) and its mutex (kp_daemon_stop), and
 * the grace records' lock (the thread's first kp_free).
 *
 * The fork handlers (pool.c) take every lock before fork and release them
 * in the parent and the child. A child handler that re-initialised them
 * instead left them, to TSan, owned by the thread that forked: TSan
 * reported a double lock as soon as another thread of the child took one
 * (the child here exits with TSan's code, and the test fails). The step
 * lock is not taken before fork (a fork may cut a pass short): the child
 * makes it anew only when a pass held it. Forks race with an allocating thread and a daemon
 * that runs a pass every millisecond, so some forks find those locks busy;
 * not under TSan, whose runtime keeps the parent's threads registered in
 * the child and refuses the child's new thread that reuses one's stack
 * and id ("dup thread with used id", as test_fork notes): there the parent
 * has no other thread at fork (daemon:off), and the child's thread is
 * what is tested.
 */
#include "ktest.h"

#include "internal.h"

#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#define FORKS 12
#define KiB ((size_t)1 << 10)

static kp_pool *pool;
static atomic_int stop, churned;

/* The parent's other thread: blocks of every class and page runs, and
 * flushes, so that forks find class locks and the pool lock in use. */
static void *churn(void *arg)
{
	(void)arg;
	uint64_t rng = 7;
	void *slot[32] = {0};
	while (!atomic_load(&stop)) {
		unsigned i = (unsigned)(kt_rand(&rng) % 32);
		kp_free(pool, slot[i]);
		slot[i] = kp_alloc(pool, kt_rand_log(&rng, 1, 200 * KiB), 0);
		if ((kt_rand(&rng) & 63) == 0)
			kp_thread_flush(pool);
		atomic_fetch_add(&churned, 1);
	}
	for (unsigned i = 0; i < 32; i++)
		kp_free(pool, slot[i]);
	return NULL;
}

/* The child's new thread: each lock taken; a mask of what failed. */
static void *every_lock(void *arg)
{
	(void)arg;
	long fail = 0;
	/* every class lock: a block of each class (a refill under it), then
	 * the frees and the flush that give them back (under it again) */
	static void *b[KP_NCLASS];
	for (unsigned c = 0; c < KP_NCLASS; c++) {
		b[c] = kp_alloc(pool, kp__class_size[c] - KP_HDR - pool->canary, 0);
		fail |= b[c] == NULL;
	}
	for (unsigned c = 0; c < KP_NCLASS; c++)
		fail |= (kp_free(pool, b[c]) != 0) << 1;
	kp_thread_flush(pool);
	/* the pool lock: a page run */
	void *big = kp_alloc(pool, 300 * KiB, 0);
	fail |= (big == NULL) << 2;
	kp_free(pool, big);
	/* the backup lock */
	size_t usable;
	void *bk = kp__backup_alloc(pool, 100, 0, &usable);
	fail |= (bk == NULL) << 3;
	fail |= (bk && kp_free(pool, bk) != 0) << 4;
	/* the step lock, the registry lock */
	fail |= (kp_daemon_step(pool, 0) < 0) << 5;
	char buf[4096];
	fail |= (kp_stats_json(pool, buf, sizeof buf) <= 0) << 6;
	kp_pool *other = kp_create("primary_initial:4m,daemon:off,backup:0");
	fail |= (other == NULL) << 7;
	kp_destroy(other);
	/* the daemon's mutex (the daemon restarted in the child or not) */
	kp_daemon_stop(pool);
	return (void *)fail;
}

/* Fork; the child's new thread takes every lock. Its mask, -3 if the child
 * died before it said (a TSan report), -7 if it did not say within 30 s
 * (a deadlock: killed). */
static long fork_child(void)
{
	int fd[2];
	if (pipe(fd) != 0)
		return -5;
	pid_t pid = fork();
	if (pid < 0)
		return -6;
	if (pid == 0) {
		close(fd[0]);
		pthread_t t;
		void *fail = (void *)-1L;
		if (pthread_create(&t, NULL, every_lock, NULL) == 0)
			pthread_join(t, &fail);
		long v = (long)fail;
		_exit(write(fd[1], &v, sizeof v) == (ssize_t)sizeof v ? 0 : 1);
	}
	close(fd[1]);
	long v = -3;
	struct pollfd pf = {.fd = fd[0], .events = POLLIN};
	if (poll(&pf, 1, 30000) == 1) {
		if (read(fd[0], &v, sizeof v) != (ssize_t)sizeof v)
			v = -3;
	} else {
		kill(pid, SIGKILL);
		v = -7;
	}
	close(fd[0]);
	waitpid(pid, NULL, 0);
	return v;
}

static void test_child_thread_takes_every_lock(void)
{
	pool = kp_create(KT_TSAN ? "primary_initial:4m,backup:1m,daemon:off,seed:5"
				 : "primary_initial:4m,backup:1m,daemon_interval_ms:1,decay_ms:0,seed:5");
	REQUIRE(pool, "kp_create: %s", kp_last_error());
	atomic_store(&stop, 0);
	atomic_store(&churned, 0);
	pthread_t t;
	REQUIRE(KT_TSAN || pthread_create(&t, NULL, churn, NULL) == 0, "pthread_create");
	/* The parent's threads past their start: a thread still inside the
	 * sanitizer runtime's start-up at fork leaves ASan's allocator lock
	 * held in the child, whose new thread then waits for it for ever
	 * (test_fork's parent_daemon_started). */
	uint64_t t0 = kt_now_ms();
	while (!KT_TSAN && (atomic_load(&churned) < 100 || kt_stat(pool, "daemon.passes") < 1) &&
	       kt_now_ms() - t0 < 10000)
		kt_sleep_ms(1);
	unsigned bad = 0;
	long first = 0;
	for (int i = 0; i < FORKS; i++) {
		long rc = fork_child();
		if (rc != 0 && !bad++)
			first = rc;
	}
	atomic_store(&stop, 1);
	if (!KT_TSAN)
		pthread_join(t, NULL);
	printf("   %d forks: %u children failed (first: %ld; -3: died, e.g. a TSan report; -7: hung)\n", FORKS, bad,
	       first);
	CHECK(bad == 0,
	      "%u of %d children failed, first %ld (bits: 1 alloc, 2 free, 4 page run, 8 backup alloc, "
	      "16 backup free, 32 step, 64 stats, 128 kp_create; -3: the child died, -7: it hung)",
	      bad, FORKS, first);
	kp_destroy(pool);
}

int main(void)
{
	RUN(test_child_thread_takes_every_lock);
	return ktest_summary();
}
