/*
 * test_create_rlimit_as.c - kp_create under an address-space limit
 * (RLIMIT_AS, `ulimit -v`).
 *
 * The default layout (outline) maps its slice map in kp_create: a pointer
 * per 64 KiB of the 47-bit address space, 16 GiB of MAP_NORESERVE address
 * space touched only where slices are used (outline.c). An address-space
 * limit counts the whole mapping, so under any limit below about 17 GiB
 * kp_create(NULL) returned NULL with "could not map the initial pools",
 * which named neither the slice map nor the limit (the preload already
 * fell back to layout:inline, test_preload_rlimit_as_attack31; a program
 * linked with libkpool got no pool at all). Now:
 *  - the default layout falls back to layout:inline, which maps only what
 *    it uses, and the pool's stats say so ("primary.layout");
 *  - a pool that asked for layout:outline by name is refused with an error
 *    that names the slice map and the address-space limit.
 * Skipped under the sanitizers, whose own shadow mappings need far more
 * address space than the limit.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "ktest.h"

/* 1 GiB of address space: the test binary, its libraries, a pool's
 * primary, backup and daemon fit many times over; the 16 GiB slice map
 * does not. */
#define LIMIT ((rlim_t)1 << 30)

static int limit_as(void)
{
	struct rlimit rl = {LIMIT, LIMIT};
	return setrlimit(RLIMIT_AS, &rl);
}

static void test_the_default_layout_falls_back_to_inline(void)
{
	if (KT_SANITIZED)
		return;
	REQUIRE(limit_as() == 0, "setrlimit: %s", strerror(errno));
	kp_pool *pool = kp_create(NULL);
	REQUIRE(pool, "kp_create(NULL) under RLIMIT_AS of 1 GiB: %s", kp_last_error());
	char buf[8192];
	kp_stats_json(pool, buf, sizeof buf);
	CHECK(strstr(buf, "\"layout\":\"inline\""), "stats do not say layout inline: %.300s", buf);
	enum { N = 2000 };
	static void *live[N];
	int failed = 0;
	for (int i = 0; i < N; i++) {
		size_t n = 16 + (size_t)(i * 7919) % (64 * 1024);
		live[i] = kp_alloc(pool, n, 0);
		if (!live[i])
			failed++;
		else
			memset(live[i], 1, n);
	}
	for (int i = 0; i < N; i++)
		kp_free(pool, live[i]);
	CHECK(failed == 0, "%d of %d allocations failed", failed, N);
	kp_destroy(pool);
}

static void test_outline_by_name_is_refused_with_the_cause(void)
{
	if (KT_SANITIZED)
		return;
	REQUIRE(limit_as() == 0, "setrlimit: %s", strerror(errno));
	kp_pool *pool = kp_create("layout:outline");
	CHECK(!pool && errno == ENOMEM, "layout:outline under RLIMIT_AS: pool %p, errno %d", (void *)pool, errno);
	const char *e = kp_last_error();
	CHECK(strstr(e, "slice map") && strstr(e, "RLIMIT_AS") && strstr(e, "layout:inline"),
	      "the error does not name the slice map, the limit and the way out: %s", e);
	if (pool)
		kp_destroy(pool);
}

static void test_without_a_limit_the_default_is_outline(void)
{
	kp_pool *pool = kp_create(NULL);
	REQUIRE(pool, "kp_create(NULL): %s", kp_last_error());
	char buf[8192];
	kp_stats_json(pool, buf, sizeof buf);
	CHECK(strstr(buf, "\"layout\":\"outline\""), "stats do not say layout outline: %.300s", buf);
	kp_destroy(pool);
}

int main(void)
{
	unsetenv("KPOOL_CONF"); /* the defaults are what this file is about */
	RUN(test_the_default_layout_falls_back_to_inline);
	RUN(test_outline_by_name_is_refused_with_the_cause);
	RUN(test_without_a_limit_the_default_is_outline);
	return ktest_summary();
}
