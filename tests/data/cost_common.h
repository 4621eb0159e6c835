/* What the callgrind cost programs (call_cost.c, realloc_cost.c) share: their
 * step generator and a failed allocation's exit. */
#ifndef KPOOL_COST_COMMON_H
#define KPOOL_COST_COMMON_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

static uint64_t rng(uint64_t *s)
{
	uint64_t x = *s;
	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	*s = x;
	return x * 0x2545F4914F6CDD1DULL;
}

static void *must(void *p)
{
	if (!p) {
		fprintf(stderr, "allocation failed\n");
		exit(1);
	}
	return p;
}

#endif
