/*
 * small_objects.c - short-lived small objects in one thread: the pattern of
 * an interpreter or a parser. A working set of 1,000 objects of 8-256 bytes
 * where every step frees one and allocates another, with bursts of
 * temporaries allocated and freed at once (a string built and dropped).
 *
 *   small_objects [steps=20000000]
 *
 * Prints "checksum: N" (the sum of the sizes allocated).
 */
#include "common.h"

#include <string.h>

#define LIVE 1000 /* a working set that fits a thread cache's classes */
#define BURST 16

int main(int argc, char **argv)
{
	long steps = arg_long(argc, argv, 1, 20000000);
	uint64_t seed = 42, sum = 0;
	static char *live[LIVE];
	for (long i = 0; i < steps; i++) {
		size_t k = (size_t)(rng_next(&seed) % LIVE);
		size_t n = rng_size(&seed, 8, 256);
		free(live[k]);
		if (!(live[k] = malloc(n)))
			die("malloc");
		live[k][0] = (char)n;
		sum += n;
		if (i % 64 == 0) {
			char *tmp[BURST];
			for (int b = 0; b < BURST; b++) {
				size_t m = rng_size(&seed, 8, 64);
				if (!(tmp[b] = malloc(m)))
					die("malloc");
				memset(tmp[b], b, m);
				sum += m;
			}
			for (int b = BURST - 1; b >= 0; b--)
				free(tmp[b]);
		}
	}
	for (size_t k = 0; k < LIVE; k++)
		free(live[k]);
	printf("checksum: %llu\n", (unsigned long long)sum);
	return 0;
}
