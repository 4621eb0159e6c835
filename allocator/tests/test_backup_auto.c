/*
 * test_backup_auto.c - the default reserve (backup:auto) scales with the
 * pool, as Linux's min_free_kbytes scales with memory (issue 14, point 2):
 *   - at creation a few pages are resident (at most 16 KiB), and a critical
 *     caller of a pool whose primary is exhausted is served from them at
 *     once (before: 256 KiB resident in every process, a small program's
 *     whole margin over glibc);
 *   - the daemon grows the reserve with the primary's peak bytes in use
 *     (1/128 to 1/64 of it), up to the region reserved and guard-fenced at
 *     creation (1 MiB), never past it, and never shrinks it;
 *   - what it grew is resident before it is served (pre-faulted: a reserve
 *     that must first be faulted in fails when memory is short), and a
 *     critical caller gets a 512 KiB block of it on an exhausted primary
 *     (before: NULL, the reserve was 256 KiB).
 *   - the reserve's metadata (out of band: a state byte and two list links
 *     per 256-byte granule) is one resident page for a reserve of a few
 *     pages (before: three, the state, next and prev arrays apart).
 * Driven with daemon:off and kp_daemon_step (nothing moves unless the test
 * moves it), and once by the daemon thread itself.
 */
#include "ktest.h"

#include "internal.h"

#include <sys/mman.h>
#include <unistd.h>

#define KiB ((size_t)1 << 10)
#define MiB ((size_t)1 << 20)

/* Blocks of `size` until the primary refuses one, or until `upto` bytes;
 * returns how many (into b, at most cap). */
static size_t fill(kp_pool *pool, void **b, size_t cap, size_t size, size_t upto)
{
	size_t n = 0;
	while (n < cap && n * size < upto) {
		void *p = kp_alloc(pool, size, 0);
		if (p == NULL)
			break;
		memset(p, 0x3c, size);
		b[n++] = p;
	}
	return n;
}

static void test_starts_small(void)
{
	unsetenv("KPOOL_CONF");
	KT_POOL(pool, "primary_initial:4m,primary_max:4m,daemon:off,seed:3");
	int64_t cap = kt_stat(pool, "backup.capacity_bytes");
	printf("   default reserve at creation: %lld KiB\n", (long long)(cap >> 10));
	CHECK(cap > 0 && cap <= (int64_t)(16 * KiB), "the default reserve is %lld KiB at creation (want 1-16 KiB)",
	      (long long)(cap >> 10));
	/* served from it at once, with the primary exhausted */
	static void *b[1 << 12];
	size_t n = fill(pool, b, sizeof b / sizeof b[0], 4 * KiB, SIZE_MAX);
	REQUIRE(kp_alloc(pool, 4 * KiB, 0) == NULL, "the 4 MiB primary did not run out (%zu blocks)", n);
	REQUIRE(kp_critical_enter(pool, kp_critical_token(pool)) == 0, "kp_critical_enter");
	char *c = kp_alloc(pool, 1000, KP_CRITICAL);
	CHECK(c != NULL, "a critical caller on an exhausted primary got NULL from the default reserve");
	CHECK(kt_stat(pool, "backup.allocs") == 1, "backup.allocs %lld", (long long)kt_stat(pool, "backup.allocs"));
	if (c != NULL) {
		CHECK(kt_not_resident(c, 1000) == 0, "the reserve's first block was not resident before use");
		memset(c, 1, 1000);
		kp_free(pool, c);
	}
	kp_critical_exit(pool);
	kt_free_all(pool, b, n);
	kp_destroy(pool);
}

/* On each layout: the inline one counts its peak on its allocation path; the
 * outline one (the default) counts its blocks on no fast path, and its
 * daemon's pass folds the bytes in use into the peak before the reserve
 * grows (outline.c, kp__ol_daemon_pass; kp__stats_peak). Before, the
 * outline peak moved only when the stats were read: 40 MiB in use and a
 * daemon step left the reserve at its 16 KiB of creation, and a critical
 * caller of the exhausted pool got no 512 KiB block. */
static void grows_with_peak(const char *conf)
{
	unsetenv("KPOOL_CONF");
	/* critical_wm 95% of 128 MiB: 40 MiB in use is ordinary */
	KT_POOL(pool, conf);
	int64_t first = kt_stat(pool, "backup.capacity_bytes");
	static void *b[1 << 12];
	size_t n = fill(pool, b, sizeof b / sizeof b[0], 32 * KiB, 40 * MiB);
	kp_daemon_step(pool, 10);
	int64_t peak = kt_stat(pool, "primary.peak_in_use_bytes");
	int64_t cap = kt_stat(pool, "backup.capacity_bytes");
	printf("   peak in use %lld KiB: reserve %lld KiB (at creation %lld KiB)\n", (long long)(peak >> 10),
	       (long long)(cap >> 10), (long long)(first >> 10));
	CHECK(cap >= peak / 128 && cap <= peak / 64, "reserve %lld KiB for a peak of %lld KiB (want 1/128 to 1/64)",
	      (long long)(cap >> 10), (long long)(peak >> 10));
	kt_free_all(pool, b, n);
	kp_daemon_step(pool, 10);
	CHECK(kt_stat(pool, "backup.capacity_bytes") == cap, "the reserve shrank to %lld KiB when use fell",
	      (long long)(kt_stat(pool, "backup.capacity_bytes") >> 10));
	/* exhaust the primary: the peak passes 64 MiB (1/64 of it is 1 MiB), the reserve stops
	 * at its region */
	n = fill(pool, b, sizeof b / sizeof b[0], 32 * KiB, SIZE_MAX);
	for (int i = 0; i < 3; i++)
		kp_daemon_step(pool, 10);
	peak = kt_stat(pool, "primary.peak_in_use_bytes");
	cap = kt_stat(pool, "backup.capacity_bytes");
	printf("   exhausted at %lld KiB in use: reserve %lld KiB\n", (long long)(peak >> 10), (long long)(cap >> 10));
	CHECK(cap == (int64_t)MiB, "reserve %lld KiB at a peak of %lld KiB (want its 1 MiB region)",
	      (long long)(cap >> 10), (long long)(peak >> 10));
	/* a grown reserve serves a critical caller, from resident memory */
	REQUIRE(kp_critical_enter(pool, kp_critical_token(pool)) == 0, "kp_critical_enter");
	char *c = kp_alloc(pool, 512 * KiB, KP_CRITICAL);
	CHECK(c != NULL, "no 512 KiB critical block from a reserve grown to %lld KiB", (long long)(cap >> 10));
	if (c != NULL) {
		size_t missing = kt_not_resident(c, 512 * KiB);
		CHECK(missing == 0, "%zu pages of the grown reserve's block were not resident before use", missing);
		memset(c, 2, 512 * KiB);
		kp_free(pool, c);
	}
	kp_critical_exit(pool);
	kt_free_all(pool, b, n);
	kp_destroy(pool);
}

static void test_grows_with_peak(void)
{
	grows_with_peak("primary_max:128m,daemon:off,seed:3");
}

static void test_grows_with_peak_inline(void)
{
	grows_with_peak("layout:inline,primary_max:128m,daemon:off,seed:3");
}

/* The daemon thread itself (not kp_daemon_step) grows it, woken by the
 * program's growth or by its timer. */
static void test_daemon_thread_grows_it(void)
{
	unsetenv("KPOOL_CONF");
	KT_POOL(pool, "seed:3");
	static void *b[1 << 12];
	size_t n = fill(pool, b, sizeof b / sizeof b[0], 4 * KiB, 16 * MiB);
	int64_t cap = 0;
	for (int i = 0; i < 100 && cap < (int64_t)(128 * KiB); i++) { /* up to 2 s: ten timer periods and more */
		kt_sleep_ms(20);
		cap = kt_stat(pool, "backup.capacity_bytes");
	}
	printf("   16 MiB handed out, the daemon running: reserve %lld KiB\n", (long long)(cap >> 10));
	CHECK(cap >= (int64_t)(128 * KiB), "the daemon left the reserve at %lld KiB with 16 MiB in use",
	      (long long)(cap >> 10));
	kt_free_all(pool, b, n);
	kp_destroy(pool);
}

static void test_meta_one_page(void)
{
	unsetenv("KPOOL_CONF");
	KT_POOL(pool, "daemon:off,seed:3");
	kp__backup *b = &pool->backup;
	size_t pages = b->meta_size / (size_t)sysconf(_SC_PAGESIZE);
	size_t resident = pages - kt_not_resident(b->meta, b->meta_size);
	printf("   reserve metadata: %zu of %zu pages resident\n", resident, pages);
	CHECK(resident <= 1, "the default reserve's metadata is %zu pages resident at creation (want 1)", resident);
	kp_destroy(pool);
}

/* An explicit size is the whole reserve, resident from creation, as before
 * (the critical-exhaustion workload and test_backup set one). */
static void test_explicit_size_is_whole(void)
{
	KT_POOL(pool, "backup:512k,daemon:off,seed:3");
	CHECK(kt_stat(pool, "backup.capacity_bytes") == (int64_t)(512 * KiB), "backup:512k: capacity %lld KiB",
	      (long long)(kt_stat(pool, "backup.capacity_bytes") >> 10));
	kp_daemon_step(pool, 10);
	CHECK(kt_stat(pool, "backup.capacity_bytes") == (int64_t)(512 * KiB), "backup:512k grew to %lld KiB",
	      (long long)(kt_stat(pool, "backup.capacity_bytes") >> 10));
	kp_destroy(pool);
}

int main(void)
{
	RUN(test_starts_small);
	RUN(test_grows_with_peak);
	RUN(test_grows_with_peak_inline);
	RUN(test_explicit_size_is_whole);
	RUN(test_daemon_thread_grows_it);
	RUN(test_meta_one_page);
	return ktest_summary();
}
