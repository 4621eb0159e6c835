/*
 * backup.c - the backup pool: an emergency reserve for critical callers.
 *
 * Deliberately simple (the policy of when to use it lives in pool.c): a
 * binary buddy allocator over one region reserved when the pool is created,
 * with an inaccessible guard page on each side. Its metadata - per 256-byte
 * granule a state byte and the free lists' two links, side by side, so a
 * reserve of a few pages has one page of it resident - lives in a separate
 * mapping, so no user write can reach it.
 *
 * How much of the region is the reserve: with an explicit size (backup:1m),
 * all of it, pre-faulted (unless prefault:off) at creation. With backup:auto
 * (the default) the reserve scales with the pool, as Linux's min_free_kbytes
 * scales with memory: a few pages at creation (AUTO_FIRST), grown by the
 * daemon (kp__backup_grow) to follow the primary's peak bytes in use
 * (between 1/128 and 1/64 of it, AUTO_SHARE) up to the region (AUTO_REGION),
 * never shrunk. Growth doubles the reserve: the new half is pre-faulted first
 * (not added while the OS refuses: served, it would fault), then added to
 * the free lists as one block, the buddy of the old reserve, so it coalesces
 * like a free. Only the grown prefix (size) is ever served.
 * A freed block coalesces with its buddy at once, so the reserve refills
 * itself as blocks come back, the way mempool_free refills a mempool.
 *
 * With checks on, the last 8 bytes of every block hold a canary keyed like
 * the primary's (kp__canary_word of the block's key: a canary copied from
 * another block does not verify, and its first byte, the one an off-by-one
 * write hits, has its top bit set); the usable size stops short of it, and
 * free checks it: a write past the end is KP_EOVERFLOW and an event. The
 * block goes back to the reserve all the same: the reserve keeps nothing of
 * its own inside its blocks (its metadata is out of band), so an overflowed
 * block is as safe to hand out again as any, and setting it aside would make
 * each overflow a permanent loss of the emergency reserve. It costs one
 * 8-byte store at allocation and one compare at free.
 */
#include "internal.h"

#define GRAN ((size_t)1 << KP_BK_GRAN_SHIFT)
#define FREE_HEAD 0x80
#define LIVE_HEAD 0x40
#define FREED 0x20 /* was a block start, freed and merged: a second free is a double free */
#define ORDER_MASK 0x3f
#define NIL UINT32_MAX

/* backup:auto. AUTO_FIRST: resident at creation, what a small program's
 * critical path needs while its primary is exhausted and the daemon
 * recovers it - a log line, an error reply, a stdio stream and its buffer,
 * a few dozen small blocks (16 KiB; the old fixed 256 KiB was a tenth of a
 * 2.3 MiB program's peak, more than the whole 1.1x margin over glibc).
 * AUTO_SHARE: the reserve grows to the largest power of two under 1/64 of
 * the peak bytes in use, so it costs a program between 0.8% and 1.6% of its
 * peak (min_free_kbytes is 0.4% of a 1 GiB machine, 6% of a 16 MiB one: more
 * use means more threads, more critical callers in flight at once).
 * AUTO_REGION: the cap and the address space reserved at creation, reached
 * at 64 MiB in use; a critical path that needs more sets backup. */
#define AUTO_FIRST ((size_t)16 << 10)
#define AUTO_SHARE 64
#define AUTO_REGION ((size_t)1 << 20)

/* A granule's state byte written, under b->lock: a relaxed atomic store,
 * as kp__backup_state reads it with no lock (a signal handler's vetting
 * nested in its thread's call, which may hold the lock). Before (s37-robust)
 * the writes were plain, a data race with that read in C11's terms:
 * test_backup_state_race_attack37 under TSan reported it (its first run).
 * The same one mov on x86. Reads under the lock stay plain. */
static inline void state_put(kp__bk_gran *e, uint8_t v)
{
	__atomic_store_n(&e->state, v, __ATOMIC_RELAXED);
}

static void list_push(kp__backup *b, unsigned order, uint32_t g)
{
	state_put(&b->gran[g], (uint8_t)(FREE_HEAD | order));
	b->gran[g].prev = NIL;
	b->gran[g].next = b->free_head[order];
	if (b->free_head[order] != NIL)
		b->gran[b->free_head[order]].prev = g;
	b->free_head[order] = g;
}

static void list_remove(kp__backup *b, unsigned order, uint32_t g, uint8_t after)
{
	kp__bk_gran *e = &b->gran[g];
	if (e->prev != NIL)
		b->gran[e->prev].next = e->next;
	else
		b->free_head[order] = e->next;
	if (e->next != NIL)
		b->gran[e->next].prev = e->prev;
	state_put(e, after);
}

/* Free block g of `order` into the lists, coalesced with its free buddies
 * (a freed block, or the half a growth adds). Under b->lock. */
static void give_back(kp__backup *b, uint32_t g, unsigned order)
{
	while (order < b->max_order) {
		uint32_t buddy = g ^ (1u << order);
		if (b->gran[buddy].state != (FREE_HEAD | order))
			break;
		list_remove(b, order, buddy, FREED);
		g &= ~(1u << order);
		order++;
	}
	list_push(b, order, g);
}

int kp__backup_init(kp_pool *pool, size_t size)
{
	kp__backup *b = &pool->backup;
	pthread_mutex_init(&b->lock, NULL);
	for (unsigned o = 0; o < KP_BK_ORDERS; o++)
		b->free_head[o] = NIL;
	if (size == 0)
		return 0;
	b->auto_size = size == KP_BK_AUTO;
	if (b->auto_size)
		size = AUTO_REGION;
	size_t region = GRAN;
	while (region < size)
		region <<= 1;
	size_t first = b->auto_size ? AUTO_FIRST : region;
	unsigned order = 0;
	while ((GRAN << order) < first)
		order++;
	size_t ngran = region >> KP_BK_GRAN_SHIFT;
	b->meta_size = (ngran * sizeof(kp__bk_gran) + KP_PAGE - 1) & ~(size_t)(KP_PAGE - 1);
	b->meta = kp__os_map(&pool->os, b->meta_size, KP_PAGE, false);
	b->map_size = region + 2 * KP_PAGE;
	b->map = b->meta ? kp__os_reserve(&pool->os, b->map_size) : NULL;
	if (!b->map || kp__os_protect(&pool->os, b->map + KP_PAGE, region, true) < 0) {
		kp__backup_fini(pool);
		return -1;
	}
	if (pool->conf.prefault) /* off: the reserve faults in on first use, like the segments */
		kp__os_populate(&pool->os, b->map + KP_PAGE, first);
	KP_POISON(b->map + KP_PAGE, region);
	b->base = b->map + KP_PAGE;
	b->region = region;
	b->max_order = order;
	b->gran = b->meta;
	list_push(b, order, 0);
	atomic_store(&b->size, first);
	return 0;
}

void kp__backup_fini(kp_pool *pool)
{
	kp__backup *b = &pool->backup;
	if (b->map)
		kp__os_unmap(&pool->os, b->map, b->map_size);
	if (b->meta)
		kp__os_unmap(&pool->os, b->meta, b->meta_size);
	b->map = b->base = NULL;
	b->meta = NULL;
	b->region = 0;
	atomic_store(&b->size, 0);
}

/* The canary's place: the last 8 bytes of the block. */
static inline char *canary_at(char *p, size_t bytes)
{
	return p + bytes - KP_CANARY;
}

void *kp__backup_alloc(kp_pool *pool, size_t size, size_t align, size_t *usable)
{
	kp__backup *b = &pool->backup;
	size_t have = atomic_load_explicit(&b->size, memory_order_relaxed);
	if (!have || size > have)
		return NULL;
	size += pool->canary; /* no wrap: size <= b->size */
	size_t want = size > align ? size : align;
	unsigned order = 0;
	while ((GRAN << order) < want)
		order++;
	pthread_mutex_lock(&b->lock);
	unsigned o = order;
	while (o <= b->max_order && b->free_head[o] == NIL)
		o++;
	if (o > b->max_order) {
		pthread_mutex_unlock(&b->lock);
		return NULL;
	}
	uint32_t g = b->free_head[o];
	list_remove(b, o, g, 0);
	while (o > order) { /* split, keeping the lower half */
		o--;
		list_push(b, o, g + (1u << o));
	}
	state_put(&b->gran[g], (uint8_t)(LIVE_HEAD | order));
	for (uint32_t i = 1; i < (1u << order); i++) /* no stale FREED marks inside */
		state_put(&b->gran[g + i], 0);
	pthread_mutex_unlock(&b->lock);
	size_t bytes = GRAN << order;
	size_t now = atomic_fetch_add(&b->in_use, bytes) + bytes;
	size_t peak = atomic_load(&b->peak);
	while (now > peak && !atomic_compare_exchange_weak(&b->peak, &peak, now))
		;
	char *p = b->base + ((size_t)g << KP_BK_GRAN_SHIFT);
	if (pool->canary)
		kp__canary8_put(kp__hkey(pool->secret, p), canary_at(p, bytes));
	*usable = bytes - pool->canary;
	return p;
}

int kp__backup_free(kp_pool *pool, void *p)
{
	kp__backup *b = &pool->backup;
	size_t off = (size_t)((char *)p - b->base);
	if (off & (GRAN - 1))
		return KP_ENOTOURS;
	uint32_t g = (uint32_t)(off >> KP_BK_GRAN_SHIFT);
	uint64_t key = kp__hkey(pool->secret, p);
	pthread_mutex_lock(&b->lock);
	uint8_t st = b->gran[g].state;
	if (!(st & LIVE_HEAD)) {
		pthread_mutex_unlock(&b->lock);
		return (st & (FREE_HEAD | FREED)) ? KP_EDOUBLEFREE : KP_ENOTOURS;
	}
	unsigned order = st & ORDER_MASK;
	size_t bytes = GRAN << order;
	/* Read while the block is still live: once FREED, another thread may
	 * allocate it and write its own canary. */
	bool intact = !pool->canary || kp__canary8_ok(key, canary_at(p, bytes));
	state_put(&b->gran[g], FREED);
	KP_POISON(p, bytes);
	give_back(b, g, order);
	pthread_mutex_unlock(&b->lock);
	atomic_fetch_sub(&b->in_use, bytes);
	if (!intact)
		return kp__violation(pool, KP_EV_OVERFLOW, KP_EOVERFLOW, p, bytes - pool->canary,
				     "backup block overflow");
	return 0;
}

/* The live block's size (canary included), or 0. */
static size_t block_bytes(kp__backup *b, const void *p)
{
	size_t off = (size_t)((const char *)p - b->base);
	if (off & (GRAN - 1))
		return 0;
	pthread_mutex_lock(&b->lock);
	uint8_t st = b->gran[off >> KP_BK_GRAN_SHIFT].state;
	pthread_mutex_unlock(&b->lock);
	return (st & LIVE_HEAD) ? GRAN << (st & ORDER_MASK) : 0;
}

/* p's state with no lock (a signal handler's free nested inside its
 * thread's call, which may hold the lock: kp__classic_defer_vet): 0 a live
 * block's start, else kp__backup_free's refusal. The byte is read once,
 * relaxed, and written so (state_put): the answer is what some write under
 * the lock left, never a torn or invented byte; a free or an allocation of
 * this very granule meanwhile would race with the caller's own free of it
 * anyway. */
int kp__backup_state(kp_pool *pool, const void *p)
{
	kp__backup *b = &pool->backup;
	size_t off = (size_t)((const char *)p - b->base);
	if (off & (GRAN - 1))
		return KP_ENOTOURS;
	uint8_t st = __atomic_load_n(&b->gran[off >> KP_BK_GRAN_SHIFT].state, __ATOMIC_RELAXED);
	return (st & LIVE_HEAD) ? 0 : (st & (FREE_HEAD | FREED)) ? KP_EDOUBLEFREE : KP_ENOTOURS;
}

size_t kp__backup_usable(kp_pool *pool, const void *p)
{
	size_t bytes = block_bytes(&pool->backup, p);
	return bytes ? bytes - pool->canary : 0;
}

bool kp__backup_intact(kp_pool *pool, const void *p)
{
	size_t bytes = block_bytes(&pool->backup, p);
	return !bytes || !pool->canary || kp__canary8_ok(kp__hkey(pool->secret, p), canary_at((char *)p, bytes));
}

/* Keep the reserve resident: whatever the kernel reclaimed from its free
 * part (or a fork's copy-on-write left unfaulted) is faulted back in by the
 * daemon, so a critical allocation does not wait on a page fault. Called when
 * the backup is idle, so no live block is touched. Not with prefault:off,
 * which leaves every page to fault in on first touch: the reserve is then
 * address space, not memory, until it is used (a weaker reserve, meant for
 * tests and fuzzing). */
int kp__backup_refill(kp_pool *pool)
{
	kp__backup *b = &pool->backup;
	size_t size = atomic_load(&b->size); /* grown only by the daemon, this thread */
	if (!size || !pool->conf.prefault || atomic_load(&b->in_use) != 0)
		return 0;
	/* Populating walks every page even when all are resident; asking
	 * first costs a page of mincore vector per 4 MiB. */
	if (!kp__os_resident(&pool->os, b->base, size))
		kp__os_populate(&pool->os, b->base, size);
	return 1;
}

/* backup:auto - grow the reserve to follow the primary's peak bytes in use
 * (AUTO_SHARE, above), by doubling, up to its region. The new half is
 * pre-faulted (unless prefault:off) before it is added, so it is served
 * resident. Called by the daemon's pass (the one thread that grows it);
 * takes b->lock briefly to add the block. 1 if it grew. */
int kp__backup_grow(kp_pool *pool)
{
	kp__backup *b = &pool->backup;
	size_t size = atomic_load(&b->size);
	if (!b->auto_size || !size || size >= b->region)
		return 0;
	size_t want = atomic_load_explicit(&pool->peak_out_bytes, memory_order_relaxed) / AUTO_SHARE;
	size_t to = size;
	while (to < b->region && 2 * to <= want)
		to <<= 1;
	if (to == size)
		return 0;
	/* The OS may refuse (MADV_POPULATE_WRITE's ENOMEM, or a fallback that
	 * did not fault every page): then the half stays out, and a later pass
	 * tries again. Added unfaulted it would be served unfaulted, and the
	 * refill runs only after a critical episode: a critical caller would
	 * fault in the reserve when memory is short, what it exists to avoid. */
	if (pool->conf.prefault && (kp__os_populate(&pool->os, b->base + size, to - size) < 0 ||
				    !kp__os_resident(&pool->os, b->base + size, to - size)))
		return 0;
	pthread_mutex_lock(&b->lock);
	for (size_t at = size; at < to; at <<= 1) { /* each step: the buddy of [0, at) */
		unsigned order = 0;
		while ((GRAN << order) < at)
			order++;
		b->max_order = order + 1;
		give_back(b, (uint32_t)(at >> KP_BK_GRAN_SHIFT), order);
	}
	atomic_store(&b->size, to);
	pthread_mutex_unlock(&b->lock);
	return 1;
}
