/*
 * false_sharing.c - active and passive false sharing (after Hoard's
 * cache-thrash and cache-scratch): each thread repeatedly allocates a small
 * object, writes every byte of it many times and frees it. An allocator that
 * hands two threads objects on one cache line makes them slow each other
 * down; with `passive`, every thread starts by freeing an object the main
 * thread allocated for it (next to the others' objects).
 *
 *   false_sharing [threads=4] [iterations=100000] [writes per object=200] [object size=8]
 *
 * Prints "checksum: N" (the sum of the bytes written: the same under any
 * allocator).
 */
#include "common.h"

#include <pthread.h>

static long threads, iterations, writes, size;
static char *given[256];
static uint64_t sums[256];

static void *run(void *arg)
{
	long id = (long)arg;
	free(given[id]); /* passive: the main thread's neighbouring object */
	uint64_t sum = 0;
	for (long i = 0; i < iterations; i++) {
		volatile char *p = malloc((size_t)size);
		if (!p)
			die("malloc");
		for (long b = 0; b < size; b++) /* malloc's bytes are undefined: the checksum must not read them */
			p[b] = 0;
		for (long w = 0; w < writes; w++)
			for (long b = 0; b < size; b++)
				p[b] = (char)(p[b] + 1);
		for (long b = 0; b < size; b++)
			sum += (unsigned char)p[b] ? 1 : 0;
		free((void *)p);
	}
	sums[id] = sum;
	return NULL;
}

int main(int argc, char **argv)
{
	threads = arg_long(argc, argv, 1, 4);
	iterations = arg_long(argc, argv, 2, 100000);
	writes = arg_long(argc, argv, 3, 200);
	size = arg_long(argc, argv, 4, 8);
	if (threads > 256)
		die("at most 256 threads");
	for (long i = 0; i < threads; i++)
		if (!(given[i] = calloc(1, (size_t)size)))
			die("calloc");
	pthread_t tid[256];
	for (long i = 0; i < threads; i++)
		if (pthread_create(&tid[i], NULL, run, (void *)i) != 0)
			die("pthread_create");
	uint64_t sum = 0;
	for (long i = 0; i < threads; i++) {
		pthread_join(tid[i], NULL);
		sum += sums[i];
	}
	printf("checksum: %llu\n", (unsigned long long)sum);
	return 0;
}
