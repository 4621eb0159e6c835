/*
 * test_transfer_pages.c - the pages of the pool that the transfer cache
 * touches (issue 14's memory target for small programs). A bin at its start
 * (at most 16 blocks: every bin of a thread that only frees a class, or only
 * allocates it) parks batches of at most 8 blocks; their keys are kept
 * together for all classes, so 24 classes' batches touch 2 pages of the
 * pool. Before, each class's two slots held room for 128 keys inline, 2 KiB
 * a class, and each class a thread parked for touched a page or half of one
 * (prodcons under the preload: 16 pages). And parked batches still go back
 * whole: taken by a bin, or given back by kp_thread_flush.
 */
#define _GNU_SOURCE 1
/* Tests the transfer cache and central lists (transfer.c, tcache.c): every pool layout:inline (ktest.h, KT_LAYOUT_INLINE). */
#define KT_LAYOUT_INLINE 1
#include "ktest.h"

#include "internal.h"

#include "kt_worker.h"

#define CONF "primary_initial:4m,daemon:off,backup:0,seed:9"
#define FIRST 4 /* classes 4..27: 96 B to 2 KiB */
#define NCLS 24

static size_t request(unsigned cls)
{
	return kp__class_size[cls] - 32; /* header and canary fit in 32 bytes, a class step is 16 or more */
}

/* Resident pages of the pool's transfer cache: its slots and their keys. */
static size_t xfer_pages(kp_pool *pool)
{
	const char *lo = (const char *)&pool->xfer, *hi = (const char *)&pool->xfer_gen;
	size_t page = (size_t)sysconf(_SC_PAGESIZE);
	uintptr_t a = (uintptr_t)lo & ~(uintptr_t)(page - 1);
	size_t pages = ((uintptr_t)hi - a + page - 1) / page;
	return pages - kt_not_resident(lo, (size_t)(hi - lo));
}

static void test_small_batches_packed(void)
{
	KT_POOL(pool, CONF);
	kt_cache_holder(pool); /* a single thread's flushes park nothing (test_park_single) */
	/* A consumer's pattern: a bin that has only freed 1 in 8 of its
	 * operations stays at its start and parks what overflows (tcache.c,
	 * KP_BIN_ONE_WAY): N allocations, then the first frees. */
	enum { N = 200 };
	static char *v[NCLS][N];
	REQUIRE(kp_alloc(pool, 16, 0) != NULL, "alloc");
	size_t before = xfer_pages(pool);
	/* Each class: N blocks out, then back; the bin (max at most 16) fills
	 * and parks half of itself (kp__tcache_flush_bin keeps max / 2), twice
	 * (both slots) before it grows. */
	for (unsigned c = 0; c < NCLS; c++)
		for (int i = 0; i < N; i++)
			REQUIRE((v[c][i] = kp_alloc(pool, request(FIRST + c), 0)) != NULL, "alloc");
	for (unsigned c = 0; c < NCLS; c++)
		for (int i = 0; i < N; i++)
			CHECK(kp_free(pool, v[c][i]) == 0, "free");
	unsigned parked = 0;
	for (unsigned c = FIRST; c < FIRST + NCLS; c++)
		parked += atomic_load(&pool->central[c].nxfer) > 0;
	size_t after = xfer_pages(pool);
	printf("   %u of %u classes parked a batch; transfer cache: %zu pages resident, %zu before\n", parked, NCLS,
	       after, before);
	REQUIRE(parked == NCLS, "only %u classes parked: the test does not test the transfer cache", parked);
	/* 24 classes x 2 slots x 16 keys of 8 bytes: 6 KiB, 2 pages; 3 across a boundary */
	CHECK(after - before <= 3, "%zu pages of the pool for %u classes' parked batches", after - before, parked);
	/* The batches come back: taken by the bins again, blocks intact. */
	for (unsigned c = 0; c < NCLS; c++)
		for (int i = 0; i < N; i++) {
			REQUIRE((v[c][i] = kp_alloc(pool, request(FIRST + c), 0)) != NULL, "alloc");
			kt_fill(v[c][i], request(FIRST + c), (unsigned)i);
		}
	for (unsigned c = 0; c < NCLS; c++)
		for (int i = 0; i < N; i++) {
			CHECK(kt_verify(v[c][i], request(FIRST + c), (unsigned)i) == KT_OK, "block");
			CHECK(kp_free(pool, v[c][i]) == 0, "free");
		}
	kp_thread_flush(pool);
	for (unsigned c = FIRST; c < FIRST + NCLS; c++)
		CHECK(atomic_load(&pool->central[c].nxfer) == 0, "class %u: a batch still parked after the flush", c);
	CHECK(kt_stat(pool, "integrity.freelist_errors") == 0 && kt_stat(pool, "integrity.corruptions") == 0,
	      "a false alarm");
	kp_destroy(pool);
}

/* Batches of more than 16 keys (a grown bin's) split across the two parts
 * of their slot's keys and come back whole, through a bin and through the
 * drain. */
static void test_big_batches(void)
{
	KT_POOL(pool, CONF);
	kt_cache_holder(pool);
	enum { N = 400 };
	static char *v[N];
	size_t req = request(3);
	for (int round = 0; round < 6; round++) {
		for (int i = 0; i < N; i++)
			REQUIRE((v[i] = kp_alloc(pool, req, 0)) != NULL, "alloc");
		for (int i = 0; i < N; i++)
			kt_fill(v[i], req, (unsigned)(i + round));
		for (int i = 0; i < N; i++) {
			CHECK(kt_verify(v[i], req, (unsigned)(i + round)) == KT_OK, "round %d block %d", round, i);
			CHECK(kp_free(pool, v[i]) == 0, "free");
		}
	}
	kp__bin *b = &kp__tls_state.tc[0]->bin[3];
	printf("   class 3: bin of %u blocks; %u batches parked\n", b->max, atomic_load(&pool->central[3].nxfer));
	CHECK(b->max > 2 * 16, "the bin did not grow (%u): its batches are not big", b->max);
	kp_thread_flush(pool);
	CHECK(atomic_load(&pool->central[3].nxfer) == 0, "a batch still parked after the flush");
	CHECK(kt_stat(pool, "primary.in_use_bytes") < 4096, "blocks left out: %llu",
	      (unsigned long long)kt_stat(pool, "primary.in_use_bytes"));
	CHECK(kt_stat(pool, "integrity.freelist_errors") == 0 && kt_stat(pool, "integrity.corruptions") == 0,
	      "a false alarm");
	kp_destroy(pool);
}

int main(void)
{
	RUN(test_small_batches_packed);
	RUN(test_big_batches);
	return ktest_summary();
}
