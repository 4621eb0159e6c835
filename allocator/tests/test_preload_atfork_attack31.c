/*
 * test_preload_atfork_attack31.c - a program whose first allocation comes
 * from inside pthread_atfork hung forever under the preload library.
 *
 * glibc keeps the fork handlers in an array with room for 48 inside itself;
 * the 49th pthread_atfork allocates the array with malloc while it holds
 * glibc's atfork lock. When that malloc was the program's first (a program,
 * or the libraries it loads, that register handlers before allocating
 * anything), it made the preload's pool there: kp_create's once-only setup
 * registers pool.c's fork handlers with pthread_atfork, which waited for the
 * atfork lock its own thread held (attack helper s31-real, atf.c: 49 or more
 * registrations, then malloc, hung; 48 ran). Now the preload's constructor
 * registers both sets of fork handlers, before any program code runs.
 *
 * Mode "register": HANDLERS pthread_atfork calls, then malloc, free and a
 * fork whose handlers (the program's and kpool's) run in both processes;
 * it must end by exit(0) within RUN_LIMIT_S. Before the fix: killed at the
 * limit (the thread in __register_atfork <- once_init <- kp_create <-
 * malloc <- __register_atfork).
 *
 * Reproduce: make -C allocator VARIANT=release preload
 * build/release/tests/test_preload_atfork_attack31 &&
 * allocator/build/release/tests/test_preload_atfork_attack31
 */
#define _GNU_SOURCE
#include <pthread.h>

#include "preload_rig.h"

/* Past glibc 2.36's 48 handlers held inside the array itself. */
#define HANDLERS 64
/* The program takes milliseconds; a hang is killed after this. */
#define RUN_LIMIT_S 20

static _Atomic int ran;

static void handler(void)
{
	ran++;
}

static int program(const char *mode)
{
	(void)mode;
	for (int i = 0; i < HANDLERS; i++)
		if (pthread_atfork(handler, handler, handler) != 0)
			return 2;
	char *p = malloc(100);
	if (!p)
		return 3;
	memset(p, 1, 100);
	free(p);
	pid_t c = fork();
	if (c == 0)
		_exit(ran == 2 * HANDLERS ? 0 : 4); /* prepare and child handlers */
	int st = 0;
	waitpid(c, &st, 0);
	if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
		return 5;
	return ran == 2 * HANDLERS ? 0 : 6; /* prepare and parent handlers */
}

static void test_a_first_malloc_inside_pthread_atfork_ends(void)
{
	if (pr_skip())
		return;
	pr_result r;
	REQUIRE(pr_run("register", RUN_LIMIT_S, &r) == 0, "could not start the preloaded run");
	CHECK(pr_ok(&r), "%s, status 0x%x: %s", r.timed_out ? "hung (killed at the limit)" : "failed", r.status, r.err);
}

int main(int argc, char **argv)
{
	if (pr_preloaded(argc, argv))
		return program(argv[2]);
	RUN(test_a_first_malloc_inside_pthread_atfork_ends);
	return ktest_summary();
}
