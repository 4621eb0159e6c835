/*
 * test_free_try.c - kp__free_try, the preload's free() (internal.h): it
 * frees every block kp_free's fast path takes, a full bin's included,
 * without its hook, errno untouched; everything else (NULL, no pool, a
 * pointer inside a block, a double free, a large block) goes to the hook,
 * kp__free_miss, once, told whether the fast path was tried, and the
 * default's results are kp_free's. Both kp_alloc and kp_alloc_aligned set
 * errno ENOMEM when they fail (kpool.h): the preload's malloc returns
 * their results as they are.
 *
 * This file defines kp__free_miss, which overrides alloc.c's weak default
 * as the preload's does; it records the call and forwards it to what the
 * default does.
 */
#define _GNU_SOURCE 1
#include "ktest.h"

#include "internal.h"

#include <errno.h>
#include <string.h>

static unsigned misses;
static bool last_tried;
static void *last_p;

int kp__free_miss(kp_pool *pool, void *p, bool tried)
{
	misses++;
	last_tried = tried;
	last_p = p;
	return kp__free_rest_quiet(pool, p, tried);
}

/* kp__free_try(p, kp__pool_tag(pool)) with errno set to a mark: its result, the hook's
 * calls it made, and errno kept. */
static int try_free(kp_pool *pool, void *p, unsigned *calls)
{
	unsigned before = misses;
	errno = 12345;
	int rc = kp__free_try(p, kp__pool_tag(pool));
	CHECK(errno == 12345, "kp__free_try(%p) changed errno to %d", p, errno);
	*calls = misses - before;
	return rc;
}

static void blocks_of_the_pool_never_reach_the_hook(void)
{
	KT_POOL(pool, "daemon:off");
	enum { N = 4096 }; /* more than a bin holds: the full bin's flush is taken inside */
	static void *b[N];
	for (int i = 0; i < N; i++) {
		b[i] = kp_alloc(pool, 8 + (size_t)(i % 200), 0);
		REQUIRE(b[i], "alloc %d", i);
	}
	/* A thread's first free claims its grace record (kp__grace_enter),
	 * without which kp__free_try's inline section cannot open: that one
	 * goes to the hook, untried. */
	void *warm = kp_alloc(pool, 16, 0);
	REQUIRE(warm, "alloc");
	kp_free(pool, warm);
	unsigned calls, total = 0;
	for (int i = 0; i < N; i++) {
		CHECK(try_free(pool, b[i], &calls) == 0, "free %d", i);
		total += calls;
	}
	CHECK(total == 0, "%u of %d blocks of the pool went to the hook", total, N);
	CHECK(kt_stat(pool, "primary.frees") == N + 1 && kt_stat(pool, "integrity.invalid_frees") == 0,
	      "frees %lld, invalid frees %lld", (long long)kt_stat(pool, "primary.frees"),
	      (long long)kt_stat(pool, "integrity.invalid_frees"));
	kp_destroy(pool);
}

static void everything_else_reaches_the_hook_once(void)
{
	KT_POOL(pool, "daemon:off");
	unsigned calls;
	void *p = kp_alloc(pool, 100, 0);
	REQUIRE(p, "alloc");
	bool fast = kp__tls_state.fast_free == pool->id; /* this build's fast path (AES, checks on, poison off) */

	CHECK(try_free(pool, NULL, &calls) == 0 && calls == 1 && last_p == NULL, "NULL: %u calls", calls);
	CHECK(last_tried == fast, "NULL: tried %d", last_tried);
	CHECK(try_free(NULL, p, &calls) == KP_EINVAL && calls == 1 && !last_tried, "no pool: %u calls, tried %d", calls,
	      last_tried);

	CHECK(try_free(pool, (char *)p + 32, &calls) != 0 && calls == 1, "inside a block: %u calls", calls);
	CHECK(try_free(pool, p, &calls) == 0 && calls == 0, "the block: %u calls", calls);
	CHECK(try_free(pool, p, &calls) == KP_EDOUBLEFREE && calls == 1 && last_tried == fast,
	      "a double free: %u calls, tried %d", calls, last_tried);

	void *big = kp_alloc(pool, 1 << 20, 0); /* a page run: never the fast path's */
	REQUIRE(big, "alloc 1 MiB");
	CHECK(try_free(pool, big, &calls) == 0 && calls == 1 && last_p == big, "a large block: %u calls", calls);
	CHECK(kp_usable_size(pool, big) == 0, "the large block is free");

	CHECK(kt_stat(pool, "primary.frees") == 2 && kt_stat(pool, "integrity.invalid_frees") == 1 &&
		      kt_stat(pool, "integrity.double_frees") == 1,
	      "frees %lld, invalid frees %lld, double frees %lld", (long long)kt_stat(pool, "primary.frees"),
	      (long long)kt_stat(pool, "integrity.invalid_frees"), (long long)kt_stat(pool, "integrity.double_frees"));
	kp_destroy(pool);
}

static void failed_allocations_set_enomem(void)
{
	KT_POOL(pool, "daemon:off,primary_max:8m,wait_ms:0");
	errno = 0;
	CHECK(kp_alloc(pool, SIZE_MAX - 8, 0) == NULL && errno == ENOMEM, "too large: errno %d", errno);
	errno = 0;
	CHECK(kp_alloc_aligned(pool, SIZE_MAX - 8, 64, 0) == NULL && errno == ENOMEM, "aligned, too large: errno %d",
	      errno);
	errno = 0;
	CHECK(kp_alloc(pool, 64u << 20, 0) == NULL && errno == ENOMEM, "past primary_max: errno %d", errno);
	errno = 0;
	CHECK(kp_alloc_aligned(pool, 64u << 20, 4096, 0) == NULL && errno == ENOMEM,
	      "aligned, past primary_max: errno %d", errno);
	kp_destroy(pool);
}

/* kp__malloc, the preload's malloc: kp_alloc(pool, size, 0) by the pool's
 * tag (kp__pool_tag), its blocks kp_free's; the tag of no pool (NULL: 1,
 * the preload's pool_tag before its pool is made) gets NULL and EINVAL,
 * as kp_alloc(NULL) does; a request too large, ENOMEM. */
static void kp_malloc_is_kp_alloc_by_the_tag(void)
{
	KT_POOL(pool, "daemon:off");
	uint64_t tag = kp__pool_tag(pool);
	CHECK(kp__pool_tag(NULL) == 1, "the tag of NULL: %llu (preload.c's pool_tag starts at 1)",
	      (unsigned long long)kp__pool_tag(NULL));
	enum { N = 600 }; /* past a span of the small classes: refills on the way */
	static void *b[N];
	for (int i = 0; i < N; i++) {
		size_t n = 1 + (size_t)(i * 37 % 3000);
		b[i] = kp__malloc(n, tag);
		REQUIRE(b[i], "kp__malloc(%zu)", n);
		CHECK(kp_usable_size(pool, b[i]) >= n, "usable size of %zu bytes: %zu", n, kp_usable_size(pool, b[i]));
		memset(b[i], 0xa5, n);
	}
	for (int i = 0; i < N; i++)
		CHECK(kp_free(pool, b[i]) == 0, "free %d", i);
	CHECK(kt_stat(pool, "integrity.invalid_frees") == 0 && kt_stat(pool, "integrity.overflows") == 0,
	      "invalid frees %lld, overflows %lld", (long long)kt_stat(pool, "integrity.invalid_frees"),
	      (long long)kt_stat(pool, "integrity.overflows"));
	void *big = kp__malloc(200u << 10, tag); /* past the outline classes: alloc.c's path */
	REQUIRE(big, "kp__malloc(200 KiB)");
	CHECK(kp_free(pool, big) == 0, "free of the large block");
	errno = 0;
	CHECK(kp__malloc(SIZE_MAX - 8, tag) == NULL && errno == ENOMEM, "too large: errno %d", errno);
	errno = 0;
	CHECK(kp__malloc(16, kp__pool_tag(NULL)) == NULL && errno == EINVAL, "no pool: errno %d", errno);
	kp_destroy(pool);
}

int main(void)
{
	kp_malloc_is_kp_alloc_by_the_tag();
	blocks_of_the_pool_never_reach_the_hook();
	everything_else_reaches_the_hook_once();
	failed_allocations_set_enomem();
	return ktest_summary();
}
