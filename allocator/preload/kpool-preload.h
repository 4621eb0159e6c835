/*
 * kpool-preload.h - what libkpool-preload.so exports besides the C
 * allocation API (malloc, free, ...): a program's critical scope, and the
 * pool's figures.
 *
 * A preloaded program is an unprivileged caller: its allocations never reach
 * the backup pool (when the primary is exhausted, malloc returns NULL with
 * errno ENOMEM). A thread that opens a critical scope may be served by the
 * backup until it closes the scope, so that a program can save its state
 * when memory runs out (example_critical.c).
 *
 * A program that must also run without the preload declares these weak and
 * checks them for NULL before the call (example_critical.c does); one that
 * always runs on kpool links with -lkpool-preload.
 */
#ifndef KPOOL_PRELOAD_H
#define KPOOL_PRELOAD_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/*
 * kp_preload_critical_enter - open a critical scope on the calling thread:
 * until the matching exit, the thread's allocations (malloc and the rest)
 * may be served by the backup pool when the primary cannot serve them.
 * Scopes nest; each enter needs an exit; a scope belongs to its thread alone
 * and ends with it. 0, or -1 when the scope was refused (the pool could not
 * be made, or the thread holds scopes on too many pools; an event says why).
 * Takes no lock on the common path; never allocates.
 */
int kp_preload_critical_enter(void);

/* Close the innermost critical scope of the calling thread; without one, a
 * no-op that records an event. */
void kp_preload_critical_exit(void);

/*
 * kp_preload_stats_json - the pool's stats as one JSON object (the shape of
 * kp_stats_json in kpool.h). snprintf-style: returns the length the full
 * object needs (excluding the NUL), writes at most len bytes, NUL-terminated
 * when len > 0; negative when the pool could not be made. May allocate.
 */
int kp_preload_stats_json(char *buf, size_t len);

#ifdef __cplusplus
}
#endif
#endif /* KPOOL_PRELOAD_H */
