/*
 * larson.c - the multi-threaded server pattern (after Larson and Krishnan's
 * benchmark): each thread keeps a table of live objects and replaces random
 * ones with objects of random size; after every round the tables move on to
 * the next thread, so most objects are freed by a thread other than the one
 * that allocated them.
 *
 *   larson [threads=4] [rounds=100] [slots=2000] [replacements per round=20000]
 *
 * Prints "checksum: N" (the sum of every size allocated: the same under any
 * allocator) and the elapsed seconds on stderr.
 */
#include "common.h"

#include <pthread.h>
#include <string.h>

struct table {
	char **obj;
	size_t *size;
};

static long threads, rounds, slots, replacements;
static struct table *tables;
static pthread_barrier_t barrier;
static uint64_t sums[256];

static void *run(void *arg)
{
	long id = (long)arg;
	uint64_t seed = 0x9E3779B97F4A7C15ULL * (uint64_t)(id + 1), sum = 0;
	for (long r = 0; r < rounds; r++) {
		/* Round r works on the table thread (id + r) filled. */
		struct table *t = &tables[(id + r) % threads];
		for (long i = 0; i < replacements; i++) {
			size_t k = (size_t)(rng_next(&seed) % (uint64_t)slots);
			size_t n = rng_size(&seed, 8, 1000);
			free(t->obj[k]);
			t->obj[k] = malloc(n);
			if (!t->obj[k])
				die("malloc");
			memset(t->obj[k], (int)(n & 0xff), n < 64 ? n : 64);
			t->size[k] = n;
			sum += n;
		}
		pthread_barrier_wait(&barrier);
	}
	sums[id] = sum;
	return NULL;
}

int main(int argc, char **argv)
{
	threads = arg_long(argc, argv, 1, 4);
	rounds = arg_long(argc, argv, 2, 100);
	slots = arg_long(argc, argv, 3, 2000);
	replacements = arg_long(argc, argv, 4, 20000);
	if (threads > 256)
		die("at most 256 threads");
	tables = calloc((size_t)threads, sizeof *tables);
	if (!tables)
		die("calloc");
	for (long i = 0; i < threads; i++) {
		tables[i].obj = calloc((size_t)slots, sizeof(char *));
		tables[i].size = calloc((size_t)slots, sizeof(size_t));
		if (!tables[i].obj || !tables[i].size)
			die("calloc");
	}
	pthread_barrier_init(&barrier, NULL, (unsigned)threads);
	pthread_t tid[256];
	for (long i = 0; i < threads; i++)
		if (pthread_create(&tid[i], NULL, run, (void *)i) != 0)
			die("pthread_create");
	uint64_t sum = 0;
	for (long i = 0; i < threads; i++) {
		pthread_join(tid[i], NULL);
		sum += sums[i];
	}
	for (long i = 0; i < threads; i++) {
		for (long k = 0; k < slots; k++)
			free(tables[i].obj[k]);
		free(tables[i].obj);
		free(tables[i].size);
	}
	free(tables);
	printf("checksum: %llu\n", (unsigned long long)sum);
	return 0;
}
