/*
 * test_outline_meta.c - layout:outline's metadata costs memory in proportion
 * to the blocks a span has handed out, not to the span's size: a span's
 * records (8 bytes a block) and free stack (2 bytes a block) are touched
 * as its blocks are first taken (outline.c, span_extend), so a heap that
 * holds a few blocks of each small class keeps a few pages of metadata per
 * class. Before, span_new wrote the record and the stack entry of every
 * block of the span: 72 KiB for a span of 16-byte blocks, whatever was used
 * of it (larson under the preload: 1.29 of its 12.7 MiB in the pool were
 * metadata, 232 spans of 4 heaps, most of them holding a few blocks).
 */
#define _GNU_SOURCE 1
#include "ktest.h"
#include "outline.h"
#include "ol_lend.h"
#include "ol_resident.h"

#include <pthread.h>
#include <sys/mman.h>
#include <unistd.h>

/* A few blocks of every class up to 1 KiB (24 spans): their segment's
 * metadata stays within 128 KiB resident (before: 272 KiB; after: 120 with
 * checks on, 108 off), in either mode. */
static void few_blocks(const char *conf)
{
	kp_pool *pool = kp_create(conf);
	REQUIRE(pool, "kp_create: %s", kp_last_error());
	enum { PER = 4 };
	void *p[1024 / 16][PER];
	size_t k = 0;
	for (size_t n = 8; n + OL_CANARY <= 1024; n += 16, k++)
		for (int i = 0; i < PER; i++) {
			p[k][i] = kp_alloc(pool, n, 0);
			CHECK(p[k][i] != NULL, "kp_alloc(%zu)", n);
			if (p[k][i])
				memset(p[k][i], 0x5a, n);
		}
	void *meta = kp__ol_meta_of(pool, p[0][0]);
	REQUIRE(meta, "no segment holds %p", p[0][0]);
	size_t res = resident(meta, OL_META);
	fprintf(stderr, "  %s: %zu KiB of metadata resident for %d blocks of each class\n", conf, res >> 10, PER);
	CHECK(res <= (128u << 10), "%zu KiB of metadata resident for %d blocks a class", res >> 10, PER);
	/* the blocks are whole and free as ever */
	for (size_t j = 0; j < k; j++)
		for (int i = 0; i < PER; i++)
			CHECK(kp_free(pool, p[j][i]) == 0, "kp_free");
	kp_destroy(pool);
}

static void test_meta_checks_on(void)
{
	few_blocks("layout:outline,daemon:off,seed:5");
}

static void test_meta_checks_off(void)
{
	few_blocks("layout:outline,daemon:off,checks:off,seed:5");
}

/* A span taken block by block to its end, every block once: all distinct,
 * each freed once, a double free and a free of a block past those handed out
 * reported as ever (double free: its record reads free). A heap's first
 * spans of a class are short (outline.c, span_blocks: 128 blocks, then 4
 * times more each): the blocks of the first three are held, and the fourth
 * span, a slice's 4096 blocks, is the one taken whole. */
static void test_extend_whole_span(void)
{
	kp_pool *pool = kp_create("layout:outline,daemon:off,seed:6");
	REQUIRE(pool, "kp_create: %s", kp_last_error());
	/* the heap past LEND's start (ol_lend.h): its 16-byte class's first
	 * page of blocks was the 32-byte class's span's (s37: 768 blocks in
	 * "three short spans", the lender's among them) */
	ol_lend_done(pool);
	size_t nb = OL_SLICE_SIZE / 16; /* 4096 blocks of the 16-byte class, one span */
	char **p = calloc(nb + 1, sizeof *p);
	void **early = calloc(nb, sizeof *early);
	REQUIRE(p && early, "calloc");
	size_t nearly = 0, spans = 0;
	uintptr_t slice = 0;
	for (;;) {
		char *q = kp_alloc(pool, 8, 0);
		REQUIRE(q && nearly < nb, "kp_alloc (%zu blocks before the fourth span)", nearly);
		if ((uintptr_t)q >> OL_SLICE_SHIFT != slice) {
			slice = (uintptr_t)q >> OL_SLICE_SHIFT;
			spans++;
		}
		if (spans == 4) {
			p[0] = q;
			break;
		}
		early[nearly++] = q;
	}
	CHECK(nearly == 128 + 512 + 2048, "%zu blocks in the three short spans", nearly);
	char *past = p[0] + 16 * 300; /* a block start no one was given yet */
	CHECK(kp_free(pool, past) != 0, "a free of a block never handed out was taken");
	size_t dup = 0, bad = 0;
	for (size_t i = 1; i < nb; i++) {
		p[i] = kp_alloc(pool, 8, 0);
		if (!p[i]) {
			bad++;
			continue;
		}
		memset(p[i], (int)i, 8);
	}
	for (size_t i = 0; i < nb; i++)
		for (size_t j = i + 1; j < nb && j < i + 8; j++)
			dup += p[i] && p[i] == p[j];
	CHECK(bad == 0 && dup == 0, "%zu failed allocations, %zu duplicates", bad, dup);
	size_t in_span = 0;
	for (size_t i = 0; i < nb; i++)
		in_span += p[i] && (uintptr_t)p[i] >> OL_SLICE_SHIFT == (uintptr_t)p[0] >> OL_SLICE_SHIFT;
	CHECK(in_span == nb, "%zu of %zu blocks in the first span", in_span, nb);
	for (size_t i = 0; i < nb; i++)
		CHECK(kp_free(pool, p[i]) == 0, "kp_free %zu", i);
	CHECK(kp_free(pool, p[7]) != 0, "a double free was taken");
	for (size_t i = 0; i < nearly; i++)
		CHECK(kp_free(pool, early[i]) == 0, "kp_free of a short span's block %zu", i);
	free(early);
	free(p);
	kp_destroy(pool);
}

/* ---- wholly free spans go to whichever heap needs one --------------------- */

#define NADOPT 2048u /* blocks of 256 B: 8 spans of 64 KiB */

struct adopt {
	kp_pool *pool;
	void **p;
	pthread_barrier_t *bar;
};

/* A: fills NADOPT blocks, frees them all, and waits, alive (its thread
 * pointer stays its own: B cannot take its heap whole) while B allocates. */
static void *adopt_a(void *arg)
{
	struct adopt *a = arg;
	for (size_t i = 0; i < NADOPT; i++) {
		a->p[i] = kp_alloc(a->pool, 240, 0);
		if (a->p[i])
			memset(a->p[i], 0x11, 240);
	}
	for (size_t i = 0; i < NADOPT; i++)
		kp_free(a->pool, a->p[i]);
	pthread_barrier_wait(a->bar); /* freed */
	pthread_barrier_wait(a->bar); /* B done */
	return NULL;
}

static void *adopt_b(void *arg)
{
	struct adopt *a = arg;
	for (size_t i = 0; i < NADOPT; i++) {
		a->p[i] = kp_alloc(a->pool, 240, 0);
		if (a->p[i])
			memset(a->p[i], 0x22, 240);
	}
	return NULL;
}

/* B's spans of the class are A's wholly free ones (all but the one A holds
 * in hand), not new ones: on s22-int B made 8 new spans, none of A's (larson
 * under the preload: 66 wholly free spans, 4.1 MiB resident, sat on the
 * heaps' avail lists at its peak while other heaps touched new ones). */
static void test_adopt_free_spans(void)
{
	kp_pool *pool = kp_create("layout:outline,daemon:off,seed:7");
	REQUIRE(pool, "kp_create: %s", kp_last_error());
	void **pa = calloc(NADOPT, sizeof *pa), **pb = calloc(NADOPT, sizeof *pb);
	REQUIRE(pa && pb, "calloc");
	pthread_barrier_t bar;
	pthread_barrier_init(&bar, NULL, 2);
	struct adopt a = {pool, pa, &bar}, b = {pool, pb, &bar};
	pthread_t ta, tb;
	pthread_create(&ta, NULL, adopt_a, &a);
	pthread_barrier_wait(&bar);
	pthread_create(&tb, NULL, adopt_b, &b);
	pthread_join(tb, NULL);
	size_t mine = 0, slices = 0;
	for (size_t i = 0; i < NADOPT; i++) {
		bool seen = false;
		for (size_t j = 0; j < NADOPT && !seen; j++)
			seen = pb[i] && pa[j] &&
			       (uintptr_t)pb[i] >> OL_SLICE_SHIFT == (uintptr_t)pa[j] >> OL_SLICE_SHIFT;
		mine += seen;
	}
	for (size_t i = 0; i < NADOPT; i++)
		slices += i == 0 || (uintptr_t)pa[i] >> OL_SLICE_SHIFT != (uintptr_t)pa[i - 1] >> OL_SLICE_SHIFT;
	fprintf(stderr, "  %zu of B's %u blocks in A's %zu spans\n", mine, NADOPT, slices);
	CHECK(mine >= NADOPT - OL_SLICE_SIZE / 256, "%zu of B's %u blocks in A's freed spans", mine, NADOPT);
	/* and every block of B's is its own, freed once */
	size_t bad = 0;
	for (size_t i = 0; i < NADOPT; i++)
		bad += !pb[i] || ((unsigned char *)pb[i])[0] != 0x22 || ((unsigned char *)pb[i])[239] != 0x22;
	CHECK(bad == 0, "%zu of B's blocks changed", bad);
	for (size_t i = 0; i < NADOPT; i++)
		CHECK(kp_free(pool, pb[i]) == 0, "kp_free");
	pthread_barrier_wait(&bar);
	pthread_join(ta, NULL);
	pthread_barrier_destroy(&bar);
	free(pa);
	free(pb);
	kp_destroy(pool);
}

int main(void)
{
	RUN(test_meta_checks_on);
	RUN(test_meta_checks_off);
	RUN(test_extend_whole_span);
	RUN(test_adopt_free_spans);
	return ktest_summary();
}
