/*
 * test_fast_slot.c - the fast paths' slot test (kp__tls: fast_alloc and
 * fast_free) follows the thread's first slot and its pool's mode.
 *
 * kp_alloc and kp_free test one word of the thread's state for "this pool,
 * in the first slot, checks on, poison off" (and for kp_free, AES round
 * keys). The word must name the first slot's pool exactly when that pool
 * is checked, and no pool otherwise: a thread that moves between a checked
 * pool, one with checks off and one that poisons, so that each in turn is
 * the first slot's (and the first is evicted by four others, and one is
 * destroyed), must still have every check of each pool's mode: an overflow
 * of one byte and a double free refused with their events on the checked
 * pool, a write after free caught on the poisoning one, and the unchecked
 * pool's blocks served and freed (through the same bins).
 */
#define _GNU_SOURCE 1
/* Tests the inline fast paths and their slot and grace words (alloc.c, kp__tls): every pool layout:inline (ktest.h, KT_LAYOUT_INLINE). */
#define KT_LAYOUT_INLINE 1
#include "ktest.h"

#include "internal.h"

#include <string.h>

static bool checked_mode(kp_pool *pool)
{
	return pool->conf.checks && !pool->conf.poison;
}

/* The slot words as kp__tcache_slow must leave them after a call on pool. */
static void slot_is(kp_pool *pool, const char *what)
{
	CHECK(kp__tls_state.id[0] == pool->id, "%s: first slot", what);
	/* KP_FAST_NONE, not 0, when the pool takes no fast path (s33-sig), and
	 * then alloc_fast's cache the empty one */
	CHECK(kp__tls_state.fast_alloc == (checked_mode(pool) ? pool->id : KP_FAST_NONE),
	      "%s: fast_alloc %llu (pool %llu)", what, (unsigned long long)kp__tls_state.fast_alloc,
	      (unsigned long long)pool->id);
	CHECK(kp__tls_state.fast_tc == (checked_mode(pool) ? kp__tls_state.tc[0] : &kp__tcache_none), "%s: fast_tc",
	      what);
	CHECK(kp__tls_state.fast_free == (checked_mode(pool) && pool->secret.aes ? pool->id : 0),
	      "%s: fast_free %llu (pool %llu)", what, (unsigned long long)kp__tls_state.fast_free,
	      (unsigned long long)pool->id);
}

/* One round on the checked pool: plain blocks, an overflow, a double free. */
static void checked_round(kp_pool *pool, int round)
{
	void *a = kp_alloc(pool, 40, 0);
	REQUIRE(a, "checked alloc");
	slot_is(pool, "checked pool");
	memset(a, 1, 40);
	CHECK(kp_free(pool, a) == 0, "checked free, round %d", round);
	CHECK(kp_free(pool, a) == KP_EDOUBLEFREE, "double free refused, round %d", round);
	CHECK(kt_events_count(pool, KP_EV_DOUBLE_FREE) == 1, "double free event, round %d", round);
	if (!KT_ASAN) { /* ASan reports the write itself */
		char *o = kp_alloc(pool, 40, 0);
		REQUIRE(o, "checked alloc");
		memset(o, 'x', 41);
		CHECK(kp_free(pool, o) == KP_EOVERFLOW, "overflow of one byte refused, round %d", round);
		CHECK(kt_events_count(pool, KP_EV_OVERFLOW) == 1, "overflow event, round %d", round);
	}
	kt_events_clear(pool);
}

static void unchecked_round(kp_pool *pool)
{
	void *b[64];
	for (int i = 0; i < 64; i++) {
		b[i] = kp_alloc(pool, 40, 0);
		REQUIRE(b[i], "unchecked alloc %d", i);
		memset(b[i], 2, kp_usable_size(pool, b[i]));
	}
	slot_is(pool, "unchecked pool");
	for (int i = 0; i < 64; i++)
		CHECK(kp_free(pool, b[i]) == 0, "unchecked free %d", i);
}

static void poison_round(kp_pool *pool)
{
	char *p = kp_alloc(pool, 40, 0);
	REQUIRE(p, "poison alloc");
	slot_is(pool, "poisoning pool");
	CHECK(kp_free(pool, p) == 0, "poison free");
	if (!KT_ASAN) {
		p[20] = 'w';			 /* a write after free */
		void *q = kp_alloc(pool, 40, 0); /* the bin's head: the block freed last */
		CHECK(q && q != p, "a block written after free handed out again");
		CHECK(kt_events_count(pool, KP_EV_USE_AFTER_FREE) == 1, "write after free caught");
		kp_free(pool, q);
	}
	kt_events_clear(pool);
}

static void test_modes_alternate(void)
{
	KT_POOL(checked, "primary_initial:4m,daemon:off");
	KT_POOL(unchecked, "primary_initial:4m,daemon:off,checks:off");
	KT_POOL(poisoned, "primary_initial:4m,daemon:off,poison:on");
	for (int round = 0; round < 3; round++) {
		checked_round(checked, round);
		unchecked_round(unchecked);
		checked_round(checked, round);
		poison_round(poisoned);
	}
	/* Four other pools take the slots: the checked pool's cache is evicted
	 * and comes back in the first slot. */
	kp_pool *other[4];
	for (int i = 0; i < 4; i++) {
		other[i] = kp_create("primary_initial:1m,daemon:off,checks:off");
		REQUIRE(other[i], "kp_create: %s", kp_last_error());
		kp_free(other[i], kp_alloc(other[i], 16, 0));
		slot_is(other[i], "other pool");
	}
	checked_round(checked, 3);
	for (int i = 0; i < 4; i++)
		kp_destroy(other[i]);
	/* A checked pool destroyed while in the first slot: the words name no
	 * pool, and the next pool used takes the slot with its own mode. */
	kp_pool *gone = kp_create("primary_initial:1m,daemon:off");
	REQUIRE(gone, "kp_create: %s", kp_last_error());
	kp_free(gone, kp_alloc(gone, 16, 0));
	slot_is(gone, "pool to destroy");
	kp_destroy(gone);
	CHECK(kp__tls_state.fast_alloc == KP_FAST_NONE && kp__tls_state.fast_tc == &kp__tcache_none &&
		      kp__tls_state.fast_free == 0,
	      "destroyed pool still in the fast words");
	unchecked_round(unchecked);
	checked_round(checked, 4);
}

int main(void)
{
	RUN(test_modes_alternate);
	return ktest_summary();
}
