/*
 * test_create_rlimit_headroom_attack32.c - kp_create(NULL) under an
 * address-space limit that the outline layout's 16 GiB slice map fits, but
 * only just (c5b20c0: the default falls back to inline only when the
 * slice map's mapping fails).
 *
 * Under RLIMIT_AS = 16 GiB + 256 MiB, the slice map and first segments
 * map, so the default stays outline, and then the program has the rest:
 * measured on s32-lead 2aee60a (release), the pool gave 6 MiB of 1 MiB
 * blocks and 351,446 blocks of 16 bytes before NULL, and 3 of 8
 * pthread_create calls failed (no room for their stacks); layout:inline under
 * the same limit gave 4,096 MiB of 1 MiB blocks (the probe's cap) and
 * 4,000,000 blocks of 16 bytes. At 16.5 GiB: outline 183 MiB, inline
 * 4,096 MiB; at 20 GiB: 2,826 MiB against 4,096. A limit set a little
 * above the slice map (ulimit -v 17000000) makes the default layout the
 * worse one by 20 times or more; the fallback could weigh the headroom the
 * limit leaves past the slice map, not only whether the map fits.
 *
 * Checked: under 16 GiB + 256 MiB, kp_create(NULL) makes a pool that hands
 * out 128 MiB in 1 MiB blocks (half the headroom; inline does 32 times
 * that). This test: 54 MiB of 128 on 2aee60a; main 6e9c7bd 51 (no
 * fallback at all there), so not a regression of c5b20c0, a gap it leaves.
 * Reproduce: make -C allocator VARIANT=release
 * build/release/tests/test_create_rlimit_headroom_attack32 &&
 * allocator/build/release/tests/test_create_rlimit_headroom_attack32
 * Skipped under the sanitizers (their shadow needs more address space).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "ktest.h"

/* 16 GiB (the slice map) and 256 MiB: the map fits, with room for a small
 * program's heap. */
#define LIMIT (((rlim_t)16 << 30) + ((rlim_t)256 << 20))
/* Bytes asked for, in 1 MiB blocks: half the 256 MiB left past the map. */
#define WANT_MIB 128

static void test_a_limit_just_past_the_slice_map(void)
{
	if (KT_SANITIZED)
		return;
	struct rlimit rl = {LIMIT, LIMIT};
	REQUIRE(setrlimit(RLIMIT_AS, &rl) == 0, "setrlimit: %s", strerror(errno));
	kp_pool *pool = kp_create(NULL);
	REQUIRE(pool, "kp_create(NULL): %s", kp_last_error());
	char buf[8192];
	kp_stats_json(pool, buf, sizeof buf);
	static void *v[WANT_MIB];
	int got = 0;
	while (got < WANT_MIB && (v[got] = kp_alloc(pool, (size_t)1 << 20, 0)) != NULL)
		got++;
	fprintf(stderr, "  %.40s: %d MiB of %d in 1 MiB blocks\n", strstr(buf, "\"layout\""), got, WANT_MIB);
	CHECK(got == WANT_MIB,
	      "kp_create(NULL) under RLIMIT_AS 16 GiB + 256 MiB: %d MiB of %d MiB in 1 MiB blocks (layout:inline "
	      "under the same limit: all)",
	      got, WANT_MIB);
	for (int i = 0; i < got; i++)
		kp_free(pool, v[i]);
	kp_destroy(pool);
}

/* The control: layout:inline under the same limit. */
static void test_inline_under_the_same_limit(void)
{
	if (KT_SANITIZED)
		return;
	struct rlimit rl = {LIMIT, LIMIT};
	REQUIRE(setrlimit(RLIMIT_AS, &rl) == 0, "setrlimit: %s", strerror(errno));
	kp_pool *pool = kp_create("layout:inline");
	REQUIRE(pool, "kp_create: %s", kp_last_error());
	static void *v[WANT_MIB];
	int got = 0;
	while (got < WANT_MIB && (v[got] = kp_alloc(pool, (size_t)1 << 20, 0)) != NULL)
		got++;
	CHECK(got == WANT_MIB, "layout:inline: %d MiB of %d", got, WANT_MIB);
	for (int i = 0; i < got; i++)
		kp_free(pool, v[i]);
	kp_destroy(pool);
}

int main(void)
{
	unsetenv("KPOOL_CONF");
	RUN(test_a_limit_just_past_the_slice_map);
	RUN(test_inline_under_the_same_limit);
	return ktest_summary();
}
