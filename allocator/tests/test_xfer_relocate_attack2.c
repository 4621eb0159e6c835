/*
 * test_xfer_relocate_attack2.c - FAILING (on main 2a93ba1 and sess13-merge
 * alike, for any bin or parked batch, not only batches of 256): a free
 * block's header copied into the attacker's own live block is accepted in
 * place of the free block, and the block handed out overlaps the live one.
 *
 * The attacker of test_forgery.c (reads headers and free-list links, writes
 * inside its own live blocks and after free) copies the header of block k+1
 * of a parked batch (tag and meta: K(h) ^ meta and meta, so K(h) is given
 * away, as test_xfer_attack's forgery outside the pool uses) to a 16-aligned
 * place inside a live block L of a bigger class, writes there a link to
 * block k+2 under K(h), and rewrites block k's link (a write after free)
 * to lead there. The taker checks each block against the key its bin's
 * key stack holds for that position (alloc.c, bin_head_ok; transfer.c,
 * take_vet): that key is K of block k+1, which the copy carries, and the
 * link's plausibility test (next_ok) asks only for an address in a normal
 * segment of the pool. The copy is handed out inside L, with checks on and
 * off. Only kp_free recomputes K from the address (test_forgery's attack
 * 1); allocation computes none (alloc.c, fast_key's comment).
 *
 * The pattern: two batches of 256 parked as in test_xfer_attack2, L a live
 * 1,000-byte block of B's.
 */
#define _GNU_SOURCE 1
/* Tests the transfer cache and central lists (transfer.c, tcache.c): every pool layout:inline (ktest.h, KT_LAYOUT_INLINE). */
#define KT_LAYOUT_INLINE 1
#include "ktest.h"

#include "internal.h"

#include <limits.h>
#include <pthread.h>

#include "xfer_rig.h"

static void do_alloc_big(void *arg)
{
	job *j = arg;
	for (unsigned i = 0; i < j->n; i++)
		j->v[i] = kp_alloc(j->pool, 1000, 0);
}

static void relocated(const char *conf, unsigned pos)
{
	if (!setup(conf))
		return;
	job lj = {.pool = pool, .v = (char *[1]){0}, .n = 1};
	char *big_live[1];
	lj.v = big_live;
	/* L: a live block of B's, of a bigger class */
	w_call(&wb, do_alloc_big, &lj);
	char *L = big_live[0];
	REQUIRE(L, "no live block");
	char *at = batch_at(1, pos + 1), *next = batch_at(1, pos + 2);
	uint64_t k = kt_raw_get(at) ^ kt_raw_get(at + 8);
	char *fh = L + 256; /* 16-aligned, inside L */
	kt_raw_put(fh, kt_raw_get(at));
	kt_raw_put(fh + 8, kt_raw_get(at + 8));
	kt_raw_put(fh + KP_HDR, (uint64_t)(uintptr_t)next ^ (uint64_t)kp__link_pad(k));
	relink(1, pos, fh);
	job t = {.pool = pool, .v = taken, .n = TAKE};
	w_call(&wa, do_alloc, &t);
	unsigned inside = 0;
	for (unsigned i = 0; i < TAKE; i++)
		inside += taken[i] && taken[i] >= L && taken[i] < L + 1000;
	printf("   %s: a header copied inside a live 1,000-byte block at %u: %u blocks handed out inside it, %lld "
	       "freelist errors\n",
	       conf, pos, inside, (long long)kt_stat(pool, "integrity.freelist_errors"));
	CHECK(inside == 0, "%s: %u blocks handed out inside a live block", conf, inside);
	teardown();
}

static void test_header_copied_into_live_block(void)
{
	relocated(CONF, 100);
	relocated(CONF ",checks:off", 100);
}

int main(void)
{
	RUN(test_header_copied_into_live_block);
	return ktest_summary();
}
