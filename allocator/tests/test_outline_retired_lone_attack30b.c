/*
 * test_outline_retired_lone_attack30b.c - s30-att2: KP_OL_RETIRED_OWN 1
 * (4886ddf: the owner's free into its own retired span inline, relisted
 * once an eighth is free) and OL_FC_LONE_BYTES (ad9c4fd).
 *
 * 1. Retired spans freed into by their owner and others at once: each
 *    round a new owner thread (adopting the last round's abandoned heap)
 *    fills spans of a few classes to full (retired), then frees the even
 *    blocks itself while two other threads free the odd ones across
 *    threads, with a 40 us timer whose handler (on the owner's thread)
 *    allocates, writes and frees a block of the same classes (as
 *    test_outline_signal's, which kpool supports); it allocates them again
 *    (relisted spans, drained lists) and ends while the others may still
 *    be freeing (relist and drain racing heap_abandon). Asserted: no block
 *    handed out twice (a set of live addresses), every pattern intact, no
 *    double_free, invalid_free or overflow event (none is made), every
 *    span's cross-thread list as long as its nremote, none longer than its
 *    blocks.
 * 2. A consumer heap (frees only) of classes at the edges (16, 1024, 1152,
 *    65,536 bytes; 256 and 320): its cache of each (h->fc_cap, white box)
 *    OL_FC_LONE_BYTES' worth (4 blocks at least, the full cap when less)
 *    until its first refill of the class, never more blocks than that,
 *    flushed whole when full; its cached blocks handed out first (the cap
 *    still the lone one: a pop from the cache is no refill, the heap holds
 *    no span); from its first refill OL_FC_BYTES' worth. Since s32 a class
 *    under a cache line (16 bytes here) caches nothing until the heap's
 *    first refill of it (outline.c, FC_LINE_CLASSES: its blocks go home),
 *    and that first allocation takes a block of the heap's own span.
 * The first test's rounds run in a child: kpool's one-line abort (a
 * handler that interrupted a section holding a mutex its own call needs:
 * segment_new's pool lock) is allowed, as by test_outline_signal.
 */
#define _GNU_SOURCE 1
#include "ktest.h"
#include "kt_worker.h"
#include "outline.h"
#include "ol_lend.h"

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

static kp_pool *pool;

/* ---- a set of live addresses (as test_outline_xdfree_attack30b) ---------- */
#define SET_N ((size_t)1 << 20)
#define TOMB ((uintptr_t)1)
static _Atomic uintptr_t *set;
static _Atomic uint64_t twice, bad_pattern;
static size_t set_hash(uintptr_t a)
{
	return (size_t)((a >> 4) * 0x9E3779B97F4A7C15ull >> 44) & (SET_N - 1);
}
static bool set_add(uintptr_t a)
{
	for (size_t i = set_hash(a), k = 0; k < SET_N; i = (i + 1) & (SET_N - 1), k++) {
		uintptr_t v = atomic_load(&set[i]);
		if (v == a)
			return false;
		if (v == 0) {
			if (atomic_compare_exchange_strong(&set[i], &v, a))
				return true;
			if (v == a)
				return false;
		}
	}
	abort();
}
static void set_del(uintptr_t a)
{
	for (size_t i = set_hash(a), k = 0; k < SET_N; i = (i + 1) & (SET_N - 1), k++) {
		uintptr_t v = a;
		if (atomic_compare_exchange_strong(&set[i], &v, TOMB) || v == 0)
			return;
	}
}
/* The handler's blocks are not in the set (it may interrupt an insert):
 * their pattern alone is checked. */
static void *take(size_t n)
{
	unsigned char *p = kp_alloc(pool, n, 0);
	if (!p)
		return NULL;
	if (!set_add((uintptr_t)p)) {
		atomic_fetch_add(&twice, 1);
		fprintf(stderr, "handed out twice: %p (%zu bytes)\n", (void *)p, n);
	}
	kt_fill(p, n, n);
	return p;
}
static void give(unsigned char *p, size_t n)
{
	if (kt_verify(p, n, n) != KT_OK) {
		atomic_fetch_add(&bad_pattern, 1);
		fprintf(stderr, "pattern broken: %p (%zu bytes)\n", (void *)p, n);
	}
	set_del((uintptr_t)p);
	kp_free(pool, p);
}

/* ---- 1 ------------------------------------------------------------------ */
#define NB 1500 /* the owner's blocks a round: spans of each class filled */
#define ROUNDS_RET 30
static const size_t rsz[] = {40, 100, 700, 3000, 7000};
#define RSZ(j) rsz[(j) % 5]
/* by round's parity: a round's others may still free its blocks while the
 * next round's owner fills the other half */
static unsigned char *blk2[2][NB];
static _Atomic int phase; /* 1: the owner's blocks ready for the others' frees */
static volatile sig_atomic_t hits, in_owner;

static void handler(int sig)
{
	(void)sig;
	if (!in_owner)
		return;
	size_t n = rsz[hits % 5];
	unsigned char *p = kp_alloc(pool, n, 0);
	if (p) {
		memset(p, 0x5a, n);
		for (size_t i = 0; i < n; i++)
			if (p[i] != 0x5a)
				bad_pattern++;
		kp_free(pool, p);
	}
	hits++;
}

static void *owner(void *arg)
{
	unsigned char **blk = blk2[(intptr_t)arg];
	sigset_t s;
	sigemptyset(&s);
	sigaddset(&s, SIGALRM);
	pthread_sigmask(SIG_UNBLOCK, &s, NULL);
	for (int j = 0; j < NB; j++)
		blk[j] = take(RSZ(j));
	atomic_store(&phase, 1);
	/* the handler runs during the owner's frees alone (during its
	 * allocations it met segment_new's lock: kpool's abort, 3 runs of 3) */
	in_owner = 1;
	for (int j = 0; j < NB; j += 2) /* its own: into retired spans */
		if (blk[j])
			give(blk[j], RSZ(j));
	in_owner = 0;
	/* again, while the others free the odd ones: relisted spans,
	 * drained lists */
	static unsigned char *again[NB];
	for (int j = 0; j < NB; j++)
		again[j] = take(RSZ(j));
	in_owner = 1;
	for (int j = 0; j < NB; j++)
		if (again[j])
			give(again[j], RSZ(j));
	in_owner = 0;
	return NULL; /* exits: its heap abandoned while the others may still free */
}
static void *other(void *arg)
{
	int t = (int)(intptr_t)arg & 1;
	unsigned char **blk = blk2[(intptr_t)arg >> 1];
	while (atomic_load(&phase) != 1)
		sched_yield();
	for (int j = 1 + 2 * t; j < NB; j += 4)
		if (blk[j])
			give(blk[j], RSZ(j));
	return NULL;
}

static unsigned lists_bad(void)
{
	unsigned bad = 0;
	for (struct ol_seg *s = pool->ol->segs; s; s = s->next)
		for (uint32_t i = 0; i < s->used; i++) {
			struct ol_span *pg = &s->spans[i];
			if (!pg->start || !pg->link)
				continue;
			uint32_t n = 0, x = atomic_load(&pg->remote);
			while (x && x <= pg->nblocks && n <= pg->nblocks) {
				n++;
				x = pg->link[x - 1] & ~OL_LINK_ON;
			}
			if (n > pg->nblocks || atomic_load(&pg->nremote) != n) {
				bad++;
				fprintf(stderr, "span %p (%u of %u): list %u, nremote %u\n", (void *)pg->start,
					pg->nblocks, pg->bsize, n, atomic_load(&pg->nremote));
			}
		}
	return bad;
}

static int retired_body(void)
{
	pool = kp_create("layout:outline,daemon:off,seed:41,decay_ms:10");
	if (!pool)
		return 5;
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = handler;
	sa.sa_flags = SA_RESTART;
	sigaction(SIGALRM, &sa, NULL);
	sigset_t s, old;
	sigemptyset(&s);
	sigaddset(&s, SIGALRM);
	pthread_sigmask(SIG_BLOCK, &s, &old); /* the owner alone takes the timer's signal */
	struct itimerval it = {{0, 40}, {0, 40}};
	setitimer(ITIMER_REAL, &it, NULL);
	int rounds = KT_SANITIZED ? 8 : ROUNDS_RET;
	pthread_t prev[2] = {0, 0};
	for (int r = 0; r < rounds; r++) {
		atomic_store(&phase, 0);
		pthread_t o, x[2];
		pthread_create(&o, NULL, owner, (void *)(intptr_t)(r & 1));
		for (int t = 0; t < 2; t++) { /* the last round's others, done with this round's half */
			if (prev[t])
				pthread_join(prev[t], NULL);
			pthread_create(&x[t], NULL, other, (void *)(intptr_t)(t | (r & 1) << 1));
		}
		pthread_join(o, NULL); /* the others may still be freeing: the next owner adopts meanwhile */
		prev[0] = x[0], prev[1] = x[1];
		if (r % 8 == 7)
			kp_daemon_step(pool, 50);
	}
	for (int t = 0; t < 2; t++)
		pthread_join(prev[t], NULL);
	struct itimerval off = {{0, 0}, {0, 0}};
	setitimer(ITIMER_REAL, &off, NULL);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	/* the abandoned heap's lists taken in */
	for (int i = 0; i < 2; i++) {
		static void *q[3000];
		for (int j = 0; j < 3000; j++)
			q[j] = kp_alloc(pool, RSZ(j), 0);
		for (int j = 0; j < 3000; j++)
			kp_free(pool, q[j]);
	}
	uint64_t df = atomic_load(&pool->double_frees), inv = atomic_load(&pool->invalid_frees),
		 ov = atomic_load(&pool->overflows);
	printf("  %d rounds, handler ran %ld times: double_free %lu invalid_free %lu overflow %lu, twice %lu, "
	       "patterns broken %lu\n",
	       rounds, (long)hits, (unsigned long)df, (unsigned long)inv, (unsigned long)ov, (unsigned long)twice,
	       (unsigned long)bad_pattern);
	fflush(stdout);
	return twice || bad_pattern ? 2 : df || inv || ov ? 3 : lists_bad() ? 4 : 0;
}

/* The child's statuses: 0 clean, 2 a block handed out twice or overwritten,
 * 3 events for bad frees none made, 4 a list not its count, 5 no pool;
 * 134 (SIGABRT) kpool's one-line abort, allowed. */
static void test_retired_spans_freed_by_owner_and_others_with_a_handler(void)
{
	int runs = 3, clean = 0, aborted = 0, failed = 0;
	for (int r = 0; r < runs; r++) {
		fflush(stdout);
		fflush(stderr);
		pid_t pid = fork();
		if (pid == 0)
			_exit(retired_body());
		int st = 0;
		waitpid(pid, &st, 0);
		int k = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
		clean += k == 0;
		aborted += k == 128 + SIGABRT;
		failed += k != 0 && k != 128 + SIGABRT;
		if (k)
			fprintf(stderr, "run %d: status %d\n", r, k);
	}
	printf("  %d runs: %d clean, %d in kpool's one-line abort\n", runs, clean, aborted);
	CHECK(failed == 0, "%d of %d runs failed (2: handed out twice, 3: events, 4: lists)", failed, runs);
}

/* ---- 2 ------------------------------------------------------------------ */
static const size_t lsz[] = {1, 1016, 1017, 65528, 248, 312}; /* classes 16, 1024, 1152, 65536, 256, 320 */
#define NL (sizeof lsz / sizeof lsz[0])
static const uint32_t lbs[NL] = {16, 1024, 1152, 65536, 256, 320};
#define PER 300 /* blocks of each size the producer makes */
static unsigned char *prod[NL][PER];

static void produce(void *arg)
{
	(void)arg;
	/* each class's blocks of its own spans (ol_lend.h): a young heap's 16
	 * and 320 bytes were the 32- and 384-byte classes' (outline.c, LEND),
	 * which went to those classes' caches in the consumer */
	ol_lend_done(pool);
	for (size_t c = 0; c < NL; c++)
		for (int i = 0; i < PER; i++)
			prod[c][i] = take(lsz[c]);
}
static uint16_t cap_of(uint32_t bytes, uint32_t bs)
{
	uint32_t c = bytes / bs;
	return (uint16_t)(c < 1 ? 1 : c > OL_FC_MAX ? OL_FC_MAX : c);
}
/* Blocks under a cache line (outline.c, FC_LINE_CLASSES): none cached
 * before the heap allocates the class. */
#define LINE 64u
static uint16_t lone_of(uint32_t bs)
{
	if (bs < LINE)
		return 0;
	uint16_t full = cap_of(OL_FC_BYTES, bs), lone = cap_of(OL_FC_LONE_BYTES, bs);
	return lone >= OL_FC_LONE_MIN ? lone : full < OL_FC_LONE_MIN ? full : OL_FC_LONE_MIN;
}
static uint32_t cls_of(size_t n)
{
	size_t need = n + OL_CANARY;
	return need <= 1024 ? kp__ol_class_tbl[(need + 15) >> 4] : kp__ol_class_big(need);
}
static unsigned cap_bad, n_over, not_flushed, not_first;
static void consume(void *arg)
{
	(void)arg;
	for (size_t c = 0; c < NL; c++) {
		uint32_t cls = cls_of(lsz[c]);
		uint16_t lone = lone_of(lbs[c]), full = cap_of(OL_FC_BYTES, lbs[c]);
		for (int i = 0; i < PER / 2; i++) {
			give(prod[c][i], lsz[c]);
			struct ol_heap *h = kp__ol_slot.heap;
			uint16_t n = h->fc_n[cls];
			if (h->fc_cap[cls] != lone) {
				cap_bad++;
				fprintf(stderr, "class of %u: cap %u before an allocation, want %u\n", lbs[c],
					h->fc_cap[cls], lone);
			}
			n_over += n > lone;
			/* full at the last free: all of it flushed, this one cached */
			if (lone && i && i % lone == 0 && n != 1) {
				not_flushed++;
				fprintf(stderr, "class of %u: %u cached after free %d (cap %u)\n", lbs[c], n, i, lone);
			}
		}
		/* its first allocation of the class: a cached block, then the cap full */
		struct ol_heap *h = kp__ol_slot.heap;
		uint16_t before = h->fc_n[cls];
		uintptr_t last =
			before ? kp__ol_fc_row(h, cls)[before - 1] & (((uint64_t)1 << OL_FC_IDX_SHIFT) - 1) : 0;
		unsigned char *p = take(lsz[c]);
		struct ol_span *pg = kp__ol_map_span(pool->ol->map, (uintptr_t)p >> OL_SLICE_SHIFT);
		if (lone ? (uintptr_t)pg != last || h->fc_n[cls] != before - 1 : before || pg->heap != h) {
			not_first++;
			fprintf(stderr,
				"class of %u: the first allocation not a cached block (under a line: the heap's own)\n",
				lbs[c]);
		}
		/* a pop from the cache is no refill: the heap holds no span of the
		 * class yet, its cap the lone one (outline.h, ol_heap's fc_cap) */
		if (lone && h->fc_cap[cls] != lone) {
			cap_bad++;
			fprintf(stderr, "class of %u: cap %u after a cached block's pop, want %u\n", lbs[c],
				h->fc_cap[cls], lone);
		}
		/* the cache emptied and one more: its first refill, then the full cap */
		static unsigned char *q[OL_FC_MAX + 1];
		uint16_t k = h->fc_n[cls];
		for (int i = 0; i <= k; i++)
			q[i] = take(lsz[c]);
		if (h->fc_cap[cls] != full) {
			cap_bad++;
			fprintf(stderr, "class of %u: cap %u after a refill, want %u\n", lbs[c], h->fc_cap[cls], full);
		}
		give(p, lsz[c]);
		for (int i = 0; i <= k; i++)
			give(q[i], lsz[c]);
		for (int i = PER / 2; i < PER; i++) {
			give(prod[c][i], lsz[c]);
			n_over += h->fc_n[cls] > full;
		}
	}
}

static void test_a_consumer_caches_a_lone_share_until_it_allocates(void)
{
	pool = kp_create("layout:outline,daemon:off,seed:43");
	REQUIRE(pool, "create %s", kp_last_error());
	worker wp, wc;
	w_start(&wp);
	w_start(&wc);
	w_call(&wp, produce, NULL);
	w_call(&wc, consume, NULL);
	printf("  %zu classes: caps wrong %u, more cached than the cap %u, not flushed whole %u, first allocation "
	       "not cached %u; double_free %lu\n",
	       NL, cap_bad, n_over, not_flushed, not_first, (unsigned long)atomic_load(&pool->double_frees));
	CHECK(cap_bad == 0 && n_over == 0, "the cache's cap");
	CHECK(not_flushed == 0, "a full lone cache not flushed whole");
	CHECK(not_first == 0, "the first allocation of the class not from the cache");
	CHECK(twice == 0 && bad_pattern == 0, "a block handed out twice or overwritten");
	CHECK(atomic_load(&pool->double_frees) == 0 && atomic_load(&pool->invalid_frees) == 0, "events");
	w_stop(&wp);
	w_stop(&wc);
	kp_destroy(pool);
}

int main(void)
{
	set = calloc(SET_N, sizeof *set);
	if (!set)
		return 1;
	RUN(test_retired_spans_freed_by_owner_and_others_with_a_handler);
	RUN(test_a_consumer_caches_a_lone_share_until_it_allocates);
	return ktest_summary();
}
