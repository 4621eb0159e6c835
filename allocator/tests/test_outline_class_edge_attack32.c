/*
 * test_outline_class_edge_attack32.c - s32-attm: layout:outline's classes
 * around a page, where s32-mem put OL_CLASS_PAGE_PLUS (4384) off the grid
 * and kp__ol_class_big became a table by (n - 1) >> 5. Every request from
 * 4000 to 4700 bytes, checks on (and off, poison:on):
 *   - kp_usable_size holds the request, and with checks on the request and
 *     its canary fit the class's block (its span's block size: 4096, 4384 or 4608 for the requests near them);
 *   - the class is the smallest of 3840/4096/4384/4608/5120 holding
 *     request + 8 (the canary, either mode);
 *   - a write of exactly the request's bytes frees clean; one byte more
 *     (p[request], the canary's first byte) is an overflow event at free;
 *   - kp_realloc from each size to its neighbours (-1, +1, +8, +16, +33 and
 *     across 4096/4384/4608): the contents kept, the new request's byte
 *     past its end caught (the canary moved), a realloc in place never
 *     giving a room past the class;
 *   - kp_alloc_aligned (64, 512, 4096) of the same sizes: aligned, usable,
 *     the byte past caught;
 *   - KP_ZERO: zero whole after dirty frees of the class.
 * Reproduce: make -C allocator VARIANT=release build/release/tests/test_outline_class_edge_attack32
 * && allocator/build/release/tests/test_outline_class_edge_attack32
 */
#define _GNU_SOURCE 1
#include "ktest.h"
#include "outline.h"

#define LO 4000
#define HI 4700

static const size_t grid[] = {3840, 4096, 4384, 4608, 5120};

static size_t want_class(size_t need)
{
	for (size_t i = 0; i < sizeof grid / sizeof grid[0]; i++)
		if (need <= grid[i])
			return grid[i];
	return 0;
}

static size_t overflow_events(kp_pool *pool, size_t *other)
{
	kp_event ev[64];
	size_t n, ov = 0;
	while ((n = kp_events_drain(pool, ev, 64)) > 0)
		for (size_t i = 0; i < n; i++) {
			if (ev[i].kind == KP_EV_OVERFLOW)
				ov++;
			else if (other && (ev[i].kind == KP_EV_DOUBLE_FREE || ev[i].kind == KP_EV_INVALID_FREE ||
					   ev[i].kind == KP_EV_CORRUPTION || ev[i].kind == KP_EV_USE_AFTER_FREE))
				++*other;
		}
	return ov;
}

/* each size: the class (its span's block size), usable size, the
 * write of exactly n clean, n + 1 caught */
static void sweep(const char *conf, bool checks)
{
	kp_pool *pool = kp_create(conf);
	REQUIRE(pool != NULL, "kp_create(%s): %s", conf, kp_last_error());
	size_t bad_class = 0, bad_usable = 0, clean_refused = 0, missed = 0, first_bad = 0, other = 0;
	for (size_t n = LO; n <= HI; n++) {
		enum { K = 6 };
		unsigned char *p[K];
		for (int i = 0; i < K; i++) {
			p[i] = kp_alloc(pool, n, 0);
			REQUIRE(p[i] != NULL, "kp_alloc(%zu): %s", n, kp_last_error());
		}
		/* the block's size: its span's (the slice map) */
		struct ol_span *pg = kp__ol_map_span(pool->ol->map, (uintptr_t)p[0] >> OL_SLICE_SHIFT);
		REQUIRE(pg != NULL, "request %zu: no span in the slice map", n);
		size_t step = pg->bsize;
		size_t wc = want_class(n + OL_CANARY);
		if (step != wc) {
			if (!bad_class++)
				first_bad = n;
			if (bad_class <= 4 || n % 16 == 0)
				printf("   %s: request %zu: a block of %zu, class %zu wanted; usable %zu\n", conf, n,
				       step, wc, kp_usable_size(pool, p[0]));
		}
		size_t us = kp_usable_size(pool, p[0]);
		if (us < n || (checks && us + OL_CANARY > wc) || (!checks && us > wc)) {
			if (!bad_usable++)
				printf("   %s: kp_usable_size(%zu-byte request) = %zu (class %zu)\n", conf, n, us, wc);
		}
		/* exactly n written: clean */
		memset(p[0], 0xa5, n);
		if (kp_free(pool, p[0]) != KP_OK)
			clean_refused++;
		overflow_events(pool, &other);
		if (checks) {
			/* one byte past the request: the canary's first */
			memset(p[1], 0x5a, n);
			p[1][n] ^= 0xff;
			int r = kp_free(pool, p[1]);
			size_t ov = overflow_events(pool, &other);
			if (r != KP_EOVERFLOW || ov != 1) {
				if (!missed++)
					printf("   %s: request %zu, byte %zu flipped: free %d, %zu overflow events\n",
					       conf, n, n, r, ov);
			}
		} else {
			kp_free(pool, p[1]);
		}
		for (int i = 2; i < K; i++)
			kp_free(pool, p[i]);
		overflow_events(pool, &other);
	}
	printf("   %s: %d sizes; class wrong %zu (first %zu), usable wrong %zu, clean refused %zu, overflow missed "
	       "%zu, other events %zu\n",
	       conf, HI - LO + 1, bad_class, first_bad, bad_usable, clean_refused, missed, other);
	CHECK(bad_class == 0, "%s: %zu sizes in the wrong class (first %zu)", conf, bad_class, first_bad);
	CHECK(bad_usable == 0, "%s: %zu usable sizes wrong", conf, bad_usable);
	CHECK(clean_refused == 0, "%s: %zu clean frees refused", conf, clean_refused);
	CHECK(missed == 0, "%s: %zu overflows by one byte missed", conf, missed);
	CHECK(other == 0, "%s: %zu other integrity events", conf, other);
	kp_destroy(pool);
}

static void test_sweep_on(void)
{
	sweep("daemon:off,layout:outline,seed:1", true);
}

static void test_sweep_off(void)
{
	sweep("daemon:off,layout:outline,checks:off,seed:2", false);
}

static void test_sweep_poison(void)
{
	sweep("daemon:off,layout:outline,poison:on,seed:3", true);
}

/* realloc from n to its neighbours: contents kept, the byte past the new
 * request caught at the free */
static void test_realloc_edges(void)
{
	KT_POOL(pool, "daemon:off,layout:outline,seed:4");
	static const long dn[] = {-1, 1, 8, 16, 33, -300, 300};
	static const size_t edges[] = {4088, 4089, 4376, 4377, 4600, 4601};
	size_t lost = 0, missed = 0, other = 0, tries = 0;
	for (size_t n = LO; n <= HI; n += 7) {
		for (size_t j = 0; j < sizeof dn / sizeof dn[0] + sizeof edges / sizeof edges[0]; j++) {
			size_t m = j < sizeof dn / sizeof dn[0] ? (size_t)((long)n + dn[j])
								: edges[j - sizeof dn / sizeof dn[0]];
			unsigned char *p = kp_alloc(pool, n, 0);
			REQUIRE(p != NULL, "kp_alloc(%zu)", n);
			kt_fill(p, n, n * 131 + j);
			unsigned char *q = kp_realloc(pool, p, m, 0);
			REQUIRE(q != NULL, "kp_realloc(%zu -> %zu): %s", n, m, kp_last_error());
			size_t keep = m < n ? m : n;
			if (kt_verify_from(q, p, keep, n * 131 + j) != KT_OK && !lost++)
				printf("   realloc %zu -> %zu: contents lost\n", n, m);
			size_t us = kp_usable_size(pool, q);
			CHECK(us >= m && us + OL_CANARY <=
						 (q == p ? want_class(n + OL_CANARY) : want_class(m + OL_CANARY)),
			      "realloc %zu -> %zu: usable %zu", n, m, us);
			q[m] ^= 0xff;
			int r = kp_free(pool, q);
			size_t ov = overflow_events(pool, &other);
			tries++;
			if ((r != KP_EOVERFLOW || ov != 1) && !missed++)
				printf("   realloc %zu -> %zu (%s): byte %zu flipped: free %d, %zu events\n", n, m,
				       q == p ? "in place" : "moved", m, r, ov);
		}
	}
	printf("   %zu reallocs: contents lost %zu, overflow missed %zu, other events %zu\n", tries, lost, missed,
	       other);
	CHECK(lost == 0 && missed == 0 && other == 0, "realloc edges: lost %zu missed %zu other %zu", lost, missed,
	      other);
}

static void test_aligned_edges(void)
{
	KT_POOL(pool, "daemon:off,layout:outline,seed:5");
	static const size_t al[] = {64, 512, 4096};
	size_t misal = 0, missed = 0, other = 0, small = 0;
	for (size_t n = LO; n <= HI; n += 3)
		for (size_t a = 0; a < 3; a++) {
			unsigned char *p = kp_alloc_aligned(pool, n, al[a], 0);
			REQUIRE(p != NULL, "kp_alloc_aligned(%zu, %zu): %s", n, al[a], kp_last_error());
			misal += ((uintptr_t)p & (al[a] - 1)) != 0;
			small += kp_usable_size(pool, p) < n;
			memset(p, 0x33, n);
			if (KT_ASAN) { /* alloc.c's aligned blocks poison past the request: ASan stops the write */
				CHECK(kp_free(pool, p) == KP_OK, "aligned free");
				continue;
			}
			p[n] ^= 0xff;
			int r = kp_free(pool, p);
			size_t ov = overflow_events(pool, &other);
			if ((r != KP_EOVERFLOW || ov != 1) && !missed++)
				printf("   aligned %zu/%zu at %p: byte past flipped: free %d, %zu events\n", n, al[a],
				       (void *)p, r, ov);
		}
	printf("   aligned: misaligned %zu, usable short %zu, overflow missed %zu, other %zu\n", misal, small, missed,
	       other);
	CHECK(misal == 0 && small == 0 && missed == 0 && other == 0, "aligned edges");
}

/* KP_ZERO of each size after the class's blocks were dirtied and freed */
static void test_zero_edges(void)
{
	KT_POOL(pool, "daemon:off,layout:outline,seed:6");
	size_t nonzero = 0;
	for (size_t n = LO; n <= HI; n += 5) {
		enum { K = 8 };
		unsigned char *p[K];
		for (int i = 0; i < K; i++) {
			p[i] = kp_alloc(pool, n, 0);
			REQUIRE(p[i], "alloc");
			memset(p[i], 0xee, kp_usable_size(pool, p[i]));
		}
		for (int i = 0; i < K; i++)
			kp_free(pool, p[i]);
		for (int i = 0; i < K; i++) {
			p[i] = kp_alloc(pool, n, KP_ZERO);
			REQUIRE(p[i], "alloc zero");
			for (size_t b = 0; b < n; b++)
				if (p[i][b]) {
					if (!nonzero++)
						printf("   KP_ZERO %zu: byte %zu is 0x%02x\n", n, b, p[i][b]);
					break;
				}
		}
		for (int i = 0; i < K; i++)
			kp_free(pool, p[i]);
	}
	CHECK(nonzero == 0, "%zu KP_ZERO blocks not zero", nonzero);
}

int main(void)
{
	RUN(test_sweep_on);
	RUN(test_sweep_off);
	RUN(test_sweep_poison);
	RUN(test_realloc_edges);
	RUN(test_aligned_edges);
	RUN(test_zero_edges);
	return ktest_summary();
}
