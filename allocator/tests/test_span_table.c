/*
 * test_span_table.c - a damaged span table met by an allocating thread.
 *
 * The span table (kp__seg's span[]) sits in the segment's header unit and is
 * not sealed: a stray write can reach a slot. The central refill path
 * (primary.c, kp__central_take and span_pop) takes a span's free-list head,
 * its start, block size, block count and bump index from the slot. Each
 * field is rewritten here in the span a refill is about to use, the way an
 * attack of session 7 did it:
 *
 *   - free-list head -> a free block of another span of the class (it was
 *     handed out from both spans: twice), an unmapped address (signal 11 in
 *     span_pop), the middle of a block, a live block of the span whose first
 *     payload word still holds its old list link (handed out while live);
 *   - nblocks -> twice its count (the bump ran into the next span's 16 live
 *     blocks), bump -> 0 (the span's own live blocks handed out again),
 *     block -> half with nblocks to match, start -> the next span's start;
 *   - the head block's link -> a live block of the span, encoded with the
 *     head's key (what one who read the link knows): the live block was
 *     handed out; next -> unmapped (the list's next head: signal 11 when
 *     the span left the list);
 *   - nused -> 1, then one of the span's live blocks freed: the span's
 *     units went back with 7 blocks live, and the next span carved there
 *     handed them out again.
 *
 * Then the class is allocated from until the damaged span would be used,
 * and more. Contained means: no crash; every allocation served, none
 * overlapping another or a live block; every live byte kept; a freelist or
 * corruption event; every block (live ones of the damaged span too) frees
 * without complaint, and the pool keeps serving.
 *
 * Each damage runs in a child of its own (a crash is that damage's
 * failure, and the other damages still run).
 */
#define _GNU_SOURCE
/* Tests the inline primary's segments, spans and units (primary.c): every pool layout:inline (ktest.h, KT_LAYOUT_INLINE). */
#define KT_LAYOUT_INLINE 1
#include "ktest.h"

#include "internal.h"

#include <stdbool.h>

/* The 4096-byte class (the request, its header and its canary): 16 blocks
 * to a span of one unit, so three spans of live blocks sit in units 1-3. */
#define REQ ((size_t)4096 - KP_HDR - KP_CANARY)
#define NLIVE 48
#define NNEW 64
/* Live blocks are written past their first payload word: a block just
 * taken keeps there the list link it had in its thread's cache (a program
 * that fills a struct's later fields first does the same). */
#define SKIP 8

enum damage {
	D_FREE_OTHER_SPAN,
	D_FREE_UNMAPPED,
	D_FREE_MID_BLOCK,
	D_FREE_LIVE,
	D_NBLOCKS,
	D_BUMP,
	D_BLOCK,
	D_START,
	D_LINK_LIVE,
	D_NEXT_UNMAPPED,
	D_NUSED,
	D__N
};
static const char *const damage_name[] = {"free -> a free block of another span",
					  "free -> unmapped",
					  "free -> the middle of a block",
					  "free -> a live block",
					  "nblocks -> twice",
					  "bump -> 0",
					  "block -> half (nblocks to match)",
					  "start -> the next span's",
					  "the head's link -> a live block",
					  "next -> unmapped",
					  "nused -> 1, then a free"};

static kp__span *span_of_block(const char *p)
{
	kp__seg *s = kp__pagemap_get(p);
	unsigned u = (unsigned)(((uintptr_t)p - (uintptr_t)s) >> KP_UNIT_SHIFT);
	return &s->span[s->span[u].head];
}

static bool overlaps(const char *a, const char *b)
{
	return a < b + REQ && b < a + REQ;
}

static void attack(enum damage d)
{
	static char *live[NLIVE], *fresh[NNEW];
	static bool is_live[NLIVE];
	kp_pool *pool = kp_create("daemon:off,prefault:off,seed:31,tcache_bytes:0");
	REQUIRE(pool != NULL, "kp_create: %s", kp_last_error());
	unsigned cls = kp__class_of(REQ + KP_HDR + KP_CANARY);
	REQUIRE(kp__class_size[cls] == 4096, "class %u is %u bytes", cls, kp__class_size[cls]);
	for (unsigned i = 0; i < NLIVE; i++) {
		live[i] = kp_alloc(pool, REQ, 0);
		REQUIRE(live[i] != NULL, "kp_alloc: %s", kp_last_error());
		kt_fill(live[i] + SKIP, REQ - SKIP, i);
		is_live[i] = true;
	}
	kp_thread_flush(pool);
	kp__span *a = span_of_block(live[0]), *b = NULL;
	for (unsigned i = 0; i < NLIVE && !b; i++)
		if (span_of_block(live[i]) != a)
			b = span_of_block(live[i]);
	REQUIRE(b && b->start == a->start + KP_UNIT_SIZE, "spans A and B not side by side");
	REQUIRE(a->nblocks == 16 && a->bump == 16 && b->bump == 16, "A and B full");
	/* B: one free block (its list ends there); A: every other of its live
	 * blocks freed, and A first on the class's list. */
	for (unsigned i = 0; i < NLIVE; i++)
		if (span_of_block(live[i]) == b) {
			kp_free(pool, live[i]);
			is_live[i] = false;
			break;
		}
	kp_thread_flush(pool);
	unsigned in_a = 0;
	char *live_in_a = NULL;
	for (unsigned i = 0; i < NLIVE; i++)
		if (span_of_block(live[i]) == a && in_a++ % 2) {
			kp_free(pool, live[i]);
			is_live[i] = false;
		} else if (span_of_block(live[i]) == a) {
			live_in_a = live[i];
		}
	kp_thread_flush(pool);
	REQUIRE(pool->central[cls].partial == a && a->free && b->free, "A heads the class's list");
	kt_events_clear(pool);

	switch (d) {
	case D_FREE_OTHER_SPAN: a->free = b->free; break;
	case D_FREE_UNMAPPED: a->free = (char *)(uintptr_t)KP_PAGE; break;
	case D_FREE_MID_BLOCK: a->free = (char *)a->free + 2048; break;
	case D_FREE_LIVE: a->free = live_in_a - KP_HDR; break;
	case D_NBLOCKS: a->nblocks *= 2; break;
	case D_BUMP: a->bump = 0; break;
	case D_BLOCK: a->block /= 2, a->nblocks *= 2; break;
	case D_START: a->start = b->start; break;
	case D_LINK_LIVE: kp__link_put(pool->secret, a->free, live_in_a - KP_HDR); break;
	case D_NEXT_UNMAPPED: a->next = (kp__span *)(uintptr_t)KP_PAGE; break;
	case D_NUSED:
		a->nused = 1;
		for (unsigned i = 0; i < NLIVE; i++)
			if (is_live[i] && live[i] == live_in_a) {
				CHECK(kp_free(pool, live[i]) == 0, "%s: free", damage_name[d]);
				is_live[i] = false;
			}
		kp_thread_flush(pool);
		break;
	case D__N: break;
	}

	unsigned served = 0, bad = 0, lost = 0;
	for (unsigned i = 0; i < NNEW; i++) {
		fresh[i] = kp_alloc(pool, REQ, 0);
		if (!fresh[i])
			continue;
		served++;
		for (unsigned j = 0; j < i; j++)
			bad += fresh[j] && overlaps(fresh[i], fresh[j]);
		for (unsigned j = 0; j < NLIVE; j++)
			bad += is_live[j] && overlaps(fresh[i], live[j]);
		kt_fill(fresh[i] + SKIP, REQ - SKIP, 1000 + i);
	}
	for (unsigned i = 0; i < NLIVE; i++)
		lost += is_live[i] && kt_verify(live[i] + SKIP, REQ - SKIP, i) != KT_OK;
	for (unsigned i = 0; i < NNEW; i++)
		lost += fresh[i] && kt_verify(fresh[i] + SKIP, REQ - SKIP, 1000 + i) != KT_OK;
	size_t nev = 0;
	kp_event *ev = kt_events_all(pool, &nev);
	size_t reported = kt_count_kind(ev, nev, KP_EV_FREELIST) + kt_count_kind(ev, nev, KP_EV_CORRUPTION);
	/* caught at the span, not after a bad block reached a thread cache */
	size_t late = 0;
	for (size_t i = 0; i < nev; i++)
		late += strstr(ev[i].text, "cache link") != NULL;
	for (size_t i = 0; getenv("KT_VERBOSE") && i < nev; i++)
		printf("   event %s: %s\n", kp_event_name(ev[i].kind), ev[i].text);
	free(ev);
	printf("   %s: %u of %u served, %u overlapping, %u blocks lost bytes, %zu events\n", damage_name[d], served,
	       NNEW, bad, lost, reported);
	CHECK(served == NNEW, "%s: %u of %u allocations served", damage_name[d], served, NNEW);
	CHECK(bad == 0, "%s: %u allocations overlap another or a live block", damage_name[d], bad);
	CHECK(lost == 0, "%s: %u blocks lost bytes", damage_name[d], lost);
	CHECK(reported >= 1, "%s: no freelist or corruption event", damage_name[d]);
	CHECK(late == 0, "%s: a bad block reached a thread cache (caught there, not at its span)", damage_name[d]);

	unsigned refused = 0;
	for (unsigned i = 0; i < NNEW; i++)
		refused += fresh[i] && kp_free(pool, fresh[i]) != 0;
	for (unsigned i = 0; i < NLIVE; i++)
		refused += is_live[i] && kp_free(pool, live[i]) != 0;
	CHECK(refused == 0, "%s: %u frees refused", damage_name[d], refused);
	kp_thread_flush(pool);
	for (unsigned i = 0; i < NNEW; i++) { /* the pool serves on, every size */
		size_t n = 16 + (size_t)i * 997;
		void *p = kp_alloc(pool, n, 0);
		CHECK(p != NULL, "%s: kp_alloc(%zu) after", damage_name[d], n);
		if (p) {
			kt_fill(p, n, i);
			CHECK(kt_verify(p, n, i) == KT_OK && kp_free(pool, p) == 0, "%s: block of %zu", damage_name[d],
			      n);
		}
	}
	kp_destroy(pool);
}

static void test_damaged_span_table(void)
{
	for (enum damage d = 0; d < D__N; d++) {
		unsigned long failed = ktest_failed_;
		fflush(stdout);
		pid_t pid = fork(); /* one pool each, and a crash is this damage's */
		if (pid == 0) {
			attack(d);
			fflush(stdout);
			_exit(ktest_failed_ != failed);
		}
		int st = 0;
		waitpid(pid, &st, 0);
		CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "%s: %s %d", damage_name[d],
		      WIFSIGNALED(st) ? "crashed: signal" : "failed, status", WIFSIGNALED(st) ? WTERMSIG(st) : st);
	}
}

int main(void)
{
	RUN(test_damaged_span_table);
	return ktest_summary();
}
