/*
 * test_fork_attack.c - fork from a thread that never used the pool (no
 * thread cache, no grace record: kp__grace_self empty), while another thread
 * churns blocks of every class, huge blocks and frees (its fast grace record
 * in use) and the daemon runs a pass every millisecond (its step lock held at
 * some forks). In each child: the forking thread and two new threads
 * allocate and free across the classes (fast records claimed anew, the
 * records of the parent's threads given back), huge blocks come and go (the
 * grace periods reclaim: membarrier in the child), kp_destroy returns (no
 * lock left held, no mapping left in limbo), all within 20 s. Under TSan
 * the parent has no churning thread at fork (test_fork_locks says why).
 */
#include "ktest.h"

#include "internal.h"

#include <pthread.h>

#define FORKS 16

static kp_pool *pool;
static atomic_int stop, churned;

static void *churn(void *arg)
{
	(void)arg;
	void *keep[64] = {0};
	for (unsigned i = 0; !atomic_load(&stop); i++) {
		unsigned k = i % 64;
		if (keep[k])
			kp_free(pool, keep[k]);
		size_t size = i % 97 == 0 ? (size_t)6 << 20 : 16 + (i * 131) % 40000;
		keep[k] = kp_alloc(pool, size, 0);
		if (keep[k])
			memset(keep[k], 1, size < 256 ? size : 256);
		atomic_fetch_add(&churned, 1);
	}
	for (unsigned k = 0; k < 64; k++)
		kp_free(pool, keep[k]);
	return NULL;
}

static void *child_work(void *arg)
{
	unsigned *fails = arg;
	static _Thread_local void *p[2000];
	for (int round = 0; round < 4; round++) {
		for (unsigned i = 0; i < 2000; i++) {
			size_t size = i % 500 == 0 ? (size_t)5 << 20 : 16 + (i * 53 + (unsigned)round) % 9000;
			*fails += !(p[i] = kp_alloc(pool, size, 0));
		}
		for (unsigned i = 0; i < 2000; i++)
			*fails += kp_free(pool, p[i]) != 0;
	}
	kp_thread_flush(pool);
	return NULL;
}

static int in_child(void)
{
	alarm(20);
	unsigned f0 = 0, f1 = 0, f2 = 0;
	pthread_t a, b;
	if (pthread_create(&a, NULL, child_work, &f1) != 0 || pthread_create(&b, NULL, child_work, &f2) != 0)
		return 3;
	child_work(&f0);
	pthread_join(a, NULL);
	pthread_join(b, NULL);
	if (f0 || f1 || f2) {
		fprintf(stderr, "  child: %u %u %u failures\n", f0, f1, f2);
		return 4;
	}
	if (kt_stat(pool, "integrity.quarantined") != 0) {
		fprintf(stderr, "  child: blocks quarantined\n");
		return 5;
	}
	kp__grace_drain(pool);
	if (atomic_load(&pool->limbo))
		return 6;
	kp_destroy(pool);
	return 0;
}

static void *forker(void *arg)
{
	int *bad = arg;
	for (int i = 0; i < FORKS; i++) {
		pid_t pid = fork();
		if (pid == 0)
			_exit(in_child());
		int st = 0;
		waitpid(pid, &st, 0);
		if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
			fprintf(stderr, "  fork %d: child %s %d\n", i, WIFEXITED(st) ? "exited" : "killed by signal",
				WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
			(*bad)++;
		}
		kt_sleep_ms(3);
	}
	return NULL;
}

static void test_fork_from_a_thread_without_pool(void)
{
	pool = kp_create(KT_TSAN ? "primary_initial:4m,backup:1m,daemon:off"
				 : "primary_initial:4m,backup:1m,daemon_interval_ms:1,decay_ms:5");
	REQUIRE(pool, "kp_create: %s", kp_last_error());
	pthread_t t, f;
	REQUIRE(KT_TSAN || pthread_create(&t, NULL, churn, NULL) == 0, "pthread_create");
	uint64_t t0 = kt_now_ms();
	while (!KT_TSAN && (atomic_load(&churned) < 1000 || kt_stat(pool, "daemon.passes") < 2) &&
	       kt_now_ms() - t0 < 5000)
		kt_sleep_ms(1);
	int bad = 0;
	REQUIRE(pthread_create(&f, NULL, forker, &bad) == 0, "pthread_create");
	pthread_join(f, NULL);
	atomic_store(&stop, 1);
	if (!KT_TSAN)
		pthread_join(t, NULL);
	CHECK(bad == 0, "%d of %d children failed", bad, FORKS);
	kp_events_drain(pool, NULL, 0);
	kp_destroy(pool);
}

int main(void)
{
	RUN(test_fork_from_a_thread_without_pool);
	return ktest_summary();
}
