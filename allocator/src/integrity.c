/*
 * integrity.c - what the pool checks before it trusts a byte of its own
 * metadata, and what it does when a check fails.
 *
 * Block headers carry tag = K(address) ^ meta, K a keyed pseudo-random
 * function (AES-128 by AES-NI where the CPU has it, else SipHash-1-3, under
 * keys derived from the pool's 128-bit key; internal.h, below): a header
 * copied, forged or damaged does not verify, and no number of headers,
 * links or canaries read gives K of another address. Segment headers carry
 * a keyed magic and a keyed seal of their free mask, checked before the
 * fields are trusted (primary.c). With checks on, the slack past the
 * requested size holds a canary keyed the same way (a write
 * past the end is found at free at the latest), free-list links are decoded
 * and vetted before they are followed, and with poison on a freed payload is
 * filled and verified when it is handed out again (a write after free).
 * A violation is counted, recorded as an event, and contained: the block or
 * span concerned is quarantined, never reused, and the pool goes on. The
 * conf switch abort_on_corruption turns containment into abort() for
 * debugging.
 */
#include "internal.h"

#include <stdlib.h>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

/* ---- the block key K(h) ------------------------------------------------ */

uint64_t kp__sip_hkey(const kp__key *k, uint64_t m)
{
	return kp__prf1(k, m) | KP_HKEY_BIT;
}

#if defined(__x86_64__)
/* Only the key schedule is built for AES-NI (the rounds are kp__aes_hkey's
 * inline assembly); kp__key_aes_init runs it, and sets k->aes, when the CPU
 * has AES-NI. */
#define KP_AES_FN __attribute__((target("aes,sse2")))

/* One step of the AES-128 key expansion (FIPS-197 5.2, as in Intel's AES-NI
 * white paper): t holds aeskeygenassist(k, rcon). */
static KP_AES_FN __m128i aes_expand(__m128i k, __m128i t)
{
	t = _mm_shuffle_epi32(t, 0xff);
	k = _mm_xor_si128(k, _mm_slli_si128(k, 4));
	k = _mm_xor_si128(k, _mm_slli_si128(k, 4));
	k = _mm_xor_si128(k, _mm_slli_si128(k, 4));
	return _mm_xor_si128(k, t);
}

static KP_AES_FN void aes_schedule(uint64_t rk[22], uint64_t k0, uint64_t k1)
{
	__m128i *r = (__m128i *)rk;
	r[0] = _mm_set_epi64x((long long)k1, (long long)k0);
#define KP_AES_STEP(i, rcon) r[i] = aes_expand(r[i - 1], _mm_aeskeygenassist_si128(r[i - 1], rcon))
	KP_AES_STEP(1, 0x01);
	KP_AES_STEP(2, 0x02);
	KP_AES_STEP(3, 0x04);
	KP_AES_STEP(4, 0x08);
	KP_AES_STEP(5, 0x10);
	KP_AES_STEP(6, 0x20);
	KP_AES_STEP(7, 0x40);
	KP_AES_STEP(8, 0x80);
	KP_AES_STEP(9, 0x1b);
	KP_AES_STEP(10, 0x36);
#undef KP_AES_STEP
}

#endif

/* The AES key is SipHash(k, 3, i): 3 is no block address (those are
 * 16-aligned, and prf1 takes 8 bytes, not 16) nor a segment word's input
 * (a 4 MiB-aligned address | 1 or | 2), so it is independent of every
 * other value keyed by k. */
void kp__key_aes_init(kp__key *k)
{
	k->smul = kp__prf2(k, 4, 0) | 1; /* an input no other use of k takes */
	k->aes = 0;
#if defined(__x86_64__)
	/* CPUID itself, now, not __builtin_cpu_supports: that reads what
	 * libgcc's constructor found, and a pool can be made before it ran
	 * (.preinit_array; a preloaded malloc called by another library's
	 * constructor: libstdc++'s in every C++ program), when the key had no
	 * AES round keys and kp_free never took its inline path
	 * (test_key_early). And libgcc's probe is 4.5 KiB of code that the
	 * preload library's hot text window (preload/hot.txt) had to hold. */
	/* Leaf 1 (every x86-64 has it), AES-NI is ECX bit 25. The instruction
	 * itself, not <cpuid.h>'s __get_cpuid: a function of a system header
	 * inlined here is a source file of its own in the coverage build's
	 * per-file table (test_per_file_coverage_counts_only_libkpools_sources). */
	unsigned eax = 1, ebx, ecx = 0, edx;
	__asm__ volatile("cpuid" : "+a"(eax), "=b"(ebx), "+c"(ecx), "=d"(edx));
	(void)ebx;
	(void)edx;
	if (ecx & (1u << 25)) {
		aes_schedule(k->rk, kp__prf2(k, 3, 0), kp__prf2(k, 3, 1));
		k->aes = 1;
	}
#endif
}

int kp__violation(kp_pool *pool, unsigned kind, int code, const void *addr, size_t size, const char *what)
{
	_Atomic uint64_t *counter = kind == KP_EV_DOUBLE_FREE	   ? &pool->double_frees
				    : kind == KP_EV_INVALID_FREE   ? &pool->invalid_frees
				    : kind == KP_EV_OVERFLOW	   ? &pool->overflows
				    : kind == KP_EV_USE_AFTER_FREE ? &pool->use_after_frees
				    : kind == KP_EV_FREELIST	   ? &pool->freelist_errors
								   : &pool->corruptions;
	atomic_fetch_add(counter, 1);
	unsigned which = kp__backup_owns(&pool->backup, addr) ? KP_POOL_BACKUP : KP_POOL_PRIMARY;
	/* Never a made-up size: "size unknown" rather than a 0 the block never had;
	 * a freed block keeps only its class, so a double free says "size class". */
	if (size == KP_SIZE_UNKNOWN) {
		kp__event(pool, kind, which, addr, 0, "%p size unknown: %s", addr, what);
		kp__set_error_path("%p size unknown: %s", addr, what);
	} else {
		const char *label = kind == KP_EV_DOUBLE_FREE ? "size class" : "size";
		kp__event(pool, kind, which, addr, size, "%p %s %zu: %s", addr, label, size, what);
		kp__set_error_path("%p %s %zu: %s", addr, label, size, what);
	}
	if (pool->conf.abort_on_corruption && kind != KP_EV_INVALID_FREE)
		abort();
	return code;
}

/* Freed payloads: the first word is the free-list link; the rest is filled. */
void kp__poison_fill(char *payload, size_t usable)
{
	if (usable <= sizeof(void *))
		return;
	KP_UNPOISON(payload + sizeof(void *), usable - sizeof(void *));
	memset(payload + sizeof(void *), KP_POISON_BYTE, usable - sizeof(void *));
	KP_POISON(payload + sizeof(void *), usable - sizeof(void *));
}

KP_NOASAN bool kp__poison_ok(const char *payload, size_t usable)
{
	const uint64_t pat = 0x0101010101010101ull * KP_POISON_BYTE;
	size_t i = sizeof(void *);
	for (; i + 8 <= usable; i += 8) {
		uint64_t w;
		__builtin_memcpy(&w, payload + i, 8);
		if (w != pat)
			return false;
	}
	for (; i < usable; i++)
		if ((uint8_t)payload[i] != KP_POISON_BYTE)
			return false;
	return true;
}
