/*
 * test_preload_clearenv_attack31.c - a program that clears its environment
 * before its first malloc got 1 MiB in all under the preload library.
 *
 * The preload serves what is allocated before libc has set up the
 * environment from its bootstrap buffer (1 MiB, never reused: free is a
 * no-op there), and took `environ == NULL` as that sign. clearenv() sets
 * environ to NULL, and a program that calls it at the start of main, before
 * anything allocated (a daemon or a sandbox dropping what it inherited),
 * never got a pool: every block came from the buffer, and malloc failed
 * with ENOMEM once 1 MiB had been handed out, however much was freed
 * (attack helper s31-real, clr.c: "malloc failed after 1024 allocations"
 * of 1000 bytes, each freed at once; glibc ran all 100,000). Now the sign
 * is the environment's absence before this library's constructor ran.
 *
 * Mode "clear": clearenv(), then ROUNDS allocations of BLOCK bytes, each
 * written and freed, then setenv (which allocates too); exit 0 only when
 * every one succeeded. Before the fix: exit 1 at the 1,025th allocation.
 *
 * Reproduce: make -C allocator VARIANT=release preload
 * build/release/tests/test_preload_clearenv_attack31 &&
 * allocator/build/release/tests/test_preload_clearenv_attack31
 */
#define _GNU_SOURCE
#include "preload_rig.h"

/* 100 MB handed out in all: a hundred times the bootstrap buffer. */
#define ROUNDS 100000
#define BLOCK 1000
/* The program takes well under a second. */
#define RUN_LIMIT_S 60

static int program(const char *mode)
{
	(void)mode;
	if (clearenv() != 0)
		return 2;
	for (int i = 0; i < ROUNDS; i++) {
		char *p = malloc(BLOCK);
		if (!p) {
			fprintf(stderr, "malloc failed at allocation %d of %d\n", i + 1, ROUNDS);
			return 1;
		}
		memset(p, 1, BLOCK);
		free(p);
	}
	if (setenv("KPOOL_TEST", "set", 1) != 0 || strcmp(getenv("KPOOL_TEST"), "set") != 0)
		return 3;
	return 0;
}

static void test_a_program_without_an_environment_gets_the_pool(void)
{
	if (pr_skip())
		return;
	pr_result r;
	REQUIRE(pr_run("clear", RUN_LIMIT_S, &r) == 0, "could not start the preloaded run");
	CHECK(pr_ok(&r), "%s, status 0x%x: %s", r.timed_out ? "timed out" : "failed", r.status, r.err);
}

int main(int argc, char **argv)
{
	if (pr_preloaded(argc, argv))
		return program(argv[2]);
	RUN(test_a_program_without_an_environment_gets_the_pool);
	return ktest_summary();
}
