/*
 * test_huge_realloc_attack20.c - a huge block (past the page runs: its own
 * mapping, huge.c) whose header's request was rewritten past its mapping by
 * a caller who read K(h) (tag ^ meta) is a damaged header, as a small or a
 * page run's block is (test_realloc_checks' test_request_rewritten):
 * kp_usable_size says 0, kp_realloc refuses it (NULL, EINVAL, one
 * corruption event) and never resizes it nor makes its header sound again.
 * On main the huge block was resized by mremap and its header rewritten
 * whole, nothing reported (session 19's known gap).
 */
#define _GNU_SOURCE 1
#include "ktest.h"

#include "internal.h"

#include <errno.h>

static void rewrite_request(char *p, uint64_t req)
{
	char *h = p - KP_HDR;
	uint64_t meta = kt_raw_get(h + 8), key = kt_raw_get(h) ^ meta;
	uint64_t m = kp__meta(req, KP_CLS_HUGE, KP_ST_ALLOC);
	kt_raw_put(h + 8, m);
	kt_raw_put(h, key ^ m);
}

static void test_huge_request_past_the_mapping(const char *conf)
{
	kp_pool *pool = kp_create(conf);
	REQUIRE(pool, "kp_create(%s): %s", conf, kp_last_error());
	/* past the mapping by a page, by far, and the largest a header holds;
	 * the realloc grows, stays, or shrinks (each a path of realloc_huge) */
	const uint64_t reqs[] = {(uint64_t)8 << 20, ((uint64_t)1 << 47) - 1, ((uint64_t)1 << 48) - 1};
	const size_t to[] = {(size_t)7 << 20, (size_t)5 << 20, (size_t)3 << 20};
	for (unsigned i = 0; i < 3; i++) {
		for (unsigned j = 0; j < 3; j++) {
			char *p = kp_alloc(pool, 5u << 20, 0);
			REQUIRE(p, "huge alloc");
			kp__seg *s = kp__pagemap_get(p);
			size_t cap = s->size - 2 * KP_PAGE;
			if (reqs[i] <= cap)
				continue;
			rewrite_request(p, reqs[i]);
			CHECK(kp_usable_size(pool, p) == 0, "%s: request rewritten to %llu: usable size %zu", conf,
			      (unsigned long long)reqs[i], kp_usable_size(pool, p));
			int64_t before = kt_stat(pool, "integrity.corruptions");
			errno = 0;
			char *q = kp_realloc(pool, p, to[j], 0);
			int e = errno;
			CHECK(q == NULL && e == EINVAL,
			      "%s: request rewritten to %llu, realloc to %zu: served (%p, errno %d), nothing refused",
			      conf, (unsigned long long)reqs[i], to[j], (void *)q, e);
			CHECK(kt_stat(pool, "integrity.corruptions") == before + 1,
			      "%s: request rewritten to %llu, realloc to %zu: %lld corruption events, not 1", conf,
			      (unsigned long long)reqs[i], to[j],
			      (long long)(kt_stat(pool, "integrity.corruptions") - before));
			if (q)
				kp_free(pool, q);
		}
	}
	kt_events_clear(pool);
	/* the pool still serves huge blocks, and a sound one still resizes */
	char *p = kp_alloc(pool, 5u << 20, 0);
	REQUIRE(p, "huge alloc after");
	p[0] = 'x';
	char *q = kp_realloc(pool, p, 9u << 20, 0);
	CHECK(q && q[0] == 'x', "a sound huge block no longer resizes");
	if (q)
		CHECK(kp_free(pool, q) == 0, "free after realloc");
	kp_destroy(pool);
}

int main(void)
{
	test_huge_request_past_the_mapping("primary_initial:4m,backup:1m,daemon:off");
	test_huge_request_past_the_mapping("primary_initial:4m,backup:1m,daemon:off,checks:off");
	return ktest_summary();
}
