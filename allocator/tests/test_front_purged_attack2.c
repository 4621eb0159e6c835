/*
 * test_front_purged_attack2.c - units the daemon purged are pre-faulted
 * again when the program takes them back under its peak (failed on main
 * 2a93ba1 through b90f33d: never; since sess15-hD the daemon counts purged
 * units taken back as demand: 141 of 5,376 pages faulted, the first blocks
 * before any rate was measured). What it found:
 *
 * The daemon measures demand as growth past the peak use (daemon.c,
 * daemon_target: "a program that gives memory back and takes it again
 * finds it resident"), but its own purge (primary.c, kp__primary_purge)
 * gives back the pages of free units idle past the front, and the front is
 * 0 once growth stopped. A program that frees half of 32 MiB (7-unit holes
 * between live 7-unit blocks), pauses 400 ms (the holes purged), then takes
 * 7-unit blocks again at 45 MB/s, one per 10 ms pass, faults every page of
 * the 36 blocks the holes hold on its own thread: 4,101 of 5,376 pages not
 * resident when taken (the 12 past the holes, growth past the peak, are
 * pre-faulted). DESIGN's primary.c note says a purged unit is pre-faulted
 * "when the front reaches it", which it never does here.
 */
/* Tests the grow daemon's growth, front and purge of the inline primary (daemon.c, primary.c; layout:outline's: test_outline_grow.c, test_outline_memory.c): every pool layout:inline (ktest.h, KT_LAYOUT_INLINE). */
#define KT_LAYOUT_INLINE 1
#include "ktest.h"

#define UNIT ((size_t)64 << 10)
#define RUN7 (7 * UNIT - 256)

enum { NHOLE = 9 * 8, NTAKE = 48 };
static void *hole[NHOLE], *took[NTAKE];

static void test_purged_holes_taken_back(void)
{
	unsetenv("KPOOL_CONF");
	KT_POOL(pool, "daemon:off,step_clock:on,seed:9,decay_ms:50,primary_initial:4m");
	kp_daemon_step(pool, 0);
	size_t page = (size_t)sysconf(_SC_PAGESIZE);
	for (int i = 0; i < NHOLE; i++) {
		hole[i] = kp_alloc(pool, RUN7, 0);
		REQUIRE(hole[i], "kp_alloc #%d: %s", i, kp_last_error());
		memset(hole[i], 1, RUN7);
		kp_daemon_step(pool, 10);
	}
	void *first = hole[0];
	for (int i = 0; i < NHOLE; i += 2)
		kp_free(pool, hole[i]), hole[i] = NULL;
	for (int i = 0; i < 40; i++)
		kp_daemon_step(pool, 10);
	size_t purged = kt_not_resident(first, RUN7);
	size_t missing = 0, pages = 0;
	for (int r = 0; r < NTAKE; r++) {
		took[r] = kp_alloc(pool, RUN7, 0);
		REQUIRE(took[r], "kp_alloc #%d: %s", r, kp_last_error());
		missing += kt_not_resident(took[r], RUN7);
		pages += (RUN7 + page - 1) / page;
		memset(took[r], 2, RUN7);
		kp_daemon_step(pool, 10);
	}
	printf("   first hole: %zu pages purged; %zu of %zu pages not resident when taken back at 45 MB/s\n", purged,
	       missing, pages);
	CHECK(missing * 10 < pages,
	      "%zu of %zu pages not resident when taken (the daemon purged them, then pre-faulted none)", missing,
	      pages);
	for (int i = 0; i < NHOLE; i++)
		kp_free(pool, hole[i]);
	for (int i = 0; i < NTAKE; i++)
		kp_free(pool, took[i]);
	kp_destroy(pool);
}

int main(void)
{
	RUN(test_purged_holes_taken_back);
	return ktest_summary();
}
