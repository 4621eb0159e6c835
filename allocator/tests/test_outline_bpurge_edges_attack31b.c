/*
 * test_outline_bpurge_edges_attack31b.c - s31-att: the page ranges
 * purge_blocks (outline.c, branch s31-mem) gives back, for every class of a
 * page or more (4 KiB - 64 KiB, the odd ones whose blocks straddle pages:
 * 4,608, 5,120, 7,168, 9,216, ...). Per class, two spans filled and retired
 * and a third in hand; every block written (kt_fill) with a request drawn in
 * its class, a third of them moved by kp_realloc in place so that the
 * canary sits at a page's first bytes; then of the two listed spans' blocks
 * a varied pattern freed (single free blocks between live ones, runs of
 * two to five, the span's first and last blocks), and the daemon's passes
 * at 0, 25 and 50 ms (daemon:off, step_clock:on). Asserted:
 *   - every page of a live block's request and canary stays resident, and
 *     the block keeps its bytes; its free (the canary) is accepted, no
 *     event;
 *   - every whole page inside a run of free blocks is given back (mincore);
 *   - the blocks taken again with KP_ZERO read zero whole.
 * checks:on and checks:off. Held on s31-mem a08a69c.
 */
#define _GNU_SOURCE
#include "ktest.h"

#include "outline.h"

#define MAXB 400

struct b {
	unsigned char *p;
	size_t n;
	bool live;
};
static struct b blk[MAXB];

static struct ol_span *span_of(kp_pool *pool, const void *p)
{
	return kp__ol_map_span(pool->ol->map, (uintptr_t)p >> OL_SLICE_SHIFT);
}

static uint64_t mix(uint64_t x)
{
	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdull;
	x ^= x >> 33;
	return x;
}

/* whether block i of its span is freed: singles, runs, both ends */
static bool freed(uint32_t i, uint32_t nb, uint64_t salt)
{
	if (i == 0 || i == nb - 1)
		return true;
	uint64_t h = mix(i / 3 + salt);
	switch (h % 4) {
	case 0: return i % 2; /* alternating: single free blocks between live ones */
	case 1: return true;  /* a run */
	case 2: return i % 3 != 1;
	default: return false;
	}
}

static unsigned fails_live, fails_pages, fails_zero, fails_free;

static void one_class(const char *conf, uint32_t cls, bool checks)
{
	kp_pool *pool = kp_create(conf);
	REQUIRE(pool, "kp_create: %s", kp_last_error());
	/* the class below (outline.c's class_size: 8 a doubling from 1 KiB,
	 * and OL_CLASS_PAGE_PLUS off the grid) */
	uint32_t prev = cls <= 4096		    ? 3840
			: cls == OL_CLASS_PAGE_PLUS ? 4096
			: cls == 4608		    ? OL_CLASS_PAGE_PLUS
			: cls <= 8192		    ? cls - 512
			: cls <= 16384		    ? cls - 1024
			: cls <= 32768		    ? cls - 2048
						    : cls - 4096;
	uint64_t s = cls;
	unsigned n = 0;
	struct ol_span *sp[3] = {NULL, NULL, NULL}, *last = NULL;
	unsigned nsp = 0;
	while (nsp < 3) {
		REQUIRE(n < MAXB, "three spans of class %u in %u blocks", cls, MAXB);
		size_t req = prev - 8 + 1 + kt_rand(&s) % (cls - prev); /* in the class with its canary */
		unsigned char *p = kp_alloc(pool, req, 0);
		REQUIRE(p, "kp_alloc(%zu): %s", req, kp_last_error());
		REQUIRE(span_of(pool, p)->bsize == cls, "class %u for %zu B (got %u)", cls, req,
			span_of(pool, p)->bsize);
		if (n % 3 == 0 && checks) { /* the canary at a page's start, if one falls in the room */
			size_t room = cls - 8;
			uintptr_t pg = ((uintptr_t)p + room) & ~(uintptr_t)4095;
			if (pg >= (uintptr_t)p + room / 2 && pg > (uintptr_t)p) {
				unsigned char *q = kp_realloc(pool, p, pg - (uintptr_t)p, 0);
				REQUIRE(q == p, "kp_realloc in place");
				req = pg - (uintptr_t)p;
			}
		}
		blk[n] = (struct b){p, req, true};
		kt_fill(p, req, n);
		struct ol_span *pg = span_of(pool, p);
		if (pg != last) {
			/* a heap's first span of the class may be cut short to its
			 * segment's tail: counted too */
			if (nsp < 3)
				sp[nsp++] = pg;
			last = pg;
		}
		n++;
	}
	/* sp[0], sp[1] full and retired (the allocation that made sp[2] retired
	 * sp[1]); free the pattern in both */
	for (unsigned i = 0; i < n; i++) {
		struct ol_span *pg = span_of(pool, blk[i].p);
		if (pg != sp[0] && pg != sp[1])
			continue;
		uint32_t idx = (uint32_t)((blk[i].p - pg->start) / pg->bsize);
		if (freed(idx, pg->nblocks, cls)) {
			REQUIRE(kp_free(pool, blk[i].p) == KP_OK, "kp_free");
			blk[i].live = false;
		}
	}
	kp_daemon_step(pool, 0);
	kp_daemon_step(pool, 25);
	kp_daemon_step(pool, 25);
	/* live: bytes and pages */
	size_t lbad = 0, lmiss = 0;
	for (unsigned i = 0; i < n; i++)
		if (blk[i].live) {
			lbad += kt_verify(blk[i].p, blk[i].n, i) != KT_OK;
			lmiss += kt_not_resident(blk[i].p,
						 blk[i].n + (checks ? 8 : 0)); /* checks:off: no canary written */
		}
	/* free runs of the listed spans: their inner pages */
	size_t pages = 0, miss = 0;
	for (int k = 0; k < 2; k++) {
		struct ol_span *pg = sp[k];
		uint8_t *run = NULL;
		for (uint32_t i = 0; i <= pg->nblocks; i++) {
			bool f = i < pg->nblocks && freed(i, pg->nblocks, cls);
			uint8_t *b = pg->start + (size_t)i * pg->bsize;
			if (f && !run)
				run = b;
			if (f || !run)
				continue;
			uintptr_t lo = ((uintptr_t)run + 4095) & ~(uintptr_t)4095, hi = (uintptr_t)b & ~(uintptr_t)4095;
			if (hi > lo) {
				pages += (hi - lo) / 4096;
				miss += kt_not_resident((void *)lo, hi - lo);
			}
			run = NULL;
		}
	}
	int64_t ev0 = kt_stat(pool, "integrity.overflows") + kt_stat(pool, "integrity.double_frees");
	size_t nfree = 0, fbad = 0;
	for (unsigned i = 0; i < n; i++)
		if (blk[i].live)
			fbad += kp_free(pool, blk[i].p) != KP_OK;
		else
			nfree++;
	int64_t ev = kt_stat(pool, "integrity.overflows") + kt_stat(pool, "integrity.double_frees") - ev0;
	/* taken again zeroed */
	size_t zbad = 0;
	for (unsigned i = 0; i < n; i++) {
		size_t req = cls - 8 - kt_rand(&s) % 8;
		unsigned char *p = kp_alloc(pool, req, KP_ZERO);
		REQUIRE(p, "kp_alloc zeroed: %s", kp_last_error());
		for (size_t k = 0; k < req; k++)
			if (p[k]) {
				zbad++;
				break;
			}
		blk[i].p = p;
	}
	for (unsigned i = 0; i < n; i++)
		kp_free(pool, blk[i].p);
	if (lbad || lmiss || miss != pages || zbad || fbad || ev)
		printf("   class %u (%s): %u blocks, spans of %u/%u; live changed %zu, live pages gone %zu; free-run "
		       "pages "
		       "%zu of %zu given back; zeroed not zero %zu; frees refused %zu, events %lld\n",
		       cls, checks ? "checks" : "no checks", n, sp[0]->nblocks, sp[1]->nblocks, lbad, lmiss, miss,
		       pages, zbad, fbad, (long long)ev);
	fails_live += lbad || lmiss;
	fails_pages += miss != pages || pages == 0;
	fails_zero += zbad != 0;
	fails_free += fbad || ev;
	kp_destroy(pool);
}

/* 4384: OL_CLASS_PAGE_PLUS (outline.h) */
static const uint32_t classes[] = {4096,  4384,	 4608,	5120,  5632,  6144,  6656,  7168,  7680,  8192,	 9216,	10240,
				   11264, 12288, 13312, 14336, 15360, 16384, 18432, 20480, 22528, 24576, 26624, 28672,
				   30720, 32768, 36864, 40960, 45056, 49152, 53248, 57344, 61440, 65536};

static void run_all(const char *conf, bool checks)
{
	fails_live = fails_pages = fails_zero = fails_free = 0;
	for (size_t k = 0; k < sizeof classes / sizeof classes[0]; k++)
		one_class(conf, classes[k], checks);
	printf("   %zu classes: %u with a live block changed or purged, %u with free-run pages kept, %u with a zeroed "
	       "block not zero, %u with a refused free or an event\n",
	       sizeof classes / sizeof classes[0], fails_live, fails_pages, fails_zero, fails_free);
	CHECK(fails_live == 0, "%u classes: a live block's bytes or pages lost", fails_live);
	CHECK(fails_pages == 0, "%u classes: free-run pages not given back", fails_pages);
	CHECK(fails_zero == 0, "%u classes: a zeroed block not zero", fails_zero);
	CHECK(fails_free == 0, "%u classes: a live block's free refused or an event", fails_free);
}

static void test_checks_on(void)
{
	run_all("layout:outline,daemon:off,step_clock:on,prefault:off,seed:11", true);
}

static void test_checks_off(void)
{
	run_all("layout:outline,daemon:off,step_clock:on,prefault:off,checks:off,seed:12", false);
}

int main(void)
{
	RUN(test_checks_on);
	RUN(test_checks_off);
	return ktest_summary();
}
