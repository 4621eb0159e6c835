/*
 * test_fork.c - fork() and a live pool: the child allocates and frees on
 * the pool it inherited (and its daemon, if it says it runs, really runs);
 * fork() racing with allocating threads never deadlocks. Every wait has a
 * deadline, so a deadlock fails the test instead of hanging it.
 */
#include "ktest.h"

#include <pthread.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#define KiB ((size_t)1 << 10)
#define MiB ((size_t)1 << 20)

/* TSan refuses by default to let a child of a multi-threaded process start
 * threads (the child's daemon); that is TSan's limitation, not the pool's.
 * Visible by name although the build hides symbols: the runtime looks it up. */
const char *__tsan_default_options(void);
__attribute__((visibility("default"), used)) const char *__tsan_default_options(void)
{
	return "die_after_fork=0";
}

/* Wait for a child with a deadline; on expiry kill it and say so.
 * Returns the child's exit code, 128+signal if killed, -1 on timeout. */
static int wait_child(pid_t pid, unsigned ms)
{
	uint64_t t0 = kt_now_ms();
	int status;
	for (;;) {
		pid_t r = waitpid(pid, &status, WNOHANG);
		if (r == pid)
			break;
		if (r < 0)
			return -2;
		if (kt_now_ms() - t0 > ms) {
			kill(pid, SIGKILL);
			waitpid(pid, &status, 0);
			return -1;
		}
		kt_sleep_ms(1);
	}
	if (WIFEXITED(status))
		return WEXITSTATUS(status);
	if (WIFSIGNALED(status))
		return 128 + WTERMSIG(status);
	return -3;
}

/* A whole-process watchdog: a deadlock inside fork() itself (in the parent)
 * cannot be caught by wait_child. */
static void on_alarm(int sig)
{
	static const char msg[] = "test_fork: watchdog expired: deadlock (fork or wait)\n";
	(void)sig;
	if (write(2, msg, sizeof msg - 1) < 0) {
	}
	_exit(3);
}

static int64_t child_stat(kp_pool *pool, const char *key)
{
	char buf[8192];
	if (kp_stats_json(pool, buf, sizeof buf) >= (int)sizeof buf)
		return -1;
	return kt_json_int(buf, key, -1);
}

/* The child's work; returns a bit mask of failures (the exit code). */
static int child_work(kp_pool *pool, void **inherited, size_t n_inherited)
{
	int fail = 0;
	/* inherited blocks are intact and freeable */
	for (size_t i = 0; i < n_inherited; i++) {
		if (kt_verify(inherited[i], 1000, 77) != KT_OK)
			fail |= 1;
		if (kp_free(pool, inherited[i]) != 0)
			fail |= 2;
	}
	/* new blocks of every kind, verified */
	void *b[200];
	for (int i = 0; i < 200; i++) {
		size_t s = i < 190 ? (size_t)(i * 97) : (size_t)(i - 189) * MiB;
		b[i] = kp_alloc(pool, s, 0);
		if (b[i] == NULL) {
			fail |= 4;
			continue;
		}
		kt_fill(b[i], s, 5);
	}
	for (int i = 0; i < 200; i++) {
		size_t s = i < 190 ? (size_t)(i * 97) : (size_t)(i - 189) * MiB;
		if (b[i] != NULL && kt_verify(b[i], s, 5) != KT_OK)
			fail |= 8;
		if (b[i] != NULL && kp_free(pool, b[i]) != 0)
			fail |= 16;
	}
	/* grow well past what the parent had mapped */
	void *big[24];
	for (int i = 0; i < 24; i++) {
		big[i] = kp_alloc(pool, 2 * MiB, 0);
		if (big[i] == NULL)
			fail |= 32;
		else
			memset(big[i], 3, 2 * MiB);
	}
	for (int i = 0; i < 24; i++)
		kp_free(pool, big[i]);
	/* the child has a working daemon: the pool grew on the allocation path
	 * above (which wakes, or restarts, the daemon); it says it runs, and a
	 * wake gives a pass (a "running" flag copied from the parent with no
	 * thread behind it would fail here) */
	/* 10 s: under ASan on a loaded 2-core CI run a child's first pass
	 * missed 2 s (1 fresh-clone run of 5 this session, and helpers saw it
	 * 1 in 6 on e9a9adf); a working daemon answers in milliseconds, so
	 * the wait costs nothing when it works, and one with no thread behind
	 * it never answers */
	if (child_stat(pool, "daemon.running") != 1) {
		kp_daemon_wake(pool);
		uint64_t t0 = kt_now_ms();
		while (child_stat(pool, "daemon.running") != 1 && kt_now_ms() - t0 < 10000)
			kt_sleep_ms(2);
	}
	if (child_stat(pool, "daemon.running") != 1) {
		fail |= 64;
	} else {
		int64_t passes = child_stat(pool, "daemon.passes");
		kp_daemon_wake(pool);
		uint64_t t0 = kt_now_ms();
		while (child_stat(pool, "daemon.passes") == passes && kt_now_ms() - t0 < 10000)
			kt_sleep_ms(2);
		if (child_stat(pool, "daemon.passes") == passes)
			fail |= 64; /* "running" but no thread behind it */
	}
	if (fail & 64) {
		/* say what the daemon was doing: its state, passes and wake-ups */
		char buf[8192];
		kp_stats_json(pool, buf, sizeof buf);
		const char *dj = strstr(buf, "\"daemon\"");
		fprintf(stderr, "child %d: no working daemon: %.400s\n", (int)getpid(), dj ? dj : buf);
	}
	kp_thread_flush(pool);
	if (child_stat(pool, "primary.in_use_bytes") < 0)
		fail |= 128;
	return fail;
}

/* The parent's daemon thread has finished starting before a fork: a thread
 * still inside the sanitizer runtime's start-up (ASan's thread init calls
 * calloc under its allocator's lock, and GCC's libasan takes no allocator
 * lock around fork) leaves that lock held in the child, whose new daemon
 * thread then blocks in the same calloc for ever (seen under gdb: 1 run in
 * 15 at load 9). A pass done means the thread runs. */
static void parent_daemon_started(kp_pool *pool)
{
	uint64_t t0 = kt_now_ms();
	kp_daemon_wake(pool);
	while (kt_stat(pool, "daemon.passes") < 1 && kt_now_ms() - t0 < 10000)
		kt_sleep_ms(2);
	REQUIRE(kt_stat(pool, "daemon.passes") >= 1, "the parent's daemon made no pass in 10 s");
}

static void test_child_uses_pool(void)
{
	KT_POOL(pool, "primary_initial:4m,low_wm:8m,high_wm:16m,seed:1");
	void *mine[50];
	for (int i = 0; i < 50; i++) {
		mine[i] = kp_alloc(pool, 1000, 0);
		REQUIRE(mine[i] != NULL, "alloc");
		kt_fill(mine[i], 1000, 77);
	}
	parent_daemon_started(pool);
	/* mode 1 also destroys the pool in the child. Not under TSan: its
	 * runtime keeps the parent's dead daemon thread in its registry, and the
	 * child's new daemon reuses that thread's stack and id ("dup thread with
	 * used id", a TSan limitation after a multi-threaded fork). */
	for (int mode = 0; mode < (KT_TSAN ? 1 : 2); mode++) {
		fflush(NULL);
		pid_t pid = fork();
		REQUIRE(pid >= 0, "fork");
		if (pid == 0) {
			int fail = child_work(pool, mine, 50);
			if (mode == 1)
				kp_destroy(pool); /* the child may also tear the pool down */
			_exit(fail);
		}
		int rc = wait_child(pid, 30000);
		CHECK(rc == 0,
		      "child (mode %d) %s: code %d (bits: 1 inherited corrupt, 2 inherited free, 4 alloc NULL, "
		      "8 corrupt, 16 free, 32 grow, 64 no working daemon, 128 stats)",
		      mode, rc == -1 ? "hung" : "failed", rc);
	}
	/* the parent's pool is untouched by the children */
	for (int i = 0; i < 50; i++) {
		CHECK(kt_verify(mine[i], 1000, 77) == KT_OK, "parent block %d changed", i);
		CHECK(kp_free(pool, mine[i]) == 0, "parent free %d", i);
	}
	CHECK(kt_stat(pool, "daemon.running") == 1, "parent daemon stopped by a fork");
	int64_t passes = kt_stat(pool, "daemon.passes");
	kp_daemon_wake(pool);
	uint64_t t0 = kt_now_ms();
	while (kt_stat(pool, "daemon.passes") == passes && kt_now_ms() - t0 < 2000)
		kt_sleep_ms(2);
	CHECK(kt_stat(pool, "daemon.passes") > passes, "the parent's daemon no longer runs after fork");
	kp_destroy(pool);
}

/* ---- fork racing with allocating threads ------------------------------- */

struct racer {
	kp_pool *pool;
	int stop;
	long ops, corrupt;
	uint64_t seed;
};

static void *race_thread(void *varg)
{
	struct racer *r = (struct racer *)varg;
	void *slot[64] = {0};
	size_t size[64] = {0};
	uint64_t rng = r->seed;
	while (!__atomic_load_n(&r->stop, __ATOMIC_RELAXED)) {
		unsigned i = (unsigned)(kt_rand(&rng) % 64);
		if (slot[i] != NULL) {
			if (kt_verify(slot[i], size[i] < 64 ? size[i] : 64, 1) != KT_OK)
				r->corrupt++;
			kp_free(r->pool, slot[i]);
		}
		uint64_t x = kt_rand(&rng);
		size[i] = (x & 31) == 0 ? kt_rand_log(&rng, 64 * KiB, 4 * MiB) : kt_rand_log(&rng, 1, 8 * KiB);
		slot[i] = kp_alloc(r->pool, size[i], 0);
		if (slot[i] != NULL)
			kt_fill(slot[i], size[i] < 64 ? size[i] : 64, 1);
		if ((x & 255) == 1)
			kp_thread_flush(r->pool);
		r->ops++;
	}
	for (unsigned i = 0; i < 64; i++)
		kp_free(r->pool, slot[i]);
	return NULL;
}

static void fork_race(const char *conf, int nthreads, int iterations)
{
	KT_POOL(pool, conf);
	struct racer rs[4];
	pthread_t th[4];
	for (int i = 0; i < nthreads; i++) {
		rs[i] = (struct racer){.pool = pool, .seed = (uint64_t)i * 7919 + 1};
		REQUIRE(pthread_create(&th[i], NULL, race_thread, &rs[i]) == 0, "pthread_create");
	}
	int hung = 0, failed = 0, first_rc = 0;
	for (int it = 0; it < iterations; it++) {
		pid_t pid = fork();
		if (pid < 0) {
			CHECK(0, "fork failed at iteration %d", it);
			break;
		}
		if (pid == 0) {
			int fail = 0;
			for (int k = 0; k < 20; k++) {
				size_t s = (size_t)1 << (k % 22);
				void *p = kp_alloc(pool, s, k & 1 ? KP_ZERO : 0);
				if (p == NULL) {
					fail |= 1;
					continue;
				}
				kt_fill(p, s < 4096 ? s : 4096, 2);
				if (kt_verify(p, s < 4096 ? s : 4096, 2) != KT_OK)
					fail |= 2;
				if (kp_free(pool, p) != 0)
					fail |= 4;
			}
			_exit(fail);
		}
		int rc = wait_child(pid, 10000);
		if (rc == -1)
			hung++;
		else if (rc != 0)
			failed++;
		if (rc != 0 && first_rc == 0)
			first_rc = rc;
	}
	for (int i = 0; i < nthreads; i++)
		__atomic_store_n(&rs[i].stop, 1, __ATOMIC_RELAXED);
	long ops = 0;
	for (int i = 0; i < nthreads; i++) {
		pthread_join(th[i], NULL);
		ops += rs[i].ops;
		CHECK(rs[i].corrupt == 0, "thread %d saw %ld corrupt blocks around forks", i, rs[i].corrupt);
	}
	printf("   %d forks beside %d threads (%ld thread ops): %d hung, %d failed (first code %d)\n", iterations,
	       nthreads, ops, hung, failed, first_rc);
	CHECK(hung == 0, "%d of %d children deadlocked (killed after 10 s)", hung, iterations);
	CHECK(failed == 0,
	      "%d of %d children failed; first exit code %d (1 NULL, 2 corrupt, 4 free; 128+n: "
	      "signal n)",
	      failed, iterations, first_rc);
	kp_destroy(pool);
}

static void test_fork_race_daemon_on(void)
{
	fork_race("primary_initial:1m,low_wm:4m,high_wm:8m,daemon_interval_ms:1,decay_ms:0,seed:2", 3,
		  KT_TSAN ? 100 : 250);
}

static void test_fork_race_daemon_off(void)
{
	fork_race("primary_initial:1m,daemon:off,decay_ms:0,seed:3", 2, KT_TSAN ? 100 : 200);
}

/* A child forks a grandchild: the pool survives two generations. */
static void test_fork_twice(void)
{
	KT_POOL(pool, "seed:4");
	parent_daemon_started(pool);
	pid_t pid = fork();
	REQUIRE(pid >= 0, "fork");
	if (pid == 0) {
		void *a = kp_alloc(pool, 5000, 0);
		pid_t g = fork();
		if (g == 0) {
			int fail = child_work(pool, NULL, 0);
			if (a == NULL || kp_free(pool, a) != 0)
				fail |= 1;
			_exit(fail);
		}
		int rc = g < 0 ? 99 : wait_child(g, 15000);
		if (a == NULL || kp_free(pool, a) != 0)
			rc |= 1;
		_exit(rc == 0 ? 0 : rc < 0 ? 100 : rc);
	}
	int rc = wait_child(pid, 30000);
	CHECK(rc == 0, "child/grandchild exit code %d", rc);
	kp_destroy(pool);
}

int main(void)
{
	signal(SIGALRM, on_alarm);
	alarm(KT_SANITIZED ? 240 : 120); /* far above the expected run time: only a hang reaches it */
	RUN(test_child_uses_pool);
	RUN(test_fork_twice);
	RUN(test_fork_race_daemon_off);
	RUN(test_fork_race_daemon_on);
	return ktest_summary();
}
