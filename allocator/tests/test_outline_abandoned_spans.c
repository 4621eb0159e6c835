/*
 * test_outline_abandoned_spans.c - the spans of a thread that ended are
 * reused by the threads still running before those touch new pages.
 *
 * A producer/consumer program of two producers (bench/programs/prodcons.c):
 * the producers share the queue, so each holds about half of the messages
 * live at once, and one finishes before the other. Its heap is then
 * abandoned (outline.c, heap_abandon) with its spans wholly free once the
 * consumer has freed its last messages, while the producer left fills the
 * whole queue alone: it needs twice the blocks it had. Before (s33), its
 * refill took a wholly free span of another heap (span_adopt) only when
 * its span in hand was made whole (no untouched block left): with blocks
 * untouched in hand it made them (span_extend), new pages, and the ended
 * producer's pages stayed resident beside them. A sampler of the pool's
 * spans under bench-prodcons (2 producers of 1,000,000 messages each) at
 * its peak: the ended producer's heap 0.86-0.96 MiB of free blocks on its
 * avail lists, the running producer's data pages growing past them (2.7-2.9
 * MiB resident for about 1 MiB live). After (s34, the preload, /usr/bin/time's
 * peak, medians of 7 alternated runs, load 10+): bench-prodcons 4,972 ->
 * 4,840 KiB (glibc 3,868): the rest of its gap is its steady state, two
 * producers alive (a class's blocks in flight on its spans' lists and in the
 * consumers' caches: per-class stock that glibc's coalescing shares).
 *
 * The check, turn by turn so that the pages are the same from run to run:
 * rounds of a queue's worth of messages of 16-2048 bytes, written whole,
 * made half by producer A and half by producer B, all freed by the
 * consumer; then B ends, and A makes each round alone. The data pages the
 * rounds after B's end add to those resident before it: at most an eighth
 * of the pages a round's messages fill.
 *
 * Run alone: make -C allocator VARIANT=release
 * build/release/tests/test_outline_abandoned_spans &&
 * allocator/build/release/tests/test_outline_abandoned_spans
 */
#define _GNU_SOURCE 1
#include "ktest.h"
#include "outline.h"

#include <pthread.h>
#include <sys/mman.h>
#include <unistd.h>

enum { QUEUE = 1024, ROUNDS = 20 };
enum { T_A, T_B, T_C }; /* whose turn: producer A, producer B, the consumer */

static struct {
	kp_pool *pool;
	pthread_mutex_t lock;
	pthread_cond_t cv;
	int turn;
	bool b_gone; /* past B's rounds: A makes every round alone */
	int rounds;  /* rounds the consumer finished */
	void *q[QUEUE];
	uint64_t seed_a, seed_b;
	unsigned bad;
} g = {.lock = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};

/* Wait for who's turn; false once the rounds are over. */
static bool wait_turn(int who)
{
	pthread_mutex_lock(&g.lock);
	while (g.rounds < 2 * ROUNDS && g.turn != who && !(who == T_B && g.b_gone))
		pthread_cond_wait(&g.cv, &g.lock);
	bool go = g.rounds < 2 * ROUNDS && !(who == T_B && g.b_gone);
	pthread_mutex_unlock(&g.lock);
	return go;
}

static void pass_turn(int to)
{
	pthread_mutex_lock(&g.lock);
	g.turn = to;
	pthread_cond_broadcast(&g.cv);
	pthread_mutex_unlock(&g.lock);
}

static void make(int from, int to, uint64_t *seed)
{
	for (int i = from; i < to; i++) {
		size_t n = 8 + kt_rand_range(seed, 16, 2048);
		g.q[i] = kp_alloc(g.pool, n, 0);
		if (g.q[i])
			memset(g.q[i], i & 0xff, n);
		else
			g.bad++;
	}
}

static void *producer_a(void *arg)
{
	(void)arg;
	while (wait_turn(T_A)) {
		bool alone = __atomic_load_n(&g.b_gone, __ATOMIC_RELAXED);
		make(0, alone ? QUEUE : QUEUE / 2, &g.seed_a);
		pass_turn(alone ? T_C : T_B);
	}
	return NULL;
}

static void *producer_b(void *arg)
{
	(void)arg;
	while (wait_turn(T_B)) {
		make(QUEUE / 2, QUEUE, &g.seed_b);
		pass_turn(T_C);
	}
	return NULL; /* its heap abandoned (outline.c, ol_thread_exit) */
}

static void *consume(void *arg)
{
	(void)arg;
	while (wait_turn(T_C)) {
		for (int i = 0; i < QUEUE; i++)
			if (g.q[i] && kp_free(g.pool, g.q[i]) != 0)
				g.bad++;
		pthread_mutex_lock(&g.lock);
		g.rounds++;
		bool stop = g.rounds == ROUNDS; /* B's last round: main joins it, then A goes on */
		g.b_gone = g.b_gone || stop;
		g.turn = stop ? -1 : T_A;
		pthread_cond_broadcast(&g.cv);
		pthread_mutex_unlock(&g.lock);
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

static void test_abandoned_spans_reused(void)
{
	g.pool = kp_create("layout:outline,daemon:off,seed:11");
	REQUIRE(g.pool, "kp_create: %s", kp_last_error());
	g.seed_a = 29;
	g.seed_b = 31;
	g.turn = T_A;
	pthread_t a, b, c;
	REQUIRE(pthread_create(&c, NULL, consume, NULL) == 0, "pthread_create");
	REQUIRE(pthread_create(&a, NULL, producer_a, NULL) == 0, "pthread_create");
	REQUIRE(pthread_create(&b, NULL, producer_b, NULL) == 0, "pthread_create");
	pthread_join(b, NULL); /* B's rounds over, its heap abandoned */
	/* no thread adopts it meanwhile (outline.h, OL_ABANDON_MS) */
	usleep(2 * OL_ABANDON_MS * 1000);
	size_t before = resident_data_pages(g.pool);
	pass_turn(T_A);
	pthread_join(a, NULL);
	pthread_join(c, NULL);
	size_t after = resident_data_pages(g.pool);
	CHECK(g.bad == 0, "%u allocations failed or frees refused", g.bad);
	/* the pages A's last round's messages fill, at their class sizes */
	size_t round_pages = 0;
	uint64_t seed = 29;
	for (int r = 0; r < ROUNDS + ROUNDS; r++)
		for (int i = 0; i < (r < ROUNDS ? QUEUE / 2 : QUEUE); i++) {
			size_t n = 8 + kt_rand_range(&seed, 16, 2048);
			if (r == 2 * ROUNDS - 1)
				round_pages += n + OL_CANARY;
		}
	round_pages /= KP_PAGE;
	printf("   data pages resident: %zu with B's heap abandoned, %zu after A's %d rounds alone (+%zu; a round "
	       "fills %zu)\n",
	       before, after, ROUNDS, after - before, round_pages);
	CHECK((after - before) * 8 <= round_pages, "A's rounds alone added %zu data pages (a round fills %zu)",
	      after - before, round_pages);
	kp_destroy(g.pool);
}

int main(void)
{
	RUN(test_abandoned_spans_reused);
	return ktest_summary();
}
