/*
 * test_memory.c - what a pool costs in memory on its defaults (issue 14,
 * points 2 and 3):
 *   - idle: a process with one default pool and ~100 KB live is resident at
 *     most 4 MiB beyond the backup reserve (before: 42 MB, 8 MiB of initial
 *     primary, the 4 MiB reserve and the daemon's fixed 32 MiB of headroom,
 *     all pre-faulted);
 *   - the daemon's headroom target follows the measured allocation rate and
 *     what the allocation path had to fault itself, and falls back to its
 *     floor when the pool goes idle (driven with kp_daemon_step);
 *   - no hard cap: by default a pool grows past 1 GiB (before: primary_max
 *     1g, so 1.5 GiB of untouched memory was refused);
 *   - a small program (1000 live blocks of 16-256 B, churned, as kpbench's
 *     a) peaks at most 1.25 MiB over the same program on glibc's malloc, the
 *     backup reserve aside (it is resident on purpose), measured side by
 *     side in two children of this test (before: 2.5 MiB over).
 * RSS is meaningless under a sanitizer (its shadow and quarantine are
 * resident): the RSS bound is checked in the release variant.
 */
#include "ktest.h"

#include <stdbool.h>
#include <sys/wait.h>
#include <unistd.h>

#define KiB ((size_t)1 << 10)
#define MiB ((size_t)1 << 20)
#define GiB ((size_t)1 << 30)

/* Each RUN is a fresh child: nothing of an earlier test is resident. */
static void test_idle_rss(void)
{
	unsetenv("KPOOL_CONF");
	long rss0 = kt_status_kb("VmRSS");
	kp_pool *pool = kp_create(NULL);
	REQUIRE(pool != NULL, "kp_create: %s", kp_last_error());
	enum { N = 1000, SIZE = 100 }; /* ~100 KB live */
	static void *b[N];
	for (int i = 0; i < N; i++) {
		b[i] = kp_alloc(pool, SIZE, 0);
		REQUIRE(b[i] != NULL, "kp_alloc #%d", i);
		memset(b[i], 0x5a, SIZE);
	}
	/* idle: the daemon's first passes (woken at once, then its timer) */
	kt_sleep_ms(500);
	long rss = kt_status_kb("VmRSS");
	int64_t backup = kt_stat(pool, "backup.capacity_bytes");
	int64_t cap = kt_stat(pool, "primary.capacity_bytes");
	printf("   idle RSS %ld KiB (process before the pool %ld KiB), backup reserve %lld KiB, primary capacity "
	       "%lld KiB (mapped)\n",
	       rss, rss0, (long long)(backup >> 10), (long long)(cap >> 10));
	if (KT_SANITIZED)
		printf("   (sanitizer build: the RSS bound is checked in the release variant)\n");
	else
		CHECK(rss * (long)KiB <= (long)backup + (long)(4 * MiB),
		      "idle RSS %ld KiB is more than 4 MiB beyond the backup reserve (%lld KiB)", rss,
		      (long long)(backup >> 10));
	for (int i = 0; i < N; i++)
		kp_free(pool, b[i]);
	kp_destroy(pool);
}

/* 1.5 GiB live, untouched (prefault off), on an otherwise default pool. */
static void test_no_1g_cap(void)
{
	unsetenv("KPOOL_CONF");
	KT_POOL(pool, "prefault:off");
	int64_t max = kt_stat(pool, "primary.max_bytes");
	printf("   primary.max_bytes by default: %lld MiB\n", (long long)(max >> 20));
	CHECK(max > (int64_t)(3 * GiB / 2), "the default primary_max is %lld MiB: a pool cannot reach 1.5 GiB",
	      (long long)(max >> 20));
	char *one = kp_alloc(pool, 3 * GiB / 2, 0);
	CHECK(one != NULL, "kp_alloc(1.5 GiB) on a default pool: %s", kp_last_error());
	if (one != NULL) {
		one[0] = 1;
		one[3 * GiB / 2 - 1] = 2;
		kp_free(pool, one);
	}
	/* the same in three live blocks, and 64 MiB of segments beside them */
	char *b[3] = {0};
	for (int i = 0; i < 3; i++) {
		b[i] = kp_alloc(pool, GiB / 2, 0);
		CHECK(b[i] != NULL, "kp_alloc(512 MiB) #%d with %d GiB/2 live: %s", i, i, kp_last_error());
	}
	enum { NS = 64 };
	void *s[NS] = {0};
	for (int i = 0; i < NS; i++) {
		s[i] = kp_alloc(pool, MiB, 0);
		CHECK(s[i] != NULL, "kp_alloc(1 MiB) #%d beside 1.5 GiB live: %s", i, kp_last_error());
	}
	for (int i = 0; i < NS; i++)
		kp_free(pool, s[i]);
	for (int i = 0; i < 3; i++)
		kp_free(pool, b[i]);
	kp_destroy(pool);
}

/* The small program of test_small_program_peak, on a default pool (pool
 * non-NULL) or on malloc; returns the child's peak RSS (VmHWM) in KiB. */
/* The small program's churn: steps replacements of a random one of N_SMALL
 * live blocks of 16-256 B (b, all NULL at first), on pool (or malloc when
 * NULL), written at both ends; a pause of pause_ms at every step i with
 * i % every == phase. The index of the allocation that failed, or -1. */
enum { N_SMALL = 1000 };
static int small_churn(kp_pool *pool, char **b, int steps, int every, int phase, unsigned pause_ms)
{
	uint64_t seed = 42;
	for (int i = 0; i < steps; i++) {
		unsigned k = (unsigned)(kt_rand(&seed) % N_SMALL);
		size_t n = kt_rand_range(&seed, 16, 256);
		if (b[k] != NULL)
			pool ? (void)kp_free(pool, b[k]) : free(b[k]);
		b[k] = pool ? kp_alloc(pool, n, 0) : malloc(n);
		if (b[k] == NULL)
			return i;
		b[k][0] = b[k][n - 1] = 1;
		if (i % every == phase)
			kt_sleep_ms(pause_ms);
	}
	return -1;
}

static long small_program(kp_pool *pool)
{
	enum { STEPS = 2000000 };
	static char *b[N_SMALL];
	/* halfway, a pause: the daemon's timer passes see a steady program */
	if (small_churn(pool, b, STEPS, STEPS, STEPS / 2, 300) >= 0)
		return -1;
	return kt_status_kb("VmHWM");
}

/* small_program in a fresh child (kt_in_child): its peak less the backup
 * reserve on a default pool (*(bool *)kpool), or on malloc. */
static long small_program_in_child(void *kpool)
{
	kp_pool *pool = NULL;
	if (*(bool *)kpool)
		pool = kp_create(NULL);
	long hwm = *(bool *)kpool && pool == NULL ? -2 : small_program(pool);
	if (pool != NULL)
		hwm = hwm * 1024 > kt_stat(pool, "backup.capacity_bytes")
			      ? hwm - (long)(kt_stat(pool, "backup.capacity_bytes") >> 10)
			      : hwm;
	return hwm;
}

static long small_program_child(bool kpool)
{
	return kt_in_child(small_program_in_child, &kpool);
}

static void test_small_program_peak(void)
{
	unsetenv("KPOOL_CONF");
	if (KT_SANITIZED) {
		printf("   (sanitizer build: the RSS bound is checked in the release variant)\n");
		return;
	}
	/* medians of 3, alternated: the machine is shared */
	long g[3], k[3];
	for (int i = 0; i < 3; i++) {
		g[i] = small_program_child(false);
		k[i] = small_program_child(true);
		REQUIRE(g[i] > 0 && k[i] > 0, "a child failed (%ld, %ld)", g[i], k[i]);
	}
	for (int i = 0; i < 3; i++)
		for (int j = i + 1; j < 3; j++) {
			if (g[j] < g[i]) {
				long t = g[i];
				g[i] = g[j];
				g[j] = t;
			}
			if (k[j] < k[i]) {
				long t = k[i];
				k[i] = k[j];
				k[j] = t;
			}
		}
	printf("   small program peak RSS: glibc %ld KiB, kpool %ld KiB without its backup reserve (%.2fx, %+ld KiB)\n",
	       g[1], k[1], (double)k[1] / (double)g[1], k[1] - g[1]);
	/* Before: 2.4-2.5 MiB over glibc (the fixed 1 MiB floor pre-faulted at
	 * creation, a first burst's rate-sized headroom, bins of 256 blocks per
	 * class). Now 0.78-0.92 MiB (the daemon's timing moves it): the daemon
	 * thread (its stack and the libc pages it brings, ~200 KiB), a thread
	 * cache, and each class's span touched as far as its live and cached
	 * blocks reach. The bound leaves a quarter of that for a loaded CI. */
	CHECK(k[1] - g[1] <= 1280, "kpool's peak %ld KiB (reserve aside) is more than 1.25 MiB over glibc's %ld KiB",
	      k[1], g[1]);
}

/* A small program (test_small_program_peak's, ~250 KB handed out) has
 * nothing pre-faulted for it: every byte the daemon pre-faults ahead is
 * resident, and so is the rest of each pre-faulted unit a small span then
 * takes. Before: 64-192 KiB of free units pre-faulted ahead, and every
 * span's unit resident whole (kpbench a: 256 KiB of its 700 KiB over
 * glibc). The RSS side: test_small_program_peak. */
static void test_small_program_prefaults_nothing(void)
{
	unsetenv("KPOOL_CONF");
	if (KT_SANITIZED) {
		printf("   (sanitizer build: the RSS bound is checked in the release variant)\n");
		return;
	}
	kp_pool *pool = kp_create(NULL);
	REQUIRE(pool != NULL, "kp_create: %s", kp_last_error());
	static char *b[N_SMALL];
	/* every 100,000 steps a pause: timer passes, and passes woken by the start */
	int failed = small_churn(pool, b, 400000, 100000, 0, 150);
	REQUIRE(failed < 0, "kp_alloc #%d", failed);
	kt_sleep_ms(250);
	int64_t out = kt_stat(pool, "primary.in_use_bytes"), ready = kt_stat(pool, "daemon.prefaulted_bytes");
	printf("   small program: %lld KiB in use, %lld KiB pre-faulted by the daemon\n", (long long)(out >> 10),
	       (long long)(ready >> 10));
	CHECK(ready == 0, "a program holding %lld KiB has %lld KiB of free units pre-faulted ahead of it",
	      (long long)(out >> 10), (long long)(ready >> 10));
	for (int i = 0; i < N_SMALL; i++)
		kp_free(pool, b[i]);
	kp_destroy(pool);
}

/* The target, driven by the test's clock: a burst raises it (rate times the
 * horizon, bounded by a share of what is in use), the allocation path that
 * outran the daemon raises it further, and idleness brings it back to the
 * floor, high_wm. On each layout: on the outline one (the default) kp_stats
 * shows the outline pass's target and rate and the segments the allocation
 * path took before they were pre-faulted (stats.c, daemon_sizing); before,
 * it showed target 0, rate 0 and 0 faulted after this burst. */
static void adaptive_target(const char *conf)
{
	unsetenv("KPOOL_CONF");
	KT_POOL(pool, conf);
	kp_daemon_step(pool, 0);
	int64_t floor = kt_stat(pool, "daemon.target_bytes");
	printf("   target at creation: %lld KiB\n", (long long)(floor >> 10));
	CHECK(floor <= (int64_t)MiB, "idle target %lld KiB (want a small floor)", (long long)(floor >> 10));
	/* 256 MiB at 64 MiB per 10 ms step of the test's clock (6.4 GB/s) */
	enum { NB = 4096 };
	static void *b[NB];
	for (int i = 0; i < NB; i++) {
		b[i] = kp_alloc(pool, 64 * KiB - 64, 0);
		REQUIRE(b[i] != NULL, "kp_alloc #%d", i);
		if (i % 1024 == 1023)
			kp_daemon_step(pool, 10);
	}
	int64_t busy = kt_stat(pool, "daemon.target_bytes");
	int64_t faulted = kt_stat(pool, "daemon.alloc_faulted_bytes");
	int64_t rate = kt_stat(pool, "daemon.rate_bytes_per_s");
	printf("   after 256 MiB in 40 ms: target %lld MiB, rate %lld MiB/s, allocation path faulted %lld MiB\n",
	       (long long)(busy >> 20), (long long)(rate >> 20), (long long)(faulted >> 20));
	/* the whole share of the bytes in use the rate may have: 1/32 on the
	 * outline layout (daemon.c, KP_GROW_TARGET_SHARE: 8 MiB less the few
	 * KB the blocks fall short of 256 MiB; a fixed 8 MiB before the small
	 * program's floor stopped at one segment there, KP_GROW_SMALL), 1/16
	 * on the inline one */
	int64_t in_use = kt_stat(pool, "primary.in_use_bytes");
	CHECK(busy >= in_use / 32, "target %lld KiB after a 6.4 GB/s burst, %lld KiB in use (the rate did not count)",
	      (long long)(busy >> 10), (long long)(in_use >> 10));
	CHECK(busy <= (int64_t)(256 * MiB) / 8, "target %lld MiB: more than 1/8 of the 256 MiB in use",
	      (long long)(busy >> 20));
	CHECK(faulted > 0, "daemon:off: the allocation path grew and faulted everything, yet none counted");
	for (int i = 0; i < NB; i++)
		kp_free(pool, b[i]);
	kp_thread_flush(pool);
	for (int i = 0; i < 50; i++)
		kp_daemon_step(pool, 100);
	int64_t idle = kt_stat(pool, "daemon.target_bytes");
	printf("   5 s idle: target %lld KiB, capacity %lld MiB\n", (long long)(idle >> 10),
	       (long long)(kt_stat(pool, "primary.capacity_bytes") >> 20));
	CHECK(idle == floor, "5 s idle: target %lld KiB, not back at the floor %lld KiB", (long long)(idle >> 10),
	      (long long)(floor >> 10));
	kp_destroy(pool);
}

static void test_adaptive_target(void)
{
	adaptive_target("daemon:off,seed:7");
}

static void test_adaptive_target_inline(void)
{
	adaptive_target("layout:inline,daemon:off,seed:7");
}

/* high_wm:auto with low_wm set (conf.c lets low_wm exceed the floor, which
 * moves with the bytes in use): the daemon's target is at least low_wm, as
 * an explicit high_wm (never under low_wm) makes it. Before, the target
 * stayed at auto's floor, under the mark, and every span the program
 * carved woke the daemon (a pass, and a futex call on the allocating
 * thread when it slept): 391-612 wakeups for 20 rounds of 20,000 blocks
 * of 200 B with low_wm:8m, 5-7 with low_wm unset; the bound is what
 * high_wm:8m,low_wm:8m costs in the same run. */
static long long churn_wakeups(const char *conf)
{
	kp_pool *pool = kp_create(conf);
	if (!pool) {
		CHECK(0, "kp_create(%s): %s", conf, kp_last_error());
		return -1;
	}
	static void *b[20000];
	for (int r = 0; r < 20; r++) {
		for (int i = 0; i < 20000; i++)
			b[i] = kp_alloc(pool, 200, 0);
		for (int i = 0; i < 20000; i++)
			kp_free(pool, b[i]);
	}
	long long w = kt_stat(pool, "daemon.wakeups");
	kp_destroy(pool);
	return w;
}

static void test_auto_floor_with_low_wm(void)
{
	long long base = churn_wakeups("high_wm:8m,low_wm:8m"), low = churn_wakeups("low_wm:8m");
	printf("   daemon wakeups: %lld with low_wm:8m, %lld with high_wm:8m,low_wm:8m\n", low, base);
	/* The defect this guards against woke the daemon 587 times (against 5).
	 * Both counts are noisy on a shared machine: 2-50 each in release and
	 * ASan here, and a fresh-clone CI run under ASan measured 76 against 2,
	 * over the old margin of 50; 150 keeps the defect an order over it. */
	CHECK(low <= 3 * base + 150, "low_wm:8m under high_wm:auto: %lld daemon wakeups (%lld with high_wm:8m)", low,
	      base);
}

int main(void)
{
	RUN(test_idle_rss);
	RUN(test_no_1g_cap);
	RUN(test_small_program_peak);
	RUN(test_small_program_prefaults_nothing);
	RUN(test_adaptive_target);
	RUN(test_adaptive_target_inline);
	RUN(test_auto_floor_with_low_wm);
	return ktest_summary();
}
