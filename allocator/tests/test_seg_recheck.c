/*
 * test_seg_recheck.c - a segment header rewritten between two batch
 * operations is caught by the next one (issue 14).
 *
 * kp__seg_ok (primary.c) checks a segment header's keyed magic, kind and
 * size before kp__central_take and kp__central_give use a span slot of the
 * segment. A check that remembered what it computed for a segment (session
 * 21 tried a per-thread memo of the magic, a SipHash of some 135
 * instructions: 4.5 -> 1.7 instructions an operation on kpbench b, not
 * merged) must still compare the live header every time. Here the segment
 * has been checked by earlier batches; then its magic, its kind or
 * its size is rewritten (as an overflow or a forger would), and the next
 * batch, a take from a partial span of the segment or a give of blocks of
 * the segment, must refuse it: a corruption event, the segment quarantined,
 * and no later allocation inside it.
 * Each batch is forced with kp_thread_flush: the bins are emptied, so the
 * take and give paths meet the segment.
 *
 * The header writes go through no_sanitize("address") helpers (kt_raw_put):
 * under ASan the rewrite must reach the pool, not ASan's report.
 */
#define _GNU_SOURCE 1
/* Tests the inline primary's segments, spans and units (primary.c): every pool layout:inline (ktest.h, KT_LAYOUT_INLINE). */
#define KT_LAYOUT_INLINE 1
#include "ktest.h"

#include "internal.h"

#include <stddef.h>

#define NB 4000
#define SZ 48

enum field { MAGIC, KIND, SIZE };
static const char *const field_name[] = {"magic", "kind", "size"};

static void *blocks[NB], *later[NB];

static kp__seg *seg_of(const void *p)
{
	return (kp__seg *)((uintptr_t)p & ~(uintptr_t)(KP_SEG_SIZE - 1));
}

static KT_RAW void rewrite(kp__seg *s, enum field f)
{
	if (f == MAGIC) {
		kt_raw_put(&s->magic, kt_raw_get(&s->magic) ^ 1);
	} else if (f == KIND) { /* kind and nfree_units share a word: the kind alone */
		volatile uint32_t *k = &s->kind;
		*k = KP_SEG_HUGE;
	} else {
		kt_raw_put(&s->size, KP_SEG_SIZE * 2);
	}
}

/* via_take: the next batch takes from a partial span of the segment;
 * else it gives blocks of the segment back. */
static void rewritten_between_batches(enum field f, bool via_take)
{
	kp_pool *pool = kp_create("primary_initial:16m,backup:1m,daemon:off");
	REQUIRE(pool, "kp_create: %s", kp_last_error());
	/* Batches that check the segment, and pass: take, give, take again. */
	for (int i = 0; i < NB; i++)
		REQUIRE((blocks[i] = kp_alloc(pool, SZ, 0)), "alloc %d", i);
	for (int i = 0; i < NB; i++)
		CHECK(kp_free(pool, blocks[i]) == 0, "free %d", i);
	kp_thread_flush(pool); /* the bins' blocks back to their spans: the spans are listed */
	for (int i = 0; i < NB; i++)
		REQUIRE((blocks[i] = kp_alloc(pool, SZ, 0)), "alloc %d", i);
	kp__seg *s = seg_of(blocks[0]);
	if (via_take) /* every other block back: the spans are partial, listed */
		for (int i = 0; i < NB; i += 2) {
			CHECK(kp_free(pool, blocks[i]) == 0, "free %d", i);
			blocks[i] = NULL;
		}
	kp_thread_flush(pool); /* empty bins: the next allocation takes from a span */
	int64_t ev = kt_stat(pool, "integrity.corruptions"), quar = kt_stat(pool, "integrity.quarantined");
	CHECK(ev == 0 && quar == 0, "%s: events before the rewrite (%lld corruptions, %lld quarantined)", field_name[f],
	      (long long)ev, (long long)quar);

	rewrite(s, f);
	/* One batch: a take (one bin's refill, from the partial spans of s:
	 * no new span, whose units_take checks the header too), or a give of
	 * every other block (no span empties: no units go back). */
	if (via_take) {
		later[0] = kp_alloc(pool, SZ, 0);
	} else {
		for (int i = 0; i < NB; i += 2) {
			kp_free(pool, blocks[i]); /* those of s go nowhere: an error, or leaked */
			blocks[i] = NULL;
		}
		kp_thread_flush(pool);
	}
	CHECK(kt_stat(pool, "integrity.corruptions") > ev, "%s rewritten, %s: no corruption event", field_name[f],
	      via_take ? "take" : "give");
	CHECK(kt_stat(pool, "integrity.quarantined") > quar, "%s rewritten, %s: the segment is not quarantined",
	      field_name[f], via_take ? "take" : "give");
	/* Then more: no block handed out twice, or while live. */
	for (int i = 1; i < NB; i++)
		later[i] = kp_alloc(pool, SZ, 0);
	unsigned dup = 0, inside = 0;
	for (int i = 0; i < NB; i++) {
		inside += later[i] && seg_of(later[i]) == s;
		for (int j = 0; later[i] && j < NB; j++)
			dup += (j != i && later[j] == later[i]) || blocks[j] == later[i];
	}
	CHECK(dup == 0, "%s rewritten, %s: %u later blocks handed out twice (%u inside the damaged segment)",
	      field_name[f], via_take ? "take" : "give", dup, inside);
	for (int i = 0; i < NB; i++) {
		if (blocks[i])
			kp_free(pool, blocks[i]);
		if (later[i])
			kp_free(pool, later[i]);
		blocks[i] = later[i] = NULL;
	}
	kp_destroy(pool);
}

static void test_magic_take(void)
{
	rewritten_between_batches(MAGIC, true);
}
static void test_magic_give(void)
{
	rewritten_between_batches(MAGIC, false);
}
static void test_kind_take(void)
{
	rewritten_between_batches(KIND, true);
}
static void test_kind_give(void)
{
	rewritten_between_batches(KIND, false);
}
static void test_size_take(void)
{
	rewritten_between_batches(SIZE, true);
}
static void test_size_give(void)
{
	rewritten_between_batches(SIZE, false);
}

int main(void)
{
	RUN(test_magic_take);
	RUN(test_magic_give);
	RUN(test_kind_take);
	RUN(test_kind_give);
	RUN(test_size_take);
	RUN(test_size_give);
	return ktest_summary();
}
