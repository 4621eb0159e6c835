/*
 * xpair.c - the cost of a cross-thread free, robust to a loaded machine: two
 * threads pinned to two CPUs (or both to one), and in each round each
 * allocates n blocks of 16-256 bytes and frees the n the other allocated the
 * round before, one allocation and one free in turn (every free another
 * thread's block, as kpbench c). The rounds meet at a spin barrier; each
 * thread times its own round alone, so a round the scheduler interrupts is
 * one slow sample among thousands, and the median of the rounds is the cost
 * of a pair with no preemption in it (kpbench c's wall clock, where a stalled
 * thread fills its peer's queue, moved 3-10x with the other jobs' load).
 *
 *   xpair [cpu0=0] [cpu1=1] [rounds=3000] [n=1024]   (cpu numbers + 1: 1 2 is CPUs 0 and 1)
 *
 * Prints "checksum: N" (the sum of every size allocated) on stdout and, on
 * stderr, the median and the 25th percentile of the rounds' ns per alloc +
 * free pair.
 */
#define _GNU_SOURCE 1
#include "common.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>

#define NMAX 4096
static long rounds, n, cpu[2];
static char **blocks[2][2]; /* [round parity][thread]: n blocks each */
static double *per_pair[2]; /* each thread's rounds, ns a pair */
static uint32_t sizes[NMAX];
static uint64_t sums[2];
static _Atomic unsigned bar_count, bar_gen;

/* Both threads here before either goes on: spinning (a futex wake-up takes
 * microseconds), yielding after a while (the peer may share the CPU). */
static void meet(void)
{
	unsigned g = atomic_load(&bar_gen);
	if (atomic_fetch_add(&bar_count, 1) == 1) {
		atomic_store(&bar_count, 0);
		atomic_fetch_add(&bar_gen, 1);
		return;
	}
	for (unsigned s = 0; atomic_load(&bar_gen) == g; s++)
		if (s > 20000)
			sched_yield();
		else
			__builtin_ia32_pause();
}

static uint64_t now_ns(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

static void *run(void *arg)
{
	long me = (long)arg;
	cpu_set_t set;
	CPU_ZERO(&set);
	CPU_SET((int)cpu[me], &set);
	if (pthread_setaffinity_np(pthread_self(), sizeof set, &set) != 0)
		die("pthread_setaffinity_np");
	uint64_t sum = 0;
	for (long r = 0; r <= rounds; r++) {
		char **out = blocks[r & 1][me], **in = blocks[(r + 1) & 1][1 - me];
		meet();
		uint64_t t0 = now_ns();
		for (long i = 0; i < n; i++) {
			uint32_t sz = sizes[(i + me * 511 + r * 7) % n];
			char *p = malloc(sz);
			if (!p)
				die("malloc");
			p[0] = (char)sz;
			p[sz - 1] = 1;
			out[i] = p;
			sum += sz;
			if (r) {
				(void)*(volatile char *)in[i]; /* the block read, as its user would */
				free(in[i]);
			}
		}
		uint64_t t1 = now_ns();
		if (r)
			per_pair[me][r - 1] = (double)(t1 - t0) / (double)n;
	}
	meet();
	for (long i = 0; i < n; i++)
		free(blocks[rounds & 1][1 - me][i]);
	sums[me] = sum;
	return NULL;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
	cpu[0] = arg_long(argc, argv, 1, 1) - 1;
	cpu[1] = arg_long(argc, argv, 2, 2) - 1;
	rounds = arg_long(argc, argv, 3, 3000);
	n = arg_long(argc, argv, 4, 1024);
	if (n > NMAX)
		die("at most 4096 blocks a round");
	uint64_t seed = 1;
	for (long i = 0; i < n; i++)
		sizes[i] = (uint32_t)rng_size(&seed, 16, 256);
	for (int k = 0; k < 4; k++)
		if (!(blocks[k / 2][k % 2] = calloc((size_t)n, sizeof(char *))))
			die("calloc");
	double *all = calloc((size_t)(2 * rounds), sizeof(double));
	if (!all)
		die("calloc");
	per_pair[0] = all;
	per_pair[1] = all + rounds;
	pthread_t tid[2];
	for (long i = 0; i < 2; i++)
		if (pthread_create(&tid[i], NULL, run, (void *)i) != 0)
			die("pthread_create");
	for (int i = 0; i < 2; i++)
		pthread_join(tid[i], NULL);
	qsort(all, (size_t)(2 * rounds), sizeof(double), cmp_double);
	fprintf(stderr, "ns a pair: median %.1f, p25 %.1f\n", all[rounds], all[rounds / 2]);
	printf("checksum: %llu\n", (unsigned long long)(sums[0] + sums[1]));
	for (int k = 0; k < 4; k++)
		free(blocks[k / 2][k % 2]);
	free(all);
	return 0;
}
