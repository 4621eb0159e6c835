/*
 * test_outline_slot_mark.c - the outline slot's mark (outline.h,
 * kp__ol_enter): one subtract of the pool's tag (kp__ol_slot_id: its
 * address + 1 since s38-fasta, its id before) from the slot's id, 0 (so
 * marked) when they matched, added back when they did not; and the tags'
 * arithmetic it relies on (page-aligned pools: tags are 1 modulo 4096, the
 * marks 0 or 3, so that a slot's id off by another pool's tag, for the one
 * instruction before the add, is no pool's tag, nor a NULL pool's, and no
 * signal handler's call there takes it for its own).
 * Checked here without signals (the attack tests make the moments:
 * test_outline_signal_dup_attack32, _calls/_nested/_full/_poison_attack33):
 * the mark's arithmetic, a call made inside a mark (as a handler's) leaving
 * the slot as it found it, and poison:on's calls (outline.c, poison_mark)
 * leaving the slot unmarked and naming the pool it named.
 */
#define _GNU_SOURCE 1
#include "ktest.h"

#include "internal.h"
#include "outline.h"

#include <stdint.h>

/* Pools of each layout and mode, so that every kind of pool kp_create
 * hands out is seen: each tag is 1 modulo KP_OL_TAG_ALIGN, and no value a
 * slot's id takes (a tag, 0, a classic or poison mark) less a tag is any
 * pool's tag or a NULL pool's (1). */
#define NPOOLS 6

static void test_tags_and_marks(void)
{
	static const char *conf[NPOOLS] = {"daemon:off",
					   "daemon:off,checks:off",
					   "daemon:off,poison:on",
					   "layout:inline,daemon:off",
					   "layout:inline,daemon:off,checks:off",
					   "daemon:off"};
	kp_pool *pool[NPOOLS];
	for (int i = 0; i < NPOOLS; i++) {
		pool[i] = kp_create(conf[i]);
		REQUIRE(pool[i] != NULL, "kp_create(\"%s\"): %s", conf[i], kp_last_error());
		CHECK(kp__ol_slot_id(pool[i]) % KP_OL_TAG_ALIGN == 1, "pool %d (%s): tag %#llx", i, conf[i],
		      (unsigned long long)kp__ol_slot_id(pool[i]));
	}
	CHECK(kp__ol_slot_id(NULL) == 1, "a NULL pool's tag %llu", (unsigned long long)kp__ol_slot_id(NULL));
	for (int i = 0; i < NPOOLS; i++) {
		uint64_t addr = (uint64_t)(uintptr_t)pool[i];
		/* a slot's ids: the tag it names, the fast paths' mark, alloc.c's
		 * path's mark, poison:on's */
		uint64_t slot[4] = {kp__ol_slot_id(pool[i]), 0, addr | KP_OL_MARK_CLASSIC, addr};
		for (int m = 0; m < 4; m++) {
			CHECK(m == 0 || slot[m] != 1, "mark %d of pool %d is a NULL pool's tag", m, i);
			for (int j = 0; j < NPOOLS; j++) {
				CHECK(m == 0 || slot[m] != kp__ol_slot_id(pool[j]),
				      "mark %d of pool %d is pool %d's tag", m, i, j);
				uint64_t off = slot[m] - kp__ol_slot_id(pool[j]);
				CHECK(off != 1, "slot %#llx less pool %d's tag is a NULL pool's",
				      (unsigned long long)slot[m], j);
				for (int k = 0; k < NPOOLS; k++)
					CHECK(off != kp__ol_slot_id(pool[k]),
					      "slot %#llx less pool %d's tag is pool %d's", (unsigned long long)slot[m],
					      j, k);
			}
		}
	}
	for (int i = 0; i < NPOOLS; i++)
		kp_destroy(pool[i]);
}

static void test_enter_and_leave(void)
{
	KT_POOL(a, "daemon:off");
	KT_POOL(b, "daemon:off");
	kp_free(a, kp_alloc(a, 16, 0)); /* the slot names a, with its heap */
	REQUIRE(kp__ol_slot.aid == kp__ol_slot_id(a) && kp__ol_slot.id == kp__ol_slot_id(a),
		"the slot does not name a");
	CHECK(!kp__ol_marked(), "slot marked after a's calls");

	/* another pool's id: no match, the slot as it was */
	CHECK(!kp__ol_enter(kp__ol_slot_id(b)), "b's id matched a slot naming a");
	CHECK(kp__ol_slot.id == kp__ol_slot_id(a) && !kp__ol_marked(), "b's enter left the slot at %llu (a %llu)",
	      (unsigned long long)kp__ol_slot.id, (unsigned long long)kp__ol_slot_id(a));

	/* a's: marked (0), and a second enter (a handler's) neither matches
	 * nor changes it */
	REQUIRE(kp__ol_enter(kp__ol_slot_id(a)), "a's id did not match the slot naming a");
	CHECK(kp__ol_slot.id == 0 && kp__ol_marked(), "a's enter: slot id %llu, marked %d",
	      (unsigned long long)kp__ol_slot.id, kp__ol_marked());
	CHECK(!kp__ol_enter(kp__ol_slot_id(a)), "a marked slot matched a's id again");
	CHECK(!kp__ol_enter(kp__ol_slot_id(b)), "a marked slot matched b's id");
	CHECK(kp__ol_slot.id == 0, "the nested enters left the slot at %llu", (unsigned long long)kp__ol_slot.id);

	/* whole calls inside the mark (a handler's): the nested ways, the
	 * slot as they found it */
	void *p = kp_alloc(a, 48, 0);
	CHECK(p != NULL, "a's allocation inside the mark failed");
	CHECK(kp__ol_slot.id == 0, "an allocation inside the mark left the slot at %llu",
	      (unsigned long long)kp__ol_slot.id);
	CHECK(kp_free(a, p) == 0, "a's free inside the mark refused");
	CHECK(kp__ol_slot.id == 0, "a free inside the mark left the slot at %llu", (unsigned long long)kp__ol_slot.id);
	void *q = kp_alloc(b, 48, 0);
	CHECK(q != NULL && kp_free(b, q) == 0, "b's calls inside a's mark failed");
	CHECK(kp__ol_slot.id == 0 && kp__ol_slot.aid == kp__ol_slot_id(a),
	      "b's calls inside the mark left the slot at %llu, aid %llu", (unsigned long long)kp__ol_slot.id,
	      (unsigned long long)kp__ol_slot.aid);

	kp__ol_leave(kp__ol_slot_id(a));
	CHECK(!kp__ol_marked() && kp__ol_slot.id == kp__ol_slot_id(a), "leave: slot id %llu",
	      (unsigned long long)kp__ol_slot.id);
	/* and the fast paths again */
	p = kp_alloc(a, 48, 0);
	CHECK(p != NULL && kp_free(a, p) == 0 && !kp__ol_marked(), "a's calls after the mark");
	kp_destroy(b);
	kp_destroy(a);
}

/* poison:on's calls mark the slot (poison_mark) and unmark it as they end:
 * the slot names the pool it named, unmarked, after each */
static void test_poison_calls_unmark(void)
{
	KT_POOL(a, "daemon:off");
	KT_POOL(p, "daemon:off,poison:on");
	kp_free(a, kp_alloc(a, 16, 0));
	REQUIRE(kp__ol_slot.aid == kp__ol_slot_id(a), "the slot does not name a");
	void *blk[64];
	for (int i = 0; i < 64; i++) { /* past a span's first stack: a refill too */
		blk[i] = kp_alloc(p, 48, i % 3 == 0 ? KP_ZERO : 0);
		CHECK(blk[i] != NULL, "poison allocation %d failed", i);
		CHECK(kp__ol_slot.id == kp__ol_slot_id(a) && !kp__ol_marked(),
		      "poison allocation %d left the slot at %llu (a %llu)", i, (unsigned long long)kp__ol_slot.id,
		      (unsigned long long)kp__ol_slot_id(a));
	}
	for (int i = 0; i < 64; i++) {
		CHECK(kp_free(p, blk[i]) == 0, "poison free %d refused", i);
		CHECK(kp__ol_slot.id == kp__ol_slot_id(a) && !kp__ol_marked(), "poison free %d left the slot at %llu",
		      i, (unsigned long long)kp__ol_slot.id);
	}
	kp_destroy(p);
	kp_destroy(a);
}

int main(void)
{
	RUN(test_tags_and_marks);
	RUN(test_enter_and_leave);
	RUN(test_poison_calls_unmark);
	return ktest_summary();
}
