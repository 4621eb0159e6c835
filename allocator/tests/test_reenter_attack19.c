/*
 * test_reenter_attack19.c - a call into the pool from a thread that holds
 * one of the pool's own locks: what a signal handler that allocates does
 * when its signal interrupted the allocator's slow path (malloc is not
 * async-signal-safe, yet programs do it). A kpool mutex is not recursive, so
 * the nested call used to wait for itself forever: a single-threaded program
 * under the preload hung (session 19's attack: a 50 us timer whose handler
 * mallocs, 4 runs in 5). glibc, in the same program, finds its arena
 * damaged and aborts with one line; kpool now aborts with one line that
 * says what happened, before touching anything (internal.h:
 * kp__mutex_lock), and a lock held by another thread is waited for as
 * before.
 *
 * Each case runs in a child of its own with its stderr in a pipe and an
 * alarm as the hang guard (a hang there is the failure, not a timing).
 */
#define _GNU_SOURCE 1
/* Tests the inline fast paths and their slot and grace words (alloc.c, kp__tls): every pool layout:inline (ktest.h, KT_LAYOUT_INLINE). */
#define KT_LAYOUT_INLINE 1
#include "ktest.h"

#include "internal.h"

#include <pthread.h>
#include <stdatomic.h>

/* The hang guard: far past what each case takes (a few milliseconds), so
 * that only a thread waiting for itself reaches it. */
#define HANG_S 20

static void lock_classes(kp_pool *pool)
{
	for (unsigned c = 0; c < KP_NCLASS; c += KP_CLASS_LOCK_STEP)
		pthread_mutex_lock(kp__class_lock(pool, c));
}

static void unlock_classes(kp_pool *pool)
{
	for (unsigned c = 0; c < KP_NCLASS; c += KP_CLASS_LOCK_STEP)
		pthread_mutex_unlock(kp__class_lock(pool, c));
}

/* Run body in a child; its status and what it wrote to stderr. */
static int in_child(void (*body)(void), char *err, size_t len)
{
	int fds[2];
	if (pipe(fds) != 0)
		return -1;
	fflush(stdout);
	fflush(stderr);
	pid_t pid = fork();
	if (pid == 0) {
		close(fds[0]);
		dup2(fds[1], 2);
		alarm(HANG_S);
		body();
		_exit(0);
	}
	close(fds[1]);
	size_t got = 0;
	ssize_t r;
	while (got + 1 < len && (r = read(fds[0], err + got, len - 1 - got)) > 0)
		got += (size_t)r;
	err[got] = 0;
	close(fds[0]);
	int status = 0;
	waitpid(pid, &status, 0);
	return status;
}

static void expect_abort(void (*body)(void), const char *what)
{
	char err[4096];
	int status = in_child(body, err, sizeof err);
	CHECK(!(WIFSIGNALED(status) && WTERMSIG(status) == SIGALRM), "%s: the call waited for its own lock (hung)",
	      what);
	CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT, "%s: status %#x, not an abort", what, status);
	CHECK(strstr(err, "kpool: ") && strstr(err, "holds") && strstr(err, "signal handler"),
	      "%s: the line does not say what happened: '%s'", what, err);
	CHECK(strchr(err, '\n') == strrchr(err, '\n'), "%s: more than one line: '%s'", what, err);
}

/* The allocation's slow path needs the class lock its thread holds. */
static void alloc_body(void)
{
	kp_pool *pool = kp_create("daemon:off");
	if (!pool)
		_exit(3);
	lock_classes(pool);
	void *p = kp_alloc(pool, 100, 0); /* a fresh pool: its thread cache is empty */
	(void)p;
	_exit(4);
}

static void test_alloc_holding_its_class_lock(void)
{
	expect_abort(alloc_body, "kp_alloc");
}

/* The flush gives cached blocks back to their class, under its lock. */
static void flush_body(void)
{
	kp_pool *pool = kp_create("daemon:off");
	if (!pool)
		_exit(3);
	for (int i = 0; i < 8; i++)
		kp_free(pool, kp_alloc(pool, 100, 0));
	lock_classes(pool);
	kp_thread_flush(pool);
	_exit(4);
}

static void test_flush_holding_its_class_lock(void)
{
	expect_abort(flush_body, "kp_thread_flush");
}

/* As a program does it: a handler that allocates, its signal raised while
 * the thread holds a class lock (as a refill does). */
static kp_pool *sig_pool;
static void alloc_handler(int sig)
{
	(void)sig;
	void *p = kp_alloc(sig_pool, 200, 0);
	(void)p;
}

static void handler_body(void)
{
	sig_pool = kp_create("daemon:off");
	if (!sig_pool)
		_exit(3);
	signal(SIGUSR1, alloc_handler);
	lock_classes(sig_pool);
	raise(SIGUSR1);
	_exit(4);
}

static void test_signal_handler_allocating_inside_a_refill(void)
{
	expect_abort(handler_body, "a handler's kp_alloc");
}

/* No false alarm: a lock another thread holds is waited for. */
static kp_pool *held_pool;
static atomic_int held, release;

static void *holder(void *arg)
{
	(void)arg;
	lock_classes(held_pool);
	atomic_store(&held, 1);
	while (!atomic_load(&release))
		kt_sleep_ms(1);
	kt_sleep_ms(20); /* let the allocation reach the lock (it waits either way) */
	unlock_classes(held_pool);
	return NULL;
}

static void test_a_lock_held_by_another_thread_is_waited_for(void)
{
	held_pool = kp_create("daemon:off");
	REQUIRE(held_pool, "kp_create: %s", kp_last_error());
	pthread_t t;
	pthread_create(&t, NULL, holder, NULL);
	while (!atomic_load(&held))
		kt_sleep_ms(1);
	atomic_store(&release, 1);
	char *p = kp_alloc(held_pool, 100, 0);
	CHECK(p != NULL, "kp_alloc after the other thread's lock: %s", kp_last_error());
	if (p)
		memset(p, 1, 100);
	CHECK(kp_free(held_pool, p) == 0, "kp_free: %s", kp_last_error());
	pthread_join(t, NULL);
	kp_destroy(held_pool);
}

int main(void)
{
	RUN(test_alloc_holding_its_class_lock);
	RUN(test_flush_holding_its_class_lock);
	RUN(test_signal_handler_allocating_inside_a_refill);
	RUN(test_a_lock_held_by_another_thread_is_waited_for);
	return ktest_summary();
}
