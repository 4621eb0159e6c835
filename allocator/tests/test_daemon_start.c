/*
 * test_daemon_start.c - kp_daemon_start and kp_daemon_stop: a pool made
 * with daemon:off gets its daemon when its owner says so (the preload
 * library starts it lazily, outside pool creation), and a fork child's
 * pending restart can be cancelled and the daemon started by hand, so that
 * no thread is created under the allocation path's locks.
 */
#include "ktest.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

/* TSan refuses by default to let a child of a multi-threaded process start
 * threads (the child's daemon); that is TSan's limitation, not the pool's. */
const char *__tsan_default_options(void);
__attribute__((visibility("default"), used)) const char *__tsan_default_options(void)
{
	return "die_after_fork=0";
}

static void test_start_stop(void)
{
	kp_pool *pool = kp_create("daemon:off,primary_initial:4m,backup:0");
	REQUIRE(pool, "kp_create: %s", kp_last_error());
	CHECK(kt_stat(pool, "daemon.running") == 0, "daemon:off runs no daemon");
	CHECK(kp_daemon_start(pool) == 0, "start");
	CHECK(kt_stat(pool, "daemon.running") == 1, "running after kp_daemon_start");
	CHECK(kp_daemon_start(pool) == 0, "a second start is a no-op");
	/* the first pass comes at once (as after kp_create) */
	for (int i = 0; i < 2000 && kt_stat(pool, "daemon.passes") == 0; i++)
		kt_sleep_ms(1);
	CHECK(kt_stat(pool, "daemon.passes") >= 1, "the started daemon runs passes");
	kp_daemon_stop(pool);
	CHECK(kt_stat(pool, "daemon.running") == 0, "stopped");
	kp_daemon_stop(pool); /* no-op */
	void *p = kp_alloc(pool, 100, 0);
	CHECK(p != NULL, "allocation without a daemon");
	kp_free(pool, p);
	CHECK(kp_daemon_start(pool) == 0 && kt_stat(pool, "daemon.running") == 1, "restart after a stop");
	CHECK(kp_daemon_start(NULL) == KP_EINVAL, "NULL");
	kp_daemon_stop(NULL);
	kp_destroy(pool);
}

/* In a fork child the daemon is "restart_pending"; kp_daemon_stop cancels
 * that, so that no allocation restarts it, and kp_daemon_start starts it. */
static void test_fork_child(void)
{
	kp_pool *pool = kp_create("primary_initial:4m,backup:0");
	REQUIRE(pool, "kp_create: %s", kp_last_error());
	REQUIRE(kt_stat(pool, "daemon.running") == 1, "the parent's daemon runs");
	/* Fork only once the daemon thread has made a pass: a thread still
	 * starting can hold a lock of the ASan runtime's allocator (libc
	 * allocates as a thread starts), and GCC 12's runtime does not take
	 * its locks around fork, so the child's first allocation waited on
	 * it for ever (about 1 run in 12 under ASan). */
	uint64_t t0 = kt_now_ms();
	while (kt_stat(pool, "daemon.passes") < 1 && kt_now_ms() - t0 < 5000)
		kt_sleep_ms(1);
	pid_t pid = fork();
	if (pid == 0) {
		int bad = 0;
		bad |= kt_stat(pool, "daemon.running") != 0;
		kp_daemon_stop(pool);
		/* allocations past the low watermark would kick a pending restart */
		void *blocks[200];
		for (int i = 0; i < 200; i++)
			blocks[i] = kp_alloc(pool, 64 * 1024, 0);
		bad |= (kt_stat(pool, "daemon.running") != 0) << 1;
		for (int i = 0; i < 200; i++)
			kp_free(pool, blocks[i]);
		/* Not under TSan: its runtime keeps the parent's dead daemon
		 * thread in its registry, and the child's new one reuses that
		 * thread's stack and id ("dup thread with used id", the TSan
		 * limitation test_fork.c meets too). */
		if (!KT_TSAN) {
			bad |= (kp_daemon_start(pool) != 0) << 2;
			bad |= (kt_stat(pool, "daemon.running") != 1) << 3;
			kp_destroy(pool);
		}
		_exit(bad);
	}
	int status = 0;
	REQUIRE(waitpid(pid, &status, 0) == pid, "waitpid");
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0,
	      "child: status %d (bits: 1 ran after fork, 2 restarted "
	      "by the allocation path after stop, 4 start failed, 8 not running after start)",
	      status);
	kp_destroy(pool);
}

int main(void)
{
	RUN(test_start_stop);
	RUN(test_fork_child);
	return ktest_summary();
}
