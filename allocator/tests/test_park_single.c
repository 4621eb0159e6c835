/*
 * test_park_single.c - a pool with one thread's cache parks no batch
 * (tcache.c, park_ok; issue 14's memory target for small programs). A
 * parked batch is for another thread's bin: with one cache, the only bin
 * that could take it is the flushing thread's own, which finds the same
 * blocks in the spans. Parked, they were blocks out of their spans, so the
 * thread's refills carved new ones beside them, and their keys filled
 * xfer_tail rows 2 KiB apart per class and slot: small_objects under the
 * preload parked batches of 10 classes (2 each in most), its spans held
 * 4-10 pages more and the pool's transfer cache 9-11 pages.
 *
 * 1. One thread fills 10 classes of small_objects' sizes (80-320 B blocks)
 *    with 600 blocks each, frees them all (its bins overflow one way, a
 *    whole flush each time), then walks them at random: no batch parked,
 *    no page of the transfer cache touched, and every block of those
 *    classes out of its spans is in the thread's bin (none held apart).
 * 2. With a second thread's cache alive, the same pattern parks: parking
 *    still serves threads that free each other's blocks.
 */
#define _GNU_SOURCE 1
/* Tests the thread caches' bins (tcache.c): every pool layout:inline (ktest.h, KT_LAYOUT_INLINE). */
#define KT_LAYOUT_INLINE 1
#include "ktest.h"

#include "internal.h"

#include "kt_worker.h"

#define CONF "primary_initial:4m,daemon:off,backup:0,seed:17"
#define FIRST 3 /* classes 3..12: 80-320 byte blocks, small_objects' */
#define NCLS 10
#define N 600

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

/* Blocks of class cls out of their spans (handed out, in a bin or parked). */
static size_t out_of_spans(kp_pool *pool, unsigned cls)
{
	size_t n = 0;
	for (kp__seg *s = pool->segs; s; s = s->next)
		for (unsigned u = 1; u < KP_UNITS; u++)
			if (s->span[u].head == u && s->span[u].kind == KP_SPAN_SMALL && s->span[u].cls == cls)
				n += s->span[u].nused;
	return n;
}

/* Fill, free all, then a random walk of N / 2 live blocks a class. The
 * classes that parked a batch. */
static unsigned churn(kp_pool *pool)
{
	static char *v[NCLS][N];
	for (unsigned c = 0; c < NCLS; c++)
		for (int i = 0; i < N; i++) {
			v[c][i] = kp_alloc(pool, request(FIRST + c), 0);
			CHECK(v[c][i] != NULL, "alloc");
		}
	for (unsigned c = 0; c < NCLS; c++)
		for (int i = 0; i < N; i++)
			CHECK(kp_free(pool, v[c][i]) == 0, "free");
	unsigned parked = 0;
	for (unsigned c = FIRST; c < FIRST + NCLS; c++)
		parked += atomic_load(&pool->central[c].nxfer) > 0;
	memset(v, 0, sizeof v);
	uint64_t seed = 42;
	for (int i = 0; i < 200000; i++) {
		unsigned c = (unsigned)(kt_xorshift(&seed) % NCLS), k = (unsigned)(kt_xorshift(&seed) % (N / 2));
		if (v[c][k])
			CHECK(kp_free(pool, v[c][k]) == 0, "free");
		v[c][k] = kp_alloc(pool, request(FIRST + c), 0);
		CHECK(v[c][k] != NULL, "alloc");
	}
	for (unsigned c = FIRST; c < FIRST + NCLS; c++)
		parked += atomic_load(&pool->central[c].nxfer) > 0;
	for (unsigned c = 0; c < NCLS; c++)
		for (int k = 0; k < N / 2; k++)
			if (v[c][k])
				CHECK(kp_free(pool, v[c][k]) == 0, "free");
	for (unsigned c = FIRST; c < FIRST + NCLS; c++)
		parked += atomic_load(&pool->central[c].nxfer) > 0;
	return parked;
}

static void test_single_thread_parks_nothing(void)
{
	KT_POOL(pool, CONF);
	REQUIRE(kp_alloc(pool, 16, 0) != NULL, "alloc");
	size_t before = xfer_pages(pool);
	unsigned parked = churn(pool);
	size_t after = xfer_pages(pool);
	kp__tcache *tc = kp__tls_state.tc[0];
	REQUIRE(tc != NULL && kp__tls_state.id[0] == pool->id, "the thread's cache");
	size_t held = 0, binned = 0;
	for (unsigned c = FIRST; c < FIRST + NCLS; c++) {
		size_t out = out_of_spans(pool, c);
		binned += (size_t)tc->bin[c].count * kp__class_size[c];
		held += (out - tc->bin[c].count) * kp__class_size[c];
	}
	printf("   one thread: %u classes parked a batch (at one of 3 checks); transfer cache %zu pages resident, %zu "
	       "before; %zu bytes out of the spans beside the bins' %zu\n",
	       parked, after, before, held, binned);
	CHECK(parked == 0, "%u classes parked a batch with one thread's cache in the pool", parked);
	CHECK(after == before, "%zu pages of the transfer cache touched by one thread", after - before);
	CHECK(held == 0, "%zu bytes of blocks held out of their spans, in no bin", held);
	CHECK(kt_stat(pool, "integrity.freelist_errors") == 0 && kt_stat(pool, "integrity.corruptions") == 0,
	      "a false alarm");
	kp_destroy(pool);
}

static void test_second_cache_parks(void)
{
	KT_POOL(pool, CONF);
	kt_cache_holder(pool);
	unsigned parked = churn(pool);
	printf("   with a second thread's cache: %u parks seen\n", parked);
	CHECK(parked > 0, "no class parked a batch with two threads' caches");
	kp_thread_flush(pool);
	for (unsigned c = FIRST; c < FIRST + NCLS; c++)
		CHECK(atomic_load(&pool->central[c].nxfer) == 0, "class %u: a batch still parked after the flush", c);
	CHECK(kt_stat(pool, "integrity.freelist_errors") == 0 && kt_stat(pool, "integrity.corruptions") == 0,
	      "a false alarm");
	kp_destroy(pool);
}

int main(void)
{
	RUN(test_single_thread_parks_nothing);
	RUN(test_second_cache_parks);
	return ktest_summary();
}
