/*
 * test_bad_input_attack4.c - bad input to kp_free, kp_realloc and
 * kp_usable_size is refused with an error and an event, never a crash,
 * and nothing live is lost (sess16-hA4's attacks that held):
 *  - interior pointers, at every 16 bytes of the first KiB and past it, of
 *    small, large, huge, aligned and backup blocks, and pointers into a
 *    segment's header unit, a huge block's first pages, the backup's guard;
 *  - double frees of each kind of block;
 *  - another pool's blocks (the wrong pool), and the blocks of a pool
 *    destroyed since, while a new pool maps segments where they were;
 *  - sizes of SIZE_MAX and just past KP_REQ_MAX, with and without
 *    alignment, and a realloc to them (the block stays as it was);
 *  - an aligned block's redirect header rewritten (its key known: tag ^
 *    meta) to every other offset back: never frees another block;
 *  - a huge block's header rewritten (key known) with requests past its
 *    mapping: usable size stays inside the mapping, realloc and free
 *    refuse it.
 * After each, every live block still holds its bytes and frees with rc 0.
 */
#define _GNU_SOURCE 1
#include "ktest.h"

#include "internal.h"

#include <errno.h>
#include <stddef.h>

#define NB 12

typedef struct blk {
	char *p;
	size_t n;
	unsigned char fill;
} blk;

static int64_t bad_events(kp_pool *pool)
{
	return kt_stat(pool, "integrity.corruptions") + kt_stat(pool, "integrity.invalid_frees") +
	       kt_stat(pool, "integrity.double_frees");
}

static bool intact(const blk *b)
{
	for (size_t i = 0; i < b->n; i++)
		if ((unsigned char)b->p[i] != b->fill)
			return false;
	return true;
}

/* One block of each kind; b[NB - 1] the backup's (a critical scope, a
 * request past primary_max: the pools below are made with BK_CONF). */
#define BK_CONF "primary_initial:8m,primary_max:24m,backup:32m,prefault:off,daemon:off"
static int make_blocks(kp_pool *pool, blk *b)
{
	static const size_t sizes[] = {1, 40, 200, 1000, 5000, 40000, 150000, 3u << 20, 6u << 20};
	int n = 0;
	for (unsigned i = 0; i < sizeof sizes / sizeof *sizes; i++, n++) {
		b[n].n = sizes[i];
		b[n].p = kp_alloc(pool, sizes[i], 0);
	}
	b[n].n = 100;
	b[n++].p = kp_alloc_aligned(pool, 100, 256, 0);
	b[n].n = 5000;
	b[n++].p = kp_alloc_aligned(pool, 5000, 4096, 0);
	uint64_t tok = kp_critical_token(pool);
	kp_critical_enter(pool, tok);
	b[n].n = (size_t)20 << 20; /* past primary_max: the backup serves it */
	b[n].p = kp_alloc(pool, b[n].n, KP_CRITICAL);
	n++;
	kp_critical_exit(pool);
	for (int i = 0; i < n; i++) {
		b[i].fill = (unsigned char)(0x31 + i);
		if (b[i].p)
			memset(b[i].p, b[i].fill, b[i].n);
	}
	return n;
}

static void test_interior_and_double(void)
{
	/* layout:inline: the odd pointers below are its segment header unit's
	 * (a layout:outline segment starts with a block: test_outline_integrity) */
	kp_pool *pool = kp_create("layout:inline," BK_CONF);
	REQUIRE(pool, "kp_create: %s", kp_last_error());
	blk b[NB];
	int n = make_blocks(pool, b);
	for (int i = 0; i < n; i++)
		REQUIRE(b[i].p, "block %d", i);
	REQUIRE(kp__backup_owns(&pool->backup, b[NB - 1].p), "the critical block is the backup's");
	int64_t ev0 = bad_events(pool);
	unsigned accepted = 0, tried = 0;
	for (int i = 0; i < n; i++) {
		size_t span = b[i].n < 1024 ? b[i].n : 1024;
		for (size_t off = 1; off < span + 64; off += (off < 32 ? 1 : 16)) {
			char *q = b[i].p + off;
			tried++;
			if (kp_free(pool, q) == 0) {
				accepted++;
				printf("   kp_free(block %d + %zu) accepted\n", i, off);
			}
			if (kp_usable_size(pool, q) != 0)
				accepted++;
		}
		char *far = b[i].p + b[i].n / 2 * 2 / 16 * 16 + 16; /* past the middle */
		if (far < b[i].p + b[i].n && kp_free(pool, far) == 0)
			accepted++;
	}
	/* The segment header unit, a huge block's first pages, the backup's guard. */
	char *seg = (char *)((uintptr_t)b[2].p & ~(uintptr_t)(KP_SEG_SIZE - 1));
	char *huge = (char *)((uintptr_t)b[8].p & ~(uintptr_t)(KP_SEG_SIZE - 1));
	char *odd[] = {seg,
		       seg + 16,
		       seg + 4096,
		       seg + KP_UNIT_SIZE,
		       huge,
		       huge + 16,
		       huge + KP_PAGE,
		       huge + 2 * KP_PAGE - KP_HDR,
		       pool->backup.base - 16,
		       pool->backup.base + pool->backup.region,
		       (char *)16,
		       (char *)-16,
		       (char *)pool};
	for (unsigned i = 0; i < sizeof odd / sizeof *odd; i++, tried++)
		if (kp_free(pool, odd[i]) == 0 || kp_usable_size(pool, odd[i]) != 0) {
			accepted++;
			printf("   odd pointer %u (%p) accepted\n", i, (void *)odd[i]);
		}
	CHECK(accepted == 0, "%u of %u interior or foreign pointers accepted", accepted, tried);
	CHECK(bad_events(pool) > ev0, "no event for the refused pointers");
	for (int i = 0; i < n; i++)
		CHECK(intact(&b[i]), "block %d (%zu bytes) lost its bytes", i, b[i].n);
	/* realloc of an interior pointer: refused, the block as it was */
	errno = 0;
	CHECK(kp_realloc(pool, b[3].p + 16, 2000, 0) == NULL && errno == EINVAL, "realloc of an interior pointer");
	CHECK(intact(&b[3]), "block 3 after a refused realloc");
	/* every block frees once, then is a double free */
	for (int i = 0; i < n; i++)
		CHECK(kp_free(pool, b[i].p) == 0, "free of block %d", i);
	int64_t df0 = kt_stat(pool, "integrity.double_frees");
	for (int i = 0; i < n; i++) {
		int rc = kp_free(pool, b[i].p);
		CHECK(rc == KP_EDOUBLEFREE || rc == KP_ENOTOURS || rc == KP_ECORRUPT, "second free of block %d: %d", i,
		      rc);
		CHECK(kp_usable_size(pool, b[i].p) == 0, "usable size of freed block %d", i);
		CHECK(kp_realloc(pool, b[i].p, 64, 0) == NULL, "realloc of freed block %d", i);
	}
	CHECK(kt_stat(pool, "integrity.double_frees") > df0, "no double-free event");
	kp_destroy(pool);
}

static void test_wrong_and_destroyed_pool(void)
{
	kp_pool *a = kp_create(BK_CONF);
	kp_pool *b = kp_create(BK_CONF);
	REQUIRE(a && b, "kp_create");
	blk x[NB], y[NB];
	int n = make_blocks(a, x);
	int m = make_blocks(b, y);
	int64_t ev0 = bad_events(b);
	for (int i = 0; i < n; i++)
		CHECK(kp_free(b, x[i].p) < 0 && kp_usable_size(b, x[i].p) == 0, "pool b took pool a's block %d", i);
	CHECK(bad_events(b) > ev0, "no event in b");
	for (int i = 0; i < n; i++)
		CHECK(intact(&x[i]), "a's block %d lost its bytes", i);
	kp_destroy(a);
	/* a's pointers, stale now, freed into b while b grows over a's old space */
	void *more[64];
	for (int round = 0; round < 4; round++) {
		for (int i = 0; i < 64; i++)
			more[i] = kp_alloc(b, (size_t)(i + 1) * 3000, 0);
		for (int i = 0; i < n; i++) {
			CHECK(kp_free(b, x[i].p) < 0, "b took destroyed a's block %d (round %d)", i, round);
			CHECK(kp_usable_size(b, x[i].p) == 0, "usable size of destroyed a's block %d", i);
		}
		for (int i = 0; i < 64; i++)
			CHECK(!more[i] || kp_free(b, more[i]) == 0, "free of b's block");
	}
	for (int i = 0; i < m; i++) {
		CHECK(intact(&y[i]), "b's block %d lost its bytes", i);
		CHECK(kp_free(b, y[i].p) == 0, "free of b's block %d", i);
	}
	kp_destroy(b);
}

static void test_sizes(void)
{
	kp_pool *pool = kp_create("primary_initial:4m,backup:1m,daemon:off");
	REQUIRE(pool, "kp_create");
	char *p = kp_alloc(pool, 100, 0);
	REQUIRE(p, "alloc");
	memset(p, 0x77, 100);
	blk keep = {p, 100, 0x77};
	int64_t bs0 = kt_stat(pool, "integrity.bad_sizes");
	size_t bad[] = {SIZE_MAX, SIZE_MAX - 15, SIZE_MAX - 4096, KP_REQ_MAX + 1, (size_t)1 << 63};
	for (unsigned i = 0; i < sizeof bad / sizeof *bad; i++) {
		errno = 0;
		CHECK(kp_alloc(pool, bad[i], 0) == NULL && errno != 0, "kp_alloc(%zu)", bad[i]);
		CHECK(kp_alloc(pool, bad[i], KP_ZERO) == NULL, "kp_alloc(%zu, zero)", bad[i]);
		CHECK(kp_alloc_aligned(pool, bad[i], 4096, 0) == NULL, "kp_alloc_aligned(%zu, 4096)", bad[i]);
		CHECK(kp_realloc(pool, p, bad[i], 0) == NULL, "kp_realloc(p, %zu)", bad[i]);
		CHECK(intact(&keep) && kp_usable_size(pool, p) == 100, "the block after a refused realloc");
	}
	/* Just under the bound: refused by the OS (or served), never a crash. */
	void *q = kp_alloc_aligned(pool, KP_REQ_MAX, 4096, 0);
	CHECK(q == NULL, "2^46 bytes served");
	q = kp_alloc(pool, KP_REQ_MAX - 64, 0);
	CHECK(q == NULL, "2^46 - 64 bytes served");
	CHECK(kt_stat(pool, "integrity.bad_sizes") > bs0, "no bad-size event");
	CHECK(kp_free(pool, p) == 0, "free");
	kp_destroy(pool);
}

/* An aligned block's redirect, rewritten with its own key to every other
 * offset back (a multiple of 16 up to 4096): the free is refused each time
 * and no other block is freed. */
static void test_redirect_rewritten(void)
{
	kp_pool *pool = kp_create("primary_initial:8m,backup:1m,daemon:off");
	REQUIRE(pool, "kp_create");
	for (size_t align = 32; align <= 4096; align *= 2) {
		blk nb[8];
		for (int i = 0; i < 8; i++) {
			nb[i].n = 3000;
			nb[i].fill = (unsigned char)(0x40 + i);
			nb[i].p = kp_alloc(pool, 3000, 0);
			memset(nb[i].p, nb[i].fill, 3000);
		}
		char *q = kp_alloc_aligned(pool, 200, align, 0);
		REQUIRE(q, "aligned %zu", align);
		char *h = q - KP_HDR;
		uint64_t meta = kt_raw_get(h + 8);
		if (KP_META_CLS(meta) != KP_CLS_ALIGNED) { /* placed at the block's start: no redirect */
			CHECK(kp_free(pool, q) == 0, "free");
			for (int i = 0; i < 8; i++)
				kp_free(pool, nb[i].p);
			continue;
		}
		uint64_t key = kt_raw_get(h) ^ meta;
		size_t real = KP_META_REQ(meta);
		unsigned accepted = 0;
		for (size_t off = KP_HDR; off <= KP_ALIGN_MAX + 64; off += KP_HDR) {
			if (off == real)
				continue;
			uint64_t m = kp__meta(off, KP_CLS_ALIGNED, KP_ST_ALLOC);
			kt_raw_put(h + 8, m);
			kt_raw_put(h, key ^ m);
			if (kp_free(pool, q) == 0) {
				accepted++;
				printf("   align %zu: redirect offset %zu (real %zu) accepted\n", align, off, real);
			}
		}
		CHECK(accepted == 0, "align %zu: %u rewritten redirects accepted", align, accepted);
		kt_raw_put(h + 8, meta);
		kt_raw_put(h, key ^ meta);
		CHECK(kp_free(pool, q) == 0, "align %zu: the real redirect frees", align);
		for (int i = 0; i < 8; i++) {
			CHECK(intact(&nb[i]), "align %zu: neighbour %d lost its bytes", align, i);
			CHECK(kp_free(pool, nb[i].p) == 0, "align %zu: neighbour %d frees", align, i);
		}
	}
	kp_destroy(pool);
}

/* A huge block's header rewritten (its key is tag ^ meta) with requests
 * past its mapping: kp_usable_size says at most the mapping's payload,
 * realloc and free stay inside it. */
static void test_huge_request_rewritten(void)
{
	kp_pool *pool = kp_create("primary_initial:4m,backup:1m,daemon:off");
	REQUIRE(pool, "kp_create");
	size_t reqs[] = {(size_t)8 << 20, ((size_t)1 << 47) - 1, ((size_t)1 << 48) - 1};
	for (unsigned i = 0; i < sizeof reqs / sizeof *reqs; i++) {
		char *p = kp_alloc(pool, 5u << 20, 0);
		REQUIRE(p, "huge");
		char *h = p - KP_HDR;
		uint64_t meta = kt_raw_get(h + 8), key = kt_raw_get(h) ^ meta;
		uint64_t m = kp__meta(reqs[i], KP_CLS_HUGE, KP_ST_ALLOC);
		kt_raw_put(h + 8, m);
		kt_raw_put(h, key ^ m);
		kp__seg *s = kp__pagemap_get(p);
		size_t cap = s->size - 2 * KP_PAGE;
		size_t u = kp_usable_size(pool, p);
		CHECK(u <= cap, "usable %zu past the mapping's %zu", u, cap);
		/* refused as a small block's is (test_huge_realloc_attack20): it
		 * was resized and its header made sound again, nothing reported */
		errno = 0;
		char *q = kp_realloc(pool, p, 7u << 20, 0);
		CHECK(q == NULL && errno == EINVAL, "realloc of a damaged huge header served");
		if (q)
			kp_free(pool, q);
	}
	kp_destroy(pool);
}

int main(void)
{
	RUN(test_interior_and_double);
	RUN(test_wrong_and_destroyed_pool);
	RUN(test_sizes);
	RUN(test_redirect_rewritten);
	RUN(test_huge_request_rewritten);
	return ktest_summary();
}
