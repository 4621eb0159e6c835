/*
 * attack19.c - bad input and hostile programs for libkpool-preload.so, one
 * mode each (tests/test_preload_attack19.py):
 *
 *   foreign-first   free() of a stack address before the program's first
 *                   allocation (before the pool exists): an invalid free,
 *                   reported as one (it was refused in silence)
 *   foreign-later   the same free after an allocation (the pool exists)
 *   signal-malloc   a single-threaded program whose 50 us timer's handler
 *                   mallocs and frees while the program allocates: malloc
 *                   is not async-signal-safe, and glibc finds its arena
 *                   damaged and aborts; under kpool it hung, a handler's
 *                   allocation waiting for a lock its own thread held (or
 *                   for a pthread_once its thread was inside). It must
 *                   end: done, or an abort with one line of kpool's
 *   main-exit       main starts two threads that allocate (enough for the
 *                   daemon to start) and ends by pthread_exit: the process
 *                   ends with 0 when they return, as under glibc; the
 *                   daemon kept it alive forever, deaf to SIGTERM
 */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

static volatile long hits;

static void handler(int sig)
{
	(void)sig;
	size_t n = (size_t)(hits % 3000 + 1);
	char *p = malloc(n);
	if (p)
		memset(p, 2, n);
	free(p);
	hits++;
}

static int signal_malloc(void)
{
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = handler;
	sa.sa_flags = SA_RESTART;
	sigaction(SIGALRM, &sa, NULL);
	struct itimerval it = {{0, 50}, {0, 50}};
	setitimer(ITIMER_REAL, &it, NULL);
	static void *held[512];
	for (long i = 0; i < 20000000 && hits < 20000; i++) {
		int k = (int)(i % 512);
		free(held[k]);
		held[k] = (i & 7) == 0 ? realloc(malloc(10), (size_t)(i % 70000)) : malloc((size_t)(i * 31) % 5000);
	}
	struct itimerval off = {{0, 0}, {0, 0}};
	setitimer(ITIMER_REAL, &off, NULL);
	printf("done\n");
	return 0;
}

static void *worker(void *arg)
{
	static void *held[2][256];
	void **v = held[arg != NULL];
	for (int i = 0; i < 100000; i++) {
		int k = i & 255;
		free(v[k]);
		size_t n = (size_t)(i * 37) % 20000 + 1;
		v[k] = malloc(n);
		if (v[k])
			memset(v[k], 1, n);
	}
	for (int k = 0; k < 256; k++)
		free(v[k]);
	return NULL;
}

static int main_exit(void)
{
	pthread_t t[2];
	for (int i = 0; i < 2; i++)
		pthread_create(&t[i], NULL, worker, i ? &t : NULL);
	printf("main ends\n");
	fflush(stdout);
	pthread_exit(NULL);
}

int main(int argc, char **argv)
{
	const char *mode = argc > 1 ? argv[1] : "";
	if (!strcmp(mode, "foreign-first") || !strcmp(mode, "foreign-later")) {
		if (!strcmp(mode, "foreign-later"))
			free(malloc(32));
		int on_stack = 0;
		int *volatile p = &on_stack;
		free(p);
		printf("still running after the free of a stack address\n");
		return 0;
	}
	if (!strcmp(mode, "signal-malloc"))
		return signal_malloc();
	if (!strcmp(mode, "main-exit"))
		return main_exit();
	fprintf(stderr, "usage: attack19 foreign-first|foreign-later|signal-malloc|main-exit\n");
	return 2;
}
