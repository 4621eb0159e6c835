/*
 * test_free_full.c - a free into a full bin is checked as any other free.
 *
 * kp_free's fast path refuses a block when its thread's bin is full; the
 * block, verified already, then goes in after a flush (alloc.c, free_fast
 * with flush, reached through free_slow_own), not through primary_free. That
 * path must still refuse a block whose canary was overwritten (one byte past
 * its request), a double free and a header forged with another class, each
 * with its event, and keep every block once: after the frees, allocations
 * of the class hand out each block once, none overlapping a live one. The
 * bin's counts (allocs and frees, which its sizing policy reads) count each
 * free once.
 */
#define _GNU_SOURCE 1
/* Tests the inline fast paths and their slot and grace words (alloc.c, kp__tls): every pool layout:inline (ktest.h, KT_LAYOUT_INLINE). */
#define KT_LAYOUT_INLINE 1
#include "ktest.h"

#include "internal.h"

#include <string.h>

#define SIZE 200 /* class 224 with header and canary */
#define NB 600	 /* more than a bin holds (KP_BIN_MAX) */

static kp__bin *bin_of(size_t size)
{
	return &kp__tls_state.tc[0]->bin[kp__class_of(size + KP_HDR + KP_CANARY)];
}

static uint64_t nfreed; /* frees of the class that succeeded */

/* Free blocks from p[*i] on until the bin is full; false if p ran out. */
static bool fill_bin(kp_pool *pool, char **p, int *i)
{
	kp__bin *b = bin_of(SIZE);
	while (b->count < b->max) {
		if (*i >= NB)
			return false;
		int rc = kp_free(pool, p[*i]);
		CHECK(rc == 0, "free %d", *i);
		nfreed += rc == 0;
		p[(*i)++] = NULL;
	}
	return true;
}

static void test_full_bin(void)
{
	kp_pool *pool = kp_create("primary_initial:8m,daemon:off");
	REQUIRE(pool, "kp_create: %s", kp_last_error());
	static char *p[NB];
	for (int i = 0; i < NB; i++) {
		p[i] = kp_alloc(pool, SIZE, 0);
		REQUIRE(p[i], "alloc %d", i);
		memset(p[i], 0x11, SIZE);
	}
	kp__bin *b = bin_of(SIZE);
	uint64_t frees0 = atomic_load(&b->frees);
	int i = 0;

	/* An overflow of one byte, freed into a full bin. */
	REQUIRE(fill_bin(pool, p, &i), "bin never full");
	char *o = p[NB - 1];
	p[NB - 1] = NULL;
	if (!KT_ASAN) { /* ASan reports the write itself */
		REQUIRE(b->count == b->max, "bin full");
		memset(o, 'x', SIZE + 1);
		CHECK(kp_free(pool, o) == KP_EOVERFLOW, "overflow into a full bin not refused");
		CHECK(kt_stat(pool, "integrity.overflows") == 1, "overflow counter");
	}

	/* A double free of a block freed into a full bin. */
	REQUIRE(fill_bin(pool, p, &i), "bin never full");
	char *d = p[i];
	p[i++] = NULL;
	CHECK(kp_free(pool, d) == 0, "free into a full bin");
	nfreed++;
	REQUIRE(fill_bin(pool, p, &i), "bin never full");
	CHECK(kp_free(pool, d) == KP_EDOUBLEFREE, "double free into a full bin not refused");
	CHECK(kt_stat(pool, "integrity.double_frees") == 1, "double free counter");

	/* A live block's header rewritten with another class (whoever reads it
	 * learns K(h)), freed into a full bin. */
	REQUIRE(fill_bin(pool, p, &i), "bin never full");
	char *f = p[i], *h = f - KP_HDR;
	p[i++] = NULL;
	uint64_t key = kt_raw_get(h) ^ kt_raw_get(h + 8);
	unsigned other = kp__class_of(40 + KP_HDR + KP_CANARY);
	uint64_t meta = kp__meta(24, (uint16_t)other, KP_ST_ALLOC);
	kt_raw_put(h + 8, meta);
	kt_raw_put(h, key ^ meta);
	kt_raw_put(f + 24, kp__canary_word(key));
	CHECK(kp_free(pool, f) != 0, "forged class freed into a full bin");

	/* The rest, then every block of the class back once: no block handed
	 * out twice, none inside the forged one (still live, quarantined or
	 * not: the pool must not give it out). */
	for (; i < NB; i++)
		if (p[i]) {
			int rc = kp_free(pool, p[i]);
			CHECK(rc == 0, "free %d", i);
			nfreed += rc == 0;
			p[i] = NULL;
		}
	uint64_t counted = atomic_load(&b->frees) - frees0;
	CHECK(counted == nfreed, "bin counted %llu frees of %llu", (unsigned long long)counted,
	      (unsigned long long)nfreed);
	static char *q[NB];
	int nq = 0;
	for (; nq < NB; nq++) {
		q[nq] = kp_alloc(pool, SIZE, 0);
		REQUIRE(q[nq], "alloc again %d", nq);
		CHECK(!(q[nq] < f + SIZE && f < q[nq] + SIZE), "forged block handed out while live");
		memset(q[nq], 0x22, SIZE);
	}
	int dup = 0;
	for (int x = 0; x < nq; x++)
		for (int y = x + 1; y < nq; y++)
			dup += q[x] == q[y];
	CHECK(dup == 0, "%d blocks handed out twice", dup);
	for (int x = 0; x < nq; x++)
		CHECK(kp_free(pool, q[x]) == 0, "free again %d", x);
	kp_destroy(pool);
}

int main(void)
{
	RUN(test_full_bin);
	return ktest_summary();
}
