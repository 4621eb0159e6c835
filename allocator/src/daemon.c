/*
 * daemon.c - the grow daemon: one thread per pool keeping the primary sized
 * ahead of demand.
 *
 * A small state machine under d->mu: OFF -> RUNNING -> STOPPING -> OFF, and
 * RESTART in a fork child (the thread does not survive fork; the first slow
 * path in the child starts a new one). The thread waits on a condition
 * variable; the allocation path signals it when the pre-faulted headroom
 * falls under low_wm (pool->wake_wm, set by each pass)
 * (one atomic exchange decides who signals, so a burst costs one wake-up),
 * and daemon_interval_ms is the fallback timer. Each pass:
 *   1. measures the demand since the last pass and sets the headroom
 *      target from it (daemon_target, below: the allocation rate and what
 *      the allocation path had to fault itself, high_wm the floor), and
 *      samples whether the program writes what it takes (probe, below:
 *      pre-faulting stops for a program that leaves most of it unwritten);
 *   2. pre-faults the free units the allocation path takes next, and grows
 *      (mapping segments) until headroom >= the target;
 *   3. shrinks, unmapping segments that stayed free for decay_ms while the
 *      headroom stays >= the same target and capacity >= primary_initial,
 *      and gives back the pages of free units that stayed free for
 *      decay_ms past that headroom (primary.c, kp__primary_purge);
 *   4. refills the backup after use;
 *   5. unmaps what it released once no lookup can still read it (pagemap.c).
 * A layout:outline pool's spare segments come first (outline.c,
 * kp__ol_daemon_pass), sized by the same rules (kp__daemon_grow_target);
 * there high_wm is the floor of outline segments kept pre-faulted (a heap
 * that takes the last spares wakes the daemon: low_wm is not used), and the
 * inline primary, which serves only blocks over 64 KiB and critical
 * requests there, keeps auto watermarks.
 * Tests drive passes without the thread through kp_daemon_step.
 */
#include "internal.h"

#include <errno.h>
#include <signal.h>

uint64_t kp__pool_now(kp_pool *pool)
{
	uint64_t offset = atomic_load_explicit(&pool->daemon.clock_offset_ns, memory_order_relaxed);
	/* step_clock: a stepped pool's time is its steps' (the fuzz targets:
	 * the coverage of a replay did not depend on the machine's load) */
	if (pool->conf.step_clock && !pool->conf.daemon)
		return offset;
	return kp__now_ns() + offset;
}

/* ---- the headroom target --------------------------------------------------
 *
 * Headroom is free primary memory the daemon has mapped and pre-faulted
 * ahead of demand, so that an allocating thread neither maps nor faults.
 * Every byte of it is resident memory no program asked for, so the target
 * is sized from what the program does, not fixed:
 *
 *   target = max(floor, min(rate * KP_HORIZON_MS << boost,
 *                           max(in_use / KP_TARGET_SHARE, small)))
 *   small = min(in_use / KP_GROW_SHARE, KP_TARGET_SMALL) once
 *           KP_BUSY_PASSES passes in a row found memory taken, else
 *           min(in_use / KP_FLOOR_SHARE, KP_TARGET_SMALL)
 *
 * rate: the demand per second, measured pass to pass: bytes taken from the
 *   free units (less those given back) as far as the bytes in use went past
 *   their peak (memory given back and taken again is resident already); it
 *   follows a rise at once, decays by half every decay_ms / 4 of quiet, is
 *   replaced by a rate under 1/KP_SLOWED of it, and forgotten (with the
 *   boost) once growth has stopped.
 * boost: raised each time the allocation path had to fault memory itself:
 *   when it grew the pool (primary.c), or when a pass finds that more was
 *   taken since the last one than the daemon had pre-faulted ("faulted");
 *   it decays one step per decay_ms without that.
 * in_use / KP_TARGET_SHARE: the headroom never adds more than 1/16 to the
 *   memory the program holds, so that a fast-growing program's peak RSS
 *   stays within a few percent of what it uses (issue 14: 1.1x the best
 *   peer); explicit watermarks (high_wm) override it. layout:outline's
 *   spares: 1/32 (KP_GROW_TARGET_SHARE).
 * high_wm: the floor, also the idle headroom: by default (auto) a quarter
 *   of the bytes in use, at most KP_FLOOR_AUTO (kp__daemon_floor).
 *
 * The front, the part of the headroom pre-faulted, is the target less the
 * high_wm:auto floor: what the rate asks for, at most the ramp, which
 * doubles each time the allocation path overran the front (KP_RAMP_START;
 * an explicit high_wm is pre-faulted whole). The floor stays mapped, not resident, when the
 * program is not growing. What was pre-faulted past the front is given
 * back once free for KP_RELEASE_MS (a burst that ended).
 *
 * Growth fills the headroom up to the target and shrink keeps it, so that
 * the two never undo each other (a band of one segment, the hysteresis;
 * issue 12: growth aimed higher than shrink kept, and each segment released
 * was grown back at the next pass).
 */

/* How long the headroom must last at the measured rate: the time for the
 * daemon to be woken (a scheduler latency on a loaded 2-core machine, a few
 * ms) and to map and pre-fault what was taken (4 MiB in about 1 ms), with a
 * margin of two. */
#define KP_HORIZON_MS 20
/* Nothing taken for this many horizons: growth has stopped (daemon_target).
 * One was too few: a program taking 2 MiB per 20 ms, its pass coming just
 * before its next takes (test_prefault_touch's model of a 100 MB/s grower),
 * looked quiet at every pass and was never pre-faulted. */
#define KP_QUIET_HORIZONS 2
/* At most 1/16 of the bytes in use as headroom: 6% over the program's own
 * footprint at its peak, under the 10% the issue allows over the best peer. */
#define KP_TARGET_SHARE 16
/* The same for layout:outline's spare segments (kp__daemon_grow_target):
 * 1/32, 3%, as its blocks cost 4-5% more than glibc's before any headroom
 * (classes 1/8 of a doubling apart, the records; kpbench d with
 * prefault:off: 1.046x glibc's peak). At 1/16, d's peak was 1.13x glibc's,
 * 8-9 spares (32-36 MiB) pre-faulted ahead when its growth stopped
 * (test_outline_grow_peak). */
#define KP_GROW_TARGET_SHARE 32
/* A small program's 1/16 would be too little to absorb a burst: while it
 * grows (below) its share is half the bytes in use, at most 8 MiB
 * (two segments), what a thread allocating at 200 MiB/s takes in 40 ms,
 * twice the horizon. Not a fixed 8 MiB: a churning program of 8 MB (larson
 * under the preload: 4 threads replacing blocks, a "rate" of 240 MB/s from
 * its start) had 8 MiB pre-faulted beside it and peaked at 22 MiB against
 * mimalloc's 13; at half, 14.4 (`/usr/bin/time`), while
 * test_pool_behaviour's paced start costs 700-890 faults in its first
 * 16 MiB (a peer faults all 4,096). (A share rising with the number of
 * passes that found growth took larson to 13.6 but its paced start to
 * 820-1,330 faults: a timer pass in between restarts the ramp.) It is
 * reached only while the measured rate asks for it: an idle or slow
 * program keeps the floor. */
#define KP_TARGET_SMALL ((size_t)8 << 20)
#define KP_GROW_SHARE 2
/* The same for layout:outline's spares (kp__daemon_grow_target): one
 * segment (outline.h's OL_SEG_SIZE), what a burst's pass needs to find one
 * whole spare pre-faulted, as the spares are pre-faulted from 64 MiB in use
 * only (outline.c's OL_PREFAULT_MIN), where a program is no small one. At
 * KP_TARGET_SMALL, two spares (8 MiB) were pre-faulted beside every growing
 * pool of 64-256 MiB, past its 1/32 (CPython's test_unicode under the
 * preload, 145 MiB at its peak: 8 MiB of its gap to mimalloc's peak;
 * test_outline_spare_share), while test_outline_grow's thread faults stay
 * under 1% with one. */
#define KP_GROW_SMALL ((size_t)4 << 20)
/* A program's first burst (its first spans, a few hundred KB in a few ms:
 * a "rate" of 100 MB/s) would be taken for growth and pre-fault several
 * times what it holds (test_memory's small program: 3.7x glibc's peak with
 * the auto floor alone). Until passes in a row have found memory taken
 * (growth, not a start), the share is at most a quarter of the bytes in
 * use. Two: a start is over within one pass; a paced grower wakes the
 * daemon pass after pass. */
#define KP_BUSY_PASSES 2
/* The smallest front the allocation path wakes the daemon for (set_wake):
 * four units, a wake-up per 128 KiB taken at most. */
#define KP_WAKE_FRONT ((size_t)4 * KP_UNIT_SIZE)
/* Pages pre-faulted for growth that stopped (the front fell under what was
 * pre-faulted by more than KP_RELEASE_MIN) are given back once free for
 * KP_RELEASE_MS, not decay_ms (kp__primary_purge's checkpoints, brought
 * forward: one at that pass, the next KP_RELEASE_MS later). larson grows to
 * 7 MB in 20 ms and then replaces blocks for the rest of its run: the
 * 3.3 MiB pre-faulted for its burst stayed resident beside what its
 * churn went on to touch (peak 13.4 MiB, 9.7 with prefault:off). Five
 * horizons: growth that resumes within them finds its pages still there. */
#define KP_RELEASE_MS (5 * KP_HORIZON_MS)
#define KP_RELEASE_MIN ((size_t)4 * KP_UNIT_SIZE)
/* A sparse program's free units (not pre-faulting: kp__daemon_pass) are
 * given back when free at two checkpoints in a row this far apart, 20-40
 * ms after they went free (KP_RELEASE_MS before: git pack-objects' units
 * of a burst of large blocks, 2.5 MiB, stayed resident 100-200 ms, while
 * its spans grew past the burst's peak beside them; test_purge_soon). Two
 * block checkpoints (KP_BPURGE_MS): a unit freed and taken again within
 * them is not given back (git's 325 KiB delta buffers, taken and freed
 * once per object, keep their pages). 10 ms peaked the same (git
 * pack-objects alone: 18,468 KiB against 18,440, medians of 15 alternated
 * runs, session 22): at its peak the burst's large blocks are live. */
#define KP_SPARSE_MS 20
/* A slowed-down growth's rate replaces the one it had (daemon_target)
 * when under 1/KP_SLOWED of it over KP_SLOWED_MS or more: four horizons,
 * under the timer's 100 ms (a pass of a program that only churns comes
 * from the timer). Over two, a paced grower's pauses (test_pool_behaviour:
 * a Python loop) read as slowed, and the growth after each faulted until
 * the rate was measured again (380-420 faults past its start, 20-70
 * before). */
#define KP_SLOWED 8
#define KP_SLOWED_MS (4 * KP_HORIZON_MS)
/* The front is filled in steps (kp__daemon_pass, fill_to): a pass
 * pre-faults up to half the front, where the allocation path wakes the
 * daemon (set_wake: what covers the daemon's latency), plus an eighth of
 * it, not the whole front. Whatever is pre-faulted ahead when a burst stops
 * is resident and never used, and it is what the program's peak RSS adds:
 * filled whole, between a half and the whole front (sqlite3 under the
 * preload ends on a 17 MiB burst in 40 ms with an 8 MiB front: 8.6 MiB of
 * free units resident at its peak; test_front_steps). The half the thread
 * wakes the daemon at is the same, so the daemon is as far ahead when it is
 * woken; the cost is a wake-up per eighth taken instead of per half (a
 * futex call on the allocation path, during growth only). An eighth: a
 * sixteenth measured the same (sqlite3 45.8 against 45.9 MiB, larson 11.1
 * and 11.2, medians of 5), with twice the wake-ups. */
#define KP_FRONT_STEP 8
/* The front is at most the ramp (daemon_target), which starts at
 * KP_RAMP_START (twice KP_WAKE_FRONT) and doubles at a pass that finds the
 * front overrun: more taken than was pre-faulted, or the first free unit
 * not resident (front_reached); back to the start after decay_ms without
 * growth. TCP's slow start: the window grows while it is the limit. What
 * the rate asks for, filled whole or in steps, was the front from the
 * first pass of a burst, and a burst that stopped left up to 5/8 of it
 * resident and never used: sqlite3 under the preload ends on a 16 MB burst
 * in 40 ms with an 8 MiB front, 5 MiB of it ahead when it stopped (44.3
 * MiB peak, 37.9 with prefault:off); larson's first 5 MB in 5 ms, 1.7-3
 * MiB ahead (9.9 against 8.8). A program that grows on (the paced run of
 * test_pool_behaviour) overruns each front it is given and reaches the
 * rate's within 5 doublings; one whose burst ends stops the ramp where it
 * was (test_burst_ramp). */
#define KP_RAMP_START ((size_t)256 << 10)
#define KP_RAMP_MAX ((size_t)1 << 40)
/* At most one doubling per quarter horizon (5 ms): the front a doubling
 * asks for takes the daemon a wake-up and a pass to fill, and the passes
 * that come meanwhile still find the old one overrun (larson's 4 threads
 * woke the daemon every 1-2 ms in their 5 ms burst: 4 doublings, 2 MiB
 * ahead when it stopped, against 1 at most now). A quarter: a paced grower
 * wakes it about once per 1 MiB written, 5-6 ms apart (test_pool_behaviour:
 * at half a horizon its start went from 1,000-1,380 faults to 1,150-1,650,
 * its bound 1,536). */
#define KP_RAMP_NS ((uint64_t)KP_HORIZON_MS * 1000000ull / 4)
/* ... and only while the ramp covers less than two horizons of the demand
 * the pass measured (over KP_RAMP_DT_NS at least): a pass that finds the
 * growth slowing at the end of a burst does not double it (sqlite3's last
 * pass: 300 KB in 8 ms after 400 MB/s, the front 2 -> 4 MiB with 40.8
 * MiB peak, 39.9 without). */
#define KP_RAMP_COVER_MS (2 * KP_HORIZON_MS)
#define KP_RAMP_DT_NS 2000000ull
/* Ranges pre-faulted per pass: a walk of the free units collects at most
 * this many runs under the pool lock (the rest waits for the next pass). */
#define KP_PREFAULT_RUNS 64

/* high_wm:auto's most: 16 units, a burst of a few spans served without a
 * fault (the fixed floor before). A quarter of the bytes in use below it:
 * a small program's pre-faulted excess stays under a quarter of what it
 * holds (the 1.1x of issue 14), and a program's first blocks fault in on
 * its own thread, as on any allocator. */
#define KP_FLOOR_AUTO ((size_t)1 << 20)
#define KP_FLOOR_SHARE 4

/* The watermarks of the inline primary's headroom: the pool's, but in a
 * layout:outline pool, where the primary serves only blocks over 64 KiB and
 * critical requests, auto and 0: there high_wm is the outline segments'
 * floor (kp__daemon_grow_target), and 128 MiB of the primary pre-faulted
 * beside them (kpbench d's conf) was memory no request of the pool took. */
static size_t high_wm(const kp_pool *pool)
{
	return pool->ol ? KP_WM_AUTO : pool->conf.high_wm;
}
static size_t low_wm(const kp_pool *pool)
{
	return pool->ol ? 0 : pool->conf.low_wm;
}

size_t kp__daemon_floor(kp_pool *pool)
{
	if (high_wm(pool) != KP_WM_AUTO)
		return high_wm(pool);
	/* whole units, rounded down: below 4 units in use, none (a program's
	 * first spans fault in on its own thread, as on any allocator) */
	size_t f = atomic_load_explicit(&pool->out_bytes, memory_order_relaxed) / KP_FLOOR_SHARE;
	f &= ~(size_t)(KP_UNIT_SIZE - 1);
	f = f < KP_FLOOR_AUTO ? f : KP_FLOOR_AUTO;
	/* never under low_wm, as an explicit high_wm is not (conf.c): a
	 * target under the mark the allocation path wakes the daemon at had
	 * every span carved wake it (test_memory: 391 wakeups against 5) */
	return f > low_wm(pool) ? f : low_wm(pool);
}

static size_t seg_usable(void)
{
	return (size_t)(KP_SEG_UNITS)*KP_UNIT_SIZE;
}

/* ---- whether to pre-fault at all -------------------------------------------
 *
 * A page the daemon pre-faults is resident whether or not the program ever
 * touches it. A program that writes every page it allocates (a buffer it
 * fills) would fault each one itself: pre-faulting moves those faults off
 * its thread at no cost in memory. A program that writes a little of each
 * block (a hash table's sparse buckets, the ends of big buffers: kpbench's b
 * writes the first and last byte of blocks up to 64 KiB) gains little, and
 * every page it never writes is resident memory no peer holds (b: 107-121
 * MiB against mimalloc's 48, and 58 without pre-faulting).
 *
 * So the daemon samples what the program writes (prefault_touch:N, 90 by
 * default): each pass picks KP_PROBE_PICKS random pages of the carved spans
 * (probe_pick). A page holding a block's header, its last requested byte or
 * its canary is written whatever the program does: it counts as written. A
 * page inside a live block's payload, past its header and before its last
 * byte, is read (page_written): all zero, the program never wrote it. The
 * written share, a moving average over about KP_PROBE_WEIGHT pages, is
 * daemon.touched_pct; pre-faulting past what an explicit high_wm asks for
 * stops under N% and resumes at N% + KP_PROBE_HYST, each by more than the
 * sample's error (KP_PROBE_Z). A page read that was
 * never written maps the kernel's zero page: no memory, no RSS. Before
 * this, the share was measured from the process's page faults, which a
 * program served by pre-faulted memory does not take (a paced program that
 * wrote every page was measured at 13%), so it could not be the default. */

/* Pages sampled per pass: a few microseconds of reads (most stop at the
 * first word of a written page), under the pool lock only to find them. */
#define KP_PROBE_PICKS 32
/* The moving average's weight: a share over about the last 128 pages
 * sampled, four passes or so (64 before KP_PROBE_Z: its noise alone, 3.4
 * points at 92%, was wider than the band below). */
#define KP_PROBE_WEIGHT 128
/* No decision before this many pages (a pass or two). */
#define KP_PROBE_MIN 32
/* Pre-faulting resumes at N% + this: a program near N% does not flap. */
#define KP_PROBE_HYST 5
/* ... and a decision needs the share past its threshold by this many
 * standard errors of the sample (p(1-p)/n, n the pages it averages, at
 * most KP_PROBE_WEIGHT). Without it the sampling noise alone had a program
 * that changed nothing turn pre-faulting on and off every ~14 passes
 * (test_probe: 73 events in 1,000 passes, each "on" pre-faulting the whole
 * target again, and the event ring losing what matters). With 2, off and
 * on are 5 points plus four standard errors apart (about 15 points at
 * 92%): at most one change in 1,000 passes of a program sitting anywhere
 * near the band, while a program far from it (a sparse one: 9%, a dense
 * one: 100%) is decided from its first pass or two as before. The cost: a
 * program that writes 95-98% of its pages keeps the state it has. */
#define KP_PROBE_Z 2.0

static bool measuring(const kp_pool *pool)
{
	return pool->conf.prefault && pool->conf.prefault_touch != 0;
}

/* The daemon pre-faults ahead of demand (past a floor set with high_wm) only
 * once the pool has handed out this much: below it a program's pages fault
 * in on its own thread, as on any allocator. A program that small gains
 * nothing from pre-faulting: test_pool_behaviour's paced start faults 490-500
 * of the 512 pages of its first 2 MiB on its own thread either way (the
 * daemon is still learning its rate), and past 1 MiB the paced guarantees
 * are unchanged. What it cost a small program: the free units pre-faulted
 * ahead (64-192 KiB: a quarter to a half of what it holds, rounded up to
 * whole units) and the rest of every pre-faulted unit a small span then
 * took, resident whether or not its blocks ever reach it (kpbench a,
 * 1,000 blocks of 16-256 B: 256 KiB of its 700 KiB over glibc). */
#define KP_PREFAULT_MIN ((size_t)1 << 20)

/* Below KP_PREFAULT_MIN handed out, a running daemon pre-faults nothing
 * (prefaulting), and with that much still free in the segments it has
 * nothing to grow either: a program that stays there (a small tool, a
 * benchmark of 1,000 live objects making millions of calls) would get from
 * the thread only what it costs, its stack, a segment mapped ahead of a
 * need that never comes and the libc code that starts it (96-128 KiB of
 * bench-small-objects' and bench-false-sharing's peak RSS, a twelfth of
 * glibc's; tests/test_preload.py's busy program). The peak, not the bytes
 * out now: a program that went past it once keeps the thread's decay. */
bool kp__daemon_wanted(kp_pool *pool)
{
	/* The inline primary's headroom counts on layout:outline only once it
	 * has served a block (seg_out_bytes: the preload maps its first segment
	 * on the first block over 64 KiB, primary_initial:0): before, no
	 * segment is no shortage, and a small program got the daemon's thread
	 * (its stack, the cold text of its passes) for nothing. */
	bool primary = !pool->ol || atomic_load_explicit(&pool->peak_seg_out_bytes, memory_order_relaxed);
	return atomic_load_explicit(&pool->peak_out_bytes, memory_order_relaxed) >= KP_PREFAULT_MIN ||
	       (primary && kp__primary_headroom(pool) < KP_PREFAULT_MIN) || (pool->ol && kp__ol_wanted(pool));
}

static bool prefaulting(kp_pool *pool)
{
	return pool->conf.prefault && atomic_load_explicit(&pool->out_bytes, memory_order_relaxed) >= KP_PREFAULT_MIN &&
	       (pool->conf.prefault_touch == 0 ||
		atomic_load_explicit(&pool->daemon.prefaulting, memory_order_relaxed));
}

static uint64_t probe_rand(kp__daemon *d)
{
	uint64_t x = d->probe_rng ? d->probe_rng : 0x9e3779b97f4a7c15ull;
	x ^= x << 13, x ^= x >> 7, x ^= x << 17;
	return d->probe_rng = x;
}

/* One random page of unit u of s: NULL when it is no page of a live
 * block's payload (a free unit, past a span's carved blocks, a free block);
 * else the page, and *edge when the allocator or the program writes it
 * whatever the program does (a header, the last requested byte, a
 * canary, the next block's header). Pool lock held: the span fields are the
 * pool's (bump is the class lock's: a stale one moves the sample by a
 * block). The block's meta word is read without a lock: a block allocated
 * or freed meanwhile is sampled as it was (no_sanitize: the program's
 * header writes race with this read, harmlessly). */
__attribute__((no_sanitize("thread"))) static KP_NOASAN char *probe_page(kp__seg *s, unsigned u, uint64_t r, bool *edge)
{
	if ((s->free_mask >> u) & 1)
		return NULL;
	/* The span table is not sealed (a stray write can reach it): every
	 * address read below is kept inside the run the slot describes, within
	 * this segment, whatever the slot says (a rewritten start sent these
	 * reads anywhere: test_probe's damaged span table). Every span, small
	 * or large, starts at its run's first unit. */
	unsigned hd = s->span[u].head;
	if (hd == 0 || hd > u)
		return NULL;
	const kp__span *sp = &s->span[hd];
	if (u >= hd + (unsigned)sp->units || hd + (unsigned)sp->units > KP_SEG_END ||
	    sp->start != (char *)s + ((size_t)hd << KP_UNIT_SHIFT))
		return NULL;
	char *page = (char *)s + ((size_t)u << KP_UNIT_SHIFT) + (size_t)(r % (KP_UNIT_SIZE / KP_PAGE)) * KP_PAGE;
	char *b;
	size_t block;
	if (sp->kind == KP_SPAN_SMALL && sp->block && page >= sp->start) {
		size_t idx = (size_t)(page - sp->start) / sp->block;
		if (idx >= sp->bump)
			return NULL;
		b = sp->start + idx * sp->block;
		block = sp->block;
	} else if (sp->kind == KP_SPAN_LARGE && page >= sp->start) {
		b = sp->start;
		block = sp->block;
	} else {
		return NULL;
	}
	uint64_t meta = ((const volatile kp__hdr *)b)->meta;
	if (KP_META_ST(meta) != KP_ST_ALLOC)
		return NULL;
	size_t req = KP_META_REQ(meta);
	/* written whatever the program does: [b, lo) the header, [last, hi) the
	 * last requested byte and the canary, past b + block the next block */
	char *lo = b + KP_HDR, *last = lo + (req ? req - 1 : 0), *hi = lo + req + KP_CANARY;
	/* Past hi: the class's rounding, which no program writes (up to a
	 * quarter of a block): not a sample. The question is whether the
	 * program writes what it asked for (a dense program measured 88-95%
	 * with it, and pre-faulting flapped at 90). */
	if (page >= hi)
		return NULL;
	*edge = page < lo || (last < page + KP_PAGE && hi > page) || page + KP_PAGE > b + block;
	return page;
}

/* Is any byte of the page not zero? Reads the program's memory from the
 * daemon thread: racing writes make it see a page as it was, harmlessly. */
__attribute__((no_sanitize("thread"))) static KP_NOASAN bool page_written(const char *page)
{
	const volatile uint64_t *w = (const volatile uint64_t *)page;
	for (size_t i = 0; i < KP_PAGE / sizeof *w; i++)
		if (w[i])
			return true;
	return false;
}

/* Fold n sampled pages, written of them written, into a written share
 * (65536: all): the plain mean of the first KP_PROBE_WEIGHT pages, then a
 * moving one. */
static void touch_fold(int64_t *share, uint64_t *samples, unsigned written, unsigned n)
{
	for (unsigned k = 0; k < n; k++) {
		int64_t x = k < written ? 65536 : 0;
		uint64_t w = *samples < KP_PROBE_WEIGHT ? *samples + 1 : KP_PROBE_WEIGHT;
		*share += (x - *share) / (int64_t)w;
		(*samples)++;
	}
}

/* Sample the carved pages and fold them into the written share. */
static void probe(kp_pool *pool)
{
	kp__daemon *d = &pool->daemon;
	char *read[KP_PROBE_PICKS];
	unsigned nread = 0, edges = 0;
	kp__pool_lock(pool);
	unsigned nseg = 0;
	for (kp__seg *s = pool->segs; s; s = s->next)
		nseg++;
	/* every stride-th segment from a random one, picks spread over them */
	unsigned stride = nseg / KP_PROBE_PICKS + 1, per = nseg ? (KP_PROBE_PICKS + nseg - 1) / nseg : 0;
	unsigned at = nseg ? (unsigned)(probe_rand(d) % stride) : 0, i = 0, picks = 0;
	for (kp__seg *s = pool->segs; s && picks < KP_PROBE_PICKS; s = s->next, i++) {
		if (i % stride != at || s->quarantined)
			continue;
		for (unsigned k = 0; k < per && picks < KP_PROBE_PICKS; k++, picks++) {
			uint64_t r = probe_rand(d);
			bool edge = false;
			char *page = probe_page(s, 1 + (unsigned)(r % (KP_SEG_UNITS)), r >> 8, &edge);
			if (page && edge)
				edges++;
			else if (page)
				read[nread++] = page;
		}
	}
	pthread_mutex_unlock(&pool->lock);
	/* Only the daemon unmaps normal segments: what was found stays mapped. */
	unsigned written = edges;
	for (unsigned k = 0; k < nread; k++)
		written += page_written(read[k]);
	touch_fold(&d->touch_share, &d->touch_samples, written, edges + nread);
}

/* Whether pre-faulting turns (+1 on, -1 off, 0 as it is) for a written share
 * (65536: all) over samples pages: off under prefault_touch, on at it plus
 * KP_PROBE_HYST, each past the sample's error (KP_PROBE_Z); no decision
 * before KP_PROBE_MIN pages. */
static int touch_turn(const kp_pool *pool, int64_t share, uint64_t samples, bool on)
{
	if (samples < KP_PROBE_MIN)
		return 0;
	unsigned want = pool->conf.prefault_touch, resume = want + KP_PROBE_HYST > 100 ? 100 : want + KP_PROBE_HYST;
	/* how far the share is from a threshold, against its sampling error
	 * (squared, in percentage points) */
	double p = (double)share / 65536.0;
	double n = (double)(samples < KP_PROBE_WEIGHT ? samples : KP_PROBE_WEIGHT);
	double err2 = KP_PROBE_Z * KP_PROBE_Z * p * (1.0 - p) / n * 10000.0;
	double below = (double)want - 100.0 * p, above = 100.0 * p - (double)resume;
	if (on && below > 0 && below * below > err2)
		return -1;
	if (!on && above >= 0 && above * above >= err2)
		return 1;
	return 0;
}

static void prefault_decide(kp_pool *pool)
{
	kp__daemon *d = &pool->daemon;
	if (!measuring(pool))
		return;
	probe(pool);
	if (d->touch_samples < KP_PROBE_MIN)
		return;
	unsigned pct = (unsigned)(d->touch_share * 100 / 65536);
	atomic_store(&d->touch_pct, pct);
	int turn = touch_turn(pool, d->touch_share, d->touch_samples, atomic_load(&d->prefaulting));
	if (turn < 0) {
		atomic_store(&d->prefaulting, 0);
		kp__event(pool, KP_EV_DAEMON, KP_POOL_PRIMARY, NULL, 0,
			  "pre-faulting off: the program writes %u%% of the pages it takes (prefault_touch %u)", pct,
			  pool->conf.prefault_touch);
	} else if (turn > 0) {
		atomic_store(&d->prefaulting, 1);
		kp__event(pool, KP_EV_DAEMON, KP_POOL_PRIMARY, NULL, 0,
			  "pre-faulting on: the program writes %u%% of the pages it takes", pct);
	}
}

/* internal.h. The same rules as prefault_decide, on the layout's samples;
 * off until they show a program that writes what it takes (the inline
 * daemon starts on: its probe decides within a pass or two, long before a
 * layout:outline pool holds what its daemon pre-faults for, OL_PREFAULT_MIN,
 * and a pool that started on pre-faulted kpbench b's first segments). */
bool kp__daemon_grow_touch(kp_pool *pool, kp__grow *g, unsigned written, unsigned sampled)
{
	if (!measuring(pool))
		return true;
	touch_fold(&g->touch_share, &g->touch_samples, written, sampled);
	if (g->touch_samples < KP_PROBE_MIN)
		return g->prefaulting;
	g->touch_pct = (unsigned)(g->touch_share * 100 / 65536);
	int turn = touch_turn(pool, g->touch_share, g->touch_samples, g->prefaulting);
	if (turn)
		kp__event(pool, KP_EV_DAEMON, KP_POOL_PRIMARY, NULL, 0,
			  "outline pre-faulting %s: the program writes %u%% of the pages it takes (prefault_touch %u)",
			  turn > 0 ? "on" : "off", g->touch_pct, pool->conf.prefault_touch);
	g->prefaulting = turn ? turn > 0 : g->prefaulting;
	return g->prefaulting;
}

/* The shortest free run the allocation path takes: the shortest run
 * units_take took since the last pass or within decay_ms before it (1
 * before any take). A shorter run is passed over (a hole
 * a segment's last span left): the front started at the pool's first free unit, and a program taking
 * 64 KiB - 64 B blocks in 8-unit spans left a 7-unit hole in its first
 * segment that the front covered pass after pass, resident and never
 * taken, and that front_reached read as the front's end: 7/8 of the pages
 * its thread took were not resident when taken (test_front_place). A
 * program that also takes short runs fills such holes, and they are
 * pre-faulted for it. Caller holds pool->lock. */
static unsigned take_len(const kp_pool *pool)
{
	unsigned a = atomic_load_explicit(&pool->take_min, memory_order_relaxed);
	unsigned b = atomic_load_explicit(&pool->take_min_prev, memory_order_relaxed);
	unsigned n = !a ? b : !b ? a : a < b ? a : b;
	return n ? n : 1;
}

/* The free bytes in runs shorter than take_len: headroom the allocation
 * path passes over, which the daemon does not count as room ahead of it
 * (the holes of test_front_place's segments, 448 KiB in each 4 MiB, were
 * 8 MiB of a 12 MiB headroom at 70 MiB: the pass grew nothing while the
 * allocating thread took unfaulted units past a 4 MiB front). */
static size_t short_runs(kp_pool *pool)
{
	size_t bytes = 0;
	kp__pool_lock(pool);
	unsigned len = take_len(pool);
	for (kp__seg *s = pool->segs; s && len > 1; s = s->next) {
		uint64_t m = s->free_mask;
		while (m) {
			unsigned u = (unsigned)__builtin_ctzll(m), n = 0;
			while (u + n < KP_UNITS && (m >> (u + n)) & 1)
				n++;
			m &= n == 64 ? 0 : ~(((1ull << n) - 1) << u);
			if (n < len)
				bytes += (size_t)n * KP_UNIT_SIZE;
		}
	}
	pthread_mutex_unlock(&pool->lock);
	return bytes;
}

/* A range found under the pool lock, faulted in after it is let go. */
struct prefault_run {
	char *p;
	size_t n;
};

/* Pre-fault up to upto bytes of free units in the order the allocation path
 * takes them (oldest segment first, lowest unit first: units_take; runs
 * shorter than take_len passed over), skipping the first from bytes
 * (already pre-faulted). The runs are found under the pool lock and
 * faulted in without it (the allocation path never waits on a system
 * call): a unit taken meanwhile is faulted in all the same, which
 * MADV_POPULATE_WRITE does without touching its bytes. Only the daemon (or
 * kp_create) unmaps normal segments, so a run found stays mapped. Returns
 * the bytes covered, from included. */
static size_t prefault_front(kp_pool *pool, size_t from, size_t upto)
{
	struct prefault_run run[KP_PREFAULT_RUNS];
	unsigned nrun = 0;
	size_t seen = 0;
	kp__pool_lock(pool);
	unsigned len = take_len(pool);
	for (kp__seg *s = pool->segs; s && seen < upto && nrun < KP_PREFAULT_RUNS; s = s->next) {
		uint64_t m = s->free_mask;
		while (m && seen < upto && nrun < KP_PREFAULT_RUNS) {
			unsigned u = (unsigned)__builtin_ctzll(m), n = 0;
			while (u + n < KP_UNITS && (m >> (u + n)) & 1)
				n++;
			m &= n == 64 ? 0 : ~(((1ull << n) - 1) << u);
			if (n < len)
				continue;
			size_t bytes = (size_t)n * KP_UNIT_SIZE;
			char *p = (char *)s + ((size_t)u << KP_UNIT_SHIFT);
			if (seen + bytes > from) { /* the part past from, up to upto */
				size_t skip = from > seen ? from - seen : 0;
				size_t take = bytes - skip;
				if (seen + bytes > upto)
					take -= seen + bytes - upto;
				run[nrun].p = p + skip;
				run[nrun++].n = take;
			}
			seen += bytes;
		}
	}
	pthread_mutex_unlock(&pool->lock);
	for (unsigned i = 0; i < nrun; i++)
		kp__os_populate_missing(&pool->os, run[i].p, run[i].n);
	return seen < upto ? seen : upto;
}

/* Pre-fault what is not resident of the runs new small spans took since the
 * last pass (primary.c, units_take records them while the program writes
 * what it takes), once. The front covers free units only: a span of up to
 * 16 units (1 MiB) taken at the end of the pre-faulted front reaches past
 * it, and the blocks carved from its tail over the next bursts were faulted
 * by the allocating thread (test_burst_front: 4-64 KiB blocks in 1 MiB
 * bursts, 998 faults on 30,350 pages, 797 pages not resident when their
 * block was handed out, all in the tails of such spans). Those units were
 * taken by a program that writes what it takes: their pages are written
 * by it anyway, so this adds to the RSS only what it would have faulted in
 * a burst or two later. A run still taken stays mapped (only the daemon
 * unmaps, and only empty segments). Returns the bytes looked at. */
static size_t prefault_taken(kp_pool *pool)
{
	struct prefault_run run[KP_TAKEN_RUNS];
	unsigned nrun = 0;
	size_t bytes = 0;
	kp__pool_lock(pool);
	unsigned nt = atomic_load_explicit(&pool->ntaken, memory_order_relaxed);
	for (unsigned i = 0; i < nt; i++) {
		kp__seg *s = pool->taken[i].s;
		unsigned u = pool->taken[i].u, n = pool->taken[i].n;
		uint64_t bits = (n >= 64 ? ~0ull : ((1ull << n) - 1)) << u;
		/* given back since (or the segment quarantined): left alone */
		if (s->quarantined || (s->free_mask & bits))
			continue;
		run[nrun].p = (char *)s + ((size_t)u << KP_UNIT_SHIFT);
		run[nrun++].n = (size_t)n << KP_UNIT_SHIFT;
		bytes += (size_t)n << KP_UNIT_SHIFT;
	}
	atomic_store_explicit(&pool->ntaken, 0, memory_order_relaxed);
	pthread_mutex_unlock(&pool->lock);
	for (unsigned i = 0; i < nrun; i++)
		kp__os_populate_missing(&pool->os, run[i].p, run[i].n);
	return bytes;
}

/* The pre-faulted bytes at which the allocation path wakes the daemon. */
static size_t wake_mark(kp_pool *pool, size_t target)
{
	return low_wm(pool) ? low_wm(pool) : target / 2;
}

/* How far a pass pre-faults a front (KP_FRONT_STEP): the wake mark and a
 * step past it, in whole units; the whole front when that is no less, or
 * when the program set the marks (high_wm, low_wm: pre-faulted whole, as
 * asked) or the front is a trickle the timer refills (under KP_WAKE_FRONT:
 * no wake-up set for it). */
static size_t fill_to(kp_pool *pool, size_t front)
{
	if (high_wm(pool) != KP_WM_AUTO || low_wm(pool) || front < KP_WAKE_FRONT)
		return front;
	size_t step = front / KP_FRONT_STEP;
	size_t fill = (wake_mark(pool, front) + step + KP_UNIT_SIZE - 1) & ~(size_t)(KP_UNIT_SIZE - 1);
	return fill < front ? fill : front;
}

/* Where the allocation path wakes the daemon: when the pre-faulted part of
 * the free units falls under low_wm (0: half the target). The free units
 * past the pre-faulted front are counted in, since the allocation path
 * compares all of them. */
static void set_wake(kp_pool *pool, size_t target, size_t ready, bool pre)
{
	size_t wake = wake_mark(pool, target);
	/* No lock: the free bytes as last published (a take or give racing
	 * this moves the mark by one run, as if it had come just after). */
	size_t free_bytes = kp__primary_headroom(pool);
	/* pre false: the pass pre-faults nothing (a sparse program, prefault
	 * off): the daemon is needed only to grow, and the free units are all
	 * headroom (counting them as unready woke it at every allocation: 557
	 * passes in kpbench b's 0.2 s) */
	size_t unready = pre && free_bytes > ready ? free_bytes - ready : 0;
	/* A pool that has never handed out KP_PREFAULT_MIN wakes the daemon
	 * when it first does: from there the daemon pre-faults (prefaulting),
	 * and a mark left at half a small target let a program growing past it
	 * fault a whole segment on its own thread first (test_prefault_gate).
	 * Once only (the peak): a program whose use hovers about 1 MiB would
	 * otherwise wake the daemon at each crossing, a system call on its
	 * allocation path in steady state. */
	size_t out = atomic_load_explicit(&pool->out_bytes, memory_order_relaxed);
	size_t peak = atomic_load_explicit(&pool->peak_out_bytes, memory_order_relaxed);
	if (pool->conf.prefault && peak < KP_PREFAULT_MIN && out < KP_PREFAULT_MIN &&
	    free_bytes > KP_PREFAULT_MIN - out && free_bytes - (KP_PREFAULT_MIN - out) > unready + wake)
		unready = free_bytes - (KP_PREFAULT_MIN - out) - wake;
	atomic_store_explicit(&pool->wake_wm, unready + wake, memory_order_relaxed);
}

/* How the daemon waits for the pool lock without ever being its waiter:
 * the allocation path holds it for a few microseconds at a time (a run of
 * units), so the daemon first spins, trying it every KP_POLITE_SPIN pause
 * instructions, for about KP_POLITE_TRIES tries (tens of microseconds); then
 * yields the CPU between tries (on a loaded machine a yield can cost a
 * timeslice, and a daemon that yields at once fell behind a paced program:
 * test_pool_behaviour's paced run went from ~300 to 662 faults, over its 1%
 * bound); and after KP_POLITE_YIELDS yields (a lock held without a break, a
 * thread storm) waits for it like anyone else. */
#define KP_POLITE_SPIN 32
#define KP_POLITE_TRIES 256
#define KP_POLITE_YIELDS 64

static inline void cpu_pause(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_ia32_pause();
#else
	__asm__ __volatile__("" ::: "memory");
#endif
}

/* The allocation path's side: every holder of pool->lock keeps it for a
 * walk or a few list edits and never across a system call (the idle
 * daemon's walks: 4-16 us here), but glibc's adaptive mutex, rarely
 * contended, spins about ten times (its moving average starts at 0) and then
 * sleeps in a futex call: the strace proof in tests/test_c_suite.py read such
 * waits in 3 of 8 runs on a loaded machine (test_pool_lock_wait: 77-181
 * sleeps beside 600 holds of 20 us). So the allocation path tries the lock
 * on the CPU for up to KP_ALLOC_SPIN_NS before it waits like anyone else: a
 * holder that is not preempted is done by then, and one that is would keep
 * a sleeper waiting as long. */
#define KP_ALLOC_SPIN_NS 200000ull /* 10x the longest idle-daemon hold seen */
#define KP_ALLOC_SPIN_CHECK 64	   /* tries between two reads of the clock */
/* Another allocating thread may hold the lock preempted, with more threads
 * than cores: only a lock the daemon holds is spun on this long (glibc
 * keeps the owner's thread id in the mutex, which the daemon notes as it
 * takes it); anyone else's goes to glibc's own spin, then sleep. */
static int lock_owner(pthread_mutex_t *m)
{
#if defined(__GLIBC__)
	return __atomic_load_n(&m->__data.__owner, __ATOMIC_RELAXED);
#else
	(void)m;
	return -1;
#endif
}

static void alloc_path_lock(kp_pool *pool)
{
	if (pthread_mutex_trylock(&pool->lock) == 0)
		return;
	uint64_t until = kp__now_ns() + KP_ALLOC_SPIN_NS;
	for (;;) {
		for (unsigned i = 0; i < KP_ALLOC_SPIN_CHECK; i++) {
			cpu_pause();
			if (pthread_mutex_trylock(&pool->lock) == 0)
				return;
		}
		int owner = lock_owner(&pool->lock);
		if (owner != 0 && owner != atomic_load_explicit(&pool->daemon.lock_tid, memory_order_relaxed))
			break;
		if (kp__now_ns() > until)
			break;
	}
	pthread_mutex_lock(&pool->lock);
}

/* The daemon took pool->lock: note its owner id, for alloc_path_lock. */
static void daemon_locked(kp_pool *pool)
{
	int tid = lock_owner(&pool->lock);
	if (tid > 0)
		atomic_store_explicit(&pool->daemon.lock_tid, tid, memory_order_relaxed);
}

/* pthread_mutex_lock on a held lock marks it contended, and its owner's
 * unlock must then make a futex call to wake the waiter: an idle daemon's
 * timer pass that found the allocating thread inside the lock cost that
 * thread a system call in steady state (3 strace runs in 40 on a loaded
 * machine). The daemon uses trylock, which never marks the lock; the
 * allocation path spins before it waits (alloc_path_lock). */
void kp__pool_lock(kp_pool *pool)
{
	if (kp__os_caller == KP_CALLER_ALLOC) {
		alloc_path_lock(pool);
		return;
	}
	if (kp__os_caller == KP_CALLER_DAEMON) {
		for (unsigned i = 0; i < KP_POLITE_TRIES; i++) {
			if (pthread_mutex_trylock(&pool->lock) == 0)
				goto taken;
			for (unsigned j = 0; j < KP_POLITE_SPIN; j++)
				cpu_pause();
		}
		for (unsigned i = 0; i < KP_POLITE_YIELDS; i++) {
			if (pthread_mutex_trylock(&pool->lock) == 0)
				goto taken;
			kp__os_yield(&pool->os);
		}
		pthread_mutex_lock(&pool->lock);
	taken:
		daemon_locked(pool);
		return;
	}
	pthread_mutex_lock(&pool->lock);
}

void kp__daemon_prime(kp_pool *pool)
{
	kp__daemon *d = &pool->daemon;
	size_t target = kp__daemon_floor(pool);
	/* A floor set past primary_initial (high_wm, low_wm) is mapped here, as
	 * address space, so that the allocation path never maps while the
	 * daemon's first pass is pending: under load (two busy loops on two
	 * cores) the new thread's first pass can come after the program has
	 * taken primary_initial and waited grow_wait_us, and it then mapped
	 * segments itself (workloads/paced-growth.yaml: primary_initial 1m,
	 * high_wm 96m, 2 mmap calls on the allocation path in 1 run of 10 here,
	 * and once in CI). The daemon pre-faults them from its first pass on. */
	while (pool->conf.daemon && kp__primary_headroom(pool) < target)
		if (kp__primary_grow(pool, false) < 0)
			break;
	size_t ready = pool->conf.prefault && target ? prefault_front(pool, 0, target) : 0;
	/* pre-faulting until the probe has seen what the program writes */
	atomic_store(&d->prefaulting, 1);
	atomic_store(&d->target, target);
	atomic_store(&d->ready, ready);
	d->last_ns = kp__pool_now(pool);
	d->last_grows = atomic_load(&pool->grows);
	d->last_shrinks = atomic_load(&pool->shrinks);
	d->last_headroom = kp__primary_headroom(pool);
	d->last_peak = atomic_load(&pool->peak_seg_out_bytes);
	d->last_purged_taken = atomic_load(&pool->purged_taken);
	d->slow_ns = d->last_ns;
	d->front = target;
	d->ramp = KP_RAMP_START;
	set_wake(pool, target, ready, pool->conf.prefault);
}

/* Has the allocation path reached the end of the pre-faulted front: is the
 * first free unit it takes (the first of a run no shorter than take_len,
 * in its order) not resident? */
static bool front_reached(kp_pool *pool)
{
	char *p = NULL;
	kp__pool_lock(pool);
	unsigned len = take_len(pool);
	for (kp__seg *s = pool->segs; s && !p; s = s->next) {
		uint64_t m = s->free_mask, r = m;
		for (unsigned i = 1; i < len && r; i++)
			r &= m >> i;
		if (r)
			p = (char *)s + ((size_t)__builtin_ctzll(r) << KP_UNIT_SHIFT);
	}
	pthread_mutex_unlock(&pool->lock);
	/* only the daemon unmaps normal segments: what was found stays mapped */
	return p && !kp__os_page_resident(&pool->os, p);
}

/* The measured rate after dt ns of quiet: half per decay_ms / 4 (a shift
 * per quarter, linear within one). */
static uint64_t rate_decay(uint64_t rate, uint64_t dt, uint64_t decay)
{
	uint64_t q = decay / 4 ? decay / 4 : 1, halvings = dt / q;
	rate = halvings >= 64 ? 0 : rate >> halvings;
	return rate - (uint64_t)((double)rate * (double)(dt % q) / (double)q / 2.0);
}

/* The rate of demand bytes taken over dt ns: over a short interval
 * (kp_daemon_step(0), or a pass woken at once) it would be noise, and a
 * program's first few hundred KB would look like a flood: at least 10 ms. */
static uint64_t rate_of(size_t demand, uint64_t dt)
{
	return demand ? (uint64_t)((double)demand * 1e9 / (double)(dt > 10000000 ? dt : 10000000)) : 0;
}

/* The headroom the rate asks for, within the share of the bytes held (the
 * formula above, without the floor; not rounded), a small program's at most
 * small_max (KP_TARGET_SMALL, KP_GROW_SMALL). */
static size_t rate_headroom(uint64_t rate, unsigned boost, size_t held, bool busy, unsigned share, size_t small_max)
{
	double want = (double)rate * KP_HORIZON_MS / 1000.0 * (double)(1u << boost);
	double out = (double)held;
	double cap = out / share;
	double small = out / (busy ? KP_GROW_SHARE : KP_FLOOR_SHARE);
	if (small > (double)small_max)
		small = (double)small_max;
	if (cap < small)
		cap = small;
	return want < cap ? (size_t)want : (size_t)cap;
}

/* Measure the demand since the last pass and set the target (above). */
static size_t daemon_target(kp_pool *pool)
{
	kp__daemon *d = &pool->daemon;
	uint64_t now = kp__pool_now(pool);
	uint64_t grows = atomic_load(&pool->grows), shrinks = atomic_load(&pool->shrinks);
	size_t headroom = kp__primary_headroom(pool);
	/* net bytes taken from the free units: what there was, plus what was
	 * added (by anyone), less what is left */
	int64_t added =
		((int64_t)(grows - d->last_grows) - (int64_t)(shrinks - d->last_shrinks)) * (int64_t)seg_usable();
	int64_t taken = (int64_t)d->last_headroom + added - (int64_t)headroom;
	uint64_t dt = now > d->last_ns ? now - d->last_ns : 0;
	size_t ready = atomic_load(&d->ready);
	/* Demand is growth past the peak use: what was taken, as far as the
	 * bytes in use went past their highest (a program that gives memory
	 * back and takes it again finds it resident; larson's swings below its
	 * peak read as 13-50 MB/s for seconds and kept 1-3 MiB pre-faulted
	 * beside it: test_churn_front). Huge blocks aside: one freed leaves
	 * no room in segments, and growth after it under the peak it set went
	 * unmeasured (test_demand_huge_freed). Under the peak, units whose
	 * pages the daemon gave back (kp__primary_purge) are not resident:
	 * taken again, they are demand as growth is (7-unit holes purged, then
	 * taken back at 45 MB/s: 4,101 of 5,376 pages faulted by the allocating
	 * thread, the front 0 as nothing grew; test_front_purged_attack2). */
	size_t peak = atomic_load(&pool->peak_seg_out_bytes);
	size_t grew = peak > d->last_peak ? peak - d->last_peak : 0;
	d->last_peak = peak;
	size_t refill = atomic_load_explicit(&pool->purged_taken, memory_order_relaxed);
	if (refill != d->last_purged_taken)
		d->refill_ns = now;
	grew += refill - d->last_purged_taken;
	d->last_purged_taken = refill;
	size_t demand = taken > 0 ? ((size_t)taken < grew ? (size_t)taken : grew) : 0;
	if (demand)
		d->grow_ns = now;
	prefault_decide(pool);
	d->busy_passes = demand ? d->busy_passes + (d->busy_passes < KP_BUSY_PASSES) : 0;
	if (demand && pool->conf.prefault && demand > ready) {
		/* the allocation path went past what was pre-faulted for it:
		 * when that was meant (not pre-faulting past the floor), the
		 * target need not rise */
		atomic_fetch_add(&d->faulted, (uint64_t)(demand - ready));
		int boost = atomic_load(&pool->grow_boost);
		if (prefaulting(pool) && boost < KP_BOOST_MAX)
			atomic_compare_exchange_strong(&pool->grow_boost, &boost, boost + 1);
		atomic_store(&pool->boost_at_ns, now);
	}
	/* The front was overrun: the allocation path took more than was
	 * pre-faulted, or reached its end (the first free unit in its order
	 * is not resident: the estimate above misses pages the thread touched
	 * while the daemon was pre-faulting them). It may be twice as far
	 * ahead (KP_RAMP_START), at most once per KP_RAMP_NS, and only while
	 * it covers less than KP_RAMP_COVER_MS of the demand measured. */
	uint64_t span = dt > KP_RAMP_DT_NS ? dt : KP_RAMP_DT_NS;
	double covers = demand ? (double)d->ramp * (double)span / (double)demand : 0;
	if (demand && prefaulting(pool) && d->ramp < KP_RAMP_MAX && now - d->ramp_ns >= KP_RAMP_NS &&
	    covers < (double)KP_RAMP_COVER_MS * 1e6 && (demand > ready || front_reached(pool)))
		d->ramp *= 2, d->ramp_ns = now;
	/* what stays pre-faulted at the front: ready less what was taken */
	atomic_store(&d->ready, taken <= 0 ? ready : (size_t)taken >= ready ? 0 : ready - (size_t)taken);
	uint64_t decay = (uint64_t)pool->conf.decay_ms * 1000000ull;
	uint64_t rate = atomic_load(&d->rate);
	bool slowed = false;
	if (dt) {
		rate = rate_decay(rate, dt, decay);
		uint64_t inst = rate_of(demand, dt);
		/* growth that slowed down: measured over KP_SLOWED_MS or more, a
		 * rate under 1/KP_SLOWED of what the front was sized for
		 * replaces it (larson's swings past its peak, a few hundred KB
		 * per 100 ms timer pass after its burst, kept the burst's rate
		 * and refreshed its 3.6 MiB front for seconds). Measured over
		 * the passes since the rate last rose, not one pass: a front
		 * filled in steps wakes the daemon more often, and passes 26 and
		 * 79 ms apart never read larson's creep as slowed
		 * (test_creep_after_a_burst) */
		d->slow_demand += demand;
		uint64_t win = now > d->slow_ns ? now - d->slow_ns : 0;
		uint64_t avg = win ? (uint64_t)((double)d->slow_demand * 1e9 / (double)win) : 0;
		if (inst > rate)
			rate = inst, win = 0;
		else if (win >= (uint64_t)KP_SLOWED_MS * 1000000ull && avg * KP_SLOWED < rate)
			rate = avg, slowed = true;
		if (!win || win >= (uint64_t)KP_SLOWED_MS * 1000000ull)
			d->slow_ns = now, d->slow_demand = 0;
		atomic_store(&d->rate, rate);
	}
	d->last_ns = now;
	d->last_grows = grows;
	d->last_shrinks = shrinks;
	d->last_headroom = headroom;
	int boost = atomic_load(&pool->grow_boost);
	/* the faults that raised the boost were the burst's: a slowed growth
	 * starts from none (kept, larson's boost of 3, from its first 20 ms,
	 * multiplied the trickle after it by 8) */
	if (boost && slowed) {
		atomic_compare_exchange_strong(&pool->grow_boost, &boost, 0);
		atomic_store(&pool->boost_at_ns, now);
	} else if (boost && now - atomic_load(&pool->boost_at_ns) > decay) {
		atomic_compare_exchange_strong(&pool->grow_boost, &boost, boost - 1);
		atomic_store(&pool->boost_at_ns, now);
	}
	size_t headroom_want =
		rate_headroom(rate, (unsigned)atomic_load(&pool->grow_boost), atomic_load(&pool->out_bytes),
			      d->busy_passes >= KP_BUSY_PASSES, KP_TARGET_SHARE, KP_TARGET_SMALL);
	size_t target = (headroom_want + KP_UNIT_SIZE - 1) & ~(size_t)(KP_UNIT_SIZE - 1);
	size_t floor = kp__daemon_floor(pool);
	if (target < floor)
		target = floor;
	/* Mapped ahead (address space: no RSS but each segment header's pages):
	 * the target, and one segment more while the program grows, so that a
	 * daemon descheduled for longer than the headroom lasts leaves the
	 * allocation path faulting pages, never mapping segments (under two
	 * busy loops on two cores the daemon's passes came 30-44 ms apart while
	 * test_pool_behaviour's paced run took 130-260 MB/s, and it mapped on
	 * the allocation path in 5 runs of 12). */
	d->ahead = target + (rate ? seg_usable() : 0);
	/* Growth that stopped (nothing taken for KP_QUIET_HORIZONS horizons: a
	 * burst that ended, a program gone quiet) is pre-faulted only up to the
	 * floor: the rate it left would pre-fault headroom nobody takes (sqlite3
	 * under the preload ends on a burst, and the pass after it made 7 MiB
	 * resident: 48.5 -> 55.7 MiB, test_burst). What is mapped ahead stays
	 * (a program descheduled for that long, on a loaded machine, resumes at
	 * its rate), and so does the rate: growth that resumes wakes the daemon
	 * at the floor's low mark and gets its headroom back. */
	uint64_t take = atomic_load_explicit(&d->take_ns, memory_order_relaxed);
	uint64_t quiet = (uint64_t)KP_QUIET_HORIZONS * KP_HORIZON_MS * 1000000ull;
	bool stopped = (now > take && now - take > quiet) || (!demand && now - d->grow_ns > quiet);
	if (stopped) {
		target = floor;
		/* and the rate it left is forgotten: growth that resumes is
		 * measured afresh, from its first pass on. Kept, it had a new
		 * peak of a few KB, 200 ms after larson's burst, pre-fault the
		 * burst's 3.6 MiB again (the rate decays over seconds). */
		atomic_store(&d->rate, 0);
	}
	/* quiet for decay_ms: the ramp starts again (KP_RAMP_START) */
	if (!demand && now - d->grow_ns > decay)
		d->ramp = KP_RAMP_START;
	/* The front pre-faulted (kp__daemon_pass) is what the rate asks for,
	 * not high_wm:auto's floor: the floor stays mapped (the allocation
	 * path never maps) but faults in on first touch, as on any allocator,
	 * when the program is not growing (larson, prodcons: the floor was
	 * most of what they held resident past prefault:off). A floor the
	 * program set is pre-faulted whole, as before. */
	size_t grow = headroom_want;
	grow = stopped ? 0 : (grow + KP_UNIT_SIZE - 1) & ~(size_t)(KP_UNIT_SIZE - 1);
	/* The ramp bounds what a burst that stops leaves resident past the
	 * peak; while purged units are taken back under it (within a quiet
	 * span), the front may be twice the ramp, never past the peak (a
	 * program that took them held them resident then): refilling sqlite3's
	 * purged 8 MiB at 300 MB/s under the ramp alone, the daemon counted
	 * 1,088 KiB taken unfaulted (test_burst_ramp's bound is 1 MiB; 704 with
	 * this, as on main, where 8.7 MiB of the refill went uncounted and
	 * unfaulted; 1.1 MiB now). */
	size_t ramp = d->ramp;
	size_t seg_out = atomic_load(&pool->seg_out_bytes);
	if (!stopped && now - d->refill_ns <= quiet && peak > seg_out + ramp)
		ramp = peak - seg_out < 2 * ramp ? peak - seg_out : 2 * ramp;
	if (grow > ramp)
		grow = ramp;
	d->front = high_wm(pool) != KP_WM_AUTO || grow > target ? target : grow;
	atomic_store(&d->target, target);
	return target;
}

/* A layout's own headroom by daemon_target's rules (layout:outline's spare
 * segments, outline.c): the rate of the demand measured pass to pass (it
 * follows a rise at once and decays by half per decay_ms / 4), the boost
 * raised at a pass that finds the allocation path took memory the daemon had
 * not pre-faulted (or mapped it itself), one step down per decay_ms without,
 * and rate_headroom() of the bytes held; the floor (high_wm; 0 under auto) alone
 * once growth stopped (nothing taken for KP_QUIET_HORIZONS horizons), the
 * rate then forgotten. The probe of what the program writes is the
 * layout's own, folded in by kp__daemon_grow_touch. Not carried over: the
 * ramp, the slowed rate (a segment is 4 MiB: the demand comes in
 * whole segments, and the share of the bytes held bounds what a burst that
 * stops leaves pre-faulted). The target and rate are published in g's
 * shown_target and shown_rate for kp_stats. */
size_t kp__daemon_grow_target(kp_pool *pool, kp__grow *g, size_t demand, bool faulted, size_t held)
{
	uint64_t now = kp__pool_now(pool), decay = (uint64_t)pool->conf.decay_ms * 1000000ull;
	uint64_t dt = now > g->last_ns ? now - g->last_ns : 0;
	g->last_ns = now;
	if (demand)
		g->grow_ns = now;
	g->busy = demand ? g->busy + (g->busy < KP_BUSY_PASSES) : 0;
	if (dt) {
		g->rate = rate_decay(g->rate, dt, decay);
		uint64_t inst = rate_of(demand, dt);
		g->rate = inst > g->rate ? inst : g->rate;
	}
	if (faulted && pool->conf.prefault && g->boost < KP_BOOST_MAX)
		g->boost++, g->boost_ns = now;
	else if (g->boost && now - g->boost_ns > decay)
		g->boost--, g->boost_ns = now;
	size_t floor = pool->conf.high_wm != KP_WM_AUTO ? pool->conf.high_wm : 0;
	uint64_t quiet = (uint64_t)KP_QUIET_HORIZONS * KP_HORIZON_MS * 1000000ull;
	size_t want = floor;
	if (!g->grow_ns || now - g->grow_ns > quiet)
		g->rate = 0;
	else
		want = rate_headroom(g->rate, g->boost, held, g->busy >= KP_BUSY_PASSES, KP_GROW_TARGET_SHARE,
				     KP_GROW_SMALL);
	want = want > floor ? want : floor;
	atomic_store_explicit(&g->shown_target, want, memory_order_relaxed);
	atomic_store_explicit(&g->shown_rate, g->rate, memory_order_relaxed);
	return want;
}

/* The daemon's wait after a pass: daemon_interval_ms, the timer, unless
 * the purge has KP_HURRY_MIN or more to give back at a checkpoint due
 * sooner (free blocks stamped at the last one, or resident free units idle
 * at the last one: primary.c, kp__primary_purge_due); then until that
 * checkpoint, KP_HURRY_MS at least. The passes that purge came 100 ms apart
 * (the timer) when nothing woke the daemon, while the blocks' checkpoints
 * are KP_BPURGE_MS apart: git pack-objects, a program of 0.5-1 s that does
 * not pre-fault, kept the pages of free blocks and units 100-200 ms after
 * it freed them, and set its peak RSS with them (2.5 MiB of units a burst
 * of large blocks gave back, 1.2 MiB of free 8-40 KiB blocks;
 * test_purge_soon). A pass that came early for the purge and gave back
 * less than KP_HURRY_MIN (a program that takes its free blocks again
 * within a checkpoint) is followed by the timer's wait: a churning program
 * costs one early pass per timer pass at most, never a pass per 10 ms.
 * A pass woken because the program freed a quarter of what it held
 * (primary.c, freed_kick) waits for the next checkpoint too. */
#define KP_HURRY_MS 10
#define KP_HURRY_MIN ((size_t)256 << 10)
static void next_wait(kp_pool *pool, uint64_t now, bool freed)
{
	kp__daemon *d = &pool->daemon;
	uint64_t interval = (uint64_t)pool->conf.daemon_interval_ms * 1000000ull;
	uint64_t wait = interval, least = (uint64_t)KP_HURRY_MS * 1000000ull;
	bool paid = !d->hurried || atomic_load(&pool->purged_bytes) - d->purged_at >= KP_HURRY_MIN;
	uint64_t due = paid ? kp__primary_purge_due(pool, KP_HURRY_MIN) : UINT64_MAX;
	d->hurried = due != UINT64_MAX;
	/* woken by a fall of the bytes in use (primary.c, freed_kick): what
	 * was freed is stamped at the next checkpoint, whatever the last one
	 * found (that pass only stamps: it is not held to a yield). freed was
	 * taken at the pass's start (kp__daemon_pass), before its checkpoint. */
	if (freed) {
		d->kick_b = d->kick_u = true;
		d->kick_b_ns = pool->bpurge_at_ns;
		d->kick_u_ns = pool->purge_at_ns;
	}
	/* Until those checkpoints come: a pass before them (the thread woken
	 * again at once, an allocation's kick) found nothing of the frees
	 * stamped and waited the timer (test_purge_soon, early passes). A
	 * checkpoint that came is later than the one noted. */
	d->kick_b = d->kick_b && pool->bpurge_at_ns <= d->kick_b_ns;
	d->kick_u = d->kick_u && pool->purge_at_ns <= d->kick_u_ns;
	if (d->kick_b || d->kick_u) {
		uint64_t next = d->kick_b ? pool->bpurge_at_ns : UINT64_MAX;
		next = d->kick_u && pool->purge_at_ns < next ? pool->purge_at_ns : next;
		due = next < due ? next : due;
		d->hurried = false;
	}
	if (due != UINT64_MAX) {
		uint64_t w = due > now ? due - now : 0;
		w = w > least ? w : least;
		wait = w < wait ? w : wait;
	}
	d->hurried = d->hurried && wait < interval;
	atomic_store(&d->wait_ns, wait);
	atomic_store_explicit(&d->out_at, atomic_load(&pool->out_bytes), memory_order_relaxed);
	atomic_store_explicit(&d->peak_at, atomic_load(&pool->peak_seg_out_bytes), memory_order_relaxed);
}

int kp__daemon_pass(kp_pool *pool)
{
	kp__daemon *d = &pool->daemon;
	int actions = 0;
	int saved = kp__os_caller;
	kp__os_caller = KP_CALLER_DAEMON;
	pthread_mutex_lock(&d->step_mu);
	atomic_fetch_add(&d->passes, 1);
	/* The frees' kick (next_wait), taken before this pass's checkpoint
	 * stamps what was freed: a kick during the pass stays for the next one.
	 * Taken at the pass's end, it answered frees this pass's checkpoint had
	 * not seen, and the pass that the kick's pending wake brought at once
	 * found nothing stamped and waited the timer (test_purge_soon). */
	bool freed = atomic_exchange_explicit(&d->freed, 0, memory_order_relaxed);
	kp__ol_daemon_pass(pool); /* layout:outline's spare segments (outline.c); nothing for inline */
	d->purged_at = atomic_load(&pool->purged_bytes);
	size_t target = daemon_target(pool);
	/* 1. pre-fault the free units the allocation path takes next: the
	 * front, in steps (fill_to), only what is not resident (the front is not exactly known: the
	 * allocation path skips runs too short for a span, and frees return
	 * resident units anywhere), and only when something was taken */
	size_t ready = atomic_load(&d->ready);
	bool pre = pool->conf.prefault, all = prefaulting(pool);
	/* not pre-faulting (the program leaves most of what it takes
	 * unwritten): only a floor the program set (high_wm) stays pre-faulted;
	 * auto's would be faulted in again each time churn frees units at the
	 * front, for blocks that leave it unwritten (kpbench b: ~25 MiB) */
	size_t floor = high_wm(pool) != KP_WM_AUTO ? kp__daemon_floor(pool) : 0;
	size_t front = all ? d->front : target < floor ? target : floor;
	/* in steps: half the front (the wake mark) and an eighth of it ahead */
	size_t fill = all ? fill_to(pool, front) : front;
	if (pre && all && atomic_load_explicit(&pool->ntaken, memory_order_relaxed))
		prefault_taken(pool);
	if (pre && ready < fill)
		ready = prefault_front(pool, 0, fill);
	/* 2. grow: with a target of a segment or more (demand is fast), each
	 * segment is pre-faulted whole before it is linked, so that the
	 * allocation path never finds unfaulted free units (it waits
	 * grow_wait_us for the next one instead); with a smaller one (an idle or
	 * slow program) the segment is linked first and pre-faulted only as far
	 * as the target (the walk below): at most a segment of overshoot when
	 * fast, none when slow */
	bool partial = false;
	/* up to what daemon_target maps ahead; pre-faulted up to the target */
	size_t ahead = d->ahead > target ? d->ahead : target;
	/* the runs too short for it are no room ahead of the allocation path
	 * (counted when it took any since the last pass, or when the shrink
	 * below may take the pool lock anyway: an idle pass takes none; an
	 * idle pass that did not count them unmapped what the last take's
	 * pass grew past them, every few takes: test_front_attack2) */
	size_t passed = pre && (atomic_load_explicit(&pool->take_min, memory_order_relaxed) ||
				(atomic_load_explicit(&pool->take_min_prev, memory_order_relaxed) > 1 &&
				 atomic_load(&pool->free_segs) &&
				 kp__primary_headroom(pool) >= ahead + (KP_SEG_UNITS)*KP_UNIT_SIZE))
				? short_runs(pool)
				: 0;
	for (size_t room, h; (h = kp__primary_headroom(pool), room = h > passed ? h - passed : 0) < ahead;) {
		/* whole: pre-faulted as it is mapped, when the program touches
		 * what it takes or asked for a floor of a segment or more; the
		 * segment past the target never */
		bool within = room < fill;
		/* ... nor while the allocation path is about to run dry (less
		 * than a segment free): it gets the units at once, and the walk
		 * below pre-faults them, front first (a segment pre-faulted
		 * before it is linked took the daemon 3-5 ms under load, longer
		 * than the allocation path waits for it) */
		bool dry = room < seg_usable();
		bool whole = within && !dry && pre && fill >= seg_usable();
		if (kp__primary_grow(pool, whole) < 0) /* counts d->grows itself */
			break;
		partial |= within && !whole;
		actions++;
	}
	if (pre && actions)
		ready = partial ? prefault_front(pool, 0, fill) : fill;
	/* The next pass measures from this one's start: what it grows and
	 * shrinks here is counted as added and removed, and what the allocation
	 * path takes meanwhile as taken (so ready errs low, never high: a page
	 * pre-faulted twice costs a page-table walk, one never pre-faulted a
	 * fault on the allocating thread). */
	kp__xfer_drain(pool, false); /* idle parked batches back to their spans, before the shrink (transfer.c) */
	int shrunk = kp__primary_shrink(pool, ahead + passed);
	atomic_fetch_add(&d->shrinks, (uint64_t)shrunk);
	/* past the front, pages pre-faulted for growth that stopped are given
	 * back once idle (the purge below): not counted as ready (errs low) */
	bool release = pre && ready > front + KP_RELEASE_MIN;
	ready = ready < front ? ready : front;
	atomic_store(&d->ready, pre ? ready : 0);
	/* woken at half the front; a front under KP_WAKE_FRONT (a trickle) is
	 * refilled by the timer and the floor's mark, not by a wake-up (a
	 * system call on the allocation path) every few blocks */
	set_wake(pool, front >= KP_WAKE_FRONT ? front : target, ready, pre && front >= KP_WAKE_FRONT);
	actions += shrunk + kp__huge_cache_trim(pool, false);
	/* 3b. give back the pages of free units idle for decay_ms, past the
	 * headroom kept pre-faulted (primary.c, kp__primary_purge) */
	uint64_t now = kp__pool_now(pool), soon = (uint64_t)KP_RELEASE_MS * 1000000ull;
	if (release && pool->purge_at_ns > now + soon)
		pool->purge_at_ns = now; /* a checkpoint now, the next one soon */
	else
		release = false;
	actions += kp__primary_purge(pool, front);
	/* A sparse program (not pre-faulting) is handed clean units first
	 * (primary.c, units_take): the resident pages of the free units its
	 * spans and large blocks gave back are taken again only by a span of
	 * the same class at the same start (or a large block of the same
	 * length), so they are given back after
	 * KP_RELEASE_MS idle, as pages pre-faulted for growth that stopped
	 * are. git pack-objects (touched_pct 73) kept 0.6-3.8 MiB of them
	 * resident for its whole 0.5-1 s life at decay_ms, its new spans
	 * faulting clean units in beside them (test_sparse_purge). */
	bool sparse = pre && pool->conf.prefault_touch && !atomic_load_explicit(&d->prefaulting, memory_order_relaxed);
	uint64_t sparse_soon = (uint64_t)KP_SPARSE_MS * 1000000ull;
	if (release)
		pool->purge_at_ns = now + soon;
	else if (sparse && pool->purge_at_ns > now + sparse_soon)
		pool->purge_at_ns = now + sparse_soon;
	next_wait(pool, now, freed);
	kp__grace_reclaim(pool); /* unmap what was released, once no reader can see it */
	kp__backup_grow(pool);	 /* backup:auto follows the peak use (backup.c) */
	uint64_t frees = atomic_load(&pool->bk_frees);
	if (frees != d->refilled_at && kp__backup_refill(pool)) {
		d->refilled_at = frees;
		atomic_fetch_add(&d->refills, 1);
	}
	/* the next pass's take_len: the shortest run taken since this one, or
	 * before it within decay_ms (a program that takes runs of one unit
	 * now and then fills short runs: sqlite3 under the preload, with the
	 * last interval's alone, pre-faulted long runs past the short ones its
	 * next spans took, 42-45 MiB peak against 41) */
	unsigned took = atomic_exchange_explicit(&pool->take_min, 0, memory_order_relaxed);
	unsigned kept = atomic_load_explicit(&pool->take_min_prev, memory_order_relaxed);
	uint64_t at = kp__pool_now(pool);
	/* no pool lock: a pass that takes it once more per pass waits for it
	 * under load (test_pool_behaviour's paced run: 1,220-1,940 steady
	 * faults, its bound 614) */
	if (took && (!kept || took <= kept || at - pool->take_min_ns >= (uint64_t)pool->conf.decay_ms * 1000000ull)) {
		atomic_store_explicit(&pool->take_min_prev, took, memory_order_relaxed);
		pool->take_min_ns = at;
	}
	pthread_mutex_unlock(&d->step_mu);
	/* The backup mode follows every change of the primary's use (units_take,
	 * units_give, grow): the pass need not take the pool lock for it. */
	pthread_mutex_lock(&d->mu);
	pthread_cond_broadcast(&d->pass_cv);
	pthread_mutex_unlock(&d->mu);
	kp__os_caller = saved;
	return actions;
}

/* Daemon threads running passes, of every pool (daemon_main). */
static _Atomic unsigned daemons_live;
/* How often a daemon looks whether the program's own threads have all
 * ended: about once a second of timer passes (the look reads a proc file). */
#define LONE_LOOK_MS 1000u

/* Has every thread of the program's own ended, the daemons alone left? glibc
 * ends a process with exit(0) when its last thread exits, main's by
 * pthread_exit included, but a daemon is a thread, and one that blocks
 * every signal: such a process outlived its program forever, and no
 * SIGTERM could end it (CPython's test_threading under the preload: a child
 * forked from a thread; test_last_thread_attack19). The first thread ended
 * (a zombie leader, which the count still holds) and every other live
 * thread a daemon: nothing can allocate, start a thread or wake anyone
 * again. Each daemon that finds it so ends its thread, and glibc calls
 * exit(0) on the last one's way out, as it would have on the program's
 * last thread. */
static bool program_ended(kp_pool *pool)
{
	unsigned threads;
	bool leader_gone;
	if (kp__os_threads(&pool->os, &threads, &leader_gone) < 0)
		return false;
	return leader_gone && threads <= 1 + atomic_load(&daemons_live);
}

static void *daemon_main(void *arg)
{
	kp_pool *pool = arg;
	kp__daemon *d = &pool->daemon;
	kp__os_caller = KP_CALLER_DAEMON;
	kp__os_thread_name(&pool->os, "kpool-daemon");
	uint64_t look_ns = (uint64_t)LONE_LOOK_MS * 1000000ull, looked = kp__now_ns();
	atomic_fetch_add(&daemons_live, 1);
	pthread_mutex_lock(&d->mu);
	while (atomic_load(&d->state) == KP_D_RUNNING) {
		if (!atomic_load(&d->wake_pending)) {
			struct timespec ts;
			kp__realtime(&ts);
			uint64_t wait = atomic_load(&d->wait_ns); /* next_wait's; 0 before the first pass */
			if (!wait)
				wait = (uint64_t)pool->conf.daemon_interval_ms * 1000000ull;
			uint64_t ns = (uint64_t)ts.tv_nsec + wait;
			ts.tv_sec += (time_t)(ns / 1000000000ull);
			ts.tv_nsec = (long)(ns % 1000000000ull);
			pthread_cond_timedwait(&d->cv, &d->mu, &ts);
		}
		if (atomic_load(&d->state) != KP_D_RUNNING)
			break;
		bool look = false;
		if (atomic_exchange(&d->wake_pending, 0)) {
			atomic_fetch_add(&d->wakeups, 1);
		} else {
			atomic_fetch_add(&d->timer_wakeups, 1);
			/* by time, not by count: the timer's wait varies (next_wait) */
			uint64_t t = kp__now_ns();
			if (t - looked >= look_ns)
				look = true, looked = t;
		}
		if (look && program_ended(pool)) {
			/* Off, as a stopped daemon is (a kp_destroy run by an exit
			 * handler on this very thread then waits for no one), and
			 * gone: glibc's exit(0) follows if this was the last. */
			kp__event(pool, KP_EV_DAEMON, KP_POOL_PRIMARY, NULL, 0,
				  "every thread of the program ended: the daemon ends too");
			atomic_store(&d->state, KP_D_OFF);
			atomic_fetch_sub(&daemons_live, 1);
			pthread_mutex_unlock(&d->mu);
			return NULL;
		}
		pthread_mutex_unlock(&d->mu);
		kp__daemon_pass(pool);
		pthread_mutex_lock(&d->mu);
	}
	atomic_fetch_sub(&daemons_live, 1);
	/* Parked (kp__daemon_park): no pass from here on, and nothing of the
	 * pool is read but d->mu, d->cv, d->reap. The thread exits when reaped,
	 * after the pool's memory is gone (kp_destroy). */
	atomic_store(&d->parked, 1);
	pthread_cond_broadcast(&d->pass_cv);
	while (!atomic_load(&d->reap))
		pthread_cond_wait(&d->cv, &d->mu);
	pthread_mutex_unlock(&d->mu);
	return NULL;
}

int kp__daemon_start(kp_pool *pool)
{
	kp__daemon *d = &pool->daemon;
	/* The daemon takes no signal meant for the application. */
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	atomic_store(&d->state, KP_D_RUNNING);
	atomic_store(&d->parked, 0);
	atomic_store(&d->reap, 0);
	int rc = pthread_create(&d->thread, NULL, daemon_main, pool);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (rc != 0) {
		atomic_store(&d->state, KP_D_OFF);
		kp__event(pool, KP_EV_DAEMON, KP_POOL_PRIMARY, NULL, 0, "daemon failed to start (%d)", rc);
		return -1;
	}
	kp__event(pool, KP_EV_DAEMON, KP_POOL_PRIMARY, NULL, 0, "daemon started");
	return 0;
}

/* Stop the passes: when this returns true the thread makes none and reads
 * nothing of the pool but d->mu, d->cv and d->reap, and it has not exited:
 * kp__daemon_reap lets it exit and joins it. false: no thread was running.
 * The split is for kp_destroy, which gives the pool's memory back between
 * the two: a thread's exit faults in libc's per-thread clean-up code
 * (__libc_thread_freeres: the resolver's and RPC's, 192 KiB of text, 3
 * fault-around windows), and made before the segments were unmapped it sat
 * on top of everything the pool held: kpbench a's peak RSS was set there
 * (test_destroy_peak). Caller: not the daemon thread. */
bool kp__daemon_park(kp_pool *pool)
{
	kp__daemon *d = &pool->daemon;
	pthread_mutex_lock(&d->mu);
	int st = atomic_load(&d->state);
	if (st != KP_D_RUNNING) {
		atomic_store(&d->state, KP_D_OFF);
		pthread_mutex_unlock(&d->mu);
		return false;
	}
	atomic_store(&d->state, KP_D_STOPPING);
	pthread_cond_signal(&d->cv);
	while (!atomic_load(&d->parked))
		pthread_cond_wait(&d->pass_cv, &d->mu);
	pthread_mutex_unlock(&d->mu);
	return true;
}

void kp__daemon_reap(kp_pool *pool)
{
	kp__daemon *d = &pool->daemon;
	pthread_mutex_lock(&d->mu);
	atomic_store(&d->reap, 1);
	pthread_cond_broadcast(&d->cv);
	pthread_mutex_unlock(&d->mu);
	pthread_join(d->thread, NULL);
	atomic_store(&d->state, KP_D_OFF);
}

void kp__daemon_stop(kp_pool *pool)
{
	if (kp__daemon_park(pool))
		kp__daemon_reap(pool);
}

/* Called by the allocation path at a watermark: cheap when the daemon is
 * already awake (one atomic exchange), never blocks for long (the daemon
 * holds d->mu only between passes). */
void kp__daemon_kick(kp_pool *pool)
{
	kp__daemon *d = &pool->daemon;
	int st = atomic_load_explicit(&d->state, memory_order_relaxed);
	if (st == KP_D_RESTART) {
		int expect = KP_D_RESTART;
		if (atomic_compare_exchange_strong(&d->state, &expect, KP_D_OFF) && kp__daemon_start(pool) == 0)
			kp__event(pool, KP_EV_DAEMON, KP_POOL_PRIMARY, NULL, 0, "daemon restarted after fork");
		return;
	}
	if (st != KP_D_RUNNING || atomic_exchange(&d->wake_pending, 1))
		return;
	pthread_mutex_lock(&d->mu);
	pthread_cond_signal(&d->cv);
	pthread_mutex_unlock(&d->mu);
}

/* Wake the daemon and wait until *counter (passes or grows) moves, the
 * daemon stops, or the deadline passes (CLOCK_MONOTONIC ns). The condition
 * variable is broadcast after every pass and every segment the daemon adds;
 * the deadline is re-checked every millisecond. */
void kp__daemon_wait(kp_pool *pool, _Atomic uint64_t *counter, uint64_t deadline)
{
	kp__daemon_wait_since(pool, counter, atomic_load(counter), deadline);
}

void kp__daemon_wait_since(kp_pool *pool, _Atomic uint64_t *counter, uint64_t seen, uint64_t deadline)
{
	kp__daemon *d = &pool->daemon;
	kp__daemon_kick(pool);
	pthread_mutex_lock(&d->mu);
	while (atomic_load(counter) == seen && atomic_load(&d->state) == KP_D_RUNNING && kp__now_ns() < deadline) {
		struct timespec ts;
		kp__realtime(&ts);
		ts.tv_nsec += 1000000;
		if (ts.tv_nsec >= 1000000000) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000;
		}
		pthread_cond_timedwait(&d->pass_cv, &d->mu, &ts);
	}
	pthread_mutex_unlock(&d->mu);
}

/* The four calls below are control calls, never on the allocation path: they
 * look the pool up in the registry of live pools (one global mutex) before
 * they read a byte of it, so any pointer that is no live pool is refused. */
KP_EXPORT void kp_daemon_wake(kp_pool *pool)
{
	if (pool && kp__pool_live(pool, "kp_daemon_wake"))
		kp__daemon_kick(pool);
}

KP_EXPORT int kp_daemon_start(kp_pool *pool)
{
	if (!pool || !kp__pool_live(pool, "kp_daemon_start"))
		return KP_EINVAL;
	kp__daemon *d = &pool->daemon;
	int st = atomic_load(&d->state);
	do {
		if (st == KP_D_RUNNING)
			return 0;
		/* Claim the start with the transient STOPPING, which the
		 * allocation path's kick ignores (it starts a thread only from
		 * RESTART): no kpool lock is held across pthread_create. */
	} while (!atomic_compare_exchange_weak(&d->state, &st, KP_D_STOPPING));
	atomic_store(&d->wake_pending, 1); /* first pass at once, as kp_create */
	return kp__daemon_start(pool) == 0 ? 0 : KP_ENOMEM;
}

KP_EXPORT void kp_daemon_stop(kp_pool *pool)
{
	if (pool && kp__pool_live(pool, "kp_daemon_stop"))
		kp__daemon_stop(pool);
}

/* The steps move the pool's clock (kp__pool_now: the monotonic clock plus
 * their offset) by at most 2^62 ns in all (146 years), so that it and every
 * deadline made from it (at most decay_ms, an hour, ahead) stay far under
 * 2^64: advance_ms * 10^6 wrapped past 2^64 / 10^6 ms, and steps adding up
 * past 2^64 ns wrapped the offset, so the clock went back
 * (test_daemon_step_range). */
#define KP_STEP_MAX_NS ((uint64_t)1 << 62)

KP_EXPORT int kp_daemon_step(kp_pool *pool, uint64_t advance_ms)
{
	if (!pool || !kp__pool_live(pool, "kp_daemon_step"))
		return KP_EINVAL;
	_Atomic uint64_t *offset = &pool->daemon.clock_offset_ns;
	uint64_t was = atomic_load(offset);
	do {
		if (advance_ms > (KP_STEP_MAX_NS - was) / 1000000ull) {
			kp__set_error("kp_daemon_step: advance_ms %llu refused: the steps would move the pool's clock "
				      "past 2^62 ns (%llu ms moved so far)",
				      (unsigned long long)advance_ms, (unsigned long long)(was / 1000000ull));
			kp__event(pool, KP_EV_DAEMON, KP_POOL_PRIMARY, NULL, 0,
				  "kp_daemon_step: advance_ms %llu refused (the clock would pass 2^62 ns of steps)",
				  (unsigned long long)advance_ms);
			errno = EINVAL;
			return KP_EINVAL;
		}
	} while (!atomic_compare_exchange_weak(offset, &was, was + advance_ms * 1000000ull));
	return kp__daemon_pass(pool);
}
