/*
 * test_outline_lend.c - what a thread that holds a few blocks of many
 * classes costs in resident memory (issue 14: bench-thread-churn's peak RSS
 * 1.22-1.48x glibc's, s36). Each class a heap allocates takes a span of its
 * own at a slice's start (outline.c, span_new), so a page of data a class at
 * least, and the span's stack and records: thread_churn's threads (64
 * blocks of 16-512 B live, 21 classes, ~17 KiB) kept 23 data pages and 8 of
 * metadata resident a heap (~124 KiB; glibc's arena ~50). A young heap's
 * classes up to 1 KiB pop a coarser class's span until it runs dry
 * (outline.c, LEND).
 *
 * Checked: 8 threads alive at once, each with thread_churn's pattern (400
 * steps, 64 slots, 16-512 B), then every segment's data pages and its
 * metadata's (its record with the span records, the spans' stacks and
 * records; mincore) resident: at most 20 pages a heap (s37's main: 30.8;
 * with LEND 15.9). And a thread that holds 1,000 blocks of 8-256 B
 * (small_objects' pattern) stays within 78 pages (main 69, LEND 71): the
 * classes it uses much leave their lenders at their first refill. With
 * lend:off (each class its own spans, main's way) the first check fails.
 */
#define _GNU_SOURCE 1
#include "ktest.h"
#include "outline.h"

#include <pthread.h>

#define NT 8	  /* threads alive at once: a heap each */
#define SLOTS 64  /* thread_churn's blocks live a thread */
#define STEPS 400 /* thread_churn's steps a thread */

static kp_pool *pool;
static pthread_barrier_t held, done;

static uint64_t next(uint64_t *s)
{
	uint64_t x = *s;
	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	return *s = x;
}

/* The data pages of the pool's segments and their metadata's (its record
 * and the arrays its spans took: meta_take's, up to bump; the links at the
 * top are touched by cross-thread frees alone, none here) resident. */
static size_t resident_pages(void)
{
	size_t pages = 0;
	pthread_mutex_lock(&pool->ol->lock);
	for (struct ol_seg *s = pool->ol->segs; s; s = s->next) {
		pages += OL_SEG_SIZE / KP_PAGE - kt_not_resident(s->base, OL_SEG_SIZE);
		size_t meta = (size_t)(s->bump - (uint8_t *)s);
		pages += (meta + KP_PAGE - 1) / KP_PAGE - kt_not_resident(s, meta);
	}
	pthread_mutex_unlock(&pool->ol->lock);
	return pages;
}

static void *churn(void *arg)
{
	uint64_t seed = 0xA0761D6478BD642Full ^ (uint64_t)(uintptr_t)arg;
	void *live[SLOTS] = {0};
	for (int i = 0; i < STEPS; i++) {
		size_t n = 16 + next(&seed) % 497, k = next(&seed) % SLOTS;
		kp_free(pool, live[k]);
		live[k] = kp_alloc(pool, n, 0);
		if (live[k])
			kt_fill(live[k], n < 32 ? n : 32, 1);
	}
	pthread_barrier_wait(&held); /* every heap made and holding its blocks */
	pthread_barrier_wait(&done); /* counted */
	for (int k = 0; k < SLOTS; k++)
		kp_free(pool, live[k]);
	return NULL;
}

/* NT threads' heaps made under conf: *pages, their pages resident (resident_pages) */
static void threads_pages(const char *conf, size_t *out)
{
	KT_POOL(pl, conf);
	pool = pl;
	REQUIRE(pthread_barrier_init(&held, NULL, NT + 1) == 0 && pthread_barrier_init(&done, NULL, NT + 1) == 0,
		"barriers");
	pthread_t t[NT];
	for (int i = 0; i < NT; i++)
		REQUIRE(pthread_create(&t[i], NULL, churn, (void *)(uintptr_t)(i + 1)) == 0, "pthread_create");
	pthread_barrier_wait(&held);
	size_t pages = resident_pages();
	unsigned nheaps = 0;
	for (struct ol_heap *h = pool->ol->heaps; h; h = h->next)
		nheaps++;
	printf("   %s: %u heaps, %zu pages of data and metadata resident, %.1f a heap\n", conf, nheaps, pages,
	       (double)pages / NT);
	pthread_barrier_wait(&done);
	for (int i = 0; i < NT; i++)
		pthread_join(t[i], NULL);
	pthread_barrier_destroy(&held);
	pthread_barrier_destroy(&done);
	CHECK(nheaps == NT, "%u heaps for %d threads", nheaps, NT);
	kp_destroy(pool);
	*out = pages;
}

static void test_threads_with_a_few_blocks_of_many_classes(void)
{
	size_t pages = 0, own = 0;
	threads_pages("layout:outline,daemon:off,prefault:off", &pages);
	CHECK(pages <= 20 * NT, "%zu pages resident for %d heaps (at most 20 a heap)", pages, NT);
	/* the check can fail: each class its own span (main's way) */
	threads_pages("layout:outline,daemon:off,prefault:off,lend:off", &own);
	CHECK(own > 20 * NT, "lend:off: %zu pages resident for %d heaps, within the bound", own, NT);
}

static void test_a_thread_with_many_blocks(void)
{
	KT_POOL(pl, "layout:outline,daemon:off,prefault:off");
	pool = pl;
	static char *live[1000];
	uint64_t seed = 42;
	for (long i = 0; i < 200000; i++) {
		size_t k = next(&seed) % 1000, n = 8 + next(&seed) % 249;
		kp_free(pool, live[k]);
		live[k] = kp_alloc(pool, n, 0);
		REQUIRE(live[k] != NULL, "kp_alloc(%zu)", n);
		live[k][0] = 1;
		if (i % 64 == 0) { /* small_objects' bursts of temporaries */
			char *tmp[16];
			for (int b = 0; b < 16; b++) {
				size_t m = 8 + next(&seed) % 57;
				REQUIRE((tmp[b] = kp_alloc(pool, m, 0)) != NULL, "kp_alloc(%zu)", m);
				kt_fill(tmp[b], m, (unsigned char)b);
			}
			for (int b = 15; b >= 0; b--)
				kp_free(pool, tmp[b]);
		}
	}
	size_t pages = resident_pages();
	printf("   one thread, 1,000 blocks of 8-256 B: %zu pages of data and metadata resident\n", pages);
	CHECK(pages <= 78, "%zu pages resident (at most 78)", pages);
	for (size_t k = 0; k < 1000; k++)
		kp_free(pool, live[k]);
	kp_destroy(pool);
}

int main(void)
{
	RUN(test_threads_with_a_few_blocks_of_many_classes);
	RUN(test_a_thread_with_many_blocks);
	return ktest_summary();
}
