/*
 * kpool.h - the public contract of libkpool.
 *
 * libkpool is a memory allocator shaped like a kernel allocator:
 *   - a primary pool (size classes in spans, page runs for large blocks,
 *     direct regions for huge ones, a per-thread cache in front),
 *   - a backup pool (a reserve mapped at creation, fenced by guard pages,
 *     serving only privileged critical callers),
 *   - a grow daemon (one thread per pool that keeps the primary sized ahead
 *     of demand, shrinks it after a decay period and keeps the backup ready),
 *   - one module that makes every system call and counts it.
 *
 * Every function here is thread-safe unless its comment says otherwise.
 *
 * A pool argument is NULL or a pool made by kp_create and not yet destroyed.
 * Anything else is bad input: refused (KP_EINVAL, NULL or 0, errno EINVAL,
 * kp_last_error() says "not a live pool"), never written through, and:
 *   - kp_destroy, kp_stats_json, kp_events_drain, kp_fault_inject,
 *     kp_critical_token, kp_daemon_start, kp_daemon_stop, kp_daemon_step and
 *     kp_daemon_wake look the pointer up among the live pools without
 *     reading it: any pointer is refused, a destroyed pool's included;
 *   - the allocation calls (kp_alloc, kp_alloc_aligned, kp_realloc, kp_free,
 *     kp_usable_size), kp_thread_flush, kp_critical_enter and
 *     kp_critical_exit check a magic word in the pool: readable memory that is
 *     no pool is refused, but a destroyed pool (its memory is unmapped) is
 *     undefined, as a freed pointer is to free();
 * Nothing in this header is a macro that touches pool internals: the ABI is
 * the function list below, which the Python binding declares one for one.
 */
#ifndef KPOOL_H
#define KPOOL_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct kp_pool kp_pool;

/* ---- allocation flags -------------------------------------------------- */
#define KP_ZERO 0x1u	 /* the returned memory is zero-filled */
#define KP_CRITICAL 0x2u /* may use the backup pool, inside a critical scope */

/* ---- error codes (negative returns) ------------------------------------ */
#define KP_OK 0
#define KP_EINVAL (-1)	    /* bad argument (NULL pool, bad alignment, ...) */
#define KP_ENOTOURS (-2)    /* pointer never given out by this pool */
#define KP_EDOUBLEFREE (-3) /* block is already free */
#define KP_ECORRUPT (-4)    /* block header or pool metadata damaged */
#define KP_EDENIED (-5)	    /* privilege check failed */
#define KP_ENOMEM (-6)	    /* out of memory */
#define KP_EOVERFLOW (-7)   /* a write ran past the end of the block */

/* ---- lifecycle --------------------------------------------------------- */

/*
 * kp_create - make a pool.
 * conf: "key:value,key:value" (sizes take k/m/g suffixes, booleans on/off).
 *   NULL or "" gives the defaults. The environment variable KPOOL_CONF is
 *   parsed first, then conf, so conf wins.
 * Returns NULL with errno = EINVAL on a bad option (kp_last_error() names the
 * key and the value), or errno = ENOMEM when the OS refuses the initial
 * mappings. May block (it maps and pre-faults memory, starts the daemon).
 */
kp_pool *kp_create(const char *conf);

/*
 * kp_destroy - stop the daemon, unmap every region the pool owns.
 * No other thread may use the pool during or after the call. NULL is a no-op;
 * a pool destroyed already (or any pointer that is no live pool) is refused
 * (kp_last_error), not destroyed twice.
 */
void kp_destroy(kp_pool *pool);

/* The last error message of the calling thread ("" if none). Never NULL. */
const char *kp_last_error(void);

/* ---- allocation -------------------------------------------------------- */

/*
 * kp_alloc - size bytes aligned to 16. size 0 returns a unique non-NULL
 * pointer to a block of usable size >= 0 that must be freed like any other.
 * Returns NULL (and records an event) when memory is exhausted, when size is
 * too large to represent (SIZE_MAX and its neighbours), or pool is NULL;
 * errno is then ENOMEM (EINVAL for a bad pool), so that malloc() can return
 * the result as it is (test_free_try).
 * Does not block on the daemon; takes no lock on the per-thread-cache path.
 */
void *kp_alloc(kp_pool *pool, size_t size, unsigned flags);

/* As kp_alloc, aligned to align: a power of two, at most 4096. Other values
 * return NULL, errno EINVAL and an event; a failure as kp_alloc's, errno
 * ENOMEM. */
void *kp_alloc_aligned(kp_pool *pool, size_t size, size_t align, unsigned flags);

/*
 * kp_realloc - C realloc semantics: p NULL allocates; size 0 frees p and
 * returns NULL; on failure returns NULL and p is untouched. The contents up
 * to min(old usable, size) are kept. A block stays in the pool (primary or
 * backup) that can serve it; KP_ZERO zeroes the grown part.
 */
void *kp_realloc(kp_pool *pool, void *p, size_t size, unsigned flags);

/*
 * kp_free - 0, or KP_ENOTOURS / KP_EDOUBLEFREE / KP_ECORRUPT / KP_EINVAL.
 * NULL returns 0. Bad input never crashes the process: it is reported as an
 * event and the block is left alone.
 */
int kp_free(kp_pool *pool, void *p);

/* Usable bytes of a live block (>= the size asked for); 0 for a pointer that
 * is not a live block of this pool. */
size_t kp_usable_size(kp_pool *pool, const void *p);

/* Return the calling thread's cached blocks for this pool to the pool, and
 * the batches of free blocks the pool holds for its threads' caches (its
 * transfer cache). Threads return their own cache themselves at exit. */
void kp_thread_flush(kp_pool *pool);

/* ---- the critical privilege (thread-scoped, like PF_MEMALLOC) ---------- */

/* The first call returns an unguessable non-zero token; later calls return 0
 * and record a denial event. */
uint64_t kp_critical_token(kp_pool *pool);

/* Open a critical scope on the calling thread. 0, or KP_EDENIED (bad token,
 * or the thread already holds scopes on 16 other pools; an event either
 * way). Scopes nest; each enter needs an exit. A scope lasts until its exit
 * whatever else the thread does (other pools, any number of them, between
 * enter and exit), and belongs to its thread alone: no other thread, not even
 * one started later, ever holds it. A thread that ends inside a scope simply
 * loses it. */
int kp_critical_enter(kp_pool *pool, uint64_t token);
void kp_critical_exit(kp_pool *pool);

/* ---- observation ------------------------------------------------------- */

/* The stats as one JSON object. snprintf-style: returns the length the full
 * object needs (excluding the NUL); writes at most len bytes, NUL-terminated
 * when len > 0. Negative on a bad argument. */
int kp_stats_json(kp_pool *pool, char *buf, size_t len);

enum kp_event_kind {
	KP_EV_NONE = 0,
	KP_EV_GROW = 1,		 /* primary grew (by daemon or allocation path) */
	KP_EV_SHRINK = 2,	 /* primary returned a segment to the OS */
	KP_EV_BACKUP_ENTER = 3,	 /* critical traffic now goes to the backup */
	KP_EV_BACKUP_LEAVE = 4,	 /* the primary recovered; traffic returns */
	KP_EV_BACKUP_ALLOC = 5,	 /* a block served by the backup */
	KP_EV_DENIED = 6,	 /* backup refused to an unprivileged caller */
	KP_EV_OOM = 7,		 /* a request could not be served at all */
	KP_EV_BAD_SIZE = 8,	 /* size/alignment impossible (SIZE_MAX, ...) */
	KP_EV_DOUBLE_FREE = 9,	 /* free of a block already free */
	KP_EV_INVALID_FREE = 10, /* pointer never given out by this pool */
	KP_EV_CORRUPTION = 11,	 /* header or metadata damaged */
	KP_EV_TOKEN = 12,	 /* token handed out, or a bad token/exit */
	KP_EV_OS_FAIL = 13,	 /* the OS refused a call */
	KP_EV_DAEMON = 14,	 /* daemon started / stopped / restarted */
	KP_EV_FAULT_INJECTED = 15,
	KP_EV_OVERFLOW = 16,	   /* write past the end of a block (canary) */
	KP_EV_USE_AFTER_FREE = 17, /* write to a freed block (poison) */
	KP_EV_FREELIST = 18,	   /* a free-list link was damaged */
	KP_EV_QUARANTINE = 19,	   /* a damaged block or span set aside */
	KP_EV_LOG_SUPPRESSED = 20, /* log lines dropped by the rate limit */
	KP_EV__COUNT
};

/* Every text libkpool writes fits, the widest being an integrity verdict
 * after a 16-digit pointer and a 20-digit size (tests/test_event_text.py
 * checks each format at its widest); one that did not would end in "...". */
#define KP_EVENT_TEXT 128

typedef struct kp_event {
	uint64_t seq;		  /* position in the event stream, from 0 */
	uint64_t time_ns;	  /* CLOCK_MONOTONIC */
	uint32_t kind;		  /* enum kp_event_kind */
	uint32_t pool;		  /* KP_POOL_PRIMARY or KP_POOL_BACKUP where relevant */
	uint64_t addr;		  /* address concerned, or 0 */
	uint64_t size;		  /* size concerned, or 0 */
	char text[KP_EVENT_TEXT]; /* NUL-terminated, human-readable */
} kp_event;

#define KP_POOL_PRIMARY 0u
#define KP_POOL_BACKUP 1u

/* Copy up to max events, oldest first, removing them from the ring. The ring
 * keeps the newest events when it is full; the number lost is in the stats
 * ("events_dropped"). One drainer at a time; writers never block. */
size_t kp_events_drain(kp_pool *pool, kp_event *out, size_t max);

/* The name of an event kind ("grow", "double_free", ...); "unknown" else. */
const char *kp_event_name(unsigned kind);

/* ---- options ----------------------------------------------------------- */

typedef struct kp_option_info {
	const char *name;
	const char *kind; /* "size", "int", "bool", "percent" */
	const char *deflt;
	const char *help;
} kp_option_info;

/* The option table: returns its length and sets *out to it. Static data. */
size_t kp_options(const kp_option_info **out);

/* ---- fault injection ---------------------------------------------------- */

/*
 * kp_fault_inject - make OS calls fail on purpose, or damage the pool on
 * purpose, so that failover and containment are exercised (like Linux's
 * failslab). spec: items separated by ';' or spaces:
 *   KIND@nth=N       fail the Nth call of KIND from now (once)
 *   KIND@every=N     fail every Nth call of KIND
 *   KIND@p=F[@seed=S] fail each call of KIND with probability F (0..1)
 *   KIND@off         stop injecting into KIND
 *   corrupt@span     quarantine a live primary span as if found corrupt
 *   corrupt@header   damage the header of a block in the caller's cache
 *   corrupt@freelist damage a free-list link in the caller's cache
 * KIND: mmap, munmap, madvise, mprotect, other, or all. Each injected fault
 * records a fault_injected event. 0, or KP_EINVAL (kp_last_error() says
 * which item was wrong; items before it took effect).
 */
int kp_fault_inject(kp_pool *pool, const char *spec);

/* ---- testing hooks ----------------------------------------------------- */

/* Run one daemon pass now on the calling thread, as if the timer fired with
 * the clock advanced by advance_ms (so decay can be tested without sleeping).
 * Returns the number of actions taken (grows + shrinks), or KP_EINVAL (errno
 * EINVAL, kp_last_error() and a daemon event say why) when the steps would
 * move the pool's clock past 2^62 ns in all (146 years): it would wrap. */
int kp_daemon_step(kp_pool *pool, uint64_t advance_ms);

/* Wake the daemon (what the allocation path does at a watermark). */
void kp_daemon_wake(kp_pool *pool);

/*
 * kp_daemon_start - start the daemon of a pool made with daemon:off, or the
 * one a fork child lost, now, on the calling thread: for a caller that must
 * choose when the thread starts (the preload library starts it lazily, never
 * while the pool is being made). 0 when the daemon runs after the call (also
 * if it ran already); KP_ENOMEM when no thread could be made (an event says
 * why); KP_EINVAL for NULL (any other pointer must be a live pool). It calls
 * pthread_create, which allocates through malloc: a malloc built on this
 * pool calls it where a malloc may run, holding no lock of its own. Not
 * concurrently with kp_daemon_stop or kp_destroy of the same pool.
 */
int kp_daemon_start(kp_pool *pool);

/*
 * kp_daemon_stop - stop the daemon and wait for its thread to end (at most
 * one pass); from then on the allocation path grows the primary itself. In a
 * fork child it cancels the pending restart (the allocation path would
 * otherwise start the thread at its next slow path, under its own locks).
 * A pool without a daemon: no-op. Not concurrently with kp_daemon_start.
 */
void kp_daemon_stop(kp_pool *pool);

#ifdef __cplusplus
}
#endif
#endif /* KPOOL_H */
