/*
 * realloc_cost.c - kp_usable_size and kp_realloc, each call from a function
 * of its own (noinline), so that callgrind gives each kind of call its
 * inclusive cost (tests/test_instruction_counts.py, the realloc budgets).
 *
 *   realloc_cost /path/to/libkpool.so STEPS [CONF]
 *
 * libkpool.so is opened with dlopen, a pool made with CONF (daemon:off when
 * not given; default checks: on). Every step makes one call of each kind:
 *   one_usable  kp_usable_size of one of 1,000 live blocks of 8-256 bytes;
 *   one_same    kp_realloc of one block between 100 and 101 bytes: both in
 *               the 128-byte class (100 + 16 + 8 and 101 + 16 + 8 need 124
 *               and 125), and more than half of its room, so it stays in
 *               place (a shrink or a growth inside its class);
 *   one_cross   kp_realloc of one block between 40 and 200 bytes (the 64-
 *               and 224-byte classes): it moves every time, 40 bytes copied.
 * The blocks resized go back and forth between the same bins, so a step
 * costs the same at any step count: the test's per-call figure is the
 * difference of two runs divided by the difference of their step counts.
 * Prints "checksum: N" (the usable sizes and the first bytes read back, so
 * that nothing is optimised away and a lost byte shows).
 */
#define _GNU_SOURCE
#include "cost_common.h"
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#define LIVE 1000
#define NOINLINE __attribute__((noipa)) /* noipa: one_same and one_cross are not folded into one */

static void *pool;
static void *(*kp_alloc_fn)(void *, size_t, unsigned);
static int (*kp_free_fn)(void *, void *);
static void *(*kp_realloc_fn)(void *, void *, size_t, unsigned);
static size_t (*kp_usable_fn)(void *, const void *);

NOINLINE static size_t one_usable(void *p)
{
	return kp_usable_fn(pool, p);
}

NOINLINE static void *one_same(void *p, size_t n)
{
	return kp_realloc_fn(pool, p, n, 0);
}

NOINLINE static void *one_cross(void *p, size_t n)
{
	return kp_realloc_fn(pool, p, n, 0);
}

int main(int argc, char **argv)
{
	if (argc != 3 && argc != 4) {
		fprintf(stderr, "usage: realloc_cost LIBKPOOL STEPS [CONF]\n");
		return 2;
	}
	void *lib = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
	if (!lib) {
		fprintf(stderr, "dlopen: %s\n", dlerror());
		return 2;
	}
	void *(*create)(const char *);
	*(void **)&create = dlsym(lib, "kp_create");
	*(void **)&kp_alloc_fn = dlsym(lib, "kp_alloc");
	*(void **)&kp_free_fn = dlsym(lib, "kp_free");
	*(void **)&kp_realloc_fn = dlsym(lib, "kp_realloc");
	*(void **)&kp_usable_fn = dlsym(lib, "kp_usable_size");
	if (!create || !kp_alloc_fn || !kp_free_fn || !kp_realloc_fn || !kp_usable_fn ||
	    !(pool = create(argc > 3 ? argv[3] : "daemon:off"))) {
		fprintf(stderr, "libkpool: no pool\n");
		return 2;
	}
	long steps = atol(argv[2]);
	uint64_t seed = 42, sum = 0;
	static char *live[LIVE];
	for (size_t k = 0; k < LIVE; k++)
		live[k] = must(kp_alloc_fn(pool, 8 + (size_t)(rng(&seed) % 249), 0));
	char *same = must(kp_alloc_fn(pool, 100, 0)), *cross = must(kp_alloc_fn(pool, 40, 0));
	same[0] = 's';
	cross[0] = 'c';
	for (long i = 0; i < steps; i++) {
		sum += one_usable(live[rng(&seed) % LIVE]);
		same = must(one_same(same, i & 1 ? 100 : 101));
		cross = must(one_cross(cross, i & 1 ? 40 : 200));
		sum += (unsigned char)same[0] + (unsigned char)cross[0];
	}
	for (size_t k = 0; k < LIVE; k++)
		kp_free_fn(pool, live[k]);
	kp_free_fn(pool, same);
	kp_free_fn(pool, cross);
	printf("checksum: %llu\n", (unsigned long long)sum);
	return 0;
}
