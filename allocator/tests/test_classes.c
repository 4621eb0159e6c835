/*
 * test_classes.c - the size classes: every small request gets the smallest
 * class that holds it, and no class wastes more than an eighth of what it
 * holds above 1 KiB.
 *
 * Why the bound: a class table 25% apart (4 per doubling) put sqlite3's page
 * cache blocks (malloc(4368), 4392 bytes with header and canary) in 5120-byte
 * blocks and its 4096 + 8 buffers in the same: 17-24% of its 34 MB peak
 * lost to rounding, where glibc loses 16 bytes a block (`kpool bench
 * --programs workloads/programs/sqlite3.yaml`: 1.61x glibc's peak RSS).
 * mimalloc and jemalloc's small classes are 8 per doubling, 12.5% apart.
 */
#define _GNU_SOURCE 1
/* Tests the inline primary's segments, spans and units (primary.c): every pool layout:inline (ktest.h, KT_LAYOUT_INLINE). */
#define KT_LAYOUT_INLINE 1
#include "ktest.h"

#include "internal.h"

static void test_smallest_class_that_holds(void)
{
	unsigned bad = 0;
	size_t first_bad = 0;
	for (unsigned c = 1; c < KP_NCLASS; c++)
		CHECK(kp__class_size[c] > kp__class_size[c - 1] && kp__class_size[c] % KP_HDR == 0,
		      "class %u: %u after %u", c, kp__class_size[c], kp__class_size[c - 1]);
	CHECK(kp__class_size[KP_NCLASS - 1] == KP_SMALL_MAX, "the last class is KP_SMALL_MAX");
	CHECK(kp__class_size[KP_CLASS_PAGE_IDX] == KP_CLASS_PAGE_PLUS, "class %u is %u, not KP_CLASS_PAGE_PLUS",
	      KP_CLASS_PAGE_IDX, kp__class_size[KP_CLASS_PAGE_IDX]);
	for (size_t need = KP_HDR + 1; need <= KP_SMALL_MAX; need++) {
		unsigned c = kp__class_of(need);
		bool ok = c < KP_NCLASS && kp__class_size[c] >= need && (c == 0 || kp__class_size[c - 1] < need);
		if (!ok && !bad++)
			first_bad = need;
	}
	CHECK(bad == 0, "%u sizes get a class that is not the smallest that holds them (first: %zu)", bad, first_bad);
}

static void test_rounding_bounded(void)
{
	unsigned bad = 0;
	size_t worst_need = 0;
	for (size_t need = 1025; need <= KP_SMALL_MAX; need++) {
		size_t got = kp__class_size[kp__class_of(need)];
		if (got > need + need / 8 && !bad++)
			worst_need = need;
	}
	CHECK(bad == 0, "%u sizes above 1 KiB rounded up by more than an eighth (first: %zu -> %u)", bad, worst_need,
	      worst_need ? kp__class_size[kp__class_of(worst_need)] : 0);
}

/* The same through the public API, as a program sees it: 1000 blocks of
 * sqlite3's two common sizes, the pool's bytes in use against the bytes
 * asked for. */
static void test_sqlite_sizes_in_use(void)
{
	static const size_t sizes[] = {4368, 4104};
	for (unsigned k = 0; k < 2; k++) {
		kp_pool *pool = kp_create("daemon:off");
		CHECK(pool != NULL, "kp_create");
		if (!pool)
			return;
		enum { N = 1000 };
		static void *p[N];
		for (int i = 0; i < N; i++)
			p[i] = kp_alloc(pool, sizes[k], 0);
		int64_t in_use = kt_stat(pool, "primary.in_use_bytes");
		int64_t asked = (int64_t)(N * sizes[k]);
		printf("   %zu-byte blocks: %lld bytes in use for %lld asked (%.3fx)\n", sizes[k], (long long)in_use,
		       (long long)asked, (double)in_use / (double)asked);
		CHECK(in_use <= asked + asked / 8, "%zu-byte blocks: %lld bytes in use for %lld asked", sizes[k],
		      (long long)in_use, (long long)asked);
		for (int i = 0; i < N; i++)
			kp_free(pool, p[i]);
		kp_destroy(pool);
	}
}

/* sqlite3's page cache in bulk (7,702 blocks of 4368 bytes at its peak under
 * the preload): the units their spans take, per block, at most 1/32 over
 * what a block needs (4368 + header + canary = 4392). It was 4681 (6.6%):
 * the 4608-byte class's one-unit spans of 14 blocks (1 KiB of tail), where a
 * 4480-byte class in a 5-unit span of 73 blocks costs 4489 a block. */
static void test_page_plus_header_in_bulk(void)
{
	enum { N = 2000 };
	static void *p[N];
	static const kp__span *seen[N];
	KT_POOL(pool, "daemon:off,prefault:off,tcache_bytes:0,seed:3");
	size_t need = 4368 + KP_HDR + KP_CANARY, units = 0;
	unsigned nspans = 0, blocks = 0;
	for (int i = 0; i < N; i++) {
		p[i] = kp_alloc(pool, 4368, 0);
		REQUIRE(p[i] != NULL, "kp_alloc(4368): %s", kp_last_error());
	}
	/* the spans of the second half: past the class's first spans */
	for (int i = N / 2; i < N; i++) {
		kp__seg *s = (kp__seg *)((uintptr_t)p[i] & ~(uintptr_t)(KP_SEG_SIZE - 1));
		unsigned u = (unsigned)(((uintptr_t)p[i] - (uintptr_t)s) >> KP_UNIT_SHIFT);
		const kp__span *sp = &s->span[s->span[u].head];
		unsigned k = 0;
		while (k < nspans && seen[k] != sp)
			k++;
		if (k < nspans)
			continue;
		seen[nspans++] = sp;
		units += sp->units;
		blocks += sp->nblocks;
	}
	double per = (double)(units * KP_UNIT_SIZE) / (double)blocks;
	printf("   4368-byte blocks: %u spans, %.0f bytes of span a block (needs %zu)\n", nspans, per, need);
	CHECK(per <= (double)need * (1.0 + 1.0 / 32), "%.0f bytes of span a block, for %zu", per, need);
	for (int i = 0; i < N; i++)
		kp_free(pool, p[i]);
	kp_destroy(pool);
}

/* The same blocks against glibc's cost: it gives malloc(4368) a 4384-byte
 * chunk, kpool's 4480-byte class 4489 bytes of span a block (2.3% more: 0.6
 * MiB of sqlite3's 33 MiB page cache, its peak 1.10x glibc's). Within 1/64
 * of the need (4392), 4460: a class of 4400 in five-unit spans of 74 blocks
 * costs 4428. */
static void test_page_plus_tight(void)
{
	enum { N = 2000 };
	static void *p[N];
	KT_POOL(pool, "daemon:off,prefault:off,tcache_bytes:0,seed:4");
	size_t need = 4368 + KP_HDR + KP_CANARY;
	for (int i = 0; i < N; i++) {
		p[i] = kp_alloc(pool, 4368, 0);
		REQUIRE(p[i] != NULL, "kp_alloc(4368): %s", kp_last_error());
	}
	kp__seg *s = (kp__seg *)((uintptr_t)p[N - 1] & ~(uintptr_t)(KP_SEG_SIZE - 1));
	unsigned u = (unsigned)(((uintptr_t)p[N - 1] - (uintptr_t)s) >> KP_UNIT_SHIFT);
	const kp__span *sp = &s->span[s->span[u].head];
	double per = (double)((size_t)sp->units * KP_UNIT_SIZE) / (double)sp->nblocks;
	printf("   4368-byte blocks in bulk: %u in %u units, %.0f bytes of span a block (needs %zu)\n", sp->nblocks,
	       sp->units, per, need);
	CHECK(per <= (double)need * (1.0 + 1.0 / 64), "%.0f bytes of span a block, for %zu", per, need);
	for (int i = 0; i < N; i++)
		kp_free(pool, p[i]);
	kp_destroy(pool);
}

int main(void)
{
	RUN(test_smallest_class_that_holds);
	RUN(test_rounding_bounded);
	RUN(test_sqlite_sizes_in_use);
	RUN(test_page_plus_header_in_bulk);
	RUN(test_page_plus_tight);
	return ktest_summary();
}
