/*
 * kpfuzz.h - the fuzz entry points of libkpool (fuzz and coverage builds).
 *
 * Each function decodes one fuzz input into operations on libkpool in C, so
 * that a fuzz target makes one ctypes call per input (decoding in Python
 * costs ~12x the executions per second). Each checks what it did against a
 * shadow model and calls abort() on the first violation, after printing what
 * was violated and the last operations to stderr: libFuzzer then keeps the
 * input as a crash. Memory errors are left to ASan/UBSan.
 *
 * The first input byte of api_sequence, faults and concurrent picks one of
 * the target's pools, the layout:outline ones (outline.c) among them;
 * $KPOOL_FUZZ_LAYOUT=outline (or inline) narrows the pick to that layout's
 * pools, and a violation on an outline pool is reported as
 * "VIOLATION outline-<kind>" (triage files it apart from the inline path's).
 *
 * Not part of the public contract (kpool.h): these are built only into the
 * fuzz and coverage variants. Every function returns 0; none is thread-safe
 * with itself (libFuzzer runs one input at a time).
 */
#ifndef KPFUZZ_H
#define KPFUZZ_H

#include <stddef.h>
#include <stdint.h>

/* Operation sequences over a small handle table: alloc, aligned alloc,
 * realloc, free, critical enter/exit, usable size, stats, flush, daemon
 * step. Checks: no overlap, alignment, usable >= request, contents kept
 * (across realloc too), zeroing, the backup refused outside a scope, stats
 * balanced, no integrity event. */
int kp_fuzz_api_sequence(const uint8_t *data, size_t len);

/* The option-string parser (and, for cheap valid confs, kp_create) and the
 * fault-spec parser. Checks: a refusal names itself in kp_last_error; an
 * accepted conf keeps the documented relations between options. */
int kp_fuzz_conf(const uint8_t *data, size_t len);

/* Operation sequences under injected OS failures, injected corruption and
 * misuse (double free, interior and foreign pointers, overflow, write after
 * free). Checks containment: no crash, live blocks intact, misuse refused
 * with the right code. */
int kp_fuzz_faults(const uint8_t *data, size_t len);

/* Two threads, each driven by its half of the input, on one pool with the
 * daemon running, handing blocks to each other (cross-thread frees). */
int kp_fuzz_concurrent(const uint8_t *data, size_t len);

/* This library's coverage counters (clang's inline 8-bit counters) and its
 * PC table (one (pc, flags) pair per counter; flags bit 0 marks a function's
 * entry). Returns the number of counters, 0 in a build without them. In the
 * coverage build the driver is not instrumented, so every counter is an edge
 * of libkpool: kpool fuzz --coverage replays every target's corpus and reads
 * them, for the union across targets and the functions none reaches. */
size_t kp_fuzz_counters(uint8_t **counters, const uintptr_t **pcs);

#endif /* KPFUZZ_H */
