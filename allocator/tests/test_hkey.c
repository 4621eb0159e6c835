/*
 * test_hkey.c - the block key K(h) (internal.h, integrity.c): AES-128 by
 * AES-NI where the CPU has it, SipHash-1-3 where it does not.
 *
 * The AES path is inline assembly and a hand-written key schedule: a known
 * answer pins both to AES-128 itself (the expected values were computed with
 * an independent AES implementation, Python's cryptography package, from the
 * key kp__key_make derives), so a dropped round or a wrong schedule step
 * cannot pass. The SipHash fallback must keep working on any CPU: it is
 * forced here by clearing k.aes. Either way K has bit 7 set (KP_HKEY_BIT):
 * K is the canary word, whose first byte must have its top bit set.
 */
#define _GNU_SOURCE 1
#include "ktest.h"

#include "internal.h"

#define KEY0 0x0123456789abcdefull
#define KEY1 0xfedcba9876543210ull

static const struct {
	uint64_t h, k;
} answers[] = {
	{0x00007f0012345670ull, 0xa34703ea8fe0cb5full},
	{0x0000000000000010ull, 0x4f05328352d78181ull},
	{0x00005555aaaa0000ull, 0x3e777b7ae120dd6cull},
};

/* The AES key is SipHash(pool key, 3, 0..1); K(h) the low half of
 * AES-128(h, 0) under it, bit 7 set (the answers are AES-128's own). */
static void test_aes_known_answer(void)
{
	kp__key k = kp__key_make(KEY0, KEY1);
	CHECK(kp__prf2(&k, 3, 0) == 0xf0c9e731596e0464ull && kp__prf2(&k, 3, 1) == 0x434e1d8e3236ea9aull,
	      "the AES key derivation changed: %#llx %#llx", (unsigned long long)kp__prf2(&k, 3, 0),
	      (unsigned long long)kp__prf2(&k, 3, 1));
#if defined(__x86_64__)
	if (!__builtin_cpu_supports("aes")) {
		CHECK(!k.aes, "k.aes set on a CPU without AES-NI");
		printf("   no AES-NI on this CPU: the known answer is not checked (skipped)\n");
		return;
	}
	CHECK(k.aes, "the CPU has AES-NI but the key does not use it");
	for (size_t i = 0; i < sizeof answers / sizeof answers[0]; i++) {
		uint64_t got = kp__hkey(k, (void *)answers[i].h);
		CHECK(got == (answers[i].k | KP_HKEY_BIT), "K(%#llx) = %#llx, AES-128 gives %#llx",
		      (unsigned long long)answers[i].h, (unsigned long long)got, (unsigned long long)answers[i].k);
	}
#else
	printf("   not x86-64: SipHash only (skipped)\n");
#endif
}

/* With k.aes clear, K is SipHash-1-3 (kp__prf1), deterministic, and a pool
 * with the fallback key still allocates and frees with checks on. */
static void test_sip_fallback(void)
{
	kp__key k = kp__key_make(KEY0, KEY1);
	k.aes = 0;
	unsigned same = 0;
	for (size_t i = 0; i < sizeof answers / sizeof answers[0]; i++) {
		uint64_t got = kp__hkey(k, (void *)answers[i].h);
		CHECK(got == (kp__prf1(&k, answers[i].h) | KP_HKEY_BIT), "the fallback is not SipHash");
		same += got == (answers[i].k | KP_HKEY_BIT);
	}
	CHECK(same == 0, "%u SipHash keys equal the AES ones", same);

	kp_pool *pool = kp_create("checks:on,daemon:off");
	REQUIRE(pool, "kp_create: %s", kp_last_error());
	pool->secret.aes = 0; /* as on a CPU without AES-NI (no block keyed yet) */
	void *p[256];
	for (int round = 0; round < 4; round++) {
		for (int i = 0; i < 256; i++) {
			p[i] = kp_alloc(pool, 16 + (size_t)i * 7 % 300, 0);
			REQUIRE(p[i], "alloc");
		}
		for (int i = 0; i < 256; i++)
			CHECK(kp_free(pool, p[i]) == 0, "free %d", i);
	}
	CHECK(kt_stat(pool, "integrity.corruptions") == 0 && kt_stat(pool, "integrity.freelist_errors") == 0,
	      "integrity events with the SipHash key");
	kp_destroy(pool);
}

/* Bit 7 of every K, by either function: of the 4096 block addresses here
 * half would have it clear by chance. And a pool's blocks (their canaries
 * are K: the slack's first byte) show it, on the fast paths' keys too: the
 * key stack's (allocation) and kp_free's own (freed blocks' links). */
static void test_bit7_always_set(void)
{
	kp__key k = kp__key_make(KEY0, KEY1);
	unsigned clear = 0, has_aes = k.aes;
	for (unsigned aes = 0; aes < 2; aes++) {
		k.aes = aes & has_aes;
		for (uint64_t h = 0x7f0000000000ull; h < 0x7f0000000000ull + 2048 * KP_HDR; h += KP_HDR)
			clear += !(kp__hkey(k, (void *)h) & KP_HKEY_BIT);
	}
	CHECK(clear == 0, "%u of 4096 keys with bit 7 clear", clear);

	kp_pool *pool = kp_create("checks:on,daemon:off,seed:3");
	REQUIRE(pool, "kp_create: %s", kp_last_error());
	enum { N = 512 };
	char *p[N];
	unsigned bad = 0;
	for (int round = 0; round < 2; round++) { /* the second round: blocks kp_free keyed */
		for (int i = 0; i < N; i++) {
			p[i] = kp_alloc(pool, 40, 0); /* a 64-byte class: 8 bytes of slack, the canary */
			REQUIRE(p[i], "alloc");
			bad += !(kt_raw_get(p[i] + 40) & KP_HKEY_BIT);
		}
		for (int i = 0; i < N; i++)
			CHECK(kp_free(pool, p[i]) == 0, "free %d", i);
	}
	CHECK(bad == 0, "%u of %d canaries with bit 7 clear", bad, 2 * N);
	kp_destroy(pool);
}

int main(void)
{
	RUN(test_bit7_always_set);
	RUN(test_aes_known_answer);
	RUN(test_sip_fallback);
	return ktest_summary();
}
