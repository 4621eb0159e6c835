/*
 * test_free_fast_modes.c - kp_free's fast path takes every block a pool of
 * either mode hands out, its request as long as its class allows.
 *
 * With checks off a block keeps no canary slack: a request may fill its
 * class to the last byte (kp_alloc with checks off picks the class of
 * size + KP_HDR). The fast path bounded the request by the canary's last
 * place (reach[2] = class size - 8), right with checks on, and so sent every
 * checks-off block in the top 8 bytes of its class through primary_free (the
 * segment's magic and seal, K(h) again): kpbench a ran 40% slower with checks
 * off than on. Each small class here, both modes: blocks of every request
 * from the class below's end to the class's last byte, freed in a bin with
 * room; none may reach primary_free (tc->slow_frees, owning thread only).
 */
#define _GNU_SOURCE 1
/* Tests the inline fast paths and their slot and grace words (alloc.c, kp__tls): every pool layout:inline (ktest.h, KT_LAYOUT_INLINE). */
#define KT_LAYOUT_INLINE 1
#include "ktest.h"

#include "internal.h"

static void frees_fast(const char *conf, size_t slack)
{
	KT_POOL(pool, conf);
	void *warm = kp_alloc(pool, 16, 0); /* the thread's cache, in the first slot */
	REQUIRE(warm, "alloc");
	kp_free(pool, warm);
	kp__tcache *tc = kp__tls_state.tc[0];
	REQUIRE(tc && tc->pool == pool, "the pool's cache in the first slot");
	unsigned tested = 0;
	for (unsigned c = 0; c < KP_NCLASS && kp__class_size[c] <= 4096; c++) {
		size_t lo = (c ? kp__class_size[c - 1] : KP_HDR) - KP_HDR - slack + 1;
		size_t hi = kp__class_size[c] - KP_HDR - slack;
		for (size_t req = lo; req <= hi; req++) {
			void *p = kp_alloc(pool, req, 0);
			REQUIRE(p, "alloc %zu", req);
			REQUIRE(kp_usable_size(pool, p) >= req, "usable of %zu", req);
			uint64_t before = tc->slow_frees;
			unsigned n = tc->bin[c].count;
			if (n + 1 >= tc->bin[c].max) /* a full bin takes the slow path by design */
				continue;
			CHECK(kp_free(pool, p) == 0, "free %zu", req);
			CHECK(tc->slow_frees == before, "%s: a block of %zu bytes (class %u, %u) went to primary_free",
			      conf, req, c, kp__class_size[c]);
			tested++;
		}
	}
	CHECK(tested > 1000, "%u frees tested", tested);
	kp_destroy(pool);
}

static void test_checks_off(void)
{
	frees_fast("primary_initial:4m,daemon:off,checks:off", 0);
}

static void test_checks_on(void)
{
	frees_fast("primary_initial:4m,daemon:off", KP_CANARY);
}

int main(void)
{
	RUN(test_checks_off);
	RUN(test_checks_on);
	return ktest_summary();
}
