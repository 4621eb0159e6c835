/*
 * resident.c - how much of the preload library's text a small program keeps
 * resident, for tests/test_preload.py: the work of the small benchmark
 * programs (bench/programs/small_objects.c, thread_churn.c) in brief, a pause
 * for the daemon's passes, then the pages of the library's executable mapping
 * that are present (/proc/self/pagemap), printed as
 *
 *     text resident KiB: N of M
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static uint64_t next(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

static void *churn(void *arg)
{
	uint64_t seed = 0x9e3779b97f4a7c15ull ^ (uintptr_t)arg;
	char *live[64] = {0};
	for (int i = 0; i < 20000; i++) {
		size_t k = next(&seed) % 64;
		free(live[k]);
		live[k] = malloc(8 + next(&seed) % 512);
		live[k][0] = 1;
	}
	for (int k = 0; k < 64; k++)
		free(live[k]);
	return NULL;
}

int main(void)
{
	for (int wave = 0; wave < 20; wave++) {
		pthread_t t[4];
		for (long i = 0; i < 4; i++)
			pthread_create(&t[i], NULL, churn, (void *)i);
		for (int i = 0; i < 4; i++)
			pthread_join(t[i], NULL);
	}
	churn(NULL);
	usleep(300000); /* the daemon's passes */
	FILE *maps = fopen("/proc/self/maps", "r");
	int pm = open("/proc/self/pagemap", O_RDONLY);
	char line[512];
	unsigned long present = 0, pages = 0;
	while (maps && pm >= 0 && fgets(line, sizeof line, maps)) {
		unsigned long a, b;
		char perm[8];
		if (!strstr(line, "libkpool-preload") || sscanf(line, "%lx-%lx %7s", &a, &b, perm) != 3 ||
		    strcmp(perm, "r-xp") != 0)
			continue;
		for (unsigned long p = a; p < b; p += 4096, pages++) {
			uint64_t e = 0;
			if (pread(pm, &e, sizeof e, (off_t)(p / 4096 * sizeof e)) == sizeof e && e >> 63)
				present++;
		}
	}
	printf("text resident KiB: %lu of %lu\n", present * 4, pages * 4);
	return 0;
}
