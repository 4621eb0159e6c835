/*
 * transfer.c - the transfer cache: whole batches of free blocks handed from
 * a thread cache that overflowed to the next one of the class that runs
 * empty, without going back to their spans (tcmalloc's transfer cache).
 *
 * Two threads that free each other's blocks (kpbench c, a server's
 * producer and consumer) fill one bin and empty another of the same class.
 * Through the spans, each block of such a batch cost about 210 instructions
 * (callgrind, kpbench c): its segment vetted and span found and its link
 * rewritten when given back (kp__central_give), its key computed again (one
 * AES) and its link vetted and rewritten when taken (kp__central_take), the
 * span's counts and list written by both threads under the class lock. Parked
 * here, a batch moves as it is: its list and its bin's key stack, one copy
 * of the keys under the class lock on each side.
 *
 * A class parks a stack of batches. Its room: KP_XFER_BASE batches whatever
 * their size (up to KP_XFER_KEYS blocks and KP_XFER_BYTES each), and past
 * them as many as its room's level lets its blocks parked reach: level L of
 * KP_XFER_LEVELS, 1 / 2^(KP_XFER_LEVELS - L) of KP_XFER_CLASS_KEYS blocks
 * and KP_XFER_CLASS_BYTES bytes (level 0: nothing past the base). A batch
 * that finds no room goes to its spans; the room grows, to the least level
 * that holds it, only when a bin took one of the class's batches since the
 * room last grew: a flow from thread to thread that overflowed. Two slots a
 * class (the base alone) sent a third of kpbench c's batches to the spans
 * under callgrind (its threads take turns, a queue of 1024 blocks at a
 * time: 2.7-2.8K of 8.4K in --ops 300000; now 126-130), 30-50K a run when
 * its threads shared a CPU unpinned (now 0-164), 2.5-20K pinned apart (now
 * 45-960); kp_alloc + kp_free 227.2 -> 204.1 instructions an operation
 * (test_cross_instructions). A producer's bin at its start parks 15 or 16
 * blocks at a time, and a burst of 1024 sent 132 batches of 8 to the spans
 * (test_xfer_spill; now none). A class whose parked batches nobody takes (a
 * thread that frees what it allocated, beside a thread that does not take
 * them) keeps the base and its keys in xfer_head (test_transfer_pages). The
 * room never shrinks: what is parked is bounded all the same, and given
 * back by the daemon when it stays parked (below).
 *
 * A bin that runs empty takes the newest batch if it fits (its max), and
 * nothing moves. Taking the newest one that fits, the batches above it
 * moving down, took as many batches (kpbench c pinned apart: 600-980
 * refills a run found none they could take either way; under callgrind
 * 204.1 against 205.1 instructions an operation) and moved up to 8 KiB of
 * keys just written by the other CPU under the class lock. Batches leave
 * from the bottom only when the daemon gives back stale ones.
 *
 * No link is followed unverified. A flush that cuts its bin's list vets
 * each block it walks against its key (tcache.c, kp__tcache_flush_bin); a
 * bin parked whole is not walked at all (each of its blocks was vetted when
 * it was freed into the bin). The bin that takes a batch vets each block
 * when it hands it out (alloc.c, bin_head_ok), as it does every block of a
 * bin (with checks off, which vets no block of a bin, the taker walks the
 * batch once as it takes it: take_vet), and the daemon each block of a
 * stale batch before its spans get it (batch_vet): a free block written
 * while parked is caught there, as it would be in a thread's bin.
 * The keys stay out of line, in the pool's own mapping.
 *
 * A parked batch is memory its spans do not get back: the flush of a
 * thread that leaves goes to the spans (keep 0), the bytes parked per class
 * are bounded (KP_XFER_CLASS_BYTES: 64 KiB, what two batches of
 * KP_XFER_BYTES were), the daemon gives back what stayed parked through one
 * of its checkpoints (KP_XFER_IDLE_NS), and kp_thread_flush all of it
 * (kp__xfer_drain).
 */
#include "internal.h"

#include <stddef.h>

#ifndef KP_DEBUG
#define KP_DEBUG 0
#endif
/* The helpers of kp__xfer_put and kp__xfer_take stay inside them: the
 * preload library's text places those two in the window small programs keep
 * resident (preload/hot.txt), and a helper of theirs left out of line put a
 * second 64 KiB window of text back (test_preload's resident test). */
#define XFER_INLINE inline __attribute__((always_inline))

/* The class's key at position p, and how many follow it in the same part
 * (*run): positions below KP_XFER_HEAD in xfer_head, the next KP_XFER_MID
 * in xfer_mid, the rest in xfer_tail (internal.h). */
static XFER_INLINE uint64_t *key_at(kp_pool *pool, unsigned cls, unsigned p, unsigned *run)
{
	if (p < KP_XFER_HEAD) {
		*run = KP_XFER_HEAD - p;
		return &pool->xfer_head[cls][p];
	}
	if (p < KP_XFER_HEAD + KP_XFER_MID) {
		*run = KP_XFER_HEAD + KP_XFER_MID - p;
		return &pool->xfer_mid[cls][p - KP_XFER_HEAD];
	}
	*run = KP_XFER_CLASS_KEYS - p;
	return &pool->xfer_tail[cls][p - KP_XFER_HEAD - KP_XFER_MID];
}

/* The class's keys [at, at + n) in from keys[0..n), and out to keys[0..n).
 * Class lock held. */
static XFER_INLINE void keys_in(kp_pool *pool, unsigned cls, unsigned at, const uint64_t *keys, unsigned n)
{
	while (n) {
		unsigned run;
		uint64_t *to = key_at(pool, cls, at, &run);
		unsigned k = n < run ? n : run;
		memcpy(to, keys, (size_t)k * sizeof *keys);
		keys += k;
		at += k;
		n -= k;
	}
}

static XFER_INLINE void keys_out(kp_pool *pool, unsigned cls, unsigned at, uint64_t *keys, unsigned n)
{
	while (n) {
		unsigned run;
		const uint64_t *from = key_at(pool, cls, at, &run);
		unsigned k = n < run ? n : run;
		memcpy(keys, from, (size_t)k * sizeof *keys);
		keys += k;
		at += k;
		n -= k;
	}
}

/* Batch j of the i parked for class cls leaves the stack: the keys of the
 * batches above it move down into its place (in place: no buffer on the
 * allocation path's stack, test_create_stack), and their records with them
 * (stamps still rising towards the top). Class lock held; the caller has
 * copied what it needs of batch j and stores nxfer and xkeys. */
static XFER_INLINE void slot_remove(kp_pool *pool, unsigned cls, unsigned j, unsigned i)
{
	unsigned n = kp__xfer_slot(pool, cls, j)->n;
	if (j + 1 < i) {
		const kp__xfer *top = kp__xfer_slot(pool, cls, i - 1);
		unsigned to = kp__xfer_slot(pool, cls, j)->at, from = kp__xfer_slot(pool, cls, j + 1)->at;
		unsigned left = top->at + top->n > KP_XFER_CLASS_KEYS || from < to ? 0 : top->at + top->n - from;
		/* downwards, one run of a part at a time (from > to: each key is
		 * read before it is overwritten; memmove within a part) */
		while (left) {
			unsigned run_to, run_from;
			uint64_t *dst = key_at(pool, cls, to, &run_to);
			const uint64_t *src = key_at(pool, cls, from, &run_from);
			unsigned k = left < run_to ? left : run_to;
			k = k < run_from ? k : run_from;
			memmove(dst, src, (size_t)k * sizeof *dst);
			to += k;
			from += k;
			left -= k;
		}
		for (unsigned k = j + 1; k < i; k++) {
			kp__xfer *down = kp__xfer_slot(pool, cls, k - 1);
			*down = *kp__xfer_slot(pool, cls, k);
			down->at = (uint16_t)(down->at - n);
		}
	}
	*kp__xfer_slot(pool, cls, i - 1) = (kp__xfer){0};
}

/* How long a thread that finds its class lock held tries it again on the
 * CPU before it sleeps in the mutex. The holders are the pool's other
 * allocating threads, each with one batch: a park or a take (a copy of at
 * most KP_XFER_KEYS keys, well under a microsecond), a refill or a batch
 * given back to its spans (up to KP_BIN_MAX blocks at about 200
 * instructions each: some tens of microseconds). A plain glibc mutex
 * sleeps at once, and on a virtual machine the sleeper's vCPU idles and
 * comes back only when the unlock's wake-up interrupt is delivered:
 * kpbench c, its two threads pinned to the two CPUs, slept 363-508 times
 * a run (4M operations) on its class locks, jemalloc 6-15; with up to 128
 * tries (about 10 us here) 132-239, with 512 (about 40 us) 1-13, with this
 * spin 1-7 (main 355-444 in the same rounds, load 12-15). A holder
 * that is preempted keeps a sleeper waiting as long: the spin then costs
 * this much CPU once and the thread sleeps as before. Bounded by the clock,
 * not a count: a pause takes 10 to 150 cycles from one CPU to the next.
 * test_class_lock_wait (daemon.c's alloc_path_lock does the same for
 * pool->lock, test_pool_lock_wait). */
#define KP_CLASS_SPIN_NS 50000ull
#define KP_CLASS_SPIN_CHECK 64 /* tries between two reads of the clock */

void kp__class_lock_wait(pthread_mutex_t *m)
{
	/* held by this very thread (a signal handler's call nested inside a
	 * batch of its thread's): kpool's refusal at once (kp__mutex_lock:
	 * one line, abort), no spin. Before (s36-robust), the spin was
	 * interrupted by the next signal, whose handler spun in turn: with
	 * SA_NODEFER handlers 1,423 deep, until the stack ran out (SIGSEGV,
	 * ASan's DEADLYSIGNAL with no report):
	 * test_outline_signal_nested_attack33 under ASan, 2 of ~40 runs beside
	 * the TSan suite. */
	if (KP_UNLIKELY(kp__mutex_mine(m))) {
		pthread_mutex_lock(m);
		return;
	}
	uint64_t until = kp__now_ns() + KP_CLASS_SPIN_NS;
	do {
		for (unsigned i = 0; i < KP_CLASS_SPIN_CHECK; i++) {
#if defined(__x86_64__) || defined(__i386__)
			__builtin_ia32_pause();
#endif
			if (pthread_mutex_trylock(m) == 0)
				return;
		}
	} while (kp__now_ns() < until);
	pthread_mutex_lock(m);
}

/* One more count of the calling thread: in its cache's xcount, which its
 * thread alone writes (a plain add: kp__count_inc), or with no cache (the
 * shared path, count NULL) in the pool's, which any thread may (an atomic
 * add). Either way no line the other threads write: kp__xcount. */
#define COUNT(pool, count, what)                    \
	((count) ? kp__count_inc(&(count)->what, 1) \
		 : (void)atomic_fetch_add_explicit(&(pool)->xfer_count.what, 1, memory_order_relaxed))

/* Are keys blocks of size bytes within 1 / 2^shift of a class's bound? */
static XFER_INLINE bool within(size_t size, unsigned keys, unsigned shift)
{
	return keys <= KP_XFER_CLASS_KEYS >> shift && (size_t)keys * size <= (KP_XFER_CLASS_BYTES >> shift);
}

/* The class's stack as it must be: i batches of 1 to KP_XFER_KEYS blocks,
 * each one's keys right above the one below's from position 0, the top's
 * end at xkeys, within the class's bounds. O(i): checked in debug builds
 * (KP_DEBUG 2: the fuzz builds) after each change. Class lock held. */
static bool stack_is_valid(kp_pool *pool, unsigned cls, unsigned i)
{
	if (i > KP_XFER_SLOTS)
		return false;
	unsigned at = 0;
	for (unsigned k = 0; k < i; k++) {
		const kp__xfer *x = kp__xfer_slot(pool, cls, k);
		if (x->at != at || !x->n || x->n > KP_XFER_KEYS || !x->list)
			return false;
		at += x->n;
	}
	return at == atomic_load_explicit(&pool->central[cls].xkeys, memory_order_relaxed) &&
	       within(kp__class_size[cls], at, 0);
}

static void stack_check(kp_pool *pool, unsigned cls)
{
	if (KP_DEBUG >= 2 &&
	    !stack_is_valid(pool, cls, atomic_load_explicit(&pool->central[cls].nxfer, memory_order_relaxed)))
		kp__violation(pool, KP_EV_CORRUPTION, KP_ECORRUPT, NULL, 0,
			      "invariant broken: a class's parked batches");
}

/* Is there room for one more batch, the i-th, bringing the class's blocks
 * parked to keys, at the room's level? */
static XFER_INLINE bool room_for(size_t size, unsigned i, unsigned keys, unsigned level)
{
	return i < KP_XFER_SLOTS && within(size, keys, 0) &&
	       (i < KP_XFER_BASE || (level && within(size, keys, KP_XFER_LEVELS - level)));
}

/* Would there be, the room grown (a bin took a batch since it last grew)? */
static XFER_INLINE bool room_if_grown(size_t size, unsigned i, unsigned keys, unsigned level, unsigned taken)
{
	return taken && level < KP_XFER_LEVELS && room_for(size, i, keys, KP_XFER_LEVELS);
}

bool kp__xfer_put(kp_pool *pool, unsigned cls, void *list, const uint64_t *keys, unsigned n, kp__xcount *count)
{
	size_t size = kp__class_size[cls];
	if (!n || n > KP_XFER_KEYS || (size_t)n * size > KP_XFER_BYTES)
		return false;
	kp__central *c = &pool->central[cls];
	/* A peek without the lock, as kp__xfer_take's: no room, and none if
	 * it grew, is how a put fails, and the caller then takes the class
	 * lock to give the batch to its spans (kp__central_give). A whole
	 * flush into full slots took it three times, twice only to find no
	 * room (a put of the whole bin, then of the part the flush cut:
	 * test_xfer_lock_once); now once. Room made after the peek is missed
	 * (the batch goes to its spans); room taken after it is found under
	 * the lock, as before. */
	unsigned i = atomic_load_explicit(&c->nxfer, memory_order_relaxed);
	unsigned at = atomic_load_explicit(&c->xkeys, memory_order_relaxed);
	unsigned level = atomic_load_explicit(&c->xlevel, memory_order_relaxed);
	if (!room_for(size, i, at + n, level) &&
	    !room_if_grown(size, i, at + n, level, atomic_load_explicit(&c->xtaken, memory_order_relaxed))) {
		COUNT(pool, count, full);
		return false;
	}
	kp__class_lock_take(pool, cls);
	i = atomic_load_explicit(&c->nxfer, memory_order_relaxed);
	at = atomic_load_explicit(&c->xkeys, memory_order_relaxed);
	level = atomic_load_explicit(&c->xlevel, memory_order_relaxed);
	bool ok = room_for(size, i, at + n, level);
	if (!ok && room_if_grown(size, i, at + n, level, atomic_load_explicit(&c->xtaken, memory_order_relaxed))) {
		while (!room_for(size, i, at + n, ++level))
			;
		atomic_store_explicit(&c->xlevel, (uint8_t)level, memory_order_relaxed);
		atomic_store_explicit(&c->xtaken, 0, memory_order_relaxed);
		ok = true;
	}
	if (ok) {
		*kp__xfer_slot(pool, cls, i) =
			(kp__xfer){.list = list,
				   .n = (uint16_t)n,
				   .at = (uint16_t)at,
				   .gen = (uint32_t)atomic_load_explicit(&pool->xfer_gen, memory_order_relaxed)};
		keys_in(pool, cls, at, keys, n);
		atomic_store_explicit(&c->xkeys, (uint16_t)(at + n), memory_order_relaxed);
		atomic_store_explicit(&c->nxfer, i + 1, memory_order_relaxed);
		COUNT(pool, count, parked);
	} else {
		COUNT(pool, count, full);
	}
	stack_check(pool, cls);
	pthread_mutex_unlock(kp__class_lock(pool, cls));
	return ok;
}

/* How many blocks at the head of a parked batch still verify: each a free
 * block of class cls under its key, each link plausible before it is
 * followed (alloc.c's next_ok), the last one NULL. *last: the last block
 * that verified. The daemon's, on batches that sat parked a while, and
 * (checks off) the taker's (take_vet). */
static unsigned batch_vet(kp_pool *pool, unsigned cls, const kp__xfer *x, const uint64_t *keys, char **last)
{
	uint64_t want = kp__meta(0, (uint16_t)cls, KP_ST_FREE);
	char *at = x->list;
	unsigned i = 0, n = x->n;
	*last = NULL;
	for (; i < n; i++) {
		uint64_t key = keys[n - 1 - i] ^ kp__kslot(&pool->secret, at);
		if (!at || kp__hdr_meta((kp__hdr *)at) != want || (kp__hdr_tag((kp__hdr *)at) ^ want) != key)
			break;
		char *next = kp__link_get_k(key, at);
		if (i == n - 1 ? next != NULL
			       : !next || !(((((uintptr_t)next ^ (uintptr_t)at) >> KP_SEG_SHIFT) == 0 &&
					     !((uintptr_t)next & (KP_HDR - 1))) ||
					    kp__pagemap_owns(pool->id, next)))
			break;
		*last = at;
		at = next;
	}
	return i;
}

/* With checks off, a bin vets none of the blocks it hands out (alloc.c,
 * small_alloc and alloc_fast): its own, freed into it by its thread and
 * vetted then, are trusted as they are in tcmalloc's thread caches. A
 * parked batch is not its own: a bin parked whole (tcache.c,
 * KP_FLUSH_WHOLE) was never walked, and any batch may be written while
 * parked, so a taker that vets nothing followed a damaged link wherever it
 * led: out of the pool (the block there handed out, test_xfer_attack's
 * forgery), to a live block (handed out twice, and its bytes then followed
 * as a link: SIGSEGV). Every other way blocks leave a thread's bin vets
 * them whatever the checks setting (a flush that cuts its list, the
 * daemon's batch_vet, the spans' own checks when they hand blocks out):
 * so here, the batch walked once as it is taken. The blocks before the
 * bad one are kept, the rest set aside (as the daemon does). The taker
 * reads each block's link next anyway: the walk moves those loads, it
 * adds few misses. Returns the blocks kept (keys[0..kept) theirs). */
static unsigned take_vet(kp_pool *pool, unsigned cls, void **list, uint64_t *keys, unsigned n)
{
	kp__xfer x = {.list = *list, .n = (uint16_t)n};
	char *last;
	unsigned ok = batch_vet(pool, cls, &x, keys, &last);
	if (ok == n)
		return n;
	kp__violation(pool, KP_EV_FREELIST, KP_ECORRUPT, last ? last : *list, n - ok,
		      "damaged link in a parked batch taken: rest of the list quarantined");
	atomic_fetch_add(&pool->quarantined, n - ok);
	if (last)
		kp__link_put_k(keys[n - ok] ^ kp__kslot(&pool->secret, last), last, NULL);
	else
		*list = NULL;
	/* block i of the kept list has its key at ok - 1 - i, as in a bin */
	memmove(keys, keys + (n - ok), (size_t)ok * sizeof *keys);
	return ok;
}

unsigned kp__xfer_take(kp_pool *pool, unsigned cls, void **list, uint64_t *keys, unsigned n, kp__xcount *count)
{
	kp__central *c = &pool->central[cls];
	/* A peek without the lock: a batch parked meanwhile waits for the next
	 * refill, one the peek saw may be gone (checked again below). */
	if (!atomic_load_explicit(&c->nxfer, memory_order_relaxed)) {
		COUNT(pool, count, empty);
		return 0;
	}
	unsigned got = 0;
	kp__class_lock_take(pool, cls);
	unsigned i = atomic_load_explicit(&c->nxfer, memory_order_relaxed), j = i <= KP_XFER_SLOTS ? i : 0;
	/* the newest batch, if it fits the bin (and the class's keys: a record
	 * is trusted no further) */
	if (j > 0 &&
	    (kp__xfer_slot(pool, cls, j - 1)->n > n || kp__xfer_slot(pool, cls, j - 1)->at + n > KP_XFER_CLASS_KEYS))
		j = 0;
	if (j > 0) {
		const kp__xfer *x = kp__xfer_slot(pool, cls, --j);
		got = x->n;
		*list = x->list;
		keys_out(pool, cls, x->at, keys, got);
		slot_remove(pool, cls, j, i);
		atomic_store_explicit(&c->nxfer, i - 1, memory_order_relaxed);
		atomic_store_explicit(&c->xkeys,
				      (uint16_t)(atomic_load_explicit(&c->xkeys, memory_order_relaxed) - got),
				      memory_order_relaxed);
		if (!atomic_load_explicit(&c->xtaken, memory_order_relaxed))
			atomic_store_explicit(&c->xtaken, 1, memory_order_relaxed);
		COUNT(pool, count, taken);
	} else {
		COUNT(pool, count, empty);
	}
	stack_check(pool, cls);
	pthread_mutex_unlock(kp__class_lock(pool, cls));
	if (got && !pool->conf.checks)
		got = take_vet(pool, cls, list, keys, got);
	return got;
}

/* A batch still parked at the daemon's second checkpoint after it was
 * parked sat idle through at least this long, and through one whole pass
 * interval of the daemon: kpbench c's batches are taken within
 * microseconds, and one taken from its spans instead costs what every
 * refill cost before the transfer cache. A parked block keeps its span,
 * and so its segment, from going back: with batches given back only after
 * decay_ms, test_daemon's 256 MiB of 4-64 KiB blocks, all freed, still
 * held 288 of 336 MiB mapped when its wait for the shrink ended (TSan). */
#define KP_XFER_IDLE_NS (10 * 1000000ull)

int kp__xfer_drain(kp_pool *pool, bool all)
{
	uint32_t gen = 0; /* all: every batch is stale */
	if (!all) {
		/* The pool's clock: a stepped pool with step_clock (the fuzz
		 * targets') gives back the same whatever the machine's load. */
		uint64_t now = kp__pool_now(pool);
		if (now < pool->xfer_at_ns)
			return 0;
		pool->xfer_at_ns = now + KP_XFER_IDLE_NS;
		/* Stale: parked before this checkpoint's predecessor. A class's
		 * stack holds them at its bottom (stamps rise towards the top). */
		gen = (uint32_t)atomic_fetch_add_explicit(&pool->xfer_gen, 1, memory_order_relaxed);
	}
	int given = 0;
	for (unsigned cls = 0; cls < KP_NCLASS; cls++) {
		kp__central *c = &pool->central[cls];
		/* One batch at a time, each under the lock taken again: its keys
		 * copied out (KP_XFER_KEYS of them on the stack), then vetted and
		 * given back without the lock. */
		while (atomic_load_explicit(&c->nxfer, memory_order_relaxed)) {
			/* A thread holding the class lock may be waiting for this very
			 * daemon (a refill that grows the pool): the daemon never
			 * blocks on it (a class busy now is visited at the next
			 * checkpoint). */
			if (all)
				pthread_mutex_lock(kp__class_lock(pool, cls));
			else if (pthread_mutex_trylock(kp__class_lock(pool, cls)) != 0)
				break;
			kp__xfer out = {0};
			uint64_t out_keys[KP_XFER_KEYS];
			unsigned i = atomic_load_explicit(&c->nxfer, memory_order_relaxed);
			/* all: the top one, nothing moves; else the bottom one, if stale */
			unsigned j = all ? i - 1 : 0;
			const kp__xfer *x = i && i <= KP_XFER_SLOTS ? kp__xfer_slot(pool, cls, j) : NULL;
			if (x && x->n <= KP_XFER_KEYS && x->at + x->n <= KP_XFER_CLASS_KEYS &&
			    (all || (int32_t)(x->gen - gen) < 0)) {
				out = *kp__xfer_slot(pool, cls, j);
				keys_out(pool, cls, out.at, out_keys, out.n);
				slot_remove(pool, cls, j, i);
				atomic_store_explicit(&c->nxfer, i - 1, memory_order_relaxed);
				atomic_store_explicit(
					&c->xkeys,
					(uint16_t)(atomic_load_explicit(&c->xkeys, memory_order_relaxed) - out.n),
					memory_order_relaxed);
				atomic_fetch_add_explicit(&pool->xfer_count.returned, 1, memory_order_relaxed);
			}
			pthread_mutex_unlock(kp__class_lock(pool, cls));
			if (!out.n)
				break;
			char *last;
			unsigned ok = batch_vet(pool, cls, &out, out_keys, &last);
			if (ok < out.n) {
				/* Written while parked: the blocks before the bad one go
				 * back, the rest is set aside (as a thread cache's flush
				 * does with a damaged bin). */
				kp__violation(pool, KP_EV_FREELIST, KP_ECORRUPT, last ? last : out.list, out.n - ok,
					      "damaged link in a parked batch: rest of the list quarantined");
				atomic_fetch_add(&pool->quarantined, out.n - ok);
				if (last)
					kp__link_put_k(out_keys[out.n - ok] ^ kp__kslot(&pool->secret, last), last,
						       NULL);
			}
			if (ok)
				kp__central_give(pool, cls, out.list, out_keys + (out.n - ok), ok);
			given++;
		}
	}
	return given;
}
