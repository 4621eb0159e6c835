/*
 * test_front_place.c - the daemon pre-faults the free units the allocation
 * path takes next, not runs it passes over.
 *
 * A span of a big class takes a run of several units (8 for 64 KiB less a
 * header's 64 B), lowest first; a segment's 62 units leave a hole shorter
 * than that run, which the allocation path passes over for every later
 * span of the class while the daemon's front (prefault_front) started at
 * the pool's first free unit: that hole, resident after the first pass, and
 * the front's end check (front_reached) read it, so the front never moved
 * past it and never doubled. Model: a default pool, daemon:off with the
 * test's clock, 64 KiB - 64 B blocks taken 2 MiB at a time with a pass
 * after each (200 MB/s); each block's pages counted resident or not (mincore)
 * the moment kp_alloc hands it out, before it is written. Before: 17,752
 * of the 20,496 pages past the first 16 MiB (7/8) were not resident when
 * taken; with the front skipping the holes, 2,352 (the holes, 448 KiB of
 * each 4 MiB segment, counted as headroom ahead: the daemon grew too
 * little, daemon.c short_runs); with both, none.
 */
/* Tests the grow daemon's growth, front and purge of the inline primary (daemon.c, primary.c; layout:outline's: test_outline_grow.c, test_outline_memory.c): every pool layout:inline (ktest.h, KT_LAYOUT_INLINE). */
#define KT_LAYOUT_INLINE 1
#include "ktest.h"

#define MiB ((size_t)1 << 20)

enum { BLOCK = 64 * 1024 - 64, NB = 1600 };
static void *b[NB];

static void test_front_where_taken(void)
{
	unsetenv("KPOOL_CONF");
	KT_POOL(pool, "daemon:off,step_clock:on,seed:7");
	kp_daemon_step(pool, 0);
	size_t page = (size_t)sysconf(_SC_PAGESIZE);
	size_t done = 0, since = 0, missing = 0, pages = 0;
	int nb = 0;
	while (done < 96 * MiB && nb < NB) {
		b[nb] = kp_alloc(pool, BLOCK, 0);
		REQUIRE(b[nb] != NULL, "kp_alloc #%d: %s", nb, kp_last_error());
		if (done >= 16 * MiB) {
			missing += kt_not_resident(b[nb], BLOCK);
			pages += (BLOCK + page - 1) / page;
		}
		memset(b[nb++], 0x5a, BLOCK);
		done += BLOCK, since += BLOCK;
		if (since >= 2 * MiB) {
			since = 0;
			kp_daemon_step(pool, 10);
		}
	}
	printf("   %zu of %zu pages past the first 16 MiB not resident when taken; %lld KiB pre-faulted ahead\n",
	       missing, pages, (long long)(kt_stat(pool, "daemon.prefaulted_bytes") >> 10));
	CHECK(missing * 20 < pages, "%zu of %zu pages not resident when the allocating thread took them", missing,
	      pages);
	while (nb)
		kp_free(pool, b[--nb]);
	kp_destroy(pool);
}

int main(void)
{
	RUN(test_front_where_taken);
	return ktest_summary();
}
