/*
 * test_outline_edges.c - layout:outline (outline.c) against the contract where
 * an outside review (session 23) found it apart from the inline path:
 *  - checks:off: a moving kp_realloc keeps min(old usable, size) bytes
 *    (kpool.h), the whole kp_usable_size, not only the request;
 *  - poison:on: a block quarantined for a write after its free, freed again
 *    through its stale pointer, is a double free (KP_EDOUBLEFREE and its
 *    event), and never handed out again;
 *  - a free of a block start the pool never handed out is an invalid free
 *    (KP_ENOTOURS, invalid_free), as on the inline path, not a double free;
 *  - kp_stats counts the outline segments: capacity, segments and committed
 *    bytes cover the blocks in use, and the peak is at least what was in use
 *    (before: 64 MiB in use against a capacity of 4 MiB and a peak of 0).
 * Each failed on main before its fix (the review's reproducers).
 */
#define _GNU_SOURCE 1
#include "ktest.h"

#include <errno.h>

/* Events of kind k drained from pool since the last call. */
static unsigned events_of(kp_pool *pool, unsigned k)
{
	kp_event ev[64];
	size_t n;
	unsigned got = 0;
	while ((n = kp_events_drain(pool, ev, 64)) > 0)
		for (size_t i = 0; i < n; i++)
			got += ev[i].kind == k;
	return got;
}

static void test_realloc_keeps_usable_checks_off(void)
{
	kp_pool *pool = kp_create("layout:outline,checks:off,daemon:off,seed:2");
	REQUIRE(pool != NULL, "kp_create: %s", kp_last_error());
	static const size_t reqs[] = {24, 100, 1000, 5000, 40000};
	for (size_t k = 0; k < sizeof reqs / sizeof reqs[0]; k++) {
		unsigned char *p = kp_alloc(pool, reqs[k], 0);
		REQUIRE(p != NULL, "kp_alloc(%zu)", reqs[k]);
		size_t u = kp_usable_size(pool, p);
		CHECK(u >= reqs[k], "usable %zu < request %zu", u, reqs[k]);
		memset(p, 0x5a, u);
		/* past 64 KiB: a block of alloc.c's path, so the block moves */
		unsigned char *q = kp_realloc(pool, p, 2 * u + 100000, 0);
		REQUIRE(q != NULL && q != p, "kp_realloc(%zu) did not move", 2 * u + 100000);
		size_t kept = 0;
		while (kept < u && q[kept] == 0x5a)
			kept++;
		CHECK(kept == u, "request %zu: %zu of its %zu usable bytes kept by a moving realloc", reqs[k], kept, u);
		kp_free(pool, q);
	}
	kp_destroy(pool);
}

static void test_poison_quarantined_freed_again(void)
{
	kp_pool *pool = kp_create("layout:outline,poison:on,daemon:off,seed:3");
	REQUIRE(pool != NULL, "kp_create: %s", kp_last_error());
	char *p = kp_alloc(pool, 40, 0);
	REQUIRE(p != NULL, "kp_alloc");
	CHECK(kp_free(pool, p) == 0, "the first free");
	p[3] = 'X'; /* a write after free: found when the block is taken again */
	enum { N = 5000 };
	static void *v[N];
	int hit = 0;
	for (int k = 0; k < N; k++) {
		v[k] = kp_alloc(pool, 40, 0);
		hit += v[k] == p;
	}
	CHECK(hit == 0, "the written block handed out %d times", hit);
	CHECK(events_of(pool, KP_EV_USE_AFTER_FREE) == 1, "the write after free not reported once");
	int rc = kp_free(pool, p); /* the stale pointer again: the block is quarantined, not live */
	CHECK(rc == KP_EDOUBLEFREE, "a free of the quarantined block: %d, not KP_EDOUBLEFREE", rc);
	CHECK(events_of(pool, KP_EV_DOUBLE_FREE) == 1, "no double_free event for it");
	CHECK(kp_usable_size(pool, p) == 0, "the quarantined block has a usable size");
	for (int k = 0; k < N; k++)
		kp_free(pool, v[k]);
	hit = 0;
	for (int k = 0; k < N; k++) {
		v[k] = kp_alloc(pool, 40, 0);
		hit += v[k] == p;
	}
	CHECK(hit == 0, "the quarantined block handed out %d times after its second free", hit);
	for (int k = 0; k < N; k++)
		kp_free(pool, v[k]);
	kp_destroy(pool);
}

static void test_never_handed_out_is_invalid(void)
{
	kp_pool *pool = kp_create("layout:outline,daemon:off,seed:9");
	REQUIRE(pool != NULL, "kp_create: %s", kp_last_error());
	char *p = kp_alloc(pool, 8, 0); /* a 16-byte block: its span's first */
	REQUIRE(p != NULL, "kp_alloc");
	CHECK(kp_free(pool, p + 16 * 1000) == KP_ENOTOURS, "block 1000 of the span (never handed out)");
	CHECK(events_of(pool, KP_EV_INVALID_FREE) == 1, "no invalid_free event for it");
	char *q = kp_alloc(pool, 3000, 0);
	REQUIRE(q != NULL, "kp_alloc(3000)");
	CHECK(kp_free(pool, p) == 0 && kp_free(pool, q) == 0, "the real blocks freed cleanly");
	CHECK(kp_free(pool, p) == KP_EDOUBLEFREE, "a real double free is still one");
	CHECK(events_of(pool, KP_EV_DOUBLE_FREE) == 1, "no double_free event");
	kp_destroy(pool);
}

/* A field of kp_stats_json's "primary" object. */
static long long primary_field(kp_pool *pool, const char *key)
{
	static char buf[16384];
	kp_stats_json(pool, buf, sizeof buf);
	const char *s = strstr(buf, "\"primary\"");
	char k[64];
	snprintf(k, sizeof k, "\"%s\":", key);
	s = s ? strstr(s, k) : NULL;
	return s ? atoll(s + strlen(k)) : -1;
}

static void test_stats_count_outline(void)
{
	kp_pool *pool = kp_create("layout:outline,daemon:off,seed:2");
	REQUIRE(pool != NULL, "kp_create: %s", kp_last_error());
	enum { N = 64 * 1024 };
	static void *v[N];
	for (int i = 0; i < N; i++)
		v[i] = kp_alloc(pool, 1000, 0);
	long long in_use = primary_field(pool, "in_use_bytes");
	long long cap = primary_field(pool, "capacity_bytes"), committed = primary_field(pool, "committed_bytes");
	long long segs = primary_field(pool, "segments"), peak = primary_field(pool, "peak_in_use_bytes");
	CHECK(in_use >= (long long)N * 1000, "in_use %lld", in_use);
	CHECK(cap >= in_use, "capacity %lld below the %lld bytes in use", cap, in_use);
	CHECK(committed >= in_use && committed <= cap, "committed %lld (in use %lld, capacity %lld)", committed, in_use,
	      cap);
	CHECK(segs >= in_use / (4 << 20), "%lld segments for %lld bytes in use", segs, in_use);
	CHECK(peak >= in_use, "peak %lld below the %lld bytes in use", peak, in_use);
	for (int i = 0; i < N; i++)
		kp_free(pool, v[i]);
	CHECK(primary_field(pool, "in_use_bytes") == 0, "in use after the frees");
	CHECK(primary_field(pool, "peak_in_use_bytes") >= in_use, "the peak fell with the frees");
	kp_destroy(pool);
}

int main(void)
{
	RUN(test_realloc_keeps_usable_checks_off);
	RUN(test_poison_quarantined_freed_again);
	RUN(test_never_handed_out_is_invalid);
	RUN(test_stats_count_outline);
	return ktest_summary();
}
