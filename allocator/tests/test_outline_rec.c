/*
 * test_outline_rec.c - layout:outline's out-of-line metadata per small
 * block: resident bytes of the segments' metadata mappings (the span
 * records, the free stacks, the block records and the cross-thread links:
 * outline.h, struct ol_rec) over the live blocks. 10 bytes a block (an
 * 8-byte record and a 2-byte stack entry) in a program whose blocks no other
 * thread frees: the 2-byte links, touched by cross-thread frees alone, sit
 * at the top of the mapping, apart (outline.c, meta_take_top), where they sat
 * between each span's stack and records, on pages those touched: 11.45 bytes
 * resident a block (s28). A 16-byte record made it 18 (s26): CPython's
 * test_unicode holds 2.2 M blocks of 32 and 80 B under the preload.
 */
#define _GNU_SOURCE 1
#include "ktest.h"
#include "outline.h"
#include "ol_resident.h"

#include <sys/mman.h>

#define NBLK 200000u /* blocks of 32 B (the class of 48: 1365 a span), about 3 segments */
/* Bytes a block (8 + 2 = 10) and the share of the segments' own records
 * and the spans' partly used pages (under 0.5 B a block at 200k blocks). */
#define META_MAX_PER_BLOCK 10.5

/* Resident metadata bytes of pool's segments (their whole mappings: the
 * records and arrays from the bottom, the links from the top).
 * Single-threaded: no lock. */
static size_t meta_resident(kp_pool *pool, uint32_t *nseg)
{
	size_t sum = 0;
	*nseg = 0;
	for (struct ol_seg *s = pool->ol->segs; s; s = s->next, ++*nseg)
		sum += resident(s, OL_META);
	return sum;
}

static void per_block(const char *spec, double max)
{
	kp_pool *pool = kp_create(spec);
	REQUIRE(pool, "kp_create: %s", kp_last_error());
	void **p = calloc(NBLK, sizeof *p);
	REQUIRE(p, "calloc");
	uint32_t got = 0;
	for (uint32_t i = 0; i < NBLK; i++) {
		p[i] = kp_alloc(pool, 32, 0);
		got += p[i] != NULL;
		if (p[i])
			memset(p[i], 0x5a, 32);
	}
	CHECK(got == NBLK, "%u of %u allocations", got, NBLK);
	uint32_t nseg = 0;
	size_t meta = meta_resident(pool, &nseg);
	double b = (double)meta / NBLK;
	fprintf(stderr, "  %s: %zu metadata bytes resident in %u segments for %u blocks: %.2f a block\n", spec, meta,
		nseg, NBLK, b);
	CHECK(nseg > 0 && meta > 0, "no metadata seen (%u segments)", nseg);
	CHECK(b <= max, "%.2f metadata bytes a live block of 32 B, more than %.2f", b, max);
	uint32_t bad = 0;
	for (uint32_t i = 0; i < NBLK; i++)
		bad += p[i] && kp_free(pool, p[i]) != 0;
	CHECK(bad == 0, "%u frees refused", bad);
	free(p);
	kp_destroy(pool);
}

/* checks on (the canary's record) and off (the same records, no canary
 * drawn): the same bound */
static void test_meta_checks_on(void)
{
	per_block("layout:outline,daemon:off,seed:5", META_MAX_PER_BLOCK);
}

static void test_meta_checks_off(void)
{
	per_block("layout:outline,daemon:off,seed:5,checks:off", META_MAX_PER_BLOCK);
}

int main(void)
{
	RUN(test_meta_checks_on);
	RUN(test_meta_checks_off);
	return ktest_summary();
}
