/*
 * preload_rig.h - C tests of the preload library (libkpool-preload.so) from
 * outside: the test binary runs itself again under LD_PRELOAD, as a real
 * program would be run, and judges how that program ended.
 *
 *     int main(int argc, char **argv)
 *     {
 *             if (pr_preloaded(argc, argv))      // the run under the preload
 *                     return program(argv[2]);   // argv[2]: the mode
 *             RUN(test_a);
 *             return ktest_summary();
 *     }
 *
 * pr_run(mode, timeout_s, &res) starts /proc/self/exe with "--preloaded mode"
 * and LD_PRELOAD set to the library of the test's own build
 * (build/<variant>/libkpool-preload.so beside build/<variant>/tests/, or
 * $KPOOL_PRELOAD_LIB), waits at most timeout_s seconds, kills it past them,
 * and fills res: its exit status, whether it was killed for time, and the
 * first bytes of its stderr. The Makefile builds the library before `make
 * test` in the variants that have one (release, debug); the sanitizer
 * variants bring a malloc of their own and have none: pr_skip() says so and
 * the test passes without running (its checks are the release run's).
 */
#ifndef PRELOAD_RIG_H
#define PRELOAD_RIG_H

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ktest.h"

typedef struct pr_result {
	int status;	/* waitpid's status, valid when !timed_out */
	bool timed_out; /* killed after timeout_s */
	char err[4096]; /* the start of its stderr, NUL-ended */
} pr_result;

/* Is this the run under the preload (argv: self --preloaded mode)? */
static inline bool pr_preloaded(int argc, char **argv)
{
	return argc > 2 && !strcmp(argv[1], "--preloaded");
}

/* The preload library of this build, or NULL (none in the sanitizer variants). */
static inline const char *pr_library(void)
{
	static char path[4096];
	const char *env = getenv("KPOOL_PRELOAD_LIB");
	if (env && *env) {
		snprintf(path, sizeof path, "%s", env);
	} else {
		char self[4000];
		ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
		if (n <= 0)
			return NULL;
		self[n] = 0;
		char *slash = strrchr(self, '/');
		if (!slash)
			return NULL;
		*slash = 0; /* build/<variant>/tests */
		snprintf(path, sizeof path, "%s/../libkpool-preload.so", self);
	}
	return access(path, R_OK) == 0 ? path : NULL;
}

/* True (after a line on stdout) when this build has no preload library to
 * test and should have none; a release or debug build without it fails. */
static inline bool pr_skip(void)
{
	if (pr_library())
		return false;
	if (KT_SANITIZED) {
		printf("    skipped: a sanitizer build has no preload library (the release run checks this)\n");
		return true;
	}
	CHECK(false, "no preload library beside the test (make -C allocator VARIANT=<v> preload)");
	return true;
}

/* Read what fd holds now into res->err (as much as fits) and copy it to
 * this test's stderr. */
static inline void pr_take(int fd, pr_result *res, size_t *got)
{
	char buf[1024];
	ssize_t n;
	while ((n = read(fd, buf, sizeof buf)) > 0) {
		size_t room = sizeof res->err - 1 - *got;
		size_t keep = (size_t)n < room ? (size_t)n : room;
		memcpy(res->err + *got, buf, keep);
		*got += keep;
		fwrite(buf, 1, (size_t)n, stderr);
	}
}

/* Run this binary under the preload in the given mode (see above). The
 * child's stdout is the test's; its stderr is kept in res->err and copied
 * to the test's stderr. Returns 0, or -1 when it could not be started. */
static inline int pr_run(const char *mode, unsigned timeout_s, pr_result *res)
{
	memset(res, 0, sizeof *res);
	const char *lib = pr_library();
	int fds[2];
	if (!lib || pipe(fds) != 0)
		return -1;
	fflush(stdout);
	fflush(stderr);
	pid_t pid = fork();
	if (pid < 0)
		return -1;
	if (pid == 0) {
		dup2(fds[1], 2);
		close(fds[0]);
		close(fds[1]);
		setenv("LD_PRELOAD", lib, 1);
		unsetenv("KPOOL_STATS_OUT");
		execl("/proc/self/exe", "preloaded", "--preloaded", mode, (char *)NULL);
		_exit(127);
	}
	close(fds[1]);
	fcntl(fds[0], F_SETFL, O_NONBLOCK);
	size_t got = 0;
	uint64_t deadline = kt_now_ms() + (uint64_t)timeout_s * 1000u;
	for (;;) {
		pr_take(fds[0], res, &got);
		if (waitpid(pid, &res->status, WNOHANG) == pid)
			break;
		if (kt_now_ms() > deadline) {
			kill(pid, SIGKILL);
			waitpid(pid, &res->status, 0);
			res->timed_out = true;
			break;
		}
		kt_sleep_ms(10);
	}
	pr_take(fds[0], res, &got); /* what it wrote after the last read */
	close(fds[0]);
	res->err[got] = 0;
	return 0;
}

/* Did the run end by exit(0)? */
static inline bool pr_ok(const pr_result *r)
{
	return !r->timed_out && WIFEXITED(r->status) && WEXITSTATUS(r->status) == 0;
}

#endif
