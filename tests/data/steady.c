/*
 * steady.c - the allocation path in steady state, for tests/test_c_suite.py.
 *
 * Warms a fixed working set up until the daemon has settled (no grow or
 * shrink of the pool for SETTLE_MS: the warm-up's fast start raised its
 * measured rate, and the headroom it grew for that is given back after
 * decay_ms), writes a begin marker with write(2), runs a
 * million alloc/free operations on the same working set, writes an end
 * marker, then prints the pool's allocation-path system-call counts before
 * and after the loop. Run under `strace -f`, the allocating thread must make
 * no system call between the two markers; the pool's own counters must agree.
 *
 * Usage: steady [ops] [conf]
 */
#include "kpool.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* Steady means the daemon has nothing left to adapt: no grow or shrink for
 * this long (over two default decay_ms), checked every 50,000 operations. */
#define SETTLE_MS 2500
/* A daemon that never settles is a failure of its own, not a reason to wait
 * for ever. */
#define SETTLE_MAX_MS 15000

#define SLOTS 1000

static const char BEGIN[] = "KPOOL-STEADY-BEGIN\n";
static const char END[] = "KPOOL-STEADY-END\n";

static uint64_t rng_next(uint64_t *s)
{
	uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
	return z ^ (z >> 31);
}

/* Each slot keeps one size, so the working set is exactly stable: small
 * classes, larger classes and a few page-run blocks. */
static size_t slot_size(unsigned i)
{
	uint64_t s = 0x5eed + i;
	uint64_t r = rng_next(&s);
	if (i % 50 == 0)
		return 16384 + (size_t)(r % 180000);
	if (i % 8 == 0)
		return 1024 + (size_t)(r % 15000);
	return (size_t)(r % 1024);
}

static long long now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* grows + shrinks of the pool, from the stats JSON ("pool grows/shrinks"). */
static long long pool_changes(kp_pool *pool)
{
	static char buf[16384];
	if (kp_stats_json(pool, buf, sizeof buf) >= (int)sizeof buf)
		return -1;
	const char *g = strstr(buf, "\"grows\":"), *s = strstr(buf, "\"shrinks\":");
	if (g == NULL || s == NULL)
		return -1;
	return strtoll(g + 8, NULL, 10) + strtoll(s + 10, NULL, 10);
}

/* The sum of the five kinds of syscalls.alloc in the stats JSON. */
static long long alloc_syscalls(kp_pool *pool)
{
	static char buf[16384];
	if (kp_stats_json(pool, buf, sizeof buf) >= (int)sizeof buf)
		return -1;
	const char *a = strstr(buf, "\"alloc\":{");
	if (a == NULL)
		return -1;
	long long sum = 0;
	static const char *const kinds[] = {"\"mmap\":", "\"munmap\":", "\"madvise\":", "\"mprotect\":", "\"other\":"};
	for (int k = 0; k < 5; k++) {
		const char *v = strstr(a, kinds[k]);
		if (v == NULL)
			return -1;
		sum += strtoll(v + strlen(kinds[k]), NULL, 10);
	}
	return sum;
}

int main(int argc, char **argv)
{
	long ops = argc > 1 ? atol(argv[1]) : 1000000;
	kp_pool *pool = kp_create(argc > 2 ? argv[2] : "primary_initial:64m");
	if (pool == NULL) {
		fprintf(stderr, "kp_create: %s\n", kp_last_error());
		return 2;
	}
	static void *slot[SLOTS];
	uint64_t rng = 77;
	for (unsigned i = 0; i < SLOTS; i++)
		slot[i] = kp_alloc(pool, slot_size(i), 0);
	for (long op = 0; op < 200000; op++) {
		unsigned i = (unsigned)(rng_next(&rng) % SLOTS);
		kp_free(pool, slot[i]);
		slot[i] = kp_alloc(pool, slot_size(i), 0);
	}
	long long start = now_ms(), quiet_since = start, changes = pool_changes(pool);
	while (now_ms() - quiet_since < SETTLE_MS) {
		if (now_ms() - start > SETTLE_MAX_MS) {
			fprintf(stderr, "the daemon did not settle within %d ms (grows+shrinks %lld)\n", SETTLE_MAX_MS,
				pool_changes(pool));
			return 3;
		}
		for (int op = 0; op < 50000; op++) {
			unsigned i = (unsigned)(rng_next(&rng) % SLOTS);
			kp_free(pool, slot[i]);
			slot[i] = kp_alloc(pool, slot_size(i), 0);
		}
		long long c = pool_changes(pool);
		if (c != changes) {
			changes = c;
			quiet_since = now_ms();
		}
	}
	printf("settled_ms=%lld\n", now_ms() - start);
	long long before = alloc_syscalls(pool);
	long nulls = 0;
	if (write(1, BEGIN, sizeof BEGIN - 1) < 0)
		return 2;
	for (long op = 0; op < ops; op++) {
		unsigned i = (unsigned)(rng_next(&rng) % SLOTS);
		kp_free(pool, slot[i]);
		slot[i] = kp_alloc(pool, slot_size(i), op & 1 ? KP_ZERO : 0);
		nulls += slot[i] == NULL;
	}
	if (write(1, END, sizeof END - 1) < 0)
		return 2;
	long long after = alloc_syscalls(pool);
	printf("alloc_syscalls_before=%lld\nalloc_syscalls_after=%lld\nnulls=%ld\n", before, after, nulls);
	for (unsigned i = 0; i < SLOTS; i++)
		kp_free(pool, slot[i]);
	kp_destroy(pool);
	return nulls == 0 ? 0 : 1;
}
