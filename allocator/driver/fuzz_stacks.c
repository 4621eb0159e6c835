/*
 * fuzz_stacks.c - every thread's stack when an input runs too long, each
 * marked with what the thread was doing for the input, so that triage signs
 * a hang with the thread that hangs (harness/triage/threads.py).
 *
 * On a timeout libFuzzer prints the stack of the thread its SIGALRM handler
 * runs on: the fuzzing thread. In the concurrent target that thread only
 * waits for the two threads that run the input (pthread_join), and every
 * hang got that one stack. So a SIGALRM handler of our own goes in front of
 * atheris's and libFuzzer's (installed with the first input, after theirs):
 * when the input has run for nearly the timeout, it sends FZ_STACKS_SIGNAL
 * to each other thread of the process (/proc/self/task) in turn; each
 * prints a header line and its own stack, then the handler chains to the
 * handler it replaced, which goes on to report the timeout as before.
 *
 * The header: '==kpfuzz== thread <tid> "<name>" <state>', the state one of
 * "running the input", "waiting for the input's threads" (the fuzzing
 * thread of the concurrent target) or "idle" (a thread that marked nothing:
 * the pool's daemon, a worker between inputs). The daemon blocks every
 * signal (daemon.c): it is listed as giving no stack.
 *
 * Everything here that runs in a signal handler is async-signal-safe:
 * write, open, read, getdents64, tgkill, nanosleep, and the sanitizer's
 * stack printer (which libFuzzer's own timeout handler calls there too).
 */
#include "fuzz_model.h"

#include <errno.h>
#include <execinfo.h>
#include <fcntl.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

/* A real-time signal nobody else here uses: libFuzzer takes SIGUSR1 and
 * SIGUSR2, glibc the first two real-time signals (SIGRTMIN skips them). */
#define FZ_STACKS_SIGNAL (SIGRTMIN + 3)
/* Threads marked at once: the fuzzing thread and two input threads, with
 * room for a target with more. */
#define FZ_MARKS 16
/* How long one thread may take to print its stack (the sanitizer
 * symbolizes it, a few hundred ms the first time) before it is skipped. */
#define FZ_STACK_WAIT_MS 3000
/* The stacks are taken this long before libFuzzer's -timeout: atheris and
 * libFuzzer check the time of an input in whole seconds from a clock that
 * started a little before ours, so they may call the input timed out at
 * the alarm before the one at which ours has run the full timeout. */
#define FZ_STACKS_EARLY_MS 500
/* libFuzzer's -timeout when the command line gives none (atheris's default
 * is shorter than libFuzzer's 1200 s). */
#define FZ_DEFAULT_TIMEOUT_S 300

static struct {
	_Atomic int tid;
	_Atomic int state;
} marks[FZ_MARKS];

static bool installed;
static struct sigaction chained; /* the SIGALRM handler ours replaced */
static uint64_t timeout_ms;
static _Atomic uint64_t input_start_ms; /* 0: no input running */
static atomic_bool dumped;		/* this input's stacks were printed */
static _Atomic int answered;		/* the tid of the last thread that printed its stack */

static const char *const state_text[] = {
	[FZ_IDLE] = "idle",
	[FZ_RUNNING] = "running the input",
	[FZ_WAITING] = "waiting for the input's threads",
};

__attribute__((weak)) void __sanitizer_print_stack_trace(void);

static int self_tid(void)
{
	return (int)syscall(SYS_gettid);
}

static uint64_t now_ms(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (uint64_t)t.tv_sec * 1000 + (uint64_t)t.tv_nsec / 1000000;
}

static void put(const char *s)
{
	ssize_t r = write(2, s, strlen(s));
	(void)r;
}

static void put_u64(uint64_t v)
{
	char buf[24], *p = buf + sizeof(buf);
	*--p = 0;
	do
		*--p = (char)('0' + v % 10);
	while (v /= 10);
	put(p);
}

static int state_of(int tid)
{
	for (int i = 0; i < FZ_MARKS; i++)
		if (atomic_load(&marks[i].tid) == tid)
			return atomic_load(&marks[i].state);
	return FZ_IDLE;
}

void fz_thread_mark(int state)
{
	static __thread int own_tid; /* gettid is a system call: once per thread */
	if (!own_tid)
		own_tid = self_tid();
	int tid = own_tid;
	for (int i = 0; i < FZ_MARKS; i++)
		if (atomic_load(&marks[i].tid) == tid) {
			atomic_store(&marks[i].state, state);
			if (state == FZ_IDLE)
				atomic_store(&marks[i].tid, 0); /* the slot is free again */
			return;
		}
	if (state == FZ_IDLE)
		return;
	for (int i = 0; i < FZ_MARKS; i++) {
		int free_slot = 0;
		if (atomic_compare_exchange_strong(&marks[i].tid, &free_slot, tid)) {
			atomic_store(&marks[i].state, state);
			return;
		}
	}
	/* more threads than marks: this one is listed as idle */
}

/* The thread's name, from /proc/self/task/<tid>/comm, without its newline. */
static void put_name(int tid)
{
	char path[64] = "/proc/self/task/", digits[24], *p = digits + sizeof(digits), name[32];
	*--p = 0;
	unsigned v = (unsigned)tid;
	do
		*--p = (char)('0' + v % 10);
	while (v /= 10);
	strcat(path, p);
	strcat(path, "/comm");
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t n = fd < 0 ? -1 : read(fd, name, sizeof(name) - 1);
	if (fd >= 0)
		close(fd);
	if (n < 0)
		n = 0;
	while (n > 0 && name[n - 1] == '\n')
		n--;
	name[n] = 0;
	put("\"");
	put(name);
	put("\"");
}

static void header(int tid, const char *what)
{
	put("==kpfuzz== thread ");
	put_u64((uint64_t)tid);
	put(" ");
	put_name(tid);
	put(" ");
	put(what);
	put("\n");
}

/* This thread's header and stack, then a blank line (a stack ends there). */
static void fz_stacks_print_own(void)
{
	int tid = self_tid();
	header(tid, state_text[state_of(tid)]);
	if (__sanitizer_print_stack_trace) {
		__sanitizer_print_stack_trace();
	} else {
		void *frames[64];
		backtrace_symbols_fd(frames, backtrace(frames, 64), 2);
	}
	put("\n");
}

static void fz_stacks_on_signal(int sig)
{
	(void)sig;
	int saved = errno;
	fz_stacks_print_own();
	atomic_store(&answered, self_tid());
	errno = saved;
}

/* Whether the thread blocks FZ_STACKS_SIGNAL (the daemon blocks every
 * signal): the "SigBlk:" mask of /proc/self/task/<tid>/status, in hex. */
static bool blocks_signal(int tid)
{
	char path[64] = "/proc/self/task/", digits[24], *p = digits + sizeof(digits), buf[2048];
	*--p = 0;
	unsigned v = (unsigned)tid;
	do
		*--p = (char)('0' + v % 10);
	while (v /= 10);
	strcat(path, p);
	strcat(path, "/status");
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return false;
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	buf[n > 0 ? n : 0] = 0;
	const char *at = strstr(buf, "SigBlk:");
	if (!at)
		return false;
	uint64_t mask = 0;
	for (at += 7; *at == ' ' || *at == '\t'; at++)
		;
	for (; (*at >= '0' && *at <= '9') || (*at >= 'a' && *at <= 'f'); at++)
		mask = mask << 4 | (uint64_t)(*at <= '9' ? *at - '0' : *at - 'a' + 10);
	return mask >> (FZ_STACKS_SIGNAL - 1) & 1;
}

static void fz_stacks_one(int tid)
{
	if (tid == self_tid()) {
		fz_stacks_print_own();
		return;
	}
	if (blocks_signal(tid)) {
		header(tid, "gave no stack (it blocks signals)");
		put("\n");
		return;
	}
	atomic_store(&answered, 0);
	if (syscall(SYS_tgkill, (int)getpid(), tid, FZ_STACKS_SIGNAL) != 0)
		return; /* it ended meanwhile */
	struct timespec ms = {0, 1000000};
	for (int i = 0; i < FZ_STACK_WAIT_MS; i++) {
		if (atomic_load(&answered) == tid)
			return;
		nanosleep(&ms, NULL);
	}
	header(tid, "gave no stack (printing it did not end in time)");
	put("\n");
}

/* Every thread of the process, in the order /proc/self/task lists them. */
static void fz_stacks_dump(uint64_t ran_ms)
{
	put("==kpfuzz== STACKS: an input has run for ");
	put_u64(ran_ms / 1000);
	put(".");
	put_u64(ran_ms / 100 % 10);
	put(" s (libFuzzer's -timeout is ");
	put_u64(timeout_ms / 1000);
	put(" s): every thread's stack\n");
	int fd = open("/proc/self/task", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd >= 0) {
		char buf[4096];
		long n;
		while ((n = syscall(SYS_getdents64, fd, buf, sizeof(buf))) > 0) {
			for (long at = 0; at < n;) {
				/* struct linux_dirent64: ino (8), off (8), reclen (2), type (1), name */
				unsigned short reclen;
				memcpy(&reclen, buf + at + 16, sizeof(reclen));
				const char *name = buf + at + 19;
				if (name[0] >= '1' && name[0] <= '9')
					fz_stacks_one(atoi(name));
				at += reclen;
			}
		}
		close(fd);
	}
	put("==kpfuzz== end of stacks\n");
}

static void fz_stacks_on_alarm(int sig)
{
	int saved = errno;
	uint64_t start = atomic_load(&input_start_ms), now = now_ms();
	if (start && now - start + FZ_STACKS_EARLY_MS >= timeout_ms && !atomic_exchange(&dumped, true))
		fz_stacks_dump(now - start);
	errno = saved;
	if (chained.sa_flags & SA_SIGINFO) {
		if (chained.sa_sigaction)
			chained.sa_sigaction(sig, NULL, NULL);
	} else if (chained.sa_handler == SIG_DFL) { /* no fuzzer's handler: SIGALRM ends the process */
		signal(sig, SIG_DFL);
		raise(sig);
	} else if (chained.sa_handler != SIG_IGN) {
		chained.sa_handler(sig);
	}
}

/* libFuzzer's -timeout: the last -timeout=N of the command line. */
static uint64_t libfuzzer_timeout_ms(void)
{
	uint64_t secs = FZ_DEFAULT_TIMEOUT_S;
	int fd = open("/proc/self/cmdline", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return secs * 1000;
	static char cmd[65536];
	ssize_t n = read(fd, cmd, sizeof(cmd) - 1);
	close(fd);
	for (ssize_t at = 0; n > 0 && at < n; at += (ssize_t)strlen(cmd + at) + 1) {
		cmd[n] = 0;
		if (!strncmp(cmd + at, "-timeout=", 9) && cmd[at + 9] >= '0' && cmd[at + 9] <= '9')
			secs = strtoull(cmd + at + 9, NULL, 10);
	}
	return (secs ? secs : FZ_DEFAULT_TIMEOUT_S) * 1000;
}

/* Once, with the first input: atheris and libFuzzer have put their SIGALRM
 * handlers in by then, and ours goes in front of them. */
static void install(void)
{
	installed = true;
	void *prime[1];
	backtrace(prime, 1); /* backtrace() loads libgcc on its first call: not in a handler */
	timeout_ms = libfuzzer_timeout_ms();
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sigemptyset(&sa.sa_mask);
	sa.sa_flags = SA_RESTART;
	sa.sa_handler = fz_stacks_on_signal;
	sigaction(FZ_STACKS_SIGNAL, &sa, NULL);
	sa.sa_handler = fz_stacks_on_alarm;
	sigaction(SIGALRM, &sa, &chained);
}

void fz_input_begin(void)
{
	if (!installed)
		install();
	atomic_store(&dumped, false);
	atomic_store(&input_start_ms, now_ms());
	fz_thread_mark(FZ_RUNNING);
}

void fz_input_end(void)
{
	fz_thread_mark(FZ_IDLE);
	atomic_store(&input_start_ms, 0);
}
