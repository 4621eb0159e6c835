/*
 * test_forgery.c - integrity metadata an attacker cannot forge (issue 14,
 * point 4).
 *
 * The attacker here reads what a buggy program lets it read (block headers,
 * free-list links, canaries, the bytes past a block) and writes where a
 * buggy program lets it write (inside its own live blocks, and a short
 * overflow past one), and knows the layouts of internal.h. Two attacks that
 * worked before:
 *
 *  1. the tag was mix(secret ^ address) ^ meta with an invertible mix: one
 *     header gave the secret back, a header forged inside a live block was
 *     accepted by kp_free and the next allocation overlapped the live block;
 *  2. a segment's header sits right after the previous segment's last
 *     block: a 72-byte overflow past a 4 MB block rewrote the next segment's
 *     free mask (its magic was written, never checked), and the next
 *     allocation of that size returned a live block's address.
 *
 * The header and segment reads and writes go through no_sanitize("address")
 * helpers: under ASan the attack must reach the pool, not ASan's report.
 */
#define _GNU_SOURCE 1
#include "ktest.h"

#include "internal.h"

#include <stddef.h>

static KT_RAW void raw_read(void *dst, const void *src, size_t n)
{
	for (size_t i = 0; i < n; i++)
		((volatile char *)dst)[i] = ((const volatile char *)src)[i];
}

static KT_RAW void raw_write(void *dst, const void *src, size_t n)
{
	for (size_t i = 0; i < n; i++)
		((volatile char *)dst)[i] = ((const volatile char *)src)[i];
}

/* ---- the attack of issue 14: invert the old mix ----------------------- */

#define OLD_MIX_MUL 0x7fb5d329728ea185ull

static uint64_t old_mix(uint64_t x)
{
	x ^= x >> 31;
	x *= OLD_MIX_MUL;
	x ^= x >> 27;
	return x;
}

static uint64_t inv_mul(uint64_t a) /* a odd: a * inv == 1 mod 2^64 (Newton) */
{
	uint64_t x = a;
	for (int i = 0; i < 6; i++)
		x *= 2 - a * x;
	return x;
}

static uint64_t old_unmix(uint64_t x)
{
	x ^= x >> 27;
	x ^= x >> 54;
	x *= inv_mul(OLD_MIX_MUL);
	x ^= x >> 31;
	x ^= x >> 62;
	return x;
}

/* What the described attack computes from one header: the pool secret, if
 * tag = mix(secret ^ address) ^ meta. */
static uint64_t recover_secret(const void *p)
{
	const char *h = (const char *)p - KP_HDR;
	uint64_t tag = kt_raw_get(h), meta = kt_raw_get(h + 8);
	return old_unmix(tag ^ meta) ^ (uintptr_t)h;
}

static bool overlaps(const char *a, size_t an, const char *b, size_t bn)
{
	return a < b + bn && b < a + an;
}

#define NLIVE 64
#define LIVE_SIZE 200 /* class 224: room for a forged 48-byte block inside */

/* Headers of many blocks leak nothing usable: the "secret" the attack
 * recovers from each header differs from header to header. */
static void test_headers_leak_no_key(void)
{
	kp_pool *pool = kp_create("primary_initial:8m,daemon:off");
	REQUIRE(pool, "kp_create: %s", kp_last_error());
	void *p[NLIVE];
	for (int i = 0; i < NLIVE; i++) {
		p[i] = kp_alloc(pool, LIVE_SIZE, 0);
		REQUIRE(p[i], "alloc");
	}
	unsigned agree = 0;
	uint64_t s0 = recover_secret(p[0]);
	for (int i = 1; i < NLIVE; i++)
		agree += recover_secret(p[i]) == s0;
	CHECK(agree == 0, "the secret recovered from %u of %d other headers equals the first one's (%#llx)", agree,
	      NLIVE - 1, (unsigned long long)s0);
	/* Freed blocks too: their headers and links. */
	for (int i = 0; i < NLIVE; i += 2)
		CHECK(kp_free(pool, p[i]) == 0, "free");
	unsigned free_agree = 0;
	for (int i = 2; i < NLIVE; i += 2)
		free_agree += recover_secret(p[i]) == recover_secret(p[0]);
	CHECK(free_agree == 0, "free headers: %u recovered secrets agree", free_agree);
	for (int i = 1; i < NLIVE; i += 2)
		CHECK(kp_free(pool, p[i]) == 0, "free");
	kp_destroy(pool);
}

/* The attack: recover the secret from a leaked header, forge a header inside
 * a live block with the tag and canary the old scheme would expect, free the
 * forged address. It must be refused with an event, and no later allocation
 * may overlap a live block. */
static void test_forged_header_refused(void)
{
	kp_pool *pool = kp_create("primary_initial:8m,daemon:off");
	REQUIRE(pool, "kp_create: %s", kp_last_error());
	char *live[NLIVE];
	for (int i = 0; i < NLIVE; i++) {
		live[i] = kp_alloc(pool, LIVE_SIZE, 0);
		REQUIRE(live[i], "alloc");
		memset(live[i], 0x11, LIVE_SIZE);
	}
	uint64_t secret = recover_secret(live[0]);
	/* A forged 48-byte block at offset 64 of live[10]'s payload. */
	char *victim = live[10];
	char *fh = victim + 64, *fp = fh + KP_HDR;
	size_t freq = 48;
	unsigned fcls = kp__class_of(freq + KP_HDR + KP_CANARY);
	uint64_t key = old_mix(secret ^ (uintptr_t)fh);
	uint64_t meta = kp__meta(freq, (uint16_t)fcls, KP_ST_ALLOC);
	kt_raw_put(fh, key ^ meta);
	kt_raw_put(fh + 8, meta);
	kt_raw_put(fp + freq, (key ^ KP_CANARY_XOR) | 0x80); /* the old canary */
	int64_t before = kt_stat(pool, "integrity.corruptions") + kt_stat(pool, "integrity.invalid_frees") +
			  kt_stat(pool, "integrity.overflows");
	int rc = kp_free(pool, fp);
	int64_t after = kt_stat(pool, "integrity.corruptions") + kt_stat(pool, "integrity.invalid_frees") +
			 kt_stat(pool, "integrity.overflows");
	CHECK(rc != 0, "kp_free accepted a header forged inside a live block (rc %d)", rc);
	CHECK(after > before, "no integrity event for the forged header");
	/* No later allocation overlaps a live block. */
	unsigned bad = 0;
	void *more[512];
	for (int i = 0; i < 512; i++) {
		size_t n = i % 2 ? freq : LIVE_SIZE;
		more[i] = kp_alloc(pool, n, 0);
		if (!more[i])
			continue;
		for (int j = 0; j < NLIVE; j++)
			bad += overlaps(more[i], n, live[j], LIVE_SIZE);
	}
	CHECK(bad == 0, "%u later allocations overlap a live block", bad);
	for (int i = 0; i < 512; i++)
		kp_free(pool, more[i]);
	for (int i = 0; i < NLIVE; i++)
		CHECK(kp_free(pool, live[i]) == 0, "free of a live block");
	kp_destroy(pool);
}

/* A free-list link read after free gives nothing that encodes a link for
 * another block: an attacker who knows the next block (it allocated it) and
 * reads two links learns two different pads. */
static void test_links_leak_no_key(void)
{
	kp_pool *pool = kp_create("primary_initial:8m,daemon:off");
	REQUIRE(pool, "kp_create: %s", kp_last_error());
	char *p[8];
	for (int i = 0; i < 8; i++) {
		p[i] = kp_alloc(pool, 40, 0);
		REQUIRE(p[i], "alloc");
	}
	/* Freed in order: p[i]'s link points at p[i - 1]'s header. */
	for (int i = 0; i < 8; i++)
		CHECK(kp_free(pool, p[i]) == 0, "free");
	uint64_t pad[8];
	for (int i = 1; i < 8; i++)
		pad[i] = kt_raw_get(p[i]) ^ (uintptr_t)(p[i - 1] - KP_HDR);
	/* The old encoding: pad = secret ^ slot >> 12, the same secret for all. */
	unsigned agree = 0;
	for (int i = 2; i < 8; i++)
		agree += (pad[i] ^ ((uintptr_t)p[i] >> 12)) == (pad[1] ^ ((uintptr_t)p[1] >> 12));
	CHECK(agree == 0, "%u links gave the same link key as the first", agree);
	kp_destroy(pool);
}

/* ---- the overflow into the next segment's header ----------------------- */

/* The largest block a span run holds: every unit of a segment but its
 * header's, its request ending 8 bytes (the canary) before the segment's
 * end. */
#define BIG_REQ (KP_LARGE_MAX - KP_HDR - KP_CANARY)

static void test_segment_overflow_caught(void)
{
	/* Four segments and no more, so that each big block fills one. */
	kp_pool *pool = kp_create("primary_initial:16m,primary_max:16m,backup:1m,daemon:off");
	REQUIRE(pool, "kp_create: %s", kp_last_error());
	char *big[8];
	int n = 0;
	while (n < 8 && (big[n] = kp_alloc(pool, BIG_REQ, 0)) != NULL)
		n++;
	REQUIRE(n >= 2, "only %d big blocks", n);
	/* A block whose segment ends where another segment begins. */
	int a = -1, b = -1;
	for (int i = 0; i < n && a < 0; i++)
		for (int j = 0; j < n; j++)
			if ((uintptr_t)big[j] - KP_UNIT_SIZE - KP_HDR ==
			    ((uintptr_t)big[i] & ~(uintptr_t)(KP_SEG_SIZE - 1)) + KP_SEG_SIZE) {
				a = i;
				b = j;
				break;
			}
	if (a < 0) {
		printf("   no two segments back to back: nothing to overflow into (skipped)\n");
		kp_destroy(pool);
		return;
	}
	char *next_seg = big[b] - KP_UNIT_SIZE - KP_HDR;
	REQUIRE(big[a] + BIG_REQ + KP_CANARY == next_seg, "the block ends where the next segment starts");
	/* The attacker reads the canary and the next segment's header, keeps
	 * both as they were (magic, pool, links) and marks every unit free. */
	unsigned char bytes[KP_CANARY + 128];
	size_t mask_off = offsetof(kp__seg, free_mask), nfree_off = offsetof(kp__seg, nfree_units);
	size_t len = KP_CANARY + (nfree_off + 4 > 64 ? nfree_off + 4 : 64);
	REQUIRE(len <= sizeof bytes, "layout");
	raw_read(bytes, big[a] + BIG_REQ, len);
	uint64_t all_free = ~1ull;
	uint32_t nfree = KP_UNITS - 1;
	memcpy(bytes + KP_CANARY + mask_off, &all_free, 8);
	memcpy(bytes + KP_CANARY + nfree_off, &nfree, 4);
	raw_write(big[a] + BIG_REQ, bytes, len); /* the overflow: 72 bytes */
	int64_t before = kt_stat(pool, "integrity.corruptions");
	char *q = kp_alloc(pool, BIG_REQ, 0);
	CHECK(q != big[b], "the next allocation of that size returned the live block %p", (void *)big[b]);
	for (int i = 0; i < n; i++)
		CHECK(!q || !overlaps(q, BIG_REQ, big[i], BIG_REQ), "%p overlaps the live block %p", (void *)q,
		      (void *)big[i]);
	CHECK(kt_stat(pool, "integrity.corruptions") > before, "no corruption event for the damaged segment header");
	/* Smaller requests do not get into the live block either. */
	unsigned bad = 0;
	void *more[64];
	for (int i = 0; i < 64; i++) {
		more[i] = kp_alloc(pool, 100000, 0);
		for (int j = 0; more[i] && j < n; j++)
			bad += overlaps(more[i], 100000, big[j], BIG_REQ);
	}
	CHECK(bad == 0, "%u later allocations overlap a live block", bad);
	for (int i = 0; i < 64; i++)
		kp_free(pool, more[i]);
	if (q)
		kp_free(pool, q);
	for (int i = 0; i < n; i++)
		kp_free(pool, big[i]);
	kp_destroy(pool);
}

/* A blind overflow (the attacker could not read the header first) is caught
 * the same way, whatever it wrote. */
static void test_segment_blind_overflow_caught(void)
{
	kp_pool *pool = kp_create("primary_initial:16m,primary_max:16m,backup:1m,daemon:off");
	REQUIRE(pool, "kp_create: %s", kp_last_error());
	char *big[8];
	int n = 0;
	while (n < 8 && (big[n] = kp_alloc(pool, BIG_REQ, 0)) != NULL)
		n++;
	int a = -1, b = -1;
	for (int i = 0; i < n && a < 0; i++)
		for (int j = 0; j < n; j++)
			if ((uintptr_t)big[j] - KP_UNIT_SIZE - KP_HDR ==
			    ((uintptr_t)big[i] & ~(uintptr_t)(KP_SEG_SIZE - 1)) + KP_SEG_SIZE) {
				a = i;
				b = j;
				break;
			}
	if (a < 0) {
		printf("   no two segments back to back (skipped)\n");
		kp_destroy(pool);
		return;
	}
	unsigned char bytes[72];
	memset(bytes, 0, sizeof bytes);
	uint64_t all_free = ~1ull;
	memcpy(bytes + KP_CANARY + offsetof(kp__seg, free_mask), &all_free, 8);
	raw_write(big[a] + BIG_REQ, bytes, sizeof bytes);
	char *q = kp_alloc(pool, BIG_REQ, 0);
	CHECK(q != big[b], "the next allocation returned the live block %p", (void *)big[b]);
	CHECK(kp_free(pool, big[a]) == KP_EOVERFLOW, "the overflowed block's free reports the overflow");
	/* The damaged segment is caught before anything in it is trusted: its
	 * block is not freed into units the header says are its. */
	int rc = kp_free(pool, big[b]); /* the owner field zeroed: foreign, or damaged */
	CHECK(rc == KP_ECORRUPT || rc == KP_ENOTOURS, "free of the block in the damaged segment: %d", rc);
	CHECK(kt_stat(pool, "integrity.corruptions") + kt_stat(pool, "integrity.invalid_frees") > 0, "no event");
	char *r = kp_alloc(pool, BIG_REQ, 0);
	CHECK(r != big[b], "an allocation after the free returned %p, in the damaged segment", (void *)r);
	if (q)
		kp_free(pool, q);
	if (r)
		kp_free(pool, r);
	for (int i = 0; i < n; i++)
		if (i != a && i != b)
			kp_free(pool, big[i]);
	kp_destroy(pool);
}

int main(void)
{
	RUN(test_headers_leak_no_key);
	RUN(test_forged_header_refused);
	RUN(test_links_leak_no_key);
	RUN(test_segment_overflow_caught);
	RUN(test_segment_blind_overflow_caught);
	return ktest_summary();
}
