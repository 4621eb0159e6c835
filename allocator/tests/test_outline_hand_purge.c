/*
 * test_outline_hand_purge.c - a thread whose large blocks (past OL_SMALL_MAX:
 * alloc.c's path) take fresh memory (units never used, new huge mappings:
 * pool->fresh_taken) a step past the mark parks the free blocks (of a page
 * or more) of its own spans in hand (outline.c, large_taken, hand_park),
 * and the daemon's next pass gives back the whole pages inside them
 * (park_give), which its purge of listed spans never touches (a span in
 * hand is popped without a lock). The allocation path makes no system call
 * for it.
 *
 * git pack-objects under the preload (git.yaml's repack alone, its peak):
 * each delta thread's span in hand of every class of 4-32 KiB kept 1.4-3.5
 * MiB of free blocks' pages resident in all (medians of its classes' swings,
 * not their sum at any moment), and its burst of 200 KB blobs and their
 * delta indexes (3 MB, alloc.c's large runs) came on top: kpool 18.8-19.7
 * MiB against glibc's 16.1, whose arena reuses the freed windows' memory for
 * the blobs. Checked, with passes driven by the test (daemon:off,
 * step_clock:on, kp_daemon_step):
 *   - 16 KiB blocks written, three in four freed, the span in hand the
 *     newest: after large blocks written past the mark, no madvise on the
 *     allocation path and the pages still there; after the daemon's pass,
 *     at least 90% of the pages inside the free blocks of the span in hand
 *     given back, by the daemon;
 *   - the live blocks keep their pages and bytes; the blocks taken again are
 *     usable (the owner's drain takes them back), and a zeroed request reads
 *     zero;
 *   - a program that takes and frees a large block again and again at the
 *     same level of large bytes (with 16 KiB blocks freed and taken between,
 *     a daemon's pass each round) has no madvise made for it after the
 *     first: the mark holds (a purge a round, and the faults to take the
 *     pages again, would cost what glibc's arena never pays);
 *   - another thread's span in hand (popped by it alone, without a lock) is
 *     parked by that thread at its next refill once the pool's fresh memory
 *     passed the mark (hand_epoch), not before, and given back at the
 *     daemon's pass after it.
 * Failed on main 74a960a: 0 of 169 pages of the span in hand given back
 * (the same-level guard passed there; without the mark it fails: 198
 * madvise in 200 rounds). s37-realmem gave the pages back on the owner's
 * allocation path (mincore and madvise), which the allocation path's
 * checks refuse (workloads/paced-growth.yaml: 241 system calls against 0;
 * test_cache's steady random run under TSan: madvise 175 -> 225).
 */
#define _GNU_SOURCE
#include "ktest.h"

#include "outline.h"

#include <pthread.h>
#include <semaphore.h>

#define BLK 16384	 /* a class of 16 KiB + the canary: 4-5 pages a block */
#define N 160		 /* a few spans of the class, the newest in hand */
#define BIG 200001	 /* git's blob.bin objects */
#define NBIG 8		 /* 1.6 MB of them */
#define ROUNDS 200	 /* the same level of large bytes, again and again */
#define ROUND_BIG 300000 /* one large block a round */

static void *blk[N], *big[NBIG];

/* whole pages inside [p, p + n), and those of them not resident */
static size_t inner_pages(const char *p, size_t n, size_t *missing)
{
	uintptr_t lo = ((uintptr_t)p + KP_PAGE - 1) & ~(uintptr_t)(KP_PAGE - 1);
	uintptr_t hi = ((uintptr_t)p + n) & ~(uintptr_t)(KP_PAGE - 1);
	if (hi <= lo)
		return 0;
	*missing += kt_not_resident((void *)lo, hi - lo);
	return (hi - lo) / KP_PAGE;
}

static const struct ol_span *span_of(kp_pool *pool, const void *p)
{
	return kp__ol_map_span(pool->ol->map, (uintptr_t)p >> OL_SLICE_SHIFT);
}

static void test_large_growth_gives_back_the_free_blocks_in_hand(void)
{
	KT_POOL(pool, "layout:outline,daemon:off,step_clock:on,prefault:off,seed:5");
	REQUIRE(pool->ol != NULL, "a layout:outline pool");
	for (unsigned i = 0; i < N; i++) {
		blk[i] = kp_alloc(pool, BLK, 0);
		REQUIRE(blk[i] != NULL, "kp_alloc(%d): %s", BLK, kp_last_error());
		kt_fill(blk[i], BLK, i);
	}
	const struct ol_span *hand = span_of(pool, blk[N - 1]);
	REQUIRE(hand != NULL, "a span in hand");
	unsigned nhand = 0;
	for (unsigned i = 0; i < N; i++)
		if (i % 4 && span_of(pool, blk[i]) == hand) {
			REQUIRE(kp_free(pool, blk[i]) == KP_OK, "kp_free");
			nhand++;
		}
	REQUIRE(nhand >= 8, "%u blocks of the span in hand freed", nhand);
	size_t pages = 0, missing = 0;
	for (unsigned i = 0; i < N; i++)
		if (i % 4 && span_of(pool, blk[i]) == hand)
			pages += inner_pages(blk[i], BLK, &missing);
	REQUIRE(missing == 0, "%zu of %zu pages of the free blocks in hand not resident before", missing, pages);
	int64_t alloc_madv = kt_stat(pool, "syscalls.alloc.madvise");
	int64_t daemon_madv = kt_stat(pool, "syscalls.daemon.madvise");
	for (unsigned k = 0; k < NBIG; k++) {
		big[k] = kp_alloc(pool, BIG, 0);
		REQUIRE(big[k] != NULL, "kp_alloc(%d): %s", BIG, kp_last_error());
		kt_fill(big[k], BIG, 1000 + k);
	}
	pages = missing = 0;
	for (unsigned i = 0; i < N; i++)
		if (i % 4 && span_of(pool, blk[i]) == hand)
			pages += inner_pages(blk[i], BLK, &missing);
	printf("   after %d large blocks, before a daemon's pass: %zu of %zu pages given back\n", NBIG, missing, pages);
	CHECK(missing == 0, "%zu of %zu pages given back before the daemon's pass", missing, pages);
	CHECK(kt_stat(pool, "syscalls.alloc.madvise") == alloc_madv, "madvise on the allocation path: %lld -> %lld",
	      (long long)alloc_madv, (long long)kt_stat(pool, "syscalls.alloc.madvise"));
	REQUIRE(kp_daemon_step(pool, 0) >= 0, "kp_daemon_step: %s", kp_last_error());
	pages = missing = 0;
	for (unsigned i = 0; i < N; i++)
		if (i % 4 && span_of(pool, blk[i]) == hand)
			pages += inner_pages(blk[i], BLK, &missing);
	printf("   after the daemon's pass: %zu of %zu pages inside the free blocks in hand given back (%lld madvise "
	       "by the daemon, %lld on the allocation path)\n",
	       missing, pages, (long long)(kt_stat(pool, "syscalls.daemon.madvise") - daemon_madv),
	       (long long)(kt_stat(pool, "syscalls.alloc.madvise") - alloc_madv));
	CHECK(pages > 0 && missing * 10 >= pages * 9, "%zu of %zu pages of the free blocks in hand given back", missing,
	      pages);
	CHECK(kt_stat(pool, "syscalls.daemon.madvise") > daemon_madv, "no madvise by the daemon");
	CHECK(kt_stat(pool, "syscalls.alloc.madvise") == alloc_madv, "madvise on the allocation path: %lld -> %lld",
	      (long long)alloc_madv, (long long)kt_stat(pool, "syscalls.alloc.madvise"));
	size_t bad = 0, live_missing = 0;
	for (unsigned i = 0; i < N; i++) {
		if (i % 4 && span_of(pool, blk[i]) == hand)
			continue;
		bad += kt_verify(blk[i], BLK, i) != KT_OK;
		live_missing += kt_not_resident(blk[i], BLK);
	}
	for (unsigned k = 0; k < NBIG; k++)
		bad += kt_verify(big[k], BIG, 1000 + k) != KT_OK;
	CHECK(bad == 0, "%zu live blocks changed", bad);
	CHECK(live_missing == 0, "%zu pages of live blocks not resident", live_missing);
	/* taken again: usable; zeroed ones read zero */
	size_t nz = 0;
	for (unsigned i = 0; i < N; i++) {
		if (!(i % 4 && span_of(pool, blk[i]) == hand))
			continue;
		blk[i] = kp_alloc(pool, BLK, i % 2 ? KP_ZERO : 0);
		REQUIRE(blk[i] != NULL, "kp_alloc again: %s", kp_last_error());
		if (i % 2)
			for (size_t k = 0; k < BLK; k += 256)
				nz += ((char *)blk[i])[k] != 0;
		kt_fill(blk[i], BLK, i + 7);
	}
	CHECK(nz == 0, "%zu sampled bytes of zeroed blocks not zero", nz);
	for (unsigned i = 0; i < N; i++)
		REQUIRE(kp_free(pool, blk[i]) == KP_OK, "kp_free");
	for (unsigned k = 0; k < NBIG; k++)
		REQUIRE(kp_free(pool, big[k]) == KP_OK, "kp_free");
	CHECK(kt_stat(pool, "integrity.corruptions") == 0 && kt_stat(pool, "integrity.overflows") == 0 &&
		      kt_stat(pool, "integrity.double_frees") == 0,
	      "no integrity event");
	kp_destroy(pool);
}

static void test_same_level_makes_no_purge_a_round(void)
{
	KT_POOL(pool, "layout:outline,daemon:off,step_clock:on,prefault:off,seed:5");
	void *mid[16];
	int64_t before = 0, alloc_before = 0;
	for (unsigned r = 0; r < ROUNDS; r++) {
		unsigned nmid = 2 + r % 5 * 3; /* the span in hand's free count changes round to round */
		for (unsigned i = 0; i < nmid; i++) {
			mid[i] = kp_alloc(pool, BLK, 0);
			REQUIRE(mid[i] != NULL, "kp_alloc(%d): %s", BLK, kp_last_error());
			memset(mid[i], (int)r, BLK);
		}
		for (unsigned i = 0; i < nmid; i++)
			REQUIRE(kp_free(pool, mid[i]) == KP_OK, "kp_free");
		void *b = kp_alloc(pool, ROUND_BIG, 0);
		REQUIRE(b != NULL, "kp_alloc(%d): %s", ROUND_BIG, kp_last_error());
		memset(b, (int)r, ROUND_BIG);
		REQUIRE(kp_free(pool, b) == KP_OK, "kp_free");
		REQUIRE(kp_daemon_step(pool, 0) >= 0, "kp_daemon_step: %s", kp_last_error());
		if (r == 1) {
			alloc_before = kt_stat(pool, "syscalls.alloc.madvise");
			before = kt_stat(pool, "syscalls.daemon.madvise") + alloc_before;
		}
	}
	int64_t after = kt_stat(pool, "syscalls.daemon.madvise") + kt_stat(pool, "syscalls.alloc.madvise");
	printf("   %d rounds at one level of large bytes, a daemon's pass each: %lld madvise past the second\n", ROUNDS,
	       (long long)(after - before));
	CHECK(after - before <= 2, "%lld madvise calls in %d rounds at the same level", (long long)(after - before),
	      ROUNDS);
	CHECK(kt_stat(pool, "syscalls.alloc.madvise") == alloc_before, "%lld madvise on the allocation path",
	      (long long)(kt_stat(pool, "syscalls.alloc.madvise") - alloc_before));
	kp_destroy(pool);
}

/* Large blocks that only grow (1,000 of 100 KB, none freed), 16 KiB
 * blocks churned between them: a purge each time the large bytes pass the
 * mark by a step (a quarter MiB, or an eighth of the mark), not one a
 * block. 100 MB of them: log(100 MB / 256 KiB) / log(9/8) ~ 50 steps. */
static void test_growing_large_blocks_purge_a_logarithmic_number_of_times(void)
{
	KT_POOL(pool, "layout:outline,daemon:off,step_clock:on,prefault:off,seed:5");
	enum { NGROW = 1000, GROW = 100000 };
	static void *g[NGROW];
	void *mid[16];
	int64_t alloc_before = kt_stat(pool, "syscalls.alloc.madvise");
	int64_t before = alloc_before + kt_stat(pool, "syscalls.daemon.madvise");
	for (unsigned r = 0; r < NGROW; r++) {
		unsigned nmid = 2 + r % 5 * 3;
		for (unsigned i = 0; i < nmid; i++) {
			mid[i] = kp_alloc(pool, BLK, 0);
			REQUIRE(mid[i] != NULL, "kp_alloc(%d): %s", BLK, kp_last_error());
			memset(mid[i], (int)r, BLK);
		}
		for (unsigned i = 0; i < nmid; i++)
			REQUIRE(kp_free(pool, mid[i]) == KP_OK, "kp_free");
		g[r] = kp_alloc(pool, GROW, 0);
		REQUIRE(g[r] != NULL, "kp_alloc(%d): %s", GROW, kp_last_error());
		memset(g[r], 1, 64);
		REQUIRE(kp_daemon_step(pool, 0) >= 0, "kp_daemon_step: %s", kp_last_error());
	}
	int64_t alloc_calls = kt_stat(pool, "syscalls.alloc.madvise") - alloc_before;
	int64_t calls = alloc_calls + kt_stat(pool, "syscalls.daemon.madvise") - before;
	printf("   %d large blocks that only grow, a daemon's pass after each: %lld madvise (%lld on the allocation "
	       "path)\n",
	       NGROW, (long long)calls, (long long)alloc_calls);
	CHECK(calls <= 64, "%lld madvise calls for %d growing large blocks", (long long)calls, NGROW);
	CHECK(alloc_calls == 0, "%lld madvise calls on the allocation path", (long long)alloc_calls);
	for (unsigned r = 0; r < NGROW; r++)
		REQUIRE(kp_free(pool, g[r]) == KP_OK, "kp_free");
	kp_destroy(pool);
}

/* Thread B's blocks, its steps driven by the main thread. */
static kp_pool *xpool;
static sem_t go, done;
static void *bblk[N];
static const struct ol_span *bhand;
static size_t bpages[2], bmissing[2];

static void b_count(unsigned k)
{
	bpages[k] = bmissing[k] = 0;
	for (unsigned i = 0; i < N; i++)
		if (i % 4 && span_of(xpool, bblk[i]) == bhand)
			bpages[k] += inner_pages(bblk[i], BLK, &bmissing[k]);
}

static void b_steps(void)
{
	sem_wait(&go); /* 1: blocks taken, three in four of the span in hand's freed */
	for (unsigned i = 0; i < N; i++) {
		bblk[i] = kp_alloc(xpool, BLK, 0);
		REQUIRE(bblk[i] != NULL, "kp_alloc(%d): %s", BLK, kp_last_error());
		kt_fill(bblk[i], BLK, i);
	}
	bhand = span_of(xpool, bblk[N - 1]);
	for (unsigned i = 0; i < N; i++)
		if (i % 4 && span_of(xpool, bblk[i]) == bhand)
			REQUIRE(kp_free(xpool, bblk[i]) == KP_OK, "kp_free");
	sem_post(&done);
	sem_wait(&go); /* 2: after the main thread's large blocks and a daemon's pass, before any refill of B's */
	b_count(0);
	/* 3: a refill (the first block of a class B never took): B parks its
	 * spans in hand's free blocks; the main thread makes a pass, then
	 * their pages */
	void *q = kp_alloc(xpool, 3000, 0);
	REQUIRE(q != NULL, "kp_alloc: %s", kp_last_error());
	sem_post(&done);
	sem_wait(&go);
	b_count(1);
	REQUIRE(kp_free(xpool, q) == KP_OK, "kp_free");
	size_t bad = 0;
	for (unsigned i = 0; i < N; i++) {
		if (i % 4 && span_of(xpool, bblk[i]) == bhand)
			continue;
		bad += kt_verify(bblk[i], BLK, i) != KT_OK;
		REQUIRE(kp_free(xpool, bblk[i]) == KP_OK, "kp_free");
	}
	CHECK(bad == 0, "%zu of thread B's live blocks changed", bad);
}

static void *thread_b(void *arg)
{
	(void)arg;
	b_steps(); /* a REQUIRE that fails returns from it, and the main thread's waits end */
	sem_post(&done);
	sem_post(&done);
	sem_post(&done);
	return NULL;
}

static void test_other_threads_give_back_theirs_at_their_next_refill(void)
{
	KT_POOL(pool, "layout:outline,daemon:off,step_clock:on,prefault:off,seed:5");
	xpool = pool;
	sem_init(&go, 0, 0);
	sem_init(&done, 0, 0);
	pthread_t t;
	REQUIRE(pthread_create(&t, NULL, thread_b, NULL) == 0, "pthread_create");
	sem_post(&go);
	sem_wait(&done);
	void *warm = kp_alloc(pool, 64, 0); /* the main thread's heap */
	REQUIRE(warm != NULL, "kp_alloc: %s", kp_last_error());
	int64_t alloc_madv = kt_stat(pool, "syscalls.alloc.madvise");
	for (unsigned k = 0; k < NBIG; k++) {
		big[k] = kp_alloc(pool, BIG, 0);
		REQUIRE(big[k] != NULL, "kp_alloc(%d): %s", BIG, kp_last_error());
		kt_fill(big[k], BIG, 1000 + k);
	}
	REQUIRE(kp_daemon_step(pool, 0) >= 0, "kp_daemon_step: %s", kp_last_error());
	sem_post(&go);
	sem_wait(&done); /* B's refill */
	REQUIRE(kp_daemon_step(pool, 0) >= 0, "kp_daemon_step: %s", kp_last_error());
	sem_post(&go);
	sem_wait(&done);
	REQUIRE(pthread_join(t, NULL) == 0, "pthread_join");
	printf("   thread B's free blocks in hand: %zu of %zu pages given back before its refill, %zu of %zu after\n",
	       bmissing[0], bpages[0], bmissing[1], bpages[1]);
	CHECK(bmissing[0] == 0, "%zu of %zu pages of another thread's span in hand given back under it", bmissing[0],
	      bpages[0]);
	CHECK(bpages[1] > 0 && bmissing[1] * 10 >= bpages[1] * 9,
	      "%zu of %zu pages of thread B's free blocks in hand given back after its refill", bmissing[1], bpages[1]);
	CHECK(kt_stat(pool, "syscalls.alloc.madvise") == alloc_madv, "%lld madvise on the allocation path",
	      (long long)(kt_stat(pool, "syscalls.alloc.madvise") - alloc_madv));
	for (unsigned k = 0; k < NBIG; k++)
		REQUIRE(kp_free(pool, big[k]) == KP_OK, "kp_free");
	REQUIRE(kp_free(pool, warm) == KP_OK, "kp_free");
	CHECK(kt_stat(pool, "integrity.corruptions") == 0 && kt_stat(pool, "integrity.double_frees") == 0,
	      "no integrity event");
	sem_destroy(&go);
	sem_destroy(&done);
	kp_destroy(pool);
}

int main(void)
{
	RUN(test_large_growth_gives_back_the_free_blocks_in_hand);
	RUN(test_same_level_makes_no_purge_a_round);
	RUN(test_other_threads_give_back_theirs_at_their_next_refill);
	RUN(test_growing_large_blocks_purge_a_logarithmic_number_of_times);
	return ktest_summary();
}
