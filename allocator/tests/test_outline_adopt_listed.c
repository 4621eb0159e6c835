/*
 * test_outline_adopt_listed.c - outline.c's fc_steal adopts another heap's
 * retired span whose blocks are all free, on its stack or on its
 * cross-thread list (span_quiet), while other threads still push onto that
 * list and adopt its neighbours: s33, for the blocks a parked thread's
 * spans get back (test_outline_line_stranded_attack32 measures the memory).
 *
 * A parked thread allocates NB blocks of one class (its spans retired but
 * the last) and waits; NT threads free them, interleaved (each the blocks
 * i with i % NT its own, so that every span's list gets pushes from every
 * thread at once), then each allocates NB / NT blocks, writes its mark in
 * every byte of each, and checks them all after the others are done: a
 * block handed out twice (an adopted span drained while a push was in
 * flight, or taken by two heaps) shows as another thread's mark. No event
 * may be logged (a double free reported would be a block seen twice on a
 * list). The memory it saves is test_outline_line_stranded_attack32's to
 * measure: here primary.committed_bytes counts 64 KiB slices, and each
 * thread's first span of its own takes one (printed only).
 */
#define _GNU_SOURCE 1
#include "ktest.h"

#include <pthread.h>
#include <stdint.h>
#include <string.h>

#define NB 16384 /* 4 spans and more of the classes below: the first of 128 blocks, then 4x */
#define NT 3	 /* freeing threads, on 2 CPUs: they interleave */

static struct {
	kp_pool *pool;
	size_t size;
	void **blk;
	pthread_barrier_t bar;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int phase; /* 1: made; 2: the parked thread may end */
	unsigned bad;
} g = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};

static void *parked(void *arg)
{
	(void)arg;
	for (int i = 0; i < NB; i++)
		if (!(g.blk[i] = kp_alloc(g.pool, g.size, 0)))
			__atomic_fetch_add(&g.bad, 1, __ATOMIC_RELAXED);
	pthread_mutex_lock(&g.mu);
	g.phase = 1;
	pthread_cond_broadcast(&g.cv);
	while (g.phase != 2)
		pthread_cond_wait(&g.cv, &g.mu);
	pthread_mutex_unlock(&g.mu);
	return NULL;
}

static void *worker(void *arg)
{
	long id = (long)arg;
	for (int i = (int)id; i < NB; i += NT)
		if (kp_free(g.pool, g.blk[i]) != 0)
			__atomic_fetch_add(&g.bad, 1, __ATOMIC_RELAXED);
	pthread_barrier_wait(&g.bar); /* every block freed: the spans are whole free */
	static void *mine[NT][NB / NT];
	for (int i = 0; i < NB / NT; i++) {
		unsigned char *p = kp_alloc(g.pool, g.size, 0);
		mine[id][i] = p;
		if (!p) {
			__atomic_fetch_add(&g.bad, 1, __ATOMIC_RELAXED);
			continue;
		}
		memset(p, (int)(0xa0 + id), g.size);
	}
	pthread_barrier_wait(&g.bar); /* every thread's marks written */
	for (int i = 0; i < NB / NT; i++) {
		unsigned char *p = mine[id][i];
		if (!p)
			continue;
		for (size_t b = 0; b < g.size; b++)
			if (p[b] != (unsigned char)(0xa0 + id)) {
				__atomic_fetch_add(&g.bad, 1, __ATOMIC_RELAXED);
				break;
			}
		kp_free(g.pool, p);
	}
	return NULL;
}

static void adopt_round(size_t size)
{
	g.pool = kp_create("layout:outline,daemon:off,seed:5");
	REQUIRE(g.pool, "kp_create: %s", kp_last_error());
	g.size = size;
	g.bad = 0;
	g.phase = 0;
	g.blk = calloc(NB, sizeof *g.blk);
	REQUIRE(g.blk, "calloc");
	pthread_barrier_init(&g.bar, NULL, NT);
	pthread_t p, t[NT];
	pthread_create(&p, NULL, parked, NULL);
	pthread_mutex_lock(&g.mu);
	while (g.phase != 1)
		pthread_cond_wait(&g.cv, &g.mu);
	pthread_mutex_unlock(&g.mu);
	int64_t c0 = kt_stat(g.pool, "primary.committed_bytes");
	for (long i = 0; i < NT; i++)
		pthread_create(&t[i], NULL, worker, (void *)i);
	for (int i = 0; i < NT; i++)
		pthread_join(t[i], NULL);
	int64_t c1 = kt_stat(g.pool, "primary.committed_bytes");
	int64_t ev = kt_stat(g.pool, "integrity.invalid_frees") + kt_stat(g.pool, "integrity.corruptions");
	int64_t dfree = kt_stat(g.pool, "integrity.double_frees");
	pthread_mutex_lock(&g.mu);
	g.phase = 2;
	pthread_cond_broadcast(&g.cv);
	pthread_mutex_unlock(&g.mu);
	pthread_join(p, NULL);
	printf("   %zu-byte requests, %d threads: committed +%lld KiB for %d blocks freed and taken again, %u bad\n",
	       size, NT, (long long)(c1 - c0) / 1024, NB, g.bad);
	CHECK(g.bad == 0, "%u blocks failed, refused, or held by two threads", g.bad);
	CHECK(dfree == 0 && ev == 0, "%lld double frees, %lld other violations reported", (long long)dfree,
	      (long long)ev);
	pthread_barrier_destroy(&g.bar);
	free(g.blk);
	kp_destroy(g.pool);
}

static void test_adopt_while_pushing(void)
{
	adopt_round(8);	 /* 16-byte blocks: a class under a line */
	adopt_round(56); /* 64-byte blocks: a line whole */
	adopt_round(248);
}

int main(void)
{
	RUN(test_adopt_while_pushing);
	return ktest_summary();
}
