/*
 * test_huge_outgrown_attack28.c - s28-att: bad inputs around the kept huge
 * mappings (huge.c) and their eviction by a bigger request
 * (huge_cache_missed). Each must give its event and never a crash, a
 * block handed out twice, a live block changed, or dirty KP_ZERO memory:
 *   - stale frees and reallocs of huge blocks whose mappings the outgrown
 *     eviction unmapped: a double free each (the gone ring), refused;
 *   - a double free of a kept (cached) block, then its size asked for
 *     twice: two distinct blocks;
 *   - KP_ZERO from a kept mapping (written, freed), and after the daemon
 *     purged it; a KP_ZERO realloc that grows into a kept window;
 *   - a live huge block grown by realloc past every kept mapping (its own
 *     eviction of the cache) keeps its bytes; the kept blocks' stale
 *     pointers are then double frees;
 *   - one thread allocating, reallocating and freeing huge blocks across
 *     the evictions with stale frees of its old ones between (each
 *     refused), then two threads without the stale frees (a stale pointer
 *     may be the other thread's block by then: a first version freed
 *     that, and the other thread faulted on its block, the test's own
 *     error), each thread's blocks checked by pattern.
 * All held on 2b03bdf (release, ASan, TSan).
 */
#define _GNU_SOURCE
#include "ktest.h"

#include "internal.h"

#include <pthread.h>

#define MIB ((size_t)1 << 20)

static size_t dfree_events(kp_pool *pool)
{
	return kt_events_count(pool, KP_EV_DOUBLE_FREE);
}

static bool all_byte(const unsigned char *p, size_t n, unsigned char b)
{
	for (size_t i = 0; i < n; i += 512)
		if (p[i] != b)
			return false;
	return p[n - 1] == b;
}

static void test_stale_frees_after_outgrown(void)
{
	for (int checks = 0; checks < 2; checks++) {
		KT_POOL(pool, checks ? "daemon:off,prefault:off,seed:9,checks:on"
				     : "daemon:off,prefault:off,seed:9,checks:off");
		char *a = kp_alloc(pool, 5 * MIB, 0), *b = kp_alloc(pool, 6 * MIB, 0);
		REQUIRE(a && b, "kp_alloc");
		memset(a, 0x11, 5 * MIB);
		memset(b, 0x22, 6 * MIB);
		REQUIRE(kp_free(pool, a) == KP_OK && kp_free(pool, b) == KP_OK, "kp_free");
		REQUIRE(atomic_load(&pool->huge_cached_bytes) > 0, "nothing kept");
		/* bigger than every kept one: they are unmapped first */
		char *c = kp_alloc(pool, 20 * MIB, 0);
		REQUIRE(c, "kp_alloc 20 MiB");
		CHECK(atomic_load(&pool->huge_cached_bytes) == 0, "%zu bytes still kept after the outgrown request",
		      (size_t)atomic_load(&pool->huge_cached_bytes));
		memset(c, 0x33, 20 * MIB);
		kt_events_clear(pool);
		CHECK(kp_free(pool, a) != KP_OK, "a stale free of an evicted block taken");
		CHECK(kp_free(pool, b) != KP_OK, "a stale free of an evicted block taken");
		CHECK(dfree_events(pool) == 2, "%zu double frees reported, not 2", dfree_events(pool));
		errno = 0;
		void *r = kp_realloc(pool, a, 7 * MIB, 0);
		CHECK(r == NULL, "a realloc of an evicted block served (%p)", r);
		CHECK(dfree_events(pool) == 1, "the realloc of an evicted block not reported as a double free");
		CHECK(all_byte((unsigned char *)c, 20 * MIB, 0x33), "the live 20 MiB block changed");
		/* a fresh block of the evicted sizes: distinct from c */
		char *d = kp_alloc(pool, 5 * MIB, 0);
		CHECK(d && d != c, "the live block handed out again");
		if (d)
			memset(d, 0x44, 5 * MIB);
		CHECK(all_byte((unsigned char *)c, 20 * MIB, 0x33), "the live 20 MiB block changed");
		kp_free(pool, d);
		kp_free(pool, c);
		kt_events_clear(pool);
		CHECK(kp_free(pool, c) != KP_OK, "a second free of the 20 MiB block taken");
		kp_destroy(pool);
	}
}

static void test_double_free_of_kept(void)
{
	KT_POOL(pool, "daemon:off,prefault:off,seed:9");
	char *a = kp_alloc(pool, 5 * MIB, 0);
	REQUIRE(a, "kp_alloc");
	REQUIRE(kp_free(pool, a) == KP_OK, "kp_free");
	kt_events_clear(pool);
	CHECK(kp_free(pool, a) != KP_OK, "a double free of a kept block taken");
	CHECK(dfree_events(pool) == 1, "%zu double frees reported", dfree_events(pool));
	char *x = kp_alloc(pool, 5 * MIB, 0), *y = kp_alloc(pool, 5 * MIB, 0);
	CHECK(x && y && x != y, "the kept block handed out twice (%p %p)", (void *)x, (void *)y);
	/* the double free after the block went out again frees the new block:
	 * inherent (same address); after its eviction it must not */
	kp_free(pool, x);
	kp_free(pool, y);
	char *big = kp_alloc(pool, 24 * MIB, 0); /* evicts both */
	REQUIRE(big, "kp_alloc 24 MiB");
	kt_events_clear(pool);
	CHECK(kp_free(pool, x) != KP_OK && kp_free(pool, y) != KP_OK, "a stale free of an evicted block taken");
	kp_free(pool, big);
	kp_destroy(pool);
}

static void test_zero_from_kept(void)
{
	KT_POOL(pool, "daemon:off,prefault:off,seed:9,decay_ms:100000");
	char *a = kp_alloc(pool, 5 * MIB, 0);
	REQUIRE(a, "kp_alloc");
	memset(a, 0xaa, 5 * MIB);
	kp_free(pool, a);
	char *z = kp_alloc(pool, 5 * MIB - 4096, KP_ZERO);
	REQUIRE(z, "kp_alloc KP_ZERO");
	CHECK(z == a, "not the kept mapping (%p, %p): the test proves nothing", (void *)z, (void *)a);
	CHECK(all_byte((unsigned char *)z, 5 * MIB - 4096, 0), "KP_ZERO from a kept mapping not zero");
	memset(z, 0xbb, 5 * MIB - 4096);
	kp_free(pool, z);
	/* the pool grows, the daemon's pass purges the kept one, then KP_ZERO */
	char *g = kp_alloc(pool, 3 * MIB, 0);
	kp_daemon_step(pool, 10);
	char *z2 = kp_alloc(pool, 5 * MIB - 8192, KP_ZERO);
	REQUIRE(z2, "kp_alloc KP_ZERO");
	CHECK(all_byte((unsigned char *)z2, 5 * MIB - 8192, 0), "KP_ZERO after the purge not zero");
	kp_free(pool, z2);
	kp_free(pool, g);
	/* a realloc growing into a kept window: the grown part zero */
	char *w = kp_alloc(pool, 14 * MIB, 0);
	memset(w, 0xcc, 14 * MIB);
	char *x = kp_alloc(pool, 4 * MIB, 0);
	memset(x, 0x5a, 4 * MIB);
	kp_free(pool, w);
	char *x2 = kp_realloc(pool, x, 12 * MIB, KP_ZERO);
	REQUIRE(x2, "kp_realloc KP_ZERO");
	CHECK(all_byte((unsigned char *)x2, 4 * MIB, 0x5a), "the old bytes not kept");
	CHECK(all_byte((unsigned char *)x2 + 4 * MIB, 8 * MIB, 0), "the grown part of a KP_ZERO realloc not zero");
	kt_events_clear(pool);
	CHECK(kp_free(pool, x) != KP_OK || x == x2, "a free of the moved block's old address taken");
	kp_free(pool, x2);
	kp_destroy(pool);
}

static void test_realloc_past_kept(void)
{
	for (int checks = 0; checks < 2; checks++) {
		KT_POOL(pool, checks ? "daemon:off,prefault:off,seed:9,checks:on"
				     : "daemon:off,prefault:off,seed:9,checks:off");
		char *k1 = kp_alloc(pool, 5 * MIB, 0), *k2 = kp_alloc(pool, 7 * MIB, 0),
		     *y = kp_alloc(pool, 6 * MIB, 0);
		REQUIRE(k1 && k2 && y, "kp_alloc");
		memset(y, 0x77, 6 * MIB);
		kp_free(pool, k1);
		kp_free(pool, k2);
		char *y2 = kp_realloc(pool, y, 30 * MIB, 0); /* bigger than both kept */
		REQUIRE(y2, "kp_realloc");
		CHECK(all_byte((unsigned char *)y2, 6 * MIB, 0x77), "the realloc's block lost its bytes");
		memset(y2 + 6 * MIB, 0x78, 24 * MIB);
		kt_events_clear(pool);
		CHECK(kp_free(pool, k1) != KP_OK && kp_free(pool, k2) != KP_OK,
		      "a stale free of an evicted block taken");
		if (y2 != y)
			CHECK(kp_free(pool, y) != KP_OK, "a free of the realloc's old address taken");
		CHECK(all_byte((unsigned char *)y2, 6 * MIB, 0x77) &&
			      all_byte((unsigned char *)y2 + 6 * MIB, 24 * MIB, 0x78),
		      "the live block changed");
		kp_free(pool, y2);
		kp_destroy(pool);
	}
}

/* two threads: each its own huge blocks, grown and freed; stale frees of
 * its own freed ones in between; every live block checked by pattern */
static kp_pool *tpool;
static _Atomic unsigned t_bad, t_taken;
static bool t_stale;
static void *huge_churn(void *arg)
{
	uint64_t seed = (uintptr_t)arg * 7919 + 1;
	unsigned char tag = (unsigned char)(0x40 + (uintptr_t)arg);
	char *live = NULL, *old[4] = {0};
	size_t n = 0;
	int rounds = KT_SANITIZED ? 60 : 300;
	for (int i = 0; i < rounds; i++) {
		int op = (int)(kt_rand(&seed) % 4);
		if (!live) {
			n = kt_rand_range(&seed, 3 * MIB, 20 * MIB);
			live = kp_alloc(tpool, n, op == 0 ? KP_ZERO : 0);
			if (!live)
				continue;
			if (op == 0 && !all_byte((unsigned char *)live, n, 0))
				atomic_fetch_add(&t_bad, 1);
			memset(live, tag, n);
		} else if (op == 1) {
			size_t m = kt_rand_range(&seed, 3 * MIB, 30 * MIB);
			char *q = kp_realloc(tpool, live, m, 0);
			if (!q)
				continue;
			if (!all_byte((unsigned char *)q, m < n ? m : n, tag))
				atomic_fetch_add(&t_bad, 1);
			live = q, n = m;
			memset(live, tag, n);
		} else if (op == 2) {
			if (!all_byte((unsigned char *)live, n, tag))
				atomic_fetch_add(&t_bad, 1);
			kp_free(tpool, live);
			old[i % 4] = live;
			live = NULL;
		} else if (t_stale) {
			/* one thread alone: a stale pointer not its live block's
			 * is no block (with two, it may be the other thread's
			 * block at that address since: freeing it is the test's
			 * own error, and that thread then faults on its block) */
			char *s = old[kt_rand(&seed) % 4];
			if (s && s != live && kp_free(tpool, s) == KP_OK)
				atomic_fetch_add(&t_taken, 1);
		}
	}
	if (live) {
		if (!all_byte((unsigned char *)live, n, tag))
			atomic_fetch_add(&t_bad, 1);
		kp_free(tpool, live);
	}
	return NULL;
}

static void test_threads_across_eviction(void)
{
	/* one thread with stale frees, then two without */
	for (int nt = 1; nt <= 2; nt++) {
		tpool = kp_create("daemon:off,prefault:off,seed:5");
		REQUIRE(tpool, "kp_create: %s", kp_last_error());
		t_stale = nt == 1;
		pthread_t t[2];
		for (uintptr_t i = 0; i < (uintptr_t)nt; i++)
			pthread_create(&t[i], NULL, huge_churn, (void *)i);
		for (int i = 0; i < nt; i++)
			pthread_join(t[i], NULL);
		CHECK(atomic_load(&t_bad) == 0, "%u live or KP_ZERO huge blocks not as written (%d threads)",
		      atomic_load(&t_bad), nt);
		CHECK(atomic_load(&t_taken) == 0, "%u stale frees taken", atomic_load(&t_taken));
		kp_destroy(tpool);
	}
}

int main(void)
{
	RUN(test_stale_frees_after_outgrown);
	RUN(test_double_free_of_kept);
	RUN(test_zero_from_kept);
	RUN(test_realloc_past_kept);
	RUN(test_threads_across_eviction);
	return ktest_summary();
}
