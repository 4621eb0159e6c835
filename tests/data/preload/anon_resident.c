/*
 * anon_resident.c - the anonymous memory a small program keeps resident, for
 * tests/test_preload.py (run under the preload and under glibc's malloc):
 * the work of bench/programs/small_objects.c (one thread, a working set of
 * 1,000 blocks of 8-256 bytes, measured while they live) or thread_churn.c
 * (waves of 8 threads, each with 64 live blocks of 16-512 bytes, measured
 * after the last wave) in brief, then the Anonymous: line of
 * /proc/self/smaps_rollup (every private page written: the allocator's
 * blocks, its metadata, its tables; not the libraries' text, whose resident
 * pages depend on the page cache), printed as
 *
 *     anonymous KiB: N
 *
 * Argument: "small" or "churn".
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint64_t next(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

static long anonymous_kib(void)
{
	FILE *f = fopen("/proc/self/smaps_rollup", "r");
	char line[256];
	long kib = -1;
	while (f && fgets(line, sizeof line, f))
		if (sscanf(line, "Anonymous: %ld kB", &kib) == 1)
			break;
	if (f)
		fclose(f);
	return kib;
}

static long small(void)
{
	static char *live[1000];
	uint64_t seed = 0x2545f4914f6cdd1dull;
	for (long i = 0; i < 400000; i++) {
		size_t k = next(&seed) % 1000;
		free(live[k]);
		size_t n = 8 + next(&seed) % 249;
		live[k] = malloc(n);
		memset(live[k], 1, n);
		if (i % 64 == 0) {
			char *tmp[16];
			for (int j = 0; j < 16; j++)
				memset(tmp[j] = malloc(8 + next(&seed) % 249), 2, 8);
			for (int j = 0; j < 16; j++)
				free(tmp[j]);
		}
	}
	long kib = anonymous_kib();
	for (int k = 0; k < 1000; k++)
		free(live[k]);
	return kib;
}

static void *churn(void *arg)
{
	uint64_t seed = 0xa0761d6478bd642full ^ (uintptr_t)arg;
	char *live[64] = {0};
	for (int i = 0; i < 400; i++) {
		size_t k = next(&seed) % 64;
		free(live[k]);
		size_t n = 16 + next(&seed) % 497;
		live[k] = malloc(n);
		memset(live[k], 1, n < 32 ? n : 32);
	}
	for (int k = 0; k < 64; k++)
		free(live[k]);
	return NULL;
}

int main(int argc, char **argv)
{
	long kib;
	if (argc > 1 && !strcmp(argv[1], "churn")) {
		for (int wave = 0; wave < 100; wave++) {
			pthread_t t[8];
			for (long i = 0; i < 8; i++)
				pthread_create(&t[i], NULL, churn, (void *)i);
			for (int i = 0; i < 8; i++)
				pthread_join(t[i], NULL);
		}
		kib = anonymous_kib();
	} else {
		kib = small();
	}
	printf("anonymous KiB: %ld\n", kib);
	return 0;
}
