/*
 * test_outline_return.c - layout:outline gives whole data segments back: a
 * segment whose spans have all sat wholly free for decay_ms (on their heaps'
 * lists, in no thread's hand) is taken off the heaps by the daemon's pass
 * (outline.c, return_idle), its slice-map entries cleared, its pages purged,
 * and it goes to the spare list, no longer charged against primary_max
 * (pool->ol_bytes). Before, a pool that peaked at 48 MiB of small blocks and
 * freed them kept them charged until kp_destroy: with primary_max 64m, 272 of
 * 400 allocations of 100 KiB (alloc.c's path) were refused after the frees.
 * Here: the cap after the frees, kp_stats' segments, resident memory, a stale
 * free into a returned segment (an event, never a crash, under ASan too),
 * reuse, a span left in hand past primary_max, and returns beside threads
 * that churn (TSan).
 */
#define _GNU_SOURCE 1
#include "ktest.h"
#include "outline.h"

#include <pthread.h>
#include <sched.h>
#include <stdlib.h>

/* Blocks of 248 bytes (a 256-byte class with the canary): 48 MiB of them,
 * twelve segments, within primary_max 64m beside the primary's 4 MiB. */
#define SMALL 248u
#define NSMALL (48u << 20) / 256u
#define BIG ((size_t)100 << 10)
#define NBIG 400

/* The pool's outline segments (kp__ol_space: those heaps took, not spares). */
static size_t ol_segments(kp_pool *pool)
{
	size_t cap = 0, segs = 0, committed = 0;
	kp__ol_space(pool, &cap, &segs, &committed);
	return segs;
}

/* Two passes: the spans seen wholly free, then idle for decay_ms (1 s). */
static void idle_passes(kp_pool *pool)
{
	kp_daemon_step(pool, 1);
	kp_daemon_step(pool, 1000);
}

/* The invalid and double frees among the pool's events (drained). */
static size_t bad_frees(kp_pool *pool)
{
	kp_event ev[64];
	size_t n, count = 0;
	while ((n = kp_events_drain(pool, ev, 64)) > 0)
		for (size_t i = 0; i < n; i++)
			count += ev[i].kind == KP_EV_INVALID_FREE || ev[i].kind == KP_EV_DOUBLE_FREE;
	return count;
}

static void **fill(kp_pool *pool, size_t n, size_t size)
{
	void **p = calloc(n, sizeof *p);
	if (!p)
		return NULL;
	for (size_t i = 0; i < n; i++)
		if ((p[i] = kp_alloc(pool, size, 0)) != NULL)
			memset(p[i], 0x5a, 16);
	return p;
}

static void free_all(kp_pool *pool, void **p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		kp_free(pool, p[i]);
}

/* (1) and (2): 48 MiB of 256-byte blocks freed, two passes: the segments go
 * back (kp_stats' segments, capacity and committed bytes fall) and 400
 * blocks of 100 KiB fit under primary_max 64m again. */
static void test_cap_after_free(void)
{
	kp_pool *pool = kp_create("layout:outline,primary_max:64m,daemon:off,seed:3");
	REQUIRE(pool, "kp_create: %s", kp_last_error());
	void **p = fill(pool, NSMALL, SMALL);
	REQUIRE(p, "calloc");
	size_t got = 0;
	for (size_t i = 0; i < NSMALL; i++)
		got += p[i] != NULL;
	REQUIRE(got == NSMALL, "%zu of %u blocks of %u B within primary_max 64m", got, NSMALL, SMALL);
	int64_t seg0 = kt_stat(pool, "primary.segments"), cap0 = kt_stat(pool, "primary.capacity_bytes");
	int64_t com0 = kt_stat(pool, "primary.committed_bytes");
	long rss0 = kt_status_kb("VmRSS");
	free_all(pool, p, NSMALL);
	idle_passes(pool);
	int64_t seg1 = kt_stat(pool, "primary.segments"), cap1 = kt_stat(pool, "primary.capacity_bytes");
	int64_t com1 = kt_stat(pool, "primary.committed_bytes");
	long rss1 = kt_status_kb("VmRSS");
	fprintf(stderr,
		"  48 MiB of %u B: segments %lld -> %lld, capacity %lld -> %lld MiB, committed %lld -> %lld MiB, "
		"VmRSS %ld -> %ld KiB\n",
		SMALL, (long long)seg0, (long long)seg1, (long long)cap0 >> 20, (long long)cap1 >> 20,
		(long long)com0 >> 20, (long long)com1 >> 20, rss0, rss1);
	CHECK(seg1 <= seg0 - 10, "kp_stats segments %lld -> %lld after the frees and two passes", (long long)seg0,
	      (long long)seg1);
	CHECK(cap1 <= cap0 - (40ll << 20), "capacity %lld -> %lld MiB", (long long)cap0 >> 20, (long long)cap1 >> 20);
	CHECK(com1 <= com0 - (40ll << 20), "committed %lld -> %lld MiB", (long long)com0 >> 20, (long long)com1 >> 20);
	CHECK(atomic_load(&pool->ol_bytes) <= 2 * OL_SEG_SIZE, "%zu MiB of segments still charged",
	      atomic_load(&pool->ol_bytes) >> 20);
	void *q[NBIG];
	int ok = 0;
	for (int i = 0; i < NBIG; i++) {
		q[i] = kp_alloc(pool, BIG, 0);
		ok += q[i] != NULL;
		if (q[i])
			memset(q[i], 0x11, BIG);
	}
	fprintf(stderr, "  then %d of %d blocks of 100 KiB\n", ok, NBIG);
	CHECK(ok == NBIG, "%d of %d blocks of 100 KiB under primary_max 64m after 48 MiB were freed", ok, NBIG);
	for (int i = 0; i < NBIG; i++)
		kp_free(pool, q[i]);
	CHECK(bad_frees(pool) == 0, "a violation reported");
	free(p);
	kp_destroy(pool);
}

/* Resident memory: 24 MiB of 16-byte blocks (as much metadata again: each
 * block's record and stack entry) freed; after two passes the process holds
 * at most a few MiB more than before it allocated them. Span purges alone
 * (purge_idle) left the records and stacks resident. */
static void test_rss_back(void)
{
	enum { N = (24 << 20) / 16 };
	kp_pool *pool = kp_create("layout:outline,daemon:off,seed:3");
	REQUIRE(pool, "kp_create: %s", kp_last_error());
	void **p = calloc(N, sizeof *p);
	REQUIRE(p, "calloc");
	memset(p, 0, N * sizeof *p); /* resident before the baseline */
	long rss0 = kt_status_kb("VmRSS");
	for (size_t i = 0; i < N; i++)
		if ((p[i] = kp_alloc(pool, 8, 0)) != NULL)
			memset(p[i], 0x5a, 8);
	long rss1 = kt_status_kb("VmRSS");
	free_all(pool, p, N);
	idle_passes(pool);
	long rss2 = kt_status_kb("VmRSS");
	fprintf(stderr, "  24 MiB of 16 B blocks: VmRSS %ld KiB before, %ld at the peak, %ld after two passes\n", rss0,
		rss1, rss2);
	CHECK(rss1 - rss0 > 24 << 10, "the blocks were not resident (%ld -> %ld KiB)", rss0, rss1);
	/* one segment and its metadata (the heap's, in hand) may stay; TSan's
	 * shadow of the written pages stays resident (4x them) */
	if (!KT_TSAN)
		CHECK(rss2 - rss0 < 8 << 10, "%ld KiB resident after the frees and two passes, %ld before the blocks",
		      rss2, rss0);
	free(p);
	kp_destroy(pool);
}

/* (3): a stale free of a block, and of a pointer inside one, of a returned
 * segment is an invalid or double free (an event and an error), never a
 * crash; again once the spare decayed and was unmapped. */
static void test_stale_free(void)
{
	enum { N = (12 << 20) / 1024 };
	kp_pool *pool = kp_create("layout:outline,daemon:off,seed:3");
	REQUIRE(pool, "kp_create: %s", kp_last_error());
	void **p = fill(pool, N, 1000);
	REQUIRE(p && p[0] && p[N / 2], "alloc");
	void *stale = p[0], *mid = p[N / 2];
	size_t before = ol_segments(pool);
	free_all(pool, p, N);
	idle_passes(pool);
	size_t after = ol_segments(pool);
	CHECK(after < before, "%zu segments after the frees and two passes, %zu before", after, before);
	CHECK(!kp__ol_knows(pool, stale), "the slice map still knows a block of a returned segment");
	kt_events_clear(pool);
	CHECK(kp_free(pool, stale) != 0, "a stale free accepted");
	CHECK(kp_free(pool, (char *)mid + 8) != 0, "a stale interior free accepted");
	CHECK(bad_frees(pool) == 2, "not one event for each stale free");
	for (int i = 0; i < 4; i++) /* the spares past the demand decay: unmapped */
		kp_daemon_step(pool, 1000);
	CHECK(kp_free(pool, stale) != 0, "a stale free accepted after the spare decayed");
	CHECK(bad_frees(pool) == 1, "no event for a stale free after the spare decayed");
	void *q = kp_alloc(pool, 1000, 0); /* and the pool serves */
	CHECK(q != NULL && kp_free(pool, q) == 0, "alloc after the stale frees");
	free(p);
	kp_destroy(pool);
}

struct blk {
	uint8_t *p;
	size_t n;
};
static int by_addr(const void *a, const void *b)
{
	const struct blk *x = a, *y = b;
	return x->p < y->p ? -1 : x->p > y->p;
}

/* (4): the segments returned, then taken again (from the spare list): 48 MiB
 * of blocks of mixed sizes, each filled with its own pattern, all intact
 * and none overlapping another. */
static void test_reuse(void)
{
	enum { N = 60000 };
	kp_pool *pool = kp_create("layout:outline,primary_max:64m,daemon:off,seed:3");
	REQUIRE(pool, "kp_create: %s", kp_last_error());
	void **p = fill(pool, NSMALL, SMALL);
	REQUIRE(p, "calloc");
	size_t before = ol_segments(pool);
	free_all(pool, p, NSMALL);
	idle_passes(pool);
	size_t after = ol_segments(pool);
	CHECK(after + 10 <= before, "%zu segments after the frees, %zu before", after, before);
	static struct blk b[N];
	uint64_t seed = 7;
	size_t got = 0, bad = 0;
	for (size_t i = 0; i < N; i++) {
		b[i].n = kt_rand_log(&seed, 1, 1600);
		b[i].p = kp_alloc(pool, b[i].n, 0);
		if (b[i].p) {
			kt_fill(b[i].p, b[i].n, i);
			got++;
		}
	}
	for (size_t i = 0; i < N; i++)
		bad += b[i].p && kt_verify(b[i].p, b[i].n, i) != KT_OK;
	CHECK(got == N, "%zu of %d blocks after the return", got, N);
	CHECK(bad == 0, "%zu blocks lost their contents", bad);
	CHECK(ol_segments(pool) > after, "no segment taken again");
	qsort(b, N, sizeof b[0], by_addr);
	size_t overlap = 0;
	for (size_t i = 1; i < N; i++)
		overlap += b[i - 1].p && b[i - 1].p + b[i - 1].n > b[i].p;
	CHECK(overlap == 0, "%zu blocks overlap the next", overlap);
	for (size_t i = 0; i < N; i++)
		kp_free(pool, b[i].p);
	CHECK(bad_frees(pool) == 0, "a violation reported");
	free(p);
	kp_destroy(pool);
}

/* primary_max reached: the class's span in hand is retired and alloc.c's path
 * serves. The blocks freed, every span goes idle; then the class allocates
 * again. No block is handed out of a returned segment (its free would be
 * an invalid free, and its pages another heap's). */
static void test_cap_in_hand(void)
{
	enum { MAX = 64 << 10 };
	kp_pool *pool = kp_create("layout:outline,primary_initial:1m,primary_max:8m,daemon:off,seed:3");
	REQUIRE(pool, "kp_create: %s", kp_last_error());
	static void *p[MAX];
	size_t n = 0;
	while (n < MAX && (p[n] = kp_alloc(pool, SMALL, 0)) != NULL && kp__ol_knows(pool, p[n]))
		n++;
	CHECK(n < MAX && n > 0, "%zu outline blocks under primary_max 8m", n);
	if (n < MAX && p[n])
		n++; /* alloc.c's block */
	free_all(pool, p, n);
	for (int i = 0; i < 3; i++)
		kp_daemon_step(pool, 1000);
	kt_events_clear(pool);
	size_t bad = 0;
	for (int r = 0; r < 2; r++) {
		for (size_t i = 0; i < 4096; i++) {
			p[i] = kp_alloc(pool, SMALL, 0);
			if (p[i])
				kt_fill(p[i], SMALL, i);
		}
		for (size_t i = 0; i < 4096; i++)
			bad += p[i] && kt_verify(p[i], SMALL, i) != KT_OK;
		free_all(pool, p, 4096);
	}
	CHECK(bad == 0, "%zu blocks lost their contents", bad);
	CHECK(bad_frees(pool) == 0, "a block handed out of a returned segment");
	kp_destroy(pool);
}

/* Returns beside threads that churn: each round a churner allocates 6 MiB
 * of blocks of one band of sizes (the next round the next band), hands a
 * quarter to the other churner to free, frees the rest, and lets three
 * passes go by; a third thread allocates 12 MiB of 248-byte blocks, frees
 * them and lets three passes go by (its segments go back while the churners
 * run, and their heaps may adopt its spans as the daemon looks at them;
 * three: seen idle by a pass begun after the frees, then back). The passes
 * run back to back with decay_ms 0. No block in use loses its contents,
 * segments go back while the threads run, and all of them once the threads
 * ended (their heaps abandoned, their foreign caches flushed onto the
 * spans' lists). TSan: the avail lists, the slice map and the spares under
 * their locks. */
enum { RC_THREADS = 2, RC_BLOCKS = 12000, RC_ROUNDS = 9 };
#define RC_BYTES ((size_t)6 << 20)
static _Atomic size_t rc_bad;
static void *_Atomic rc_box[RC_THREADS][RC_BLOCKS / 4];
static _Atomic int rc_done;
static _Atomic uint64_t rc_passes;
static pthread_barrier_t rc_bar;
static void rc_wait_passes(void);
struct rc_arg {
	kp_pool *pool;
	int id;
};
static void *rc_churn(void *arg)
{
	static const size_t band[3][2] = {{16, 256}, {257, 2048}, {2049, 16384}};
	struct rc_arg *a = arg;
	static __thread uint8_t *slot[RC_BLOCKS];
	static __thread size_t sz[RC_BLOCKS];
	uint64_t seed = 11 + (uint64_t)a->id;
	size_t bad = 0;
	for (int r = 0; r < RC_ROUNDS; r++) {
		const size_t *b = band[(r + a->id) % 3];
		size_t bytes = 0;
		for (int k = 0; k < RC_BLOCKS; k++) {
			sz[k] = bytes < RC_BYTES ? kt_rand_range(&seed, b[0], b[1]) : 0;
			slot[k] = sz[k] ? kp_alloc(a->pool, sz[k], 0) : NULL;
			if (slot[k])
				memset(slot[k], (uint8_t)(k + sz[k]), sz[k]);
			bytes += sz[k];
		}
		for (int k = 0; k < RC_BLOCKS; k++) {
			for (size_t i = 0; slot[k] && i < sz[k]; i++)
				bad += slot[k][i] != (uint8_t)(k + sz[k]);
			if (k % 4 == 0) { /* the other thread frees it */
				void *old = atomic_exchange(&rc_box[1 - a->id][k / 4], slot[k]);
				kp_free(a->pool, old);
			} else
				kp_free(a->pool, slot[k]);
		}
		rc_wait_passes();
	}
	pthread_barrier_wait(&rc_bar); /* the other thread's last blocks are in the box */
	for (int k = 0; k < RC_BLOCKS / 4; k++)
		kp_free(a->pool, atomic_exchange(&rc_box[a->id][k], NULL));
	atomic_fetch_add(&rc_bad, bad);
	atomic_fetch_add(&rc_done, 1);
	return NULL;
}

static void rc_wait_passes(void)
{
	uint64_t until = atomic_load(&rc_passes) + 3; /* the one under way may have begun before the frees */
	while (atomic_load(&rc_passes) < until)
		sched_yield();
}

static void *rc_peak(void *arg)
{
	enum { N = (12 << 20) / 256 };
	kp_pool *pool = arg;
	static __thread void *p[N];
	size_t bad = 0;
	for (int r = 0; r < RC_ROUNDS; r++) {
		for (size_t i = 0; i < N; i++)
			if ((p[i] = kp_alloc(pool, SMALL, 0)) != NULL)
				kt_fill(p[i], SMALL, i + (size_t)r);
		for (size_t i = 0; i < N; i++) {
			bad += p[i] && kt_verify(p[i], SMALL, i + (size_t)r) != KT_OK;
			kp_free(pool, p[i]);
		}
		rc_wait_passes();
	}
	atomic_fetch_add(&rc_bad, bad);
	atomic_fetch_add(&rc_done, 1);
	return NULL;
}

static void test_return_beside_churn(void)
{
	kp_pool *pool = kp_create("layout:outline,daemon:off,seed:3,decay_ms:0");
	REQUIRE(pool, "kp_create: %s", kp_last_error());
	pthread_t t[RC_THREADS + 1];
	struct rc_arg args[RC_THREADS];
	pthread_barrier_init(&rc_bar, NULL, RC_THREADS);
	for (int i = 0; i < RC_THREADS; i++) {
		args[i] = (struct rc_arg){pool, i};
		pthread_create(&t[i], NULL, rc_churn, &args[i]);
	}
	pthread_create(&t[RC_THREADS], NULL, rc_peak, pool);
	while (atomic_load(&rc_done) < RC_THREADS + 1) {
		kp_daemon_step(pool, 1);
		atomic_fetch_add(&rc_passes, 1);
	}
	uint64_t during = atomic_load(&pool->ol->returned);
	for (int i = 0; i < RC_THREADS + 1; i++)
		pthread_join(t[i], NULL);
	pthread_barrier_destroy(&rc_bar);
	CHECK(atomic_load(&rc_bad) == 0, "%zu bytes of blocks in use changed beside the returns", atomic_load(&rc_bad));
	for (int i = 0; i < 3; i++)
		kp_daemon_step(pool, 1);
	size_t left = ol_segments(pool);
	fprintf(stderr, "  %llu segments back while the threads churned, %llu in all; %zu left after it\n",
		(unsigned long long)during, (unsigned long long)atomic_load(&pool->ol->returned), left);
	CHECK(during > 0, "no segment went back while the threads churned");
	/* the main thread has no heap: nothing stays in hand */
	CHECK(left == 0, "%zu segments left once every thread's heap was abandoned and everything freed", left);
	CHECK(atomic_load(&pool->ol_bytes) == 0, "%zu MiB still charged", atomic_load(&pool->ol_bytes) >> 20);
	CHECK(bad_frees(pool) == 0, "a violation reported");
	kp_destroy(pool);
}

int main(void)
{
	RUN(test_cap_after_free);
	RUN(test_rss_back);
	RUN(test_stale_free);
	RUN(test_reuse);
	RUN(test_cap_in_hand);
	RUN(test_return_beside_churn);
	return ktest_summary();
}
