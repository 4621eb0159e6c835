/*
 * test_span_pages.c - a class's first span opens a page only for a block
 * the program holds (primary.c, page_ahead).
 *
 * Issue 14, bench-small-objects under the preload (one thread, 1,000
 * objects of 8-256 bytes, each step frees a random one and allocates
 * another): each of its 12 classes holds its own span, and every page a
 * span's bump reached stays resident. A bin's refill took its whole batch
 * from the bump, so a class's bump ran a batch past the most blocks the
 * class ever held at once: pages written (each bumped block gets its free
 * header) that the program never needed.
 *
 * 1. One thread replaces random slots of a table of LIVE objects of 8-256
 *    bytes for STEPS steps, and counts for each class the most blocks it
 *    held at once. Then no class's span has written a header (the bump
 *    writes each block's) in a page past those its peak's blocks reach:
 *    3 pages past on main (80 B: 111 blocks bumped, 92 held at most; 160
 *    B: 184, 174; 320 B: 144, 135), none now.
 */
#define _GNU_SOURCE 1
#include "ktest.h"

#include "internal.h"

#define CONF "primary_initial:16m,daemon:off,backup:0,seed:31"
#define LIVE 1000
#define STEPS 400000

static kp_pool *pool;
static char *table[LIVE];
static unsigned cls_of[LIVE];
static unsigned now[KP_NCLASS], most[KP_NCLASS];

static uint64_t rnext(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

/* Pages of sp's run from its start to the last byte of its first n blocks
 * (whole: the program may write them), or, headers only (what the bump
 * writes), to the header of its n-th (n >= 1). */
static size_t pages_for(const kp__span *sp, size_t n, bool headers)
{
	uintptr_t first = (uintptr_t)sp->start >> 12;
	uintptr_t last = ((uintptr_t)sp->start + (headers ? (n - 1) * sp->block + KP_HDR : n * sp->block) - 1) >> 12;
	return last - first + 1;
}

/* The class of p's span (the segment's span table). */
static unsigned class_of(const void *p)
{
	const kp__seg *s = (const kp__seg *)((uintptr_t)p & ~(uintptr_t)(KP_SEG_SIZE - 1));
	unsigned u = (unsigned)(((uintptr_t)p - (uintptr_t)s) >> KP_UNIT_SHIFT);
	return s->span[s->span[u].head].cls;
}

static void test_bump_follows_the_peak(void)
{
	pool = kp_create(CONF);
	REQUIRE(pool, "kp_create: %s", kp_last_error());
	uint64_t seed = 42;
	unsigned failures = 0;
	for (unsigned i = 0; i < STEPS; i++) {
		size_t k = rnext(&seed) % LIVE, n = 8 + rnext(&seed) % 249;
		if (table[k])
			now[cls_of[k]]--;
		kp_free(pool, table[k]);
		if (!(table[k] = kp_alloc(pool, n, 0))) {
			failures++;
			continue;
		}
		table[k][0] = (char)n;
		unsigned c = class_of(table[k]);
		cls_of[k] = c;
		if (++now[c] > most[c])
			most[c] = now[c];
	}
	CHECK(failures == 0, "%u allocations failed", failures);
	size_t over = 0, classes = 0;
	for (unsigned c = 0; c < KP_NCLASS; c++) {
		const kp__span *sp = pool->central[c].partial;
		if (!most[c] || !sp || pool->central[c].spans != 1)
			continue;
		classes++;
		size_t bumped = pages_for(sp, sp->bump, true), need = pages_for(sp, most[c], false);
		if (bumped > need) {
			printf("   class %u (%u B): bump %u blocks, %zu pages; at most %u blocks held, %zu pages\n", c,
			       kp__class_size[c], sp->bump, bumped, most[c], need);
			over += bumped - need;
		}
	}
	printf("   %zu classes, %zu pages bumped past their peaks\n", classes, over);
	CHECK(classes >= 10, "%zu classes with one span", classes);
	CHECK(over == 0, "%zu pages bumped past what the classes held at their peaks", over);
	for (unsigned k = 0; k < LIVE; k++)
		kp_free(pool, table[k]);
	kp_destroy(pool);
}

int main(void)
{
	RUN(test_bump_follows_the_peak);
	return ktest_summary();
}
