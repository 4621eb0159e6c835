/*
 * common.h - what the benchmark programs share: a small deterministic random
 * generator, argument parsing and a fatal exit. Header-only: each program is
 * one file built with `cc -O2 -pthread prog.c` and linked against the C
 * library's malloc, so any allocator can be preloaded under it.
 */
#ifndef KP_BENCH_PROGRAMS_COMMON_H
#define KP_BENCH_PROGRAMS_COMMON_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

/* xorshift64*: a seeded sequence, the same under every allocator, so the
 * programs' checksums can be compared across allocators. */
static inline uint64_t rng_next(uint64_t *s)
{
	uint64_t x = *s;
	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	*s = x;
	return x * 0x2545F4914F6CDD1DULL;
}

/* A size in [lo, hi]. */
static inline size_t rng_size(uint64_t *s, size_t lo, size_t hi)
{
	return lo + (size_t)(rng_next(s) % (hi - lo + 1));
}

/* argv[i] as a positive integer, or def when absent; exits 2 on a bad one. */
static inline long arg_long(int argc, char **argv, int i, long def)
{
	if (i >= argc)
		return def;
	char *end;
	long v = strtol(argv[i], &end, 10);
	if (*end != '\0' || v <= 0) {
		fprintf(stderr, "%s: argument %d: expected a positive integer, got '%s'\n", argv[0], i, argv[i]);
		exit(2);
	}
	return v;
}

/* Out of memory or a failed thread call: the program's result would mean
 * nothing; exit 1 with the reason. */
static inline void die(const char *what)
{
	fprintf(stderr, "fatal: %s\n", what);
	exit(1);
}

#endif
