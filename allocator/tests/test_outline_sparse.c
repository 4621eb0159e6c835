/*
 * test_outline_sparse.c - the grow daemon does not inflate the resident
 * memory of a layout:outline program that leaves most of its blocks
 * unwritten (issue 14, point 2: the headroom sized from what the allocation
 * path had to fault itself; outline.c, kp__ol_daemon_pass and its probe).
 *
 * kpbench b's pattern, scaled past what the daemon pre-faults for: 40,000
 * live blocks of 16 B-64 KiB, log-uniform (about 310 MiB of blocks), of
 * which the program writes the first and the last byte; then 100,000 times
 * a random one freed and a new one put in its place. Run twice, each in a
 * fresh process (kt_in_child: its peak RSS, VmHWM), the same operations:
 * once with a daemon pass every 500 allocations (10 ms apart on the pool's
 * clock: daemon:off, step_clock:on, the passes at known points), once with
 * none (as daemon:off). The peak with the passes is at most 1.15x the peak
 * without.
 *
 * On main (before the probe; OL_PREFAULT_MIN 256 MiB): past 256 MiB in use
 * the daemon finished every segment the heaps had taken cold and kept
 * spares pre-faulted, whole, whether or not the program wrote them
 * (kpbench b at a 64 MiB threshold: 52 -> 136 MiB peak).
 */
#include "ktest.h"
#include "outline.h"

#include <stdbool.h>

#define NLIVE 40000u
#define CHURN 100000u
#define PASS_EVERY 500u	      /* allocations between two passes */
#define MAX_REQ (65536u - 8u) /* the outline path's largest with its canary */

static void *live[NLIVE];

static void put(kp_pool *pool, uint64_t *seed, unsigned i)
{
	size_t n = kt_rand_log(seed, 16, MAX_REQ);
	char *p = kp_alloc(pool, n, 0);
	if (!p)
		_exit(3);
	p[0] = 1, p[n - 1] = 1; /* kpbench's marks: both ends only */
	live[i] = p;
}

/* The pattern in a fresh process: its peak RSS in KiB (negative: failed). */
static long run(void *arg)
{
	bool passes = arg != NULL;
	kp_pool *pool = kp_create("layout:outline,daemon:off,step_clock:on,seed:7");
	if (!pool)
		return -1;
	uint64_t seed = 99, pick = 7;
	unsigned allocs = 0;
	for (unsigned i = 0; i < NLIVE; i++) {
		put(pool, &seed, i);
		if (passes && ++allocs % PASS_EVERY == 0)
			kp_daemon_step(pool, 10);
	}
	for (unsigned k = 0; k < CHURN; k++) {
		unsigned i = (unsigned)(kt_rand(&pick) % NLIVE);
		kp_free(pool, live[i]);
		put(pool, &seed, i);
		if (passes && ++allocs % PASS_EVERY == 0)
			kp_daemon_step(pool, 10);
	}
	long hwm = kt_status_kb("VmHWM");
	if (passes) { /* the probe's measure (outline.c) */
		printf("   with the passes: the program writes %u%% of the pages it takes, pre-faulting %s\n",
		       pool->ol->grow.touch_pct, pool->ol->grow.prefaulting ? "on" : "off");
		fflush(stdout);
	}
	kp_destroy(pool);
	return hwm;
}

static void test_sparse_not_inflated(void)
{
	long off = kt_in_child(run, NULL), on = kt_in_child(run, (void *)1);
	printf("   peak RSS: %ld KiB without the daemon's passes, %ld KiB with them (%.2fx)\n", off, on,
	       off > 0 ? (double)on / (double)off : 0.0);
	REQUIRE(off > 0 && on > 0, "a run failed: %ld, %ld", off, on);
	CHECK(on * 100 <= off * 115, "peak RSS %ld KiB with the daemon's passes, %ld KiB without", on, off);
}

int main(void)
{
	unsetenv("KPOOL_CONF");
	RUN(test_sparse_not_inflated);
	return ktest_summary();
}
