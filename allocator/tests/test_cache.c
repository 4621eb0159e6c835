/*
 * test_cache.c - the per-thread cache keeps system calls off the allocation
 * path: once the working set is stable, a million alloc/free operations
 * leave every syscalls.alloc counter where it was.
 */
#include "ktest.h"

#include <pthread.h>

enum { SLOTS = 1000, WARM_OPS = 200000, OPS = 1000000 };
/* The measured operations of the one-thread run with the daemon off: under
 * TSan a tenth (the only thread: TSan has no race to find, and the
 * release and ASan runs count the system calls of the full million; 17 s
 * of the TSan suite's 49 s here at load 9). */
#define OPS_ALONE (KT_TSAN ? OPS / 10 : OPS)

static const char *const KINDS[] = {"mmap", "munmap", "madvise", "mprotect", "other"};
enum { NKINDS = sizeof KINDS / sizeof KINDS[0] };

static void read_alloc_syscalls(kp_pool *pool, int64_t out[NKINDS])
{
	char *js = kt_stats(pool);
	char path[64];
	for (int k = 0; k < NKINDS; k++) {
		snprintf(path, sizeof path, "syscalls.alloc.%s", KINDS[k]);
		out[k] = kt_json_int(js, path, KT_MISSING);
		CHECK(out[k] != KT_MISSING, "stats key %s missing", path);
	}
	free(js);
}

static void compare(const char *what, const int64_t before[NKINDS], const int64_t after[NKINDS], long ops)
{
	for (int k = 0; k < NKINDS; k++)
		CHECK(after[k] == before[k], "%s: syscalls.alloc.%s went %lld -> %lld over %ld steady operations", what,
		      KINDS[k], (long long)before[k], (long long)after[k], ops);
}

/*
 * Each slot has its own fixed size, so the working set is exactly stable:
 * nothing ever needs new memory after the warm-up. Sizes cover the small
 * classes, the larger classes and page runs.
 */
static size_t slot_size(unsigned i)
{
	uint64_t s = 0x5eed + i;
	uint64_t r = kt_rand(&s);
	if (i % 50 == 0)
		return kt_rand_log(&s, 16384, 200000);
	if (i % 8 == 0)
		return kt_rand_log(&s, 1024, 16384);
	return (size_t)(r % 1024);
}

static void run_fixed(kp_pool *pool, const char *what, long ops)
{
	static void *slot[SLOTS];
	uint64_t rng = 77;
	long nulls = 0;
	for (unsigned i = 0; i < SLOTS; i++)
		slot[i] = kp_alloc(pool, slot_size(i), 0);
	for (long op = 0; op < WARM_OPS; op++) {
		unsigned i = (unsigned)(kt_rand(&rng) % SLOTS);
		kp_free(pool, slot[i]);
		slot[i] = kp_alloc(pool, slot_size(i), 0);
	}
	int64_t before[NKINDS], after[NKINDS];
	read_alloc_syscalls(pool, before);
	for (long op = 0; op < ops; op++) {
		unsigned i = (unsigned)(kt_rand(&rng) % SLOTS);
		kp_free(pool, slot[i]);
		slot[i] = kp_alloc(pool, slot_size(i), op & 1 ? KP_ZERO : 0);
		nulls += slot[i] == NULL;
	}
	read_alloc_syscalls(pool, after);
	compare(what, before, after, ops);
	CHECK(nulls == 0, "%s: %ld allocations returned NULL", what, nulls);
	for (unsigned i = 0; i < SLOTS; i++)
		kp_free(pool, slot[i]);
}

/* daemon off: nobody else could have grown the pool for us */
static void test_steady_fixed_daemon_off(void)
{
	KT_POOL(pool, "primary_initial:64m,daemon:off,seed:3");
	run_fixed(pool, "daemon off", OPS_ALONE);
	kp_destroy(pool);
}

static void test_steady_fixed_daemon_on(void)
{
	KT_POOL(pool, "primary_initial:64m,seed:3");
	run_fixed(pool, "daemon on", OPS);
	kp_destroy(pool);
}

/*
 * A random working set: every free is followed by an allocation of a fresh
 * random size (16 B .. 64 KiB, log-uniform), 1000 live. After a long warm-up
 * each class has the spans it needs; the pool still must not call the OS.
 */
static void test_steady_random(void)
{
	KT_POOL(pool, "primary_initial:64m,seed:4");
	static void *slot[SLOTS];
	uint64_t rng = 99;
	for (unsigned i = 0; i < SLOTS; i++)
		slot[i] = kp_alloc(pool, kt_rand_log(&rng, 16, 65536), 0);
	for (long op = 0; op < 2 * WARM_OPS; op++) {
		unsigned i = (unsigned)(kt_rand(&rng) % SLOTS);
		kp_free(pool, slot[i]);
		slot[i] = kp_alloc(pool, kt_rand_log(&rng, 16, 65536), 0);
	}
	int64_t before[NKINDS], after[NKINDS];
	read_alloc_syscalls(pool, before);
	for (long op = 0; op < OPS; op++) {
		unsigned i = (unsigned)(kt_rand(&rng) % SLOTS);
		kp_free(pool, slot[i]);
		slot[i] = kp_alloc(pool, kt_rand_log(&rng, 16, 65536), 0);
	}
	read_alloc_syscalls(pool, after);
	compare("random sizes", before, after, OPS);
	for (unsigned i = 0; i < SLOTS; i++)
		kp_free(pool, slot[i]);
	kp_destroy(pool);
}

/* Two threads in steady state at once, each on its own working set. */
static void *steady_thread(void *arg)
{
	kp_pool *pool = (kp_pool *)arg;
	void *slot[256];
	uint64_t rng = (uint64_t)(uintptr_t)&slot;
	for (unsigned i = 0; i < 256; i++)
		slot[i] = kp_alloc(pool, slot_size(i), 0);
	for (long op = 0; op < OPS / 2; op++) {
		unsigned i = (unsigned)(kt_rand(&rng) % 256);
		kp_free(pool, slot[i]);
		slot[i] = kp_alloc(pool, slot_size(i), 0);
	}
	for (unsigned i = 0; i < 256; i++)
		kp_free(pool, slot[i]);
	return NULL;
}

static pthread_barrier_t start_line;

static void *steady_thread_measured(void *arg)
{
	pthread_barrier_wait(&start_line);
	return steady_thread(arg);
}

static void test_steady_threads(void)
{
	KT_POOL(pool, "primary_initial:64m,seed:5");
	/* warm-up round: the same two threads' pattern, run once to size the pool */
	pthread_t th[2];
	for (int i = 0; i < 2; i++)
		REQUIRE(pthread_create(&th[i], NULL, steady_thread, pool) == 0, "pthread_create");
	for (int i = 0; i < 2; i++)
		pthread_join(th[i], NULL);
	int64_t before[NKINDS], after[NKINDS];
	pthread_barrier_init(&start_line, NULL, 3);
	for (int i = 0; i < 2; i++)
		REQUIRE(pthread_create(&th[i], NULL, steady_thread_measured, pool) == 0, "pthread_create");
	read_alloc_syscalls(pool, before);
	pthread_barrier_wait(&start_line);
	for (int i = 0; i < 2; i++)
		pthread_join(th[i], NULL);
	read_alloc_syscalls(pool, after);
	pthread_barrier_destroy(&start_line);
	compare("two threads (second round)", before, after, OPS);
	kp_destroy(pool);
}

int main(void)
{
	RUN(test_steady_fixed_daemon_off);
	RUN(test_steady_fixed_daemon_on);
	RUN(test_steady_random);
	RUN(test_steady_threads);
	return ktest_summary();
}
