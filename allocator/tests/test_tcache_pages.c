/*
 * test_tcache_pages.c - the pages a thread cache touches (issue 14's memory
 * target for small programs): a thread whose bins of many classes grow to a
 * few dozen blocks (a random walk's size) keeps their key rows on a few
 * pages, and a row is reused when its bin outgrows it. Before, each class had
 * its own 2 KiB row, so 16 bins grown to 64 blocks touched 8 pages of rows
 * (every row's first 512 bytes), and 64 threads alive at once 32 times that.
 * And the key stacks still work when rows move: blocks cached before a move
 * are handed out again unharmed, under their keys.
 */
#define _GNU_SOURCE 1
/* Tests the thread caches' bins (tcache.c): every pool layout:inline (ktest.h, KT_LAYOUT_INLINE). */
#define KT_LAYOUT_INLINE 1
#include "ktest.h"

#include "internal.h"

#define CONF "primary_initial:4m,daemon:off,backup:0,seed:5"
#define NCLS 16	 /* classes 2..17: 64 B to 1 KiB */
#define SWING 20 /* blocks allocated and freed at once: a bin settles at 32-64 */

static size_t request(unsigned cls)
{
	return kp__class_size[cls] - 32; /* header and canary fit in 32 bytes, a class step is 16 or more */
}

/* Resident pages of the cache's key rows (tc->keys, not its starts). */
static size_t row_pages(kp__tcache *tc)
{
	size_t page = (size_t)sysconf(_SC_PAGESIZE), n = sizeof tc->keys;
	uintptr_t lo = (uintptr_t)tc->keys & ~(uintptr_t)(page - 1);
	size_t pages = ((uintptr_t)tc->keys + n - lo + page - 1) / page;
	return pages - kt_not_resident(tc->keys, n);
}

static void test_rows_packed(void)
{
	KT_POOL(pool, CONF);
	static char *v[NCLS][SWING];
	unsigned cls0 = kp__class_of(request(2) + KP_HDR + KP_CANARY);
	REQUIRE(cls0 == 2, "request(2) is of class %u", cls0);
	REQUIRE(kp_alloc(pool, 16, 0) != NULL, "alloc"); /* this thread's cache: a fresh one */
	kp__tcache *tc = kp__tls_state.tc[0];
	size_t before = row_pages(tc);
	/* A heap the bins may grow with (tcache.c, tc_budget: a quarter of what
	 * the pool handed out): the swings alone are a small one. */
	void *ballast = kp_alloc(pool, (size_t)4 << 20, 0);
	REQUIRE(ballast, "ballast");
	for (int round = 0; round < 40; round++)
		for (unsigned c = 0; c < NCLS; c++) {
			for (int i = 0; i < SWING; i++)
				REQUIRE((v[c][i] = kp_alloc(pool, request(c + 2), 0)) != NULL, "alloc");
			for (int i = 0; i < SWING; i++)
				kt_fill(v[c][i], request(c + 2), (unsigned)i);
			for (int i = 0; i < SWING; i++) {
				CHECK(kt_verify(v[c][i], request(c + 2), (unsigned)i) == KT_OK, "block");
				CHECK(kp_free(pool, v[c][i]) == 0, "free");
			}
		}
	unsigned grown = 0, most = 0;
	for (unsigned c = 2; c < 2 + NCLS; c++) {
		grown += tc->bin[c].max > KP_BIN_START;
		most = tc->bin[c].max > most ? tc->bin[c].max : most;
	}
	size_t after = row_pages(tc);
	printf("   %u of %u bins grew past their start (largest %u blocks); rows: %zu pages resident, %zu before\n",
	       grown, NCLS, most, after, before);
	REQUIRE(grown >= NCLS - 2, "only %u bins grew: the test does not test rows", grown);
	/* 16 bins of at most 64 keys, 512 bytes each, plus the 32-key rows left
	 * behind: 3 pages; 4 with a page boundary inside a row */
	CHECK(after - before <= 4, "%zu pages of key rows for %u grown bins", after - before, grown);
	CHECK(kt_stat(pool, "integrity.freelist_errors") == 0, "a false alarm");
	kp_free(pool, ballast);
	kp_destroy(pool);
}

/* A bin grows while it holds blocks: their keys move with it, row to row,
 * and a row given up is taken by the next bin that grows to its size. */
static void test_rows_move(void)
{
	KT_POOL(pool, CONF);
	enum { N = 300 };
	static char *v[N];
	REQUIRE(kp_alloc(pool, 16, 0) != NULL, "alloc");
	kp__tcache *tc = kp__tls_state.tc[0];
	for (unsigned c = 2; c < 6; c++) {
		size_t req = request(c);
		for (int round = 0; round < 12; round++) {
			unsigned n = 8u << (round % 6); /* 8 to 256: the bin grows, row by row, with blocks in it */
			n = n > N ? N : n;
			for (unsigned i = 0; i < n; i++)
				REQUIRE((v[i] = kp_alloc(pool, req, 0)) != NULL, "alloc");
			for (unsigned i = 0; i < n; i++)
				kt_fill(v[i], req, i + c);
			for (unsigned i = 0; i < n; i++) {
				CHECK(kt_verify(v[i], req, i + c) == KT_OK, "class %u block %u", c, i);
				CHECK(kp_free(pool, v[i]) == 0, "free");
			}
		}
		printf("   class %u: bin of %u blocks, %u cached\n", c, tc->bin[c].max, tc->bin[c].count);
		CHECK(tc->bin[c].max > 64, "class %u's bin did not grow (%u)", c, tc->bin[c].max);
	}
	/* every row in use or free is inside keys */
	CHECK(tc->row_used <= sizeof tc->keys / sizeof tc->keys[0], "rows past the end: %zu", tc->row_used);
	CHECK(kt_stat(pool, "integrity.freelist_errors") == 0 && kt_stat(pool, "integrity.corruptions") == 0,
	      "a false alarm after rows moved");
	kp_thread_flush(pool);
	CHECK(kt_stat(pool, "primary.in_use_bytes") < 4096, "blocks left out: %llu",
	      (unsigned long long)kt_stat(pool, "primary.in_use_bytes"));
	kp_destroy(pool);
}

int main(void)
{
	RUN(test_rows_packed);
	RUN(test_rows_move);
	return ktest_summary();
}
