/*
 * conformance.c - the C allocation API's edge cases, as one line of facts
 * each ("name: value"), so that a run under glibc and a run under
 * libkpool-preload.so can be compared line for line (tests/test_preload.py).
 * Every line states what C, POSIX or glibc 2.36 promise, never an address or
 * a size that depends on the allocator. Build with -O0 -fno-builtin, so that
 * the compiler keeps every call.
 *
 *   conformance [threads]     the single-thread cases, then (default 8)
 *                             threads of mixed traffic with content checks
 */
#define _GNU_SOURCE
#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

extern void *__libc_malloc(size_t);
extern void __libc_free(void *);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_memalign(size_t, size_t);

#define LINE(name, fmt, ...) printf("%s: " fmt "\n", name, __VA_ARGS__)

static int aligned(const void *p, size_t a)
{
	return p && ((uintptr_t)p % a) == 0;
}

static int all(const unsigned char *p, size_t n, unsigned char v)
{
	for (size_t i = 0; i < n; i++)
		if (p[i] != v)
			return 0;
	return 1;
}

static void fill(void *p, size_t n, unsigned seed)
{
	unsigned char *c = p;
	for (size_t i = 0; i < n; i++)
		c[i] = (unsigned char)(seed + i * 7);
}

static int check(const void *p, size_t n, unsigned seed)
{
	const unsigned char *c = p;
	for (size_t i = 0; i < n; i++)
		if (c[i] != (unsigned char)(seed + i * 7))
			return 0;
	return 1;
}

static void malloc_cases(void)
{
	void *a = malloc(0), *b = malloc(0);
	LINE("malloc(0) non-NULL, unique", "%d %d", a != NULL && b != NULL, a != b);
	LINE("malloc(0) usable >= 0, aligned 16", "%d", aligned(a, 16));
	free(a);
	free(b);
	free(NULL);
	LINE("free(NULL)", "%s", "ok");

	int ok = 1;
	static const size_t sizes[] = {1,     7,      8,      15,      16,       17,      24,      100,
				       1000,  4095,   4096,   4097,    65536,    100000,  1 << 20, (1 << 20) + 1,
				       3 << 20, 5 << 20, 17 << 20};
	for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
		char *p = malloc(sizes[i]);
		ok &= p != NULL && aligned(p, 16) && malloc_usable_size(p) >= sizes[i];
		if (p) {
			memset(p, 0x5a, sizes[i]);
			ok &= all((unsigned char *)p, sizes[i], 0x5a);
		}
		free(p);
	}
	LINE("malloc sizes: aligned 16, usable >= request, writable", "%d", ok);
	LINE("malloc_usable_size(NULL)", "%zu", malloc_usable_size(NULL));

	static const size_t huge[] = {SIZE_MAX, SIZE_MAX - 4096, SIZE_MAX / 2 + 1, (size_t)PTRDIFF_MAX + 1};
	for (size_t i = 0; i < sizeof huge / sizeof huge[0]; i++) {
		errno = 0;
		void *p = malloc(huge[i]);
		char name[64];
		snprintf(name, sizeof name, "malloc(huge %zu)", i);
		LINE(name, "%s %s", p ? "non-NULL" : "NULL", errno == ENOMEM ? "ENOMEM" : "other-errno");
		free(p);
	}
}

static void calloc_cases(void)
{
	errno = 0;
	void *p = calloc(SIZE_MAX / 2, 3);
	LINE("calloc overflow", "%s %s", p ? "non-NULL" : "NULL", errno == ENOMEM ? "ENOMEM" : "other-errno");
	errno = 0;
	p = calloc((size_t)1 << 33, (size_t)1 << 33);
	LINE("calloc overflow 2^66", "%s %s", p ? "non-NULL" : "NULL", errno == ENOMEM ? "ENOMEM" : "other-errno");
	p = calloc(0, 10);
	LINE("calloc(0, n) non-NULL", "%d", p != NULL);
	free(p);
	int ok = 1;
	for (size_t n = 1; n <= (4u << 20); n *= 3) {
		/* dirty memory first, so that a calloc reusing it must zero it */
		void *d = malloc(n);
		if (d) {
			memset(d, 0xff, n);
			free(d);
		}
		unsigned char *z = calloc(n, 1);
		ok &= z != NULL && all(z, n, 0);
		free(z);
	}
	LINE("calloc zeroes (after dirty frees)", "%d", ok);
}

static void realloc_cases(void)
{
	char *p = realloc(NULL, 10);
	LINE("realloc(NULL, 10) non-NULL, usable >= 10", "%d", p != NULL && malloc_usable_size(p) >= 10);
	errno = 0;
	void *q = realloc(p, 0);
	LINE("realloc(p, 0)", "%s", q ? "non-NULL" : "NULL (freed)");
	free(q);
	q = realloc(NULL, 0);
	LINE("realloc(NULL, 0) non-NULL", "%d", q != NULL);
	free(q);

	int ok = 1;
	static const size_t steps[] = {1, 16, 17, 100, 4000, 5000, 70000, 1 << 20, 5 << 20, 9 << 20, 300, 3};
	size_t have = 0;
	char *r = NULL;
	for (size_t i = 0; i < sizeof steps / sizeof steps[0]; i++) {
		char *n = realloc(r, steps[i]);
		if (!n) {
			ok = 0;
			break;
		}
		size_t keep = have < steps[i] ? have : steps[i];
		ok &= check(n, keep, 11) && malloc_usable_size(n) >= steps[i];
		fill(n, steps[i], 11);
		r = n;
		have = steps[i];
	}
	free(r);
	LINE("realloc grow/shrink keeps contents", "%d", ok);

	p = malloc(100);
	fill(p, 100, 3);
	errno = 0;
	q = realloc(p, SIZE_MAX);
	LINE("realloc(p, SIZE_MAX)", "%s %s, p intact %d", q ? "non-NULL" : "NULL",
	     errno == ENOMEM ? "ENOMEM" : "other-errno", check(p, 100, 3));
	errno = 0;
	q = reallocarray(p, SIZE_MAX / 2, 3);
	LINE("reallocarray overflow", "%s %s, p intact %d", q ? "non-NULL" : "NULL",
	     errno == ENOMEM ? "ENOMEM" : "other-errno", check(p, 100, 3));
	q = reallocarray(p, 50, 4);
	LINE("reallocarray(p, 50, 4) keeps contents", "%d", q != NULL && check(q, 100, 3));
	free(q);
}

static void align_cases(void)
{
	static const size_t bad[] = {0, 1, 2, 3, 4, 12, 24, 48, 4097, SIZE_MAX};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		void *out = (void *)0x1234;
		int rc = posix_memalign(&out, bad[i], 64);
		char name[64];
		snprintf(name, sizeof name, "posix_memalign(align %zu)", bad[i]);
		LINE(name, "%s, out untouched %d", rc == EINVAL ? "EINVAL" : rc ? "other" : "0", out == (void *)0x1234);
	}
	int ok = 1;
	for (size_t a = sizeof(void *); a <= ((size_t)1 << 22); a <<= 1) {
		static const size_t sizes[] = {0, 1, 100, 5000, 1 << 20};
		for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
			void *out = NULL;
			int rc = posix_memalign(&out, a, sizes[i]);
			ok &= rc == 0 && aligned(out, a) && malloc_usable_size(out) >= sizes[i];
			if (out)
				memset(out, 1, sizes[i]);
			free(out);
		}
	}
	LINE("posix_memalign 8 .. 4 MiB: 0, aligned, usable >= size", "%d", ok);
	void *out = (void *)0x1234;
	int rc = posix_memalign(&out, 64, SIZE_MAX - 100);
	LINE("posix_memalign(64, huge)", "%s, out untouched %d", rc == ENOMEM ? "ENOMEM" : rc ? "other" : "0",
	     out == (void *)0x1234);

	void *p = aligned_alloc(64, 100);
	LINE("aligned_alloc(64, 100)", "%d", aligned(p, 64) && malloc_usable_size(p) >= 100);
	free(p);
	p = aligned_alloc(4096, 4096);
	LINE("aligned_alloc(4096, 4096)", "%d", aligned(p, 4096));
	free(p);
	p = aligned_alloc(1 << 16, 10);
	LINE("aligned_alloc(64 KiB, 10)", "%d", aligned(p, 1 << 16));
	free(p);
	p = memalign(32, 10);
	LINE("memalign(32, 10)", "%d", aligned(p, 32));
	free(p);
	p = memalign(24, 10); /* glibc rounds a non-power of two up */
	LINE("memalign(24, 10) aligned to 32", "%d", aligned(p, 32));
	free(p);
	p = memalign(1 << 21, 100);
	LINE("memalign(2 MiB, 100)", "%d", aligned(p, 1 << 21) && malloc_usable_size(p) >= 100);
	p = realloc(p, 1 << 20); /* a large-alignment block moves like any other */
	LINE("realloc of a 2 MiB-aligned block", "%d", p != NULL && malloc_usable_size(p) >= (1 << 20));
	free(p);
	errno = 0;
	p = memalign(SIZE_MAX, 10);
	LINE("memalign(SIZE_MAX, 10)", "%s %s", p ? "non-NULL" : "NULL", errno == EINVAL ? "EINVAL" : "other-errno");

	long pg = sysconf(_SC_PAGESIZE);
	p = valloc(10);
	LINE("valloc(10) page-aligned", "%d", aligned(p, (size_t)pg));
	free(p);
	p = pvalloc(10);
	LINE("pvalloc(10) page-aligned, usable >= page", "%d",
	     aligned(p, (size_t)pg) && malloc_usable_size(p) >= (size_t)pg);
	free(p);
	errno = 0;
	p = pvalloc(SIZE_MAX - 10);
	LINE("pvalloc(huge)", "%s %s", p ? "non-NULL" : "NULL", errno == ENOMEM ? "ENOMEM" : "other-errno");
	errno = 0;
	p = valloc(SIZE_MAX - 10);
	LINE("valloc(huge)", "%s %s", p ? "non-NULL" : "NULL", errno == ENOMEM ? "ENOMEM" : "other-errno");
}

static void libc_names(void)
{
	void *a = __libc_malloc(40), *b = malloc(40);
	free(a);
	__libc_free(b);
	void *c = __libc_calloc(10, 10);
	int zero = c && all(c, 100, 0);
	c = __libc_realloc(c, 1000);
	void *d = __libc_memalign(256, 10);
	LINE("__libc_* mix with malloc/free", "%d %d %d", zero, c != NULL, aligned(d, 256));
	free(c);
	free(d);
}

/* ---- threads -------------------------------------------------------------- */

#define SLOTS 256
#define ROUNDS 20000
static void *shared[64];
static pthread_mutex_t shared_lock = PTHREAD_MUTEX_INITIALIZER;

struct worker {
	unsigned seed;
	int ok;
};

static unsigned next(unsigned *s)
{
	*s = *s * 1103515245u + 12345u;
	return *s >> 8;
}

static void *work(void *arg)
{
	struct worker *w = arg;
	void *slot[SLOTS] = {0};
	size_t size[SLOTS] = {0};
	unsigned s = w->seed;
	w->ok = 1;
	for (int i = 0; i < ROUNDS; i++) {
		unsigned k = next(&s) % SLOTS, op = next(&s) % 8;
		size_t n = next(&s) % 4 == 0 ? next(&s) % 70000 : next(&s) % 300;
		if (slot[k]) {
			w->ok &= check(slot[k], size[k], k);
			if (op < 3) {
				void *q = realloc(slot[k], n + 1);
				if (!q) {
					w->ok = 0;
					continue;
				}
				w->ok &= check(q, size[k] < n + 1 ? size[k] : n + 1, k);
				slot[k] = q;
				size[k] = n + 1;
				fill(q, n + 1, k);
				continue;
			}
			if (op == 3) { /* hand it to another thread, take one back */
				pthread_mutex_lock(&shared_lock);
				void *theirs = shared[k % 64];
				shared[k % 64] = slot[k];
				pthread_mutex_unlock(&shared_lock);
				free(theirs);
			} else {
				free(slot[k]);
			}
			slot[k] = NULL;
			continue;
		}
		slot[k] = op == 7 ? calloc(1, n) : malloc(n);
		if (!slot[k] && n) {
			w->ok = 0;
			continue;
		}
		if (op == 7 && slot[k])
			w->ok &= all(slot[k], n, 0);
		size[k] = n;
		fill(slot[k], n, k);
	}
	for (int k = 0; k < SLOTS; k++) {
		if (slot[k])
			w->ok &= check(slot[k], size[k], k);
		free(slot[k]);
	}
	return NULL;
}

static void thread_cases(int nthreads)
{
	pthread_t t[64];
	struct worker w[64];
	for (int i = 0; i < nthreads; i++) {
		w[i].seed = 1000u + (unsigned)i;
		pthread_create(&t[i], NULL, work, &w[i]);
	}
	int ok = 1;
	for (int i = 0; i < nthreads; i++) {
		pthread_join(t[i], NULL);
		ok &= w[i].ok;
	}
	for (int i = 0; i < 64; i++)
		free(shared[i]);
	LINE("threads: mixed traffic, cross-thread frees, contents intact", "%d", ok);
}

int main(int argc, char **argv)
{
	int nthreads = argc > 1 ? atoi(argv[1]) : 8;
	if (nthreads < 1 || nthreads > 64)
		nthreads = 8;
	setvbuf(stdout, NULL, _IOLBF, 0);
	malloc_cases();
	calloc_cases();
	realloc_cases();
	align_cases();
	libc_names();
	thread_cases(nthreads);
	return 0;
}
