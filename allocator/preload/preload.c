/*
 * preload.c - libkpool-preload.so: the C allocation API (malloc, free,
 * calloc, realloc, reallocarray, posix_memalign, aligned_alloc, memalign,
 * valloc, pvalloc, malloc_usable_size and glibc's __libc_* entry points) and
 * C++'s operators new and delete over one kpool pool, for any dynamically
 * linked program:
 *
 *     LD_PRELOAD=libkpool-preload.so program ...
 *
 * The library holds libkpool's objects and exports only the functions in
 * preload.map, so a program that also loads libkpool.so (the Python binding)
 * gets a second, independent copy, never a mix of the two.
 *
 * The traps, and what this file does about each:
 *   - malloc before any constructor ran, even before libc set up the
 *     environment: until `environ` exists (KPOOL_CONF cannot be read
 *     before), allocations come from a static bootstrap buffer; once this
 *     library's constructor ran, an empty `environ` is a program's
 *     clearenv(), and the pool is made with the defaults;
 *   - an address-space limit (RLIMIT_AS) the default layout's mappings do
 *     not fit: the pool is made with layout:inline;
 *   - allocation while the pool is being made: the thread making it is
 *     marked, and whatever it allocates meanwhile (through libc) comes from
 *     the bootstrap buffer; no dlsym, no recursion, other threads wait;
 *   - the daemon: the pool is made with daemon:off, and the thread is
 *     started by kp_daemon_start from the allocation call of a thread that
 *     made `daemon_after` allocations, once the pool has work for it (1 MiB
 *     handed out, or in use on layout:outline), after this library's constructor ran, with no kpool lock
 *     held (pthread_create allocates); never in the constructor, never while
 *     the pool is being made. A program that allocates little, or often but
 *     within 1 MiB, never gets the thread;
 *   - fork: the child's pending restart is cancelled in an atfork handler
 *     (the allocation path would restart it under its own locks, and
 *     pthread_create's calloc would come back to them); the child's next
 *     allocation starts it, so a child that only execs never pays for it;
 *     this layer's own two locks (the event sweep's, the big alignments'
 *     table's) are held across fork, so the child finds them free; the
 *     fork handlers are registered by the constructor, never by a malloc
 *     (one inside pthread_atfork waited for glibc's atfork lock);
 *   - thread exit with cached blocks: libkpool's own key destructor returns
 *     them (tcache.c);
 *   - a pointer the pool never gave out: bootstrap blocks are never freed
 *     (free is a no-op, realloc copies them out, malloc_usable_size knows
 *     their size); anything else is an invalid free;
 *   - malloc from a signal handler that interrupted malloc (not
 *     async-signal-safe, as glibc's is not): a slow path that needs a lock
 *     its own thread holds aborts with one line (pool.c: kp__mutex_lock),
 *     a cache list the interrupted call left half made is found by the
 *     checks and reported; never a wait for itself forever;
 *   - main ending by pthread_exit: the daemon ends its thread once the
 *     program's have all ended, and glibc's exit(0) follows (daemon.c);
 *   - alignments above the pool's 4096: an over-sized block and a table of
 *     the aligned pointers handed out (looked up only for pointers aligned
 *     to 8 KiB or more, and only while the table is not empty).
 *
 * The common path makes no call of its own (tests/test_preload_instructions.py
 * counts what it adds): malloc subtracts one from a thread-local count
 * (me.fast) and jumps to kp__malloc (kp_alloc's fast path, alloc.c), which
 * sets errno itself; free jumps to kp__free_try
 * (alloc.c), which frees on kp_free's fast path and hands anything else to
 * kp__free_miss here (NULL, the bootstrap buffer, big alignments, reports);
 * calloc takes kp_alloc's fast path and zeroes. What is due now and then
 * (making the pool, the daemon's start, the sweep, a critical scope's
 * flags) waits for the call that finds the count at 0 (alloc_look).
 *
 * Integrity: free() and realloc() of a bad pointer, and the events kpool
 * records on its own (an overflow found when realloc moves a block, a write
 * after free found at reuse, a damaged free list; swept every SWEEP_EVERY
 * allocations of a thread and at exit), print one line to stderr in the
 * format of kpool's event log (the event, the address, the size class) and
 * abort(); with on_error:log they print the line and the program goes on.
 * Either way the event is in the pool's log (KPOOL_LOG / log_fd) and in the
 * figures written at exit.
 *
 * Settings, KPOOL_PRELOAD="key:value,...": on_error (abort | log),
 * daemon_after (allocations of one thread before the daemon may start),
 * bootstrap (testing: serve the first N allocations from the bootstrap
 * buffer, as if the pool did not exist yet). KPOOL_CONF configures the pool
 * as for kp_create. KPOOL_STATS_OUT names a folder: each process writes
 * kpool-<pid>.json there at exit (its stats, integrity events, settings),
 * and kpool-<pid>.signal if a fault signal kills it (fault_record).
 *
 * System calls: this layer writes its error line and its figures itself
 * (write, open, close, getpid); every call libkpool makes goes through os.c
 * as always.
 */
#define _GNU_SOURCE
#include "kpool-preload.h"
#include "kpool.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* free()'s entries in alloc.c, and whether the pool has work for its daemon
 * yet (daemon.c; both in internal.h): libkpool's own, linked into this
 * library. kp__free_try frees a block on kp_free's fast path and hands
 * anything else to kp__free_miss, which this file defines; the
 * other two keep errno as it was. */
#define HIDDEN __attribute__((visibility("hidden")))
int kp__free_quiet(kp_pool *pool, void *p) HIDDEN;
int kp__free_try(void *p, uint64_t tag) HIDDEN;
void *kp__malloc(size_t size, uint64_t tag) HIDDEN;
uint64_t kp__pool_tag(const kp_pool *pool) HIDDEN;
int kp__free_rest_quiet(kp_pool *pool, void *p, bool tried) HIDDEN;
int kp__free_miss(kp_pool *pool, void *p, bool tried) HIDDEN;
bool kp__daemon_wanted(kp_pool *pool) HIDDEN;
/* The library's lock taker (pool.c): a thread that already holds the lock
 * (a handler that interrupted its own sweep or big-block walk) aborts with
 * one line, never waits for itself. */
int kp__mutex_lock(pthread_mutex_t *m);
void kp__pool_once(void) HIDDEN;

#define API __attribute__((visibility("default")))
#define TLS __thread __attribute__((tls_model("initial-exec")))
/* The large arrays, which a program touches a page or none of (the bootstrap
 * buffer, the records of integrity events, the table of big alignments), go
 * to .lbss, which the linker places after .bss: the small state every call
 * reads shares one page instead of sitting in the pages between them (three
 * pages of bss resident in a small program, now one;
 * tests/test_preload.py). */
#define LARGE __attribute__((section(".lbss")))
#define LIKELY(x) __builtin_expect(!!(x), 1)
#define UNLIKELY(x) __builtin_expect(!!(x), 0)

extern char **environ;

/* ---- settings ------------------------------------------------------------ */

/* A malformed KPOOL_PRELOAD or KPOOL_CONF ends the program with this status,
 * after one line on stderr: the shell's "command could not be run". */
#define EXIT_CONF 127
/* Allocations of one thread before the daemon starts: past the few hundred
 * a program makes while it loads its libraries and runs their constructors,
 * so short commands (ls, true, a compiler driver) never start the thread,
 * and a program that allocates in earnest has it within microseconds. */
#define DAEMON_AFTER_DEFAULT 1000
/* Past daemon_after, how often (allocation calls of a thread) the pool is
 * asked whether it has work for the daemon (kp__daemon_wanted: 1 MiB handed
 * out): a program of a few MiB a second crosses it within a few
 * milliseconds of the check that would have seen it, long before its
 * first segment runs out; malloc's common path pays nothing for it
 * (alloc_look arms me.fast for DAEMON_POLL calls at most while it pends).
 * 1024, with the sweeps: an outline pool's answer walks its spans
 * (kp__ol_wanted), and at every 64th call that walk cost `traps busy`
 * (never 1 MiB in use) 390,000 of its 37.1 M instructions under callgrind;
 * 24,500 of 36.0 M at every 1024th. */
#define DAEMON_POLL 1024
/* Allocations of one thread between two sweeps of the event ring for the
 * integrity events kpool found on its own: a sweep takes the registry lock,
 * so once per 1024 calls costs nothing measurable. */
#define SWEEP_EVERY 1024

enum on_error { ON_ERROR_ABORT, ON_ERROR_LOG };

static struct {
	enum on_error on_error;
	unsigned long daemon_after;
	unsigned long bootstrap;
	bool daemon; /* KPOOL_CONF's daemon key (the pool's default: on) */
	/* the pool made with primary_initial:0 (pool_make): KPOOL_CONF names
	 * neither primary_initial nor a layout other than outline */
	bool lazy_primary;
} cfg = {ON_ERROR_ABORT, DAEMON_AFTER_DEFAULT, 0, true, true};

static void say(const char *s)
{
	ssize_t n = write(2, s, strlen(s));
	(void)n;
}

static __attribute__((noreturn)) void conf_fail(const char *what, const char *item, size_t len)
{
	char line[256];
	snprintf(line, sizeof line, "kpool-preload: %s: bad item '%.*s' (%s)\n", "KPOOL_PRELOAD", (int)len, item, what);
	say(line);
	_exit(EXIT_CONF);
}

static bool eq(const char *s, size_t n, const char *lit)
{
	return n == strlen(lit) && !memcmp(s, lit, n);
}

static bool number(const char *s, size_t n, unsigned long *out)
{
	unsigned long v = 0;
	if (!n || n > 12)
		return false;
	for (size_t i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return false;
		v = v * 10 + (unsigned long)(s[i] - '0');
	}
	*out = v;
	return true;
}

/* The length of s up to its first c or its end: strcspn, whose SSE4.2 code
 * sits in a 64 KiB window of libc that a small program otherwise never
 * touches (tests/test_create_libc.c). */
static size_t item_len(const char *s, char c)
{
	size_t n = 0;
	while (s[n] && s[n] != c)
		n++;
	return n;
}

/* KPOOL_PRELOAD, read without allocating (the pool does not exist yet). */
static __attribute__((noinline)) void settings_load(void)
{
	const char *s = getenv("KPOOL_PRELOAD");
	while (s && *s) {
		size_t len = item_len(s, ',');
		const char *colon = memchr(s, ':', len);
		if (len) {
			if (!colon)
				conf_fail("expected key:value", s, len);
			size_t klen = (size_t)(colon - s), vlen = len - klen - 1;
			const char *v = colon + 1;
			if (eq(s, klen, "on_error")) {
				if (eq(v, vlen, "abort"))
					cfg.on_error = ON_ERROR_ABORT;
				else if (eq(v, vlen, "log"))
					cfg.on_error = ON_ERROR_LOG;
				else
					conf_fail("on_error takes abort or log", s, len);
			} else if (eq(s, klen, "daemon_after")) {
				if (!number(v, vlen, &cfg.daemon_after))
					conf_fail("daemon_after takes a count of allocations", s, len);
			} else if (eq(s, klen, "bootstrap")) {
				if (!number(v, vlen, &cfg.bootstrap))
					conf_fail("bootstrap takes a count of allocations", s, len);
			} else {
				conf_fail("keys: on_error, daemon_after, bootstrap", s, len);
			}
		}
		s += len + (s[len] == ',');
	}
	/* The pool is made with daemon:off; whether the program wants one is
	 * KPOOL_CONF's last daemon item (kp_create validates the value). */
	const char *c = getenv("KPOOL_CONF");
	while (c && *c) {
		while (*c == ' ' || *c == '\t') /* as conf.c reads an item */
			c++;
		size_t len = item_len(c, ',');
		if ((len >= 16 && !memcmp(c, "primary_initial:", 16)) ||
		    (len >= 7 && !memcmp(c, "layout:", 7) && !eq(c + 7, len - 7, "outline")))
			cfg.lazy_primary = false;
		if (len > 7 && !memcmp(c, "daemon:", 7)) {
			const char *v = c + 7;
			size_t vlen = len - 7;
			cfg.daemon = !(eq(v, vlen, "off") || eq(v, vlen, "0") || eq(v, vlen, "false") ||
				       eq(v, vlen, "OFF") || eq(v, vlen, "Off") || eq(v, vlen, "FALSE"));
		}
		c += len + (c[len] == ',');
	}
}

/* ---- the bootstrap buffer ------------------------------------------------ */

/* Serves what is allocated before the pool exists: by ld.so and libc before
 * the environment is set, and by libc while kp_create runs (a few hundred
 * bytes). 1 MiB of .bss costs no memory until touched. Blocks are never
 * reused: free is a no-op. */
#define BOOT_SIZE (1u << 20)
#define BOOT_HDR 16u
static _Alignas(4096) char boot[BOOT_SIZE] LARGE;
static _Atomic size_t boot_used;
static _Atomic uint64_t boot_allocs, boot_frees;

static bool in_boot(const void *p)
{
	return (uintptr_t)p - (uintptr_t)boot < BOOT_SIZE; /* one compare: below boot wraps round */
}

static size_t boot_size(const void *p)
{
	size_t n;
	memcpy(&n, (const char *)p - BOOT_HDR, sizeof n);
	return n;
}

static void *boot_alloc(size_t size, size_t align, bool zero)
{
	(void)zero; /* .bss is zero and never reused */
	if (align < BOOT_HDR)
		align = BOOT_HDR;
	size_t used = atomic_load(&boot_used), start, end;
	do {
		start = (used + BOOT_HDR + align - 1) & ~(align - 1);
		if (start > BOOT_SIZE || size > BOOT_SIZE - start) {
			errno = ENOMEM;
			return NULL;
		}
		end = (start + size + 15) & ~(size_t)15;
	} while (!atomic_compare_exchange_weak(&boot_used, &used, end));
	memcpy(boot + start - BOOT_HDR, &size, sizeof size);
	atomic_fetch_add(&boot_allocs, 1);
	return boot + start;
}

/* ---- the pool ------------------------------------------------------------ */

enum { P_NONE, P_CREATING, P_READY };
static _Atomic(kp_pool *) pool_ptr;
/* pool_ptr's tag (alloc.c, kp__pool_tag), which malloc and free pass to
 * libkpool for it: stored with pool_ptr, 1 (NULL's tag: test_free_try.c)
 * until then. */
static _Atomic uint64_t pool_tag = 1;
static _Atomic int pool_state;
static uint64_t token;
/* This layer's thread-local state, one block: one GOT load per call reaches
 * all of it (each thread-local variable of a -fPIC library has a GOT entry
 * of its own).
 *
 * fast: how many more allocation calls of this thread may go straight to
 * libkpool (the pool made, no critical scope, no daemon start or sweep due
 * before); the call that finds it 0 takes alloc_look, which does what is
 * due and sets it again (armed: what it was set to). So the common path
 * tests one word for all of it, and counts nothing else: calls is the
 * count at the last look, calls + armed - fast the thread's true count.
 * Signed: malloc takes a call by one subtract from it and tests the sign
 * (fast_take), and a call that finds it 0 leaves it at -1 until its look
 * sets it again; every test of it is > 0. */
static TLS struct {
	long fast;	     /* allocation calls left before the next look (above) */
	unsigned long armed; /* fast as the last look set it */
	unsigned long calls; /* allocation calls of this thread, to the last look */
	int *err;	     /* this thread's errno (realloc), set by the first look */
	unsigned crit_depth; /* critical scopes this thread holds */
	bool creating;	     /* this thread is inside kp_create */
} me;

/* The next allocation call of this thread takes alloc_look (a critical
 * scope opened, a fork child's daemon to start). */
static void look_next(void)
{
	me.calls += me.armed - (unsigned long)(me.fast > 0 ? me.fast : 0);
	me.armed = 0;
	me.fast = 0;
}

/* One allocation call taken off me.fast: true when it was above 0 (the call
 * may go straight to libkpool). x86-64: one subtract from memory and the
 * sign's branch, where a load, a test, a branch, a subtract and a store
 * were (3 instructions a malloc fewer: s39-small, small_objects under
 * callgrind). A call that finds it 0 leaves -1 there, which its look
 * replaces (malloc_look); a signal handler's call in between subtracts
 * again, finds it below 0 too and takes the look, never the fast path
 * (the pool may not be made). One instruction to memory, so a handler's
 * call never lands between its load and its store. */
static inline __attribute__((always_inline)) bool fast_take(void)
{
#ifdef __x86_64__
	bool neg;
	__asm__ volatile("subq $1, %0" : "+m"(me.fast), "=@ccs"(neg));
	return !neg;
#else
	if (me.fast > 0) {
		me.fast--;
		return true;
	}
	return false;
#endif
}

/* The daemon: D_AFTER, start at the daemon_after-th allocation of a thread;
 * D_NOW, at the next one (a fork child). */
enum { D_NONE, D_AFTER, D_NOW };
static _Atomic int daemon_pending;
static _Atomic bool daemon_started;
static _Atomic bool ctor_done;

static void fork_prepare(void);
static void fork_parent(void);
static void after_fork_child(void);

/* kp_create refused the pool. The OS refused the default layout's
 * mappings (ENOMEM): its slice map is 16 GiB of address space (outline.c),
 * past any RLIMIT_AS (`ulimit -v`) under that, and no program ran
 * (test_preload_rlimit_as_attack31): the inline layout, which maps only
 * what it uses. A bad setting (EINVAL), or no pool either way, ends the
 * program with one line. Out of line: pool_make is in the text every
 * program keeps (hot.txt), this is not. */
static __attribute__((noinline, cold)) kp_pool *pool_refused(void)
{
	kp_pool *p = errno == ENOMEM ? kp_create("daemon:off,layout:inline") : NULL;
	if (!p) {
		char line[320];
		snprintf(line, sizeof line, "kpool-preload: cannot make the pool: %s\n", kp_last_error());
		say(line);
		_exit(EXIT_CONF);
	}
	return p;
}

/* noinline, as settings_load: functions of their own, as hot.txt names them
 * (inlined, they went into a clone of pool_get outside the hot text). */
static __attribute__((noinline)) kp_pool *pool_make(void)
{
	int st = P_NONE;
	if (!atomic_compare_exchange_strong(&pool_state, &st, P_CREATING)) {
		while (atomic_load(&pool_state) == P_CREATING)
			sched_yield();
		return atomic_load(&pool_ptr);
	}
	me.creating = true;
	int saved = errno;
	/* primary_initial:0 on the default layout: its small blocks are
	 * outline.c's, and the inline primary serves only blocks over 64 KiB
	 * (and alignments past a page); its first segment mapped at kp_create
	 * kept 24 KiB resident in every program that never asks for one (its
	 * header, 12, and the page map's entries for it, 12: the root's page in
	 * .lbss, a leaf's, the flat map's; tests/test_preload.py's anonymous
	 * memory). The first such block maps it (as a huge block maps its own),
	 * and the daemon keeps its headroom from then on (daemon.c,
	 * kp__daemon_wanted). A pool that falls back to layout:inline maps one
	 * (pool.c, kp_create). */
	kp_pool *p = kp_create(cfg.lazy_primary ? "daemon:off,primary_initial:0" : "daemon:off");
	if (UNLIKELY(!p))
		p = pool_refused();
	token = kp_critical_token(p);
	atomic_store(&daemon_pending, cfg.daemon ? D_AFTER : D_NONE);
	atomic_store_explicit(&pool_tag, kp__pool_tag(p), memory_order_release);
	atomic_store_explicit(&pool_ptr, p, memory_order_release);
	atomic_store(&pool_state, P_READY);
	me.creating = false;
	errno = saved;
	return p;
}

static _Atomic bool settings_loaded;

/* The pool, or NULL while allocations must come from the bootstrap buffer. */
static inline kp_pool *pool_get(void)
{
	kp_pool *p = atomic_load_explicit(&pool_ptr, memory_order_acquire);
	if (LIKELY(p))
		return p;
	/* No environment yet, before this library's constructor: libc has not
	 * set it up. After it, none is a program's clearenv(), which got every
	 * block from the bootstrap buffer until its 1 MiB ran out
	 * (test_preload_clearenv_attack31): the pool, with the defaults. */
	if (me.creating || (!environ && !atomic_load_explicit(&ctor_done, memory_order_relaxed)))
		return NULL;
	if (!atomic_load(&settings_loaded)) {
		settings_load(); /* idempotent: racing threads write the same values */
		atomic_store(&settings_loaded, true);
	}
	if (cfg.bootstrap && atomic_load(&boot_allocs) < cfg.bootstrap)
		return NULL;
	return pool_make();
}

static __attribute__((noinline)) void daemon_maybe_start(kp_pool *p, int pend)
{
	if (!atomic_load(&ctor_done) || me.creating)
		return;
	if (pend == D_AFTER && (me.calls < cfg.daemon_after || !kp__daemon_wanted(p)))
		return;
	if (!atomic_compare_exchange_strong(&daemon_pending, &pend, D_NONE))
		return;
	if (kp_daemon_start(p) == 0)
		atomic_store(&daemon_started, true);
}

/* This layer's own locks, defined below with what they guard. */
static pthread_mutex_t drain_lock, big_lock;

/* fork() holds this layer's two locks across itself, so the child finds
 * them free and what they guard whole: a thread that held one when another
 * forked left it held in the child forever, and the child's exit (its
 * sweep) or its free of a big alignment's block hung (7 of 100 children of
 * a program with two allocating threads; test_preload_fork_locks_attack31).
 * Order: drain_lock before pool.c's registry lock (as a sweep takes them),
 * big_lock a leaf (no lock is taken under it). */
static void fork_prepare(void)
{
	kp__mutex_lock(&drain_lock);
	kp__mutex_lock(&big_lock);
}

static void fork_parent(void)
{
	pthread_mutex_unlock(&big_lock);
	pthread_mutex_unlock(&drain_lock);
}

static void after_fork_child(void)
{
	fork_parent(); /* the forking thread, the child's one, holds them */
	kp_pool *p = atomic_load(&pool_ptr);
	if (!p || !atomic_load(&daemon_started))
		return;
	kp_daemon_stop(p); /* the parent's thread did not survive: cancel the restart under kpool's locks */
	atomic_store(&daemon_started, false);
	atomic_store(&daemon_pending, D_NOW);
	look_next(); /* the child's one thread is this one */
}

/* ---- integrity ----------------------------------------------------------- */

/* The integrity events kept for the figures written at exit. */
#define RECORDS 64
static struct record {
	unsigned kind;
	uint64_t addr, size, time_ns;
	char call[24]; /* the longest call named: "a check of kpool's own" (22 and its NUL) */
	char text[KP_EVENT_TEXT];
} records[RECORDS] LARGE;
static _Atomic uint64_t integrity_total;
static pthread_mutex_t drain_lock = PTHREAD_MUTEX_INITIALIZER;

static bool is_integrity(unsigned kind)
{
	switch (kind) {
	case KP_EV_DOUBLE_FREE:
	case KP_EV_INVALID_FREE:
	case KP_EV_CORRUPTION:
	case KP_EV_OVERFLOW:
	case KP_EV_USE_AFTER_FREE:
	case KP_EV_FREELIST: return true;
	default: return false;
	}
}

static void stats_write(kp_pool *p);

/* One integrity event: the line (kpool's event-log format, so that triage
 * reads it as it reads the log), the record, and abort unless on_error:log. */
static void report(kp_pool *p, const kp_event *ev, const char *call)
{
	uint64_t n = atomic_fetch_add(&integrity_total, 1);
	if (n < RECORDS) {
		struct record *r = &records[n];
		r->kind = ev->kind;
		r->addr = ev->addr;
		r->size = ev->size;
		r->time_ns = ev->time_ns;
		snprintf(r->call, sizeof r->call, "%s", call);
		memcpy(r->text, ev->text, sizeof r->text);
	}
	char line[256];
	bool stop = cfg.on_error == ON_ERROR_ABORT;
	snprintf(line, sizeof line, "kpool %llu.%03llu %s %s in %s; %s\n",
		 (unsigned long long)(ev->time_ns / 1000000000ull),
		 (unsigned long long)(ev->time_ns % 1000000000ull / 1000000), kp_event_name(ev->kind), ev->text, call,
		 stop ? "abort" : "going on");
	say(line);
	if (stop) {
		stats_write(p);
		abort();
	}
}

/* Drain the event ring and report its integrity events; the one about addr
 * (if any) is attributed to call. Returns whether it was found. When busy is
 * allowed to skip (a periodic sweep), another thread is draining already. */
static bool sweep(kp_pool *p, const void *addr, const char *call, bool may_skip)
{
	if (may_skip) {
		if (pthread_mutex_trylock(&drain_lock) != 0)
			return false;
	} else {
		kp__mutex_lock(&drain_lock);
	}
	kp_event ev[16];
	bool found = false;
	for (;;) {
		size_t n = kp_events_drain(p, ev, sizeof ev / sizeof ev[0]);
		for (size_t i = 0; i < n; i++) {
			if (!is_integrity(ev[i].kind))
				continue;
			bool mine = addr && ev[i].addr == (uintptr_t)addr && !found;
			found |= mine;
			if (cfg.on_error == ON_ERROR_ABORT)
				pthread_mutex_unlock(&drain_lock); /* report does not return */
			report(p, &ev[i], mine ? call : "a check of kpool's own");
			if (cfg.on_error == ON_ERROR_ABORT)
				kp__mutex_lock(&drain_lock);
		}
		if (n < sizeof ev / sizeof ev[0])
			break;
	}
	pthread_mutex_unlock(&drain_lock);
	return found;
}

/* An integrity event that is in no pool's ring: made here and reported. */
static void report_unlogged(kp_pool *p, const void *addr, const char *call, unsigned kind, const char *text)
{
	kp_event ev;
	memset(&ev, 0, sizeof ev);
	ev.kind = kind;
	ev.addr = (uintptr_t)addr;
	snprintf(ev.text, sizeof ev.text, "%s", text);
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	ev.time_ns = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
	report(p, &ev, call);
}

/* free()/realloc() got an error code for addr: report its event. */
static void bad_pointer(kp_pool *p, const void *addr, const char *call, int code)
{
	if (sweep(p, addr, call, false))
		return;
	/* The ring lost it (full): say what the return code says. */
	report_unlogged(p, addr, call,
			code == KP_EDOUBLEFREE ? KP_EV_DOUBLE_FREE
			: code == KP_EOVERFLOW ? KP_EV_OVERFLOW
			: code == KP_ECORRUPT  ? KP_EV_CORRUPTION
					       : KP_EV_INVALID_FREE,
			kp_last_error());
}

/* ---- alignments above the pool's ----------------------------------------- */

/* The pool aligns to at most 4096. A larger alignment takes a block of
 * size + align and hands out the aligned address inside it; this table maps
 * those addresses back to their blocks. 4096 live blocks of 8 KiB alignment
 * or more is far more than programs hold (page tables, DMA-like buffers);
 * past it, the call fails with ENOMEM. */
#define POOL_ALIGN_MAX 4096u
#define BIG_SLOTS 4096u
#define BIG_TOMB ((uintptr_t)1)
static struct {
	uintptr_t user;
	void *base;
} big[BIG_SLOTS] LARGE;
static _Atomic size_t big_live;
static pthread_mutex_t big_lock = PTHREAD_MUTEX_INITIALIZER;

static size_t big_hash(uintptr_t user)
{
	return (size_t)((user >> 13) * 0x9e3779b97f4a7c15ull >> 52) % BIG_SLOTS;
}

/* Can p be one of ours (aligned as they all are, and some live)? Inline,
 * so that free() of any other pointer makes no call for it. */
static inline bool big_maybe(const void *p)
{
	return !((uintptr_t)p & (2 * POOL_ALIGN_MAX - 1)) && atomic_load_explicit(&big_live, memory_order_relaxed);
}

/* Is p one of ours, and its block? Removes it when take. */
static void *big_find(const void *p, bool take)
{
	uintptr_t u = (uintptr_t)p;
	if (!big_maybe(p))
		return NULL;
	void *base = NULL;
	kp__mutex_lock(&big_lock);
	for (size_t i = big_hash(u), k = 0; k < BIG_SLOTS && big[i].user; i = (i + 1) % BIG_SLOTS, k++)
		if (big[i].user == u) {
			base = big[i].base;
			if (take) {
				big[i].user = BIG_TOMB;
				atomic_fetch_sub(&big_live, 1);
			}
			break;
		}
	pthread_mutex_unlock(&big_lock);
	return base;
}

static void *big_alloc(kp_pool *p, size_t align, size_t size, unsigned flags)
{
	if (size > SIZE_MAX - align) {
		errno = ENOMEM;
		return NULL;
	}
	char *base = kp_alloc(p, size + align, flags);
	if (!base) {
		errno = ENOMEM;
		return NULL;
	}
	/* Past the block's start, even when base is aligned already: a pointer
	 * at a block's start is one kp_free's fast path would free, and its
	 * entry here would stay (kp__free_miss). */
	uintptr_t u = ((uintptr_t)base + align) & ~(uintptr_t)(align - 1);
	bool stored = false;
	kp__mutex_lock(&big_lock);
	for (size_t i = big_hash(u), k = 0; k < BIG_SLOTS; i = (i + 1) % BIG_SLOTS, k++)
		if (big[i].user <= BIG_TOMB) {
			big[i].user = u;
			big[i].base = base;
			atomic_fetch_add(&big_live, 1);
			stored = true;
			break;
		}
	pthread_mutex_unlock(&big_lock);
	if (!stored) {
		kp_free(p, base);
		errno = ENOMEM;
		return NULL;
	}
	return (void *)u;
}

/* ---- the C allocation API ------------------------------------------------ */

static inline unsigned flags_now(void)
{
	return me.crit_depth ? KP_CRITICAL : 0;
}

/* The allocation call that found me.fast 0: make the pool (NULL while
 * allocations must come from the bootstrap buffer), count the calls, start
 * the daemon and sweep the event ring when due, and set me.fast to the
 * calls that may go straight to libkpool before the next look: up to the
 * next sweep, or the daemon_after-th call while the daemon waits for it
 * and every DAEMON_POLL-th past it until the pool has work for it; none
 * while a critical scope is open (its calls need flags_now()) or the
 * daemon could not start yet. */
static __attribute__((noinline)) kp_pool *alloc_look(void)
{
	kp_pool *p = pool_get();
	if (UNLIKELY(!p))
		return NULL;
	look_next();
	me.calls++;
	me.err = &errno;
	int pend = atomic_load_explicit(&daemon_pending, memory_order_relaxed);
	if (UNLIKELY(pend))
		daemon_maybe_start(p, pend);
	if (UNLIKELY(me.calls % SWEEP_EVERY == 0))
		sweep(p, NULL, "", true);
	if (me.crit_depth || me.creating)
		return p;
	unsigned long next = SWEEP_EVERY - me.calls % SWEEP_EVERY; /* calls to the next sweep */
	/* A start pending: at the daemon_after-th call, and past it every
	 * DAEMON_POLL-th (daemon_maybe_start waits until the pool has work for
	 * the daemon, kp__daemon_wanted; a look at every call while it waits
	 * cost small_objects 11% more instructions). */
	if (atomic_load_explicit(&daemon_pending, memory_order_relaxed)) {
		unsigned long until = me.calls < cfg.daemon_after ? cfg.daemon_after - me.calls : DAEMON_POLL;
		if (until < next)
			next = until;
	}
	me.armed = next - 1;
	me.fast = (long)(next - 1);
	return p;
}

/* The pool for an allocation call that may go straight to libkpool (its
 * flags are 0: no critical scope), or NULL. fast > 0 means this thread
 * saw the pool made (an acquire load in pool_get), which is never unmade:
 * a relaxed load finds it. */
static inline kp_pool *pool_fast(void)
{
	if (LIKELY(me.fast > 0)) {
		me.fast--;
		return atomic_load_explicit(&pool_ptr, memory_order_relaxed);
	}
	return NULL;
}

/* kp_alloc and kp_alloc_aligned set errno ENOMEM when they return NULL
 * (kpool.h): their results are returned as they are. */
static void *alloc_aligned(size_t align, size_t size, bool zero)
{
	kp_pool *p = pool_fast();
	if (UNLIKELY(!p) && !(p = alloc_look()))
		return boot_alloc(size, align, zero);
	unsigned flags = flags_now() | (zero ? KP_ZERO : 0);
	if (align <= 16)
		return kp_alloc(p, size, flags);
	if (align <= POOL_ALIGN_MAX)
		return kp_alloc_aligned(p, size, align, flags);
	return big_alloc(p, align, size, flags);
}

/* malloc's call that found me.fast 0 (fast_take left it below 0) */
static __attribute__((noinline)) void *malloc_look(size_t size)
{
	me.fast = 0;
	return alloc_aligned(16, size, false);
}

/* The common path: one subtract from me.fast (fast_take), and kp_alloc's
 * fast path by a tail call of kp__malloc (alloc.c: the size where malloc's
 * caller put it, no flags). */
API void *malloc(size_t size)
{
	if (LIKELY(fast_take()))
		return kp__malloc(size, atomic_load_explicit(&pool_tag, memory_order_relaxed));
	return malloc_look(size);
}

/* free() refused ptr: the report, out of line (the common path saves no
 * register for it), errno as it was. */
static __attribute__((noinline, cold)) void free_refused(kp_pool *p, void *ptr, int rc)
{
	int saved = errno;
	bad_pointer(p, ptr, "free()", rc);
	errno = saved;
}

/* free() of a pointer, not NULL and not the bootstrap buffer's, before the
 * pool is made: nothing else was ever given out, so it is an invalid free,
 * reported as one once there is a pool to free it to (made now, as the
 * first allocation would; it was refused in silence, test_preload_attack19);
 * before the environment exists, or while this thread makes the pool, the
 * event is made here. */
static __attribute__((noinline, cold)) int free_unmade(void *ptr)
{
	kp_pool *p = pool_get();
	if (p)
		return kp__free_miss(p, ptr, false);
	int saved = errno;
	char text[KP_EVENT_TEXT];
	snprintf(text, sizeof text, "%p size unknown: free of a pointer never given out", ptr);
	report_unlogged(NULL, ptr, "free()", KP_EV_INVALID_FREE, text);
	errno = saved;
	return 0;
}

/* What kp__free_try did not free (alloc.c): NULL, a block of the bootstrap
 * buffer, a big alignment's pointer, a block the fast path does not take,
 * anything the pool never gave out; tried: kp_free's fast path refused ptr
 * already. errno as it was: kp__free_rest_quiet and kp__free_quiet keep it,
 * free_refused brackets its report. The fast path never frees the first
 * three: NULL and the buffer are no segment of the pool's, and a big
 * alignment's pointer is inside its block, never at a block's start
 * (big_alloc), where the fast path finds headers. */
int kp__free_miss(kp_pool *p, void *ptr, bool tried)
{
	if (!ptr)
		return 0;
	if (UNLIKELY(in_boot(ptr))) {
		atomic_fetch_add(&boot_frees, 1);
		return 0;
	}
	if (UNLIKELY(!p))
		return free_unmade(ptr);
	void *base = big_maybe(ptr) ? big_find(ptr, true) : NULL;
	int rc = base ? kp__free_quiet(p, base) : kp__free_rest_quiet(p, ptr, tried);
	if (UNLIKELY(rc != 0) && p)
		free_refused(p, ptr, rc);
	return 0;
}

/* free(): kp__free_try by a tail call, p where the caller put it and the
 * pool's tag. Before the pool is made, pool_tag is NULL's, which
 * kp__free_try hands to kp__free_miss at once. */
static inline void do_free(void *ptr)
{
	kp__free_try(ptr, atomic_load_explicit(&pool_tag, memory_order_acquire));
}

API void free(void *ptr)
{
	do_free(ptr);
}

/* calloc's blocks below this size are zeroed here, after kp_alloc's fast
 * path: KP_ZERO takes its slow path (alloc_slow: 150 instructions more a
 * call, tests/test_preload_instructions.py). A larger block keeps KP_ZERO,
 * which leaves memory known zero as it is: a fresh mapping (huge blocks), a
 * block of the outline layout never handed out (outline.c, pop_zero), so
 * that the pages of a calloc'd table the program never writes stay
 * untouched. A page: a smaller block shares its pages with others. It was
 * 128 KiB (the largest size class), every block below zeroed here: gcc's
 * cc1 on integrity.c peaked at 102 MB, jemalloc's 77 (bench gcc-libkpool). */
#define CALLOC_FAST_MAX (4u << 10)

API void *calloc(size_t n, size_t size)
{
	size_t total;
	if (__builtin_mul_overflow(n, size, &total)) {
		errno = ENOMEM;
		return NULL;
	}
	if (LIKELY(total < CALLOC_FAST_MAX) && LIKELY(me.fast > 0)) {
		me.fast--;
		void *r = kp__malloc(total, atomic_load_explicit(&pool_tag, memory_order_relaxed));
		return r ? memset(r, 0, total) : NULL;
	}
	return alloc_aligned(16, total, true);
}

static size_t usable(kp_pool *p, const void *ptr)
{
	if (in_boot(ptr))
		return boot_size(ptr);
	void *base = big_find(ptr, false);
	if (base)
		return kp_usable_size(p, base) - (size_t)((const char *)ptr - (const char *)base);
	return kp_usable_size(p, ptr);
}

/* realloc of a block that is not the pool's own (the bootstrap buffer's,
 * a big alignment's): moved into a new one. */
static __attribute__((noinline)) void *realloc_move(void *ptr, size_t size)
{
	size_t old = in_boot(ptr) ? boot_size(ptr) : usable(atomic_load(&pool_ptr), ptr);
	void *q = alloc_aligned(16, size, false);
	if (q) {
		memcpy(q, ptr, old < size ? old : size);
		do_free(ptr);
	}
	return q;
}

/* kp_realloc for realloc(). It sets errno whenever it returns NULL
 * (EINVAL: ptr is no live block; ENOMEM), and may set it on its way to a
 * success (a system call that failed, and a way round it): errno as it was
 * then. err: errno's address (me.err on the common path, which saves a
 * call to libc for it). */
static __attribute__((noinline)) void *realloc_pool(kp_pool *p, void *ptr, size_t size, unsigned flags, int *err)
{
	int saved = *err;
	void *q = kp_realloc(p, ptr, size, flags);
	if (LIKELY(q)) {
		*err = saved;
		return q;
	}
	if (*err == EINVAL) /* ptr is no live block: kp_realloc recorded why */
		bad_pointer(p, ptr, "realloc()", KP_EINVAL);
	*err = ENOMEM;
	return NULL;
}

/* realloc() but for its common case. */
static __attribute__((noinline)) void *realloc_other(void *ptr, size_t size)
{
	if (!ptr)
		return malloc(size);
	if (!size) { /* glibc: free, and NULL */
		do_free(ptr);
		return NULL;
	}
	if (in_boot(ptr) || (big_maybe(ptr) && big_find(ptr, false)))
		return realloc_move(ptr, size);
	kp_pool *p = pool_fast();
	if (!p && !(p = alloc_look())) {
		errno = ENOMEM; /* a block of no pool, before there is one: its size is unknown */
		return NULL;
	}
	return realloc_pool(p, ptr, size, flags_now(), &errno);
}

/* The common case: a block of the pool's, a new size, a call that may go
 * straight to libkpool (me.fast: flags 0, and me.err set). */
API void *realloc(void *ptr, size_t size)
{
	if (UNLIKELY(!ptr || !size || in_boot(ptr) || big_maybe(ptr) || me.fast <= 0))
		return realloc_other(ptr, size);
	me.fast--;
	return realloc_pool(atomic_load_explicit(&pool_ptr, memory_order_relaxed), ptr, size, 0, me.err);
}

API void *reallocarray(void *ptr, size_t n, size_t size)
{
	size_t total;
	if (__builtin_mul_overflow(n, size, &total)) {
		errno = ENOMEM;
		return NULL;
	}
	return realloc(ptr, total);
}

static bool pow2(size_t a)
{
	return a && !(a & (a - 1));
}

API int posix_memalign(void **out, size_t align, size_t size)
{
	if (!pow2(align) || align % sizeof(void *))
		return EINVAL;
	int saved = errno;
	void *r = alloc_aligned(align, size, false);
	int rc = r ? 0 : ENOMEM;
	errno = saved;
	if (r)
		*out = r;
	return rc;
}

/* glibc's memalign (and aligned_alloc, which is memalign in glibc 2.36):
 * alignments up to 16 are malloc's; others are rounded up to a power of two;
 * past SIZE_MAX / 2 + 1 no power of two is left: EINVAL. */
API void *memalign(size_t align, size_t size)
{
	if (align > SIZE_MAX / 2 + 1) {
		errno = EINVAL;
		return NULL;
	}
	size_t a = 16;
	while (a < align)
		a <<= 1;
	return alloc_aligned(a, size, false);
}

API void *aligned_alloc(size_t align, size_t size)
{
	return memalign(align, size);
}

static size_t page_size(void)
{
	static _Atomic size_t page;
	size_t n = atomic_load_explicit(&page, memory_order_relaxed);
	if (!n) {
		long v = sysconf(_SC_PAGESIZE);
		n = v > 0 ? (size_t)v : 4096;
		atomic_store(&page, n);
	}
	return n;
}

API void *valloc(size_t size)
{
	return memalign(page_size(), size);
}

API void *pvalloc(size_t size)
{
	size_t pg = page_size();
	if (size > SIZE_MAX - pg) {
		errno = ENOMEM;
		return NULL;
	}
	size_t rounded = (size + pg - 1) & ~(pg - 1);
	return memalign(pg, rounded ? rounded : pg);
}

static __attribute__((noinline)) size_t usable_other(kp_pool *p, void *ptr)
{
	if (!ptr)
		return 0;
	if (!p)
		return in_boot(ptr) ? boot_size(ptr) : 0;
	return usable(p, ptr);
}

/* kp_usable_size by a tail call, for a pointer that can be a block of the
 * pool's (NULL is: kp_usable_size's 0). */
API size_t malloc_usable_size(void *ptr)
{
	kp_pool *p = atomic_load_explicit(&pool_ptr, memory_order_acquire);
	if (UNLIKELY(!p || in_boot(ptr) || big_maybe(ptr)))
		return usable_other(p, ptr);
	return kp_usable_size(p, ptr);
}

/* No-ops that keep glibc's arenas out of it: kpool returns memory by its own
 * decay (the daemon). */
API int malloc_trim(size_t pad)
{
	(void)pad;
	return 0;
}

API int mallopt(int param, int value)
{
	(void)param;
	(void)value;
	return 1;
}

/* glibc's own names of the same functions, which some programs and
 * libraries call directly. COPY: gcc's `copy` attribute gives each alias
 * its target's attributes (malloc, alloc_size, ...: gcc warns of an alias
 * without them, -Wmissing-attributes); clang knows no such attribute, and
 * its -Werror made `make CC=clang preload` fail (s37-robust,
 * tests/test_clang_compiles.py). There the aliases are plain. */
#if defined(__has_attribute)
#if __has_attribute(copy)
#define COPY(f) copy(f)
#endif
#endif
#ifndef COPY
#define COPY(f)
#endif
API void *__libc_malloc(size_t size) __attribute__((alias("malloc"), COPY(malloc)));
API void __libc_free(void *ptr) __attribute__((alias("free"), COPY(free)));
API void *__libc_calloc(size_t n, size_t size) __attribute__((alias("calloc"), COPY(calloc)));
API void *__libc_realloc(void *ptr, size_t size) __attribute__((alias("realloc"), COPY(realloc)));
API void *__libc_memalign(size_t align, size_t size) __attribute__((alias("memalign"), COPY(memalign)));
API void *__libc_valloc(size_t size) __attribute__((alias("valloc"), COPY(valloc)));
API void *__libc_pvalloc(size_t size) __attribute__((alias("pvalloc"), COPY(pvalloc)));
API int __posix_memalign(void **out, size_t align, size_t size)
	__attribute__((alias("posix_memalign"), COPY(posix_memalign)));
API void cfree(void *ptr) __attribute__((alias("free"), COPY(free)));

/* ---- C++'s operators new and delete -------------------------------------- */

/* libstdc++'s operator new calls malloc and, when it fails, the program's
 * new-handler in a loop, then throws std::bad_alloc; its delete calls free.
 * Defined here, the common case goes to the pool with one call and one PLT
 * jump less each. A failure goes on to the next definition (libstdc++'s,
 * looked up then), which tries malloc (this file's) again, calls the
 * handler and throws: C cannot throw. The Itanium C++ ABI's names, size_t
 * being unsigned long: m; std::align_val_t is a size_t, std::nothrow_t a
 * reference (a pointer). */
static __attribute__((noinline, cold)) void *cxx_next(const char *name)
{
	void *f = dlsym(RTLD_NEXT, name);
	if (!f) { /* no C++ runtime after this library: nothing could throw */
		say("kpool-preload: out of memory in operator new, and no std::bad_alloc to throw\n");
		abort();
	}
	return f;
}

/* An alignment of operator new's: a power of two (the language's rule), at
 * least malloc's 16. */
static inline void *cxx_aligned(size_t size, size_t align)
{
	return alloc_aligned(align < 16 ? 16 : align, size, false);
}

#define NOTHROW const void *
API void *_Znwm(size_t size);
API void *_Znam(size_t size);
API void *_ZnwmRKSt9nothrow_t(size_t size, NOTHROW nt);
API void *_ZnamRKSt9nothrow_t(size_t size, NOTHROW nt);
API void *_ZnwmSt11align_val_t(size_t size, size_t align);
API void *_ZnamSt11align_val_t(size_t size, size_t align);
API void *_ZnwmSt11align_val_tRKSt9nothrow_t(size_t size, size_t align, NOTHROW nt);
API void *_ZnamSt11align_val_tRKSt9nothrow_t(size_t size, size_t align, NOTHROW nt);

API void *_Znwm(size_t size)
{
	void *r = malloc(size);
	return LIKELY(r) ? r : ((void *(*)(size_t))cxx_next("_Znwm"))(size);
}

API void *_Znam(size_t size)
{
	void *r = malloc(size);
	return LIKELY(r) ? r : ((void *(*)(size_t))cxx_next("_Znam"))(size);
}

API void *_ZnwmRKSt9nothrow_t(size_t size, NOTHROW nt)
{
	void *r = malloc(size);
	return LIKELY(r) ? r : ((void *(*)(size_t, NOTHROW))cxx_next("_ZnwmRKSt9nothrow_t"))(size, nt);
}

API void *_ZnamRKSt9nothrow_t(size_t size, NOTHROW nt)
{
	void *r = malloc(size);
	return LIKELY(r) ? r : ((void *(*)(size_t, NOTHROW))cxx_next("_ZnamRKSt9nothrow_t"))(size, nt);
}

API void *_ZnwmSt11align_val_t(size_t size, size_t align)
{
	void *r = cxx_aligned(size, align);
	return LIKELY(r) ? r : ((void *(*)(size_t, size_t))cxx_next("_ZnwmSt11align_val_t"))(size, align);
}

API void *_ZnamSt11align_val_t(size_t size, size_t align)
{
	void *r = cxx_aligned(size, align);
	return LIKELY(r) ? r : ((void *(*)(size_t, size_t))cxx_next("_ZnamSt11align_val_t"))(size, align);
}

API void *_ZnwmSt11align_val_tRKSt9nothrow_t(size_t size, size_t align, NOTHROW nt)
{
	void *r = cxx_aligned(size, align);
	return LIKELY(r) ? r
			 : ((void *(*)(size_t, size_t, NOTHROW))cxx_next("_ZnwmSt11align_val_tRKSt9nothrow_t"))(
				   size, align, nt);
}

API void *_ZnamSt11align_val_tRKSt9nothrow_t(size_t size, size_t align, NOTHROW nt)
{
	void *r = cxx_aligned(size, align);
	return LIKELY(r) ? r
			 : ((void *(*)(size_t, size_t, NOTHROW))cxx_next("_ZnamSt11align_val_tRKSt9nothrow_t"))(
				   size, align, nt);
}

/* Every delete is free(): the size and the alignment are the block's own. */
#define DELETE(name, ...)                      \
	API void name(void *p, ##__VA_ARGS__); \
	API void name(void *p, ##__VA_ARGS__)  \
	{                                      \
		do_free(p);                    \
	}
DELETE(_ZdlPv)
DELETE(_ZdaPv)
DELETE(_ZdlPvm, size_t size)
DELETE(_ZdaPvm, size_t size)
DELETE(_ZdlPvRKSt9nothrow_t, NOTHROW nt)
DELETE(_ZdaPvRKSt9nothrow_t, NOTHROW nt)
DELETE(_ZdlPvSt11align_val_t, size_t align)
DELETE(_ZdaPvSt11align_val_t, size_t align)
DELETE(_ZdlPvmSt11align_val_t, size_t size, size_t align)
DELETE(_ZdaPvmSt11align_val_t, size_t size, size_t align)
DELETE(_ZdlPvSt11align_val_tRKSt9nothrow_t, size_t align, NOTHROW nt)
DELETE(_ZdaPvSt11align_val_tRKSt9nothrow_t, size_t align, NOTHROW nt)
#undef DELETE
#undef NOTHROW

/* ---- the exported kpool API ---------------------------------------------- */

API int kp_preload_critical_enter(void)
{
	kp_pool *p = pool_get();
	if (!p || kp_critical_enter(p, token) != 0)
		return -1;
	me.crit_depth++;
	look_next(); /* its allocations need KP_CRITICAL: none goes straight to libkpool */
	return 0;
}

API void kp_preload_critical_exit(void)
{
	kp_pool *p = atomic_load(&pool_ptr);
	if (!p)
		return;
	if (me.crit_depth)
		me.crit_depth--;
	kp_critical_exit(p);
}

API int kp_preload_stats_json(char *buf, size_t len)
{
	kp_pool *p = pool_get();
	return p ? kp_stats_json(p, buf, len) : -1;
}

/* ---- figures at exit ----------------------------------------------------- */

/* What the figures' JSON writer appends to: a buffer written out to fd
 * whenever the next item does not fit. An item longer than the whole buffer,
 * or a failed write, stops it (bad), and the file is removed rather than
 * left cut short. */
struct out {
	char *buf;
	size_t len, pos;
	int fd;
	bool bad;
};

static void out_flush(struct out *o)
{
	for (size_t off = 0; off < o->pos && !o->bad;) {
		ssize_t w = write(o->fd, o->buf + off, o->pos - off);
		if (w <= 0)
			o->bad = true;
		else
			off += (size_t)w;
	}
	o->pos = 0;
}

static void put(struct out *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(struct out *o, const char *fmt, ...)
{
	for (int tries = 0; tries < 2 && !o->bad; tries++) {
		va_list ap;
		va_start(ap, fmt);
		int n = vsnprintf(o->buf + o->pos, o->len - o->pos, fmt, ap);
		va_end(ap);
		if (n >= 0 && (size_t)n < o->len - o->pos) {
			o->pos += (size_t)n;
			return;
		}
		if (n < 0 || o->pos == 0)
			o->bad = true;
		else
			out_flush(o);
	}
}

static void put_str(struct out *o, const char *s)
{
	put(o, "\"");
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		if (c == '"' || c == '\\')
			put(o, "\\%c", c);
		else if (c < 0x20)
			put(o, "\\u%04x", c);
		else
			put(o, "%c", c);
	}
	put(o, "\"");
}

static _Atomic bool stats_done;

/* The figures' buffer: the file's path, then its text a piece at a time. A
 * page of .lbss that only the exit touches: the text was formatted into a
 * block of the pool (its size, 34 KiB, was the figures' most with every
 * integrity record kept), which took a large class's span, and the end of
 * the thread cache where that class's bin starts: 16 KiB of small_objects'
 * peak RSS under kpool bench, which sets KPOOL_STATS_OUT; and a path of
 * 4 KiB on the stack pushed the exit's calls a page deeper. The stats
 * (kp_stats_json, 1-2 KiB) are written into it whole. */
static char figures[4096] LARGE __attribute__((aligned(4096)));

/* KPOOL_STATS_OUT/kpool-<pid>.json: this process's figures. Written once:
 * at exit, or before an integrity abort. */
static void stats_write(kp_pool *p)
{
	const char *dir = getenv("KPOOL_STATS_OUT");
	if (!dir || !*dir || !p || atomic_exchange(&stats_done, true))
		return;
	int n = snprintf(figures, sizeof figures, "%s/kpool-%ld.json", dir, (long)getpid());
	if (n < 0 || (size_t)n >= sizeof figures)
		return;
	int fd = open(figures, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		return;
	struct out o = {figures, sizeof figures, 0, fd, false};
	put(&o, "{\"version\": 1, \"pid\": %ld, \"ppid\": %ld, \"settings\": {\"on_error\": \"%s\", ", (long)getpid(),
	    (long)getppid(), cfg.on_error == ON_ERROR_LOG ? "log" : "abort");
	put(&o, "\"daemon_after\": %lu, \"daemon\": %s}, ", cfg.daemon_after, cfg.daemon ? "true" : "false");
	put(&o, "\"daemon_started\": %s, ", atomic_load(&daemon_started) ? "true" : "false");
	put(&o, "\"bootstrap\": {\"allocs\": %llu, \"frees\": %llu, \"bytes\": %zu}, ",
	    (unsigned long long)atomic_load(&boot_allocs), (unsigned long long)atomic_load(&boot_frees),
	    atomic_load(&boot_used));
	uint64_t total = atomic_load(&integrity_total);
	put(&o, "\"integrity_total\": %llu, \"integrity\": [", (unsigned long long)total);
	for (uint64_t i = 0; i < total && i < RECORDS; i++) {
		const struct record *r = &records[i];
		put(&o, "%s{\"kind\": \"%s\", \"addr\": \"0x%llx\", \"size\": %llu, \"call\": ", i ? ", " : "",
		    kp_event_name(r->kind), (unsigned long long)r->addr, (unsigned long long)r->size);
		put_str(&o, r->call);
		put(&o, ", \"text\": ");
		put_str(&o, r->text);
		put(&o, "}");
	}
	put(&o, "], \"stats\": ");
	int need = kp_stats_json(p, NULL, 0);
	if (need >= 0 && (size_t)need >= o.len - o.pos)
		out_flush(&o);
	if (need < 0 || (size_t)need >= o.len - o.pos)
		o.bad = true;
	if (!o.bad) {
		int m = kp_stats_json(p, o.buf + o.pos, o.len - o.pos);
		if (m < 0 || (size_t)m >= o.len - o.pos)
			o.bad = true;
		else
			o.pos += (size_t)m;
	}
	put(&o, "}\n");
	out_flush(&o);
	close(fd);
	if (o.bad && snprintf(figures, sizeof figures, "%s/kpool-%ld.json", dir, (long)getpid()) > 0)
		unlink(figures);
}

/* ---- a death by a fault signal --------------------------------------------- */

/* Under kpool run (KPOOL_STATS_OUT set; else nothing is installed), a
 * process killed by a fault signal writes KPOOL_STATS_OUT/kpool-<pid>.signal
 * on its way out: "kpool-signal 1 SIG PID PPID\n", then its command line
 * (/proc/self/cmdline, NUL-separated), so that kpool run names a child
 * process that died so (harness/run.py: only the program it started is its
 * own child, whose status wait4 gives; a child of that program died unseen,
 * s37-robust: tests/test_run_children.py). The signals a fault raises (and
 * abort()'s, the preload's own integrity abort included): not SIGTERM,
 * SIGKILL, SIGPIPE or ^C, which stop a process on purpose. Installed at
 * start only where the signal's action is the default (a program's own
 * handler later replaces it, and one that chains to the previous runs
 * it); SA_RESETHAND: the action is the default again inside, and the
 * signal raised again kills the process as it would have, its status the
 * same to its parent. Async-signal-safe: open, read, write, close. */
static const int fault_signals[] = {SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT, SIGSYS};
/* KPOOL_STATS_OUT as it was at start: the string itself (the environment's
 * strings from exec stay where they are whatever the program does to its
 * environment; a copy in .lbss cost a resident page in every process) */
static const char *fault_dir;
#define FAULT_DIR_MAX 4096 /* PATH_MAX: the path is built on the handler's stack */

static char *put_dec(char *at, unsigned long v)
{
	char tmp[24];
	int n = 0;
	do
		tmp[n++] = (char)('0' + v % 10);
	while ((v /= 10) != 0);
	while (n)
		*at++ = tmp[--n];
	return at;
}

static void fault_record(int sig)
{
	int e = errno;
	char path[FAULT_DIR_MAX + 48], head[96];
	size_t dn = strlen(fault_dir);
	memcpy(path, fault_dir, dn);
	char *at = path + dn;
	memcpy(at, "/kpool-", 7);
	at = put_dec(at + 7, (unsigned long)getpid());
	memcpy(at, ".signal", 8);
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd >= 0) {
		at = head;
		memcpy(at, "kpool-signal 1 ", 15);
		at = put_dec(at + 15, (unsigned long)sig);
		*at++ = ' ';
		at = put_dec(at, (unsigned long)getpid());
		*at++ = ' ';
		at = put_dec(at, (unsigned long)getppid());
		*at++ = '\n';
		ssize_t w = write(fd, head, (size_t)(at - head));
		int cf = open("/proc/self/cmdline", O_RDONLY | O_CLOEXEC);
		if (cf >= 0) {
			char buf[4096];
			ssize_t n;
			while (w >= 0 && (n = read(cf, buf, sizeof buf)) > 0)
				w = write(fd, buf, (size_t)n);
			close(cf);
		}
		close(fd);
	}
	errno = e;
	raise(sig); /* SIG_DFL now (SA_RESETHAND): as it would have died */
}

static void fault_install(void)
{
	const char *dir = getenv("KPOOL_STATS_OUT");
	if (!dir || !*dir || strlen(dir) >= FAULT_DIR_MAX)
		return;
	fault_dir = dir;
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = fault_record;
	sa.sa_flags = SA_RESETHAND | SA_NODEFER | SA_ONSTACK;
	sigemptyset(&sa.sa_mask);
	/* set, and the old action put back where it was not the default (an
	 * ignored signal inherited across exec): one system call a signal where
	 * none is inherited, not a look and a set (the constructor runs before
	 * any thread of the program, so no handler comes and goes meanwhile) */
	for (size_t i = 0; i < sizeof fault_signals / sizeof fault_signals[0]; i++) {
		struct sigaction old;
		if (sigaction(fault_signals[i], &sa, &old) == 0 &&
		    ((old.sa_flags & SA_SIGINFO) || old.sa_handler != SIG_DFL))
			sigaction(fault_signals[i], &old, NULL);
	}
}

/* The fork handlers are registered here, pool.c's then this layer's (this
 * prepare runs before pool.c's, which takes the registry lock a sweep takes
 * under drain_lock; this child handler after pool.c's), not by the first
 * malloc: glibc allocates its table of handlers inside pthread_atfork,
 * holding its atfork lock, and a program's first malloc made there
 * registered kpool's, which waited for that lock forever
 * (test_preload_atfork_attack31). A constructor that allocated before this
 * one made the pool, and pool.c's handlers with it: still first. Whatever
 * pthread_atfork allocates here comes from the bootstrap buffer. */
__attribute__((constructor)) static void preload_init(void)
{
	me.creating = true;
	kp__pool_once();
	pthread_atfork(fork_prepare, fork_parent, after_fork_child);
	fault_install();
	me.creating = false;
	atomic_store(&ctor_done, true);
}

__attribute__((destructor)) static void preload_fini(void)
{
	kp_pool *p = atomic_load(&pool_ptr);
	if (!p)
		return;
	sweep(p, NULL, "", false);
	stats_write(p);
}
