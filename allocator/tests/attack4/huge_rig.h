/*
 * huge_rig.h - the rig of the attack4 tests that overflow past a huge
 * block's payload (which ends at its mapping's end) into the segment header
 * of the huge mapping right after it. hrig_open: six huge blocks of one
 * segment's mapping each, two of them back to back (h[a]'s payload ends at
 * h[b]'s mapping); hrig_links: the overflow, B's header as it was but for
 * its next and prev links.
 */
#ifndef HUGE_RIG_H
#define HUGE_RIG_H

#include "seg_rig.h"

/* A request whose mapping is exactly one segment: need + 2 pages = 4 MiB. */
#define H_REQ (KP_SEG_SIZE - 2 * KP_PAGE - KP_HDR - KP_CANARY)
#define NH 6

typedef struct hrig {
	kp_pool *pool;
	char *h[NH];
	int a, b; /* h[a]'s payload ends where h[b]'s mapping starts */
	char *segb;
} hrig;

static __attribute__((unused)) bool hrig_open(hrig *r)
{
	memset(r, 0, sizeof *r);
	r->a = r->b = -1;
	r->pool = kp_create("primary_initial:4m,primary_max:256m,backup:1m,daemon:off");
	if (!r->pool)
		return false;
	for (int i = 0; i < NH; i++)
		if (!(r->h[i] = kp_alloc(r->pool, H_REQ, 0)))
			return false;
	for (int i = 0; i < NH && r->a < 0; i++)
		for (int j = 0; j < NH; j++)
			if (r->h[j] - 2 * KP_PAGE == r->h[i] - 2 * KP_PAGE + KP_SEG_SIZE) {
				r->a = i;
				r->b = j;
				break;
			}
	if (r->a < 0)
		return false;
	r->segb = r->h[r->b] - 2 * KP_PAGE;
	return true;
}

/* The overflow past h[a]'s request: its canary and slack as they were, then
 * B's header with next and prev set. */
static __attribute__((unused)) void hrig_links(hrig *r, void *next, void *prev)
{
	size_t n = offsetof(kp__seg, prev) + sizeof(void *);
	unsigned char buf[256];
	rig_raw_read(buf, r->segb, n);
	memcpy(buf + offsetof(kp__seg, next), &next, sizeof next);
	memcpy(buf + offsetof(kp__seg, prev), &prev, sizeof prev);
	rig_pass(r->h[r->a] + H_REQ, r->segb);
	rig_raw_write(r->segb, buf, n);
}

#endif
