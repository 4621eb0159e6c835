/*
 * test_outline_race.c - layout:outline: a double free raced between a
 * block's owner thread and another thread (outline.c, "Threads"). The
 * owner's free stores the record's state without an atomic (no locked
 * instruction on kp_free's fast path); the other thread's is a
 * compare-and-swap from the state it read. Both can read the block live and
 * both be taken; the other thread's block is then in its foreign cache and
 * on the owner's stack at once, and was handed out twice (s23: 5 of 200,000
 * trials, no event). Each case here must give exactly one double_free per
 * double free, at the frees or as the cached block is next taken, and never
 * a block handed out twice.
 */
#define _GNU_SOURCE 1
#include "ktest.h"
#include "kt_worker.h"
#include "outline.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>

static const char *const CONF_ON = "layout:outline,daemon:off,seed:7";
static const char *const CONF_OFF = "layout:outline,daemon:off,seed:7,checks:off";
/* a 64-byte block with its canary (56 + 8; with checks off the 64-byte
 * class too): 64 of them in a foreign cache. A lender's class (outline.c,
 * LEND), whose heaps pop spans of its own from their first block: a young
 * heap's 48-byte blocks (40 bytes, s37) come from its 64-byte class's
 * span, and the other thread's cache of the 64-byte class held the block
 * its 48-byte allocation never took (test_race_checks_off: 37 of 172,495
 * trials with no double_free by the trial's end, the outcomes' 0 of 1) */
#define SZ 56

static uint64_t dfree_count(kp_pool *pool)
{
	return atomic_load(&pool->double_frees);
}

/* The event ring drained (its double frees are counted in the pool's
 * counter, read above): it holds 4,096 and a trial may add one. */
static void ring_drain(kp_pool *pool)
{
	kp_event ev[64];
	while (kp_events_drain(pool, ev, 64) > 0)
		;
}

/* ---- the race ------------------------------------------------------------ */

/* Two threads meet: a counter and a generation, spinning (a condition
 * variable's wake-up takes microseconds: the two frees would seldom meet),
 * yielding after a while (2 vCPUs shared with other jobs). */
struct sbar {
	_Atomic unsigned count, gen;
};
static void sbar_wait(struct sbar *b)
{
	unsigned g = atomic_load_explicit(&b->gen, memory_order_acquire);
	if (atomic_fetch_add_explicit(&b->count, 1, memory_order_acq_rel) == 1) {
		atomic_store_explicit(&b->count, 0, memory_order_relaxed);
		atomic_fetch_add_explicit(&b->gen, 1, memory_order_release);
		return;
	}
	for (unsigned s = 0; atomic_load_explicit(&b->gen, memory_order_acquire) == g; s++)
		if (s > 2000)
			sched_yield();
		else
			__builtin_ia32_pause();
}

/* A few iterations of nothing, 0..15 by the trial: the two frees start at
 * every small offset of each other, either first. */
static void jitter(unsigned k)
{
	for (volatile unsigned i = 0; i < k; i++)
		;
}

#define KEEP 3000 /* blocks of the class each thread holds at the end */
static void keep_fill(kp_pool *pool, void **q, uint64_t salt)
{
	for (int i = 0; i < KEEP; i++)
		if ((q[i] = kp_alloc(pool, SZ, 0)) != NULL)
			kt_fill(q[i], SZ, salt + (uint64_t)i);
}

struct race {
	kp_pool *pool;
	struct sbar bar;
	void *_Atomic p;
	int rc_other;
	_Atomic bool stop;
	void *mine[2][KEEP]; /* the last blocks: the owner's, the other thread's */
};

/* The other thread: frees the trial's block, then allocates its class
 * once (its foreign cache's newest entry, the block, when its free was
 * taken) and frees that again. */
static void *race_other(void *arg)
{
	struct race *r = arg;
	for (long t = 0;; t++) {
		sbar_wait(&r->bar); /* A: the block is out */
		if (atomic_load(&r->stop)) {
			keep_fill(r->pool, r->mine[1], (uint64_t)1 << 32);
			sbar_wait(&r->bar); /* D: filled */
			sbar_wait(&r->bar); /* E: verified */
			for (int i = 0; i < KEEP; i++)
				kp_free(r->pool, r->mine[1][i]);
			break;
		}
		void *p = atomic_load_explicit(&r->p, memory_order_relaxed);
		jitter((unsigned)(t * 7) & 15);
		r->rc_other = kp_free(r->pool, p);
		sbar_wait(&r->bar); /* B: both frees made */
		void *q = kp_alloc(r->pool, SZ, 0);
		kp_free(r->pool, q);
		sbar_wait(&r->bar); /* C */
	}
	return NULL;
}

#if KT_TSAN
#define TRIALS 20000l
#elif KT_SANITIZED
#define TRIALS 50000l
#else
#define TRIALS 200000l
#endif
#define BOTH_ENOUGH 2000 /* trials in which both frees were taken: enough seen */

/* The owner (this thread) allocates a block, both threads free it at once,
 * the other thread allocates its class once. Every trial is one double
 * free: exactly one double_free by the end of the trial, whether one free
 * was refused or both were taken (then as the other thread's cache gives
 * the block up). Then blocks of the class from both threads: no two share
 * a byte. */
static void race_run(const char *conf)
{
	kp_pool *pool = kp_create(conf);
	REQUIRE(pool, "kp_create: %s", kp_last_error());
	static struct race r;
	memset(&r, 0, sizeof r);
	r.pool = pool;
	pthread_t t;
	REQUIRE(pthread_create(&t, NULL, race_other, &r) == 0, "pthread_create");
	long both = 0, silent = 0, wrong = 0, refused_owner = 0, trials = 0;
	for (; trials < TRIALS && both < BOTH_ENOUGH; trials++) {
		void *p = kp_alloc(pool, SZ, 0);
		if (!p) {
			wrong++;
			break;
		}
		uint64_t d0 = dfree_count(pool);
		atomic_store_explicit(&r.p, p, memory_order_relaxed);
		sbar_wait(&r.bar); /* A */
		jitter((unsigned)(trials * 5 + 3) & 15);
		int rc = kp_free(pool, p);
		sbar_wait(&r.bar); /* B */
		sbar_wait(&r.bar); /* C: the other thread allocated once */
		uint64_t d = dfree_count(pool) - d0;
		refused_owner += rc != 0;
		if (rc == 0 && r.rc_other == 0) {
			both++;
			silent += d == 0;
		}
		if (d != 1 && wrong++ < 5)
			fprintf(stderr, "  trial %ld: %llu double frees (owner %d, other %d)\n", trials,
				(unsigned long long)d, rc, r.rc_other);
		if ((trials & 1023) == 0)
			ring_drain(pool);
	}
	atomic_store(&r.stop, true);
	sbar_wait(&r.bar); /* A */
	keep_fill(pool, r.mine[0], 0);
	sbar_wait(&r.bar); /* D */
	long bad = 0;
	for (int k = 0; k < 2; k++)
		for (int i = 0; i < KEEP; i++)
			bad += !r.mine[k][i] || kt_verify(r.mine[k][i], SZ, ((uint64_t)k << 32) + (uint64_t)i) != KT_OK;
	sbar_wait(&r.bar); /* E */
	for (int i = 0; i < KEEP; i++)
		kp_free(pool, r.mine[0][i]);
	pthread_join(t, NULL);
	fprintf(stderr, "  %s: %ld trials, %ld both taken (%ld without an event), %ld refused by the owner\n", conf,
		trials, both, silent, refused_owner);
	CHECK(silent == 0, "%ld of %ld trials: both frees taken, no double_free", silent, trials);
	CHECK(wrong == 0, "%ld of %ld trials without exactly one double_free", wrong, trials);
	CHECK(bad == 0, "%ld of %d blocks the two threads held at the end overwritten (a block handed out twice)", bad,
	      2 * KEEP);
	ring_drain(pool);
	kp_destroy(pool);
}

static void test_race_checks_on(void)
{
	race_run(CONF_ON);
}

static void test_race_checks_off(void)
{
	race_run(CONF_OFF);
}

/* ---- the race's outcome, made on purpose ---------------------------------- */

/* The owner's free as it goes when it read the record before the other
 * thread's compare-and-swap: the record and the canary as it read them put
 * back (white box), then kp_free. */
struct seen {
	uint32_t state;
	uint64_t canary;
};
static KT_RAW struct seen seen_of(kp_pool *pool, void *p)
{
	struct ol_span *pg = kp__ol_map_span(pool->ol->map, (uintptr_t)p >> OL_SLICE_SHIFT);
	struct ol_rec *r = &pg->rec[((uintptr_t)p - (uintptr_t)pg->start) / pg->bsize];
	struct seen s = {__atomic_load_n(&r->state, __ATOMIC_RELAXED), 0};
	if (pg->csz)
		memcpy(&s.canary, (uint8_t *)p + s.state - 1, 8);
	return s;
}
static KT_RAW int owner_free_as_seen(kp_pool *pool, void *p, struct seen s)
{
	struct ol_span *pg = kp__ol_map_span(pool->ol->map, (uintptr_t)p >> OL_SLICE_SHIFT);
	struct ol_rec *r = &pg->rec[((uintptr_t)p - (uintptr_t)pg->start) / pg->bsize];
	__atomic_store_n(&r->state, s.state, __ATOMIC_RELAXED);
	if (pg->csz)
		memcpy((uint8_t *)p + s.state - 1, &s.canary, 8);
	return kp_free(pool, p);
}

struct call {
	kp_pool *pool;
	void *p;
	int rc;
	void *got[128];
	int n;
};
static void other_free(void *arg)
{
	struct call *c = arg;
	c->rc = kp_free(c->pool, c->p);
}
static void other_alloc(void *arg)
{
	struct call *c = arg;
	for (int i = 0; i < c->n; i++)
		c->got[i] = kp_alloc(c->pool, SZ, 0);
}
static void other_free_got(void *arg)
{
	struct call *c = arg;
	for (int i = 0; i < c->n; i++)
		kp_free(c->pool, c->got[i]);
}

/* n blocks of the class from this thread, none of them handed out twice
 * (with *p among them once at most): distinct, and each filled with its own
 * pattern, verified once all are out. Freed again. */
static int owner_allocs_distinct(kp_pool *pool, int n, void *p, int *seen_p)
{
	static void *q[4096];
	int bad = 0;
	*seen_p = 0;
	for (int i = 0; i < n; i++) {
		q[i] = kp_alloc(pool, SZ, 0);
		*seen_p += q[i] == p;
		kt_fill(q[i], SZ, (uint64_t)i);
	}
	for (int i = 0; i < n; i++)
		bad += kt_verify(q[i], SZ, (uint64_t)i) != KT_OK;
	for (int i = 0; i < n; i++)
		kp_free(pool, q[i]);
	return bad;
}

/* Taken by the other thread's next allocation: the block is refused there
 * (one double_free) and stays the owner's: the owner's next allocation
 * returns it, the other thread's none of its. */
static void test_outcome_cache_pop(void)
{
	kp_pool *pool = kp_create(CONF_ON);
	REQUIRE(pool, "kp_create: %s", kp_last_error());
	worker w;
	w_start(&w);
	struct call c = {.pool = pool, .n = 8};
	w_call(&w, other_alloc, &c); /* the other thread's heap, its spans */
	w_call(&w, other_free_got, &c);
	void *p = kp_alloc(pool, SZ, 0);
	struct seen s = seen_of(pool, p);
	c.p = p;
	w_call(&w, other_free, &c);
	int rc = owner_free_as_seen(pool, p, s);
	CHECK(c.rc == 0 && rc == 0, "frees: other %d, owner %d", c.rc, rc);
	uint64_t d0 = dfree_count(pool);
	c.n = 4;
	w_call(&w, other_alloc, &c);
	int hits = 0;
	for (int i = 0; i < c.n; i++)
		hits += c.got[i] == p;
	CHECK(hits == 0, "the block handed out by the other thread's cache too");
	CHECK(dfree_count(pool) - d0 == 1, "%llu double frees as the other thread took its cache",
	      (unsigned long long)(dfree_count(pool) - d0));
	void *o = kp_alloc(pool, SZ, 0);
	CHECK(o == p, "the owner's next block %p, not %p (its stack's top)", o, p);
	kp_free(pool, o);
	w_call(&w, other_free_got, &c);
	int seen_p, bad = owner_allocs_distinct(pool, 2000, p, &seen_p);
	CHECK(bad == 0 && seen_p == 1, "%d blocks overwritten, the block handed out %d times", bad, seen_p);
	CHECK(dfree_count(pool) - d0 == 1, "later valid frees reported");
	w_stop(&w);
	kp_destroy(pool);
}

/* The other thread's cache given back as the thread ends (heap_abandon) or
 * as it overflows (fc_flush): the block is refused there, once, and never
 * reaches its span's cross-thread list (the owner's stack has it). */
static void outcome_flush(bool by_exit)
{
	kp_pool *pool = kp_create(CONF_ON);
	REQUIRE(pool, "kp_create: %s", kp_last_error());
	worker w;
	w_start(&w);
	struct call c = {.pool = pool, .n = 8};
	w_call(&w, other_alloc, &c);
	w_call(&w, other_free_got, &c);
	static void *more[200];
	for (int i = 0; i < 200; i++)
		more[i] = kp_alloc(pool, SZ, 0);
	void *p = kp_alloc(pool, SZ, 0);
	struct seen s = seen_of(pool, p);
	c.p = p;
	w_call(&w, other_free, &c);
	int rc = owner_free_as_seen(pool, p, s);
	CHECK(c.rc == 0 && rc == 0, "frees: other %d, owner %d", c.rc, rc);
	uint64_t d0 = dfree_count(pool);
	if (by_exit) {
		w_stop(&w); /* its heap abandoned: the cache back to the spans */
	} else {
		for (int i = 0; i < 200; i++) { /* past the cache's 64 a class: the oldest half back */
			c.p = more[i];
			w_call(&w, other_free, &c);
			more[i] = NULL;
		}
	}
	CHECK(dfree_count(pool) - d0 == 1, "%llu double frees as the cache went back",
	      (unsigned long long)(dfree_count(pool) - d0));
	/* the owner takes in its lists as its spans run dry: 4,000 blocks */
	int seen_p, bad = owner_allocs_distinct(pool, 4000, p, &seen_p);
	CHECK(bad == 0 && seen_p == 1, "%d blocks overwritten, the block handed out %d times", bad, seen_p);
	CHECK(dfree_count(pool) - d0 == 1, "%llu double frees in all, want 1",
	      (unsigned long long)(dfree_count(pool) - d0));
	if (!by_exit)
		w_stop(&w);
	for (int i = 0; i < 200; i++)
		if (more[i])
			kp_free(pool, more[i]);
	kp_destroy(pool);
}
static void test_outcome_exit_flush(void)
{
	outcome_flush(true);
}
static void test_outcome_full_flush(void)
{
	outcome_flush(false);
}

/* The owner's store after the other thread's cache gave the block back to
 * its span's list (the owner's free read the record before the other's
 * compare-and-swap and stored after the flush): the owner's drain refuses
 * the listed block, once; the block is handed out once. */
static void test_outcome_listed(void)
{
	kp_pool *pool = kp_create(CONF_ON);
	REQUIRE(pool, "kp_create: %s", kp_last_error());
	worker w;
	w_start(&w);
	struct call c = {.pool = pool, .n = 8};
	w_call(&w, other_alloc, &c);
	w_call(&w, other_free_got, &c);
	void *p = kp_alloc(pool, SZ, 0);
	struct seen s = seen_of(pool, p);
	c.p = p;
	w_call(&w, other_free, &c);
	w_stop(&w); /* the cache back: the block on its span's list */
	uint64_t d0 = dfree_count(pool);
	int rc = owner_free_as_seen(pool, p, s);
	CHECK(c.rc == 0 && rc == 0, "frees: other %d, owner %d", c.rc, rc);
	int seen_p, bad = owner_allocs_distinct(pool, 4000, p, &seen_p);
	CHECK(bad == 0 && seen_p == 1, "%d blocks overwritten, the block handed out %d times", bad, seen_p);
	CHECK(dfree_count(pool) - d0 == 1, "%llu double frees, want 1", (unsigned long long)(dfree_count(pool) - d0));
	kp_destroy(pool);
}

int main(void)
{
	RUN(test_outcome_cache_pop);
	RUN(test_outcome_exit_flush);
	RUN(test_outcome_full_flush);
	RUN(test_outcome_listed);
	RUN(test_race_checks_on);
	RUN(test_race_checks_off);
	return ktest_summary();
}
