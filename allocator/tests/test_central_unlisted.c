/*
 * test_central_unlisted.c - a span still at the head of its class's central
 * list whose slot says it is no longer listed (its units went back: planted 3
 * does this, and so would a stray write into the segment's span table) must
 * not stop the pool.
 *
 * Before the fix, kp__central_take found that span at the head of the list,
 * popped nothing from it, left it there, and found it again at once, for
 * ever: a CI replay of planted 3's fuzz input timed out inside
 * kp__central_take (session 5). Now it is dropped from the list with a
 * freelist event, and the allocation is served from a fresh span. An alarm
 * turns a hang into a failure of this test instead of a stuck CI job.
 */
/* Tests the transfer cache and central lists (transfer.c, tcache.c): every pool layout:inline (ktest.h, KT_LAYOUT_INLINE). */
#define KT_LAYOUT_INLINE 1
#include "ktest.h"

#include "internal.h"

#include <signal.h>

/* A hang is a failure, not a stuck make: well over what the test takes. */
#define HANG_S 20

static void test_an_unlisted_span_at_the_head_is_dropped(void)
{
	kp_pool *pool = kp_create("daemon:off,tcache_bytes:0,seed:5");
	REQUIRE(pool != NULL, "kp_create: %s", kp_last_error());
	char *p = kp_alloc(pool, 100, 0);
	REQUIRE(p != NULL, "kp_alloc: %s", kp_last_error());
	kp__seg *s = kp__pagemap_get(p);
	REQUIRE(s != NULL, "no segment for %p", (void *)p);
	unsigned u = (unsigned)(((uintptr_t)p - (uintptr_t)s) >> KP_UNIT_SHIFT);
	kp__span *sp = &s->span[s->span[u].head];
	unsigned cls = sp->cls;
	REQUIRE(pool->central[cls].partial == sp, "the block's span is not at the head of its central list");
	/* what units_give leaves in the slot: all zero but the run's first unit */
	uint8_t head = sp->head;
	memset(sp, 0, sizeof *sp);
	sp->head = head;
	alarm(HANG_S);
	unsigned served = 0;
	for (int i = 0; i < 64; i++) /* the cache's few blocks, then the central list */
		served += kp_alloc(pool, 100, 0) != NULL;
	alarm(0);
	CHECK(served == 64, "%u of 64 allocations served after the damage", served);
	CHECK(kt_stat(pool, "integrity.freelist_errors") >= 1, "no freelist event for the unlisted span");
	/* p's span is damaged: p is left allocated (freeing it is test_integrity's business) */
	kp_destroy(pool);
}

int main(void)
{
	unsetenv("KPOOL_CONF");
	RUN(test_an_unlisted_span_at_the_head_is_dropped);
	return ktest_summary();
}
