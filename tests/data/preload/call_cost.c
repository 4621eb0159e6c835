/*
 * call_cost.c - the same calls made through the C allocation API (malloc,
 * free, calloc, realloc, malloc_usable_size: the preload library under
 * LD_PRELOAD) or straight to libkpool (kp_alloc, kp_free, kp_alloc with
 * KP_ZERO, kp_realloc, kp_usable_size: libkpool.so opened with dlopen), so
 * that callgrind can count what the preload adds to each call
 * (tests/test_preload_instructions.py).
 *
 *   call_cost libc STEPS
 *   call_cost /path/to/libkpool.so STEPS
 *
 * Every call goes through a one_* function of its own (noinline), whose
 * inclusive cost callgrind gives: in one mode it calls the C API, in the
 * other libkpool's, with the same arguments in the same order. The pattern
 * is bench/programs/small_objects.c's: a working set of 1,000 blocks of
 * 8-256 bytes, one replaced at each step, and every step also measures a
 * block, resizes another and replaces a third by a zeroed one.
 *
 * Built with -O2 by the test (the fixture of test_preload.py builds it
 * with -O0 too, and never runs it). Prints "checksum: N".
 */
#define _GNU_SOURCE
#include "../cost_common.h"
#include <dlfcn.h>
#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LIVE 1000
#define KP_ZERO 1u /* kpool.h */

static void *pool;
static void *(*kp_create_fn)(const char *);
static void *(*kp_alloc_fn)(void *, size_t, unsigned);
static int (*kp_free_fn)(void *, void *);
static void *(*kp_realloc_fn)(void *, void *, size_t, unsigned);
static size_t (*kp_usable_fn)(void *, const void *);

#define NOINLINE __attribute__((noinline))

NOINLINE static void *one_malloc(size_t n)
{
	return pool ? kp_alloc_fn(pool, n, 0) : malloc(n);
}

NOINLINE static void one_free(void *p)
{
	if (pool)
		kp_free_fn(pool, p);
	else
		free(p);
}

NOINLINE static void *one_calloc(size_t n)
{
	return pool ? kp_alloc_fn(pool, n, KP_ZERO) : calloc(1, n);
}

NOINLINE static void *one_realloc(void *p, size_t n)
{
	return pool ? kp_realloc_fn(pool, p, n, 0) : realloc(p, n);
}

NOINLINE static size_t one_usable(void *p)
{
	return pool ? kp_usable_fn(pool, p) : malloc_usable_size(p);
}

int main(int argc, char **argv)
{
	if (argc != 3) {
		fprintf(stderr, "usage: call_cost libc|LIBKPOOL STEPS\n");
		return 2;
	}
	if (strcmp(argv[1], "libc") != 0) {
		void *lib = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
		if (!lib) {
			fprintf(stderr, "dlopen: %s\n", dlerror());
			return 2;
		}
		*(void **)&kp_create_fn = dlsym(lib, "kp_create");
		*(void **)&kp_alloc_fn = dlsym(lib, "kp_alloc");
		*(void **)&kp_free_fn = dlsym(lib, "kp_free");
		*(void **)&kp_realloc_fn = dlsym(lib, "kp_realloc");
		*(void **)&kp_usable_fn = dlsym(lib, "kp_usable_size");
		if (!kp_create_fn || !kp_alloc_fn || !kp_free_fn || !kp_realloc_fn || !kp_usable_fn ||
		    !(pool = kp_create_fn("daemon:off"))) {
			fprintf(stderr, "libkpool: no pool\n");
			return 2;
		}
	}
	long steps = atol(argv[2]);
	uint64_t seed = 42, sum = 0;
	static char *live[LIVE];
	for (size_t k = 0; k < LIVE; k++)
		live[k] = must(one_malloc(8 + (size_t)(rng(&seed) % 249)));
	for (long i = 0; i < steps; i++) {
		size_t k = (size_t)(rng(&seed) % LIVE), n = 8 + (size_t)(rng(&seed) % 249);
		one_free(live[k]);
		live[k] = must(one_malloc(n));
		live[k][0] = (char)n;
		sum += one_usable(live[k]) >= n;
		k = (size_t)(rng(&seed) % LIVE);
		n = 8 + (size_t)(rng(&seed) % 249);
		live[k] = must(one_realloc(live[k], n));
		sum += n;
		k = (size_t)(rng(&seed) % LIVE);
		n = 8 + (size_t)(rng(&seed) % 249);
		one_free(live[k]);
		live[k] = must(one_calloc(n));
		sum += (unsigned char)live[k][n - 1] + n;
	}
	for (size_t k = 0; k < LIVE; k++)
		one_free(live[k]);
	printf("checksum: %llu\n", (unsigned long long)sum);
	return 0;
}
