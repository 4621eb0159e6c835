/*
 * example_critical.c - a program that survives the exhaustion of its primary
 * pool by saving its state with memory from the backup pool.
 *
 *   KPOOL_CONF=primary_initial:4m,primary_max:4m,backup:1m \
 *   LD_PRELOAD=libkpool-preload.so example_critical STATE_FILE [noscope]
 *
 * 1. It builds its state: RECORDS records in a linked list.
 * 2. It allocates HOG-byte blocks until malloc returns NULL: the primary is
 *    exhausted, and as an unprivileged caller it gets nothing from the backup.
 * 3. It opens a critical scope and saves its state: a text buffer from
 *    malloc, then fopen (which allocates its FILE and its buffer), fwrite,
 *    fclose. Inside the scope those allocations come from the backup.
 * 4. It closes the scope, prints "saved N records" and exits 0.
 *
 * With "noscope" it tries the same save without the scope: the allocations
 * fail, it prints why and exits 1, which is what the scope is for. Without
 * the preload (no kp_preload_critical_enter) it exits 2 at once rather than
 * exhaust the machine's memory.
 *
 * The preload's API is declared weak, so that the program also links and
 * starts without libkpool-preload.so; a program that always runs on kpool
 * includes kpool-preload.h and links with -lkpool-preload instead.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int kp_preload_critical_enter(void) __attribute__((weak));
void kp_preload_critical_exit(void) __attribute__((weak));

#define RECORDS 1000
/* The hog's block: large enough to exhaust a 4 MiB primary in a few dozen
 * calls, small enough to fill it to the last page run. */
#define HOG (64 * 1024)
/* A bound on the hog, in case the pool has more room than configured. */
#define HOG_MAX (64ull << 30)

struct record {
	struct record *next;
	int id;
	char name[24];
};

static int save(const struct record *head, const char *path)
{
	char *text = malloc(RECORDS * 48);
	if (!text) {
		fprintf(stderr, "example_critical: no memory for the text (%s)\n", strerror(errno));
		return -1;
	}
	size_t len = 0;
	int n = 0;
	for (const struct record *r = head; r; r = r->next, n++)
		len += (size_t)sprintf(text + len, "%d %s\n", r->id, r->name);
	FILE *f = fopen(path, "w");
	if (!f) {
		fprintf(stderr, "example_critical: fopen: %s\n", strerror(errno));
		free(text);
		return -1;
	}
	size_t put = fwrite(text, 1, len, f);
	int closed = fclose(f);
	free(text);
	if (put != len || closed != 0) {
		fprintf(stderr, "example_critical: the write failed\n");
		return -1;
	}
	return n;
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: example_critical STATE_FILE [noscope]\n");
		return 2;
	}
	if (!kp_preload_critical_enter || !kp_preload_critical_exit) {
		fprintf(stderr, "example_critical: run me with LD_PRELOAD=libkpool-preload.so\n");
		return 2;
	}
	int scope = !(argc > 2 && !strcmp(argv[2], "noscope"));

	struct record *head = NULL;
	for (int i = 0; i < RECORDS; i++) {
		struct record *r = malloc(sizeof *r);
		if (!r)
			return 1;
		r->id = i;
		snprintf(r->name, sizeof r->name, "record-%d", i);
		r->next = head;
		head = r;
	}

	unsigned long long hogged = 0;
	void *last = NULL;
	while (hogged < HOG_MAX) {
		void **b = malloc(HOG);
		if (!b)
			break;
		*b = last; /* keep every block: the primary stays exhausted */
		last = b;
		hogged += HOG;
	}
	printf("primary exhausted after %llu KiB\n", hogged >> 10);
	fflush(stdout);

	if (scope && kp_preload_critical_enter() != 0) {
		fprintf(stderr, "example_critical: the critical scope was refused\n");
		return 1;
	}
	int saved = save(head, argv[1]);
	if (scope)
		kp_preload_critical_exit();
	if (saved < 0)
		return 1;
	printf("saved %d records\n", saved);
	return 0;
}
