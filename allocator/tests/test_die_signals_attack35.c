/*
 * test_die_signals_attack35.c - kpool's refusal (os.c, kp__os_die: one
 * line to stderr, then abort) with signals still coming: does a handler
 * run inside it? test_outline_signal_nested_attack33's handlers (SA_NODEFER,
 * a signal every ~5 us from two threads) call into the pool; one nested in
 * the dying call re-enters the pool, meets the same refusal, and nests
 * again. Under ASan beside the TSan suite a round's refusal became a
 * SIGSEGV inside ASan's report (session 34: 1 of 30 runs), not the abort
 * the parent expects. The refusal must hold every signal off before its
 * line, so that what follows the decision is the line and the abort.
 * The moment, made: the child's stderr is a pipe the parent has filled, so
 * the line's write blocks; a second thread waits until the dying thread is
 * inside that write (/proc/self/task/TID/syscall), then signals it 50
 * times; the parent then drains the pipe. Asserted: no handler ran after
 * the refusal began, the child died of SIGABRT, and one kpool line.
 * Before the fix (os.c's kp__os_die: write, then abort): 50 handler calls
 * inside the blocked write, each restarting it (SA_RESTART).
 * Reproduce: make -C allocator VARIANT=release build/release/tests/test_die_signals_attack35 &&
 * allocator/build/release/tests/test_die_signals_attack35
 */
#define _GNU_SOURCE 1
/* The refusal taken as test_reenter_attack19 takes it: the class locks of
 * a layout:inline pool held, then an allocation (ktest.h, KT_LAYOUT_INLINE). */
#define KT_LAYOUT_INLINE 1
#include "ktest.h"

#include "internal.h"

#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/mman.h>
#include <sys/syscall.h>

/* The hang guard: far past what the case takes (50 ms of signals and a
 * pipe's drain), so that only a child stuck for good reaches it. */
#define HANG_S 20
#define SIGNALS 50 /* enough that a handler let in by the refusal runs, the write restarted each time */

struct shared {
	_Atomic int handled; /* handler calls after the refusal began */
	_Atomic int dying;   /* the dying thread's kernel id, once it is about to call */
	_Atomic int sent;    /* 1: the signals are sent (the parent may drain) */
	_Atomic int inside;  /* 1: the dying thread was seen inside write */
};
static struct shared *sh;

static void handler(int sig)
{
	(void)sig;
	if (atomic_load(&sh->dying))
		atomic_fetch_add(&sh->handled, 1);
}

/* Is thread tid inside write (the first field of its syscall file)? */
static bool in_write(int tid)
{
	char path[64], buf[64] = {0};
	snprintf(path, sizeof path, "/proc/self/task/%d/syscall", tid);
	int fd = open(path, O_RDONLY);
	if (fd < 0)
		return false;
	ssize_t n = read(fd, buf, sizeof buf - 1);
	close(fd);
	return n > 0 && atol(buf) == SYS_write;
}

static pthread_t dying_thread;
static void *pester(void *arg)
{
	(void)arg;
	int tid;
	while (!(tid = atomic_load(&sh->dying)))
		kt_sleep_ms(1);
	for (int i = 0; i < 10000 && !in_write(tid); i++) /* 10 s at most */
		kt_sleep_ms(1);
	atomic_store(&sh->inside, in_write(tid));
	for (int i = 0; i < SIGNALS; i++) {
		pthread_kill(dying_thread, SIGUSR1);
		kt_sleep_ms(1);
	}
	atomic_store(&sh->sent, 1);
	return NULL;
}

static void child(void)
{
	kp_pool *pool = kp_create("daemon:off");
	if (!pool)
		_exit(3);
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = handler;
	sa.sa_flags = SA_RESTART | SA_NODEFER;
	sigaction(SIGUSR1, &sa, NULL);
	dying_thread = pthread_self();
	pthread_t pt;
	pthread_create(&pt, NULL, pester, NULL);
	for (unsigned c = 0; c < KP_NCLASS; c += KP_CLASS_LOCK_STEP)
		pthread_mutex_lock(kp__class_lock(pool, c));
	atomic_store(&sh->dying, (int)syscall(SYS_gettid));
	void *p = kp_alloc(pool, 100, 0); /* a fresh pool, its thread cache empty: the class lock it holds */
	(void)p;
	_exit(4);
}

static void test_no_handler_inside_the_refusal(void)
{
	sh = mmap(NULL, sizeof *sh, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	REQUIRE(sh != MAP_FAILED, "mmap");
	int fds[2];
	REQUIRE(pipe(fds) == 0, "pipe");
	/* the pipe full: the child's line waits in its write */
	fcntl(fds[1], F_SETFL, O_NONBLOCK);
	static char fill[4096];
	memset(fill, 'x', sizeof fill);
	size_t filled = 0;
	ssize_t w;
	while ((w = write(fds[1], fill, sizeof fill)) > 0)
		filled += (size_t)w;
	while ((w = write(fds[1], fill, 1)) > 0)
		filled += (size_t)w;
	fcntl(fds[1], F_SETFL, 0);
	fflush(stdout);
	fflush(stderr);
	pid_t pid = fork();
	REQUIRE(pid >= 0, "fork");
	if (pid == 0) {
		close(fds[0]);
		dup2(fds[1], 2);
		alarm(HANG_S);
		child();
	}
	close(fds[1]);
	for (int i = 0; i < HANG_S * 1000 && !atomic_load(&sh->sent); i++)
		kt_sleep_ms(1);
	static char out[1 << 20];
	size_t got = 0;
	ssize_t r;
	while (got + 1 < sizeof out && (r = read(fds[0], out + got, sizeof out - 1 - got)) > 0)
		got += (size_t)r;
	out[got] = 0;
	close(fds[0]);
	int st = 0;
	waitpid(pid, &st, 0);
	const char *err = got > filled ? out + filled : "";
	unsigned lines = 0;
	for (const char *q = err; (q = strstr(q, "kpool: ")) != NULL; q++)
		lines++;
	printf("   pipe filled with %zu bytes; the dying thread seen inside write: %d; %d handler calls after "
	       "the refusal began; %u kpool lines; status %#x\n",
	       filled, atomic_load(&sh->inside), atomic_load(&sh->handled), lines, st);
	CHECK(atomic_load(&sh->inside), "the dying thread was never seen inside its line's write");
	CHECK(atomic_load(&sh->handled) == 0, "%d handler calls inside kpool's refusal (its line, its abort)",
	      atomic_load(&sh->handled));
	CHECK(WIFSIGNALED(st) && WTERMSIG(st) == SIGABRT, "status %#x, not kpool's abort", st);
	CHECK(lines == 1, "%u kpool lines: '%s'", lines, err);
	munmap(sh, sizeof *sh);
}

int main(void)
{
	RUN(test_no_handler_inside_the_refusal);
	return ktest_summary();
}
