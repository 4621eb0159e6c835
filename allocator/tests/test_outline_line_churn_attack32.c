/*
 * test_outline_line_churn_attack32.c - s32-share's classes under a cache
 * line (outline.c, FC_LINE_CLASSES: 16, 32 and 48-byte blocks) under churn:
 * threads that come and go (each new one adopts a heap another left:
 * heap_abandon zeroes the caps, heap_get's adoption keeps them), blocks
 * handed between threads through shared slots and freed by whichever
 * thread takes them (a thread that has not allocated the class yet sends
 * them home: free_remote_slow), KP_ZERO, kp_alloc_aligned and kp_realloc of
 * these classes, signal handlers that allocate and free such blocks while
 * their thread is inside a cross-thread free, and fork children that free
 * blocks of heaps whose threads are gone.
 *
 * Each block carries a serial (the slot keeps it too): a block handed out
 * twice, its second holder's serial written over the first's, is a
 * mismatch; a KP_ZERO block not zero, a pointer not aligned, a double free
 * reported (the program makes none), or in-use bytes left once every block
 * is freed, fail the test.
 * (The churn itself: line_churn_attack32.h.)
 * Reproduce: make -C allocator VARIANT=release
 * build/release/tests/test_outline_line_churn_attack32 &&
 * allocator/build/release/tests/test_outline_line_churn_attack32
 */
#define _GNU_SOURCE 1
#include "ktest.h"

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <sys/wait.h>

#include "line_churn_attack32.h"

static void test_churn(void)
{
	run("layout:outline,daemon:off,seed:3", false, false);
}
static void test_churn_poison(void)
{
	run("layout:outline,daemon:off,poison:on,seed:4", false, false);
}
static void test_churn_checks_off_daemon(void)
{
	run("layout:outline,daemon:on,checks:off,seed:5", false, false);
}
static void test_churn_fork(void)
{
	run("layout:outline,daemon:off,seed:7", false, true);
}

int main(void)
{
	churn_env();
	RUN(test_churn);
	RUN(test_churn_poison);
	RUN(test_churn_checks_off_daemon);
	RUN(test_churn_fork);
	return ktest_summary();
}
