/*
 * outline.c - the out-of-line small path: a pool made with layout:outline
 * serves requests up to 64 KiB here (issue 14; the design and its
 * measurements: allocator/proto/README.md, whose fast paths this carries
 * over). Everything else (larger blocks: huge.c and the large runs; a
 * critical request: the backup; a pointer that is none of these blocks)
 * goes to alloc.c's path as with layout:inline.
 *
 * Memory: 4 MiB data segments, 4 MiB aligned, cut into 64 KiB slices; a span
 * of one or more slices holds blocks of one size class. Nothing of the
 * allocator lives in a data segment: each segment's metadata (the span
 * records, each span's free stack of block indices and its cross-thread
 * list's links, an 8-byte record per block: 12 bytes a block, outline.h;
 * the links at the mapping's top, so 10 resident while no other thread frees:
 * meta_take_top)
 * is in a mapping of its own with a PROT_NONE page on either side (and,
 * for a segment's, up to OL_META_COLORS pages more, so that different
 * segments' metadata takes different cache sets: outline.h), and so
 * are the threads' heaps (the first 64 in one arena). No header precedes a block and no link lives in a free
 * one: there is nothing to forge (test_outline_integrity's overwrite of a
 * span's free blocks).
 *
 * The pool's slice map (one pointer per 64 KiB of the 47-bit address space,
 * a 16 GiB MAP_NORESERVE mapping of which only the entries of used slices
 * are touched) takes a pointer to its span in one load: a pointer the map
 * does not know is no block of this path, and alloc.c's path decides (a
 * huge or backup block, or an invalid free). So kp_free of a stack, data,
 * foreign or another pool's pointer is refused before anything near it is
 * read; an interior pointer fails the exact division of its offset (kp__ol_index); a span's tail
 * lands on a sentinel record that is always free.
 *
 * Checks (checks:on, the default), each contained with kpool's events,
 * "leak the block, keep going" (kp__violation):
 *  - double free, exact: a block's record holds its request + 1, or OL_FREE
 *    (0: the records of blocks never handed out are untouched zero pages),
 *    or a heap's tag / OL_LISTED (another thread's free took it: "Threads");
 *    a cross-thread free changes it by compare-and-swap, the owner's by a
 *    plain store (the race of the two: "Threads");
 *  - write past the request: 8 bytes at p + request hold the block's canary,
 *    a secret of 32 bits and 4 zero bytes (outline.h, ol_rec): K(address ^
 *    span generation) drawn when its span is made and kept in its record
 *    (K: the pool's keyed function, kp__hkey: AES-NI where the CPU has
 *    it), so a canary read from one block is no other's;
 *  - invalid pointers, as above.
 * checks:off drops the canary and its 8 bytes; the pointer and double-free
 * tests stay, as the free stacks' soundness depends on them.
 *
 * Threads: a heap per thread and pool (its spans, no lock); a span's owner
 * is its heap's thread pointer (%fs:0), so free's one compare says "this
 * thread's"; with OWN_FULL set the span is retired (full, in no list).
 * A free from another thread (free_remote) makes the record its heap's tag
 * (outline.h, OL_REMOTE) by compare-and-swap (two threads freeing one block: one wins, the other is
 * a double free) and puts the block into the freeing thread's foreign
 * cache: per class, out of line in its heap, OL_FC_MAX entries and
 * OL_FC_BYTES a class (OL_FC_LONE_BYTES until the heap allocates the
 * class: a consumer's blocks wait there for no allocation). While a
 * class's cache holds blocks the heap's fast tables point that class at
 * the empty span, so its allocations miss and
 * kp__ol_refill hands the cached blocks out first (no instruction more on
 * the fast paths): blocks move between threads as in jemalloc's and
 * tcmalloc's caches, and a thread that frees what another allocated reuses
 * it at once (of a class under a cache line, only once it allocates the
 * class from a span of its own: FC_LINE_CLASSES, Hoard's cache-scratch).
 * A full class sends its older half back, a chain per span
 * pushed onto the span's cross-thread list with one compare-and-swap, and
 * the span onto its heap's dirty list; the owner takes in one span's of a
 * class when the class runs dry (drain_class), and a heap about to touch new
 * pages takes other heaps' listed blocks into its cache, or adopts a
 * retired span of theirs whose blocks are all free, listed or not
 * (fc_steal, span_quiet: s33, test_outline_line_stranded_attack32). A
 * cached block is on no stack, so its span is never wholly free meanwhile:
 * no heap adopts it, no purge drops its pages, no thread but the cache's
 * writes its record. Before (s22), every cross-thread free
 * made three or four contended atomics (the record, a count, the list, the
 * dirty list) on lines its owner wrote: kpbench c 4 against the inline
 * path's 16 M ops/s, and larson's frees waited on their owners' lists.
 * A span's fields are on three lines by writer (outline.h).
 * s29 measured where a cross-thread free's time goes (bench/programs/
 * xpair.c, two threads pinned apart, each round timed alone, ns a pair):
 * 84-90 apart, 25-27 on one CPU, against jemalloc's and tcmalloc's 22 and
 * 7-8 (they write nothing of a block's but the block), mimalloc 89 and
 * 14. Perf's samples sat on the records' lines: both threads write each
 * block's record (the freer's swap and its cache's hand-out, the owner's
 * free and allocation), 8 to a line, so the owner's next pop or free of
 * any of 8 blocks misses; the freer's swap and spoil alone (left out,
 * unsafe: a measure) were 10-15 ns of it. A free queued for its owner's
 * check (s28, branch s28-remote: unsafe as it was, the owner's own double
 * free and reuse before the batch comes home hands the block out twice)
 * needs no generation in the record: the freer claims the block by its
 * canary (the first byte swapped by compare-and-swap on the block's own
 * line, one winner of two racing frees; the record read again after it),
 * the record stays as its owner wrote it, and the owner's drain takes a
 * block back only while its record is live and its canary the spoiled
 * one, which every allocation writes over: s28's case is refused there,
 * once. Built and reverted (this branch, commit b0da705, with its tests):
 * apart 70-73, one CPU 21.5, larson 0.53 -> 0.40 s of user time (mimalloc
 * 0.33) and 165 -> 113 instructions a pair (mimalloc 70); but a thread no
 * longer reuses what it frees, and with other heaps taking an outbox's
 * blocks only off long lists (taken at once they went to and fro: xpair
 * apart 83-115) larson's blocks touched reached 2.6-3.0x its live bytes,
 * past test_outline_xfree's 2.6x bound (2.1-2.3x with the foreign cache).
 * s30 (branch s30-remote, the outbox on 4fa3c58): kpbench c --pin apart
 * 4.6-33 M ops/s against 1.9-5.2, xpair no faster (1 1 200 under
 * callgrind: 128 M instructions against 87 M), larson's touched bytes
 * 2.03-2.17x its live bytes against 1.62-1.68x; letting fc_steal take an
 * outbox's blocks gave 1.63x back at 414 M instructions against 389 M.
 * s31 (branch s31-remote, 2 vCPUs, load 2-5) measured why: what costs
 * larson is not a free's protocol but the reuse. A thread that hands out
 * the blocks it freed of other heaps (this cache) keeps them, and frees
 * them again as another heap's: 1.08 M of larson 4 20's 1.6 M frees are
 * cross-thread on main (about 0.2 M when no thread reuses another's
 * blocks), each ~80 instructions and two cache misses (perf: the canary's
 * load in the block and the record's compare-and-swap, a third of
 * larson's samples), against a local free's ~35. The experiment (commit
 * 8cc5d62, reverted; its knobs by environment) kept main's protocol and
 * changed the policy alone: the cache sent home whole when full, never
 * handed out by its thread but for blocks fc_steal took (or, K_REUSE=1,
 * only where the heap would touch new pages): larson 4 20 294-307 M
 * instructions against 390-397 M (mimalloc 237 M, larson's own 126 M),
 * 0.18 s of user time against 0.29 (mimalloc 0.14, medians of 7
 * alternated), but 2.5-3.0x its live bytes touched (test_larson_bound:
 * 2.0x) and 13.5 MiB of RSS against 8.6 (mimalloc's 13.5): the free
 * blocks then wait on their owners' lists and stacks, in classes those
 * heaps do not need at the time. Each point that kept the bound took
 * main's instructions back (fc_steal before new pages: 388-449 M, 1.5-1.7x;
 * without it before span_extend 334 M but 1.93-2.08x, flaky against the
 * bound), and every one cost c (150.9 -> 190-199 instructions a pair,
 * tests/test_cross_instructions.py's method) and xpair (apart 25.9 ->
 * 32.3 ns a pair, one CPU 18.9 -> 24.1), whose threads need each other's
 * blocks. Kept: kp__ol_free_other's shorter path (its comment), and a
 * cache of 8 KiB a class (outline.h, OL_FC_BYTES: c 142 -> 117
 * instructions, larson 1.85x touched).
 * s34 (branch s34-cross) measured what still parts c and larson from
 * jemalloc. c's gap is not instructions: under callgrind (one thread at
 * a time) c took 121.7 a kp_alloc + kp_free against jemalloc's 119.6
 * (mimalloc 98.9); on two CPUs (xpair apart) 23.7 ns a pair against
 * 8.0-9.6 (mimalloc 36). perf's samples sat on three instructions of a
 * free: the record's load (the other thread wrote it last), the canary's
 * (its address waits for that state) and the compare-and-swap;
 * callgrind's cache model gives kpool's calls 1.3 D1 misses a pair,
 * jemalloc's and tcmalloc's 0.03 (a free of theirs reads nothing of the
 * block, and they keep nothing per block). Left out, unsafe, as measures:
 * the compare-and-swap (a store) 23.4 -> 21.8 ns, the spoil 22.9, both
 * and the canary's test 20.5: the rest is the record's line, which both
 * threads write (8 records a line). Kept: the canary's line prefetched
 * beside the record (the misses overlap) and the path shorter: xpair
 * apart 24.8 -> 22.8 ns a pair (medians of 5 alternated, load 11-12), c
 * 121.4-122.5 -> 118.6-120.2 instructions, larson 4 20 387.9 -> 382.7 M
 * (jemalloc 274 M, mimalloc 239 M). larson's gap is
 * instructions, 163 a pair against jemalloc's 92: 1.15 M of its 1.6 M
 * frees are cross-thread (a reused block stays another heap's for every
 * thread but its owner; ~0.16 M by its pattern alone), each ~100
 * instructions over an owner's (kp_free's front 20, kp__ol_free_other 57,
 * the refill's pop 38, against ~50 a pair), and its time more so (user
 * 0.34 s against 0.14, 2.4x, for 1.39x the instructions): perf put 20% of
 * its samples on kp__ol_free_other's compare-and-swap, a locked
 * instruction that waits for the stores before it (larson's memset of
 * the block the last malloc returned, a line another CPU wrote) where
 * jemalloc's free lets them drain. A store in its stead (the owner's
 * free's way) would let an owner's free and another thread's, racing,
 * both keep the block with no event (the owner's store first, the other
 * over it: its cache's claim then finds its tag), a window of a few
 * instructions with no preemption in it: not taken. mimalloc (a page's thread
 * free list) and snmalloc (batches to the owner) link the freed block
 * through itself, which this design refuses (nothing to forge in a block),
 * and the outboxes that send blocks home (s28, s30, s31) cost memory.
 * s35 (branch s35-larson) timed larson (4 100, task-clock, medians of 7-11
 * alternated, load 12-16): the swap as a load and a store (unsafe, a
 * measure) 228 -> 227 ms, the swap before the canary's test 238 -> 237,
 * checks:off within the noise; pinned to one CPU 271 ms against
 * tcmalloc's 106 (2 CPUs: 288). Not the lines the threads share, then, nor
 * the locked instruction (perf's samples on it are the canary load's miss
 * before it), but instructions: a block's trip through a foreign cache
 * costs ~160 a malloc + free (kp__ol_free_other 58, kp__ol_refill's pop
 * 43, kp_alloc's miss and kp_free's front), an owner's pair ~68. Kept:
 * class_point's stores by table (larson 157.8 -> 152.6 instructions a
 * pair, tests/test_larson_instructions.py; c 118.5 -> 117.5-117.9).
 * s36 (branch s36-larson; callgrind, larson 4 R 2000 20000, the
 * difference of R = 30 and 10: 1.18 M of its 1.6 M frees cross-thread)
 * weighed the two ideas s35 left. A "lent" state (a block handed out from
 * T's cache records T, and T's free of it goes back on a short path) still
 * needs the compare-and-swap: a third thread's free of the block (the
 * program gave it away, or raced) must find one winner; what T's path
 * could skip is the spoil (the owner's plain store cannot race a state it
 * reads dead), ~5 instructions of a ~155-instruction trip, for a live
 * state that reads dead (else the owner's free reads its canary at p +
 * st - 1) which every reader of a record would have to learn (usable
 * size, realloc, stats, span_quiet, the purges, fc_steal, the fork's
 * child): not built. A retired span handed to the heap holding most of its
 * blocks: larson's blocks move with its tables, which change thread every
 * round, so no heap holds a span's blocks for long, and a span changes
 * owner safely only once its old owner's plain pushes are known to be
 * over (a handshake on its free path): not built. The policy instead, the
 * span in hand before the foreign cache (the tables left at the span
 * while the cache holds blocks, the cache popped once the span runs dry):
 * larson 150.6 -> 147.2 instructions a pair, 558 k -> 442 k cross-thread
 * frees in 4 10, blocks touched 1.85x -> 1.55x its live bytes
 * (test_larson_bound), peak RSS 9.0 -> 8.2 MiB, its CPU time within the
 * noise (0.26 s against 0.25, larson 4 100, medians of 7 alternated, load
 * 5-6); but c 114.8-115.3 -> 120.9 (fc_flush 3.1 k -> 5.3 k calls): c's
 * threads hand each other's blocks home by reusing them from the cache,
 * and with the span first they reuse their own, whose frees are
 * cross-thread again. The tables at the cache once it is full: larson
 * 148.5, c 117.6-119.1, 1.60x; half full: 146.6, c 118.9, 1.76x; once it
 * holds 2 (4) blocks: 146.5 (145.9), c 115.0 (115.8), 1.83x (1.80x), on
 * the kept change below (148, c 113). Each bought larson's instructions
 * with c's: not kept. Kept: kp__ol_free_other's common path shorter
 * (other_refused's arguments all in registers: its seventh, on the stack,
 * made a frame on every call; the canary spoiled with zeros, not the
 * complement of a canary kept in a register; the tag recomputed by
 * free_remote_slow, not kept across the compare-and-swap): 61.2-61.3 ->
 * 59.2-59.3 instructions a call, larson 149.9-150.1 -> 148.4-148.5 a pair, c
 * 114.8-115.3 -> 113.0-113.6; larson's time unchanged within the noise
 * (4 100 pinned to one CPU: 0.29 s either way, medians of 11 alternated,
 * load 10). Larson 4 100's CPU time: 0.25 s against mimalloc's 0.14 and
 * tcmalloc's 0.10, peak RSS 9.0 MiB against 13.5 and 15.0 (medians of 7
 * alternated, load 5-6; kpool bench: 1.42x mimalloc's wall time, 0.68x
 * its RSS). What is left is the trip itself (~155 instructions a malloc +
 * free against an owner's ~68) and how many blocks take it.
 * s39 (branch s39-larson; callgrind, larson 4 R 2000 20000, R = 30 less
 * R = 10, malloc and free collected: tests/test_larson_instructions.py)
 * cut the trip's two halves by what their code does twice or never needs:
 * free_remote no longer compares the slot's aid with the pool (kp__ol_enter
 * matched it on the way in), kp__ol_free_other tests the canary before
 * the span's canary size (other_mismatch reads it), takes pool and
 * try_only in one argument (its key) and the index as size_t, and the
 * refill's pop of the cache writes the canary in either mode (a poison:on
 * pool's refill apart: refill_poison) with its class and count as size_t.
 * kp__ol_free_other 58.2 -> 49.1 instructions a call, kp__ol_refill 41.9
 * -> 37.3, larson 142.8 -> 132.1-132.3 a pair (mimalloc 62.3, tcmalloc
 * 67.2, glibc 168.2, the same method). gcc 12 still saves rbx in
 * kp__ol_free_other and uses it nowhere (9 scratch registers live at the
 * compare-and-swap; hoisting the class's load or passing the index to the
 * double free's report instead of p did not free one).
 *
 * The owner's free is a load of the record and a plain store (no locked
 * instruction on kp_free's fast path), so a double free raced between the
 * owner and another thread can be taken by both: the owner read the record
 * live, the other thread swapped it to its tag, the owner stored OL_FREE
 * over that (s23: 5 of 200,000 trials, the block then on the owner's stack
 * and in the other's cache, handed out twice, no event). So a block leaves
 * a foreign cache only while its record holds the cache's tag, which its
 * thread alone takes (rec_claim: a load and a store), to its request + 1
 * (fc_pop) or to OL_LISTED (fc_flush, onto its span's list), and the
 * owner's drain takes only OL_LISTED records: a record not in the state
 * expected was stored over by its owner's free, a double free reported
 * there (raced_dfree, one event), and the entry is dropped (the owner's
 * stack has the block). A stale entry and a later valid one of the same
 * block in one cache are interchangeable: the first taken wins; in two,
 * the tags tell them apart (a compare-and-swap in fc_pop, before the tags:
 * kpbench c --pin same 38.7 against 40.7 M ops per CPU second). The other
 * thread also spoils the block's canary after its swap (canary_spoil), so
 * that an owner's free that reads it after that is refused at once (its
 * full test finds the tag). Left: an owner's free held between its canary's load
 * and its store (an interrupt, a preemption) while the other thread frees
 * the block and takes it again from its cache: both hold it, as before
 * (test_outline_race: 0 in its trials; s23's window was the whole free).
 *
 * A thread's end (its exit hook, this file's pthread key: ol_thread_exit)
 * abandons its heap: its cache back to the spans, its lists taken in, its
 * spans in hand listed, every span's owner OL_OWN_NONE (so every free of
 * its blocks goes onto their lists). The next thread with no heap of the
 * pool adopts it whatever its thread pointer (heap_get), and until then a
 * heap's refill about to touch new pages (a new span, or the next page of
 * its span in hand) takes in its lists and its wholly free spans
 * (span_adopt), and once no thread adopted it for OL_ABANDON_MS the free
 * blocks of its spans, into the refilling heap's foreign cache
 * (abandoned_take; s34: a producer that outlives the other,
 * test_outline_abandoned_spans). Before, only a thread with the dead one's
 * thread pointer took its heap: thread_churn's outline pool peaked at 8 MiB
 * against the inline path's 2.
 *
 * System calls (os.c, counted): the slice map, the heap arena and
 * OL_SPARES_MIN spare segments at kp_create; a heap past the arena's 64; a
 * segment when no spare is left (rare: counted in ol->alloc_maps). None on kp_alloc/kp_free in
 * steady state, nor on a thread's first span.
 *
 * Growth (the grow daemon's pass, kp__ol_daemon_pass): spare segments are
 * kept mapped and pre-faulted ahead of the heaps, as many as the demand
 * measured pass to pass asks for (daemon.c, kp__daemon_grow_target: the
 * inline primary's rate and boost, within 1/32 of the bytes in use; high_wm,
 * when set, the floor kept pre-faulted), from OL_PREFAULT_MIN in use and only
 * for a program that writes what it takes (the probe: a pass reads a few
 * pages of live blocks, as the inline daemon's does; kpbench b writes a
 * block's two ends, about 30% of its pages, and its segments stay cold),
 * twice as many mapped; a heap that takes the last spares wakes the daemon.
 * A spare is pre-faulted from its first byte as far as the pass's demand
 * asks (twice it within the window, each spare a growing heap's share:
 * kp__ol_daemon_pass), not whole; a heap that takes one pre-faulted in
 * part has the rest finished by demand as a cold segment's (below).
 * A segment taken before it was pre-faulted is finished once the pool
 * pre-faults (and the spares are ready), the pages its heap may hand out
 * next, nearest the spans' frontiers first and as far as the demand asks
 * (cold_finish: twice the demand within the target a pass; not those only
 * live blocks hold, nor a span wholly free); spares past the demand go
 * back after decay_ms idle (purged, then unmapped). A heap whose span does not
 * fit its segment's tail leaves the segment to the next span that fits
 * (segment_for), so that pre-faulted tails are used, and a span that does
 * not fit its heap's segment takes the slices left when they hold a few of
 * its blocks (span_slices). Past its first spare, a pass pre-faults the next
 * only while the heaps take segments (spare_enough: a program whose growth
 * stopped gets no window pre-faulted after its last allocation), each with
 * the metadata the heaps' last segments used (meta_ahead). kpbench d (1 GiB
 * of 4-64 KiB blocks): peak 1.17x glibc's before these (s26), 1.10x
 * (test_outline_grow_peak; mimalloc 1.15x); without pre-faulting 1.05x (the
 * classes' rounding).
 *
 * Stats: kp_stats' bytes in use count these blocks (kp__ol_in_use, from the
 * spans, nothing counted on the fast paths).
 *
 * KP_ZERO (calloc from 4 KiB under the preload): a block span_extend made
 * in a span whose pages were zero (a segment mapped fresh) and never handed
 * out since reads OL_VIRGIN, and pop_zero hands it out unwritten; any other
 * block is zeroed whole (test_outline_zero).
 *
 * Memory back: the daemon's pass purges the data pages of a span wholly free
 * on its heap's avail list for decay_ms (purge_idle), the whole pages inside
 * the free blocks (of a page or more) of a span listed there with the same
 * free blocks for OL_BPURGE_MS, wholly free or not (purge_blocks: git
 * pack-objects' peak 20.4 -> 19.4 MiB, test_outline_block_purge), and the
 * spares past
 * the demand (above); a segment whose spans have all sat so for decay_ms,
 * and which no heap carves, leaves the heaps whole (return_idle): its
 * slice-map entries cleared, its data and metadata pages purged, onto the
 * spares, uncharged against primary_max; the spares' decay unmaps it. A
 * span's records and stack are given back with their segment only.
 * A span's records and stack entries are made a page of blocks at a time as
 * its blocks are first taken (span_extend): metadata in proportion to the
 * blocks used; a heap's first span of a class holds 128 blocks and each next
 * 4 times more, up to its slices' (span_blocks), so that a class a thread
 * uses little touches no page of a whole slice's stack and records; and a
 * young heap's classes up to 1 KiB pop a coarser class's span until they
 * find it dry (LEND, s37: a thread with a few blocks of many classes, as
 * thread_churn's, 30.8 -> 15.9 pages of data and metadata resident). A heap that needs a new span first takes a wholly free one of
 * the class from another heap (span_adopt); a span in hand run dry takes
 * the frees given back, the listed span with the most free blocks and other
 * heaps' listed blocks (fc_steal) before it touches its untouched ones
 * (s25: a producer/consumer program, 1.6-1.7x glibc's peak before, 1.3-1.4x:
 * test_memory_threads). What still costs memory under larson (4 threads on 2
 * CPUs): free blocks on the four heaps' stacks, 24 classes each (about 2x
 * its live bytes touched, test_outline_xfree). Under bench-prodcons (2
 * producers, 2 consumers, 16-2048 B; s33, a sampler of the pool's spans):
 * 2.6-2.9 MB of data pages resident for 1.1-1.25 MB live at most. Its
 * message stream replayed with every free reusable at once by its class
 * alone: 1.81 MB one producer's classes (measured: 1.93), 2.09 MB two
 * producers' heaps apart, 1.84 MB with the heaps' blocks shared. At each
 * page a refill touched, ~5 KiB of the class was free elsewhere (mostly
 * the other producer's span in hand); the 1.3-1.5 MB on lists at the end
 * are the last frees, not the peak's. A drain of at most 1 KiB of a
 * list a refill (the rest left for other heaps' fc_steal): ~250 KiB less
 * resident in that sampler, no change under the preload (4.9 MiB either
 * way, medians of 7), +8% instructions (callgrind, 2 2 100000); not kept.
 * primary_max: data segments are reserved against it with the primary's
 * capacity and the huge blocks (pool->ol_bytes); past it, alloc.c's path
 * and its policy (oom event, the backup for critical callers).
 *
 * Not done yet: the spans in hand (cur[]) of an idle thread (their free
 * blocks too: a thread's span in hand is popped without a lock), retired
 * spans, those whose cross-thread frees wait on a live heap's dirty list or
 * sit in a foreign cache are not purged, nor is their segment (nor a live
 * heap's segment it carves) given back; poison:on gives back no segment; a
 * program growing faster than the daemon pre-faults (kpbench d's first
 * round, 1 GiB in 0.3-0.6 s) still faults on about 45% of the pages on its
 * own thread; kp_stats does not show the spares' counts nor the probe's
 * share (ol->grow.touch_pct).
 *
 * Planted bugs (KP_PLANT, the inline path's in this path's terms): 2 a double
 * free of the owner's block pushed again; 5 a realloc in place 8 bytes past
 * the room; 8 KP_ZERO leaves 8 bytes; 11 the owner's avail lists moved
 * without their lock (the daemon's purge races them). test_outline_integrity
 * and test_outline_memory find each.
 */
#include "outline.h"

#include <errno.h>
#include <string.h>

#ifndef KP_DEBUG
#define KP_DEBUG 0
#endif
/* An invariant of this file, tested in the debug builds (KP_DEBUG: the
 * sanitizer variants) as primary.c's KP_ASSERT: an event, pool in scope. */
#define KP_OL_ASSERT(cond)                                                                                       \
	do {                                                                                                     \
		if (KP_DEBUG && !(cond))                                                                         \
			kp__violation(pool, KP_EV_CORRUPTION, KP_ECORRUPT, NULL, 0, "invariant broken: " #cond); \
	} while (0)

/* 4384, off the grid: OL_CLASS_PAGE_PLUS (outline.h, kp__ol_class_big) */
static const uint32_t class_size[OL_NCLASS] = {
	16,    32,    48,    64,    80,	   96,	  112,	 128,	144,   160,   176,   192,   208,   224,	  240,
	256,   320,   384,   448,   512,   640,	  768,	 896,	1024,  1152,  1280,  1408,  1536,  1664,  1792,
	1920,  2048,  2304,  2560,  2816,  3072,  3328,	 3584,	3840,  4096,  4384,  4608,  5120,  5632,  6144,
	6656,  7168,  7680,  8192,  9216,  10240, 11264, 12288, 13312, 14336, 15360, 16384, 18432, 20480, 22528,
	24576, 26624, 28672, 30720, 32768, 36864, 40960, 45056, 49152, 53248, 57344, 61440, 65536};
/* The class of n bytes past 1 KiB, by m = n - 1 (its top bit b, then the
 * 3 bits below it: 8 classes a doubling, 24 from 1 KiB), one further past
 * OL_CLASS_PAGE_PLUS; a constant expression for the table below (m of
 * 1 KiB at least: the table's entries below it are never read). */
#define OL_BIG_B(m) (63u - (uint32_t)__builtin_clzl(m))
#define OL_BIG_CLS(m) (OL_BIG_B(m) * 8 + (uint32_t)((m) >> (OL_BIG_B(m) - 3)) - 64 + ((m) >= OL_CLASS_PAGE_PLUS))
#define OL_BIG1(q) OL_BIG_CLS((q) < 32 ? (size_t)1024 : (size_t)(q) << 5)
#define OL_BIG2(q) OL_BIG1(q), OL_BIG1((q) + 1)
#define OL_BIG8(q) OL_BIG2(q), OL_BIG2((q) + 2), OL_BIG2((q) + 4), OL_BIG2((q) + 6)
#define OL_BIG32(q) OL_BIG8(q), OL_BIG8((q) + 8), OL_BIG8((q) + 16), OL_BIG8((q) + 24)
#define OL_BIG128(q) OL_BIG32(q), OL_BIG32((q) + 32), OL_BIG32((q) + 64), OL_BIG32((q) + 96)
#define OL_BIG512(q) OL_BIG128(q), OL_BIG128((q) + 128), OL_BIG128((q) + 256), OL_BIG128((q) + 384)
const uint8_t kp__ol_class_big_tbl[OL_SMALL_MAX / 32] = {OL_BIG512(0), OL_BIG512(512), OL_BIG512(1024),
							 OL_BIG512(1536)};
_Static_assert(OL_SMALL_MAX / 32 == 2048, "kp__ol_class_big_tbl: 4 x 512 entries");
/* The class of q * 16 bytes, q = 0..64: every class boundary up to 1 KiB is
 * a multiple of 16, so (n + OL_CANARY + 15) >> 4 indexes it (either mode). */
const uint8_t kp__ol_class_tbl[65] = {0,  0,  1,  2,  3,  4,  5,  6,  7,  8,  9,  10, 11, 12, 13, 14, 15,
				      16, 16, 16, 16, 17, 17, 17, 17, 18, 18, 18, 18, 19, 19, 19, 19, 20,
				      20, 20, 20, 20, 20, 20, 20, 21, 21, 21, 21, 21, 21, 21, 21, 22, 22,
				      22, 22, 22, 22, 22, 22, 23, 23, 23, 23, 23, 23, 23, 23};

/* Where a heap has no span of a class yet: its stack is empty, so the fast
 * path takes the slow one without a test of its own. Never written. */
static uint16_t empty_stack = OL_SENT;
static struct ol_span empty_span = {.sp = &empty_stack, .stack0 = &empty_stack};
/* The slot's heap before a thread's first allocation of the pool: never
 * written either. Its fc_cap stays 0 in every class, which free_remote's
 * one test of room relies on to send its frees to the slow case
 * (test_outline_xfree checks it after larson's pattern). */
struct ol_heap kp__ol_empty_heap = {.rtag = OL_REMOTE,
				    .direct = {[0 ... 64] = &empty_span},
				    .fast = {[0 ... OL_NCLASS - 1] = &empty_span},
				    .cur = {[0 ... OL_NCLASS - 1] = &empty_span}};
/* An empty slot's map (map_mask 0): its one entry, 0, never written, and
 * the nil span its 0 names (outline.h, kp__ol_map_nil): 64 bytes of zeros,
 * whose lim 0 refuses every index. */
_Alignas(64) uintptr_t kp__ol_no_map[8]; /* a span's alignment (the nil span) */

/* ---- mappings (os.c) ------------------------------------------------------ */

/* n bytes of metadata with a PROT_NONE page on either side. */
static void *map_guarded(kp_pool *pool, size_t n)
{
	uint8_t *p = kp__os_map(&pool->os, n + 2 * KP_PAGE, KP_PAGE, false);
	if (!p)
		return NULL;
	if (kp__os_protect(&pool->os, p, KP_PAGE, false) ||
	    kp__os_protect(&pool->os, p + KP_PAGE + n, KP_PAGE, false)) {
		kp__os_unmap_clean(&pool->os, p, n + 2 * KP_PAGE);
		return NULL;
	}
	return p + KP_PAGE;
}

/* Nothing of this path is ever poisoned (ASan): unmapped clean, or
 * kp_destroy would unpoison the slice map's 16 GiB, 2 GiB of shadow. */
/* Nothing of this path is ever poisoned (ASan): every mapping goes back
 * clean, or kp_destroy would unpoison the slice map's 16 GiB (2 GiB of
 * shadow written: test_invalid took 17 s under ASan). */
static void unmap_guarded(kp_pool *pool, void *p, size_t n)
{
	kp__os_unmap_clean(&pool->os, (uint8_t *)p - KP_PAGE, n + 2 * KP_PAGE);
}

/* A heap and its foreign cache's entries (ol_heap's fc_off: 8.3 KiB of
 * rows, each class's sized by the most it caches; outline.h, OL_FC_SLOTS). */
#define OL_HEAP_STRIDE (OL_HEAP_STRUCT + OL_FC_SLOTS * sizeof(uint64_t))
#define HEAP_BYTES ((OL_HEAP_STRIDE + KP_PAGE - 1) & ~(size_t)(KP_PAGE - 1))
/* Heaps in kp_create's arena: 64 threads (address space: 64 x 16 KiB),
 * each at a page of its own (HEAP_BYTES apart), its structure inside the
 * page. At OL_HEAP_STRIDE apart (39 KiB) the structure crossed a page in
 * two heaps of three: 30 pages resident for 17 heaps, 17 now
 * (test_outline_heap_pages). */
#define OL_ARENA_HEAPS 64u
#define OL_ARENA_BYTES (OL_ARENA_HEAPS * HEAP_BYTES)
_Static_assert(OL_HEAP_STRUCT <= KP_PAGE, "a heap's structure inside its first page");
/* The arena opens with the layout's own structure (kp__ol, 1.3 KiB), and
 * each heap's structure ends its page (heap i at OL_ARENA_HEAD + i x
 * HEAP_BYTES): kp__ol shares the first heap's page. It had a mapping of its
 * own, a page resident in every program (test_pool_pages_outline, s33). A
 * heap's structure that leaves no room before it for kp__ol: a page apart,
 * as before. */
#define OL_ARENA_HEAD_MIN ((sizeof(kp__ol) + 63) & ~(size_t)63)
#define OL_ARENA_HEAD (OL_ARENA_HEAD_MIN + OL_HEAP_STRUCT <= KP_PAGE ? KP_PAGE - OL_HEAP_STRUCT : KP_PAGE)
#define OL_ARENA_MAP (OL_ARENA_BYTES + KP_PAGE)
_Static_assert(OL_ARENA_HEAD % 64 == 0 && OL_ARENA_HEAD >= sizeof(kp__ol), "kp__ol before the first heap");

static struct ol_seg *segment_map(kp_pool *pool);
static void meta_unmap(kp_pool *pool, struct ol_seg *s);
static void exit_hook_init(void);
static void avail_lock(kp_pool *pool, struct ol_heap *h);
static void avail_unlock(struct ol_heap *h);

_Static_assert(OL_MAP_N * sizeof(uintptr_t) == KP_OL_MAP_BYTES, "KP_OL_MAP_BYTES is the slice map's size");

int kp__ol_create(kp_pool *pool)
{
	/* the first heaps (kp_create's system calls: a thread's first
	 * allocations make none), after the layout's own structure */
	uint8_t *arena = map_guarded(pool, OL_ARENA_MAP);
	if (!arena)
		return -1;
	kp__ol *ol = (kp__ol *)arena;
	ol->arena = arena;
	ol->map = kp__os_map(&pool->os, OL_MAP_N * sizeof(*ol->map), KP_PAGE, false);
	if (!ol->map) {
		unmap_guarded(pool, arena, OL_ARENA_MAP);
		return -1;
	}
	pthread_mutex_init(&ol->lock, NULL);
	exit_hook_init(); /* the exit hook's key, before any thread's heap */
	ol->csz = pool->conf.checks ? OL_CANARY : 0;
	pool->ol = ol;
	/* and a first segment, now */
	struct ol_seg **pp = &ol->spare;
	while (ol->nspare < OL_SPARES_MIN && (*pp = segment_map(pool)) != NULL) {
		ol->nspare++;
		pp = &(*pp)->next;
	}
	atomic_store(&ol->wake_spares, OL_SPARES_MIN);
	if (ol->nspare < OL_SPARES_MIN) {
		kp__ol_destroy(pool);
		return -1;
	}
	return 0;
}

static void slot_name(kp_pool *pool, struct ol_heap *h);

void kp__ol_destroy(kp_pool *pool)
{
	kp__ol *ol = pool->ol;
	if (!ol)
		return;
	/* this thread's slot names no destroyed pool (its reference dropped:
	 * the structure unmapped at kp_destroy's end when no other thread's
	 * slot names it, pool.c) */
	if (kp__ol_slot.aid == kp__ol_slot_id(pool))
		slot_name(NULL, &kp__ol_empty_heap);
	for (struct ol_seg *s = ol->segs, *nx; s; s = nx) {
		nx = s->next;
		kp__os_unmap_clean(&pool->os, s->base, OL_SEG_SIZE);
		meta_unmap(pool, s);
	}
	for (struct ol_seg *s = ol->spare, *nx; s; s = nx) {
		nx = s->next;
		kp__os_unmap_clean(&pool->os, s->base, OL_SEG_SIZE);
		meta_unmap(pool, s);
	}
	for (struct ol_heap *h = ol->heaps, *nx; h; h = nx) {
		nx = h->next;
		if (h->own_map)
			unmap_guarded(pool, h, HEAP_BYTES);
	}
	kp__os_unmap_clean(&pool->os, ol->map, OL_MAP_N * sizeof(*ol->map));
	pthread_mutex_destroy(&ol->lock);
	pool->ol = NULL;
	unmap_guarded(pool, ol->arena, OL_ARENA_MAP); /* ol with it */
}

static void fc_fork_child(struct ol_heap *h);
static void park_return(kp_pool *pool, struct ol_span *list, bool purge, bool counted);
static void ol_readers_fork_child(void);
static bool ol_readers_quiet(kp_pool *pool);

/* Fork: the pool's lock held across it (pool.c's fork handlers); the
 * child's other threads are gone, their heaps adopted by whichever new
 * thread gets their thread pointers. Phase 0 before the fork, 1 after it
 * in both processes, 2 in the child first (fc_fork_child: the foreign
 * caches of the threads gone). */
void kp__ol_fork(kp_pool *pool, int phase)
{
	if (!pool->ol)
		return;
	kp__ol *ol = pool->ol;
	if (phase == 2) {
		ol_readers_fork_child();
		for (struct ol_heap *h = ol->heaps; h; h = h->next)
			if (h->self != kp__ol_self())
				fc_fork_child(h);
		/* A push (remote_push: nremote first) or a drain cut short by
		 * the fork left its chain on a thread gone: nremote counted
		 * blocks on no list, and the span was never wholly free again
		 * (test_outline_fork_xfree_attack30b: 1-3 children of 70-80).
		 * Each span's count is its list's length again; the chain's
		 * blocks are lost to the child (a leak, not a fault). Stored
		 * only where it differs: each store to a page of records the
		 * child shares with its parent is a copy-on-write fault, and
		 * every child paid one for each such page, as many as the
		 * parent's heap has (test_outline_fork_cow_attack31: 605 faults
		 * a child of a 530 MB heap, glibc's 18). */
		for (struct ol_seg *sg = ol->segs; sg; sg = sg->next)
			for (uint32_t i = 0; i < sg->used; i++) {
				struct ol_span *pg = &sg->spans[i];
				if (!pg->start || !pg->link)
					continue;
				uint32_t len = 0, x = atomic_load_explicit(&pg->remote, memory_order_relaxed);
				while (x && x <= pg->nblocks && len <= pg->nblocks) {
					len++;
					x = __atomic_load_n(&pg->link[x - 1], __ATOMIC_RELAXED) & (uint16_t)~OL_LINK_ON;
				}
				if (atomic_load_explicit(&pg->nremote, memory_order_relaxed) != len)
					atomic_store_explicit(&pg->nremote, len, memory_order_relaxed);
			}
		/* chains parked for the daemon (hand_park), which the counts
		 * above left out: onto their lists, unpurged and counted (the
		 * child's daemon, not restarted yet, would purge them only at
		 * its first pass); none was in a thread's hands at the fork
		 * (phase 0 took the locks that parking and park_give hold) */
		park_return(pool, atomic_exchange_explicit(&ol->parked, NULL, memory_order_acquire), false, false);
		return;
	}
	if (phase == 0) {
		pthread_mutex_lock(&ol->lock);
		for (struct ol_heap *h = ol->heaps; h; h = h->next)
			avail_lock(pool, h); /* no owner in the middle of a list move */
	} else {
		for (struct ol_heap *h = ol->heaps; h; h = h->next)
			avail_unlock(h);
		pthread_mutex_unlock(&ol->lock);
	}
}

/* ---- spans and segments --------------------------------------------------- */

/* Where s's spans' stacks and records start: past its own record. */
static uint8_t *meta_first(struct ol_seg *s)
{
	return (uint8_t *)(((uintptr_t)(s + 1) + 63) & ~(uintptr_t)63);
}

/* A segment's metadata mapping: OL_META and OL_META_COLORS pages more, so
 * that its metadata can start `color` pages in (outline.h), a guard page
 * and the pages below it PROT_NONE, and above it the rest to the top: the
 * same two mprotect calls as map_guarded's. */
#define META_MAP_BYTES (OL_META + (OL_META_COLORS + 1) * KP_PAGE)
static struct ol_seg *meta_map(kp_pool *pool, uint32_t color)
{
	size_t below = (1 + (size_t)color) * KP_PAGE;
	uint8_t *p = kp__os_map(&pool->os, META_MAP_BYTES + KP_PAGE, KP_PAGE, false);
	if (!p)
		return NULL;
	if (kp__os_protect(&pool->os, p, below, false) ||
	    kp__os_protect(&pool->os, p + below + OL_META, META_MAP_BYTES + KP_PAGE - below - OL_META, false)) {
		kp__os_unmap_clean(&pool->os, p, META_MAP_BYTES + KP_PAGE);
		return NULL;
	}
	return (struct ol_seg *)(p + below);
}

static void meta_unmap(kp_pool *pool, struct ol_seg *s)
{
	kp__os_unmap_clean(&pool->os, (uint8_t *)s - (1 + (size_t)s->color) * KP_PAGE, META_MAP_BYTES + KP_PAGE);
}

/* A data segment and its guarded metadata, on no list yet. */
static struct ol_seg *segment_map(kp_pool *pool)
{
	uint8_t *base = kp__os_map(&pool->os, OL_SEG_SIZE, OL_SEG_SIZE, false);
	if (!base)
		return NULL;
	/* the next color, whoever maps (the daemon's pass, a heap's
	 * segment_new): consecutive segments a page of sets apart */
	uint32_t color = atomic_fetch_add_explicit(&pool->ol->meta_colors, 1, memory_order_relaxed) % OL_META_COLORS;
	struct ol_seg *s = meta_map(pool, color);
	if (!s) {
		kp__os_unmap_clean(&pool->os, base, OL_SEG_SIZE);
		return NULL;
	}
	s->color = color;
	s->base = base;
	s->bump = meta_first(s);
	s->end = (uint8_t *)s + OL_META;
	return s;
}

/* The oldest spare, off the list (NULL: none left); the daemon woken when
 * fewer than it wants are left. The pool's outline lock, taken here. */
static struct ol_seg *spare_take(kp_pool *pool, kp__ol *ol)
{
	pthread_mutex_lock(&ol->lock);
	struct ol_seg *s = ol->spare;
	if (s) {
		ol->spare = s->next;
		ol->nspare--;
		atomic_store_explicit(&s->taken, true, memory_order_relaxed); /* the daemon's pre-fault stops */
	}
	bool kick = ol->nspare < atomic_load_explicit(&ol->wake_spares, memory_order_relaxed);
	pthread_mutex_unlock(&ol->lock);
	if (kick)
		kp__daemon_kick(pool);
	return s;
}

static uint8_t *meta_after_record(struct ol_seg *s);

/* A segment given back (return_idle), taken again (segment_new): the
 * metadata its spans used in its record's last page zeroed, as
 * return_idle's purge zeroed the rest (from meta_after_record on), so that
 * a span made there finds its records free (OL_FREE, 0) until its blocks
 * are first taken, as span_extend and every free's double-free test
 * assume. Before (s27), that part (meta_first up to the page's end, about
 * 4 KiB of stacks, links and records) stayed as the segment's last spans
 * left it: a span of another layout found old stack entries in its
 * records, blocks never handed out read live, a free of one was taken and
 * the block then handed out twice (test_outline_return_meta). */
static void meta_clear_head(struct ol_seg *s)
{
	uint8_t *end = meta_after_record(s);
	end = s->bump < end ? s->bump : end;
	memset(meta_first(s), 0, (size_t)(end - meta_first(s)));
}

/* A segment for a heap's spans: the oldest spare, or one mapped now (the
 * allocation path's system calls, counted so, and in ol->alloc_maps: the
 * daemon keeps spares ahead, so this is rare). Taking a spare leaves fewer
 * than the daemon wants: it is woken (a futex call at most, once per 4 MiB
 * while the heaps grow, none in steady state). With none left and
 * grow_wait_us set, the daemon's next spare is awaited that long first
 * (test_outline_grow_wait). */
static struct ol_seg *segment_new(kp_pool *pool)
{
	kp__ol *ol = pool->ol;
	/* primary_max: the segment reserved under the pool lock, as the
	 * primary's growth reserves its own (primary.c, kp__primary_grow) */
	kp__pool_lock(pool);
	bool room = pool->capacity + atomic_load(&pool->huge_bytes) + atomic_load(&pool->ol_bytes) + OL_SEG_SIZE <=
		    pool->conf.primary_max;
	if (room)
		atomic_fetch_add(&pool->ol_bytes, OL_SEG_SIZE);
	pthread_mutex_unlock(&pool->lock);
	if (!room)
		return NULL; /* kp__ol_alloc: alloc.c's path, its policy (oom, the backup) */
	struct ol_seg *s = spare_take(pool, ol);
	if (!s && pool->conf.grow_wait_us && atomic_load(&pool->daemon.state) == KP_D_RUNNING) {
		/* grow_wait_us, as alloc.c's path (primary.c, run_alloc): the
		 * daemon's next spare awaited before a mapping here */
		uint64_t seen = atomic_load(&ol->spares_made);
		if (!(s = spare_take(pool, ol))) {
			uint64_t until = kp__now_ns() + (uint64_t)pool->conf.grow_wait_us * 1000ull;
			kp__daemon_wait_since(pool, &ol->spares_made, seen, until);
			s = spare_take(pool, ol);
		}
	}
	/* behind: taken before the daemon had pre-faulted what its pass asked
	 * for (the boost's measure); cold: with pages its heap may take not
	 * pre-faulted, the daemon's to finish by demand (cold_finish) */
	size_t faulted = s ? atomic_load_explicit(&s->faulted, memory_order_relaxed) : 0;
	bool behind = !faulted || faulted < atomic_load_explicit(&s->goal, memory_order_relaxed);
	bool cold = faulted < OL_SEG_SIZE;
	if (s && s->bump != meta_first(s)) {
		/* a segment heaps gave back (return_idle): its spans' records made
		 * anew here, not as it went back, so that a stale free that read
		 * its slice-map entry before return_idle cleared it found the span
		 * as it was (its stacks and records purged: every block free) */
		memset(s->spans, 0, sizeof s->spans);
		meta_clear_head(s);
		s->recycled = true;
		s->used = 0;
		s->bump = meta_first(s);
		s->end = (uint8_t *)s + OL_META; /* meta_take_top's links: from the top again */
	}
	if (!s) {
		if (!(s = segment_map(pool))) {
			atomic_fetch_sub(&pool->ol_bytes, OL_SEG_SIZE);
			return NULL;
		}
		atomic_fetch_add_explicit(&ol->alloc_maps, 1, memory_order_relaxed);
	}
	pthread_mutex_lock(&ol->lock);
	/* The pool's first segment is its start: not counted cold nor finished
	 * by the daemon (it was, and a program holding 100 KB had its segment
	 * pre-faulted whole: 4 MiB resident, idle; test_outline_grow) */
	if (ol->nsegs) {
		atomic_fetch_add_explicit(&ol->taken, 1, memory_order_relaxed);
		if (behind)
			atomic_fetch_add_explicit(&ol->cold, 1, memory_order_relaxed);
		if (cold && ol->ncold < OL_COLD_MAX)
			ol->cold_segs[ol->ncold++] = s;
	}
	s->next = ol->segs;
	ol->segs = s;
	ol->nsegs++;
	s->held = true; /* segment_for's caller carves it */
	pthread_mutex_unlock(&ol->lock);
	return s;
}

uint64_t kp__ol_grows(kp_pool *pool)
{
	return pool->ol ? atomic_load_explicit(&pool->ol->taken, memory_order_relaxed) : 0;
}

static bool segment_fits(const struct ol_seg *s, uint32_t nsl, size_t need)
{
	return s->used + nsl <= OL_NSLICES && (size_t)(s->end - s->bump) >= need;
}

/* A heap's segment let go (segment_for; an abandoned heap's, return_idle):
 * no longer carved, onto the partial lists while slices are free. The
 * pool's outline lock. */
static void segment_let_go(kp__ol *ol, struct ol_seg *s)
{
	s->held = false;
	if (s->used < OL_NSLICES) {
		s->pnext = ol->partial[OL_NSLICES - s->used];
		ol->partial[OL_NSLICES - s->used] = s;
	}
}

/* A segment for h's next span of nsl slices and need bytes of records: h's
 * own, else the one with the least room that fits among those heaps left
 * (ol->partial), else a new one (segment_new). The one h leaves with slices
 * free goes onto ol->partial. Before, a heap whose span did not fit its
 * segment's tail took a new segment and never used the tail: with spans of
 * 2-32 slices (kpbench d's 4-64 KiB blocks) 53 segments for 160 MiB of
 * blocks (test_outline_grow), address space then, but resident memory once
 * the daemon pre-faults spares whole. The owner, in its slow path. */
static struct ol_seg *segment_for(kp_pool *pool, struct ol_heap *h, uint32_t nsl, size_t need)
{
	struct ol_seg *s = h->seg, *got = NULL;
	if (s && segment_fits(s, nsl, need))
		return s;
	kp__ol *ol = pool->ol;
	h->seg = NULL;
	pthread_mutex_lock(&ol->lock);
	if (s)
		segment_let_go(ol, s);
	for (uint32_t r = nsl; r <= OL_NSLICES && !got; r++)
		for (struct ol_seg **pp = &ol->partial[r]; *pp; pp = &(*pp)->pnext)
			if (segment_fits(*pp, nsl, need)) {
				got = *pp;
				*pp = got->pnext;
				got->held = true;
				break;
			}
	pthread_mutex_unlock(&ol->lock);
	if (!got)
		got = segment_new(pool);
	h->seg = got;
	return got;
}

/* ---- the daemon's pass: spares ahead of demand, back when it falls -------- */

/* The metadata pre-faulted with a spare's data at the most: the segment's
 * record and the first span records and stacks (kpbench d's thread faulted
 * on them past the data); what the heaps' last segments used (meta_ahead),
 * this much before any was carved whole. */
#define OL_META_AHEAD ((size_t)64 << 10)
/* The heaps' segments meta_ahead looks at, newest first. */
#define OL_META_LOOK 8u
/* A spare is pre-faulted in steps of this much, the order a heap carves it
 * (as far as its goal, a number of steps: kp__ol_daemon_pass), and the
 * daemon moves on once a heap took it (the heap and the daemon faulting
 * the same pages would wait on each other's page-table locks). */
#define OL_FAULT_STEP ((size_t)1 << 20)
/* The daemon pre-faults spares past a floor set with high_wm only once the
 * heaps hold this much (and the probe finds a program that writes what it
 * takes, below): a spare is 4 MiB, 1/16 of it (daemon.c's KP_TARGET_SHARE:
 * the headroom adds at most 1/16 to what a program holds). Below it a
 * program's pages fault in on its own thread, as on any allocator. At
 * 16 MiB, sqlite3 under the preload (35 MB in use at its peak, growing in
 * bursts) had two spares pre-faulted at its last burst and its first
 * segments finished: 41.1 -> 61 MiB peak; larson (7 MB) had one or two at
 * its start at 1 MiB: 14.5 -> 27.4 MiB. At 64 MiB without the probe,
 * kpbench b (84 MB of blocks in use, a few bytes of each written) had its
 * segments finished and two spares pre-faulted: 52 -> 136 MiB peak (2.7x
 * mimalloc), so it was 256 MiB, where a program writing every page had its
 * thread fault 2.6-3.4% of them past it (test_outline_grow); the probe
 * keeps b's segments cold at any threshold. */
#define OL_PREFAULT_MIN ((size_t)64 << 20)
/* Segments a pass maps or pre-faults at most, and the most spares kept
 * pre-faulted (a high_wm past 256 MiB is kept to that): a pass is bounded
 * (4 MiB pre-faulted takes about 1 ms), the next comes at the allocation
 * path's next wake-up. 64: 256 MiB, what a 2.5 GB/s grower (kpbench d with
 * its pages pre-faulted) takes in 100 ms. */
#define OL_PASS_SEGS 64u
/* What the daemon pre-faults of the segments heaps took cold, a pass: at
 * most twice the demand (the bytes in use past their peak since the last
 * pass) and at most the target (daemon.c's window: 4 MiB at 64-128 MiB in
 * use, 1/32 of the bytes in use past it), not every page the heaps may
 * hand out (cold_finish). Four times the demand, uncapped, at the passes
 * after the first in a row with demand (so that a program growing on had
 * its backlog, 15-18 MiB at OL_PREFAULT_MIN in test_outline_grow, caught
 * up within two passes): fork_churn `300 8 4096 4096 3` under the preload
 * peaked at 116-121 MiB (133 on main, 96-97 with prefault:off; at load
 * 12-23), the passes after its growth's end still finding a few MiB of
 * demand each; the paced attack's thread faults at 3 and 4 MiB a pass
 * 0.43% and 2.27% (0.83% and 2.97% now, 0.43% and 1.07% on main). */
#define OL_COLD_AHEAD 2u

/* The first page of s's metadata past its own record: what a purge of a
 * spare's metadata may give back (the record, written at segment_map, not). */
static uint8_t *meta_after_record(struct ol_seg *s)
{
	return (uint8_t *)(((uintptr_t)(s + 1) + KP_PAGE - 1) & ~(uintptr_t)(KP_PAGE - 1));
}

/* The metadata bytes to pre-fault with a segment (spare_fault, the cold
 * segments finished): as many as the newest of the heaps' segments carved
 * whole (no slice left) used, the most of up to OL_META_LOOK of them, a page
 * more, within a page and OL_META_AHEAD; OL_META_AHEAD while none is. Not a
 * fixed 64 KiB: kpbench d's segments (4-64 KiB blocks, 4-6 spans) use
 * 16-20 KiB (the record and its span array, 12.4 KiB, and each span's
 * records and stack), and the rest of 290 segments' 64 KiB, 12 MiB, was
 * resident at its peak, never written (test_outline_grow_peak). A program of
 * small blocks uses more than OL_META_AHEAD: its heaps fault the rest in as
 * their spans extend (span_extend), as before. The pool's outline lock. */
static size_t meta_ahead(kp__ol *ol)
{
	size_t most = 0;
	uint32_t seen = 0;
	for (struct ol_seg *s = ol->segs; s && seen < OL_META_LOOK; s = s->next) {
		/* its last span published (span_new's release store): its
		 * bump is final while it stays whole on ol->segs */
		if (__atomic_load_n(&s->used, __ATOMIC_ACQUIRE) < OL_NSLICES)
			continue;
		size_t u = (size_t)(s->bump - (uint8_t *)s);
		most = u > most ? u : most;
		seen++;
	}
	if (!seen)
		return OL_META_AHEAD;
	most = (most + 2 * KP_PAGE - 1) & ~(size_t)(KP_PAGE - 1);
	return most < OL_META_AHEAD ? most : OL_META_AHEAD;
}

/* Pre-fault spare s (the daemon, no lock: only the daemon unmaps a spare,
 * so s stays mapped) up to its goal from where it was faulted to, and its
 * metadata's first meta bytes with its first step, until a heap takes it.
 * Ready (some of it resident, for the spares' decay) when it was not
 * taken. The bytes faulted in. */
static size_t spare_fault(kp_pool *pool, struct ol_seg *s, size_t meta, uint64_t now)
{
	size_t off = atomic_load_explicit(&s->faulted, memory_order_relaxed), from = off;
	size_t goal = atomic_load_explicit(&s->goal, memory_order_relaxed);
	if (!off)
		kp__os_populate(&pool->os, s, meta);
	for (; off < goal; off += OL_FAULT_STEP) {
		if (atomic_load_explicit(&s->taken, memory_order_relaxed))
			return off - from;
		kp__os_populate(&pool->os, s->base + off, OL_FAULT_STEP);
		atomic_store_explicit(&s->faulted, off + OL_FAULT_STEP, memory_order_relaxed);
	}
	atomic_store_explicit(&s->ready, true, memory_order_relaxed);
	s->spare_ns = now;
	return off - from;
}

/* The purge of a spare idle past what the demand asks for: its data and
 * metadata pages back (a spare is no heap's: nothing reads them). */
static void spare_purge(kp_pool *pool, struct ol_seg *s)
{
	kp__os_purge(&pool->os, s->base, OL_SEG_SIZE);
	uint8_t *m = meta_after_record(s);
	kp__os_purge(&pool->os, m, OL_META_AHEAD - (size_t)(m - (uint8_t *)s));
	atomic_store_explicit(&s->ready, false, memory_order_relaxed);
	atomic_store_explicit(&s->faulted, 0, memory_order_relaxed);
}

/* Does a pass that pre-faulted nfaulted bytes of spares so far, nr of the
 * window ready, stop? Past the high_wm floor (nfloor) and the pass's first
 * segment's worth,
 * a spare is pre-faulted only while the heaps took a segment since the
 * last one was (*taken_seen, advanced here): the demand the pass measured
 * is that of the interval before it, and a program whose growth stopped
 * within it takes no more. Before, the pass after kpbench d's growth to
 * 1 GiB ended saw 300 MiB taken since the one before, pre-faulted the
 * whole window (16 spares, 64 MiB) and finished the cold segments' free
 * slices, all after the program's last allocation: its peak 1.14x glibc's
 * (test_outline_grow_peak). A paced grower's pass pre-faults one spare
 * and the next pass the next, until the window is ready. */
static bool spare_enough(kp__ol *ol, uint32_t nr, uint32_t nfloor, size_t nfaulted, uint64_t *taken_seen)
{
	uint64_t taken = atomic_load(&ol->taken);
	bool growing = taken != *taken_seen;
	*taken_seen = taken;
	return nr >= nfloor && nfaulted >= OL_SEG_SIZE && !growing;
}

/* Does pg hold a live block (of its first fresh)? One that holds none is
 * free on its heap's avail list, for purge_idle to give back after
 * decay_ms, not carved next. Read as cold_pages reads. */
__attribute__((no_sanitize("thread"))) static bool span_live(const struct ol_span *pg, uint32_t fresh)
{
	for (uint32_t i = 0; i < fresh; i++) {
		uint32_t st = __atomic_load_n(&pg->rec[i].state, __ATOMIC_RELAXED);
		if (st != OL_FREE && st != OL_QUAR && st != OL_VIRGIN)
			return true;
	}
	return false;
}

/* What a heap hands out next: the blocks past the frontier of each span's
 * handed out (span_extend), and a segment's free slices from the first (a
 * new span's), each at its distance from there; a free block below the
 * frontier at none (the span's free stack hands it out first). cold_finish
 * pre-faults by distance, every cold segment's nearest pages first: a
 * heap's classes each carve their span in hand, so what a growing program
 * takes next is spread over the frontiers of all of them. Levels of
 * distance, a byte a page: 1 within OL_COLD_NEAR, 2 within 3x, then 7x,
 * 15x, ..., COLD_LEVELS the rest; 0 not taken next. */
#define OL_COLD_NEAR ((size_t)64 << 10)
#define COLD_LEVELS 7u

static uint8_t cold_level(size_t d)
{
	size_t q = (d / OL_COLD_NEAR) + 1;
	uint32_t bits = 64u - (uint32_t)__builtin_clzl(q);
	return (uint8_t)(bits < COLD_LEVELS ? bits : COLD_LEVELS);
}

/* Mark pages [lo, hi) of w at distance d0 from where a heap takes them next
 * (d0 at page lo), keeping a nearer level already marked. */
static void cold_mark(uint8_t *w, size_t lo, size_t hi, size_t d0)
{
	for (size_t i = lo; i < hi; i++) {
		uint8_t l = cold_level(d0 + (i - lo) * KP_PAGE);
		w[i] = w[i] && w[i] < l ? w[i] : l;
	}
}

/* The pages of s a heap may hand out next, marked in level (a byte a page,
 * above): those of slices no span holds, and in a span holding a live block
 * those a block not live (free, quarantined, or past its fresh ones:
 * span_extend) overlaps; of small blocks (under a page) only from the page
 * before the first fresh one (span_extend's last page of them: a free block
 * below it was handed out, and its page is resident if the program wrote
 * it). Not the pages only live blocks hold (the program's, written or left
 * unwritten), nor a span wholly free (span_live). The outline lock held; a
 * span's records read without their owner's synchronisation (a block
 * handed out or freed meanwhile is taken as it was: harmless, a page more
 * or less finished). */
__attribute__((no_sanitize("thread"))) static void cold_pages(kp__ol *ol, struct ol_seg *s, uint8_t *level)
{
	const size_t per = OL_SLICE_SIZE / KP_PAGE;
	uint32_t free0 = OL_NSLICES; /* the first free slice */
	memset(level, 0, OL_SEG_SIZE / KP_PAGE);
	for (uint32_t u = 0; u < OL_NSLICES; u++) {
		uint8_t *a = s->base + ((size_t)u << OL_SLICE_SHIFT);
		const struct ol_span *pg = kp__ol_map_span(ol->map, (uintptr_t)a >> OL_SLICE_SHIFT);
		uint8_t *w = level + (size_t)u * per;
		if (!pg) {
			free0 = free0 < u ? free0 : u;
			cold_mark(w, 0, per, (size_t)(u - free0) << OL_SLICE_SHIFT);
			continue;
		}
		if (!pg->bsize)
			continue;
		uint32_t fresh = __atomic_load_n(&pg->fresh, __ATOMIC_RELAXED);
		uint8_t *front = pg->start + (size_t)fresh * pg->bsize;
		uint8_t *end = pg->start + (size_t)pg->nblocks * pg->bsize;
		/* small blocks: span_extend's last page of them and on */
		uint8_t *near = (uint8_t *)((uintptr_t)front & ~(uintptr_t)(KP_PAGE - 1));
		near = pg->bsize < KP_PAGE && near - pg->start >= (ptrdiff_t)KP_PAGE ? near - KP_PAGE : pg->start;
		if (!span_live(pg, fresh))
			continue;
		/* the free blocks below the frontier */
		size_t first = a > pg->start ? (size_t)(a - pg->start) / pg->bsize : 0;
		for (size_t i = first; i < fresh; i++) {
			uint8_t *b = pg->start + i * pg->bsize, *be = b + pg->bsize;
			if (b >= a + OL_SLICE_SIZE)
				break;
			uint32_t st = __atomic_load_n(&pg->rec[i].state, __ATOMIC_RELAXED);
			if ((st != OL_FREE && st != OL_QUAR && st != OL_VIRGIN) || be <= near)
				continue;
			size_t lo = b > a ? (size_t)(b - a) / KP_PAGE : 0;
			size_t hi = be < a + OL_SLICE_SIZE ? ((size_t)(be - a) + KP_PAGE - 1) / KP_PAGE : per;
			cold_mark(w, lo, hi, 0);
		}
		/* the blocks past it, by their distance */
		if (front >= a + OL_SLICE_SIZE || end <= a || front >= end)
			continue;
		size_t lo = front > a ? (size_t)(front - a) / KP_PAGE : 0;
		size_t hi = end < a + OL_SLICE_SIZE ? ((size_t)(end - a) + KP_PAGE - 1) / KP_PAGE : per;
		uint8_t *p0 = a + lo * KP_PAGE;
		cold_mark(w, lo, hi, p0 > front ? (size_t)(p0 - front) : 0);
	}
}

/* Populate what is not resident of segment s's pages at level l (as
 * cold_pages marked them), at most *budget bytes faulted in (taken off it).
 * Whether every such page was reached. */
static bool cold_fault(kp_pool *pool, struct ol_seg *s, const uint8_t *level, uint8_t l, size_t *budget)
{
	static const size_t npages = OL_SEG_SIZE / KP_PAGE;
	for (size_t i = 0; i < npages;) {
		if (level[i] != l) {
			i++;
			continue;
		}
		size_t j = i;
		while (j < npages && level[j] == l)
			j++;
		if (!*budget)
			return false;
		size_t len = (j - i) * KP_PAGE, cut = len < *budget ? len : *budget;
		size_t got = kp__os_populate_missing(&pool->os, s->base + i * KP_PAGE, cut);
		*budget -= got < *budget ? got : *budget;
		if (cut < len)
			return false;
		i = j;
	}
	return true;
}

/* Finish the segments heaps took cold (segs[0..n), the oldest first), as
 * far as budget bytes faulted in: their metadata's first meta bytes and the
 * pages their heaps may hand out next (cold_pages), where not resident,
 * nearest first (a level at a time over every segment, the newest segment
 * first); done[k] set for a segment finished whole. The budget is what the
 * demand asks for (kp__ol_daemon_pass), not what the heaps may hand out:
 * fork_churn under the preload (8 threads, ~70 MB of 16 B-4 KiB blocks in
 * 0.3 s, then only replacing them) had its 29 cold segments finished whole
 * at the first pass past OL_PREFAULT_MIN, 31.7 MiB of free slices and free
 * blocks, after its growth had stopped: 133 MiB peak against 96-98 with
 * prefault:off (test_prefault_demand). Before that (s28), each segment was
 * populated whole: CPython's test_unicode under the preload (10 to 145 MiB
 * in 175 ms) had the 24 segments it took below OL_PREFAULT_MIN finished at
 * once, 27 MiB populated, mostly wholly free spans and free small blocks
 * (purged or never written) and unwritten pages of live blocks: its peak
 * 270 MB (medians), 248-250 with none finished, 237 with prefault:off; 256
 * then. test_outline_grow's thread faults were the same (24 of 43,168
 * pages): finishing only the newest segments, as far as the spares'
 * window, had it fault 4% of them. */
static void cold_finish(kp_pool *pool, struct ol_seg *const *segs, uint32_t n, size_t meta, size_t budget, bool *done)
{
	kp__ol *ol = pool->ol;
	uint8_t level[OL_SEG_SIZE / KP_PAGE];
	uint64_t far = 0; /* segments with pages past the level done (bit k) */
	for (uint32_t k = 0; k < n; k++)
		far |= 1ull << k;
	for (uint8_t l = 1; l <= COLD_LEVELS && far; l++)
		for (uint32_t k = n; k-- > 0;) { /* heaps' (return_idle, first in the pass, took its own off) */
			if (!(far >> k & 1))
				continue;
			if (!budget)
				return;
			pthread_mutex_lock(&ol->lock);
			cold_pages(ol, segs[k], level);
			pthread_mutex_unlock(&ol->lock);
			if (l == 1) {
				size_t got = kp__os_populate_missing(&pool->os, segs[k], meta);
				budget -= got < budget ? got : budget;
			}
			bool all = true, more = false;
			for (uint8_t m = 1; m <= l; m++) /* the nearer ones again: the frontier moved */
				all = all && cold_fault(pool, segs[k], level, m, &budget);
			for (size_t i = 0; i < OL_SEG_SIZE / KP_PAGE && !more; i++)
				more = level[i] > l;
			if (all && !more) {
				done[k] = true;
				far &= ~(1ull << k);
			}
		}
}

static void purge_idle(kp_pool *pool);
static void return_idle(kp_pool *pool);
static void park_give(kp_pool *pool, bool purge);

/* ---- the probe: does the program write what it takes? ---------------------
 *
 * A page pre-faulted (a spare, a cold segment finished) is resident whether
 * or not the program writes it; one the program writes it faults itself
 * unless pre-faulted. So the daemon pre-faults past a high_wm floor only for
 * a program that writes (nearly) every page of its blocks, as the inline
 * primary's probe decides (daemon.c: prefault_touch, 90% by default). Each
 * pass reads OL_PROBE_PICKS random pages of the heaps' segments: a page whose
 * first byte is in a live block (its record: the request + 1), before the
 * block's canary, is a sample; it counts as written when it holds the
 * canary (written by the allocator) or any byte not zero (read: a page
 * never written reads as the kernel's zero page, resident nowhere). Pages
 * past a block's canary (its class's rounding) and of free blocks are no
 * sample. kpbench b (16 B-64 KiB, the first and last byte written) measures
 * about 30%, kpbench d and test_outline_grow (every byte) 100%. Before, a
 * fixed threshold (pre-faulting from 256 MiB in use) stood in for it: b at
 * 64 MiB had its segments finished, 52 -> 136 MiB peak, and a program
 * writing every page faulted 2.6-3.4% of them itself past 256 MiB, all of
 * them before. No system call: the pages are read.
 * A page holding a block's canary counts as written whatever the program
 * does (s37, checked): the allocation's store of the canary makes it
 * resident, so pre-faulting it costs no page the program would not hold
 * (and read, the canary's bytes are not zero). A program taking 150 MB of
 * 16 B-4 KiB (or 16-256 B) blocks and writing none peaks 11.0 (7.5) MiB
 * over prefault:off, on main and with cold_finish by demand alike: the
 * window ahead of a growing program, as a writer's; blocks of 8-64 KiB
 * (pages past the canary read as zero) stay cold, +1 MiB. */

/* Pages a pass reads: a few microseconds (a written page stops at its first
 * word not zero), the inline probe's KP_PROBE_PICKS. */
#define OL_PROBE_PICKS 32u

static uint64_t probe_rand(kp__grow *g)
{
	uint64_t x = g->probe_rng ? g->probe_rng : 0x9e3779b97f4a7c15ull;
	x ^= x << 13, x ^= x >> 7, x ^= x << 17;
	return g->probe_rng = x;
}

/* A random page of slice u of s that is a sample (above): NULL when none,
 * else the page, and *edge when it holds the block's canary. The outline
 * lock held (the segment list); a span's records and fields are read
 * without the owner's synchronisation: a block taken or freed meanwhile is
 * sampled as it was (no_sanitize: the owner's plain writes race with these
 * reads, harmlessly). */
__attribute__((no_sanitize("thread"))) static KP_NOASAN uint8_t *probe_page(kp__ol *ol, struct ol_seg *s, uint32_t u,
									    uint64_t r, bool *edge)
{
	uint8_t *page = s->base + ((size_t)u << OL_SLICE_SHIFT) + (size_t)(r % (OL_SLICE_SIZE / KP_PAGE)) * KP_PAGE;
	const struct ol_span *pg = kp__ol_map_span(ol->map, (uintptr_t)page >> OL_SLICE_SHIFT);
	if (!pg || page < pg->start || !pg->bsize)
		return NULL;
	size_t idx = (size_t)(page - pg->start) / pg->bsize;
	if (idx >= __atomic_load_n(&pg->fresh, __ATOMIC_RELAXED))
		return NULL;
	uint32_t st = __atomic_load_n(&pg->rec[idx].state, __ATOMIC_RELAXED);
	if (st == OL_FREE || st == OL_QUAR || st == OL_VIRGIN)
		return NULL;
	uint8_t *b = pg->start + idx * pg->bsize, *canary = b + (st - 1), *hi = canary + pg->csz;
	if (page >= hi)
		return NULL;
	*edge = pg->csz && canary < page + KP_PAGE;
	return page;
}

/* Is any byte of the page not zero? The program's memory, read from the
 * daemon's thread: a racing write makes it see the page as it was. */
__attribute__((no_sanitize("thread"))) static KP_NOASAN bool page_written(const uint8_t *page)
{
	const volatile uint64_t *w = (const volatile uint64_t *)page;
	for (size_t i = 0; i < KP_PAGE / sizeof *w; i++)
		if (w[i])
			return true;
	return false;
}

/* Sample the heaps' segments: *written of *sampled pages written. The pages
 * are found under the outline lock and read after it (a heap's segments
 * stay mapped until kp_destroy, or a later step of this same pass). */
static void probe(kp_pool *pool, unsigned *written, unsigned *sampled)
{
	kp__ol *ol = pool->ol;
	kp__grow *g = &ol->grow;
	uint8_t *read[OL_PROBE_PICKS];
	unsigned nread = 0, edges = 0;
	pthread_mutex_lock(&ol->lock);
	unsigned nseg = ol->nsegs;
	/* every stride-th segment from a random one, the picks spread over them */
	unsigned stride = nseg / OL_PROBE_PICKS + 1, per = nseg ? (OL_PROBE_PICKS + nseg - 1) / nseg : 0;
	unsigned at = nseg ? (unsigned)(probe_rand(g) % stride) : 0, i = 0, picks = 0;
	for (struct ol_seg *s = ol->segs; s && picks < OL_PROBE_PICKS; s = s->next, i++) {
		if (i % stride != at)
			continue;
		uint32_t used = __atomic_load_n(&s->used, __ATOMIC_ACQUIRE); /* its spans published */
		for (unsigned k = 0; k < per && picks < OL_PROBE_PICKS; k++, picks++) {
			uint64_t r = probe_rand(g);
			bool edge = false;
			uint8_t *page = used ? probe_page(ol, s, (uint32_t)(r % used), r >> 8, &edge) : NULL;
			if (page && edge)
				edges++;
			else if (page)
				read[nread++] = page;
		}
	}
	pthread_mutex_unlock(&ol->lock);
	*written = edges;
	for (unsigned k = 0; k < nread; k++)
		*written += page_written(read[k]);
	*sampled = edges + nread;
}

/* The daemon's pass (daemon.c, first in kp__daemon_pass): the demand since
 * the last pass (the bytes in use past their peak) sizes the spares by the
 * daemon's rules (kp__daemon_grow_target: the rate, the boost raised when
 * heaps took spares not yet pre-faulted or mapped their own, within a share
 * of the bytes in use). The spares ahead of the heaps are kept pre-faulted
 * (once the heaps hold OL_PREFAULT_MIN; a high_wm floor always), twice as
 * many mapped (a daemon that falls behind pre-faulting leaves the
 * allocation path faulting pages, never mapping), at least one; past what
 * the demand asks for, a spare idle for decay_ms is purged, and one past
 * the mapped count unmapped. Counted as the daemon's system calls. Under
 * kp__daemon_pass's step lock (one pass at a time). */
void kp__ol_daemon_pass(kp_pool *pool)
{
	kp__ol *ol = pool->ol;
	if (!ol)
		return;
	/* the spans in hand's free blocks their owners parked (hand_park); the
	 * test here, so that a pass with none parked runs no text outside the
	 * preload's warm text (park_give is not in warm.txt: a small program's
	 * passes faulted a second window of the cold text, 152 KiB of the text
	 * resident against tests/test_preload.py's 116) */
	if (atomic_load_explicit(&ol->parked, memory_order_relaxed))
		park_give(pool, true);
	return_idle(pool); /* whole segments first: one purge each, not one a span */
	purge_idle(pool);
	/* The demand: how far the bytes in use went past their peak (blocks
	 * freed and taken again are resident already). Not the segments heaps
	 * took: they come 4 MiB at a time, and a program taking one every
	 * 200 ms read as 400 MB/s at the pass after each (sqlite3 under the
	 * preload: 41.1 -> 61.4 MiB peak). The share is of the bytes in use, as
	 * the inline primary's (of the segments' bytes, larson, 7 MB in use in
	 * 8 segments, had 8 MiB pre-faulted beside it: 14.5 -> 31.7 MiB). */
	size_t in_use = kp__ol_in_use(pool);
	kp__stats_peak(pool, in_use); /* backup:auto grows from it, later in the daemon's pass (backup.c) */
	size_t demand = in_use > ol->peak_in_use ? in_use - ol->peak_in_use : 0;
	ol->peak_in_use = in_use > ol->peak_in_use ? in_use : ol->peak_in_use;
	uint64_t cold = atomic_load(&ol->cold) + atomic_load(&ol->alloc_maps);
	unsigned written = 0, sampled = 0;
	if (pool->conf.prefault && pool->conf.prefault_touch)
		probe(pool, &written, &sampled);
	bool dense = kp__daemon_grow_touch(pool, &ol->grow, written, sampled);
	/* a segment taken cold raises the boost only while the daemon
	 * pre-faults: a sparse program takes every one cold */
	bool faulted = cold != ol->last_cold && dense;
	ol->last_cold = cold;
	size_t target = kp__daemon_grow_target(pool, &ol->grow, demand, faulted, in_use);
	/* The window in whole segments: what the rate asks for rounded down
	 * (a program whose demand asks for less than a segment ahead gets
	 * none, rather than 4 MiB resident beside it), a floor set with
	 * high_wm rounded up;
	 * past the floor nothing while the heaps hold under OL_PREFAULT_MIN or
	 * the probe finds a program that leaves what it takes unwritten. */
	size_t floor = pool->conf.high_wm != KP_WM_AUTO ? pool->conf.high_wm : 0;
	bool ahead = in_use >= OL_PREFAULT_MIN && dense;
	/* the heaps growing: those that carved a span in their segment since
	 * the last pass (a spare goes to one heap: its share of the demand) */
	uint32_t growing = 0;
	pthread_mutex_lock(&ol->lock);
	for (struct ol_seg *s = ol->segs; s; s = s->next) {
		uint32_t u = __atomic_load_n(&s->used, __ATOMIC_RELAXED);
		growing += s->held && u != s->used_seen;
		s->used_seen = u;
	}
	pthread_mutex_unlock(&ol->lock);
	growing = growing ? growing : 1;
	uint32_t nready = ahead ? (uint32_t)(target / OL_SEG_SIZE) : 0;
	uint32_t nfloor = (uint32_t)((floor + OL_SEG_SIZE - 1) / OL_SEG_SIZE);
	nready = nready > nfloor ? nready : nfloor;
	/* The spares' bytes: what the demand asks for, OL_COLD_AHEAD times
	 * the pass's (as cold_finish's budget) within the window, in
	 * OL_FAULT_STEPs from each spare's first byte, the order a heap
	 * carves it; each spare a growing heap's share of it (the floor's
	 * whole). A heap takes what it did not of a spare in its interval
	 * and the daemon finishes the rest by demand (cold_finish: a spare
	 * not pre-faulted whole is a cold segment once taken). Before, the
	 * window's spares were pre-faulted whole, the demand's or not: under
	 * test_prefault_demand's model of fork_churn (8 heaps, 67 MiB, then a
	 * creep of 0.1-0.2 MiB a pass) each spare taken held 4 MiB resident
	 * for a heap taking a few hundred KiB, its peak 1.062x prefault:off's
	 * (1.026x now); fork_churn `300 8 4096 4096` under the preload
	 * peaked at 105.9 MiB (medians of 6 alternated, load 9-20), 98.6 now
	 * (prefault:off ~97 in s37). A single heap growing faster than the
	 * window (the paced attack, test_outline_grow_slow) has it whole, as
	 * before. */
	size_t want = OL_COLD_AHEAD * demand < target ? OL_COLD_AHEAD * demand : target;
	size_t share = (want / growing + OL_FAULT_STEP - 1) & ~(OL_FAULT_STEP - 1);
	share = share < OL_SEG_SIZE ? share : OL_SEG_SIZE;
	want = (want + OL_FAULT_STEP - 1) & ~(OL_FAULT_STEP - 1);
	/* within primary_max: a spare is reserved against it only once taken
	 * (segment_new), so no more are made than it has room for */
	kp__pool_lock(pool); /* the capacity is the pool lock's */
	size_t used = pool->capacity + atomic_load(&pool->huge_bytes) + atomic_load(&pool->ol_bytes);
	pthread_mutex_unlock(&pool->lock);
	size_t room = pool->conf.primary_max > used ? (pool->conf.primary_max - used) / OL_SEG_SIZE : 0;
	nready = nready < room ? nready : (uint32_t)room;
	nready = nready < OL_PASS_SEGS ? nready : OL_PASS_SEGS;
	/* mapped ahead: twice what the rate asks for, under OL_PREFAULT_MIN
	 * too (address space and a page each: a program growing there maps
	 * no segment on its allocation path either) */
	uint32_t nahead = (uint32_t)((target + OL_SEG_SIZE - 1) / OL_SEG_SIZE);
	nahead = nahead > nready ? nahead : nready;
	nahead = nahead < room ? nahead : (uint32_t)room;
	nahead = nahead < OL_PASS_SEGS ? nahead : OL_PASS_SEGS;
	uint32_t nmapped = 2 * nahead > OL_SPARES_MIN ? 2 * nahead : OL_SPARES_MIN;
	if (!pool->conf.prefault)
		nready = 0;
	atomic_store_explicit(&ol->wake_spares, nmapped, memory_order_relaxed);
	uint64_t now = kp__pool_now(pool), decay = (uint64_t)pool->conf.decay_ms * 1000000ull;
	/* 1. spares mapped ahead (cheap: address space and a page) and the first
	 * nready pre-faulted, in one loop: a pre-fault that takes long (a heap
	 * growing faster than the daemon faults pages in) never lets the
	 * mapped ones run out. The farthest spare of the window not yet ready
	 * first: a heap that overruns the daemon takes the nearest and faults
	 * them itself, and the two meet in between instead of faulting the
	 * same pages (nearest first: 178 of kpbench d's 287 segments taken
	 * cold, 62% against 40% of its first round's pages faulted on its
	 * thread). */
	pthread_mutex_lock(&ol->lock);
	size_t meta = meta_ahead(ol);
	pthread_mutex_unlock(&ol->lock);
	bool caught_up = false;
	size_t pf_bytes = 0;
	uint64_t taken_seen = atomic_load(&ol->taken);
	for (uint32_t k = 0; k < 2 * OL_PASS_SEGS; k++) {
		struct ol_seg *todo = NULL;
		pthread_mutex_lock(&ol->lock);
		bool more = ol->nspare < nmapped;
		uint32_t i = 0, nr = 0;
		size_t left = (size_t)nready * OL_SEG_SIZE;
		left = left < want ? left : want;
		left = left > (size_t)nfloor * OL_SEG_SIZE ? left : (size_t)nfloor * OL_SEG_SIZE;
		for (struct ol_seg *s = ol->spare; s; s = s->next, i++) {
			/* each spare's goal, in the order heaps take them */
			size_t g = i < nfloor ? OL_SEG_SIZE : share;
			g = left < g ? left : g;
			left -= g;
			atomic_store_explicit(&s->goal, g, memory_order_relaxed);
			if (!g)
				continue;
			if (atomic_load_explicit(&s->faulted, memory_order_relaxed) < g)
				todo = s;
			else
				nr++;
		}
		pthread_mutex_unlock(&ol->lock);
		if (todo && !more && spare_enough(ol, nr, nfloor, pf_bytes, &taken_seen))
			break; /* not caught up: the cold segments wait (step 2) */
		if (more) {
			struct ol_seg *s = segment_map(pool);
			if (!s)
				break;
			s->spare_ns = now;
			pthread_mutex_lock(&ol->lock);
			struct ol_seg **pp = &ol->spare;
			while (*pp)
				pp = &(*pp)->next;
			*pp = s;
			ol->nspare++;
			pthread_mutex_unlock(&ol->lock);
			atomic_fetch_add(&ol->spares_made, 1); /* segment_new's grow_wait_us */
			continue;
		}
		if (!todo) {
			caught_up = true;
			break;
		}
		pf_bytes += spare_fault(pool, todo, meta, now);
	}
	/* 2. once the spares are ready, the segments heaps took before they
	 * were pre-faulted (up to OL_COLD_MAX), finished as far as the demand
	 * asks (cold_finish; a segment not finished stays on the list for the
	 * next passes): their spans hand out blocks for many passes to come (a
	 * span of 64 KiB blocks is 2 MiB), and the segments a program took
	 * before it held OL_PREFAULT_MIN had its thread fault on 4-8% of the
	 * pages of the next 35 MiB (test_outline_grow). Only what is not
	 * resident, and only for a program the probe finds writing what it
	 * takes (a high_wm floor alone pre-faults spares, not the heaps'
	 * segments). The budget: OL_COLD_AHEAD times the demand within the
	 * target (the window a program that stops there leaves resident, as a
	 * spare); a program growing on takes the rest at the next passes. */
	if (caught_up && nready &&
	    ahead) { /* else kept: those a program took before it held OL_PREFAULT_MIN, at the first pass past it */
		struct ol_seg *cold_segs[OL_COLD_MAX];
		bool done[OL_COLD_MAX] = {false};
		pthread_mutex_lock(&ol->lock);
		uint32_t ncold = ol->ncold;
		memcpy(cold_segs, ol->cold_segs, ncold * sizeof cold_segs[0]);
		pthread_mutex_unlock(&ol->lock);
		size_t budget = OL_COLD_AHEAD * demand < target ? OL_COLD_AHEAD * demand : target;
		cold_finish(pool, cold_segs, ncold, meta, budget, done);
		/* the segments finished whole off the list, in order (heaps may
		 * have added theirs meanwhile) */
		pthread_mutex_lock(&ol->lock);
		uint32_t keep = 0;
		for (uint32_t i = 0; i < ol->ncold; i++) {
			uint32_t k = 0;
			while (k < ncold && cold_segs[k] != ol->cold_segs[i])
				k++;
			if (k == ncold || !done[k])
				ol->cold_segs[keep++] = ol->cold_segs[i];
		}
		ol->ncold = keep;
		pthread_mutex_unlock(&ol->lock);
	}
	/* 3. past what the demand asks for, idle for decay_ms: unmapped past
	 * the mapped count, else purged (the oldest spares stay, in the order
	 * taken). Either is off the list first: a heap never takes a spare
	 * whose pages are going. */
	struct ol_seg *drop = NULL, *purge = NULL;
	uint32_t i = 0;
	pthread_mutex_lock(&ol->lock);
	for (struct ol_seg **pp = &ol->spare, *s; (s = *pp) != NULL;) {
		bool ready = atomic_load_explicit(&s->ready, memory_order_relaxed);
		bool wanted = i < nready || (i < nmapped && !ready); /* as it is */
		if (wanted)
			s->spare_ns = now;
		if (wanted || now - s->spare_ns <= decay) {
			pp = &s->next, i++;
			continue;
		}
		*pp = s->next;
		ol->nspare--;
		if (i >= nmapped) {
			s->next = drop;
			drop = s;
		} else {
			s->next = purge;
			purge = s;
		}
	}
	pthread_mutex_unlock(&ol->lock);
	/* a free that loaded a map entry of one before return_idle cleared it
	 * may still read it (ol_readers_quiet): else the spare list's tail
	 * again, already purged, for the next pass */
	if (drop && !ol_readers_quiet(pool)) {
		uint32_t nd = 0;
		struct ol_seg *tail = drop;
		for (struct ol_seg *s = drop; s; s = s->next, nd++)
			tail = s;
		pthread_mutex_lock(&ol->lock);
		struct ol_seg **tp = &ol->spare;
		while (*tp)
			tp = &(*tp)->next;
		*tp = drop;
		tail->next = NULL;
		ol->nspare += nd;
		pthread_mutex_unlock(&ol->lock);
		atomic_fetch_add_explicit(&ol->unmap_waits, 1, memory_order_relaxed);
		drop = NULL;
	}
	for (struct ol_seg *s = drop, *nx; s; s = nx) {
		nx = s->next;
		kp__os_unmap_clean(&pool->os, s->base, OL_SEG_SIZE);
		meta_unmap(pool, s);
		atomic_fetch_add_explicit(&ol->unmapped, 1, memory_order_relaxed);
	}
	if (!purge)
		return;
	struct ol_seg *last = purge;
	uint32_t n = 0;
	for (struct ol_seg *s = purge; s; s = s->next, n++) {
		spare_purge(pool, s);
		s->spare_ns = now;
		last = s;
	}
	pthread_mutex_lock(&ol->lock); /* back at the tail: the last a heap takes */
	struct ol_seg **pp = &ol->spare;
	while (*pp)
		pp = &(*pp)->next;
	*pp = purge;
	last->next = NULL;
	ol->nspare += n;
	pthread_mutex_unlock(&ol->lock);
}

/* ---- A stale free's grace: the daemon waits out the marked slots ---------
 * return_idle clears a segment's slice-map entries, and step 3 of the pass
 * below unmaps it (its blocks and its metadata: the spans, the records).
 * A kp_free of a stale pointer (a double free) that loaded the entry before
 * the clear goes on to read the span, the record and the block: until s38
 * nothing but time kept those mapped (decay_ms between the clear and the
 * unmap, a pass's), and a free preempted in that window for longer read
 * unmapped memory: test_outline_map_race_attack30b, SEGV in
 * kp__ol_free_check (outline.h, pg->lim), kp__ol_free_other and free_slow,
 * under TSan in 5 runs of 30 on main fc15e96 and in release pinned to one
 * CPU (taskset -c 0) in 1 of 30. kpool reports a bad free; it must not
 * crash on one.
 *
 * The free's fast path stays as it is (its instruction budget): every free
 * that loads the map does so with its thread's slot marked (outline.h,
 * kp__ol_enter: the slot's id is not its aid until the call ends; alloc.c's
 * slow path reads the map unmarked only to test it, kp__ol_knows, and
 * frees through kp__ol_free, marked). The daemon reads those marks: each
 * thread whose slot names an outline pool is on a list (ol_reader_note,
 * where the slot is made; off it at the thread's exit). Before unmapping
 * segments a pass makes every thread execute a full barrier (membarrier:
 * the subtract that marks is a plain store, which a CPU may hold past the
 * map's load; the barrier makes it seen), then waits until each slot of
 * this pool it finds marked is seen unmarked: a free that loaded the entry
 * before the clear was marked then, and has ended; one marked after the
 * barrier loads the cleared entry (a miss: an invalid free). A slot not
 * seen unmarked within OL_READERS_WAIT_NS (preempted; marked again each
 * look) keeps the segments on the spare list (purged already: their pages
 * are back, only the address space waits) for the next pass. No
 * membarrier (an old kernel, a sandbox): never unmapped, only purged.
 * A thread past its exit hook (ol_exited: a pthread key's destructor run
 * after kpool's, its slot emptied and off the list) frees through
 * free_nested unmarked: such a free counts itself instead (ol_exited_enter,
 * below), and the pass waits for those counted before it (ol_exited_quiet). */
struct ol_reader {
	kp__ol_tls *slot;
	struct ol_reader *next, **pprev;
};
static __thread struct ol_reader ol_reader_self;
static __thread bool ol_reader_on, ol_reader_gone;
static pthread_mutex_t ol_readers_lock = PTHREAD_MUTEX_INITIALIZER;
static struct ol_reader *ol_readers;
static pthread_key_t ol_reader_key;
static bool ol_reader_key_ok;
static _Atomic int ol_readers_barrier; /* 0 not tried, 1 membarrier registered, -1 none */
/* How long a pass waits for one marked slot to be seen unmarked: a free's
 * call is well under a microsecond; 1 ms covers a preempted one's return
 * on a loaded CPU's next slice often enough, and the pass's thread is the
 * daemon's (no program thread waits). */
#define OL_READERS_WAIT_NS 1000000ull

/* The frees of threads past their exit hook (free_nested, ol_exited): no
 * slot of theirs is on the list (ol_reader_exit ran, or runs next), and
 * their TLS lives on until their last destructor has run, but no hook of
 * kpool's sees that moment: until s39 only time kept the segment such a
 * free read mapped (test_outline_exited_free_race: SEGV in free_nested's
 * reads of the span, pinned to one CPU, release 30 runs of 30 and TSan 19
 * of 20 on f50fe5a; 0 of 30 and 0 of 20 with this). Each such free now counts
 * itself, from before its load of the map's entry to its last read of the
 * span, in one of two counts (ol_exited_in): the one ol_exited_epoch names
 * when it starts. A pass that would unmap (ol_exited_quiet) waits for the
 * other count to drain (frees that started before an earlier pass's flip
 * and outlived its wait), flips the epoch, and waits for the count it left
 * to drain: every free that may have loaded an entry cleared before the
 * flip has then ended; one that starts after it reads the flipped epoch
 * (acquire) and so the cleared entry (a miss: an invalid free). One global
 * count, not a pool's: a post-exit free's pool is known only from its
 * argument, and the wait is a pass's (at most OL_READERS_WAIT_NS, the
 * daemon's thread). Two and an epoch, not one count seen at zero: frees
 * of many threads past their hooks may overlap for longer than a pass
 * waits, and the count would never be seen at zero. Atomics only, on a
 * cold path: no system call, the fast paths untouched. Per thread too
 * (ol_exited_mine): the child of a fork keeps the counts of its one
 * thread only (ol_readers_fork_child), none of the parent's others. */
static _Atomic uint32_t ol_exited_epoch;
static _Atomic uint32_t ol_exited_in[2];
static __thread uint32_t ol_exited_mine[2] __attribute__((tls_model("initial-exec")));
static inline void list_fence(void);

/* A post-exit free starts (above): the count it took, to give back to
 * ol_exited_leave. Its own share first: a fork (a handler's) between the
 * two counts the child's free twice, so that its daemon never unmaps (it
 * purges), rather than once too few. Then a full barrier before the
 * caller's load of the map: the pass's fence, then its loads of the
 * counts (ol_exited_quiet), the same store, fence, load on each side. */
static uint32_t ol_exited_enter(void)
{
	uint32_t e = atomic_load_explicit(&ol_exited_epoch, memory_order_acquire) & 1;
	ol_exited_mine[e]++;
	atomic_fetch_add_explicit(&ol_exited_in[e], 1, memory_order_seq_cst);
	list_fence();
	return e;
}

static void ol_exited_leave(uint32_t e)
{
	atomic_fetch_sub_explicit(&ol_exited_in[e], 1, memory_order_release);
	ol_exited_mine[e]--;
}

static void ol_reader_exit(void *arg)
{
	(void)arg;
	pthread_mutex_lock(&ol_readers_lock);
	if (ol_reader_on) {
		*ol_reader_self.pprev = ol_reader_self.next;
		if (ol_reader_self.next)
			ol_reader_self.next->pprev = ol_reader_self.pprev;
		ol_reader_on = false;
	}
	ol_reader_gone = true; /* never listed again: its TLS is going */
	pthread_mutex_unlock(&ol_readers_lock);
}

/* The calling thread's slot on the readers' list (once a thread; where the
 * slot is made to name an outline pool, so before any mark of it). No list
 * without the exit key (ol_exit_key_init; a thread's TLS must leave the
 * list before it is freed): the daemon then never unmaps (ol_readers_quiet). */
static void ol_reader_note(void)
{
	if (KP_LIKELY(ol_reader_on) || ol_reader_gone || !ol_reader_key_ok)
		return;
	/* first: setspecific may allocate (a key past glibc's first 32), and
	 * the preload's malloc comes back here */
	ol_reader_on = true;
	if (pthread_setspecific(ol_reader_key, &ol_reader_self) != 0) {
		ol_reader_on = false;
		ol_reader_gone = true;
		return;
	}
	sigset_t old;
	kp__os_signals_off(&old); /* no handler's call while the lock is held */
	pthread_mutex_lock(&ol_readers_lock);
	ol_reader_self.slot = &kp__ol_slot;
	ol_reader_self.next = ol_readers;
	ol_reader_self.pprev = &ol_readers;
	if (ol_readers)
		ol_readers->pprev = &ol_reader_self.next;
	ol_readers = &ol_reader_self;
	pthread_mutex_unlock(&ol_readers_lock);
	kp__os_signals_back(&old);
}

/* The child of a fork: the other threads are gone (their slots with them,
 * and the list's lock may have been held by one): the list is this
 * thread's slot alone, if it was on it. Once a pool (kp__ol_fork). */
static void ol_readers_fork_child(void)
{
	pthread_mutex_init(&ol_readers_lock, NULL);
	ol_readers = NULL;
	for (int e = 0; e < 2; e++)
		atomic_store_explicit(&ol_exited_in[e], ol_exited_mine[e], memory_order_relaxed);
	if (ol_reader_on) {
		ol_reader_self.next = NULL;
		ol_reader_self.pprev = &ol_readers;
		ol_readers = &ol_reader_self;
	}
}

/* Another thread's slot word, read as one mov: its thread writes it with
 * plain stores and an asm subtract (outline.h), and the order that makes
 * the read meaningful is membarrier's, which TSan does not model. */
static inline uint64_t ol_slot_word(const uint64_t *w)
{
	uint64_t v;
#ifdef __x86_64__
	__asm__ volatile("movq %1, %0" : "=r"(v) : "m"(*w) : "memory");
#else
	v = __atomic_load_n(w, __ATOMIC_RELAXED);
#endif
	return v;
}

/* Is count e of the post-exit frees seen at zero before t0's wait is out? */
static bool ol_exited_drained(kp_pool *pool, uint32_t e, uint64_t t0)
{
	for (uint32_t spins = 0; atomic_load_explicit(&ol_exited_in[e], memory_order_seq_cst) != 0; spins++) {
		if (spins >= 64 && kp__pool_now(pool) - t0 > OL_READERS_WAIT_NS)
			return false;
		if (spins >= 64)
			kp__os_yield(&pool->os);
	}
	return true;
}

/* Have the post-exit frees that may have loaded an entry cleared before
 * this call ended (ol_exited_enter's comment)? ol_readers_lock held: one
 * pass flips at a time. The fence first: the clears (return_idle, under
 * the outline lock since) before the loads of either count. No flip while
 * the older count is held: a free counted there may have loaded an entry
 * this pass would unmap, and after the flip no pass would wait for it. */
static bool ol_exited_quiet(kp_pool *pool, uint64_t t0)
{
	list_fence();
	uint32_t cur = atomic_load_explicit(&ol_exited_epoch, memory_order_relaxed) & 1;
	if (!ol_exited_drained(pool, cur ^ 1, t0))
		return false;
	atomic_fetch_xor_explicit(&ol_exited_epoch, 1, memory_order_seq_cst);
	return ol_exited_drained(pool, cur, t0);
}

/* May the segments whose map entries were cleared before this call be
 * unmapped: no free that loaded one of them still running (above)? */
static bool ol_readers_quiet(kp_pool *pool)
{
	int b = atomic_load_explicit(&ol_readers_barrier, memory_order_acquire);
	if (!b) {
		b = kp__os_membarrier_register(&pool->os) == 0 ? 1 : -1;
		atomic_store_explicit(&ol_readers_barrier, b, memory_order_release);
	}
	if (b < 0 || !ol_reader_key_ok || kp__os_membarrier(&pool->os) != 0)
		return false;
	bool quiet = true;
	uint64_t id = kp__ol_slot_id(pool), t0 = kp__pool_now(pool); /* the slot's tag (outline.h) */
	pthread_mutex_lock(&ol_readers_lock);
	for (struct ol_reader *r = ol_readers; r && quiet; r = r->next)
		for (uint32_t spins = 0;; spins++) {
			uint64_t aid = ol_slot_word(&r->slot->aid), sid = ol_slot_word(&r->slot->id);
			if (aid != id || sid == aid)
				break;
			if (spins >= 64 && kp__pool_now(pool) - t0 > OL_READERS_WAIT_NS) {
				quiet = false;
				break;
			}
			if (spins >= 64)
				kp__os_yield(&pool->os);
		}
	if (quiet)
		quiet = ol_exited_quiet(pool, t0);
	pthread_mutex_unlock(&ol_readers_lock);
	return quiet;
}

/* The bytes in use past which an outline pool has work for a lazily
 * started daemon (kp__ol_wanted): the inline pool's rule (daemon.c,
 * KP_PREFAULT_MIN: 1 MiB handed out), so a program holding a few MiB gets
 * its paced growth, decay and backup refill on either layout, and one of a
 * few hundred KiB (the preload's `traps busy`, 64 KiB live) pays no thread.
 * Not the segments mapped: a heap carves from a segment of its own, so
 * resident.c's four threads of 64 small blocks each (tests/data/preload)
 * mapped 4-6 and started the daemon with more than one (s24). */
#define OL_WANTED_BYTES ((uint64_t)1 << 20)

/* The bytes of the blocks handed out of s's first used spans (records of
 * blocks taken less those on their stacks and those other threads freed),
 * each at its class's size less its canary: racy reads, a snapshot. */
static uint64_t seg_live_bytes(struct ol_seg *s, uint32_t used)
{
	uint64_t bytes = 0;
	for (uint32_t i = 0; i < used; i++) {
		struct ol_span *pg = &s->spans[i];
		if (!pg->start)
			continue; /* a later slice of a span of several */
		int64_t live = (int64_t)__atomic_load_n(&pg->fresh, __ATOMIC_RELAXED) - (kp__ol_sp(pg) - pg->stack0) -
			       atomic_load_explicit(&pg->nremote, memory_order_relaxed);
		if (live > 0)
			bytes += (uint64_t)live * (pg->bsize - pg->csz);
	}
	return bytes;
}

/* Whether the live blocks of the spans reach OL_WANTED_BYTES, as
 * kp__ol_in_use counts them less the foreign caches (an upper bound). The
 * outline lock by trylock: false when another thread holds it (the caller
 * asks again later), so it never blocks, nor deadlocks a thread that holds
 * it already (a signal handler's malloc). */
static bool wanted_in_use(kp__ol *ol)
{
	if (pthread_mutex_trylock(&ol->lock) != 0)
		return false;
	uint64_t bytes = 0;
	for (struct ol_seg *s = ol->segs; s && bytes < OL_WANTED_BYTES; s = s->next) {
		uint32_t used = __atomic_load_n(&s->used, __ATOMIC_ACQUIRE);
		bytes += seg_live_bytes(s, used);
	}
	pthread_mutex_unlock(&ol->lock);
	return bytes >= OL_WANTED_BYTES;
}

bool kp__ol_wanted(kp_pool *pool)
{
	kp__ol *ol = pool->ol;
	return ol && wanted_in_use(ol);
}

/* A heap's avail lock (outline.h): the owner in its slow paths, the daemon
 * for list moves; neither makes a system call while it holds it. A long
 * wait (the holder preempted) yields, after OL_AVAIL_SPIN_NS on the CPU as
 * the allocation path's wait for pool->lock (daemon.c, alloc_path_lock): a
 * yield is a system call, and the steady state makes none. After 256
 * spins, under TSan, the allocating thread yielded behind a daemon pass
 * now and then (test_cache's steady run: syscalls.alloc.other 0 -> 1 in 2
 * of 6 runs). */
#define OL_AVAIL_SPIN_NS 200000ull /* as KP_ALLOC_SPIN_NS: 10x the longest idle-daemon hold seen */
static void avail_lock(kp_pool *pool, struct ol_heap *h)
{
	uint64_t until = 0;
	for (unsigned spins = 0; atomic_exchange_explicit(&h->avail_lock, 1, memory_order_acquire); spins++) {
		while (atomic_load_explicit(&h->avail_lock, memory_order_relaxed)) {
			if (++spins > 256) {
				spins = 0;
				uint64_t now = kp__now_ns();
				if (!until)
					until = now + OL_AVAIL_SPIN_NS;
				else if (now > until)
					kp__os_yield(&pool->os);
			}
			__builtin_ia32_pause();
		}
	}
}
static void avail_unlock(struct ol_heap *h)
{
	atomic_store_explicit(&h->avail_lock, 0, memory_order_release);
}
/* The owner's side (refill, a relisting free). */
static void owner_lock(kp_pool *pool, struct ol_heap *h)
{
#if KP_PLANT != 11 /* planted 11: the owner moves its avail lists without their lock */
	avail_lock(pool, h);
#endif
}
static void owner_unlock(struct ol_heap *h)
{
#if KP_PLANT != 11 /* planted 11 */
	avail_unlock(h);
#endif
}

/* Blocks of at least a page: a block of less shares its pages with its
 * neighbours, and the walk of a span's records (one per block) would cost
 * more than the few whole pages found. kpbench b's and git's blocks of
 * 4-64 KiB are these. */
#define OL_BPURGE_MIN KP_PAGE
/* How long a listed span's free blocks stay the same before their pages go
 * back: the inline primary's block checkpoints (primary.c, KP_BPURGE_MS),
 * two of them, so that a block freed and taken again within them is left
 * alone; past the daemon's timer (100 ms by default), the passes seeing it
 * are what counts. */
#define OL_BPURGE_MS 20
/* Spans whose blocks a pass gives back at most: each costs a mincore and a
 * madvise per run of free blocks, so a pass stays bounded (the rest wait
 * for the next one). */
#define OL_BPURGE_SPANS 64u

/* Give back the whole pages inside [run, end): a run of free blocks
 * (purge_blocks, park_purge). */
static void purge_inside(kp_pool *pool, uint8_t *run, uint8_t *end)
{
	uint8_t *lo = (uint8_t *)(((uintptr_t)run + KP_PAGE - 1) & ~(uintptr_t)(KP_PAGE - 1));
	uint8_t *hi = (uint8_t *)((uintptr_t)end & ~(uintptr_t)(KP_PAGE - 1));
	if (hi > lo)
		atomic_fetch_add(&pool->purged_bytes, kp__os_purge(&pool->os, lo, (size_t)(hi - lo)));
}

/* Give back the whole pages inside pg's free blocks (of those made, free
 * on its stack or never handed out, and those past fresh): pg is off its
 * heap's avail list, in no thread's hand (see purge_idle: no block of it
 * can be taken meanwhile, a free only adds blocks to its stack, a free block
 * is written by no thread). A block read free stays so; one freed
 * meanwhile keeps its pages till the next pass. Its records are read
 * without its owner's synchronisation (no_sanitize: the owner's frees
 * write them). */
__attribute__((no_sanitize("thread"))) static void purge_blocks(kp_pool *pool, struct ol_span *pg)
{
	uint32_t fresh = __atomic_load_n(&pg->fresh, __ATOMIC_RELAXED);
	uint8_t *run = NULL;
	for (uint32_t i = 0; i <= pg->nblocks; i++) {
		uint32_t st = i < fresh ? __atomic_load_n(&pg->rec[i].state, __ATOMIC_RELAXED) : OL_FREE;
		bool free = i < pg->nblocks && (st == OL_FREE || st == OL_VIRGIN);
		uint8_t *b = pg->start + (size_t)i * pg->bsize;
		if (free && !run)
			run = b;
		if (free || !run)
			continue;
		purge_inside(pool, run, b);
		run = NULL;
	}
}

/* The purge, on the daemon's pass: a span on its heap's avail list whose
 * blocks are all on its stack is seen so; still so decay_ms later, its data
 * pages go back (kp__os_purge; they read as zero when taken again: no
 * allocator state lives in them). The span is taken off its list while its
 * pages go, so the owner never waits on a system call: a span wholly free
 * and off every list is out of reach (no block of it is allocated, so no
 * free reaches its stack, and a free of a pointer into it finds its record
 * free and is refused). A span listed with blocks of a page or more, not
 * wholly free or not yet for decay_ms, whose free blocks stayed the same
 * for OL_BPURGE_MS (bpurge_free, bpurge_ns), is taken off its list so too
 * while the pages inside its free blocks go (purge_blocks): off every list
 * and in no thread's hand, none of its blocks is handed out meanwhile, and
 * a free block is written by no thread (a free of one is refused, the
 * owner's frees of its live ones only push onto its stack). Spans in hand
 * (cur[]), retired ones and those with cross-thread frees not yet taken
 * back are left alone. */
static void purge_idle(kp_pool *pool)
{
	kp__ol *ol = pool->ol;
	if (pool->conf.poison)
		return; /* a purged page reads zero, no fill: poison:on keeps its pages */
	uint64_t now = kp__pool_now(pool), decay = (uint64_t)pool->conf.decay_ms * 1000000ull;
	uint64_t bdue = (uint64_t)OL_BPURGE_MS * 1000000ull;
	unsigned nblk = 0;
	pthread_mutex_lock(&ol->lock);
	for (struct ol_heap *h = ol->heaps; h; h = h->next) {
		struct ol_span *take = NULL, *btake = NULL;
		avail_lock(pool, h);
		for (uint32_t c = 0; c < OL_NCLASS; c++)
			for (struct ol_span **pp = &h->avail[c], *pg; (pg = *pp) != NULL;) {
				uint32_t nfree = (uint32_t)(kp__ol_sp(pg) - pg->stack0);
				bool empty = nfree == __atomic_load_n(&pg->fresh, __ATOMIC_RELAXED);
				bool whole =
					empty && pg->idle_ns != OL_PURGED && pg->idle_ns && now - pg->idle_ns >= decay;
				/* its free blocks' pages (all of them when wholly
				 * free, its decay kept: idle_ns), once they stayed
				 * the same for OL_BPURGE_MS (purge_blocks) */
				bool blocks = !whole && nfree && pg->bsize >= OL_BPURGE_MIN;
				if (blocks && (pg->bpurge_free != nfree || !pg->bpurge_ns)) {
					pg->bpurge_free = nfree;
					pg->bpurge_ns = now ? now : 1;
				}
				/* (now >= bpurge_ns: a pass at clock 0 marks 1, and
				 * 0 - 1 wrapped: purged at once, s31-att) */
				blocks = blocks && pg->bpurge_ns != OL_PURGED && now >= pg->bpurge_ns &&
					 now - pg->bpurge_ns >= bdue && nblk < OL_BPURGE_SPANS;
				if (!empty)
					pg->idle_ns = 0;
				else if (!pg->idle_ns)
					pg->idle_ns = now ? now : 1;
				if (!whole && !blocks) {
					pp = &pg->next;
					continue;
				}
				nblk += blocks;
				*pp = pg->next; /* off the list while its pages go */
				if (whole)
					pg->next = take, take = pg;
				else
					pg->next = btake, btake = pg;
			}
		avail_unlock(h);
		if (!take && !btake)
			continue;
		for (struct ol_span *pg = take; pg; pg = pg->next) {
			size_t bytes = ((size_t)pg->nblocks * pg->bsize + KP_PAGE - 1) & ~(size_t)(KP_PAGE - 1);
			kp__os_purge(&pool->os, pg->start, bytes);
			pg->idle_ns = OL_PURGED;
		}
		for (struct ol_span *pg = btake, *nx; pg; pg = nx) {
			nx = pg->next;
			purge_blocks(pool, pg);
			pg->bpurge_ns = OL_PURGED;
			pg->next = take, take = pg;
		}
		avail_lock(pool, h);
		for (struct ol_span *pg = take, *nx; pg; pg = nx) {
			nx = pg->next;
			pg->next = h->avail[pg->cls];
			h->avail[pg->cls] = pg;
		}
		avail_unlock(h);
	}
	pthread_mutex_unlock(&ol->lock);
}

/* Segments a pass gives back at most: two madvise calls each (data and
 * metadata), so a pass stays bounded as the spares' pre-fault does
 * (OL_PASS_SEGS: 256 MiB); the rest go at the next pass. */
#define OL_RETURN_MAX 64u

static void drain_remote(kp_pool *pool, struct ol_heap *h);

/* Every span of s wholly free (every block it made on its stack, none on
 * its cross-thread list or on the way there: no block of it is live nor in
 * a foreign cache). Atomics only: a first sieve, made again under the
 * spans' avail locks. The acquire of sp: the owner's last push (as
 * span_adopt). */
static bool segment_free(struct ol_seg *s)
{
	for (uint32_t i = 0; i < s->used; i++) {
		struct ol_span *pg = &s->spans[i];
		if (!pg->start)
			continue; /* a later slice of a span of several */
		uint16_t *sp = __atomic_load_n(&pg->sp, __ATOMIC_ACQUIRE);
		if ((uint32_t)(sp - pg->stack0) != __atomic_load_n(&pg->fresh, __ATOMIC_RELAXED) ||
		    atomic_load_explicit(&pg->remote, memory_order_acquire) ||
		    atomic_load_explicit(&pg->nremote, memory_order_relaxed))
			return false;
	}
	return true;
}

/* The segment of cand[0..n) (in address order) that holds span pg, or n:
 * a binary search, as every span on the walked lists is looked up. */
static uint32_t cand_of(struct ol_seg *const *cand, uint32_t n, const struct ol_span *pg)
{
	uint32_t lo = 0, hi = n; /* the first whose record starts past pg: hi */
	while (lo < hi) {
		uint32_t mid = (lo + hi) / 2;
		if ((uintptr_t)cand[mid] <= (uintptr_t)pg)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (!lo || pg < cand[lo - 1]->spans || pg >= cand[lo - 1]->spans + OL_NSLICES)
		return n;
	return lo - 1;
}

/* The metadata a returned segment's spans used past its record's last
 * page (meta_after_record up to its bump) made to read zero, as
 * segment_new's meta_clear_head and every span made there assume: given
 * back whole (kp__os_discard, not kp__os_purge: a metadata page swapped
 * out is not resident to mincore, and a purge would leave it to come back
 * as it was), or, where the kernel refuses (an mlock'ed page, a program
 * under mlockall: EINVAL) or a fault is injected, written zero here on the
 * daemon. Before (s28), a refused purge let the segment go onto the
 * spares with its old records: blocks never handed out read live, a free
 * of one was taken with no event and the block handed out twice
 * (test_outline_return_meta_attack28). */
static void meta_discard(kp_pool *pool, struct ol_seg *s)
{
	uint8_t *m = meta_after_record(s);
	uintptr_t top = ((uintptr_t)s->bump + KP_PAGE - 1) & ~(uintptr_t)(KP_PAGE - 1);
	if ((uintptr_t)m < top && !kp__os_discard(&pool->os, m, top - (uintptr_t)m))
		memset(m, 0, top - (uintptr_t)m);
}

/*
 * Whole segments back, on the daemon's pass (first, before purge_idle): a
 * segment no heap carves (held) whose every span has sat wholly free on its
 * heap's avail list for decay_ms (purge_idle's idle_ns: set once a pass saw
 * it so, reset whenever a heap takes it) leaves the heaps: its spans off
 * their lists, its slice-map entries cleared, its data pages and its spans'
 * stacks and records purged, and it goes onto the spare list, no longer
 * charged against primary_max (pool->ol_bytes: spares are not, segment_new
 * charges the one it takes). The spares' decay unmaps it when the demand
 * wants no spare (kp__ol_daemon_pass, 3.). Before, a heap's segment stayed
 * charged and mapped until kp_destroy: 48 MiB of 256-byte blocks freed
 * under primary_max 64m left 128 of 400 blocks of 100 KiB possible
 * (test_outline_return).
 *
 * A span on its heap's avail list with idle_ns set is in no thread's hand
 * (cur[]: a span is taken off the list into it, idle_ns 0) and wholly free
 * since idle_ns was set (blocks are handed out of spans in hand only, and a
 * cached or cross-thread one leaves the stack short: segment_free's test,
 * made again under the lock). Each heap's avail lock is taken in turn, in
 * the order of the heaps' list (purge_idle's), the pool's outline lock held
 * throughout (no span_adopt, no heap_get, no segment_for meanwhile); a
 * heap's slow path that would take a span waits for the lock and then finds
 * it gone, or finds it and the span is no longer idle here. The spans of a
 * segment taken off lists are out of reach (no list, no hand, no live
 * block); a segment whose spans were not all found idle has them put back.
 *
 * A free of a pointer into the segment (none is live: a double free, or a
 * stale pointer) after the map entry was cleared finds no span and goes to
 * alloc.c's path: an invalid free. One that read the entry before, and
 * then reads the span: the span record is left as it was (segment_new
 * makes it anew when a heap takes the segment again) and its block records
 * read free (as they were, or zero pages once purged: free), so it is
 * refused as a double free; the metadata stays mapped while the segment is
 * a spare and is unmapped only by the spares' decay, at the next pass at the
 * earliest: a free stalled between its two loads for that long is the one
 * race left.
 *
 * An abandoned heap (its thread ended) has its cross-thread frees taken in
 * here (as span_adopt does) and its segment let go, so that what a thread
 * left goes back too. Not poison:on (purge_idle sets no idle_ns there).
 */
static void return_idle(kp_pool *pool)
{
	kp__ol *ol = pool->ol;
	if (pool->conf.poison)
		return;
	uint64_t now = kp__pool_now(pool), decay = (uint64_t)pool->conf.decay_ms * 1000000ull;
	struct ol_seg *cand[OL_RETURN_MAX];
	uint32_t ncand = 0, want[OL_RETURN_MAX] = {0}, got[OL_RETURN_MAX] = {0};
	uint64_t classes[2] = {0, 0}; /* the classes of the candidates' spans */
	pthread_mutex_lock(&ol->lock);
	for (struct ol_heap *h = ol->heaps; h; h = h->next) {
		if (h->self != OL_OWN_NONE)
			continue;
		if (atomic_load_explicit(&h->dirty, memory_order_relaxed)) {
			avail_lock(pool, h);
			drain_remote(pool, h);
			avail_unlock(h);
		}
		if (h->seg) {
			segment_let_go(ol, h->seg);
			h->seg = NULL;
		}
	}
	for (struct ol_seg *s = ol->segs; s && ncand < OL_RETURN_MAX; s = s->next) {
		if (s->held || !segment_free(s))
			continue;
		uint32_t k = ncand++; /* in address order (cand_of) */
		for (; k && (uintptr_t)cand[k - 1] > (uintptr_t)s; k--)
			cand[k] = cand[k - 1];
		cand[k] = s;
	}
	for (uint32_t k = 0; k < ncand; k++)
		for (uint32_t i = 0; i < cand[k]->used; i++)
			if (cand[k]->spans[i].start) {
				want[k]++;
				classes[cand[k]->spans[i].cls / 64] |= (uint64_t)1 << (cand[k]->spans[i].cls % 64);
			}
	if (!ncand) {
		pthread_mutex_unlock(&ol->lock);
		return;
	}
	/* the candidates' spans idle for decay_ms, off their lists */
	struct ol_span *off = NULL;
	for (struct ol_heap *h = ol->heaps; h; h = h->next) {
		avail_lock(pool, h);
		for (uint32_t c = 0; c < OL_NCLASS; c++) {
			if (!(classes[c / 64] >> (c % 64) & 1))
				continue;
			for (struct ol_span **pp = &h->avail[c], *pg; (pg = *pp) != NULL;) {
				uint32_t k = cand_of(cand, ncand, pg);
				uint16_t *sp = __atomic_load_n(&pg->sp, __ATOMIC_ACQUIRE);
				if (k == ncand || !pg->idle_ns ||
				    (pg->idle_ns != OL_PURGED && now - pg->idle_ns < decay) ||
				    (uint32_t)(sp - pg->stack0) != __atomic_load_n(&pg->fresh, __ATOMIC_RELAXED) ||
				    atomic_load_explicit(&pg->remote, memory_order_acquire) ||
				    atomic_load_explicit(&pg->nremote, memory_order_relaxed)) {
					pp = &pg->next;
					continue;
				}
				*pp = pg->next;
				pg->next = off;
				off = pg;
				got[k]++;
			}
		}
		avail_unlock(h);
	}
	/* a segment not wholly taken: its spans back on their lists, as they were */
	for (struct ol_span *pg = off, *nx, **pp = &off; pg; pg = nx) {
		nx = pg->next;
		uint32_t k = cand_of(cand, ncand, pg);
		if (got[k] == want[k]) {
			pp = &pg->next;
			continue;
		}
		*pp = nx;
		avail_lock(pool, pg->heap);
		pg->next = pg->heap->avail[pg->cls];
		pg->heap->avail[pg->cls] = pg;
		avail_unlock(pg->heap);
	}
	/* the segments wholly taken: off the pool's lists, their map entries
	 * cleared (a free of a pointer into them is alloc.c's from now) */
	struct ol_seg *back = NULL;
	for (uint32_t k = 0; k < ncand; k++) {
		struct ol_seg *s = cand[k];
		if (got[k] != want[k])
			continue;
		for (struct ol_seg **pp = &ol->segs; *pp; pp = &(*pp)->next)
			if (*pp == s) {
				*pp = s->next;
				break;
			}
		for (struct ol_seg **pp = &ol->partial[OL_NSLICES - s->used]; *pp; pp = &(*pp)->pnext)
			if (*pp == s) {
				*pp = s->pnext;
				break;
			}
		for (uint32_t i = 0; i < ol->ncold;)
			if (ol->cold_segs[i] == s)
				ol->cold_segs[i] = ol->cold_segs[--ol->ncold];
			else
				i++;
		ol->nsegs--;
		for (uint32_t i = 0; i < s->used; i++)
			kp__ol_map_set(ol->map, ((uintptr_t)s->base >> OL_SLICE_SHIFT) + i, NULL);
		s->next = back;
		back = s;
	}
	pthread_mutex_unlock(&ol->lock);
	if (!back)
		return;
	/* their pages back (no lock held: no one reaches them), then spares */
	struct ol_seg *last = back;
	uint32_t n = 0;
	for (struct ol_seg *s = back; s; s = s->next, n++) {
		kp__os_purge(&pool->os, s->base, OL_SEG_SIZE); /* past its spans too: the daemon pre-faults whole */
		meta_discard(pool, s);
		/* the links meta_take_top took, written by cross-thread frees
		 * (each before it is read: a purge for the memory alone) */
		uintptr_t top = ((uintptr_t)s->bump + KP_PAGE - 1) & ~(uintptr_t)(KP_PAGE - 1);
		uintptr_t low = (uintptr_t)s->end & ~(uintptr_t)(KP_PAGE - 1), lim = (uintptr_t)s + OL_META;
		low = low > top ? low : top;
		if (low < lim)
			kp__os_purge(&pool->os, (void *)low, lim - low);
		atomic_store_explicit(&s->ready, false, memory_order_relaxed);
		atomic_store_explicit(&s->taken, false, memory_order_relaxed);
		atomic_store_explicit(&s->faulted, 0, memory_order_relaxed);
		atomic_store_explicit(&s->goal, 0, memory_order_relaxed);
		/* idle for decay_ms already: the spares' decay (kp__ol_daemon_pass,
		 * 3.) unmaps it at the next pass unless the demand wants it, not at
		 * this one; nor while a free that loaded its map entry may still
		 * read it: ol_readers_quiet) */
		s->spare_ns = now > decay ? now - decay : 0;
		atomic_fetch_sub(&pool->ol_bytes, OL_SEG_SIZE);
		last = s;
	}
	pthread_mutex_lock(&ol->lock); /* at the tail: the last a heap takes */
	struct ol_seg **pp = &ol->spare;
	while (*pp)
		pp = &(*pp)->next;
	*pp = back;
	last->next = NULL;
	ol->nspare += n;
	pthread_mutex_unlock(&ol->lock);
	atomic_fetch_add_explicit(&ol->returned, n, memory_order_relaxed);
}

static void *meta_take(struct ol_seg *s, size_t n)
{
	uint8_t *p = s->bump;
	s->bump = (uint8_t *)(((uintptr_t)p + n + 63) & ~(uintptr_t)63);
	return p;
}

/* n bytes of s's metadata from its top down (s->end, 64-aligned), where
 * meta_take's arrays grow up to meet them (segment_fits: the room between):
 * for the cross-thread lists' links, which only cross-thread frees write,
 * so that a program whose blocks no other thread frees never touches their
 * pages. Taken with meta_take, between each span's stack and records, they
 * shared the pages those touched: 11.45 bytes of metadata resident a live
 * 32-byte block where the record and stack entry are 10
 * (test_outline_rec); CPython's test_unicode under the preload, 2.2 M
 * blocks: peak RSS 261 against 267 MB, medians of 3. The span's maker (the
 * pool's outline lock not needed: the segment is its heap's). */
static void *meta_take_top(struct ol_seg *s, size_t n)
{
	s->end -= (n + 63) & ~(size_t)63;
	return s->end;
}

/* The next blocks of pg taken into use, its stack empty: their records
 * (free, their canaries) and stack entries, the lowest index on top; a page
 * of blocks at a time, 16 at least. The owner, in its slow path. */
static void span_extend(kp_pool *pool, struct ol_span *pg)
{
	uint32_t f = pg->fresh, k = KP_PAGE / pg->bsize;
	k = k < 16 ? 16 : k;
	k = k < pg->nblocks - f ? k : pg->nblocks - f;
	if (pg->csz)
		for (uint32_t i = f; i < f + k; i++)
			pg->rec[i].canary = (uint32_t)kp__hkey(
				pool->secret, (const void *)(pg->gen ^ (uintptr_t)(pg->start + (size_t)i * pg->bsize)));
	if (pg->zero)
		for (uint32_t i = f; i < f + k; i++)
			pg->rec[i].state = OL_VIRGIN;
	uint16_t *sp = kp__ol_sp(pg);
	for (uint32_t i = k; i-- > 0;)
		*++sp = (uint16_t)(f + i);
	kp__ol_sp_set(pg, sp);
	__atomic_store_n(&pg->fresh, f + k, __ATOMIC_RELAXED);
}

/* The fewest blocks of a span cut short to fit the slices left in its
 * heap's segment (span_slices): a quarter of a span's usual 32, so that a
 * tail of 8 slices or more takes a span of any class, one of 2-7 those up
 * to 16-56 KiB. */
#define OL_TAIL_MIN_BLOCKS 8u

/* The slices of h's next span of blocks of bs bytes: enough for OL_SPAN_BLOCKS
 * or OL_SPAN_BLOCKS_SMALL (fewer spans to switch between when the frees of a class are spread over
 * many: kpbench b; untouched pages of a span cost no memory), or the slices
 * left in h's segment when fewer, if they hold OL_TAIL_MIN_BLOCKS. Before,
 * a span that did not fit left the tail to a later span small enough
 * (segment_for's partial lists) and a new segment was taken: kpbench d's
 * spans of 2-32 slices left 30-36 MiB of free slices on the partial lists
 * at 1 GiB, pre-faulted by the daemon with their segments and never
 * written (test_outline_grow_peak). s33 measured 128 blocks for classes
 * over 1 KiB (kpbench b spreads a class's frees over fewer spans: 60% of
 * the owner's frees into the span in hand against 43%, so fewer refills):
 * b 79.9 -> 74.5 instructions a kp_alloc + kp_free, L2 misses 2.78 -> 2.61
 * an operation (test_cache_lines.py's caches, the whole program), but
 * test_outline_grow_paced_attack31b's thread faulted 0.54% of its pages at
 * 2 MiB a pass (0.06% with 32) and mapped 3 segments on its allocation
 * path at 4 MiB (0); up to 64 slices it failed the 3 MiB bound and
 * test_outline_free_only (1.65x). Not taken. The owner, in its slow path. */
/* The blocks a span's slices are sized for (span_slices) in classes over
 * OL_SPAN_BIG_FROM: 64 since s35 (32 before), so that more of a class's
 * frees land in its span in hand, whose stack hands the latest out first;
 * the 64 KiB class as before (OL_SPAN_SLICES_MAX). kpbench b: a block
 * reused within 256 operations 40.0% -> 44.3% (test_outline_reuse; tcmalloc
 * 74% by malloc); kp_alloc + kp_free 80.39 -> 76.94 instructions and 6.92
 * -> 6.55 D1 misses a pair, the program's L2 misses 2.79 -> 2.72
 * (tests/test_cache_lines.py's caches). test_outline_grow_paced_attack31b's
 * thread faulted 0.06 -> 0.12% of its pages at 2 MiB a pass, 0.43% either
 * way at 3 MiB, 0.59 -> 1.07% at 4 MiB, no mmap at any of them; 128 blocks
 * (s33's try, here up to 32 slices) took 3 segments on the thread at 4 MiB
 * and 0.55% at 2 MiB. */
#define OL_SPAN_BLOCKS 64u
/* ... and 32 blocks up to 2 KiB (classes up to 1 KiB hold 64 or more in
 * their one slice either way): from 1 KiB (reuse 45.8%, 76.26
 * instructions) a program of 16-2000 B blocks held each class in its span
 * in hand, listed no span, and the daemon's purge, which takes wholly free
 * listed spans, found none (test_outline_memory's purge beside churn: no
 * purge in 20 s; 0.7 s before) */
#define OL_SPAN_BLOCKS_SMALL 32u
#define OL_SPAN_BIG_FROM 2048u
/* ... in at most half a segment's slices: a span of 64 KiB blocks is 32
 * slices as before (test_outline_first_span), and never takes a segment
 * whole, so the tail rules above still find room for the next span */
#define OL_SPAN_SLICES_MAX (OL_NSLICES / 2)
static uint32_t span_slices(const struct ol_heap *h, uint32_t bs)
{
	size_t per = bs > OL_SPAN_BIG_FROM ? OL_SPAN_BLOCKS : OL_SPAN_BLOCKS_SMALL;
	uint32_t nsl = (uint32_t)((per * bs + OL_SLICE_SIZE - 1) / OL_SLICE_SIZE);
	nsl = nsl < OL_SPAN_SLICES_MAX ? nsl : OL_SPAN_SLICES_MAX;
	uint32_t left = h->seg ? OL_NSLICES - h->seg->used : 0;
	if (left && left < nsl && left * OL_SLICE_SIZE >= OL_TAIL_MIN_BLOCKS * bs)
		nsl = left;
	return nsl;
}

/* The blocks of a heap's first span of a class, at the most, and how much
 * more each next one holds, up to what its slices hold (as mimalloc's pages
 * of a size class grow). A span's stack and records are sized by its blocks
 * (2 + 16 bytes each), one after the other: a full span of 16-byte blocks
 * (4096: 8 KiB of stack, then 64 KiB of records) had a page of each touched
 * however few of them a thread used, and a small program two or three
 * pages of metadata per class and heap (tests/data/preload/anon_resident.c:
 * 124 KiB of metadata for 1,000 blocks of 8-256 bytes, 272 KiB of anonymous
 * memory beyond glibc's; 48 and 200 now). 128 blocks' stack and records
 * (2.3 KiB) share pages with the next span's; 64 left a small program's
 * classes on a second span, its data pages then half used (224 beyond). */
#define OL_FIRST_BLOCKS 128u
#define OL_SPAN_GROW 4u
/* ... and its bytes at the most: 2 slices, so that blocks over 4 KiB (whose
 * 32 take 3 slices or more: span_slices) start with a span of fewer, at
 * least one (64 KiB blocks: 2), and the next spans grow from there (a
 * hundred blocks of 64 KiB in 2 + 8 + 32 + 22 (a segment's tail) + 32 + 32,
 * 4 spans of 32 before: test_outline_first_span).
 * CPython grows a list by realloc, 1/8 more each time, one block live:
 * through every class from 9 to 64 KiB, and each first span of 32 blocks
 * (5 to 32 slices) carved 344 slices (21.5 MiB) in its test_unicode for 1.4
 * MiB live at the peak, 6.7-7 MiB of them resident (the daemon pre-faults
 * whole segments ahead of the heaps; s30). Classes up to 4 KiB are as
 * before: 128 blocks, or 32 blocks' slices (span_slices), are 128 KiB at
 * the most. */
#define OL_FIRST_BYTES (2 * OL_SLICE_SIZE)

/* The blocks of h's next span of class cls, whose slices hold nb: fewer
 * while its spans of the class are short (above). The owner, in its slow
 * path. */
static uint32_t span_blocks(const struct ol_heap *h, uint32_t cls, uint32_t nb)
{
	const struct ol_span *last = h->cur[cls];
	uint32_t first = (uint32_t)(OL_FIRST_BYTES / class_size[cls]);
	first = first < OL_FIRST_BLOCKS ? first : OL_FIRST_BLOCKS;
	first = first ? first : 1;
	uint32_t most = last == &empty_span ? first : last->nblocks * OL_SPAN_GROW;
	return nb < most ? nb : most;
}

/* The blocks of bs bytes a foreign cache of `bytes` a class holds: 1 at
 * least, OL_FC_MAX at most (outline.h). */
static uint16_t fc_cap_of(uint32_t bytes, uint32_t bs)
{
	uint32_t cap = bytes / bs;
	return (uint16_t)(cap < 1 ? 1 : cap > OL_FC_MAX ? OL_FC_MAX : cap);
}

/* A heap's cache of blocks of bs bytes before it allocates the class:
 * OL_FC_LONE_BYTES' worth, OL_FC_LONE_MIN blocks at least (the full cap
 * when that is less). */
static uint16_t fc_lone_cap(uint32_t bs)
{
	uint16_t full = fc_cap_of(OL_FC_BYTES, bs), lone = fc_cap_of(OL_FC_LONE_BYTES, bs);
	return lone >= OL_FC_LONE_MIN ? lone : full < OL_FC_LONE_MIN ? full : OL_FC_LONE_MIN;
}

static struct ol_span *span_new(kp_pool *pool, struct ol_heap *h, uint32_t cls)
{
	uint32_t bs = class_size[cls];
	uint32_t nsl = span_slices(h, bs);
	uint32_t nb = span_blocks(h, cls, (uint32_t)(nsl * OL_SLICE_SIZE / bs));
	/* the slices its blocks take: fewer when span_blocks cut them short
	 * (a first span of blocks over 4 KiB, and its next one) */
	uint32_t used = (uint32_t)(((size_t)nb * bs + OL_SLICE_SIZE - 1) / OL_SLICE_SIZE);
	nsl = used < nsl ? used : nsl;
	size_t need =
		(nb + 1) * sizeof(uint16_t) + 64 + nb * sizeof(uint16_t) + 64 + (nb + 1) * sizeof(struct ol_rec) + 64;
	struct ol_seg *s = segment_for(pool, h, nsl, need);
	if (!s)
		return NULL;
	struct ol_span *pg = &s->spans[s->used];
	pg->start = s->base + (size_t)s->used * OL_SLICE_SIZE;
	pg->bsize = bs;
	pg->rot = (uint8_t)__builtin_ctz(bs);
	pg->inv = kp__ol_inverse(bs >> pg->rot);
	pg->nblocks = nb;
	pg->lim = (uint64_t)nb + 1;
	pg->csz = h->csz;
	uint16_t *stack = meta_take(s, (nb + 1) * sizeof(uint16_t));
	/* the cross-thread list's links: touched by cross-thread frees alone */
	pg->link = meta_take_top(s, nb * sizeof(uint16_t));
	/* rec[nb]: a sentinel, never allocated, so a free of the span's tail
	 * (offset nb * bsize) meets a free record and is refused. */
	pg->rec = meta_take(s, (nb + 1) * sizeof(struct ol_rec));
	pg->own_start = pg->start;
	pg->own_rec = pg->rec;
	pg->own_bsize = bs;
	pg->heap = h;
	atomic_store_explicit(&pg->owner, h->self, memory_order_relaxed);
	pg->cls = (uint16_t)cls;
	pg->fc_cap = fc_cap_of(OL_FC_BYTES, bs);
	/* the records and stack entries are made as blocks are first taken
	 * (span_extend): metadata pages in proportion to the blocks used, not
	 * to the span (72 KiB for a span of 16-byte blocks) */
	stack[0] = OL_SENT;
	kp__ol_sp_set(pg, stack);
	pg->stack0 = stack;
	__atomic_store_n(&pg->fresh, 0, __ATOMIC_RELAXED);
	pg->relist_at = nb / 8 ? nb / 8 : 1;
	if (pool->conf.poison) /* every block as a freed one: poison_alloc verifies it */
		memset(pg->start, KP_POISON_BYTE, (size_t)nb * bs);
	/* per block, K(address ^ generation): distinct per slot and per span
	 * made at that address */
	pg->gen = h->csz ? atomic_fetch_add(&pool->ol->span_gen, 1) << 47 : 0;
	pg->zero = !pool->conf.poison && !s->recycled;
	span_extend(pool, pg);
	/* published last: a free of a pointer into the span finds it whole
	 * (a pointer into it comes from an allocation after this, on this
	 * thread, or through the caller's own synchronisation) */
	uintptr_t *map = pool->ol->map;
	for (uint32_t i = 0; i < nsl; i++)
		kp__ol_map_set(map, ((uintptr_t)pg->start >> OL_SLICE_SHIFT) + i, pg);
	__atomic_store_n(&s->used, s->used + nsl, __ATOMIC_RELEASE); /* the span whole: kp__ol_in_use */
	return pg;
}

/* ---- cross-thread frees --------------------------------------------------- */

/* A block's link while it is on its span's cross-thread list (outline.h,
 * OL_LINK_ON): set by the push, cleared by the walk that takes it off
 * (drain_span, fc_steal). A block whose record its owner's raced free
 * stored over (raced_dfree) may be on the list and on its owner's stack at
 * once, be handed out from the stack and freed by another thread again
 * before the owner's drain: a second push rewrote its link, the list ran
 * in a cycle from it, and each walk reported its blocks again until it had
 * counted the span's (test_outline_relisted: 35 double frees for one in a
 * span of 36; test_outline_purge_live_attack27 under TSan, 22 and 35 over)
 * and lost the rest of the list. So a free that finds the flag set after
 * its claim (listed_already) leaves the block out: it is listed already,
 * by the entry the raced free left, which the walk now takes as this one.
 * Its cost, with KP_OL_RETIRED_OWN 1's 4 instructions a cross-thread free
 * (against 4fa3c58): kpbench c --ops 300000 under callgrind, kp_alloc and
 * kp_free, 90.8 -> 99.4 M instructions (fc_flush 8.3 -> 13.2, drain_span
 * 3.2 -> 6.8); --pin same 48.1 -> 46.3 M ops per CPU second (median of 7,
 * alternated, load 4-6). s30-cheap cut it by about half with the same
 * fences and the same order (fc_flush's claimed entries kept in place and
 * its runs chained in registers, drain_span's arrays in registers and its
 * bound tested once a batch, fc_steal's blocks kept from its first walk):
 * medians of 7 alternated callgrind runs, 4fa3c58 / the fix as first
 * written / now, 90.45 / 98.76 / 94.91 M (fc_flush 8.48 / 12.32 / 9.17,
 * drain_span 3.46 / 5.47 / 4.56). */
static inline uint16_t link_next(const struct ol_span *pg, uint32_t idx)
{
	return (uint16_t)(__atomic_load_n(&pg->link[idx], __ATOMIC_RELAXED) & ~OL_LINK_ON);
}

/* After claims to OL_LISTED (stores), before their blocks' flags are read:
 * a walk clears a flag and then reads the record (link_unlist), so one of
 * the two sees the other's store (each side's store, fence, load). */
static inline void list_fence(void)
{
#if defined(__SANITIZE_THREAD__)
	/* gcc refuses a seq_cst fence under TSan (-Wtsan): a locked
	 * read-modify-write, a full barrier on x86-64 as the fence's mfence */
	_Atomic uint32_t dummy = 0;
	atomic_fetch_add_explicit(&dummy, 0, memory_order_seq_cst);
#else
	atomic_thread_fence(memory_order_seq_cst);
#endif
}

/* Is block idx, just claimed to OL_LISTED (list_fence since), on pg's list
 * already (the entry a raced free left)? Then reported, once (raced_dfree:
 * the double free that left the entry) and left out: the walk that meets
 * the entry takes the block. */
static inline bool listed_already(kp_pool *pool, struct ol_span *pg, uint32_t idx);

/* Blocks of pg, linked through pg->link from index head - 1 to tail
 * (whose link is set here), onto pg's cross-thread list with one
 * compare-and-swap; the span onto its heap's dirty list when the list was
 * empty. Counted in nremote already (remote_push; the daemon's return of
 * parked blocks: park_return). Any thread; the blocks' records read
 * OL_LISTED (swapped in by the caller) and none on the list already
 * (listed_already). Inlined: remote_push's code as it was before the split
 * (the preload's hot text holds remote_push; a remote_list of its own went
 * to the cold text, and tests/test_preload.py's small program, whose
 * cross-thread frees push, faulted a second window of it: 88 KiB of the
 * text resident against its bound of 52). */
static inline __attribute__((always_inline)) void remote_list(struct ol_span *pg, uint32_t head, uint32_t tail)
{
	uint32_t old = atomic_load_explicit(&pg->remote, memory_order_relaxed);
	do
		__atomic_store_n(&pg->link[tail], (uint16_t)(old | OL_LINK_ON), __ATOMIC_RELAXED);
	while (!atomic_compare_exchange_weak_explicit(&pg->remote, &old, head, memory_order_acq_rel,
						      memory_order_relaxed));
	/* acq_rel: found empty, the list was taken by a drain whose exchange
	 * followed a change of the span's heap (fc_steal's adoption): the
	 * heap read below is the new one */
	if (old == 0) { /* first on the list: tell the owner about the span */
		struct ol_heap *h = pg->heap;
		struct ol_span *hd = atomic_load_explicit(&h->dirty, memory_order_relaxed);
		do
			atomic_store_explicit(&pg->dirty_next, hd, memory_order_relaxed);
		while (!atomic_compare_exchange_weak_explicit(&h->dirty, &hd, pg, memory_order_release,
							      memory_order_relaxed));
	}
}

/* k blocks of pg, linked as for remote_list, counted and listed. nremote
 * first: a span with a push in flight is never wholly free (span_adopt). */
static void remote_push(struct ol_span *pg, uint32_t head, uint32_t tail, uint32_t k)
{
	atomic_fetch_add_explicit(&pg->nremote, k, memory_order_relaxed);
	remote_list(pg, head, tail);
}

/* The entries of direct[] (by (n + OL_CANARY + 15) >> 4) of each class up
 * to 1 KiB: the first, and how many (the sizes of the class by 16: 2 for
 * 16 bytes, q 0 and 1; 1 for each class up to 256; 4 a class up to 512, 8
 * up to 1 KiB). test_outline_xfree's test_class_tables checks them against
 * kp__ol_class_tbl after every class's cache filled and emptied. */
#define OL_DIRECT_CLASSES 24u /* class_size[23] is 1024: OL_TBL_MAX's class */
static const uint8_t direct_lo[OL_DIRECT_CLASSES] = {0,	 2,  3,	 4,  5,	 6,  7,	 8,  9,	 10, 11, 12,
						     13, 14, 15, 16, 17, 21, 25, 29, 33, 41, 49, 57};
static const uint8_t direct_n[OL_DIRECT_CLASSES] = {2, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
						    1, 1, 1, 1, 4, 4, 4, 4, 8, 8, 8, 8};

/* The fast tables' entries of class cls point at pg: its span in hand, or
 * &empty_span while its foreign cache holds blocks (the pop misses). The
 * direct entries by table, stored straight (1, 2, 4 or 8 of them): a loop
 * over class_size took ~43 instructions a call, twice each time a class's
 * foreign cache filled and emptied (fc_point_empty, kp__ol_refill: 167k
 * times in larson 4 20, ~9 instructions a malloc + free; s35,
 * tests/test_larson_instructions.py). */
static inline __attribute__((always_inline)) void class_direct(struct ol_heap *h, uint32_t cls, struct ol_span *pg)
{
	h->fast[cls] = pg;
	struct ol_span **d = &h->direct[direct_lo[cls]];
	uint32_t n = direct_n[cls];
	d[0] = pg;
	d[n - 1] = pg; /* 1 or 2 entries: done */
	if (n >= 4) {
		d[1] = d[2] = pg;
		if (n == 8)
			d[3] = d[4] = d[5] = d[6] = pg;
	}
}
_Static_assert(sizeof(((struct ol_heap *)0)->lender) == OL_DIRECT_CLASSES && OL_DIRECT_CLASSES <= 32,
	       "ol_heap's lender: a byte a direct class; lending: a bit each");

/* The classes that pop from lender's span (LEND, below) pointed at pg with
 * it: out of line, as only a young heap's lenders come here. */
static __attribute__((noinline)) void class_point_lent(struct ol_heap *h, uint32_t lender, struct ol_span *pg)
{
	for (uint32_t c = 0; c < lender; c++)
		if (h->lender[c] == lender)
			class_direct(h, c, pg);
}

/* Does class cls lend its span to others of h (LEND)? */
static inline __attribute__((always_inline)) bool class_lends(const struct ol_heap *h, uint32_t cls)
{
	return cls < OL_DIRECT_CLASSES && (h->lending >> cls & 1);
}

/* class_point of a class that lends to none (class_lends): no call, so that
 * kp__ol_refill, which inlines it, saves no register (with class_point
 * there, kpbench c's kp_alloc + kp_free took 113.9 -> 118.3 instructions
 * under callgrind: a prologue and an epilogue on every refill) */
static inline __attribute__((always_inline)) void class_point_own(struct ol_heap *h, uint32_t cls, struct ol_span *pg)
{
	if (cls < OL_DIRECT_CLASSES)
		class_direct(h, cls, pg);
	else
		h->fast[cls] = pg;
}

static inline __attribute__((always_inline)) void class_point(struct ol_heap *h, uint32_t cls, struct ol_span *pg)
{
	class_point_own(h, cls, pg);
	if (KP_UNLIKELY(class_lends(h, cls)))
		class_point_lent(h, cls, pg);
}

static inline struct ol_span *fc_span(uint64_t e)
{
	return (struct ol_span *)(uintptr_t)(e & (((uint64_t)1 << OL_FC_IDX_SHIFT) - 1));
}

/* h's foreign cache's entries of class cls: right after its structure in
 * its mapping (heap_get), its row at h->fc_off[cls] (outline.h, OL_FC_SLOTS):
 * a load beside fc_n's and fc_cap's where a row of OL_FC_MAX a class was a
 * shift (fc_pop, free_remote: the path of every block that moves between
 * threads). Not the empty heap's (no entry). */
static inline uint64_t *fc_ents(struct ol_heap *h, size_t cls)
{
	return kp__ol_fc_row(h, cls);
}

/* A block taken from a foreign cache or a span's list whose record was not
 * the state the taker swaps (its tag, OL_LISTED): its owner's free read
 * it live before another thread's free took it, and stored over it
 * (outline.h, kp__ol_free_check): a double free, reported here (errno
 * kept: an allocation's path too), and the entry dropped (the block is on
 * the owner's stack, or handed out again from there). */
static __attribute__((noinline, cold)) void raced_dfree(kp_pool *pool, struct ol_span *pg, uint32_t idx)
{
	int e = errno;
	kp__violation(pool, KP_EV_DOUBLE_FREE, KP_EDOUBLEFREE, pg->start + (size_t)idx * pg->bsize, pg->bsize - pg->csz,
		      "double free");
	errno = e;
}

/* Record r's state from want (a heap's tag, OL_REMOTE) to to, or false
 * (raced_dfree's case): a load and a store, no compare-and-swap. The one
 * thread that takes a tag calls it (outline.h, OL_REMOTE); every other
 * writer but the owner's racing free writes a record only from a live
 * state (a free's compare-and-swap), and that free's store between the
 * two is the race left (the opening comment). */
static inline bool rec_claim(struct ol_rec *r, uint32_t want, uint32_t to)
{
	if (KP_UNLIKELY(__atomic_load_n(&r->state, __ATOMIC_RELAXED) != want))
		return false;
	__atomic_store_n(&r->state, to, __ATOMIC_RELAXED);
	return true;
}

static inline bool listed_already(kp_pool *pool, struct ol_span *pg, uint32_t idx)
{
	if (KP_LIKELY(!(__atomic_load_n(&pg->link[idx], __ATOMIC_RELAXED) & OL_LINK_ON)))
		return false;
	raced_dfree(pool, pg, idx);
	return true;
}

/* Block idx off its span's list (link: the span's links), by the walk that
 * took the list (or this part of it): its next (the link read first), its
 * flag cleared. The caller's list_fence then orders the clear before its
 * read of the record. */
static inline uint32_t link_unlist(uint16_t *link, uint32_t idx)
{
	uint32_t nx = __atomic_load_n(&link[idx], __ATOMIC_RELAXED) & ~OL_LINK_ON;
	__atomic_store_n(&link[idx], 0, __ATOMIC_RELAXED);
	return nx;
}

/* The m oldest blocks of h's foreign cache of class cls back to their
 * spans' cross-thread lists, a chain per span (up to FC_GROUPS spans at
 * once: a cache's blocks come in runs from few spans), the rest moved
 * down; each from h's tag to OL_LISTED first (else raced_dfree, and
 * left out). h's thread.
 *
 * Two passes around one list_fence (store, fence, load: listed_already).
 * The first claims each entry and keeps the claimed ones in place at the
 * front of ent (entries 0..m-1 go anyway: the memmove below; no other
 * thread reads a cache's entries, only stats read its count), so the
 * second neither tests a bit per entry nor meets a dropped one. The
 * second chains the blocks of a span while the next entry is of the same
 * span as the last (a run: the common case) in registers (cp, head, k),
 * and goes to the group table g only when the span changes: 46 against 62
 * instructions a block (fb621b7's two passes with a claimed bitmask and
 * g[j] in memory for every block; 42 before the flag), kpbench c under
 * callgrind. No block's link is written before the fence and its flag
 * test, so a block listed already keeps its link. */
/* This thread inside a busy section (below, busy_enter: b.busy) or
 * changing its foreign cache's count (b.fc: a push, free_remote and fc_put,
 * or fc_pop's take; a count, a handler's own push nesting): a call then is
 * a signal handler's, and neither pops the cache (kp__ol_refill, busy_enter:
 * alloc.c's path) nor flushes it (free_remote_slow: onto the block's list).
 * Before (s31-att, test_outline_fc_signal_attack31b), a handler's
 * allocation popped entries a flush had claimed (5 of 6 children killed:
 * the flush's memmove of n - m entries wrapped) or an entry its thread's
 * push had not counted yet (1-14 double frees reported a child, none made).
 * Left: a handler's own push (free_remote's inline case, which tests no
 * mark: 2 instructions a cross-thread free kept) inside its thread's push,
 * or after a flush read its count, loses one entry: its block leaks (its
 * record keeps the tag), nothing is reported or handed out twice.
 * One 16-bit word: one compare tests both. Initial-exec, as kp__ol_pslot. */
static __thread union {
	uint16_t any;
	struct {
		bool busy;
		uint8_t fc;
	} b;
} ol_st __attribute__((tls_model("initial-exec")));
#define ol_busy (ol_st.b.busy)
/* around a change of the cache's count (above) */
#define FC_MARK()                                          \
	do {                                               \
		ol_st.b.fc++;                              \
		atomic_signal_fence(memory_order_seq_cst); \
	} while (0)
#define FC_UNMARK()                                        \
	do {                                               \
		atomic_signal_fence(memory_order_seq_cst); \
		ol_st.b.fc--;                              \
	} while (0)
static inline bool busy_enter(void);
static inline void busy_leave(void);
static void *refill_again(kp_pool *pool, struct ol_heap *h, uint32_t cls, size_t n);

/* Classes whose blocks are under a cache line (class_size[0..2]: 16, 32
 * and 48 bytes; 64 and up are lines whole, or share one at their ends):
 * a heap caches none of another heap's blocks of such a class until it
 * allocates the class (heap_get: fc_cap 0, refill_body's first refill sets
 * it), and sends them home at once instead (free_remote_slow: onto the
 * block's list, for its owner's drain), and fc_steal leaves these classes'
 * listed blocks to their owners (but for a retired span whose blocks are
 * all free, which it adopts whole: no line of it is shared), so that its first allocation of the class
 * takes a span of its own and not a block it freed (heap_abandon makes
 * the cap 0 again for the heap's next thread: the second wave of
 * test_outline_false_sharing's threads, adopting the first's heaps, held
 * main's blocks, 6 pairs on one line) (or one its neighbours
 * sent home: test_outline_false_sharing's 3 threads of 4 on one line
 * through fc_steal, with the first part alone). The blocks a
 * thread frees before it allocates a class are those another thread gave
 * it, and their neighbours on a line are that thread's, or other threads'
 * it gave theirs to: Hoard's cache-scratch (allocator/bench/programs/
 * false_sharing.c, passive): each of 4 threads freed one of 4 neighbouring
 * 8-byte blocks the main thread allocated, then allocated and freed 8
 * bytes 100,000 times; every allocation handed the freed block back (its
 * free a cross-thread one again), the 4 threads wrote one line
 * (0x...800000/10/20/30): 0.56 s against jemalloc's 0.15
 * (test_outline_false_sharing: 6, 2 and 3 pairs of threads on one line,
 * blocks of 16, 32 and 48 bytes). No instruction on the fast paths.
 * Measured and not kept, on kpbench c (tests/test_cross_instructions.py,
 * 123.3-124.2 instructions a pair on main, budget 124): these classes'
 * caches never handed out (an outbox sent home in batches, as mimalloc
 * and snmalloc send every cross-thread free): 131.6; a block handed out
 * only while no other block on its line is live, else the cache home:
 * 140.1 (c's own pops make their neighbours live); kp__ol_refill's pop
 * refused while the heap has no span of the class: 125.7-126.3 (its test
 * on every pop). */
#define FC_LINE_CLASSES 3u

#define FC_GROUPS 4
static void fc_flush(kp_pool *pool, struct ol_heap *h, uint32_t cls, uint32_t m)
{
	struct {
		struct ol_span *pg;
		uint32_t head, k, tail;
	} g[FC_GROUPS] = {{0}};
	uint64_t *ent = fc_ents(h, cls);
	uint32_t c = 0, rtag = h->rtag; /* the claimed entries: ent[0..c-1] */
	for (uint32_t i = 0; i < m; i++) {
		uint64_t e = ent[i];
		struct ol_span *pg = fc_span(e);
		uint32_t idx = (uint32_t)(e >> OL_FC_IDX_SHIFT);
		if (KP_UNLIKELY(!rec_claim(&pg->rec[idx], rtag, OL_LISTED)))
			raced_dfree(pool, pg, idx);
		else
			ent[c++] = e;
	}
	list_fence();
	struct ol_span *cp = NULL; /* the group in registers: g[jc]'s span */
	uint32_t jc = 0, head = 0, k = 0;
	for (uint32_t i = 0; i < c; i++) {
		struct ol_span *pg = fc_span(ent[i]);
		uint32_t idx = (uint32_t)(ent[i] >> OL_FC_IDX_SHIFT), j = 0;
		if (KP_UNLIKELY(listed_already(pool, pg, idx)))
			continue;
		if (KP_LIKELY(pg == cp)) { /* the run goes on */
			__atomic_store_n(&pg->link[idx], (uint16_t)(head | OL_LINK_ON), __ATOMIC_RELAXED);
			head = idx + 1;
			k++;
			continue;
		}
		if (cp) { /* the run's group back to g */
			g[jc].head = head;
			g[jc].k = k;
		}
		while (j < FC_GROUPS && g[j].pg && g[j].pg != pg)
			j++;
		if (j == FC_GROUPS) { /* a fifth span: the first group goes now */
			remote_push(g[0].pg, g[0].head, g[0].tail, g[0].k);
			memmove(&g[0], &g[1], sizeof g[0] * (FC_GROUPS - 1));
			j = FC_GROUPS - 1;
			g[j].pg = NULL;
		}
		if (!g[j].pg) {
			g[j].pg = pg;
			g[j].tail = idx;
			k = 0;
		} else {
			__atomic_store_n(&pg->link[idx], (uint16_t)(g[j].head | OL_LINK_ON), __ATOMIC_RELAXED);
			k = g[j].k;
		}
		head = idx + 1;
		k++;
		cp = pg;
		jc = j;
	}
	if (cp) {
		g[jc].head = head;
		g[jc].k = k;
	}
	for (uint32_t j = 0; j < FC_GROUPS && g[j].pg; j++)
		remote_push(g[j].pg, g[j].head, g[j].tail, g[j].k);
	uint32_t n = h->fc_n[cls];
	/* none left (a consumer's cache is flushed whole, fc_put): no call
	 * to move none (s39: bench-prodcons' consumers called memmove on
	 * every flush, ~15 instructions each, 3.6 a message) */
	if (n != m)
		memmove(ent, ent + m, (n - m) * sizeof *ent);
	__atomic_store_n(&h->fc_n[cls], (uint8_t)(n - m), __ATOMIC_RELAXED);
	if (n == m)
		class_point(h, cls, h->cur[cls]);
}

/* Block idx of pg, just freed by this thread (not pg's owner), into h's
 * foreign cache; the older half of the class's cache back to its spans
 * when full. h: this thread's heap of the pool. */
static void fc_put(kp_pool *pool, struct ol_heap *h, struct ol_span *pg, uint32_t idx)
{
	/* busy from the count's read on (free_remote_slow calls with ol_st
	 * clear): a handler's allocation then takes alloc.c's path
	 * (kp__ol_refill), not an entry the flush claimed or one the count
	 * was read with, and its free lists its block (free_remote_slow) */
	bool mine = busy_enter();
	uint32_t cls = pg->cls, k = h->fc_n[cls];
	if (k >= h->fc_cap[cls]) {
		/* the older half, or all while h allocates none of the class */
		fc_flush(pool, h, cls, h->cur[cls] == &empty_span ? k : (k + 1) / 2);
		k = h->fc_n[cls];
	}
	fc_ents(h, cls)[k] = (uintptr_t)pg | (uint64_t)idx << OL_FC_IDX_SHIFT;
	__atomic_store_n(&h->fc_n[cls], (uint8_t)(k + 1), __ATOMIC_RELAXED);
	if (!k && h->fast[cls] != &empty_span) /* the class's allocations take the cache first */
		class_point(h, cls, &empty_span);
	if (mine)
		busy_leave();
}

/* fc_pop's entry whose record was not h's tag: reported and dropped
 * (raced_dfree), and the allocation made again (the cache's next entry, or
 * the span in hand). Out of line, a tail call: fc_pop keeps no register. */
static void *refill_poison(kp_pool *pool, struct ol_heap *h, uint32_t cls, size_t n);
static __attribute__((noinline, cold)) void *fc_pop_raced(kp_pool *pool, struct ol_heap *h, uint32_t cls, size_t n,
							  struct ol_span *pg, uint32_t idx)
{
	raced_dfree(pool, pg, idx);
	/* inside refill_body (busy: its own thread) the body again, else the
	 * entry point */
	return ol_busy		   ? refill_again(pool, h, cls, n)
	       : pool->conf.poison ? refill_poison(pool, h, cls, n)
				   : kp__ol_refill(pool, h, cls, n);
}

/* fc_pop's cache found empty (above): the allocation made again, as
 * fc_pop_raced's. */
static __attribute__((noinline, cold)) void *fc_pop_gone(kp_pool *pool, struct ol_heap *h, uint32_t cls, size_t n)
{
	return ol_busy		   ? refill_again(pool, h, cls, n)
	       : pool->conf.poison ? refill_poison(pool, h, cls, n)
				   : kp__ol_refill(pool, h, cls, n);
}

/* The newest block of h's foreign cache of class cls (not empty), handed
 * out as n bytes: as kp__ol_pop, the block another heap's (or, its record
 * not h's tag, fc_pop_raced's allocation). Its record reads h's tag
 * (this thread's free made it so) and no stack or list holds it, so its
 * span is not wholly free: no heap takes the span, no purge drops its
 * pages, and only an owner's free raced by this thread's writes the record
 * meanwhile: a block whose owner's free stored over it (the race) is
 * handed out by the owner alone. */
static inline __attribute__((always_inline)) void *fc_pop_inline(kp_pool *pool, struct ol_heap *h, size_t cls, size_t n,
								 bool any_mode)
{
	/* the slot marked (outline.h, kp__ol_enter: every caller's call is):
	 * no handler's call on this thread touches the cache meanwhile, where
	 * ol_st's fc count marked the take before s33 */
	/* size_t: one register for the index and the count's store (a
	 * uint32_t k took a copy of the count and two subtracts, s39) */
	size_t k = (size_t)h->fc_n[cls] - 1;
	if (KP_UNLIKELY(k == SIZE_MAX)) /* none left: as before the mark */
		return fc_pop_gone(pool, h, cls, n);
	uint64_t e = fc_ents(h, cls)[k];
	__atomic_store_n(&h->fc_n[cls], (uint8_t)k, __ATOMIC_RELAXED);
	struct ol_span *pg = fc_span(e);
	uint32_t idx = (uint32_t)(e >> OL_FC_IDX_SHIFT);
	struct ol_rec *r = &pg->rec[idx];
	if (KP_UNLIKELY(!rec_claim(r, h->rtag, (uint32_t)n + 1)))
		return fc_pop_raced(pool, h, cls, n, pg, idx);
	kp__count_inc(&h->allocs, 1);
	uint8_t *p = pg->start + (size_t)idx * pg->bsize;
	/* any_mode (kp__ol_refill's): written in either mode, as
	 * kp__ol_pop_fast (with checks off the record's canary is 0, and the
	 * class has room for the 8 bytes: outline.h); not a poison:on pool's
	 * refill (refill_poison, fc_pop: by the span's canary size), whose
	 * heap caches no block it frees (free_remote_slow) but takes listed
	 * ones (fc_steal): with checks off poison_alloc would find the 8
	 * bytes of zeros in the fill. s39: the size's test off the path of
	 * every block handed out from the cache, 2 instructions */
	if (any_mode || KP_LIKELY(pg->csz)) {
		uint64_t c = kp__ol_canary(r);
		memcpy(p + n, &c, 8);
	}
	kp__ol_unmark();
	return p;
}
/* fc_pop_inline for the refill's other callers (kp__ol_refill has it inline:
 * the path of every allocation of a block from the cache) */
static __attribute__((noinline)) void *fc_pop(kp_pool *pool, struct ol_heap *h, uint32_t cls, size_t n)
{
	return fc_pop_inline(pool, h, cls, n, false);
}

/* In a forked child, the foreign cache of a heap whose thread is gone:
 * that thread may have been forked inside fc_flush (no lock covers it),
 * its first entries claimed to OL_LISTED (and maybe pushed) but fc_n not
 * lowered yet, or inside its memmove (an entry in two places). The heap's
 * next thread would pop those and report each a double free no one made
 * (s30-att2, test_outline_fork_xfree_attack30b: 1-5 children of 65-98 with
 * 1-11 such reports, 7 runs of 7). Kept: the entries whose record is still
 * the heap's tag, once each; the others dropped unreported (a claimed
 * block not yet pushed is lost to the child: a leak, not a fault). The
 * child has one thread: no race here. */
static void fc_fork_child(struct ol_heap *h)
{
	for (uint32_t cls = 0; cls < OL_NCLASS; cls++) {
		uint64_t *ent = fc_ents(h, cls);
		uint32_t n = h->fc_n[cls], k = 0;
		for (uint32_t i = 0; i < n; i++) {
			struct ol_span *pg = fc_span(ent[i]);
			uint32_t idx = (uint32_t)(ent[i] >> OL_FC_IDX_SHIFT), j = 0;
			if (__atomic_load_n(&pg->rec[idx].state, __ATOMIC_RELAXED) != h->rtag)
				continue;
			while (j < k && ent[j] != ent[i])
				j++;
			if (j == k)
				ent[k++] = ent[i];
		}
		if (k == n)
			continue;
		__atomic_store_n(&h->fc_n[cls], (uint8_t)k, __ATOMIC_RELAXED);
		if (!k)
			class_point(h, cls, h->cur[cls]);
	}
}

/* Every class of h's foreign cache back to its spans (heap_abandon). */
static void fc_flush_all(kp_pool *pool, struct ol_heap *h)
{
	for (uint32_t c = 0; c < OL_NCLASS; c++)
		if (h->fc_n[c])
			fc_flush(pool, h, c, h->fc_n[c]);
}

static struct ol_heap *heap_get(kp_pool *pool);
/* Heaps made so far, every pool's: the next heap's tag (ol_heap's rtag).
 * Past OL_NTAGS heaps tags repeat, two heaps' alike only in a race the tag
 * is there for (outline.h, OL_REMOTE). */
static _Atomic uint32_t ol_tags;

/* free_remote's rest: a double free found by the compare-and-swap, or a
 * block its fast case could not cache (no heap in the slot yet, a full
 * class, the first block of a class, poison:on). */
/* The pool of kp__ol_free_other's key (outline.h: its address | try_only). */
static inline kp_pool *key_pool(uint64_t key)
{
	return (kp_pool *)(uintptr_t)(key & ~(uint64_t)1);
}
static __attribute__((noinline, cold)) int free_remote_dfree(uint64_t key, struct ol_span *pg, void *p)
{
	kp_pool *pool = key_pool(key);
	int e = errno; /* free() (the preload) keeps it */
	int rc = kp__violation(pool, KP_EV_DOUBLE_FREE, KP_EDOUBLEFREE, p, pg->bsize - pg->csz, "double free");
	errno = e;
	kp__ol_unmark();
	return rc;
}
static __attribute__((noinline)) int free_remote_slow(uint64_t key, struct ol_span *pg, uint32_t idx)
{
	kp_pool *pool = key_pool(key);
	/* the record again here, not an argument: free_remote keeps a
	 * register fewer on its way to its common case; and the tag it
	 * swapped in, by the same test of the slot (marked: a handler's call
	 * meanwhile remade no slot, outline.h), not kept across its
	 * compare-and-swap (s36: a register fewer there) */
	struct ol_rec *r = &pg->rec[idx];
	uint32_t tag = kp__ol_slot.aid == kp__ol_slot_id(pool) ? kp__ol_slot.heap->rtag : OL_REMOTE;
	/* a signal handler's free while its thread changes its foreign cache
	 * (fc_flush, fc_steal, refill_body, a push or pop: ol_st) touches
	 * neither the cache nor heap_get's lock: onto the block's list */
	if (KP_LIKELY(!pool->conf.poison) && KP_LIKELY(!ol_st.any)) {
		struct ol_heap *h = kp__ol_slot.aid == kp__ol_slot_id(pool) ? kp__ol_slot.heap : NULL;
		if (h == &kp__ol_empty_heap || !h) {
			int e = errno;
			h = heap_get(pool);
			errno = e;
		}
		/* a class under a line the heap has not allocated yet: none
		 * cached (FC_LINE_CLASSES), onto its list below */
		if (h && h->fc_cap[pg->cls]) {
			/* tagged OL_REMOTE (no heap in the slot then): now its */
			if (KP_UNLIKELY(tag != h->rtag) && !rec_claim(r, tag, h->rtag))
				raced_dfree(pool, pg, idx);
			else
				fc_put(pool, h, pg, idx);
			kp__ol_unmark();
			return 0;
		}
	}
	/* no heap to hold it (past the exit hook, poison:on, a handler's call
	 * inside a busy section, FC_LINE_CLASSES): onto its list */
	if (KP_UNLIKELY(!rec_claim(r, tag, OL_LISTED)))
		raced_dfree(pool, pg, idx);
	else {
		list_fence();
		if (!listed_already(pool, pg, idx))
			remote_push(pg, idx + 1, idx, 1);
	}
	kp__ol_unmark();
	return 0;
}

/* After free_remote's compare-and-swap, the block's canary (at p + st - 1)
 * made wrong: its owner's free, if it read the record live before the swap
 * and reads the canary after this, is refused (outline.h), and its full
 * test finds the tag (this store follows the swap: x86-64's order of
 * stores), a double free there. Only an owner's free that read the canary
 * before this store and stores after the swap is left to raced_dfree. Not
 * seen by TSan: a double free alone races it (the owner's canary read). A
 * poison pool's free spoiled it before (poison_free's fill); with checks
 * off there is none. */
#if defined(__SANITIZE_THREAD__)
#define OL_NO_TSAN __attribute__((no_sanitize_thread, noinline))
#else
#define OL_NO_TSAN
#endif
/* The 8 bytes made zero: never a block's canary, whose bit 7 is always set
 * (internal.h, KP_HKEY_BIT), and a store of a constant, so that
 * free_remote keeps no register for the canary across its
 * compare-and-swap (it wrote the canary's complement before s36, the
 * canary held in a register from its test to the spoil: the opening
 * comment's s36, 2 instructions a cross-thread free with the two
 * changes beside it). */
static OL_NO_TSAN void canary_spoil(uint8_t *p, uint32_t st)
{
	uint64_t c = 0;
	memcpy(p + st - 1, &c, 8);
}

/* A free of block idx of pg, another heap's (r its record, st the state
 * free_fast read): the record made this thread's heap's tag (OL_REMOTE
 * with none in the slot) by compare-and-swap (a double
 * free from two threads at once: one wins, the other is reported; raced by
 * the owner's free, outline.h and raced_dfree), then the block into this
 * thread's foreign cache (fc_put's common case inline, the change of the
 * class's tables with it: 3 registers saved, 1 before, for 55 M
 * instructions fewer on larson), or, with no heap to hold it (a thread
 * past its exit hook, poison:on), straight onto pg's list. */
/* free_remote's change of the class's tables as its cache takes its first
 * block, out of line (a tail call, 0 returned): inline, its arguments'
 * registers were set on the common path too. The class's own tables alone
 * (class_point_own): a lender's borrowers (LEND) go on popping its span in
 * hand, which stays in hand (the lender pops its cache meanwhile), and
 * leave it at their next refill (lend_class: the lender's cache holds
 * blocks, or its span ran dry). With class_point, its test of the lending
 * classes (a load, a bit test, a branch) and the call's stack alignment (a
 * sub and an add of rsp): 26.6 -> 31.6 instructions a call, and
 * kp__ol_free_other 59.2 -> 60.1 a call in larson (s38, inclusive,
 * tests/test_larson_instructions.py: budget 60); 59.1 now. */
static __attribute__((noinline)) int fc_point_empty(struct ol_heap *h, uint32_t cls)
{
	class_point_own(h, cls, &empty_span);
	kp__ol_unmark(); /* the caller's mark (free_remote's: kp__ol_enter) */
	return 0;
}

static inline __attribute__((always_inline)) int free_remote(uint64_t key, struct ol_span *pg, uint32_t idx,
							     struct ol_rec *r, uint32_t st, void *p, int canary,
							     bool named)
{
	/* named (a constant at each call): the slot names pool, as
	 * kp__ol_free_other's calls come through kp__ol_free_check, past
	 * kp__ol_enter's compare of the slot's id with pool's tag (the slot
	 * marked since, so no handler's call remade it: outline.h), and a
	 * poison:on pool is never in it. Else (free_other_checked: a poison:on
	 * pool's poison_free, whose pool no slot names) its aid is compared
	 * with the tag here, the heap's tag chosen by it (OL_REMOTE else), and
	 * the spoil and the cache test that choice, as every call did before
	 * s39: 4 instructions a cross-thread free that could not fail on
	 * kp__ol_free_other's way (the empty heap's rtag is OL_REMOTE and its
	 * fc_cap 0: its frees still go to free_remote_slow by the cap's test).
	 * A first cut trusted the slot in poison_free's call too, and put a
	 * poison pool's blocks into the cache of the heap the slot named:
	 * test_outline_hand_race_attack32's poison round, 3,077 events and
	 * 49 MB in use after all was freed. */
	struct ol_heap *h = kp__ol_slot.heap;
	bool slot = named || kp__ol_slot.aid == kp__ol_slot_id(key_pool(key));
	if (named && KP_DEBUG) {
		kp_pool *pool = key_pool(key);
		KP_OL_ASSERT(kp__ol_slot.aid == kp__ol_slot_id(pool) && !pool->conf.poison);
	}
	uint32_t tag = slot ? h->rtag : OL_REMOTE; /* the empty heap's: OL_REMOTE */
	if (KP_UNLIKELY(!__atomic_compare_exchange_n(&r->state, &st, tag, false, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED)))
		return free_remote_dfree(key, pg, p);
	if ((canary == KP_OL_CANARY_ON || (canary == KP_OL_CANARY_SPAN && pg->csz)) &&
	    (KP_LIKELY(slot) || !key_pool(key)->conf.poison))
		canary_spoil(p, st);
	if (KP_LIKELY(slot)) {
		/* the slot marked (outline.h, kp__ol_enter), as in fc_pop: no
		 * handler's call on this thread touches the cache meanwhile */
		uint32_t cls = pg->cls, k = h->fc_n[cls];
		/* not full, and a heap of the thread's own: the empty heap's
		 * fc_cap is 0 in every class (refill_body returns before it sets
		 * one), so its frees go to the slow case by this one test (a
		 * compare with &kp__ol_empty_heap before); the class's tables pointed at
		 * the cache as its first block goes in (fc_put's step, here:
		 * a class that gets other heaps' blocks and hands them out in
		 * turn does it over and over, larson 834,059 times in 8M frees) */
		if (KP_LIKELY(k < h->fc_cap[cls])) {
			fc_ents(h, cls)[k] = (uintptr_t)pg | (uint64_t)idx << OL_FC_IDX_SHIFT;
			__atomic_store_n(&h->fc_n[cls], (uint8_t)(k + 1), __ATOMIC_RELAXED);
			if (KP_UNLIKELY(h->fast[cls] != &empty_span))
				return fc_point_empty(h, cls); /* unmarks */
			kp__ol_unmark();
			return 0;
		}
	}
	return free_remote_slow(key, pg, idx);
}

static void span_relist(struct ol_heap *h, struct ol_span *pg)
{
	atomic_store_explicit(&pg->owner, h->self, memory_order_relaxed);
	pg->next = h->avail[pg->cls];
	h->avail[pg->cls] = pg;
}

/* A signal handler's call into the pool on a thread inside refill_span
 * (its heap's spans in hand and lists, perhaps its avail lock held), or
 * inside another section of the owner's that holds the avail lock
 * (span_relist_locked, heap_abandon): kpool never nests its own calls, so
 * ol_busy set says the call is a handler's.
 * Its allocation takes alloc.c's path (kp__alloc_classic: none of its
 * locks is one the refill holds, and kp__mutex_lock aborts with one line
 * if the handler interrupted that path itself; kp_free sends the block
 * there, as the blocks refill_span takes from it when the OS refuses); a
 * free that would relist a span (span_relist_locked, under the avail lock)
 * leaves it in ol_later, relisted as the section ends (busy_leave). Before (s24),
 * the handler's refill spun forever on the avail lock its own thread held
 * (test_preload_attack19's signal-malloc: 1 run in 4; test_outline_signal).
 * Initial-exec, as kp__ol_pslot: the preload's TLS is static (ol_busy: its
 * definition is above fc_flush, whose callers test it). */
/* Spans a handler's frees asked to relist while one section ran: at most
 * a few (a handler's frees inside one); past these, a span stays
 * retired until its next free outside a handler relists it. */
#define OL_LATER 8
static __thread struct ol_later {
	kp_pool *pool;
	struct ol_span *pg;
} ol_later[OL_LATER] __attribute__((tls_model("initial-exec")));
static __thread uint32_t ol_later_n __attribute__((tls_model("initial-exec")));

/* The spans ol_later holds, relisted if still retired (a later free or a
 * drain may have relisted one meanwhile), this thread marked busy again
 * meanwhile (a handler's free then adds to ol_later, and the loop sees
 * it). An entry a handler adds between a take and the count's store is
 * lost: its span waits for its next free. */
static __attribute__((noinline, cold)) void busy_later(void)
{
	do {
		ol_busy = true;
		atomic_signal_fence(memory_order_seq_cst);
		while (ol_later_n) {
			uint32_t k = ol_later_n - 1;
			struct ol_later e = ol_later[k];
			ol_later_n = k;
			atomic_signal_fence(memory_order_seq_cst);
			owner_lock(e.pool, e.pg->heap);
			if (atomic_load_explicit(&e.pg->owner, memory_order_relaxed) & OL_OWN_FULL)
				span_relist(e.pg->heap, e.pg);
			owner_unlock(e.pg->heap);
		}
		atomic_signal_fence(memory_order_seq_cst);
		ol_busy = false;
		atomic_signal_fence(memory_order_seq_cst);
	} while (ol_later_n);
}

/* span_relist_locked's call inside a busy section (a handler's free): pg into
 * ol_later, once, or left retired when it is full. */
static __attribute__((noinline, cold)) void relist_later(kp_pool *pool, struct ol_span *pg)
{
	uint32_t k = ol_later_n;
	for (uint32_t i = 0; i < k; i++)
		if (ol_later[i].pg == pg)
			return;
	if (k < OL_LATER) {
		ol_later[k] = (struct ol_later){pool, pg};
		atomic_signal_fence(memory_order_seq_cst);
		ol_later_n = k + 1;
	}
}

/* This thread into a busy section (above): false if it is in one already
 * (the caller is a handler's call). */
static inline bool busy_enter(void)
{
	if (KP_UNLIKELY(ol_st.any))
		return false;
	ol_busy = true;
	atomic_signal_fence(memory_order_seq_cst);
	return true;
}

/* Out of it: the spans a handler's frees left meanwhile relisted. */
static inline void busy_leave(void)
{
	atomic_signal_fence(memory_order_seq_cst);
	ol_busy = false;
	atomic_signal_fence(memory_order_seq_cst);
	if (KP_UNLIKELY(ol_later_n))
		busy_later();
}

/* The owner takes back what other threads freed. A span's dirty link is
 * read before its list is taken: after that a freer may push it again. A
 * block whose record is not OL_LISTED was stored over by the owner's free
 * (raced_dfree: the owner's stack holds it, or it is out again), and is
 * left out; a chain longer than the span's blocks or past its last (the
 * links of such a block written twice) is cut there, its rest leaked.
 * The owner (or, for an abandoned heap, a thread holding its avail lock
 * and the outline lock: span_adopt); a violation's event is written under
 * the avail lock. */
static void drain_span(kp_pool *pool, struct ol_heap *h, struct ol_span *pg);
static void drain_remote(kp_pool *pool, struct ol_heap *h)
{
	struct ol_span *pg = atomic_exchange_explicit(&h->dirty, NULL, memory_order_acquire);
	while (pg) {
		struct ol_span *nx = atomic_load_explicit(&pg->dirty_next, memory_order_relaxed);
		drain_span(pool, h, pg);
		pg = nx;
	}
}

/* drain_remote's work on one span, off h's dirty list already. */
static void drain_span(kp_pool *pool, struct ol_heap *h, struct ol_span *pg)
{
	{
		/* acq_rel: a push that finds the list empty after this reads
		 * the span's heap as its adopter wrote it before (fc_steal) */
		uint32_t i = atomic_exchange_explicit(&pg->remote, 0, memory_order_acq_rel);
		uint16_t *sp = kp__ol_sp(pg);
		uint32_t n = 0, nb = pg->nblocks;
		/* the span's arrays in registers: the relaxed stores below made
		 * gcc load pg->link and pg->rec again for every block */
		uint16_t *link = pg->link;
		struct ol_rec *rec = pg->rec;
		/* i - 1 < nb: i is a block's index + 1 (0, the list's end, wraps) */
		while (i - 1 < nb && n < nb) {
			/* up to 64 off the list (their flags cleared), one fence,
			 * then their records (link_unlist); the bound on n taken
			 * once a batch (lim), not tested for each block */
			uint16_t b[64];
			uint32_t m = 0, lim = nb - n < 64 ? nb - n : 64;
			do {
				b[m++] = (uint16_t)(i - 1);
				i = link_unlist(link, i - 1);
			} while (i - 1 < nb && m < lim);
			list_fence();
			for (uint32_t k = 0; k < m; k++) {
				uint32_t x = b[k];
				if (KP_LIKELY(__atomic_load_n(&rec[x].state, __ATOMIC_RELAXED) == OL_LISTED)) {
					__atomic_store_n(&rec[x].state, OL_FREE, __ATOMIC_RELAXED);
					*++sp = (uint16_t)x;
				} else
					raced_dfree(pool, pg, x);
			}
			n += m;
		}
		kp__ol_sp_push(pg, sp);
		atomic_fetch_sub_explicit(&pg->nremote, n, memory_order_relaxed);
		if (atomic_load_explicit(&pg->owner, memory_order_relaxed) & OL_OWN_FULL)
			span_relist(h, pg);
	}
}

/* pg off h's dirty list, pred its predecessor there (NULL: it was the
 * head). Other threads push spans at the head meanwhile (remote_push), none
 * already on it (their lists are not empty); no one else takes spans off it
 * (h's avail lock held: drain_remote's and fc_steal's callers hold it). */
static void dirty_unlink(struct ol_heap *h, struct ol_span *pred, struct ol_span *pg)
{
	struct ol_span *nx = atomic_load_explicit(&pg->dirty_next, memory_order_relaxed);
	if (!pred) {
		struct ol_span *hd = pg;
		if (atomic_compare_exchange_strong_explicit(&h->dirty, &hd, nx, memory_order_acquire,
							    memory_order_acquire))
			return;
		for (pred = hd; atomic_load_explicit(&pred->dirty_next, memory_order_relaxed) != pg;)
			pred = atomic_load_explicit(&pred->dirty_next, memory_order_relaxed);
	}
	atomic_store_explicit(&pred->dirty_next, nx, memory_order_relaxed);
}

/* drain_remote for the spans of class cls alone: the others' blocks stay on
 * their lists, where any heap's refill of their class takes them (fc_steal)
 * before it touches new pages, as h's own refill of the class does here.
 * Before, a refill of one class took in every class's frees, onto h's
 * stacks, out of the other heaps' reach (test_memory_threads_outline: each
 * producer kept the blocks of the queue's turn it had last held). The
 * owner, under its avail lock. */
static void drain_class(kp_pool *pool, struct ol_heap *h, uint32_t cls)
{
	struct ol_span *pred = NULL, *pg = atomic_load_explicit(&h->dirty, memory_order_acquire);
	while (pg) {
		struct ol_span *nx = atomic_load_explicit(&pg->dirty_next, memory_order_relaxed);
		if (pg->cls == cls) {
			dirty_unlink(h, pred, pg);
			drain_span(pool, h, pg);
			return;
		} else
			pred = pg;
		pg = nx;
	}
}

/* ---- the free blocks of spans in hand, given back by the daemon ------------
 *
 * A span in hand (cur[]) is popped by its owner alone, without a lock, so
 * the daemon's purge (purge_idle) never takes one, and a program whose
 * large blocks grow keeps the free blocks of its classes in hand resident
 * beside them (git pack-objects: 1.4-3.5 MiB of free 4-32 KiB blocks in its
 * two delta threads' spans in hand under its 200 KB blobs and 3 MB delta
 * indexes), where glibc's arena gives the large blocks the memory those
 * freed. So the owner parks them: at a large block that took fresh memory
 * (large_taken) its thread, and every other heap's at its next refill
 * (hand_catch_up), takes the free blocks of a page or more that its spans
 * in hand handed out before (OL_FREE: not OL_VIRGIN, the blocks never
 * handed out, whose pages the daemon may have pre-faulted for the pops to
 * come) off their stacks, chains them through the span's cross-thread
 * links as a free of another thread would (records OL_LISTED, counted in
 * nremote: a push in flight, so the span is never wholly free meanwhile),
 * and queues the span on the pool's parked list (ol_span's park); the
 * daemon's pass (park_give, first in kp__ol_daemon_pass) gives back the
 * whole pages inside the runs of those blocks and pushes each chain onto
 * its span's cross-thread list (remote_list), where the owner's drain
 * (drain_class, at its refill) takes them back as any other thread's frees.
 * No system call on the allocation path: the pages go on the daemon's
 * thread, and no thread but the daemon touches a parked block (it is on no
 * stack and no list; a free of it reads OL_LISTED and is refused as a
 * double free).
 * Before (s37-realmem, not merged), the owner gave the pages back itself
 * (mincore and madvise on its allocation path): the paced-growth workload
 * made 237-241 system calls on the allocation path against its SLO of 0,
 * and test_cache under TSan at load 19 made 2 madvise and 2 mincore on it
 * in a steady million (175 -> 225 in CI); 0 now. git.yaml's whole workload
 * under the preload (git_workload.sh, /usr/bin/time -f %M, alternated,
 * load 4-22; medians of 10, 8 for s37-realmem): main 18,970 KiB,
 * s37-realmem 17,768, parked 17,666, glibc 16,060 (1.18x -> 1.10x; runs
 * spread 16.8-18.7 MiB parked, 17.5-20.0 main); sqlite3.yaml 39,320 /
 * 39,236 / 39,332, glibc 37,248 (medians of 3: no change).
 */

/* A span's parked blocks, at the least, in bytes: fewer hold a page or two
 * of whole pages at most, not worth a trip through the daemon (a mincore
 * and a madvise, and the owner's drain). */
#define OL_PARK_MIN (4 * KP_PAGE)
/* ol_span's park word: the next span on the pool's parked list (the low
 * 48 bits, as a foreign cache's entry, OL_FC_IDX_SHIFT) and the chain's
 * head (its first block's index + 1) above; 0 while not parked */
#define OL_PARK_NEXT (((uint64_t)1 << OL_FC_IDX_SHIFT) - 1)

/* Does a daemon's pass come to give parked blocks back? The thread running
 * (a kick brings its pass), or a stepped pool's (step_clock: its passes are
 * kp_daemon_step's, the tests'). Not a pool whose daemon is off, stopped,
 * or not yet restarted in a forked child (its first kick starts a thread:
 * not from here). */
static bool park_served(kp_pool *pool)
{
	return pool->conf.step_clock || atomic_load_explicit(&pool->daemon.state, memory_order_relaxed) == KP_D_RUNNING;
}

/* The blocks parked on pg, from index head - 1 along its links: their
 * bits set in bits (pg->nblocks of them), the last one's index in *tail;
 * how many. The walk is bound by the span's blocks (the owner made the
 * chain: hand_park). */
static uint32_t park_chain(const struct ol_span *pg, uint32_t head, uint64_t *bits, uint32_t *tail)
{
	uint32_t k = 0;
	for (uint32_t i = head; i && i <= pg->nblocks && k < pg->nblocks; i = link_next(pg, i - 1), k++) {
		bits[(i - 1) / 64] |= (uint64_t)1 << ((i - 1) % 64);
		*tail = i - 1;
	}
	return k;
}

/* Give back the whole pages inside each run of pg's blocks set in bits:
 * the daemon's thread, kp__os_purge (a mincore, then a madvise from the
 * first resident page to the last). */
static void park_purge(kp_pool *pool, const struct ol_span *pg, const uint64_t *bits)
{
	uint8_t *run = NULL;
	for (uint32_t i = 0; i <= pg->nblocks; i++) {
		bool parked = i < pg->nblocks && (bits[i / 64] >> (i % 64) & 1);
		uint8_t *b = pg->start + (size_t)i * pg->bsize;
		if (parked && !run)
			run = b;
		if (parked || !run)
			continue;
		purge_inside(pool, run, b);
		run = NULL;
	}
}

/* The spans on list (the pool's parked list, taken whole), each chain of
 * parked blocks given back (purge: park_purge) and onto its span's
 * cross-thread list, the span's park word cleared (the owner may park its
 * blocks again). counted: the chain is in nremote already (hand_park);
 * else (a forked child, whose nremote counts the lists alone:
 * kp__ol_fork) the push counts it. */
static void park_return(kp_pool *pool, struct ol_span *list, bool purge, bool counted)
{
	uint64_t bits[OL_SLICE_SIZE / 16 / 64]; /* a span's blocks at most (outline.h, OL_LINK_ON) */
	for (struct ol_span *pg = list, *nx; pg; pg = nx) {
		uint64_t w = atomic_load_explicit(&pg->park, memory_order_relaxed);
		nx = (struct ol_span *)(uintptr_t)(w & OL_PARK_NEXT);
		uint32_t head = (uint32_t)(w >> OL_FC_IDX_SHIFT), tail = 0;
		memset(bits, 0, ((pg->nblocks + 63) / 64) * sizeof bits[0]);
		uint32_t k = park_chain(pg, head, bits, &tail);
		if (k) {
			if (purge)
				park_purge(pool, pg, bits);
			if (counted)
				remote_list(pg, head, tail);
			else
				remote_push(pg, head, tail, k);
		}
		atomic_store_explicit(&pg->park, 0, memory_order_release);
	}
}

/* The daemon's pass (kp__ol_daemon_pass, first), or a heap's thread while
 * no daemon would come (park: purge false): the pool's parked spans'
 * blocks given back and home. Under the pool's outline lock, which a fork
 * takes first (kp__ol_fork): no chain is in this thread's hands across a
 * fork. */
static void park_give(kp_pool *pool, bool purge)
{
	kp__ol *ol = pool->ol;
	if (!atomic_load_explicit(&ol->parked, memory_order_relaxed))
		return;
	pthread_mutex_lock(&ol->lock);
	struct ol_span *list = atomic_exchange_explicit(&ol->parked, NULL, memory_order_acquire);
	park_return(pool, list, purge, true);
	pthread_mutex_unlock(&ol->lock);
}

/* h's spans in hand of blocks of a page or more: their blocks handed out
 * and freed since (OL_FREE) off their stacks (the rest kept in order) and
 * parked, OL_PARK_MIN bytes of them at least, a span whose last parked
 * chain the daemon has not given back yet left alone. The owner's thread,
 * its slot marked and busy (a handler's call takes alloc.c's path and its
 * frees the cross-thread lists: no pop or push of these stacks
 * meanwhile), under its avail lock (a fork waits for the chains to be
 * queued: kp__ol_fork). true when the parked list was empty: the caller
 * wakes the daemon. */
static bool hand_park(kp_pool *pool, struct ol_heap *h)
{
	kp__ol *ol = pool->ol;
	bool first = false;
	owner_lock(pool, h);
	for (uint32_t c = 0; c < OL_NCLASS; c++) {
		struct ol_span *pg = h->cur[c];
		if (pg == &empty_span || pg->bsize < OL_BPURGE_MIN ||
		    atomic_load_explicit(&pg->park, memory_order_acquire))
			continue;
		uint16_t *sp = kp__ol_sp(pg);
		uint32_t k = 0;
		for (uint16_t *e = pg->stack0 + 1; e <= sp; e++)
			k += __atomic_load_n(&pg->rec[*e].state, __ATOMIC_RELAXED) == OL_FREE;
		if ((size_t)k * pg->bsize < OL_PARK_MIN)
			continue;
		uint16_t *keep = pg->stack0;
		uint32_t head = 0;
		for (uint16_t *e = pg->stack0 + 1; e <= sp; e++) {
			uint32_t x = *e;
			if (__atomic_load_n(&pg->rec[x].state, __ATOMIC_RELAXED) != OL_FREE) {
				*++keep = (uint16_t)x;
				continue;
			}
			__atomic_store_n(&pg->rec[x].state, OL_LISTED, __ATOMIC_RELAXED);
			__atomic_store_n(&pg->link[x], (uint16_t)(head | OL_LINK_ON), __ATOMIC_RELAXED);
			head = x + 1;
		}
		kp__ol_sp_set(pg, keep);
		atomic_fetch_add_explicit(&pg->nremote, k, memory_order_relaxed);
		struct ol_span *old = atomic_load_explicit(&ol->parked, memory_order_relaxed);
		do
			atomic_store_explicit(&pg->park, (uint64_t)(uintptr_t)old | (uint64_t)head << OL_FC_IDX_SHIFT,
					      memory_order_relaxed);
		while (!atomic_compare_exchange_weak_explicit(&ol->parked, &old, pg, memory_order_release,
							      memory_order_relaxed));
		first |= !old;
	}
	owner_unlock(h);
	return first;
}

/* h's thread gives its spans in hand's free blocks to the daemon
 * (hand_park), and wakes it (kp__daemon_kick: the allocation path's
 * wake-up at a watermark, no counted system call). With no daemon to come
 * (park_served), nothing is parked, and chains parked before (a daemon
 * stopped since, a forked child's) go home unpurged. Not poison:on (a
 * purged page reads zero, not the fill). */
static void hand_give(kp_pool *pool, struct ol_heap *h)
{
	if (pool->conf.poison)
		return;
	if (!park_served(pool))
		park_give(pool, false);
	else if (hand_park(pool, h))
		kp__daemon_kick(pool);
}

/* How far past the mark the fresh memory goes before the next parking: a
 * quarter MiB (a blob of git's and a bit: each of its 200 KB blobs takes 4
 * units, 256 KiB), or an eighth of the mark, so that a program whose large
 * blocks only grow (cc1's tables, a buffer doubled) parks a logarithmic
 * number of times, not once a block. */
#define OL_HAND_STEP ((size_t)256 << 10)
#define OL_HAND_STEP_SHARE 8u

/*
 * After a large block (past OL_SMALL_MAX: alloc.c's path) of a thread with
 * a heap of the pool: when the block took fresh memory (pool->fresh_taken:
 * units no block held since they were mapped, a new huge mapping: the
 * pool's footprint grew) and that count stands a step past the mark, the
 * mark moves there and the thread parks the free blocks of its spans in
 * hand for the daemon to give their pages back (hand_give, above). The
 * mark moves on a pool-wide epoch (hand_epoch), and every other heap's
 * thread parks its own at its next refill (refill_body, hand_catch_up):
 * another thread's spans in hand are popped without a lock, so only their
 * owner may.
 * Only growth: in a steady state no large block takes fresh memory (a
 * mark on out_bytes, moved on again each decay_ms, had test_cache's
 * steady runs purge 1-6 times in a million operations, 3 on out_bytes'
 * peak; units the daemon purged counted as fresh, 129 under load 20); at
 * one level of large bytes (a block taken and freed again and again, the
 * classes between them churned) no purge a round, nor the faults to take
 * the pages back (test_outline_hand_purge: 198 madvise in 200 rounds
 * without the mark). A program whose large blocks fall and rise again
 * within its footprint is left to the daemon's purge of listed spans. A
 * mark on out_bytes' peak missed git's blobs: a realloc'd array (no call
 * here) had set the peak higher before them (18,308 KiB against 17,308).
 * git pack-objects (git.yaml's repack alone, /usr/bin/time -f %M, medians
 * of 5 alternated, load 6-7), with the owner's own purge (s37-realmem):
 * 19,128 KiB peak against glibc's 16,036 (1.19x) before; 17,856 with the
 * calling thread's spans alone, 17,548 with every heap's (1.09x); the mark
 * on fresh_taken (load 20): git.yaml's whole workload 18,724 -> 17,452
 * (glibc 16,524: 1.13x -> 1.06x).
 */
static void large_taken(kp_pool *pool, size_t fresh_before)
{
	kp__ol *ol = pool->ol;
	if (pool->conf.poison || kp__ol_slot.aid != kp__ol_slot_id(pool) || kp__ol_slot.heap == &kp__ol_empty_heap)
		return;
	size_t fresh = atomic_load_explicit(&pool->fresh_taken, memory_order_relaxed);
	size_t mark = atomic_load_explicit(&ol->hand_mark, memory_order_relaxed);
	size_t step = mark / OL_HAND_STEP_SHARE > OL_HAND_STEP ? mark / OL_HAND_STEP_SHARE : OL_HAND_STEP;
	if (fresh == fresh_before || fresh < mark + step)
		return;
	atomic_store_explicit(&ol->hand_mark, fresh, memory_order_relaxed);
	uint32_t epoch = atomic_fetch_add_explicit(&ol->hand_epoch, 1, memory_order_relaxed) + 1;
	if (!kp__ol_enter(kp__ol_slot_id(pool))) /* a call nested inside another of this thread's */
		return;
	if (busy_enter()) {
		struct ol_heap *h = kp__ol_slot.heap;
		h->hand_seen = epoch;
		hand_give(pool, h);
		busy_leave();
	}
	kp__ol_unmark();
}

/* refill_body's look at the pool's hand_epoch: moved since this heap's
 * thread last parked its spans in hand's free blocks, it does so now
 * (hand_give: the owner, its slot marked and busy). */
static __attribute__((noinline, cold)) void hand_catch_up(kp_pool *pool, struct ol_heap *h, uint32_t epoch)
{
	h->hand_seen = epoch;
	hand_give(pool, h);
}

/* ---- kp_alloc ------------------------------------------------------------- */

/* poison:on (poison_alloc, poison_free): the thread's heap of such a pool,
 * kept out of kp__ol_slot so that kp_alloc and kp_free come through
 * kp__ol_alloc and kp__ol_free. */
struct ol_pslot {
	uint64_t id;
	struct ol_heap *heap;
};
static __thread struct ol_pslot kp__ol_pslot __attribute__((tls_model("initial-exec")));

/* The thread exit hook (as tcache.c's): the pools this thread has a heap
 * of, by id (never reused), so that its heaps are abandoned when it ends
 * (heap_abandon) and any thread can adopt them. A thread with heaps of
 * more pools than this forgets the oldest: that heap stays its thread
 * pointer's, adopted by a thread that gets the same one (the way every
 * heap went before). Past the hook (ol_exited) the thread makes no heap:
 * its last calls take alloc.c's path and push their frees straight onto
 * the spans' lists. */
#define OL_EXIT_POOLS 8
static __thread uint64_t ol_exit_ids[OL_EXIT_POOLS];
static __thread bool ol_exited, ol_exit_armed;
static pthread_key_t ol_exit_key;
static bool ol_exit_key_ok;
static pthread_once_t ol_exit_once = PTHREAD_ONCE_INIT;

static void heap_abandon(kp_pool *pool, uintptr_t tp);

/* The thread's slot names pool (its tag: outline.h, kp__ol_slot_id) with
 * heap h; NULL: the empty slot (the exit hook). The slot holds a
 * reference to the structure of the pool it names (pool.c,
 * kp__pool_unref), taken here before it names it and the old one's dropped
 * after, so that no pool is ever made at an address a slot names (its
 * fast paths' compare would take it for the destroyed one, whose heap and
 * map are gone). The slot stays marked meanwhile (0: outline.h,
 * kp__ol_enter), by one exchange (read and mark in one instruction, as a
 * handler's call may come between any two): a handler's call takes the
 * nested ways and names no pool, so the reference dropped is the one the
 * slot held. Its id then: the mark it held (a call marked it: heap_get
 * from the slow paths), else the new tag (unmarked). The drop of a
 * destroyed pool's last reference unmaps its structure (a system call on
 * this path, once a destroyed pool). */
static void slot_name(kp_pool *pool, struct ol_heap *h)
{
	uint64_t was = __atomic_exchange_n(&kp__ol_slot.id, 0, __ATOMIC_RELAXED);
	atomic_signal_fence(memory_order_seq_cst);
	uint64_t old = kp__ol_slot.aid, tag = pool ? kp__ol_slot_id(pool) : 0;
	if (tag != old && pool)
		kp__pool_ref(pool);
	kp__ol_slot.heap = h;
	kp__ol_slot.map = pool ? pool->ol->map : kp__ol_no_map;
	kp__ol_slot.map_mask = pool ? OL_MAP_N - 1 : 0;
	kp__ol_slot.aid = tag;
	if (tag != old && old)
		kp__pool_unref((kp_pool *)(uintptr_t)(old - 1));
	atomic_signal_fence(memory_order_seq_cst);
	kp__ol_slot.id = was != old ? was : tag;
}

static void ol_thread_exit(void *arg)
{
	(void)arg;
	/* no signal handler's call inside heap_abandon (its flush, drain and
	 * lists, the outline lock held: tcache.c's thread_exit, the same) */
	sigset_t old;
	kp__os_signals_off(&old);
	ol_exited = true;
	uintptr_t tp = kp__ol_self();
	slot_name(NULL, &kp__ol_empty_heap);
	kp__ol_pslot = (struct ol_pslot){0, NULL};
	kp__registry_lock();
	for (int i = 0; i < OL_EXIT_POOLS; i++) {
		kp_pool *pool = ol_exit_ids[i] ? kp__registry_find(ol_exit_ids[i]) : NULL;
		if (pool && pool->ol)
			heap_abandon(pool, tp);
		ol_exit_ids[i] = 0;
	}
	kp__registry_unlock();
	kp__os_signals_back(&old);
}

static void ol_exit_key_init(void)
{
	ol_exit_key_ok = pthread_key_create(&ol_exit_key, ol_thread_exit) == 0;
	/* with it, at kp_create, not at a thread's first call (inside
	 * pthread_once then: a handler's allocation there waited forever) */
	ol_reader_key_ok = pthread_key_create(&ol_reader_key, ol_reader_exit) == 0;
}

static void exit_hook_init(void)
{
	pthread_once(&ol_exit_once, ol_exit_key_init);
}

/* The pool's id among the thread's (the oldest forgotten when full), and
 * the exit hook armed once a thread. */
static void exit_note(kp_pool *pool)
{
	int i = 0;
	while (i < OL_EXIT_POOLS - 1 && ol_exit_ids[i] && ol_exit_ids[i] != pool->id)
		i++;
	for (; i > 0; i--)
		ol_exit_ids[i] = ol_exit_ids[i - 1];
	ol_exit_ids[0] = pool->id;
	if (!ol_exit_armed && ol_exit_key_ok) {
		ol_exit_armed = true; /* first: setspecific may allocate (a key past glibc's first 32) */
		pthread_setspecific(ol_exit_key, &ol_exit_armed);
	}
}

/* Every span of h (any list, in hand or retired) made owner's: its
 * thread pointer, OL_OWN_FULL kept. The pool's outline lock held, so no
 * span changes heap meanwhile (span_adopt writes heap and owner under it). */
static void heap_own(kp__ol *ol, struct ol_heap *h, uintptr_t owner)
{
	for (struct ol_seg *s = ol->segs; s; s = s->next) {
		uint32_t used = __atomic_load_n(&s->used, __ATOMIC_ACQUIRE);
		for (uint32_t i = 0; i < used; i++) {
			struct ol_span *pg = &s->spans[i];
			if (!pg->start || pg->heap != h)
				continue;
			uintptr_t o = atomic_load_explicit(&pg->owner, memory_order_relaxed);
			atomic_store_explicit(&pg->owner, owner | (o & OL_OWN_FULL), memory_order_relaxed);
		}
	}
}

/* The calling thread's heap of the pool, as its thread ends (the exit
 * hook; the registry lock held, so the pool lives): its foreign cache
 * back to the spans, the frees waiting for it taken in, its spans in hand
 * listed (so that other heaps can take those wholly free: span_adopt; and
 * the daemon purge them), and then no thread's: every span's owner
 * OL_OWN_NONE, so that every free of its blocks goes onto their lists,
 * whichever thread makes it (a new thread that gets this thread pointer
 * too), until a thread adopts the heap (heap_get) or another heap's
 * refill takes in its lists (span_adopt). */
static void heap_abandon(kp_pool *pool, uintptr_t tp)
{
	kp__ol *ol = pool->ol;
	pthread_mutex_lock(&ol->lock);
	struct ol_heap *h = ol->heaps;
	while (h && h->self != tp)
		h = h->next;
	pthread_mutex_unlock(&ol->lock);
	if (!h)
		return;
	bool mine = busy_enter(); /* a handler's call meanwhile takes alloc.c's path */
	fc_flush_all(pool, h);
	owner_lock(pool, h);
	drain_remote(pool, h);
	for (uint32_t c = 0; c < OL_NCLASS; c++) {
		struct ol_span *pg = h->cur[c];
		if (pg != &empty_span && !(atomic_load_explicit(&pg->owner, memory_order_relaxed) & OL_OWN_FULL)) {
			pg->next = h->avail[c];
			h->avail[c] = pg;
			pg->idle_ns = 0;
			pg->bpurge_ns = 0; /* its free blocks start a new wait (purge_idle) */
		}
		h->cur[c] = &empty_span;
		class_point(h, c, &empty_span);
		if (c < FC_LINE_CLASSES) /* no span in hand: none cached until the next thread allocates it */
			h->fc_cap[c] = 0;
	}
	owner_unlock(h);
	if (mine)
		busy_leave();
	pthread_mutex_lock(&ol->lock);
	heap_own(ol, h, OL_OWN_NONE);
	h->self = OL_OWN_NONE;
	h->abandoned_ns = kp__pool_now(pool);
	atomic_fetch_add_explicit(&ol->nabandoned, 1, memory_order_relaxed);
	pthread_mutex_unlock(&ol->lock);
}

/* LEND: a young heap's classes up to 1 KiB (the direct table's) pop a
 * coarser class's span, the lender's, until they find it run dry: so that a
 * thread that holds a few blocks of many classes takes a span, a data page
 * and their stacks and records for each lender, not for each class. Each
 * class's lender: the next of 32, 64, 128, 192, 256, 384, 512, 768 and
 * 1024 bytes (a block at most 2x its class's, 16 in 32, and 1.6x past
 * that); 0 for those (they lend, and pop their own). A class whose lender's
 * span in hand runs dry, or that lends, allocates from spans of its own as
 * before, from then on: a heap that holds many blocks of a class stops
 * lending it at its first refill past the lender's first page of blocks
 * (span_extend makes a page's worth at a time). The fast paths pop whatever
 * span the tables name and free to the block's own span: no instruction
 * there; class_point keeps the borrowers' tables at their lender's span
 * (the daemon purges listed spans: a table must never name one).
 * Measured (s37, test_outline_lend: 8 threads alive at once with
 * thread_churn's pattern, 64 blocks of 16-512 B live each): 30.8 -> 15.9
 * data and metadata pages resident a heap; a thread with 1,000 blocks of
 * 8-256 B (small_objects') 69 -> 71 pages. Tried: lenders of powers of two
 * (16-48 -> 64, 80-112 -> 128, 144-240 -> 256, ...) 18.0 and 77; lending
 * until the lender's span had made 8 KiB of blocks, 15.6 and 72; until the
 * class found the lender's span dry twice, 15.6 and 78. Not for poison:on
 * (poison_alloc pops its class's span in hand, cur[]); off with lend:off
 * (conf.c). The tests of one class's own mechanism (its foreign cache, its
 * spans' sizes and lists, the races of its records) run with it on: on a
 * lender's class, or on heaps made past their start (tests/ol_lend.h). */
static const uint8_t lend_to[OL_DIRECT_CLASSES] = {1,  0,  3,  0, 7,  7, 7,  0, 11, 11, 11, 0,
						   15, 15, 15, 0, 17, 0, 19, 0, 21, 0,	23, 0};

/* A new heap's borrowers and lenders (LEND). */
static void lend_start(struct ol_heap *h)
{
	for (uint32_t c = 0; c < OL_DIRECT_CLASSES; c++) {
		h->lender[c] = lend_to[c];
		if (lend_to[c])
			h->lending |= 1u << lend_to[c];
	}
}

/* The calling thread's heap for the pool: its own, an abandoned one
 * (its thread ended: heap_abandon) made its own, or a new one; the
 * thread's slot names it. NULL when the OS refuses, or past the thread's
 * exit hook. */
static struct ol_heap *heap_get(kp_pool *pool)
{
	if (ol_exited)
		return NULL;
	/* the slot marked by this call (free_remote_slow's, on the empty
	 * heap: outline.h, kp__ol_enter): marked again once named anew. A
	 * handler's call never comes here (kp__ol_alloc, kp__ol_free: its
	 * nested ways). */
	kp__ol *ol = pool->ol;
	uintptr_t tp = kp__ol_self();
	pthread_mutex_lock(&ol->lock);
	struct ol_heap *h = ol->heaps, *dead = NULL;
	for (; h && h->self != tp; h = h->next)
		if (h->self == OL_OWN_NONE && !dead)
			dead = h;
	if (!h && dead) {
		h = dead;
		h->self = tp;
		heap_own(ol, h, tp);
		atomic_fetch_sub_explicit(&ol->nabandoned, 1, memory_order_relaxed);
	}
	pthread_mutex_unlock(&ol->lock);
	if (!h) {
		pthread_mutex_lock(&ol->lock);
		if (ol->arena_used < OL_ARENA_HEAPS)
			h = (struct ol_heap *)(ol->arena + OL_ARENA_HEAD + ol->arena_used++ * HEAP_BYTES);
		pthread_mutex_unlock(&ol->lock);
		if (!h && (h = map_guarded(pool, HEAP_BYTES)) != NULL)
			h->own_map = true;
		if (!h)
			return NULL;
		h->self = tp;
		h->csz = ol->csz;
		h->rtag = OL_TAG0 + atomic_fetch_add_explicit(&ol_tags, 1, memory_order_relaxed) % OL_NTAGS;
		/* each class's row as long as the most it caches (fc_cap_of of
		 * OL_FC_BYTES: fc_put's, free_remote's, fc_steal's and
		 * abandoned_take's bound), OL_FC_SLOTS in all */
		for (uint32_t c = 0, off = 0; c < OL_NCLASS; off += fc_cap_of(OL_FC_BYTES, class_size[c++])) {
			h->cur[c] = h->fast[c] = &empty_span;
			h->fc_cap[c] = (uint8_t)fc_lone_cap(class_size[c]);
			h->fc_off[c] = (uint16_t)off;
		}
		/* a class under a line: none (FC_LINE_CLASSES; after the loop, in
		 * two stores: the preload's hot text is a 64 KiB window) */
		memset(h->fc_cap, 0, FC_LINE_CLASSES * sizeof h->fc_cap[0]);
		for (int q = 0; q < 65; q++)
			h->direct[q] = &empty_span;
		if (pool->conf.lend && !pool->conf.poison) /* poison_alloc pops its class's span in hand (cur[]) */
			lend_start(h);
		pthread_mutex_lock(&ol->lock);
		h->next = ol->heaps;
		ol->heaps = h;
		atomic_fetch_add_explicit(&ol->nheaps, 1, memory_order_relaxed);
		pthread_mutex_unlock(&ol->lock);
	}
	if (pool->conf.poison) /* never in the slot: alloc.c's fast dispatch would skip the fill */
		kp__ol_pslot = (struct ol_pslot){pool->id, h};
	else
		slot_name(pool, h);
	ol_reader_note(); /* a stale free's grace (kp__ol_daemon_pass) */
	exit_note(pool);
	return h;
}

/* Spans of another heap's dirty list fc_steal looks at, at most: a bound
 * on its walk under that heap's avail lock. */
#define OL_STEAL_SCAN 64

/* Is pg, a span of another heap's dirty list (that heap's avail lock held),
 * retired (OL_OWN_FULL: in no list and in no thread's hand; made whole,
 * fresh == nblocks) and wholly free with its cross-thread list: each block
 * it made on its stack, on its list or being pushed there (nremote counts a
 * push from before its compare-and-swap)? Then no block of it is live nor
 * in a foreign cache (a flush's claimed block is counted in neither until
 * its push: the sum falls short), so no thread can free, push or take one
 * (a free's compare-and-swap needs a live record, a steal or a drain the
 * locks its caller holds), and the sum read in two loads is the span's:
 * between them a count only grows (a live block freed), as a block leaves
 * the stack only by its owner's pop of its span in hand, never a retired
 * one, and the list only by a drain or a steal (the locks). The owner's
 * refill marks its span in hand retired before it lets it go (refill_body):
 * that span's stack is empty then, and the owner pops it no more. */
static bool span_quiet(const struct ol_span *pg)
{
	if (!(atomic_load_explicit(&pg->owner, memory_order_relaxed) & OL_OWN_FULL))
		return false;
	uint16_t *sp = __atomic_load_n(&pg->sp, __ATOMIC_ACQUIRE); /* the owner's last push (span_adopt) */
	uint32_t on = (uint32_t)(sp - pg->stack0) + atomic_load_explicit(&pg->nremote, memory_order_relaxed);
	return on == __atomic_load_n(&pg->fresh, __ATOMIC_RELAXED);
}

/* Blocks of class cls that other threads freed onto another heap's spans'
 * cross-thread lists, taken into h's foreign cache (at most its room of the
 * class), for h to hand out before it touches new pages; how many. From
 * each span of another heap's dirty list, the chain after its list's head
 * (the head stays, so the span stays listed as its list is not empty:
 * remote_push), under that heap's avail lock (no drain takes the list
 * meanwhile: drain_remote's callers hold it) and the pool's outline lock
 * (the heaps' list); other threads push at the head meanwhile, and no push
 * writes a record already on the list. Each block from OL_LISTED to h's
 * tag (rec_claim; else raced_dfree), as a block this thread freed: handed
 * out by fc_pop, its next free goes to its span as any other heap's. A
 * record not OL_LISTED on the list ends the take (left to the owner's
 * drain). h's thread, in its refill (busy).
 * Before, a heap's spans took their blocks back only by their owner's
 * drain, so the producers of a producer/consumer program, taking turns at
 * the queue, each touched pages for the whole of it while the other's
 * blocks waited on its lists (test_memory_threads_outline).
 *
 * First, before any block is taken, a retired span wholly free with its
 * list (span_quiet) is adopted whole instead (*adopt; 0 returned): off its
 * heap's dirty list, made h's (its heap and owner under the pool's outline
 * lock, as span_adopt), and its list taken onto its stack (drain_span, as
 * its owner now). No block of it is live, so no line of it is shared with
 * another thread: this is also how a class under a line (FC_LINE_CLASSES,
 * whose listed blocks are not stolen one by one) gets back what a thread
 * that no longer allocates it (a parked producer) had sent home. Before
 * (s33), those stayed on the parked thread's lists while the thread that
 * freed them touched new pages: test_outline_line_stranded_attack32,
 * 131,072 blocks freed and allocated again, +2240 KiB committed for 16-byte
 * blocks, +4224 for 32, +6272 for 48, and +4288 for 64 (the steal took 128
 * blocks a call and left each span's head, so that its OL_STEAL_SCAN spans
 * ran dry with the blocks further down the list left behind). Left: of a
 * class under a line, the listed blocks of a span with a block still live
 * anywhere, or of its owner's span in hand, wait for their owner's drain
 * (a parked owner's: for as long as it lives). */
static uint32_t fc_steal(kp_pool *pool, struct ol_heap *h, uint32_t cls, struct ol_span **adopt)
{
	kp__ol *ol = pool->ol;
	uint32_t got = h->fc_n[cls], room = 0;
	struct ol_span *whole = NULL;
	*adopt = NULL;
	if (atomic_load_explicit(&ol->nheaps, memory_order_relaxed) < 2) /* h alone: no lock taken (kpbench b) */
		return 0;
	pthread_mutex_lock(&ol->lock);
	for (struct ol_heap *o = ol->heaps; o && !whole; o = o->next) {
		if (o == h || !atomic_load_explicit(&o->dirty, memory_order_relaxed))
			continue;
		avail_lock(pool, o);
		uint32_t seen = 0;
		for (struct ol_span *pred = NULL, *pg = atomic_load_explicit(&o->dirty, memory_order_acquire);
		     pg && seen < OL_STEAL_SCAN;
		     pred = pg, pg = atomic_load_explicit(&pred->dirty_next, memory_order_relaxed), seen++) {
			if (pg->cls != cls)
				continue;
			if (got == h->fc_n[cls] && span_quiet(pg)) { /* nothing taken yet: the span whole */
				dirty_unlink(o, pred, pg);
				whole = pg;
				break;
			}
			if (cls < FC_LINE_CLASSES) /* blocks one by one: their owners' (FC_LINE_CLASSES) */
				continue;
			if (!room)
				room = pg->fc_cap;
			uint32_t head = atomic_load_explicit(&pg->remote, memory_order_acquire);
			if (!head || head > pg->nblocks || got >= room)
				continue;
			uint16_t *hl = &pg->link[head - 1];
			/* the blocks to take, kept in b as the walk meets them
			 * (got + k <= room <= OL_FC_MAX) */
			uint16_t b[OL_FC_MAX];
			uint32_t i = link_next(pg, head - 1), k = 0;
			while (i && i <= pg->nblocks && got + k < room && k < pg->nblocks &&
			       __atomic_load_n(&pg->rec[i - 1].state, __ATOMIC_RELAXED) == OL_LISTED) {
				b[k++] = (uint16_t)(i - 1);
				i = link_next(pg, i - 1);
			}
			if (!k)
				continue;
			/* the rest stays listed (the head too: its flag kept) */
			__atomic_store_n(hl, (uint16_t)(i | OL_LINK_ON), __ATOMIC_RELAXED);
			atomic_fetch_sub_explicit(&pg->nremote, k, memory_order_relaxed);
			/* the k off the list, their flags cleared, one fence, then
			 * their records (link_unlist's order; the walk above read
			 * their links) */
			for (uint32_t n = 0; n < k; n++)
				__atomic_store_n(&pg->link[b[n]], 0, __ATOMIC_RELAXED);
			list_fence();
			for (uint32_t n = 0; n < k; n++) {
				if (KP_UNLIKELY(!rec_claim(&pg->rec[b[n]], OL_LISTED, h->rtag)))
					raced_dfree(pool, pg, b[n]);
				else
					fc_ents(h, cls)[got++] = (uintptr_t)pg | (uint64_t)b[n] << OL_FC_IDX_SHIFT;
			}
		}
		avail_unlock(o);
		if (room && got >= room)
			break;
	}
	if (whole) { /* under the lock: heap_own's walk sees each span's heap and owner together */
		whole->heap = h;
		whole->next = NULL;
		whole->idle_ns = 0;
		whole->bpurge_ns = 0;
		/* not retired: drain_span relists none, and h's own frees of it
		 * are the fast path's */
		atomic_store_explicit(&whole->owner, h->self, memory_order_relaxed);
		/* its list onto its stack, the outline lock still held (a fork
		 * meanwhile would leave the child a span on no dirty list with
		 * its list never taken); a push in flight (counted, not yet on
		 * the list) lands on h's dirty list (remote_push reads the heap
		 * after its compare-and-swap, which follows this drain's) */
		owner_lock(pool, h);
		drain_span(pool, h, whole);
		owner_unlock(h);
	}
	pthread_mutex_unlock(&ol->lock);
	if (whole) {
		*adopt = whole;
		return 0;
	}
	uint32_t took = got - h->fc_n[cls];
	__atomic_store_n(&h->fc_n[cls], (uint8_t)got, __ATOMIC_RELAXED);
	return took;
}

/* A span of class cls wholly free on another heap's avail list, taken off
 * it (that heap's avail lock, as the daemon's purge takes one) and made h's,
 * or NULL. Wholly free (every block it handed out on its stack, nothing on
 * its cross-thread list): no block of it is live, so no free but an invalid
 * one reaches it (refused: its records read free), and it is on no dirty
 * list (a drain took it off before its last blocks came back). Before, such
 * spans stayed with their heap until kp_destroy or the daemon's purge (which
 * the preload does not start for an outline pool) while other heaps touched
 * new ones: larson, 4 threads, 66 spans and 4.1 MiB of its 12.4 at its peak. */
static struct ol_span *span_adopt(kp_pool *pool, struct ol_heap *h, uint32_t cls)
{
	kp__ol *ol = pool->ol;
	struct ol_span *got = NULL;
	pthread_mutex_lock(&ol->lock);
	for (struct ol_heap *o = ol->heaps; o && !got; o = o->next) {
		if (o == h)
			continue;
		avail_lock(pool, o);
		/* an abandoned heap's frees: no owner takes them in, so the first
		 * heap to look does, under the pool's outline lock (no other, and
		 * no adoption meanwhile) and that heap's avail lock */
		if (o->self == OL_OWN_NONE && atomic_load_explicit(&o->dirty, memory_order_relaxed))
			drain_remote(pool, o);
		for (struct ol_span **pp = &o->avail[cls], *pg; (pg = *pp) != NULL; pp = &pg->next) {
			uint16_t *sp = __atomic_load_n(&pg->sp, __ATOMIC_ACQUIRE); /* the owner's last push */
			if ((uint32_t)(sp - pg->stack0) == __atomic_load_n(&pg->fresh, __ATOMIC_RELAXED) &&
			    !atomic_load_explicit(&pg->remote, memory_order_acquire) &&
			    !atomic_load_explicit(&pg->nremote, memory_order_relaxed)) {
				*pp = pg->next;
				got = pg;
				break;
			}
		}
		avail_unlock(o);
	}
	if (got) { /* under the lock: heap_own's walk sees each span's heap and owner together */
		got->heap = h;
		got->next = NULL;
		got->idle_ns = 0;
		got->bpurge_ns = 0; /* its free blocks start a new wait (purge_idle) */
		atomic_store_explicit(&got->owner, h->self, memory_order_relaxed);
	}
	pthread_mutex_unlock(&ol->lock);
	return got;
}

/* Free blocks of class cls on the stacks of an ended thread's heap's spans
 * (abandoned: heap_abandon), taken into h's foreign cache (its room of the
 * class at most), as if h's thread had freed them: fc_pop hands them out,
 * and their next free goes back to their span as any other heap's block's
 * (onto its cross-thread list, which span_adopt and this drain, below).
 * How many. A span wholly free is span_adopt's; this takes the free blocks
 * of one that is not: an ended producer's spans, whose last blocks wait in
 * a consumer's foreign cache (OL_FC_LONE_BYTES a class: most of its spans
 * hold one) while the producer left alone would touch new pages (s34:
 * test_outline_abandoned_spans, +84 data pages with span_adopt alone, a
 * round's 257). No thread pops an abandoned heap's stacks: its next thread
 * adopts it under the pool's outline lock (heap_get), held here, and that
 * heap's avail lock keeps the daemon's purge (purge_idle, which takes a
 * span off the list while its pages go, under the outline lock too) and
 * span_adopt away. A block on a stack reads OL_FREE or OL_VIRGIN, and a
 * free of it is refused whichever of those or h's tag it reads (a double
 * free), so the record's plain store to the tag races no valid free. Not
 * poison:on (its blocks are verified at their allocation: poison_alloc).
 * h's thread, in its refill (busy). */
static uint32_t abandoned_take(kp_pool *pool, struct ol_heap *h, uint32_t cls)
{
	kp__ol *ol = pool->ol;
	/* no lock taken while no heap is abandoned (kpbench a, b, c); a class
	 * under a line, as fc_steal's listed blocks: its blocks one by one to
	 * no other thread (FC_LINE_CLASSES), its spans whole (span_adopt) */
	if (!atomic_load_explicit(&ol->nabandoned, memory_order_relaxed) || pool->conf.poison || cls < FC_LINE_CLASSES)
		return 0;
	uint32_t got = h->fc_n[cls], room = fc_cap_of(OL_FC_BYTES, class_size[cls]);
	uint64_t now = 0;
	pthread_mutex_lock(&ol->lock);
	for (struct ol_heap *o = ol->heaps; o && got < room; o = o->next) {
		if (o == h || o->self != OL_OWN_NONE)
			continue;
		if (!now)
			now = kp__pool_now(pool);
		if (now - o->abandoned_ns < (uint64_t)OL_ABANDON_MS * 1000000ull)
			continue; /* a thread may adopt it yet (heap_get) */
		avail_lock(pool, o);
		if (atomic_load_explicit(&o->dirty, memory_order_relaxed)) /* its frees: no owner takes them in */
			drain_remote(pool, o);
		for (struct ol_span *pg = o->avail[cls]; pg && got < room; pg = pg->next) {
			uint16_t *sp = kp__ol_sp(pg);
			while (*sp != OL_SENT && got < room) {
				uint32_t idx = *sp--;
				__atomic_store_n(&pg->rec[idx].state, h->rtag, __ATOMIC_RELAXED);
				fc_ents(h, cls)[got++] = (uintptr_t)pg | (uint64_t)idx << OL_FC_IDX_SHIFT;
			}
			kp__ol_sp_set(pg, sp);
			pg->idle_ns = 0;
			pg->bpurge_ns = 0; /* its free blocks start a new wait (purge_idle) */
		}
		avail_unlock(o);
	}
	pthread_mutex_unlock(&ol->lock);
	uint32_t took = got - h->fc_n[cls];
	__atomic_store_n(&h->fc_n[cls], (uint8_t)got, __ATOMIC_RELAXED);
	return took;
}

/* The span of h's avail list of class cls with the most blocks on its
 * stack (the first of those), within OL_AVAIL_SCAN of the head, taken off
 * the list; or NULL. A span
 * there may have none: the span in hand swapped out with its untouched rest
 * (refill_body), or one a drain relisted (drain_remote) and an earlier
 * refill emptied. Before, a refill looked at the head alone and touched a
 * new page of blocks while spans further down held touched free ones
 * (test_memory_threads_outline: a consumer's frees come back to the
 * producer's spans in bursts). The owner, under its avail lock.
 * A span's free blocks are sp - stack0 (stack0 holds the sentinel, the
 * only OL_SENT on a stack: span_new), so the scan reads no stack; before
 * (s36) it read each span's top entry and the best's stack0 again: kpbench
 * b's refills (1 in 44 allocations) scan ~6 spans. */
#define OL_AVAIL_SCAN 8
static struct ol_span *avail_take_free(struct ol_heap *h, uint32_t cls)
{
	struct ol_span **best = NULL, *pg;
	ptrdiff_t most = 0;
	uint32_t i = 0;
	for (struct ol_span **pp = &h->avail[cls]; (pg = *pp) != NULL && i < OL_AVAIL_SCAN; pp = &pg->next, i++) {
		ptrdiff_t k = kp__ol_sp(pg) - pg->stack0;
		if (k > most) {
			best = pp;
			most = k;
		}
	}
	if (!best)
		return NULL;
	pg = *best;
	*best = pg->next;
	pg->idle_ns = 0;
	pg->bpurge_ns = 0; /* its free blocks start a new wait (purge_idle) */
	return pg;
}

/* A class ran dry (or the span in hand is the placeholder): retire the span,
 * take one from the avail list, the cross-thread frees, or a new one. The
 * empty heap (a slot that names the pool but holds no heap of it yet):
 * kp__ol_alloc finds or makes the thread's. */
static __attribute__((noinline)) void *refill_span(kp_pool *pool, struct ol_heap *h, uint32_t cls, size_t n);
static void *refill_body(kp_pool *pool, struct ol_heap *h, uint32_t cls, size_t n);

/* The foreign cache's case apart, in a function that saves no register
 * (kpbench c: every allocation comes here while blocks migrate). */
__attribute__((noinline)) void *kp__ol_refill(kp_pool *pool, struct ol_heap *h, size_t cls, size_t n)
{
	/* a signal handler's call while its thread is inside a busy section
	 * (refill_body, a foreign cache's flush: fc_put) takes alloc.c's path
	 * (refill_span): a pop then could hand out an entry the flush claimed
	 * already, report it, and leave fc_n below the flush's count (its
	 * memmove of n - m entries wrapped: SIGSEGV, s31-att,
	 * test_outline_fc_signal_attack31b: 5 of 6 children) */
	if (KP_UNLIKELY(ol_st.any))
		return refill_span(pool, h, cls, n);
	if (h->fc_n[cls]) /* other heaps' blocks this thread freed, first (the empty heap's: none) */
		return fc_pop_inline(pool, h, cls, n, true);
	/* the cache emptied, the tables at the empty span still (the span in
	 * hand has blocks: else the pop had not missed): they point at the span
	 * again here (refill_body's first step, without its busy section: no
	 * list is touched), then the pop; a lender's there, with its
	 * borrowers' tables (class_point's call) */
	struct ol_span *pg = h->cur[cls];
	uint16_t *sp = kp__ol_sp(pg);
	if (KP_LIKELY(*sp != OL_SENT) && !class_lends(h, cls)) {
		class_point_own(h, cls, pg);
		void *p = kp__ol_pop(h, pg, sp, *sp, n);
		kp__ol_unmark();
		return p;
	}
	return refill_span(pool, h, cls, n);
}

/* kp__ol_refill of a poison:on pool (poison_alloc, and fc_pop's retries in
 * one): the foreign cache by fc_pop, whose canary is by the span's size
 * (fc_pop_inline), else the span (refill_span, whose refill_body points the
 * tables at it first, as kp__ol_refill's third case). */
static __attribute__((noinline)) void *refill_poison(kp_pool *pool, struct ol_heap *h, uint32_t cls, size_t n)
{
	if (!ol_st.any && h->fc_n[cls])
		return fc_pop(pool, h, cls, n);
	return refill_span(pool, h, cls, n);
}

/* The class whose span a refill of class cls, which its lender's span
 * serves (LEND), takes: the lender's while it has blocks for it (its span
 * in hand, its foreign cache) or no span yet; else cls's own from now on,
 * its tables at its span in hand (none yet: refill_body makes one). Either
 * way the heap allocates cls: its foreign cache of cls at full size, as
 * refill_body sets a class's own (a consumer's borrowers kept the lone cap
 * and a class under a line none, s37: test_outline_retired_lone_attack30b's
 * 16 and 320 bytes, caps 0 and 4 after a refill, want 64 and 25). The
 * owner, in its refill. */
static uint32_t lend_class(struct ol_heap *h, uint32_t cls)
{
	uint32_t lender = h->lender[cls];
	struct ol_span *pg = h->cur[lender];
	if (!h->fc_n[lender] && (pg == &empty_span || *kp__ol_sp(pg) != OL_SENT)) {
		h->fc_cap[cls] = (uint8_t)fc_cap_of(OL_FC_BYTES, class_size[cls]);
		return lender;
	}
	h->lender[cls] = 0;
	uint32_t still = 0;
	for (uint32_t c = 0; c < lender; c++)
		still |= h->lender[c] == lender;
	if (!still)
		h->lending &= ~(1u << lender);
	class_direct(h, cls, &empty_span);
	return cls;
}

/* refill_body with this thread marked busy (above); a call made inside one
 * (a handler's) goes to alloc.c's path. */
static __attribute__((noinline)) void *refill_span(kp_pool *pool, struct ol_heap *h, uint32_t cls, size_t n)
{
	if (!busy_enter())
		return kp__alloc_classic(pool, n, 0);
	uint32_t from = cls < OL_DIRECT_CLASSES && h->lender[cls] ? lend_class(h, cls) : cls;
	void *p = from == cls ? refill_body(pool, h, cls, n) : refill_again(pool, h, from, n);
	busy_leave();
	kp__ol_unmark(); /* kp__ol_refill's caller marked the slot (outline.h) */
	return p;
}

/* kp__ol_refill from inside refill_body: the foreign cache, or the body
 * again (this thread is marked busy already). */
static void *refill_again(kp_pool *pool, struct ol_heap *h, uint32_t cls, size_t n)
{
	if (h->fc_n[cls])
		return fc_pop(pool, h, cls, n);
	return refill_body(pool, h, cls, n);
}

static void *refill_body(kp_pool *pool, struct ol_heap *h, uint32_t cls, size_t n)
{
	if (h == &kp__ol_empty_heap) { /* pool: any pointer whose first word is the slot's id */
		/* kp__ol_alloc makes the heap and marks the slot itself: this
		 * call's mark (outline.h) would read there as a handler's */
		kp__ol_unmark();
		return kp__alloc_slow(pool, n, 0);
	}
	uint32_t epoch = atomic_load_explicit(&pool->ol->hand_epoch, memory_order_relaxed);
	if (KP_UNLIKELY(epoch != h->hand_seen)) /* a thread's large blocks grew: large_taken */
		hand_catch_up(pool, h, epoch);
	/* the heap allocates the class: its cache of it at full size (outline.h, OL_FC_LONE_BYTES) */
	h->fc_cap[cls] = (uint8_t)fc_cap_of(OL_FC_BYTES, class_size[cls]);
	/* the cache emptied: the class's span in hand again (here, not as its
	 * last block goes, so that a thread whose frees and allocations
	 * alternate, kpbench c, points its tables at neither back and forth) */
	if (h->fast[cls] != h->cur[cls])
		class_point(h, cls, h->cur[cls]);
	struct ol_span *pg = h->cur[cls];
	uint16_t *sp = kp__ol_sp(pg);
	if (*sp != OL_SENT)
		return kp__ol_pop(h, pg, sp, *sp, n);
	if (pg->fresh < pg->nblocks) { /* blocks never taken yet: the next page of them */
		/* but first the blocks other threads gave back, whose pages are
		 * touched already (larson: 2.9x its live bytes touched, then 2.3x) */
		if (atomic_load_explicit(&h->dirty, memory_order_relaxed)) {
			owner_lock(pool, h);
			drain_class(pool, h, cls);
			owner_unlock(h);
			sp = kp__ol_sp(pg);
			if (*sp != OL_SENT)
				return kp__ol_pop(h, pg, sp, *sp, n);
		}
		/* and a listed span's free blocks, touched too: this one waits
		 * on the list with its untouched rest */
		owner_lock(pool, h); /* the daemon's purge moves them */
		struct ol_span *alt = avail_take_free(h, cls);
		if (alt) {
			pg->next = h->avail[cls];
			h->avail[cls] = pg;
			pg->idle_ns = 0;
			pg->bpurge_ns = 0; /* its free blocks start a new wait (purge_idle) */
		}
		owner_unlock(h);
		if (alt) {
			h->cur[cls] = alt;
			class_point(h, cls, alt);
			sp = kp__ol_sp(alt);
			return kp__ol_pop(h, alt, sp, *sp, n);
		}
		/* and other heaps' blocks waiting on their lists, or a span
		 * of theirs wholly free (this one then waits on the list, as
		 * above) */
		if (fc_steal(pool, h, cls, &alt))
			return fc_pop(pool, h, cls, n);
		/* and a span of another heap wholly free on its avail list
		 * (span_adopt; an ended thread's heap: its frees taken in
		 * there), whose pages are touched too. Before (s33), only a
		 * heap with no untouched block in hand looked: a producer left
		 * alone made new pages of its span in hand while the ended
		 * one's spans sat free (bench-prodcons: 0.9 MiB of them at its
		 * peak; test_outline_abandoned_spans, +112 data pages for A's
		 * rounds alone, a round's 257). Not for a heap alone (kpbench
		 * a, b: no lock taken) */
		if (!alt && atomic_load_explicit(&pool->ol->nheaps, memory_order_relaxed) > 1)
			alt = span_adopt(pool, h, cls);
		/* (the count tested here: abandoned_take is not in the preload's
		 * hot text, hot.txt, which a single thread's refills stay in) */
		if (!alt && atomic_load_explicit(&pool->ol->nabandoned, memory_order_relaxed) &&
		    abandoned_take(pool, h, cls))
			return fc_pop(pool, h, cls, n);
		if (alt) {
			owner_lock(pool, h);
			pg->next = h->avail[cls];
			h->avail[cls] = pg;
			pg->idle_ns = 0;
			pg->bpurge_ns = 0;
			owner_unlock(h);
			h->cur[cls] = alt;
			class_point(h, cls, alt);
			sp = kp__ol_sp(alt);
			return kp__ol_pop(h, alt, sp, *sp, n);
		}
		span_extend(pool, pg);
		sp = kp__ol_sp(pg);
		return kp__ol_pop(h, pg, sp, *sp, n);
	}
	if (pg != &empty_span)
		atomic_store_explicit(&pg->owner, h->self | OL_OWN_FULL, memory_order_relaxed);
	owner_lock(pool, h);
	drain_class(pool, h, cls);
	pg = avail_take_free(h, cls);
	owner_unlock(h);
	/* other heaps' blocks next (none in hand meanwhile, below), or a
	 * span of theirs wholly free (fc_steal) */
	if (!pg && fc_steal(pool, h, cls, &pg)) {
		h->cur[cls] = &empty_span;
		class_point(h, cls, &empty_span);
		return fc_pop(pool, h, cls, n);
	}
	if (!pg && atomic_load_explicit(&pool->ol->nabandoned, memory_order_relaxed) &&
	    abandoned_take(pool, h, cls)) { /* an ended thread's free blocks */
		h->cur[cls] = &empty_span;
		class_point(h, cls, &empty_span);
		return fc_pop(pool, h, cls, n);
	}
	if (!pg) { /* then a listed span's untouched blocks */
		owner_lock(pool, h);
		if ((pg = h->avail[cls]) != NULL) {
			h->avail[cls] = pg->next;
			pg->idle_ns = 0;
			pg->bpurge_ns = 0; /* its free blocks start a new wait (purge_idle) */
		}
		owner_unlock(h);
	}
	if (!pg && !(pg = span_adopt(pool, h, cls)) && !(pg = span_new(pool, h, cls))) {
		/* none in hand: the retired span left there would be relisted by
		 * its frees while in hand, and the daemon's purge (or return)
		 * would take it from under the pops (test_outline_return) */
		h->cur[cls] = &empty_span;
		class_point(h, cls, &empty_span);
		return kp__alloc_classic(pool, n, 0); /* primary_max or the OS: alloc.c's policy (oom, the backup) */
	}
	h->cur[cls] = pg;
	class_point(h, cls, pg);
	sp = kp__ol_sp(pg);
	if (*sp == OL_SENT) { /* a listed span left in hand with none free (heap_abandon, the swap above) */
		if (pg->fresh >= pg->nblocks)
			return refill_again(pool, h, cls, n); /* retired, the next */
		span_extend(pool, pg);
		sp = kp__ol_sp(pg);
	}
	return kp__ol_pop(h, pg, sp, *sp, n);
}

/* The fill of a freed block, all its bytes; verified whole but for the
 * canary poison_alloc has just written at p + n (kp__ol_pop). */
static bool poison_ok(const uint8_t *p, size_t from, size_t to)
{
	for (size_t i = from; i < to; i++)
		if (p[i] != KP_POISON_BYTE)
			return false;
	return true;
}

/* poison:on's calls (poison_alloc, poison_free) mark the thread's outline
 * slot for their length, as the fast paths do (outline.h, kp__ol_enter):
 * such a pool is never in the slot (heap_get: kp__ol_pslot), so its calls
 * marked nothing, and a signal handler's call inside one took the same
 * heap's stacks (test_outline_signal_poison_attack33: 2 rounds of 4 failed
 * on s34-sig before this, 2,261 double frees reported that no one made,
 * 56-224 bytes left in use). A handler's call now finds the slot marked
 * and takes the nested ways (kp__ol_alloc: alloc_nested; kp_free:
 * free_nested, which fills a poison pool's block and lists it). The mark
 * is the pool's address (no pool's id, never aid), a plain store: a
 * handler's call before it runs whole; after it, every handler's call
 * finds the slot marked and leaves it as it found it, so the unmark
 * (kp__ol_unmark: the slot's aid, whatever pool it names) restores it.
 * Callees that unmark as they end (kp__ol_refill's paths,
 * free_other_checked) are followed by the mark again or by the end. */
static inline void poison_mark(const kp_pool *pool)
{
	kp__ol_slot.id = (uint64_t)(uintptr_t)pool;
	atomic_signal_fence(memory_order_seq_cst);
}

static inline __attribute__((always_inline)) struct ol_span *block_of(const uintptr_t *map, const void *p,
								      uint32_t *idx_out, bool *ours);

static void *poison_alloc_marked(kp_pool *pool, size_t n, unsigned flags)
{
	struct ol_heap *h = kp__ol_pslot.id == pool->id ? kp__ol_pslot.heap : heap_get(pool);
	if (!h) {
		kp__ol_unmark(); /* alloc.c's path unmarked, as kp__ol_alloc's other ways there */
		return kp__alloc_classic(pool, n, flags);
	}
	size_t need = n + OL_CANARY;
	uint32_t cls = need <= 1024 ? kp__ol_class_tbl[(need + 15) >> 4] : kp__ol_class_big(need);
	for (;;) {
		struct ol_span *pg = h->cur[cls];
		uint16_t *sp = kp__ol_sp(pg);
		uint8_t *p;
		if (*sp != OL_SENT)
			p = kp__ol_pop(h, pg, sp, *sp, n);
		else {
			p = refill_poison(pool, h, cls, n); /* it unmarks */
			poison_mark(pool);
		}
		if (!p || !kp__ol_knows(pool, p)) /* alloc.c's path served it (primary_max) */
			return p && (flags & KP_ZERO) ? memset(p, 0, n) : p;
		/* p's own span (the slice map), not h->cur[cls]: a handler's
		 * call between the refill's unmark and the mark again may have
		 * moved the class to another span */
		uint32_t idx = 0;
		bool ours;
		pg = block_of(pool->ol->map, p, &idx, &ours);
		if (poison_ok(p, 0, n) && poison_ok(p, n + pg->csz, pg->bsize)) {
			if (flags & KP_ZERO)
				memset(p, 0, n);
			return p;
		}
		/* written after its free: never handed out again (no stack holds
		 * it), and a free of its stale pointer is a double free (OL_QUAR;
		 * before, the record said allocated and such a free put it back:
		 * test_outline_edges) */
		pg->rec[idx].state = OL_QUAR;
		atomic_fetch_add(&pool->quarantined, 1);
		kp__count_inc(&h->allocs, (uint64_t)-1); /* popped, never handed out */
		kp__violation(pool, KP_EV_USE_AFTER_FREE, KP_ECORRUPT, p, pg->bsize - pg->csz,
			      "write after free, quarantined");
	}
}

static void *poison_alloc(kp_pool *pool, size_t n, unsigned flags)
{
	poison_mark(pool);
	void *p = poison_alloc_marked(pool, n, flags);
	kp__ol_unmark();
	return p;
}

/* A block of class cls for a KP_ZERO request of n bytes, as kp__ol_alloc
 * takes one, and *zero: whether its bytes are zero already (never handed
 * out since its span's pages were zero: OL_VIRGIN, or made by span_extend
 * in this refill from the span in hand), so that they are not written: a
 * calloc'd block the program leaves partly unwritten keeps those pages
 * untouched, as on glibc's and jemalloc's fresh memory. Before, every
 * calloc up to 128 KiB was zeroed whole (the preload's calloc): gcc's cc1
 * on integrity.c (bench gcc-libkpool's largest process) peaked at 102 MB
 * against jemalloc's 77 and glibc's 106. Conservative: a block of a new,
 * adopted or other span taken by the refill is zeroed (its record's state
 * was not seen before the pop wrote it). The owner (h's thread). */
static void *pop_zero(kp_pool *pool, struct ol_heap *h, uint32_t cls, size_t n, bool *zero)
{
	/* h's allocations before: a signal handler that allocates from h
	 * between the reads below and the pop (its fast pop takes the block
	 * read, writes it and frees it back on top) counts one more, and the
	 * block is zeroed (test_outline_zero_signal_attack29: 16-20 rounds in
	 * 20 returned the handler's bytes without this). Every pop of h's
	 * counts one (kp__ol_pop, fc_pop, the refill's); a handler's call
	 * inside the refill's busy section takes alloc.c's path and none of
	 * h's blocks. */
	uint64_t a0 = atomic_load_explicit(&h->allocs, memory_order_relaxed);
	atomic_signal_fence(memory_order_seq_cst);
	struct ol_span *pg = h->fast[cls];
	uint16_t *sp = kp__ol_sp(pg);
	uint8_t *p;
	if (*sp != OL_SENT) {
		*zero = __atomic_load_n(&pg->rec[*sp].state, __ATOMIC_RELAXED) == OL_VIRGIN;
		p = kp__ol_pop(h, pg, sp, *sp, n);
	} else {
		struct ol_span *was = h->cur[cls];
		uint32_t f0 = __atomic_load_n(&was->fresh, __ATOMIC_RELAXED);
		p = kp__ol_refill(pool, h, cls, n);
		/* blocks past f0 were made in this refill: never handed out before */
		*zero = p && was->zero && p >= was->start + (size_t)f0 * was->bsize &&
			p < was->start + (size_t)__atomic_load_n(&was->fresh, __ATOMIC_RELAXED) * was->bsize;
	}
	atomic_signal_fence(memory_order_seq_cst);
	if (atomic_load_explicit(&h->allocs, memory_order_relaxed) != a0 + 1)
		*zero = false;
	return p;
}

/* Everything but the common case: no heap yet on this thread for this pool
 * (or another pool's in the slot), flags, a request past the table. Larger
 * requests and critical ones go to alloc.c's path; so does a request the OS
 * refused memory for here (its policy: wait, backup, events). pool: a live
 * pool of layout:outline (alloc.c's alloc_slow tested it, or the slot
 * names it). */
/* kp_alloc of a call nested inside another of this thread's (a signal
 * handler's: the slot marked, outline.h's kp__ol_enter): alloc.c's path
 * while the interrupted call is inside this path (its heap's stacks,
 * tables, caches); this path's, with the slot unmarked meanwhile, while
 * it is inside alloc.c's (free_classic_marked: KP_OL_MARK_CLASSIC). */
static __attribute__((noinline, cold)) void *alloc_nested(kp_pool *pool, size_t n, unsigned flags)
{
	uint64_t m = kp__ol_slot.id;
	if (m != ((uint64_t)(uintptr_t)pool | KP_OL_MARK_CLASSIC) || kp__ol_slot.aid != kp__ol_slot_id(pool))
		return kp__alloc_classic(pool, n, flags);
	kp__ol_slot.id = kp__ol_slot.aid;
	atomic_signal_fence(memory_order_seq_cst);
	void *p = kp__ol_alloc(pool, n, flags);
	atomic_signal_fence(memory_order_seq_cst);
	kp__ol_slot.id = m;
	return p;
}

void *kp__ol_alloc(kp_pool *pool, size_t n, unsigned flags)
{
	/* the slot marked: a call nested inside another of this thread's (a
	 * signal handler's; outline.h, kp__ol_enter), which keeps off the
	 * heap: alloc.c's path */
	if (KP_UNLIKELY(kp__ol_marked()))
		return alloc_nested(pool, n, flags);
	if (flags & KP_CRITICAL)
		return kp__alloc_classic(pool, n, flags);
	if (n > OL_SMALL_MAX - OL_CANARY) {
		size_t fresh = atomic_load_explicit(&pool->fresh_taken, memory_order_relaxed);
		void *big = kp__alloc_classic(pool, n, flags);
		if (big)
			large_taken(pool, fresh);
		return big;
	}
	if (KP_UNLIKELY(pool->conf.poison))
		return poison_alloc(pool, n, flags);
	struct ol_heap *h = kp__ol_slot.aid == kp__ol_slot_id(pool) && kp__ol_slot.heap != &kp__ol_empty_heap
				    ? kp__ol_slot.heap
				    : heap_get(pool);
	void *p = NULL;
	bool zero = false; /* p's bytes zero already (pop_zero) */
	uint64_t id = kp__ol_slot_id(pool);
	if (h && kp__ol_enter(id)) {	     /* the slot names pool (heap_get): marked for the pops */
		size_t need = n + OL_CANARY; /* either mode: outline.h */
		uint32_t cls = need <= 1024 ? kp__ol_class_tbl[(need + 15) >> 4] : kp__ol_class_big(need);
		struct ol_span *pg = h->fast[cls]; /* &empty_span while its foreign cache holds blocks */
		uint16_t *sp = kp__ol_sp(pg);
		if (KP_UNLIKELY(flags & KP_ZERO))
			p = pop_zero(pool, h, cls, n, &zero);
		else
			p = *sp != OL_SENT ? kp__ol_pop(h, pg, sp, *sp, n) : kp__ol_refill(pool, h, cls, n);
		kp__ol_unmark(); /* kp__ol_refill's unmark made again: the same store */
	}
	if (!p)
		return kp__alloc_classic(pool, n, flags);
	if ((flags & KP_ZERO) && !zero) {
#if KP_PLANT == 8 /* planted 8: KP_ZERO leaves the first 8 bytes of a block as they were */
		if (n >= 16) {
			memset((uint8_t *)p + 8, 0, n - 8);
			return p;
		}
#endif
		memset(p, 0, n);
	}
	return p;
}

/* ---- kp_free -------------------------------------------------------------- */

/* p's span and block index, or NULL: not in the slice map (*ours false: no
 * block of this path, alloc.c's path decides), or no block start (*ours
 * true: an interior pointer or a span's tail, refused here). */
static inline __attribute__((always_inline)) struct ol_span *block_of(const uintptr_t *map, const void *p,
								      uint32_t *idx_out, bool *ours)
{
	uintptr_t a = (uintptr_t)p;
	*ours = false;
	if (KP_UNLIKELY((a >> OL_SLICE_SHIFT) >= OL_MAP_N))
		return NULL;
	struct ol_span *pg = kp__ol_map_span(map, a >> OL_SLICE_SHIFT);
	if (KP_UNLIKELY(!pg))
		return NULL;
	*ours = true;
	uint64_t q = kp__ol_index(pg, a - (uintptr_t)pg->start);
	/* idx == nblocks (the tail) lands on the sentinel record: free's
	 * state test refuses it */
	if (KP_UNLIKELY(q > pg->nblocks))
		return NULL;
	*idx_out = (uint32_t)q;
	return pg;
}

static __attribute__((noinline)) void span_relist_locked(kp_pool *pool, struct ol_span *pg)
{
	if (!busy_enter()) { /* a handler's free inside a busy section: after it (busy_leave) */
		relist_later(pool, pg);
		return;
	}
	struct ol_heap *h = pg->heap;
	owner_lock(pool, h);
	/* still retired: a handler's call may have relisted it since the
	 * caller's push (test_outline_signal), as busy_later tests */
	if (atomic_load_explicit(&pg->owner, memory_order_relaxed) & OL_OWN_FULL)
		span_relist(h, pg);
	owner_unlock(h);
	busy_leave();
}

/* outline.h's kp__ol_free_own, relisting the owner's retired span once
 * its relist_at'th block is free (span_relist_locked). */
__attribute__((noinline)) int kp__ol_relist(kp_pool *pool, struct ol_span *pg)
{
	span_relist_locked(pool, pg);
	kp__ol_unmark(); /* the caller's mark (outline.h) */
	return 0;
}

/* Not the owner's listed span: the owner's retired one (relist it), or
 * another thread's (its cross-thread list; a double free found there is
 * reported, errno kept: free_remote). */
static int free_other_checked(kp_pool *pool, struct ol_span *pg, uint32_t idx, struct ol_rec *r, uint32_t st, void *p)
{
	uintptr_t own = atomic_load_explicit(&pg->owner, memory_order_relaxed);
	if ((own & ~(uintptr_t)OL_OWN_FULL) != kp__ol_self())
		return free_remote((uint64_t)(uintptr_t)pool, pg, idx, r, st, p, KP_OL_CANARY_SPAN, false);
	__atomic_store_n(&r->state, OL_FREE, __ATOMIC_RELAXED); /* as kp__ol_free_check's */
	uint16_t *sp = kp__ol_sp(pg) + 1;
	*sp = (uint16_t)idx;
	kp__ol_sp_push(pg, sp);
	/* Relisted once an eighth of it is free: a span with one free block
	 * would send the next allocation of its class down the slow path. */
	if ((uint32_t)(sp - pg->stack0) >= pg->relist_at)
		span_relist_locked(pool, pg);
	kp__ol_unmark(); /* kp__ol_free_other's caller's mark (outline.h) */
	return 0;
}

/* kp__ol_free_fast's case of a span not the calling thread's listed one:
 * its checks (the state, relaxed: another thread's free of the block may
 * race it, and its compare-and-swap decides; the canary), then as above.
 * try_only: a violation is left alone (KP_OL_UNTRIED), as free_fast's.
 * With KP_OL_RETIRED_OWN the fast path sent the owner's retired span
 * elsewhere, so the span is another thread's: free_remote at once, its
 * canary's spoil by the mode tested here (free_other_checked tested the
 * owner again and the canary's size twice: kpbench c 150.9 -> 141.6-142.6
 * instructions a kp_alloc + kp_free with the fc_cap test below,
 * tests/test_cross_instructions.py; xpair 1 1 200 86.8 -> 78.7 M and
 * larson 4 20 393.6 -> 381.5 M under callgrind). The owner read before
 * may be stale only by this thread's own doing (no other thread makes a
 * span this thread's): a signal handler's allocation between the two
 * that adopted the span's abandoned heap (heap_get). Its block then goes
 * into this thread's cache as another heap's would: tagged, handed out
 * by fc_pop or listed by fc_flush and drained by its owner, this thread. */
static int free_slow(kp_pool *pool, void *p, struct ol_span *pg, uint32_t idx, uint32_t st, int why);
/* kp__ol_free_other's refusals (try_only: KP_OL_UNTRIED, else reported),
 * the caller's mark undone (outline.h, kp__ol_enter). */
static __attribute__((noinline, cold)) int other_refused(uint64_t key, void *p, struct ol_span *pg, uint32_t idx,
							 uint32_t st, int why)
{
	int rc = key & 1 ? KP_OL_UNTRIED : kp__ol_free_slow(key_pool(key), p, pg, idx, st, why);
	kp__ol_unmark();
	return rc;
}

/* kp__ol_free_other's canary found not the record's: a checks-off span
 * (none to test: its free goes on, its bytes not spoiled), else the
 * block's free refused (spoiled by another thread's free of it that took
 * the record after the state's load, canary_spoil: a double free; else an
 * overflow). Out of line, a tail call: a checks-off pool's cross-thread
 * frees of blocks the cache handed out (no canary written) come here. */
static __attribute__((noinline, cold)) int other_mismatch(uint64_t key, void *p, struct ol_span *pg, uint32_t idx,
							  uint32_t st)
{
	struct ol_rec *r = &pg->rec[idx];
	if (!pg->csz)
		return KP_OL_RETIRED_OWN ? free_remote(key, pg, idx, r, st, p, KP_OL_CANARY_OFF, true)
					 : free_other_checked(key_pool(key), pg, idx, r, st, p);
	uint32_t now = __atomic_load_n(&r->state, __ATOMIC_RELAXED);
	return other_refused(key, p, pg, idx, st, kp__ol_dead(now) ? KP_OL_DFREE : KP_OL_OVERFLOW);
}

__attribute__((noinline)) int kp__ol_free_other(uint64_t key, struct ol_span *pg, uint64_t idx, void *p)
{
	/* key: the pool's address | try_only (outline.h), passed on as it
	 * is: only the slow and refused cases read either (key_pool), so the
	 * common path keeps one register for both (s39: pool and try_only in
	 * two, gcc saved rbx on entry and restored it on the way out, 2
	 * instructions a call) */
	struct ol_rec *r = &pg->rec[idx];
	__asm__ volatile("prefetchw %0"
			 :
			 : "m"(*(const char *)r)); /* gcc's builtin makes prefetcht0 without -mprfchw */
	/* and the block's last line, where its canary is (a request of a
	 * class up to 1 KiB ends in its last 16 bytes, with the canary's 8 past
	 * it; of a larger class, in its last eighth): read below, spoiled after
	 * the swap. By the class, as the request is not known until the
	 * record's load, whose miss (another thread wrote the record last) this
	 * one then overlaps, where the canary's load waited for it: xpair's
	 * pair apart 23.5-24.9 -> 23.3-23.4 ns alone (allocator/bench/programs) */
	__asm__ volatile("prefetchw %0" : : "m"(*((const char *)p + pg->bsize - 1)));
	uint32_t st = __atomic_load_n(&r->state, __ATOMIC_RELAXED);
	if (KP_UNLIKELY(kp__ol_dead(st))) /* free, or another thread's free took it */
		return other_refused(key, p, pg, idx, st, KP_OL_DFREE);
	if (!KP_OL_RETIRED_OWN)
		return pg->csz && kp__ol_canary_bad(r, p, st) ? other_mismatch(key, p, pg, idx, st)
							      : free_other_checked(key_pool(key), pg, idx, r, st, p);
	/* The canary tested before the span's canary size, which only its
	 * mismatch reads (other_mismatch): 8 bytes at p + st - 1 are the
	 * block's in either mode (the class has room for them, and a request
	 * grows in place to bsize - 8 at most with checks off: outline.h,
	 * kp__ol_slot_id), and with checks off the record's canary is 0,
	 * which the fast pop writes there too. So a block of a checks-on
	 * span whose canary is intact is freed as before, with 2
	 * instructions fewer (s39: the size's load and branch); one of a
	 * checks-off span whose 8 bytes happen to match (zeros) is freed
	 * with its bytes spoiled, which are the freed block's own. */
	if (KP_UNLIKELY(kp__ol_canary_bad(r, p, st)))
		return other_mismatch(key, p, pg, idx, st);
	return free_remote(key, pg, idx, r, st, p, KP_OL_CANARY_ON, true);
}

/* What kp__ol_free_fast did not free, by why (outline.h). */
static int free_slow(kp_pool *pool, void *p, struct ol_span *pg, uint32_t idx, uint32_t st, int why)
{
	switch (why) {
	case KP_OL_MISS: /* huge, large, backup, NULL, or no block at all: alloc.c's path decides */
		return kp__free_classic(pool, p);
	case KP_OL_DFREE:
#if KP_PLANT == 2 /* planted 2: no double-free check (the owner's free block pushed again) */
		if (idx < pg->nblocks && (atomic_load_explicit(&pg->owner, memory_order_relaxed) &
					  ~(uintptr_t)OL_OWN_FULL) == kp__ol_self()) {
			uint16_t *top = kp__ol_sp(pg) + 1;
			*top = (uint16_t)idx;
			kp__ol_sp_set(pg, top);
			return 0;
		}
#endif
		/* a block its span never made (span_extend) was never handed out:
		 * an invalid free, as on the inline path; one made but not yet
		 * handed out reads as a freed one (its record is the same) */
		if (idx < __atomic_load_n(&pg->fresh, __ATOMIC_RELAXED))
			return kp__violation(pool, KP_EV_DOUBLE_FREE, KP_EDOUBLEFREE, p, pg->bsize - pg->csz,
					     "double free");
		break; /* never made, or the span's tail: never a block */
	case KP_OL_OVERFLOW: {
		/* the block stays out of its span's stack: never handed out again.
		 * Its record quarantined (OL_QUAR), as poison_alloc's block written
		 * after its free: kp_usable_size answers 0 and a free of the stale
		 * pointer (the old block of a kp_realloc that moved) is a double
		 * free. Before, the record stayed live: kp_usable_size gave its
		 * size (test_realloc_checks). Only from the live state st the
		 * caller read: a racing free that took the record keeps it. */
		uint32_t live = st; /* not st: a failed exchange writes the state it found there */
		__atomic_compare_exchange_n(&pg->rec[idx].state, &live, OL_QUAR, false, __ATOMIC_RELAXED,
					    __ATOMIC_RELAXED);
		atomic_fetch_add(&pool->quarantined, 1);
		return kp__violation(pool, KP_EV_OVERFLOW, KP_EOVERFLOW, p, st - 1, "overflow, quarantined");
	}
	default: break;
	}
	return kp__violation(pool, KP_EV_INVALID_FREE, KP_ENOTOURS, p, KP_SIZE_UNKNOWN,
			     "free of a pointer never given out");
}

/* alloc.c's blocks a handler freed while its thread was inside
 * free_classic_marked, its pool's: freed by the thread as that ends.
 * Linked through their first 8 bytes (a freed block's own). */
static __thread void *_Atomic ol_deferred __attribute__((tls_model("initial-exec")));

/* kp_free of alloc.c's block (the slice map does not know it) inside a
 * call the slot marks (outline.h, kp__ol_enter): marked KP_OL_MARK_CLASSIC
 * meanwhile, so that a handler's call takes this path's heap
 * (kp__ol_alloc) and defers its own frees of this pool's alloc.c blocks
 * (free_nested), where it would change alloc.c's thread cache under this
 * free: the inline layout's caches are no handler's (s33-sig: with every
 * handler's allocation inside a marked call on alloc.c's path,
 * test_outline_signal_dup_attack32 left 16-64 bytes in use in 2-3 runs of
 * 10, the inline caches' counts). Then the deferred ones, and unmarked. */
static __attribute__((noinline)) int free_classic_marked(kp_pool *pool, void *p)
{
	int e = errno;
	kp__ol_slot.id = (uint64_t)(uintptr_t)pool | KP_OL_MARK_CLASSIC;
	atomic_signal_fence(memory_order_seq_cst);
	int rc = kp__free_classic(pool, p);
	for (;;) {
		void *q = atomic_load_explicit(&ol_deferred, memory_order_relaxed);
		while (q) { /* a handler pushes only: no other pop, no ABA */
			if (!atomic_compare_exchange_weak_explicit(&ol_deferred, &q, *(void **)q, memory_order_relaxed,
								   memory_order_relaxed))
				continue;
			kp__classic_defer_undo(pool, q);
			kp__free_classic(pool, q);
			q = atomic_load_explicit(&ol_deferred, memory_order_relaxed);
		}
		kp__ol_unmark();
		/* one a handler deferred after the last look and before the
		 * unmark (later ones are freed by their handlers): again */
		if (!atomic_load_explicit(&ol_deferred, memory_order_relaxed))
			break;
		kp__ol_slot.id = (uint64_t)(uintptr_t)pool | KP_OL_MARK_CLASSIC;
		atomic_signal_fence(memory_order_seq_cst);
	}
	errno = e;
	return rc;
}

/* errno as it was: free() (the preload) calls it too. */
__attribute__((noinline)) int kp__ol_free_slow(kp_pool *pool, void *p, struct ol_span *pg, uint32_t idx, uint32_t st,
					       int why)
{
	if (why == KP_OL_MISS)
		return free_classic_marked(pool, p);
	int e = errno;
	int rc = free_slow(pool, p, pg, idx, st, why);
	errno = e;
	return rc;
}

bool kp__ol_knows(kp_pool *pool, const void *p)
{
	uintptr_t a = (uintptr_t)p;
	return (a >> OL_SLICE_SHIFT) < OL_MAP_N &&
	       __atomic_load_n(&pool->ol->map[a >> OL_SLICE_SHIFT], __ATOMIC_RELAXED) != 0;
}

/* kp_free from alloc.c's slow path, for a pointer the pool's slice map
 * knows (kp__ol_knows), on a thread whose slot may name another pool: the
 * slot names this one from now (with its heap, or the empty one until the
 * thread allocates), and kp__ol_free_fast frees. */
static int poison_free(kp_pool *pool, void *p)
{
	int e = errno;
	uint32_t idx;
	bool ours;
	poison_mark(pool); /* poison_alloc's comment */
	struct ol_span *pg = block_of(pool->ol->map, p, &idx, &ours);
	int rc;
	if (!pg) /* alloc.c's block by free_classic_marked, as the fast free's */
		rc = kp__ol_free_slow(pool, p, NULL, 0, 0, ours ? KP_OL_BAD : KP_OL_MISS);
	else {
		struct ol_rec *r = &pg->rec[idx];
		uint32_t st = r->state;
		uint64_t c = 0;
		if (!kp__ol_dead(st) && pg->csz)
			memcpy(&c, (uint8_t *)p + st - 1, 8);
		if (kp__ol_dead(st))
			rc = free_slow(pool, p, pg, idx, st, KP_OL_DFREE);
		else if (pg->csz && c != kp__ol_canary(r))
			rc = free_slow(pool, p, pg, idx, st, KP_OL_OVERFLOW);
		else {
			memset(p, KP_POISON_BYTE, pg->bsize);
			if (atomic_load_explicit(&pg->owner, memory_order_relaxed) != kp__ol_self())
				rc = free_other_checked(pool, pg, idx, r, st, p);
			else {
				__atomic_store_n(&r->state, OL_FREE, __ATOMIC_RELAXED);
				uint16_t *top = kp__ol_sp(pg) + 1;
				*top = (uint16_t)idx;
				kp__ol_sp_push(pg, top);
				rc = 0;
			}
		}
	}
	kp__ol_unmark(); /* again after free_other_checked's or free_classic_marked's: the same store */
	errno = e;
	return rc;
}

/* kp_free of a call nested inside another of this thread's (a signal
 * handler's: the slot marked, outline.h's kp__ol_enter), which may be
 * inside a push or pop of the same span: the block, checked as kp_free
 * checks it, goes onto its span's cross-thread list as another thread's
 * free would (free_remote_slow's case with no heap), by compare-and-swap
 * of its record (a double free raced by the interrupted thread: one wins),
 * and the owner's drain takes it in (drain_class: this thread, in a slow
 * path of its own). Its stacks, tables and foreign cache are not touched.
 * A pointer the slice map does not know goes to alloc.c's path, unless
 * the thread holds ol->lock (kp__alloc_classic's refusal). */
static int free_nested_body(kp_pool *pool, void *p);
static __attribute__((noinline, cold)) int free_nested(kp_pool *pool, void *p)
{
	/* past the exit hook: counted for the daemon's unmap (ol_exited_enter) */
	bool exited = ol_exited;
	uint32_t e = exited ? ol_exited_enter() : 0;
	int rc = free_nested_body(pool, p);
	if (exited)
		ol_exited_leave(e);
	return rc;
}
static int free_nested_body(kp_pool *pool, void *p)
{
	if (KP_UNLIKELY(pool->conf.poison) && !kp__ol_marked())
		return poison_free(pool, p); /* past the exit hook (kp__ol_free), as before */
	int e = errno;
	uint32_t idx;
	bool ours;
	struct ol_span *pg = block_of(pool->ol->map, p, &idx, &ours);
	int rc;
	if (!pg) {
		if (!ours && p && kp__ol_slot.id == ((uint64_t)(uintptr_t)pool | KP_OL_MARK_CLASSIC)) {
			/* inside free_classic_marked: after it, a live block of
			 * pool's only (kp__classic_defer_vet; one deferred
			 * already is a double free), as nothing is written */
			for (void *q = atomic_load_explicit(&ol_deferred, memory_order_relaxed); q; q = *(void **)q)
				if (q == p) {
					rc = kp__violation(pool, KP_EV_DOUBLE_FREE, KP_EDOUBLEFREE, p, KP_SIZE_UNKNOWN,
							   "double free");
					errno = e;
					return rc;
				}
			rc = kp__classic_defer_vet(pool, p);
			if (rc) {
				errno = e;
				return rc;
			}
			void *old = atomic_load_explicit(&ol_deferred, memory_order_relaxed);
			do
				*(void **)p = old;
			while (!atomic_compare_exchange_weak_explicit(&ol_deferred, &old, p, memory_order_relaxed,
								      memory_order_relaxed));
			errno = e;
			return 0;
		}
		/* alloc.c's path tries its locks (kp__alloc_classic's case) */
		kp__oscount *was = NULL;
		bool held = !ours && p && kp__mutex_mine(&pool->ol->lock);
		if (KP_UNLIKELY(held))
			was = kp__mutex_nowait(&pool->os);
		rc = free_slow(pool, p, NULL, 0, 0, ours ? KP_OL_BAD : KP_OL_MISS);
		if (KP_UNLIKELY(held))
			kp__mutex_nowait(was);
	} else {
		struct ol_rec *r = &pg->rec[idx];
		uint32_t st = __atomic_load_n(&r->state, __ATOMIC_RELAXED), live = st;
		uint64_t c = 0;
		if (!kp__ol_dead(st) && pg->csz)
			memcpy(&c, (uint8_t *)p + st - 1, 8);
		if (kp__ol_dead(st))
			rc = free_slow(pool, p, pg, idx, st, KP_OL_DFREE);
		else if (pg->csz && c != kp__ol_canary(r))
			rc = free_slow(pool, p, pg, idx, st, KP_OL_OVERFLOW);
		else if (!__atomic_compare_exchange_n(&r->state, &live, OL_LISTED, false, __ATOMIC_ACQ_REL,
						      __ATOMIC_RELAXED))
			rc = free_slow(pool, p, pg, idx, live, KP_OL_DFREE); /* taken meanwhile */
		else {
			if (pool->conf.poison) /* as poison_free: its next allocation checks the fill */
				memset(p, KP_POISON_BYTE, pg->bsize);
			else if (pg->csz)
				canary_spoil(p, st);
			list_fence();
			if (!listed_already(pool, pg, idx))
				remote_push(pg, idx + 1, idx, 1);
			rc = 0;
		}
	}
	errno = e;
	return rc;
}

int kp__ol_free_nested(kp_pool *pool, void *p)
{
	return free_nested(pool, p);
}

int kp__ol_free(kp_pool *pool, void *p)
{
	/* a call nested inside another (outline.h, kp__ol_enter); or past the
	 * exit hook, whose heap_abandon pushes onto the heap's stacks (a
	 * signal's handler then): onto the block's list, never its stack */
	if (KP_UNLIKELY(kp__ol_marked() || ol_exited))
		return free_nested(pool, p);
	if (KP_UNLIKELY(pool->conf.poison))
		return poison_free(pool, p);
	if (kp__ol_slot.aid != kp__ol_slot_id(pool)) {
		slot_name(pool, &kp__ol_empty_heap);
		ol_reader_note(); /* a stale free's grace (kp__ol_daemon_pass) */
	}
	uint64_t id = kp__ol_slot_id(pool);
	if (!kp__ol_enter(id)) /* not marked, and names pool: never */
		return free_nested(pool, p);
	return kp__ol_free_fast(p, false, id);
}

/* ---- the rest of the block API -------------------------------------------- */

/* A live block's record, or NULL (*ours: whether the slice map knew p). */
static struct ol_rec *live_rec(kp__ol *ol, const void *p, bool *ours, struct ol_span **pgp)
{
	uint32_t idx;
	struct ol_span *pg = block_of(ol->map, p, &idx, ours);
	if (!pg || kp__ol_dead(__atomic_load_n(&pg->rec[idx].state, __ATOMIC_RELAXED)))
		return NULL; /* free, quarantined, or in another thread's cache or on a list */
	*pgp = pg;
	return &pg->rec[idx];
}

size_t kp__ol_usable(kp_pool *pool, const void *p)
{
	bool ours;
	struct ol_span *pg;
	struct ol_rec *r = live_rec(pool->ol, p, &ours, &pg);
	if (!ours)
		return kp__usable_classic(pool, p);
	if (!r)
		return 0;
	/* with checks on the request (the canary follows it), as inline */
	return pg->csz ? r->state - 1 : pg->bsize;
}

/* In place when the block still fits its class (at most its room, at least
 * half of it), the canary checked first, then moved; else a new block, the
 * contents copied, and kp_free's checks on the old one (an overflow found
 * so is reported, the new block returned: the inline path's rule). */
void *kp__ol_realloc(kp_pool *pool, void *p, size_t size, unsigned flags)
{
	if (!p)
		return kp_alloc(pool, size, flags);
	bool ours;
	struct ol_span *pg = NULL;
	struct ol_rec *r = live_rec(pool->ol, p, &ours, &pg);
	if (!ours)
		return kp__realloc_classic(pool, p, size, flags);
	if (size == 0) {
		kp_free(pool, p);
		return NULL;
	}
	if (!r) {
		kp_free(pool, p); /* records why: a double free or a pointer inside a block */
		errno = EINVAL;
		return NULL;
	}
	/* with checks off the whole block is usable (kp__ol_usable), and a
	 * moving realloc keeps min(old usable, size) (kpool.h): all of it */
	size_t old = pg->csz ? r->state - 1 : pg->bsize, room = pg->bsize - pg->csz;
	bool intact = true;
	if (pg->csz) {
		uint64_t c;
		memcpy(&c, (uint8_t *)p + old, 8);
		intact = c == kp__ol_canary(r);
	}
	/* planted 5: in place 8 bytes past the room (the canary does not fit) */
	if (intact && size <= room + (KP_PLANT == 5) * pg->csz && size >= room / 2 && !(flags & KP_CRITICAL)) {
		if ((flags & KP_ZERO) && size > old)
			memset((uint8_t *)p + old, 0, size - old);
		/* Checks off: the request recorded is at most the room a canary
		 * would leave (bsize - OL_CANARY), whatever the whole block's
		 * usable size, so that the fast free's 8-byte test at p + st - 1
		 * (outline.h, kp__ol_free_own: checks off takes checks on's path
		 * since s33-sig) reads inside the block; it fails there (the
		 * caller's bytes) and the full test, which tests no canary with
		 * checks off, frees it. Recorded as grown, the test read the next
		 * block's first 8 bytes, or past the segment's end: a SIGSEGV
		 * (test_outline_checks_off_overread_attack33). */
		r->state = (uint32_t)(pg->csz || size <= room - OL_CANARY ? size : room - OL_CANARY) + 1;
		if (pg->csz) {
			uint64_t c = kp__ol_canary(r);
			memcpy((uint8_t *)p + size, &c, 8);
		}
		return p;
	}
	return kp__realloc_move(pool, p, size, old, flags);
}

/* The usable bytes of the live blocks of every span (kp_stats): what no
 * stack holds and no cross-thread list waits to give back. Any thread;
 * takes the pool's outline lock; a figure of a moment, as the counts it
 * reads move. */
uint64_t kp__ol_in_use(kp_pool *pool)
{
	kp__ol *ol = pool->ol;
	if (!ol)
		return 0;
	uint64_t bytes = 0;
	pthread_mutex_lock(&ol->lock);
	for (struct ol_seg *s = ol->segs; s; s = s->next) {
		uint32_t used = __atomic_load_n(&s->used, __ATOMIC_ACQUIRE);
		bytes += seg_live_bytes(s, used);
	}
	uint64_t cached = 0; /* blocks freed into foreign caches: out of their spans' stacks, not live */
	for (struct ol_heap *h = ol->heaps; h; h = h->next)
		for (uint32_t c = 0; c < OL_NCLASS; c++)
			cached += (uint64_t)__atomic_load_n(&h->fc_n[c], __ATOMIC_RELAXED) * (class_size[c] - h->csz);
	pthread_mutex_unlock(&ol->lock);
	return bytes > cached ? bytes - cached : 0;
}

/* kp_stats' allocations and frees of this path: the heaps' counts, and the
 * frees as those less the live blocks (no count on kp_free's paths). Read
 * in that order, so that the frees err low while threads go on. */
void kp__ol_counts(kp_pool *pool, uint64_t *allocs, uint64_t *frees)
{
	kp__ol *ol = pool->ol;
	if (!ol)
		return;
	uint64_t a = 0, live = 0;
	pthread_mutex_lock(&ol->lock);
	uint64_t cached = 0; /* in foreign caches: freed */
	for (struct ol_heap *h = ol->heaps; h; h = h->next) {
		a += atomic_load_explicit(&h->allocs, memory_order_relaxed);
		for (uint32_t c = 0; c < OL_NCLASS; c++)
			cached += __atomic_load_n(&h->fc_n[c], __ATOMIC_RELAXED);
	}
	for (struct ol_seg *s = ol->segs; s; s = s->next) {
		uint32_t used = __atomic_load_n(&s->used, __ATOMIC_ACQUIRE);
		for (uint32_t i = 0; i < used; i++) {
			struct ol_span *pg = &s->spans[i];
			if (!pg->start)
				continue;
			int64_t l = (int64_t)__atomic_load_n(&pg->fresh, __ATOMIC_RELAXED) -
				    (kp__ol_sp(pg) - pg->stack0) -
				    atomic_load_explicit(&pg->nremote, memory_order_relaxed);
			live += l > 0 ? (uint64_t)l : 0;
		}
	}
	pthread_mutex_unlock(&ol->lock);
	live = live > cached ? live - cached : 0;
	*allocs += a;
	*frees += a > live ? a - live : 0;
}

/* The pool's data segments and their slices given to spans (kp_stats): the
 * outline lock, a figure of a moment. */
void kp__ol_space(kp_pool *pool, size_t *capacity, size_t *segments, size_t *committed)
{
	kp__ol *ol = pool->ol;
	if (!ol)
		return;
	size_t n = 0, slices = 0;
	pthread_mutex_lock(&ol->lock);
	for (struct ol_seg *s = ol->segs; s; s = s->next) {
		n++;
		slices += __atomic_load_n(&s->used, __ATOMIC_ACQUIRE);
	}
	pthread_mutex_unlock(&ol->lock);
	*capacity += n * OL_SEG_SIZE;
	*segments += n;
	*committed += slices * OL_SLICE_SIZE;
}

/* Tests: the metadata mapping of p's segment, or NULL. */
void *kp__ol_meta_of(kp_pool *pool, const void *p)
{
	kp__ol *ol = pool->ol;
	if (!ol)
		return NULL;
	void *found = NULL;
	pthread_mutex_lock(&ol->lock);
	for (struct ol_seg *s = ol->segs; s; s = s->next)
		if ((const uint8_t *)p >= s->base && (const uint8_t *)p < s->base + OL_SEG_SIZE)
			found = s;
	pthread_mutex_unlock(&ol->lock);
	return found;
}
