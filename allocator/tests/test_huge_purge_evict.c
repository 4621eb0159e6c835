/*
 * test_huge_purge_evict.c - a kept huge mapping whose pages the daemon is
 * giving back still makes way for a segment the allocation path needs under
 * primary_max.
 *
 * The daemon purges a kept mapping (MADV_DONTNEED) without the pool lock,
 * the mapping marked "purging" meanwhile so that no thread takes or unmaps
 * it. A segment or huge block that needs a kept mapping's room under
 * primary_max evicts the kept mappings (huge_cache_detach); one being purged
 * was skipped and still counted, so the allocation failed over to the backup
 * (or failed) for as long as the madvise took, where without the purge it
 * was served by the primary. Checked deterministically: this file's madvise
 * (the library's calls resolve to it) holds the daemon's purge of the kept
 * mapping until the allocating thread is done. After the purge the evicted
 * mapping is unmapped and no longer counted.
 */
#define _GNU_SOURCE
#include "ktest.h"

#include "internal.h"

#include <pthread.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define MiB ((size_t)1 << 20)

static char *volatile hold_lo, *volatile hold_hi; /* the range whose purge is held */
static atomic_int held, release_hold;

int madvise(void *addr, size_t len, int advice)
{
	char *a = addr;
	if (advice == MADV_DONTNEED && hold_lo && a >= hold_lo && a < hold_hi && !atomic_exchange(&held, 1)) {
		/* at most 5 s: a test that never releases fails, not hangs */
		for (int i = 0; i < 5000 && !atomic_load(&release_hold); i++)
			nanosleep(&(struct timespec){0, 1000000}, NULL);
	}
	return (int)syscall(SYS_madvise, addr, len, advice);
}

static void *step(void *pool)
{
	kp_daemon_step(pool, 0);
	return NULL;
}

static void test_a_mapping_being_purged_makes_way_for_a_segment(void)
{
	KT_POOL(pool, "primary_initial:4m,primary_max:16m,daemon:off,step_clock:on,prefault:off,low_wm:0,high_wm:0,"
		      "decay_ms:1000,backup:0,seed:7");
	char *p = kp_alloc(pool, 6 * MiB, 0);
	REQUIRE(p != NULL, "kp_alloc(6 MiB): %s", kp_last_error());
	memset(p, 0x5a, 6 * MiB);
	REQUIRE(kp_free(pool, p) == KP_OK, "kp_free");
	REQUIRE(kt_stat(pool, "primary.huge_cached_bytes") >= (int64_t)(6 * MiB), "the mapping is kept");
	/* the pool grows after the free (4 + 4 MiB of segments, 6 kept): the
	 * daemon's next pass purges the kept mapping */
	void *big[3];
	big[0] = kp_alloc(pool, 3 * MiB, 0);
	int64_t grows = kt_stat(pool, "primary.grows");
	big[1] = kp_alloc(pool, 3 * MiB, 0);
	REQUIRE(big[0] && big[1] && kt_stat(pool, "primary.grows") > grows, "the pool grew");
	hold_lo = p;
	hold_hi = p + 6 * MiB;
	int64_t munmaps = kt_stat(pool, "syscalls.daemon.munmap");
	pthread_t t;
	REQUIRE(pthread_create(&t, NULL, step, pool) == 0, "pthread_create");
	for (int i = 0; i < 5000 && !atomic_load(&held); i++)
		nanosleep(&(struct timespec){0, 1000000}, NULL);
	CHECK(atomic_load(&held), "the daemon's pass did not purge the kept mapping");
	/* a third segment: 12 MiB of segments and 6 kept pass 16 MiB, and the
	 * kept mapping (being purged) must make way */
	grows = kt_stat(pool, "primary.grows");
	int64_t failovers = kt_stat(pool, "backup.allocs");
	big[2] = kp_alloc(pool, 3 * MiB, 0);
	CHECK(big[2] != NULL, "kp_alloc(3 MiB) while the kept mapping was being purged: %s", kp_last_error());
	CHECK(kt_stat(pool, "primary.grows") == grows + 1, "the primary did not grow (%lld grows, %lld before)",
	      (long long)kt_stat(pool, "primary.grows"), (long long)grows);
	CHECK(kt_stat(pool, "backup.allocs") == failovers, "the request went to the backup");
	atomic_store(&release_hold, 1);
	pthread_join(t, NULL);
	hold_lo = NULL;
	CHECK(kt_stat(pool, "syscalls.daemon.munmap") > munmaps, "the daemon did not unmap the evicted mapping");
	CHECK(kt_stat(pool, "primary.huge_cached_bytes") == 0, "the evicted mapping is still counted: %lld",
	      (long long)kt_stat(pool, "primary.huge_cached_bytes"));
	kp_daemon_step(pool, 0); /* unmapped once its grace period passed */
	CHECK(kt_stat(pool, "primary.capacity_bytes") + kt_stat(pool, "primary.huge_bytes") +
			      kt_stat(pool, "primary.huge_cached_bytes") <=
		      (int64_t)(16 * MiB),
	      "primary_max passed");
	CHECK(kt_stat(pool, "integrity.corruptions") == 0, "no corruption reported");
	for (int i = 0; i < 3; i++)
		kp_free(pool, big[i]);
	kp_destroy(pool);
}

int main(void)
{
	RUN(test_a_mapping_being_purged_makes_way_for_a_segment);
	return ktest_summary();
}
