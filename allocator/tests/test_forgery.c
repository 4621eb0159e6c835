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
 *  2. a segment's header sat right after the previous segment's last
 *     block: a 72-byte overflow past a 4 MB block rewrote the next segment's
 *     free mask (its magic was written, never checked), and the next
 *     allocation of that size returned a live block's address. The seal
 *     caught that; the span slots, unit_meta and unit_span it does not
 *     cover were rewritten the same way (sess16-hA4). Now the chunk of
 *     every segment is followed by a read-only guard (KP_SEG_MAP): the overflow stops
 *     at the block's end, with a fault, before any header byte.
 *
 * The header and segment reads and writes go through no_sanitize("address")
 * helpers: under ASan the attack must reach the pool, not ASan's report.
 */
#define _GNU_SOURCE 1
/* Tests the inline block headers and their keys (integrity.c; layout:outline's checks: test_outline_integrity.c): every pool layout:inline (ktest.h, KT_LAYOUT_INLINE). */
#define KT_LAYOUT_INLINE 1
#include "ktest.h"

#include "internal.h"

#include <setjmp.h>
#include <signal.h>
#include <stddef.h>

/* A copy that may run into a guard: the bytes copied before the fault (n if
 * none), and where it faulted (*fault, NULL if nowhere). */
static sigjmp_buf guard_jmp;
static volatile size_t guard_done;
static void *volatile guard_addr;
static void guard_fault(int sig, siginfo_t *si, void *uc)
{
	(void)sig;
	(void)uc;
	guard_addr = si->si_addr;
	siglongjmp(guard_jmp, 1);
}
static KT_RAW size_t guarded_copy(void *dst, const void *src, size_t n, void **fault)
{
	struct sigaction sa, old_segv, old_bus;
	memset(&sa, 0, sizeof sa);
	sa.sa_sigaction = guard_fault;
	sa.sa_flags = SA_SIGINFO | SA_NODEFER;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGSEGV, &sa, &old_segv);
	sigaction(SIGBUS, &sa, &old_bus);
	guard_done = 0;
	guard_addr = NULL;
	if (!sigsetjmp(guard_jmp, 1))
		for (size_t i = 0; i < n; i++, guard_done = i)
			((volatile char *)dst)[i] = ((const volatile char *)src)[i];
	sigaction(SIGSEGV, &old_segv, NULL);
	sigaction(SIGBUS, &old_bus, NULL);
	*fault = guard_addr;
	return guard_done;
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
 * header's and its guard's, its request ending 8 bytes (the canary) before
 * the guard. */
#define BIG_REQ (KP_LARGE_MAX - KP_HDR - KP_CANARY)

/* A pool of four segments, one big block each: n blocks in big. */
static int big_fill(kp_pool *pool, char **big)
{
	int n = 0;
	while (n < 8 && (big[n] = kp_alloc(pool, BIG_REQ, 0)) != NULL)
		n++;
	return n;
}

/* The attacker reads past its block to learn what follows, then overflows
 * 72 bytes past it with a segment header (every unit marked free): the read
 * finds the guard's zeros (read-only, KP_SEG_MAP: no segment header can be
 * there), the write faults at the guard's first byte, and nothing in the
 * pool changes. Before the guard the next segment's header followed the
 * block: the read gave it and the write reached its free mask (the seal
 * caught that one; not the span slots: sess16-hA4). */
static void test_segment_overflow_caught(void)
{
	kp_pool *pool = kp_create("primary_initial:16m,primary_max:16m,backup:1m,daemon:off");
	REQUIRE(pool, "kp_create: %s", kp_last_error());
	char *big[8];
	int n = big_fill(pool, big);
	REQUIRE(n >= 2, "only %d big blocks", n);
	int a = 0;
	char *guard = (char *)((uintptr_t)big[a] & ~(uintptr_t)(KP_SEG_SIZE - 1)) + KP_SEG_SIZE;
	CHECK(big[a] + BIG_REQ + KP_CANARY == guard, "the block ends where its segment's guard starts");
	unsigned char bytes[KP_CANARY + 128];
	size_t mask_off = offsetof(kp__seg, free_mask), nfree_off = offsetof(kp__seg, nfree_units);
	size_t len = KP_CANARY + (nfree_off + 4 > 64 ? nfree_off + 4 : 64);
	REQUIRE(len <= sizeof bytes, "layout");
	memset(bytes, 0xa5, sizeof bytes);
	void *fault = NULL;
	size_t got = guarded_copy(bytes, big[a] + BIG_REQ, len, &fault);
	unsigned nonzero = 0;
	for (size_t i = KP_CANARY; i < len; i++)
		nonzero += bytes[i] != 0;
	CHECK(got == len && !fault && nonzero == 0, "the over-read read %zu bytes (%u not zero), faulted at %p", got,
	      nonzero, fault);
	uint64_t all_free = KP_SEG_FREE_ALL;
	uint32_t nfree = KP_SEG_UNITS;
	memcpy(bytes + KP_CANARY + mask_off, &all_free, 8);
	memcpy(bytes + KP_CANARY + nfree_off, &nfree, 4);
	size_t put = guarded_copy(big[a] + BIG_REQ, bytes, len, &fault); /* the overflow: 72 bytes */
	CHECK(put == KP_CANARY && fault == guard, "the overflow wrote %zu bytes, faulted at %p (guard %p)", put, fault,
	      (void *)guard);
	int64_t ev = kt_stat(pool, "integrity.corruptions");
	char *q = kp_alloc(pool, BIG_REQ, 0);
	for (int i = 0; i < n; i++)
		CHECK(!q || !overlaps(q, BIG_REQ, big[i], BIG_REQ), "%p overlaps the live block %p", (void *)q,
		      (void *)big[i]);
	CHECK(kt_stat(pool, "integrity.corruptions") == ev, "a corruption event for an intact pool");
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
		CHECK(kp_free(pool, big[i]) == 0, "free of big block %d", i);
	kp_destroy(pool);
}

/* A blind overflow (zeros) stops at the guard too, after the canary, which
 * the block's free then reports; every other block frees. */
static void test_segment_blind_overflow_caught(void)
{
	kp_pool *pool = kp_create("primary_initial:16m,primary_max:16m,backup:1m,daemon:off");
	REQUIRE(pool, "kp_create: %s", kp_last_error());
	char *big[8];
	int n = big_fill(pool, big), a = 0;
	REQUIRE(n >= 2, "only %d big blocks", n);
	unsigned char bytes[72];
	memset(bytes, 0, sizeof bytes);
	void *fault = NULL;
	size_t put = guarded_copy(big[a] + BIG_REQ, bytes, sizeof bytes, &fault);
	CHECK(put == KP_CANARY && fault == big[a] + BIG_REQ + KP_CANARY, "the overflow wrote %zu bytes", put);
	int64_t ov = kt_stat(pool, "integrity.overflows");
	CHECK(kp_free(pool, big[a]) == KP_EOVERFLOW, "the overflowed block's free reports the overflow");
	CHECK(kt_stat(pool, "integrity.overflows") > ov, "no overflow event");
	for (int i = 1; i < n; i++)
		CHECK(kp_free(pool, big[i]) == 0, "free of big block %d", i);
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
