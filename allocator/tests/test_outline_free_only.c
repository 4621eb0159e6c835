/*
 * test_outline_free_only.c - a thread that frees other threads' blocks and
 * allocates none (a consumer of a producer/consumer program:
 * bench/programs/prodcons.c) holds few of them in its foreign cache
 * (outline.h, OL_FC_BYTES), where no allocation of its own ever takes them:
 * the producer touches pages for them instead. The producer and the
 * consumer take turns (a round: the producer makes a queue's worth of
 * messages of 16-2048 bytes and writes them whole, the consumer frees them
 * all), so the pages written are the same from run to run: counted here,
 * the data pages of the pool's spans resident (mincore), against the pages
 * one round's messages fill. And the foreign cache's two sizes: a thread
 * holds up to OL_FC_BYTES of a class it allocates too (it hands them out
 * again at once), up to OL_FC_LONE_BYTES of one it never allocated.
 */
#define _GNU_SOURCE 1
#include "ktest.h"
#include "outline.h"

#include <limits.h>
#include <pthread.h>
#include <sys/mman.h>

enum { QUEUE = 1024, ROUNDS = 40 };

static struct {
	kp_pool *pool;
	pthread_mutex_t lock;
	pthread_cond_t turn;
	int round; /* the producer's turn while even (round / 2 made so far) */
	void *q[QUEUE];
	size_t len[QUEUE];
	uint64_t seed;
	unsigned bad;
} g = {.lock = PTHREAD_MUTEX_INITIALIZER, .turn = PTHREAD_COND_INITIALIZER};

/* Wait for turn parity (0: the producer's, 1: the consumer's) of round r. */
static bool wait_turn(int want)
{
	pthread_mutex_lock(&g.lock);
	while (g.round < 2 * ROUNDS && (g.round & 1) != want)
		pthread_cond_wait(&g.turn, &g.lock);
	bool go = g.round < 2 * ROUNDS;
	pthread_mutex_unlock(&g.lock);
	return go;
}

static void pass_turn(void)
{
	pthread_mutex_lock(&g.lock);
	g.round++;
	pthread_cond_broadcast(&g.turn);
	pthread_mutex_unlock(&g.lock);
}

static void *produce(void *arg)
{
	(void)arg;
	while (wait_turn(0)) {
		for (int i = 0; i < QUEUE; i++) {
			g.len[i] = 8 + kt_rand_range(&g.seed, 16, 2048);
			g.q[i] = kp_alloc(g.pool, g.len[i], 0);
			if (g.q[i])
				memset(g.q[i], i & 0xff, g.len[i]);
			else
				g.bad++;
		}
		pass_turn();
	}
	return NULL;
}

static void *consume(void *arg)
{
	(void)arg;
	while (wait_turn(1)) {
		for (int i = 0; i < QUEUE; i++)
			if (g.q[i] && kp_free(g.pool, g.q[i]) != 0)
				g.bad++;
		pass_turn();
	}
	return NULL;
}

/* Data pages of the pool's spans resident, among those of blocks ever
 * handed out (each span's first `fresh` blocks). */
static size_t resident_data_pages(kp_pool *pool)
{
	kp__ol *ol = pool->ol;
	size_t res = 0;
	pthread_mutex_lock(&ol->lock);
	for (struct ol_seg *s = ol->segs; s; s = s->next)
		for (uint32_t i = 0; i < s->used; i++) {
			const struct ol_span *pg = &s->spans[i];
			if (!pg->start || !pg->fresh)
				continue;
			uintptr_t a = (uintptr_t)pg->start, b = a + (size_t)pg->fresh * pg->bsize;
			b = (b + KP_PAGE - 1) & ~(uintptr_t)(KP_PAGE - 1);
			for (; a < b; a += KP_PAGE) {
				unsigned char v = 0;
				if (mincore((void *)a, KP_PAGE, &v) == 0 && (v & 1))
					res++;
			}
		}
	pthread_mutex_unlock(&ol->lock);
	return res;
}

/* Rounds of a queue's worth of messages made by one thread and freed by
 * another: the data pages resident at most 1.64x the pages a round's
 * messages fill. The least a pool of size classes can touch is the sum
 * over its classes of the most blocks of the class one round takes: 1.37x
 * here (348 pages). With a foreign cache of 16 KiB a class (before s29),
 * the consumer's held up to 544 KiB of messages of its last rounds (34
 * classes) and the producer touched pages for them anew: 490 pages, 1.93x;
 * 4 KiB a class: 426, 1.68x (1 KiB: 401). A round's blocks of a class of
 * 256 bytes or less fill a page at most, and the consumer's cache held
 * them all (4 KiB a class), so the producer touched a second page of each
 * such class: the consumer, which allocates none of them, holds
 * OL_FC_LONE_BYTES a class now (s30): 411, 1.62x. */
static void test_free_only_thread(void)
{
	g.pool = kp_create("layout:outline,daemon:off,seed:11");
	REQUIRE(g.pool, "kp_create: %s", kp_last_error());
	g.seed = 29;
	pthread_t p, c;
	REQUIRE(pthread_create(&c, NULL, consume, NULL) == 0, "pthread_create");
	REQUIRE(pthread_create(&p, NULL, produce, NULL) == 0, "pthread_create");
	pthread_join(p, NULL);
	pthread_join(c, NULL);
	CHECK(g.bad == 0, "%u allocations failed or frees refused", g.bad);
	/* the pages the last round's messages filled, at their class sizes */
	uint64_t seed = 29, bytes = 0;
	for (int r = 0; r < ROUNDS; r++)
		for (int i = 0; i < QUEUE; i++) {
			size_t n = 8 + kt_rand_range(&seed, 16, 2048);
			if (r == ROUNDS - 1)
				bytes += n + OL_CANARY;
		}
	size_t round_pages = (size_t)(bytes / KP_PAGE), res = resident_data_pages(g.pool);
	printf("   %d rounds of %d messages: %zu data pages resident, a round's messages fill %zu (%.2fx)\n", ROUNDS,
	       QUEUE, res, round_pages, (double)res / (double)round_pages);
	CHECK(res * 100 <= round_pages * 164, "%zu data pages resident for a round's %zu", res, round_pages);
	kp_destroy(g.pool);
}

/* The most blocks of class cls a thread's foreign cache held while it
 * freed blk[0..n) (made by another thread) one by one; with mine set, it
 * allocated a block of the class first (and frees it last). */
static struct {
	void **blk;
	int n;
	size_t size;
	bool mine;
	unsigned most;
} fc;

static void *cache_free(void *arg)
{
	(void)arg;
	void *own = fc.mine ? kp_alloc(g.pool, fc.size, 0) : NULL;
	uint32_t cls = kp__ol_class_tbl[(fc.size + OL_CANARY + 15) >> 4];
	for (int i = 0; i < fc.n; i++) {
		if (kp_free(g.pool, fc.blk[i]) != 0)
			g.bad++;
		unsigned k = kp__ol_slot.heap->fc_n[cls];
		fc.most = k > fc.most ? k : fc.most;
	}
	if (own)
		kp_free(g.pool, own);
	return NULL;
}

static unsigned cache_most(bool mine)
{
	enum { N = 200 };
	void *blk[N];
	fc = (__typeof__(fc)){.blk = blk, .n = N, .size = 48, .mine = mine};
	for (int i = 0; i < N; i++)
		if ((blk[i] = kp_alloc(g.pool, fc.size, 0)) == NULL)
			return UINT_MAX;
	pthread_t t;
	if (pthread_create(&t, NULL, cache_free, NULL) != 0)
		return UINT_MAX;
	pthread_join(t, NULL);
	return fc.most;
}

/* 64-byte blocks (48 + the canary): OL_FC_BYTES' worth of them (up to
 * OL_FC_MAX: 64 of 128 since s31's 8 KiB), OL_FC_LONE_BYTES 16. Before
 * (s29), a thread that allocated none held 64 as well. */
static void test_cache_by_use(void)
{
	g.pool = kp_create("layout:outline,daemon:off,seed:11");
	REQUIRE(g.pool, "kp_create: %s", kp_last_error());
	unsigned lone = cache_most(false), both = cache_most(true);
	printf("   64-byte blocks in the foreign cache at most: %u (a thread that allocates none), %u (one that "
	       "allocates them too)\n",
	       lone, both);
	CHECK(g.bad == 0, "%u frees refused", g.bad);
	CHECK(lone <= OL_FC_LONE_BYTES / 64, "a thread that allocates none of the class held %u blocks", lone);
	CHECK(both == (OL_FC_BYTES / 64 < OL_FC_MAX ? OL_FC_BYTES / 64 : OL_FC_MAX),
	      "a thread that allocates the class too held %u blocks", both);
	kp_destroy(g.pool);
}

int main(void)
{
	RUN(test_free_only_thread);
	RUN(test_cache_by_use);
	return ktest_summary();
}
