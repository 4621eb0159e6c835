/*
 * test_sparse_purge.c - free units a sparse program left resident are given
 * back after KP_RELEASE_MS idle, not decay_ms (issue 14: git's peak RSS under
 * the preload).
 *
 * A program that leaves most of what it takes unwritten (the daemon's probe:
 * not pre-faulting) is handed clean units first (primary.c, units_take): the
 * resident pages of the units its spans and large blocks gave back are taken
 * again only by a span of the same class at the same start. git
 * pack-objects (touched_pct 73) kept 0.6-3.8 MiB of such units resident for
 * the whole of its 0.5-1 s life (decay_ms is 1 s) while its new spans faulted
 * in clean ones. Driven with kp_daemon_step (daemon:off):
 *   after 8 MiB taken with one byte written per 64 KiB block, 4 MiB written
 *   whole and freed are given back within 300 ms of passes (480 KiB before).
 * A dense program's (every page written: pre-faulting) were already given
 * back as soon, as pages pre-faulted for growth that stopped (daemon.c,
 * KP_RELEASE_MS): 7 MiB of the same run's 12.
 */
/* Tests the grow daemon's growth, front and purge of the inline primary (daemon.c, primary.c; layout:outline's: test_outline_grow.c, test_outline_memory.c): every pool layout:inline (ktest.h, KT_LAYOUT_INLINE). */
#define KT_LAYOUT_INLINE 1
#include "ktest.h"

#include <stdbool.h>

#define KiB ((size_t)1 << 10)
#define MiB ((size_t)1 << 20)
#define BLOCK (64 * KiB - 64)
#define NKEEP 128 /* 8 MiB kept */
#define NFREE 64  /* 4 MiB written whole and freed */

static void *keep[NKEEP], *gone[NFREE];

/* Returns the bytes purged within 300 ms of passes after the free. */
static long long purged_after_free(bool dense, bool *prefaulting)
{
	kp_pool *pool = kp_create("daemon:off,seed:41");
	if (pool == NULL) {
		CHECK(0, "kp_create: %s", kp_last_error());
		return -1;
	}
	kp_daemon_step(pool, 0);
	for (unsigned i = 0; i < NKEEP; i++) {
		char *p = kp_alloc(pool, BLOCK, 0);
		if (p == NULL) {
			CHECK(0, "kp_alloc: %s", kp_last_error());
			return -1;
		}
		if (dense)
			memset(p, 1, BLOCK);
		else
			p[0] = 1;
		keep[i] = p;
		if (i % 16 == 15)
			kp_daemon_step(pool, 20);
	}
	for (unsigned i = 0; i < NFREE; i++) {
		gone[i] = kp_alloc(pool, BLOCK, 0);
		if (gone[i] == NULL) {
			CHECK(0, "kp_alloc: %s", kp_last_error());
			return -1;
		}
		memset(gone[i], 2, BLOCK);
	}
	kp_daemon_step(pool, 20);
	for (unsigned i = 0; i < NFREE; i++)
		CHECK(kp_free(pool, gone[i]) == 0, "kp_free: %s", kp_last_error());
	kp_thread_flush(pool); /* the spans empty: their units go back */
	char *js = kt_stats(pool);
	long long before = (long long)kt_json_int(js, "primary.purged_bytes", -1);
	free(js);
	for (unsigned i = 0; i < 6; i++)
		kp_daemon_step(pool, 50);
	js = kt_stats(pool);
	long long after = (long long)kt_json_int(js, "primary.purged_bytes", -1);
	*prefaulting = strstr(js, "\"prefaulting\":true") != NULL;
	printf("   %s: %lld KiB given back within 300 ms of the free (touched_pct %lld, %s)\n",
	       dense ? "dense" : "sparse", (after - before) / 1024,
	       (long long)kt_json_int(js, "daemon.touched_pct", -1),
	       *prefaulting ? "pre-faulting" : "not pre-faulting");
	free(js);
	for (unsigned i = 0; i < NKEEP; i++)
		CHECK(kp_free(pool, keep[i]) == 0, "kp_free: %s", kp_last_error());
	kp_destroy(pool);
	return after - before;
}

static void test_sparse_gives_back_soon(void)
{
	bool pre = true;
	long long purged = purged_after_free(false, &pre);
	CHECK(!pre, "pre-faulting for a program that writes one page in 16");
	CHECK(purged >= (long long)(3 * MiB), "%lld bytes of 4 MiB freed given back within 300 ms", purged);
}

int main(void)
{
	RUN(test_sparse_gives_back_soon);
	return ktest_summary();
}
