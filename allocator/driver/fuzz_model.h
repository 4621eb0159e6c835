/*
 * fuzz_model.h - the machinery shared by the fuzz entry points (kpfuzz.h):
 * an input reader, the fuzz pools, a handle table with its shadow model,
 * and the operation interpreter. Internal to allocator/driver/fuzz_*.c.
 */
#ifndef KP_FUZZ_MODEL_H
#define KP_FUZZ_MODEL_H

#include "internal.h"
#include "kpfuzz.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- the input: bytes read front to back; 0 once exhausted ------------- */
typedef struct fz_in {
	const uint8_t *p;
	size_t n;
} fz_in;
uint8_t fz_u8(fz_in *r);
uint16_t fz_u16(fz_in *r);

/* ---- failures ------------------------------------------------------------ */
/* Print the violation and the last operations, then abort(): libFuzzer keeps
 * the input. `kind` names what the oracle saw (misaligned, usable-short,
 * overlap, content-damaged, content-lost, not-zeroed, refused, wrong-error,
 * stats-mismatch, integrity-<event>, ...; a word of [a-z_-]) and `api` the
 * libkpool call it applies to (kp_alloc, kp_realloc, ...): triage signs a
 * crash with both, so one bug reached by two paths of the interpreter has one
 * signature, and two bugs the same abort path reaches have two. */
__attribute__((noreturn, format(printf, 5, 6))) void fz_fail(const char *kind, const char *api, const char *file,
							     int line, const char *fmt, ...);
#define FZ_FAIL(kind, api, ...) fz_fail((kind), (api), __FILE__, __LINE__, __VA_ARGS__)

/* ---- pools ---------------------------------------------------------------- */
/* One fuzz pool: made on first use and kept (kp_create maps and starts
 * threads; once per input would cap a target at a few thousand executions
 * per second). Each input frees what it allocated, so pools start every
 * input empty. */
typedef struct fz_pool {
	const char *conf;
	bool log; /* log every event to /dev/null (log_fd): the formatter and the rate limit run */
	kp_pool *pool;
	uint64_t token;
	bool checks, poison, daemon;
	bool outline; /* layout:outline (outline.c): its verdicts read "outline-<kind>", its stats are not kept */
	/* every address the pool handed out (fuzz_model.c, seen_add): a
	 * KP_ZERO block never handed out before that reads non-zero is a
	 * write past another block, not a zeroing bug ("fresh-written") */
	uintptr_t *seen;
	size_t nseen;
	bool seen_full;
} fz_pool;
/* The pool, made (or remade) as needed; abort()s if kp_create refuses a conf
 * that is known good. */
kp_pool *fz_pool_get(fz_pool *fp);
/* Destroy and forget (the next fz_pool_get makes a new one). */
void fz_pool_reset(fz_pool *fp);

/* ---- the handle table and its shadow model -------------------------------- */
#define FZ_SLOTS 16
/* Contents are written and verified over the first FZ_HEAD and the last
 * FZ_TAIL bytes of a block: a full fill of a 4 MiB block per operation would
 * cost more than everything else in an input. */
#define FZ_HEAD 512
#define FZ_TAIL 64

typedef struct fz_slot {
	char *p;
	size_t req;    /* bytes asked for (and filled) */
	size_t usable; /* kp_usable_size when it was made: the caller may use all of it */
	size_t align;  /* alignment asked for (16 for kp_alloc) */
	uint8_t tag;   /* the fill byte */
	bool live, backup;
} fz_slot;

/* What an interpreter may do, beyond the plain API. */
enum {
	FZ_MISUSE = 1,	/* double free, interior/foreign free, overflow, write after free */
	FZ_FAULTS = 2,	/* OS fault injection and corrupt@ damage */
	FZ_STRICT = 4,	/* no integrity event and no quarantine may happen; stats balance */
	FZ_HANDOFF = 8, /* blocks may move between two interpreters (threads) */
};

typedef struct fz_ctx {
	fz_pool *fp;
	kp_pool *pool;
	unsigned mode;
	fz_slot slot[FZ_SLOTS];
	int depth; /* open critical scopes */
	uint8_t next_tag;
	/* The block freed by the previous operation (misuse targets), or NULL. */
	char *last_freed;
	size_t last_freed_req;
	bool last_freed_backup;
	bool last_freed_aligned; /* a redirect header may be overwritten by the link */
	bool damaged;		 /* corruption injected: the pool is remade after the input */
	bool stats_seen;	 /* a stats operation ran: check the balance at the end */
	/* FZ_HANDOFF: a one-block mailbox shared with the other interpreter;
	 * a record (malloc'd) moves through it by atomic exchange. */
	_Atomic(fz_slot *) *mailbox;
} fz_ctx;

void fz_ctx_init(fz_ctx *c, fz_pool *fp, unsigned mode);
/* Run operations until the input is exhausted. */
void fz_run(fz_ctx *c, fz_in *r);
/* Free every live block (checking it), close the scopes, flush the thread
 * cache, drain and check the events. The flush costs about a tenth of an
 * average input, and buys reproducible crashes: every input starts with
 * empty caches and no span in use, so an input replayed alone does what it
 * did in the fuzzing process. */
void fz_finish(fz_ctx *c);
/* Drain the pool's events and check each (fz_finish does it, except for the
 * two halves of the concurrent target: the ring has one drainer). */
void fz_drain(fz_ctx *c);

/* ---- the input history (fuzz_history.c) ------------------------------------ */
/* Called with each input before it runs: remakes the target's pools every so
 * many inputs (so that the inputs since they were made stay few) and keeps
 * the input in $KPOOL_FUZZ_HISTORY/history-<pid> when that names a folder. */
void fz_history_add(fz_pool *pools, size_t npools, const uint8_t *data, size_t len);

/* ---- every thread's stack on a timeout (fuzz_stacks.c) ---------------------- */
/* What a thread is doing for the input, printed above its stack. */
enum { FZ_IDLE, FZ_RUNNING, FZ_WAITING };
/* Called by each entry point when an input starts and when it ends (the
 * calling thread is marked running the input, then idle). */
void fz_input_begin(void);
void fz_input_end(void);
/* Mark the calling thread: a thread that runs part of an input marks itself
 * FZ_RUNNING, and FZ_IDLE when done; the fuzzing thread FZ_WAITING while it
 * waits for them. */
void fz_thread_mark(int state);

/* The operation trace printed by fz_fail: the last FZ_TRACE operations of
 * the thread, kept as numbers (formatting each one would cost more than the
 * operation). */
#define FZ_TRACE 24
void fz_note(unsigned op, unsigned slot, uint64_t a, uint64_t b);
void fz_trace_reset(void);

#endif /* KP_FUZZ_MODEL_H */
