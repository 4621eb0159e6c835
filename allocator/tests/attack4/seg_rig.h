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

static KT_RAW __attribute__((unused)) void rig_raw_write(void *dst, const void *src, size_t n)
{
	for (size_t i = 0; i < n; i++)
		((volatile char *)dst)[i] = ((const volatile char *)src)[i];
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
	unsigned char canary[KP_CANARY];
	rig_raw_read(canary, r->big[r->a] + RIG_BIG_REQ, KP_CANARY);
	rig_raw_write(r->big[r->a] + RIG_BIG_REQ, canary, KP_CANARY); /* the bytes the overflow passes */
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
