/*
 * test_outline_signal_poison_attack33.c - test_outline_signal_calls_attack33
 * on a poison:on pool (layout:outline,daemon:off,poison:on): a signal
 * handler's kp_realloc, kp_alloc_aligned and KP_ZERO allocations while its
 * thread allocates and frees 48-byte blocks. FAILS (KNOWN_FAILING).
 * s33-sig's mark (outline.h, kp__ol_enter) is the outline slot's id, and a
 * poison:on pool is never in that slot (outline.c, heap_get: kp__ol_pslot):
 * its calls (poison_alloc, poison_free) mark nothing, so a handler's call
 * inside one takes the same heap's stacks as the interrupted call, as all
 * pools did before s33 (test_outline_signal_dup_attack32).
 * Measured on s33 atta 9d49de7 (release): 4 rounds of 4 failed, 2,906-7,534
 * double frees reported that no one made (a realloc'd block then refused:
 * as many NULLs), 56-168 bytes left in use; 1949951 (s33-sig merged) 4 of
 * 4 alike (3,390-5,474 double frees); main 6e9c7bd 3 of 4 (0-6,901, 56-112
 * bytes). Not fixed: the poison path needs a mark of its own (its slot,
 * kp__ol_pslot, or ol_st's busy section around poison_alloc/poison_free),
 * and nested calls sent to alloc.c's path there.
 * Reproduce:
 *   make -C allocator VARIANT=release build/release/tests/test_outline_signal_poison_attack33 &&
 *   allocator/build/release/tests/test_outline_signal_poison_attack33
 */
#define SIGCALLS_CONF "layout:outline,daemon:off,poison:on"
#include "test_outline_signal_calls_attack33.c"
