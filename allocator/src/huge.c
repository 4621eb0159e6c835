/*
 * huge.c - huge blocks: requests too big for a span, each in a mapping of
 * its own (a segment of kind KP_SEG_HUGE), resized by moving pages, and the
 * small cache of freed huge mappings kept for reuse, which the daemon
 * purges and trims. Split from primary.c, which keeps segments and spans.
 *
 * Locks: pool->lock guards the huge list and the cache, as it guards the
 * segment list (primary.c).
 */
#include "internal.h"

#include <errno.h>
#include <string.h>

/* A huge block: its own mapping, aligned to the segment size so the pagemap
 * finds it; the segment header first, the payload page-aligned at 8 KiB.
 *
 * A freed one keeps its mapping (at most KP_HUGE_CACHE of them, each at
 * most KP_HUGE_CACHE_MAX bytes) for the next huge request it fits with at
 * most half of it to spare, so a program that allocates and frees big
 * buffers makes no mmap or munmap (the allocation path's system calls); the
 * daemon gives back the pages of those kept while the pool grew (the
 * mapping stays: a block taken there faults in what it writes, as a fresh
 * mapping would), as does a request that misses them all and maps
 * (huge_cache_missed), unmaps those unused for decay_ms, and a segment or huge
 * block that needs their room under primary_max evicts them, as does a huge
 * request bigger than all of them (huge_cache_missed: a program growing a
 * buffer asks for none of their sizes again). A kept
 * mapping's purge_idle holds the pool's growth count (pool_grows) at its free; purging: the daemon
 * is giving its pages back (without the pool lock), so it is neither taken
 * nor unmapped meanwhile (evicted, 2: the daemon unmaps it after); purged:
 * its pages were given back. A kept mapping stays in
 * the pagemap with its header marked free, so a stale pointer into it is a
 * double free; ASan builds poison the first KP_HUGE_POISON bytes of its
 * payload (poisoning megabytes would cost more than the munmap saved).
 *
 * Each mapping ends in KP_HUGE_GUARD, a read-only page past s->size
 * (kp__os_guard), moved with the end when a block shrinks in place: a huge
 * block's payload runs to its mapping's end, and whatever the kernel maps
 * next (another huge block's header with its list links, a retired header
 * on the grace list, a thread-cache chunk in the hole a shrink left) was
 * the next bytes after it (sess16-hA4's attacks; test_seg_guard). */
#define KP_HUGE_GUARD ((size_t)KP_PAGE)
#define KP_HUGE_CACHE 4
#define KP_HUGE_CACHE_MAX ((size_t)32 << 20)
#define KP_HUGE_POISON ((size_t)64 << 10)

static size_t huge_poisoned(const kp__seg *s)
{
	size_t cap = s->size - 2 * KP_PAGE;
	return cap < KP_HUGE_POISON ? cap : KP_HUGE_POISON;
}

/* The kept mappings' list runs through their headers, each one the next
 * bytes after some other mapping: the list is cut at the first one whose
 * magic is damaged (it and those after it are leaked, reported). Caller
 * holds pool->lock. */
static void huge_cache_vet(kp_pool *pool)
{
	for (kp__seg **pp = &pool->huge_cache; *pp; pp = &(*pp)->next) {
		if (kp__seg_magic_ok(pool, *pp) && (*pp)->kind == KP_SEG_HUGE)
			continue;
		kp__seg_quarantine_locked(pool, *pp);
		*pp = NULL;
		size_t bytes = 0;
		unsigned n = 0;
		for (kp__seg *c = pool->huge_cache; c; c = c->next, n++)
			bytes += c->size;
		pool->huge_ncached = n;
		atomic_store(&pool->huge_cached_bytes, bytes);
		return;
	}
}

/* The pool's growth, a count that only rises: the inline primary's
 * segments and layout:outline's segments the heaps took. A kept mapping
 * whose count moved since its free gives its pages back
 * (kp__huge_cache_trim). The outline's count was left out: sqlite3 under
 * the preload freed an 8 MiB buffer and took 14 MiB of 4 KiB blocks in new
 * segments, the mapping resident beside them until its decay (peak 47.7
 * MiB against 43.3 when the decay came first; test_outline_huge_purge). */
static uint64_t pool_grows(kp_pool *pool)
{
	return atomic_load(&pool->grows) + kp__ol_grows(pool);
}

/* Caller holds pool->lock. */
static kp__seg *huge_cache_take(kp_pool *pool, size_t size)
{
	huge_cache_vet(pool);
	for (kp__seg **pp = &pool->huge_cache; *pp; pp = &(*pp)->next) {
		kp__seg *c = *pp;
		if (!c->purging && c->size >= size && c->size / 2 <= size) {
			*pp = c->next;
			pool->huge_ncached--;
			atomic_fetch_sub(&pool->huge_cached_bytes, c->size);
			return c;
		}
	}
	return NULL;
}

/* Caller holds pool->lock and release_mu: the whole cache, for
 * kp__huge_cache_release, but the mappings being purged: those leave the
 * cache and its count too (purging 2: evicted) for pool->huge_evicted, and
 * the daemon unmaps them when its madvise is done (kp__huge_cache_trim; a
 * fork child's next trim, when the fork cut the pass short). Kept counted until then, they failed the
 * allocation that needed their room for as long as the madvise took
 * (test_huge_purge_evict). */
kp__seg *kp__huge_cache_detach(kp_pool *pool)
{
	huge_cache_vet(pool);
	kp__seg *list = NULL;
	for (kp__seg **pp = &pool->huge_cache; *pp;) {
		kp__seg *c = *pp;
		*pp = c->next;
		pool->huge_ncached--;
		atomic_fetch_sub(&pool->huge_cached_bytes, c->size);
		if (c->purging) {
			c->purging = 2;
			c->next = atomic_load_explicit(&pool->huge_evicted, memory_order_relaxed);
			atomic_store_explicit(&pool->huge_evicted, c, memory_order_relaxed);
			continue;
		}
		c->next = list;
		list = c;
	}
	return list;
}

/* Caller holds pool->lock: does no kept mapping fit a request of size
 * bytes or a bigger one, and does one hold pages (not given back)? */
static bool huge_cache_outgrown_locked(kp_pool *pool, size_t size)
{
	huge_cache_vet(pool);
	bool resident = false;
	for (const kp__seg *c = pool->huge_cache; c; c = c->next) {
		if (c->size >= size)
			return false;
		resident |= !c->purged;
	}
	return resident;
}

/* A huge request that misses the cache and maps anyway, bigger than every
 * kept mapping, unmaps them first: a program growing a buffer (a new one
 * half as big again, the old copied and freed) asks for more each time, so
 * the mappings it freed fit none of its later requests, and they held every
 * page their blocks wrote until the daemon saw the pool grow or decay_ms
 * passed: CPython's test_unicode under the preload peaked 14 MiB above
 * the same run with no cache (test_huge_outgrown). Only on a miss, which
 * makes its mmap anyway: a program that asks again for a size it freed
 * finds it kept and makes no system call; one that alternates a small and
 * a bigger size keeps the bigger, and the smaller is kept again beside it
 * at its next free.
 *
 * A miss smaller than a kept mapping (each has more than half of it to
 * spare) gives back the pages the kept mappings hold, their mappings still
 * kept: the miss is the pool growing while those pages sit unused, the
 * daemon's own rule (kp__huge_cache_trim: given back once the pool grew
 * since their free) applied now rather than at its next pass. A kept
 * mapping taken later faults in what its block writes, as a fresh mapping
 * would. CPython's test_unicode frees two lists of 8.5 and 9 MiB, then asks
 * for strings of 4.4 MiB: each mapped and faulted in beside the freed
 * lists' 17 MiB until the daemon's pass, a peak of 242-249 MiB against
 * 237-239 with the cache compiled out (s30, test_huge_cache_miss). Marked
 * purging under pool->lock (no thread takes them meanwhile: huge_cache_take,
 * huge_cache_take_window) and given back without it; release_mu held from
 * the mark to its clearing, so the daemon's trim, which clears stale marks,
 * and kp__huge_cache_detach never see these. No lock held; takes
 * release_mu (the evicted mappings in hand till unmapped: no fork
 * meanwhile), then pool->lock. */
static void huge_cache_missed(kp_pool *pool, size_t size)
{
	if (!atomic_load(&pool->huge_cached_bytes))
		return;
	kp__seg *purge[KP_HUGE_CACHE], *evict = NULL;
	bool whole[KP_HUGE_CACHE];
	unsigned npurge = 0;
	pthread_mutex_lock(&pool->release_mu);
	kp__pool_lock(pool);
	if (huge_cache_outgrown_locked(pool, size))
		evict = kp__huge_cache_detach(pool);
	else
		for (kp__seg *c = pool->huge_cache; c && npurge < KP_HUGE_CACHE; c = c->next)
			if (!c->purged && !c->purging) {
				c->purging = 1;
				purge[npurge++] = c;
			}
	pthread_mutex_unlock(&pool->lock);
	kp__huge_cache_release(pool, evict);
	/* the payload past the block header's page, as the trim gives back */
	for (unsigned i = 0; i < npurge; i++) {
		size_t bytes = kp__os_purge_whole(&pool->os, (char *)purge[i] + 2 * KP_PAGE,
						  purge[i]->size - 2 * KP_PAGE, &whole[i]);
		if (whole[i]) /* khugepaged would refill the headers' 2 MiB (os.c) */
			kp__os_nohugepage(&pool->os, purge[i], purge[i]->size);
		if (bytes) {
			atomic_fetch_add(&pool->purged_bytes, bytes);
			atomic_fetch_add(&pool->purges, 1);
		}
	}
	if (npurge) {
		kp__pool_lock(pool);
		for (unsigned i = 0; i < npurge; i++) {
			purge[i]->purged = whole[i]; /* refused: a later miss or trim tries again */
			purge[i]->purging = 0;
		}
		pthread_mutex_unlock(&pool->lock);
	}
	pthread_mutex_unlock(&pool->release_mu);
}

/* ---- huge blocks given back ----------------------------------------------
 * The pagemap forgets a huge block's address when its mapping goes, so a
 * second free of a block over KP_HUGE_CACHE_MAX, or of a kept one the
 * daemon trimmed, found nothing there and was reported as a pointer never
 * given out, not the double free it is (session 20's outside attack). The
 * payload addresses of the last KP_HUGE_GONE mappings given back (freed,
 * trimmed or evicted from the cache, or left by a realloc that moved the
 * block) are kept in a small ring: a slot claimed with one fetch_add, no
 * lock; read only by a free that found no block (kp__huge_gone), so the
 * paths that work pay one store per huge release. Nothing of the memory
 * that is gone is read. An address mapped again is found by the pagemap
 * first, and one another pool mapped since is that pool's; one forgotten
 * (KP_HUGE_GONE released since) is an invalid free, as before. Noted before the pagemap forgets it: a free in between finds
 * the block itself. */
static void huge_note_gone(kp_pool *pool, const kp__seg *s)
{
	unsigned i = atomic_fetch_add_explicit(&pool->huge_gone_next, 1, memory_order_relaxed);
	atomic_store_explicit(&pool->huge_gone[i % KP_HUGE_GONE], (uintptr_t)s + 2 * KP_PAGE, memory_order_relaxed);
}

bool kp__huge_gone(kp_pool *pool, const void *p)
{
	if (((uintptr_t)p & (KP_SEG_SIZE - 1)) != 2 * KP_PAGE) /* a huge payload's place in its mapping */
		return false;
	const kp__seg *now = kp__pagemap_get(p);
	if (now && now->pool != pool) /* mapped again by another pool: not ours, whatever it was */
		return false;
	for (unsigned i = 0; i < KP_HUGE_GONE; i++)
		if (atomic_load_explicit(&pool->huge_gone[i], memory_order_relaxed) == (uintptr_t)p)
			return true;
	return false;
}

/* Give a huge mapping back (its header and slack unpoisoned; no lock held).
 * A lookup reads nothing of a huge block but its first two pages (the
 * segment header, the block header at 8 KiB - 16): those wait out a grace
 * period (pagemap.c); the payload goes at once. given: it held a block that
 * was given out (not a fresh mapping that failed before it was). */
static void huge_release(kp_pool *pool, kp__seg *s, size_t size, bool given)
{
	if (given)
		huge_note_gone(pool, s);
	kp__pagemap_set(&pool->os, s, size, NULL);
	kp__os_unmap_clean(&pool->os, (char *)s + 2 * KP_PAGE, size - 2 * KP_PAGE + KP_HUGE_GUARD);
	kp__grace_retire(pool, s, 2 * KP_PAGE);
}

/* Unmap detached kept mappings (no lock held). */
int kp__huge_cache_release(kp_pool *pool, kp__seg *list)
{
	int n = 0;
	for (kp__seg *c = list, *next; c; c = next, n++) {
		next = c->next;
		char *h = (char *)c + 2 * KP_PAGE - KP_HDR;
		KP_UNPOISON(h, KP_HDR);
		KP_UNPOISON(h + KP_HDR, huge_poisoned(c));
		huge_release(pool, c, c->size, true);
	}
	return n;
}

int kp__huge_cache_trim(kp_pool *pool, bool all)
{
	if (!atomic_load(&pool->huge_cached_bytes) && !atomic_load_explicit(&pool->huge_evicted, memory_order_relaxed))
		return 0;
	uint64_t now = kp__pool_now(pool), decay = (uint64_t)pool->conf.decay_ms * 1000000ull;
	uint64_t grows = pool_grows(pool);
	kp__seg *gone = NULL, *purge[KP_HUGE_CACHE];
	bool whole[KP_HUGE_CACHE];
	unsigned npurge = 0;
	/* expired and evicted mappings in hand till unmapped: no fork meanwhile */
	pthread_mutex_lock(&pool->release_mu);
	kp__pool_lock(pool);
	/* evicted while a pass that a fork cut short purged them */
	gone = atomic_exchange_explicit(&pool->huge_evicted, NULL, memory_order_relaxed);
	huge_cache_vet(pool);
	for (kp__seg **pp = &pool->huge_cache; *pp;) {
		kp__seg *c = *pp;
		/* Only the daemon marks (its passes are serialized, and kp_destroy
		 * stops it first), but for a miss (huge_cache_missed), which holds
		 * release_mu until it clears its marks: a mark found here was left
		 * by a pass that a fork cut short. */
		c->purging = 0;
		if (all || now - c->empty_since_ns >= decay) {
			*pp = c->next;
			pool->huge_ncached--;
			atomic_fetch_sub(&pool->huge_cached_bytes, c->size);
			c->next = gone;
			gone = c;
		} else {
			/* A kept mapping held every page its block wrote until it
			 * was unmapped decay_ms later, where glibc unmaps at free:
			 * a program that frees a big buffer and grows its heap
			 * within decay_ms held both. Given back once the pool grew
			 * since the free (the process's memory grows while these
			 * pages sit unused), not on a timer: 10 ms after each free
			 * (mimalloc's delay) cost kpbench f 6%, its kept mappings
			 * faulted in again each round (test_huge_purge). */
			if (!c->purged && c->purge_idle != grows && npurge < KP_HUGE_CACHE) {
				c->purging = 1;
				purge[npurge++] = c;
			}
			pp = &c->next;
		}
	}
	pthread_mutex_unlock(&pool->lock);
	int n = kp__huge_cache_release(pool, gone);
	pthread_mutex_unlock(&pool->release_mu);
	/* The payload past the block header's page; the two first pages (the
	 * headers a lookup reads) stay. Without the lock: the marked mappings
	 * stay mapped and unused until their mark is cleared. */
	for (unsigned i = 0; i < npurge; i++) {
		size_t bytes = kp__os_purge_whole(&pool->os, (char *)purge[i] + 2 * KP_PAGE,
						  purge[i]->size - 2 * KP_PAGE, &whole[i]);
		if (whole[i]) /* as huge_cache_missed */
			kp__os_nohugepage(&pool->os, purge[i], purge[i]->size);
		if (bytes) {
			atomic_fetch_add(&pool->purged_bytes, bytes);
			atomic_fetch_add(&pool->purges, 1);
			n++;
		}
	}
	if (npurge) {
		pthread_mutex_lock(&pool->release_mu);
		kp__pool_lock(pool);
		for (unsigned i = 0; i < npurge; i++) {
			if (purge[i]->purging == 2) /* evicted meanwhile: on huge_evicted */
				continue;
			purge[i]->purged = whole[i]; /* refused: the next pass tries again */
			purge[i]->purging = 0;
		}
		gone = atomic_exchange_explicit(&pool->huge_evicted, NULL, memory_order_relaxed);
		pthread_mutex_unlock(&pool->lock);
		n += kp__huge_cache_release(pool, gone);
		pthread_mutex_unlock(&pool->release_mu);
	}
	return n;
}

/* The live huge blocks' list. Caller holds pool->lock. */
static void huge_link(kp_pool *pool, kp__seg *s)
{
	s->prev = NULL;
	s->next = pool->huge;
	if (pool->huge)
		pool->huge->prev = s;
	pool->huge = s;
}

static void huge_unlink(kp_pool *pool, kp__seg *s)
{
	if (s->prev)
		s->prev->next = s->next;
	else
		pool->huge = s->next;
	if (s->next)
		s->next->prev = s->prev;
}

void *kp__huge_alloc(kp_pool *pool, size_t need, size_t align)
{
	(void)align; /* the payload is page-aligned, the largest alignment served */
	size_t size = (need + 2 * KP_PAGE + KP_PAGE - 1) & ~(size_t)(KP_PAGE - 1);
	kp__seg *evict = NULL;
	bool release = false;	 /* holding release_mu: evicted mappings in hand */
	kp__grace_reclaim(pool); /* before mapping: what waited out its grace period */
again:
	kp__pool_lock(pool);
	kp__seg *s = huge_cache_take(pool, size);
	size_t used = pool->capacity + atomic_load(&pool->huge_bytes) + atomic_load(&pool->ol_bytes);
	bool room = s || used + atomic_load(&pool->huge_cached_bytes) + size <= pool->conf.primary_max;
	if (!room && used + size <= pool->conf.primary_max) {
		if (!release) { /* release_mu comes before pool->lock */
			pthread_mutex_unlock(&pool->lock);
			pthread_mutex_lock(&pool->release_mu);
			release = true;
			goto again;
		}
		evict = kp__huge_cache_detach(pool);
		room = true;
	}
	pthread_mutex_unlock(&pool->lock);
	kp__huge_cache_release(pool, evict);
	if (release)
		pthread_mutex_unlock(&pool->release_mu);
	if (!room)
		return NULL;
	if (s) { /* a kept mapping: magic, pool, kind, size and pagemap are set */
		KP_UNPOISON((char *)s + 2 * KP_PAGE, huge_poisoned(s));
		size = s->size;
		s->dirty = 1;
		/* a purged one was advised off huge pages (kp__os_nohugepage):
		 * its block faults in every page again, and one madvise more */
		if (s->purged && pool->conf.thp)
			kp__os_hugepage(&pool->os, s, size);
	} else {
		huge_cache_missed(pool, size);
		s = kp__os_map(&pool->os, size + KP_HUGE_GUARD, KP_SEG_SIZE, false);
		int err = s ? -kp__os_guard(&pool->os, (char *)s + size, KP_HUGE_GUARD) : errno;
		if (s && err) {
			kp__os_unmap_clean(&pool->os, s, size + KP_HUGE_GUARD);
			s = NULL;
		}
		if (!s) {
			kp__event(pool, KP_EV_OS_FAIL, KP_POOL_PRIMARY, NULL, size, "mmap of %zu bytes refused (%d)",
				  size, err);
			return NULL;
		}
		/* A fresh mapping has a clean shadow (kp__os_unmap leaves no
		 * poison behind): the caller poisons the header and the slack past
		 * the request, not megabytes it would then unpoison. */
		if (pool->conf.thp)
			kp__os_hugepage(&pool->os, s, size);
		s->pool = pool;
		s->kind = KP_SEG_HUGE;
		s->size = size;
		s->dirty = 0;
		atomic_fetch_add_explicit(&pool->fresh_taken, size, memory_order_relaxed);
		s->magic = kp__seg_magic(pool->secret, s, KP_SEG_HUGE, size);
		if (kp__pagemap_set(&pool->os, s, size, s) < 0) {
			/* the entries it wrote point here: cleared, and the header
			 * pages wait out a grace period (test_pagemap_stale_attack5) */
			kp__event(pool, KP_EV_OS_FAIL, KP_POOL_PRIMARY, NULL, size, "pagemap leaf refused (%d)", errno);
			huge_release(pool, s, size, false);
			return NULL;
		}
	}
	kp__pool_lock(pool);
	huge_link(pool, s);
	pthread_mutex_unlock(&pool->lock);
	atomic_fetch_add(&pool->huge_bytes, size);
	kp__account_huge(pool, size, true);
	return (char *)s + 2 * KP_PAGE - KP_HDR;
}

void kp__huge_free(kp_pool *pool, kp__seg *s, size_t open)
{
	kp__pool_lock(pool);
	huge_unlink(pool, s);
	pthread_mutex_unlock(&pool->lock);
	size_t size = s->size;
	atomic_fetch_sub(&pool->huge_bytes, size);
	kp__account_huge(pool, size, false);
	char *h = (char *)s + 2 * KP_PAGE - KP_HDR;
	if (open < size - 2 * KP_PAGE)
		KP_UNPOISON(h + KP_HDR + open, size - 2 * KP_PAGE - open);
	if (size <= KP_HUGE_CACHE_MAX) {
		/* poisoned before it is published: a thread taking it at once
		 * unpoisons after */
		KP_POISON(h + KP_HDR, huge_poisoned(s));
		kp__pool_lock(pool);
		bool kept = pool->huge_ncached < KP_HUGE_CACHE;
		if (kept) {
			s->empty_since_ns = kp__pool_now(pool);
			s->purged = s->purging = 0; /* its block wrote it */
			s->purge_idle = pool_grows(pool);
			s->prev = NULL;
			s->next = pool->huge_cache;
			pool->huge_cache = s;
			pool->huge_ncached++;
			atomic_fetch_add(&pool->huge_cached_bytes, size);
		}
		pthread_mutex_unlock(&pool->lock);
		if (kept)
			return;
		KP_UNPOISON(h + KP_HDR, huge_poisoned(s));
	}
	KP_UNPOISON(h, KP_HDR);
	huge_release(pool, s, size, true);
}

/* Caller holds pool->lock: the smallest kept mapping of at least size
 * bytes (a growing block's next window), or NULL. */
static kp__seg *huge_cache_take_window(kp_pool *pool, size_t size)
{
	huge_cache_vet(pool);
	kp__seg **best = NULL;
	for (kp__seg **pp = &pool->huge_cache; *pp; pp = &(*pp)->next)
		if (!(*pp)->purging && (*pp)->size >= size && (!best || (*pp)->size < (*best)->size))
			best = pp;
	if (!best)
		return NULL;
	kp__seg *c = *best;
	*best = c->next;
	pool->huge_ncached--;
	atomic_fetch_sub(&pool->huge_cached_bytes, c->size);
	return c;
}

kp__seg *kp__huge_resize(kp_pool *pool, kp__seg *s, size_t need, size_t open)
{
	size_t size = (need + 2 * KP_PAGE + KP_PAGE - 1) & ~(size_t)(KP_PAGE - 1), old = s->size;
	if (size == old)
		return s;
	/* A growing block moves to another aligned window (the pages after it
	 * are seldom free), entered in the pagemap before anything moves so
	 * that a failure leaves the block where it was; a shrinking one stays.
	 * The window is a kept mapping when one is big enough: no mmap, and
	 * the block takes all of it, so that it grows on in place. */
	kp__seg *n = s;
	bool kept = false; /* n a kept mapping: its last block was given out */
	if (size > old) {
		kp__pool_lock(pool);
		n = huge_cache_take_window(pool, size);
		kept = n != NULL;
		bool room = n || pool->capacity + atomic_load(&pool->huge_bytes) + atomic_load(&pool->ol_bytes) +
						 atomic_load(&pool->huge_cached_bytes) + (size - old) <=
					 pool->conf.primary_max;
		pthread_mutex_unlock(&pool->lock);
		if (!room)
			return NULL;
		if (n) { /* its header and the start of its payload are poisoned */
			KP_UNPOISON((char *)n + 2 * KP_PAGE - KP_HDR, KP_HDR);
			KP_UNPOISON((char *)n + 2 * KP_PAGE, huge_poisoned(n));
			size = n->size;
		} else {
			huge_cache_missed(pool, size);
			n = kp__os_map(&pool->os, size + KP_HUGE_GUARD, KP_SEG_SIZE, false);
			int err = n ? -kp__os_guard(&pool->os, (char *)n + size, KP_HUGE_GUARD) : errno;
			if (!n || err) { /* recorded as kp__huge_alloc records it (test_guard_attack5) */
				if (n)
					kp__os_unmap_clean(&pool->os, n, size + KP_HUGE_GUARD);
				kp__event(pool, KP_EV_OS_FAIL, KP_POOL_PRIMARY, NULL, size,
					  "mmap of %zu bytes refused (%d)", size, err);
				return NULL;
			}
			if (kp__pagemap_set(&pool->os, n, size, n) < 0) {
				kp__event(pool, KP_EV_OS_FAIL, KP_POOL_PRIMARY, NULL, size, "pagemap leaf refused (%d)",
					  errno);
				huge_release(pool, n, size, false); /* as kp__huge_alloc */
				return NULL;
			}
			/* no MADV_HUGEPAGE here: the moved pages bring theirs */
		}
	}
	/* ASan's shadow stays where it is when pages move: clean the header
	 * and slack of the old place (the caller poisons the new ones). */
	char *h = (char *)s + 2 * KP_PAGE - KP_HDR;
	KP_UNPOISON(h, KP_HDR);
	if (open < old - 2 * KP_PAGE)
		KP_UNPOISON(h + KP_HDR + open, old - 2 * KP_PAGE - open);
	/* A block that moves leaves the live list first: its neighbours hold
	 * its address, and another thread's free relinks them under the lock
	 * while the pages move without it (the fuzzers' concurrent target
	 * found that write into the old place). */
	if (n != s) {
		kp__pool_lock(pool);
		huge_unlink(pool, s);
		pthread_mutex_unlock(&pool->lock);
	}
	/* The range given up leaves the pagemap before it is unmapped: once
	 * unmapped, another thread may map it and enter it (clearing it after
	 * would lose that thread's block; the same concurrent target found it).
	 * Clearing entries never fails, nor does setting them again. */
	size_t keep = (size + KP_SEG_SIZE - 1) & ~(size_t)(KP_SEG_SIZE - 1);
	if (n != s) {
		huge_note_gone(pool, s); /* a free of the old address is a double free */
		kp__pagemap_set(&pool->os, s, old, NULL);
	} else if (old > keep)
		kp__pagemap_set(&pool->os, (char *)s + keep, old - keep, NULL);
	/* Only the payload moves (from 8 KiB on): the first two pages, all a
	 * lookup of the old address reads, stay where they are until a grace
	 * period has passed, and are copied to the new place. */
	/* A block that shrinks in place: its new end becomes the guard (a
	 * page of its old payload) and the rest goes with the old guard. The
	 * rest's munmap refused, the guard's page is made writable again and
	 * the block keeps its size; that refused too, the block keeps its new
	 * end (the guard in place) and the rest stays mapped, lost: a
	 * read-only page inside its payload faulted the program's next write
	 * there, or the next block's that was given its kept mapping
	 * (test_guard_attack5). */
	int rc;
	if (n == s) {
		rc = kp__os_guard(&pool->os, (char *)s + size, KP_HUGE_GUARD);
		if (rc == 0 &&
		    (rc = kp__os_unmap_clean(&pool->os, (char *)s + size + KP_HUGE_GUARD, old - size)) != 0 &&
		    kp__os_protect(&pool->os, (char *)s + size, KP_HUGE_GUARD, true) != 0) {
			kp__event(pool, KP_EV_OS_FAIL, KP_POOL_PRIMARY, (char *)s + size + KP_HUGE_GUARD, old - size,
				  "munmap of a shrunk huge block's %zu-byte tail refused (%d): left mapped", old - size,
				  -rc);
			rc = 0;
		}
	} else {
		rc = kp__os_remap(&pool->os, (char *)s + 2 * KP_PAGE, old - 2 * KP_PAGE, size - 2 * KP_PAGE,
				  (char *)n + 2 * KP_PAGE);
	}
	if (rc != 0) {
		KP_POISON(h, KP_HDR);
		if (open < old - 2 * KP_PAGE)
			KP_POISON(h + KP_HDR + open, old - 2 * KP_PAGE - open);
		kp__pagemap_set(&pool->os, s, old, s);
		if (n != s) {
			kp__pool_lock(pool);
			huge_link(pool, s);
			pthread_mutex_unlock(&pool->lock);
			huge_release(pool, n, size, kept);
		}
		kp__event(pool, KP_EV_OS_FAIL, KP_POOL_PRIMARY, NULL, size, "mremap of %zu bytes refused (%d)", size,
			  -rc);
		return NULL;
	}
	if (n != s) {
		memcpy(n, s, 2 * KP_PAGE);				       /* the segment and block headers */
		kp__os_unmap_clean(&pool->os, (char *)s + old, KP_HUGE_GUARD); /* its guard */
		kp__grace_retire(pool, s, 2 * KP_PAGE);
	}
	kp__pool_lock(pool);
	n->size = size;
	n->magic = kp__seg_magic(pool->secret, n, KP_SEG_HUGE, size);
	if (n != s)
		huge_link(pool, n);
	pthread_mutex_unlock(&pool->lock);
	if (size > old) {
		atomic_fetch_add(&pool->huge_bytes, size - old);
		kp__account_huge(pool, size - old, true);
	} else {
		atomic_fetch_sub(&pool->huge_bytes, old - size);
		kp__account_huge(pool, old - size, false);
	}
	return n;
}
