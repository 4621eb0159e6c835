/*
 * crash.c - what a fatal signal leaves behind: one line naming the signal,
 * the driver thread and its op index (the runner parses it into the crash
 * record and the reproducer), then a backtrace; then the signal is re-raised
 * so that the runner sees the real cause. A sanitizer's own handler, when
 * one is installed, is left alone: its report says more.
 */
#include "kpdriver.h"

#include <execinfo.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

/* The driver thread and op a fatal signal interrupted. */
static __thread unsigned t_thread;
static __thread const uint64_t *t_index;

void kpd_crash_context(unsigned thread, const uint64_t *index)
{
	t_thread = thread;
	t_index = index;
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

/* Async-signal-safe: write(2) and a primed backtrace_symbols_fd (which
 * writes, never allocates). The runner parses the first line. */
static void on_fatal(int sig)
{
	put("kpdrive: fatal signal ");
	put_u64((uint64_t)sig);
	if (t_index) {
		put(" thread ");
		put_u64(t_thread);
		put(" op ");
		put_u64(*t_index);
	}
	put("\n");
	void *frames[64];
	int n = backtrace(frames, 64);
	backtrace_symbols_fd(frames, n, 2);
	signal(sig, SIG_DFL);
	raise(sig);
}

void kpd_crash_handlers(void)
{
	/* backtrace() loads libgcc on its first call, which may allocate:
	 * do that now, not inside a signal handler. */
	void *prime[1];
	backtrace(prime, 1);
	static const int sigs[] = {SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT};
	for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++) {
		struct sigaction old;
		/* A sanitizer's handler (which prints the real report) stays. */
		if (sigaction(sigs[i], NULL, &old) == 0 && old.sa_handler == SIG_DFL && !(old.sa_flags & SA_SIGINFO))
			signal(sigs[i], on_fatal);
	}
}
