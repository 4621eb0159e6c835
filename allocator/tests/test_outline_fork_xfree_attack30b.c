/*
 * test_outline_fork_xfree_attack30b.c - s30-att2: a child of fork()
 * reported double frees that no one made (KNOWN_FAILING until s30-lead2's
 * kp__ol_fork phase 2: fc_fork_child and the spans' nremote recounted).
 *
 * test_outline_xdfree_attack30b.c's run, every free valid (each block freed
 * once, by the next thread: no bad free at all), while a thread forks every
 * millisecond or so. Each child starts NT threads; they get the parent's
 * dead threads' stacks, so their thread pointers, so their heaps
 * (outline.c, kp__ol_fork and heap_get), and allocate and free. Asserted:
 * no double_free, invalid_free or overflow event in a child (it makes no
 * bad free, nor did its parent).
 *
 * Fails: 1-5 children in 65-98 forks a run report double_free 1-11
 * events (release, 7 runs of 7; ASan, 4 generations, 11 forks: 0). Before its threads start, each failing
 * child's heaps hold foreign-cache entries whose record is not their
 * heap's tag, exactly as many as the events (stale_entries: 11 and 11, 1
 * and 1, ...): a parent thread forked inside fc_flush, after its claims
 * (records from its tag to OL_LISTED, pushed or about to be) and before
 * its store of fc_n; the child's thread that adopts the heap pops (or
 * flushes) those entries, finds OL_LISTED (or the state the walk made it
 * since), not its tag, and reports raced_dfree, a double free, for each.
 * Read from the code, not traced further: kp__ol_fork holds the outline
 * lock and every heap's avail lock, neither of which fc_flush or
 * free_remote takes. The blocks of the chains not yet pushed (fc_flush's
 * g[], on the dead thread's stack) are also lost to the child: OL_LISTED,
 * on no list, nremote counting some (remote_push's add before its
 * compare-and-swap): never handed out again, their spans never wholly
 * free. Seen too: a child, quiescent after its threads' work, whose span
 * of 32 blocks of 64 KiB listed 13 blocks with nremote 14 (lists_bad:
 * exit status 4 when no event came first; 1 child in 90). Not run under TSan (its die_after_fork: a child of a threaded
 * parent may start no thread).
 *
 * Reproduce: make -C allocator VARIANT=release
 * build/release/tests/test_outline_fork_xfree_attack30b &&
 * allocator/build/release/tests/test_outline_fork_xfree_attack30b
 */
#define XD_FORK 1
#include "test_outline_xdfree_attack30b.c"
