/*
 * resident.c - how much of the preload library's text a small program keeps
 * resident, for tests/test_preload.py: the work of the small benchmark
 * programs (bench/programs/small_objects.c, thread_churn.c) in brief (each
 * thread also frees the block the previous wave's thread kept, after its
 * own allocations, as thread_churn does: a cross-thread free, whose
 * functions were not in hot.txt before s32 and faulted a second window in;
 * and one thread whose first call is such a free, as false_sharing's
 * workers: kp__ol_free, outside hot.txt before s33, faulted the second
 * window in false_sharing), a pause
 * for the daemon's passes, then the pages of the library's executable mapping
 * and of its zero-filled data (.bss: the anonymous mapping right after the
 * library's own, up to the end of the library's last PT_LOAD segment: an
 * anonymous mapping the kernel places right after it merges into the same
 * line of /proc/self/maps, and its pages are not the library's; 3 runs in
 * 20 counted 16-24 KiB of "bss" that way) that are present
 * (/proc/self/pagemap), printed as
 *
 *     text resident KiB: N of M
 *     bss resident KiB: N of M
 *
 * and the resident pages of all the library's own mappings (its file pages:
 * the first segment with the dynamic symbols, relocations and read-only
 * data, the text, relro and data; /proc/self/smaps' Rss), as
 *
 *     library resident KiB: N
 *
 * With the argument "daemon", the program first keeps 3 MiB of blocks of
 * 16-2048 bytes live (half of them freed by another thread) for 300 ms: the
 * daemon starts (kp__daemon_wanted: 1 MiB in use) and makes its passes,
 * whose functions are cold text that other small programs never run (s35:
 * warm.txt; before, they sat at the cold text's far end, and the whole
 * cold mapping, two 64 KiB windows, was resident in bench-prodcons).
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <link.h>
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

static char *kept[4];

static void *churn(void *arg)
{
	uint64_t seed = 0x9e3779b97f4a7c15ull ^ (uintptr_t)arg;
	char *live[64] = {0};
	long id = (long)(uintptr_t)arg % 4;
	for (int i = 0; i < 20000; i++) {
		size_t k = next(&seed) % 64;
		free(live[k]);
		live[k] = malloc(8 + next(&seed) % 512);
		live[k][0] = 1;
	}
	/* after its own allocations, as thread_churn: a thread whose first call
	 * is a free takes kp__ol_free, outside hot.txt (false_sharing) */
	free(kept[id]); /* the previous wave's block: another thread's */
	kept[id] = malloc(24);
	for (int k = 0; k < 64; k++)
		free(live[k]);
	return NULL;
}

/* A thread whose first call is a free of another thread's block (as
 * false_sharing's workers free the main thread's): before its heap exists,
 * so kp_free's fast path misses and the free goes the slow way. */
static void *free_first(void *arg)
{
	free(arg);
	char *p = malloc(24);
	p[0] = 1;
	free(p);
	return NULL;
}

/* The end of the preload library's last PT_LOAD segment (its .bss end). */
static int library_end(struct dl_phdr_info *info, size_t size, void *arg)
{
	(void)size;
	if (!info->dlpi_name || !strstr(info->dlpi_name, "libkpool-preload"))
		return 0;
	for (int i = 0; i < info->dlpi_phnum; i++) {
		const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
		unsigned long end = info->dlpi_addr + ph->p_vaddr + ph->p_memsz;
		if (ph->p_type == PT_LOAD && end > *(unsigned long *)arg)
			*(unsigned long *)arg = end;
	}
	return 1;
}

/* The Rss of every mapping of the library's file (/proc/self/smaps). */
static unsigned long library_rss_kib(void)
{
	FILE *f = fopen("/proc/self/smaps", "r");
	char line[512];
	unsigned long kib = 0, n;
	int mine = 0;
	while (f && fgets(line, sizeof line, f)) {
		unsigned long a, b;
		if (sscanf(line, "%lx-%lx ", &a, &b) == 2 && strchr(line, ' '))
			mine = strstr(line, "libkpool-preload") != NULL;
		else if (mine && sscanf(line, "Rss: %lu kB", &n) == 1)
			kib += n;
	}
	if (f)
		fclose(f);
	return kib;
}

static char *held[3072];

static void *free_half(void *arg)
{
	(void)arg;
	for (int i = 0; i < 3072; i += 2) {
		free(held[i]);
		held[i] = NULL;
	}
	return NULL;
}

/* 3 MiB live for the daemon's passes (the "daemon" argument), then freed */
static void hold_for_the_daemon(void)
{
	uint64_t seed = 0x2545f4914f6cdd1dull;
	for (int i = 0; i < 3072; i++) {
		size_t n = 16 + next(&seed) % 2033;
		held[i] = malloc(n);
		memset(held[i], 1, n);
	}
	pthread_t t;
	pthread_create(&t, NULL, free_half, NULL);
	pthread_join(t, NULL);
	usleep(300000); /* the daemon's passes */
	for (int i = 0; i < 3072; i++)
		free(held[i]);
}

int main(int argc, char **argv)
{
	if (argc > 1 && !strcmp(argv[1], "daemon"))
		hold_for_the_daemon();
	for (int wave = 0; wave < 20; wave++) {
		pthread_t t[4];
		for (long i = 0; i < 4; i++)
			pthread_create(&t[i], NULL, churn, (void *)i);
		for (int i = 0; i < 4; i++)
			pthread_join(t[i], NULL);
	}
	churn(NULL);
	pthread_t t;
	pthread_create(&t, NULL, free_first, kept[0]);
	pthread_join(t, NULL);
	kept[0] = NULL;
	for (int i = 0; i < 4; i++)
		free(kept[i]);
	usleep(300000); /* the daemon's passes */
	unsigned long lib_end = 0;
	dl_iterate_phdr(library_end, &lib_end);
	FILE *maps = fopen("/proc/self/maps", "r");
	int pm = open("/proc/self/pagemap", O_RDONLY);
	char line[512];
	unsigned long text = 0, text_pages = 0, bss = 0, bss_pages = 0;
	int after_library = 0;
	while (maps && pm >= 0 && fgets(line, sizeof line, maps)) {
		unsigned long a, b, off, inode;
		char perm[8], dev[16], name[256] = "";
		if (sscanf(line, "%lx-%lx %7s %lx %15s %lu %255s", &a, &b, perm, &off, dev, &inode, name) < 6)
			continue;
		int mine = strstr(name, "libkpool-preload") != NULL;
		unsigned long *present = NULL, *pages = NULL;
		if (mine && !strcmp(perm, "r-xp"))
			present = &text, pages = &text_pages;
		else if (!mine && after_library && !name[0] && !strcmp(perm, "rw-p"))
			present = &bss, pages = &bss_pages;
		after_library = mine;
		if (present == &bss && b > (lib_end + 4095) / 4096 * 4096)
			b = (lib_end + 4095) / 4096 * 4096;
		for (unsigned long p = a; present && p < b; p += 4096, (*pages)++) {
			uint64_t e = 0;
			if (pread(pm, &e, sizeof e, (off_t)(p / 4096 * sizeof e)) == sizeof e && e >> 63)
				(*present)++;
		}
	}
	printf("text resident KiB: %lu of %lu\n", text * 4, text_pages * 4);
	printf("bss resident KiB: %lu of %lu\n", bss * 4, bss_pages * 4);
	printf("library resident KiB: %lu\n", library_rss_kib());
	return 0;
}
