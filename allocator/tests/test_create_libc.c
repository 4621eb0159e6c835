/*
 * test_create_libc.c - the C library code that making a pool runs. A page of
 * libc's text that a program touches costs it the whole 64 KiB window the
 * kernel maps around a fault (fault-around), so a function that nothing else
 * in a small program calls, called once by kp_create, is up to 64 KiB of its
 * peak RSS (issue 14's memory target): strcspn (libc's SSE4.2 version, in a
 * window of string code a program rarely runs) cost small_objects under the
 * preload 7-12 pages of libc, and was called only to find the end of a line
 * of /proc/self/cgroup. This file defines strcspn, which the test's copy of
 * libkpool then calls instead of libc's, and counts the calls.
 */
#define _GNU_SOURCE 1
#include "ktest.h"

#include <string.h>

static unsigned strcspn_calls;

size_t strcspn(const char *s, const char *reject)
{
	strcspn_calls++;
	size_t n = 0;
	while (s[n] && !strchr(reject, s[n]))
		n++;
	return n;
}

static void test_create_calls_no_strcspn(void)
{
	strcspn_calls = 0;
	kp_pool *pool = kp_create("daemon:off");
	REQUIRE(pool, "kp_create: %s", kp_last_error());
	void *p = kp_alloc(pool, 100, 0);
	CHECK(p != NULL, "alloc");
	kp_free(pool, p);
	CHECK(strcspn_calls == 0, "kp_create called strcspn %u times", strcspn_calls);
	kp_destroy(pool);
	/* the definition above is the one the library calls (else the check
	 * above could not fail): a fault spec is split with it */
	pool = kp_create("daemon:off,faults:mmap@nth=1000000");
	REQUIRE(pool, "kp_create: %s", kp_last_error());
	CHECK(strcspn_calls > 0, "strcspn here is not the library's");
	kp_destroy(pool);
}

int main(void)
{
	RUN(test_create_calls_no_strcspn);
	return ktest_summary();
}
