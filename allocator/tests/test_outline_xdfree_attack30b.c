/*
 * test_outline_xdfree_attack30b.c - s30-att2: OL_LINK_ON (fb621b7: a block
 * is pushed onto its span's cross-thread list only while it is on none)
 * under many double frees across threads at once, then the blocks handed
 * out again and freed across threads in quick succession, with thread
 * exits and adoptions, the daemon's passes (kp_daemon_step, decay_ms 20)
 * and, in the second test, fork() in the middle.
 *
 * Each generation starts NT new threads (so the last generation's heaps,
 * abandoned at exit, are adopted) for ROUNDS rounds of:
 *  A. each thread allocates M blocks (sizes of a few classes, so that
 *     spans are shared by many frees), fills each with a pattern from its
 *     address; thread 0 then checks that no two live blocks overlap and
 *     every live block keeps its pattern;
 *  B. the same walk over j in every thread: block j of owner o is freed by
 *     the threads o + d for each d of its kind's set (j % 5: {0,1} the
 *     owner and one other at once, {0,1,2} the owner and two others, {1}
 *     one other, {1,3} two others, {} kept live; and a free of an interior
 *     pointer of a kept one): every free past the first is a bad free.
 *     Nothing is allocated in B, so the window outline.c's opening comment
 *     leaves (an owner's free held between its load and its store while
 *     the other thread takes the block again from its cache) is never met;
 *  C. each thread allocates blocks of the same classes and hands each to
 *     the next thread, which checks and frees it (cross-thread, valid):
 *     the blocks B left on a list and a stack at once are handed out here,
 *     freed across threads again (listed_already), and the owners' drains
 *     and other heaps' fc_steal walk the lists while pushes arrive. A set
 *     of live addresses (insert at allocation, compare-and-swap, no
 *     tombstone reused) finds a block handed out twice;
 *  D. the owners free their kept blocks. In the last round the odd threads
 *     exit right after B, their heaps abandoned (foreign caches flushed,
 *     lists taken in) while the even ones' racing frees of B go on, and the
 *     even ones free the odd ones' kept blocks into the abandoned heaps (no
 *     C; the fork test's last round is as the others).
 * Asserted: no block handed out twice, none overlapping, every pattern
 * intact; double_free + invalid_free == the bad frees made, invalid_free
 * past the interior ones only for frees into memory given back (as
 * test_outline_purge_live_attack27); no overflow event; and at the end,
 * quiescent, every span's cross-thread list no longer than its blocks and
 * as long as its nremote says (no cycle, no count wrapped).
 *
 * test_outline_fork_xfree_attack30b.c (this file with XD_FORK) runs the
 * same, every free valid, with a thread that forks meanwhile; each
 * child (one thread left) starts NT threads, which get the parent's
 * threads' stacks and so their heaps (kp__ol_fork: "adopted by whichever
 * new thread gets their thread pointers"), allocate and free across
 * threads and report: no double_free or invalid_free event in the child
 * (it makes no bad free), no block handed out twice, no pattern broken,
 * done within CHILD_S.
 */
#define _GNU_SOURCE 1
#include "ktest.h"
#include "outline.h"

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#define NT 4
#define M 800 /* blocks a thread a round: a few spans of each class */
#define ROUNDS 4
#define CPASS 3000 /* phase C's blocks a thread a round */
#define CHILD_S 20 /* a child's bound: its work takes well under a second */

static kp_pool *pool;
static pthread_barrier_t bar, bar_even;
static struct slot {
	unsigned char *p;
	size_t n;
	int freed;
} sl[NT][M];
static _Atomic uint64_t exp_bad, exp_inv, gone, bad_pattern, overlaps, twice, live_checked, cfrees;
static _Atomic int stop;
static _Atomic unsigned b_done; /* threads done with the last round's B */
static _Atomic unsigned c_done; /* threads done with C, all rounds of all generations of a run */
static unsigned gen_round;	/* rounds before this generation's */
static unsigned gen_no;

/* Sizes: 40 B (48-byte class, a cache of 64), 100 B, 1000 B, 7000 B (a
 * cache of one, 36 a span), 16 B and 65,000 B (the class edges). */
static size_t pick(uint64_t *s)
{
	static const size_t sz[] = {40, 40, 40, 100, 100, 1000, 7000, 7000, 1, 65000 - 8};
	return sz[kt_rand(s) % (sizeof sz / sizeof sz[0])];
}

/* ---- a set of live addresses ------------------------------------------ */
#define SET_N ((size_t)1 << 21) /* slots: the inserts of a generation (NT x (ROUNDS x (M + CPASS))) x 20 */
#define TOMB ((uintptr_t)1)
static _Atomic uintptr_t *set;
static size_t set_hash(uintptr_t a)
{
	return (size_t)((a >> 4) * 0x9E3779B97F4A7C15ull >> 43) & (SET_N - 1);
}
/* false: a is live already (handed out twice) */
static bool set_add(uintptr_t a)
{
	for (size_t i = set_hash(a), k = 0; k < SET_N; i = (i + 1) & (SET_N - 1), k++) {
		uintptr_t v = atomic_load_explicit(&set[i], memory_order_acquire);
		if (v == a)
			return false;
		if (v == 0) {
			if (atomic_compare_exchange_strong(&set[i], &v, a))
				return true;
			if (v == a)
				return false;
		}
	}
	abort(); /* full: SET_N too small */
}
static void set_del(uintptr_t a)
{
	for (size_t i = set_hash(a), k = 0; k < SET_N; i = (i + 1) & (SET_N - 1), k++) {
		uintptr_t v = a;
		if (atomic_compare_exchange_strong(&set[i], &v, TOMB))
			return;
		if (v == 0)
			return; /* not there: its free was the pool's to judge */
	}
}
static void set_clear(void)
{
	memset((void *)set, 0, SET_N * sizeof *set);
}

static void *take(size_t n)
{
	unsigned char *p = kp_alloc(pool, n, 0);
	if (!p)
		return NULL;
	if (!set_add((uintptr_t)p)) {
		atomic_fetch_add(&twice, 1);
		fprintf(stderr, "handed out twice: %p (%zu bytes) gen %u\n", (void *)p, n, gen_no);
	}
	kt_fill(p, n, n);
	return p;
}
static void check(const unsigned char *p, size_t n)
{
	size_t at = kt_verify(p, n, n);
	if (at != KT_OK) {
		atomic_fetch_add(&bad_pattern, 1);
		fprintf(stderr, "pattern broken: %p (%zu bytes) at %zu gen %u\n", (const void *)p, n, at, gen_no);
	}
}
static void give(unsigned char *p, size_t n)
{
	check(p, n);
	set_del((uintptr_t)p);
	kp_free(pool, p);
}

static int cmpp(const void *a, const void *b)
{
	const struct slot *x = *(struct slot *const *)a, *y = *(struct slot *const *)b;
	return x->p < y->p ? -1 : x->p > y->p;
}
static struct slot *all[NT * M];
static void check_overlap(void)
{
	size_t k = 0;
	for (int t = 0; t < NT; t++)
		for (int j = 0; j < M; j++)
			if (sl[t][j].p && !sl[t][j].freed)
				all[k++] = &sl[t][j];
	qsort(all, k, sizeof *all, cmpp);
	for (size_t i = 0; i < k; i++)
		check(all[i]->p, all[i]->n);
	for (size_t i = 1; i < k; i++)
		if (all[i - 1]->p + all[i - 1]->n > all[i]->p) {
			atomic_fetch_add(&overlaps, 1);
			fprintf(stderr, "overlap %p+%zu %p\n", (void *)all[i - 1]->p, all[i - 1]->n, (void *)all[i]->p);
		}
	live_checked += k;
}

/* B's freers of block j, as distances from its owner */
static bool clean; /* the fork test's: every free valid (one freer, no interior pointer) */
static int freers(int j, int d[3])
{
	if (clean) {
		d[0] = 1;
		return j % 5 != 4;
	}
	switch (j % 5) {
	case 0: d[0] = 0, d[1] = 1; return 2;
	case 1: d[0] = 0, d[1] = 1, d[2] = 2; return 3;
	case 2: d[0] = 1; return 1;
	case 3: d[0] = 1, d[1] = 3; return 2;
	default: return 0;
	}
}

/* A racing free: counted in gone when the pool no longer knows the pointer
 * after it (its segment given back: an invalid free, not a double one). */
static void free_maybe_gone(void *p)
{
	kp_free(pool, p);
	if (!kp__ol_knows(pool, p))
		atomic_fetch_add(&gone, 1);
}

/* C's hand-over: one ring per receiving thread */
#define RING 256
static struct ring {
	struct {
		unsigned char *_Atomic p;
		size_t n;
	} e[RING];
	_Atomic unsigned long put, took;
} rings[NT];

static void ring_take_all(int t, bool wait_all, unsigned long want)
{
	struct ring *r = &rings[t];
	for (;;) {
		unsigned long k = atomic_load(&r->took);
		if (k == atomic_load(&r->put)) {
			if (!wait_all || k >= want)
				return;
			sched_yield();
			continue;
		}
		unsigned char *p;
		while ((p = atomic_load(&r->e[k % RING].p)) == NULL)
			sched_yield();
		size_t n = r->e[k % RING].n;
		atomic_store(&r->e[k % RING].p, NULL);
		atomic_store(&r->took, k + 1);
		give(p, n);
		atomic_fetch_add(&cfrees, 1);
	}
}

static void b_begin(bool on);
static void *worker(void *arg)
{
	int t = (int)(intptr_t)arg;
	uint64_t seed = (uint64_t)t * 7919 + gen_no * 31 + 1;
	for (int round = 0; round < ROUNDS; round++) {
		bool last = round == ROUNDS - 1;
		for (int j = 0; j < M; j++) { /* A */
			struct slot *s = &sl[t][j];
			s->n = pick(&seed);
			s->p = take(s->n);
			s->freed = 0;
		}
		pthread_barrier_wait(&bar);
		if (t == 0) {
			check_overlap();
			b_begin(true);
		}
		pthread_barrier_wait(&bar);
		for (int j = 0; j < M; j++) { /* B */
			int d[3], nf = freers(j, d);
			for (int k = 0; k < nf; k++) {
				int o = (t - d[k] + NT) % NT;
				struct slot *s = &sl[o][j];
				if (!s->p)
					continue;
				if (k == 0)
					set_del((uintptr_t)s->p);
				free_maybe_gone(s->p);
				if (k > 0)
					atomic_fetch_add(&exp_bad, 1);
			}
			if (!clean && j % 5 == 4 && j % 3 == 0) { /* an interior pointer of o's kept block */
				struct slot *s = &sl[(t + 1) % NT][j];
				if (s->p && s->n > 16) {
					kp_free(pool, s->p + 16);
					atomic_fetch_add(&exp_inv, 1);
				}
			}
		}
		if (last && !clean) {
			/* the odd threads end at once, their heaps abandoned while
			 * the even ones' racing frees of B may still go on (to
			 * their caches, their lists); the even ones free the odd
			 * ones' kept blocks into the abandoned heaps */
			atomic_fetch_add(&b_done, 1);
			if (t & 1)
				return NULL;
			pthread_barrier_wait(&bar_even);
			if (t == 0) { /* every thread's B done (the odd ones' too) */
				while (atomic_load(&b_done) < NT)
					sched_yield();
				b_begin(false);
			}
			for (int tt = t; tt <= t + 1; tt++)
				for (int j = 0; j < M; j++) {
					struct slot *s = &sl[tt][j];
					if (s->p && j % 5 == 4) {
						give(s->p, s->n);
						s->freed = 1;
					}
				}
			return NULL;
		}
		pthread_barrier_wait(&bar);
		if (t == 0)
			b_begin(false);
		for (int j = 0; j < M; j++)
			if (sl[t][j].p && j % 5 != 4)
				sl[t][j].freed = 1;
		/* C: hand-overs to the next thread, taken in while handing */
		struct ring *r = &rings[(t + 1) % NT];
		for (int i = 0; i < CPASS; i++) {
			size_t n = pick(&seed);
			unsigned char *p = take(n);
			unsigned long k = atomic_load(&r->put);
			while (k - atomic_load(&r->took) >= RING) {
				ring_take_all(t, false, 0);
				sched_yield();
			}
			if (p) {
				r->e[k % RING].n = n;
				atomic_store(&r->e[k % RING].p, p);
				atomic_store(&r->put, k + 1);
			}
			if (i % 8 == 0)
				ring_take_all(t, false, 0);
		}
		/* taken in until every thread has handed its last (a writer
		 * waits on its reader's room) */
		atomic_fetch_add(&c_done, 1);
		while (atomic_load(&c_done) < NT * (gen_round + round + 1)) {
			ring_take_all(t, false, 0);
			sched_yield();
		}
		ring_take_all(t, false, 0);
		pthread_barrier_wait(&bar);
		if (last && (t & 1)) /* D */
			return NULL;
		for (int tt = t; tt <= (last ? t + 1 : t); tt++)
			for (int j = 0; j < M; j++) {
				struct slot *s = &sl[tt][j];
				if (s->p && !s->freed) {
					give(s->p, s->n);
					s->freed = 1;
				}
			}
		if (!last)
			pthread_barrier_wait(&bar);
	}
	return NULL;
}

/* Under TSan no pass during B (test_outline_map_race_attack30b: a stale
 * free's load of the slice map against return_idle's clearing of it is a
 * race TSan reports; its own test, KNOWN_FAILING) */
static pthread_mutex_t step_mu = PTHREAD_MUTEX_INITIALIZER;
static bool in_b;
static void b_begin(bool on)
{
	if (!KT_TSAN)
		return;
	pthread_mutex_lock(&step_mu);
	in_b = on;
	pthread_mutex_unlock(&step_mu);
}
static void *stepper(void *arg)
{
	(void)arg;
	while (!atomic_load(&stop)) {
		pthread_mutex_lock(&step_mu);
		if (!in_b)
			kp_daemon_step(pool, 40);
		pthread_mutex_unlock(&step_mu);
		kp_event e[64];
		while (kp_events_drain(pool, e, 64) > 0)
			;
		usleep(200);
	}
	return NULL;
}

static unsigned lists_bad(void);

/* ---- the child of a fork -------------------------------------------------- */
static unsigned char *held[NT][512];
static size_t hn[NT][512];
static void *child_worker(void *arg)
{
	int t = (int)(intptr_t)arg;
	uint64_t seed = (uint64_t)t + 99;
	for (int i = 0; i < 4000; i++) {
		int k = i % 512;
		if (held[t][k])
			give(held[t][k], hn[t][k]);
		hn[t][k] = pick(&seed);
		held[t][k] = take(hn[t][k]);
	}
	return NULL;
}
/* The child's work: NT threads (the parent's stacks, their heaps), each
 * allocating and freeing, then freeing the others' blocks; its exit
 * status: 0 clean, 1 an event for a bad free it never made, 2 a block
 * handed out twice or a pattern broken. */
/* Entries of the heaps' foreign caches whose record is not their heap's
 * tag, as the fork left them: each a raced_dfree when taken (fc_pop,
 * fc_flush). */
static unsigned stale_entries(void)
{
	unsigned n = 0;
	for (struct ol_heap *h = pool->ol->heaps; h; h = h->next)
		for (int c = 0; c < OL_NCLASS; c++)
			for (unsigned k = 0; k < h->fc_n[c]; k++) {
				uint64_t e = kp__ol_fc_row(h, c)[k];
				struct ol_span *pg =
					(struct ol_span *)(uintptr_t)(e & (((uint64_t)1 << OL_FC_IDX_SHIFT) - 1));
				n += pg->rec[e >> OL_FC_IDX_SHIFT].state != h->rtag;
			}
	return n;
}
static int child_body(void)
{
	alarm(CHILD_S);
	unsigned stale = stale_entries();
	uint64_t df0 = atomic_load(&pool->double_frees), inv0 = atomic_load(&pool->invalid_frees);
	uint64_t ov0 = atomic_load(&pool->overflows);
	atomic_store(&twice, 0);
	atomic_store(&bad_pattern, 0);
	set_clear();
	for (int t = 0; t < NT; t++) { /* the rings' blocks stay with the dead threads: drop them */
		atomic_store(&rings[t].put, 0);
		atomic_store(&rings[t].took, 0);
	}
	pthread_t th[NT];
	for (int t = 0; t < NT; t++)
		pthread_create(&th[t], NULL, child_worker, (void *)(intptr_t)t);
	for (int t = 0; t < NT; t++)
		pthread_join(th[t], NULL);
	for (int t = 0; t < NT; t++) /* into the exited threads' heaps */
		for (int k = 0; k < 512; k++)
			if (held[t][k])
				give(held[t][k], hn[t][k]);
	uint64_t df = atomic_load(&pool->double_frees) - df0, inv = atomic_load(&pool->invalid_frees) - inv0;
	uint64_t ov = atomic_load(&pool->overflows) - ov0;
	if (df || inv || ov || stale)
		fprintf(stderr,
			"child: double_free %lu invalid_free %lu overflow %lu, none made; foreign-cache entries not "
			"their heap's tag at the fork: %u\n",
			(unsigned long)df, (unsigned long)inv, (unsigned long)ov, stale);
	unsigned lb = lists_bad(); /* quiescent: the child's threads are done */
	return atomic_load(&twice) || atomic_load(&bad_pattern) ? 2 : df || inv || ov ? 1 : lb ? 4 : 0;
}
static int forks, fork_fail[5];
static void *forker(void *arg)
{
	(void)arg;
	while (!atomic_load(&stop)) {
		usleep(1000);
		fflush(stderr);
		pid_t pid = fork();
		if (pid == 0)
			_exit(child_body());
		int st = 0;
		waitpid(pid, &st, 0);
		int k = WIFEXITED(st) ? WEXITSTATUS(st) : 3;
		fork_fail[k < 5 ? k : 3]++;
		if (k)
			fprintf(stderr, "fork %d: child status %d (signal %d)\n", forks, st,
				WIFSIGNALED(st) ? WTERMSIG(st) : 0);
		forks++;
	}
	return NULL;
}

/* Every span quiescent: its list walked (bounded), its length against its
 * nremote; the number of spans with a list longer than their blocks, or
 * not their count. */
static unsigned lists_bad(void)
{
	unsigned bad = 0, spans = 0, listed = 0;
	for (struct ol_seg *s = pool->ol->segs; s; s = s->next)
		for (uint32_t i = 0; i < s->used; i++) {
			struct ol_span *pg = &s->spans[i];
			if (!pg->start || !pg->link)
				continue;
			spans++;
			uint32_t n = 0, x = atomic_load(&pg->remote);
			while (x && x <= pg->nblocks && n <= pg->nblocks) {
				n++;
				x = pg->link[x - 1] & ~OL_LINK_ON;
			}
			uint32_t nr = atomic_load(&pg->nremote);
			listed += n;
			if (n > pg->nblocks || nr != n) {
				bad++;
				fprintf(stderr, "span %p (%u blocks of %u): list %u, nremote %u\n", (void *)pg->start,
					pg->nblocks, pg->bsize, n, nr);
			}
		}
	fprintf(stderr, "  %u spans, %u blocks listed at the end\n", spans, listed);
	return bad;
}

static void run(int gens, bool with_fork)
{
	pool = kp_create("layout:outline,daemon:off,seed:31,decay_ms:20");
	REQUIRE(pool, "create %s", kp_last_error());
	atomic_store(&stop, 0);
	clean = with_fork;
	atomic_store(&c_done, 0);
	gen_round = 0;
	pthread_t st, fk;
	pthread_create(&st, NULL, stepper, NULL);
	if (with_fork)
		pthread_create(&fk, NULL, forker, NULL);
	uint64_t t0 = kt_now_ms();
	for (gen_no = 0; gen_no < (unsigned)gens; gen_no++) {
		set_clear();
		pthread_barrier_init(&bar, NULL, NT);
		pthread_barrier_init(&bar_even, NULL, NT / 2);
		atomic_store(&b_done, 0);
		pthread_t th[NT];
		for (int t = 0; t < NT; t++)
			pthread_create(&th[t], NULL, worker, (void *)(intptr_t)t);
		for (int t = 0; t < NT; t++)
			pthread_join(th[t], NULL);
		pthread_barrier_destroy(&bar);
		pthread_barrier_destroy(&bar_even);
		gen_round += clean ? ROUNDS : ROUNDS - 1; /* rounds with a C */
	}
	atomic_store(&stop, 1);
	pthread_join(st, NULL);
	if (with_fork)
		pthread_join(fk, NULL);
	/* the abandoned heaps' lists taken in: a thread's refills of each class */
	for (int i = 0; i < 3; i++) {
		static void *q[4000];
		for (int j = 0; j < 4000; j++)
			q[j] = kp_alloc(pool, pick(&(uint64_t){(uint64_t)j * 3 + 1}), 0);
		for (int j = 0; j < 4000; j++)
			kp_free(pool, q[j]);
	}
	kp_thread_flush(pool);
	uint64_t df = atomic_load(&pool->double_frees), inv = atomic_load(&pool->invalid_frees),
		 ov = atomic_load(&pool->overflows);
	printf("  %d generations (%lu ms): live checked %lu, cross frees %lu; double_free %lu + invalid_free %lu "
	       "(expected %lu + %lu, %lu frees into memory given back); overflow %lu; handed out twice %lu, "
	       "overlaps %lu, patterns broken %lu\n",
	       gens, (unsigned long)(kt_now_ms() - t0), (unsigned long)live_checked, (unsigned long)cfrees,
	       (unsigned long)df, (unsigned long)inv, (unsigned long)exp_bad, (unsigned long)exp_inv,
	       (unsigned long)gone, (unsigned long)ov, (unsigned long)twice, (unsigned long)overlaps,
	       (unsigned long)bad_pattern);
	if (with_fork)
		printf("  forks %d: children clean %d, bad-free events %d, handed out twice %d, died %d, a list not "
		       "its "
		       "count %d\n",
		       forks, fork_fail[0], fork_fail[1], fork_fail[2], fork_fail[3], fork_fail[4]);
	CHECK(twice == 0 && overlaps == 0 && bad_pattern == 0, "a block handed out twice or overwritten");
	CHECK(df + inv == exp_bad + exp_inv, "bad frees %lu reported as %lu", (unsigned long)(exp_bad + exp_inv),
	      (unsigned long)(df + inv));
	CHECK(inv >= exp_inv && inv - exp_inv <= gone, "invalid frees %lu, expected %lu and up to %lu given back",
	      (unsigned long)inv, (unsigned long)exp_inv, (unsigned long)gone);
	CHECK(ov == 0, "%lu overflow events, nothing written past a request", (unsigned long)ov);
	CHECK(lists_bad() == 0, "a span's list not its count");
	if (with_fork) {
		CHECK(forks > 0, "no fork made");
		CHECK(fork_fail[0] == forks,
		      "%d of %d children failed (1: events for bad frees not made, 2: a block "
		      "handed out twice, 3: died or hung, 4: a list not its count)",
		      forks - fork_fail[0], forks);
	}
	kp_destroy(pool);
	atomic_store(&exp_bad, 0), atomic_store(&exp_inv, 0), atomic_store(&gone, 0);
}

static int gens_arg = 0;
#ifndef XD_FORK
static void test_double_frees_across_threads_then_handed_over(void)
{
	run(gens_arg ? gens_arg : KT_SANITIZED ? 6 : 40, false);
}
#else
static void test_the_same_with_fork_meanwhile(void)
{
	if (KT_TSAN) { /* TSan's die_after_fork: a child of a threaded parent may start no thread */
		printf("  skipped under TSan\n");
		return;
	}
	run(gens_arg ? gens_arg : KT_SANITIZED ? 4 : 20, true);
}
#endif

int main(int argc, char **argv)
{
	gens_arg = argc > 1 ? atoi(argv[1]) : 0;
	set = calloc(SET_N, sizeof *set);
	if (!set)
		return 1;
#ifndef XD_FORK
	RUN(test_double_frees_across_threads_then_handed_over);
#else
	RUN(test_the_same_with_fork_meanwhile);
#endif
	return ktest_summary();
}
