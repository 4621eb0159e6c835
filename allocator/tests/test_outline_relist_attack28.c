/*
 * test_outline_relist_attack28.c - s28-att: a span listed twice, a live
 * block handed out twice or zeroed, a bad free not reported, around the
 * relisting of retired spans (outline.c: span_relist_locked, drain_span,
 * busy_later, heap_abandon) and the daemon's purge_idle / return_idle.
 *
 * Each generation: NT threads allocate M blocks each (1 B - 64 KB, mostly
 * small: many spans retire full), fill them; each frees the even blocks of
 * the next thread (cross-thread: foreign caches, lists, the owner's drain
 * relisting its retired spans) while the owners free their blocks of
 * every third slot (the owner's relist racing the others' frees into the
 * same spans); then each frees again a few it freed (double frees: no block
 * was handed out in between, so each must be refused and reported) and
 * interior pointers of live blocks (invalid frees); the odd threads exit
 * holding their last blocks (heap_abandon), which the even ones then free
 * into the abandoned spans; the next generation's threads adopt the
 * heaps. A thread drives the daemon's passes meanwhile (kp_daemon_step,
 * 300 ms a step, decay_ms 100: purge_idle, return_idle). Between
 * generations, with every thread stopped: each heap's avail lists walked
 * for a span listed twice (or on two heaps' lists, or retired and listed),
 * and every few generations a fork child takes the segments given back
 * and checks its own blocks.
 *
 * Between generations no block of the pool is live: 96 pointers of the
 * generation before are freed again then (stale frees into spans since
 * purged, segments given back and taken again), each to be refused.
 *
 * Asserted: no two live blocks overlap, every block keeps its pattern
 * until freed, each double, invalid and stale free refused and reported
 * exactly, no span listed twice. test_relist_madvise_refused runs the same
 * with the daemon's madvise calls refused at random (madvise@p=0.5 around
 * each step): segments go back unpurged, and none of the stale frees met a
 * stale record (the deterministic case: test_outline_return_meta_attack28).
 *
 * All held on 2b03bdf (release 120 generations each, ASan 24, TSan 10):
 * about 2,000-3,000 segments given back a run, 19,104 stale frees.
 */
#define _GNU_SOURCE 1
#include "ktest.h"
#include "outline.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/wait.h>

#define NT 4
#define M 1200
static kp_pool *pool;
static pthread_barrier_t bar, bar2;
static struct slot {
	unsigned char *p;
	size_t n;
	uint64_t id;
	bool freed;
} sl[NT][M];
static _Atomic uint64_t exp_df, exp_inv, nid, bad_pattern, overlaps, dupes, df_taken, inv_taken;
/* pointers of earlier generations, freed again between generations (no
 * block of the pool is live then: each must be refused) */
#define NSTALE 96
static unsigned char *stale[NSTALE];
static uint64_t exp_stale, stale_taken;
static _Atomic int stop;
static unsigned gen_no;
static const char *fault_spec;
static pthread_mutex_t step_mu = PTHREAD_MUTEX_INITIALIZER;

static size_t pick(unsigned *s)
{
	*s = *s * 1103515245u + 12345u;
	unsigned r = *s >> 8;
	switch (r % 8) {
	case 0: return 1 + r % 64000;
	case 1: return 1 + r % 4000;
	case 2: return 1 + r % 1000;
	default: return 1 + r % 120;
	}
}

static void fill(struct slot *s)
{
	for (size_t i = 0; i + 1 < s->n; i += 61)
		s->p[i] = (unsigned char)(s->id + i);
	s->p[s->n - 1] = (unsigned char)(s->id * 3);
}

static void verify(struct slot *s)
{
	bool bad = s->p[s->n - 1] != (unsigned char)(s->id * 3);
	for (size_t i = 0; i + 1 < s->n && !bad; i += 61)
		bad = s->p[i] != (unsigned char)(s->id + i);
	if (bad) {
		atomic_fetch_add(&bad_pattern, 1);
		fprintf(stderr, "bad pattern: %p n %zu gen %u\n", (void *)s->p, s->n, gen_no);
	}
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
	for (size_t i = 1; i < k; i++)
		if (all[i - 1]->p + all[i - 1]->n > all[i]->p) {
			atomic_fetch_add(&overlaps, 1);
			fprintf(stderr, "overlap %p+%zu %p gen %u\n", (void *)all[i - 1]->p, all[i - 1]->n,
				(void *)all[i]->p, gen_no);
		}
}

static uint64_t ev[KP_EV__COUNT];
static pthread_mutex_t evmu = PTHREAD_MUTEX_INITIALIZER;
static void drain(void)
{
	kp_event e[64];
	size_t n;
	pthread_mutex_lock(&evmu);
	while ((n = kp_events_drain(pool, e, 64)) > 0)
		for (size_t i = 0; i < n; i++)
			ev[e[i].kind < KP_EV__COUNT ? e[i].kind : 0]++;
	pthread_mutex_unlock(&evmu);
}

static void free_slot(struct slot *s)
{
	verify(s);
	kp_free(pool, s->p);
	s->freed = true;
}

static void *worker(void *arg)
{
	int t = (int)(intptr_t)arg, o = (t + 1) % NT;
	unsigned seed = (unsigned)(t * 7919 + gen_no * 31 + 1);
	for (int j = 0; j < M; j++) {
		struct slot *s = &sl[t][j];
		s->n = pick(&seed);
		s->p = kp_alloc(pool, s->n, 0);
		s->id = atomic_fetch_add(&nid, 1) + 1;
		s->freed = false;
		if (s->p)
			fill(s);
	}
	pthread_barrier_wait(&bar);
	if (t == 0)
		check_overlap();
	pthread_barrier_wait(&bar);
	/* the next thread's even blocks (cross-thread), and this thread's own
	 * of every third odd slot: into spans retired full, both ways */
	for (int j = 0; j < M; j++) {
		if (j % 2 == 0 && sl[o][j].p && j % 23 != 2)
			free_slot(&sl[o][j]);
		if (j % 2 == 1 && j % 3 == 0 && sl[t][j].p)
			free_slot(&sl[t][j]);
	}
	pthread_barrier_wait(&bar);
	/* double frees of blocks freed above (none allocated since), and
	 * interior pointers of live ones */
	for (int j = 0; j < M; j += 38) {
		struct slot *s = &sl[o][j];
		if (s->p && s->freed) {
			atomic_fetch_add(&exp_df, 1);
			if (kp_free(pool, s->p) == 0)
				atomic_fetch_add(&df_taken, 1);
		}
		s = &sl[t][j + 1];
		if (j + 1 < M && s->p && !s->freed && s->n > 16) {
			atomic_fetch_add(&exp_inv, 1);
			if (kp_free(pool, s->p + 16) == 0)
				atomic_fetch_add(&inv_taken, 1);
		}
	}
	pthread_barrier_wait(&bar);
	if (t & 1)
		return NULL;	     /* exits holding its remaining blocks: heap_abandon */
	pthread_barrier_wait(&bar2); /* the odd ones leaving meanwhile: their exits race these frees */
	for (int tt = t; tt <= t + 1; tt++)
		for (int j = 0; j < M; j++)
			if (sl[tt][j].p && !sl[tt][j].freed)
				free_slot(&sl[tt][j]);
	return NULL;
}

static void *stepper(void *arg)
{
	(void)arg;
	while (!atomic_load(&stop)) {
		pthread_mutex_lock(&step_mu);
		if (fault_spec)
			kp_fault_inject(pool, fault_spec);
		kp_daemon_step(pool, 300);
		if (fault_spec)
			kp_fault_inject(pool, "madvise@off");
		pthread_mutex_unlock(&step_mu);
		drain();
	}
	return NULL;
}

/* With every thread stopped: each heap's avail lists, no span twice
 * (nor a retired one, nor a loop). */
static void check_lists(void)
{
	kp__ol *ol = pool->ol;
	static struct ol_span *seen[1 << 16];
	size_t n = 0;
	pthread_mutex_lock(&ol->lock);
	for (struct ol_heap *h = ol->heaps; h; h = h->next)
		for (uint32_t c = 0; c < OL_NCLASS; c++)
			for (struct ol_span *pg = h->avail[c]; pg; pg = pg->next) {
				bool twice = false;
				for (size_t i = 0; i < n && !twice; i++)
					twice = seen[i] == pg;
				if (twice || n == sizeof seen / sizeof seen[0]) {
					atomic_fetch_add(&dupes, 1);
					fprintf(stderr, "span %p listed twice (gen %u)\n", (void *)pg, gen_no);
					break;
				}
				if (atomic_load_explicit(&pg->owner, memory_order_relaxed) & OL_OWN_FULL) {
					atomic_fetch_add(&dupes, 1);
					fprintf(stderr, "span %p retired and listed (gen %u)\n", (void *)pg, gen_no);
				}
				seen[n++] = pg;
			}
	pthread_mutex_unlock(&ol->lock);
}

/* a fork child: one thread's blocks over the segments given back */
static void fork_check(void)
{
	fflush(stdout);
	fflush(stderr);
	pid_t pid = fork();
	if (pid == 0) {
		static unsigned char *q[4000];
		static size_t qn[4000];
		unsigned seed = gen_no;
		int bad = 0;
		for (int i = 0; i < 4000; i++) {
			qn[i] = pick(&seed);
			q[i] = kp_alloc(pool, qn[i], 0);
			if (q[i])
				memset(q[i], (unsigned char)i, qn[i]);
		}
		for (int i = 0; i < 4000; i++)
			for (size_t k = 0; q[i] && k < qn[i]; k += 97)
				if (q[i][k] != (unsigned char)i) {
					bad++;
					break;
				}
		for (int i = 0; i < 4000; i++)
			kp_free(pool, q[i]);
		_exit(bad ? 1 : 0);
	}
	int st = 0;
	waitpid(pid, &st, 0);
	CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "gen %u: the fork child's blocks overlapped (status %#x)", gen_no,
	      st);
}

static void run(const char *conf, const char *fault, int gens)
{
	fault_spec = fault;
	memset(ev, 0, sizeof ev);
	atomic_store(&exp_df, 0), atomic_store(&exp_inv, 0), atomic_store(&bad_pattern, 0);
	atomic_store(&overlaps, 0), atomic_store(&dupes, 0), atomic_store(&df_taken, 0), atomic_store(&inv_taken, 0);
	exp_stale = stale_taken = 0;
	memset(stale, 0, sizeof stale);
	pool = kp_create(conf);
	REQUIRE(pool, "create %s", kp_last_error());
	atomic_store(&stop, 0);
	pthread_t st;
	pthread_create(&st, NULL, stepper, NULL);
	for (gen_no = 0; gen_no < (unsigned)gens; gen_no++) {
		pthread_barrier_init(&bar, NULL, NT);
		pthread_barrier_init(&bar2, NULL, NT / 2);
		pthread_t th[NT];
		for (int t = 0; t < NT; t++)
			pthread_create(&th[t], NULL, worker, (void *)(intptr_t)t);
		for (int t = 0; t < NT; t++)
			pthread_join(th[t], NULL);
		pthread_barrier_destroy(&bar);
		pthread_barrier_destroy(&bar2);
		pthread_mutex_lock(&step_mu);
		check_lists();
		for (int i = 0; i < NSTALE; i++)
			if (stale[i]) {
				exp_stale++;
				if (kp_free(pool, stale[i]) == 0) {
					stale_taken++;
					fprintf(stderr, "gen %u: a stale free of %p taken\n", gen_no, (void *)stale[i]);
				}
			}
		for (int i = 0; i < NSTALE; i++)
			stale[i] = sl[i % NT][(gen_no * 131 + (unsigned)i * 37) % M].p;
		if (gen_no % 16 == 15)
			fork_check();
		pthread_mutex_unlock(&step_mu);
	}
	atomic_store(&stop, 1);
	pthread_join(st, NULL);
	drain();
	printf("   segments given back %llu, madvise refused %lu, stale frees %llu (taken %llu)\n",
	       (unsigned long long)atomic_load(&pool->ol->returned), (unsigned long)ev[KP_EV_FAULT_INJECTED],
	       (unsigned long long)exp_stale, (unsigned long long)stale_taken);
	printf("   %s%s: gens %d, double frees %lu (expected %lu, taken %lu), invalid %lu (expected %lu, taken %lu), "
	       "overflow %lu, bad patterns %lu, overlaps %lu, spans listed twice %lu\n",
	       conf, fault ? " + faults" : "", gens, (unsigned long)ev[KP_EV_DOUBLE_FREE], (unsigned long)exp_df,
	       (unsigned long)df_taken, (unsigned long)ev[KP_EV_INVALID_FREE], (unsigned long)exp_inv,
	       (unsigned long)inv_taken, (unsigned long)ev[KP_EV_OVERFLOW], (unsigned long)bad_pattern,
	       (unsigned long)overlaps, (unsigned long)dupes);
	CHECK(overlaps == 0 && bad_pattern == 0, "live blocks handed out twice or changed");
	CHECK(dupes == 0, "spans listed twice");
	CHECK(df_taken == 0 && inv_taken == 0, "bad frees taken");
	CHECK(stale_taken == 0, "%llu of %llu stale frees between generations taken", (unsigned long long)stale_taken,
	      (unsigned long long)exp_stale);
	/* every bad free reported once: exactly, unless the ring wrapped between
	 * two drains (madvise@p=0.5 sends an event a refused purge), when the
	 * events lost (ring.dropped) must cover what is missing. Under ASan one
	 * run of nine saw 6953 of 7023 before the dropped events were counted. */
	uint64_t got = ev[KP_EV_DOUBLE_FREE] + ev[KP_EV_INVALID_FREE], want = exp_df + exp_inv + exp_stale;
	uint64_t lost = atomic_load(&pool->ring.dropped);
	CHECK(got <= want && got + lost >= want && (lost || got == want),
	      "double and invalid frees reported: %lu, expected %lu (events dropped %lu)", (unsigned long)got,
	      (unsigned long)want, (unsigned long)lost);
	kp_destroy(pool);
}

static int gens(void)
{
	const char *g = getenv("ATT_GENS");
	return g ? atoi(g) : KT_TSAN ? 10 : KT_SANITIZED ? 24 : 120;
}

static void test_relist_checks_on(void)
{
	run("layout:outline,daemon:off,seed:13,decay_ms:100,checks:on", NULL, gens());
}

static void test_relist_checks_off(void)
{
	run("layout:outline,daemon:off,seed:13,decay_ms:100,checks:off", NULL, gens());
}

static void test_relist_madvise_refused(void)
{
	run("layout:outline,daemon:off,seed:13,decay_ms:100,checks:off", "madvise@p=0.5@seed=7", gens());
}

int main(void)
{
	RUN(test_relist_checks_on);
	RUN(test_relist_checks_off);
	RUN(test_relist_madvise_refused);
	return ktest_summary();
}
