/*
 * thread_churn.c - short-lived threads with cached blocks: waves of threads
 * that each allocate and free a few hundred small blocks (filling their
 * allocator's thread cache), keep some of them alive past their exit (freed
 * by the next wave), and exit. Tests that a thread's cache is given back
 * when the thread ends: the peak RSS stays flat however many threads ran.
 *
 *   thread_churn [waves=600] [threads per wave=8] [blocks per thread=400]
 *
 * Prints "checksum: N" (the sum of the sizes allocated).
 */
#include "common.h"

#include <pthread.h>
#include <string.h>

static long waves, per_wave, blocks;
static void *kept[256];
static uint64_t sums[256];

static void *run(void *arg)
{
	long id = (long)arg;
	uint64_t seed = 0xA0761D6478BD642FULL ^ (uint64_t)id, sum = 0;
	void *live[64] = {0};
	for (long i = 0; i < blocks; i++) {
		size_t n = rng_size(&seed, 16, 512);
		size_t k = (size_t)(rng_next(&seed) % 64);
		free(live[k]);
		live[k] = malloc(n);
		if (!live[k])
			die("malloc");
		memset(live[k], 1, n < 32 ? n : 32);
		sum += n;
	}
	free(kept[id]); /* the previous wave's block, freed by this thread */
	kept[id] = live[0];
	for (int k = 1; k < 64; k++)
		free(live[k]);
	sums[id] += sum;
	return NULL;
}

int main(int argc, char **argv)
{
	waves = arg_long(argc, argv, 1, 600);
	per_wave = arg_long(argc, argv, 2, 8);
	blocks = arg_long(argc, argv, 3, 400);
	if (per_wave > 256)
		die("at most 256 threads per wave");
	pthread_t tid[256];
	for (long w = 0; w < waves; w++) {
		for (long i = 0; i < per_wave; i++)
			if (pthread_create(&tid[i], NULL, run, (void *)i) != 0)
				die("pthread_create");
		for (long i = 0; i < per_wave; i++)
			pthread_join(tid[i], NULL);
	}
	uint64_t sum = 0;
	for (long i = 0; i < per_wave; i++) {
		free(kept[i]);
		sum += sums[i];
	}
	printf("checksum: %llu\n", (unsigned long long)sum);
	return 0;
}
