/*
 * test_outline_thread_pages.c - what a short-lived thread's few blocks of
 * many classes cost in resident metadata (issue 14: bench-thread-churn,
 * 8 threads a wave of 16-512 byte blocks, 1.34x glibc's peak RSS with its
 * exit, and false-sharing 1.16x; s36). Each class a heap uses starts a span
 * in a slice of its own (a data page at least, the layout's floor), and its
 * stack and records take their room in the segment's metadata one span
 * after the other: a first span of 128 blocks reserved 1.4 KiB there
 * (blocks of 256 bytes) of which span_extend wrote the first page's blocks'
 * (16: 170 bytes), so 14 classes' spans had every page of 20 KiB resident
 * for 2.4 KiB written. Checked: 8 threads, alive together (each its own
 * heap), each 2 blocks of 14 classes (48-512 bytes), written; then the
 * segments' metadata resident, at most 3 pages a heap (its segment's
 * record, its spans' arrays; main: 6, 48 pages), and the data pages still one a
 * class and heap.
 */
#define _GNU_SOURCE 1
#include "ktest.h"
#include "outline.h"

#include <pthread.h>

#define NT 8
#define NCLS 14
static const size_t sizes[NCLS] = {48, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384, 448, 512};

static kp_pool *pool;
static pthread_barrier_t bar;
static void *blocks[NT][NCLS][2];

static void *one(void *arg)
{
	long id = (long)arg;
	for (int c = 0; c < NCLS; c++)
		for (int k = 0; k < 2; k++) {
			void *p = kp_alloc(pool, sizes[c] - 8, 0); /* request + canary: the class of sizes[c] */
			if (p)
				kt_fill(p, sizes[c] - 8, (int)id);
			blocks[id][c][k] = p;
		}
	pthread_barrier_wait(&bar); /* every thread's heap made before any ends */
	return NULL;
}

static void test_a_threads_classes_pages(void)
{
	KT_POOL(pl, "layout:outline,daemon:off,prefault:off");
	pool = pl;
	pthread_t t[NT];
	REQUIRE(pthread_barrier_init(&bar, NULL, NT) == 0, "barrier");
	for (long i = 0; i < NT; i++)
		REQUIRE(pthread_create(&t[i], NULL, one, (void *)i) == 0, "pthread_create");
	for (int i = 0; i < NT; i++)
		pthread_join(t[i], NULL);
	pthread_barrier_destroy(&bar);
	for (int i = 0; i < NT; i++)
		for (int c = 0; c < NCLS; c++)
			for (int k = 0; k < 2; k++)
				REQUIRE(blocks[i][c][k] != NULL, "kp_alloc");
	size_t meta = 0, data = 0;
	unsigned nsegs = 0, nheaps = 0;
	for (struct ol_heap *h = pool->ol->heaps; h; h = h->next)
		nheaps++;
	for (struct ol_seg *s = pool->ol->segs; s; s = s->next) {
		nsegs++;
		meta += OL_META / KP_PAGE - kt_not_resident(s, OL_META);
		data += OL_SEG_SIZE / KP_PAGE - kt_not_resident(s->base, OL_SEG_SIZE);
	}
	printf("   %u heaps, %u segments: %zu metadata pages resident, %zu data pages\n", nheaps, nsegs, meta, data);
	CHECK(nheaps == NT, "%u heaps made", nheaps);
	CHECK(meta <= 3 * (size_t)NT, "%zu metadata pages resident for %d heaps of %d classes", meta, NT, NCLS);
	CHECK(data <= (size_t)NT * NCLS, "%zu data pages resident for %d heaps of %d classes", data, NT, NCLS);
	for (int i = 0; i < NT; i++)
		for (int c = 0; c < NCLS; c++)
			for (int k = 0; k < 2; k++)
				kp_free(pool, blocks[i][c][k]);
	kp_destroy(pool);
}

int main(void)
{
	RUN(test_a_threads_classes_pages);
	return ktest_summary();
}
