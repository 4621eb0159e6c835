/*
 * integrity.c - what the pool checks before it trusts a byte of its own
 * metadata, and what it does when a check fails.
 *
 * Block headers carry tag = K(address) ^ meta, K a keyed pseudo-random
 * function (SipHash-1-3 under the pool's 128-bit key, internal.h): a header
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

int kp__violation(kp_pool *pool, unsigned kind, int code, const void *addr, size_t size, const char *what)
{
	_Atomic uint64_t *counter = kind == KP_EV_DOUBLE_FREE	  ? &pool->double_frees
				    : kind == KP_EV_INVALID_FREE  ? &pool->invalid_frees
				    : kind == KP_EV_OVERFLOW	  ? &pool->overflows
				    : kind == KP_EV_USE_AFTER_FREE ? &pool->use_after_frees
				    : kind == KP_EV_FREELIST	  ? &pool->freelist_errors
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
