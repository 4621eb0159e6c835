/*
 * fork_churn.c - fork beside allocating threads: each thread keeps a set
 * of live blocks of 16 bytes to the largest size (uniform) and replaces a
 * random one at each step, writing its first 64 bytes, while the main
 * thread forks again and again, each child exiting at once and the parent
 * waiting for it. Tests that the allocator's fork handlers cost the parent
 * no memory per fork (no heap, segment or spare left behind by a fork, no
 * capacity grown per fork) and that a child copies nothing it does not
 * touch: the peak RSS is the same as the baseline's (mode 3, no fork) and
 * flat however many forks ran. Written for the s36 attack (300 forks
 * beside 4 churning threads: 48.3 MiB peak on kpool, 18.1 on glibc); here
 * kpool's peak with forks and without is the same (s36 fork helper's
 * report): what differs from glibc's is the small blocks' layout and the
 * daemon's pre-faulting, not fork.
 *
 *   fork_churn [forks=300] [threads=4] [live blocks per thread=2048]
 *              [largest size=1024] [mode=1]
 *
 * mode: 1 the child calls _exit, 2 exit (atexit handlers and destructors
 * run), 3 no fork (a 5 ms pause instead: the baseline), 4 the child
 * allocates and frees a block, then calls exit.
 *
 * Prints "forks: N" (the same under every allocator) and "allocated: N"
 * (the bytes the threads allocated, which depends on the timing: no
 * checksum to compare).
 */
#include "common.h"

#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static long forks, nthreads, live_n, max_size, mode;
static atomic_int stop;
static uint64_t sums[64];

static void *run(void *arg)
{
	long id = (long)arg;
	uint64_t seed = 0x9E3779B97F4A7C15ULL ^ (uint64_t)id, sum = 0;
	void **live = calloc((size_t)live_n, sizeof *live);
	if (!live)
		die("calloc");
	while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
		for (int r = 0; r < 256; r++) {
			size_t n = rng_size(&seed, 16, (size_t)max_size);
			size_t k = (size_t)(rng_next(&seed) % (uint64_t)live_n);
			free(live[k]);
			live[k] = malloc(n);
			if (!live[k])
				die("malloc");
			memset(live[k], (int)id, n < 64 ? n : 64);
			sum += n;
		}
	}
	for (long k = 0; k < live_n; k++)
		free(live[k]);
	free(live);
	sums[id] = sum;
	return NULL;
}

int main(int argc, char **argv)
{
	forks = arg_long(argc, argv, 1, 300);
	nthreads = arg_long(argc, argv, 2, 4);
	live_n = arg_long(argc, argv, 3, 2048);
	max_size = arg_long(argc, argv, 4, 1024);
	mode = arg_long(argc, argv, 5, 1);
	if (mode > 4)
		die("mode: 1 to 4");
	if (max_size < 16)
		die("the largest size is at least 16");
	if (nthreads > 64)
		die("at most 64 threads");
	pthread_t tid[64];
	for (long i = 0; i < nthreads; i++)
		if (pthread_create(&tid[i], NULL, run, (void *)i) != 0)
			die("pthread_create");
	long done = 0;
	for (long f = 0; f < forks; f++) {
		if (mode == 3) { /* the baseline: 5 ms, about a fork and its wait here */
			usleep(5000);
			continue;
		}
		pid_t pid = fork();
		if (pid < 0)
			die("fork");
		if (pid == 0) {
			if (mode == 4) { /* a child that allocates a little */
				char *b = malloc(64);
				if (!b)
					_exit(1);
				snprintf(b, 64, "child %ld", f);
				free(b);
				exit(0);
			}
			if (mode == 2)
				exit(0); /* atexit handlers and destructors run */
			_exit(0);
		}
		int st;
		if (waitpid(pid, &st, 0) != pid || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
			die("child");
		done++;
	}
	atomic_store(&stop, 1);
	uint64_t sum = 0;
	for (long i = 0; i < nthreads; i++) {
		pthread_join(tid[i], NULL);
		sum += sums[i];
	}
	printf("forks: %ld\nallocated: %llu\n", done, (unsigned long long)sum);
	return 0;
}
