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
 * are bounded (KP_XFER_BYTES, KP_XFER_SLOTS), the daemon gives back what
 * stayed parked through one of its checkpoints (KP_XFER_IDLE_NS), and
 * kp_thread_flush all of it (kp__xfer_drain).
 */
#include "internal.h"

#include <stddef.h>

/* Slot i of class cls's keys, in from keys[0..n) and out to keys[0..n): the
 * first KP_XFER_HEAD in xfer_head, the rest in xfer_tail (kp__xfer). Class
 * lock held. */
static void keys_in(kp_pool *pool, unsigned cls, unsigned i, const uint64_t *keys, unsigned n)
{
	unsigned h = n < KP_XFER_HEAD ? n : KP_XFER_HEAD;
	memcpy(pool->xfer_head[cls][i], keys, (size_t)h * sizeof *keys);
	if (n > h)
		memcpy(pool->xfer_tail[cls][i], keys + h, (size_t)(n - h) * sizeof *keys);
}

static void keys_out(const kp_pool *pool, unsigned cls, unsigned i, uint64_t *keys, unsigned n)
{
	unsigned h = n < KP_XFER_HEAD ? n : KP_XFER_HEAD;
	memcpy(keys, pool->xfer_head[cls][i], (size_t)h * sizeof *keys);
	if (n > h)
		memcpy(keys + h, pool->xfer_tail[cls][i], (size_t)(n - h) * sizeof *keys);
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

/* A counter of kp__xcount written under the class lock: a load and a
 * store, no atomic add (a peek without the lock adds atomically). */
static inline void count_one(_Atomic uint64_t *n)
{
	atomic_store_explicit(n, atomic_load_explicit(n, memory_order_relaxed) + 1, memory_order_relaxed);
}

bool kp__xfer_put(kp_pool *pool, unsigned cls, void *list, const uint64_t *keys, unsigned n)
{
	if (!n || n > KP_XFER_KEYS || (size_t)n * kp__class_size[cls] > KP_XFER_BYTES)
		return false;
	kp__central *c = &pool->central[cls];
	/* A peek without the lock, as kp__xfer_take's: slots all taken is how
	 * a put fails, and the caller then takes the class lock to give the
	 * batch to its spans (kp__central_give). A whole flush into full slots
	 * took it three times, twice only to find no room (a put of the whole
	 * bin, then of the part the flush cut: test_xfer_lock_once); now once.
	 * A slot emptied after the peek is missed (the batch goes to its
	 * spans); one taken after it is found under the lock, as before. */
	kp__xcount *count = &pool->xfer_count[cls];
	if (atomic_load_explicit(&c->nxfer, memory_order_relaxed) >= KP_XFER_SLOTS) {
		atomic_fetch_add_explicit(&count->full, 1, memory_order_relaxed);
		return false;
	}
	kp__class_lock_take(pool, cls);
	unsigned i = atomic_load_explicit(&c->nxfer, memory_order_relaxed);
	bool ok = i < KP_XFER_SLOTS;
	if (ok) {
		kp__xfer *x = &pool->xfer[cls][i];
		x->list = list;
		x->n = n;
		x->gen = atomic_load_explicit(&pool->xfer_gen, memory_order_relaxed);
		keys_in(pool, cls, i, keys, n);
		atomic_store_explicit(&c->nxfer, i + 1, memory_order_relaxed);
		count_one(&count->parked);
	} else {
		count_one(&count->full);
	}
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
	unsigned i = 0;
	*last = NULL;
	for (; i < x->n; i++) {
		uint64_t key = keys[x->n - 1 - i] ^ kp__kslot(&pool->secret, at);
		if (!at || kp__hdr_meta((kp__hdr *)at) != want || (kp__hdr_tag((kp__hdr *)at) ^ want) != key)
			break;
		char *next = kp__link_get_k(key, at);
		if (i == x->n - 1 ? next != NULL
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
	kp__xfer x = {.list = *list, .n = n};
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

unsigned kp__xfer_take(kp_pool *pool, unsigned cls, void **list, uint64_t *keys, unsigned n)
{
	kp__central *c = &pool->central[cls];
	/* A peek without the lock: a batch parked meanwhile waits for the next
	 * refill, one the peek saw may be gone (checked again below). */
	kp__xcount *count = &pool->xfer_count[cls];
	if (!atomic_load_explicit(&c->nxfer, memory_order_relaxed)) {
		atomic_fetch_add_explicit(&count->empty, 1, memory_order_relaxed);
		return 0;
	}
	unsigned got = 0;
	kp__class_lock_take(pool, cls);
	unsigned i = atomic_load_explicit(&c->nxfer, memory_order_relaxed);
	if (i && i <= KP_XFER_SLOTS && pool->xfer[cls][i - 1].n <= n) {
		kp__xfer *x = &pool->xfer[cls][i - 1];
		got = x->n;
		*list = x->list;
		keys_out(pool, cls, i - 1, keys, got);
		x->list = NULL;
		x->n = 0;
		atomic_store_explicit(&c->nxfer, i - 1, memory_order_relaxed);
		count_one(&count->taken);
	} else {
		count_one(&count->empty);
	}
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
	uint64_t gen = UINT64_MAX; /* all: every batch is stale */
	if (!all) {
		/* The pool's clock: a stepped pool with step_clock (the fuzz
		 * targets') gives back the same whatever the machine's load. */
		uint64_t now = kp__pool_now(pool);
		if (now < pool->xfer_at_ns)
			return 0;
		pool->xfer_at_ns = now + KP_XFER_IDLE_NS;
		/* Stale: parked before this checkpoint's predecessor. A class's
		 * slots hold them at their bottom (stamps rise towards the top). */
		gen = atomic_fetch_add_explicit(&pool->xfer_gen, 1, memory_order_relaxed);
	}
	int given = 0;
	for (unsigned cls = 0; cls < KP_NCLASS; cls++) {
		kp__central *c = &pool->central[cls];
		if (!atomic_load_explicit(&c->nxfer, memory_order_relaxed))
			continue;
		/* A thread holding the class lock may be waiting for this very
		 * daemon (a refill that grows the pool): the daemon never blocks
		 * on it. */
		if (all)
			pthread_mutex_lock(kp__class_lock(pool, cls));
		else if (pthread_mutex_trylock(kp__class_lock(pool, cls)) != 0)
			continue;
		kp__xfer out[KP_XFER_SLOTS], *x = pool->xfer[cls];
		uint64_t out_keys[KP_XFER_SLOTS][KP_XFER_KEYS], moved[KP_XFER_KEYS];
		unsigned n = atomic_load_explicit(&c->nxfer, memory_order_relaxed), k = 0;
		while (k < n && k < KP_XFER_SLOTS && x[k].gen < gen)
			k++;
		for (unsigned i = 0; i < k; i++) {
			out[i] = x[i];
			keys_out(pool, cls, i, out_keys[i], x[i].n);
		}
		for (unsigned i = k; i < n && i < KP_XFER_SLOTS; i++) {
			x[i - k] = x[i];
			keys_out(pool, cls, i, moved, x[i].n);
			keys_in(pool, cls, i - k, moved, x[i].n);
		}
		if (k) {
			atomic_store_explicit(&c->nxfer, n - k, memory_order_relaxed);
			atomic_store_explicit(&pool->xfer_count[cls].returned,
					      atomic_load_explicit(&pool->xfer_count[cls].returned, memory_order_relaxed) + k,
					      memory_order_relaxed);
		}
		pthread_mutex_unlock(kp__class_lock(pool, cls));
		for (unsigned i = 0; i < k; i++) {
			char *last;
			unsigned ok = batch_vet(pool, cls, &out[i], out_keys[i], &last);
			if (ok < out[i].n) {
				/* Written while parked: the blocks before the bad one go
				 * back, the rest is set aside (as a thread cache's flush
				 * does with a damaged bin). */
				kp__violation(pool, KP_EV_FREELIST, KP_ECORRUPT, last ? last : out[i].list, out[i].n - ok,
					      "damaged link in a parked batch: rest of the list quarantined");
				atomic_fetch_add(&pool->quarantined, out[i].n - ok);
				if (last)
					kp__link_put_k(out_keys[i][out[i].n - ok] ^ kp__kslot(&pool->secret, last), last,
						       NULL);
			}
			if (ok)
				kp__central_give(pool, cls, out[i].list, out_keys[i] + (out[i].n - ok), ok);
			given++;
		}
	}
	return given;
}
