/*
 * tcache.c - per-thread caches: the path that takes no lock and makes no
 * system call.
 *
 * A thread keeps, per pool, one bin of free blocks per size class. kp_alloc
 * pops from the bin and kp_free pushes to it; only an empty bin (refill a
 * batch from the central lists) or a full one (return half, or all but one
 * block when it only takes frees: kp__bin_miss) takes a lock.
 * Blocks are not owned by threads: a block freed by another thread simply
 * joins that thread's bin, as in tcmalloc.
 *
 * The thread-local slots hold (pool id, cache) pairs. Ids are never reused,
 * so a slot left behind by a destroyed pool can never match a new pool at
 * the same address.
 *
 * The thread's critical scopes live here too, in a table of their own: a
 * cache is evicted when a fifth pool takes its slot, a scope must last until
 * its exit whatever else the thread does (issue 12: the depth lived in the
 * cache and was lost with it).
 */
#include "internal.h"

__thread kp__tls kp__tls_state
	__attribute__((tls_model("initial-exec"))) = {.fast_alloc = KP_FAST_NONE,
						      .fast_tc = &kp__tcache_none,
						      .ol = {.heap = &kp__ol_empty_heap, .map = kp__ol_no_map}};
/* The cache alloc_fast pops when no pool takes its path (internal.h,
 * KP_FAST_NONE): every bin empty, never written (alloc_fast's count test
 * sends the call to alloc_slow). In .lbss, apart from the small state
 * every call reads (preload.c's LARGE: tests/test_preload.py's resident
 * bss, 12 -> 16 KiB in .bss); its pages are never touched but for a
 * garbage pool's first bin. */
__attribute__((section(".lbss"))) kp__tcache kp__tcache_none;

static pthread_key_t exit_key;
static pthread_once_t exit_once = PTHREAD_ONCE_INIT;

/* The pool's threads share tcache_bytes (8 MiB by default), as tcmalloc's
 * overall thread cache: a thread's bins grow by at most its share past
 * their start, over all classes (kp__bin_miss), and never less than
 * KP_TC_MIN_BYTES while tcache_bytes allows; one class's bin holds at most
 * a KP_BIN_CLASS_SHARE-th of tcache_bytes and KP_BIN_CLASS_BYTES (at least
 * KP_BIN_LEAST, at most KP_BIN_MAX blocks). A bound per class alone (256
 * KiB each, with no budget shared) let every class a thread touched grow to
 * 256 KiB: prodcons's two consumer threads each cached
 * freed messages of ~20 classes, 14 MiB against glibc's 4. A fixed 256 KiB
 * per thread cost a single thread of many classes (kpbench b: 16 B-64 KiB)
 * 20% of its speed and 8 MiB more RSS (a block reused from a bin is one
 * whose pages are already resident), and two threads of small blocks
 * (kpbench c) 9% more instructions (conf.c has the figures of the
 * default). */
#define KP_BIN_CLASS_SHARE 4
#define KP_TC_MIN_BYTES ((size_t)256 << 10)
/* A bin's cap (its max never passes it): a KP_BIN_CLASS_SHARE-th of
 * tcache_bytes and KP_BIN_SOLO_BYTES of its class at most. What a bin may
 * grow to now is bounded further, by its thread's budget (class_bound):
 * KP_BIN_CLASS_BYTES but for a lone thread on a big heap. */
static uint16_t bin_max(const kp_pool *pool, unsigned cls)
{
	size_t share = pool->conf.tcache_bytes / KP_BIN_CLASS_SHARE;
	size_t n = (share < KP_BIN_SOLO_BYTES ? share : KP_BIN_SOLO_BYTES) / kp__class_size[cls];
	return (uint16_t)(n < KP_BIN_LEAST ? KP_BIN_LEAST : n > KP_BIN_MAX ? KP_BIN_MAX : n);
}

/* A bin's max at its start (KP_BIN_START, KP_BIN_START_BYTES), at most cap. */
static uint32_t bin_start(unsigned cls, uint32_t cap)
{
	size_t start = KP_BIN_START_BYTES / kp__class_size[cls];
	start = start < KP_BIN_LEAST ? KP_BIN_LEAST : start > KP_BIN_START ? KP_BIN_START : start;
	return cap < start ? cap : (uint32_t)start;
}

/* This thread's share of tcache_bytes now (threads that come later get a
 * smaller one; what a thread has grown it keeps, but for the growth of
 * bins the idle sweep gives back: bin_sweep). */
/* And a thread's bins grow by at most a KP_TC_OUT_SHARE-th of the bytes
 * the pool has handed out of its spans (live blocks, and the blocks bins
 * and parked batches hold), never less than KP_TC_OUT_FLOOR: a cache sized
 * to the heap, as tcmalloc's overall thread cache follows the program's. A
 * small heap's bins cost its peak RSS most: what a class's bin held at its
 * fullest stays touched in the class's span, and a thread of 11 classes of
 * 8-256 B blocks (bench-small-objects, kpbench a: 1,000 live) grew its bins
 * by 288 KiB of the 8 MiB budget, all 11 to 256 blocks, on a heap of 170
 * KiB. With the bound its peak RSS under the preload is 32 KiB lower, and
 * kpbench a runs 183.5 -> 186 instructions per operation (callgrind,
 * tests/test_instruction_counts.py); kpbench b (10,000 live blocks of 16 B
 * to 64 KiB, a heap of tens of MiB) is not bound by it (it ran 494 with a
 * 64 KiB budget for all). The bytes handed out include the bins' own, so
 * the bound follows the heap as it grows. Only while the pool has one
 * thread's cache: with two or more, bins pass blocks between threads, and
 * a phase of one class going one way grows its bins so that each class lock
 * moves a big batch (kp__bin_miss); kpbench c's two threads, their heap of
 * 4 MiB, ran 229 -> 271-274 instructions per operation with the bound. */
#define KP_TC_OUT_SHARE 4
#define KP_TC_OUT_FLOOR ((size_t)64 << 10)
/* A lone thread's budget goes past tcache_bytes, up to KP_TC_SOLO times
 * it, while a quarter of the heap allows (a heap of more than 32 MiB, with
 * the default): a pool of one thread has no other thread's caches to leave
 * room for, and on a big heap a miss costs more than the bytes a bin
 * holds. kpbench b (one thread, 10,000 live blocks of 16 B-64 KiB: a heap
 * of about 80 MB) spent its 8 MiB, and its bins of 16-64 KiB held 4-16
 * blocks, each class missing every 4-40 operations of its own: with
 * KP_TC_SOLO (and the classes' bound that follows the budget,
 * class_bound) its kp_alloc + kp_free run 247.8 -> 225.8 instructions an
 * operation (callgrind, tests/test_instruction_counts.py; 221.2 with 4
 * times, its bins then holding twice the bytes: test_bin_solo, 4.9 against
 * 9.9 MiB on a heap of 120 MB), its peak RSS +0.9 MiB (47.2 -> 48.1;
 * mimalloc's 49.9, tcmalloc's 53.7: a cached big block's untouched pages
 * are not resident). gperftools' thread cache holds up to 4 MiB a thread,
 * its transfer and central caches more, and a miss there costs about a
 * hundred instructions; here 1,100-1,400 (kp__central_take and _give: the
 * segment's keyed magic per block, kp__seg_ok, a quarter of it). A heap of
 * 32 MiB or less keeps the budget it had. */
#define KP_TC_SOLO 2
static size_t tc_budget(const kp_pool *pool)
{
	size_t total = pool->conf.tcache_bytes, n = atomic_load_explicit(&pool->tc_live, memory_order_relaxed);
	size_t share = n > 1 ? total / n : total, least = total < KP_TC_MIN_BYTES ? total : KP_TC_MIN_BYTES;
	size_t budget = share > least ? share : least;
	if (n > 1)
		return budget;
	size_t heap = atomic_load_explicit(&pool->out_bytes, memory_order_relaxed) / KP_TC_OUT_SHARE;
	heap = heap > KP_TC_OUT_FLOOR ? heap : KP_TC_OUT_FLOOR;
	budget *= KP_TC_SOLO;
	return budget < heap ? budget : heap;
}

/* How far a bin of size-byte blocks may grow on its thread's budget: a
 * KP_BIN_CLASS_PARTS-th of the budget, KP_BIN_CLASS_BYTES at least (and
 * KP_BIN_SOLO_BYTES at most: the bin's cap). With the default 8 MiB that
 * is KP_BIN_CLASS_BYTES; only a lone thread's bigger budget (KP_TC_SOLO)
 * raises it. A bound per class that did not follow the budget left it
 * unused: kpbench b with a 32 MiB budget and 256 KiB a class ran 246
 * instructions an operation (its 64 KiB bins stayed at 4 blocks); with a
 * 1 MiB bound and its 8 MiB budget, 268 (its big classes took the budget
 * its small ones had used better). */
#define KP_BIN_CLASS_PARTS 32
static size_t class_bound(size_t budget)
{
	size_t b = budget / KP_BIN_CLASS_PARTS;
	return b > KP_BIN_CLASS_BYTES ? b : KP_BIN_CLASS_BYTES;
}
_Static_assert(KP_BIN_MAX <= UINT16_MAX && KP_NCLASS <= UINT16_MAX, "a bin's cap and class fit 16 bits");

/* The exit hook: every cache of the thread goes back. A thread may use a pool
 * after it (its own TLS destructors, registered after ours, run later: C++
 * thread_local objects, pthread keys created after the first pool call); a
 * cache made then would never be released (issue 12: after 4,096 such threads
 * no thread got a cache and every kp_alloc returned NULL). So the thread is
 * marked exited, and from here kp__tcache_slow makes no cache: those late
 * calls take the shared path, a class lock per call, which for the few calls
 * of a thread's last moments costs nothing that matters. (Re-arming the key
 * instead would hold only for PTHREAD_DESTRUCTOR_ITERATIONS rounds.) */
static void thread_exit(void *arg)
{
	(void)arg;
	/* no signal handler's call inside the release of the caches (its
	 * counts read, pool->lock and the registry lock held: its call took
	 * the lock it needed, kpool's abort, or counted into a cache already
	 * read: test_outline_signal_dup_attack32, 16-80 bytes in use in 2-3
	 * runs of 10, s33-sig); one held meanwhile runs after it */
	sigset_t old;
	kp__os_signals_off(&old);
	kp__tls_state.exited = true;
	kp__tls_state.fast_alloc = KP_FAST_NONE;
	kp__tls_state.fast_tc = &kp__tcache_none;
	kp__tls_state.fast_free = 0;
	kp__registry_lock();
	for (int i = 0; i < KP_TLS_SLOTS; i++) {
		kp_pool *pool = kp__tls_state.id[i] ? kp__registry_find(kp__tls_state.id[i]) : NULL;
		if (pool)
			kp__tcache_release(pool, kp__tls_state.tc[i]);
		kp__tls_state.id[i] = 0;
		kp__tls_state.tc[i] = NULL;
	}
	kp__registry_unlock();
	kp__os_signals_back(&old);
}

/* ---- critical scopes ------------------------------------------------- */

/* Scopes held at once by one thread, on as many pools: a program holds a
 * scope around an emergency path of one pool, rarely two; 16 leaves room for
 * nesting across subsystems and costs 256 bytes a thread. Ordinary TLS, not
 * initial-exec: read only by critical calls, and the static TLS that a
 * library loaded by dlopen (the Python binding) may take is scarce. A new
 * thread's table is empty, so no scope is ever inherited. */
#define KP_SCOPE_SLOTS 16
static __thread struct {
	uint64_t id; /* the pool's id (never reused); 0: free */
	unsigned depth;
} scopes[KP_SCOPE_SLOTS];

unsigned kp__scope_depth(const kp_pool *pool)
{
	for (int i = 0; i < KP_SCOPE_SLOTS; i++)
		if (scopes[i].id == pool->id)
			return scopes[i].depth;
	return 0;
}

int kp__scope_enter(kp_pool *pool)
{
	int free_slot = -1;
	for (int i = 0; i < KP_SCOPE_SLOTS; i++) {
		if (scopes[i].id == pool->id) {
			scopes[i].depth++;
			return 0;
		}
		if (!scopes[i].id && free_slot < 0)
			free_slot = i;
	}
	if (free_slot < 0) { /* full: forget the scopes of pools destroyed inside them */
		kp__registry_lock();
		for (int i = 0; i < KP_SCOPE_SLOTS; i++)
			if (!kp__registry_find(scopes[i].id)) {
				scopes[i].id = 0;
				free_slot = i;
			}
		kp__registry_unlock();
		if (free_slot < 0)
			return -1;
	}
	scopes[free_slot].id = pool->id;
	scopes[free_slot].depth = 1;
	return 0;
}

bool kp__scope_exit(kp_pool *pool)
{
	for (int i = 0; i < KP_SCOPE_SLOTS; i++)
		if (scopes[i].id == pool->id) {
			if (--scopes[i].depth == 0)
				scopes[i].id = 0;
			return true;
		}
	return false;
}

static void exit_key_init(void)
{
	pthread_key_create(&exit_key, thread_exit);
}

void kp__tcache_keys_init(void)
{
	pthread_once(&exit_once, exit_key_init);
}

int kp__tcache_chunk_add(kp_pool *pool)
{
	if (pool->tc_nchunks == KP_TC_CHUNKS)
		return -1;
	kp__tcache *chunk = kp__os_map(&pool->os, KP_TC_CHUNK * sizeof(kp__tcache), KP_PAGE, false);
	if (!chunk)
		return -1;
	/* Not linked into tc_free: that would write one page of every cache
	 * (a cache is 300 KiB, nearly all its key rows) and make all 64 resident. */
	pool->tc_chunks[pool->tc_nchunks++] = chunk;
	pool->tc_fresh = KP_TC_CHUNK;
	return 0;
}

/* Where bin cls's key stack starts (kp__tcache: the first classes' starts
 * beside the header, the others' after the rows). */
static uint64_t *key_start(kp__tcache *tc, unsigned cls)
{
	return cls < KP_FRONT_CLASSES ? tc->starts_front[cls] : tc->starts_back[cls - KP_FRONT_CLASSES];
}

static kp__tcache *tcache_new(kp_pool *pool)
{
	pthread_mutex_lock(&pool->lock);
	if (!pool->tc_free && !pool->tc_fresh && kp__tcache_chunk_add(pool) < 0) {
		pthread_mutex_unlock(&pool->lock);
		return NULL;
	}
	kp__tcache *tc = pool->tc_free;
	if (tc)
		pool->tc_free = tc->next;
	else
		tc = (kp__tcache *)pool->tc_chunks[pool->tc_nchunks - 1] + (KP_TC_CHUNK - pool->tc_fresh--);
	memset(tc, 0, offsetof(kp__tcache, starts_front)); /* the key stacks: see kp__tcache */
	tc->pool_id = pool->id;
	tc->pool = pool;
	for (unsigned c = 0; c < KP_NCLASS; c++) {
		tc->bin[c].cap = bin_max(pool, c);
		tc->bin[c].cls = (uint16_t)c;
		tc->stack[c] = key_start(tc, c);
		tc->bin[c].max = bin_start(c, tc->bin[c].cap);
	}
	tc->next = pool->tcaches;
	if (pool->tcaches)
		pool->tcaches->prev = tc;
	pool->tcaches = tc;
	atomic_fetch_add_explicit(&pool->tc_live, 1, memory_order_relaxed);
	pthread_mutex_unlock(&pool->lock);
	return tc;
}

kp__tcache *kp__tcache_slow(kp_pool *pool)
{
	kp__tls *t = &kp__tls_state;
	int i;
	for (i = 1; i < KP_TLS_SLOTS; i++)
		if (t->id[i] == pool->id)
			break;
	kp__tcache *tc;
	if (i < KP_TLS_SLOTS) {
		tc = t->tc[i];
	} else {
		/* Past the exit hook, or no cache to be had (every chunk taken, or
		 * the OS refused one): the caller takes the shared path. */
		tc = t->exited ? NULL : tcache_new(pool);
		if (!tc)
			return NULL;
		i = KP_TLS_SLOTS - 1;
		if (t->id[i]) {
			/* Evict the least recently used slot: its cache goes back. */
			kp__registry_lock();
			kp_pool *old = kp__registry_find(t->id[i]);
			if (old)
				kp__tcache_release(old, t->tc[i]);
			kp__registry_unlock();
		}
		if (!t->registered) {
			pthread_once(&exit_once, exit_key_init);
			pthread_setspecific(exit_key, t);
			t->registered = true;
		}
	}
	for (; i > 0; i--) {
		t->id[i] = t->id[i - 1];
		t->tc[i] = t->tc[i - 1];
	}
	t->id[0] = pool->id;
	t->tc[0] = tc;
	/* The fast paths' test of the slot (kp__tls): the pool's mode, fixed
	 * at kp_create. */
	bool checked = pool->conf.checks && !pool->conf.poison && !pool->conf.outline; /* outline: alloc.c's dispatch */
	t->fast_alloc = checked ? pool->id : KP_FAST_NONE;
	t->fast_tc = checked ? tc : &kp__tcache_none;
	t->fast_free = checked && pool->secret.aes ? pool->id : 0;
	return tc;
}

/* Slow start, as tcmalloc's per-thread lists: a bin whose count walks at
 * random (frees and allocations of its class in equal measure) misses about
 * once per (max / 2)^2 operations, one that only fills or drains once per
 * max / 2. A miss moves max / 2 blocks under the class lock (a two-way
 * bin's: a one-way one moves whole batches, below); doubling max
 * while misses come within KP_BIN_GROW * max operations settles a random
 * walk at 32-64 blocks (a miss per ~500 operations) and takes a burst of
 * one class to the cap within a few misses.
 *
 * Only a swing grows a bin: a miss at the other end from the last one (a
 * flush after a refill, a refill after a flush), the count carried across
 * the bin's whole range. Misses at one end, however quick, are a drift (a
 * thread's heap growing: each refill's blocks stay live; or shrinking),
 * which a bigger bin does not absorb: it only moves the same blocks in
 * fewer, bigger batches, and then holds them when the drift stops. Larson
 * (issue 14): each of its four threads' bins of 640-1024 B grew to 192-256
 * blocks while the thread's first table filled and held 500-800 KiB through
 * the rest of the run (test_bin_drift: a filling thread's bins reached 256
 * blocks; now 80 at most); its peak RSS under the preload 11.6 -> 10.0 MiB
 * (`kpool bench`, medians of 9; glibc 9.1), CPU time unchanged.
 * And a young bin (fewer than KP_BIN_YOUNG operations per block of its
 * start) does not grow, and one of a small class (a start of 8 or more
 * blocks) refills a quarter of its start: a short-lived thread's bins are
 * memory its spans hold touched, for a thread that will not reuse them. A
 * bound per block of the start, not one count for all: bins of big classes
 * (a start of 2-4 blocks) held young for 256 operations, refilling one block
 * at a time, cost kpbench b 1.4% more instructions in kp_alloc. */
#define KP_BIN_GROW 4
/* A bin whose thread mostly only frees into it (a consumer of blocks other
 * threads allocate) or only takes from it (a producer) passes its blocks
 * through to the central lists whatever its size: growing it saves lock
 * round trips, not work, and pins up to max blocks that this thread will
 * never reuse (prodcons under the preload peaked at 5.6-6.1 MiB with
 * them growing, 4.9-5.2 with them kept at their start; glibc 3.9). Such a
 * bin stays at its start; one-way: fewer than 1 in KP_BIN_ONE_WAY of its
 * operations went the other way, or none yet (a thread that has only
 * allocated so far is a grower: with the shared 8 MiB budget its bins grew
 * at their first misses and each refill took and wrote ahead blocks the
 * daemon had not pre-faulted, test_pool_behaviour's paced start 1,230-1,340
 * faults in its first 16 MiB against 1,030-1,100 before d70df12). */
#define KP_BIN_ONE_WAY 8

/* The keys a row for a bin of max blocks holds (max > KP_BIN_START): the
 * power of two at or above it, at least 32; its level: 32 << level keys. */
static unsigned row_keys(uint32_t max)
{
	unsigned k = 32;
	while (k < max)
		k <<= 1;
	return k;
}
static int row_level(unsigned keys)
{
	return __builtin_ctz(keys) - 5;
}

/* A row for a bin growing to want blocks, holding its count keys copied
 * from old, which goes to row_free[old_level] (-1: old is the bin's start,
 * kept). See kp__tcache. */
static uint64_t *row_move(kp__tcache *tc, uint64_t *old, int old_level, unsigned count, uint32_t want)
{
	unsigned keys = row_keys(want);
	int level = row_level(keys);
	uint64_t *row = tc->row_free[level];
	if (row) {
		tc->row_free[level] = (uint64_t *)(uintptr_t)row[0];
	} else {
		row = tc->keys + tc->row_used;
		tc->row_used += keys;
	}
	memcpy(row, old, (size_t)count * sizeof *row);
	if (old_level >= 0) {
		old[0] = (uint64_t)(uintptr_t)tc->row_free[old_level];
		tc->row_free[old_level] = old;
	}
	return row;
}
_Static_assert(sizeof(((kp__tcache *)0)->keys) / sizeof(uint64_t) == (size_t)KP_NCLASS * (32 + 64 + 128 + 256),
	       "room for KP_NCLASS rows of every size");

/* The idle sweep, at every KP_SWEEP_MISSES-th miss of a thread's bins: a
 * bin with no operation since the previous sweep gives its blocks back to
 * their spans and its grown max back to the thread's budget (it starts
 * again from its start when its class is used again). A bin keeps what its
 * thread's last use of the class left in it, and its max grows for good:
 * without the sweep, a phase of a program that walks a few big classes
 * leaves their blocks pinned for the thread's life, memory that no other
 * class and no other thread can reuse (test_tcache_bytes: six 16-48 KiB
 * bins held 6.6 MiB through 400K later operations of another class; git's
 * largest process held 3-6 MiB of bins at its peak). tcmalloc's thread
 * caches give back what their lists did not use between scavenges (the
 * low-water mark, kept on every pop); a bin's operation counts, kept
 * anyway, tell use from idleness with nothing on the fast paths. Misses
 * are the clock: a thread that allocates and frees keeps missing in some
 * class, and 64 of them are thousands of operations (kpbench b: about one
 * miss per 30), so a class used at all between two sweeps is never swept,
 * and a sweep (a pass over the bins' counts) costs about 5 instructions a
 * miss. */
#define KP_SWEEP_MISSES 64

/* An empty bin back to its start: what it grew by leaves the thread's
 * growth, and its row of keys goes to the free rows of its size. */
static void bin_restart(kp__tcache *tc, kp__bin *b)
{
	unsigned c = b->cls;
	uint32_t start = bin_start(c, b->cap);
	if (b->max > start)
		tc->grown -= (size_t)(b->max - start) * kp__class_size[c];
	uint64_t *row = tc->stack[c];
	if (row != key_start(tc, c)) {
		int level = row_level(row_keys(b->max));
		row[0] = (uint64_t)(uintptr_t)tc->row_free[level];
		tc->row_free[level] = row;
		tc->stack[c] = key_start(tc, c);
	}
	b->max = start;
}

static void bin_sweep(kp__tcache *tc, const kp__bin *busy)
{
	for (unsigned c = 0; c < KP_NCLASS; c++) {
		kp__bin *b = &tc->bin[c];
		uint32_t ops = (uint32_t)(atomic_load_explicit(&b->allocs, memory_order_relaxed) +
					  atomic_load_explicit(&b->frees, memory_order_relaxed));
		bool idle = ops == tc->swept_ops[c];
		tc->swept_ops[c] = ops;
		if (!idle || b == busy)
			continue;
		if (b->count)
			kp__tcache_flush_bin(tc->pool, tc, c, 0);
		if (!b->count && b->max > bin_start(c, b->cap))
			bin_restart(tc, b);
	}
}

/* A miss whose window (the operations since the bin's last miss) went one
 * way: fewer than 1 in KP_BIN_ONE_WAY of them the other way (a refill
 * after only allocations, a flush after only frees), and at least one. Such
 * a bin passes blocks through (a producer's, a consumer's, or any thread's
 * in a phase of one class): it moves whole batches, a refill to its max, a
 * flush down to one block, so each class lock moves max blocks, not max / 2
 * (issue 14: prodcons under the preload, its producers' and consumers'
 * bins at their start of 4-16 blocks, made 830K refills and 806K flushes
 * for 2M blocks; with whole batches 423K and 530K). A window that went both ways is a bin whose
 * count walks: it keeps half batches (a refill to its max would overflow at
 * its next free, and a flush to one block run empty at its next few
 * allocations). The window, not the bin's life: a thread that produced a
 * class for a while and then uses it both ways moves half batches from its
 * next miss on. A whole flush parks the bin as it is, list and keys, when
 * it fits a parked batch (KP_XFER_KEYS, KP_XFER_BYTES; else it keeps what
 * does not fit), and the bin that takes it may take up to its max, not only
 * what its refill wanted (alloc.c, small_alloc): in kpbench c with bins
 * bound to 64 blocks (an experiment: bins of its classes reach 256), 48K
 * refills in 10M operations found the batch parked too big for them and
 * went to the spans, and about as many flushes found the class's slots
 * full. */
static unsigned whole_flush_keep(const kp__bin *b)
{
	unsigned size = kp__class_size[b->cls];
	unsigned fit = KP_XFER_BYTES / size < KP_XFER_KEYS ? (unsigned)(KP_XFER_BYTES / size) : KP_XFER_KEYS;
	if (b->count <= fit)
		return KP_FLUSH_WHOLE;
	unsigned keep = b->count - fit;
	return keep < b->max / 2 ? keep : b->max / 2;
}

/* A bin of a big class (KP_BIN_BIG and up: 4 KiB; it was 16 KiB, and the
 * bins of 4-16 KiB classes grew as small classes' do, to 64 blocks and
 * their cap of 256 KiB: two threads walking 4-16 KiB blocks, one handing a
 * quarter of its frees to the other, held 2.9-3.1 MiB in one thread's bins
 * and parked batches and peaked at 25.2 MiB, now 1.6-1.8 and 23.8, for 7%
 * more instructions: test_mid_bin_threads) of a pool with n threads'
 * caches grows to at most KP_BIN_CLASS_BYTES / n of its class (never below
 * its max now, at least KP_BIN_LEAST): big blocks cached by several threads
 * at once are the pages RSS counts, each thread's its own (git
 * pack-objects' three threads: 1.5-3.1 MiB in bins of 18-74 KiB at its
 * peak, the part of them that grew; git's peak RSS under the preload
 * 19.0-19.5 -> 18.4-18.6 MiB, as low as with tcache_bytes:0). A single
 * thread of many classes (kpbench b, 16 B-64 KiB) keeps the whole bound,
 * and its speed (a 64 KiB bin of 2 blocks misses at every other
 * operation). test_big_bin_threads.
 *
 * A bin of a small class of a pool with two or more threads' caches grows
 * to at most KP_BIN_SHARED_BYTES of its class, and never below
 * KP_BIN_SHARED_LEAST blocks. Threads that free each other's blocks
 * (kpbench c, a server's producers and consumers) swap roles every few
 * hundred blocks (as their queues fill and drain): each such swing grew
 * their bins, to the cap of 256 blocks, and each bin then held the blocks of
 * a whole phase, up to 256 of its class, while the other thread's bin of
 * the class, and the batches parked between them, held as many again:
 * kpbench c's two threads held 300-450 KiB in bins and 100-250 KiB parked
 * beside 50-150 KiB live, and its spans reached 1 MiB where glibc's two
 * arenas hold 0.4 (peak RSS 5.3 MiB against glibc's 4.3). Bound to 16 KiB
 * a class (256 blocks of 64 bytes, 64 of 256), its spans reach 0.5 MiB and
 * its peak RSS 5.24-5.44 -> 4.86-4.95 MiB (glibc 4.23-4.46). The cost: each
 * class lock moves fewer blocks, 1.3-1.7 -> 21 class locks per 1000 blocks
 * in kpbench c, and under callgrind (its threads run in turn, long one-way
 * phases) 11.8% more instructions, flushes that find both parked slots
 * taken going to the spans (with 4 slots: 5.6%, but 0.1 MiB more RSS).
 * test_xfer_shared_held: 690-730 -> 350-410 KiB in bins and parked
 * batches, 11 -> 24 class locks per 1000 blocks. A random walk of a bin
 * settles at 32-64 blocks (kp__bin_miss, slow start), which the floor
 * keeps for the bigger small classes (Larson's 640-1024 byte bins grew to
 * 40-80). A single thread (kpbench a and b) keeps the whole cap. */
#define KP_BIN_SHARED_BYTES ((size_t)16 << 10)
#define KP_BIN_SHARED_LEAST 64u
static uint32_t shared_bin_bound(const kp_pool *pool, const kp__bin *b, uint32_t want)
{
	size_t size = kp__class_size[b->cls], n = atomic_load_explicit(&pool->tc_live, memory_order_relaxed);
	if (n < 2)
		return want;
	size_t lim = size < KP_BIN_BIG ? KP_BIN_SHARED_BYTES / size : KP_BIN_CLASS_BYTES / n / size;
	if (size < KP_BIN_BIG && lim < KP_BIN_SHARED_LEAST)
		lim = KP_BIN_SHARED_LEAST;
	if (lim < b->max)
		lim = b->max;
	return want > lim ? (uint32_t)lim : want;
}

/* A refill is the only step that takes blocks out of their spans for a
 * bin (frees and allocations move them between the bin and the program),
 * so a class's spans are carved as far as its live blocks plus what its
 * bin held after a refill ever reached together: a random walk of the
 * class's live count reaches its peak while allocations outnumber frees,
 * its bin drained and refilled over and over, holding at most one refill.
 * A refill of max / 4 (a flush still keeps max / 2) carves a quarter of
 * max less at that peak: small_objects' spans (11 classes of 48-320 B,
 * bins of 128-256) 85 -> 76 pages at exit under the preload, kpbench a's
 * instructions +0.2% (callgrind: a refill from an empty bin misses again
 * a little sooner, and its bins grow a step further). Bins of fewer than
 * KP_REFILL_QUARTER keep half refills: a quarter of 16 or less is a lock
 * per 4 blocks or fewer (test_refill_quarter). */
#define KP_REFILL_QUARTER 32u

/* Big blocks pass through the bins of a pool with two or more threads'
 * caches: a bin of a class of KP_BIN_BIG and more is emptied and held at
 * max 0, so that a free gives its block back to its span and an
 * allocation takes one block (alloc.c: primary_free, free_fast, small_alloc),
 * as mimalloc caches no big block per thread; a thread alone caches them as
 * before (kpbench b, d: one thread), from its bin's start again at its next
 * miss. A block in one thread's bin serves no other thread, and no other
 * class: git pack-objects' delta search (two threads walking blocks of
 * 4-128 KiB, beside the main thread's cache) held 1.0-1.9 MiB in such bins
 * at its peak, 1-8 blocks of each of some 20 classes in each cache; its peak
 * RSS fell 18,268 -> 17,524 KiB (glibc 16,004; medians of 11 alternated
 * runs of pack-objects alone; with no thread cache at all about 17,400),
 * and the whole git workload's under kpool bench 18.0 -> 17.4 MiB, 1.15 ->
 * 1.10x glibc. The cost: a class lock per such block and operation, against
 * a program that writes 4 KiB or more of each.
 * test_big_pass_threads. Returns the miss's count: none kept (a flush),
 * one block (a refill). */
static unsigned bin_pass(kp__tcache *tc, kp__bin *b, bool flush)
{
	if (b->count)
		kp__tcache_flush_bin(tc->pool, tc, b->cls, 0);
	if (!b->count && b->max)
		bin_restart(tc, b); /* its row and growth back first */
	if (!b->count)
		b->max = 0;
	return !flush;
}

unsigned kp__bin_miss(kp__bin *b)
{
	uint64_t a = atomic_load_explicit(&b->allocs, memory_order_relaxed),
		 f = atomic_load_explicit(&b->frees, memory_order_relaxed);
	/* The window's counts are modulo 2^32 (miss_at, allocs_at: exact while
	 * a window is under 2^32 operations); the bin's age is not: truncated,
	 * it was young again for 256 operations after every 2^32
	 * (test_bin_wrap). */
	uint32_t ops = (uint32_t)(a + f);
	/* This miss's window: da allocations, df frees. */
	uint64_t da = (uint32_t)a - b->allocs_at, df = (uint32_t)(ops - b->miss_at) - da;
	bool one_way = !a || !f || a < f / KP_BIN_ONE_WAY || f < a / KP_BIN_ONE_WAY;
	/* A swing: this miss is at the other end of the bin from the last one
	 * (a flush after a refill, or a refill after a flush). */
	bool flush = b->count != 0, swing = flush != b->flushed;
	b->flushed = flush;
	bool grew = false;
	/* The shared path's bin of one is no cache's: only a bin of the
	 * thread's cache counts and sweeps. */
	kp__tcache *mine = kp__tls_state.tc[0];
	bool own = mine && (uintptr_t)b - (uintptr_t)mine->bin < sizeof mine->bin;
	if (own && ++mine->misses % KP_SWEEP_MISSES == 0)
		bin_sweep(mine, b);
	if (own && kp__class_size[b->cls] >= KP_BIN_BIG) {
		if (atomic_load_explicit(&mine->pool->tc_live, memory_order_relaxed) > 1)
			return bin_pass(mine, b, flush);
		if (!b->max) /* a thread alone again: its bin caches from its start */
			b->max = bin_start(b->cls, b->cap);
	}
	uint32_t start = bin_start(b->cls, b->cap);
	bool young = a + f < KP_BIN_YOUNG * start;
	/* This window went one way (a refill after only allocations, a flush
	 * after only frees, but for fewer than 1 in KP_BIN_ONE_WAY): the bin
	 * passes blocks through, in whole batches (below). */
	bool pass = flush ? df && da * KP_BIN_ONE_WAY < df : da && df * KP_BIN_ONE_WAY < da;
	/* A pass-through by a thread that uses the class both ways over its
	 * life (not one way: a producer's, a consumer's bins keep their start)
	 * is a phase, one thread the producer of the class and another its
	 * consumer for a while (kpbench c when its two threads run at once:
	 * thousands of blocks each way before the roles swap): it grows, so
	 * each class lock moves a batch of up to KP_XFER_KEYS blocks, not the
	 * 16 of the bin's start. A swing alone grew it once per change of
	 * roles: kpbench c's bins stayed at 16 for whole runs, 1.2-1.5M class
	 * locks per 10M operations (test_xfer_phases). A drift (a thread's
	 * heap growing) is one way over the thread's life too, and does not
	 * grow its bins (test_bin_drift). A phase moved at least KP_BIN_START
 * blocks: a bin of a big class (a start of 2-4 blocks) goes one way for a
 * window of a few operations by chance (kpbench b's 16 B-64 KiB). */
	bool phase = pass && !swing && ops - b->miss_at >= KP_BIN_START;
	if (b->max < b->cap && !young && !one_way && (swing || phase) && ops - b->miss_at < KP_BIN_GROW * b->max) {
		/* a bin of a thread's cache: the shared path's bin of one has
		 * max == cap, so it never gets here */
		kp__tcache *tc = (kp__tcache *)((char *)(b - b->cls) - offsetof(kp__tcache, bin));
		size_t size = kp__class_size[b->cls], budget = tc_budget(tc->pool);
		size_t room = budget > tc->grown ? (budget - tc->grown) / size : 0;
		uint32_t want = b->max * 2 < b->cap ? b->max * 2 : b->cap;
		size_t bound = class_bound(budget) / size;
		if (want > bound)
			want = bound > b->max ? (uint32_t)bound : b->max;
		if (want - b->max > room)
			want = b->max + (uint32_t)room;
		want = shared_bin_bound(tc->pool, b, want);
		tc->grown += (want - b->max) * size;
		uint64_t *old = tc->stack[b->cls];
		bool in_row = old != key_start(tc, b->cls);
		unsigned have = in_row ? row_keys(b->max) : KP_BIN_START;
		if (want > have) /* out of its row's room (or its start's) */
			tc->stack[b->cls] = row_move(tc, old, in_row ? row_level(have) : -1, b->count, want);
		grew = want > b->max;
		b->max = want;
	}
	b->miss_at = ops;
	b->allocs_at = (uint32_t)a;
	/* A bin that grew has room for what overflowed (a flush of it keeps
	 * max / 2, the count it had: none). */
	if (young && !b->count && b->max >= KP_BIN_START / 2) /* a young bin's refill: a quarter of its start */
		return b->max / 4;
	if (!grew && pass)
		return flush ? whole_flush_keep(b) : b->max;
	/* A two-way refill of a grown bin takes a quarter of its max, not half
	 * (KP_REFILL_QUARTER). */
	if (!flush && b->max >= KP_REFILL_QUARTER)
		return b->max / 4;
	return b->max / 2;
}

/* Park a flushed batch (transfer.c) only when another thread's cache could
 * take it: with one cache in the pool, the next bin of the class to run
 * empty is this thread's own, which would find the blocks in its spans as
 * well. A parked batch is blocks its spans do not have: a single thread's
 * refills carved new blocks beside them, and its keys filled the pool's
 * xfer_tail rows (2 KiB a class and slot, apart). small_objects under the
 * preload parked batches of 10 classes, holding 4-10 pages more of its
 * spans and 9 pages of xfer_tail (test_single_thread_parks_nothing). A
 * second thread's first allocation makes parking worth it again (tc_live
 * counts the caches handed out). */
static bool park_ok(const kp_pool *pool)
{
	return atomic_load_explicit(&pool->tc_live, memory_order_relaxed) > 1;
}

void kp__tcache_flush_bin(kp_pool *pool, kp__tcache *tc, unsigned cls, unsigned keep)
{
	kp__bin *b = &tc->bin[cls];
	if (keep == KP_FLUSH_WHOLE) {
		/* The whole bin in one step: its list (whose last link is NULL,
		 * as every bin's) and its key stack as they are, no block read.
		 * A flush that cuts the list walks to its cut, one dependent load
		 * of a block header after another: 3% of kpbench c's samples, and
		 * 8.4% with bins bound to 64 blocks (an experiment), two thirds of
		 * them on that load.
		 * Each block was vetted when it was freed into the bin, and is
		 * again, against the same key, by the bin that takes the batch
		 * (alloc.c, bin_head_ok) or by the daemon before it gives a stale
		 * batch to its spans (transfer.c, batch_vet): a link written
		 * meanwhile is caught before it is followed, as it is in a bin. */
		if (b->count && park_ok(pool) &&
		    kp__xfer_put(pool, cls, b->head, tc->stack[cls], b->count, &tc->xcount)) {
			b->head = NULL;
			b->count = 0;
			return;
		}
		keep = 1; /* not parked (no room, or no other cache): all but one block to the spans */
	}
	if (b->count <= keep)
		return;
	unsigned n = b->count - keep, i = 0;
	const uint64_t *keys = tc->stack[cls];
	/* Detach the first n blocks as one list. Each block must verify as a
	 * free block of this class under the key its place in the stack holds
	 * before its link is followed, and each link must be plausible (a
	 * stray write into a cached block's first word must not send the walk
	 * outside the pool, nor give the spans a block twice). */
	uint64_t want = kp__meta(0, (uint16_t)cls, KP_ST_FREE);
	char *list = b->head, *at = list, *last = NULL;
	for (; i < n; i++) {
		uint64_t key = keys[b->count - 1 - i] ^ kp__kslot(&pool->secret, at);
		if (!at || (kp__hdr_tag((kp__hdr *)at) ^ kp__hdr_meta((kp__hdr *)at)) != key ||
		    kp__hdr_meta((kp__hdr *)at) != want)
			break;
		char *next = kp__link_get_k(key, at);
		/* Plausible as alloc.c's next_ok has it: in at's segment (vetted:
		 * at's header verified) and 16-aligned, else a normal segment of
		 * this pool by the pagemap's tag alone (no grace section, no read
		 * of a segment header: kp__plausible cost 25 instructions a block).
		 * The block it leads to is vetted against its key next. */
		if (next &&
		    !((((uintptr_t)next ^ (uintptr_t)at) >> KP_SEG_SHIFT) == 0 && !((uintptr_t)next & (KP_HDR - 1))) &&
		    !kp__pagemap_owns(pool->id, next))
			break;
		last = at;
		at = next;
	}
	if (i < n || (b->count > n) != (at != NULL)) {
		/* Damaged: the blocks before the bad one go back, the rest is set
		 * aside (leaked on purpose, as small_alloc does with a damaged bin). */
		kp__violation(pool, KP_EV_FREELIST, KP_ECORRUPT, at ? at : last, b->count - i,
			      "damaged link in a thread cache: rest of the list quarantined");
		atomic_fetch_add(&pool->quarantined, b->count - i);
		if (last)
			kp__link_put_k(keys[b->count - i] ^ kp__kslot(&pool->secret, last), last, NULL);
		unsigned count = b->count;
		b->head = NULL;
		b->count = 0;
		if (i)
			kp__central_give(pool, cls, list, keys + count - i, i);
		return;
	}
	b->head = at;
	b->count = keep;
	/* The batch ends at its n-th block (its link led to the bin's new
	 * head): a list of its own, then parked whole for another bin of the
	 * class (transfer.c) while this thread keeps caching, or back to its
	 * spans (a thread that leaves, kp_thread_flush, no room parked). */
	kp__link_put_k(keys[keep] ^ kp__kslot(&pool->secret, last), last, NULL);
	if (!keep || !park_ok(pool) || !kp__xfer_put(pool, cls, list, keys + keep, n, &tc->xcount))
		kp__central_give(pool, cls, list, keys + keep, n);
}

void kp__tcache_release(kp_pool *pool, kp__tcache *tc)
{
	for (unsigned c = 0; c < KP_NCLASS; c++)
		kp__tcache_flush_bin(pool, tc, c, 0);
	pthread_mutex_lock(&pool->lock);
	for (unsigned c = 0; c < KP_NCLASS; c++) {
		uint64_t a = atomic_load(&tc->bin[c].allocs), f = atomic_load(&tc->bin[c].frees);
		atomic_fetch_add(&pool->dead_allocs, a);
		atomic_fetch_add(&pool->dead_frees, f);
		atomic_fetch_add(&pool->dead_in_use, (a - f) * (kp__class_size[c] - KP_HDR));
	}
	atomic_fetch_add(&pool->dead_allocs, atomic_load(&tc->allocs));
	atomic_fetch_add(&pool->dead_frees, atomic_load(&tc->frees));
	atomic_fetch_add(&pool->dead_in_use, atomic_load(&tc->in_use));
	/* its transfer counts too (kp__xcount): kp_stats sums the pool's and
	 * the listed caches' under this lock, so none is counted twice */
	atomic_fetch_add(&pool->xfer_count.parked, atomic_load(&tc->xcount.parked));
	atomic_fetch_add(&pool->xfer_count.taken, atomic_load(&tc->xcount.taken));
	atomic_fetch_add(&pool->xfer_count.full, atomic_load(&tc->xcount.full));
	atomic_fetch_add(&pool->xfer_count.empty, atomic_load(&tc->xcount.empty));
	if (tc->prev)
		tc->prev->next = tc->next;
	else
		pool->tcaches = tc->next;
	if (tc->next)
		tc->next->prev = tc->prev;
	atomic_fetch_sub_explicit(&pool->tc_live, 1, memory_order_relaxed);
	tc->pool_id = 0;
	tc->next = pool->tc_free;
	pool->tc_free = tc;
	pthread_mutex_unlock(&pool->lock);
}

/* The pool is going away: forget its slots on this thread (other threads'
 * slots hold an id that will never match again). */
void kp__tcache_fini_pool(kp_pool *pool)
{
	kp__tls *t = &kp__tls_state;
	for (int i = 0; i < KP_TLS_SLOTS; i++)
		if (t->id[i] == pool->id)
			t->id[i] = 0;
	if (t->fast_alloc == pool->id) {
		t->fast_alloc = KP_FAST_NONE;
		t->fast_tc = &kp__tcache_none;
	}
	if (t->fast_free == pool->id)
		t->fast_free = 0;
	for (int i = 0; i < KP_SCOPE_SLOTS; i++)
		if (scopes[i].id == pool->id)
			scopes[i].id = 0;
	for (size_t i = 0; i < pool->tc_nchunks; i++)
		kp__os_unmap(&pool->os, pool->tc_chunks[i], KP_TC_CHUNK * sizeof(kp__tcache));
}

KP_EXPORT void kp_thread_flush(kp_pool *pool)
{
	if (!kp__pool_ok(pool)) {
		kp__not_a_pool(pool, "kp_thread_flush");
		return;
	}
	kp__tcache *tc = kp__tcache_get(pool, pool->id);
	if (tc)
		for (unsigned c = 0; c < KP_NCLASS; c++)
			kp__tcache_flush_bin(pool, tc, c, 0);
	kp__xfer_drain(pool, true); /* and the batches parked for any thread's cache */
}
