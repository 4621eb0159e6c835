/*
 * pool.c - pool lifecycle, the registry of live pools, the fork handlers,
 * the critical privilege and state, and fault injection. The allocation
 * and free paths are in alloc.c.
 */
#include "internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

/* ---- registry of live pools ------------------------------------------- */

static pthread_mutex_t reg_lock = PTHREAD_MUTEX_INITIALIZER;
static kp_pool *reg_head;
/* Pool ids, never reused. Odd, 2 apart (outline.h's slot marks took the
 * id until s38-fasta; the slot holds the pool's address + 1 now,
 * kp__ol_slot_id). The pagemap's tags (internal.h, id * 2 + 1) repeat
 * after 2^20 pools where they did after 2^21: a shared tag costs only a
 * test more (kp__pagemap_owns). */
static _Atomic uint64_t next_id = 1;

void kp__registry_lock(void)
{
	pthread_mutex_lock(&reg_lock);
}
void kp__registry_unlock(void)
{
	pthread_mutex_unlock(&reg_lock);
}
kp_pool *kp__registry_find(uint64_t id)
{
	for (kp_pool *p = reg_head; p; p = p->reg_next)
		if (p->id == id)
			return p;
	return NULL;
}

void kp__not_a_pool(const void *pool, const char *fn)
{
	kp__set_error_path("%s: %p is not a live pool (not made by kp_create, or destroyed)", fn, pool);
	errno = EINVAL;
}

/* Compares addresses only: never reads *pool. */
bool kp__pool_live(const kp_pool *pool, const char *fn)
{
	pthread_mutex_lock(&reg_lock);
	const kp_pool *p = reg_head;
	while (p && p != pool)
		p = p->reg_next;
	pthread_mutex_unlock(&reg_lock);
	if (!p)
		kp__not_a_pool(pool, fn);
	return p != NULL;
}

/* ---- fork -------------------------------------------------------------- */
/* ---- every kpool lock ---------------------------------------------------- */

/* This thread's kernel id, or 0 until a lock of kpool's was first found
 * held (fork_child resets it: the child's thread has another). */
static __thread int lock_tid;
/* The lock this thread is inside glibc's lock or unlock of, or NULL:
 * the windows where m's holder field and its lock word disagree (the word
 * taken and no holder yet, or no holder and the word not yet free). A
 * signal handler's call into the pool that needs m there would wait for
 * its own thread. volatile: the stores must surround the call, which the
 * compiler would otherwise see as unable to read a variable whose address
 * never escapes. */
static __thread pthread_mutex_t *volatile lock_busy;

/* pthread_mutex_lock, with the one deadlock no lock order prevents: the
 * thread that holds m asking for it again, which a kpool call made inside
 * a kpool call does (a signal handler that allocates, its signal taken in
 * an allocation's slow path; kpool never nests its own calls). glibc
 * records the holder's thread id in every mutex of the types kpool uses
 * (normal and adaptive) and clears it before it lets go, so an id there
 * that is this thread's means this thread holds m: it cannot change under
 * us. glibc's own malloc, so re-entered, finds its arena damaged and
 * aborts; so does this, with a line that says why, touching nothing. A
 * free lock (no holder) costs one load more than pthread_mutex_lock, and
 * the thread's id is asked for (gettid, once per thread) only when a lock
 * is held by someone. */
#undef pthread_mutex_lock
#undef pthread_mutex_unlock
#undef pthread_mutex_trylock
/* op (glibc's lock, unlock or trylock) of m, the thread marked as inside
 * it (lock_busy) for its length. */
static inline __attribute__((always_inline)) int in_window(pthread_mutex_t *m, int (*op)(pthread_mutex_t *))
{
	pthread_mutex_t *was = lock_busy;
	lock_busy = m;
	int rc = op(m);
	lock_busy = was;
	return rc;
}

/* Set (to the pool's system-call counts) while a call nested inside
 * another of this thread's runs on a path whose locks are ordered before
 * one this thread holds (kp__mutex_nowait): its locks are tried, never
 * waited for (lock_bounded). */
static __thread kp__oscount *lock_nowait;

kp__oscount *kp__mutex_nowait(kp__oscount *c)
{
	kp__oscount *was = lock_nowait;
	lock_nowait = c;
	return was;
}

/* How long a nested call tries a lock held by another thread before it
 * gives up (lock_bounded): far past any section that holds one of kpool's
 * locks (a daemon pass's, a fork's: milliseconds, seconds under load on a
 * loaded CI machine), so that only a holder waiting for this thread,
 * which never comes, reaches it. */
#define KP_NOWAIT_NS (2ull * 1000 * 1000 * 1000)

/* m for a nested call (lock_nowait): tried, the CPU yielded between tries
 * (os.c, counted), and after KP_NOWAIT_NS kpool's line and abort: the
 * holder waits for a lock this thread holds (kp_stats_json or fork_prepare
 * holds pool->lock and waits for the outline lock, which the interrupted
 * code holds: test_outline_signal_stats_deadlock_attack32), where waiting
 * hung for good. */
static __attribute__((noinline, cold)) int lock_bounded(pthread_mutex_t *m)
{
	uint64_t t0 = kp__now_ns();
	for (;;) {
		int rc = in_window(m, pthread_mutex_trylock);
		if (rc != EBUSY)
			return rc;
		if (kp__now_ns() - t0 > KP_NOWAIT_NS)
			kp__os_die("kpool: a call into the pool on a thread that holds the pool's outline lock waited "
				   "for a lock held by a thread that waits for that one (an allocation in a signal "
				   "handler that interrupted one); abort\n");
		kp__os_yield(lock_nowait);
	}
}

int kp__mutex_lock(pthread_mutex_t *m)
{
	int holder = __atomic_load_n(&m->__data.__owner, __ATOMIC_RELAXED);
	if (KP_UNLIKELY(holder)) {
		int tid = lock_tid;
		if (!tid)
			lock_tid = tid = kp__os_tid();
		if (holder == tid)
			kp__os_die("kpool: a call into the pool on a thread that holds the pool's lock it needs "
				   "(an allocation in a signal handler that interrupted one); abort\n");
	}
	if (KP_UNLIKELY(lock_busy == m))
		kp__os_die("kpool: a call into the pool on a thread that holds the pool's lock it needs "
			   "(an allocation in a signal handler that interrupted one); abort\n");
	if (KP_UNLIKELY(lock_nowait != NULL))
		return lock_bounded(m);
	/* Inside glibc's lock of m, the lock word is taken before the holder
	 * is written: marked, as kp__mutex_unlock marks its own window. */
	return in_window(m, pthread_mutex_lock);
}

/* Does this thread hold m (or is it inside glibc's lock or unlock of it)?
 * kp__mutex_lock's test, without the lock: a free m costs one load; its
 * holder's id is asked for (gettid, once per thread) only when m is held. */
bool kp__mutex_mine(pthread_mutex_t *m)
{
	if (lock_busy == m)
		return true;
	int holder = __atomic_load_n(&m->__data.__owner, __ATOMIC_RELAXED);
	if (!holder)
		return false;
	int tid = lock_tid;
	if (!tid)
		lock_tid = tid = kp__os_tid();
	return holder == tid;
}

int kp__mutex_unlock(pthread_mutex_t *m)
{
	return in_window(m, pthread_mutex_unlock);
}

int kp__mutex_trylock(pthread_mutex_t *m)
{
	return in_window(m, pthread_mutex_trylock);
}
#define pthread_mutex_lock(m) kp__mutex_lock(m)
#define pthread_mutex_unlock(m) kp__mutex_unlock(m)
#define pthread_mutex_trylock(m) kp__mutex_trylock(m)

/* Every lock is taken before fork, in the documented order: the class
 * locks, the release lock (held while mappings are off the pool's lists on
 * their way out: none is in hand at the fork), the pool lock, the backup lock, then the daemon mutex, a leaf that
 * the allocation path takes under a class lock to wake the daemon; then the
 * pagemap's. No lock is copied mid-update, and all are held by the thread
 * that forks: the parent and the child each unlock them (jemalloc's and
 * glibc's malloc prefork and postfork handlers do the same). The child must
 * not re-initialise a lock it holds: TSan keeps the owner across
 * pthread_mutex_init and reported a double lock when any other thread of
 * the child took it (test_fork_locks; POSIX leaves re-initialising an
 * initialised mutex undefined).
 * The daemon's step lock is not taken: a fork may cut a pass short (the
 * blocks it holds go back at the child's next pass, primary.c's
 * bpurge_return), and a fork that waited for the pass would wait as long
 * as the pass (test_block_purge_held forks while one is paused). Held at
 * fork, it is held by a thread the child does not have: only then is it
 * made anew. The condition variables are made anew: the threads that
 * waited on them do not exist in the child. The daemon thread does not
 * survive fork: the child marks it RESTART and its first slow path starts
 * a new one. Other threads' caches are copied but orphaned in the child:
 * their blocks stay allocated (never handed out twice). No mapping is in
 * hand off the pool's lists at the fork (release_mu: the grace list being
 * reclaimed, huge mappings expired or evicted, segments a shrink
 * released); a segment a grow mapped and had not linked yet is unmapped by
 * the child (kp__primary_fork_child), and kept huge mappings evicted while
 * a pass purged them wait on huge_evicted for the child's next trim
 * (test_fork_held). */
static void fork_prepare(void)
{
	pthread_mutex_lock(&reg_lock);
	for (kp_pool *p = reg_head; p; p = p->reg_next) {
		for (unsigned c = 0; c < KP_NCLASS; c += KP_CLASS_LOCK_STEP)
			pthread_mutex_lock(kp__class_lock(p, c));
		pthread_mutex_lock(&p->release_mu);
		pthread_mutex_lock(&p->lock);
		pthread_mutex_lock(&p->backup.lock);
		pthread_mutex_lock(&p->daemon.mu);
		kp__ol_fork(p, 0);
	}
	kp__pagemap_fork(0);
}

/* fork_prepare's locks, released in the reverse order: the parent's and
 * the child's (the thread that forked holds them in both). */
static void fork_unlock(void)
{
	for (kp_pool *p = reg_head; p; p = p->reg_next) {
		kp__ol_fork(p, 1);
		pthread_mutex_unlock(&p->daemon.mu);
		pthread_mutex_unlock(&p->backup.lock);
		pthread_mutex_unlock(&p->lock);
		pthread_mutex_unlock(&p->release_mu);
		for (unsigned c = 0; c < KP_NCLASS; c += KP_CLASS_LOCK_STEP)
			pthread_mutex_unlock(kp__class_lock(p, c));
	}
	pthread_mutex_unlock(&reg_lock);
}

static void fork_parent(void)
{
	kp__pagemap_fork(1);
	fork_unlock();
}

/* A default mutex is all zero bytes (once_init): the pool's class locks are
 * left as its fresh mapping has them (locks_init). */
static bool mutex_zero;

static void locks_init(kp_pool *p)
{
	/* The pool lock spins a little before it sleeps (glibc's adaptive
	 * mutex): the daemon holds it for a walk of a few microseconds, and an
	 * allocating thread that arrives meanwhile should wait those out on the
	 * CPU, not in a futex call (the strace proof in tests/test_c_suite.py). */
	pthread_mutexattr_t adaptive;
	pthread_mutexattr_init(&adaptive);
	pthread_mutexattr_settype(&adaptive, PTHREAD_MUTEX_ADAPTIVE_NP);
	pthread_mutex_init(&p->lock, &adaptive);
	pthread_mutexattr_destroy(&adaptive);
	pthread_mutex_init(&p->backup.lock, NULL);
	pthread_mutex_init(&p->release_mu, NULL);
	pthread_mutex_init(&p->daemon.mu, NULL);
	pthread_mutex_init(&p->daemon.step_mu, NULL);
	pthread_cond_init(&p->daemon.cv, NULL);
	pthread_cond_init(&p->daemon.pass_cv, NULL);
	/* The class locks are left as the pool's fresh mapping has them, zero,
	 * where a default mutex is all zero bytes (glibc's and musl's: checked
	 * once, once_init): their 38 initialisations wrote 4.8 KiB of the
	 * central lists, a page resident in every program, which on
	 * layout:outline never takes them for its small blocks
	 * (test_pool_pages_outline). */
	for (unsigned c = 0; !mutex_zero && c < KP_NCLASS; c += KP_CLASS_LOCK_STEP)
		pthread_mutex_init(&p->central[c].pair_lock, NULL);
}

static void fork_child(void)
{
	lock_tid = 0;
	kp__pagemap_fork(2);
	for (kp_pool *p = reg_head; p; p = p->reg_next) {
		if (pthread_mutex_trylock(&p->daemon.step_mu) == 0)
			pthread_mutex_unlock(&p->daemon.step_mu);
		else /* a pass was running: its thread is gone */
			pthread_mutex_init(&p->daemon.step_mu, NULL);
		pthread_cond_init(&p->daemon.cv, NULL);
		pthread_cond_init(&p->daemon.pass_cv, NULL);
		if (atomic_load(&p->daemon.state) == KP_D_RUNNING)
			atomic_store(&p->daemon.state, KP_D_RESTART);
		atomic_store(&p->daemon.wake_pending, 0);
		kp__primary_fork_child(p); /* a grow's segment, mapped, not linked */
		kp__ol_fork(p, 2);	   /* the foreign caches of the threads gone */
	}
	fork_unlock();
}

static void once_init(void)
{
	pthread_mutex_t m;
	static const unsigned char zero[sizeof m];
	memset(&m, 0xa5, sizeof m);
	pthread_mutex_init(&m, NULL);
	mutex_zero = !memcmp(&m, zero, sizeof m);
	pthread_mutex_destroy(&m);
	pthread_atfork(fork_prepare, fork_parent, fork_child);
	/* The thread keys the allocation path would otherwise make at its
	 * first use, inside pthread_once: a signal handler that allocates,
	 * taken there, waited for that once forever (test_reenter_attack19). */
	kp__tcache_keys_init();
	kp__pagemap_keys_init();
}

/* ---- lifecycle --------------------------------------------------------- */

static int fault_inject(kp_pool *pool, const char *spec);
static void pool_teardown(kp_pool *pool);

static pthread_once_t once = PTHREAD_ONCE_INIT;

/* once_init, once a process: kp_create's first step, and the preload's
 * constructor's (preload.c), so that a program's first malloc never
 * registers fork handlers: inside pthread_atfork (glibc allocates its table
 * of handlers there, holding its atfork lock) that waited for itself. */
void kp__pool_once(void)
{
	pthread_once(&once, once_init);
}

/* kp__ol_create failed, or outline_cramped. The slice map is 16 GiB of address space
 * (outline.c), which an address-space limit (RLIMIT_AS) counts whole: the
 * default layout falls back to inline, which maps only what it uses (stats
 * say "layout"), and true; a pool that named layout:outline is refused with
 * the cause, and false (test_create_rlimit_as). Out of line and cold:
 * kp_create is in the text small programs keep (preload/hot.txt). */
static __attribute__((noinline, cold)) bool outline_refused(kp_pool *pool, const char *conf)
{
	if (!kp__conf_given(conf, "layout")) {
		pool->conf.outline = false;
		snprintf(pool->conf.layout, sizeof pool->conf.layout, "inline");
		return true;
	}
	size_t as = kp__os_as_limit();
	char lim[32];
	if (as == SIZE_MAX)
		snprintf(lim, sizeof lim, "none");
	else
		snprintf(lim, sizeof lim, "%zu MiB", as >> 20);
	kp__set_error("kp_create: layout:outline could not map its slice map (16 GiB of address space, untouched) "
		      "and first segments: ENOMEM, address-space limit RLIMIT_AS %s; layout:inline maps only what "
		      "it uses",
		      lim);
	return false;
}

/* The default layout under an address-space limit (RLIMIT_AS) of less than
 * twice its slice map: the map would take half or more of what the process
 * may map, and inline maps only what it uses (test_create_rlimit_headroom_
 * attack32: under 16 GiB + 256 MiB the outline pool handed out 54 MiB of
 * 1 MiB blocks and 3 of 8 pthread_create calls failed; inline 4,096 MiB;
 * at 20 GiB outline 2,826 MiB). A layout named in the settings is kept.
 * Not cold: every kp_create asks (a cold call's site went to kp_create.cold,
 * outside the preload's hot text: preload/hot.txt). */
static __attribute__((noinline)) bool outline_cramped(const char *conf)
{
	return kp__os_as_limit() / 2 < KP_OL_MAP_BYTES && !kp__conf_given(conf, "layout");
}

KP_EXPORT kp_pool *kp_create(const char *conf)
{
	kp__pool_once();
	kp__conf c;
	if (kp__conf_load(&c, conf) < 0)
		return NULL;
	size_t self = (sizeof(kp_pool) + KP_PAGE - 1) & ~(size_t)(KP_PAGE - 1);
	int saved = kp__os_caller;
	kp__os_caller = KP_CALLER_SETUP;
	kp_pool *pool = kp__os_map(NULL, self, KP_PAGE, false);
	if (!pool) {
		kp__os_caller = saved;
		kp__set_error("kp_create: the OS refused %zu bytes for the pool", self);
		errno = ENOMEM;
		return NULL;
	}
	atomic_store(&pool->os.n[KP_CALLER_SETUP][KP_OS_MMAP], 1);
	/* the pool's own reference (kp__pool_unref); page-aligned, as
	 * outline.h's slot tags need (kp__ol_slot_id) */
	atomic_store(&pool->slot_refs, 1);
	pool->magic = KP_POOL_MAGIC ^ (uintptr_t)pool;
	pool->self_size = self;
	pool->conf = c;
	pool->os.pool = pool;
	pool->canary = c.checks ? KP_CANARY : 0;
	if (kp__log_open(pool) < 0) {
		kp__os_caller = saved;
		pool_teardown(pool);
		errno = EINVAL;
		return NULL;
	}
	pool->id = atomic_fetch_add(&next_id, 2);
	locks_init(pool);
	uint64_t rnd[3];
	kp__os_random(&pool->os, rnd, sizeof rnd);
	/* A 128-bit key: SipHash's (internal.h). A fixed seed expands to one. */
	pool->secret =
		c.seed ? kp__key_make(kp__mix(c.seed ^ 0x9e3779b97f4a7c15ull), kp__mix(c.seed ^ 0xc2b2ae3d27d4eb4full))
		       : kp__key_make(rnd[0], rnd[1]);
	pool->token = rnd[2] ? rnd[2] : 0x5bd1e995ull;

	bool ok = kp__backup_init(pool, c.backup) == 0 && kp__tcache_chunk_add(pool) == 0;
	/* The initial segments are address space: only the daemon's floor
	 * (high_wm) of them is pre-faulted (kp__daemon_prime), and the daemon
	 * pre-faults more as the measured demand asks. */
	size_t nseg = (c.primary_initial + KP_SEG_SIZE - 1) / KP_SEG_SIZE;
	for (size_t i = 0; ok && i < nseg; i++)
		ok = kp__primary_grow(pool, false) == 0;
	bool refused = false; /* outline_refused said why */
	if (ok && c.outline && (outline_cramped(conf) || kp__ol_create(pool) < 0)) {
		refused = !(ok = outline_refused(pool, conf));
		/* the inline layout in its place starts with a segment, whatever
		 * primary_initial (the preload's default layout asks for 0: its
		 * small blocks would all have mapped on the allocation path) */
		if (ok && !nseg)
			ok = kp__primary_grow(pool, false) == 0;
	}
	if (ok)
		kp__daemon_prime(pool);
	if (!ok) {
		if (refused)
			;
		else if (c.backup == KP_BK_AUTO)
			kp__set_error("kp_create: could not map the initial pools (primary_initial %zu, backup auto)",
				      c.primary_initial);
		else
			kp__set_error("kp_create: could not map the initial pools (primary_initial %zu, backup %zu)",
				      c.primary_initial, c.backup);
		pool_teardown(pool);
		kp__os_caller = saved;
		errno = ENOMEM;
		return NULL;
	}
	if (c.faults[0] && fault_inject(pool, c.faults) < 0) {
		char why[200];
		snprintf(why, sizeof why, "%s", kp_last_error());
		pool_teardown(pool);
		kp__set_error("conf: option 'faults': %s", why);
		kp__os_caller = saved;
		errno = EINVAL;
		return NULL;
	}
	pthread_mutex_lock(&reg_lock);
	pool->reg_next = reg_head;
	reg_head = pool;
	pthread_mutex_unlock(&reg_lock);
	if (c.daemon) {
		atomic_store(&pool->daemon.wake_pending, 1); /* first pass at once */
		kp__daemon_start(pool);
	}
	kp__os_caller = saved;
	return pool;
}

KP_EXPORT void kp_destroy(kp_pool *pool)
{
	if (!pool || !kp__pool_live(pool, "kp_destroy"))
		return;
	pool_teardown(pool);
}

/* kp_destroy's work, also for a pool kp_create gave up on (never registered). */
static void pool_teardown(kp_pool *pool)
{
	/* the thread exits after the pool's memory is gone (kp__daemon_park) */
	bool parked = kp__daemon_park(pool);
	pthread_mutex_lock(&reg_lock);
	for (kp_pool **pp = &reg_head; *pp; pp = &(*pp)->reg_next)
		if (*pp == pool) {
			*pp = pool->reg_next;
			break;
		}
	pthread_mutex_unlock(&reg_lock);
	int saved = kp__os_caller;
	kp__os_caller = KP_CALLER_SETUP;
	/* Injected failures end with the pool: an injected munmap failure here
	 * would leave the mapping behind with nobody to own it (found by the
	 * conf fuzz target: pools made with faults:munmap@p=... leaked their
	 * segments until the fuzzer ran out of memory). */
	for (int k = 0; k < KP_OS__N; k++)
		kp__os_fault_arm(&pool->os, k, KP_FAULT_OFF, 0, 0.0, 0);
	kp__tcache_fini_pool(pool);
	kp__ol_destroy(pool);
	kp__primary_release_all(pool);
	kp__backup_fini(pool);
	if (parked)
		kp__daemon_reap(pool);
	kp__log_close(pool);
	pool->magic = 0;
	kp__pool_unref(pool); /* unmapped now, or by the last thread whose slot names it */
	kp__os_caller = saved;
}

void kp__pool_ref(kp_pool *pool)
{
	atomic_fetch_add_explicit(&pool->slot_refs, 1, memory_order_relaxed);
}

/* The last reference: the pool destroyed and no thread's outline slot
 * naming it (outline.c, slot_name), so its address may be mapped again.
 * acq_rel: the unmap comes after every other holder's last access. */
void kp__pool_unref(kp_pool *pool)
{
	if (atomic_fetch_sub_explicit(&pool->slot_refs, 1, memory_order_acq_rel) == 1)
		kp__os_unmap(NULL, pool, pool->self_size);
}

/* ---- accounting -------------------------------------------------------- */

static void account(_Atomic size_t *use, _Atomic size_t *peak_use, size_t bytes, bool out)
{
	if (!out) {
		atomic_fetch_sub_explicit(use, bytes, memory_order_relaxed);
		return;
	}
	size_t now = atomic_fetch_add_explicit(use, bytes, memory_order_relaxed) + bytes;
	size_t peak = atomic_load_explicit(peak_use, memory_order_relaxed);
	while (now > peak && !atomic_compare_exchange_weak(peak_use, &peak, now))
		;
}

void kp__account_out(kp_pool *pool, size_t bytes, bool out)
{
	account(&pool->out_bytes, &pool->peak_out_bytes, bytes, out);
	account(&pool->seg_out_bytes, &pool->peak_seg_out_bytes, bytes, out);
}

void kp__account_huge(kp_pool *pool, size_t bytes, bool out)
{
	account(&pool->out_bytes, &pool->peak_out_bytes, bytes, out);
}

/* The critical state, with hysteresis: entered when the primary fails or its
 * use reaches critical_wm% of primary_max; left only when use falls under
 * recover_wm%, so traffic does not flap at the threshold. */
void kp__backup_mode_update(kp_pool *pool, bool primary_failed)
{
	if (!pool->backup.size)
		return;
	size_t used = (pool->units_total - pool->units_free) * KP_UNIT_SIZE + atomic_load(&pool->huge_bytes);
	unsigned pct = (unsigned)((double)used * 100.0 / (double)pool->conf.primary_max);
	int mode = atomic_load_explicit(&pool->backup_mode, memory_order_relaxed);
	if (!mode && (primary_failed || pct >= pool->conf.critical_wm)) {
		atomic_store(&pool->backup_mode, 1);
		atomic_fetch_add(&pool->bk_enters, 1);
		kp__event(pool, KP_EV_BACKUP_ENTER, KP_POOL_BACKUP, NULL, used,
			  "critical traffic to backup: primary %s, %u%% used", primary_failed ? "failed" : "critical",
			  pct);
	} else if (mode && !primary_failed && pct < pool->conf.recover_wm) {
		atomic_store(&pool->backup_mode, 0);
		atomic_fetch_add(&pool->bk_leaves, 1);
		kp__event(pool, KP_EV_BACKUP_LEAVE, KP_POOL_PRIMARY, NULL, used,
			  "primary recovered (%u%% used): critical traffic returns", pct);
	}
}

/* ---- the critical privilege --------------------------------------------- */

KP_EXPORT uint64_t kp_critical_token(kp_pool *pool)
{
	if (!kp__pool_live(pool, "kp_critical_token"))
		return 0;
	if (atomic_exchange(&pool->token_given, 1)) {
		kp__event(pool, KP_EV_TOKEN, KP_POOL_BACKUP, NULL, 0, "token asked for again: refused");
		return 0;
	}
	kp__event(pool, KP_EV_TOKEN, KP_POOL_BACKUP, NULL, 0, "critical token handed out");
	return pool->token;
}

KP_EXPORT int kp_critical_enter(kp_pool *pool, uint64_t token)
{
	if (!kp__pool_ok(pool)) {
		kp__not_a_pool(pool, "kp_critical_enter");
		return KP_EINVAL;
	}
	/* Compare without an early exit, so timing says nothing of the token. */
	uint64_t diff = (token ^ pool->token) | (uint64_t)!atomic_load(&pool->token_given);
	if (diff) {
		kp__event(pool, KP_EV_TOKEN, KP_POOL_BACKUP, NULL, 0, "critical_enter with a bad token: denied");
		kp__set_error("kp_critical_enter: bad token");
		return KP_EDENIED;
	}
	if (kp__scope_enter(pool) < 0) {
		kp__event(pool, KP_EV_TOKEN, KP_POOL_BACKUP, NULL, 0, "critical_enter: scopes on too many pools");
		kp__set_error("kp_critical_enter: the thread holds scopes on 16 other pools already");
		return KP_EDENIED;
	}
	return 0;
}

KP_EXPORT void kp_critical_exit(kp_pool *pool)
{
	if (!kp__pool_ok(pool)) {
		kp__not_a_pool(pool, "kp_critical_exit");
		return;
	}
	if (!kp__scope_exit(pool))
		kp__event(pool, KP_EV_TOKEN, KP_POOL_BACKUP, NULL, 0, "critical_exit without a scope");
}

KP_EXPORT int kp_stats_json(kp_pool *pool, char *buf, size_t len)
{
	if (!kp__pool_live(pool, "kp_stats_json") || (!buf && len))
		return KP_EINVAL;
	return kp__stats_json(pool, buf, len);
}

/* ---- fault injection ---------------------------------------------------- */

/* Damage the head block of the first non-empty bin of the calling thread's
 * cache: its header (what) or its free-list link. */
static int corrupt_cache(kp_pool *pool, bool link)
{
	kp__tcache *tc = kp__tcache_get(pool, pool->id);
	for (unsigned c = 0; tc && c < KP_NCLASS; c++) {
		kp__bin *b = &tc->bin[c];
		if (!b->head)
			continue;
		kp__hdr *h = b->head;
		if (link)
			kp__link_put(pool->secret, h,
				     (void *)((uintptr_t)kp__link_get(pool->secret, h) + ((uintptr_t)1 << 40)));
		else
			kp__hdr_put(h, kp__hdr_tag(h) ^ 0x10, kp__hdr_meta(h));
		kp__event(pool, KP_EV_FAULT_INJECTED, KP_POOL_PRIMARY, h, kp__class_size[c], "damaged the %s of %p",
			  link ? "free-list link" : "header", (void *)h);
		atomic_fetch_add(&pool->faults_injected, 1);
		return 0;
	}
	kp__set_error("corrupt@%s: the calling thread caches no free block of this pool (allocate and free one first)",
		      link ? "freelist" : "header");
	return -1;
}
/* A fault spec's count or seed: decimal digits only, within 64 bits.
 * strtoull alone takes a sign ("-1" is 2^64 - 1: nth=-1 would arm a fault
 * that never comes) and saturates past 64 bits, so both are refused here,
 * as any other bad mode is (session 22's review,
 * tests/test_attack22_fault_spec.py). */
static bool fault_count(const char *s, unsigned long long *out)
{
	if (*s < '0' || *s > '9')
		return false;
	char *end;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (*end || errno == ERANGE)
		return false;
	*out = v;
	return true;
}

static int inject_one(kp_pool *pool, const char *item, size_t len)
{
	const char *at = memchr(item, '@', len);
	if (!at) {
		kp__set_error("fault '%.*s': expected KIND@MODE", (int)len, item);
		return -1;
	}
	size_t klen = (size_t)(at - item), mlen = len - klen - 1;
	const char *mode = at + 1;
	if (klen == 7 && !memcmp(item, "corrupt", 7)) {
		if (mlen == 4 && !memcmp(mode, "span", 4)) {
			if (kp__primary_quarantine_span(pool) == 0) {
				atomic_fetch_add(&pool->faults_injected, 1);
				return 0;
			}
			kp__set_error("corrupt@span: the pool has no live span yet");
			return -1;
		}
		bool link = mlen == 8 && !memcmp(mode, "freelist", 8);
		if (link || (mlen == 6 && !memcmp(mode, "header", 6))) {
			if (!pool->conf.checks) {
				kp__set_error(
					"corrupt@%.*s needs checks:on (without checks the damage would be followed)",
					(int)mlen, mode);
				return -1;
			}
			return corrupt_cache(pool, link);
		}
		kp__set_error("fault '%.*s': corrupt@ takes span, header or freelist", (int)len, item);
		return -1;
	}
	int kind = kp__os_kind(item, klen);
	bool all = klen == 3 && !memcmp(item, "all", 3);
	if (kind < 0 && !all) {
		kp__set_error(
			"fault '%.*s': unknown kind '%.*s' (mmap, munmap, madvise, mprotect, other, all, corrupt)",
			(int)len, item, (int)klen, item);
		return -1;
	}
	char buf[96];
	if (mlen >= sizeof buf) {
		kp__set_error("fault '%.*s': too long", (int)len, item);
		return -1;
	}
	memcpy(buf, mode, mlen);
	buf[mlen] = 0;
	unsigned long long n = 0, seed = pool->conf.seed;
	double prob = 0;
	int m = -1;
	char *seedp = strstr(buf, "@seed=");
	if (seedp) {
		*seedp = 0;
		if (!fault_count(seedp + 6, &seed))
			m = -2;
	}
	char *end = NULL;
	if (m == -2)
		m = -1;
	else if (!strcmp(buf, "off"))
		m = KP_FAULT_OFF;
	else if (!strncmp(buf, "nth=", 4) && fault_count(buf + 4, &n) && n > 0)
		m = KP_FAULT_NTH;
	else if (!strncmp(buf, "every=", 6) && fault_count(buf + 6, &n) && n > 0)
		m = KP_FAULT_EVERY;
	else if (!strncmp(buf, "p=", 2) && (prob = strtod(buf + 2, &end)) >= 0 && prob <= 1 && !*end && end != buf + 2)
		m = KP_FAULT_PROB;
	if (m < 0) {
		kp__set_error("fault '%.*s': bad mode '%.*s' (nth=N, every=N, p=0..1 with optional @seed=S, or off)",
			      (int)len, item, (int)mlen, mode);
		return -1;
	}
	for (int k = 0; k < KP_OS__N; k++)
		if (all || k == kind)
			kp__os_fault_arm(&pool->os, k, m, n, prob, seed + (uint64_t)k);
	return 0;
}

KP_EXPORT int kp_fault_inject(kp_pool *pool, const char *spec)
{
	if (!kp__pool_live(pool, "kp_fault_inject"))
		return KP_EINVAL;
	if (!spec) {
		kp__set_error("kp_fault_inject: spec is NULL");
		return KP_EINVAL;
	}
	return fault_inject(pool, spec);
}

/* kp_fault_inject's work, also for kp_create's faults option (the pool is not
 * registered yet). */
static int fault_inject(kp_pool *pool, const char *spec)
{
	const char *s = spec;
	while (*s) {
		while (*s == ';' || *s == ' ' || *s == '\t')
			s++;
		size_t len = strcspn(s, "; \t");
		if (len && inject_one(pool, s, len) < 0)
			return KP_EINVAL;
		s += len;
	}
	return 0;
}
