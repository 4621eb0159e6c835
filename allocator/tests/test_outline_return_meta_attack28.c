/*
 * test_outline_return_meta_attack28.c - attacks on the zeroed metadata of a
 * segment given back (outline.c, return_idle) and taken again
 * (segment_new, meta_clear_head; test_outline_return_meta).
 *
 * Failed on 2b03bdf (s28-att), pass since return_idle's meta_discard:
 * test_return_meta_madvise_refused,
 * test_return_meta_mincore_refused, test_return_meta_madvise_refused_checks
 * and test_return_meta_mlocked (no fault injected: the metadata pages
 * mlock'ed, as a program under mlockall has them, and MADV_DONTNEED of a
 * locked page is EINVAL; not run under ASan or TSan, whose mlock is a
 * no-op). meta_clear_head zeroes only the record's
 * last page (meta_first up to meta_after_record) and counts on
 * return_idle's kp__os_purge for the rest; a purge that fails (an injected
 * madvise or mincore fault: kp_fault_inject; the OS saying no: EINVAL for
 * mlock'ed pages; untested here, no swap: a page swapped out reads not
 * resident to mincore and is skipped) leaves the
 * old spans' records from meta_after_record on as they were, no event, and
 * the segment still goes onto the spares and is taken again. A span made
 * there with another layout finds old records live: the free of a block
 * never handed out is taken with no event and the block is handed out
 * twice (checks off), or reported as an overflow and leaked (checks on:
 * the free read the canary at p + the stale state - 1, up to 255 MiB past
 * the block; it read the slice map's reservation here, zero). kp_usable_size
 * of such a block says its stale state (checks on: up to 255 MiB; off: the
 * class's size), and kp_realloc of one serves a new block.
 *
 * The others held: other layouts (old 16 B / new 48 B, old 48 B / new
 * 1000 B...), checks on, and fork between the return and the retake.
 *
 * Deterministic as test_outline_return_meta: daemon off, the passes driven
 * by kp_daemon_step on the pool's clock (step_clock).
 */
#define _GNU_SOURCE 1
#include "ktest.h"
#include "outline.h"

#include <pthread.h>
#include <sys/mman.h>
#include <sys/wait.h>

/* What takes the spares ahead of the segment given back: blocks of the
 * 64 KiB class, two spans of 32 slices a segment. */
#define CHEW_SIZE 65000
#define OLD_MAX 8192
#define GOT_MAX 8192

struct scen {
	const char *conf;
	size_t old_size; /* the old span's blocks (the dead thread's) */
	int old_n;
	size_t new_size;   /* the new span's (taken in a new thread) */
	const char *fault; /* injected during the pass that gives the segment back, or NULL */
	bool fork_between; /* the retake in a fork child */
	bool locked;	   /* the segment's metadata mlock'ed while it goes back (a program under mlockall) */
};

static kp_pool *pool;
static const struct scen *cur;
static void *old_first; /* the old span's first block */

static void *old_span(void *arg)
{
	(void)arg;
	static void *p[OLD_MAX];
	for (int i = 0; i < cur->old_n; i++)
		p[i] = kp_alloc(pool, cur->old_size, 0);
	old_first = p[0];
	for (int i = 0; i < cur->old_n; i++)
		kp_free(pool, p[i]);
	return NULL; /* its heap abandoned: the span listed, the segment let go */
}

static int by_addr(const void *a, const void *b)
{
	const uint8_t *x = *(uint8_t *const *)a, *y = *(uint8_t *const *)b;
	return x < y ? -1 : x > y;
}

/* Drain the events: the invalid and double frees, overflows and
 * corruption among them. */
static unsigned integrity_events(kp_pool *p)
{
	kp_event ev[64];
	size_t n;
	unsigned k = 0;
	while ((n = kp_events_drain(p, ev, 64)) > 0)
		for (size_t i = 0; i < n; i++)
			k += ev[i].kind == KP_EV_INVALID_FREE || ev[i].kind == KP_EV_DOUBLE_FREE ||
			     ev[i].kind == KP_EV_OVERFLOW || ev[i].kind == KP_EV_CORRUPTION;
	return k;
}

/* results from the new heap's thread */
static unsigned r_stale, r_taken, r_silent, r_twice, r_nb, r_usable, r_realloc;
static size_t r_usable_max;
static bool r_here;

/* A new heap's first span of new_size: its records past fresh must read
 * zero, a free of each block never handed out must be refused with an
 * event, and no block may be handed out twice. */
static void *new_span(void *arg)
{
	kp__ol *ol = pool->ol;
	uint8_t *first = kp_alloc(pool, cur->new_size, 0);
	r_here = first && (uint8_t *)kp__ol_meta_of(pool, first) == (uint8_t *)arg;
	if (!r_here)
		return NULL;
	struct ol_span *pg = kp__ol_map_span(ol->map, (uintptr_t)first >> OL_SLICE_SHIFT);
	r_nb = pg->nblocks;
	r_stale = 0;
	for (uint32_t i = pg->fresh; i <= pg->nblocks; i++)
		r_stale += pg->rec[i].state != OL_FREE || pg->rec[i].canary != 0;
	/* kp_usable_size of each block never made: 0 (no block), never more
	 * than its class (the stale state taken for the request: up to
	 * 255 MiB, and a free with checks on reads the canary there) */
	uint32_t fresh = pg->fresh;
	r_usable = 0, r_usable_max = 0;
	for (uint32_t i = fresh; i < pg->nblocks; i++) {
		size_t u = kp_usable_size(pool, pg->start + (size_t)i * pg->bsize);
		r_usable += u != 0;
		r_usable_max = u > r_usable_max ? u : r_usable_max;
	}
	/* a realloc of the first one never made: refused (NULL) */
	kt_events_clear(pool);
	void *q = kp_realloc(pool, pg->start + (size_t)fresh * pg->bsize, 24, 0);
	r_realloc = q != NULL;
	/* a free of every other block never made (past fresh): each refused */
	kt_events_clear(pool);
	r_taken = r_silent = 0;
	for (uint32_t i = fresh + 1; i < pg->nblocks; i++) {
		r_taken += kp_free(pool, pg->start + (size_t)i * pg->bsize) == 0;
		r_silent += integrity_events(pool) == 0;
	}
	/* and then every block of the span taken: none twice */
	uint32_t n = 2 * pg->nblocks < GOT_MAX ? 2 * pg->nblocks : GOT_MAX;
	static uint8_t *got[GOT_MAX];
	got[0] = first;
	for (uint32_t i = 1; i < n; i++)
		got[i] = kp_alloc(pool, cur->new_size, 0);
	qsort(got, n, sizeof got[0], by_addr);
	r_twice = 0;
	for (uint32_t i = 1; i < n; i++)
		r_twice += got[i] && got[i] == got[i - 1];
	return NULL;
}

static void retake(struct ol_seg *back)
{
	pthread_t t;
	pthread_create(&t, NULL, new_span, back);
	pthread_join(t, NULL);
	CHECK(r_here, "the block of %zu B is not in the segment given back", cur->new_size);
	if (!r_here)
		return;
	CHECK(r_stale == 0, "%u of the %u records of blocks never handed out (and the sentinel) not zero", r_stale,
	      r_nb);
	CHECK(r_taken == 0, "%u frees of blocks never handed out taken (kp_free returned 0)", r_taken);
	CHECK(r_twice == 0, "%u blocks handed out twice", r_twice);
	CHECK(r_silent == 0, "%u frees of blocks never handed out with no event", r_silent);
	CHECK(r_usable == 0, "kp_usable_size of %u blocks never handed out not 0 (up to %zu bytes)", r_usable,
	      r_usable_max);
	CHECK(r_realloc == 0, "a realloc of a block never handed out served");
	printf("   stale records %u, frees taken %u, frees with no event %u, handed out twice %u, usable sizes not 0 "
	       "%u "
	       "(up to %zu), realloc served %u\n",
	       r_stale, r_taken, r_silent, r_twice, r_usable, r_usable_max, r_realloc);
}

static void scenario(const struct scen *sc)
{
	cur = sc;
	pool = kp_create(sc->conf);
	REQUIRE(pool, "kp_create: %s", kp_last_error());
	kp__ol *ol = pool->ol;
	pthread_t t;
	pthread_create(&t, NULL, old_span, NULL);
	pthread_join(t, NULL);
	kp_daemon_step(pool, 1);
	if (sc->fault)
		REQUIRE(kp_fault_inject(pool, sc->fault) == 0, "kp_fault_inject: %s", kp_last_error());
	/* mlock'ed pages: MADV_DONTNEED says EINVAL (madvise(2)), as for a
	 * program that called mlockall */
	uint8_t *lk = NULL;
	size_t lkn = 0;
	if (sc->locked) {
		struct ol_seg *s = kp__ol_meta_of(pool, old_first);
		REQUIRE(s, "the old span's segment");
		lk = (uint8_t *)(((uintptr_t)(s + 1) + KP_PAGE - 1) & ~(uintptr_t)(KP_PAGE - 1));
		lkn = (((uintptr_t)s->bump + KP_PAGE - 1) & ~(uintptr_t)(KP_PAGE - 1)) - (uintptr_t)lk;
		long vm0 = kt_status_kb("VmLck");
		if (mlock(lk, lkn) != 0 || kt_status_kb("VmLck") <= vm0) {
			/* ASan's and TSan's mlock is a no-op that says 0 */
			printf("   mlock refused or a no-op: not run\n");
			kp_destroy(pool);
			return;
		}
	}
	kp_daemon_step(pool, 1000);
	if (sc->fault)
		kp_fault_inject(pool, "all@off");
	if (lk)
		munlock(lk, lkn);
	REQUIRE(atomic_load(&ol->returned) == 1, "%llu segments given back, not 1",
		(unsigned long long)atomic_load(&ol->returned));
	struct ol_seg *back = ol->spare;
	while (back && !back->used)
		back = back->next;
	REQUIRE(back, "the segment given back is not among the spares");
	static void *chew[4096];
	int nchew = 0;
	while (ol->spare != back && nchew < 4096 && (chew[nchew] = kp_alloc(pool, CHEW_SIZE, 0)) != NULL)
		nchew++;
	REQUIRE(ol->spare == back, "the segment given back not at the spares' head after %d blocks", nchew);
	if (sc->fork_between) {
		fflush(stdout);
		pid_t pid = fork();
		if (pid == 0) {
			ktest_failed_ = 0;
			retake(back);
			fflush(stdout);
			_exit(ktest_failed_ ? 1 : 0);
		}
		int st = 0;
		waitpid(pid, &st, 0);
		CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "the fork child's retake failed (status %#x)", st);
	} else {
		retake(back);
	}
	kp_destroy(pool);
}

#define OFF "layout:outline,daemon:off,step_clock:on,seed:3,decay_ms:1000,checks:off"
#define ON "layout:outline,daemon:off,step_clock:on,seed:3,decay_ms:1000,checks:on"

/* held: layouts whose old arrays reach past the record's page */
static void test_return_meta_layouts(void)
{
	static const struct scen s[] = {
		{OFF, 8, 4096, 40, NULL, false, false},	  {OFF, 40, 1365, 8, NULL, false, false},
		{OFF, 8, 2048, 1000, NULL, false, false}, {OFF, 100, 600, 8, NULL, false, false},
		{ON, 8, 2048, 1000, NULL, false, false},  {ON, 40, 1000, 100, NULL, false, false},
	};
	for (size_t i = 0; i < sizeof s / sizeof s[0]; i++) {
		printf("   old %zu B x %d, new %zu B, %s\n", s[i].old_size, s[i].old_n, s[i].new_size,
		       strstr(s[i].conf, "checks:on") ? "checks on" : "checks off");
		scenario(&s[i]);
	}
}

static void test_return_meta_fork(void)
{
	static const struct scen s = {OFF, 8, 4096, 40, NULL, true, false};
	scenario(&s);
}

/* Failed before meta_discard (s28-att): return_idle's metadata purge refused */
static void test_return_meta_madvise_refused(void)
{
	static const struct scen s = {OFF, 8, 4096, 40, "madvise@every=1", false, false};
	scenario(&s);
}

/* Failed before meta_discard (s28-att): mincore refused, the purge skips the range */
static void test_return_meta_mincore_refused(void)
{
	static const struct scen s = {OFF, 8, 4096, 40, "other@every=1", false, false};
	scenario(&s);
}

/* Failed before meta_discard (s28-att): checks on, the purge refused */
static void test_return_meta_madvise_refused_checks(void)
{
	static const struct scen s = {ON, 8, 4096, 40, "madvise@every=1", false, false};
	scenario(&s);
}

/* Failed before meta_discard (s28-att): no fault injected, the metadata mlock'ed */
static void test_return_meta_mlocked(void)
{
	static const struct scen s = {OFF, 8, 4096, 40, NULL, false, true};
	scenario(&s);
}

int main(void)
{
	RUN(test_return_meta_layouts);
	RUN(test_return_meta_fork);
	RUN(test_return_meta_madvise_refused);
	RUN(test_return_meta_mincore_refused);
	RUN(test_return_meta_madvise_refused_checks);
	RUN(test_return_meta_mlocked);
	return ktest_summary();
}
