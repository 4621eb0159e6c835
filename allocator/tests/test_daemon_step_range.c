/*
 * test_daemon_step_range.c - kp_daemon_step refuses an advance that would
 * wrap the pool's clock (daemon.c, kp_daemon_step; kpool.h).
 *
 * The step added advance_ms * 10^6 to the pool's clock offset: past 2^64 /
 * 10^6 ms (584 years) the product wrapped, and steps that add up past 2^64
 * ns wrapped the offset, so the pool's clock went back (a pass after it saw
 * time run backwards: deadlines such as purge_at_ns = now + decay sat far in
 * the future, or at 0). Checked:
 *
 *   1. UINT64_MAX, UINT64_MAX / 10^6 + 1 and 2^62 ms: KP_EINVAL, errno
 *      EINVAL, kp_last_error() names kp_daemon_step and the value, one
 *      daemon event per refusal, and the pool's clock did not move;
 *   2. steps that are each fine but add up past the bound: those up to it
 *      pass, the first past it is refused, and the clock never goes back;
 *   3. the pool still allocates, frees and steps after the refusals, and a
 *      step of 0 and of the largest accepted advance pass.
 */
#define _GNU_SOURCE 1
#include "ktest.h"

#include "internal.h"

#define CONF "daemon:off,seed:3,backup:0"

static void check_refused(kp_pool *pool, uint64_t ms)
{
	uint64_t before = atomic_load(&pool->daemon.clock_offset_ns);
	kt_events_clear(pool);
	errno = 0;
	int rc = kp_daemon_step(pool, ms);
	CHECK(rc == KP_EINVAL, "kp_daemon_step(%llu ms) = %d, not KP_EINVAL", (unsigned long long)ms, rc);
	CHECK(errno == EINVAL, "errno %d after kp_daemon_step(%llu ms)", errno, (unsigned long long)ms);
	char want[32];
	snprintf(want, sizeof want, "%llu", (unsigned long long)ms);
	const char *err = kp_last_error();
	CHECK(strstr(err, "kp_daemon_step") && strstr(err, want), "kp_last_error() '%s' names neither the call nor %s",
	      err, want);
	CHECK(kt_events_count(pool, KP_EV_DAEMON) == 1, "no daemon event for the refused step of %llu ms",
	      (unsigned long long)ms);
	uint64_t after = atomic_load(&pool->daemon.clock_offset_ns);
	CHECK(after == before, "the refused step of %llu ms moved the clock offset from %llu to %llu ns",
	      (unsigned long long)ms, (unsigned long long)before, (unsigned long long)after);
}

static void test_huge_advance_refused(void)
{
	kp_pool *pool = kp_create(CONF);
	REQUIRE(pool != NULL, "kp_create: %s", kp_last_error());
	check_refused(pool, UINT64_MAX);
	check_refused(pool, UINT64_MAX / 1000000ull + 1);
	check_refused(pool, (uint64_t)1 << 62);
	void *p = kp_alloc(pool, 100, 0);
	CHECK(p != NULL && kp_free(pool, p) == 0, "the pool after the refusals");
	CHECK(kp_daemon_step(pool, 0) >= 0, "a step of 0 after the refusals");
	kp_destroy(pool);
}

static void test_steps_add_up(void)
{
	kp_pool *pool = kp_create(CONF);
	REQUIRE(pool != NULL, "kp_create: %s", kp_last_error());
	/* 2^42 ms = 4.4e18 ns each: five of them pass 2^64 ns */
	uint64_t step = (uint64_t)1 << 42, prev = kp__pool_now(pool);
	unsigned passed = 0, refused = 0, back = 0;
	for (int i = 0; i < 8; i++) {
		int rc = kp_daemon_step(pool, step);
		passed += rc >= 0;
		refused += rc == KP_EINVAL;
		uint64_t now = kp__pool_now(pool);
		back += now < prev;
		prev = now;
	}
	printf("   8 steps of 2^42 ms: %u passed, %u refused, the clock went back %u times\n", passed, refused, back);
	CHECK(back == 0, "the pool's clock went back %u times", back);
	CHECK(refused >= 4 && passed >= 1, "%u steps passed, %u refused", passed, refused);
	void *p = kp_alloc(pool, 5000, 0);
	CHECK(p != NULL && kp_free(pool, p) == 0, "the pool after the steps");
	kp_destroy(pool);
}

int main(void)
{
	RUN(test_huge_advance_refused);
	RUN(test_steps_add_up);
	return ktest_summary();
}
