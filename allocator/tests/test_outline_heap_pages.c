/*
 * test_outline_heap_pages.c - what a thread's heap costs in resident
 * memory (issue 14: each live thread cost 17-57 KiB more than on glibc,
 * s31): the heaps in kp_create's arena (outline.c, heap_get) each at a
 * page of its own, so that a heap whose thread frees no other thread's
 * blocks (its foreign cache's rows untouched) has one page of the arena
 * resident, not the two its structure (2.8 KiB) straddled at a stride of
 * 39 KiB in two cases of three. Checked: 16 threads, each with one small
 * block allocated and freed on its own heap, then ended: the arena's
 * resident pages (mincore) at most one a heap (the main thread's too),
 * and each heap's structure inside one page.
 */
#define _GNU_SOURCE 1
#include "ktest.h"
#include "outline.h"

#include <pthread.h>

#define NT 16

static kp_pool *pool;
static pthread_barrier_t bar;

static void *one(void *arg)
{
	(void)arg;
	void *p = kp_alloc(pool, 40, 0);
	if (p)
		kt_fill(p, 40, 1);
	kp_free(pool, p);
	pthread_barrier_wait(&bar); /* every thread's heap made before any ends */
	return NULL;
}

static void test_a_heap_a_page(void)
{
	KT_POOL(pl, "layout:outline,daemon:off,prefault:off");
	pool = pl;
	void *p = kp_alloc(pool, 40, 0); /* the main thread's heap */
	REQUIRE(p != NULL, "kp_alloc");
	pthread_t t[NT];
	/* each its own heap: none ends before all are made (a thread ended
	 * leaves its heap to the next: heap_get) */
	REQUIRE(pthread_barrier_init(&bar, NULL, NT) == 0, "barrier");
	for (int i = 0; i < NT; i++)
		REQUIRE(pthread_create(&t[i], NULL, one, NULL) == 0, "pthread_create");
	for (int i = 0; i < NT; i++)
		pthread_join(t[i], NULL);
	pthread_barrier_destroy(&bar);
	unsigned nheaps = 0, straddle = 0;
	for (struct ol_heap *h = pool->ol->heaps; h; h = h->next) {
		nheaps++;
		straddle += ((uintptr_t)h & (KP_PAGE - 1)) + sizeof(struct ol_heap) > KP_PAGE;
	}
	/* the arena's pages up to its last heap made */
	size_t span = (size_t)((uint8_t *)pool->ol->heaps - pool->ol->arena) + sizeof(struct ol_heap);
	span = (span + KP_PAGE - 1) & ~(size_t)(KP_PAGE - 1);
	size_t pages = span / KP_PAGE, resident = pages - kt_not_resident(pool->ol->arena, span);
	printf("   %u heaps: %zu of the arena's %zu pages resident, %u structures across a page boundary\n", nheaps,
	       resident, pages, straddle);
	CHECK(nheaps == NT + 1, "%u heaps made", nheaps);
	CHECK(straddle == 0, "%u heaps' structures across a page boundary", straddle);
	CHECK(resident <= nheaps, "%zu pages of the arena resident for %u heaps", resident, nheaps);
	kp_free(pool, p);
	kp_destroy(pool);
}

int main(void)
{
	RUN(test_a_heap_a_page);
	return ktest_summary();
}
