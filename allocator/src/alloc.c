/*
 * alloc.c - the allocation and free paths: the per-thread fast paths, the
 * allocation policy (the one function that decides primary, backup, wait or
 * refusal), and free with the checks it makes before it trusts a pointer.
 */
#include "internal.h"
#include "outline.h"

#include <errno.h>
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <time.h>

#define ALWAYS_INLINE inline __attribute__((always_inline))

static void *bad_size(kp_pool *pool, size_t size, size_t align)
{
	atomic_fetch_add(&pool->bad_sizes, 1);
	kp__event(pool, KP_EV_BAD_SIZE, KP_POOL_PRIMARY, NULL, size, "impossible request: size %zu align %zu", size,
		  align);
	kp__set_error_path("bad size %zu (align %zu)", size, align);
	errno = size > KP_REQ_MAX ? ENOMEM : EINVAL;
	return NULL;
}

/* A thread cache's list failed its check: everything still on it is set
 * aside (leaked on purpose: none of it can be trusted), and the bin refills
 * from the central lists. */
static void bin_damaged(kp_pool *pool, kp__bin *b, const void *h, const char *what)
{
	kp__violation(pool, KP_EV_FREELIST, KP_ECORRUPT, h, b->count, what);
	atomic_fetch_add(&pool->quarantined, b->count);
	b->head = NULL;
	b->count = 0;
}

/* Is next a plausible successor of h on a free list? The same segment as h
 * (already vetted) is enough; otherwise the pagemap decides (its entry's tag:
 * a normal segment of this pool, no read of the segment, so no grace
 * section). The block's header is checked when it is taken, against the key
 * its place in the bin's key stack holds. */
static ALWAYS_INLINE bool next_ok(kp_pool *pool, const char *h, const char *next)
{
	return !next ||
	       ((((uintptr_t)next ^ (uintptr_t)h) >> KP_SEG_SHIFT) == 0 && !((uintptr_t)next & (KP_HDR - 1))) ||
	       kp__pagemap_owns(pool->id, next);
}

/* K(h) on the fast path of kp_free, which is built twice: with aes (the
 * pool's key has AES-NI round keys: K inline, kp__aes_hkey) and without
 * (SipHash inline, in the noinline _sip copy, taken when pool->secret.aes is
 * clear). One build choosing at each K would carry a call to the SipHash
 * function in the middle of the AES path, and with it the registers saved
 * around it on every call. Allocation computes no K: the bins' key stacks
 * (kp__tcache) hold it. */
static ALWAYS_INLINE uint64_t fast_key(kp_pool *pool, const void *h, bool aes)
{
#if defined(__x86_64__)
	if (aes)
		return kp__aes_hkey(&pool->secret, (uintptr_t)h);
#endif
	return kp__prf1(&pool->secret, (uintptr_t)h) | KP_HKEY_BIT;
}

/* The pool key may have AES round keys: on x86-64 (with AES-NI; the copies
 * built for it check). Elsewhere only the SipHash copies are used. */
#if defined(__x86_64__)
#define KP_FAST_AES true
#else
#define KP_FAST_AES false
#endif

/* Is the head h of a bin holding n blocks (n > 0), with K(h) key, a free
 * block of class cls whose link next is plausible? The link must end the
 * list exactly at the last block the count says there is: a bin's count
 * and its list never disagree, so the fast paths test one of them. */
static ALWAYS_INLINE bool bin_head_ok(kp_pool *pool, const char *h, uint64_t key, unsigned cls, const char *next,
				      unsigned n)
{
	uint64_t m = kp__hdr_meta((const kp__hdr *)h);
	return (kp__hdr_tag((const kp__hdr *)h) ^ m) == key && m == kp__meta(0, (uint16_t)cls, KP_ST_FREE) &&
	       (next == NULL) == (n == 1) && next_ok(pool, h, next);
}

/* *keys: the bin's key stack (kp__tcache), which a miss may move; xc: its
 * cache's transfer counts (NULL: the shared path's bin of one). */
static ALWAYS_INLINE void *small_alloc(kp_pool *pool, kp__bin *b, uint64_t *const *keys, size_t size, unsigned cls,
				       kp__xcount *xc)
{
	size_t usable = kp__class_size[cls] - KP_HDR;
	for (;;) {
		char *h = b->head;
		if (KP_UNLIKELY(!h || !b->count)) {
			unsigned want = kp__bin_miss(b);
			if (KP_UNLIKELY(want > b->max)) /* KP_FLUSH_WHOLE: a count with no list (never) */
				want = b->max / 2;
			want += !want; /* a big block passing through, its bin at max 0 (tcache.c, bin_pass) */
			void *list = NULL;
			/* A batch another bin parked (transfer.c), up to the bin's max
			 * (the shared path's bin of one, cap KP_BIN_LEAST, has room for
			 * one), else blocks from the spans. */
			unsigned got = kp__xfer_take(pool, cls, &list, *keys,
						     b->cap > KP_BIN_LEAST && b->max ? b->max : want, xc);
			if (!got)
				got = kp__central_take(pool, cls, &list, *keys, want);
			if (!got)
				return NULL;
			b->head = h = list;
			b->count = got;
		}
		uint64_t key = (*keys)[b->count - 1] ^ kp__kslot(&pool->secret, h);
		char *next = kp__link_get_k(key, h);
		if (pool->conf.checks && KP_UNLIKELY(!bin_head_ok(pool, h, key, cls, next, b->count))) {
			bin_damaged(pool, b, h, "bad cache link, list quarantined");
			continue;
		}
		b->head = next;
		b->count--;
		if (KP_UNLIKELY(pool->conf.poison) && !kp__poison_ok(h + KP_HDR, usable)) {
			kp__hdr_put((kp__hdr *)h, key, kp__meta(0, (uint16_t)cls, KP_ST_QUARANTINE));
			atomic_fetch_add(&pool->quarantined, 1);
			kp__violation(pool, KP_EV_USE_AFTER_FREE, KP_ECORRUPT, h + KP_HDR, usable,
				      "write after free, quarantined");
			continue;
		}
		kp__hdr_put((kp__hdr *)h, key, kp__meta(size, (uint16_t)cls, KP_ST_ALLOC));
		/* Open what kp_usable_size reports: the request with checks on, the capacity without. */
		KP_UNPOISON(h + KP_HDR, pool->conf.checks ? size : usable);
		if (pool->conf.checks)
			kp__canary8_put(key, h + KP_HDR + size);
		kp__count_inc(&b->allocs, 1);
		return h + KP_HDR;
	}
}

/* A call served without a thread cache (made after the thread's exit hook
 * ran, or when no cache could be made) counts with the exited threads:
 * +1 block of usable bytes, or -1. */
static void count_uncached(kp_pool *pool, int blocks, size_t usable)
{
	atomic_fetch_add(blocks > 0 ? &pool->dead_allocs : &pool->dead_frees, 1);
	atomic_fetch_add(&pool->dead_in_use, blocks > 0 ? (uint64_t)usable : (uint64_t)0 - usable);
}

/* No cache: one block from the central list, through a bin of one. */
static __attribute__((noinline)) void *small_alloc_uncached(kp_pool *pool, size_t size, unsigned cls)
{
	uint64_t keys[1], *stack = keys;
	kp__bin b = {.max = 2, .cap = 2}; /* refills take max / 2 blocks: one */
	void *p = small_alloc(pool, &b, &stack, size, cls, NULL);
	if (p)
		count_uncached(pool, 1, kp__class_size[cls] - KP_HDR);
	return p;
}

/* A KP_ZERO request of a unit (64 KiB) or more takes a page run, not a
 * size class's block (zeroed whole): a run cut from units no block has
 * held is zero already (kp__large_take_fresh), and the pages of a calloc'd
 * table the program leaves unwritten stay untouched. gcc's cc1 on
 * integrity.c (bench gcc-libkpool's largest process) callocs 197 tables of
 * 64-128 KiB, most of them sparsely written: under the preload its peak
 * was 102 MB with them zeroed (jemalloc 77, glibc 106). */
static inline bool zero_run(size_t need, unsigned flags)
{
	return (flags & KP_ZERO) && need >= KP_UNIT_SIZE;
}

/* Set while a call runs nested inside one of this thread's on alloc.c's
 * path for layout:outline (kp__alloc_classic, kp__free_classic: a signal
 * handler's): it is served without the thread cache, which the
 * interrupted call is changing (classic_cache). */
static __thread bool classic_nocache __attribute__((tls_model("initial-exec")));
static inline kp__tcache *classic_cache(kp_pool *pool)
{
	return KP_UNLIKELY(classic_nocache) ? NULL : kp__tcache_get(pool, pool->id);
}

/* The primary alone: size classes, page runs, huge regions. tc may be NULL
 * (no cache: the shared path). flags: KP_ZERO's size classes (zero_run). */
static void *primary_alloc(kp_pool *pool, kp__tcache *tc, size_t size, unsigned flags)
{
	/* With checks on, every block keeps 8 bytes of slack for its canary, so
	 * an overflow of even one byte is caught at free. */
	size_t need = size + KP_HDR + pool->canary;
	if (need <= KP_SMALL_MAX && !zero_run(need, flags)) {
		unsigned cls = kp__class_of(need);
		return KP_LIKELY(tc != NULL) ? small_alloc(pool, &tc->bin[cls], &tc->stack[cls], size, cls, &tc->xcount)
					     : small_alloc_uncached(pool, size, cls);
	}
	char *h;
	uint16_t cls;
	size_t usable;
	if (need <= KP_LARGE_MAX) {
		h = kp__large_alloc(pool, need);
		cls = KP_CLS_LARGE;
		usable = ((need + KP_UNIT_SIZE - 1) & ~(KP_UNIT_SIZE - 1)) - KP_HDR;
	} else {
		h = kp__huge_alloc(pool, need, KP_PAGE);
		cls = KP_CLS_HUGE;
		usable = h ? ((kp__seg *)kp__pagemap_get(h))->size - 2 * KP_PAGE : 0;
	}
	if (!h)
		return NULL;
	uint64_t key = kp__hkey(pool->secret, h);
	KP_UNPOISON(h, KP_HDR);
	kp__hdr_put((kp__hdr *)h, key, kp__meta(size, cls, KP_ST_ALLOC));
	KP_POISON(h, KP_HDR);
	size_t open = pool->conf.checks ? size : usable;
	if (cls == KP_CLS_HUGE) /* a fresh mapping: only the slack is closed */
		KP_POISON(h + KP_HDR + open, usable - open);
	else
		KP_UNPOISON(h + KP_HDR, open);
	if (pool->conf.checks)
		kp__canary_put(key, h + KP_HDR, size, usable);
	if (tc) {
		kp__count_inc(&tc->allocs, 1);
		kp__count_inc(&tc->in_use, usable);
	} else {
		count_uncached(pool, 1, usable);
	}
	return h + KP_HDR;
}

static void *backup_alloc(kp_pool *pool, size_t size, size_t align, bool in_mode, const char *why)
{
	size_t usable;
	void *p = kp__backup_alloc(pool, size ? size : 1, align, &usable);
	if (!p)
		return NULL;
	KP_UNPOISON(p, usable); /* the whole buddy block but its canary */
	atomic_fetch_add(&pool->bk_allocs, 1);
	/* In the critical state the backup_enter event already says where
	 * critical traffic goes; a block served by a one-off failover is an
	 * event of its own. */
	if (!in_mode)
		kp__event(pool, KP_EV_BACKUP_ALLOC, KP_POOL_BACKUP, p, size, "%p size %zu: served by the backup (%s)",
			  p, size, why);
	return p;
}

/* Place an aligned payload of size bytes inside block p (over-allocated by
 * align): a redirect header in front of it points back to p. With checks on,
 * the enclosing block's request is cut to end where the aligned payload ends,
 * so its canary (checked when it is freed) sits right past the payload and an
 * overflow of the aligned block is caught like any other. There is room:
 * q - p is at most align - 16, so q + size + 16 <= p + size + align. */
static void *align_inside(kp_pool *pool, char *p, size_t size, size_t align)
{
	char *q = (char *)(((uintptr_t)p + align - 1) & ~(uintptr_t)(align - 1));
	kp__hdr *outer = (kp__hdr *)(p - KP_HDR);
	uint64_t meta = kp__hdr_meta(outer);
	size_t want = size + align, end = (size_t)(q - p) + size;
	if (pool->conf.checks && KP_META_REQ(meta) == want) {
		uint64_t key = kp__hkey(pool->secret, outer);
		kp__hdr_put(outer, key, kp__meta(end, (uint16_t)KP_META_CLS(meta), KP_META_ST(meta)));
		kp__canary8_put(key, p + end);
		KP_POISON(p + end, want - end);
	}
	if (q != p) {
		kp__hdr_set(pool->secret, (kp__hdr *)(q - KP_HDR), (size_t)(q - p), KP_CLS_ALIGNED, KP_ST_ALLOC);
		KP_POISON(q - KP_HDR, KP_HDR);
	}
	return q;
}

/* An ordinary caller may wait (wait_ms) for the daemon to make room, as
 * mempool_alloc waits for an element: wake it, sleep until its next pass,
 * try again. */
static void *wait_for_daemon(kp_pool *pool, kp__tcache *tc, size_t size)
{
	kp__daemon *d = &pool->daemon;
	if (!pool->conf.wait_ms || atomic_load(&d->state) != KP_D_RUNNING)
		return NULL;
	atomic_fetch_add(&pool->waits, 1);
	uint64_t deadline = kp__now_ns() + (uint64_t)pool->conf.wait_ms * 1000000ull;
	while (kp__now_ns() < deadline) {
		kp__daemon_wait(pool, &d->passes, deadline);
		void *p = primary_alloc(pool, tc, size, 0);
		if (p) {
			atomic_fetch_add(&pool->wait_successes, 1);
			return p;
		}
	}
	return NULL;
}

/*
 * The allocation policy, in one place (as mempool_alloc keeps its order):
 *  1. a privileged critical caller while the pool is in the critical state:
 *     the backup first;
 *  2. the primary;
 *  3. the primary failed: a privileged critical caller gets the backup at
 *     once; an unprivileged critical caller is refused (an event); anyone
 *     else may wait up to wait_ms for the daemon, then gets NULL (an event).
 */
static void *alloc_policy(kp_pool *pool, size_t size, size_t align, unsigned flags)
{
	if (KP_UNLIKELY(size > KP_REQ_MAX))
		return bad_size(pool, size, align);
	kp__tcache *tc = classic_cache(pool);
	bool privileged = (flags & KP_CRITICAL) && kp__scope_depth(pool) > 0;
	size_t want = align > KP_HDR ? size + align : size;
	void *p = NULL;
	if (privileged && atomic_load_explicit(&pool->backup_mode, memory_order_relaxed))
		p = backup_alloc(pool, size, align, true, "critical state");
	if (!p) /* without a cache (tc NULL) too: a thread is always served */
		p = primary_alloc(pool, tc, want, flags);
	if (!p && !(flags & KP_CRITICAL))
		p = wait_for_daemon(pool, tc, want);
	if (p && !kp__backup_owns(&pool->backup, p))
		return align > KP_HDR ? align_inside(pool, p, size, align) : p;
	if (p)
		return p;
	if (privileged) {
		p = backup_alloc(pool, size, align, false, "primary failed");
		if (p)
			return p;
		atomic_fetch_add(&pool->failures, 1);
		kp__event(pool, KP_EV_OOM, KP_POOL_BACKUP, NULL, size, "%zu bytes: primary and backup exhausted", size);
	} else if (flags & KP_CRITICAL) {
		atomic_fetch_add(&pool->bk_refusals, 1);
		kp__event(pool, KP_EV_DENIED, KP_POOL_BACKUP, NULL, size,
			  "%zu bytes: backup refused, caller holds no critical scope", size);
	} else {
		atomic_fetch_add(&pool->failures, 1);
		kp__event(pool, KP_EV_OOM, KP_POOL_PRIMARY, NULL, size, "%zu bytes: primary exhausted", size);
	}
	errno = ENOMEM;
	return NULL;
}

/* Is p in a huge block's fresh mapping, zero already (KP_ZERO need not
 * write gigabytes: a kept mapping used again is dirty), or a large block
 * cut from units never used (kp__large_take_fresh)? A backup block has no
 * segment. */
/* (noinline: a function of its own for the preload's hot text, hot.txt;
 * with two callers since s36-robust, aligned_body's too, gcc inlined it) */
static __attribute__((noinline)) bool fresh_mapping(kp_pool *pool, const void *p)
{
	/* Only this pool's huge block, inside its payload: a backup block
	 * (in the reserve, never in the pagemap) or anything the pagemap does
	 * not vouch for as such is zeroed. The fuzzer found a KP_ZERO backup
	 * block returned dirty (not-zeroed in kp_alloc, critical scope). */
	if (kp__backup_owns(&pool->backup, p))
		return false;
	kp__seg *s = kp__pagemap_get(p);
	if (s && s->pool == pool && s->kind == KP_SEG_NORMAL) /* a large block of zero units (primary.c) */
		return kp__large_take_fresh(s, p);
	return s && s->pool == pool && s->kind == KP_SEG_HUGE && !s->dirty &&
	       (const char *)p >= (const char *)s + 2 * KP_PAGE && (const char *)p < (const char *)s + s->size;
}

/* Everything but the common case, out of line so that the fast path below
 * needs no stack frame. */
static void *alloc_slow_inline(kp_pool *pool, size_t size, unsigned flags);
static __attribute__((noinline)) void *alloc_slow(kp_pool *pool, size_t size, unsigned flags)
{
	if (KP_UNLIKELY(!kp__pool_ok(pool))) {
		kp__not_a_pool(pool, "kp_alloc");
		return NULL;
	}
	if (pool->ol) /* layout:outline, a thread whose slot names no heap of it yet */
		return kp__ol_alloc(pool, size, flags);
	return alloc_slow_inline(pool, size, flags);
}

void *kp__alloc_slow(kp_pool *pool, size_t size, unsigned flags)
{
	return alloc_slow(pool, size, flags);
}

/* alloc_slow's inline layout (outline.c's blocks larger than its own). */
static void *alloc_slow_inline(kp_pool *pool, size_t size, unsigned flags)
{
	void *p = NULL;
	kp__tcache *tc = classic_cache(pool);
	if (size <= KP_SMALL_MAX - KP_HDR - KP_CANARY && !(flags & KP_CRITICAL) && tc &&
	    !zero_run(size + KP_HDR + pool->canary, flags)) {
		unsigned cls = kp__class_of(size + KP_HDR + pool->canary);
		p = small_alloc(pool, &tc->bin[cls], &tc->stack[cls], size, cls, &tc->xcount);
	}
	if (!p)
		p = alloc_policy(pool, size, KP_HDR, flags);
#if KP_PLANT == 8 /* planted 8: KP_ZERO leaves the first 8 bytes of a small block as they were */
	uint64_t kept = 0;
	bool keep = p && (flags & KP_ZERO) && size >= 16 && size <= KP_SMALL_MAX - KP_HDR - KP_CANARY;
	if (keep)
		memcpy(&kept, p, 8);
#endif
	if (p && (flags & KP_ZERO) && !fresh_mapping(pool, p))
		memset(p, 0, size);
#if KP_PLANT == 8 /* planted 8 */
	if (keep)
		memcpy(p, &kept, 8);
#endif
	return p;
}

/* alloc.c's path for layout:outline (outline.c: a signal handler's call
 * nested inside its thread's, a refill the OS refused, requests past its
 * classes). Its locks (a class's, pool->lock) are ordered before the
 * outline lock (ol->lock: kp_stats_json and fork_prepare take pool->lock,
 * then ol->lock), and kpool never comes here holding ol->lock: a call that
 * does is a signal handler's, its thread interrupted under ol->lock
 * (fc_steal, span_adopt, segment_new). Waiting there for pool->lock held by
 * a thread that waits for ol->lock hung for good
 * (test_outline_signal_stats_deadlock_attack32: 3 of 3 rounds with the
 * moment made, 2 of 6 by chance). Such a call tries its locks and never
 * waits (kp__mutex_nowait): served while no holder waits for this thread
 * (test_outline_signal_dup_attack32's handlers, whose threads are often in
 * fc_steal, are served, as before), and kpool's one line and abort when
 * one does (as kp__mutex_lock refuses a lock the thread holds itself,
 * glibc malloc's answer to a call nested inside itself), where it hung. */
static void *alloc_classic_body(kp_pool *pool, size_t size, unsigned flags)
{
	if (pool->ol && KP_UNLIKELY(kp__mutex_mine(&pool->ol->lock))) {
		kp__oscount *was = kp__mutex_nowait(&pool->os);
		void *p = alloc_slow_inline(pool, size, flags);
		kp__mutex_nowait(was);
		return p;
	}
	return alloc_slow_inline(pool, size, flags);
}

/* The pool of this thread's call on alloc.c's path for layout:outline
 * (kp__alloc_classic, kp__free_classic), or NULL; and the blocks of that
 * pool that calls nested inside it (a signal handler's) freed meanwhile,
 * linked through their first 8 bytes (a freed block's own), which it
 * frees as it ends (classic_leave). A handler pushes only: no other pop,
 * no ABA. Before (s35-sig), a handler's call there took the thread cache
 * the interrupted call was changing: outline.c's segments all taken, the
 * thread's refills on this path (refill_body's last case) and its
 * handler's too (alloc_nested), test_outline_signal_full_attack33 found
 * blocks held by two at once, a double free reported that no one made and
 * 64 bytes in use, in 4 of 30 release runs beside two busy loops; 0 of
 * 30 after, in release, ASan and TSan. */
static __thread kp_pool *classic_pool __attribute__((tls_model("initial-exec")));
static __thread void *_Atomic classic_later __attribute__((tls_model("initial-exec")));

static ALWAYS_INLINE int free_body(kp_pool *pool, void *p, bool quiet, bool checked);

static void classic_enter(kp_pool *pool)
{
	classic_pool = pool;
	atomic_signal_fence(memory_order_seq_cst);
}

static void classic_leave(kp_pool *pool)
{
	for (;;) {
		void *q = atomic_load_explicit(&classic_later, memory_order_relaxed);
		while (q) {
			if (!atomic_compare_exchange_weak_explicit(&classic_later, &q, *(void **)q,
								   memory_order_relaxed, memory_order_relaxed))
				continue;
			kp__classic_defer_undo(pool, q);
			free_body(pool, q, true, false);
			q = atomic_load_explicit(&classic_later, memory_order_relaxed);
		}
		atomic_signal_fence(memory_order_seq_cst);
		classic_pool = NULL;
		atomic_signal_fence(memory_order_seq_cst);
		/* one a handler deferred after the last look and before the
		 * store (later ones its handler frees itself): again */
		if (!atomic_load_explicit(&classic_later, memory_order_relaxed))
			return;
		classic_enter(pool);
	}
}

/* alloc.c's path for a call nested inside one of this thread's on it (a
 * signal handler's): no thread cache (classic_nocache): a block from the
 * class's central list under its lock, which the interrupted call may
 * hold: kpool's documented refusal then (kp__mutex_lock: one line, abort). */
static void *alloc_classic_nested(kp_pool *pool, size_t size, unsigned flags)
{
	bool was = classic_nocache;
	classic_nocache = true;
	atomic_signal_fence(memory_order_seq_cst);
	void *p = alloc_classic_body(pool, size, flags);
	atomic_signal_fence(memory_order_seq_cst);
	classic_nocache = was;
	return p;
}

void *kp__alloc_classic(kp_pool *pool, size_t size, unsigned flags)
{
	if (KP_UNLIKELY(classic_pool != NULL))
		return alloc_classic_nested(pool, size, flags);
	classic_enter(pool);
	void *p = alloc_classic_body(pool, size, flags);
	classic_leave(pool);
	return p;
}

/* The bits of (next ^ h) that must be zero for a link next to stay in h's
 * segment (the same 4 MiB above bit KP_SEG_SHIFT) and to be a header
 * address (16-aligned: h is). NULL never passes (no segment at address 0). */
#define KP_NEAR_MASK (~(uintptr_t)(KP_SEG_SIZE - 1) | (uintptr_t)(KP_HDR - 1))

/* bin_head_ok for the fast path, which makes no call, for a head h that is
 * not the bin's last block (alloc_fast leaves the last one to small_alloc):
 * the link must lead to another block, in h's segment. A link into another
 * segment is not refused here: alloc_far vets it through the pagemap
 * (kp__pagemap_owns). The same conditions as bin_head_ok's, each a
 * difference that must be zero, so that the path tests them with one branch
 * and few registers: fm is the meta of a free block of the bin's class, and
 * tag ^ key ^ fm with meta ^ fm zero say the header holds it under K(h); the
 * link must be near h (so not NULL: the count says blocks follow h). */
static ALWAYS_INLINE bool bin_head_near(const char *h, uint64_t key, uint64_t fm, uintptr_t next)
{
	uint64_t bad = (kp__hdr_tag((const kp__hdr *)h) ^ key ^ fm) | (kp__hdr_meta((const kp__hdr *)h) ^ fm);
	return (bad | ((next ^ (uintptr_t)h) & KP_NEAR_MASK)) == 0;
}

/* The conf switches the fast paths test, checks and poison, in one load:
 * checks on and poison off reads KP_MODE_CHECKED. */
#define KP_MODE_CHECKED 1u
_Static_assert(offsetof(kp__conf, poison) == offsetof(kp__conf, checks) + 1 && sizeof(bool) == 1,
	       "checks and poison are adjacent bytes");
static ALWAYS_INLINE unsigned conf_mode(const kp_pool *pool)
{
	uint16_t m;
	__builtin_memcpy(&m, &pool->conf.checks, 2);
	return m;
}

/* b->count = left (its count less one), on x86-64 by a decrement in
 * memory: left is not kept in a register across the checks, and
 * alloc_fast saves none (2 instructions fewer: callgrind, kpbench a). */
static ALWAYS_INLINE void bin_count_dec(kp__bin *b, unsigned left)
{
#if defined(__x86_64__)
	(void)left;
	__asm__("subl $1, %0" : "+m"(b->count));
#else
	b->count = left;
#endif
}

/* b->count = n (its count plus one), as bin_count_dec. */
static ALWAYS_INLINE void bin_count_inc(kp__bin *b, unsigned n)
{
#if defined(__x86_64__)
	(void)n;
	__asm__("addl $1, %0" : "+m"(b->count));
#else
	b->count = n;
#endif
}

/* The pop of alloc_far and alloc_far_vet, once the head and its link are vetted. */
static ALWAYS_INLINE void *far_pop(size_t size, kp__bin *b, char *h, unsigned n, uint64_t key, char *next, uint64_t fm)
{
	b->head = next;
	bin_count_dec(b, n - 1);
	/* The next block's link, as alloc_fast fetches it: in b the classes
	 * whose links lead far are the large ones, whose blocks are cold. */
	__builtin_prefetch(next + KP_HDR, 0, 3);
	kp__hdr_put((kp__hdr *)h, key, (uint64_t)size << 16 | (fm ^ KP_ST_FREE ^ KP_ST_ALLOC));
	KP_UNPOISON(h + KP_HDR, size);
	kp__canary8_put(key, h + KP_HDR + size);
	kp__count_inc(&b->allocs, 1);
	return h + KP_HDR;
}

/* alloc_far when the flat pagemap could not vouch for the link: the
 * two-level map decides (kp__pagemap_owns). */
static __attribute__((noinline)) void *alloc_far_vet(kp_pool *pool, size_t size, kp__bin *b, uint64_t key, char *next,
						     uint64_t fm)
{
	char *h = b->head;
	unsigned n = b->count;
	uint64_t bad = (kp__hdr_tag((const kp__hdr *)h) ^ key ^ fm) | (kp__hdr_meta((const kp__hdr *)h) ^ fm);
	if (bad || n == 1 || !kp__pagemap_owns(pool->id, next))
		return alloc_slow(pool, size, 0);
	return far_pop(size, b, h, n, key, next, fm);
}

/* alloc_fast's bin head failed bin_head_near: most often its link leads into
 * another segment (common once a pool has several: half of workload b's
 * allocations), which the pagemap vets (kp__pagemap_owns: a normal segment
 * of this pool), a lookup alloc_fast does not make. The same pop with that
 * check, from what alloc_fast read: the bin b (whose head h it has not
 * moved), the head's key (from the key stack), its decoded link next and
 * fm, the meta of a free block of b's class (passed: computing it again
 * from b's index in the cache cost six instructions). The conditions are
 * bin_head_ok's: the header (tag and meta) must hold fm under key, and as
 * bin_head_near failed with them intact, the link is not near h: it must
 * not end the list early (h is not the last block) and must be a plausible
 * header of this pool. Anything else (a damaged bin,
 * which small_alloc reports) goes to alloc_slow. alloc_fast checked the
 * rest: a pool, this thread's cache in the first slot, no flags, checks
 * on, no poisoning, a block in the bin. Here the flat pagemap alone
 * (kp__pagemap_flat_is, with kp__pagemap_owns's other tests); a no from it
 * goes to alloc_far_vet by a tail call: the two-level lookup inline here
 * cost four registers saved on every call. */
static __attribute__((noinline)) void *alloc_far(kp_pool *pool, size_t size, kp__bin *b, uint64_t key, char *next,
						 uint64_t fm)
{
	char *h = b->head;
	unsigned n = b->count;
	uint64_t bad = (kp__hdr_tag((const kp__hdr *)h) ^ key ^ fm) | (kp__hdr_meta((const kp__hdr *)h) ^ fm);
	uintptr_t off = (uintptr_t)next & KP_PM_TAG_MASK;
	if (KP_UNLIKELY(bad || n == 1 || (off & (KP_HDR - 1)) || off < KP_UNIT_SIZE ||
			!kp__pagemap_flat_is((uintptr_t)next - off, pool->id)))
		return alloc_far_vet(pool, size, b, key, next, fm);
	return far_pop(size, b, h, n, key, next, fm);
}

/* kp_alloc for a pool the thread's fast word (kp__tls_state.fast_alloc)
 * does not name: a pool of the first slot with checks off pops its bin
 * here (no canary, no link to vet: checks off), anything else goes to
 * alloc_slow. Out of line, so that alloc_fast tests one word for its mode. */
static __attribute__((noinline)) void *alloc_other(kp_pool *pool, size_t size, unsigned flags)
{
	if (pool && kp__tls_state.id[0] == pool->id && pool->id && size <= KP_SMALL_MAX - KP_HDR - KP_CANARY &&
	    !flags && conf_mode(pool) == 0) { /* checks off, poison off */
		unsigned cls = kp__class_of(size + KP_HDR);
		kp__tcache *tc = kp__tls_state.tc[0];
		kp__bin *b = &tc->bin[cls];
		unsigned n = b->count;
		char *h = b->head;
		if (KP_LIKELY(n >= 2 && h != NULL)) { /* the last block: small_alloc (bin_head_ok) */
			uint64_t key = tc->stack[cls][n - 1] ^ kp__kslot(&pool->secret, h);
			b->head = kp__link_get_k(key, h);
			b->count = n - 1;
			kp__hdr_put((kp__hdr *)h, key, kp__meta(size, (uint16_t)cls, KP_ST_ALLOC));
			KP_UNPOISON(h + KP_HDR, kp__class_size[cls] - KP_HDR);
			kp__count_inc(&b->allocs, 1);
			return h + KP_HDR;
		}
	}
	return alloc_slow(pool, size, flags);
}

static ALWAYS_INLINE void *alloc_fast_at(kp_pool *pool, uint64_t tag, size_t size, unsigned flags, bool by_tag)
{
	/* The fast path: a small ordinary request, this thread's cache for the
	 * pool in the first slot, a block in the bin, and (checks on) the block
	 * and its link verified against the key its place in the bin's key
	 * stack holds. Anything else goes to alloc_slow, which does all of it
	 * again, so this path makes no call and needs no stack frame. */
	/* The slot's id first: a pointer that is no pool (id 0 matches only an
	 * empty slot, or one whose pool takes no fast path) goes to alloc_slow,
	 * which refuses it, before a field of it is read. fast_alloc (kp__tls)
	 * is the first slot's id only when its pool has checks on and poison
	 * off: the mode costs no test here. A pool of another mode goes to
	 * alloc_other, and so does a call with flags. Its callers pin the
	 * arguments' registers and bring the pool's tag, kp__ol_slot_id(pool)
	 * (alloc_fast, kp__malloc); by_tag: the tag alone, pool made from it
	 * past the slot's test (kp__ol_tag_pool). */
	/* layout:outline, the pool the thread's slot names (outline.h,
	 * kp__ol_slot_id: its address + 1, no load and no NULL test, since
	 * s38-fasta: a NULL pool's tag matches no slot): first, inline, no
	 * call (kp_alloc + kp_free 100.0 -> 75.0 instructions on kpbench a,
	 * where a tail call behind the fast word's test came first). The
	 * default path pays this compare (3 instructions: the slot is in
	 * kp__tls, no GOT load of its own). Either mode, as kp__ol_alloc_fast
	 * is the same in both (checks:off went through a tail call past the
	 * fast word's test before, kpbench a 88.0 instructions against checks
	 * on's 75.0). */
	if (kp__ol_enter(tag)) { /* outline.h: the slot marked for the call's length */
		if (KP_LIKELY(!flags))
			return kp__ol_alloc_fast(size, tag);
		kp__ol_leave(tag);
		return alloc_other(by_tag ? kp__ol_tag_pool(tag) : pool, size, flags);
	}
	if (by_tag)
		pool = kp__ol_tag_pool(tag);
	if (KP_UNLIKELY(!pool))
		return alloc_other(pool, size, flags);
	uint64_t id = pool->id;
	if (KP_LIKELY(kp__tls_state.fast_alloc == id && !flags)) {
		/* Memory that is no pool, its first word 0, matches no slot:
		 * an empty one holds KP_FAST_NONE (internal.h) */
		/* pool->canary is KP_CANARY: checks are on. The sizes of
		 * kp__class_of's table first, with one test: the bound of the
		 * small sizes is tested only past it (kp_alloc 1 instruction
		 * fewer on workload a). */
		unsigned cls;
		if (KP_LIKELY(size <= KP_CLASS_TABLE_MAX - KP_HDR - KP_CANARY))
			cls = kp__class_of(size + KP_HDR + KP_CANARY);
		else if (size <= KP_SMALL_MAX - KP_HDR - KP_CANARY)
			cls = kp__class_of(size + KP_HDR + KP_CANARY);
		else
			goto slow;
		kp__tcache *tc = kp__tls_state.fast_tc; /* tc[0], or the empty kp__tcache_none */
		kp__bin *b = &tc->bin[cls];
		uint64_t *stack = tc->stack[cls];
		unsigned n = b->count;
		char *h = b->head;
		/* Two blocks at least. The last block of a bin, whose link must be
		 * NULL, is taken by small_alloc (bin_head_ok): about as rare as a
		 * refill, which follows it, and the check here then has one case,
		 * a link to a block near h (three instructions fewer on every
		 * allocation: a test, a conditional move and a copy). A count
		 * of two or more has a head: the bin is its thread's alone (its
		 * cache, never user memory), and every path that writes it
		 * writes the two together (a NULL head with a count: the pop of a
		 * last block, bin_damaged, a flush, each vetting the list against
		 * the count: bin_head_ok, kp__tcache_flush_bin), so h is not
		 * tested (2 instructions fewer; small_alloc, on the rare paths,
		 * tests both). */
#if defined(KP_DEBUG) && KP_DEBUG
		if (n >= 2 && h == NULL) /* the sanitizer and fuzz builds check the invariant */
			__builtin_trap();
#endif
		if (KP_UNLIKELY(n < 2))
			goto slow;
		unsigned left = n - 1;
		/* K(h): the stack holds it bound to h (internal.h, kp__kslot) */
		uint64_t key = stack[left] ^ kp__kslot(&pool->secret, h);
		char *next = kp__link_get_k(key, h);
		/* kp__meta(0, cls, KP_ST_FREE) without its cast to a byte (cls is
		 * one: kp__class_small's), which cost an instruction */
		uint64_t fm = (uint64_t)cls << 8 | KP_ST_FREE;
		/* From here b, not tc, stack and cls: fewer registers live. */
		__asm__("" : "+r"(b), "+r"(fm));
		if (KP_UNLIKELY(!bin_head_near(h, key, fm, (uintptr_t)next)))
			return alloc_far(pool, size, b, key, next, fm);
		b->head = next;
		bin_count_dec(b, left);
		/* The next block's link: the next allocation of this class
		 * reads it first, and in a program with many classes (b)
		 * it has gone cold in the bin by then (b +11%, medians of 7). */
		__builtin_prefetch(next + KP_HDR, 0, 3);
		kp__hdr_put((kp__hdr *)h, key, (uint64_t)size << 16 | (fm ^ KP_ST_FREE ^ KP_ST_ALLOC));
		KP_UNPOISON(h + KP_HDR, size);
		kp__canary8_put(key, h + KP_HDR + size);
		kp__count_inc(&b->allocs, 1);
		return h + KP_HDR;
	slow:
		return alloc_slow(pool, size, 0); /* flags is 0 here: one register less to keep */
	}
	return alloc_other(pool, size, flags);
}

static ALWAYS_INLINE void *alloc_fast(kp_pool *pool, size_t size, unsigned flags)
{
#ifdef __x86_64__
	/* pool kept where the call brought it (rdi): gcc 12 put the GOT's
	 * address there for kp__ol_enter's subtract and moved pool (1
	 * instruction an allocation), as free_entry's */
	__asm__("" : "+D"(pool));
#endif
	return alloc_fast_at(pool, kp__ol_slot_id(pool), size, flags, false);
}

KP_EXPORT void *kp_alloc(kp_pool *pool, size_t size, unsigned flags)
{
	return alloc_fast(pool, size, flags);
}

/* The tag the outline slot names pool by (outline.h, kp__ol_slot_id),
 * which the preload's malloc and free pass for their pool (kp__malloc,
 * kp__free_try): 1 for NULL. */
uint64_t kp__pool_tag(const kp_pool *pool)
{
	return kp__ol_slot_id(pool);
}

/* The preload's malloc (internal.h): kp_alloc's fast path with flags 0,
 * its arguments in the order malloc's call brings them (the size where
 * malloc's caller put it, the pool's tag second: kp__pool_tag), so that
 * malloc moves no register and sets no flags, this path tests none and
 * makes no tag (the pool, tag - 1, only on the ways past the slot's
 * test): 5 instructions a malloc fewer than its tail call of kp_alloc (a
 * move of the size, a zero for flags, their test and branch, the tag's
 * lea; s39-small, small_objects under callgrind,
 * tests/test_preload_instructions.py). */
void *kp__malloc(size_t size, uint64_t tag)
{
#ifdef __x86_64__
	/* size and tag where the call brought them (rdi, rsi), as kp_alloc
	 * keeps pool */
	__asm__("" : "+D"(size), "+S"(tag));
#endif
	return alloc_fast_at(NULL, tag, size, 0, true);
}

/* kp_alloc_aligned's and kp_realloc's calls on alloc.c's path for
 * layout:outline, as kp__alloc_classic's: the thread's call marked
 * (classic_pool), so that a call nested inside it (a signal handler's)
 * takes no thread cache (classic_nocache) and sets its frees of the pool's
 * blocks aside (classic_later); nested, no thread cache itself; and with
 * the outline lock held (a handler's, alloc_classic_body) its locks tried,
 * never waited for. Before (s36-robust) both went to alloc.c's thread
 * cache unmarked: a handler's kp_alloc_aligned, kp_realloc or kp_free
 * nested inside its thread's changed the cache's lists under it
 * (test_outline_signal_aligned_attack36: 3-9 lists found damaged,
 * "bad cache link", in each of 9 rounds of 3 runs in release). */
struct classic_call {
	size_t size, align;
	void *p;
	unsigned flags;
};
static void *classic_call(kp_pool *pool, void *(*body)(kp_pool *, struct classic_call *), struct classic_call *c)
{
	bool nested = classic_pool != NULL, was = classic_nocache;
	if (nested) {
		classic_nocache = true;
		atomic_signal_fence(memory_order_seq_cst);
	} else {
		classic_enter(pool);
	}
	bool mine = kp__mutex_mine(&pool->ol->lock);
	kp__oscount *os = mine ? kp__mutex_nowait(&pool->os) : NULL;
	void *p = body(pool, c);
	if (mine)
		kp__mutex_nowait(os);
	if (nested) {
		atomic_signal_fence(memory_order_seq_cst);
		classic_nocache = was;
	} else {
		classic_leave(pool);
	}
	return p;
}

static void *aligned_body(kp_pool *pool, size_t size, size_t align, unsigned flags);
static void *aligned_call(kp_pool *pool, struct classic_call *c)
{
	return aligned_body(pool, c->size, c->align, c->flags);
}
static __attribute__((noinline)) void *aligned_classic(kp_pool *pool, size_t size, size_t align, unsigned flags)
{
	struct classic_call c = {.size = size, .align = align, .flags = flags};
	return classic_call(pool, aligned_call, &c);
}

KP_EXPORT void *kp_alloc_aligned(kp_pool *pool, size_t size, size_t align, unsigned flags)
{
	if (KP_UNLIKELY(!kp__pool_ok(pool))) {
		kp__not_a_pool(pool, "kp_alloc_aligned");
		return NULL;
	}
	/* outline.c's blocks are 16-aligned; larger alignments take the
	 * inline path's blocks, which kp_free finds by the same dispatch */
	if (pool->ol && align <= KP_HDR && align && !(align & (align - 1)))
		return kp__ol_alloc(pool, size, flags);
	if (align == 0 || (align & (align - 1)) || align > KP_ALIGN_MAX)
		return bad_size(pool, size, align);
	if (pool->ol) /* alloc.c's path for layout:outline (classic_call) */
		return aligned_classic(pool, size, align, flags);
	return aligned_body(pool, size, align, flags);
}

static void *aligned_body(kp_pool *pool, size_t size, size_t align, unsigned flags)
{
	void *p = alloc_policy(pool, size, align, flags);
	if (p && (flags & KP_ZERO) && !fresh_mapping(pool, p))
		memset(p, 0, size);
#if KP_PLANT == 6 /* planted 6: a pointer 16 bytes off for alignments of 4096 and up */
	if (p && align >= 4096)
		return (char *)p + 16;
#endif
#if KP_PLANT == 10 /* planted 10: a block aligned to 4096 or more handed out again while still live */
	static void *again;
	static kp_pool *again_pool;
	if (p && align >= 4096) {
		void *live = again_pool == pool ? again : NULL;
		again = p;
		again_pool = pool;
		if (live && live != p && kp_usable_size(pool, live) >= (size ? size : 1)) { /* a freed one has 0 */
			kp_free(pool, p);
			again = live;
			return live;
		}
	}
#endif
	return p;
}

/* ---- free -------------------------------------------------------------- */

static const char *why_text(int code)
{
	switch (code) {
	case KP_EDOUBLEFREE: return "double free";
	case KP_ECORRUPT: return "damaged block header";
	default: return "free of a pointer never given out";
	}
}

static unsigned why_kind(int code)
{
	return code == KP_EDOUBLEFREE ? KP_EV_DOUBLE_FREE : code == KP_ECORRUPT ? KP_EV_CORRUPTION : KP_EV_INVALID_FREE;
}

/* An aligned block 16 bytes into its enclosing block, freed: its redirect
 * header's tag was overwritten by the enclosing block's free-list link, but
 * its meta word still says "aligned, 16 back", and the enclosing block's own
 * header verifies as free. A second free of it is a double free. */
static bool aligned_freed(kp_pool *pool, const kp__hdr *h)
{
	uint64_t meta = kp__hdr_meta(h);
	if (KP_META_CLS(meta) != KP_CLS_ALIGNED || KP_META_REQ(meta) != KP_HDR)
		return false;
	const kp__hdr *outer = h - 1;
	return kp__hdr_ok(pool->secret, outer) && KP_META_ST(kp__hdr_meta(outer)) == KP_ST_FREE;
}

/* Is cls the class of the place h is at: a small block in a span of that
 * class, a large block at the start of its run, a huge block in a huge
 * segment (redirects are vetted by their enclosing block)? */
static bool class_fits(kp__seg *s, const kp__hdr *h, unsigned cls)
{
	if (s->kind == KP_SEG_HUGE)
		return cls == KP_CLS_HUGE;
	uintptr_t off = (uintptr_t)h - (uintptr_t)s;
	const kp__span *sp = &s->span[s->span[off >> KP_UNIT_SHIFT].head];
	if (cls < KP_NCLASS) /* and a block start of its span (free_fast's test) */
		return sp->kind == KP_SPAN_SMALL && sp->cls == cls && (const char *)h >= sp->start &&
		       ((const char *)h - sp->start) % sp->block == 0 &&
		       (size_t)((const char *)h - sp->start) / sp->block < sp->nblocks;
	if (cls == KP_CLS_LARGE)
		return sp->kind == KP_SPAN_LARGE && sp->start == (const char *)h;
	return cls == KP_CLS_ALIGNED;
}

/* Find the header of a live primary block without trusting p: the pagemap
 * says whether the address is ours before anything near it is read. On
 * failure returns NULL and sets *code. */
static kp__hdr *primary_hdr(kp_pool *pool, const void *p, kp__seg **segp, int *code)
{
	kp__seg *s = kp__pagemap_get(p);
	*code = KP_ENOTOURS;
	if (!s || s->pool != pool || ((uintptr_t)p & (KP_HDR - 1)))
		return NULL;
	uintptr_t off = (uintptr_t)p - (uintptr_t)s;
	if (s->kind == KP_SEG_HUGE ? off != 2 * KP_PAGE : off < KP_UNIT_SIZE + KP_HDR)
		return NULL;
	kp__hdr *h = (kp__hdr *)((uintptr_t)p - KP_HDR);
	if (!kp__hdr_ok(pool->secret, h)) {
		/* A block start whose tag does not match was damaged; any other
		 * address inside a span is an interior pointer. */
		if (s->kind == KP_SEG_NORMAL) {
			kp__span *sp = &s->span[s->span[off >> KP_UNIT_SHIFT].head];
			if (sp->kind != KP_SPAN_FREE && ((char *)h - sp->start) % sp->block == 0)
				*code = KP_ECORRUPT;
			else if (aligned_freed(pool, h))
				*code = KP_EDOUBLEFREE;
		} else {
			*code = KP_ECORRUPT;
		}
		return NULL;
	}
	uint64_t meta = kp__hdr_meta(h);
	unsigned st = KP_META_ST(meta);
	if (st != KP_ST_ALLOC && !(KP_PLANT == 2 && st == KP_ST_FREE)) { /* planted 2: no double-free check */
		*code = st == KP_ST_FREE ? KP_EDOUBLEFREE : KP_ECORRUPT;
		return NULL;
	}
	/* The segment's header is trusted from here on (a span's geometry, a
	 * huge block's size): its keyed magic first. Then the class the header
	 * claims must be its place's (K(h) stops a header forged elsewhere, not
	 * one rewritten in place by someone who read it). */
	*code = KP_ECORRUPT;
	if (!kp__seg_ok(pool, s) || !class_fits(s, h, KP_META_CLS(meta)))
		return NULL;
	*segp = s;
	return h;
}

static kp__span *span_at(kp__seg *s, const void *h)
{
	uintptr_t off = (uintptr_t)h - (uintptr_t)s;
	return &s->span[s->span[off >> KP_UNIT_SHIFT].head];
}

/* The bytes the block's memory spans after its header. */
static size_t primary_capacity(kp__seg *s, const kp__hdr *h)
{
	unsigned cls = KP_META_CLS(kp__hdr_meta(h));
	if (cls < KP_NCLASS)
		return kp__class_size[cls] - KP_HDR;
	if (cls == KP_CLS_HUGE)
		return s->size - 2 * KP_PAGE;
	return span_at(s, h)->block - KP_HDR;
}

/* What the caller may use: with checks on, exactly what it asked for (the
 * slack past it holds the canary); with checks off, the whole capacity. */
static size_t primary_usable(kp_pool *pool, kp__seg *s, const kp__hdr *h)
{
	size_t cap = primary_capacity(s, h);
	size_t req = KP_META_REQ(kp__hdr_meta(h));
	return pool->conf.checks && req < cap ? req : cap;
}

/* With no slack for a canary, the next block's header is the canary: if it
 * was carved, it must still verify. */
static bool neighbour_ok(kp_pool *pool, kp__seg *s, const kp__hdr *h, unsigned cls)
{
	if (cls >= KP_NCLASS)
		return true;
	kp__span *sp = span_at(s, h);
	const kp__hdr *nb = (const kp__hdr *)((const char *)h + sp->block);
	pthread_mutex_lock(kp__class_lock(pool, cls));
	bool carved = (const char *)nb < sp->start + (size_t)sp->bump * sp->block;
	pthread_mutex_unlock(kp__class_lock(pool, cls));
	return !carved || kp__hdr_ok(pool->secret, nb);
}

/* What a failed free can still say about the block's size. Free clears the
 * requested size from the header but keeps the class, so a double free of a
 * small block knows its class's capacity; a large block's span may have been
 * merged since, an aligned block's redirect overwritten, and a pointer that
 * is no block has no size. primary_hdr vouched for the address (the pagemap)
 * before a double free is reported, so its header may be read. */
static size_t failed_free_size(kp_pool *pool, const void *p, int code)
{
	if (code != KP_EDOUBLEFREE)
		return KP_SIZE_UNKNOWN;
	const kp__hdr *h = (const kp__hdr *)((uintptr_t)p - KP_HDR);
	if (!kp__hdr_ok(pool->secret, h))
		return KP_SIZE_UNKNOWN;
	unsigned cls = KP_META_CLS(kp__hdr_meta(h));
	return cls < KP_NCLASS ? kp__class_size[cls] - KP_HDR : KP_SIZE_UNKNOWN;
}

/* holds: 0, or for the block a redirect points back to, the redirect's
 * offset, which must lie inside that block (a redirect rewritten in place
 * must not free a neighbour). */
static int primary_free(kp_pool *pool, void *p, size_t holds)
{
	kp__seg *s;
	int code;
	kp__hdr *h = primary_hdr(pool, p, &s, &code);
	if (!h && code == KP_ENOTOURS && kp__huge_gone(pool, p)) /* its mapping gone: nothing to read */
		return kp__violation(pool, KP_EV_DOUBLE_FREE, KP_EDOUBLEFREE, p, KP_SIZE_UNKNOWN,
				     "double free of a huge block");
	if (!h)
		return kp__violation(pool, why_kind(code), code, p, failed_free_size(pool, p, code), why_text(code));
	uint64_t meta = kp__hdr_meta(h);
	unsigned cls = KP_META_CLS(meta);
	size_t req = KP_META_REQ(meta);
	if (holds && (cls == KP_CLS_ALIGNED || primary_capacity(s, h) < holds))
		return kp__violation(pool, KP_EV_CORRUPTION, KP_ECORRUPT, p, KP_SIZE_UNKNOWN, "damaged block header");
	if (cls == KP_CLS_ALIGNED) {
		if (req < KP_HDR || req > KP_ALIGN_MAX)
			return kp__violation(pool, KP_EV_CORRUPTION, KP_ECORRUPT, p, KP_SIZE_UNKNOWN,
					     "damaged block header");
		/* Mark the redirect free first: it may lie in the enclosing block's
		 * first payload word, which becomes that block's free-list link. */
		kp__hdr_set(pool->secret, h, req, KP_CLS_ALIGNED, KP_ST_FREE);
		int rc = primary_free(pool, (char *)p - req, req);
		if (rc != 0)
			kp__hdr_set(pool->secret, h, req, KP_CLS_ALIGNED, KP_ST_ALLOC);
		return rc;
	}
	size_t usable = primary_capacity(s, h);
	/* A request past the block's capacity: rewritten by a caller who read
	 * K(h) (tag ^ meta; test_req_rewritten), never written so. */
	if (req > usable)
		return kp__violation(pool, KP_EV_CORRUPTION, KP_ECORRUPT, p, KP_SIZE_UNKNOWN, "damaged block header");
	uint64_t key = kp__hkey(pool->secret, h);
	if (pool->conf.checks &&
	    (req < usable ? !kp__canary_ok(key, p, req, usable) : !neighbour_ok(pool, s, h, cls))) {
		kp__hdr_put(h, key, kp__meta(req, (uint16_t)cls, KP_ST_QUARANTINE));
		atomic_fetch_add(&pool->quarantined, 1);
		return kp__violation(pool, KP_EV_OVERFLOW, KP_EOVERFLOW, p, req, "overflow, quarantined");
	}
	kp__tcache *tc = classic_cache(pool);
	kp__hdr_put(h, key, kp__meta(0, (uint16_t)cls, KP_ST_FREE));
	if (tc && cls < KP_NCLASS) {
		kp__count_inc(&tc->bin[cls].frees, 1);
		tc->slow_frees++;
	} else if (tc) {
		kp__count_inc(&tc->frees, 1);
		kp__count_inc(&tc->in_use, (uint64_t)0 - usable);
	} else {
		count_uncached(pool, -1, usable);
	}
	if (cls < KP_NCLASS) {
		if (pool->conf.poison)
			kp__poison_fill(p, usable);
		KP_POISON(p, usable);
		if (!tc) {
			kp__link_put_k(key, h, NULL);
			uint64_t e = key ^ kp__kslot(&pool->secret, h); /* as a key stack holds it */
			kp__central_give(pool, cls, h, &e, 1);
			return 0;
		}
		kp__bin *b = &tc->bin[cls];
		if (KP_UNLIKELY(b->count >= b->max)) {
			kp__tcache_flush_bin(pool, tc, cls, kp__bin_miss(b));
		}
		if (KP_UNLIKELY(!b->max)) { /* a big block passing through (tcache.c, bin_pass): to its span */
			kp__link_put_k(key, h, NULL);
			uint64_t e = key ^ kp__kslot(&pool->secret, h);
			kp__central_give(pool, cls, h, &e, 1);
			return 0;
		}
		kp__link_put_k(key, h, b->count ? b->head : NULL);
		tc->stack[cls][b->count] = key ^ kp__kslot(&pool->secret, h);
		b->head = h;
		b->count++;
	} else if (cls == KP_CLS_LARGE) {
		KP_POISON(p, usable);
		kp__large_free(pool, s, span_at(s, h));
	} else {
		kp__huge_free(pool, s, !pool->conf.checks ? SIZE_MAX : req);
	}
	return 0;
}

/* The canary sits right past the request, which only the header says: its
 * load waits for the header's. In a program whose blocks have gone cold by
 * their free (the Larson server pattern: a table of live objects replaced
 * at random) that is two cache misses one after the other: 88% of kp_free's
 * samples (perf, bench-larson). The class (the high byte of the block's
 * unit_meta, in the segment's header: hot) bounds where the canary can be:
 * its first byte at h + prev - 7 or later, its last at h + size - 1 or
 * earlier (prev and size the block sizes of the class below and of the
 * class). Prefetching the lines of both ends and of the middle fetches every
 * line it can be in (h is 16-aligned: at most three while classes are at
 * most 128 bytes apart, all up to 2 KiB) in parallel with the header's.
 *
 * canary_reach[c]: those three offsets from h for class c, indexed by any
 * byte (unit_meta is not vetted yet: a prefetch never faults), 0 (the
 * header's line again) for a byte that is no class and for classes past
 * 64 KiB (their offsets do not fit: free_slow takes them); 8 bytes an
 * entry (one shift to index). A table rather than arithmetic on
 * kp__class_size: three loads of one line instead of a range
 * check and the sums. Workload a (hot blocks: nothing to gain) ran 8.8%
 * more instructions than without the prefetch with the sums, 3.8% with the
 * table (callgrind, kpbench a, 1M ops). Filled once, before the first
 * segment of any pool's inline primary is published (kp__primary_grow,
 * kp__canary_reach_init): no block of a segment is freed before; an entry
 * still zero would prefetch the header's line. In .lbss, filled then and
 * not at load: 2 KiB of .bss resident in every program under the preload,
 * whose default layout maps no such segment until a block over 64 KiB (s33,
 * tests/test_preload.py's bss). */
__attribute__((section(".lbss"))) static uint16_t canary_reach[256][4];

static void canary_reach_init(void)
{
	/* every class whose offsets fit 16 bits: the 64 KiB class too (its
	 * last is 65,528; bounded by the class's size, it took free_slow:
	 * test_free_fast_big) */
	for (unsigned c = 0; c < KP_NCLASS && kp__class_size[c] - 8 <= UINT16_MAX; c++) {
		unsigned lo = (c ? kp__class_size[c - 1] : KP_HDR + KP_CANARY) - 7, hi = kp__class_size[c] - 8;
		canary_reach[c][0] = (uint16_t)lo;
		canary_reach[c][1] = (uint16_t)(lo + (hi - lo) / 2);
		canary_reach[c][2] = (uint16_t)hi;
	}
}

void kp__canary_reach_init(void)
{
	static pthread_once_t once = PTHREAD_ONCE_INIT;
	pthread_once(&once, canary_reach_init);
}

_Static_assert(sizeof(((kp__seg *)0)->unit_meta[0]) == 2, "unit_meta's high byte is um >> 8");
static ALWAYS_INLINE const uint16_t *canary_prefetch(const kp__hdr *h, unsigned um)
{
	const uint16_t *r = canary_reach[um >> 8]; /* um < 1 << 16 (unit_meta), so its high byte */
	__builtin_prefetch((const char *)h + r[0], 0, 3);
	__builtin_prefetch((const char *)h + r[1], 0, 3);
	__builtin_prefetch((const char *)h + r[2], 0, 3);
	return r;
}

/* What free_fast did: nothing (the caller takes free_slow), the block is
 * in the bin, or nothing because the bin is full (the block verified). */
enum { KP_FREE_NO, KP_FREE_DONE, KP_FREE_FULL };

/* The fast path of kp_free: a live small block of this pool into this
 * thread's bin, canary intact. The pagemap vouches for the address before
 * its header is read. The caller is inside a grace section. aes: see
 * fast_key. A full bin: flush false (the inline copy, which makes no
 * call), KP_FREE_FULL and nothing changed; flush true (the copies out of
 * line: free_slow_own, told the bin was full, and free_section), the bin
 * is flushed (kp__tcache_flush_bin, as primary_free does) and the block
 * goes in. A block freed into a full bin
 * went through primary_free before, which checks it all again (the
 * segment's keyed magic and seal, K(h) a second time: about 500
 * instructions, and 2% of workload b's frees were such). checked: the
 * caller found pool in the first slot with checks on and poison off
 * (kp__tls_state.fast_free: kp_free's copies), else this tests it. */
static ALWAYS_INLINE int free_fast(kp_pool *pool, uint64_t id, void *p, bool aes, bool flush, bool checked)
{
	/* p NULL is refused by the pagemap (no segment at address 0, and the
	 * offset test): free_slow returns 0 for it. id: pool->id, which the
	 * caller read (kp_free's copy, before its section's fences: the
	 * compiler loaded it again after them). */
	if (!pool)
		return KP_FREE_NO;
	if (!checked && (kp__tls_state.id[0] != id || conf_mode(pool) > KP_MODE_CHECKED)) /* poisoning: slow */
		return KP_FREE_NO;
	/* A normal segment of this pool: the flat pagemap's word says it (a
	 * pool sharing the word is refused below: its header does not verify
	 * under this pool's key), without a read of the segment's header. A
	 * normal segment is one aligned chunk: p's offset in it is p's in the
	 * chunk. Where the flat map cannot say (not reserved), free_slow asks
	 * the two-level map. */
	uintptr_t off = (uintptr_t)p & KP_PM_TAG_MASK;
	kp__seg *s = (kp__seg *)((uintptr_t)p - off);
	if (!(kp__pagemap_flat_is((uintptr_t)s, id) && !(off & (KP_HDR - 1)) && off >= KP_UNIT_SIZE + KP_HDR))
		return KP_FREE_NO;
	kp__hdr *h = (kp__hdr *)((char *)p - KP_HDR);
	/* h's unit (p's, unless h ends the unit before: same span if valid) */
	uintptr_t hu = (off - KP_HDR) >> KP_UNIT_SHIFT;
	unsigned um = s->unit_meta[hu];
	const uint16_t *reach = canary_prefetch(h, um);
	/* h must be a block start of its span: K(h) depends on h alone, so a
	 * header written inside a live block at the address of a block that
	 * was there before (whose header gave K(h) away) verified, and the
	 * block was handed out inside the live one (test_stale_header_attack3).
	 * x: h's offset in its span (spans start at a unit: span_new). Tested
	 * before the key is computed, its registers free again by then (after
	 * it, kp_free saved five: 125 instructions a call on a, 107 before);
	 * um is not yet vetted, kp__class_div has an entry for each high byte. */
	uint32_t x = (uint32_t)(off - KP_HDR) - s->unit_span[hu];
	uint64_t dv = kp__class_div[um >> 8];
	if (KP_UNLIKELY((uint64_t)x * dv > dv - 1))
		return KP_FREE_NO;
	uint64_t meta = kp__hdr_meta(h);
	uint64_t key = fast_key(pool, h, aes);
	/* The header must verify under K(h) (a header forged elsewhere does
	 * not), and its class and state must be those of an allocated block
	 * of its span (unit_meta: a header rewritten in place with another
	 * class does not pass), in one compare, one branch. unit_meta is
	 * KP_UNIT_META(c) with c < KP_NCLASS, or 0: the range test refuses 0,
	 * and keeps the bin index in range whatever the segment header holds.
	 * It is a test of the state too: um - KP_ST_ALLOC rotated right by 8
	 * is c only when its low byte is 0 (else that byte lands on top). A
	 * subtraction and compare alone let through c << 8 | KP_ST_FREE, and
	 * with unit_meta rewritten so (the segment header follows the previous
	 * mapping's last bytes) and K(h) written after free over the link,
	 * where a free block's canary is read, a double free passed
	 * (test_free_class). */
	uint32_t cv = (uint32_t)um - KP_ST_ALLOC;
	if ((kp__hdr_tag(h) ^ meta ^ key) != 0 || (uint16_t)meta != um || (cv >> 8 | cv << 24) >= KP_NCLASS)
		return KP_FREE_NO;
	/* The canary read below must stay inside the block: its request, which
	 * the header alone says, at most the class's capacity less the canary
	 * (reach[2], the last canary's offset from h; 0 for classes past 64
	 * KiB, which take free_slow; 65,528 for the 64 KiB class). A caller
	 * who read K(h) from the header
	 * (tag ^ meta) could rewrite the request to 2^40, and kp_free read the
	 * canary there: SIGSEGV (test_req_rewritten). */
	size_t lim = reach[2];
	/* With checks off a block keeps no slack for the canary and the
	 * request may fill the class (test_free_fast_modes: 8 bytes of every
	 * class went to primary_free, kpbench a ran 40% slower than checks on). */
	if (!checked && !*(volatile const uint8_t *)&pool->conf.checks && lim)
		lim += KP_CANARY;
	if (KP_UNLIKELY(KP_META_REQ(meta) + KP_HDR > lim))
		return KP_FREE_NO;
	unsigned cls = um >> 8;
	kp__tcache *tc = kp__tls_state.tc[0];
	kp__bin *b = &tc->bin[cls];
	uint64_t *keys = tc->stack[cls];
	/* b and keys from here, not tc and cls (the compiler would compute
	 * them again at each use): fewer registers live. */
	__asm__("" : "+r"(b), "+r"(keys));
	unsigned n = b->count, counted = 0;
	/* The mode read again, not kept from above: a register less across
	 * the AES rounds, and no callee-saved register to push. */
	if (!(n < b->max && (!(checked || *(volatile const uint8_t *)&pool->conf.checks) ||
			     kp__canary8_ok(key, (char *)p + KP_META_REQ(meta))))) {
		if (n < b->max || ((checked || *(volatile const uint8_t *)&pool->conf.checks) &&
				   !kp__canary8_ok(key, (char *)p + KP_META_REQ(meta))))
			return KP_FREE_NO; /* an overflow: free_slow reports it */
		if (!flush)
			return KP_FREE_FULL;
		/* This free counted before the miss, as primary_free counts it
		 * (kp__bin_miss reads the counts) */
		kp__count_inc(&b->frees, 1);
		counted = 1;
		kp__tcache_flush_bin(pool, tc, cls, kp__bin_miss(b));
		keys = tc->stack[cls]; /* kp__bin_miss may have moved it */
		n = b->count;
		if (!b->max) { /* a big block passing through (tcache.c, bin_pass): to its span */
			kp__hdr_put(h, key, (meta & 0xff00) | KP_ST_FREE);
			KP_POISON(p, kp__class_size[cls] - KP_HDR);
			kp__link_put_k(key, h, NULL);
			uint64_t e = key ^ kp__kslot(&pool->secret, h);
			kp__central_give(pool, cls, h, &e, 1);
			return KP_FREE_DONE;
		}
		if (n >= b->max)
			return KP_FREE_NO;
	}
	kp__hdr_put(h, key, (meta & 0xff00) | KP_ST_FREE);
	/* An empty bin's head is NULL (every path that empties a bin leaves it
	 * so: the pop of a last block, whose link bin_head_ok vetted to be
	 * NULL; bin_damaged; a flush), so the new last block's link ends the
	 * list without a test of n. */
	kp__link_put_k(key, h, b->head);
	keys[n] = key ^ kp__kslot(&pool->secret, h);
	KP_POISON(p, kp__class_size[cls] - KP_HDR);
	char *q = p;
	__asm__("" : "+r"(q)); /* h again from p: one register less */
	b->head = q - KP_HDR;
	bin_count_inc(b, n + 1);
	kp__count_inc(&b->frees, 1 - counted);
	return KP_FREE_DONE;
}

static __attribute__((noinline)) int free_slow(kp_pool *pool, void *p)
{
	if (!p)
		return 0;
	if (!kp__pool_ok(pool)) {
		kp__not_a_pool(pool, "kp_free");
		return KP_EINVAL;
	}
	if (pool->ol && kp__ol_knows(pool, p)) /* layout:outline, a thread whose slot names another pool */
		return kp__ol_free(pool, p);
	if (kp__backup_owns(&pool->backup, p)) {
		int rc = kp__backup_free(pool, p);
		if (rc == 0 || rc == KP_EOVERFLOW) { /* an overflow is reported, and the block freed all the same */
			atomic_fetch_add(&pool->bk_frees, 1);
			return rc;
		}
		return kp__violation(pool, why_kind(rc), rc, p, KP_SIZE_UNKNOWN,
				     rc == KP_EDOUBLEFREE ? "double free of a backup block"
							  : "free of a pointer inside the backup that is no block");
	}
	return primary_free(pool, p, 0);
}

/* The usable size of a live block; *ok false when p is not one. */
static size_t block_usable(kp_pool *pool, const void *p, bool *ok)
{
	*ok = false;
	if (kp__backup_owns(&pool->backup, p)) {
		size_t n = kp__backup_usable(pool, p);
		*ok = n > 0;
		return n;
	}
	kp__seg *s;
	int code;
	const kp__hdr *h = primary_hdr(pool, p, &s, &code);
	if (!h)
		return 0;
	uint64_t meta = kp__hdr_meta(h);
	if (KP_META_CLS(meta) == KP_CLS_ALIGNED) {
		size_t off = KP_META_REQ(meta);
		size_t inner = block_usable(pool, (const char *)p - off, ok);
#if KP_PLANT == 9 /* planted 9: a block aligned to 4096 or more reports 16 bytes less than it has */
		if (!((uintptr_t)p & 4095) && inner > off + 16)
			return inner - off - 16;
#endif
		return inner > off ? inner - off : 0;
	}
	/* A request past the capacity was rewritten by a caller who read K(h)
	 * (primary_free: test_req_rewritten): the header is damaged. realloc
	 * resized such a block in place, and made the header sound again with
	 * nothing reported, or copied its capacity (test_request_rewritten).
	 * A huge block's too: realloc_huge moved its pages and wrote the header
	 * sound again, nothing reported (test_huge_realloc_attack20). */
	if (KP_META_REQ(meta) > primary_capacity(s, h))
		return 0;
	*ok = true;
	return primary_usable(pool, s, h);
}

static size_t usable_inner(kp_pool *pool, const void *p)
{
	bool ok;
	if (p && !kp__pool_ok(pool)) {
		kp__not_a_pool(pool, "kp_usable_size");
		return 0;
	}
	return p ? block_usable(pool, p, &ok) : 0;
}

/* Resize in place when the block's capacity fits: shrinking by less than
 * half, or growing within the slack. Returns p, or NULL to move. */
static void *realloc_in_place(kp_pool *pool, void *p, size_t size, size_t old, unsigned flags)
{
	kp__hdr *h = (kp__hdr *)((char *)p - KP_HDR);
	kp__seg *s = kp__pagemap_get(h);
	uint64_t meta = kp__hdr_meta(h);
	unsigned cls = KP_META_CLS(meta);
	if (cls == KP_CLS_ALIGNED)
		return NULL;
	size_t cap = primary_capacity(s, h), room = cap - pool->canary;
	if (size > room + (KP_PLANT == 5) * KP_HDR || size < room / 2) /* planted 5 */
		return NULL;
	uint64_t key = kp__hkey(pool->secret, h);
	size_t req = KP_META_REQ(meta);
	if (pool->conf.checks && req < cap && !kp__canary_ok(key, p, req, cap))
		return NULL; /* let free report the overflow */
	if (size > old)	     /* [p, p + old) is open already */
		KP_UNPOISON((char *)p + old, size - old);
	if ((flags & KP_ZERO) && size > old)
		memset((char *)p + old, 0, size - old);
	kp__hdr_put(h, key, kp__meta(size, (uint16_t)cls, KP_ST_ALLOC));
	if (size < cap && pool->conf.checks)
		KP_POISON((char *)p + size, cap - size);
	if (pool->conf.checks)
		kp__canary_put(key, p, size, cap);
	return p;
}

/* A large block that stays large grows into the free units right after its
 * run, or gives its tail units back: nothing copied. NULL: go the ordinary
 * way. */
static void *realloc_large(kp_pool *pool, void *p, size_t size, size_t old, unsigned flags)
{
	char *h = (char *)p - KP_HDR;
	kp__seg *s = kp__pagemap_get(h);
	uint64_t meta = kp__hdr_meta((kp__hdr *)h);
	size_t need = size + KP_HDR + pool->canary;
	if (KP_META_CLS(meta) != KP_CLS_LARGE || need <= KP_SMALL_MAX || need > KP_LARGE_MAX)
		return NULL;
	kp__span *sp = span_at(s, h);
	bool checks = pool->conf.checks;
	size_t b0 = sp->block, cap0 = b0 - KP_HDR;
	size_t req = KP_META_REQ(meta);
	uint64_t key = kp__hkey(pool->secret, h);
	if (checks && req < cap0 && !kp__canary_ok(key, p, req, cap0))
		return NULL; /* let free report the overflow */
	/* Units given back are poisoned before they are: once back, another
	 * thread may carve them and open its own block there (poisoning after
	 * closed that block; the concurrent fuzz target found it). */
	size_t b1 = (need + KP_UNIT_SIZE - 1) & ~(KP_UNIT_SIZE - 1);
	if (b1 < b0)
		KP_POISON(h + b1, b0 - b1);
	if (!kp__large_resize(pool, s, sp, need))
		return NULL; /* only growing fails: nothing was poisoned */
	size_t cap1 = b1 - KP_HDR;
	size_t open0 = checks ? old : cap0, open1 = checks ? size : cap1;
	if (open1 > open0)
		KP_UNPOISON((char *)p + open0, open1 - open0);
	else
		KP_POISON((char *)p + open1, (open0 < cap1 ? open0 : cap1) - open1);
	if ((flags & KP_ZERO) && size > old)
		memset((char *)p + old, 0, size - old);
	kp__hdr_put((kp__hdr *)h, key, kp__meta(size, KP_CLS_LARGE, KP_ST_ALLOC));
	if (checks)
		kp__canary_put(key, p, size, cap1);
	kp__tcache *tc = classic_cache(pool);
	if (tc)
		kp__count_inc(&tc->in_use, (uint64_t)b1 - b0);
	else
		atomic_fetch_add(&pool->dead_in_use, (uint64_t)b1 - b0);
	return p;
}

/* A huge block that stays huge is resized by moving its pages (mremap),
 * not copied: no byte is read or written, no new page faulted. NULL: go the
 * ordinary way. */
static void *realloc_huge(kp_pool *pool, void *p, size_t size, size_t old, unsigned flags)
{
	kp__hdr *h = (kp__hdr *)((char *)p - KP_HDR);
	kp__seg *s = kp__pagemap_get(h);
	uint64_t meta = kp__hdr_meta(h);
	size_t need = size + KP_HDR + pool->canary;
	/* A huge block shrunk below the huge sizes keeps its mapping down to
	 * half a segment (as glibc keeps an mmapped chunk): moving it to a page
	 * run would copy up to 4 MiB. */
	if (KP_META_CLS(meta) != KP_CLS_HUGE || need + 2 * KP_PAGE < KP_SEG_SIZE / 2)
		return NULL;
	bool checks = pool->conf.checks;
	size_t req = KP_META_REQ(meta);
	size_t cap = s->size - 2 * KP_PAGE;
	if (checks && req < cap && !kp__canary_ok(kp__hkey(pool->secret, h), p, req, cap))
		return NULL; /* let free report the overflow */
	kp__seg *n = kp__huge_resize(pool, s, need, !checks ? SIZE_MAX : req);
	if (!n)
		return NULL;
	size_t usable = n->size - 2 * KP_PAGE, open = checks ? size : usable;
	h = (kp__hdr *)((char *)n + 2 * KP_PAGE - KP_HDR);
	p = (char *)h + KP_HDR;
	uint64_t key = kp__hkey(pool->secret, h);
	KP_UNPOISON(h, KP_HDR);
	kp__hdr_put(h, key, kp__meta(size, KP_CLS_HUGE, KP_ST_ALLOC));
	KP_POISON(h, KP_HDR);
	KP_POISON((char *)p + open, usable - open);
	/* Pages past the old mapping are new, so zero; the old slack may hold
	 * the canary. */
	if ((flags & KP_ZERO) && size > old)
		memset((char *)p + old, 0, (size < cap ? size : cap) - old);
	if (checks)
		kp__canary_put(key, p, size, usable);
	kp__tcache *tc = classic_cache(pool);
	if (tc)
		kp__count_inc(&tc->in_use, (uint64_t)usable - cap);
	else
		atomic_fetch_add(&pool->dead_in_use, (uint64_t)usable - cap);
	return p;
}

static void *realloc_inner(kp_pool *pool, void *p, size_t size, unsigned flags)
{
	if (!p)
		return kp_alloc(pool, size, flags);
	if (!kp__pool_ok(pool)) {
		kp__not_a_pool(pool, "kp_realloc");
		return NULL;
	}
	if (size == 0) {
		kp_free(pool, p);
		return NULL;
	}
	if (size > KP_REQ_MAX)
		return bad_size(pool, size, KP_HDR);
	bool ok;
	size_t old = block_usable(pool, p, &ok);
	if (!ok) {
		kp_free(pool, p); /* records why: double free, foreign or damaged */
		errno = EINVAL;
		return NULL;
	}
	if (!kp__backup_owns(&pool->backup, p)) {
		void *q = realloc_in_place(pool, p, size, old, flags);
		if (!q)
			q = realloc_large(pool, p, size, old, flags);
		if (!q)
			q = realloc_huge(pool, p, size, old, flags);
		if (q)
			return q;
	} else if (size <= old && !(flags & KP_ZERO) && kp__backup_intact(pool, p)) {
		return p; /* a damaged canary: move, and let free report the overflow */
	}
	return kp__realloc_move(pool, p, size, old, flags);
}

/* A realloc that moves: a new block, the old one's first min(old, size)
 * bytes copied, the rest zeroed under KP_ZERO, the old block freed (which
 * reports what is wrong with it). Either layout's kp_realloc ends here. */
void *kp__realloc_move(kp_pool *pool, void *p, size_t size, size_t old, unsigned flags)
{
	void *q = kp_alloc(pool, size, flags & ~KP_ZERO);
	if (!q)
		return NULL;
	size_t n = old < size ? old : size;
#if KP_PLANT == 7 /* planted 7: a moving realloc copies 8 bytes too few */
	n -= n >= 16 ? 8 : 0;
#endif
	memcpy(q, p, n);
	if ((flags & KP_ZERO) && size > n)
		memset((char *)q + n, 0, size - n);
	kp_free(pool, p);
	return q;
}

/* ---- the entry points that look up pointers they were given -------------
 * Each runs inside a grace section (internal.h, pagemap.c): a segment its
 * lookup found stays mapped until it returns, even when the daemon releases
 * that segment meanwhile, so a stale or foreign pointer is refused, never a
 * crash. Two stores to this thread's record; no lock, no system call. */

/* kp_free, everything but the fast path with AES: a grace section of its
 * own (nested, shared, or with a reclaim pending on leaving), or a pool key
 * without AES round keys. Out of line, and reached by tail calls, so that
 * the fast path in kp_free saves no register. */
static __attribute__((noinline)) int free_section(kp_pool *pool, void *p)
{
	unsigned g = kp__grace_enter();
	if (KP_UNLIKELY(!kp__grace_self.fast))
		kp__grace_note_fast(); /* readers stopped fencing since the record was claimed */
	int rc = pool && !pool->secret.aes && free_fast(pool, pool->id, p, false, true, false) == KP_FREE_DONE
			 ? 0
			 : free_slow(pool, p);
	kp__grace_exit(g);
	return rc;
}

/* The fast path failed inside the section kp_free opened (KP_GRACE_OWN);
 * full: it found the bin full, the block sound (either copy: free_entry's
 * or free_other's, so the mode is tested again). */
static __attribute__((noinline)) int free_slow_own(kp_pool *pool, void *p, bool full)
{
	int rc = full && free_fast(pool, pool->id, p, true, true, false) == KP_FREE_DONE ? 0 : free_slow(pool, p);
	kp__grace_exit(KP_GRACE_OWN);
	return rc;
}

/* free(): errno as it was, whatever kp_free did (the slow paths may make a
 * system call, or refuse the pointer with errno EINVAL). The fast path
 * never touches errno: only the slow ones keep it. */
static __attribute__((noinline)) int free_section_quiet(kp_pool *pool, void *p)
{
	int e = errno;
	int rc = free_section(pool, p);
	errno = e;
	return rc;
}

static __attribute__((noinline)) int free_slow_own_quiet(kp_pool *pool, void *p, bool full)
{
	int e = errno;
	int rc = free_slow_own(pool, p, full);
	errno = e;
	return rc;
}

/* kp_free; quiet: errno kept (kp__free_quiet). checked: the copy for a
 * pool that kp__tls_state.fast_free names (the first slot's, checks on,
 * poison off, AES round keys), whose fast path tests no mode; else any
 * pool's (free_other), which tests it. */
static ALWAYS_INLINE int free_body(kp_pool *pool, void *p, bool quiet, bool checked);
/* kp_free of a pool the thread's fast word does not name: a layout:outline
 * pool (not the one its outline slot names, or a call nested in another of
 * the thread's) first, then free_body. For a layout:outline pool: a call
 * nested inside another of this thread's into layout:outline (outline.h,
 * kp__ol_enter) takes outline.c's way, which keeps off what the
 * interrupted call is changing; a block its slice map does not know
 * (alloc.c's: aligned past 16, large, huge, a full layout's refills, the
 * backup's) takes alloc.c's marked way (kp__free_classic), as outline.c's
 * own miss does (free_slow, KP_OL_MISS). Before (s37-robust) such a block
 * went to free_body: straight into the pool's thread cache unmarked
 * (classic_pool), so a handler's kp_alloc_aligned nested in it took the
 * same cache (classic_call saw no call to nest in), and a handler's kp_free
 * nested in the thread's own marked call on that path pushed into the
 * cache that call was changing; with the slot on another pool
 * test_outline_signal_otherslot_attack37 failed 2-3 rounds of 3 in each of
 * 5 runs, 4-15 cache lists found damaged a round (freelist_errors;
 * release, main 74a960a); 0 of 15 after. The pool's ol is read before
 * kp__pool_ok, as free_body reads its id and key, and the rest is out of
 * line (free_outline_other): the inline layout's pools (checks off come
 * here for every free) pay a test of a word where they paid the slot's
 * mark's (kp_alloc+kp_free, inline checks:off, tests/
 * test_instruction_counts.py's callgrind: a 218.6 -> 219.6, b 241.1 ->
 * 242.0; the outline layout's unchanged, a 66.0, b 76.9 -> 76.8). With
 * kp__pool_ok and the tests inline after the mark's: a 226.6, b 249.0,
 * over the budgets (223, 249). */
/* free_outline_other's answer where the block is none of its ways' */
#define KP_FREE_ON INT_MIN
static __attribute__((noinline)) int free_outline_other(kp_pool *pool, void *p, bool quiet)
{
	if (!kp__pool_ok(pool))
		return KP_FREE_ON;
	if (KP_UNLIKELY(kp__ol_marked()))
		return kp__ol_free_nested(pool, p);
	if (kp__ol_knows(pool, p))
		return KP_FREE_ON;
	int e = errno;
	int rc = kp__free_classic(pool, p);
	if (quiet)
		errno = e;
	return rc;
}
static __attribute__((noinline)) int free_other(kp_pool *pool, void *p)
{
	if (KP_UNLIKELY(pool && pool->ol)) {
		int rc = free_outline_other(pool, p, false);
		if (rc != KP_FREE_ON)
			return rc;
	}
	return free_body(pool, p, false, false);
}
static __attribute__((noinline)) int free_other_quiet(kp_pool *pool, void *p)
{
	if (KP_UNLIKELY(pool && pool->ol)) {
		int rc = free_outline_other(pool, p, true);
		if (rc != KP_FREE_ON)
			return rc;
	}
	return free_body(pool, p, true, false);
}
/* outline.h's refusals: p's tests again, told apart (kp__ol_free_check);
 * with try_only (kp__free_try) what is no plain free to the preload's
 * hook, which reports a refusal in free()'s name. */
__attribute__((noinline)) int kp__ol_free_refused(kp_pool *pool, void *p, bool try_only)
{
	/* the slot marked (outline.h, kp__ol_enter) until the full test's
	 * push or report is done */
	int rc = kp__ol_free_check(p, try_only, KP_OL_CANARY_SPAN, true, kp__ol_slot_id(pool));
	kp__ol_unmark();
	return try_only && rc == KP_OL_UNTRIED ? kp__free_miss(pool, p, false) : rc;
}

/* The canary a deferred block's link (its first 8 bytes: classic_later,
 * ol_deferred) covers: a request under 8 bytes has it there (p + req; an
 * aligned block, its enclosing block's, right past the aligned payload:
 * align_inside). put: write it again (the list's drain, before the free
 * checks it); else: is it intact (kp__classic_defer_vet, before the link
 * is written)? true where no canary lies under the link. *hp, *atp: the
 * header and payload whose canary it is. h: p's verified header, s its
 * segment (primary_hdr), inside a grace section. Before (s36-robust), a
 * deferred block of a request under 8 bytes was reported an overflow and
 * quarantined at its free (test_outline_line_churn_attack32 once kp_realloc
 * deferred its own frees: 92-99 KB of 1- and 8-byte blocks in use). */
static bool link_canary(kp_pool *pool, kp__seg *s, kp__hdr *h, char *p, bool put, kp__hdr **hp, char **atp)
{
	uint64_t meta = kp__hdr_meta(h);
	char *at = p;
	*hp = h;
	*atp = p;
	if (!pool->conf.checks)
		return true;
	if (KP_META_CLS(meta) == KP_CLS_ALIGNED) {
		size_t off = KP_META_REQ(meta);
		at = p - off;
		h = (kp__hdr *)(at - KP_HDR);
		if (off < KP_HDR || off > KP_ALIGN_MAX || !kp__hdr_ok(pool->secret, h))
			return true; /* its free reports it (primary_free) */
		meta = kp__hdr_meta(h);
		*hp = h;
		*atp = at;
	}
	size_t req = KP_META_REQ(meta), usable = primary_capacity(s, h);
	if (req >= usable || at + req >= p + 8)
		return true; /* no canary (neighbour_ok's), or past the link */
	uint64_t key = kp__hkey(pool->secret, h);
	if (!put)
		return kp__canary_ok(key, at, req, usable);
	kp__canary_put(key, at, req, usable);
	return true;
}

/* A deferred block q, taken off its list (classic_later, ol_deferred),
 * before its free: the canary its link covered written again
 * (link_canary). */
void kp__classic_defer_undo(kp_pool *pool, void *q)
{
	if (kp__backup_owns(&pool->backup, q))
		return; /* its canary at its end (backup.c) */
	unsigned g = kp__grace_enter();
	kp__seg *s;
	int code;
	kp__hdr *h = primary_hdr(pool, q, &s, &code), *hc;
	char *at;
	if (h)
		link_canary(pool, s, h, q, true, &hc, &at);
	kp__grace_exit(g);
}

/* A pointer that a call nested inside one of its thread's (a signal
 * handler's) would set aside for that call's end, linked through its first
 * 8 bytes (classic_later; outline.c's ol_deferred): 0 when it is a live
 * block of pool's (a header of the primary's that verifies as allocated,
 * primary_hdr; a live block's start in the backup), whose bytes are its
 * caller's to give; else kp_free's refusal of it, reported with its event
 * (primary_free's, free_slow's for the backup) and returned, nothing
 * written. Reads only, inside a grace section (a segment found stays
 * mapped); no lock (the interrupted call may hold any). Before (s36-robust)
 * both lists took a pointer unvetted (classic_later any in the pool's
 * segments, ol_deferred any the slice map did not know) and wrote 8 bytes
 * where it pointed before anything checked it: a handler's free of an
 * interior pointer, a freed block, a stack address, another pool's block
 * or a glibc one wrote there (test_nested_free_vet_attack36: 6 of 6
 * written inside free_classic_marked, 2 of 6 inside kp__alloc_classic). */
int kp__classic_defer_vet(kp_pool *pool, void *p)
{
	if (kp__backup_owns(&pool->backup, p)) {
		int rc = kp__backup_state(pool, p);
		return rc ? kp__violation(pool, why_kind(rc), rc, p, KP_SIZE_UNKNOWN,
					  rc == KP_EDOUBLEFREE ? "double free of a backup block"
							       : "free of a pointer inside the backup that is no block")
			  : 0;
	}
	unsigned g = kp__grace_enter();
	kp__seg *s;
	int code, rc = 0;
	kp__hdr *h = primary_hdr(pool, p, &s, &code);
	char *at;
	if (h && !link_canary(pool, s, h, p, false, &h, &at)) { /* as primary_free's overflow */
		uint64_t meta = kp__hdr_meta(h);
		kp__hdr_put(h, kp__hkey(pool->secret, h),
			    kp__meta(KP_META_REQ(meta), (uint16_t)KP_META_CLS(meta), KP_ST_QUARANTINE));
		atomic_fetch_add(&pool->quarantined, 1);
		rc = kp__violation(pool, KP_EV_OVERFLOW, KP_EOVERFLOW, at, KP_META_REQ(meta), "overflow, quarantined");
	} else if (h) {
		KP_UNPOISON(p, 8); /* the link's bytes: past a request under 8 bytes, closed */
	} else if (code == KP_ENOTOURS && kp__huge_gone(pool, p)) /* as primary_free */
		rc = kp__violation(pool, KP_EV_DOUBLE_FREE, KP_EDOUBLEFREE, p, KP_SIZE_UNKNOWN,
				   "double free of a huge block");
	else
		rc = kp__violation(pool, why_kind(code), code, p, failed_free_size(pool, p, code), why_text(code));
	kp__grace_exit(g);
	return rc;
}

/* outline.c's way back for a pointer its slice map does not know. Nested
 * inside a call of this thread's on alloc.c's path (a signal handler's),
 * a live block of that call's pool (kp__classic_defer_vet) waits for its
 * end (classic_later), and one waiting there already is a double free;
 * another pool's block, or a pointer none of the pool's segments holds
 * (the backup's, or no block: refused as ever), goes on: neither reaches
 * the thread cache the interrupted call is changing. */
int kp__free_classic(kp_pool *pool, void *p)
{
	kp_pool *in = classic_pool;
	if (KP_UNLIKELY(in != NULL)) {
		kp__seg *s = p && in == pool ? kp__pagemap_get(p) : NULL;
		if (s && s->pool == pool) {
			for (void *q = atomic_load_explicit(&classic_later, memory_order_relaxed); q; q = *(void **)q)
				if (q == p)
					return kp__violation(pool, KP_EV_DOUBLE_FREE, KP_EDOUBLEFREE, p,
							     KP_SIZE_UNKNOWN, "double free");
			int bad = kp__classic_defer_vet(pool, p);
			if (bad)
				return bad;
			void *old = atomic_load_explicit(&classic_later, memory_order_relaxed);
			do
				*(void **)p = old;
			while (!atomic_compare_exchange_weak_explicit(&classic_later, &old, p, memory_order_relaxed,
								      memory_order_relaxed));
			return 0;
		}
		return free_body(pool, p, false, false);
	}
	classic_enter(pool);
	int rc = free_body(pool, p, false, false);
	classic_leave(pool);
	return rc;
}

/* free_body's section, open (r: the thread's fast record, w: the grace word
 * stored in it): free_fast, then the section closed, or the slow free. */
static ALWAYS_INLINE int free_in_section(kp_pool *pool, uint64_t id, void *p, kp__grace_rec *r, uint64_t w, bool quiet,
					 bool checked)
{
	atomic_store_explicit(&r->epoch, w, memory_order_release);
	atomic_signal_fence(memory_order_seq_cst);
	int res = free_fast(pool, id, p, true, false, checked);
	if (KP_LIKELY(res == KP_FREE_DONE)) {
		/* Nothing was retired in here: no reclaim became pending. */
		atomic_signal_fence(memory_order_seq_cst);
		atomic_store_explicit(&r->epoch, 0, memory_order_release);
		return 0;
	}
	return quiet ? free_slow_own_quiet(pool, p, res == KP_FREE_FULL) : free_slow_own(pool, p, res == KP_FREE_FULL);
}

static ALWAYS_INLINE int free_body(kp_pool *pool, void *p, bool quiet, bool checked)
{
	/* kp__grace_enter's own-record path, inline: the thread's record, not
	 * in a section already (so no reclaim pending: internal.h), no fencing
	 * readers (the fast record is one only once the grace word said so,
	 * and it never says so again: kp__grace_tls). */
	kp__grace_rec *r = kp__grace_self.fast;
	uint64_t w = atomic_load_explicit(&kp__grace_epoch, memory_order_acquire);
	uint64_t id;
	if (KP_LIKELY(KP_FAST_AES && r && !atomic_load_explicit(&r->epoch, memory_order_relaxed) && pool &&
		      (checked ? kp__tls_state.fast_free == (id = pool->id) : (id = pool->id, pool->secret.aes))))
		return free_in_section(pool, id, p, r, w, quiet, checked);
	if (checked) /* a pool of another mode (checks off), or the section is not the inline one's */
		return quiet ? free_other_quiet(pool, p) : free_other(pool, p);
	return quiet ? free_section_quiet(pool, p) : free_section(pool, p);
}

/* kp_free and kp__free_quiet: the pool's test first, layout:outline's
 * (the default since s24), the pool the thread's slot names (outline.h)
 * with checks on, inline, with no call (errno is kept by kp__ol_free_slow:
 * free(), the preload); then free_body's checked copy: the fast word
 * (kp__tls_state.fast_free) names it, then the grace record as free_body;
 * then the outline slot's aid, which names a checks-off pool there (it went
 * through free_other before: kpbench a 88.0 instructions against checks
 * on's 75.0). The inline path runs the same instructions as free_body's,
 * in another order, and pays the outline slot's test (2 instructions: a
 * 188.1 -> 190.1 on layout:inline, and the outline pool's 75.0 -> 73.0,
 * s25-off). Before s25 the fast word's test came first, and a comment
 * warned that the slot's first cost that path 3 instructions and more (gcc
 * kept the id in a callee-saved register, four of them saved on entry):
 * not with this gcc (12.2), where the id stays in a scratch register. */
static ALWAYS_INLINE int free_entry(kp_pool *pool, void *p, bool quiet)
{
#ifdef __x86_64__
	/* pool and p where the call brought them (rdi, rsi): with nothing
	 * of pool's on the outline path past the id (kp__ol_enter's subtract
	 * stores none), gcc 12 moved p to rdi and pool to another register
	 * on entry and back on the ways out (2 instructions a free, 1 more
	 * each way out: kpbench a 68.0 a pair, 66.0 with this) */
	__asm__("" : "+D"(pool), "+S"(p));
#endif
	/* kp__ol_slot_id, either mode (outline.h), the slot marked: before
	 * the NULL test (a NULL pool's tag matches no slot) */
	uint64_t tag = kp__ol_slot_id(pool);
	if (kp__ol_enter(tag))
		return kp__ol_free_check(p, false, KP_OL_CANARY_ON, false, tag);
	if (KP_LIKELY(pool != NULL)) {
		uint64_t id = pool->id;
		if (KP_LIKELY(kp__tls_state.fast_free == id)) {
			kp__grace_rec *r = kp__grace_self.fast;
			uint64_t w = atomic_load_explicit(&kp__grace_epoch, memory_order_acquire);
			if (KP_LIKELY(KP_FAST_AES && r && !atomic_load_explicit(&r->epoch, memory_order_relaxed)))
				return free_in_section(pool, id, p, r, w, quiet, true);
		}
	}
	return quiet ? free_other_quiet(pool, p) : free_other(pool, p);
}

KP_EXPORT int kp_free(kp_pool *pool, void *p)
{
	return free_entry(pool, p, false);
}

int kp__free_quiet(kp_pool *pool, void *p)
{
	return free_entry(pool, p, true);
}

/* The free() of the preload library (internal.h): kp_free's inline fast
 * path, and everything it does not free to kp__free_miss, by a tail call,
 * with no grace section open. A block the fast path found sound with its
 * bin full is this pool's (the pagemap vouched, the header verified): it
 * goes on to free_slow_own_quiet as in kp__free_quiet, not to the hook. */
int kp__free_try(void *p, uint64_t tag)
{
	/* kp_free's order (free_entry): layout:outline with checks on first
	 * (the default: its canary test known on, as kp_free's), then the fast
	 * word and the grace record, then the outline slot's aid (checks off);
	 * the outline path's plain frees here, the rest (the preload's own
	 * pointers, refusals) to the hook as before. Before s29-fast the fast
	 * word came first and the outline test masked the mode off the slot's
	 * id and tested each span's canary size: free() added 8 instructions
	 * to kp_free on the default layout, 0 now; the inline layout's 2 more
	 * (tests/test_preload_instructions.py) */
#ifdef __x86_64__
	/* as free_entry (2 moves on entry); p first, where free()'s caller
	 * put it, so that free() moves no register, and the pool's tag
	 * (kp__pool_tag), not the pool, so that the outline path makes none
	 * (s39-small: 2 instructions a free) */
	__asm__("" : "+D"(p), "+S"(tag));
#endif
	if (kp__ol_enter(tag)) /* kp__ol_slot_id, the slot marked; refusals to the hook */
		return kp__ol_free_check(p, true, KP_OL_CANARY_ON, false, tag);
	kp_pool *pool = kp__ol_tag_pool(tag); /* past the slot's test alone */
	if (KP_LIKELY(pool != NULL)) {
		uint64_t id = pool->id;
		if (KP_LIKELY(kp__tls_state.fast_free == id)) {
			kp__grace_rec *r = kp__grace_self.fast;
			uint64_t w = atomic_load_explicit(&kp__grace_epoch, memory_order_acquire);
			if (KP_LIKELY(KP_FAST_AES && r && !atomic_load_explicit(&r->epoch, memory_order_relaxed))) {
				atomic_store_explicit(&r->epoch, w, memory_order_release);
				atomic_signal_fence(memory_order_seq_cst);
				int res = free_fast(pool, id, p, true, false, true);
				if (KP_LIKELY(res == KP_FREE_DONE)) {
					atomic_signal_fence(memory_order_seq_cst);
					atomic_store_explicit(&r->epoch, 0, memory_order_release);
					return 0;
				}
				if (res == KP_FREE_FULL)
					return free_slow_own_quiet(pool, p, true);
				/* Nothing was retired in here: the section closes as the
				 * fast path's does. */
				atomic_signal_fence(memory_order_seq_cst);
				atomic_store_explicit(&r->epoch, 0, memory_order_release);
				return kp__free_miss(pool, p, true);
			}
		}
	}
	return kp__free_miss(pool, p, false);
}

/* kp__free_quiet's result for what kp__free_try handed to the hook.
 * tried: its fast path refused p, the slow path alone is left (free_section
 * finds this pool's AES round keys, which the fast path needs, and goes to
 * free_slow at once). Else kp__free_quiet's own way when its inline path
 * cannot be taken (kp__free_try tested the same), the copy that tests the
 * pool's mode: so a small program never runs kp__free_quiet, whose text
 * stays out of the preload's hot window (preload/hot.txt). */
int kp__free_rest_quiet(kp_pool *pool, void *p, bool tried)
{
	return tried ? free_section_quiet(pool, p) : free_other_quiet(pool, p);
}

/* The default hook, for a program that links no other (libkpool.so, the C
 * tests). */
__attribute__((weak)) int kp__free_miss(kp_pool *pool, void *p, bool tried)
{
	return kp__free_rest_quiet(pool, p, tried);
}

/* ---- the fast paths of kp_usable_size and kp_realloc ---------------------
 * A live small block of the pool whose thread cache is in this thread's
 * first slot, in its default mode (kp__tls_state.fast_free: checks on,
 * poison off, AES round keys), verified as free_fast verifies it: the same
 * reads, the same tests. Anything else (another mode or pool, a backup,
 * large, huge or aligned block, a freed, damaged or wild pointer, an
 * overflowed block for kp_realloc) takes the slow path, which finds it and
 * reports it as before. main ran both through the slow path alone:
 * kp__seg_ok's keyed magic, primary_hdr's lookup and class test, and, for a
 * move, kp_alloc and kp_free after it, which verified the block again:
 * 341 instructions a kp_usable_size, 464 a kp_realloc in place, 988 one that
 * moved (tests/test_instruction_counts.py, callgrind). */

/* Is p a live small block of the pool whose id is id? Its header, with
 * *meta its meta and *key K(h), or NULL. The caller is inside a grace
 * section (the segment's header is read) and found the pool's mode in the
 * thread's fast word (fast_free == id, id not 0). free_fast's tests, in its
 * order and for the same reasons (see there): the flat pagemap vouches for a
 * normal segment of this pool before anything in it is read; h must be a
 * block start of its span (kp__class_div: a stale header written inside a
 * live block at the address of an old block does not pass); the header
 * must verify under K(h) with the class and state of an allocated block of
 * that span (unit_meta). Then the request must leave the canary inside the
 * block: a request rewritten by a caller who read K(h) is not trusted (the
 * slow path says it is damaged). */
static ALWAYS_INLINE kp__hdr *small_live(kp_pool *pool, uint64_t id, const void *p, uint64_t *meta, uint64_t *key)
{
	uintptr_t off = (uintptr_t)p & KP_PM_TAG_MASK;
	kp__seg *s = (kp__seg *)((uintptr_t)p - off);
	if (!(kp__pagemap_flat_is((uintptr_t)s, id) && !(off & (KP_HDR - 1)) && off >= KP_UNIT_SIZE + KP_HDR))
		return NULL;
	kp__hdr *h = (kp__hdr *)((uintptr_t)p - KP_HDR);
	uintptr_t hu = (off - KP_HDR) >> KP_UNIT_SHIFT;
	unsigned um = s->unit_meta[hu];
	uint32_t x = (uint32_t)(off - KP_HDR) - s->unit_span[hu];
	uint64_t dv = kp__class_div[um >> 8];
	if (KP_UNLIKELY((uint64_t)x * dv > dv - 1))
		return NULL;
	uint64_t m = kp__hdr_meta(h);
	uint64_t k = fast_key(pool, h, true);
	uint32_t cv = (uint32_t)um - KP_ST_ALLOC;
	if ((kp__hdr_tag(h) ^ m ^ k) != 0 || (uint16_t)m != um || (cv >> 8 | cv << 24) >= KP_NCLASS)
		return NULL;
	if (KP_UNLIKELY(KP_META_REQ(m) > kp__class_size[um >> 8] - KP_HDR - KP_CANARY))
		return NULL;
	*meta = m;
	*key = k;
	return h;
}

/* Can the fast paths take this call? On x86-64 (the AES copies alone),
 * with the pool whose cache is in the thread's first slot in its default
 * mode (fast_free: checks on, poison off, AES round keys; id not 0, which
 * matches an empty slot), and the thread's fast grace record outside any
 * section (kp_free's inline section: free_body). Then the section is open
 * (*r: the record), and fast_close closes it. *id: the pool's id. */
static ALWAYS_INLINE bool fast_open(kp_pool *pool, uint64_t *id, kp__grace_rec **r)
{
	kp__grace_rec *rec = kp__grace_self.fast;
	uint64_t w = atomic_load_explicit(&kp__grace_epoch, memory_order_acquire);
	if (!(KP_FAST_AES && rec && !atomic_load_explicit(&rec->epoch, memory_order_relaxed) && pool &&
	      (*id = pool->id) != 0 && kp__tls_state.fast_free == *id))
		return false;
	atomic_store_explicit(&rec->epoch, w, memory_order_release);
	atomic_signal_fence(memory_order_seq_cst);
	*r = rec;
	return true;
}

/* Nothing was retired inside (no reclaim became pending): the section
 * closes as free_body's does. */
static ALWAYS_INLINE void fast_close(kp__grace_rec *r)
{
	atomic_signal_fence(memory_order_seq_cst);
	atomic_store_explicit(&r->epoch, 0, memory_order_release);
}

/* The slow paths, out of line (so that the fast ones need no stack frame),
 * each in a section of its own, as before. */
static __attribute__((noinline)) size_t usable_slow(kp_pool *pool, const void *p)
{
	if (KP_UNLIKELY(kp__ol_pool(pool)))
		return kp__ol_usable(pool, p);
	return kp__usable_classic(pool, p);
}

size_t kp__usable_classic(kp_pool *pool, const void *p)
{
	unsigned g = kp__grace_enter();
	size_t n = usable_inner(pool, p);
	kp__grace_exit(g);
	return n;
}

static __attribute__((noinline)) void *realloc_slow(kp_pool *pool, void *p, size_t size, unsigned flags)
{
	if (KP_UNLIKELY(kp__ol_pool(pool)))
		return kp__ol_realloc(pool, p, size, flags);
	return kp__realloc_classic(pool, p, size, flags);
}

static void *realloc_call(kp_pool *pool, struct classic_call *c)
{
	unsigned g = kp__grace_enter();
	void *q = realloc_inner(pool, c->p, c->size, c->flags);
	kp__grace_exit(g);
	return q;
}

void *kp__realloc_classic(kp_pool *pool, void *p, size_t size, unsigned flags)
{
	if (kp__ol_pool(pool)) { /* kp__ol_realloc's: alloc.c's block (classic_call) */
		struct classic_call c = {.size = size, .p = p, .flags = flags};
		return classic_call(pool, realloc_call, &c);
	}
	unsigned g = kp__grace_enter();
	void *q = realloc_inner(pool, p, size, flags);
	kp__grace_exit(g);
	return q;
}

/* The block h (p, its class cls, K(h) key, meta its verified meta) goes back
 * to the thread's bin for its class, as free_fast puts it there, once
 * kp_realloc has moved its contents: it was verified (canary too) before
 * the move, and nothing of it has changed since but what the caller may
 * write (a race of its own). A full bin, or a first slot that is no longer
 * this pool's (the allocation of the new block may have made a cache),
 * takes the slow free, which checks it all again and flushes. */
static ALWAYS_INLINE void moved_free(kp_pool *pool, uint64_t id, kp__hdr *h, uint64_t meta, uint64_t key)
{
	unsigned cls = KP_META_CLS(meta);
	kp__tcache *tc = kp__tls_state.tc[0];
	if (KP_LIKELY(kp__tls_state.fast_free == id)) {
		kp__bin *b = &tc->bin[cls];
		unsigned n = b->count;
		if (KP_LIKELY(n < b->max)) {
			kp__hdr_put(h, key, (meta & 0xff00) | KP_ST_FREE);
			kp__link_put_k(key, h, b->head); /* an empty bin's head is NULL (free_fast) */
			tc->stack[cls][n] = key ^ kp__kslot(&pool->secret, h);
			KP_POISON((char *)h + KP_HDR, kp__class_size[cls] - KP_HDR);
			b->head = (char *)h;
			b->count = n + 1;
			kp__count_inc(&b->frees, 1);
			return;
		}
	}
	free_slow(pool, (char *)h + KP_HDR);
}

/* The move of kp_realloc, out of line (so that the in-place resize saves
 * no register): a new block from kp_alloc's fast path, the contents
 * copied, the old block (p, its verified meta, K(h) key) into its bin. In
 * the section kp_realloc opened (KP_GRACE_OWN), closed here: the
 * allocation may retire a range (a reclaim pending on leaving). */
static __attribute__((noinline)) void *realloc_move(kp_pool *pool, void *p, size_t size, uint64_t meta, uint64_t key)
{
	void *q = alloc_fast(pool, size, 0);
	if (q) { /* else p is untouched, the failure recorded by the allocation */
		size_t req = KP_META_REQ(meta), n = req < size ? req : size;
#if KP_PLANT == 7 /* planted 7: a moving realloc copies 8 bytes too few (as realloc_inner) */
		n -= n >= 16 ? 8 : 0;
#endif
		memcpy(q, p, n);
		moved_free(pool, pool->id, (kp__hdr *)((char *)p - KP_HDR), meta, key);
	}
	kp__grace_exit(KP_GRACE_OWN);
	return q;
}

/* kp_usable_size: with checks on, the request (primary_usable: the slack
 * past it holds the canary), which a verified header says. */
KP_EXPORT size_t kp_usable_size(kp_pool *pool, const void *p)
{
	uint64_t id, meta, key;
	kp__grace_rec *r;
	if (KP_LIKELY(fast_open(pool, &id, &r))) {
		bool live = small_live(pool, id, p, &meta, &key) != NULL;
		fast_close(r);
		if (KP_LIKELY(live))
			return KP_META_REQ(meta);
	}
	return usable_slow(pool, p);
}

/* kp_realloc of a verified small block with flags 0: in place when the new
 * size keeps it in its class (realloc_in_place's rule: at most the room
 * its class leaves past the canary, at least half of it), the header's
 * request and the canary moved to the new end; else realloc_move. An
 * overflowed block (its canary damaged) goes to the slow path, which moves
 * it and reports the overflow. */
KP_EXPORT void *kp_realloc(kp_pool *pool, void *p, size_t size, unsigned flags)
{
	uint64_t id, meta, key;
	kp__grace_rec *r;
	kp__hdr *h;
	if (KP_UNLIKELY(flags != 0 || size - 1 >= KP_REQ_MAX || !fast_open(pool, &id, &r)))
		return realloc_slow(pool, p, size, flags);
	if (KP_UNLIKELY(!(h = small_live(pool, id, p, &meta, &key)) ||
			!kp__canary8_ok(key, (char *)p + KP_META_REQ(meta)))) {
		fast_close(r);
		return realloc_slow(pool, p, size, flags);
	}
	size_t req = KP_META_REQ(meta);
	unsigned cls = KP_META_CLS(meta);
	size_t cap = kp__class_size[cls] - KP_HDR, room = cap - KP_CANARY;
	if (!(size <= room + (KP_PLANT == 5) * KP_HDR && size >= room / 2)) /* planted 5, as realloc_in_place */
		return realloc_move(pool, p, size, meta, key);
	if (size > req) /* [p, p + req) is open already */
		KP_UNPOISON((char *)p + req, size - req);
	kp__hdr_put(h, key, kp__meta(size, (uint16_t)cls, KP_ST_ALLOC));
	if (size < cap)
		KP_POISON((char *)p + size, cap - size);
#if KP_PLANT == 5 /* the canary may not fit */
	kp__canary_put(key, p, size, cap);
#else
	kp__canary8_put(key, (char *)p + size);
#endif
	fast_close(r);
	return p;
}
