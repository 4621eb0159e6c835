/*
 * pagemap.c - address -> segment, for every pool in the process.
 *
 * Two levels over the 47-bit user address space in 4 MiB chunks: 2^25
 * chunks, a static root of 2^12 leaf pointers and leaves of 2^13 entries
 * (64 KiB each) mapped on first use. A lookup is two dependent loads and
 * never faults, whatever the pointer: that is what lets kp_free reject a
 * pointer the pool never gave out before it reads a single byte near it.
 * Leaves are never unmapped: a stale reader always finds valid memory. An
 * entry carries, beside the segment's address, its pool's tag (internal.h,
 * kp__pagemap_tag), so that whether an address lies in a normal segment of a
 * given pool is known without reading the segment.
 *
 * What an entry points to must stay mapped as long as a thread that read the
 * entry may read it: a grace period (the second half of this file). Before,
 * a release cleared the entry and unmapped at once, and a kp_free of a stale
 * pointer that had found the segment a moment earlier read its header after
 * the unmap (SIGSEGV, issue 12).
 *
 * Beside it, for the fast paths, a flat map of one 32-bit word per chunk
 * (internal.h, kp__pagemap_flat): whether the chunk is a normal segment, and
 * whose, in one load. Written here with the two-level entries, read under
 * the same grace periods.
 */
#include "internal.h"

#define LEAF_BITS KP_LEAF_BITS
#define ROOT_BITS KP_ROOT_BITS
typedef kp__leaf leaf;

/* In .lbss (after .bss), as the grace records below: a program touches the
 * page of its segments' entries, and the small state after it (grow_lock,
 * the pool registry, the once flags) kept a page of its own resident
 * between the two arrays in every program (tests/test_preload.py's bss). */
__attribute__((section(".lbss"))) _Atomic(kp__leaf *) kp__pagemap_root[1u << KP_ROOT_BITS];
#define root kp__pagemap_root
static pthread_mutex_t grow_lock = PTHREAD_MUTEX_INITIALIZER;
static void barrier_init(kp__oscount *c);

/* 2^25 chunks of 4 MiB: the 47-bit user space. */
#define FLAT_CHUNKS ((uintptr_t)1 << (KP_VA_BITS - KP_SEG_SHIFT))
_Atomic uint32_t *_Atomic kp__pagemap_flat;
_Atomic uintptr_t kp__pagemap_flat_n; /* 0 until the flat map is reserved */
static bool flat_tried;		      /* under grow_lock: reserved once, or given up */

/* Once, before the first segment goes into the pagemap, under grow_lock:
 * reserve the flat map (one mmap, counted to the pool that maps first).
 * Refused (an address-space limit, an injected fault): the fast paths ask
 * the two-level map, or take their slow paths, for the life of the process. */
static void flat_init(kp__oscount *c)
{
	if (flat_tried)
		return;
	flat_tried = true;
	_Atomic uint32_t *t = kp__os_map(c, FLAT_CHUNKS * sizeof(uint32_t), KP_PAGE, false);
	if (!t)
		return;
	atomic_store_explicit(&kp__pagemap_flat, t, memory_order_relaxed);
	atomic_store_explicit(&kp__pagemap_flat_n, FLAT_CHUNKS, memory_order_release);
}

int kp__pagemap_set(kp__oscount *c, void *base, size_t size, kp__seg *s)
{
	if (s)
		barrier_init(c);
	/* s's kind and pool are written before it is published (a fresh huge
	 * mapping's kind is still 0: no tag, as for any huge segment). */
	bool normal = s && s->kind == KP_SEG_NORMAL;
	uintptr_t v = !s ? 0 : (uintptr_t)s | (normal ? kp__pagemap_tag(s->pool->id) : 0);
	uint32_t fv = normal ? kp__pagemap_flat_tag(s->pool->id) : 0;
	uintptr_t first = (uintptr_t)base >> KP_SEG_SHIFT;
	uintptr_t last = ((uintptr_t)base + size - 1) >> KP_SEG_SHIFT;
	if (last >> (ROOT_BITS + LEAF_BITS))
		return -1;
	for (uintptr_t ch = first; ch <= last; ch++) {
		leaf *l = atomic_load_explicit(&root[ch >> LEAF_BITS], memory_order_acquire);
		if (!l && !s)
			continue; /* a leaf never mapped has no entry to clear */
		if (!l) {
			pthread_mutex_lock(&grow_lock);
			flat_init(c);
			l = atomic_load_explicit(&root[ch >> LEAF_BITS], memory_order_acquire);
			if (!l) {
				l = kp__os_map(c, sizeof(leaf), KP_PAGE, false);
				if (l)
					atomic_store_explicit(&root[ch >> LEAF_BITS], l, memory_order_release);
			}
			pthread_mutex_unlock(&grow_lock);
			if (!l)
				return -1;
		}
		atomic_store_explicit(&l->e[ch & ((1u << LEAF_BITS) - 1)], v, memory_order_release);
		/* flat_init ran before the first leaf was mapped, so before the
		 * first entry: the flat map has every entry the two-level one has.
		 * A page of it is committed here, on its first write. */
		if (ch < atomic_load_explicit(&kp__pagemap_flat_n, memory_order_acquire))
			atomic_store_explicit(&atomic_load_explicit(&kp__pagemap_flat, memory_order_relaxed)[ch], fv,
					      memory_order_release);
	}
	return 0;
}

static void grace_fork(int phase);

void kp__pagemap_fork(int phase)
{
	/* prepare locks, parent and child unlock (pool.c, fork_prepare) */
	if (phase == 0)
		pthread_mutex_lock(&grow_lock);
	else
		pthread_mutex_unlock(&grow_lock);
	grace_fork(phase);
}

/* ---- grace periods ----------------------------------------------------------
 *
 * Epochs, as in user-space RCU with asymmetric fences (liburcu's "memb"
 * flavour). A reader stores the global epoch in a record of its own when it
 * enters its section and 0 when it leaves (kp__grace_enter/exit, internal.h).
 * A release clears the pagemap entries, then retires the range with the
 * epoch e it advances past (fetch-and-add: readers entering later read e + 1
 * or more, and their lookups, ordered after that read, find the entry
 * cleared). A reclaim issues membarrier(2), so that every reader's record
 * store is visible and every lookup after it sees the cleared entries, then
 * unmaps each range whose e is below every epoch still held: the readers
 * holding e or less may have found it; none other can have.
 *
 * Records: a static table (no system call to get one), claimed on a
 * thread's first section and given back by a thread-exit destructor. A
 * thread that finds none free, or calls in after its destructor ran, counts
 * itself in the shared counter instead (an atomic add, which is a full
 * barrier): while it is non-zero, nothing is reclaimed. */

/* 1024 threads inside libkpool at once before the shared counter is used;
 * 64 KiB of .bss. */
#define GRACE_RECS 1024
__attribute__((section(".lbss"))) static kp__grace_rec recs[GRACE_RECS];
static _Atomic unsigned recs_used; /* high-water mark: a reclaim scans this many */
static _Atomic uint64_t shared_readers;
static pthread_mutex_t recs_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_key_t recs_key;
static pthread_once_t recs_once = PTHREAD_ONCE_INIT;
static _Atomic int barrier_ready; /* membarrier registered (or given up: KP_GRACE_FENCE stays) */

/* kp__grace_self is a part of kp__tls_state (tcache.c): internal.h. */
/* Epoch 1, and readers fence until membarrier is known to work. */
_Atomic uint64_t kp__grace_epoch = 1 * KP_GRACE_STEP | KP_GRACE_FENCE;

static void rec_release(void *arg)
{
	kp__grace_rec *r = arg;
	atomic_store_explicit(&r->epoch, 0, memory_order_release);
	atomic_store_explicit(&r->owned, 0, memory_order_release);
	kp__grace_self.rec = NULL;
	kp__grace_self.fast = NULL;
	kp__grace_self.exited = true;
}

static void recs_key_init(void)
{
	pthread_key_create(&recs_key, rec_release);
}

void kp__pagemap_keys_init(void)
{
	pthread_once(&recs_once, recs_key_init);
}

unsigned kp__grace_enter_slow(void)
{
	kp__grace_rec *r = NULL;
	if (!kp__grace_self.exited) {
		pthread_once(&recs_once, recs_key_init);
		pthread_mutex_lock(&recs_lock);
		for (unsigned i = 0; i < GRACE_RECS && !r; i++)
			if (!atomic_load_explicit(&recs[i].owned, memory_order_relaxed)) {
				r = &recs[i];
				atomic_store(&r->owned, 1);
				if (i >= atomic_load(&recs_used))
					atomic_store(&recs_used, i + 1);
			}
		pthread_mutex_unlock(&recs_lock);
		if (r && pthread_setspecific(recs_key, r) != 0) {
			atomic_store(&r->owned, 0);
			r = NULL;
		}
	}
	if (r) {
		kp__grace_self.rec = r;
		kp__grace_note_fast();
		return kp__grace_enter();
	}
	atomic_fetch_add(&shared_readers, 1); /* seq_cst: a full barrier */
	return KP_GRACE_SHARED;
}

void kp__grace_exit_slow(unsigned token)
{
	if (token == KP_GRACE_SHARED) {
		atomic_fetch_sub(&shared_readers, 1);
	} else {
		atomic_signal_fence(memory_order_seq_cst);
		atomic_store_explicit(&kp__grace_self.rec->epoch, 0, memory_order_release);
	}
	kp_pool *pool = kp__grace_self.pending;
	if (pool) {
		kp__grace_self.pending = NULL;
		kp__grace_reclaim(pool);
	}
}

/* Once, before the first entry goes into the pagemap (no reader can have
 * found anything before): membarrier if the kernel has it, else readers
 * fence. */
static void barrier_init(kp__oscount *c)
{
	if (atomic_load_explicit(&barrier_ready, memory_order_acquire))
		return;
	pthread_mutex_lock(&grow_lock);
	if (!atomic_load(&barrier_ready)) {
		if (kp__os_membarrier_register(c) == 0)
			atomic_fetch_and(&kp__grace_epoch, ~KP_GRACE_FENCE);
		atomic_store(&barrier_ready, 1);
	}
	pthread_mutex_unlock(&grow_lock);
}

/* Make every reader's entry visible and every later lookup see the cleared
 * entries. false: no barrier could be had (then nothing is reclaimed). */
static bool barrier(kp__oscount *c)
{
	if (atomic_load(&kp__grace_epoch) & KP_GRACE_FENCE) {
		atomic_fetch_add(&kp__grace_epoch, 0); /* a full barrier; readers make one too */
		return true;
	}
	return kp__os_membarrier(c) == 0;
}

/* The lowest epoch a reader holds (UINT64_MAX: none); 0 while a shared
 * reader is inside. */
static uint64_t oldest_reader(void)
{
	if (atomic_load(&shared_readers))
		return 0;
	uint64_t min = UINT64_MAX;
	unsigned n = atomic_load(&recs_used);
	for (unsigned i = 0; i < n; i++) {
		uint64_t e = atomic_load_explicit(&recs[i].epoch, memory_order_acquire);
		if (e && e / KP_GRACE_STEP < min)
			min = e / KP_GRACE_STEP;
	}
	return min;
}

void kp__grace_retire(kp_pool *pool, kp__seg *s, size_t size)
{
	s->retired = size;
	/* seq_cst, after the pagemap stores; the epoch, not the word */
	s->empty_since_ns = atomic_fetch_add(&kp__grace_epoch, KP_GRACE_STEP) / KP_GRACE_STEP;
	kp__pool_lock(pool);
	s->next = atomic_load_explicit(&pool->limbo, memory_order_relaxed);
	atomic_store_explicit(&pool->limbo, s, memory_order_release);
	pthread_mutex_unlock(&pool->lock);
}

/* Unmap one retired range; a free segment the OS keeps goes back in the pool. */
static int grace_unmap(kp_pool *pool, kp__seg *s)
{
	size_t size = s->retired;
	bool normal = s->kind == KP_SEG_NORMAL && size == KP_SEG_MAP;
	if (kp__os_unmap(&pool->os, s, size) == 0)
		return 1;
	if (!normal)
		return 0; /* a huge block's header pages: left mapped, as before */
	kp__event(pool, KP_EV_OS_FAIL, KP_POOL_PRIMARY, s, KP_SEG_SIZE,
		  "munmap of a free segment refused: kept in the pool");
	kp__primary_relink(pool, s);
	return 0;
}

int kp__grace_reclaim(kp_pool *pool)
{
	if (!atomic_load_explicit(&pool->limbo, memory_order_acquire))
		return 0;
	kp__grace_rec *self = kp__grace_self.rec;
	if (self && atomic_load_explicit(&self->epoch, memory_order_relaxed)) {
		kp__grace_self.pending = pool; /* inside a section: when it ends */
		return 0;
	}
	/* The list taken is in hand until each is unmapped or back on it: no
	 * fork meanwhile (release_mu). Another thread reclaiming (or a fork)
	 * has it: that one unmaps what has waited out its grace period. */
	if (pthread_mutex_trylock(&pool->release_mu) != 0)
		return 0;
	kp__pool_lock(pool);
	kp__seg *list = atomic_exchange(&pool->limbo, NULL);
	pthread_mutex_unlock(&pool->lock);
	uint64_t oldest = barrier(&pool->os) ? oldest_reader() : 0;
	kp__seg *keep = NULL;
	int n = 0;
	for (kp__seg *s = list, *next; s; s = next) {
		next = s->next;
		if (s->empty_since_ns < oldest) {
			n += grace_unmap(pool, s);
		} else {
			s->next = keep;
			keep = s;
		}
	}
	if (keep) {
		kp__pool_lock(pool);
		kp__seg *tail = keep;
		while (tail->next)
			tail = tail->next;
		tail->next = atomic_load_explicit(&pool->limbo, memory_order_relaxed);
		atomic_store_explicit(&pool->limbo, keep, memory_order_release);
		pthread_mutex_unlock(&pool->lock);
	}
	pthread_mutex_unlock(&pool->release_mu);
	return n;
}

void kp__grace_drain(kp_pool *pool)
{
	while (atomic_load(&pool->limbo)) {
		kp__grace_reclaim(pool);
		if (atomic_load(&pool->limbo))
			kp__os_yield(&pool->os); /* a reader is inside: sections are short */
	}
}

static void grace_fork(int phase)
{
	if (phase == 0) {
		pthread_mutex_lock(&recs_lock);
		return;
	}
	pthread_mutex_unlock(&recs_lock);
	if (phase == 1)
		return;
	/* The child has one thread: the others' records (and any section they
	 * were in) are gone. */
	atomic_store(&shared_readers, 0);
	unsigned n = atomic_load(&recs_used);
	for (unsigned i = 0; i < n; i++)
		if (&recs[i] != kp__grace_self.rec) {
			atomic_store(&recs[i].epoch, 0);
			atomic_store(&recs[i].owned, 0);
		}
}
