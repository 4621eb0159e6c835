/*
 * os.c - the only file that makes system calls.
 *
 * Every call is counted by kind and by caller (the allocation path, or the
 * grow daemon, which marks its thread with kp__os_caller). The counters live
 * in the pool (kp__oscount) so a test or a report can prove that the
 * allocation path made none in steady state.
 */
#include "internal.h"

#include <errno.h>
#include <stdio.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23 /* Linux 5.14 */
#endif

__thread int kp__os_caller = KP_CALLER_ALLOC;

static void count(kp__oscount *c, int kind)
{
	if (c)
		atomic_fetch_add_explicit(&c->n[kp__os_caller][kind], 1, memory_order_relaxed);
}

void *kp__os_map(kp__oscount *c, size_t size, size_t align, bool populate)
{
	if (align < KP_PAGE)
		align = KP_PAGE;
	size_t over = size + align - KP_PAGE;
	if (over < size)
		return NULL;
	const int prot = PROT_READ | PROT_WRITE, flags = MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE;
	char *p;
	if (align > KP_PAGE && size % align == 0) {
		/* The kernel places a new mapping just below the previous one, so
		 * after one aligned segment the next plain mmap is usually aligned
		 * too: one call instead of three. */
		count(c, KP_OS_MMAP);
		p = mmap(NULL, size, prot, flags, -1, 0);
		if (p == MAP_FAILED)
			return NULL;
		if (((uintptr_t)p & (align - 1)) == 0) {
			if (populate)
				kp__os_populate(c, p, size);
			return p;
		}
		kp__os_unmap(c, p, size);
	}
	count(c, KP_OS_MMAP);
	p = mmap(NULL, over, prot, flags, -1, 0);
	if (p == MAP_FAILED)
		return NULL;
	/* Trim the mapping to an aligned window: head and tail go back. */
	char *a = (char *)(((uintptr_t)p + align - 1) & ~(uintptr_t)(align - 1));
	if (a > p)
		kp__os_unmap(c, p, (size_t)(a - p));
	size_t tail = (size_t)((p + over) - (a + size));
	if (tail)
		kp__os_unmap(c, a + size, tail);
	if (populate)
		kp__os_populate(c, a, size);
	return a;
}

int kp__os_unmap(kp__oscount *c, void *p, size_t size)
{
	count(c, KP_OS_MUNMAP);
	return munmap(p, size) == 0 ? 0 : -errno;
}

void *kp__os_reserve(kp__oscount *c, size_t size)
{
	count(c, KP_OS_MMAP);
	void *p = mmap(NULL, size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	return p == MAP_FAILED ? NULL : p;
}

int kp__os_protect(kp__oscount *c, void *p, size_t size, bool rw)
{
	count(c, KP_OS_MPROTECT);
	return mprotect(p, size, rw ? PROT_READ | PROT_WRITE : PROT_NONE) == 0 ? 0 : -errno;
}

int kp__os_populate(kp__oscount *c, void *p, size_t size)
{
	count(c, KP_OS_MADVISE);
	if (madvise(p, size, MADV_POPULATE_WRITE) == 0)
		return 0;
	/* Older kernels: fault every page in by touching it. */
	volatile char *v = p;
	for (size_t off = 0; off < size; off += KP_PAGE)
		v[off] = v[off];
	return 0;
}

int kp__os_dontneed(kp__oscount *c, void *p, size_t size)
{
	count(c, KP_OS_MADVISE);
	return madvise(p, size, MADV_DONTNEED) == 0 ? 0 : -errno;
}

void kp__os_thread_name(kp__oscount *c, const char *name)
{
	count(c, KP_OS_OTHER);
	prctl(PR_SET_NAME, name, 0, 0, 0);
}

void kp__os_random(kp__oscount *c, void *buf, size_t len)
{
	count(c, KP_OS_OTHER);
	char *b = buf;
	while (len) {
		ssize_t n = getrandom(b, len, 0);
		if (n <= 0) {
			/* No entropy source: fall back to the clock and addresses. */
			uint64_t x = kp__mix(kp__now_ns() ^ (uintptr_t)b);
			n = (ssize_t)(len < 8 ? len : 8);
			memcpy(b, &x, (size_t)n);
		}
		b += n;
		len -= (size_t)n;
	}
}

/* clock_gettime(CLOCK_MONOTONIC) is served by the vDSO: no system call. */
uint64_t kp__now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}
