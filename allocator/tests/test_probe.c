/*
 * test_probe.c - the daemon's write probe (daemon.c, probe): each pass
 * samples pages of the carved spans and reads those inside live blocks, and
 * pre-faulting stops for a program that writes under prefault_touch% of
 * what it takes (90 by default) and resumes at 5 points more.
 *
 *   - steady: a program that writes a fixed share of its pages near the
 *     threshold (88-94%) and then only runs must not have pre-faulting turn
 *     on and off pass after pass. Before the fix, the share was a moving
 *     average over 64 pages, whose sampling noise (3.4 points at 92%) is
 *     wider than the 5-point band: 70 "pre-faulting on" and 70 "off" events
 *     in 2,000 passes of a program that changed nothing, each "on"
 *     pre-faulting the whole target again (and the event ring, 1,024 slots,
 *     loses the events that matter under a stream of these);
 *   - damaged span table: a stray write into a segment's span table (what
 *     test_central_unlisted does to the allocation path) must not send the
 *     daemon's reads outside the segment: a span's start is trusted by the
 *     probe only where the span's first unit is;
 *   - churn: threads carving and freeing spans of every kind while the
 *     daemon thread probes at its fastest (the TSan variant checks the
 *     locking; every variant that nothing is lost or damaged).
 */
/* Tests the grow daemon's growth, front and purge of the inline primary (daemon.c, primary.c; layout:outline's: test_outline_grow.c, test_outline_memory.c): every pool layout:inline (ktest.h, KT_LAYOUT_INLINE). */
#define KT_LAYOUT_INLINE 1
#include "ktest.h"

#include "internal.h"

#include <pthread.h>
#include <signal.h>
#include <stdbool.h>

#define KiB ((size_t)1 << 10)
#define BLOCK (64 * KiB - 64) /* one unit each, 16 pages */
#define NBLOCKS 512

/* Write every page of each block but one in `skip`: a written share of
 * about 1 - 1/skip. Returns the passes' on/off events over `passes`. */
static size_t flips(unsigned skip, bool sparse_first, unsigned passes, long long *pct)
{
	kp_pool *pool = kp_create("daemon:off");
	if (!pool) {
		CHECK(0, "kp_create: %s", kp_last_error());
		return 0;
	}
	static char *bl[NBLOCKS];
	for (size_t n = 0; n < NBLOCKS; n++) {
		bl[n] = kp_alloc(pool, BLOCK, 0);
		if (!bl[n]) {
			CHECK(0, "kp_alloc: %s", kp_last_error());
			return 0;
		}
		bl[n][0] = 1;
	}
	/* sparse_first: the program starts writing one page per block, and
	 * pre-faulting goes off; else it starts from where the pool starts (on) */
	if (sparse_first)
		for (unsigned i = 0; i < 16; i++)
			kp_daemon_step(pool, 1);
	for (size_t n = 0; n < NBLOCKS; n++)
		for (size_t off = 0; off < BLOCK; off += 4096)
			if ((off / 4096 + n) % skip)
				memset(bl[n] + off, 1, 8);
	for (unsigned i = 0; i < 64; i++)
		kp_daemon_step(pool, 1);
	kt_events_clear(pool);
	for (unsigned i = 0; i < passes; i++)
		kp_daemon_step(pool, 1);
	size_t ne, n = 0;
	kp_event *ev = kt_events_all(pool, &ne);
	for (size_t i = 0; ev && i < ne; i++)
		n += strstr(ev[i].text, "pre-faulting o") != NULL;
	free(ev);
	char *js = kt_stats(pool);
	*pct = js ? kt_json_int(js, "daemon.touched_pct", -1) : -1;
	free(js);
	for (size_t i = 0; i < NBLOCKS; i++)
		kp_free(pool, bl[i]);
	kp_destroy(pool);
	return n;
}

static void test_steady_program_does_not_flap(void)
{
	static const unsigned skips[] = {8, 10, 12, 14, 16, 20, 40};
	for (int first = 0; first < 2; first++)
		for (size_t i = 0; i < sizeof skips / sizeof skips[0]; i++) {
			long long pct = -1;
			size_t n = flips(skips[i], first, 1000, &pct);
			printf("   one page in %u unwritten%s: touched_pct %lld, %zu pre-faulting on/off events in "
			       "1000 "
			       "passes\n",
			       skips[i], first ? " (after a sparse start)" : "", pct, n);
			CHECK(n <= 1,
			      "one page in %u unwritten%s: pre-faulting turned on or off %zu times in 1000 passes",
			      skips[i], first ? " (after a sparse start)" : "", n);
		}
}

/* A live block of 32 units, 2 MiB: most of the probe's picks in its segment
 * land in it. Its span's start is rewritten to point far outside the
 * segment, as a stray write would; the passes must not read there. */
static void test_damaged_span_start_is_not_followed(void)
{
	kp_pool *pool = kp_create("daemon:off,seed:7");
	REQUIRE(pool != NULL, "kp_create: %s", kp_last_error());
	char *p = kp_alloc(pool, 32 * KP_UNIT_SIZE - 4096, 0);
	REQUIRE(p != NULL, "kp_alloc: %s", kp_last_error());
	memset(p, 1, 32 * KP_UNIT_SIZE - 4096);
	kp__seg *s = kp__pagemap_get(p);
	REQUIRE(s != NULL, "no segment for %p", (void *)p);
	unsigned u = (unsigned)(((uintptr_t)p - (uintptr_t)s) >> KP_UNIT_SHIFT);
	kp__span *sp = &s->span[s->span[u].head];
	REQUIRE(sp->kind == KP_SPAN_LARGE, "the block's span is not a large one (%u)", sp->kind);
	char *start = sp->start;
	uint32_t block = sp->block;
	sp->start = (char *)(uintptr_t)KP_PAGE; /* below every page of the block: an unmapped address */
	for (unsigned i = 0; i < 64; i++)
		kp_daemon_step(pool, 1);
	/* and a small span's: its start and block size rewritten */
	sp->start = start;
	char *q = kp_alloc(pool, 3000, 0);
	REQUIRE(q != NULL, "kp_alloc: %s", kp_last_error());
	memset(q, 1, 3000);
	u = (unsigned)(((uintptr_t)q - (uintptr_t)s) >> KP_UNIT_SHIFT);
	kp__span *sq = &s->span[s->span[u].head];
	REQUIRE(sq->kind == KP_SPAN_SMALL, "the block's span is not a small one (%u)", sq->kind);
	char *qstart = sq->start;
	uint32_t qblock = sq->block;
	sq->start = (char *)(uintptr_t)KP_PAGE;
	sq->block = UINT32_MAX;
	sq->bump = UINT32_MAX;
	for (unsigned i = 0; i < 256; i++)
		kp_daemon_step(pool, 1);
	CHECK(1, "the passes ran");
	sq->start = qstart, sq->block = qblock;
	sp->block = block;
	kp_destroy(pool); /* p and q: the damaged spans' blocks are left as they are */
}

/* ---- churn while the daemon probes ---------------------------------------- */

#define CHURN_THREADS 3
#define CHURN_SLOTS 256
static _Atomic int churn_stop;
static kp_pool *churn_pool;
static _Atomic unsigned long churn_bad;

static void *churn(void *arg)
{
	uint64_t seed = (uint64_t)(uintptr_t)arg * 0x9e3779b97f4a7c15ull + 1;
	char *slot[CHURN_SLOTS] = {0};
	size_t size[CHURN_SLOTS] = {0};
	unsigned long bad = 0;
	while (!atomic_load(&churn_stop)) {
		unsigned i = (unsigned)(kt_rand(&seed) % CHURN_SLOTS);
		if (slot[i]) {
			/* its first and last bytes are what was written */
			if ((unsigned char)slot[i][0] != (i & 0xff) ||
			    (unsigned char)slot[i][size[i] - 1] != (i & 0xff))
				bad++;
			kp_free(churn_pool, slot[i]);
			slot[i] = NULL;
			continue;
		}
		/* small, large and page-run sizes, some pages written, some not */
		size_t n = kt_rand_log(&seed, 16, 3 * KP_UNIT_SIZE);
		char *p = kp_alloc(churn_pool, n, 0);
		if (!p)
			continue;
		memset(p, (int)(i & 0xff), n < 4096 ? n : 64);
		p[n - 1] = (char)(i & 0xff);
		if (kt_rand(&seed) & 1)
			for (size_t off = 4096; off < n; off += 4096)
				p[off] = (char)(i & 0xff);
		slot[i] = p;
		size[i] = n;
	}
	for (unsigned i = 0; i < CHURN_SLOTS; i++)
		kp_free(churn_pool, slot[i]);
	atomic_fetch_add(&churn_bad, bad);
	return NULL;
}

/* The passes the daemon makes while the threads churn, at least; and how
 * long the test waits for them, at most (a safety bound, not a deadline) */
#define CHURN_PASSES 10
#define WAIT_MS 30000u

static void test_churn_while_probing(void)
{
	/* decay_ms short: segments emptied by the churn are released and
	 * purged while the probe samples the others */
	churn_pool = kp_create("daemon_interval_ms:1,decay_ms:5,primary_initial:4m");
	REQUIRE(churn_pool != NULL, "kp_create: %s", kp_last_error());
	pthread_t t[CHURN_THREADS];
	for (uintptr_t i = 0; i < CHURN_THREADS; i++)
		REQUIRE(pthread_create(&t[i], NULL, churn, (void *)(i + 1)) == 0, "pthread_create");
	/* for ms at least, and on until the daemon has made the passes asked
	 * of it below: a daemon the machine starves makes them late (SCHED_IDLE
	 * beside two busy loops: none in the second, "no passes"); WAIT_MS only
	 * ends a run whose daemon makes none */
	unsigned ms = KT_SANITIZED ? 1500 : 1000;
	uint64_t t0 = kt_now_ms();
	while (kt_now_ms() - t0 < ms ||
	       (kt_stat(churn_pool, "daemon.passes") <= CHURN_PASSES && kt_now_ms() - t0 < WAIT_MS)) {
		kp_daemon_wake(churn_pool);
		kt_sleep_ms(1);
	}
	atomic_store(&churn_stop, 1);
	for (int i = 0; i < CHURN_THREADS; i++)
		pthread_join(t[i], NULL);
	char *js = kt_stats(churn_pool);
	REQUIRE(js != NULL, "kp_stats_json");
	printf("   %lld passes, %lld shrinks, %lld purges, touched_pct %lld\n",
	       (long long)kt_json_int(js, "daemon.passes", -1), (long long)kt_json_int(js, "primary.shrinks", -1),
	       (long long)kt_json_int(js, "primary.purges", -1), (long long)kt_json_int(js, "daemon.touched_pct", -1));
	CHECK(kt_json_int(js, "daemon.passes", 0) > CHURN_PASSES, "the daemon made %lld passes in %llu ms",
	      (long long)kt_json_int(js, "daemon.passes", 0), (unsigned long long)(kt_now_ms() - t0));
	CHECK(kt_json_int(js, "integrity.corruptions", -1) == 0 && kt_json_int(js, "integrity.quarantined", -1) == 0,
	      "damage found: %s", js);
	CHECK(kt_json_int(js, "primary.in_use_bytes", -1) == 0, "blocks left in use: %s", js);
	free(js);
	CHECK(atomic_load(&churn_bad) == 0, "%lu blocks lost their bytes", atomic_load(&churn_bad));
	kp_destroy(churn_pool);
}

int main(void)
{
	unsetenv("KPOOL_CONF");
	RUN(test_steady_program_does_not_flap);
	RUN(test_damaged_span_start_is_not_followed);
	RUN(test_churn_while_probing);
	return ktest_summary();
}
