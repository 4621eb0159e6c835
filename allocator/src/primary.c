/*
 * primary.c - the primary pool: segments, spans, size classes and page runs
 * for large blocks (huge ones, each in a mapping of its own: huge.c).
 *
 * Locks: a class's central lock, then pool->lock (never the reverse).
 * pool->lock guards the segment list, every segment's free mask and the
 * capacity figures. A span's fields are written under its class lock; the
 * geometry (start, block, kind) is published before any of its blocks leave
 * the lock, so the free path reads it without a lock.
 */
#include "internal.h"

#include <errno.h>
#include <time.h>

/* Block sizes (header and canary included): 16 bytes apart up to 128, 4 per
 * doubling to 1 KiB, then 8 per doubling (12.5% apart) to 128 KiB, as
 * mimalloc's and jemalloc's. At 4 per doubling a request just over a power
 * of two (4096 + 8) lost a quarter of its block, and sqlite3's page cache
 * (malloc(4368)) a sixth: its peak RSS fell 60.7 -> 56.4 MiB at 8, and
 * kpbench b's 74 -> 69 (test_classes bounds the rounding). One class off
 * the grid, KP_CLASS_PAGE_PLUS (4400): a page plus a caller's header of up
 * to 280 bytes, sqlite3's page cache entry (4368 + 24 bytes), took a 4608
 * block in a one-unit span of 14 (4681 bytes of span a block, 6.6% over
 * what it needs); at 4480, in five-unit spans of 73 past the class's first
 * spans (span_fit_tab), 4489 (test_classes, test_page_plus_header_in_bulk);
 * at 4400, in five-unit spans of 74, 4428, 0.8% over its 4392 where glibc's
 * chunk is 4384: sqlite3 keeps 7,700 of them at its peak, 0.5 MiB less
 * (test_page_plus_tight). A caller's header of 281-360 bytes, which 4480
 * held, takes 4608 now.
 * Append-free: the fuzz size table keeps its own copy of the old 47
 * (fuzz_model.c). */
const uint32_t kp__class_size[KP_NCLASS] = {
	32,    48,    64,    80,    96,	   112,	  128,	 160,	 192,	 224,	 256,	320,   384,
	448,   512,   640,   768,   896,   1024,  1152,	 1280,	 1408,	 1536,	 1664,	1792,  1920,
	2048,  2304,  2560,  2816,  3072,  3328,  3584,	 3840,	 4096,	 4400,	 4608,	5120,  5632,
	6144,  6656,  7168,  7680,  8192,  9216,  10240, 11264,	 12288,	 13312,	 14336, 15360, 16384,
	18432, 20480, 22528, 24576, 26624, 28672, 30720, 32768,	 36864,	 40960,	 45056, 49152, 53248,
	57344, 61440, 65536, 73728, 81920, 90112, 98304, 106496, 114688, 122880, 131072};
#define KP_DIV(d) (UINT64_MAX / (d) + 1)
const uint64_t kp__class_div[256] = {
	KP_DIV(32),    KP_DIV(48),    KP_DIV(64),     KP_DIV(80),     KP_DIV(96),     KP_DIV(112),   KP_DIV(128),
	KP_DIV(160),   KP_DIV(192),   KP_DIV(224),    KP_DIV(256),    KP_DIV(320),    KP_DIV(384),   KP_DIV(448),
	KP_DIV(512),   KP_DIV(640),   KP_DIV(768),    KP_DIV(896),    KP_DIV(1024),   KP_DIV(1152),  KP_DIV(1280),
	KP_DIV(1408),  KP_DIV(1536),  KP_DIV(1664),   KP_DIV(1792),   KP_DIV(1920),   KP_DIV(2048),  KP_DIV(2304),
	KP_DIV(2560),  KP_DIV(2816),  KP_DIV(3072),   KP_DIV(3328),   KP_DIV(3584),   KP_DIV(3840),  KP_DIV(4096),
	KP_DIV(4400),  KP_DIV(4608),  KP_DIV(5120),   KP_DIV(5632),   KP_DIV(6144),   KP_DIV(6656),  KP_DIV(7168),
	KP_DIV(7680),  KP_DIV(8192),  KP_DIV(9216),   KP_DIV(10240),  KP_DIV(11264),  KP_DIV(12288), KP_DIV(13312),
	KP_DIV(14336), KP_DIV(15360), KP_DIV(16384),  KP_DIV(18432),  KP_DIV(20480),  KP_DIV(22528), KP_DIV(24576),
	KP_DIV(26624), KP_DIV(28672), KP_DIV(30720),  KP_DIV(32768),  KP_DIV(36864),  KP_DIV(40960), KP_DIV(45056),
	KP_DIV(49152), KP_DIV(53248), KP_DIV(57344),  KP_DIV(61440),  KP_DIV(65536),  KP_DIV(73728), KP_DIV(81920),
	KP_DIV(90112), KP_DIV(98304), KP_DIV(106496), KP_DIV(114688), KP_DIV(122880), KP_DIV(131072)};
#undef KP_DIV

const uint8_t kp__class_small[65] = {0,	 0,  0,	 1,  2,	 3,  4,	 5,  6,	 7,  7,	 8,  8,	 9,  9,	 10, 10,
				     11, 11, 11, 11, 12, 12, 12, 12, 13, 13, 13, 13, 14, 14, 14, 14, 15,
				     15, 15, 15, 15, 15, 15, 15, 16, 16, 16, 16, 16, 16, 16, 16, 17, 17,
				     17, 17, 17, 17, 17, 17, 18, 18, 18, 18, 18, 18, 18, 18};

_Static_assert(sizeof(kp__seg) + KP_HDR <= 2 * KP_PAGE, "huge payload starts at 8 KiB");

/* ---- invariants (internal.h states them) ---------------------------------
 * Checked in debug builds (KP_DEBUG >= 1: the sanitizer variants) where the
 * structure changes; the fuzz variant (KP_DEBUG >= 2) walks every segment. */
#ifndef KP_DEBUG
#define KP_DEBUG 0
#endif

static bool seg_is_valid(const kp__seg *s)
{
	if (s->quarantined) /* damaged: nothing in it is trusted or counted */
		return true;
	if (s->kind != KP_SEG_NORMAL)
		return s->kind == KP_SEG_HUGE && s->size >= KP_SEG_SIZE / 2;
	for (uint64_t m = s->free_mask; m; m &= m - 1)
		if (s->unit_meta[__builtin_ctzll(m)]) /* a free unit is in no small span */
			return false;
	return !(s->free_mask & ~KP_SEG_FREE_ALL) && (unsigned)__builtin_popcountll(s->free_mask) == s->nfree_units;
}

/* The span's counts are consistent; with walk, nused + listed + (nblocks -
 * bump) == nblocks too (a walk of its free list: done when a span empties,
 * so each span pays for it once). Caller holds the class lock. */
static bool span_is_valid(const kp_pool *pool, const kp__span *sp, bool walk)
{
	if (sp->kind != KP_SPAN_SMALL || sp->quarantined)
		return true;
	if (sp->bump > sp->nblocks || sp->nused > sp->bump || sp->block != kp__class_size[sp->cls])
		return false;
	if (!walk)
		return true;
	unsigned listed = 0;
	for (char *b = sp->free; b && listed <= sp->nblocks; listed++)
		b = kp__link_get(pool->secret, b);
	return listed == sp->nfree && sp->nused + listed + (sp->nblocks - sp->bump) == sp->nblocks;
}

/* Caller holds pool->lock. */
static bool pool_is_valid(const kp_pool *pool)
{
	size_t free_units = 0, total = 0;
	for (const kp__seg *s = pool->segs; s; s = s->next) {
		if (!seg_is_valid(s) || (s->next && s->next->prev != s))
			return false;
		free_units += s->quarantined ? 0 : s->nfree_units;
		total += KP_SEG_UNITS;
	}
	return free_units == pool->units_free && total == pool->units_total;
}

#define KP_ASSERT(level, cond)                                                                                   \
	do {                                                                                                     \
		if (KP_DEBUG >= (level) && !(cond))                                                              \
			kp__violation(pool, KP_EV_CORRUPTION, KP_ECORRUPT, NULL, 0, "invariant broken: " #cond); \
	} while (0)

/* ---- segment headers: keyed, checked before use (internal.h, kp__seg) ----
 * A segment's header is the next bytes after the previous mapping's last
 * block, so an overflow past that block lands in it (issue 14: a 72-byte
 * overflow past a 4 MB block marked the next segment's units free, and the
 * next allocation got a live block). Such an overflow must pass magic
 * first, then seal; a write that leaves magic as it was (the attacker read
 * it) still cannot make a mask that verifies. */

static void headroom_publish(kp_pool *pool);

/* Mark s damaged, once: an event, and its units are never handed out again
 * (its free units leave the pool's count). Caller holds pool->lock. */
void kp__seg_quarantine_locked(kp_pool *pool, kp__seg *s)
{
	if (__atomic_load_n(&s->quarantined, __ATOMIC_RELAXED))
		return;
	__atomic_store_n(&s->quarantined, 1, __ATOMIC_RELAXED); /* read without the lock by kp__seg_ok */
	atomic_fetch_add(&pool->quarantined, 1);
	if (s->kind == KP_SEG_NORMAL) { /* recount what the other segments hold */
		size_t free_units = 0, free_segs = 0;
		unsigned left = (unsigned)(pool->units_total / (KP_SEG_UNITS)) + 1;
		for (kp__seg *t = pool->segs; t && left--; t = t->next) {
			if (t->quarantined)
				continue;
			free_units += t->nfree_units;
			free_segs += t->nfree_units == KP_SEG_UNITS;
			if (t->next && kp__pagemap_get(t->next) != t->next)
				break;
		}
		pool->units_free = free_units;
		atomic_store(&pool->free_segs, free_segs);
		headroom_publish(pool);
	}
	kp__violation(pool, KP_EV_CORRUPTION, KP_ECORRUPT, s, KP_SIZE_UNKNOWN,
		      "segment header damaged, segment quarantined");
}

bool kp__seg_magic_ok(const kp_pool *pool, const kp__seg *s)
{
	return s->magic == kp__seg_magic(pool->secret, s, s->kind, s->size) &&
	       (s->kind == KP_SEG_HUGE || (s->kind == KP_SEG_NORMAL && s->size == KP_SEG_SIZE));
}

/* The whole header a unit operation trusts: magic, the seal of the mask,
 * and the count. false (s quarantined) when damaged or quarantined already.
 * Caller holds pool->lock. */
static bool seg_ok_locked(kp_pool *pool, kp__seg *s)
{
	if (!s->quarantined && kp__seg_magic_ok(pool, s) && s->seal == kp__seg_seal(pool->secret, s) &&
	    !(s->free_mask & ~KP_SEG_FREE_ALL) && (unsigned)__builtin_popcountll(s->free_mask) == s->nfree_units)
		return true;
	kp__seg_quarantine_locked(pool, s);
	return false;
}

static void seg_reseal(kp_pool *pool, kp__seg *s)
{
	s->seal = kp__seg_seal(pool->secret, s);
}

bool kp__seg_ok(kp_pool *pool, kp__seg *s)
{
	if (KP_LIKELY(!__atomic_load_n(&s->quarantined, __ATOMIC_RELAXED) && kp__seg_magic_ok(pool, s)))
		return true;
	kp__pool_lock(pool);
	kp__seg_quarantine_locked(pool, s);
	pthread_mutex_unlock(&pool->lock);
	return false;
}

/* The next segment on the pool's list, which must be a segment of this pool
 * (the pagemap, out of line, says which addresses are segments); a link
 * that is not quarantines s and ends the walk. Caller holds pool->lock. */
static kp__seg *seg_step(kp_pool *pool, kp__seg *s, kp__seg *to)
{
	if (to && kp__pagemap_get(to) != to) {
		kp__seg_quarantine_locked(pool, s);
		return NULL;
	}
	if (to && (to->pool != pool || to->kind != KP_SEG_NORMAL)) { /* a segment, its header damaged */
		kp__seg_quarantine_locked(pool, to);
		return NULL;
	}
	return to;
}

/* A span holds at least 8 blocks (so a class costs at most 1/8 of a span in
 * tail waste), in at most 16 units: the fewest units that hold 8. */
static unsigned span_units(unsigned cls)
{
	size_t need = (size_t)kp__class_size[cls] * 8;
	unsigned n = (unsigned)((need + KP_UNIT_SIZE - 1) / KP_UNIT_SIZE);
	return n < 1 ? 1 : n > 16 ? 16 : n;
}

/* Units to a span of a class that holds KP_SPAN_FIT_AFTER spans already:
 * when span_units' n > 1 leaves more than 1/32 of the run past the last
 * block, the count in n..2n (at most 16) that leaves the least (the first
 * such). The tail is resident whenever the daemon pre-faulted the units the
 * span took, and the 9-64 KiB classes left up to a tenth of their run there
 * (36864: 8 blocks in 5 units, 32 KiB unused; 16 in 9, none): kpbench d
 * (4-64 KiB, every page written) held 4.3% of its 1 GiB in span tails,
 * beside the 4.2% of class rounding; with these, 0.3%. A one-unit span
 * that leaves more than 1/32 (3-8 KiB blocks: 5120's 12 leave 4 KiB,
 * 6656's 9 leave 5.5 KiB) takes the fewest units up to 8 that leave at most
 * 1/128 (6144: 32 blocks in 3 units, 4400: 74 in 5). A class of 16 KiB and
 * more has at most 17 blocks to such a span (KP_BPURGE_SPAN bounds the
 * purge's walk). test_span_fit checks the bounds. */
static const uint8_t span_fit_tab[KP_NCLASS] = {1, 1, 1, 1, 1, 1,  1, 1,  1, 1,	 1, 1, 1,  1,  1,  1,  1,  1,  1,
						1, 1, 1, 1, 1, 1,  1, 1,  1, 1,	 1, 1, 3,  1,  1,  1,  5,  1,  4,
						5, 3, 5, 1, 2, 1,  2, 3,  4, 3,	 4, 2, 4,  2,  4,  5,  6,  3,  7,
						4, 8, 4, 9, 5, 11, 6, 13, 7, 15, 8, 9, 10, 11, 12, 13, 14, 15, 16};
/* Only past a class's first spans: the longer runs, taken from the free
 * units' front before the daemon pre-faults past its small start-up
 * headroom, cost test_pool_behaviour's paced start 1,541-1,709 faults on
 * the allocating thread in its first 16 MiB (bound 1,536; 1,076-1,343 with
 * span_units alone), when each of its ~30 classes holds a span or two. A
 * class that holds 4 is one the program uses in bulk. */
#define KP_SPAN_FIT_AFTER 4

static void headroom_publish(kp_pool *pool)
{
	atomic_store_explicit(&pool->headroom, pool->units_free * KP_UNIT_SIZE, memory_order_relaxed);
}

/* Lowest start of a run of n free units in mask, or -1. */
static int find_run(uint64_t mask, unsigned n)
{
	uint64_t m = mask;
	for (unsigned i = 1; i < n && m; i++)
		m &= mask >> i;
	return m ? __builtin_ctzll(m) : -1;
}

static inline uint64_t run_bits(unsigned u, unsigned n)
{
	return (n == 64 ? ~0ull : ((1ull << n) - 1)) << u;
}

/* Take the free run [u, u + n) of s. Caller holds pool->lock. */
static kp__span *run_take(kp_pool *pool, kp__seg *s, unsigned u, unsigned n, kp__seg **segp)
{
	uint64_t bits = run_bits(u, n);
	bool fresh = (s->zero & bits) == bits;
	if (s->zero & bits)
		atomic_fetch_add_explicit(&pool->fresh_taken,
					  (size_t)__builtin_popcountll(s->zero & bits) << KP_UNIT_SHIFT,
					  memory_order_relaxed);
	s->zero &= ~bits;
	s->free_mask &= ~bits;
	s->purge_idle &= ~bits; /* taken: no longer idle, nor given back */
	if (s->refill & bits)	/* demand the daemon pre-faults, under the peak */
		atomic_fetch_add_explicit(&pool->purged_taken,
					  (size_t)__builtin_popcountll(s->refill & bits) << KP_UNIT_SHIFT,
					  memory_order_relaxed);
	s->purged &= ~bits;
	s->refill &= ~bits;
	s->used_free &= ~bits;
	memset(&s->last_cls[u], 0, n);
	seg_reseal(pool, s);
	if (s->nfree_units == KP_SEG_UNITS)
		atomic_fetch_sub(&pool->free_segs, 1);
	s->nfree_units -= n;
	pool->units_free -= n;
	unsigned tm = atomic_load_explicit(&pool->take_min, memory_order_relaxed);
	if (!tm || n < tm) /* the daemon's pass resets it (daemon.c, take_len) */
		atomic_store_explicit(&pool->take_min, n, memory_order_relaxed);
	for (unsigned i = 0; i < n; i++)
		s->span[u + i].head = (uint8_t)u;
	kp__span *sp = &s->span[u];
	sp->units = (uint16_t)n;
	sp->start = (char *)s + ((size_t)u << KP_UNIT_SHIFT);
	sp->fresh = fresh;
	*segp = s;
	headroom_publish(pool);
	KP_ASSERT(1, seg_is_valid(s));
	KP_ASSERT(2, pool_is_valid(pool));
	return sp;
}

/* Does the program write what it takes (the daemon pre-faults ahead of it:
 * daemon.c, prefault_decide)? Any thread, no lock. */
static bool program_writes_all(kp_pool *pool)
{
	return pool->conf.prefault && (pool->conf.prefault_touch == 0 ||
				       atomic_load_explicit(&pool->daemon.prefaulting, memory_order_relaxed));
}

/* Take a run of n units for a span of class cls (KP_NCLASS: a large block).
 * Which free run, in this order:
 *   0. one that last held a span of cls, at the same start (so of the same
 *      length): its resident pages are where cls's blocks are written; for
 *      a large block, one a large block of the same length last held (git
 *      pack-objects writes a 332744-byte block whole and frees it, once per
 *      object: each took clean units, the freed runs stayed resident,
 *      1.3-1.9 MiB of its peak; test_large_reuse);
 *   1. the lowest one no span used since it was mapped or purged (its pages
 *      not resident, or pre-faulted: zero), unless the program writes what
 *      it takes (the daemon pre-faults the lowest free units for it, and a
 *      block written whole leaves no page unused);
 *   2. the lowest one (oldest segment first, lowest unit first).
 * A run carved again at other block bounds keeps the pages its former
 * blocks wrote, resident inside the new blocks, where nobody uses them: on
 * kpbench's workload b spans emptied and their units were carved again once
 * per 2,000 operations, and such pages were 17 MiB of the 71 MiB peak with
 * every request the size of its class. Reusing other runs' resident pages
 * sooner does not lower a sparse program's peak either (git pack-objects
 * alone, /usr/bin/time's peak, medians of 11 alternated runs, session 22):
 * new spans taking runs large blocks left before clean ones peaked at
 * 19,024 KiB against 18,364, and a large block taking a run a longer large
 * block left (pass 0 by any length) at 19,244 against 18,548: the kept runs
 * serve the next block of their own length (git's 332744-byte buffers) and
 * the rest are given back within 20-40 ms (daemon.c, KP_SPARSE_MS).
 * Caller holds pool->lock. */
static kp__span *units_take(kp_pool *pool, unsigned n, unsigned cls, bool bulk, kp__seg **segp)
{
	int pass = 0;
	unsigned last = cls < KP_NCLASS ? cls + 1 : KP_LAST_LARGE + n; /* units_give's mark */
	bool clean_first = !program_writes_all(pool);
	for (; pass < 3; pass++) {
		if (pass == 1 && !clean_first)
			continue;
		/* A walk bounded by the segment count: damaged links cannot loop it. */
		unsigned left = (unsigned)(pool->units_total / (KP_SEG_UNITS)) + 1;
		for (kp__seg *s = pool->segs; s && left--; s = seg_step(pool, s, s->next)) {
			if (s->quarantined || s->nfree_units < n)
				continue;
			/* units the daemon is giving back now are not free to take */
			uint64_t m = s->free_mask & ~s->purging;
			int u = -1;
			if (pass == 0) {
				for (uint64_t h = m & s->used_free; h && u < 0; h &= h - 1) {
					unsigned v = (unsigned)__builtin_ctzll(h);
					if (s->last_cls[v] == last && v + n <= KP_SEG_END &&
					    (m & run_bits(v, n)) == run_bits(v, n))
						u = (int)v;
				}
			} else {
				u = find_run(pass == 1 ? m & ~s->used_free : m, n);
			}
			if (u < 0 || !seg_ok_locked(pool, s)) /* the mask found a run: is it the pool's? */
				continue;
			/* a new span of a class in bulk use (KP_SPAN_FIT_AFTER spans)
			 * for a program that writes what it takes: the daemon's next
			 * pass pre-faults what of it is not resident (daemon.c,
			 * prefault_taken); not a run a span of cls held (pass 0:
			 * resident where its blocks were written) */
			unsigned nt = atomic_load_explicit(&pool->ntaken, memory_order_relaxed);
			if (bulk && pass && !clean_first && nt < KP_TAKEN_RUNS) {
				pool->taken[nt].s = s;
				pool->taken[nt].u = (uint8_t)u;
				pool->taken[nt].n = (uint8_t)n;
				atomic_store_explicit(&pool->ntaken, nt + 1, memory_order_relaxed);
			}
			return run_take(pool, s, (unsigned)u, n, segp);
		}
	}
	return NULL;
}

/* Give a run back. Caller holds pool->lock. */
static void units_give(kp_pool *pool, kp__seg *s, kp__span *sp)
{
	unsigned u = sp->head, n = sp->units;
	if (!seg_ok_locked(pool, s) || !n || u + n > KP_SEG_END)
		return; /* a damaged header: the run stays taken (leaked), never handed out twice */
	uint64_t bits = (n == 64 ? ~0ull : ((1ull << n) - 1)) << u;
	if (s->free_mask & bits) {
		kp__seg_quarantine_locked(pool, s);
		return;
	}
	for (unsigned i = 0; i < n; i++)
		s->unit_meta[u + i] = 0;
	memset(&s->last_cls[u], 0, n);
	s->last_cls[u] = sp->kind == KP_SPAN_SMALL		    ? (uint8_t)(sp->cls + 1)
			 : sp->kind == KP_SPAN_LARGE && !sp->moving ? (uint8_t)(KP_LAST_LARGE + n)
								    : 0;
	s->used_free |= bits;
	memset(sp, 0, sizeof *sp);
	sp->head = (uint8_t)u;
	s->free_mask |= bits;
	seg_reseal(pool, s);
	s->nfree_units += n;
	if (s->nfree_units == KP_SEG_UNITS)
		atomic_fetch_add(&pool->free_segs, 1);
	pool->units_free += n;
	if (s->nfree_units == KP_SEG_UNITS)
		s->empty_since_ns = kp__pool_now(pool);
	headroom_publish(pool);
	KP_ASSERT(1, seg_is_valid(s));
	KP_ASSERT(2, pool_is_valid(pool));
	kp__backup_mode_update(pool, false);
}

/* Wait until the daemon adds a segment, at most grow_wait_us. By default
 * (0) the allocation path does not wait: like direct reclaim when kswapd
 * falls behind, it maps a segment itself and takes the page faults, which
 * costs tens of microseconds, where waiting for a pre-faulted segment (about
 * 1 ms each here) would stall it for milliseconds. */
static void wait_daemon_grow(kp_pool *pool)
{
	kp__daemon_wait(pool, &pool->daemon.grows, kp__now_ns() + (uint64_t)pool->conf.grow_wait_us * 1000ull);
}

/* A run of n units for a new span or a large block: from free units; else
 * from the daemon's next segment; else by growing on the allocation path
 * (the daemon is off, or too slow: then it aims higher from now on). */
static kp__span *run_alloc(kp_pool *pool, unsigned n, unsigned cls, bool bulk, kp__seg **segp)
{
	bool waited = false;
	for (int attempt = 0; attempt < 4; attempt++) {
		kp__pool_lock(pool);
		kp__span *sp = units_take(pool, n, cls, bulk, segp);
		bool low = pool->units_free * KP_UNIT_SIZE < atomic_load_explicit(&pool->wake_wm, memory_order_relaxed);
		bool room =
			pool->capacity + KP_SEG_SIZE + atomic_load(&pool->huge_bytes) + atomic_load(&pool->ol_bytes) <=
			pool->conf.primary_max;
		if (sp)
			kp__backup_mode_update(pool, false);
		pthread_mutex_unlock(&pool->lock);
		if (sp) {
			atomic_store_explicit(&pool->daemon.take_ns, kp__pool_now(pool), memory_order_relaxed);
			if (low)
				kp__daemon_kick(pool);
			return sp;
		}
		if (!room)
			break;
		if (!waited && pool->conf.grow_wait_us && atomic_load(&pool->daemon.state) == KP_D_RUNNING) {
			waited = true;
			wait_daemon_grow(pool);
			continue;
		}
		int boost = atomic_load(&pool->grow_boost);
		if (boost < KP_BOOST_MAX)
			atomic_compare_exchange_strong(&pool->grow_boost, &boost, boost + 1);
		atomic_store(&pool->boost_at_ns, kp__pool_now(pool));
		kp__daemon_kick(pool);
		if (kp__primary_grow(pool, false) < 0)
			break;
	}
	kp__pool_lock(pool);
	kp__backup_mode_update(pool, true);
	pthread_mutex_unlock(&pool->lock);
	return NULL;
}

/* Caller holds cls's class lock (the count of its spans). */
static kp__span *span_new(kp_pool *pool, unsigned cls)
{
	kp__seg *s;
	kp__central *c = &pool->central[cls];
	unsigned n = c->spans >= KP_SPAN_FIT_AFTER ? span_fit_tab[cls] : span_units(cls);
	kp__span *sp = run_alloc(pool, n, cls, c->spans >= KP_SPAN_FIT_AFTER, &s);
	if (!sp)
		return NULL;
	c->spans++;
	sp->kind = KP_SPAN_SMALL;
	sp->cls = (uint8_t)cls;
	for (unsigned i = 0; i < sp->units; i++) {
		s->unit_meta[sp->head + i] = KP_UNIT_META(cls);
		s->unit_span[sp->head + i] = (uint32_t)sp->head << KP_UNIT_SHIFT;
	}
	sp->block = kp__class_size[cls];
	sp->nblocks = (uint32_t)(((size_t)sp->units << KP_UNIT_SHIFT) / sp->block);
	sp->nused = 0;
	sp->bump = 0;
	sp->free = NULL;
	sp->nfree = 0;
	return sp;
}

/* Is sp NULL or a span slot of one of this pool's normal segments? */
static bool span_slot_ok(kp_pool *pool, const kp__span *sp)
{
	if (!sp)
		return true;
	kp__seg *s = kp__pagemap_get(sp);
	if (!s || s->pool != pool || s->kind != KP_SEG_NORMAL)
		return false;
	uintptr_t off = (uintptr_t)sp - (uintptr_t)s->span;
	return off < sizeof s->span && !(off % sizeof *sp);
}

static void partial_push(kp__central *c, kp__span *sp)
{
	sp->prev = NULL;
	sp->next = c->partial;
	if (c->partial)
		c->partial->prev = sp;
	c->partial = sp;
	sp->in_partial = 1;
}

static void partial_remove(kp__central *c, kp__span *sp)
{
	if (sp->prev)
		sp->prev->next = sp->next;
	else
		c->partial = sp->next;
	if (sp->next)
		sp->next->prev = sp->prev;
	sp->next = sp->prev = NULL;
	sp->in_partial = 0;
}

/* A free block's purge stamp: the word after its list link, in the page of
 * its header (never given back), which says what the daemon knows of the
 * block since it last came into its span's free list ("purging free
 * blocks", below): seen there at checkpoint n (bstamp(b, n)), or its pages
 * given back (bstamp(b, 0)). span_pop clears it as the block leaves. Not
 * keyed: a program that forges one (it would write it in a free block, or
 * leave it in the block it frees) only has the daemon give back a free
 * block's pages early, or keep them. */
#define KP_BSTAMP_OFF (KP_HDR + sizeof(void *))
static inline uint64_t bstamp(const void *b, uint64_t n)
{
	return kp__mix((uintptr_t)b ^ n * 0x9e3779b97f4a7c15ull);
}
static inline KP_NOASAN uint64_t bstamp_get(const char *b)
{
	return *(const uint64_t *)(b + KP_BSTAMP_OFF);
}
static inline KP_NOASAN void bstamp_put(char *b, uint64_t v)
{
	*(uint64_t *)(b + KP_BSTAMP_OFF) = v;
}
_Static_assert(KP_BSTAMP_OFF + 8 <= 32, "every block holds a header, a link and a stamp");

/* ---- the span table, checked before the central path uses it ------------
 * The span slots sit in the segment's header unit and are not sealed: a
 * stray write can reach one. The central path (kp__central_take) takes a
 * span's free-list head, start, block size, block count and bump index from
 * its slot, so it checks them first, once per span per batch: a head sent
 * anywhere was read (signal 11), a head in another span or at a live block
 * handed that block out twice, and a block count or bump index rewritten
 * let the bump run over live blocks (test_span_table). The counts (nused,
 * nfree, bump) are checked against each other there and when a span's last
 * block returns (span_give), before its units go back. A damaged span is
 * quarantined (span_quarantine) and the batch served from the next span. */

/* Is sp's geometry its run's own: a small span of cls at its first unit
 * (marked for cls in unit_meta, which the free path trusts), the class's
 * size, length and block count (as many as the run holds: no division), and
 * its counts internal.h's invariant (the bump within the count, every
 * bumped block in use or listed, a list exactly when nfree says so)? Any
 * thread holding the class lock; sp a span slot. */
static inline __attribute__((always_inline)) bool span_geometry_ok(const kp__span *sp, unsigned cls)
{
	const kp__seg *s = (const kp__seg *)((uintptr_t)sp & ~(uintptr_t)(KP_SEG_SIZE - 1));
	unsigned u = sp->head, n = sp->units;
	size_t run = (size_t)n << KP_UNIT_SHIFT, fill = (size_t)sp->nblocks * sp->block;
	/* & of the compares, not &&: one branch for the lot */
	return ((uintptr_t)sp == (uintptr_t)s->span + u * sizeof *sp) & (u != 0) & (u + n <= KP_SEG_END) &
		       (sp->kind == KP_SPAN_SMALL) & (sp->cls == cls) &
		       ((n == span_units(cls)) | (n == span_fit_tab[cls])) & (sp->block == kp__class_size[cls]) &
		       (sp->start == (const char *)s + ((size_t)u << KP_UNIT_SHIFT)) & (fill <= run) &
		       (run - fill < sp->block) & (sp->bump <= sp->nblocks) &
		       ((size_t)sp->nused + sp->nfree == sp->bump) & (!sp->free == !sp->nfree) &&
	       s->unit_meta[u] == KP_UNIT_META(cls);
}

/* Is b NULL or a block start of sp (its geometry checked)? */
static inline bool span_block_ok(const kp__span *sp, const char *b)
{
	return !b || (b >= sp->start && b < sp->start + (size_t)sp->nblocks * sp->block &&
		      !((size_t)(b - sp->start) % sp->block));
}

/* sp, class cls's list head, found damaged: an event, and the span set
 * aside for good (its blocks never handed out again, its units never given
 * back: leaked, span_give), off the list, whose link is followed only if it
 * is a span slot of this pool. Class lock held. */
static void span_quarantine(kp_pool *pool, kp__central *c, kp__span *sp, unsigned kind, const void *at, size_t size,
			    const char *what)
{
	kp__violation(pool, kind, KP_ECORRUPT, at, size, what);
	if (!sp->quarantined)
		atomic_fetch_add(&pool->quarantined, 1);
	sp->quarantined = 1;
	sp->free = NULL;
	sp->nfree = 0;
	sp->bump = sp->nblocks;
	if (c->partial == sp) {
		c->partial = span_slot_ok(pool, sp->next) ? sp->next : NULL;
		if (c->partial)
			c->partial->prev = NULL;
		sp->next = sp->prev = NULL;
		sp->in_partial = 0;
	} else if (span_slot_ok(pool, sp->next) && span_slot_ok(pool, sp->prev)) {
		partial_remove(c, sp);
	}
}

/* Pop a block from a span: its free list or the never-used tail. The head
 * (range-checked by span_take_ok, or the link vetted at the pop before)
 * must verify as a free block of the span's class under its key before its
 * link is read (a head or link at a live block gave that block out while
 * live), and its link must point at a block start inside the same span.
 * NULL when the span is empty or found damaged (then quarantined). The
 * block's purge stamp is cleared (a stale one would make the daemon skip it
 * when it is free again). Class lock held. */
static char *span_pop(kp_pool *pool, kp__central *c, kp__span *sp, uint64_t *key)
{
	char *b = sp->free;
	if (b) {
		*key = kp__hkey(pool->secret, b);
		const kp__hdr *h = (const kp__hdr *)b;
		if ((kp__hdr_tag(h) ^ kp__hdr_meta(h)) != *key || kp__hdr_meta(h) != kp__meta(0, sp->cls, KP_ST_FREE)) {
			span_quarantine(pool, c, sp, KP_EV_FREELIST, b, sp->block,
					"span free list at a block that is not free, span quarantined");
			return NULL;
		}
		char *next = kp__link_get_k(*key, b);
		if (!span_block_ok(sp, next)) {
			span_quarantine(pool, c, sp, KP_EV_FREELIST, b, sp->block, "bad span link, span quarantined");
			return NULL;
		}
		sp->free = next;
		sp->nfree--;
		if (!pool->conf.poison) /* (its payload is poisoned past the link: the stamp is never used) */
			bstamp_put(b, 0);
		return b;
	}
	if (sp->bump == sp->nblocks)
		return NULL;
	b = sp->start + (size_t)sp->bump++ * sp->block;
	/* A never-used block gets a free header now, so every block in a cache
	 * verifies the same way. */
	*key = kp__hkey(pool->secret, b);
	kp__hdr_put((kp__hdr *)b, *key, kp__meta(0, sp->cls, KP_ST_FREE));
	bstamp_put(b, 0); /* what the unit held before: perhaps another block's stamp */
	if (pool->conf.poison)
		kp__poison_fill(b + KP_HDR, sp->block - KP_HDR);
	return b;
}

#define KP_SPAN_DAMAGED "span table slot damaged (geometry, counts, free-list head or list link), span quarantined"

/* Class cls's list head sp (listed), before a batch is taken from it: its
 * geometry (span_geometry_ok), its free-list head (a block start of its own
 * run, span_block_ok) and its prev link (none, as the head) are sound; if
 * not, it is quarantined (the event names the slot) and false returned.
 * Its next link is vetted where it is followed (kp__central_take). Every
 * write of a list head is vetted so (or takes the span of a block's own
 * unit, span_give), so the head is a slot of this pool's segments. Class
 * lock held. */
static bool span_take_ok(kp_pool *pool, kp__central *c, kp__span *sp, unsigned cls)
{
	if (KP_LIKELY(!sp->quarantined && span_geometry_ok(sp, cls) && span_block_ok(sp, sp->free) && !sp->prev))
		return true;
	span_quarantine(pool, c, sp, KP_EV_CORRUPTION, sp, KP_SIZE_UNKNOWN, KP_SPAN_DAMAGED);
	return false;
}

unsigned kp__central_take(kp_pool *pool, unsigned cls, void **list, uint64_t *keys, unsigned n)
{
	kp__central *c = &pool->central[cls];
	unsigned got = 0;
	void *head = *list;
	kp__class_lock_take(pool, cls);
	while (got < n) {
		kp__span *sp = c->partial;
		if (!sp) {
			sp = span_new(pool, cls);
			if (!sp)
				break;
			partial_push(c, sp);
		} else if (!kp__seg_ok(pool, (kp__seg *)((uintptr_t)sp & ~(uintptr_t)(KP_SEG_SIZE - 1)))) {
			/* Its segment's header is damaged: set aside, and its list
			 * links followed only if they are span slots of this pool. */
			sp->quarantined = 1;
			if (span_slot_ok(pool, sp->next) && span_slot_ok(pool, sp->prev))
				partial_remove(c, sp);
			else
				c->partial = NULL;
			continue;
		}
		unsigned before = got;
		if (sp->in_partial && !span_take_ok(pool, c, sp, cls))
			continue;
		while (got < n && sp->in_partial) {
			uint64_t key;
			char *b = span_pop(pool, c, sp, &key);
			if (!b)
				break;
			sp->nused++;
			kp__link_put_k(key, b, head);
			head = b;
			if (keys)
				keys[got] = key ^ kp__kslot(&pool->secret, b);
			got++;
		}
		if (got == before && c->partial == sp && !sp->in_partial) {
			/* Listed, yet no longer a listed span (its units went back, or
			 * its slot was rewritten: planted 3 does the first): it would
			 * be found again at once, for ever. Dropped from the list with
			 * an event; its links are followed only if they are span slots
			 * of this pool. */
			kp__violation(pool, KP_EV_FREELIST, KP_ECORRUPT, sp, KP_SIZE_UNKNOWN,
				      "a span on the central list is no longer listed: dropped from the list");
			c->partial = span_slot_ok(pool, sp->next) ? sp->next : NULL;
			if (c->partial)
				c->partial->prev = NULL;
			continue;
		}
		KP_ASSERT(1, span_is_valid(pool, sp, false));
		if (sp->in_partial && !sp->free && sp->bump == sp->nblocks) {
			/* partial_remove writes through next, the list's next head */
			if (span_slot_ok(pool, sp->next))
				partial_remove(c, sp);
			else
				span_quarantine(pool, c, sp, KP_EV_CORRUPTION, sp, KP_SIZE_UNKNOWN, KP_SPAN_DAMAGED);
		}
	}
	pthread_mutex_unlock(kp__class_lock(pool, cls));
	*list = head;
	if (got)
		kp__account_out(pool, (size_t)got * kp__class_size[cls], true);
	return got;
}

static kp__span *span_of(const void *p, kp__seg **segp)
{
	kp__seg *s = kp__pagemap_get(p);
	unsigned u = (unsigned)(((uintptr_t)p - (uintptr_t)s) >> KP_UNIT_SHIFT);
	*segp = s;
	return &s->span[s->span[u].head];
}

/* Block b (key: K(b)) goes back on its span's free list, and the span's
 * units to the segment when it empties (every block it bumped listed: a
 * rewritten count released the units under live blocks, test_span_table;
 * else the span is quarantined); nothing, but the count, for a quarantined
 * span (its blocks are not reused). Class lock held. */
static void span_give(kp_pool *pool, kp__central *c, kp__seg *s, kp__span *sp, char *b, uint64_t key)
{
	sp->nused--;
	if (sp->quarantined)
		return;
	kp__link_put_k(key, b, sp->free);
	sp->free = b;
	sp->nfree++;
	KP_ASSERT(1, span_is_valid(pool, sp, false));
	KP_ASSERT(2, sp->nused > 0 || span_is_valid(pool, sp, true));
	if (!sp->in_partial)
		partial_push(c, sp);
	if (sp->nused == 0) {
		if (sp->nfree != sp->bump) { /* a count rewritten: blocks still out, the units stay (leaked) */
			span_quarantine(pool, c, sp, KP_EV_CORRUPTION, sp, KP_SIZE_UNKNOWN, KP_SPAN_DAMAGED);
			return;
		}
		if (KP_PLANT != 3) /* planted 3: the units go back while the span is still listed */
			partial_remove(c, sp);
		c->spans -= c->spans > 0;
		kp__pool_lock(pool);
		units_give(pool, s, sp);
		pthread_mutex_unlock(&pool->lock);
	}
}

/* The program gave back a quarter or more of what it held at the daemon's
 * last pass, KP_FREED_KICK at least: the daemon is woken, so that its
 * purge sees the memory freed at its next checkpoint, tens of milliseconds
 * away, not at its timer's next pass (daemon.c, next_wait; git
 * pack-objects freed 4 MiB of large blocks at once and held their pages
 * 100-200 ms, while it grew its spans beside them: test_purge_soon). This
 * wake-up is most of the gain: git's whole workload peaked at 18.5 MiB
 * with it, 19.7 without (main 19.4-20.0; glibc 16.0). Once per such fall:
 * the pass that follows sets the mark again, and a wake-up already pending
 * costs an atomic exchange. A program in steady state frees what it takes
 * and never gets here: no system call on its path. 2 MiB, not 1: prodcons
 * under the preload (1.4 MB in use at its peak, its queues' swings of 1
 * MiB and more) woke the daemon 7 times and peaked 250 KiB higher (4.25
 * against 4.02 MiB, medians of 7). Inline: a function of its own on
 * kp__central_give's path is one more window of the preload's text that
 * small programs fault in (preload/hot.txt; test_preload's resident
 * test: 104 KiB of text resident, 64 before). */
#define KP_FREED_KICK ((size_t)2 << 20)
static inline __attribute__((always_inline)) void freed_kick(kp_pool *pool)
{
	kp__daemon *d = &pool->daemon;
	size_t was = atomic_load_explicit(&d->out_at, memory_order_relaxed);
	size_t out = atomic_load_explicit(&pool->out_bytes, memory_order_relaxed);
	size_t peak = atomic_load_explicit(&pool->peak_seg_out_bytes, memory_order_relaxed);
	if (peak > atomic_load_explicit(&d->peak_at, memory_order_relaxed) && peak > was)
		was = peak; /* a peak since the last pass: out went there after it */
	size_t fall = was / 4 > KP_FREED_KICK ? was / 4 : KP_FREED_KICK;
	if (KP_UNLIKELY(out + fall < was)) {
		atomic_store_explicit(&d->out_at, out, memory_order_relaxed);
		atomic_store_explicit(&d->peak_at, peak, memory_order_relaxed);
		atomic_store_explicit(&d->freed, 1, memory_order_relaxed);
		kp__daemon_kick(pool);
	}
}

void kp__central_give(kp_pool *pool, unsigned cls, void *list, const uint64_t *keys, unsigned n)
{
	kp__central *c = &pool->central[cls];
	char *b = list;
	kp__seg *vetted = NULL; /* the last segment whose magic was checked */
#if KP_PLANT != 11		/* planted 11: blocks go back to the central free lists without their lock */
	kp__class_lock_take(pool, cls);
#endif
	for (unsigned i = 0; i < n && b; i++) {
		uint64_t key = keys ? keys[n - 1 - i] ^ kp__kslot(&pool->secret, b) : kp__hkey(pool->secret, b);
		char *next = kp__link_get_k(key, b);
		kp__seg *s = (kp__seg *)((uintptr_t)b & ~(uintptr_t)(KP_SEG_SIZE - 1));
		if (s != vetted && !kp__seg_ok(pool, s)) { /* a damaged segment: its blocks are not reused */
			b = next;
			continue;
		}
		vetted = s;
		kp__span *sp = span_of(b, &s);
		span_give(pool, c, s, sp, b, key);
		b = next;
	}
#if KP_PLANT != 11 /* planted 11 */
	pthread_mutex_unlock(kp__class_lock(pool, cls));
#endif
	kp__account_out(pool, (size_t)n * kp__class_size[cls], false);
	freed_kick(pool);
}

/* Fault injection: quarantine the first live small span found, as if its
 * metadata had been found damaged. Found under the pool lock, changed under
 * its class lock (the lock order is class, then pool). */
int kp__primary_quarantine_span(kp_pool *pool)
{
	kp__span *sp = NULL;
	unsigned cls = 0;
	kp__pool_lock(pool);
	for (kp__seg *s = pool->segs; s && !sp; s = s->next)
		for (unsigned u = 1; u < KP_UNITS && !sp; u++)
			if (s->span[u].head == u && s->span[u].kind == KP_SPAN_SMALL && !s->span[u].quarantined) {
				sp = &s->span[u];
				cls = sp->cls;
			}
	pthread_mutex_unlock(&pool->lock);
	if (!sp)
		return -1;
	kp__central *c = &pool->central[cls];
	pthread_mutex_lock(kp__class_lock(pool, cls));
	bool ok = sp->kind == KP_SPAN_SMALL && sp->cls == cls;
	if (ok) {
		if (sp->in_partial)
			partial_remove(c, sp);
		sp->quarantined = 1;
		sp->free = NULL;
		sp->nfree = 0;
		sp->bump = sp->nblocks;
	}
	pthread_mutex_unlock(kp__class_lock(pool, cls));
	if (!ok)
		return -1;
	atomic_fetch_add(&pool->quarantined, 1);
	kp__event(pool, KP_EV_QUARANTINE, KP_POOL_PRIMARY, sp->start, (size_t)sp->units << KP_UNIT_SHIFT,
		  "%p size %zu: span quarantined (injected)", (void *)sp->start, (size_t)sp->units << KP_UNIT_SHIFT);
	return 0;
}

void *kp__large_alloc(kp_pool *pool, size_t need)
{
	unsigned n = (unsigned)((need + KP_UNIT_SIZE - 1) >> KP_UNIT_SHIFT);
	kp__seg *s;
	kp__span *sp = run_alloc(pool, n, KP_NCLASS, false, &s);
	if (!sp)
		return NULL;
	sp->kind = KP_SPAN_LARGE;
	sp->block = (uint32_t)((size_t)n << KP_UNIT_SHIFT);
	sp->nblocks = sp->nused = 1;
	kp__account_out(pool, sp->block, true);
	return sp->start;
}

void kp__large_free(kp_pool *pool, kp__seg *s, kp__span *sp)
{
	size_t bytes = sp->block;
	kp__pool_lock(pool);
	units_give(pool, s, sp);
	pthread_mutex_unlock(&pool->lock);
	kp__account_out(pool, bytes, false);
	freed_kick(pool);
}

bool kp__large_resize(kp_pool *pool, kp__seg *s, kp__span *sp, size_t need)
{
	unsigned n = (unsigned)((need + KP_UNIT_SIZE - 1) >> KP_UNIT_SHIFT), old = sp->units, u = sp->head;
	if (n == old)
		return true;
	kp__pool_lock(pool);
	if (!seg_ok_locked(pool, s)) {
		pthread_mutex_unlock(&pool->lock);
		return false;
	}
	if (n > old) { /* the units right after the run must be free */
		uint64_t bits = u + n > KP_SEG_END ? 0 : ((1ull << (n - old)) - 1) << (u + old);
		if (!bits || (s->free_mask & ~s->purging & bits) != bits) {
			sp->moving = 1; /* its run is no large block's to reuse: realloc grows by moving */
			pthread_mutex_unlock(&pool->lock);
			return false;
		}
		s->free_mask &= ~bits;
		s->purge_idle &= ~bits;
		if (s->refill & bits)
			atomic_fetch_add_explicit(&pool->purged_taken,
						  (size_t)__builtin_popcountll(s->refill & bits) << KP_UNIT_SHIFT,
						  memory_order_relaxed);
		s->purged &= ~bits;
		s->refill &= ~bits;
		s->used_free &= ~bits;
		s->zero &= ~bits;
		memset(&s->last_cls[u + old], 0, n - old);
		s->nfree_units -= n - old;
		pool->units_free -= n - old;
		for (unsigned i = old; i < n; i++)
			s->span[u + i].head = (uint8_t)u;
	} else { /* the tail goes back as free units */
		uint64_t bits = ((1ull << (old - n)) - 1) << (u + n);
		for (unsigned i = n; i < old; i++) {
			memset(&s->span[u + i], 0, sizeof s->span[u + i]);
			s->span[u + i].head = (uint8_t)(u + i);
		}
		s->free_mask |= bits;
		s->used_free |= bits; /* the block's: perhaps written */
		s->nfree_units += old - n;
		pool->units_free += old - n;
	}
	seg_reseal(pool, s);
	sp->units = (uint16_t)n;
	sp->block = (uint32_t)((size_t)n << KP_UNIT_SHIFT);
	headroom_publish(pool);
	KP_ASSERT(1, seg_is_valid(s));
	KP_ASSERT(2, pool_is_valid(pool));
	kp__backup_mode_update(pool, false);
	pthread_mutex_unlock(&pool->lock);
	if (n > old)
		kp__account_out(pool, (size_t)(n - old) << KP_UNIT_SHIFT, true);
	else
		kp__account_out(pool, (size_t)(old - n) << KP_UNIT_SHIFT, false);
	return true;
}

/* Append a free segment: older segments fill first, so the newest are the
 * ones that empty out and can be given back. Caller holds pool->lock. */
static void seg_link(kp_pool *pool, kp__seg *s)
{
	kp__seg **tail = &pool->segs;
	s->prev = s->next = NULL;
	unsigned left = (unsigned)(pool->units_total / (KP_SEG_UNITS)) + 1;
	while (*tail && left--) {
		s->prev = *tail;
		if (!seg_step(pool, *tail, (*tail)->next))
			(*tail)->next = NULL; /* a damaged link: the list ends here */
		tail = &(*tail)->next;
	}
	*tail = s;
	pool->units_free += KP_SEG_UNITS;
	pool->units_total += KP_SEG_UNITS;
	atomic_fetch_add(&pool->free_segs, 1);
	headroom_publish(pool);
}

/* Off pool->growing (kp__primary_grow). Caller holds pool->lock. */
static void growing_unlink(kp_pool *pool, kp__seg *s)
{
	if (s->prev)
		s->prev->next = s->next;
	else
		pool->growing = s->next;
	if (s->next)
		s->next->prev = s->prev;
}

/* A fork child's segments mapped by a grow that the fork cut short (the
 * thread that mapped them is not in the child): their pagemap entries
 * cleared, unmapped, their reservation undone. The child's one thread,
 * from the fork handler. */
void kp__primary_fork_child(kp_pool *pool)
{
	for (kp__seg *s = pool->growing, *next; s; s = next) {
		next = s->next;
		kp__pagemap_set(&pool->os, s, KP_SEG_SIZE, NULL);
		kp__os_unmap(&pool->os, s, KP_SEG_MAP);
		pool->capacity -= KP_SEG_SIZE;
	}
	pool->growing = NULL;
}

int kp__primary_grow(kp_pool *pool, bool populate)
{
	if (kp__os_caller == KP_CALLER_ALLOC)
		kp__grace_reclaim(pool); /* before mapping (the daemon reclaims after each pass) */
	/* From the reservation until the new segment is on pool->growing (or
	 * the reservation is undone), and while kept huge mappings evicted for
	 * it are in hand: no fork (release_mu). A fork after leaves the child
	 * a growing segment, which it unmaps (pool.c, fork_child): it had 4
	 * MiB mapped and counted in its capacity that nothing held. */
	kp__canary_reach_init(); /* before any segment's block can be freed */
	pthread_mutex_lock(&pool->release_mu);
	kp__pool_lock(pool);
	size_t used = pool->capacity + KP_SEG_SIZE + atomic_load(&pool->huge_bytes) + atomic_load(&pool->ol_bytes);
	bool room = used + atomic_load(&pool->huge_cached_bytes) <= pool->conf.primary_max;
	kp__seg *evict = NULL;
	/* Kept huge mappings make way for a segment the allocation path needs,
	 * not for the daemon's growth ahead of demand. */
	if (!room && used <= pool->conf.primary_max && kp__os_caller == KP_CALLER_ALLOC) {
		evict = kp__huge_cache_detach(pool);
		room = true;
	}
	if (room)
		pool->capacity += KP_SEG_SIZE; /* reserved now, so racing growers cannot pass the max */
	pthread_mutex_unlock(&pool->lock);
	kp__huge_cache_release(pool, evict);
	if (!room) {
		pthread_mutex_unlock(&pool->release_mu);
		return -1;
	}
	/* pre-faulted after it is on pool->growing: a fork waits for the mmap
	 * alone, not for the 3-5 ms of a segment's faults under load */
	kp__seg *s = kp__os_map(&pool->os, KP_SEG_MAP, KP_SEG_SIZE, false);
	int mmap_errno = errno;
	/* The guard unit (KP_SEG_GUARD), before the segment is anyone's */
	int prot = s ? kp__os_guard(&pool->os, (char *)s + KP_SEG_SIZE, KP_SEG_MAP - KP_SEG_SIZE) : 0;
	if (prot < 0) {
		mmap_errno = -prot;
		kp__os_unmap(&pool->os, s, KP_SEG_MAP);
		s = NULL;
	}
	kp__pool_lock(pool);
	if (s) {
		s->prev = NULL;
		s->next = pool->growing;
		if (pool->growing)
			pool->growing->prev = s;
		pool->growing = s;
	} else {
		pool->capacity -= KP_SEG_SIZE;
	}
	pthread_mutex_unlock(&pool->lock);
	pthread_mutex_unlock(&pool->release_mu);
	if (!s) {
		kp__event(pool, KP_EV_OS_FAIL, KP_POOL_PRIMARY, NULL, KP_SEG_SIZE, "segment mmap refused (%d)",
			  mmap_errno);
		return -1;
	}
	if (populate)
		kp__os_populate(&pool->os, s, KP_SEG_SIZE);
	{
		/* The header is written before the pagemap publishes the segment
		 * (a release store): a lookup of a stale pointer into this range
		 * (a segment released here before) that finds it reads a whole
		 * header, never one being written. */
		KP_POISON((char *)s + KP_UNIT_SIZE, KP_SEG_SIZE - KP_UNIT_SIZE);
		s->pool = pool;
		s->kind = KP_SEG_NORMAL;
		s->size = KP_SEG_SIZE;
		s->free_mask = KP_SEG_FREE_ALL;
		s->purge_idle = s->purged = s->purging = s->refill = s->used_free = 0;
		s->zero = KP_SEG_FREE_ALL; /* a new mapping (populated: written with zeros) */
		memset(s->last_cls, 0, sizeof s->last_cls);
		s->magic = kp__seg_magic(pool->secret, s, KP_SEG_NORMAL, KP_SEG_SIZE);
		s->nfree_units = KP_SEG_UNITS;
		s->empty_since_ns = kp__pool_now(pool);
		/* The span slots stay as the fresh mapping has them, zero: a unit
		 * no run has held yet has head 0, the header unit's slot, a free
		 * span's (KP_SPAN_FREE), as a pointer into it must find (alloc.c's
		 * lookups, daemon.c's probe_page). Their first writes were every slot's head, and the
		 * table's last 9 slots (units 55-63) are the header unit's second
		 * page: resident in every segment, where a small program's blocks
		 * take a dozen units (test_seg_header_page). */
		memset(s->unit_meta, 0, sizeof s->unit_meta);
		seg_reseal(pool, s);
		if (kp__pagemap_set(&pool->os, s, KP_SEG_SIZE, s) < 0) {
			pthread_mutex_lock(&pool->release_mu);
			kp__pool_lock(pool);
			growing_unlink(pool, s);
			pool->capacity -= KP_SEG_SIZE;
			pthread_mutex_unlock(&pool->lock);
			kp__os_unmap(&pool->os, s, KP_SEG_MAP);
			pthread_mutex_unlock(&pool->release_mu);
			kp__event(pool, KP_EV_OS_FAIL, KP_POOL_PRIMARY, NULL, KP_SEG_SIZE, "segment mmap refused (%d)",
				  errno);
			return -1;
		}
	}
	kp__pool_lock(pool);
	growing_unlink(pool, s);
	seg_link(pool, s);
	size_t cap = pool->capacity;
	kp__backup_mode_update(pool, false);
	pthread_mutex_unlock(&pool->lock);
	atomic_fetch_add(&pool->grows, 1);
	if (kp__os_caller == KP_CALLER_DAEMON) {
		/* Wake allocating threads waiting for this segment. */
		atomic_fetch_add(&pool->daemon.grows, 1);
		pthread_mutex_lock(&pool->daemon.mu);
		pthread_cond_broadcast(&pool->daemon.pass_cv);
		pthread_mutex_unlock(&pool->daemon.mu);
	}
	kp__event(pool, KP_EV_GROW, KP_POOL_PRIMARY, s, KP_SEG_SIZE, "grew by %zu to %zu bytes (%s)",
		  (size_t)KP_SEG_SIZE, cap,
		  kp__os_caller == KP_CALLER_DAEMON  ? "daemon"
		  : kp__os_caller == KP_CALLER_SETUP ? "setup"
						     : "allocation path");
	return 0;
}

int kp__primary_shrink(kp_pool *pool, size_t keep)
{
	uint64_t decay = (uint64_t)pool->conf.decay_ms * 1000000ull;
	kp__seg *gone = NULL;
	int n = 0;
	/* Nothing to give back unless a segment is wholly free and the headroom
	 * would stay at keep without it: then the pass takes no lock, so an
	 * idle daemon never makes an allocating thread wait (a futex call). */
	if (atomic_load(&pool->free_segs) == 0 || kp__primary_headroom(pool) < keep + (KP_SEG_UNITS)*KP_UNIT_SIZE)
		return 0;
	pthread_mutex_lock(&pool->release_mu); /* the released segments in hand till retired: no fork */
	kp__pool_lock(pool);
	/* Read under the lock: a segment emptied after an earlier reading would
	 * look as if it had been empty for ever. */
	uint64_t now_ns = kp__pool_now(pool);
	kp__seg *s = pool->segs;
	unsigned left = (unsigned)(pool->units_total / (KP_SEG_UNITS)) + 1;
	while (s && s->next && left--)
		s = seg_step(pool, s, s->next);
	left = (unsigned)(pool->units_total / (KP_SEG_UNITS)) + 1;
	for (kp__seg *prev; s && left--; s = prev) {
		prev = seg_step(pool, s, s->prev);
		if (s->nfree_units + (KP_PLANT == 4) < KP_SEG_UNITS /* planted 4 */ || now_ns < s->empty_since_ns ||
		    now_ns - s->empty_since_ns < decay)
			continue;
		if (!seg_ok_locked(pool, s) || !prev != !s->prev || (s->next && !seg_step(pool, s, s->next)))
			continue; /* damaged: never released as free (it may hold live blocks) */
		if (s->purging)
			continue; /* being purged (never in the same pass: the daemon does both, in turn) */
		size_t after = (pool->units_free - (KP_SEG_UNITS)) * KP_UNIT_SIZE;
		if (after < keep || pool->capacity - KP_SEG_SIZE < pool->conf.primary_initial)
			break;
		if (s->prev)
			s->prev->next = s->next;
		else
			pool->segs = s->next;
		if (s->next)
			s->next->prev = s->prev;
		pool->capacity -= KP_SEG_SIZE;
		pool->units_free -= KP_SEG_UNITS;
		pool->units_total -= KP_SEG_UNITS;
		atomic_fetch_sub(&pool->free_segs, 1);
		s->next = gone;
		gone = s;
		n++;
		/* the runs the daemon pre-faults may lie in it (daemon.c, prefault_taken) */
		atomic_store_explicit(&pool->ntaken, 0, memory_order_relaxed);
	}
	headroom_publish(pool);
	size_t cap = pool->capacity;
	pthread_mutex_unlock(&pool->lock);
	/* Out of the pagemap now, unmapped after a grace period (a lookup that
	 * found the segment a moment ago may still read its header): the pass
	 * reclaims at its end (kp__grace_reclaim), which puts a segment whose
	 * unmap the OS refuses back in the pool (kp__primary_relink). */
	while (gone) {
		kp__seg *next = gone->next;
		kp__pagemap_set(&pool->os, gone, KP_SEG_SIZE, NULL);
		kp__event(pool, KP_EV_SHRINK, KP_POOL_PRIMARY, gone, KP_SEG_SIZE, "released %zu bytes, capacity %zu",
			  (size_t)KP_SEG_SIZE, cap);
		atomic_fetch_add(&pool->shrinks, 1);
		kp__grace_retire(pool, gone, KP_SEG_MAP);
		gone = next;
	}
	pthread_mutex_unlock(&pool->release_mu);
	return n;
}

/* ---- purging free blocks ---------------------------------------------------
 *
 * A span keeps its pages while one of its blocks is live, and a free block
 * kept every page its former occupants wrote: a program that frees most of
 * its big blocks, but not whole spans, stayed at its peak. The daemon gives
 * back the whole pages inside free blocks of the big classes (past the page
 * of the header, the list link and the stamp) once they stayed in their
 * span's free list from one checkpoint to the next; a block taken again
 * after that faults in only the pages its new occupant writes (a 40 KiB
 * block's last byte falls on its 9th or 10th page, a 64 KiB block's on any
 * of its last four: pages a former occupant wrote stay resident under a
 * block that never touches them). On kpbench's workload b free blocks are
 * taken again within a pass (at its peak, 9 MiB of free blocks' pages, none
 * free at the pass before): there the placement of spans (units_take) is
 * what cut the peak.
 *
 * The blocks' age is a stamp in each free block (bstamp, above): at each
 * checkpoint a block stamped at the previous one is given back and stamped
 * purged; any other block not purged is stamped with this checkpoint's
 * number. A block that leaves its span (span_pop) loses its stamp, so a
 * block given back is not looked at again until it has been taken, and an
 * idle pool makes no system call. A thread's cached blocks are not the
 * daemon's to touch: they are given back once flushed to their spans.
 *
 * The system calls are made without a lock (the allocation path never
 * waits on one): the blocks are taken off their lists under the class lock
 * and counted as in use (the span is not released under them), held in
 * pool->bpurge_blk, given back, and returned as a thread returns blocks
 * (span_give). Only the daemon holds blocks (its passes are serialized): a
 * pass that finds some held was cut short by fork, in this child, or met a
 * class lock it did not get (bpurge_lock: the daemon does not wait on an
 * allocating thread).
 *
 * Not with poison on: a poisoned block is checked on reuse, and a page
 * given back reads zero. */

/* Blocks of 16 KiB and more (four pages, of which at least three whole ones
 * past the header's page): a smaller block has one or two such pages,
 * shares the others with its neighbours, and would cost a system call for
 * every page or two it gives back. */
#define KP_BPURGE_MIN 16384
/* Checkpoints at least this far apart (decay_ms when it is shorter):
 * mimalloc's purge delay, long enough that a block freed and taken again at
 * once is left alone, short next to the daemon's passes (100 ms apart by
 * timer, more often under demand): a block is given back after it stayed
 * free over two passes in a row. */
#define KP_BPURGE_MS 10
/* A free list of a span of those classes holds at most 17 blocks (8 to 17
 * blocks to a span: span_units, span_fit_tab): a longer one is damaged, and
 * left to span_pop, which quarantines its span when it follows the bad link. */
#define KP_BPURGE_SPAN 24
/* Batches of KP_BPURGE_BATCH blocks per checkpoint, at most: the rest are
 * given back at the next one. 16 batches are 1024 blocks, 16 MiB or more.
 * Only a batch that took blocks counts, and each checkpoint starts at the
 * next class, so that every class gets its turn: with one round counted per
 * class visited, 16 rounds ended at the 60 KiB class (there are 25 classes
 * of 16 KiB and more), and free blocks of 64-128 KiB were never given back
 * (test_block_purge_classes). */
#define KP_BPURGE_ROUNDS 16

/* The whole pages inside free block b of block bytes past its first 32
 * (header, link, stamp). */
static size_t bpurge_range(char *b, size_t block, char **lo)
{
	uintptr_t a = ((uintptr_t)b + KP_BSTAMP_OFF + 8 + KP_PAGE - 1) & ~(uintptr_t)(KP_PAGE - 1);
	uintptr_t e = ((uintptr_t)b + block) & ~(uintptr_t)(KP_PAGE - 1);
	*lo = (char *)a;
	return e > a ? e - a : 0;
}

/* Stamp sp's free blocks with checkpoint seq, and take those stamped at the
 * one before into pool->bpurge_blk while it has room (counted in use). A
 * damaged slot or list is left as it is (span_pop reports a bad link when
 * it meets it). Class lock held. */
static void bpurge_take_span(kp_pool *pool, kp__central *c, kp__span *sp, unsigned cls, uint64_t seq)
{
	char *blk[KP_BPURGE_SPAN];
	uint64_t key[KP_BPURGE_SPAN];
	unsigned n = 0, took = 0, taken = 0;
	/* The span table is not sealed (a stray write can reach it): the walk
	 * trusts the slot's start, block and count only when they are the
	 * run's own (span_geometry_ok), so that every address it reads or gives
	 * back lies inside the run, in blocks of the class (a rewritten list
	 * head sent the daemon's read anywhere: test_block_purge_held). */
	if (!span_geometry_ok(sp, cls))
		return;
	char *end = sp->start + (size_t)sp->nblocks * sp->block;
	for (char *b = sp->free; b; n++) {
		if (n == KP_BPURGE_SPAN || b < sp->start || b >= end || (size_t)(b - sp->start) % sp->block)
			return; /* the head too: the slot is not sealed, and the link of any address would be read */
		key[n] = kp__hkey(pool->secret, b);
		blk[n] = b;
		b = kp__link_get_k(key[n], b);
	}
	for (unsigned i = 0; i < n; i++) {
		uint64_t st = bstamp_get(blk[i]);
		if (st == bstamp(blk[i], seq - 1) && pool->bpurge_n < KP_BPURGE_BATCH) {
			pool->bpurge_blk[pool->bpurge_n++] = blk[i];
			taken |= 1u << i;
			took++;
		} else if (st != bstamp(blk[i], 0)) {
			char *lo;
			bstamp_put(blk[i], bstamp(blk[i], seq));
			pool->bpurge_pending += bpurge_range(blk[i], sp->block, &lo); /* the next checkpoint's */
		}
	}
	if (!took)
		return;
	char *head = NULL; /* the others, in their order */
	for (unsigned i = n; i-- > 0;)
		if (!(taken >> i & 1)) {
			kp__link_put_k(key[i], blk[i], head);
			head = blk[i];
		}
	sp->free = head;
	sp->nfree = (uint16_t)(sp->nfree - took);
	sp->nused += took;
	if (!head && sp->bump == sp->nblocks)
		partial_remove(c, sp);
	KP_ASSERT(1, span_is_valid(pool, sp, false));
}

/* The daemon's take of a class lock, false when it is not had within
 * KP_BPURGE_LOCK_NS. A thread holds one for a batch (microseconds), except
 * one that found no free units and waits under it for the daemon's next
 * segment (run_alloc, grow_wait_us): a daemon waiting on that thread for
 * the lock neither grew nor finished its pass until the thread gave up and
 * mapped the segment itself, a system call on the allocation path
 * (test_block_purge_held: 1000 ms and 2 mmap calls with grow_wait_us:1s).
 * The daemon leaves such a class to its next pass instead. */
#define KP_BPURGE_LOCK_NS 1000000 /* 1 ms: a thousand batches of another thread */
static bool bpurge_lock(pthread_mutex_t *m)
{
	if (pthread_mutex_trylock(m) == 0)
		return true;
	struct timespec ts;
	kp__realtime(&ts);
	uint64_t ns = (uint64_t)ts.tv_nsec + KP_BPURGE_LOCK_NS;
	ts.tv_sec += (time_t)(ns / 1000000000ull);
	ts.tv_nsec = (long)(ns % 1000000000ull);
	return pthread_mutex_timedlock(m, &ts) == 0;
}

/* Return the blocks held (pool->bpurge_blk) to their spans. Each leaves
 * the count of held blocks under the class lock it goes back under, so
 * that whenever the daemon holds no class lock the count says which blocks
 * are still held: a fork then (fork_prepare takes every class lock) gives
 * the child those, and the child's next pass returns them. The count
 * cleared after the last unlock had a child forked in between return the
 * whole batch a second time (each block twice on its list, handed out
 * twice: test_block_purge_held). */
static void bpurge_return(kp_pool *pool)
{
	pthread_mutex_t *locked = NULL;
	/* A class lock not had (bpurge_lock) leaves the rest held, counted in
	 * use, until the next pass. */
	while (pool->bpurge_n) {
		char *b = pool->bpurge_blk[pool->bpurge_n - 1];
		kp__seg *s;
		kp__span *sp = span_of(b, &s);
		kp__central *c = &pool->central[sp->cls];
		pthread_mutex_t *lock = kp__class_lock(pool, sp->cls);
		if (lock != locked) {
			if (locked)
				pthread_mutex_unlock(locked);
			locked = bpurge_lock(lock) ? lock : NULL;
			if (!locked)
				break;
		}
		span_give(pool, c, s, sp, b, kp__hkey(pool->secret, b));
		pool->bpurge_n--;
	}
	if (locked)
		pthread_mutex_unlock(locked);
}

/* One checkpoint: returns the blocks whose pages were given back. */
static int blocks_purge(kp_pool *pool)
{
	if (pool->bpurge_n)
		bpurge_return(pool); /* held when a fork cut a pass short, or a class lock was busy */
	if (pool->bpurge_n)
		return 0;
	uint64_t now = kp__pool_now(pool),
		 gap = pool->conf.decay_ms < KP_BPURGE_MS ? pool->conf.decay_ms : KP_BPURGE_MS;
	/* Not while the program grows (this pass found memory taken) into
	 * memory the daemon pre-faults for it, or with little headroom left:
	 * blocks freed then are taken again soon, and the walk, its class
	 * locks and its madvise calls would hold up the next pass, whose
	 * growth the allocation path is waiting for (paced-growth under load:
	 * the allocation path mapped a segment itself in 3 of 13 runs). A
	 * program that grows on its own page faults with free units to spare
	 * waits for no pass: there the blocks are given back as when it does
	 * not grow (git pack-objects grows in all but a few passes, and its
	 * peak held about 0.8 MiB of free 16-28 KiB blocks' pages:
	 * test_block_purge_growth). Neither this hold nor the 16 KiB floor is
	 * what keeps git's peak up: never holding, or giving back blocks of
	 * 8 KiB and up, peaked at 18,388 and 18,356 KiB against main's 18,440
	 * (git pack-objects alone, medians of 15 alternated runs, session 22);
	 * its free blocks at the peak are taken again within a pass or two. */
	size_t out = atomic_load_explicit(&pool->seg_out_bytes, memory_order_relaxed);
	size_t peak = atomic_load_explicit(&pool->peak_seg_out_bytes, memory_order_relaxed);
	/* ... nor, whatever the pass measured, when the program holds a
	 * quarter less than its peak: it gave back (freed_kick) */
	bool hold = pool->daemon.busy_passes && out >= peak - peak / 4 &&
		    (program_writes_all(pool) ||
		     kp__primary_headroom(pool) <
			     2 * atomic_load_explicit(&pool->wake_wm, memory_order_relaxed) + KP_SEG_SIZE);
	if (pool->conf.poison || hold) {
		pool->bpurge_pending = 0; /* nothing given back at the next checkpoint either */
		return 0;
	}
	if (now < pool->bpurge_at_ns)
		return 0;
	pool->bpurge_at_ns = now + gap * 1000000ull;
	pool->bpurge_pending = 0;	       /* counted again by this walk (bpurge_take_span) */
	uint64_t seq = ++pool->bpurge_seq + 1; /* from 2: the one before is never 0, the purged stamp */
	int purged = 0;
	kp__pool_lock(pool);
	size_t spans = pool->units_total + 1; /* a span holds a unit at least: a longer list is damaged */
	pthread_mutex_unlock(&pool->lock);
	unsigned first = kp__class_of(KP_BPURGE_MIN), nbig = KP_NCLASS - first, rounds = 0;
	for (unsigned k = 0; k < nbig && rounds < KP_BPURGE_ROUNDS; k++) {
		unsigned cls = first + (unsigned)((seq + k) % nbig);
		kp__central *c = &pool->central[cls];
		bool more = true;
		while (more && rounds < KP_BPURGE_ROUNDS) {
			if (!bpurge_lock(kp__class_lock(pool, cls)))
				break; /* at the next pass */
			size_t left = spans;
			kp__span *sp = c->partial, *next;
			for (; sp && left-- && pool->bpurge_n < KP_BPURGE_BATCH; sp = next) {
				next = sp->next; /* (a span emptied of free blocks leaves the list) */
				if (!span_slot_ok(pool, next))
					break;
				if (!sp->quarantined)
					bpurge_take_span(pool, c, sp, cls, seq);
			}
			more = sp && pool->bpurge_n == KP_BPURGE_BATCH;
			pthread_mutex_unlock(kp__class_lock(pool, cls));
			if (!pool->bpurge_n)
				break;
			rounds++;
			for (unsigned i = 0; i < pool->bpurge_n; i++) {
				char *b = pool->bpurge_blk[i], *lo;
				size_t len = bpurge_range(b, kp__class_size[cls], &lo);
				size_t bytes = len ? kp__os_purge(&pool->os, lo, len) : 0;
				bstamp_put(b, bstamp(b, 0));
				if (bytes) {
					atomic_fetch_add(&pool->purged_bytes, bytes);
					atomic_fetch_add(&pool->purges, 1);
					purged++;
				}
			}
			bpurge_return(pool);
			if (pool->bpurge_n) {
				pool->bpurge_pending += KP_SEG_SIZE; /* not walked: more at the next one */
				return purged;			     /* a class lock busy: the rest at the next pass */
			}
		}
	}
	if (rounds == KP_BPURGE_ROUNDS)
		pool->bpurge_pending += KP_SEG_SIZE; /* the walk was cut short */
	return purged;
}

/* ---- purging free units ----------------------------------------------------
 *
 * A segment with one live block is never released, and its free units kept
 * their pages for ever: a program that freed most of what it took stayed at
 * its peak RSS. The daemon gives back the pages of free units that stayed
 * free for decay_ms (MADV_DONTNEED): one checkpoint per decay_ms, at which
 * the units free at the previous checkpoint and never taken since (units_take
 * clears purge_idle) are purged and purge_idle becomes the free mask, so a
 * unit is given back after between one and two decay periods free.
 *
 * Never the first keep bytes of free units in allocation order (units_take's
 * order: oldest segment first, lowest unit first): that front is the
 * headroom the daemon pre-faults for the allocation path, and purging it
 * would have the next pass fault it in again, in a loop. A purged unit is
 * marked (purged) and not purged again until it is taken; when the front
 * reaches it, the daemon pre-faults it as any other (the mark is cleared).
 * One the allocation path takes past the front faults on first touch, as
 * any free unit past the daemon's pre-faulted front does.
 *
 * The system calls are made without the pool lock (the allocation path never
 * waits on one): the runs are marked purging under the lock, which
 * units_take and kp__large_resize skip, and given back to the free units
 * after. Only the daemon marks (its passes are serialized), so a mark found
 * when a checkpoint starts was left by a pass that a fork cut short: cleared. */

/* Runs given back per checkpoint; the rest wait for the next one. 256 (4 KiB
 * of the daemon's stack) is every free run of 8 segments cut to the worst,
 * one free unit in two, and of 256 segments (1 GiB) whose free units are
 * whole: a checkpoint that finds more is a rare, fragmented pool. */
#define KP_PURGE_RUNS 256

int kp__primary_purge(kp_pool *pool, size_t keep)
{
	int blocks = blocks_purge(pool);
	uint64_t now = kp__pool_now(pool);
	if (now < pool->purge_at_ns)
		return blocks;
	pool->purge_at_ns = now + (uint64_t)pool->conf.decay_ms * 1000000ull;
	struct {
		kp__seg *s;
		unsigned u, n;
	} run[KP_PURGE_RUNS];
	unsigned nrun = 0;
	size_t seen = 0, pending = 0;
	kp__pool_lock(pool);
	unsigned left = (unsigned)(pool->units_total / (KP_SEG_UNITS)) + 1;
	for (kp__seg *s = pool->segs; s && left--; s = seg_step(pool, s, s->next)) {
		s->purging = 0;
		if (s->quarantined)
			continue;
		uint64_t past = s->free_mask; /* the free units past the front */
		while (past && seen < keep) {
			s->purged &= ~(past & -past); /* the daemon pre-faults the front */
			past &= past - 1;
			seen += KP_UNIT_SIZE;
		}
		uint64_t cand = past & s->purge_idle & ~s->purged;
		s->purge_idle = s->free_mask;
		/* the next checkpoint's: past the front, resident (a span or a
		 * large block used them since they were mapped or purged), not
		 * given back at this one */
		pending += (size_t)__builtin_popcountll(past & s->used_free & ~s->purged & ~cand) << KP_UNIT_SHIFT;
		if (!cand || !seg_ok_locked(pool, s)) /* its mask is sealed: it says which units are free */
			continue;
		while (cand && nrun < KP_PURGE_RUNS) {
			unsigned u = (unsigned)__builtin_ctzll(cand), n = 0;
			while (u + n < KP_UNITS && (cand >> (u + n)) & 1)
				n++;
			uint64_t bits = (n == 64 ? ~0ull : ((1ull << n) - 1)) << u;
			cand &= ~bits;
			s->purging |= bits;
			run[nrun].s = s;
			run[nrun].u = u;
			run[nrun++].n = n;
		}
	}
	pool->purge_pending = pending;
	pthread_mutex_unlock(&pool->lock);
	if (!nrun)
		return blocks;
	int purged = blocks;
	for (unsigned i = 0; i < nrun; i++) {
		size_t bytes = kp__os_purge(&pool->os, (char *)run[i].s + ((size_t)run[i].u << KP_UNIT_SHIFT),
					    (size_t)run[i].n << KP_UNIT_SHIFT);
		if (bytes) {
			atomic_fetch_add(&pool->purged_bytes, bytes);
			atomic_fetch_add(&pool->purges, 1);
			purged++;
		}
	}
	kp__pool_lock(pool);
	for (unsigned i = 0; i < nrun; i++) {
		uint64_t bits = (run[i].n == 64 ? ~0ull : ((1ull << run[i].n) - 1)) << run[i].u;
		run[i].s->purging &= ~bits;
		run[i].s->purged |= bits & run[i].s->free_mask;
		run[i].s->refill |= bits & run[i].s->free_mask & run[i].s->used_free; /* pages a span used */
		run[i].s->used_free &= ~(bits & run[i].s->free_mask);		      /* not resident: clean */
	}
	pthread_mutex_unlock(&pool->lock);
	return purged;
}

uint64_t kp__primary_purge_due(kp_pool *pool, size_t least)
{
	uint64_t due = UINT64_MAX;
	if (pool->bpurge_pending >= least)
		due = pool->bpurge_at_ns;
	if (pool->purge_pending >= least && pool->purge_at_ns < due)
		due = pool->purge_at_ns;
	return due;
}

void kp__primary_relink(kp_pool *pool, kp__seg *s)
{
	s->empty_since_ns = kp__pool_now(pool);
	s->purge_idle = s->purged = s->purging = s->refill = s->used_free = 0;
	s->zero = 0; /* the blocks it held wrote it */
	kp__pagemap_set(&pool->os, s, KP_SEG_SIZE, s);
	kp__pool_lock(pool);
	pool->capacity += KP_SEG_SIZE;
	seg_link(pool, s);
	pthread_mutex_unlock(&pool->lock);
}

/* kp_destroy: another pool's kp_free of a foreign pointer may still be
 * reading a header here, so this pool's memory too waits for its readers. */
void kp__primary_release_all(kp_pool *pool)
{
	kp__huge_cache_trim(pool, true);
	for (kp__seg *s = pool->segs, *next; s; s = next) {
		next = s->next;
		kp__pagemap_set(&pool->os, s, KP_SEG_SIZE, NULL);
		kp__grace_retire(pool, s, KP_SEG_MAP);
	}
	for (kp__seg *s = pool->huge, *next; s; s = next) {
		next = s->next;
		size_t size = s->size;
		kp__pagemap_set(&pool->os, s, size, NULL);
		s->kind = KP_SEG_HUGE;
		kp__grace_retire(pool, s, size + KP_PAGE); /* its guard page (huge.c, KP_HUGE_GUARD) */
	}
	pool->segs = pool->huge = NULL;
	kp__grace_drain(pool);
}

size_t kp__primary_headroom(kp_pool *pool)
{
	return atomic_load_explicit(&pool->headroom, memory_order_relaxed);
}
