/*
 * internal.h - the map of libkpool. Prototypes are grouped under the file
 * that defines them. Names: kp_ public, kp__ internal-but-shared, static
 * file-local.
 *
 * Memory layout of the primary pool
 * ---------------------------------
 * The primary pool is a list of *segments*: 4 MiB regions aligned to 4 MiB,
 * so that any address maps to its segment through the global pagemap
 * (pagemap.c). A segment is 64 *units* of 64 KiB. Unit 0 holds the segment
 * header (this struct and the 64 span descriptors); units 1..63 are carved
 * into *spans*: a run of units holding blocks of one size class, or one large
 * block. Requests too big for a span get a *huge* segment of their own.
 *
 * Every block starts with a 16-byte header (kp__hdr) whose tag is keyed by a
 * per-pool secret; the payload follows it, 16-aligned.
 *
 *   invariant (segment): popcount(free_mask) == nfree_units, bit 0 clear;
 *   invariant (span):    nused + nfree + (nblocks - bump) == nblocks, nfree the
 *                        length of its free list.
 */
#ifndef KP_INTERNAL_H
#define KP_INTERNAL_H

#include "kpool.h"

#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

/* Every kpool lock is taken through kp__mutex_lock (pool.c): when the lock
 * is held, a look at whether this very thread holds it, which only a call
 * into the pool nested inside the pool can do (a signal handler that
 * allocates, its signal taken in a slow path); that aborts with one line
 * instead of waiting for itself forever (test_reenter_attack19). Any other
 * holder is waited for as before. A test that counts pthread_mutex_lock
 * calls defines it after #undef pthread_mutex_lock. */
int kp__mutex_lock(pthread_mutex_t *m);
/* Does the calling thread hold m (kp__mutex_lock's own test)? For a path
 * that must take no lock ordered before m while its thread holds m. */
bool kp__mutex_mine(pthread_mutex_t *m);
/* From now on (c not NULL: the pool's counts of its yields) until it is
 * called again with what it returned, this thread's kp__mutex_lock tries
 * and never waits: for a call nested inside one that holds a lock ordered
 * after those it takes (pool.c, lock_bounded). */
struct kp__oscount;
struct kp__oscount *kp__mutex_nowait(struct kp__oscount *c);
#define pthread_mutex_lock(m) kp__mutex_lock(m)
/* Every unlock through kp__mutex_unlock, which marks the thread as inside
 * the unlock of m: glibc clears a mutex's holder before it frees the lock
 * word, and a signal taken between the two saw no holder and waited for
 * the lock its own thread was releasing (a hang, 1 run in 300 of
 * test_preload_attack19's signal-malloc). */
int kp__mutex_unlock(pthread_mutex_t *m);
#define pthread_mutex_unlock(m) kp__mutex_unlock(m)
/* And every trylock: inside glibc's trylock the lock word is taken before
 * the holder is written (the same hang, the signal taken in a class lock's
 * trylock). */
int kp__mutex_trylock(pthread_mutex_t *m);
#define pthread_mutex_trylock(m) kp__mutex_trylock(m)

/* ASan sees nothing inside a custom pool unless the pool says what is
 * poisoned: free payloads, headers, canaries, never-used memory. Our own
 * accesses to those go through the KP_NOASAN accessors below. */
#if defined(__SANITIZE_ADDRESS__)
#define KP_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define KP_ASAN 1
#endif
#endif
#ifdef KP_ASAN
#include <sanitizer/asan_interface.h>
#define KP_POISON(p, n) ASAN_POISON_MEMORY_REGION((p), (n))
#define KP_UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION((p), (n))
#define KP_NOASAN __attribute__((no_sanitize("address")))
#else
#define KP_POISON(p, n) ((void)(p), (void)(n))
#define KP_UNPOISON(p, n) ((void)(p), (void)(n))
#define KP_NOASAN
#endif

/* Everything declared below is libkpool's own: hidden, so that the library
 * (built -fPIC) reaches its globals (the pagemap root, the grace epoch, the
 * class tables) PC-relative, not through the GOT: one load less for each on
 * the fast paths. The exports (kpool.h) and the sanitizer's interface are
 * declared above. */
#pragma GCC visibility push(hidden)

/* KP_PLANT=N plants bug N for the fuzzers' quality tests (make PLANT=N);
 * each planted line is marked "planted N". 0: none. */
#ifndef KP_PLANT
#define KP_PLANT 0
#endif

#define KP_LIKELY(x) __builtin_expect(!!(x), 1)
#define KP_UNLIKELY(x) __builtin_expect(!!(x), 0)
#define KP_EXPORT __attribute__((visibility("default")))

/* 4 MiB segments: large enough that a segment header's cost (one 64 KiB unit)
 * is 1.6%, small enough that a mostly-empty pool can give memory back. */
#define KP_SEG_SHIFT 22
#define KP_SEG_SIZE ((size_t)1 << KP_SEG_SHIFT)
/* 64 KiB units: 64 of them fit one uint64_t free mask per segment. */
#define KP_UNIT_SHIFT 16
#define KP_UNIT_SIZE ((size_t)1 << KP_UNIT_SHIFT)
#define KP_UNITS 64
/* A normal segment is mapped with a guard past its chunk: KP_SEG_MAP bytes,
 * the 64 KiB after the 4 MiB chunk read-only (kp__os_guard; primary.c, where
 * a segment is mapped), so that no segment header, nor anything else, is
 * the next bytes after its last block. Segments are aligned chunks, each
 * one's header in its first unit: without the guard, an overflow past the
 * last block of one segment rewrote the next one's span slots, unit_meta and
 * unit_span, which the magic and seal do not cover, and freed a live
 * neighbour's units or let a header forged inside a live block pass kp_free
 * (sess16-hA4's attacks, test_seg_guard). The guard sits in the next chunk,
 * so no segment starts there (segments are 8 MiB apart in address space;
 * the rest of that chunk is free for other mappings). A guard unit inside
 * the chunk instead (63 -> 62 usable units) raised the paced run's faults
 * on the allocating thread from 300-430 to 455-765 (cause not found).
 * Cost: address space, no resident page, one mprotect per segment, two
 * kernel mappings each (vm.max_map_count, 65,530 by default, then caps
 * normal segments near 120 GiB). KP_SEG_GUARD: the guard's unit index. */
#define KP_SEG_MAP (KP_SEG_SIZE + KP_UNIT_SIZE)
#define KP_SEG_GUARD KP_UNITS
#define KP_SEG_END KP_UNITS
#define KP_SEG_UNITS (KP_UNITS - 1)
#define KP_SEG_FREE_ALL (~1ull)
#define KP_PAGE 4096
#define KP_HDR 16
#define KP_ALIGN_MAX 4096
/* Size classes cover blocks (header included) up to 128 KiB; beyond that a
 * block gets a page run of its own. */
#define KP_NCLASS 76
/* One class off the grid of 8 per doubling (primary.c, kp__class_size): a
 * page plus a caller's header of up to 280 bytes (sqlite3's page cache,
 * 4096 + 272), at KP_CLASS_PAGE_IDX between 4096 and 4608. */
#define KP_CLASS_PAGE_PLUS 4400u
#define KP_CLASS_PAGE_IDX 35u
#define KP_SMALL_MAX ((size_t)131072)
/* A large run may use every unit but the header and guard units. */
#define KP_LARGE_MAX ((size_t)KP_SEG_UNITS * KP_UNIT_SIZE)
/* No request above 2^46 (64 TiB) can be served on x86-64 (47-bit user space);
 * refusing it up front keeps every size computation far from wrap-around. */
#define KP_REQ_MAX ((size_t)1 << 46)

/* ---- alloc.c ----------------------------------------------------------- */
/* kp_free, with errno left as it was (free(): the preload library, which
 * saved and restored it around every call). The preload declares it too. */
int kp__free_quiet(kp_pool *pool, void *p);
/* The preload's free(), which makes no call of its own on the common path:
 * kp__free_try frees p on kp_free's fast path (errno untouched) and hands
 * anything else to kp__free_miss by a tail call, telling whether the fast
 * path was tried; kp__free_rest_quiet(pool, p, tried) then gives
 * kp__free_quiet's result without trying it twice. kp__free_miss is weak in
 * alloc.c (that default); the preload library defines its own, which first
 * sorts out the pointers that are no block of the pool (NULL, its bootstrap
 * buffer, its big alignments). */
int kp__free_try(void *p, uint64_t tag); /* p first: where free()'s caller put it */
/* The preload's malloc(): kp_alloc(pool, size, 0), the size first (where
 * malloc's caller put it). Both take the pool by its tag, kp__pool_tag(pool)
 * (outline.h, kp__ol_slot_id: 1 for NULL), which the preload keeps. */
void *kp__malloc(size_t size, uint64_t tag);
uint64_t kp__pool_tag(const kp_pool *pool);
int kp__free_rest_quiet(kp_pool *pool, void *p, bool tried);
int kp__free_miss(kp_pool *pool, void *p, bool tried);

/* alloc.c's own path, for outline.c to hand what it does not serve to:
 * kp_alloc's slow path (larger blocks, critical requests, the allocation
 * policy), kp_free's (a pointer outline.c's slice map does not know: huge,
 * large, backup, or no block), kp_usable_size's and kp_realloc's. */
void *kp__alloc_classic(kp_pool *pool, size_t size, unsigned flags);
/* kp_alloc's slow path whole: the pool checked, then either layout. */
void *kp__alloc_slow(kp_pool *pool, size_t size, unsigned flags);
int kp__free_classic(kp_pool *pool, void *p);
/* 0 when p is a live block of pool's that a call nested inside its
 * thread's may set aside, linked through its first 8 bytes; else kp_free's
 * refusal of it, reported, nothing written (alloc.c). */
int kp__classic_defer_vet(kp_pool *pool, void *p);
/* A deferred block taken off its list, before its free: the canary its
 * link covered written again (alloc.c). */
void kp__classic_defer_undo(kp_pool *pool, void *q);
size_t kp__usable_classic(kp_pool *pool, const void *p);
void *kp__realloc_classic(kp_pool *pool, void *p, size_t size, unsigned flags);
void *kp__realloc_move(kp_pool *pool, void *p, size_t size, size_t old, unsigned flags);

/* ---- outline.c: the out-of-line small path (layout:outline) ------------- */
typedef struct kp__ol kp__ol;
/* kp_create of a layout:outline pool: its slice map and lock. 0, or -1 when
 * the OS refused. kp__ol_destroy: every mapping of the path (kp_destroy). */
/* The slice map's address space (outline.h: OL_MAP_N entries of 8 bytes,
 * checked there), mapped MAP_NORESERVE and touched only where used. */
#define KP_OL_MAP_BYTES ((size_t)16 << 30)
int kp__ol_create(kp_pool *pool);
void kp__ol_destroy(kp_pool *pool);
/* pool.c's fork handlers: phase 0 before fork (the lock taken), 1 after it
 * in the parent or the child (released), 2 in the child before 1 (the
 * foreign caches of the threads gone made whole). */
void kp__ol_fork(kp_pool *pool, int phase);
/* kp_alloc, kp_free, kp_usable_size and kp_realloc of a layout:outline
 * pool (alloc.c dispatches, pool is a live pool with pool->ol set). Any
 * thread; no lock and no system call on the common path; kp__ol_free
 * reports a violation as kp_free does (kp__violation) and leaks the block. */
void *kp__ol_alloc(kp_pool *pool, size_t size, unsigned flags);
int kp__ol_free(kp_pool *pool, void *p);
/* Does the pool's slice map know p (a block of this path, or inside one)? */
bool kp__ol_knows(kp_pool *pool, const void *p);
size_t kp__ol_usable(kp_pool *pool, const void *p);
void *kp__ol_realloc(kp_pool *pool, void *p, size_t size, unsigned flags);
/* The daemon's pass (daemon.c): keep spare segments mapped and pre-faulted
 * ahead of the heaps as the measured demand asks for, so that a heap's next
 * segment makes no system call and its pages no fault on the allocation
 * path; give back the spares past the demand and the pages of spans wholly
 * free, after decay_ms. */
void kp__ol_daemon_pass(kp_pool *pool);
/* Whether an outline pool has work for a lazily started daemon (the
 * preload: kp__daemon_wanted): 1 MiB of blocks in use (the inline pool's
 * rule). Any thread; never blocks (the outline lock by trylock). */
bool kp__ol_wanted(kp_pool *pool);
/* kp_stats' bytes in use of the outline blocks (stats.c); 0 for an inline
 * pool. Takes the outline lock. */
uint64_t kp__ol_in_use(kp_pool *pool);
/* Adds layout:outline's allocations and frees to *allocs and *frees (stats.c). */
void kp__ol_counts(kp_pool *pool, uint64_t *allocs, uint64_t *frees);
/* kp_stats' space of layout:outline: its data segments (bytes and count)
 * and the bytes of their slices given to spans (committed). Adds to *. */
void kp__ol_space(kp_pool *pool, size_t *capacity, size_t *segments, size_t *committed);
/* Tests: the guarded metadata mapping of p's data segment, or NULL. */
void *kp__ol_meta_of(kp_pool *pool, const void *p);
/* Segments the heaps of a layout:outline pool took (a count that only
 * rises: the pool's growth in small blocks, as pool->grows is the inline
 * primary's); 0 for an inline pool. Any thread, no lock. */
uint64_t kp__ol_grows(kp_pool *pool);

/* ---- conf.c ------------------------------------------------------------ */
#define KP_FAULT_SPEC_MAX 256
/* high_wm:auto (conf.c): the daemon's floor follows the bytes in use
 * (kp__daemon_floor). Above any size an option takes. */
#define KP_WM_AUTO UINT64_MAX
/* backup:auto (conf.c, backup.c): a reserve that grows with the pool. */
#define KP_BK_AUTO KP_WM_AUTO
typedef struct kp__conf {
	size_t primary_initial, primary_max, backup;
	size_t low_wm, high_wm, tcache_bytes; /* high_wm: KP_WM_AUTO or a size */
	unsigned critical_wm, recover_wm, prefault_touch;
	bool daemon;
	unsigned daemon_interval_ms, decay_ms;
	uint64_t seed;
	bool checks, poison, abort_on_corruption, prefault, thp;
	unsigned wait_ms, log_fd, log_rate, grow_wait_us;
	char faults[KP_FAULT_SPEC_MAX];
	bool step_clock; /* daemon:off only: the pool's clock is what kp_daemon_step advanced */
	bool lend;	 /* layout:outline's young classes pop a coarser class's span (outline.c, LEND) */
	char layout[8];	 /* "inline" or "outline" (conf.c) */
	bool outline;	 /* layout:outline: blocks up to 64 KiB on outline.c's path */
} kp__conf;

/* Fill *c from defaults, KPOOL_CONF, then s. 0, or -1 with kp_last_error set. */
int kp__conf_load(kp__conf *c, const char *s);
/* Does KPOOL_CONF or s name option `name` (not left to its default)? */
bool kp__conf_given(const char *s, const char *name);
void kp__set_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* The same through kp__fmt (no stdio, nothing allocated, async-signal-safe;
 * it also skips the sanitizers' printf interceptors, which the fuzzers pay
 * for on every refused size), for the errors of the allocation path:
 * %s %p %c %d %u %zu %llu %x only. */
void kp__set_error_path(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* ---- os.c: the only file that makes system calls ------------------------ */
/* The calling thread's kernel id (gettid): uncounted, as it takes no memory
 * and is made once per thread (kp__mutex_lock, when a lock is busy). */
int kp__os_tid(void);
/* One line to stderr and abort(): for what no pool can contain. Every
 * signal is held off first, so that no handler runs between the decision
 * and the abort (one line, then SIGABRT is what a parent sees). */
__attribute__((noreturn)) void kp__os_die(const char *line);
/* Every signal held off from this thread (*old: its mask before), then the
 * mask back: around the thread exit hooks' teardown of its caches and
 * heaps (tcache.c, outline.c), which no handler's call may interleave
 * with. Uncounted: once per thread's end, on no allocation path. */
void kp__os_signals_off(sigset_t *old);
void kp__os_signals_back(const sigset_t *old);
enum kp__os_kind { KP_OS_MMAP, KP_OS_MUNMAP, KP_OS_MADVISE, KP_OS_MPROTECT, KP_OS_OTHER, KP_OS__N };
/* setup: kp_create and kp_destroy, neither on the allocation path. */
enum kp__caller { KP_CALLER_ALLOC, KP_CALLER_DAEMON, KP_CALLER_SETUP, KP_CALLER__N };
enum kp__fault_mode { KP_FAULT_OFF, KP_FAULT_NTH, KP_FAULT_EVERY, KP_FAULT_PROB };
typedef struct kp__fault {
	_Atomic int mode;
	_Atomic uint64_t n;	/* nth / every */
	_Atomic uint64_t p32;	/* probability * 2^32 */
	_Atomic uint64_t calls; /* calls of this kind since armed */
	_Atomic uint64_t rng;	/* splitmix64 state */
	_Atomic uint64_t injected;
} kp__fault;
typedef struct kp__oscount {
	_Atomic uint64_t n[KP_CALLER__N][KP_OS__N];
	kp__fault fault[KP_OS__N];
	kp_pool *pool; /* for fault events; NULL while the pool is being made */
} kp__oscount;
/* Arm one kind. Returns 0 or -1. */
int kp__os_fault_arm(kp__oscount *c, int kind, int mode, uint64_t n, double p, uint64_t seed);
int kp__os_kind(const char *name, size_t len); /* -1 if unknown */

/* Which caller the current thread counts as (the daemon sets it). */
extern __thread int kp__os_caller;
/* Map size bytes aligned to align (a power of two >= page), read-write.
 * populate: pre-fault every page. NULL on failure. */
void *kp__os_map(kp__oscount *c, size_t size, size_t align, bool populate);
int kp__os_unmap(kp__oscount *c, void *p, size_t size);
/* The same, for a caller that has unpoisoned what it poisoned in the range
 * (ASan builds: unpoisoning all of a huge block writes size/8 bytes of
 * shadow). */
int kp__os_unmap_clean(kp__oscount *c, void *p, size_t size);
/* Map size bytes with no access (a reservation, a guard). */
/* Resize the mapping [p, p + old) to size without copying a byte (mremap,
 * counted as "other"): to a window `to` already mapped (kp__os_map), which
 * it replaces, or in place when to is NULL (shrinking only). 0 or -errno. */
int kp__os_remap(kp__oscount *c, void *p, size_t old, size_t size, void *to);
void *kp__os_reserve(kp__oscount *c, size_t size);
int kp__os_protect(kp__oscount *c, void *p, size_t size, bool rw);
/* A guard after user blocks: read-only, so an overflow faults at its first
 * byte while a read (a lookup of a stale or forged address, a canary read
 * of 8 bytes past a block's end) finds zeros and never crashes the
 * allocator; resident pages never (a read maps the shared zero page). */
int kp__os_guard(kp__oscount *c, void *p, size_t size);
int kp__os_populate(kp__oscount *c, void *p, size_t size);
/* Is every page of [p, p + size) resident (mincore)? false on failure. */
bool kp__os_resident(kp__oscount *c, void *p, size_t size);
/* Pre-fault only the pages not yet resident (mincore); bytes faulted in. */
size_t kp__os_populate_missing(kp__oscount *c, void *p, size_t size);
bool kp__os_page_resident(kp__oscount *c, void *p);
/* Give back the resident pages of [p, p + size) (mincore, then
 * MADV_DONTNEED); they read as zero after. Bytes that were resident. */
size_t kp__os_purge(kp__oscount *c, void *p, size_t size);
/* kp__os_purge, and *whole false when a part of the range could not be
 * given back (mincore or madvise refused, or a fault injected): the caller
 * that marks the range given back (huge.c's purged) must not then. */
size_t kp__os_purge_whole(kp__oscount *c, void *p, size_t size, bool *whole);
/* Give back every page of [p, p + size), resident, swapped out or not
 * (MADV_DONTNEED over the whole range, no mincore: a swapped-out page is
 * not resident to mincore, and kp__os_purge would leave it to come back
 * as it was). true once it reads as zero; false when the kernel refused
 * (an mlock'ed page: EINVAL) or a fault was injected, and then nothing is
 * known of the range. For memory that must read zero after, not for a
 * saving. */
bool kp__os_discard(kp__oscount *c, void *p, size_t size);
/* What the machine allows this process: the smaller of physical memory plus
 * swap and the memory limit of its cgroup (v2, the tightest of its
 * ancestors; or v1's). Not counted (kp_create's conf load, before a pool). */
size_t kp__os_memory_limit(void);
size_t kp__os_self_resident(void);
/* This process's address-space limit (RLIMIT_AS, `ulimit -v`), or
 * SIZE_MAX when there is none. Not counted (kp_create's error path). */
size_t kp__os_as_limit(void);
/* Ask for transparent huge pages over [p, p + size) (MADV_HUGEPAGE). */
void kp__os_hugepage(kp__oscount *c, void *p, size_t size);
void kp__os_nohugepage(kp__oscount *c, void *p, size_t size);
void kp__os_thread_name(kp__oscount *c, const char *name);
void kp__os_random(kp__oscount *c, void *buf, size_t len);
/* The event log's descriptor: write(2), open(2), close(2). */
long kp__os_write(kp__oscount *c, int fd, const void *buf, size_t len);
int kp__os_open_log(kp__oscount *c, const char *path);
void kp__os_close(kp__oscount *c, int fd);
uint64_t kp__now_ns(void);
void kp__realtime(struct timespec *ts); /* CLOCK_REALTIME by the vDSO, as kp__now_ns */
/* membarrier(2) for the grace periods (pagemap.c), counted as "other". */
int kp__os_membarrier_register(kp__oscount *c);
int kp__os_membarrier(kp__oscount *c);
/* The process's threads (zombies included) and whether main's has ended
 * (daemon.c: program_ended). 0, or -1. */
int kp__os_threads(kp__oscount *c, unsigned *threads, bool *leader_gone);
void kp__os_yield(kp__oscount *c);

/* ---- pagemap.c: address -> segment, global, lock-free reads ------------- */
/* Make the grace records' thread key now (kp_create's first call), not at a
 * thread's first lookup inside pthread_once (pool.c: once_init). */
void kp__pagemap_keys_init(void);
struct kp__seg;
#define KP_VA_BITS 47
#define KP_LEAF_BITS 13
#define KP_ROOT_BITS (KP_VA_BITS - KP_SEG_SHIFT - KP_LEAF_BITS)
/* An entry: the segment's address (every mapping is 4 MiB-aligned), and in
 * the low bits that leaves free, for a normal segment, its pool's tag
 * (kp__pagemap_tag), 0 for a huge one. "Is p in a normal segment of this
 * pool?" is then a question for the pagemap alone: no read of the segment's
 * header, so no grace section (a released segment's header may be unmapped
 * under a reader who has none). */
typedef struct kp__leaf {
	_Atomic uintptr_t e[1u << KP_LEAF_BITS];
} kp__leaf;
extern _Atomic(kp__leaf *) kp__pagemap_root[1u << KP_ROOT_BITS];
#define KP_PM_TAG_MASK ((uintptr_t)KP_SEG_SIZE - 1)
/* The tag of a pool's normal segments: the low 21 bits of its id, and bit 0
 * set (never 0, the value of no entry and of a huge segment's). Two pools
 * share a tag only when their ids differ by a multiple of 2^21: then the tag
 * lets through a pointer of the other pool, whose block header does not
 * verify under this pool's key (each check that uses the tag is followed by
 * one against K(h)), so a shared tag costs a slower refusal, never an
 * acceptance. */
static inline uintptr_t kp__pagemap_tag(uint64_t pool_id)
{
	return (uintptr_t)(pool_id * 2 + 1) & KP_PM_TAG_MASK; /* pool_id << 1 | 1: one lea */
}
/* p's entry, or 0. Two dependent loads; never faults, whatever p is. */
static inline uintptr_t kp__pagemap_entry(const void *p)
{
	uintptr_t chunk = (uintptr_t)p >> KP_SEG_SHIFT;
	if (__builtin_expect(chunk >> (KP_ROOT_BITS + KP_LEAF_BITS), 0))
		return 0;
	kp__leaf *l = atomic_load_explicit(&kp__pagemap_root[chunk >> KP_LEAF_BITS], memory_order_acquire);
	if (__builtin_expect(!l, 0))
		return 0;
	return atomic_load_explicit(&l->e[chunk & ((1u << KP_LEAF_BITS) - 1)], memory_order_acquire);
}
static inline struct kp__seg *kp__pagemap_get(const void *p)
{
	return (struct kp__seg *)(kp__pagemap_entry(p) & ~KP_PM_TAG_MASK);
}
/* The fast paths' map (pagemap.c): one 32-bit word per 4 MiB chunk of the
 * 47-bit space, kp__pagemap_flat_tag(pool's id) for the chunk of a normal
 * segment, else 0. One load where the two-level map makes two dependent
 * ones (with the address arithmetic and the null leaf test between them):
 * kp_free ran 9 instructions fewer (callgrind, kpbench a). 128 MiB of address
 * space reserved once, read and write, MAP_NORESERVE: a page never written
 * reads as zero (the kernel's zero page), so any chunk can be looked up and
 * none faults, and a page (covering 4 GiB of address space) is only ever
 * committed when a segment in its range is published. kp__pagemap_flat_n is
 * the number of chunks it covers: 0 until it is reserved (and for good when
 * it cannot be: then the two-level map alone answers), then 2^25, so the
 * bound is the only test a lookup makes. Written beside the two-level
 * entries, in kp__pagemap_set, under the same grace periods. */
extern _Atomic uint32_t *_Atomic kp__pagemap_flat; /* atomic itself: clang loads no other */
extern _Atomic uintptr_t kp__pagemap_flat_n;
/* A normal segment's word: its pool's id, times 2, plus 1, in 32 bits (never
 * 0, no entry's). Pools share it only when their ids differ by a multiple of
 * 2^31, and a shared one costs what a shared tag does (kp__pagemap_tag). */
static inline uint32_t kp__pagemap_flat_tag(uint64_t pool_id)
{
	return (uint32_t)(pool_id * 2 + 1); /* one lea */
}
/* Does the flat map say that the 4 MiB-aligned address s is a normal segment
 * of the pool whose id is pool_id? false also when it cannot say (not
 * reserved; s past the 47 bits): the caller asks the two-level map then, or
 * takes its slow path. Never faults, whatever s is; the pagemap alone (any
 * thread, no grace section), like kp__pagemap_owns. */
static inline bool kp__pagemap_flat_is(uintptr_t s, uint64_t pool_id)
{
	uintptr_t chunk = s >> KP_SEG_SHIFT;
	if (chunk >= atomic_load_explicit(&kp__pagemap_flat_n, memory_order_acquire))
		return false;
	_Atomic uint32_t *flat = atomic_load_explicit(&kp__pagemap_flat, memory_order_relaxed);
	return atomic_load_explicit(&flat[chunk], memory_order_acquire) == kp__pagemap_flat_tag(pool_id);
}
/* Is the 4 MiB-aligned address s a normal segment whose pool's tag is tag
 * (kp__pagemap_tag)? Its entry must be exactly s | tag: a normal segment is
 * one chunk, its entry its own address. No test of the 47 bits: past them
 * the root index wraps (masked), and the entry found there holds an address
 * below 2^47, never s. Two dependent loads; never faults, whatever s is;
 * the pagemap alone (any thread, no grace section), like kp__pagemap_owns. */
static inline bool kp__pagemap_is_normal(uintptr_t s, uintptr_t tag)
{
	uintptr_t chunk = s >> KP_SEG_SHIFT;
	kp__leaf *l = atomic_load_explicit(&kp__pagemap_root[(chunk >> KP_LEAF_BITS) & ((1u << KP_ROOT_BITS) - 1)],
					   memory_order_acquire);
	return l && atomic_load_explicit(&l->e[chunk & ((1u << KP_LEAF_BITS) - 1)], memory_order_acquire) == (s | tag);
}
/* Is p a plausible block header of a normal segment of the pool whose id is
 * pool_id (16-aligned, past the segment's header unit)? The pagemap alone
 * (see the tag): any thread, no grace section. The flat map where it
 * covers the chunk; else the two-level map, so that the answer never depends
 * on whether the flat map could be reserved (a no would quarantine a sound
 * bin). */
static inline bool kp__pagemap_owns(uint64_t pool_id, const void *p)
{
	uintptr_t off = (uintptr_t)p & KP_PM_TAG_MASK, s = (uintptr_t)p - off;
	if (KP_UNLIKELY((off & (KP_HDR - 1)) || off < KP_UNIT_SIZE))
		return false;
	uintptr_t chunk = s >> KP_SEG_SHIFT;
	if (KP_LIKELY(chunk < atomic_load_explicit(&kp__pagemap_flat_n, memory_order_acquire))) {
		_Atomic uint32_t *flat = atomic_load_explicit(&kp__pagemap_flat, memory_order_relaxed);
		return atomic_load_explicit(&flat[chunk], memory_order_acquire) == kp__pagemap_flat_tag(pool_id);
	}
	return kp__pagemap_is_normal(s, kp__pagemap_tag(pool_id));
}
int kp__pagemap_set(kp__oscount *c, void *base, size_t size, struct kp__seg *s);
/* fork handlers: 0 prepare, 1 parent, 2 child */
void kp__pagemap_fork(int phase);

/* Grace periods (pagemap.c): a range the pagemap vouched for stays mapped
 * while a thread that may have looked it up is still reading it. A reader
 * (kp_free, kp_usable_size, kp_realloc, kp__plausible) brackets its lookups
 * and its reads of what they found with kp__grace_enter / kp__grace_exit: two
 * stores to a record of its own, no lock, no system call, no atomic
 * read-modify-write (the releasing side pays for the ordering with one
 * membarrier(2) per reclaim). A release clears the pagemap, then retires the
 * range (kp__grace_retire); it is unmapped once every reader that entered
 * before has left (kp__grace_reclaim: the daemon's passes, the allocation
 * path before it maps, a reader leaving its section, kp_destroy). */
typedef struct kp__grace_rec {
	_Alignas(64) _Atomic uint64_t epoch; /* 0: outside; else the word read on entry */
	_Atomic int owned;
} kp__grace_rec;
/* pending is set only while the thread's record is inside a section (it is
 * reclaimed when the outermost section ends): a thread outside every section
 * has none, so an entry need not look at it. */
typedef struct kp__grace_tls {
	kp__grace_rec *rec;
	/* rec, once the grace word was seen without KP_GRACE_FENCE (which is
	 * only ever cleared, never set again: pagemap.c, barrier_init), else
	 * NULL: kp_free's inline section takes it, and need not test the
	 * word's fence bit on every call. Set by kp__grace_note_fast. */
	kp__grace_rec *fast;
	kp_pool *pending; /* retired inside a section: reclaim on leaving it */
	bool exited;	  /* the thread-exit destructor ran: the shared path */
} kp__grace_tls;
/* The thread's state: one thread-local block for the whole library (a -fPIC
 * library reaches each thread-local variable through a GOT entry of its
 * own, one load each: one block, one load per call): the thread's caches
 * (tcache.c, which defines it), its grace record (kp__grace_self) and its
 * layout:outline slot (kp__ol_slot). */
#define KP_TLS_SLOTS 4
struct kp__tcache;
struct ol_heap;
struct ol_span;
/* The calling thread's heap for one outline pool (outline.h, outline.c), and
 * that pool's slice map (so that kp_free reads no pool field): the slot
 * names the pool by its address + 1 (outline.h, kp__ol_slot_id), which no
 * new pool takes while the slot names it (the slot's reference: pool.c,
 * kp__pool_unref), so a destroyed pool's slot matches no live pool. Before a thread's first call, and on a thread that
 * only frees, heap is kp__ol_empty_heap, whose classes all take the slow
 * path. map_mask is 0 and map kp__ol_no_map (one empty entry) until the
 * slot names a pool: every pointer misses the map. In kp__tls
 * (kp__ol_slot), its first value tcache.c's. id is kp__ol_slot_id, or a
 * mark (outline.h, kp__ol_enter), aid the tag of the pool it names. */
typedef struct kp__ol_tls {
	uint64_t id;
	struct ol_heap *heap;
	uintptr_t *map;	    /* the pool's slice map (outline.h, kp__ol_map_span) */
	uintptr_t map_mask; /* OL_MAP_N - 1: kp_free masks the slice's number (outline.h) */
	uint64_t aid;
} kp__ol_tls;
extern struct ol_heap kp__ol_empty_heap;
extern _Alignas(64) uintptr_t kp__ol_no_map[8];
/* fast_alloc when no pool takes kp_alloc's inline fast path: no pool's
 * id, and not 0 (memory whose first word is 0 is no pool, and its match
 * took a test of the id on every call: 2 instructions, s33-sig). Memory
 * that is no pool whose first word is this one matches, and finds
 * fast_tc's bins empty (kp__tcache_none): alloc_slow refuses it. */
#define KP_FAST_NONE UINT64_MAX
struct kp__tcache;
extern struct kp__tcache kp__tcache_none;
typedef struct kp__tls {
	uint64_t id[KP_TLS_SLOTS];
	struct kp__tcache *tc[KP_TLS_SLOTS];
	/* The fast paths' slot test (alloc.c): id[0] when the pool of the
	 * first slot takes that path (fast_alloc: checks on, poison off;
	 * fast_free: and AES round keys, kp_free's inline K), else 0. A pool's
	 * checks, poison and key never change after kp_create, so the test of
	 * the slot is the test of the pool's mode too: one compare where the
	 * slot, the mode and the key's kind were three (kp__tcache_slow sets
	 * them with slot 0, every write of slot 0 clears or sets them). */
	uint64_t fast_alloc, fast_free;
	/* tc[0] while fast_alloc names its pool, else kp__tcache_none (empty
	 * bins): what alloc_fast pops */
	struct kp__tcache *fast_tc;
	kp__ol_tls ol; /* layout:outline's slot (kp__ol_slot) */
	bool registered;
	bool exited; /* the exit hook ran: later calls get no cache */
	kp__grace_tls grace;
} kp__tls;
extern __thread kp__tls kp__tls_state __attribute__((tls_model("initial-exec")));
#define kp__grace_self (kp__tls_state.grace)
/* The grace word: the epoch << 1, and in bit 0 KP_GRACE_FENCE (no
 * membarrier: readers fence themselves). One load tells an entering reader
 * both what to store and how; a release advances it by KP_GRACE_STEP. Never
 * 0 (the epoch starts at 1), so a record holding a word is inside. */
extern _Atomic uint64_t kp__grace_epoch;
#define KP_GRACE_FENCE 1ull
#define KP_GRACE_STEP 2ull
#define KP_GRACE_NESTED 0 /* tokens kp__grace_enter returns */
#define KP_GRACE_OWN 1
#define KP_GRACE_SHARED 2
unsigned kp__grace_enter_slow(void);
/* The thread's record becomes its fast one (kp__grace_tls) if the readers
 * no longer fence. Cheap; any time. */
static inline void kp__grace_note_fast(void)
{
	if (kp__grace_self.rec && !(atomic_load_explicit(&kp__grace_epoch, memory_order_relaxed) & KP_GRACE_FENCE))
		kp__grace_self.fast = kp__grace_self.rec;
}
void kp__grace_exit_slow(unsigned token);
/* Store the word w read on entry into the thread's record r (outside). */
static inline __attribute__((always_inline)) void kp__grace_publish(kp__grace_rec *r, uint64_t w)
{
	/* The store must be visible before the lookups that follow: membarrier
	 * on the releasing side orders it; without one, a full barrier here (an
	 * exchange: TSan knows no stand-alone fence). */
	if (KP_UNLIKELY(w & KP_GRACE_FENCE)) {
		atomic_exchange_explicit(&r->epoch, w, memory_order_seq_cst);
	} else {
		atomic_store_explicit(&r->epoch, w, memory_order_release);
		atomic_signal_fence(memory_order_seq_cst);
	}
}
static inline unsigned kp__grace_enter(void)
{
	kp__grace_rec *r = kp__grace_self.rec;
	if (KP_UNLIKELY(!r))
		return kp__grace_enter_slow();
	if (atomic_load_explicit(&r->epoch, memory_order_relaxed))
		return KP_GRACE_NESTED;
	kp__grace_publish(r, atomic_load_explicit(&kp__grace_epoch, memory_order_acquire));
	return KP_GRACE_OWN;
}
static inline void kp__grace_exit(unsigned token)
{
	if (token == KP_GRACE_NESTED)
		return;
	if (KP_LIKELY(token == KP_GRACE_OWN && !kp__grace_self.pending)) {
		atomic_signal_fence(memory_order_seq_cst);
		atomic_store_explicit(&kp__grace_self.rec->epoch, 0, memory_order_release);
		return;
	}
	kp__grace_exit_slow(token);
}
/* [base, base + size) has left the pagemap: unmap it after a grace period.
 * base is a segment header (its next, empty_since_ns and retired fields are
 * taken over); a normal segment whose unmap the OS refuses goes back into
 * the pool, free. Caller holds no lock. */
void kp__grace_retire(kp_pool *pool, struct kp__seg *base, size_t size);
/* Unmap what no reader may still see; takes pool->lock briefly, makes one
 * membarrier call when anything is retired. Returns ranges unmapped. */
int kp__grace_reclaim(kp_pool *pool);
/* kp_destroy: wait for every reader, then unmap everything retired. */
void kp__grace_drain(kp_pool *pool);

/* ---- integrity.c (and the inline checks below) -------------------------- */
/* QUARANTINE: found damaged, set aside for good (never reused). */
enum kp__state { KP_ST_FREE = 0x5a, KP_ST_ALLOC = 0xa5, KP_ST_QUARANTINE = 0x3c };
/* cls field values beyond the size classes */
#define KP_CLS_LARGE 200
#define KP_CLS_HUGE 201
#define KP_CLS_ALIGNED 202 /* a redirect to the enclosing block */

/* The pool's key: 128 bits from getrandom(2) (or from the seed setting, for
 * tests), kept as SipHash's four initial state words, and (x86-64 with
 * AES-NI) the round keys of an AES-128 key derived from it: K(h), computed
 * twice per allocation and free, is AES where the CPU has it (kp__hkey), a
 * dozen instructions against SipHash's eighty. The key lives in the pool's
 * own mapping, never next to a block. */
typedef struct kp__key {
	uint64_t v0, v1, v2, v3;
	uint64_t rk[22] __attribute__((aligned(16))); /* AES-128 round keys 0..10 */
	uint32_t aes;				      /* 1: K(h) is kp__aes_hkey */
	uint64_t smul;				      /* odd, secret: kp__kslot's multiplier (kp__key_aes_init) */
} kp__key;
/* Fill k->rk and k->aes from k's SipHash words (integrity.c): the AES key
 * is SipHash(k, 3, 0..1), an input no other use of k takes. */
void kp__key_aes_init(kp__key *k);
static inline kp__key kp__key_make(uint64_t k0, uint64_t k1)
{
	kp__key k = {k0 ^ 0x736f6d6570736575ull,
		     k1 ^ 0x646f72616e646f6dull,
		     k0 ^ 0x6c7967656e657261ull,
		     k1 ^ 0x7465646279746573ull,
		     {0},
		     0,
		     0};
	kp__key_aes_init(&k);
	return k;
}
#define KP_ROTL(x, b) (((x) << (b)) | ((x) >> (64 - (b))))
#define KP_SIPROUND(v0, v1, v2, v3)                                             \
	do {                                                                    \
		v0 += v1, v1 = KP_ROTL(v1, 13), v1 ^= v0, v0 = KP_ROTL(v0, 32); \
		v2 += v3, v3 = KP_ROTL(v3, 16), v3 ^= v2;                       \
		v0 += v3, v3 = KP_ROTL(v3, 21), v3 ^= v0;                       \
		v2 += v1, v1 = KP_ROTL(v1, 17), v1 ^= v2, v2 = KP_ROTL(v2, 32); \
	} while (0)
/* SipHash-1-3 (one compression round, three finalization rounds: the
 * variant Rust's and CPython's hash tables use) of the 8 bytes of m, and of
 * the 16 bytes of a, b. A keyed pseudo-random function: no number of
 * (input, output) pairs gives the key or the output for another input
 * (the attack of issue 14 inverted the old unkeyed mix(secret ^ address)
 * and got the secret from one header). 8 bytes cost 5 rounds, about 20
 * simple instructions each; 16 bytes 6. */
static inline __attribute__((always_inline)) uint64_t kp__prf1(const kp__key *k, uint64_t m)
{
	uint64_t v0 = k->v0, v1 = k->v1, v2 = k->v2, v3 = k->v3, b = (uint64_t)8 << 56;
	v3 ^= m;
	KP_SIPROUND(v0, v1, v2, v3);
	v0 ^= m;
	v3 ^= b;
	KP_SIPROUND(v0, v1, v2, v3);
	v0 ^= b;
	v2 ^= 0xff;
	KP_SIPROUND(v0, v1, v2, v3);
	KP_SIPROUND(v0, v1, v2, v3);
	KP_SIPROUND(v0, v1, v2, v3);
	return v0 ^ v1 ^ v2 ^ v3;
}
static inline __attribute__((always_inline)) uint64_t kp__prf2(const kp__key *k, uint64_t a, uint64_t m)
{
	uint64_t v0 = k->v0, v1 = k->v1, v2 = k->v2, v3 = k->v3, b = (uint64_t)16 << 56;
	v3 ^= a;
	KP_SIPROUND(v0, v1, v2, v3);
	v0 ^= a;
	v3 ^= m;
	KP_SIPROUND(v0, v1, v2, v3);
	v0 ^= m;
	v3 ^= b;
	KP_SIPROUND(v0, v1, v2, v3);
	v0 ^= b;
	v2 ^= 0xff;
	KP_SIPROUND(v0, v1, v2, v3);
	KP_SIPROUND(v0, v1, v2, v3);
	KP_SIPROUND(v0, v1, v2, v3);
	return v0 ^ v1 ^ v2 ^ v3;
}

/* meta packs the requested size (or, for ALIGNED, the offset back to the
 * enclosing payload) in its top 48 bits, the class in the next 8 and the
 * state in the low 8. Each block address h has a key K(h) = SipHash(pool key,
 * h) (kp__hkey); its header holds tag = K(h) ^ meta, so any change to meta
 * or a header copied elsewhere is detected, and the tag, the canary and the
 * free-list link of h, all derived from K(h), tell nothing about K of any
 * other address: a header forged at an address the pool never keyed (inside
 * a live block) does not verify. Each operation on a block computes K once.
 * What K does not stop: someone who reads h's header learns K(h), so it can
 * rewrite h's meta (the class is also checked against the span at free,
 * alloc.c) or put back an old header of h (a replay); no in-line tag can
 * stop that without a counter kept out of line. 48 bits hold every request
 * the pool accepts (KP_REQ_MAX, 2^46): a request kept in 32 bits lost the
 * size of blocks of 4 GiB and more (issue 12). */
typedef struct kp__hdr {
	uint64_t tag;
	uint64_t meta;
} kp__hdr;

/* An unkeyed mixer (the seed setting's expansion); never a tag. */
static inline uint64_t kp__mix(uint64_t x)
{
	x ^= x >> 31;
	x *= 0x7fb5d329728ea185ull;
	x ^= x >> 27;
	return x;
}
#define KP_META_REQ_BITS 48
_Static_assert(KP_REQ_MAX < (size_t)1 << KP_META_REQ_BITS, "every request fits the header");
_Static_assert(KP_CLS_ALIGNED < 256, "every class fits the header's 8 bits");
static inline uint64_t kp__meta(size_t req, uint16_t cls, uint8_t st)
{
	return (uint64_t)req << 16 | (uint64_t)(uint8_t)cls << 8 | st;
}
#define KP_META_REQ(m) ((size_t)((m) >> 16))
#define KP_META_CLS(m) ((unsigned)(uint8_t)((m) >> 8))
#define KP_META_ST(m) ((unsigned)(uint8_t)(m))
/* Every K(h) has bit 7 set (KP_HKEY_BIT), whichever function computes it:
 * K itself is then the canary word (kp__canary_word), whose first byte must
 * have its top bit set, and neither path pays an OR for it. 63 bits left
 * for a tag, a link pad, a canary. */
#define KP_HKEY_BIT 0x80ull
/* K(h) by AES-128 (x86-64 with AES-NI, k->aes set): the low 64 bits of
 * AES_k(h, 0), all ten rounds, bit 7 set. AES is a pseudo-random permutation (and no
 * reduced-round shortcut: 4 to 6 rounds fall to integral attacks with 2^8 to
 * 2^32 chosen inputs, which a heap's addresses could supply), so its
 * truncated output is a keyed pseudo-random function of h: no number of
 * (h, K(h)) pairs gives the key or K of another address. Inline assembly,
 * not intrinsics: an intrinsic needs a function built for AES-NI, which the
 * allocation path (run on any x86-64) cannot be, and the call to one cost
 * more than the rounds (spilled registers). volatile: never executed, nor
 * hoisted, where k->aes is not set. pxor and aesenc read their 16-byte
 * operands in place (k->rk is 16-aligned). */
#if defined(__x86_64__)
typedef long long kp__v2di __attribute__((vector_size(16)));
static inline __attribute__((always_inline)) uint64_t kp__aes_hkey(const kp__key *k, uint64_t m)
{
	const kp__v2di *rk = (const kp__v2di *)k->rk;
	uint64_t out;
	kp__v2di x;
	/* Each round key a memory operand of its own: the compiler addresses
	 * it from whatever register holds k (kp_free: the pool), no lea of
	 * k->rk first. */
	__asm__ volatile("movq %[m], %[x]\n\t"
			 "pxor %[r0], %[x]\n\t"
			 "aesenc %[r1], %[x]\n\t"
			 "aesenc %[r2], %[x]\n\t"
			 "aesenc %[r3], %[x]\n\t"
			 "aesenc %[r4], %[x]\n\t"
			 "aesenc %[r5], %[x]\n\t"
			 "aesenc %[r6], %[x]\n\t"
			 "aesenc %[r7], %[x]\n\t"
			 "aesenc %[r8], %[x]\n\t"
			 "aesenc %[r9], %[x]\n\t"
			 "aesenclast %[r10], %[x]\n\t"
			 "movq %[x], %[out]"
			 : [out] "=r"(out), [x] "=&x"(x)
			 : [m] "r"(m), [r0] "m"(rk[0]), [r1] "m"(rk[1]), [r2] "m"(rk[2]), [r3] "m"(rk[3]),
			   [r4] "m"(rk[4]), [r5] "m"(rk[5]), [r6] "m"(rk[6]), [r7] "m"(rk[7]), [r8] "m"(rk[8]),
			   [r9] "m"(rk[9]), [r10] "m"(rk[10]));
	return out | KP_HKEY_BIT;
}
#endif
/* K(h) by SipHash-1-3, for CPUs without AES-NI (integrity.c), bit 7 set. */
uint64_t kp__sip_hkey(const kp__key *k, uint64_t m);
/* K(h). Block headers are 16-aligned, so the low 4 bits of the input are
 * free for other uses of the key: segment seals (primary.c) set them. The
 * key-taking helpers below are called with the pool's key as an lvalue
 * (kp__hkey(pool->secret, h)) and read it in place: a by-value copy of the
 * round keys on every call would cost more than the AES itself. */
static inline __attribute__((always_inline)) uint64_t kp__hkey_at(const kp__key *k, const void *h)
{
#if defined(__x86_64__)
	if (KP_LIKELY(k->aes))
		return kp__aes_hkey(k, (uintptr_t)h);
#endif
	return kp__sip_hkey(k, (uintptr_t)h);
}
#define kp__hkey(k, h) kp__hkey_at(&(k), (h))
/* A key stack (a thread cache's bin, a parked batch, a central take's
 * keys) holds K(h) ^ kp__kslot(k, h) for its block h, not K(h): a header
 * gives K(h) away (tag ^ meta), and a stack of bare keys let a header copied
 * to another address (inside a live block, a free block's link rewritten to
 * lead there) pass as the block whose key the stack held for that place:
 * the block was handed out inside the live one (test_xfer_relocate_attack2).
 * Bound to the address, the stack's word unmasks to K(h) only at h. The
 * mask is h times a secret odd multiplier, never written next to a block:
 * no header, link or canary tells anything of it. For a copy at F of the
 * header of B, the attacker needs kslot(F) ^ kslot(B): its bits below the
 * lowest bit d where F and B differ are 0 and bit d is 1 (a product's low
 * bits depend only on the factors' low bits), the other 63 - d are unknown:
 * at least 42 bits for F in B's 4 MiB segment, 28 for a pool of 64 GiB, one
 * guess each (a wrong one is caught and its list quarantined). A fold of
 * the high bits into the low (m ^ m >> 29) would hide all 64 but cost
 * kpbench a 5% of its instructions (callgrind); the multiply alone costs
 * 2% of them (and 4-5% of a's ops per CPU second, medians of 7). The same
 * call masks and unmasks. */
static inline __attribute__((always_inline)) uint64_t kp__kslot(const kp__key *k, const void *h)
{
	return (uint64_t)(uintptr_t)h * k->smul;
}
static inline KP_NOASAN void kp__hdr_put(kp__hdr *h, uint64_t key, uint64_t meta)
{
	h->meta = meta;
	h->tag = key ^ meta;
}
static inline KP_NOASAN uint64_t kp__hdr_meta(const kp__hdr *h)
{
	return h->meta;
}
static inline KP_NOASAN uint64_t kp__hdr_tag(const kp__hdr *h)
{
	return h->tag;
}
static inline void kp__hdr_set_at(const kp__key *k, kp__hdr *h, size_t req, uint16_t cls, uint8_t st)
{
	kp__hdr_put(h, kp__hkey_at(k, h), kp__meta(req, cls, st));
}
#define kp__hdr_set(k, h, req, cls, st) kp__hdr_set_at(&(k), (h), (req), (cls), (st))
static inline KP_NOASAN bool kp__hdr_ok_at(const kp__key *k, const kp__hdr *h)
{
	return (h->tag ^ h->meta) == kp__hkey_at(k, h);
}
#define kp__hdr_ok(k, h) kp__hdr_ok_at(&(k), (h))
/* Free-list links are stored encoded (like SLAB_FREELIST_HARDENED), so a
 * stray write does not hand an attacker a pointer the pool will follow, and
 * a link read after free gives no heap address. The pad is the block's own
 * key, rotated (the tag holds it unrotated): a link read tells nothing about
 * the pad of another block (the old pad, one secret ^ slot >> 12 for every
 * block, gave it away with one known link). Rotated by 57, K's known bit 7
 * (KP_HKEY_BIT) lands on bit 0, where every link target (16-aligned) has a
 * known 0 already: the pad hides all of the address's unknown bits. */
static inline uintptr_t kp__link_pad(uint64_t key)
{
	return (uintptr_t)KP_ROTL(key, 57);
}
/* A free block's link lives in the first payload word (block + KP_HDR). The
 * _k forms take K(block), computed already by the caller. */
static inline KP_NOASAN void *kp__link_get_k(uint64_t key, void *block)
{
	return (void *)(*(uintptr_t *)((char *)block + KP_HDR) ^ kp__link_pad(key));
}
static inline KP_NOASAN void kp__link_put_k(uint64_t key, void *block, void *next)
{
	*(uintptr_t *)((char *)block + KP_HDR) = (uintptr_t)next ^ kp__link_pad(key);
}
static inline void *kp__link_get_at(const kp__key *k, void *block)
{
	return kp__link_get_k(kp__hkey_at(k, block), block);
}
#define kp__link_get(k, block) kp__link_get_at(&(k), (block))
static inline void kp__link_put_at(const kp__key *k, void *block, void *next)
{
	kp__link_put_k(kp__hkey_at(k, block), block, next);
}
#define kp__link_put(k, block, next) kp__link_put_at(&(k), (block), (next))

/* Integrity violations: counted, recorded as an event, abort() when the
 * pool is configured so; returns code. size is the block's size as far as
 * the pool knows it: for a double free the capacity of its size class (free
 * clears the request from the header), KP_SIZE_UNKNOWN when it knows none
 * (the text then says "size unknown", the event's size field is 0). */
#define KP_SIZE_UNKNOWN SIZE_MAX
int kp__violation(kp_pool *pool, unsigned kind, int code, const void *addr, size_t size, const char *what);
/* The canary in the slack past the requested size: up to 8 bytes, the
 * block's key K(h) (little-endian bytes), so a canary copied from another
 * block does not verify. Its first byte, the one an off-by-one write hits,
 * always has its top bit set (every K has bit 7 set: KP_HKEY_BIT): a stray
 * NUL terminator or ASCII character is always caught (with a free key byte,
 * one such write in 256 would have matched it and gone unseen). A canary
 * tells what the block's header tells (K(h)), nothing about K of another
 * address; the constant it was once XORed with (KP_CANARY_XOR, which
 * test_forgery's forgery of the old scheme still uses) hid nothing and cost
 * two instructions at each allocation and each free, and the bit once set
 * here (key | 0x80) one at each allocation and two at each free. */
#define KP_CANARY_XOR 0xa5a5a5a5a5a5a5a5ull
#define KP_CANARY 8 /* slack every block keeps for it with checks on */
static inline uint64_t kp__canary_word(uint64_t key)
{
	return key; /* bit 7 set: K's */
}
/* The fast forms, for blocks whose slack holds all 8 bytes (small blocks). */
static inline KP_NOASAN void kp__canary8_put(uint64_t key, char *at)
{
	uint64_t w = kp__canary_word(key);
	__builtin_memcpy(at, &w, 8);
}
static inline KP_NOASAN bool kp__canary8_ok(uint64_t key, const char *at)
{
	uint64_t w;
	__builtin_memcpy(&w, at, 8);
	return w == kp__canary_word(key);
}
static inline KP_NOASAN void kp__canary_put(uint64_t key, char *payload, size_t req, size_t usable)
{
	uint64_t w = kp__canary_word(key);
	size_t n = usable - req < 8 ? usable - req : 8;
	if (KP_LIKELY(n == 8))
		__builtin_memcpy(payload + req, &w, 8);
	else
		for (size_t i = 0; i < n; i++)
			payload[req + i] = (char)(w >> (8 * i));
}
static inline KP_NOASAN bool kp__canary_ok(uint64_t key, const char *payload, size_t req, size_t usable)
{
	uint64_t w = kp__canary_word(key), got = 0;
	size_t n = usable - req < 8 ? usable - req : 8;
	if (KP_LIKELY(n == 8)) {
		__builtin_memcpy(&got, payload + req, 8);
		return got == w;
	}
	for (size_t i = 0; i < n; i++)
		if ((uint8_t)payload[req + i] != (uint8_t)(w >> (8 * i)))
			return false;
	return true;
}
/* Poisoning of freed payloads (the conf switch), past the link word. */
#define KP_POISON_BYTE 0xdf
void kp__poison_fill(char *payload, size_t usable);
bool kp__poison_ok(const char *payload, size_t usable);
/* Is h a plausible block header of this pool? (pagemap, alignment) Defined
 * after struct kp_pool, below. */
static inline bool kp__plausible(kp_pool *pool, const void *h);

/* ---- events.c ------------------------------------------------------------ */
#define KP_RING_SLOTS 1024 /* ~10 s of a storm at 100 events/s before drops */
#define KP_RING_WORDS (sizeof(kp_event) / 8)
typedef struct kp__ring_slot {
	_Atomic uint64_t seq; /* 2*pos+1 while written, 2*pos+2 when complete */
	_Atomic uint64_t w[KP_RING_WORDS];
} kp__ring_slot;
typedef struct kp__ring {
	_Atomic uint64_t head; /* next position to write */
	_Atomic uint64_t tail; /* next position to read */
	_Atomic uint64_t dropped;
	kp__ring_slot slot[KP_RING_SLOTS];
} kp__ring;
void kp__event(kp_pool *pool, unsigned kind, unsigned which, const void *addr, size_t size, const char *fmt, ...)
	__attribute__((format(printf, 6, 7)));
/* A formatter that allocates nothing and is async-signal-safe: %s %p %c %d
 * %u %zu %llu %x (and %%). Returns the length it wanted, like snprintf. */
size_t kp__fmt(char *buf, size_t len, const char *fmt, va_list ap);
/* log_fd / KPOOL_LOG: 0 or -1 (kp_last_error set). */
int kp__log_open(kp_pool *pool);
void kp__log_close(kp_pool *pool);

/* ---- primary.c ----------------------------------------------------------- */
enum kp__span_kind { KP_SPAN_FREE = 0, KP_SPAN_SMALL = 1, KP_SPAN_LARGE = 2 };
#define KP_UNIT_META(cls) ((uint16_t)((unsigned)(cls) << 8 | KP_ST_ALLOC)) /* kp__seg's unit_meta */
typedef struct kp__span {
	struct kp__span *next, *prev; /* the class's partial list */
	char *start;		      /* first block */
	void *free;		      /* encoded list of returned blocks */
	uint32_t block;		      /* block size, header included */
	uint32_t nblocks, nused, bump;
	uint16_t units; /* length of the run */
	uint8_t head;	/* unit index of the run's first unit */
	uint8_t kind;	/* enum kp__span_kind */
	uint8_t cls;
	uint8_t in_partial;
	uint8_t quarantined; /* found damaged: never carved from again */
	uint8_t moving;	     /* large: in-place growth failed, realloc moves it (primary.c, units_give) */
	/* Blocks on the free list: the invariant checked in O(1) where a count
	 * is trusted (primary.c: a refill takes from the span, its last block
	 * returns and its units go back), so that a rewritten nused or bump
	 * does not hand out live blocks. At most 2048 (32-byte blocks, one
	 * unit). */
	uint16_t nfree;
	/* large: its units were all zero when run_take cut it (kp__seg's
	 * zero), asked once by kp_alloc for KP_ZERO (kp__large_take_fresh) */
	uint8_t fresh;
} kp__span;

#define KP_LAST_LARGE 128u /* kp__seg's last_cls of a large run: past 1 + every class */
_Static_assert(KP_NCLASS < KP_LAST_LARGE && KP_LAST_LARGE + KP_UNITS <= 255, "last_cls marks fit a byte");
enum kp__seg_kind { KP_SEG_NORMAL = 1, KP_SEG_HUGE = 2 };
/* A segment header sits right after the previous mapping's last bytes (a
 * block's, when segments are back to back): a linear overflow past that
 * block reaches magic first, then seal, then the rest. Both are keyed
 * (SipHash, the pool's key) and checked before the fields they cover are
 * trusted (primary.c, kp__seg_ok): magic covers the address, kind and size
 * (constant but for a huge block's resize), seal the free mask (under
 * pool->lock); nfree_units must equal the mask's popcount, and a list link
 * must be a segment of this pool in the pagemap. A damaged segment is
 * quarantined: its units are never handed out again. */
typedef struct kp__seg {
	uint64_t magic; /* kp__seg_magic */
	uint64_t seal;	/* kp__seg_seal, normal segments */
	kp_pool *pool;
	struct kp__seg *next, *prev;
	uint64_t free_mask; /* bit u set: unit u is free */
	uint64_t empty_since_ns;
	size_t size;   /* bytes mapped */
	uint32_t kind; /* enum kp__seg_kind */
	uint32_t nfree_units;
	uint32_t dirty;	      /* huge: a kept mapping used again (not zero) */
	uint32_t quarantined; /* found damaged (reported once): never used again */
	size_t retired;	      /* bytes still mapped while it waits out a grace period (pagemap.c) */
	/* Free units given back to the OS (primary.c, kp__primary_purge), under
	 * pool->lock; each a subset of free_mask. purge_idle: free at the last
	 * purge checkpoint and not taken since; purged: given back since they
	 * went free (not resident, so not pre-faulted); purging: being given
	 * back by the daemon without the lock, never handed out meanwhile. Not
	 * sealed: a damaged mask can only select among the sealed free units.
	 * refill: used, then given back since they were last taken, kept when the daemon
	 * pre-faults them again (purged is cleared then): taken, they count
	 * as demand under the peak (pool->purged_taken, daemon.c). */
	uint64_t purge_idle, purged, purging, refill;
	/* Which free run a new span takes (primary.c, units_take), under
	 * pool->lock: used_free, the free units a span or large block used
	 * since they were mapped or purged; last_cls[u], at the first unit of such a
	 * run, 1 + the class of the small span it held, KP_LAST_LARGE + its
	 * length for a large block (0: none). Not sealed:
	 * they only choose among the sealed free units. */
	uint64_t used_free;
	/* zero: the units no span or block has held since the segment was
	 * mapped, so their bytes are the kernel's zero fill; a large block cut
	 * from them alone needs no memset for KP_ZERO (primary.c, run_take and
	 * kp__large_take_fresh: cc1's sparsely written callocs were resident
	 * whole). Only cleared after the mapping (a purge's pages are not
	 * counted: a swapped page reads as not resident to the purge's
	 * mincore and keeps its bytes). Under pool->lock. */
	uint64_t zero;
	uint8_t last_cls[KP_UNITS];
	/* unit_meta[u]: while unit u belongs to a small span of class c,
	 * KP_UNIT_META(c), the low 16 bits of the meta of an allocated block
	 * of it (c << 8 | KP_ST_ALLOC, span_new); else 0 (free units, large
	 * runs: units_give clears it). kp_free's fast path compares a header's
	 * class and state with it in one load, not through span[span[u].head].
	 * Written under the same rules as the span's kind and class. */
	uint16_t unit_meta[KP_UNITS];
	/* unit_span[u]: while unit u belongs to a small span, the offset of the
	 * span's first block in the segment (its head unit's: span_new): kp_free's
	 * fast path finds a block's offset in its span from it, and refuses a
	 * header at no block start (a header forged inside a live block at an
	 * address whose K(h) an old block's header there gave away:
	 * test_stale_header_attack3). */
	uint32_t unit_span[KP_UNITS];
	kp__span span[KP_UNITS];
} kp__seg;

typedef struct kp__central {
	/* one cache line per class; taken only through kp__class_lock (its pair
	 * shares the even class's), so this name is not "lock": a direct use
	 * would lock a mutex the other class of the pair does not take */
	_Alignas(64) pthread_mutex_t pair_lock;
	kp__span *partial; /* spans with a free block */
	unsigned spans;	   /* small spans of the class (primary.c, span_new) */
	/* batches parked in the pool's xfer[cls] (transfer.c), their blocks,
	 * the level of the class's room for more (KP_XFER_LEVELS), and whether
	 * a bin took a batch since the room last grew: written under the class
	 * lock, peeked at without it */
	_Atomic unsigned nxfer;
	_Atomic uint16_t xkeys;
	_Atomic uint8_t xlevel, xtaken;
} kp__central;

extern const uint32_t kp__class_size[KP_NCLASS];
/* 1 + UINT64_MAX / kp__class_size[c]: x (< 2^32) is a multiple of the
 * class's size exactly when x * kp__class_div[c] <= kp__class_div[c] - 1
 * (mod 2^64; Lemire, Kaser and Kurz, "Faster remainder by direct
 * computation"): a block-start test without a division. */
extern const uint64_t kp__class_div[256]; /* past KP_NCLASS: 0, every x passes (a unit_meta the caller refuses) */
#define KP_CLASS_TABLE_MAX 1024		  /* kp__class_of: the needs its table covers */
static inline unsigned kp__class_of(size_t need)
{
	extern const uint8_t kp__class_small[];
	if (KP_LIKELY(need <= KP_CLASS_TABLE_MAX)) /* the table inline, the fast paths' common case */
		return kp__class_small[(need + 15 * (KP_PLANT != 1)) >> 4]; /* planted 1: rounds down */
	unsigned b = 63u - (unsigned)__builtin_clzll((unsigned long long)(need - 1));
	/* 8 classes per doubling; those past KP_CLASS_PAGE_PLUS one further:
	 * 4097..4400 land on the grid's 4608 index, which is now 4400's
	 * (KP_CLASS_PAGE_IDX). One compare and a carry (cmp, adc). */
	return 19u + (b - 10u) * 8u + (unsigned)((need - 1 - ((size_t)1 << b)) >> (b - 3)) +
	       (need > KP_CLASS_PAGE_PLUS);
}
/* Move up to n blocks of class cls into *list (encoded links); returns how
 * many. keys: NULL, or where K of the i-th block taken goes (keys[got - 1]
 * is the new head's: a thread cache's key stack, kp__tcache). Takes the
 * class lock; may take the pool lock to carve a new span. */
unsigned kp__central_take(kp_pool *pool, unsigned cls, void **list, uint64_t *keys, unsigned n);
/* Return n blocks (an encoded list of header addresses) to their spans.
 * keys: NULL, or K of each block, the list's i-th at keys[n - 1 - i] (the
 * caller vetted the list against them). Caller holds no lock. */
void kp__central_give(kp_pool *pool, unsigned cls, void *list, const uint64_t *keys, unsigned n);
void *kp__large_alloc(kp_pool *pool, size_t need);
void kp__large_free(kp_pool *pool, kp__seg *seg, kp__span *sp);
/* Is p the payload of a large block that run_take cut from zero units (its
 * segment's zero mask), so that KP_ZERO need not write it? s is p's
 * segment, a normal one of the caller's pool. Asked once, by kp_alloc's
 * thread right after it made the block (which no other thread knows yet):
 * the answer is consumed. Anything else (a small block, a block's interior)
 * is not fresh; a small span's fields are not written here. Inline: every
 * KP_ZERO block of layout:inline asks, and a small program's calls stay in
 * the preload's hot text (allocator/preload/hot.txt). */
static inline bool kp__large_take_fresh(kp__seg *s, const void *p)
{
	uintptr_t off = (uintptr_t)p - (uintptr_t)s;
	if (off >= KP_SEG_SIZE)
		return false;
	kp__span *sp = &s->span[s->span[off >> KP_UNIT_SHIFT].head];
	if (sp->kind != KP_SPAN_LARGE || (const char *)p != sp->start + KP_HDR)
		return false;
	bool fresh = sp->fresh;
	sp->fresh = 0;
	return fresh;
}
/* Resize a large block's run in place to fit need bytes (header included):
 * grow into the free units right after it, or give its tail units back.
 * false: no room there (the block is unchanged). */
bool kp__large_resize(kp_pool *pool, kp__seg *seg, kp__span *sp, size_t need);
/* The keyed words of a segment header (see kp__seg). Their inputs set the
 * low bits of the 4 MiB-aligned address, so they never equal a block's K. */
static inline uint64_t kp__seg_magic_at(const kp__key *k, const kp__seg *s, uint32_t kind, size_t size)
{
	return kp__prf2(k, (uintptr_t)s | 1, (uint64_t)size << 8 | kind);
}
#define kp__seg_magic(k, s, kind, size) kp__seg_magic_at(&(k), (s), (kind), (size))
static inline uint64_t kp__seg_seal_at(const kp__key *k, const kp__seg *s)
{
	return kp__prf2(k, (uintptr_t)s | 2, s->free_mask);
}
#define kp__seg_seal(k, s) kp__seg_seal_at(&(k), (s))
/* Is s's magic intact (lock-free: it does not change while s is in use)?
 * If not, s is quarantined and a corruption event recorded (once). Caller
 * holds no pool->lock. */
bool kp__seg_ok(kp_pool *pool, kp__seg *s);
/* Map, pre-fault and add one segment. 0 or -1. Caller holds no lock. */
int kp__primary_grow(kp_pool *pool, bool populate);
/* alloc.c: the inline free path's prefetch table, filled once; by
 * kp__primary_grow before it maps a segment. */
void kp__canary_reach_init(void);
/* Free blocks the daemon holds off their lists at once while it gives
 * their pages back (primary.c, "purging free blocks"). */
#define KP_BPURGE_BATCH 64
/* Unmap fully free segments idle past the decay time, keeping keep bytes of
 * headroom (the daemon's target, the one its growth aims at) and
 * primary_initial of capacity. Returns segments released. */
int kp__primary_shrink(kp_pool *pool, size_t keep);
/* The fork child's handler: unmaps the segments grows that the fork cut
 * short had mapped (pool.c, fork_child). Single-threaded. */
void kp__primary_fork_child(kp_pool *pool);
/* Give back the pages of free units that stayed free for decay_ms (one
 * checkpoint per decay_ms: a unit free at two checkpoints in a row, never
 * taken in between), past the first keep bytes of free units in allocation
 * order (the daemon's pre-faulted headroom, which it is not made to fault
 * again). Also, at most every 10 ms, the whole pages inside free blocks of
 * 16 KiB and more that stayed in their span's free list from one such
 * checkpoint to the next. The daemon only (its passes are serialized);
 * takes pool->lock politely and the class locks, never across a system
 * call. Returns the runs and blocks given back. */
int kp__primary_purge(kp_pool *pool, size_t keep);
/* When the purge's next checkpoint with at least least bytes to give back
 * is due (the pool's clock), UINT64_MAX when none is: the daemon's wait
 * (daemon.c, next_wait). The daemon only. */
uint64_t kp__primary_purge_due(kp_pool *pool, size_t least);
void kp__primary_release_all(kp_pool *pool);
/* A free segment retired by a shrink whose unmap the OS refused: back in
 * the pool (pagemap.c's reclaim). Caller holds no lock. */
void kp__primary_relink(kp_pool *pool, kp__seg *s);
size_t kp__primary_headroom(kp_pool *pool);
/* A segment header's magic intact (kind and size plausible)? Lock-free. */
bool kp__seg_magic_ok(const kp_pool *pool, const kp__seg *s);
/* Mark s damaged, once: an event, and its units never handed out again.
 * Caller holds pool->lock. */
void kp__seg_quarantine_locked(kp_pool *pool, kp__seg *s);

/* ---- huge.c: blocks in a mapping of their own, and the kept mappings ----- */
void *kp__huge_alloc(kp_pool *pool, size_t need, size_t align);
/* open: the bytes of the payload never poisoned (the request, or all of it
 * with checks off); only the header and the slack past them are. */
void kp__huge_free(kp_pool *pool, kp__seg *seg, size_t open);
/* Resize a huge block's mapping to fit need bytes (header included) by
 * moving its pages, not its bytes. open as for kp__huge_free. Returns the
 * block's segment (moved, or the same one), or NULL with the block as it
 * was (no room under primary_max, or the OS refused). */
kp__seg *kp__huge_resize(kp_pool *pool, kp__seg *seg, size_t need, size_t open);
/* Unmap the kept huge mappings unused for decay_ms (all of them with all).
 * Returns how many; takes no lock when none is kept. */
int kp__huge_cache_trim(kp_pool *pool, bool all);
/* Take the kept huge mappings off the cache (the allocation path's growth
 * evicts them to make room under primary_max); those being purged are
 * marked evicted and left to the daemon. Caller holds release_mu and
 * pool->lock. */
kp__seg *kp__huge_cache_detach(kp_pool *pool);
/* Unmap a list detached by kp__huge_cache_detach. Caller holds release_mu
 * (the list is in hand: no fork until it is unmapped), no other lock.
 * Returns how many were unmapped. */
int kp__huge_cache_release(kp_pool *pool, kp__seg *list);
/* Is p the payload of one of the last KP_HUGE_GONE huge blocks whose
 * mappings were given back (a free of it is a double free)? Lock-free,
 * reads nothing at p. */
bool kp__huge_gone(kp_pool *pool, const void *p);

/* ---- backup.c ------------------------------------------------------------ */
/* The reserve: a binary buddy allocator over one region fenced by guard
 * pages. Its metadata (block state, free lists) lives in a separate mapping,
 * never beside user data. */
#define KP_BK_GRAN_SHIFT 8 /* 256 B granules: critical traffic is rare */
#define KP_BK_ORDERS 40
/* One granule's metadata: its state (0, or 0x80|order free head, 0x40|order
 * live head, 0x20 freed) and, for a free head, its list links (indices). */
typedef struct kp__bk_gran {
	uint32_t next, prev;
	uint8_t state;
} kp__bk_gran;
typedef struct kp__backup {
	pthread_mutex_t lock;
	char *base;	     /* first usable byte (after the front guard) */
	_Atomic size_t size; /* the reserve: usable bytes served, a power of two (grows under backup:auto) */
	size_t region;	     /* usable bytes reserved, a power of two: size's cap */
	bool auto_size;	     /* backup:auto: the daemon grows size with the pool (kp__backup_grow) */
	size_t map_size;
	char *map;	   /* the whole mapping, guards included */
	kp__bk_gran *gran; /* per granule, in the metadata mapping */
	uint32_t free_head[KP_BK_ORDERS];
	unsigned max_order;
	size_t meta_size;
	void *meta;
	_Atomic size_t in_use, peak;
} kp__backup;
int kp__backup_init(kp_pool *pool, size_t size);
void kp__backup_fini(kp_pool *pool);
/* *usable: the bytes the caller may use (the block less its canary). */
void *kp__backup_alloc(kp_pool *pool, size_t size, size_t align, size_t *usable);
/* 0, or KP_EDOUBLEFREE / KP_ENOTOURS (the block left alone), or KP_EOVERFLOW
 * (its canary was damaged: reported as a violation, and the block freed). */
int kp__backup_free(kp_pool *pool, void *p);
/* Usable bytes of a live backup block (its canary excluded), or 0. */
size_t kp__backup_usable(kp_pool *pool, const void *p);
/* 0 for a live block's start, else KP_EDOUBLEFREE / KP_ENOTOURS; no lock. */
int kp__backup_state(kp_pool *pool, const void *p);
/* Is the canary of live block p intact? (true for anything else) */
bool kp__backup_intact(kp_pool *pool, const void *p);
static inline bool kp__backup_owns(const kp__backup *b, const void *p)
{
	return (uintptr_t)p - (uintptr_t)b->base < b->region; /* one compare; no arithmetic on a NULL base */
}
int kp__backup_refill(kp_pool *pool);
/* backup:auto: grow the reserve with the primary's peak use (the daemon's
 * pass); 1 if it grew. */
int kp__backup_grow(kp_pool *pool);

/* ---- transfer.c: whole batches between thread caches -------------------- */
/* A batch parked by a bin that overflowed, for the next bin of its class
 * that runs empty (tcmalloc's transfer cache): list is an encoded list of n
 * free blocks, its last link NULL, and keys[n - 1 - i] is K of its i-th
 * block, a bin's key stack as it was (kp__tcache). Under the class lock. */
/* A class parks a stack of batches (transfer.c): KP_XFER_BASE of them
 * whatever their size, and more while its blocks parked stay within its
 * room, which grows in KP_XFER_LEVELS steps, once a bin took a batch of the
 * class, up to KP_XFER_CLASS_KEYS blocks and KP_XFER_CLASS_BYTES bytes, and
 * KP_XFER_SLOTS batches: KP_XFER_CLASS_KEYS in batches of a bin at its
 * start (KP_BIN_START; a one-way producer's and consumer's bins keep it),
 * 8 slots sent 84-136 of kpbench c's batches to the spans under callgrind
 * (300K operations), 32 slots 4, and a burst of 1024 blocks of a bin at its
 * start needs 64 (test_xfer_spill). */
#define KP_XFER_BASE 2
#define KP_XFER_LEVELS 4
#define KP_XFER_SLOTS 64
/* KP_BIN_MAX: a full bin of a class of 128 bytes or less (KP_XFER_BYTES)
 * parked whole and taken whole, one class lock per 256 blocks on each side;
 * at 128 a full bin was cut in two, two locks each side (kpbench c's
 * producer/consumer phases, test_xfer_phases: 12 -> 8 locks per 1000). */
#define KP_XFER_KEYS 256
/* At most this many bytes of blocks in one batch (a 2 KiB class's flushes
 * of 16 fit). Bigger batches go to their spans. */
#define KP_XFER_BYTES ((size_t)32 << 10)
/* At most this many bytes parked per class: what the two slots of
 * KP_XFER_BYTES a class had before held at most (4.7 MiB over all 75
 * classes), now in as many batches as fit. kp_alloc + kp_free instructions
 * per operation of kpbench c under callgrind (whole bins of its classes are
 * 16 KiB): 290 at 16 KiB a class, 219 at 32, 203.5 at 64, 203.3 at 128
 * (227.6 with the two slots). */
#define KP_XFER_CLASS_BYTES ((size_t)64 << 10)
/* And this many blocks: 64 KiB of a 64-byte class, the keys of a class 8 KiB
 * (the 32-byte class parks 32 KiB at most). */
#define KP_XFER_CLASS_KEYS 1024u
/* A class's keys, a stack of its batches' key stacks one above the other
 * (transfer.c), are kept in three parts: its first KP_XFER_HEAD in the
 * pool's xfer_head, those of every class side by side (256 bytes a class),
 * the next KP_XFER_MID in xfer_mid, side by side too (768 bytes a class),
 * and the rest in xfer_tail (7 KiB a class). A bin at its start (at most
 * 16 blocks: every bin of a thread that only frees a class or only
 * allocates it, and most bins of a short thread) parks batches of at most
 * 15 or 16 (the whole flush of a bin that only frees keeps one:
 * kp__bin_miss): the two of the base touch xfer_head alone. With the keys
 * inline, 2 KiB a class, each class parked touched a page or half of one
 * (prodcons under the preload: 16 pages of the pool, test_transfer_pages).
 * A class that parks a few batches more touches xfer_mid: with only a head
 * and a tail, prodcons (27 classes of messages, one-way bins of 16) touched
 * a page of tail for each class, and its peak RSS was 4144 KiB against
 * main's 4080 (medians of 9; 3992 with 128 keys side by side). */
#define KP_XFER_HEAD 32
#define KP_XFER_MID 96
_Static_assert(KP_XFER_CLASS_KEYS > KP_XFER_HEAD + KP_XFER_MID, "a tail of keys for every class");
_Static_assert(KP_XFER_CLASS_KEYS >= KP_XFER_BASE * KP_XFER_KEYS && KP_XFER_CLASS_KEYS < 65536,
	       "the base's batches fit a class's keys, whose positions fit 16 bits");
_Static_assert(KP_XFER_CLASS_BYTES >= KP_XFER_BASE * KP_XFER_BYTES, "the base's batches fit a class's bytes");
typedef struct kp__xfer {
	void *list;
	uint16_t n;   /* blocks */
	uint16_t at;  /* its keys: the class's keys [at, at + n) (transfer.c) */
	uint32_t gen; /* the pool's xfer_gen when it was parked (modulo 2^32) */
} kp__xfer;
/* What became of the batches that reached the transfer cache (stats
 * "transfer", summed over the classes and the thread caches): parked and
 * taken by a bin; full, offered when there was no room (they went to their
 * spans, kp__central_give: the cost the transfer cache is there to save);
 * empty, refills that found nothing to take, or nothing that fit the bin
 * (they went to the spans, kp__central_take); returned, given back to
 * their spans by kp__xfer_drain.
 * Each thread cache counts its own parks and takes (kp__tcache.xcount,
 * written by its thread alone, as its bins' allocs and frees are); the
 * pool's (pool->xfer_count) holds what exited threads' caches counted
 * (folded in by kp__tcache_release, under the pool lock, as their allocs
 * are), the takes of the shared path (no cache) and every returned, with
 * atomic adds. Kept in the pool per class (40 bytes each, packed: two or
 * three classes a line), they were lines kpbench c's two threads both
 * wrote for each batch each way, under the class lock and in the peeks
 * without it (test_xfer_count_thread). Moved, kpbench c's speed did not
 * measurably: 65 rounds pinned apart, each beside the code before, a
 * median ratio of 1.06 (faster in 37: within the noise of two shared
 * vCPUs), 50 unpinned 1.00; callgrind 204.8 instructions an operation
 * either way (test_cross_instructions). */
typedef struct kp__xcount {
	_Atomic uint64_t parked, taken, full, empty, returned;
} kp__xcount;
/* Park the n blocks of list (a whole bin, or a part of one vetted by the
 * caller against keys; its last link NULL) for another bin of class cls.
 * false: no room (the class's room full, or the batch too big), nothing
 * changed: the caller gives them to their spans (kp__central_give). Takes
 * the class lock; any thread with a cache, count its cache's xcount. */
bool kp__xfer_put(kp_pool *pool, unsigned cls, void *list, const uint64_t *keys, unsigned n, kp__xcount *count);
/* An empty bin takes the newest batch parked for its class if it holds at
 * most n blocks (the bin's room: its max, not only what its refill wants):
 * *list its head, keys[0..got) its key stack. Returns how many (0: none,
 * or too big: the caller goes to kp__central_take). Takes the class lock
 * only when a batch is parked. The blocks are vetted as every bin's are,
 * one by one when taken (alloc.c, bin_head_ok); with checks off, which
 * vets none of a bin's, the whole batch as it is taken (transfer.c,
 * take_vet: a damaged batch is cut before its bad block, perhaps to 0).
 * count: the calling thread's cache's xcount, or NULL on the shared path
 * (counted in the pool's). */
unsigned kp__xfer_take(kp_pool *pool, unsigned cls, void **list, uint64_t *keys, unsigned n, kp__xcount *count);
/* Parked batches back to their spans, vetted again first (parked blocks
 * are free memory: a write while parked is caught here). The daemon (all
 * false), at most once per checkpoint (transfer.c, KP_XFER_IDLE_NS): the
 * batches parked since before the previous checkpoint and never taken;
 * it never waits for a class lock (a class busy now is visited at the next
 * checkpoint). kp_thread_flush (all true): every batch. Caller holds no
 * lock. Returns batches given back. */
int kp__xfer_drain(kp_pool *pool, bool all);
/* Take class cls's lock as an allocating thread does (a refill, a flush,
 * a park or a take): tried, then tried again on the CPU for a while
 * (transfer.c, KP_CLASS_SPIN_NS) before it waits in the mutex like anyone
 * else. Every holder keeps it for a batch and never across a system call
 * (but a span carved, which may take the pool lock). Any thread; the
 * daemon uses trylock instead. */
void kp__class_lock_wait(pthread_mutex_t *m);

/* ---- tcache.c: per-thread caches ---------------------------------------- */
/* Make the thread-exit key now (kp_create's first call), not at a thread's
 * first cache inside pthread_once (pool.c: once_init). */
void kp__tcache_keys_init(void);
typedef struct kp__bin {
	void *head; /* encoded list of header addresses */
	uint32_t count, max;
	/* Written only by the owning thread (load + store, no RMW), read by stats. */
	_Atomic uint64_t allocs, frees;
	/* max starts at KP_BIN_START and grows to cap (bin_max) while the bin
	 * misses often and its thread's growth budget lasts (kp__bin_miss);
	 * miss_at: allocs + frees at the last miss, allocs_at: allocs then, both
	 * modulo 2^32 (a window's counts: the bin's age is allocs + frees)
	 * (the window since, one way or both: kp__bin_miss); cls: the bin's
	 * index in its cache (the bin of one on the shared path, alloc.c, has
	 * cap == max and never grows). */
	uint32_t miss_at, allocs_at;
	uint16_t cap, cls;
	bool flushed; /* the last miss was a flush (a full bin), not a refill: kp__bin_miss */
} kp__bin;
/* A bin holds at most this many blocks (tcache.c, bin_max). */
#define KP_BIN_MAX 256
/* And at most this many bytes of its class, whatever tcache_bytes is, as
 * tcmalloc bounds each class's list by bytes (mimalloc keeps no thread
 * cache of big blocks at all): at a quarter of the default 8 MiB a 64 KiB
 * class's bin held 32 blocks, and git's largest process under the preload
 * 3-6 MiB in bins of 16-128 KiB classes (test_tcache_bytes: a 64 KiB bin
 * walked at random, then all its blocks freed, kept 1.9 MiB). Classes of
 * 1 KiB and less still reach KP_BIN_MAX. 256 KiB: kpbench b (16 B-64 KiB)
 * runs 2.6% fewer instructions than with 2 MiB (its small classes grow
 * with the budget the big ones no longer take), 6% more at 128 KiB (a
 * 64 KiB bin of 2 misses at every other operation); git's peak RSS 0.7
 * MiB lower, 1.3 at 128 KiB. */
#define KP_BIN_CLASS_BYTES ((size_t)256 << 10)
/* A lone thread's bin on a big heap grows further, with its budget
 * (tcache.c, KP_TC_SOLO and class_bound), to this many bytes at most. */
#define KP_BIN_SOLO_BYTES ((size_t)1 << 20)
/* A bin of a class of this many bytes or more, in a pool with n threads'
 * caches, grows to KP_BIN_CLASS_BYTES / n at most (tcache.c, big_bin_bound). */
#define KP_BIN_BIG ((size_t)4 << 10)
/* A bin holds at least this many blocks, at its start too: a refill or a
 * two-way flush moves half its max, one block (4 before: 4 blocks of
 * every 128 KiB class a thread touched were outside any bound). */
#define KP_BIN_LEAST 2
/* A bin starts at this many (tcache.c, kp__bin_miss): what a thread caches
 * of a class is memory its spans hold touched, and a small program touching
 * 14 classes pinned 14 x 256 blocks (730 KiB of 900 in test_memory's small
 * program). And at no more than KP_BIN_START_BYTES of its class (at least
 * KP_BIN_LEAST blocks): the start is outside the thread's growth budget,
 * and 16 blocks of every class a thread touched held prodcons's four
 * threads at 1.4 MiB of cached messages of 16-2048 B beside 1 MB live. */
#define KP_BIN_START 16
#define KP_BIN_START_BYTES ((size_t)4096)
/* A bin is young until its thread made this many operations of its class
 * per block of its start (256 for a start of 16 blocks; tcache.c,
 * kp__bin_miss): it does not grow, and a refill of a small class's bin takes
 * a quarter of its start, not half. Short-lived threads (thread_churn: 400
 * operations over 16 classes, 10-120 of each) cached 184 KiB over 8 threads
 * alive at once, 141 without growing and 115 with the quarter refills;
 * their live blocks are 143 KiB (test_bin_young). A thread that keeps using
 * a class is past it within microseconds. */
#define KP_BIN_YOUNG 16
/* Each bin's key stack: stack[cls][i] is K of the bin's (count - i)-th
 * block from the head, so stack[cls][count - 1] is the head's. A block's K is
 * computed once, when it is freed (its header verified) or taken from a
 * span, and kept here, out of line, for its next allocation: that path
 * computes no K at all (it was one AES, or one SipHash, per allocation),
 * and a link rewritten to point at another block is caught by that block's
 * header not verifying under the key its place in the stack holds. The
 * stacks sit at the end of the cache and are never cleared: only the
 * entries below count are read, and only the pages a thread's bins reach
 * are ever touched. A bin's stack (stack[cls], room for its max keys: a
 * pointer apart from the bin, which stays 48 bytes, one lea from its index)
 * starts in its class's start (tcache.c, key_start: a bin starts at
 * KP_BIN_START blocks at most), and moves to a row of keys the first time
 * the bin grows past its start
 * (kp__bin_miss): a thread whose bins stay at their start (most of a
 * program's threads, and most classes of any thread) touches a page or
 * three of stacks, not one page per two classes it uses (keys[cls] rows of
 * 2 KiB: a thread of 17 classes touched 9 pages of them, and thread_churn's
 * 9 threads alive at once 300 KiB in all). A row holds a power of two of
 * keys, 32 to KP_BIN_MAX, the least that holds the bin's max (a bin in
 * keys holds pow2ceil(max) at most): rows are taken from keys in the order
 * bins grow (row_used words so far), and a bin that outgrows its row leaves
 * it in row_free[level] (32 << level keys; its first word links the next)
 * for the next bin that grows to that size. A bin of a random walk settles
 * at 32-64 blocks, a row of 256-512 bytes: rows of 2 KiB, one per class a
 * stride apart, had each grown bin touch its own page or half page
 * (thread_churn: 4-5 pages of rows a thread, small_objects 7, larson 10).
 * At most KP_NCLASS rows of each size are in use at once, and one is taken
 * from row_used only when none is free, so keys never runs out. Owning
 * thread only.
 * Pages: a cache is page-aligned, its header (bins, stack pointers, counts:
 * 4.6 KiB, all written when the cache is made) fills its first page and the
 * start of its second, and the starts of the first KP_FRONT_CLASSES classes
 * (blocks up to 640 bytes) and the first rows follow on that second page; the
 * other classes' starts sit after the rows. So a thread of small blocks whose
 * bins stay near their start touches two pages of its cache (they were
 * spread over 6.7 KiB, at strides of 76 classes, in caches of 306,240 bytes
 * back to back: 3-5 pages a thread, test_tcache_thread_pages). */
#define KP_ROW_LEVELS 4 /* rows of 32, 64, 128 and 256 keys */
_Static_assert(KP_BIN_START < 32 && 32 << (KP_ROW_LEVELS - 1) == KP_BIN_MAX, "rows of 32 to KP_BIN_MAX keys");
#define KP_FRONT_CLASSES 16 /* classes 0-15, blocks of 32-640 bytes: a small program's */
typedef struct __attribute__((aligned(KP_PAGE))) kp__tcache {
	uint64_t pool_id;
	kp_pool *pool;
	kp__bin bin[KP_NCLASS];
	uint64_t *stack[KP_NCLASS];
	/* Large and huge blocks (the bins count the small ones). */
	_Atomic uint64_t allocs, frees, in_use;
	/* The thread's parks and takes of batches (transfer.c; returned stays
	 * 0): written by it alone, summed by kp_stats, folded into the pool's
	 * when the cache is released (kp__xcount). */
	kp__xcount xcount;
	struct kp__tcache *next, *prev; /* the pool's list */
	/* Bytes the bins' max grew by past their start, over all classes: at
	 * most tcache_bytes (kp__bin_miss). Owning thread only. */
	size_t grown;
	/* The idle sweep (tcache.c, bin_sweep): misses of the cache's bins so
	 * far, and each bin's operations (allocs + frees) at the last sweep.
	 * Owning thread only. */
	uint32_t misses;
	uint32_t swept_ops[KP_NCLASS];
	/* Frees of small blocks kp_free's fast path left to primary_free (a
	 * full bin, a damaged block, a pool in another mode). Owning thread
	 * only; tests read it (test_free_fast_modes). */
	uint64_t slow_frees;
	/* Words of keys taken by rows, and the rows left by bins that outgrew
	 * them, by size (see above). Owning thread only. */
	size_t row_used;
	uint64_t *row_free[KP_ROW_LEVELS];
	uint64_t starts_front[KP_FRONT_CLASSES][KP_BIN_START] __attribute__((aligned(64)));
	uint64_t keys[KP_NCLASS * (2 * KP_BIN_MAX - 32)] __attribute__((aligned(64)));
	uint64_t starts_back[KP_NCLASS - KP_FRONT_CLASSES][KP_BIN_START];
} kp__tcache;
/* Caches come from the OS in chunks of 64; the first chunk is mapped by
 * kp_create, so only a pool's 65th thread maps on its allocation path. */
#define KP_TC_CHUNK 64
#define KP_TC_CHUNKS 64			 /* at most 4096 caches per pool; more threads take the shared path */
int kp__tcache_chunk_add(kp_pool *pool); /* caller holds pool->lock */
/* NULL: no cache (the thread's exit hook ran, or none could be made); the
 * caller then takes the shared path, which serves without one. */
kp__tcache *kp__tcache_slow(kp_pool *pool);
/* A bin ran empty or full (a refill or flush follows): double its max, up
 * to its cap, when the last miss was less than KP_BIN_GROW times max
 * operations ago and at the other end of the bin. Returns the count the
 * bin is to hold after the refill or flush: half its max (a quarter for
 * the refill of a bin of 32 or more, tcache.c's KP_REFILL_QUARTER, and of
 * a young one), or, when the operations since its last miss went one way
 * (only allocations before a refill, only frees before a flush), its max
 * (a whole refill) or KP_FLUSH_WHOLE (a whole flush: the bin parked as it
 * is, or, too big to park whole, all but what parks; or, with no other
 * thread's cache to take it, tcache.c's park_ok, all but one block to the
 * spans). Owning thread only. */
unsigned kp__bin_miss(kp__bin *b);
/* keep for kp__tcache_flush_bin: park every block of the bin as one batch,
 * in one step, or keep one if it can not be parked whole. */
#define KP_FLUSH_WHOLE (~0u)
void kp__tcache_flush_bin(kp_pool *pool, kp__tcache *tc, unsigned cls, unsigned keep);
void kp__tcache_release(kp_pool *pool, kp__tcache *tc);
void kp__tcache_fini_pool(kp_pool *pool);
/* The calling thread's critical scopes, kept apart from its caches (which
 * come and go): depth on pool; enter: 0, or -1 when the thread holds scopes
 * on too many pools; exit: false when the thread holds no scope on pool. */
unsigned kp__scope_depth(const kp_pool *pool);
int kp__scope_enter(kp_pool *pool);
bool kp__scope_exit(kp_pool *pool);

/* The thread's slots (kp__tls, with the pagemap's declarations): the
 * caches of the last KP_TLS_SLOTS pools it used, the first the latest. */
static inline kp__tcache *kp__tcache_get(kp_pool *pool, uint64_t id)
{
	if (KP_LIKELY(kp__tls_state.id[0] == id))
		return kp__tls_state.tc[0];
	return kp__tcache_slow(pool);
}
/* A counter of the owning thread, read by any: one writer, so a load and a
 * store (no atomic read-modify-write). On x86-64 one add to memory does
 * both (two instructions fewer on each fast path): its load and store are
 * each a single aligned access, as the relaxed pair's are, and no reader
 * sees anything the pair would not show it. Elsewhere (TSan, other
 * machines) an atomic add: a signal handler's count between a load and a
 * store would be lost, and outline.c's pop_zero tells a handler's
 * allocation during its pop by the heap's count (one add to memory is one
 * instruction: no handler runs inside it). */
#if defined(__x86_64__) && !defined(__SANITIZE_THREAD__)
#define KP_COUNT_ASM 1
#elif defined(__has_feature)
#if defined(__x86_64__) && !__has_feature(thread_sanitizer)
#define KP_COUNT_ASM 1
#endif
#endif
static inline void kp__count_inc(_Atomic uint64_t *c, uint64_t by)
{
#ifdef KP_COUNT_ASM
	__asm__("addq %1, %0" : "+m"(*(uint64_t *)c) : "er"(by));
#else
	atomic_fetch_add_explicit(c, by, memory_order_relaxed);
#endif
}

/* ---- daemon.c ------------------------------------------------------------ */
enum kp__dstate { KP_D_OFF, KP_D_RUNNING, KP_D_STOPPING, KP_D_RESTART };
typedef struct kp__daemon {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	pthread_t thread;
	_Atomic int state;
	_Atomic int wake_pending;
	_Atomic int lock_tid;	  /* glibc's owner id of pool->lock as the daemon took it (kp__pool_lock) */
	_Atomic int parked, reap; /* the thread is out of its passes; it may exit (kp__daemon_park) */
	_Atomic uint64_t wakeups, timer_wakeups, passes, grows, shrinks, refills;
	pthread_cond_t pass_cv;		  /* broadcast after every pass (waiters) */
	_Atomic uint64_t clock_offset_ns; /* added by kp_daemon_step for tests */
	_Atomic uint64_t refilled_at;	  /* backup frees count at the last refill */
	/* The headroom target and what it is made of (daemon.c); written by
	 * the pass (one at a time: the daemon thread or kp_daemon_step under
	 * step_mu), read by stats. */
	pthread_mutex_t step_mu;
	_Atomic size_t target, ready; /* target; pre-faulted free bytes at the front */
	_Atomic uint64_t rate;	      /* bytes/s of net demand, decaying */
	_Atomic uint64_t faulted;     /* bytes the allocation path took before they were pre-faulted */
	/* Pre-faulting is on (daemon.c, prefault_decide): the program writes
	 * what it takes. touch_pct: the share measured; touch_share the same
	 * in 1/65536, over touch_samples pages sampled (probe_rng). */
	_Atomic int prefaulting;
	_Atomic unsigned touch_pct;
	int64_t touch_share;
	uint64_t touch_samples, probe_rng;
	uint64_t last_ns, last_grows, last_shrinks;
	size_t last_headroom;
	/* when the allocation path last took free units (primary.c, run_alloc;
	 * kp__pool_now): a pass long after it finds growth that has stopped */
	_Atomic uint64_t take_ns;
	size_t ahead;	      /* free bytes the pass keeps mapped, pre-faulted or not (daemon_target) */
	unsigned busy_passes; /* consecutive passes that found growth (daemon.c) */
	/* growth past the peak use (daemon_target): the peak at the last pass,
	 * when a pass last found it, and the pre-faulted front it asks for */
	size_t last_peak, front;
	size_t last_purged_taken; /* pool->purged_taken at the last pass */
	size_t ramp;	  /* the most the front may be while growth lasts: doubled when it was overrun (daemon.c) */
	uint64_t ramp_ns; /* when the ramp last doubled */
	uint64_t grow_ns;
	uint64_t refill_ns; /* when a pass last found purged units taken (daemon_target) */
	/* since when growth is measured for slowing down, and what it took */
	uint64_t slow_ns;
	size_t slow_demand;
	/* The thread's wait after a pass (daemon.c, next_wait): the timer's
	 * daemon_interval_ms, or less when the purge has memory to give back
	 * at a checkpoint sooner; hurried: so it was, and purged_at: the
	 * bytes purged so far when that pass began. */
	_Atomic uint64_t wait_ns;
	bool hurried;
	uint64_t purged_at;
	/* The pool's out_bytes and peak_seg_out_bytes at the last pass: a
	 * free that takes out_bytes a quarter or more under the higher of
	 * out_at and a peak set since wakes the daemon (primary.c,
	 * freed_kick). */
	_Atomic size_t out_at, peak_at;
	_Atomic int freed; /* freed_kick woke it: its wait ends at the next checkpoint */
	/* the checkpoints (pool->bpurge_at_ns, purge_at_ns) a kick's pass
	 * found due, waited for until they come, whatever passes come before
	 * (daemon.c, next_wait) */
	bool kick_b, kick_u;
	uint64_t kick_b_ns, kick_u_ns;
} kp__daemon;
int kp__daemon_start(kp_pool *pool);
void kp__daemon_stop(kp_pool *pool);
/* Whether a pool whose daemon starts lazily (the preload's) has work for it
 * yet: it handed out KP_PREFAULT_MIN, or less than that is left to hand out
 * in its segments. Any thread, no lock, never blocks. */
bool kp__daemon_wanted(kp_pool *pool);
bool kp__daemon_park(kp_pool *pool);
void kp__daemon_reap(kp_pool *pool);
void kp__daemon_kick(kp_pool *pool);
void kp__daemon_wait(kp_pool *pool, _Atomic uint64_t *counter, uint64_t deadline_ns);
/* The same, from a value of the counter read before (a change since then
 * ends it at once). */
void kp__daemon_wait_since(kp_pool *pool, _Atomic uint64_t *counter, uint64_t seen, uint64_t deadline_ns);
/* pool->lock as every caller takes it: the daemon politely (never leaves a
 * waiter for an allocating thread's unlock to wake), others plainly. */
void kp__pool_lock(kp_pool *pool);
int kp__daemon_pass(kp_pool *pool);
uint64_t kp__pool_now(kp_pool *pool);

#define KP_BOOST_MAX 3 /* at most 8x the rate-based headroom */
/* The daemon's floor: high_wm, or under high_wm:auto a quarter of the
 * bytes in use, at most 1 MiB. Any thread; no lock. */
size_t kp__daemon_floor(kp_pool *pool);
/* Pre-fault the floor (kp__daemon_floor) of the free units in allocation
 * order and set the wake threshold (kp_create, before the daemon's first
 * pass). */
void kp__daemon_prime(kp_pool *pool);
/* A layout's own headroom, sized by the daemon's rules (daemon_target's rate,
 * boost and share): layout:outline's spare segments (outline.c). demand: the
 * bytes taken since the last call; faulted: some of them were not
 * pre-faulted (or were mapped by the allocation path); held: the bytes in
 * use, of which the headroom is a share. Returns the bytes to keep
 * pre-faulted ahead. The daemon's
 * pass alone (its step lock) calls it and writes *g. */
typedef struct kp__grow {
	uint64_t rate, last_ns, grow_ns, boost_ns;
	unsigned boost, busy;
	/* the written share of the pages its probe sampled (kp__daemon_grow_touch):
	 * a moving average (65536: all), the pages folded in, its percent, and
	 * whether the layout pre-faults past its floor; the probe's generator */
	int64_t touch_share;
	uint64_t touch_samples, probe_rng;
	unsigned touch_pct;
	bool prefaulting;
	/* the last pass's target and rate, for kp_stats (stats.c) from any
	 * thread: the fields above are the daemon's pass's alone */
	_Atomic uint64_t shown_target, shown_rate;
} kp__grow;
size_t kp__daemon_grow_target(kp_pool *pool, kp__grow *g, size_t demand, bool faulted, size_t held);
/* A layout's probe of what the program writes (outline.c: written of sampled
 * pages of its live blocks, all zero or not) folded into g by the inline
 * probe's rules (prefault_touch:N, its hysteresis and sampling error), with
 * the event when pre-faulting turns on or off. Returns whether the layout
 * pre-faults past its floor: off until the samples show the program writes
 * what it takes; always with prefault_touch:0. The daemon's pass alone. */
bool kp__daemon_grow_touch(kp_pool *pool, kp__grow *g, unsigned written, unsigned sampled);

/* ---- pool.c -------------------------------------------------------------- */
struct kp_pool {
	uint64_t id;
	uint64_t magic;	   /* KP_POOL_MAGIC ^ the pool's address while it lives */
	kp_pool *reg_next; /* the registry of live pools */
	kp__key secret;	   /* the key of every tag, link pad, canary and seal */
	kp__conf conf;
	size_t self_size;
	kp__ol *ol; /* layout:outline's state (outline.c), else NULL */
	/* References to this structure's mapping: the pool's own (kp_create to
	 * kp_destroy) and one a thread whose outline slot names the pool
	 * (outline.h, kp__ol_slot_id: the slot holds the pool's address, not its
	 * id). The mapping goes back when the last is dropped (kp__pool_unref),
	 * so that no pool is made at the address a thread's slot still names. */
	_Atomic uint64_t slot_refs;

	pthread_mutex_t lock; /* segments, units, capacity, tcache list */
	kp__seg *segs, *huge;
	kp__seg *huge_cache;	  /* freed huge mappings kept for reuse (huge.c) */
	_Atomic(kp__seg *) limbo; /* released, unmapped after a grace period (pagemap.c) */
	/* Held, before pool->lock, by a thread that has mappings off the pool's
	 * lists on their way out until they are unmapped or on the grace list:
	 * the grace list it reclaims (pagemap.c), kept huge mappings evicted or
	 * expired (huge.c), segments a shrink released (primary.c). fork_prepare
	 * takes it, so no child inherits mappings that nothing holds
	 * (test_fork_held). */
	pthread_mutex_t release_mu;
	/* Kept huge mappings evicted while the daemon gives their pages back
	 * (purging 2): it unmaps them after (huge.c); pool->lock. */
	_Atomic(kp__seg *) huge_evicted;
	/* Segments mapped by kp__primary_grow, not yet linked (primary.c);
	 * pool->lock. */
	kp__seg *growing;
	unsigned huge_ncached;
	_Atomic size_t huge_cached_bytes;
	/* The payloads of the last huge mappings given back (huge.c,
	 * kp__huge_gone): 16, more than a program frees twice in a row in any
	 * double free seen (one, at once); 136 bytes a pool. */
#define KP_HUGE_GONE 16
	_Atomic uintptr_t huge_gone[KP_HUGE_GONE];
	_Atomic unsigned huge_gone_next;
	size_t capacity;    /* bytes of normal segments */
	size_t units_free;  /* free units over all normal segments */
	size_t units_total; /* usable units over all normal segments */
	/* The shortest run units_take took since the daemon's last pass (0:
	 * none; written under lock, taken by the daemon's pass with an
	 * exchange), and the shortest over the passes before it, kept for
	 * decay_ms after such a run was last taken (the daemon's, from
	 * take_min_ns): its front skips free runs shorter than both, which the
	 * allocation path passes over (daemon.c, take_len). */
	_Atomic unsigned take_min, take_min_prev;
	uint64_t take_min_ns;
	/* The runs of units small spans took since the daemon's last pass
	 * (under lock; units_take): their blocks are handed out over the next
	 * bursts, and the part of such a run past the pre-faulted front is no
	 * longer free, so the front never covers it. The daemon's pass
	 * pre-faults what of them is not resident, once (daemon.c,
	 * prefault_taken). */
#define KP_TAKEN_RUNS 16
	struct {
		kp__seg *s;
		uint8_t u, n;
	} taken[KP_TAKEN_RUNS];
	_Atomic unsigned ntaken;  /* written under lock; the pass reads it without */
	_Atomic size_t free_segs; /* normal segments with every unit free */
	_Atomic size_t headroom;  /* units_free * unit size, readable without lock */
	/* bytes of purged free units taken (run_take, kp__large_resize; written
	 * under lock): demand under the peak the daemon pre-faults (daemon.c) */
	_Atomic size_t purged_taken;
	/* bytes of runs taken from units no block has held since they were
	 * mapped, and of new huge mappings: the pool's footprint grown (run_take,
	 * kp__huge_alloc; not units or mappings given back and taken again,
	 * which the daemon's purge makes of memory a steady program takes
	 * again and again). outline.c's large_taken reads it */
	_Atomic size_t fresh_taken;
	_Atomic int backup_mode; /* critical traffic goes to the backup */
	/* The daemon aims at high_wm << grow_boost of headroom. The allocation
	 * path raises the boost each time it had to grow by itself (demand
	 * outran the daemon); it decays after decay_ms without that. */
	_Atomic int grow_boost;
	/* Free units (bytes) under which the allocation path wakes the daemon:
	 * the daemon sets it so that it fires when the pre-faulted part of the
	 * headroom runs low (daemon.c). Written by the daemon without the lock,
	 * read by the allocation path: a relaxed atomic. */
	_Atomic size_t wake_wm;
	size_t canary; /* KP_CANARY with checks on, else 0 */
	_Atomic uint64_t boost_at_ns;
	kp__tcache *tcaches, *tc_free;
	void *tc_chunks[KP_TC_CHUNKS];
	size_t tc_nchunks;
	size_t tc_fresh;	  /* caches of the newest chunk never handed out (its last ones) */
	_Atomic unsigned tc_live; /* caches handed out (tcache.c: they share tcache_bytes) */

	/* The pool's tail (the daemon, the backup's state, the system-call
	 * counts, the pool-wide counters), on the first page with the fields
	 * above: what every program touches here. It had a page of its own
	 * after the transfer arrays (xfer_count shrank from a class's counts
	 * each to one set, 2,960 bytes, and the tail then straddled two pages:
	 * test_pool_pages), and the central lists' class locks a page between:
	 * 3 pages resident on layout:outline, whose small blocks take neither,
	 * 1 now (test_pool_pages_outline, s33). xfer_gen, read by each park,
	 * shares its line with the daemon's xfer_at_ns and the backup's lock
	 * alone. */
	_Alignas(64) _Atomic uint64_t xfer_gen; /* checkpoints of kp__xfer_drain so far */
	uint64_t xfer_at_ns;			/* the next one (the daemon's alone) */
	kp__backup backup;
	kp__daemon daemon;
	kp__oscount os;

	_Atomic int token_given;
	uint64_t token;

	/* pool-wide counters (slow paths); fast-path counters are per tcache */
	_Atomic uint64_t allocs, frees, in_use, failures, grows, shrinks;
	_Atomic size_t out_bytes, peak_out_bytes, huge_bytes;
	/* layout:outline's data segments in use (outline.c, segment_new:
	 * reserved under the pool lock): primary_max bounds them with the
	 * primary's capacity and the huge blocks */
	_Atomic size_t ol_bytes;
	/* out_bytes but for huge blocks, and its peak: the memory in segments
	 * the daemon's demand measures (daemon_target: a huge block freed
	 * leaves no room in segments to grow into again) */
	_Atomic size_t seg_out_bytes, peak_seg_out_bytes;
	_Atomic uint64_t bk_allocs, bk_frees, bk_refusals, bk_enters, bk_leaves;
	_Atomic uint64_t double_frees, invalid_frees, corruptions, bad_sizes;
	_Atomic uint64_t overflows, use_after_frees, freelist_errors, quarantined, faults_injected;
	_Atomic uint64_t waits, wait_successes;
	/* free units given back (kp__primary_purge): runs, bytes that were
	 * resident, and the next checkpoint's time (the daemon's alone) */
	_Atomic uint64_t purges, purged_bytes;
	uint64_t purge_at_ns;
	/* free blocks given back (primary.c, "purging free blocks"), the
	 * daemon's alone: the next checkpoint's time and number, and the blocks
	 * it holds off their lists while it gives their pages back (a pass that
	 * finds some held was cut short by fork: it puts them back first) */
	uint64_t bpurge_at_ns, bpurge_seq;
	unsigned bpurge_n;
	/* what the next checkpoints may give back (primary.c,
	 * kp__primary_purge_due): the whole pages of the free blocks stamped
	 * at the last one, and the resident free units idle at the last one */
	size_t bpurge_pending, purge_pending;
	/* the event log (log_fd): token bucket, refilled per second */
	_Atomic uint64_t log_sec, log_used, log_suppressed;
	int log_fd;	/* 0: no log */
	bool log_owned; /* opened by us from KPOOL_LOG: closed by kp_destroy */
	/* exited threads, and calls served without a cache (tcache.c) */
	_Atomic uint64_t dead_allocs, dead_frees, dead_in_use;
	/* the event ring, its head and first slots on the first page too: a
	 * program logs a few events (the preload's token, a grow) */
	kp__ring ring;
	/* the blocks a purge of free blocks holds off their lists (bpurge_n
	 * above), the daemon's alone and only while it purges: past the ring */
	void *bpurge_blk[KP_BPURGE_BATCH];

	/* the inline primary's central lists, from a line of their own (their
	 * class locks left as the zeroed mapping has them where that is a
	 * default mutex: pool.c, locks_init) */
	_Alignas(64) kp__central central[KP_NCLASS];
	/* transfer.c's counts of exited threads, of the shared path and of
	 * kp__xfer_drain (the live caches keep their own: kp__xcount), beside
	 * the central lists: past the transfer arrays they were a page
	 * resident for them alone (test_pool_pages) */
	kp__xcount xfer_count;
	/* transfer.c; address space until a class uses it. From a line of
	 * their own: the first classes' records, written by each park and
	 * take, away from xfer_count, written by neither */
	_Alignas(64) kp__xfer xfer[KP_NCLASS][KP_XFER_BASE]; /* the first batches of each class; kp__xfer_slot */
	uint64_t xfer_head[KP_NCLASS][KP_XFER_HEAD];
	uint64_t xfer_mid[KP_NCLASS][KP_XFER_MID];
	kp__xfer xfer_more[KP_NCLASS][KP_XFER_SLOTS - KP_XFER_BASE];
	uint64_t xfer_tail[KP_NCLASS][KP_XFER_CLASS_KEYS - KP_XFER_HEAD - KP_XFER_MID];
};
/* Re-evaluate the backup mode after the primary's usage changed (hysteresis).
 * Caller holds pool->lock. */
void kp__backup_mode_update(kp_pool *pool, bool primary_failed);
void kp__account_out(kp_pool *pool, size_t bytes, bool out);
/* The same for a huge block: out_bytes only, not seg_out_bytes. */
void kp__account_huge(kp_pool *pool, size_t bytes, bool out);
/* A pool pointer that is not a live pool is bad input (kpool.h says which
 * calls check what). kp__pool_ok: the magic word, keyed by the address (a
 * pool's bytes copied elsewhere do not pass), one load; for calls that must
 * not read memory that is no pool. kp__pool_live: the registry, which never
 * reads the pointer, so a destroyed (unmapped) pool is refused too; for the
 * lifecycle and observation calls. Both set kp_last_error (and errno EINVAL)
 * on refusal, through kp__not_a_pool. */
/* The lock of class cls's central list: one per pair of classes (the even
 * one's field; the odd one's is unused). fork_prepare holds every class lock
 * across fork, and ThreadSanitizer's deadlock detector tracks at most 64
 * locks held by one thread: with 75 classes (8 per doubling above 1 KiB,
 * test_classes) one lock each was 79 with the pool's others, and TSan's
 * run of test_daemon_start stopped on its CHECK. Neighbouring classes
 * share a lock; each is taken for a batch (a refill, a flush), never two
 * at once. */
#define KP_CLASS_LOCK_STEP 2
static inline pthread_mutex_t *kp__class_lock(kp_pool *pool, unsigned cls)
{
	return &pool->central[cls & ~(KP_CLASS_LOCK_STEP - 1u)].pair_lock;
}
static inline void kp__class_lock_take(kp_pool *pool, unsigned cls)
{
	pthread_mutex_t *m = kp__class_lock(pool, cls);
	if (KP_UNLIKELY(pthread_mutex_trylock(m) != 0))
		kp__class_lock_wait(m);
}
/* Batch i of those parked for class cls (i < KP_XFER_SLOTS): the first
 * KP_XFER_BASE of every class side by side (a class that parks no more
 * touches them alone), the rest apart. Class lock held. */
static inline kp__xfer *kp__xfer_slot(kp_pool *pool, unsigned cls, unsigned i)
{
	return i < KP_XFER_BASE ? &pool->xfer[cls][i] : &pool->xfer_more[cls][i - KP_XFER_BASE];
}
#define KP_POOL_MAGIC 0x6b706f6f6c2d6f6bull /* "kpool-ok" */
static inline bool kp__pool_ok(const kp_pool *pool)
{
	return pool && pool->magic == (KP_POOL_MAGIC ^ (uintptr_t)pool);
}
void kp__not_a_pool(const void *pool, const char *fn);
/* A live pool of layout:outline (alloc.c's dispatch, off the inline fast
 * paths: their thread word never names such a pool, tcache.c). */
static inline bool kp__ol_pool(const kp_pool *pool)
{
	return kp__pool_ok(pool) && pool->ol != NULL;
}
bool kp__pool_live(const kp_pool *pool, const char *fn);
/* The fork handlers and the thread keys, once a process (kp_create's first
 * step; the preload's constructor runs it before any malloc can). */
void kp__pool_once(void);
/* The registry of live pools (for thread exit and fork). */
void kp__registry_lock(void);
void kp__registry_unlock(void);
kp_pool *kp__registry_find(uint64_t id); /* caller holds the registry lock */
/* A reference to pool's structure (its slot_refs) taken and dropped: the
 * last drop unmaps it (a destroyed pool's, once no thread's outline slot
 * names it). Any thread; async-signal-safe (an atomic and a munmap). */
void kp__pool_ref(kp_pool *pool);
void kp__pool_unref(kp_pool *pool);

/* Quarantine a live span of this pool (fault injection). 0 or -1. */
int kp__primary_quarantine_span(kp_pool *pool);

/* ---- stats.c ------------------------------------------------------------- */
/* The primary's counters that are sums over the thread caches (taken under
 * the pool lock); everything else in the stats is one atomic load. */
typedef struct kp__primary_stats {
	uint64_t allocs, frees, in_use;
	size_t capacity, segments, committed;
	unsigned threads;
} kp__primary_stats;
void kp__stats_primary(kp_pool *pool, kp__primary_stats *st);
/* layout:outline's blocks are counted on no fast path: the peak of an
 * outline pool (pool->peak_out_bytes, which backup:auto follows: backup.c)
 * is raised to in_use, the most a kp_stats reading or a daemon's pass
 * (kp__ol_daemon_pass, before kp__backup_grow) found in use: a sample, not
 * every moment's, at least its inline path's own peak. Nothing for an
 * inline pool. Any thread. */
void kp__stats_peak(kp_pool *pool, size_t in_use);
int kp__stats_json(kp_pool *pool, char *buf, size_t len);

static inline bool kp__plausible(kp_pool *pool, const void *h)
{
	unsigned g = kp__grace_enter(); /* the segment's header is read */
	kp__seg *s = kp__pagemap_get(h);
	uintptr_t off = (uintptr_t)h - (uintptr_t)s;
	bool ok = s && s->pool == pool && s->kind == KP_SEG_NORMAL && !(off & (KP_HDR - 1)) && off >= KP_UNIT_SIZE;
	kp__grace_exit(g);
	return ok;
}

#pragma GCC visibility pop

#endif /* KP_INTERNAL_H */
