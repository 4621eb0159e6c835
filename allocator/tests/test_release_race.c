/*
 * test_release_race.c - stale and foreign pointers freed while the pool
 * releases the memory they point into (issue 12, defect 1).
 *
 * kpool.h promises that bad input never crashes the process. One thread
 * frees, and asks the usable size of, pointers the pool gave out earlier
 * and pointers 64 KiB apart inside their segments, while another drives
 * daemon passes (kp_daemon_step, decay 0) that release every segment the
 * first one empties and every huge mapping it leaves in the cache. Before,
 * the release cleared the pagemap entry and unmapped at once, and a lookup
 * that had found the segment just before read its header after the unmap:
 * SIGSEGV in primary_hdr within a second or two. Every such call must be
 * refused (non-zero, an integrity event) and the process must live.
 *
 * Knobs (environment): KP_RACE_MS, how long each test races (default 1500;
 * the crash came within 0.1-2.3 s), KP_RACE_SEED.
 */
#include "ktest.h"

#include <pthread.h>

#define KiB ((size_t)1 << 10)
#define MiB ((size_t)1 << 20)
#define SEG ((uintptr_t)4 << 20)
#define UNIT ((uintptr_t)64 << 10)

/* Everything may go back at once: no initial capacity, no headroom kept, no
 * decay; no pre-faulting or huge pages (nothing here reads the memory). */
#define CONF "daemon:off,primary_initial:0,low_wm:0,high_wm:0,decay_ms:0,prefault:off,thp:off,backup:1m"

static kp_pool *pool;
static int stop;

static void *releaser(void *arg)
{
	(void)arg;
	long passes = 0;
	while (!__atomic_load_n(&stop, __ATOMIC_RELAXED)) {
		kp_daemon_step(pool, 1);
		passes++;
	}
	return (void *)passes;
}

static unsigned race_ms(void)
{
	const char *v = getenv("KP_RACE_MS");
	return v && atoi(v) > 0 ? (unsigned)atoi(v) : 1500;
}

#define RING 32

struct tally {
	long calls, accepted, sized;
};

/* Free and size one pointer that is no live block: both must refuse it. */
static void bad_call(void *p, struct tally *t)
{
	t->calls++;
	if (kp_usable_size(pool, p) != 0)
		t->sized++;
	if (kp_free(pool, p) == 0)
		t->accepted++;
}

static void race(const char *label, int huge)
{
	pool = kp_create(CONF);
	REQUIRE(pool != NULL, "kp_create: %s", kp_last_error());
	const char *sv = getenv("KP_RACE_SEED");
	uint64_t rng = sv ? strtoull(sv, NULL, 0) : kt_now_ns();
	printf("   %s: seed %llu (KP_RACE_SEED), %u ms (KP_RACE_MS)\n", label, (unsigned long long)rng, race_ms());
	void *ring[RING] = {0};
	unsigned n = 0;
	struct tally t = {0, 0, 0};
	stop = 0;
	pthread_t th;
	REQUIRE(pthread_create(&th, NULL, releaser, NULL) == 0, "pthread_create");
	uint64_t end = kt_now_ms() + race_ms();
	long rounds = 0;
	while (kt_now_ms() < end) {
		/* A block that empties its segment (a large run in a segment of its
		 * own), or a huge block that goes to the huge cache: either way, the
		 * next pass releases it. This thread keeps no live block, so each
		 * pointer below is stale or foreign. */
		size_t size = huge ? kt_rand_range(&rng, 3 * MiB, 12 * MiB) : kt_rand_range(&rng, 256 * KiB, 3 * MiB);
		void *p = kp_alloc(pool, size, 0);
		if (p) {
			ring[n++ % RING] = p;
			kp_free(pool, p);
		}
		for (unsigned i = 0; i < RING && i < n; i++) {
			char *q = (char *)ring[i];
			bad_call(q, &t);
			char *seg = (char *)((uintptr_t)q & ~(SEG - 1));
			for (uintptr_t off = 0; off < SEG; off += UNIT)
				bad_call(seg + off + 16, &t);
		}
		kt_events_clear(pool); /* keep the ring from dropping: the counters below are what is checked */
		rounds++;
	}
	__atomic_store_n(&stop, 1, __ATOMIC_RELAXED);
	void *passes;
	pthread_join(th, &passes);
	int64_t refused = kt_stat(pool, "integrity.invalid_frees") + kt_stat(pool, "integrity.double_frees") +
			  kt_stat(pool, "integrity.corruptions");
	int64_t released = kt_stat(pool, "primary.shrinks");
	printf("   %s: %ld rounds, %ld bad calls, %ld daemon passes, %lld segments released, %lld refusals counted\n",
	       label, rounds, t.calls, (long)passes, (long long)released, (long long)refused);
	CHECK(t.accepted == 0, "%s: kp_free accepted %ld stale or foreign pointers", label, t.accepted);
	CHECK(t.sized == 0, "%s: kp_usable_size gave a size for %ld stale or foreign pointers", label, t.sized);
	CHECK(refused >= t.calls, "%s: %ld bad frees, %lld counted as integrity violations", label, t.calls,
	      (long long)refused);
	if (!huge)
		CHECK(released > 0, "%s: no segment released while racing", label);
	kp_destroy(pool);
}

/* The daemon's shrink releasing segments. */
static void test_stale_frees_racing_shrink(void)
{
	race("shrink", 0);
}

/* The huge-block cache's release (kp__huge_cache_trim). */
static void test_stale_frees_racing_huge_release(void)
{
	race("huge cache", 1);
}

int main(void)
{
	RUN(test_stale_frees_racing_shrink);
	RUN(test_stale_frees_racing_huge_release);
	return ktest_summary();
}
