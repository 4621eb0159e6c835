/*
 * test_outline_signal_poison_attack33.c - test_outline_signal_calls_attack33
 * on a poison:on pool (layout:outline,daemon:off,poison:on): a signal
 * handler's kp_realloc, kp_alloc_aligned and KP_ZERO allocations while its
 * thread allocates and frees 48-byte blocks.
 * s33-sig's mark (outline.h, kp__ol_enter) is the outline slot's id, and a
 * poison:on pool is never in that slot (outline.c, heap_get: kp__ol_pslot):
 * its calls (poison_alloc, poison_free) marked nothing, so a handler's call
 * inside one took the same heap's stacks as the interrupted call, as all
 * pools did before s33 (test_outline_signal_dup_attack32).
 * Measured on s33 atta 9d49de7 (release): 4 rounds of 4 failed, 2,906-7,534
 * double frees reported that no one made (a realloc'd block then refused:
 * as many NULLs), 56-168 bytes left in use; 1949951 (s33-sig merged) 4 of
 * 4 alike (3,390-5,474 double frees); main 6e9c7bd 3 of 4 (0-6,901, 56-112
 * bytes); s34-sig fe29727 3 runs of 3 failed (3-4 of its 12 checks, up to
 * 7,997 double frees, 56 bytes in use). Fixed (s34-sig): poison:on's calls
 * mark the slot for their length (outline.c, poison_mark), so a handler's
 * call inside one takes the nested ways: 3 runs of 3 pass.
 * Run alone:
 *   make -C allocator VARIANT=release build/release/tests/test_outline_signal_poison_attack33 &&
 *   allocator/build/release/tests/test_outline_signal_poison_attack33
 */
#define SIGCALLS_CONF "layout:outline,daemon:off,poison:on"
#include "test_outline_signal_calls_attack33.c"
