/*
 * test_preload_rlimit_as_attack31.c - under an address-space limit
 * (RLIMIT_AS, `ulimit -v`) of less than about 17 GiB, no program ran under
 * the preload library.
 *
 * The default layout's pool maps its slice map (outline.c: a pointer per
 * 64 KiB of the 47-bit address space, 16 GiB MAP_NORESERVE, touched only
 * where slices are used) in kp_create. An address-space limit counts the
 * whole mapping, so kp_create failed, and the preload ended the program at
 * its first malloc: "kpool-preload: cannot make the pool: kp_create: could
 * not map the initial pools", status 127 (attack helper s31-real: `ulimit
 * -v 16000000; ls` and `python3 -c ...` under the preload, every limit
 * from 50 MB to 16 GB; glibc ran them all, and so did layout:inline down
 * to 100 MB). Now the preload makes an inline pool when the default one
 * cannot be mapped (ENOMEM); a bad setting still ends the program.
 *
 * Mode "limit": sets RLIMIT_AS to LIMIT and runs itself again (mode "run",
 * the preload still in its environment): BLOCKS blocks of 1-64 KiB made,
 * written and freed; exit 0 only when all succeeded. Before the fix: status
 * 127 and the line above.
 *
 * Reproduce: make -C allocator VARIANT=release preload
 * build/release/tests/test_preload_rlimit_as_attack31 &&
 * allocator/build/release/tests/test_preload_rlimit_as_attack31
 */
#define _GNU_SOURCE
#include <sys/resource.h>

#include "preload_rig.h"

/* 1 GiB of address space: the libraries, the stack and a pool of a few
 * MiB fit many times over; the 16 GiB slice map does not. */
#define LIMIT ((rlim_t)1 << 30)
/* Up to 64 MiB handed out in all, 4,000 blocks live at most. */
#define BLOCKS 4000
#define RUN_LIMIT_S 60

static int program(const char *mode)
{
	if (!strcmp(mode, "limit")) {
		struct rlimit rl = {LIMIT, LIMIT};
		if (setrlimit(RLIMIT_AS, &rl) != 0)
			return 2;
		execl("/proc/self/exe", "preloaded", "--preloaded", "run", (char *)NULL);
		return 3;
	}
	static char *live[BLOCKS];
	for (int i = 0; i < BLOCKS; i++) {
		size_t n = 1024 + (size_t)(i * 7919) % (64 * 1024);
		live[i] = malloc(n);
		if (!live[i]) {
			fprintf(stderr, "malloc(%zu) failed at block %d under RLIMIT_AS\n", n, i);
			return 1;
		}
		memset(live[i], 1, n);
	}
	for (int i = 0; i < BLOCKS; i++)
		free(live[i]);
	return 0;
}

static void test_a_program_under_an_address_space_limit_runs(void)
{
	if (pr_skip())
		return;
	pr_result r;
	REQUIRE(pr_run("limit", RUN_LIMIT_S, &r) == 0, "could not start the preloaded run");
	CHECK(pr_ok(&r), "%s, status 0x%x: %s", r.timed_out ? "timed out" : "failed", r.status, r.err);
}

int main(int argc, char **argv)
{
	if (pr_preloaded(argc, argv))
		return program(argv[2]);
	RUN(test_a_program_under_an_address_space_limit_runs);
	return ktest_summary();
}
