/*
 * pool.c - the public API: pool lifecycle, the allocation policy (the one
 * function that decides primary, backup or refusal), free and its checks,
 * the critical privilege, and the fork handlers.
 */
#include "internal.h"

#include <errno.h>
#include <stdio.h>

/* ---- registry of live pools ------------------------------------------- */

static pthread_mutex_t reg_lock = PTHREAD_MUTEX_INITIALIZER;
static kp_pool *reg_head;
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

/* ---- fork -------------------------------------------------------------- */
/* Every lock is taken before fork (in the documented order: class locks,
 * pool lock, backup lock, then the daemon mutex, a leaf that the allocation
 * path takes under a class lock to wake the daemon) so no lock is copied mid-update; the
 * child re-initialises them. The daemon thread does not survive fork: the
 * child marks it RESTART and its first slow path starts a new one. Other
 * threads' caches are copied but orphaned in the child: their blocks stay
 * allocated (never handed out twice). */
static void fork_prepare(void)
{
	pthread_mutex_lock(&reg_lock);
	for (kp_pool *p = reg_head; p; p = p->reg_next) {
		for (unsigned c = 0; c < KP_NCLASS; c++)
			pthread_mutex_lock(&p->central[c].lock);
		pthread_mutex_lock(&p->lock);
		pthread_mutex_lock(&p->backup.lock);
		pthread_mutex_lock(&p->daemon.mu);
	}
	kp__pagemap_fork(0);
}

static void fork_parent(void)
{
	kp__pagemap_fork(1);
	for (kp_pool *p = reg_head; p; p = p->reg_next) {
		pthread_mutex_unlock(&p->daemon.mu);
		pthread_mutex_unlock(&p->backup.lock);
		pthread_mutex_unlock(&p->lock);
		for (unsigned c = 0; c < KP_NCLASS; c++)
			pthread_mutex_unlock(&p->central[c].lock);
	}
	pthread_mutex_unlock(&reg_lock);
}

static void locks_init(kp_pool *p)
{
	pthread_mutex_init(&p->lock, NULL);
	pthread_mutex_init(&p->backup.lock, NULL);
	pthread_mutex_init(&p->daemon.mu, NULL);
	pthread_cond_init(&p->daemon.cv, NULL);
	for (unsigned c = 0; c < KP_NCLASS; c++)
		pthread_mutex_init(&p->central[c].lock, NULL);
}

static void fork_child(void)
{
	kp__pagemap_fork(2);
	for (kp_pool *p = reg_head; p; p = p->reg_next) {
		locks_init(p);
		if (atomic_load(&p->daemon.state) == KP_D_RUNNING)
			atomic_store(&p->daemon.state, KP_D_RESTART);
		atomic_store(&p->daemon.wake_pending, 0);
	}
	pthread_mutex_init(&reg_lock, NULL);
}

static void once_init(void)
{
	pthread_atfork(fork_prepare, fork_parent, fork_child);
}

/* ---- lifecycle --------------------------------------------------------- */

KP_EXPORT kp_pool *kp_create(const char *conf)
{
	static pthread_once_t once = PTHREAD_ONCE_INIT;
	pthread_once(&once, once_init);
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
	pool->self_size = self;
	pool->conf = c;
	pool->id = atomic_fetch_add(&next_id, 1);
	locks_init(pool);
	uint64_t rnd[2];
	kp__os_random(&pool->os, rnd, sizeof rnd);
	pool->secret = c.seed ? kp__mix(c.seed ^ 0x9e3779b97f4a7c15ull) | 1 : rnd[0] | 1;
	pool->token = rnd[1] ? rnd[1] : 0x5bd1e995ull;

	bool ok = kp__backup_init(pool, c.backup) == 0 && kp__tcache_chunk_add(pool) == 0;
	size_t nseg = (c.primary_initial + KP_SEG_SIZE - 1) / KP_SEG_SIZE;
	for (size_t i = 0; ok && i < nseg; i++)
		ok = kp__primary_grow(pool, true) == 0;
	if (!ok) {
		kp__set_error("kp_create: could not map the initial pools (primary_initial %zu, backup %zu)",
			      c.primary_initial, c.backup);
		kp_destroy(pool);
		kp__os_caller = saved;
		errno = ENOMEM;
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
	if (!pool)
		return;
	kp__daemon_stop(pool);
	pthread_mutex_lock(&reg_lock);
	for (kp_pool **pp = &reg_head; *pp; pp = &(*pp)->reg_next)
		if (*pp == pool) {
			*pp = pool->reg_next;
			break;
		}
	pthread_mutex_unlock(&reg_lock);
	int saved = kp__os_caller;
	kp__os_caller = KP_CALLER_SETUP;
	kp__tcache_fini_pool(pool);
	kp__primary_release_all(pool);
	kp__backup_fini(pool);
	kp__os_unmap(NULL, pool, pool->self_size);
	kp__os_caller = saved;
}

/* ---- accounting -------------------------------------------------------- */

void kp__account_out(kp_pool *pool, size_t bytes, bool out)
{
	if (!out) {
		atomic_fetch_sub_explicit(&pool->out_bytes, bytes, memory_order_relaxed);
		return;
	}
	size_t now = atomic_fetch_add_explicit(&pool->out_bytes, bytes, memory_order_relaxed) + bytes;
	size_t peak = atomic_load_explicit(&pool->peak_out_bytes, memory_order_relaxed);
	while (now > peak && !atomic_compare_exchange_weak(&pool->peak_out_bytes, &peak, now))
		;
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

/* ---- allocation -------------------------------------------------------- */

static void *bad_size(kp_pool *pool, size_t size, size_t align)
{
	atomic_fetch_add(&pool->bad_sizes, 1);
	kp__event(pool, KP_EV_BAD_SIZE, KP_POOL_PRIMARY, NULL, size, "impossible request: size %zu align %zu",
		  size, align);
	kp__set_error("bad size %zu (align %zu)", size, align);
	errno = size > KP_REQ_MAX ? ENOMEM : EINVAL;
	return NULL;
}

static inline __attribute__((always_inline)) void *small_alloc(kp_pool *pool, kp__tcache *tc, size_t size, unsigned cls)
{
	kp__bin *b = &tc->bin[cls];
	char *h = b->head;
	if (KP_UNLIKELY(!h)) {
		void *list = NULL;
		unsigned got = kp__central_take(pool, cls, &list, b->max / 2);
		if (!got)
			return NULL;
		b->head = h = list;
		b->count = got;
	}
	b->head = kp__link_enc(pool->secret, h + KP_HDR, *(void **)(h + KP_HDR));
	b->count--;
	kp__hdr_set(pool->secret, (kp__hdr *)h, (uint32_t)size, (uint16_t)cls, KP_ST_ALLOC);
	kp__count_inc(&b->allocs, 1);
	return h + KP_HDR;
}

/* The primary alone: size classes, page runs, huge regions. */
static void *primary_alloc(kp_pool *pool, kp__tcache *tc, size_t size)
{
	size_t need = size + KP_HDR;
	if (need <= KP_SMALL_MAX)
		return small_alloc(pool, tc, size, kp__class_of(need));
	char *h;
	uint16_t cls;
	size_t usable;
	if (need <= KP_LARGE_MAX) {
		h = kp__large_alloc(pool, need);
		cls = KP_CLS_LARGE;
		usable = ((need + KP_UNIT_SIZE - 1) & ~(KP_UNIT_SIZE - 1)) - KP_HDR;
	} else {
		h = kp__huge_alloc(pool, need, KP_PAGE);
		cls = KP_CLS_HUGE;
		usable = h ? ((kp__seg *)kp__pagemap_get(h))->size - 2 * KP_PAGE : 0;
	}
	if (!h)
		return NULL;
	kp__hdr_set(pool->secret, (kp__hdr *)h, size > UINT32_MAX ? UINT32_MAX : (uint32_t)size, cls, KP_ST_ALLOC);
	kp__count_inc(&tc->allocs, 1);
	kp__count_inc(&tc->in_use, usable);
	return h + KP_HDR;
}

static void *backup_alloc(kp_pool *pool, size_t size, size_t align, const char *why)
{
	void *p = kp__backup_alloc(pool, size ? size : 1, align);
	if (!p)
		return NULL;
	atomic_fetch_add(&pool->bk_allocs, 1);
	kp__event(pool, KP_EV_BACKUP_ALLOC, KP_POOL_BACKUP, p, size, "backup served %zu bytes at %p (%s)", size, p,
		  why);
	return p;
}

/* Place an aligned payload inside block p (over-allocated by align): a
 * redirect header in front of it points back to p. */
static void *align_inside(kp_pool *pool, char *p, size_t align)
{
	char *q = (char *)(((uintptr_t)p + align - 1) & ~(uintptr_t)(align - 1));
	if (q != p)
		kp__hdr_set(pool->secret, (kp__hdr *)(q - KP_HDR), (uint32_t)(q - p), KP_CLS_ALIGNED, KP_ST_ALLOC);
	return q;
}

/*
 * The allocation policy, in one place (as mempool_alloc keeps its order):
 *  1. a privileged critical caller while the pool is in the critical state:
 *     the backup first;
 *  2. the primary;
 *  3. the primary failed: a privileged critical caller gets the backup at
 *     once; an unprivileged critical caller is refused (an event); anyone
 *     else gets NULL (an event).
 */
static void *alloc_policy(kp_pool *pool, size_t size, size_t align, unsigned flags)
{
	if (KP_UNLIKELY(size > KP_REQ_MAX))
		return bad_size(pool, size, align);
	kp__tcache *tc = kp__tcache_get(pool, pool->id);
	bool privileged = (flags & KP_CRITICAL) && tc && tc->crit_depth > 0;
	void *p = NULL;
	if (privileged && atomic_load_explicit(&pool->backup_mode, memory_order_relaxed))
		p = backup_alloc(pool, size, align, "critical state");
	if (!p && tc) {
		p = primary_alloc(pool, tc, align > KP_HDR ? size + align : size);
		if (p && align > KP_HDR)
			p = align_inside(pool, p, align);
	}
	if (p)
		return p;
	if (privileged) {
		p = backup_alloc(pool, size, align, "primary failed");
		if (p)
			return p;
		atomic_fetch_add(&pool->failures, 1);
		kp__event(pool, KP_EV_OOM, KP_POOL_BACKUP, NULL, size, "%zu bytes: primary and backup exhausted",
			  size);
	} else if (flags & KP_CRITICAL) {
		atomic_fetch_add(&pool->bk_refusals, 1);
		kp__event(pool, KP_EV_DENIED, KP_POOL_BACKUP, NULL, size,
			  "%zu bytes: backup refused, caller holds no critical scope", size);
	} else {
		atomic_fetch_add(&pool->failures, 1);
		kp__event(pool, KP_EV_OOM, KP_POOL_PRIMARY, NULL, size, "%zu bytes: primary exhausted", size);
	}
	errno = ENOMEM;
	return NULL;
}

static void zero_block(kp_pool *pool, void *p)
{
	memset(p, 0, kp_usable_size(pool, p));
}

KP_EXPORT void *kp_alloc(kp_pool *pool, size_t size, unsigned flags)
{
	if (KP_UNLIKELY(!pool)) {
		errno = EINVAL;
		return NULL;
	}
	/* The fast path: a small ordinary request served by this thread's cache. */
	if (KP_LIKELY(size <= KP_SMALL_MAX - KP_HDR && !(flags & KP_CRITICAL))) {
		kp__tcache *tc = kp__tcache_get(pool, pool->id);
		unsigned cls = kp__class_of(size + KP_HDR);
		if (KP_LIKELY(tc && tc->bin[cls].head)) {
			void *p = small_alloc(pool, tc, size, cls);
			if (flags & KP_ZERO)
				memset(p, 0, kp__class_size[cls] - KP_HDR);
			return p;
		}
	}
	void *p = alloc_policy(pool, size, KP_HDR, flags);
	if (p && (flags & KP_ZERO))
		zero_block(pool, p);
	return p;
}

KP_EXPORT void *kp_alloc_aligned(kp_pool *pool, size_t size, size_t align, unsigned flags)
{
	if (KP_UNLIKELY(!pool)) {
		errno = EINVAL;
		return NULL;
	}
	if (align == 0 || (align & (align - 1)) || align > KP_ALIGN_MAX)
		return bad_size(pool, size, align);
	void *p = alloc_policy(pool, size, align, flags);
	if (p && (flags & KP_ZERO))
		zero_block(pool, p);
	return p;
}

/* ---- free -------------------------------------------------------------- */

static int reject(kp_pool *pool, const void *p, int code, const char *what)
{
	unsigned kind = code == KP_EDOUBLEFREE ? KP_EV_DOUBLE_FREE
			: code == KP_ECORRUPT  ? KP_EV_CORRUPTION
					       : KP_EV_INVALID_FREE;
	atomic_fetch_add(code == KP_EDOUBLEFREE ? &pool->double_frees
			 : code == KP_ECORRUPT  ? &pool->corruptions
						: &pool->invalid_frees,
			 1);
	kp__event(pool, kind, kp__backup_owns(&pool->backup, p) ? KP_POOL_BACKUP : KP_POOL_PRIMARY, p, 0,
		  "%s %p", what, p);
	kp__set_error("%s %p", what, p);
	return code;
}

/* Find the header of a live primary block without trusting p: the pagemap
 * says whether the address is ours before anything near it is read. On
 * failure returns NULL and sets *code. */
static kp__hdr *primary_hdr(kp_pool *pool, const void *p, kp__seg **segp, int *code)
{
	kp__seg *s = kp__pagemap_get(p);
	*code = KP_ENOTOURS;
	if (!s || s->pool != pool || ((uintptr_t)p & (KP_HDR - 1)))
		return NULL;
	uintptr_t off = (uintptr_t)p - (uintptr_t)s;
	if (s->kind == KP_SEG_HUGE ? off != 2 * KP_PAGE : off < KP_UNIT_SIZE + KP_HDR)
		return NULL;
	kp__hdr *h = (kp__hdr *)((uintptr_t)p - KP_HDR);
	if (!kp__hdr_ok(pool->secret, h)) {
		/* A block start whose tag does not match was damaged; any other
		 * address inside a span is an interior pointer. */
		if (s->kind == KP_SEG_NORMAL) {
			kp__span *sp = &s->span[s->span[off >> KP_UNIT_SHIFT].head];
			if (sp->kind != KP_SPAN_FREE && ((char *)h - sp->start) % sp->block == 0)
				*code = KP_ECORRUPT;
		} else {
			*code = KP_ECORRUPT;
		}
		return NULL;
	}
	if (KP_META_ST(h->meta) != KP_ST_ALLOC) {
		*code = KP_EDOUBLEFREE;
		return NULL;
	}
	*segp = s;
	return h;
}

static size_t primary_usable(kp__seg *s, const kp__hdr *h)
{
	unsigned cls = KP_META_CLS(h->meta);
	if (cls < KP_NCLASS)
		return kp__class_size[cls] - KP_HDR;
	if (cls == KP_CLS_HUGE)
		return s->size - 2 * KP_PAGE;
	uintptr_t off = (uintptr_t)h - (uintptr_t)s;
	return s->span[s->span[off >> KP_UNIT_SHIFT].head].block - KP_HDR;
}

static int primary_free(kp_pool *pool, void *p, int depth)
{
	kp__seg *s;
	int code;
	kp__hdr *h = primary_hdr(pool, p, &s, &code);
	if (!h)
		return reject(pool, p,
			      code, code == KP_EDOUBLEFREE ? "double free of" : code == KP_ECORRUPT
										 ? "corrupt header at"
										 : "free of a pointer never given out:");
	unsigned cls = KP_META_CLS(h->meta);
	uint32_t req = KP_META_REQ(h->meta);
	if (cls == KP_CLS_ALIGNED) {
		if (depth)
			return reject(pool, p, KP_ECORRUPT, "corrupt header at");
		int rc = primary_free(pool, (char *)p - req, 1);
		if (rc == 0)
			kp__hdr_set(pool->secret, h, req, KP_CLS_ALIGNED, KP_ST_FREE);
		return rc;
	}
	kp__tcache *tc = kp__tcache_get(pool, pool->id);
	size_t usable = primary_usable(s, h);
	kp__hdr_set(pool->secret, h, 0, (uint16_t)cls, KP_ST_FREE);
	if (tc && cls < KP_NCLASS) {
		kp__count_inc(&tc->bin[cls].frees, 1);
	} else if (tc) {
		kp__count_inc(&tc->frees, 1);
		kp__count_inc(&tc->in_use, (uint64_t)0 - usable);
	}
	if (cls < KP_NCLASS) {
		if (!tc) {
			*(void **)((char *)h + KP_HDR) = kp__link_enc(pool->secret, (char *)h + KP_HDR, NULL);
			kp__central_give(pool, cls, h, 1);
			return 0;
		}
		kp__bin *b = &tc->bin[cls];
		if (KP_UNLIKELY(b->count >= b->max))
			kp__tcache_flush_bin(pool, tc, cls, b->max / 2);
		*(void **)((char *)h + KP_HDR) = kp__link_enc(pool->secret, (char *)h + KP_HDR, b->head);
		b->head = h;
		b->count++;
	} else if (cls == KP_CLS_LARGE) {
		uintptr_t off = (uintptr_t)h - (uintptr_t)s;
		kp__large_free(pool, s, &s->span[s->span[off >> KP_UNIT_SHIFT].head]);
	} else {
		kp__huge_free(pool, s);
	}
	return 0;
}

KP_EXPORT int kp_free(kp_pool *pool, void *p)
{
	if (!p)
		return 0;
	if (!pool)
		return KP_EINVAL;
	/* The fast path: a live small block of this pool into a bin with room.
	 * The pagemap vouches for the address before its header is read. */
	kp__seg *s = kp__pagemap_get(p);
	uintptr_t off = (uintptr_t)p - (uintptr_t)s;
	if (KP_LIKELY(s && s->pool == pool && s->kind == KP_SEG_NORMAL && !(off & (KP_HDR - 1)) &&
		      off >= KP_UNIT_SIZE + KP_HDR)) {
		kp__hdr *h = (kp__hdr *)((char *)p - KP_HDR);
		uint64_t key = kp__hkey(pool->secret, h), meta = h->meta;
		unsigned cls = KP_META_CLS(meta);
		kp__tcache *tc = kp__tcache_get(pool, pool->id);
		if (KP_LIKELY((h->tag ^ meta) == key && KP_META_ST(meta) == KP_ST_ALLOC && cls < KP_NCLASS && tc &&
			      tc->bin[cls].count < tc->bin[cls].max)) {
			kp__bin *b = &tc->bin[cls];
			kp__hdr_put(h, key, kp__meta(0, (uint16_t)cls, KP_ST_FREE));
			*(void **)p = kp__link_enc(pool->secret, p, b->head);
			b->head = h;
			b->count++;
			kp__count_inc(&b->frees, 1);
			return 0;
		}
	}
	if (kp__backup_owns(&pool->backup, p)) {
		int rc = kp__backup_free(pool, p);
		if (rc == 0) {
			atomic_fetch_add(&pool->bk_frees, 1);
			return 0;
		}
		return reject(pool, p, rc,
			      rc == KP_EDOUBLEFREE ? "double free of backup block" : "free of a non-block in backup:");
	}
	return primary_free(pool, p, 0);
}

KP_EXPORT size_t kp_usable_size(kp_pool *pool, const void *p)
{
	if (!pool || !p)
		return 0;
	if (kp__backup_owns(&pool->backup, p))
		return kp__backup_usable(pool, p);
	kp__seg *s;
	int code;
	const kp__hdr *h = primary_hdr(pool, p, &s, &code);
	if (!h)
		return 0;
	if (KP_META_CLS(h->meta) == KP_CLS_ALIGNED) {
		uint32_t off = KP_META_REQ(h->meta);
		size_t inner = kp_usable_size(pool, (const char *)p - off);
		return inner > off ? inner - off : 0;
	}
	return primary_usable(s, h);
}

KP_EXPORT void *kp_realloc(kp_pool *pool, void *p, size_t size, unsigned flags)
{
	if (!p)
		return kp_alloc(pool, size, flags);
	if (!pool) {
		errno = EINVAL;
		return NULL;
	}
	if (size == 0) {
		kp_free(pool, p);
		return NULL;
	}
	if (size > KP_REQ_MAX)
		return bad_size(pool, size, KP_HDR);
	size_t old = kp_usable_size(pool, p);
	if (!old) {
		kp_free(pool, p); /* records why: double free, foreign or corrupt */
		errno = EINVAL;
		return NULL;
	}
	bool backup = kp__backup_owns(&pool->backup, p);
	size_t kept = old; /* bytes whose contents matter */
	if (!backup) {
		kp__hdr *h = (kp__hdr *)((char *)p - KP_HDR);
		unsigned cls = KP_META_CLS(h->meta);
		if (cls != KP_CLS_ALIGNED) {
			uint32_t req = KP_META_REQ(h->meta);
			kept = req < old ? req : old;
			/* Shrinking by less than half, or growing within the block: in place. */
			if (size <= old && size >= old / 2) {
				if ((flags & KP_ZERO) && size > kept)
					memset((char *)p + kept, 0, size - kept);
				kp__hdr_set(pool->secret, h, (uint32_t)(size > UINT32_MAX ? UINT32_MAX : size),
					    (uint16_t)cls, KP_ST_ALLOC);
				return p;
			}
		}
	} else if (size <= old && !(flags & KP_ZERO)) {
		return p;
	}
	void *q = kp_alloc(pool, size, flags & ~KP_ZERO);
	if (!q)
		return NULL;
	size_t n = kept < size ? kept : size;
	memcpy(q, p, n);
	if ((flags & KP_ZERO) && size > n)
		memset((char *)q + n, 0, size - n);
	kp_free(pool, p);
	return q;
}

/* ---- the critical privilege --------------------------------------------- */

KP_EXPORT uint64_t kp_critical_token(kp_pool *pool)
{
	if (!pool)
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
	if (!pool)
		return KP_EINVAL;
	kp__tcache *tc = kp__tcache_get(pool, pool->id);
	/* Compare without an early exit, so timing says nothing of the token. */
	uint64_t diff = (token ^ pool->token) | (uint64_t)!atomic_load(&pool->token_given);
	if (diff || !tc) {
		kp__event(pool, KP_EV_TOKEN, KP_POOL_BACKUP, NULL, 0, "critical_enter with a bad token: denied");
		kp__set_error("kp_critical_enter: bad token");
		return KP_EDENIED;
	}
	tc->crit_depth++;
	return 0;
}

KP_EXPORT void kp_critical_exit(kp_pool *pool)
{
	if (!pool)
		return;
	kp__tcache *tc = kp__tcache_get(pool, pool->id);
	if (tc && tc->crit_depth > 0)
		tc->crit_depth--;
	else
		kp__event(pool, KP_EV_TOKEN, KP_POOL_BACKUP, NULL, 0, "critical_exit without a scope");
}

KP_EXPORT int kp_stats_json(kp_pool *pool, char *buf, size_t len)
{
	if (!pool || (!buf && len))
		return KP_EINVAL;
	return kp__stats_json(pool, buf, len);
}
