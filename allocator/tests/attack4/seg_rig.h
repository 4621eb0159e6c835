/*
 * seg_rig.h - the rig of the attack4 tests that overflow past the last block
 * of one segment into the header of the segment mapped right after it (the
 * attacker of test_forgery.c: reads what lies past its block, writes it back
 * with some fields changed, magic and seal kept as they were).
 *
 * rig_open: a pool of four normal segments, each filled by one big block;
 * finds two segments A, B back to back (B = A + 4 MiB), frees B's big block
 * (all of B's units free) and keeps A's. rig_hdr_read / rig_hdr_write read
 * and write the first n bytes of B's header through the overflow of A's big
 * block (its canary rewritten as it was).
 */
#ifndef SEG_RIG_H
#define SEG_RIG_H

#include "ktest.h"

#include "internal.h"

#include <setjmp.h>
#include <signal.h>
#include <stddef.h>

#define RIG_BIG_REQ (KP_LARGE_MAX - KP_HDR - KP_CANARY)

typedef struct rig {
	kp_pool *pool;
	char *big[8];
	int n, a, b;
	char *segb; /* B's header */
} rig;

static KT_RAW __attribute__((unused)) void rig_raw_read(void *dst, const void *src, size_t n)
{
	for (size_t i = 0; i < n; i++)
		((volatile char *)dst)[i] = ((const volatile char *)src)[i];
}

/* The overflow's writes run byte by byte from the block's end, as a real
 * overflow does: a write that faults (a guard: the segments' read-only
 * last unit, the page past a huge mapping) stops the overflow there, and
 * every later write of the attack is skipped (rig_stopped): what the
 * attack needs never reaches the header. */
static sigjmp_buf rig_jmp;
static volatile int rig_stopped;
static void *volatile rig_fault_at;
static void rig_fault(int sig, siginfo_t *si, void *uc)
{
	(void)sig;
	(void)uc;
	rig_fault_at = si->si_addr;
	siglongjmp(rig_jmp, 1);
}

static KT_RAW __attribute__((unused)) void rig_raw_write(void *dst, const void *src, size_t n)
{
	if (rig_stopped)
		return;
	struct sigaction sa, old;
	memset(&sa, 0, sizeof sa);
	sa.sa_sigaction = rig_fault;
	sa.sa_flags = SA_SIGINFO | SA_NODEFER;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGSEGV, &sa, &old);
	if (!sigsetjmp(rig_jmp, 1)) {
		for (size_t i = 0; i < n; i++)
			((volatile char *)dst)[i] = ((const volatile char *)src)[i];
	} else {
		rig_stopped = 1;
		printf("   the overflow stopped at %p, %td bytes past where it started (a guard)\n", rig_fault_at,
		       (char *)rig_fault_at - (char *)dst);
	}
	sigaction(SIGSEGV, &old, NULL);
}

/* The bytes an overflow passes from from to to, each written as it was. */
static KT_RAW __attribute__((unused)) void rig_pass(char *from, char *to)
{
	for (char *p = from; p < to && !rig_stopped; p += 4096) {
		size_t n = (size_t)(to - p) < 4096 ? (size_t)(to - p) : 4096;
		unsigned char buf[4096];
		rig_raw_read(buf, p, n);
		rig_raw_write(p, buf, n);
	}
}

/* false: no two segments back to back (the caller skips). */
static __attribute__((unused)) bool rig_open(rig *r, const char *conf)
{
	memset(r, 0, sizeof *r);
	r->a = r->b = -1;
	r->pool = kp_create(conf);
	if (!r->pool) {
		fprintf(stderr, "kp_create(%s): %s\n", conf, kp_last_error());
		return false;
	}
	while (r->n < 4 && (r->big[r->n] = kp_alloc(r->pool, RIG_BIG_REQ, 0)) != NULL)
		r->n++;
	for (int i = 0; i < r->n && r->a < 0; i++)
		for (int j = 0; j < r->n; j++)
			if ((uintptr_t)r->big[j] - KP_UNIT_SIZE - KP_HDR ==
			    ((uintptr_t)r->big[i] & ~(uintptr_t)(KP_SEG_SIZE - 1)) + KP_SEG_SIZE) {
				r->a = i;
				r->b = j;
				break;
			}
	if (r->a < 0)
		return false;
	r->segb = r->big[r->b] - KP_UNIT_SIZE - KP_HDR;
	kp_free(r->pool, r->big[r->b]);
	r->big[r->b] = NULL;
	return true;
}

/* The overflow: A's big block's request ends KP_CANARY bytes before B. */
static __attribute__((unused)) void rig_hdr_read(rig *r, void *buf, size_t n)
{
	rig_raw_read(buf, r->segb, n);
}

static __attribute__((unused)) void rig_hdr_write(rig *r, const void *buf, size_t n)
{
	rig_pass(r->big[r->a] + RIG_BIG_REQ, r->segb); /* the canary, and any guard after it */
	rig_raw_write(r->segb, buf, n);
}

static __attribute__((unused)) bool rig_overlaps(const char *a, size_t an, const char *b, size_t bn)
{
	return a < b + bn && b < a + an;
}

static __attribute__((unused)) int64_t rig_events(kp_pool *pool)
{
	return kt_stat(pool, "integrity.corruptions") + kt_stat(pool, "integrity.invalid_frees") +
	       kt_stat(pool, "integrity.overflows") + kt_stat(pool, "integrity.freelist_errors") +
	       kt_stat(pool, "integrity.double_frees");
}

#endif
