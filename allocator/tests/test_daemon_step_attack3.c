/*
 * test_daemon_step_attack3.c - kp_daemon_step's range refusal under
 * concurrent steps (daemon.c: a compare-and-swap on the clock offset, the
 * bound 2^62 ns of steps): attacks that held.
 *
 *   1. 0, 1 and UINT64_MAX ms: 0 and 1 pass, UINT64_MAX is refused, the
 *      offset moves by exactly 0, 10^6 and 0 ns.
 *   2. Four threads at once, each stepping by a large advance (2^36 ms,
 *      6.9e16 ns: about 67 of them fit under the bound) until refused, then
 *      by 2^35 ms until refused, and so on down to 1 ms: the offset ends within 10^6 ns of the
 *      bound, never past it, and equals the sum of the accepted advances
 *      exactly (none lost, none counted twice); each refusal returns
 *      KP_EINVAL with errno EINVAL; a thread watching the pool's clock
 *      meanwhile never sees it go back.
 *   3. The same pool's daemon running (a pass every ms) while three
 *      threads step it by 0-2,000 ms and two allocate and free small, large
 *      and huge blocks: every step passes, the clock never goes back, the
 *      blocks keep their bytes, no integrity event.
 */
#define _GNU_SOURCE 1
#include "ktest.h"

#include "internal.h"

#include <pthread.h>

#define CONF "daemon:off,seed:5,backup:0"
#define NT 4

static kp_pool *pool;
static atomic_int stop_watch;
static atomic_uint_fast64_t went_back;

static void test_edges(void)
{
	pool = kp_create(CONF);
	REQUIRE(pool, "kp_create: %s", kp_last_error());
	uint64_t o0 = atomic_load(&pool->daemon.clock_offset_ns);
	CHECK(kp_daemon_step(pool, 0) >= 0, "step of 0 refused");
	CHECK(atomic_load(&pool->daemon.clock_offset_ns) == o0, "a step of 0 moved the offset");
	CHECK(kp_daemon_step(pool, 1) >= 0, "step of 1 refused");
	CHECK(atomic_load(&pool->daemon.clock_offset_ns) == o0 + 1000000ull, "a step of 1 ms did not move it 10^6 ns");
	errno = 0;
	CHECK(kp_daemon_step(pool, UINT64_MAX) == KP_EINVAL && errno == EINVAL, "UINT64_MAX not refused");
	CHECK(atomic_load(&pool->daemon.clock_offset_ns) == o0 + 1000000ull, "a refused step moved the offset");
	kp_destroy(pool);
}

typedef struct stepper {
	pthread_t t;
	uint64_t accepted_ns;
	unsigned refused_bad; /* refusals not KP_EINVAL + EINVAL */
	unsigned big, small;
} stepper;

static void *step_main(void *arg)
{
	stepper *s = arg;
	for (int shift = 36; shift >= 0; shift--) {
		uint64_t adv = (uint64_t)1 << shift;
		for (unsigned n = 0; n < 1000; n++) { /* a few each: the rest of the room is under 2 * adv * NT */
			errno = 0;
			int rc = kp_daemon_step(pool, adv);
			if (rc < 0) {
				s->refused_bad += !(rc == KP_EINVAL && errno == EINVAL);
				break;
			}
			s->accepted_ns += adv * 1000000ull;
			if (shift)
				s->big++;
			else
				s->small++;
		}
	}
	return NULL;
}

static void *watch_main(void *arg)
{
	(void)arg;
	uint64_t prev = kp__pool_now(pool);
	while (!atomic_load(&stop_watch)) {
		uint64_t now = kp__pool_now(pool);
		if (now < prev)
			atomic_fetch_add(&went_back, 1);
		prev = now;
	}
	return NULL;
}

static void test_concurrent_near_bound(void)
{
	pool = kp_create(CONF);
	REQUIRE(pool, "kp_create: %s", kp_last_error());
	uint64_t o0 = atomic_load(&pool->daemon.clock_offset_ns);
	stepper s[NT];
	memset(s, 0, sizeof s);
	pthread_t w;
	atomic_store(&stop_watch, 0);
	REQUIRE(pthread_create(&w, NULL, watch_main, NULL) == 0, "thread");
	for (int i = 0; i < NT; i++)
		REQUIRE(pthread_create(&s[i].t, NULL, step_main, &s[i]) == 0, "thread");
	uint64_t sum = 0;
	unsigned bad = 0, big = 0, small = 0;
	for (int i = 0; i < NT; i++) {
		pthread_join(s[i].t, NULL);
		sum += s[i].accepted_ns;
		bad += s[i].refused_bad;
		big += s[i].big;
		small += s[i].small;
	}
	atomic_store(&stop_watch, 1);
	pthread_join(w, NULL);
	uint64_t off = atomic_load(&pool->daemon.clock_offset_ns), bound = (uint64_t)1 << 62;
	printf("   %d threads: %u steps of 2^36 down to 2 ms and %u of 1 ms accepted, offset %llu ns (bound %llu)\n",
	       NT, big, small, (unsigned long long)off, (unsigned long long)bound);
	CHECK(off - o0 == sum, "the offset moved %llu ns, the accepted steps add to %llu",
	      (unsigned long long)(off - o0), (unsigned long long)sum);
	CHECK(off <= bound && bound - off < 1000000ull, "offset %llu ns not within 1 ms under the bound",
	      (unsigned long long)off);
	CHECK(bad == 0, "%u refusals without KP_EINVAL and EINVAL", bad);
	CHECK(atomic_load(&went_back) == 0, "the pool's clock went back %llu times",
	      (unsigned long long)atomic_load(&went_back));
	void *p = kp_alloc(pool, 3000, 0);
	CHECK(p && kp_free(pool, p) == 0, "the pool after the steps");
	kp_destroy(pool);
}

static atomic_int churn_stop;
static atomic_uint churn_bad;

static void *stepper3(void *arg)
{
	uint64_t s = (uint64_t)(uintptr_t)arg, bad = 0;
	for (int i = 0; i < 300; i++)
		bad += kp_daemon_step(pool, kt_rand_range(&s, 0, 2000)) < 0;
	atomic_fetch_add(&churn_bad, (unsigned)bad);
	return NULL;
}

static void *churner(void *arg)
{
	uint64_t s = (uint64_t)(uintptr_t)arg;
	unsigned char *v[16] = {0};
	size_t n[16] = {0};
	while (!atomic_load(&churn_stop)) {
		unsigned i = (unsigned)kt_rand_range(&s, 0, 15);
		if (v[i]) {
			if (v[i][0] != (unsigned char)i || v[i][n[i] - 1] != (unsigned char)i)
				atomic_fetch_add(&churn_bad, 1);
			kp_free(pool, v[i]);
		}
		unsigned w = (unsigned)kt_rand_range(&s, 0, 19);
		n[i] = w == 0  ? kt_rand_range(&s, 5u << 20, 9u << 20)
		       : w < 5 ? kt_rand_range(&s, 140000, 700000)
			       : kt_rand_range(&s, 1, 2000);
		v[i] = kp_alloc(pool, n[i], 0);
		if (!v[i]) {
			atomic_fetch_add(&churn_bad, 1);
			continue;
		}
		v[i][0] = v[i][n[i] - 1] = (unsigned char)i;
	}
	for (unsigned i = 0; i < 16; i++)
		kp_free(pool, v[i]);
	return NULL;
}

static void test_steps_beside_daemon(void)
{
	pool = kp_create("daemon_interval_ms:1,decay_ms:0,seed:6,backup:0,primary_max:128m");
	REQUIRE(pool, "kp_create: %s", kp_last_error());
	atomic_store(&stop_watch, 0);
	atomic_store(&went_back, 0);
	atomic_store(&churn_stop, 0);
	pthread_t w, c[2], st[3];
	REQUIRE(pthread_create(&w, NULL, watch_main, NULL) == 0, "thread");
	for (uintptr_t i = 0; i < 2; i++)
		REQUIRE(pthread_create(&c[i], NULL, churner, (void *)(i + 11)) == 0, "thread");
	for (uintptr_t i = 0; i < 3; i++)
		REQUIRE(pthread_create(&st[i], NULL, stepper3, (void *)(i + 3)) == 0, "thread");
	for (int i = 0; i < 3; i++)
		pthread_join(st[i], NULL);
	atomic_store(&churn_stop, 1);
	for (int i = 0; i < 2; i++)
		pthread_join(c[i], NULL);
	atomic_store(&stop_watch, 1);
	pthread_join(w, NULL);
	printf("   900 steps beside a running daemon and two churning threads: %u bad, clock back %llu times\n",
	       atomic_load(&churn_bad), (unsigned long long)atomic_load(&went_back));
	CHECK(atomic_load(&churn_bad) == 0, "%u steps refused or blocks changed", atomic_load(&churn_bad));
	CHECK(atomic_load(&went_back) == 0, "the pool's clock went back");
	CHECK(kt_stat(pool, "integrity.corruptions") == 0 && kt_stat(pool, "integrity.freelist_errors") == 0,
	      "integrity events");
	kp_destroy(pool);
}

int main(void)
{
	RUN(test_edges);
	RUN(test_concurrent_near_bound);
	RUN(test_steps_beside_daemon);
	return ktest_summary();
}
