/*
 * outline.h - layout:outline's structures and its fast paths, inlined in
 * kp_alloc, kp_free and kp__free_try themselves (alloc.c: alloc_fast,
 * free_entry), so that an outline pool's kp_alloc and kp_free make no call
 * and save no register: 66.0 instructions a kp_alloc + kp_free on kpbench
 * a, 80.4 on b (callgrind, tests/test_instruction_counts.py; s32-fast: the
 * slice map's nil span, kp__ol_map_nil; 67.0 and 81.7 before; s29-fast: the
 * masked map lookup, kp__ol_rec_apart, the class past
 * 1 KiB by one bsr, kp__ol_free_retired; 75.0 and 90.1 at
 * s23-entry, 100.0 and 119.2 by a tail call behind the default path's
 * tests; s37-fast: b 75.2, the retired span's free inline, avail_take_free;
 * s38-fasta: a 61.0, b 70.15, the slot's tag from the pool's address,
 * kp__ol_slot_id, and the slice map's entry added from memory).
 * Beside the peers (s37-fast, the same kpbench binary, malloc + free under
 * LD_PRELOAD, callgrind --toggle-collect): a 66.0 (61.0 now) against
 * mimalloc's 45.3 and tcmalloc's 67.0; b 75.2 (70.15) against 149.9 and
 * 73.0. a's 16 more than mimalloc's now: the slot's tag and mark (~10 a
 * pair: a GOT load, a lea, the subtract and branch, the unmark's store, a
 * call each; 14 with the id's NULL test and load before s38-fasta), the
 * slice map and the exact division (~12), the block's address by multiply
 * (3), the records' state and canary (~13; checks:off keeps them all).
 * Tried in s38-fasta and not taken: an index by a reciprocal (mulhi) in
 * place of the exact division's multiply and rotate (the quotient, a test
 * of the remainder's bits and lim's: 5 instructions or more where these are
 * 5); the state and the canary in one 8-byte load and compare (the state
 * locates the canary, so it is read first either way, and a freed record's
 * canary must not pass: the dead test stays a branch of its own).
 * b's is cache lines: these paths miss a 32 KiB D1 ~6.5 times an
 * operation (reads and writes; the record 1.5, the span's two lines 1.6,
 * the stack 0.9, the slice map 0.5), tcmalloc's ~1.6, whose free lists
 * are in the blocks the program touches anyway. The rest is
 * outline.c (its opening comment: the design, the checks, what is not
 * done).
 */
#ifndef KP_OUTLINE_H
#define KP_OUTLINE_H

#include "internal.h"

#include <string.h>

#pragma GCC visibility push(hidden)

#define OL_SEG_SHIFT 22 /* 4 MiB segments: mimalloc's size; 64 slices each */
#define OL_SEG_SIZE ((size_t)1 << OL_SEG_SHIFT)
#define OL_SLICE_SHIFT 16 /* 64 KiB: 4096 blocks of 16 B, so an index fits 16 bits */
#define OL_SLICE_SIZE ((size_t)1 << OL_SLICE_SHIFT)
#define OL_NSLICES (OL_SEG_SIZE / OL_SLICE_SIZE)
#define OL_MAP_N ((uintptr_t)1 << (47 - OL_SLICE_SHIFT)) /* user addresses are below 2^47 */
/* Metadata per segment, address space (untouched pages cost nothing): 64
 * slices of the 16-byte class, 4096 blocks each of (2 B stack + 2 B
 * cross-thread link + 8 B record) = 3 MiB, the span records (12 KiB) and
 * alignment (3 x 64 B a span). */
#define OL_META (4 * ((size_t)1 << 20))
/* The in-line canary's bytes, right past the request, in every block: a
 * request that is a multiple of 16 takes a class 16 bytes larger (as
 * glibc's chunk header makes it). Measured (s28, CPython's test_unicode at
 * its peak: 2.25 M small blocks, 95% of them 32 or 80 B): the blocks take
 * 158 MiB as now; 157 with the canary in the block's slack alone (1-8
 * bytes, a 16-byte class step less for requests of 9-15 mod 16 only);
 * 142 with 8-byte class steps, which would give 32- and 80-byte requests
 * 8-aligned blocks (kpool.h promises 16, as glibc, jemalloc, mimalloc and
 * tcmalloc give every request of 16 B or more); 125 with no canary for a
 * request that fills its class (no overflow check for 95% of them). */
#define OL_CANARY 8u
#define OL_SMALL_MAX 65536u	       /* request + canary; larger: alloc.c's path */
#define OL_TBL_MAX (1024u - OL_CANARY) /* requests by direct[] (either mode) */
#define OL_NCLASS 73 /* 16..256 by 16, 4 per doubling up to 1 KiB, then 8 up to 64 KiB, and one more: */
/* One class off the grid (as the inline path's KP_CLASS_PAGE_PLUS, 4400
 * with its 16-byte header): a page, a caller's header of up to 280 bytes
 * and the canary, by 16. sqlite3's page cache (malloc(4368), 4376 bytes
 * with the canary; ~7,700 blocks at its peak) took 4608-byte blocks, 224
 * bytes (5.3%) over the 4384 it takes now: its peak RSS under the
 * preload 41.2 -> 39.7 MiB, glibc's 37.4 (1.10x -> 1.06x; medians of 3,
 * alternated, s32; test_outline_page_plus). A caller's header of 281-504
 * bytes takes 4608, as before. */
#define OL_CLASS_PAGE_PLUS 4384u
#define OL_FREE 0u	/* a block's state when free (a zero page's); else its request + 1 */
#define OL_SENT 0xffffu /* stack[0] of every span: the stack is empty when sp points at it */
/* The states past a live block's (its request + 1, at most 65,537): all
 * read as negative int32_t, as OL_FREE reads as not positive, so that one
 * test (kp__ol_dead) tells a live block from every other, with the same
 * instructions as a test of OL_FREE alone. */
/* A block another thread's free took (outline.c, free_remote: a
 * compare-and-swap from the live state it read), in that thread's foreign
 * cache: not free yet. The state names the cache: its heap's rtag, from
 * OL_TAG0 on (or OL_REMOTE, a free that found no heap in the slot, for a
 * moment). The heap's thread alone takes the block from there (fc_pop,
 * fc_flush) and only while the record still holds its tag: else the
 * owner's free, which read it live before that swap (the owner's free is
 * no atomic), stored over it, a double free reported there, and the block
 * is the owner's (its stack holds it); or, after that, the block went
 * round and another thread's free took it (another tag): that one's. So
 * the take needs no compare-and-swap: no two threads take the same tag. */
#define OL_REMOTE 0x80000001u
/* On its span's cross-thread list (remote_push), swapped in from the
 * cache's tag: the owner's drain takes only OL_LISTED records (else, as
 * above, its own free stored over it). */
#define OL_LISTED 0x80000002u
/* Made (span_extend) and never handed out, in a span whose pages were zero
 * when made (ol_span's zero): its bytes are zero still, so a KP_ZERO
 * allocation that takes it writes none of them (outline.c, pop_zero).
 * Dead (kp__ol_dead), as OL_FREE: a free of it is refused as one of a free
 * block. Any other free block reads OL_FREE, zero or not. */
#define OL_VIRGIN 0x80000000u
#define OL_TAG0 0x80000003u  /* the first heap's tag (ol_heap's rtag) */
#define OL_NTAGS 0x7ffffff0u /* tags OL_TAG0.. in turn: below OL_QUAR */
/* A poison pool's block found written after its free (outline.c,
 * poison_alloc): never handed out again, and a free of it is a double free. */
#define OL_QUAR 0xffffffffu
/* Is state st no live block's (free, in a foreign cache or on a list,
 * quarantined)? */
#define kp__ol_dead(st) ((int32_t)(uint32_t)(st) <= 0)
#define OL_OWN_FULL 1u /* in span->owner: retired, in no list; a free relists it */
/* in span->link[i]: block i is on the span's cross-thread list (the bit
 * above the 13 an index + 1 takes: 4096 blocks a span at most) */
#define OL_LINK_ON 0x8000u
#define OL_OWN_NONE 0u /* in span->owner and heap->self: an abandoned heap's (no thread's pointer) */

/* One per block, out of line: 8 bytes; the cross-thread list's link is in
 * the span's link array (2 bytes a block, touched by cross-thread frees
 * alone). A live block's 8 in-line canary bytes (at p + request) are its
 * record's 32-bit canary, zero-extended (kp__ol_canary): the secret first,
 * where an overflow writes first, so the free's test stays one 8-byte
 * compare with the record's canary as its load extends it, and the
 * allocation's one 8-byte store, no instruction more (s27: the canary and
 * the state in the 8 bytes, or the canary twice, took 2-3 instructions
 * more a kp_alloc + kp_free and broke test_instruction_counts' budgets).
 * A canary read from one block tells nothing of another's (K of another
 * address); a forged one passes with odds of 2^-31 (K's bit 7 is always
 * set: an off-by-one NUL or character is always caught, test_off_by_one),
 * and a stray write of zeros to bytes 4-7 alone goes unseen. Before (s26),
 * a 16-byte record (a 64-bit canary, the state, the link): 18 bytes of
 * metadata a block with its stack entry, 12 now, of which the 2-byte link is
 * touched by cross-thread frees alone (test_outline_rec; CPython's
 * test_unicode holds 2.2 M small blocks under the preload). */
struct ol_rec {
	uint32_t canary; /* 32 bits of K(address ^ span gen); 0 with checks off */
	uint32_t state;	 /* the request + 1, or OL_FREE (0), OL_VIRGIN, OL_REMOTE, OL_LISTED, OL_QUAR */
};
_Static_assert(sizeof(struct ol_rec) == 8, "a block's record: 8 bytes");

/* The 8 in-line canary bytes of a block of record r. */
static inline __attribute__((always_inline)) uint64_t kp__ol_canary(const struct ol_rec *r)
{
	return r->canary;
}

struct ol_heap;
/* Three cache lines, by who writes them: the first is fixed while the span
 * lives (but owner) and read by every free from any thread; the second is
 * its owner's (sp on every allocation and free); the third is the other
 * threads' (their batches of frees). One line for all three made every
 * cross-thread free miss on the line its owner had just written (kpbench
 * c). */
struct ol_span {
	uint8_t *start;
	/* bsize = odd << rot, inv: odd's inverse mod 2^64 (kp__ol_index) */
	uint64_t inv;
	uint32_t bsize, nblocks;
	struct ol_rec *rec;
	uint16_t *stack0; /* the bottom of its stack: the sentinel */
	/* the owner's thread pointer, | OL_OWN_FULL while retired: read by
	 * other threads' frees, written by the owner (relaxed); OL_OWN_NONE
	 * (| OL_OWN_FULL) while its heap is abandoned (heap_abandon) */
	_Atomic uintptr_t owner;
	uint16_t csz; /* the canary's bytes: OL_CANARY, or 0 with checks off */
	uint8_t rot;
	uint16_t cls;
	uint16_t fc_cap; /* blocks of its class a heap that allocates the class too caches (ol_heap) */
	/* nblocks + 1, 64 bits: kp_free compares kp__ol_index with it in
	 * memory; 0 in the nil span (kp__ol_map_nil) */
	uint64_t lim;

	/* the owner's line */
	_Alignas(64) uint16_t *sp; /* the top of the stack of free block indices */
	/* blocks whose records and stack entries are made (span_extend): the
	 * first fresh; the rest were never handed out, their records zero
	 * (free). The owner writes it, kp_stats reads it (relaxed). */
	uint32_t fresh;
	uint32_t relist_at;   /* free blocks a retired span needs to be listed again */
	struct ol_span *next; /* in the heap's avail list */
	/* start, bsize and rec again, for the allocation's pop (kp__ol_pop):
	 * on the line of sp, which it reads first, so that a pop takes one
	 * line of its span where it took two (the first line is the frees',
	 * read by other threads: sp stays off it). Fixed while the span lives
	 * (span_new). s35: kpbench b's kp_alloc + kp_free missed a 32 KiB D1
	 * 5.71 times an operation (reads) under callgrind, a pop's read of the
	 * first line 0.29 of them (tests/test_cache_lines.py) */
	uint8_t *own_start;
	struct ol_rec *own_rec;
	uint32_t own_bsize;
	uint64_t gen; /* the span's generation, in its blocks' canaries (span_extend) */
	/* its blocks past fresh are zero (a segment mapped fresh, not one given
	 * back and taken again: its purge may have failed; not poison:on):
	 * span_extend makes them OL_VIRGIN (span_new) */
	bool zero;

	/* the other threads' line */
	_Alignas(64) _Atomic uint32_t remote; /* cross-thread frees: index + 1 of the head */
	_Atomic uint32_t nremote;	      /* blocks on that list or being pushed (kp__ol_in_use) */
	/* that list's links, one per block: index + 1 of the next (4096 blocks
	 * a span at most: 13 bits), | OL_LINK_ON while the block is on the list
	 * (outline.c, link_next); fixed while the span lives (span_new) */
	uint16_t *link;
	struct ol_span *_Atomic dirty_next;
	/* its heap: written under the pool's outline lock (span_new, span_adopt)
	 * while no block of it is out, read by the frees that push */
	struct ol_heap *heap;
	/* the daemon's fields, here since s35 (they were on the owner's line,
	 * which every pop and push of the span takes): */
	/* the daemon's purge (kp__ol_daemon_pass), of a span on its heap's avail
	 * list, under the heap's avail_lock: when it was first seen wholly free
	 * (pool clock, ns; 0: not seen so), OL_PURGED once its pages went back */
	uint64_t idle_ns;
	/* the daemon's purge of its free blocks' pages while it is listed and
	 * not wholly free (outline.c, purge_blocks), under its heap's avail
	 * lock: the blocks on its stack when a pass first saw it so, and when
	 * (pool clock, ns; OL_PURGED once given back at that count) */
	uint32_t bpurge_free;
	uint64_t bpurge_ns;
	/* its owner's free blocks parked for the daemon (outline.c, hand_park):
	 * the next span on the pool's parked list | the chain's head << 48;
	 * 0 while none is (the daemon's park_return clears it) */
	_Atomic uint64_t park;
};
/* the nil span (kp__ol_map_nil): what kp_free reads of a span before its
 * index test, in the 64 zero bytes it names */
_Static_assert(offsetof(struct ol_span, lim) + 8 <= 64 && offsetof(struct ol_span, rot) < 64 &&
		       offsetof(struct ol_span, inv) + 8 <= 64,
	       "the nil span: kp_free's fields in 64 bytes");
#define OL_PURGED UINT64_MAX
_Static_assert(offsetof(struct ol_span, sp) == 64 && offsetof(struct ol_span, remote) == 128,
	       "a span's fields on three lines: the first full");
_Static_assert(offsetof(struct ol_span, own_bsize) + 4 <= 128 && sizeof(struct ol_span) == 192,
	       "a span: the pop's fields on sp's line, three lines in all");

struct ol_seg {
	uint8_t *base;
	/* the metadata arrays of its spans: stacks and records from the bottom
	 * up to bump, links from the top (OL_META) down to end (outline.c,
	 * meta_take_top) */
	uint8_t *bump, *end;
	uint32_t used;	     /* slices given to spans */
	struct ol_seg *next; /* the pool's list, or the spares' */
	/* a spare's (outline.c, the daemon's pass): some of its data pages
	 * pre-faulted; taken by a heap (from then on no spare: the daemon stops
	 * pre-faulting it); when it became a spare, or was last pre-faulted
	 * (pool clock, ns) */
	_Atomic bool ready, taken;
	uint64_t spare_ns;
	/* a spare's data pre-faulted from its first byte on, the order a heap
	 * carves it (bytes: spare_fault), and as far as the daemon's last pass
	 * asked for (goal: the daemon writes both) */
	_Atomic size_t faulted, goal;
	/* its used at the daemon's last pass (the daemon's: a heap growing) */
	uint32_t used_seen;
	struct ol_seg *pnext; /* on the pool's partial lists (kp__ol.partial) */
	/* a heap carves its spans (its ol_heap's seg: segment_new,
	 * segment_for; an abandoned heap's let go by the daemon's return_idle):
	 * no span is carved from a segment without it, so one without it may
	 * go back (the pool's outline lock) */
	bool held;
	/* given back (return_idle) and taken again (segment_new): its data
	 * pages not vouched zero (ol_span's zero) */
	bool recycled;
	/* its metadata's offset in its mapping, in pages (outline.c,
	 * segment_map: OL_META_COLORS) */
	uint32_t color;
	struct ol_span spans[OL_NSLICES];
};
/* A segment's metadata (this structure, then its spans' arrays: OL_META)
 * starts 0..OL_META_COLORS - 1 pages into its mapping, the next number for
 * each segment mapped (outline.c, segment_map), so that the same structure
 * of different segments takes different sets of a level-2 cache: one of 1
 * MiB and 8 ways (this machine's, AMD EPYC) has a set every 128 KiB, 32
 * pages. Before (s33), mmap placed every metadata mapping of a pool at the
 * same address modulo 1 MiB (a page below each 4 MiB-aligned data
 * segment), and kpbench b's ~20 segments' span records, stacks and block
 * records shared sets: kp_alloc + kp_free took 1.06 L2 read misses an
 * operation under callgrind's simulation of that cache, 0.20 now
 * (tests/test_cache_lines.py); the whole program 3.79 L2 misses an
 * operation, 2.78 now (tcmalloc 1.98; a 64-way L2 of the size took main
 * 2.64: the conflicts were a quarter of them). Address space: 128 KiB a
 * segment, never touched (PROT_NONE, with the guard pages). */
#define OL_META_COLORS 32u
/* OL_META holds the most a segment's spans take (span_new: 64 of the
 * 16-byte class, each array aligned to 64 bytes) past its record */
#define OL_META_SPAN_MAX                                                                         \
	((OL_SLICE_SIZE / 16 + 1) * sizeof(uint16_t) + (OL_SLICE_SIZE / 16) * sizeof(uint16_t) + \
	 (OL_SLICE_SIZE / 16 + 1) * sizeof(struct ol_rec) + 3 * 64)
_Static_assert(sizeof(struct ol_seg) + 64 + OL_NSLICES * OL_META_SPAN_MAX <= OL_META, "OL_META: a segment's metadata");

/* A heap's foreign cache: blocks of other heaps' spans this thread freed
 * (kp__ol_free_other), per class, which its allocations of the class take
 * first (kp__ol_refill) and whose overflow goes back to their spans a
 * chain per span (one compare-and-swap a chain). OL_FC_MAX entries a
 * class, and at most OL_FC_BYTES of blocks of it (ol_span's fc_cap): a
 * thread's cache holds at most 72 x 8 KiB and is given back at its exit.
 * At 16 KiB a class (s23-s28) a producer/consumer program of 16-2048 B
 * messages (34 classes) had its producer touch 1.93x the pages of the
 * messages live at once, 1.68x at 4 KiB, 1.37x the least its classes
 * allow; since s29 a consumer's classes cache OL_FC_LONE_BYTES (below), and
 * this size is that of a heap that allocates the class too, which hands
 * the blocks out again (kpbench c, larson). 8 KiB (s31): two threads that
 * free each other's blocks (kpbench c, 16-256 B, 1024 in flight: 64 a
 * class) send a quarter as many home (fc_flush, drain_span: ~80
 * instructions a block) as at 4 KiB, c's kp_alloc + kp_free 142 -> 117
 * instructions under callgrind (tests/test_cross_instructions.py; 6 KiB:
 * 126), xpair 1 1 200 84.5 -> 71.6 M; the cost, larson's blocks touched
 * 1.5-1.68x -> 1.85x its live bytes (test_larson_bound's bound 2.0x; 6
 * KiB 1.76x), its peak RSS 8.6 -> 9.3 MiB (medians of 5; 16 KiB: 10.3,
 * mimalloc 13.5), bench-prodcons' 4.99 -> 5.10 MiB (within its noise,
 * 4.67-5.10), test_outline_free_only's producer 1.64x either way. */
#define OL_FC_MAX 64
#define OL_FC_BYTES (8u << 10)
/* A heap's foreign cache of a class it never allocated (no refill of the
 * class yet: ol_heap's fc_cap): a consumer's. Its blocks wait there for no
 * allocation of its own while their owner touches new pages in their
 * stead: at OL_FC_BYTES, a round of a producer/consumer program's blocks of
 * a class of 256 bytes or less (a page or less) sat whole in the
 * consumer's cache, and the producer touched a second page of each such
 * class. So OL_FC_LONE_BYTES of such a class, OL_FC_LONE_MIN blocks at
 * least (the full cap when that is less), and all of it flushed when full
 * while the heap holds no span of the class (fc_put; the older half
 * else). test_outline_free_only: 426 data pages, 1.68x a round's, before
 * (s29); 411, 1.62x, now. bench-prodcons: peak RSS 5.22 -> 4.96 MiB
 * (medians of 9, alternated; glibc 3.94), instructions within noise
 * (callgrind, 100,000 messages a producer: 174-176 M against 177-184 M).
 * Not less: at 1 KiB and one block of 1 KiB or more, half flushed, every
 * free of those classes flushed one (401 pages, 1.58x, but 8.6% more
 * instructions; a flush is a compare-and-swap a span on the owner's line,
 * as every free made before the cache, s22). A heap that allocates the
 * class too caches OL_FC_BYTES of it from its first refill on: it hands
 * them out again at once (larson, kpbench c). */
#define OL_FC_LONE_BYTES (1u << 10)
#define OL_FC_LONE_MIN 4u
#define OL_FC_IDX_SHIFT 48 /* an entry: the span's address | block index << 48 */

/* How long an ended thread's heap waits for a thread to adopt it (outline.c,
 * heap_get) before other heaps take its spans' free blocks (abandoned_take):
 * a program that starts threads in waves (bench-thread-churn: 8 threads of
 * about 1 ms each, wave after wave) adopts its heaps within a millisecond,
 * and blocks taken from them at once sat in the takers' foreign caches
 * while the adopters touched new pages (under the preload, peak RSS 2,256
 * KiB on s33's main, 2,640 taking at once, 2,300 after this wait: medians
 * of 15 alternated runs, within their noise, 1,960-3,040); a producer that
 * ended before the other (bench-prodcons) leaves its heap for the rest of
 * the run. */
#define OL_ABANDON_MS 10
struct ol_heap {
	/* the fast paths' tables: the span of a class to pop, or &empty_span
	 * while the class's foreign cache holds blocks (so that the pop misses
	 * and kp__ol_refill takes them first) */
	struct ol_span *direct[65]; /* by (n + OL_CANARY + 15) >> 4 */
	struct ol_span *fast[OL_NCLASS];
	struct ol_span *cur[OL_NCLASS]; /* the span in hand of each class */
	/* the thread pointer; OL_OWN_NONE (0) while abandoned: its thread
	 * ended, and the next thread with no heap of the pool adopts it
	 * (heap_get); the pool's outline lock */
	uintptr_t self;
	uint32_t csz;
	struct ol_span *avail[OL_NCLASS];
	struct ol_seg *seg;   /* where its spans are carved */
	struct ol_heap *next; /* the pool's list */
	bool own_map;	      /* not in the arena: a mapping of its own */
	/* blocks handed out (kp__ol_pop; the owner writes, kp_stats reads):
	 * frees are these less the live blocks (kp__ol_counts) */
	_Atomic uint64_t allocs;
	/* avail[] and the relisting of spans, between the owner's slow paths
	 * (refill, a relisting free) and the daemon's purge: a spin lock, held
	 * for list moves only (no system call under it) */
	_Atomic int avail_lock;
	/* the foreign cache's blocks by class (the owner writes, relaxed;
	 * kp_stats reads: freed, not live) */
	uint8_t fc_n[OL_NCLASS]; /* at most OL_FC_MAX */
	/* the most blocks of each class it caches: OL_FC_LONE_BYTES' worth
	 * until the heap's first refill of the class, then OL_FC_BYTES' (its
	 * spans' fc_cap); the owner writes, its frees of other heaps' blocks
	 * read (free_remote, fc_put); the empty heap's are 0 */
	uint8_t fc_cap[OL_NCLASS]; /* at most OL_FC_MAX (uint8_t: fc_off's room in the page, below) */
	/* each class's row of entries, from the first (kp__ol_fc_row): fixed
	 * while the heap lives (heap_get) */
	uint16_t fc_off[OL_NCLASS];
	/* the state its thread's frees of other heaps' blocks give them
	 * (OL_REMOTE's comment): fixed while the heap lives */
	uint32_t rtag;
	/* when its thread ended (heap_abandon; pool clock, ns): the pool's
	 * outline lock. Another heap takes its spans' free blocks only once no
	 * thread adopted it for OL_ABANDON_MS (outline.c, abandoned_take) */
	uint64_t abandoned_ns;
	/* its classes up to 1 KiB that pop a coarser class's span (outline.c,
	 * LEND): that class, 0 once the class has spans of its own (or lends);
	 * the classes that lend to any, a bit each (class_point). In the
	 * padding before dirty's line: the structure stays 2,752 bytes, so that
	 * kp__ol still shares the first heap's page (outline.c, OL_ARENA_HEAD) */
	uint8_t lender[24];
	uint32_t lending;
	/* the pool's hand_epoch its thread last parked its spans in hand's
	 * free blocks at (outline.c, large_taken): the owner's */
	uint32_t hand_seen;
	_Alignas(64) struct ol_span *_Atomic dirty; /* spans with cross-thread frees (other threads push) */
};

/* A heap's structure, from a page's start or to its end (outline.c,
 * heap_get), and then its foreign cache's entries, in the heap's mapping
 * (so that the empty heap costs no .data): a row a class, as long as the
 * most the class caches (OL_FC_BYTES' worth, 1 to OL_FC_MAX: outline.c,
 * fc_cap_of), OL_FC_SLOTS entries in all, 8,456 bytes. Before (s34), a
 * row of OL_FC_MAX a class (36.5 KiB): a consumer of 16 B-2 KiB messages
 * touched 4 pages of rows (a class's 4 entries of 64 at each 512 bytes),
 * 2 now (test_outline_fc_pages: 5 -> 3 pages of its heap resident;
 * bench-prodcons' 4 heaps 24 -> 12 pages of the arena). */
#define OL_HEAP_STRUCT ((sizeof(struct ol_heap) + 63) & ~(size_t)63)
/* the sum over the classes of fc_cap_of(OL_FC_BYTES, size): test_outline_fc_pages checks it */
#define OL_FC_SLOTS 1057u
static inline __attribute__((always_inline)) uint64_t *kp__ol_fc_row(struct ol_heap *h, size_t cls)
{
	return (uint64_t *)((uint8_t *)h + OL_HEAP_STRUCT) + h->fc_off[cls];
}

struct kp__ol {
	/* OL_MAP_N entries, each a span's address less the map's (0: none):
	 * kp__ol_map_span, kp__ol_map_set, kp__ol_map_nil */
	uintptr_t *map;
	pthread_mutex_t lock; /* segs, heaps, spare, the arena's count */
	struct ol_seg *segs;
	struct ol_heap *heaps;
	/* segments mapped ahead, oldest first (kp_create's OL_SPARES_MIN, then the
	 * daemon's passes: kp__ol_daemon_pass maps and pre-faults as many as the
	 * measured demand asks for), so that a heap's next segment makes no
	 * system call and its pages no fault; NULL when none is left */
	struct ol_seg *spare;
	uint32_t nspare; /* on that list (the lock) */
/* Spares kept mapped at the least, from kp_create on (the daemon's pass
 * keeps them so, and a heap that leaves fewer wakes it): the heaps' first
 * segment takes one, and the next still finds one while the daemon, woken
 * by the first, maps its replacement. With one, a program that took its
 * second segment before the daemon's pass had run mapped it on its
 * allocation path (kpdrive's paced workload, 500 blocks of 16 B-8 KiB in
 * two segments: 2-3 mmap and 2 mprotect in 5 runs of 10). A mapped spare
 * costs address space and its record's page. */
#define OL_SPARES_MIN 2u
	/* the allocation path's side (segment_new): segments heaps took, those
	 * taken before the daemon had pre-faulted them, those mapped because no
	 * spare was left (the allocation path's mmap: rare, counted) */
	_Atomic uint64_t taken, cold, alloc_maps;
	/* spares the daemon's passes mapped: what a heap with none left awaits
	 * for up to grow_wait_us (segment_new) */
	_Atomic uint64_t spares_made;
	/* segments a heap left with slices free (a span did not fit), by
	 * their free slices: the next heap whose span fits takes one (the lock;
	 * outline.c, segment_for) */
	struct ol_seg *partial[OL_NSLICES + 1];
	/* segments a heap took before the daemon had pre-faulted them, the
	 * daemon's to finish (the lock; at most OL_COLD_MAX a pass) */
#define OL_COLD_MAX 64 /* 256 MiB: every segment taken below OL_PREFAULT_MIN (64 MiB), and more */
	struct ol_seg *cold_segs[OL_COLD_MAX];
	uint32_t ncold;
	/* the spares under which segment_new wakes the daemon (the pass sets it) */
	_Atomic uint32_t wake_spares;
	/* the daemon's pass alone (kp__daemon_pass's step_mu): its measure of
	 * the demand (bytes of segments per second) and what it keeps ahead */
	kp__grow grow;
	uint64_t last_cold;
	size_t peak_in_use; /* the bytes in use at their highest, as the passes saw them */
	/* the first OL_ARENA_HEAPS heaps, in one guarded mapping made by
	 * kp_create; later ones each in a mapping of their own */
	uint8_t *arena;
	uint32_t arena_used;
	_Atomic uint64_t span_gen;
	uint32_t csz;
	uint32_t nsegs;		 /* data segments mapped (the lock): kp__ol_wanted */
	_Atomic uint32_t nheaps; /* heaps made (on ol->heaps): fc_steal looks at others' only past one */
	/* heaps abandoned (heap_abandon) and not adopted again (heap_get), the
	 * outline lock's; read without it, abandoned_take looks at none while 0 */
	_Atomic uint32_t nabandoned;
	/* segments given back (outline.c, return_idle): wholly free for
	 * decay_ms, off the heaps and onto the spares, uncharged */
	_Atomic uint64_t returned;
	/* spares unmapped (kp__ol_daemon_pass, 3.), and the passes whose unmap
	 * waited for a marked slot (outline.c, ol_readers_quiet) */
	_Atomic uint64_t unmapped, unmap_waits;
	/* segments mapped, for their metadata's color (outline.c, segment_map) */
	_Atomic uint32_t meta_colors;
	/* moved on by each parking (hand_mark, below): every other heap's
	 * thread parks its own at its next refill (refill_body). Beside
	 * meta_colors: kp__ol stays within KP_PAGE less a heap's structure
	 * (outline.c, OL_ARENA_HEAD), or the first heap takes a page of its own
	 * (test_outline_heap_pages, test_pool_pages_outline: 1,352 bytes with
	 * it after hand_mark, one page more) */
	_Atomic uint32_t hand_epoch;
	/* the pool's fresh_taken when a large block last made its thread park
	 * the free blocks of its spans in hand (outline.c, large_taken) */
	_Atomic size_t hand_mark;
	/* spans whose owners parked free blocks for the daemon to give their
	 * pages back (outline.c, hand_park; park_give takes the list whole) */
	struct ol_span *_Atomic parked;
};

/* The slice map's entries: a span's address less the map's own (0: no
 * span), so that kp_free takes p's span by one add of the map's address,
 * which it holds, where a NULL entry needed a test and a branch (an
 * instruction fewer, s32-fast). An entry of 0 reads the map's first 64
 * bytes as a span, the nil span: the entries of slices 0-7 (the first 512
 * KiB of the address space, where no segment is: segments are mapped, 4
 * MiB aligned, never at 0; span_new checks), or the empty slot's
 * kp__ol_no_map, all 0, so its lim 0 refuses every index and the full test
 * (kp__ol_free_refused) tells it a miss. Every other reader of the map
 * takes the entry through kp__ol_map_span, NULL for 0. */
static inline uintptr_t kp__ol_map_enc(const uintptr_t *map, const struct ol_span *pg)
{
	return pg ? (uintptr_t)pg - (uintptr_t)map : 0;
}
static inline __attribute__((always_inline)) struct ol_span *kp__ol_map_nil(const uintptr_t *map, uintptr_t e)
{
	return (struct ol_span *)((uintptr_t)map + e);
}
/* The span of slice i (a >> OL_SLICE_SHIFT), or NULL: relaxed, as the
 * daemon clears a slice's entry (return_idle) while a stale pointer's free
 * may read it. */
static inline struct ol_span *kp__ol_map_span(const uintptr_t *map, uintptr_t i)
{
	uintptr_t e = __atomic_load_n(&map[i], __ATOMIC_RELAXED);
	return e ? kp__ol_map_nil(map, e) : NULL;
}
static inline void kp__ol_map_set(uintptr_t *map, uintptr_t i, const struct ol_span *pg)
{
	__atomic_store_n(&map[i], kp__ol_map_enc(map, pg), __ATOMIC_RELAXED);
}

/* The calling thread's slot for one outline pool (kp__ol_tls, internal.h):
 * a part of the library's one thread-local block, so that kp_alloc and
 * kp_free reach it and the default path's fast words through one GOT load. */
#define kp__ol_slot (kp__tls_state.ol)

/* The id kp__ol_slot holds for pool: its id, in either mode (s33-sig:
 * checks:off had KP_OL_ID_UNCHECKED in it, and kp_free a second compare
 * with aid; now both fast paths compare and mark one word, kp__ol_enter).
 * A checks-off pool's fast free tests the canary as checks on does: its
 * records' canary is 0 and kp__ol_pop_fast writes those 8 zero bytes past
 * the request (the class has room for them in either mode), so its free
 * passes; a block another pop handed out (kp__ol_pop, fc_pop: no canary
 * written with checks off), or whose bytes past the request were written
 * (kp_usable_size gives the whole block there), goes to the full test,
 * which tests no canary with checks off (the span's csz), and is freed
 * there. kpbench a, checks off: 67.0 -> 66.0 instructions a pair.
 *
 * Since s38-fasta the slot names a pool by its address + 1 (its tag), not
 * its id: kp_alloc and kp_free make it from the pointer (one lea), where
 * they tested it for NULL and loaded the id (3 instructions), 2 fewer a
 * call (kpbench a 65.0 -> 61.0 a pair). A NULL pool's tag is 1, which no
 * slot holds (below); a pointer that is no pool matches no slot (the id's
 * compare matched memory whose first word was the slot's id: a buffer of
 * zeros in a handler's call while the slot was marked 0). The address is
 * never a new pool's while a thread's slot names it: the slot holds a
 * reference to the pool's structure (pool.c, kp__pool_unref; outline.c,
 * slot_name), so a destroyed pool's mapping stays until the last slot
 * that names it names another pool or its thread ends (then unmapped: no
 * mapping kept for good; a thread whose exit hook never runs keeps it).
 * Pool structures are page-aligned (pool.c), so tags are 1 modulo 4096;
 * the marks' arithmetic (kp__ol_enter) rests on it. */
#define KP_OL_TAG_ALIGN 4096u
_Static_assert(KP_PAGE % KP_OL_TAG_ALIGN == 0, "pool structures (page-aligned) at tags 1 modulo KP_OL_TAG_ALIGN");
static inline uint64_t kp__ol_slot_id(const kp_pool *pool)
{
	return (uint64_t)(uintptr_t)pool + 1;
}
/* The pool a tag names (kp__ol_slot_id's inverse), for the fast paths'
 * ways out that pass it on (a refill, a refusal, a relist, another
 * thread's span), which make it there: the fast paths take the tag alone,
 * so that the preload's malloc and free pass no pool (alloc.c, kp__malloc,
 * kp__free_try). The empty volatile asm keeps the subtract where it is
 * used: gcc hoisted it before the slot's test, onto the fast path, where
 * nothing needs it (1 instruction a malloc and a free, s39-small). */
static inline __attribute__((always_inline)) kp_pool *kp__ol_tag_pool(uint64_t tag)
{
	__asm__ volatile("" : "+r"(tag));
	return (kp_pool *)(uintptr_t)(tag - 1);
}
extern struct ol_heap kp__ol_empty_heap;

/* A call into an outline pool marks its thread's slot for its length: the
 * slot's id holds 0 (no pool's tag; aid keeps the tag), so that a signal
 * handler's call on the same thread meanwhile matches no fast path
 * (kp_alloc's and kp_free's compare of the id fails) and goes to the slow
 * paths, which find the slot marked (kp__ol_marked: id != aid) and keep
 * off the heap: an allocation takes alloc.c's path (kp__alloc_classic), a
 * free puts its block onto its span's cross-thread list (outline.c,
 * free_nested), as another thread's free would, for the owner's drain.
 * Before (s32, test_outline_signal_dup_attack32), a handler's pop inside
 * its thread's fast pop (kp__ol_pop_fast: the index read, sp not yet
 * lowered) took the same index, and its push of another block onto the
 * slot the index came from was dropped by the interrupted pop's store of
 * sp: blocks held twice, double frees reported that no one made, bytes
 * lost; a push interrupted alike lost the handler's block or put one it
 * held back on the stack. Paths that leave the inline code by a tail call
 * keep the mark, and the function called unmarks as it ends
 * (kp__ol_unmark). Other marks (outline.c: alloc.c's path inside a call,
 * KP_OL_MARK_CLASSIC) are stored out of line: any id but aid is a mark.
 *
 * The mark costs the fast paths nothing in instructions against an
 * unmarked compare (s34-sig: kpbench a 66.0 a kp_alloc + kp_free, as main
 * b7ad467): the compare of the slot's id with the pool's IS the mark, one
 * subtract to memory (sub id from the slot's id: 0, so marked, when they
 * were equal; the zero flag tells), the unmark is one store of the id
 * (kp__ol_leave), and the stack pointer moves by one add or subtract to
 * memory (kp__ol_sp_commit, one instruction fewer than a load and a store),
 * which no handler's call can now interleave. s33-sig compared and marked
 * by x86-64's compare-and-exchange (unlocked: one instruction, but
 * microcoded, kpbench a 14.6% slower by CPU time), s33-sig2 by a compare
 * and a store (2 instructions a pair over main's budgets).
 *
 * Why it is signal-safe with no lock and no compare-and-exchange. A signal
 * is taken between two instructions, never inside one, so the subtract
 * (a load, a subtract and a store in one instruction) is whole against any
 * handler's call on this thread; other threads never touch the slot (it is
 * thread-local). It must be one instruction (asm: gcc makes one of
 * C's load, subtract and store, but need not): a handler's call between a
 * separate load and store may find the slot unmarked and remake it for
 * another pool (kp__ol_free, heap_get), and the store would then write an
 * id computed from the slot before, and the heap read after it would be
 * the other pool's (s33-sig2's compare and store had that window). Within
 * this call's windows (between the subtract and the add, or the subtract
 * and the unmark's store) the slot's id is not its aid: it reads as
 * marked (0 then, or off by this pool's tag, below; tags are never 0). A
 * call that finds the slot marked leaves its id as it found it: its own
 * subtract is undone by its add or its unmark's store of the id the slot
 * held, the out-of-line marks restore what they replaced, and the nested
 * ways never remake the slot (only a call that finds it unmarked does).
 * So a handler's call inside a window leaves the slot's id as this call
 * left it, and the add and the store act on the value they expect, as if
 * no handler had run.
 * The case that did not match leaves the slot's id off by the pool's tag
 * until its add (one instruction later): a handler's call there must not
 * match it. It does not, by the values modulo KP_OL_TAG_ALIGN: a tag
 * (kp__ol_slot_id, a page-aligned address + 1) is 1; the marks are 0 (the
 * fast paths', an empty slot's, slot_name's), 3 (KP_OL_MARK_CLASSIC: the
 * address | 3) and 0 (poison_mark: the address); so a slot's id less a tag
 * is 0, 4095, 2 or 4095, never 1, and no handler's call takes it for its
 * own (a NULL pool's tag, 1, is 1 too: it matches no slot, as no slot
 * holds 1 or 2). Such a handler's call finds the slot marked (id != aid)
 * and takes the nested ways: right, only slower, for that one instruction.
 * Only a handler's call with a pointer that is no pool and equals a mark
 * less 1 (~0, such an address | 2, or less 1) may match a marked slot (the
 * id's compare: memory whose first word was 0). The memory clobber keeps the
 * heap's loads after the subtract (a compiler fence, as the signal fence);
 * the add needs none: the paths past it touch no heap. */
static inline __attribute__((always_inline)) bool kp__ol_enter(uint64_t id)
{
#ifdef __x86_64__
	bool eq;
	__asm__ volatile("subq %2, %0" : "+m"(kp__ol_slot.id), "=@ccz"(eq) : "r"(id) : "memory");
	if (KP_LIKELY(eq))
		return true;
	__asm__ volatile("addq %1, %0" : "+m"(kp__ol_slot.id) : "r"(id));
	return false;
#else
	/* one read-modify-write elsewhere too: an atomic one (a locked
	 * instruction where the ISA has no plain one to memory) */
	if (KP_LIKELY(__atomic_sub_fetch(&kp__ol_slot.id, id, __ATOMIC_RELAXED) == 0)) {
		atomic_signal_fence(memory_order_seq_cst);
		return true;
	}
	__atomic_add_fetch(&kp__ol_slot.id, id, __ATOMIC_RELAXED);
	return false;
#endif
}
/* The mark undone by the inline paths (id: the pool's, kp__ol_enter's). */
static inline __attribute__((always_inline)) void kp__ol_leave(uint64_t id)
{
	atomic_signal_fence(memory_order_seq_cst);
	kp__ol_slot.id = id;
}
/* Is the slot marked (above): is this call nested inside another on the
 * same thread (a signal handler's)? */
static inline bool kp__ol_marked(void)
{
	return kp__ol_slot.id != kp__ol_slot.aid;
}
/* The mark while the call is inside alloc.c's path (outline.c,
 * free_classic_marked: the pool's address | this): a handler's call then
 * keeps off alloc.c's thread cache, which the interrupted call is
 * changing, and takes this path's heap, which it is not. */
#define KP_OL_MARK_CLASSIC 3u /* no tag (kp__ol_enter: 3 modulo KP_OL_TAG_ALIGN; | 1 was, s38-fasta) */
/* kp_free of a call nested inside another (the slot marked): outline.c. */
int kp__ol_free_nested(kp_pool *pool, void *p);
/* The mark undone out of line (outline.c; the slot names the pool). */
static inline void kp__ol_unmark(void)
{
	atomic_signal_fence(memory_order_seq_cst);
	kp__ol_slot.id = kp__ol_slot.aid;
}

/* The slow halves (outline.c): a class run dry (or whose foreign cache holds
 * blocks: they go first), and everything else. */
void *kp__ol_refill(kp_pool *pool, struct ol_heap *h, size_t cls, size_t n);
int kp__ol_free_slow(kp_pool *pool, void *p, struct ol_span *pg, uint32_t idx, uint32_t st, int why);
/* kp__ol_free_other's key: pool's address | try_only (pools are
 * KP_OL_TAG_ALIGN-aligned, so with try_only it is pool's tag, which the
 * fast free holds in a register: kp__ol_slot_id), one argument where two
 * took two registers across the whole call. */
int kp__ol_free_other(uint64_t key, struct ol_span *pg, uint64_t idx, void *p);
enum { KP_OL_MISS, KP_OL_BAD, KP_OL_DFREE, KP_OL_OVERFLOW, KP_OL_OTHER };

static inline uintptr_t kp__ol_self(void)
{
	return (uintptr_t)__builtin_thread_pointer();
}

/* kp__ol_self read apart (x86-64: its own load of %fs:0), where a second
 * test of the thread pointer must not make gcc keep the first in a
 * register: the first test then compares with %fs:0 in memory, one
 * instruction (kp_free's owner test; its retired case reads it again). */
static inline __attribute__((always_inline)) uintptr_t kp__ol_self_again(void)
{
#ifdef __x86_64__
	uintptr_t tp;
	__asm__("movq %%fs:0, %0" : "=r"(tp));
	return tp;
#else
	return kp__ol_self();
#endif
}

/* A span's stack pointer: written by its owner alone, read by kp_stats
 * (kp__ol_in_use) from any thread, so relaxed atomics (plain moves on
 * x86-64: the fast paths' code is the same). */
static inline uint16_t *kp__ol_sp(const struct ol_span *pg)
{
	return __atomic_load_n(&pg->sp, __ATOMIC_RELAXED);
}
static inline void kp__ol_sp_set(struct ol_span *pg, uint16_t *sp)
{
	__atomic_store_n(&pg->sp, sp, __ATOMIC_RELAXED);
}
/* A free's push: release (a plain move on x86-64 too), so that a heap that
 * adopts the span wholly free (outline.c, span_adopt: its acquire load of
 * sp) sees the stack and the records as the owner left them. */
static inline void kp__ol_sp_push(struct ol_span *pg, uint16_t *sp)
{
	__atomic_store_n(&pg->sp, sp, __ATOMIC_RELEASE);
}
/* The fast paths' move of sp by d entries (+1 a push, -1 a pop): one add
 * or subtract to memory on x86-64, no lock (kp__ol_enter: no handler's
 * call comes between its load and store; another thread reads sp
 * relaxed, kp__ol_in_use, and a push's stores are in order, as the
 * release of kp__ol_sp_push: x86-64's). Before s33 a plain store of the
 * value read (2 instructions), as a read-modify-write turned a handler's
 * push between the load and the add into a stale entry. */
static inline __attribute__((always_inline)) void kp__ol_sp_commit(struct ol_span *pg, int d)
{
	/* TSan: the atomic store, which it sees (span_adopt's acquire of sp
	 * pairs with it); the mark alone keeps handlers off either way */
#if defined(__x86_64__) && !defined(__SANITIZE_THREAD__)
	if (d > 0)
		__asm__ volatile("addq $2, %0" : "+m"(pg->sp) : : "memory");
	else
		__asm__ volatile("subq $2, %0" : "+m"(pg->sp) : : "memory");
#else
	uint16_t *sp = kp__ol_sp(pg) + d;
	__atomic_store_n(&pg->sp, sp, __ATOMIC_RELEASE);
#endif
}
/* The index of the block at offset off of pg when off is a block's start,
 * else a number past 2^64 / bsize, so past nblocks: off * inv rotated
 * right by rot (exact division, Granlund and Montgomery 1994, Hacker's
 * Delight 10-17: bsize = odd << rot; off * inv is off / odd when odd
 * divides off, and rotating it by rot then takes its rot low bits, zero
 * when 1 << rot divides it too, to the top). One multiply and a rotation
 * where the index from a reciprocal and its product with bsize were two
 * multiplies and a load more (kp_free: 2 instructions, test_outline_index
 * compares the two for every class). */
/* The inverse of an odd d mod 2^64 (pg->inv: span_new): Newton's
 * iteration, each step doubling the bits that are right, from d's 3 (d * d
 * = 1 mod 8). */
static inline uint64_t kp__ol_inverse(uint64_t d)
{
	uint64_t x = d;
	for (int i = 0; i < 5; i++)
		x *= 2 - d * x;
	return x;
}

static inline __attribute__((always_inline)) uint64_t kp__ol_index(const struct ol_span *pg, uintptr_t off)
{
	uint64_t q = off * pg->inv;
	unsigned r = pg->rot;
	return q >> r | q << (-r & 63);
}

/* The class of n bytes (request and canary), 1 KiB < n <= 64 KiB: a table
 * by (n - 1) >> 5 (outline.c, kp__ol_class_big_tbl: every class boundary
 * past 1 KiB is a multiple of 32), 2 KiB of it. A lea, a shift, the
 * table's address and a load, where the formula it holds (8 a doubling:
 * one bsr, two shifts, three lea) took 8 instructions, and 10 with
 * OL_CLASS_PAGE_PLUS's bit (kpbench b, half its requests past 1 KiB: 83.3
 * instructions an operation against main's 81.7). */
extern const uint8_t kp__ol_class_big_tbl[OL_SMALL_MAX / 32];
static inline uint32_t kp__ol_class_big(size_t n)
{
	return kp__ol_class_big_tbl[(n - 1) >> 5];
}

/* The class of q * 16 bytes, q = 0..64 (outline.c). */
extern const uint8_t kp__ol_class_tbl[65];

/* Pop idx, the top of pg's stack (not OL_SENT). */
static inline __attribute__((always_inline)) void *kp__ol_pop(struct ol_heap *h, struct ol_span *pg, uint16_t *sp,
							      uint32_t idx, size_t n)
{
	kp__count_inc(&h->allocs, 1);
	kp__ol_sp_set(pg, sp - 1);
	uint8_t *p = pg->own_start + (size_t)idx * pg->own_bsize;
	struct ol_rec *r = &pg->own_rec[idx];
	r->state = (uint32_t)n + 1;
	if (KP_LIKELY(pg->csz)) {
		uint64_t c = kp__ol_canary(r);
		memcpy(p + n, &c, 8);
	}
	return p;
}

/* The fast paths' records by base and index: each access to rec[idx] in
 * its own addressing mode, where gcc computed &rec[idx] once (a lea) for
 * two or three accesses (an instruction more). An empty asm between two
 * accesses makes the base another value to gcc, so it shares no address;
 * the base's register is the same (the first use is its last). */
static inline __attribute__((always_inline)) void kp__ol_rec_apart(struct ol_rec **rec, size_t *idx)
{
	__asm__("" : "+r"(*rec), "+r"(*idx));
}

/* kp__ol_pop for kp__ol_alloc_fast: the canary written in either mode. Its
 * 8 bytes are in the block with checks off too (the class is n's and a
 * canary's: kp__ol_alloc_fast), where they are the caller's, not yet
 * written (the record's canary is 0 there: span_extend draws none), so the
 * test of pg->csz is saved (3 instructions). Not kp__ol_pop's callers in
 * outline.c: a poison pool's allocation checks those bytes after the pop. */
static inline __attribute__((always_inline)) void *kp__ol_pop_fast(struct ol_heap *h, struct ol_span *pg, size_t idx,
								   size_t n, uint64_t id)
{
	kp__ol_sp_commit(pg, -1);
	kp__ol_leave(id); /* idx is this call's: no other pop finds it now */
	kp__count_inc(&h->allocs, 1);
	uint8_t *p = pg->own_start + idx * pg->own_bsize;
	struct ol_rec *rec = pg->own_rec;
	uint64_t c = kp__ol_canary(&rec[idx]);
	kp__ol_rec_apart(&rec, &idx);
	/* relaxed atomic: a plain store on x86-64 (the same instructions), and
	 * TSan sees it as one: another thread's rec_claim reads a stale
	 * foreign-cache entry's record (a double free the program raced) at
	 * its exit's flush while the owner hands the block out again
	 * (test_outline_line_dfree_attack32 under TSan) */
	__atomic_store_n(&rec[idx].state, (uint32_t)n + 1, __ATOMIC_RELAXED);
	memcpy(p + n, &c, 8);
#ifdef __x86_64__
	/* p made where it is returned (rax): gcc 12 put the index there (sp's
	 * register, free once the stack pointer moves by kp__ol_sp_commit)
	 * and p in another, then a move (1 instruction an allocation) */
	__asm__("" : "+a"(p));
#endif
	return p;
}

/* kp_alloc without flags of the pool whose id the calling thread's slot
 * names (alloc.c, alloc_fast, tested both): a request the table covers
 * pops its class's span in hand; a larger one up to OL_SMALL_MAX, the span
 * in hand of its class; a class run dry goes to kp__ol_refill, anything
 * else to alloc.c's slow path (kp__ol_alloc). Inline in kp_alloc: no call,
 * no stack frame. */
static inline __attribute__((always_inline)) void *kp__ol_alloc_fast(size_t n, uint64_t id)
{
	struct ol_heap *h = kp__ol_slot.heap;
	if (KP_LIKELY(n <= OL_TBL_MAX)) {
		/* the class of n and a canary, in either mode: with checks off a
		 * block keeps the 8 bytes (the mode is not loaded here) */
		size_t q = (n + OL_CANARY + 15) >> 4;
		struct ol_span *pg = h->direct[q];
		uint16_t *sp = kp__ol_sp(pg);
		size_t idx = *sp; /* size_t: an index, not extended again */
		if (KP_LIKELY(idx != OL_SENT))
			return kp__ol_pop_fast(h, pg, idx, n, id);
		return kp__ol_refill(kp__ol_tag_pool(id), h, kp__ol_class_tbl[q], n);
	}
	if (KP_LIKELY(n <= OL_SMALL_MAX - OL_CANARY)) { /* past the table: 8 classes a doubling */
		uint32_t cls = kp__ol_class_big(n + OL_CANARY);
		struct ol_span *pg = h->fast[cls];
		uint16_t *sp = kp__ol_sp(pg);
		size_t idx = *sp;
		if (KP_LIKELY(idx != OL_SENT))
			return kp__ol_pop_fast(h, pg, idx, n, id);
		/* the class again (n apart: not the value above), so that the
		 * pop keeps no copy of it for this call (a mov fewer) */
		size_t m = n;
		__asm__("" : "+r"(m));
		return kp__ol_refill(kp__ol_tag_pool(id), h, kp__ol_class_big(m + OL_CANARY), n);
	}
	kp__ol_leave(id);
	return kp__alloc_slow(kp__ol_tag_pool(id), n, 0); /* pool: checked there, then kp__ol_alloc */
}

/* What kp__ol_free_fast returns with try_only for a pointer it leaves
 * alone (positive: no kp_free code). */
#define KP_OL_UNTRIED 1

/* kp__ol_free_check's refusals, out of line (alloc.c): p's tests again,
 * each failure sent on with its reason (kp__ol_free_slow), or with
 * try_only KP_OL_UNTRIED. The fast path passes nothing but pool and p, so
 * that it keeps no register for them and sets up no argument on its way. */
int kp__ol_free_refused(kp_pool *pool, void *p, bool try_only);

/* The canary test of kp__ol_free_check: by the span's canary size (either
 * mode), or known from the slot (kp__ol_slot_id) to be on or off. */
enum { KP_OL_CANARY_OFF, KP_OL_CANARY_ON, KP_OL_CANARY_SPAN };

/* Is the canary of the block p (record r, state st) damaged? Never with the
 * canary off. The record's canary is in a register (its 32-bit load
 * extends it), compared with the block's in memory. Before s27 an empty
 * asm kept the 64-bit canary in a register (else gcc took a callee-saved
 * one and kp_free saved four on every call); with the 32-bit load it kept
 * the record's address in another register than the checks-off path's,
 * whose store then no longer shared the fast free's tail (a jump more). */
static inline __attribute__((always_inline)) bool kp__ol_canary_bad(const struct ol_rec *r, const void *p, size_t st)
{
	uint64_t want = kp__ol_canary(r), c;
	memcpy(&c, (const uint8_t *)p + st - 1, 8);
	return c != want;
}
#define KP_OL_CANARY_BAD(canary, pg, r, p, st)                                            \
	(((canary) == KP_OL_CANARY_ON || ((canary) == KP_OL_CANARY_SPAN && (pg)->csz)) && \
	 KP_UNLIKELY(kp__ol_canary_bad(r, p, st)))

/* A retired span's relisting (outline.c, span_relist_locked) after its
 * owner's free pushed a block: 0, kp_free's. */
int kp__ol_relist(kp_pool *pool, struct ol_span *pg);

/* kp__ol_free_check's refusal: full, the reason told apart (to
 * kp__ol_free_slow, or with try_only KP_OL_UNTRIED); else the whole test
 * again out of line (kp__ol_free_refused). */
#define KP_OL_REFUSE(pg, idx, st, why)                                                                    \
	return full ? (try_only ? KP_OL_UNTRIED                                                           \
				: kp__ol_free_slow(kp__ol_tag_pool(id), p, pg, idx, (uint32_t)(st), why)) \
		    : kp__ol_free_refused(kp__ol_tag_pool(id), p, try_only)

/* kp__ol_free_check's second half, on a span of the calling thread (pg,
 * p's index q): the record allocated, the canary intact, then the push.
 * retired (a constant at each call): the span is the owner's retired one
 * (OL_OWN_FULL), relisted once an eighth of it is free (as outline.c's
 * free_other_checked, where these frees went through kp__ol_free_other
 * before: kpbench b, where 3 in 10 frees find a retired span, ran ~40
 * instructions a call there). */
static inline __attribute__((always_inline)) int kp__ol_free_own(void *p, struct ol_span *pg, uint64_t q, bool try_only,
								 int canary, bool full, bool retired, uint64_t id)
{
	uint32_t idx = (uint32_t)q;
	/* by q, not idx: the same index (q <= last), not extended again (an
	 * instruction less) */
	struct ol_rec *rec = pg->rec;
	/* relaxed (a plain load): a double free from another thread at once
	 * may race it; size_t: an address's part, not extended again. Not
	 * live: free, or taken by another thread's free (OL_REMOTE, OL_LISTED) */
	size_t st = __atomic_load_n(&rec[q].state, __ATOMIC_RELAXED);
	kp__ol_rec_apart(&rec, &q);
	if (KP_UNLIKELY(kp__ol_dead(st)))
		KP_OL_REFUSE(pg, idx, st, KP_OL_DFREE);
	/* A double free by another thread at once may swap the record to
	 * OL_REMOTE after the load above: it then spoils the canary
	 * (outline.c, free_remote), so this test refuses the free if it reads
	 * the canary after that, and the full test finds OL_REMOTE. Past it,
	 * the store below may still overwrite OL_REMOTE: the block is then on
	 * this stack and in the other thread's cache, and whoever takes it
	 * from the cache finds the record not OL_REMOTE (outline.c, "Threads"). */
	if (KP_OL_CANARY_BAD(canary, pg, &rec[q], p, st))
		KP_OL_REFUSE(pg, idx, st, KP_OL_OVERFLOW);
	kp__ol_rec_apart(&rec, &q);
	__atomic_store_n(&rec[q].state, OL_FREE, __ATOMIC_RELAXED); /* a plain store: no locked instruction */
	uint16_t *top = kp__ol_sp(pg) + 1;
	*top = (uint16_t)q; /* q: the value past kp__ol_rec_apart (no copy kept) */
	kp__ol_sp_commit(pg, 1);
	if (retired && (uint32_t)(top - pg->stack0) >= pg->relist_at)
		return kp__ol_relist(kp__ol_tag_pool(id), pg); /* it unmarks */
	if (!full)					       /* full: the caller out of line unmarks */
		kp__ol_leave(id);
#ifdef __x86_64__
	/* checks off: a 0 gcc cannot merge with the checked path's (it ended
	 * this path with a jump to that one's xor and ret: an instruction more) */
	if (canary == KP_OL_CANARY_OFF && !retired) {
		int zero;
		__asm__("xorl %0, %0" : "=r"(zero));
		return zero;
	}
#endif
	return 0;
}

/* The owner's free into its retired span by kp__ol_free_own (s29-fast, b
 * 87.2 -> 80.1 instructions a pair; 0: through kp__ol_free_other). Off in
 * s29 after 2 of 2 full TSan suites with it failed
 * test_outline_purge_live_attack27 (double_free 22 and 35 over): a block
 * listed twice after a raced owner's free, which either path can make (a
 * cycle of one block in a span of 36 reports 35 more: outline.c,
 * OL_LINK_ON; test_outline_relisted), not this path's. Inline in kp_free
 * since s37-fast (kp__ol_free_check; out of line in kp__ol_free_retired
 * before). */
#define KP_OL_RETIRED_OWN 1

/* kp_free of a pool the calling thread's slot names (alloc.c tested it):
 * the slice map finds p's span in one load, or not (a pointer of alloc.c's
 * path, or none); then p must be a block start, its record allocated, its
 * canary intact (canary: KP_OL_CANARY_*), and the span this thread's
 * (listed, or retired: kp__ol_free_own); another thread's span goes to
 * kp__ol_free_other, anything else to kp__ol_free_refused (full: the
 * reasons told apart here, to kp__ol_free_slow, which reports or hands
 * over). try_only (the preload's free(), kp__free_try): what is no plain
 * free (a pointer the map does not know, a violation) is left alone,
 * KP_OL_UNTRIED, for the preload's hook, which frees or reports it in
 * free()'s name; a free to another thread's span or a retired one is made. */
static inline __attribute__((always_inline)) int kp__ol_free_check(void *p, bool try_only, int canary, bool full,
								   uint64_t id)
{
	uintptr_t a = (uintptr_t)p;
	/* The slice's number masked, not compared with the map's size (an
	 * instruction fewer: and, where a compare and a branch were): a
	 * pointer past the map (2^47 and up) may find a span through its
	 * alias, where its offset from the span's start is no block's
	 * (kp__ol_index: past lim), and the full test, which refusals come
	 * back to, still tells it a miss, as before. An empty slot's mask is
	 * 0, its map kp__ol_no_map: a miss. */
	if (full && KP_UNLIKELY((a >> OL_SLICE_SHIFT) >= OL_MAP_N))
		KP_OL_REFUSE(NULL, 0, 0, KP_OL_MISS);
	/* relaxed (a plain mov): a stale pointer's free may race the daemon's
	 * clearing of its slices (return_idle), a C11 data race as a plain
	 * load, which TSan laid at kpool's door (test_outline_map_race_attack30b) */
	const uintptr_t *map = kp__ol_slot.map;
	uintptr_t slice = (a >> OL_SLICE_SHIFT) & kp__ol_slot.map_mask;
	struct ol_span *pg;
#if defined(__x86_64__) && !defined(__SANITIZE_THREAD__)
	if (!full) {
		/* the entry added to the map's address by one add from memory
		 * (kp__ol_map_nil), where gcc 12 loads a relaxed atomic apart
		 * and then adds it (an instruction more a free: s38-fasta,
		 * kpbench a 66.0 -> 65.0 a pair). The asm's load is one aligned
		 * 8-byte read, as the relaxed load's; TSan keeps the atomic,
		 * which it sees (test_outline_map_race_attack30b). */
		uintptr_t base = (uintptr_t)map;
		__asm__("addq %1, %0" : "+r"(base) : "m"(map[slice]));
		pg = (struct ol_span *)base;
	} else
#endif
	{
		uintptr_t e = __atomic_load_n(&map[slice], __ATOMIC_RELAXED);
		/* no span: the nil span (kp__ol_map_nil), whose lim refuses
		 * below; the full test tells it apart */
		if (full && KP_UNLIKELY(!e))
			KP_OL_REFUSE(NULL, 0, 0, KP_OL_MISS);
		pg = kp__ol_map_nil(map, e);
	}
	uint64_t q = kp__ol_index(pg, a - (uintptr_t)pg->start);
	/* an interior pointer fails the test; the span's tail (idx ==
	 * nblocks) lands on the sentinel record, always free */
	if (KP_UNLIKELY(q >= pg->lim))
		KP_OL_REFUSE(pg, 0, 0, KP_OL_BAD);
	uintptr_t own = atomic_load_explicit(&pg->owner, memory_order_relaxed);
	if (KP_LIKELY(own == kp__ol_self()))
		return kp__ol_free_own(p, pg, q, try_only, canary, full, false, id);
	/* this thread's retired span: the same checks and push, inline, its
	 * relist out of line (kp__ol_relist). Out of line before (s29-s36,
	 * kp__ol_free_retired: inline, gcc 12 then kept a fifth register for
	 * the inline layout's path in kp_free; no longer, s37-fast: layout:inline
	 * a 190.15 and b 229.94 instructions a pair either way). kpbench b,
	 * where 1 free in 8 finds a retired span: 76.85 -> 75.56 a pair (the
	 * call, its arguments' moves, the canary size's test and the unmark's
	 * loads of the slot, about 9 instructions a retired free) */
	if (KP_OL_RETIRED_OWN && own == (kp__ol_self_again() | OL_OWN_FULL))
		return kp__ol_free_own(p, pg, q, try_only, canary, full, true, id);
	/* another thread's span: kp__ol_free_other makes the checks there,
	 * after a prefetch for writing of the record (its compare-and-swap then
	 * takes the line from the allocating CPU once, not once to read and
	 * again to write) */
	/* the key: the pool, its low bit try_only (the tag is pool + 1) */
	return kp__ol_free_other(try_only ? id : (uint64_t)(uintptr_t)kp__ol_tag_pool(id), pg, q, p);
}
#undef KP_OL_REFUSE

/* outline.c's kp_free (kp__ol_free): the canary test by the span. */
static inline __attribute__((always_inline)) int kp__ol_free_fast(void *p, bool try_only, uint64_t id)
{
	return kp__ol_free_check(p, try_only, KP_OL_CANARY_SPAN, false, id);
}

#pragma GCC visibility pop

#endif /* KP_OUTLINE_H */
