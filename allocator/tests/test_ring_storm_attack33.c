/*
 * test_ring_storm_attack33.c - the event ring on the pool's first page
 * (s33-fixed: the pool's tail and the ring's head and first slots moved
 * there, bpurge_blk past the ring): a storm of invalid and double frees
 * from 4 threads at once (layout:outline and layout:inline), with a
 * drainer thread draining meanwhile, well past the ring's 1,024 slots.
 * Asserted: every event drained has a sequence number one past the one
 * before (no slot read twice or skipped unless counted dropped), drained +
 * dropped == recorded == the frees refused, kind and address those of an
 * invalid or double free, and the pool still serves and frees blocks
 * afterwards (its fields past the ring not overwritten: a live block's
 * bytes intact, stats sane, kp_destroy clean).
 * A guard: held on s33 atta (release: 12,000 recorded each, drained +
 * dropped equal, no gap with none dropped, no wrong kind).
 * Reproduce:
 *   make -C allocator VARIANT=release build/release/tests/test_ring_storm_attack33 &&
 *   allocator/build/release/tests/test_ring_storm_attack33
 */
#define _GNU_SOURCE 1
#include "ktest.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#define THREADS 4
#define PER 3000

static kp_pool *pool;
static _Atomic long refused;
static _Atomic bool done;
static long drained, gaps, wrong;
static uint64_t last_seq;
static bool any;

static void *storm(void *arg)
{
	uintptr_t t = (uintptr_t)arg;
	char local[64];
	for (int i = 0; i < PER; i++) {
		int rc;
		if (i % 3 == 0) {
			void *p = kp_alloc(pool, 40 + t, 0);
			kp_free(pool, p);
			rc = kp_free(pool, p); /* a double free */
		} else
			rc = kp_free(pool, local + (i % 8) * 8); /* never given out */
		if (rc < 0)
			atomic_fetch_add(&refused, 1);
	}
	return NULL;
}

static void drain_some(void)
{
	kp_event ev[64];
	size_t n;
	while ((n = kp_events_drain(pool, ev, 64)) > 0)
		for (size_t i = 0; i < n; i++) {
			if (any && ev[i].seq != last_seq + 1)
				gaps++;
			last_seq = ev[i].seq;
			any = true;
			if (ev[i].kind != KP_EV_INVALID_FREE && ev[i].kind != KP_EV_DOUBLE_FREE)
				wrong++;
			drained++;
		}
}

static void *drainer(void *arg)
{
	(void)arg;
	while (!atomic_load(&done))
		drain_some();
	return NULL;
}

static void storm_in(const char *conf)
{
	pool = kp_create(conf);
	REQUIRE(pool, "kp_create: %s", kp_last_error());
	drained = gaps = wrong = 0;
	any = false;
	atomic_store(&refused, 0);
	atomic_store(&done, false);
	/* a live block across the storm */
	uint8_t *keep = kp_alloc(pool, 200, 0);
	REQUIRE(keep, "kp_alloc");
	memset(keep, 0x5a, 200);
	kp_events_drain(pool, (kp_event[8]){0}, 8); /* anything before (a grow) */
	int64_t rec0 = kt_stat(pool, "events.recorded"), drop0 = kt_stat(pool, "events.dropped");
	pthread_t d, t[THREADS];
	pthread_create(&d, NULL, drainer, NULL);
	for (uintptr_t i = 0; i < THREADS; i++)
		pthread_create(&t[i], NULL, storm, (void *)i);
	for (int i = 0; i < THREADS; i++)
		pthread_join(t[i], NULL);
	atomic_store(&done, true);
	pthread_join(d, NULL);
	drain_some();
	int64_t rec = kt_stat(pool, "events.recorded") - rec0, drop = kt_stat(pool, "events.dropped") - drop0;
	long bad = 0;
	for (int i = 0; i < 200; i++)
		bad += keep[i] != 0x5a;
	fprintf(stderr, "  %s: %ld refused, %lld recorded, %ld drained, %lld dropped, %ld gaps, %ld wrong kinds\n",
		conf, atomic_load(&refused), (long long)rec, drained, (long long)drop, gaps, wrong);
	CHECK(rec == atomic_load(&refused), "%s: %lld events recorded for %ld refused frees", conf, (long long)rec,
	      atomic_load(&refused));
	CHECK(drained + drop == rec, "%s: %ld drained + %lld dropped != %lld recorded", conf, drained, (long long)drop,
	      (long long)rec);
	CHECK(drop > 0 || gaps == 0, "%s: %ld gaps in the sequence with none dropped", conf, gaps);
	CHECK(wrong == 0, "%s: %ld events of another kind", conf, wrong);
	CHECK(bad == 0, "%s: %ld bytes of a live block changed", conf, bad);
	CHECK(kp_free(pool, keep) == 0, "%s: the live block's free", conf);
	for (int i = 0; i < 1000; i++)
		kp_free(pool, kp_alloc(pool, 1 + (size_t)i * 7, 0));
	CHECK(kt_stat(pool, "primary.in_use_bytes") == 0, "%s: bytes in use at the end", conf);
	kp_destroy(pool);
}

static void test_storm(void)
{
	storm_in("layout:outline,daemon:off");
	storm_in("layout:inline,daemon:off");
	storm_in("layout:outline,daemon:on");
}

int main(void)
{
	RUN(test_storm);
	return ktest_summary();
}
