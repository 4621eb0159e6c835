/*
 * test_xfer_relocate_attack3.c - the relocation attack of
 * test_xfer_relocate_attack2.c (a parked free block's header copied into
 * the attacker's live 1,000-byte block L, the link before it rewritten to
 * lead there) against the other takers of a parked batch, now that key
 * stacks are bound to the block's address (internal.h, kp__kslot): attacks
 * that held, checks on and off.
 *
 *   0. kp_thread_flush on a thread with no cache of the class: the drain of
 *      every parked batch (kp__xfer_drain all, batch_vet) to the spans;
 *   1. the daemon's drain of stale batches (kp_daemon_step past two
 *      checkpoints: batch_vet);
 *   2. a taker that reallocs 8-byte blocks to 40 bytes;
 *   3. a taker of kp_alloc_aligned(16) blocks (one of 64 takes no block of the 40 bytes' class).
 *
 * Each: after the taking (and for 0 and 1, a thread then allocating 1,024
 * blocks of the class from the spans) no block handed out inside L, L's
 * bytes as the attacker left them, and the damage reported.
 */
#define _GNU_SOURCE 1
/* Tests the transfer cache and central lists (transfer.c, tcache.c): every pool layout:inline (ktest.h, KT_LAYOUT_INLINE). */
#define KT_LAYOUT_INLINE 1
#include "ktest.h"

#include "internal.h"

#include <limits.h>
#include <pthread.h>

#define RIG_ALIGN 16 /* an alignment of 64 does not take from the 40-byte class's bin */
#include "xfer_rig.h"

static void do_alloc_big(void *arg)
{
	job *j = arg;
	for (unsigned i = 0; i < j->n; i++)
		j->v[i] = kp_alloc(j->pool, 1000, 0);
}

static void relocated(const char *conf, unsigned pos, int how)
{
	if (!setup(conf))
		return;
	char *big_live[1];
	job lj = {.pool = pool, .v = big_live, .n = 1};
	w_call(&wb, do_alloc_big, &lj);
	char *L = big_live[0];
	REQUIRE(L, "no live block");
	char *at = batch_at(1, pos + 1), *next = batch_at(1, pos + 2);
	uint64_t k = kt_raw_get(at) ^ kt_raw_get(at + 8);
	char *fh = L + 256;
	kt_raw_put(fh, kt_raw_get(at));
	kt_raw_put(fh + 8, kt_raw_get(at + 8));
	kt_raw_put(fh + KP_HDR, (uint64_t)(uintptr_t)next ^ (uint64_t)kp__link_pad(k));
	relink(1, pos, fh);
	static char copy[1000];
	memcpy(copy, L, 1000);
	if (how == 0) {
		kp_thread_flush(pool); /* this thread has no cache of the class */
	} else if (how == 1) {
		kp_daemon_step(pool, 20);
		kp_daemon_step(pool, 20);
		kp_daemon_step(pool, 20);
	}
	job t = {.pool = pool, .v = taken, .n = TAKE, .how = how == 2 ? 1 : how == 3 ? 2 : 0};
	w_call(&wa, do_alloc, &t);
	unsigned inside = 0;
	for (unsigned i = 0; i < TAKE; i++)
		inside += taken[i] && taken[i] + REQ > L && taken[i] < L + 1000;
	long long errs = kt_stat(pool, "integrity.freelist_errors");
	unsigned parked = atomic_load(&pool->central[cls].nxfer);
	printf("   %s, taker %d: %u blocks handed out inside the live block, %lld freelist errors, %u batches still "
	       "parked\n",
	       conf, how, inside, errs, parked);
	CHECK(inside == 0, "%s, taker %d: %u blocks handed out inside a live block", conf, how, inside);
	CHECK(memcmp(copy, L, 1000) == 0, "%s, taker %d: the live block changed", conf, how);
	CHECK(errs >= 1, "%s, taker %d: the damage was not reported", conf, how);
	teardown();
}

static void test_other_takers(void)
{
	for (int how = 0; how <= 3; how++) {
		relocated(CONF, 100, how);
		relocated(CONF ",checks:off", 100, how);
	}
}

int main(void)
{
	RUN(test_other_takers);
	return ktest_summary();
}
