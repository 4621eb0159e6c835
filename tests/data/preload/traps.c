/*
 * traps.c - the known traps of a malloc preload, one mode each, for
 * tests/test_preload.py. Each mode prints what it saw and exits 0 when all
 * was well; the test reads the preload's figures (KPOOL_STATS_OUT) besides.
 *
 *   traps early       malloc before any constructor ran (.preinit_array) and
 *                     in a constructor; main frees, reallocs and measures
 *                     those blocks (with KPOOL_PRELOAD=bootstrap:N they come
 *                     from the bootstrap buffer: pointers the pool never
 *                     gave out)
 *   traps fork        a threaded program forks while its threads allocate;
 *                     the child allocates, and says whether its daemon runs
 *   traps threads     threads that cache blocks and exit; the thread count
 *                     and bytes in use of the pool afterwards
 *   traps few         a handful of allocations (no daemon expected)
 *   traps busy        many allocations of little memory, 64 KiB live at
 *                     most (no daemon expected: a small program gains
 *                     nothing from it, and pays its stack and pages)
 *   traps many        many allocations that hold 2.5 MiB at once (the
 *                     daemon expected)
 *   traps in-use      a handful of allocations, freed; the pool's bytes in
 *                     use as main returns (the figures written at exit
 *                     should say the same)
 *   traps double-free a planted double free of a 48-byte block
 *   traps bad-free    free of a pointer inside a block (never given out)
 *   traps aligned     blocks aligned to 8-64 KiB (past the pool's 4096: the
 *                     preload's table of them), 20,000 made and freed, 64
 *                     live at a time, of sizes that put some blocks of the
 *                     pool's at an aligned address already
 */
#define _GNU_SOURCE
#include <malloc.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

int kp_preload_stats_json(char *buf, size_t len) __attribute__((weak));

#define EARLY 3
static char *early[2 * EARLY];
static size_t early_size[2 * EARLY] = {24, 5000, 100, 40, 70000, 8};

static void early_alloc(int first)
{
	for (int i = first; i < first + EARLY; i++) {
		early[i] = malloc(early_size[i]);
		if (early[i])
			memset(early[i], 'a' + i, early_size[i]);
	}
}

static void preinit(int argc, char **argv, char **envp)
{
	(void)argc, (void)argv, (void)envp;
	early_alloc(0);
}
__attribute__((section(".preinit_array"), used)) static void (*preinit_fn)(int, char **, char **) = preinit;

__attribute__((constructor)) static void ctor(void)
{
	early_alloc(EARLY);
}

static int mode_early(void)
{
	int ok = 1;
	for (int i = 0; i < 2 * EARLY; i++) {
		ok &= early[i] != NULL && malloc_usable_size(early[i]) >= early_size[i];
		for (size_t k = 0; early[i] && k < early_size[i]; k++)
			ok &= early[i][k] == 'a' + i;
	}
	/* the first of each kind grows, the others are freed */
	for (int i = 0; i < 2 * EARLY; i += EARLY) {
		char *p = realloc(early[i], 100000);
		ok &= p != NULL;
		for (size_t k = 0; p && k < early_size[i]; k++)
			ok &= p[k] == 'a' + i;
		free(p);
		for (int j = i + 1; j < i + EARLY; j++)
			free(early[j]);
	}
	/* and the program goes on allocating */
	void *keep[2000];
	for (int i = 0; i < 2000; i++)
		keep[i] = malloc((size_t)(i % 300) + 1);
	for (int i = 0; i < 2000; i++)
		free(keep[i]);
	printf("early blocks: %s\n", ok ? "ok" : "BAD");
	return ok ? 0 : 1;
}

static const char *daemon_state(char *buf, size_t len)
{
	if (!kp_preload_stats_json || kp_preload_stats_json(buf, len) < 0)
		return "no-preload";
	const char *s = strstr(buf, "\"state\":\"");
	if (!s)
		return "unknown";
	s += strlen("\"state\":\"");
	static char out[32];
	size_t n = strcspn(s, "\"");
	snprintf(out, sizeof out, "%.*s", (int)(n < 31 ? n : 31), s);
	return out;
}

/* n allocations of size bytes, up to 5000 of them live at once, then freed:
 * what a program holds decides whether the preload starts its daemon. */
static void hold(int n, size_t size)
{
	static void *p[5000];
	for (int i = 0; i < n; i++) {
		free(p[i % 5000]);
		if (!(p[i % 5000] = malloc(size)))
			exit(3);
		memset(p[i % 5000], 1, size);
	}
	for (int i = 0; i < 5000; i++)
		free(p[i]), p[i] = NULL;
}

static volatile int stop;

static void *churn(void *arg)
{
	(void)arg;
	while (!stop) {
		void *p[64];
		for (int i = 0; i < 64; i++)
			p[i] = malloc((size_t)(i * 37 % 2000) + 1);
		for (int i = 0; i < 64; i++)
			free(p[i]);
	}
	return NULL;
}

static int mode_fork(void)
{
	static char buf[1 << 16];
	/* enough allocations, and memory, for the parent's daemon to start */
	hold(5000, 512);
	printf("parent daemon: %s\n", daemon_state(buf, sizeof buf));
	pthread_t t[4];
	for (int i = 0; i < 4; i++)
		pthread_create(&t[i], NULL, churn, NULL);
	int bad = 0;
	for (int round = 0; round < 20; round++) {
		pid_t pid = fork();
		if (pid == 0) {
			void *p[1000];
			for (int i = 0; i < 1000; i++) {
				p[i] = malloc((size_t)i * 13 + 1);
				if (!p[i])
					_exit(3);
				memset(p[i], 7, (size_t)i * 13 + 1);
			}
			for (int i = 0; i < 1000; i++)
				free(p[i]);
			const char *st = daemon_state(buf, sizeof buf);
			_exit(strcmp(st, "running") == 0 ? 0 : 4);
		}
		int status = 0;
		waitpid(pid, &status, 0);
		bad += !(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	}
	stop = 1;
	for (int i = 0; i < 4; i++)
		pthread_join(t[i], NULL);
	printf("children that allocated with a running daemon: %d of 20\n", 20 - bad);
	return bad ? 1 : 0;
}

static void *cache_and_exit(void *arg)
{
	(void)arg;
	void *p[300];
	for (int i = 0; i < 300; i++)
		p[i] = malloc((size_t)(i % 12) * 16 + 16);
	for (int i = 0; i < 300; i++)
		free(p[i]); /* into this thread's cache */
	return NULL;
}

static long field(const char *json, const char *key)
{
	const char *s = strstr(json, key);
	return s ? strtol(s + strlen(key), NULL, 10) : -1;
}

static int mode_threads(void)
{
	static char buf[1 << 16];
	for (int round = 0; round < 8; round++) {
		pthread_t t[16];
		for (int i = 0; i < 16; i++)
			pthread_create(&t[i], NULL, cache_and_exit, NULL);
		for (int i = 0; i < 16; i++)
			pthread_join(t[i], NULL);
	}
	if (!kp_preload_stats_json || kp_preload_stats_json(buf, sizeof buf) < 0) {
		printf("no preload\n");
		return 1;
	}
	printf("threads with a cache after 128 exited: %ld\n", field(buf, "\"threads\":"));
	return 0;
}

static int mode_count(int n, size_t size)
{
	static char buf[1 << 16];
	hold(n, size);
	printf("daemon: %s\n", daemon_state(buf, sizeof buf));
	return 0;
}

static int mode_in_use(void)
{
	static char buf[1 << 16];
	hold(10, 32);
	if (!kp_preload_stats_json || kp_preload_stats_json(buf, sizeof buf) < 0)
		return 1;
	printf("in use: %ld\n", field(buf, "\"in_use_bytes\":"));
	return 0;
}

/* Every block aligned, writable and freed, and the table of big
 * alignments never full (a stale entry left by a free would fill it). */
static int mode_aligned(void)
{
	static char *live[64];
	for (int i = 0; i < 20000; i++) {
		size_t align = (size_t)8192 << (i % 4), size = 16 + (size_t)(i * 7919 % 20000);
		int k = i % 64;
		free(live[k]);
		if (posix_memalign((void **)&live[k], align, size) != 0) {
			printf("aligned: posix_memalign(%zu, %zu) failed at %d\n", align, size, i);
			return 1;
		}
		if ((uintptr_t)live[k] % align) {
			printf("aligned: %p is not aligned to %zu\n", (void *)live[k], align);
			return 1;
		}
		memset(live[k], i, size);
	}
	for (int k = 0; k < 64; k++)
		free(live[k]);
	printf("aligned blocks: ok\n");
	return 0;
}

int main(int argc, char **argv)
{
	setvbuf(stdout, NULL, _IONBF, 0);
	const char *mode = argc > 1 ? argv[1] : "";
	if (!strcmp(mode, "early"))
		return mode_early();
	if (!strcmp(mode, "fork"))
		return mode_fork();
	if (!strcmp(mode, "threads"))
		return mode_threads();
	if (!strcmp(mode, "aligned"))
		return mode_aligned();
	if (!strcmp(mode, "few"))
		return mode_count(10, 32);
	if (!strcmp(mode, "busy"))
		return mode_count(200000, 32);
	if (!strcmp(mode, "many"))
		return mode_count(5000, 512);
	if (!strcmp(mode, "in-use"))
		return mode_in_use();
	if (!strcmp(mode, "double-free")) {
		char *volatile p = malloc(48);
		free(p);
		free(p);
		printf("still running after the double free\n");
		return 0;
	}
	if (!strcmp(mode, "bad-free")) {
		char *volatile p = malloc(100);
		free(p + 16);
		printf("still running after the bad free\n");
		return 0;
	}
	fprintf(stderr, "usage: traps early|fork|threads|aligned|few|busy|many|in-use|double-free|bad-free\n");
	return 2;
}
