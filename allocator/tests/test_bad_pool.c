/*
 * test_bad_pool.c - a pool pointer that is not a live pool is bad input
 * (issue 12, last paragraph): a clear error, no crash, nothing written
 * through it.
 *
 * Two tiers, as kpool.h states them:
 *  - every call checks a magic word in the pool (keyed by its address) on
 *    entry of its slow path, so memory that is no pool (a buffer of random
 *    bytes, zeros, 0xff) is refused and left untouched;
 *  - the lifecycle and observation calls (kp_destroy, kp_stats_json, the
 *    kp_daemon_* calls,
 *    kp_events_drain, kp_fault_inject, kp_critical_token) look the pointer up
 *    in the registry of live pools before they read a byte of it, so a
 *    destroyed pool (its memory unmapped) is refused too.
 */
#include "ktest.h"

#include <sys/mman.h>

#define GARBAGE 65536 /* larger than a kp_pool's first pages */

static unsigned char *garbage(int kind)
{
	unsigned char *g = mmap(NULL, GARBAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (g == MAP_FAILED)
		return NULL;
	uint64_t s = 42 + (uint64_t)kind;
	for (size_t i = 0; i < GARBAGE; i++)
		g[i] = kind == 0 ? (unsigned char)kt_rand(&s) : kind == 1 ? 0 : 0xff;
	return g;
}

static const char *const KIND[] = {"random bytes", "zeros", "0xff bytes"};

static int says_not_a_pool(void)
{
	return strstr(kp_last_error(), "not a live pool") != NULL;
}

/* The allocation calls on memory that is no pool. */
static void test_garbage_allocation_calls(void)
{
	KT_POOL(real, "primary_initial:4m,daemon:off");
	void *block = kp_alloc(real, 100, 0);
	REQUIRE(block, "alloc");
	for (int kind = 0; kind < 3; kind++) {
		unsigned char *g = garbage(kind), *copy = malloc(GARBAGE);
		REQUIRE(g && copy, "mmap");
		memcpy(copy, g, GARBAGE);
		kp_pool *bad = (kp_pool *)g;
		errno = 0;
		CHECK(kp_alloc(bad, 64, 0) == NULL && errno == EINVAL, "kp_alloc on %s", KIND[kind]);
		CHECK(says_not_a_pool(), "kp_alloc on %s: error '%s'", KIND[kind], kp_last_error());
		CHECK(kp_alloc(bad, 1 << 20, KP_ZERO | KP_CRITICAL) == NULL, "kp_alloc (large, flags) on %s",
		      KIND[kind]);
		CHECK(kp_alloc_aligned(bad, 64, 256, 0) == NULL, "kp_alloc_aligned on %s", KIND[kind]);
		CHECK(kp_realloc(bad, NULL, 64, 0) == NULL, "kp_realloc(NULL) on %s", KIND[kind]);
		CHECK(kp_realloc(bad, block, 64, 0) == NULL, "kp_realloc on %s", KIND[kind]);
		CHECK(kp_free(bad, block) == KP_EINVAL, "kp_free on %s", KIND[kind]);
		CHECK(kp_free(bad, NULL) == 0, "kp_free(NULL) on %s", KIND[kind]);
		CHECK(kp_usable_size(bad, block) == 0, "kp_usable_size on %s", KIND[kind]);
		kp_thread_flush(bad);
		CHECK(kp_critical_enter(bad, 1) == KP_EINVAL, "kp_critical_enter on %s", KIND[kind]);
		kp_critical_exit(bad);
		CHECK(memcmp(g, copy, GARBAGE) == 0, "a call wrote into the %s passed as a pool", KIND[kind]);
		munmap(g, GARBAGE);
		free(copy);
	}
	CHECK(kp_usable_size(real, block) >= 100 && kp_free(real, block) == 0, "the real pool still works");
	kp_destroy(real);
}

/* The lifecycle and observation calls on memory that is no pool. */
static void test_garbage_lifecycle_calls(void)
{
	for (int kind = 0; kind < 3; kind++) {
		unsigned char *g = garbage(kind), *copy = malloc(GARBAGE);
		REQUIRE(g && copy, "mmap");
		memcpy(copy, g, GARBAGE);
		kp_pool *bad = (kp_pool *)g;
		char buf[256];
		kp_event ev[4];
		CHECK(kp_stats_json(bad, buf, sizeof buf) == KP_EINVAL, "kp_stats_json on %s", KIND[kind]);
		CHECK(says_not_a_pool(), "kp_stats_json on %s: error '%s'", KIND[kind], kp_last_error());
		CHECK(kp_events_drain(bad, ev, 4) == 0, "kp_events_drain on %s", KIND[kind]);
		CHECK(kp_fault_inject(bad, "mmap@nth=1") == KP_EINVAL, "kp_fault_inject on %s", KIND[kind]);
		CHECK(kp_critical_token(bad) == 0, "kp_critical_token on %s", KIND[kind]);
		CHECK(kp_daemon_step(bad, 1) == KP_EINVAL, "kp_daemon_step on %s", KIND[kind]);
		CHECK(kp_daemon_start(bad) == KP_EINVAL, "kp_daemon_start on %s", KIND[kind]);
		kp_daemon_wake(bad);
		kp_daemon_stop(bad);
		CHECK(says_not_a_pool(), "kp_daemon_stop on %s: error '%s'", KIND[kind], kp_last_error());
		kp_destroy(bad);
		CHECK(says_not_a_pool(), "kp_destroy on %s: error '%s'", KIND[kind], kp_last_error());
		CHECK(memcmp(g, copy, GARBAGE) == 0, "a call wrote into the %s passed as a pool", KIND[kind]);
		munmap(g, GARBAGE);
		free(copy);
	}
}

/* A destroyed pool: the registry-checked calls refuse it without reading
 * it (its memory is gone). */
static void test_destroyed_pool(void)
{
	kp_pool *pool = kp_create("primary_initial:4m,daemon:on");
	REQUIRE(pool, "kp_create: %s", kp_last_error());
	kp_free(pool, kp_alloc(pool, 64, 0));
	kp_destroy(pool);
	char buf[256];
	kp_event ev[4];
	CHECK(kp_stats_json(pool, buf, sizeof buf) == KP_EINVAL, "kp_stats_json on a destroyed pool");
	CHECK(says_not_a_pool(), "kp_stats_json on a destroyed pool: error '%s'", kp_last_error());
	CHECK(kp_events_drain(pool, ev, 4) == 0, "kp_events_drain on a destroyed pool");
	CHECK(kp_fault_inject(pool, "all@off") == KP_EINVAL, "kp_fault_inject on a destroyed pool");
	CHECK(kp_critical_token(pool) == 0, "kp_critical_token on a destroyed pool");
	CHECK(kp_daemon_step(pool, 1) == KP_EINVAL, "kp_daemon_step on a destroyed pool");
	CHECK(kp_daemon_start(pool) == KP_EINVAL, "kp_daemon_start on a destroyed pool");
	kp_daemon_wake(pool);
	kp_daemon_stop(pool);
	CHECK(says_not_a_pool(), "kp_daemon_stop on a destroyed pool: error '%s'", kp_last_error());
	kp_destroy(pool); /* twice */
	CHECK(says_not_a_pool(), "a second kp_destroy: error '%s'", kp_last_error());
	/* the library goes on */
	KT_POOL(again, "primary_initial:4m,daemon:off");
	void *p = kp_alloc(again, 64, 0);
	CHECK(p && kp_free(again, p) == 0, "a new pool after the misuse");
	kp_destroy(again);
}

int main(void)
{
	RUN(test_garbage_allocation_calls);
	RUN(test_garbage_lifecycle_calls);
	RUN(test_destroyed_pool);
	return ktest_summary();
}
