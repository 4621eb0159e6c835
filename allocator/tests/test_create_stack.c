/*
 * test_create_stack.c - how deep into its caller's stack making a pool goes.
 * Under the preload, the first malloc of a program makes the pool, often from
 * main or from libc's start-up, and every page of stack it reaches stays
 * resident: a page deeper than the program itself ever goes is a page of its
 * peak RSS (issue 14's memory target). kp__os_memory_limit read
 * /proc/meminfo into 4 KiB on the stack for one number that sysinfo gives
 * too (SwapTotal): kp_create reached 7.9 KiB below its caller, and a small
 * program's stack held a page or two more than under glibc's malloc.
 *
 * The pool is made on a thread whose stack this test maps and paints; the
 * lowest byte changed after the thread's function returned is how deep the
 * calls went. Sanitizers' frames are larger: the bound holds in release
 * and debug builds, the others print the depth.
 */
#define _GNU_SOURCE 1
#include "ktest.h"

#include <pthread.h>
#include <stdbool.h>

/* 4 MiB: TSan keeps its thread state on a stack given to the thread (900 KiB) */
#define STACK (4u << 20)
#define PAINT 0xa5
/* The most making a pool and serving its first blocks may reach below the
 * thread's start: 3,960 bytes measured (the conf, the cgroup's file, the
 * first segment, the thread's cache; 8,056 when /proc/meminfo was read),
 * with a little room. 2,520 on an AMD EPYC with AVX-512, whose lazy PLT
 * resolver (it saves the vector registers on the stack) took it to 5,560
 * until the Makefile bound every import at load (-z now). */
#define DEPTH_MAX (5u << 10)

static void *make_pool(void *arg)
{
	(void)arg;
	kp_pool *pool = kp_create("daemon:off");
	if (!pool)
		return (void *)1;
	void *p[16];
	for (unsigned i = 0; i < 16; i++)
		p[i] = kp_alloc(pool, 16 + i * 40, 0);
	for (unsigned i = 0; i < 16; i++)
		kp_free(pool, p[i]);
	kp_destroy(pool);
	return NULL;
}

/* The bytes of the painted stack the thread changed, from its lowest change
 * to the top of the stack. */
static size_t depth_of(void *(*fn)(void *))
{
	unsigned char *stack = mmap(NULL, STACK, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (stack == MAP_FAILED) {
		CHECK(false, "mmap");
		return 0;
	}
	memset(stack, PAINT, STACK);
	pthread_attr_t attr;
	pthread_attr_init(&attr);
	pthread_attr_setstack(&attr, stack, STACK);
	pthread_t t;
	void *ret = NULL;
	bool made = pthread_create(&t, &attr, fn, NULL) == 0;
	CHECK(made, "pthread_create");
	if (made)
		pthread_join(t, &ret);
	pthread_attr_destroy(&attr);
	CHECK(ret == NULL, "the thread's pool: %s", kp_last_error());
	size_t low = 0;
	while (low < STACK && stack[low] == PAINT)
		low++;
	munmap(stack, STACK);
	return STACK - low;
}

static void *nothing(void *arg)
{
	return arg;
}

static void test_create_stays_shallow(void)
{
	/* the thread's own start (its descriptor and TLS sit at the top of a
	 * stack given to it) */
	size_t base = depth_of(nothing), made = depth_of(make_pool);
	size_t depth = made > base ? made - base : 0;
	printf("   kp_create and 16 blocks reached %zu bytes below the thread's start (%zu for the start)\n", depth,
	       base);
	if (!KT_SANITIZED)
		CHECK(depth <= DEPTH_MAX, "kp_create reached %zu bytes of stack below its caller, at most %u expected",
		      depth, DEPTH_MAX);
}

int main(void)
{
	RUN(test_create_stays_shallow);
	return ktest_summary();
}
