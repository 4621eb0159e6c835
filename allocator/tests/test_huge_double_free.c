/*
 * test_huge_double_free.c - a huge block freed twice is a double free, also
 * once its mapping is gone (session 20's outside attack).
 *
 * A huge block over KP_HUGE_CACHE_MAX (32 MiB) is unmapped at its free, and
 * one kept for reuse is unmapped when the daemon trims the cache: the
 * pagemap no longer knows the address, and a second free was reported as
 * "free of a pointer never given out" (invalid_free), the wrong kind.
 * huge.c keeps the payload addresses of the last KP_HUGE_GONE mappings it
 * gave back; a free of one is a double free (event, counter, return code),
 * with no read of the memory that is gone; so is a free of the address a
 * realloc moved a huge block from. A pointer never given out stays an
 * invalid free.
 */
#define _GNU_SOURCE
#include "ktest.h"

#include "internal.h"

#define MiB ((size_t)1 << 20)

static void check_double_free(kp_pool *pool, void *p, const char *what)
{
	int64_t before = kt_stat(pool, "integrity.double_frees");
	int64_t invalid = kt_stat(pool, "integrity.invalid_frees");
	kt_events_clear(pool);
	int rc = kp_free(pool, p);
	CHECK(rc == KP_EDOUBLEFREE, "%s: second free returned %d, want KP_EDOUBLEFREE (%d): %s", what, rc,
	      KP_EDOUBLEFREE, kp_last_error());
	CHECK(kt_stat(pool, "integrity.double_frees") == before + 1, "%s: double_frees %lld, want %lld", what,
	      (long long)kt_stat(pool, "integrity.double_frees"), (long long)before + 1);
	CHECK(kt_stat(pool, "integrity.invalid_frees") == invalid, "%s: counted as an invalid free", what);
	kp_event ev = kt_last_event(pool, KP_EV_DOUBLE_FREE);
	CHECK(ev.kind == KP_EV_DOUBLE_FREE && ev.addr == (uint64_t)(uintptr_t)p, "%s: no double_free event for %p",
	      what, p);
	CHECK(strstr(ev.text, "double free") != NULL, "%s: event text '%s'", what, ev.text);
}

static void test_unmapped_at_its_free(void)
{
	KT_POOL(pool, "daemon:off,seed:3");
	char *big = kp_alloc(pool, 40 * MiB, 0);
	REQUIRE(big != NULL, "kp_alloc(40 MiB): %s", kp_last_error());
	big[0] = 1;
	REQUIRE(kp_free(pool, big) == KP_OK, "first free: %s", kp_last_error());
	CHECK(kt_stat(pool, "primary.huge_cached_bytes") == 0, "a 40 MiB mapping was kept");
	check_double_free(pool, big, "40 MiB");
	/* and again: still a double free, the pool still serves */
	check_double_free(pool, big, "40 MiB, third free");
	void *q = kp_alloc(pool, 100, 0);
	CHECK(q != NULL && kp_free(pool, q) == KP_OK, "the pool no longer serves");
	kp_destroy(pool);
}

static void test_unmapped_from_the_cache(void)
{
	KT_POOL(pool, "daemon:off,step_clock:on,decay_ms:100,seed:4");
	char *big = kp_alloc(pool, 8 * MiB, 0);
	REQUIRE(big != NULL, "kp_alloc(8 MiB): %s", kp_last_error());
	big[0] = 1;
	REQUIRE(kp_free(pool, big) == KP_OK, "first free: %s", kp_last_error());
	CHECK(kt_stat(pool, "primary.huge_cached_bytes") > 0, "an 8 MiB mapping was not kept");
	check_double_free(pool, big, "8 MiB, kept"); /* the pagemap still knows it */
	for (int i = 0; i < 10 && kt_stat(pool, "primary.huge_cached_bytes") > 0; i++)
		kp_daemon_step(pool, 1000);
	CHECK(kt_stat(pool, "primary.huge_cached_bytes") == 0, "the daemon kept the mapping past its decay");
	check_double_free(pool, big, "8 MiB, unmapped by the daemon");
	kp_destroy(pool);
}

static void test_left_by_a_moving_realloc(void)
{
	KT_POOL(pool, "daemon:off,seed:6");
	char *big = kp_alloc(pool, 40 * MiB, 0);
	REQUIRE(big != NULL, "kp_alloc(40 MiB): %s", kp_last_error());
	big[0] = 7;
	char *moved = kp_realloc(pool, big, 90 * MiB, 0);
	REQUIRE(moved != NULL, "kp_realloc(90 MiB): %s", kp_last_error());
	CHECK(moved[0] == 7, "realloc lost the first byte");
	if (moved != big) /* the old address was given up by the realloc */
		check_double_free(pool, big, "the address a realloc moved from");
	else
		printf("   the realloc grew in place: nothing to check\n");
	CHECK(kp_free(pool, moved) == KP_OK, "free of the moved block");
	kp_destroy(pool);
}

static void test_bounded_and_never_given_out(void)
{
	KT_POOL(pool, "daemon:off,seed:5");
	/* a pointer never given out, where no huge block was: still invalid */
	int64_t invalid = kt_stat(pool, "integrity.invalid_frees");
	CHECK(kp_free(pool, (void *)(uintptr_t)0x123456789abcdef0ull) == KP_ENOTOURS, "wild free");
	CHECK(kt_stat(pool, "integrity.invalid_frees") == invalid + 1, "wild free not counted as invalid");
	/* more huge blocks released than the record holds: the newest are
	 * remembered, the oldest forgotten (a bound, not a leak) */
	enum { N = KP_HUGE_GONE + 4 };
	static char *gone[N];
	for (int i = 0; i < N; i++) {
		gone[i] = kp_alloc(pool, 40 * MiB, 0);
		REQUIRE(gone[i] != NULL, "kp_alloc(40 MiB): %s", kp_last_error());
		REQUIRE(kp_free(pool, gone[i]) == KP_OK, "free");
	}
	check_double_free(pool, gone[N - 1], "the newest of many");
	kp_destroy(pool);
}

int main(void)
{
	RUN(test_unmapped_at_its_free);
	RUN(test_unmapped_from_the_cache);
	RUN(test_left_by_a_moving_realloc);
	RUN(test_bounded_and_never_given_out);
	return ktest_summary();
}
