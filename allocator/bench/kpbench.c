/*
 * kpbench - the allocator microbenchmark.
 *
 * One binary runs the same four workloads against libkpool (--alloc kpool)
 * or the process's malloc/free (--alloc malloc), so glibc, jemalloc,
 * mimalloc and tcmalloc are measured by running it under LD_PRELOAD:
 *
 *   (a) 16-256 B uniform, 1000 live objects, one thread: free a random slot,
 *       allocate a new block into it.
 *   (b) 16 B-64 KiB log-uniform, 10000 live objects, otherwise as (a).
 *   (c) two threads, 16-256 B; every block is freed by the other thread
 *       (a bounded single-producer single-consumer queue each way).
 *   (d) grow to 1 GiB in 4-64 KiB blocks touching every page, free all;
 *       three rounds. Per round: time, malloc+touch latency, and the page
 *       faults of the allocating thread (getrusage RUSAGE_THREAD).
 *
 * One "op" in (a)-(c) is one allocation and one free. Throughput is timed
 * over a whole untimed loop with CLOCK_MONOTONIC; latency comes from a
 * separate pass of the same workload in which every call is bracketed by
 * clock_gettime (so each figure includes one clock read, reported as
 * "clock_ns") into a log-linear histogram. Random slots and sizes come from
 * a table precomputed with splitmix64 so the generator stays out of the loop.
 * Blocks are marked at both ends when allocated and checked before they are
 * freed, through volatile accesses, so no compiler can elide the work.
 *
 * Output: one line per workload, or with --json one JSON object per line
 * (harness/bench.py reads those). With kpool the pool's kp_stats_json()
 * object is embedded, which carries its system-call counts.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "kpool.h"

/* ---- constants ---------------------------------------------------------- */

/* 2^18 precomputed steps (2 MiB): long enough that the cycle is invisible to
 * an allocator, small enough to stream from L2/L3 at no measurable cost. */
#define RTAB_BITS 18
#define RTAB (1u << RTAB_BITS)
#define RTAB_MASK (RTAB - 1)

/* A latency pass of 1M operations gives p99.9 from 1000 samples above it,
 * in well under a second for every workload and allocator. */
#define LAT_OPS_MAX 1000000ull

/* The (d) conf: start tiny so the daemon must do all the growing, and give
 * it watermarks far enough apart to map and pre-fault ahead of a thread that
 * allocates as fast as it can. */
#define GROW_CONF "primary_initial:1m,low_wm:32m,high_wm:128m,primary_max:2g"

/* Default operation counts: a quarter to half a second for the fastest peer
 * and a few seconds for the slowest (glibc on (c)), so that five runs of five
 * allocators take minutes, yet each timed loop outlasts scheduler noise. */
#define OPS_A 50000000ull
#define OPS_B 10000000ull
#define OPS_C 10000000ull

#define PAGE 4096u
#define MAX_ROUNDS 16

/* ---- clock, faults, PRNG ------------------------------------------------- */

static inline uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static double secs_between(uint64_t t0, uint64_t t1)
{
	return (double)(t1 - t0) / 1e9;
}

/* Minor page faults of the calling thread (RUSAGE_THREAD), or of the whole
 * process. */
static uint64_t minflt(int who)
{
	struct rusage ru;
	if (getrusage(who, &ru) != 0)
		return 0;
	return (uint64_t)ru.ru_minflt;
}

static inline uint64_t splitmix64(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

/* A uniform double in [0, 1) from the top 53 bits. */
static inline double unit(uint64_t r)
{
	return (double)(r >> 11) * (1.0 / 9007199254740992.0);
}

static inline void cpu_relax(unsigned *spins)
{
	/* Two vCPUs on a shared host: past a short spin the peer thread is
	 * probably descheduled, so give the CPU away instead of burning it. */
	if (++*spins < 64) {
#if defined(__x86_64__) || defined(__i386__)
		__builtin_ia32_pause();
#endif
	} else {
		*spins = 0;
		sched_yield();
	}
}

/* ---- histogram ----------------------------------------------------------- */

/*
 * Log-linear, HdrHistogram-style: values below H_SUB ns are exact; above,
 * each power of two [2^e, 2^(e+1)) is split into H_SUB equal buckets, so a
 * value is recorded within 1/H_SUB (3%) of itself. Index of v >= H_SUB:
 *   H_SUB + (e - H_SUB_BITS) * H_SUB + (the H_SUB_BITS bits below the top 1).
 */
#define H_SUB_BITS 5
#define H_SUB (1u << H_SUB_BITS)
#define H_MAX_EXP 40 /* 2^41 ns is 36 minutes: slower values are clamped */
#define H_BUCKETS ((H_MAX_EXP - H_SUB_BITS + 1) * H_SUB + H_SUB)

struct hist {
	uint64_t count, max, sum;
	uint64_t b[H_BUCKETS];
};

static inline void hist_add(struct hist *h, uint64_t v)
{
	unsigned i;
	if (v < H_SUB) {
		i = (unsigned)v;
	} else {
		unsigned e = 63u - (unsigned)__builtin_clzll(v);
		if (e > H_MAX_EXP)
			i = H_BUCKETS - 1;
		else
			i = H_SUB + (e - H_SUB_BITS) * H_SUB +
			    (unsigned)((v >> (e - H_SUB_BITS)) & (H_SUB - 1));
	}
	h->b[i]++;
	h->count++;
	h->sum += v;
	if (v > h->max)
		h->max = v;
}

/* The highest value that lands in bucket i (HdrHistogram's "highest
 * equivalent value"), so percentiles never flatter the allocator. */
static uint64_t hist_bucket_top(unsigned i)
{
	if (i < H_SUB)
		return i;
	unsigned g = (i - H_SUB) / H_SUB, sub = (i - H_SUB) % H_SUB;
	unsigned e = g + H_SUB_BITS;
	uint64_t width = 1ull << (e - H_SUB_BITS);
	return (1ull << e) + sub * width + width - 1;
}

static uint64_t hist_pct(const struct hist *h, double q)
{
	if (h->count == 0)
		return 0;
	uint64_t want = (uint64_t)ceil(q * (double)h->count), seen = 0;
	if (want < 1)
		want = 1;
	for (unsigned i = 0; i < H_BUCKETS; i++) {
		seen += h->b[i];
		if (seen >= want) {
			uint64_t top = hist_bucket_top(i);
			return top < h->max ? top : h->max;
		}
	}
	return h->max;
}

static void hist_merge(struct hist *into, const struct hist *from)
{
	for (unsigned i = 0; i < H_BUCKETS; i++)
		into->b[i] += from->b[i];
	into->count += from->count;
	into->sum += from->sum;
	if (from->max > into->max)
		into->max = from->max;
}

static struct hist *hist_new(void)
{
	struct hist *h = calloc(1, sizeof(*h));
	if (!h) {
		fprintf(stderr, "kpbench: out of memory for a histogram\n");
		exit(2);
	}
	return h;
}

/* The cost of one clock read, as it shows up inside every latency sample:
 * the median gap between back-to-back reads. */
static uint64_t clock_cost_ns(void)
{
	struct hist *h = hist_new();
	for (int i = 0; i < 10000; i++) {
		uint64_t t0 = now_ns();
		hist_add(h, now_ns() - t0);
	}
	uint64_t c = hist_pct(h, 0.5);
	free(h);
	return c;
}

/* ---- the allocator under test -------------------------------------------- */

static kp_pool *g_pool; /* NULL: the process's malloc/free */
static bool g_use_kpool;
static _Atomic uint64_t g_free_errors;

static inline void *bx_alloc(size_t n)
{
	return g_pool ? kp_alloc(g_pool, n, 0) : malloc(n);
}

static inline void bx_free(void *p)
{
	if (!g_pool)
		free(p);
	else if (kp_free(g_pool, p) != 0)
		atomic_fetch_add_explicit(&g_free_errors, 1, memory_order_relaxed);
}

/* Block marks: a tag derived from the size at the first and last byte. */
static inline unsigned char tag_of(uint32_t n)
{
	return (unsigned char)(0xa5u ^ n ^ (n >> 8));
}

static inline void mark(void *p, uint32_t n)
{
	volatile unsigned char *v = p;
	v[0] = tag_of(n);
	v[n - 1] = tag_of(n);
}

static inline unsigned check(const void *p, uint32_t n)
{
	const volatile unsigned char *v = p;
	return v[0] != tag_of(n) || v[n - 1] != tag_of(n);
}

/* ---- results --------------------------------------------------------------- */

struct round {
	double alloc_s, free_s;
	uint64_t blocks, bytes, pages, thread_minflt, process_minflt;
	struct hist *lat; /* malloc + touch of every page */
};

struct result {
	char wl;
	const char *desc;
	const char *conf; /* kpool only */
	uint64_t ops;
	double secs;
	uint64_t thread_minflt; /* faults of the timed loop's thread(s) */
	uint64_t verify_errors, alloc_failures, free_errors;
	struct hist *lat_alloc, *lat_free;
	int nrounds;
	struct round rounds[MAX_ROUNDS];
	char *kp_stats; /* kp_stats_json() at the end, or NULL */
};

struct opts {
	bool json;
	const char *conf;
	uint64_t ops; /* 0: the workload's default */
	uint64_t seed;
	uint64_t grow;
	int rounds;
};

static char *stats_json(void)
{
	if (!g_pool)
		return NULL;
	char small[1];
	int need = kp_stats_json(g_pool, small, sizeof(small));
	if (need < 0)
		return NULL;
	char *buf = malloc((size_t)need + 1);
	if (buf && kp_stats_json(g_pool, buf, (size_t)need + 1) < 0) {
		free(buf);
		return NULL;
	}
	return buf;
}

static int pool_open(const char *conf)
{
	if (!g_use_kpool)
		return 0;
	g_pool = kp_create(conf);
	if (!g_pool) {
		fprintf(stderr, "kpbench: kp_create(\"%s\") failed: %s\n", conf ? conf : "",
			kp_last_error());
		return -1;
	}
	return 0;
}

static void pool_close(struct result *r)
{
	if (!g_pool)
		return;
	kp_thread_flush(g_pool);
	r->kp_stats = stats_json();
	kp_destroy(g_pool);
	g_pool = NULL;
}

/* ---- (a) and (b): free a random slot, allocate into it ------------------- */

struct step {
	uint32_t slot, size;
};

enum dist { UNIFORM, LOGUNIFORM };

static uint32_t draw_size(enum dist d, uint32_t lo, uint32_t hi, uint64_t r)
{
	if (d == UNIFORM)
		return lo + (uint32_t)(r % (hi - lo + 1));
	double x = (double)lo * pow((double)hi / lo, unit(r));
	uint32_t n = (uint32_t)x;
	return n < lo ? lo : n > hi ? hi : n;
}

static struct step *make_steps(uint32_t nslots, enum dist d, uint32_t lo, uint32_t hi,
			       uint64_t seed)
{
	struct step *s = malloc(sizeof(*s) * RTAB);
	if (!s) {
		fprintf(stderr, "kpbench: out of memory for the step table\n");
		exit(2);
	}
	for (uint32_t i = 0; i < RTAB; i++) {
		uint64_t r = splitmix64(&seed);
		s[i].slot = nslots ? (uint32_t)((r >> 32) % nslots) : 0;
		s[i].size = draw_size(d, lo, hi, splitmix64(&seed));
	}
	return s;
}

struct slot {
	void *p;
	uint32_t n;
};

struct slots_run {
	struct slot *slots;
	const struct step *steps;
	uint64_t pos; /* position in the step table */
	uint64_t verify_errors, alloc_failures;
};

static inline void slots_step(struct slots_run *w, struct hist *ha, struct hist *hf)
{
	const struct step st = w->steps[w->pos++ & RTAB_MASK];
	struct slot *s = &w->slots[st.slot];
	if (s->p) {
		w->verify_errors += check(s->p, s->n);
		if (hf) {
			uint64_t t0 = now_ns();
			bx_free(s->p);
			hist_add(hf, now_ns() - t0);
		} else {
			bx_free(s->p);
		}
	}
	void *p;
	if (ha) {
		uint64_t t0 = now_ns();
		p = bx_alloc(st.size);
		hist_add(ha, now_ns() - t0);
	} else {
		p = bx_alloc(st.size);
	}
	if (p)
		mark(p, st.size);
	else
		w->alloc_failures++;
	s->p = p;
	s->n = st.size;
}

static int run_slots(struct result *r, const struct opts *o, uint32_t nslots, enum dist d,
		     uint32_t lo, uint32_t hi, uint64_t default_ops)
{
	uint64_t ops = o->ops ? o->ops : default_ops;
	uint64_t lat_ops = ops < LAT_OPS_MAX ? ops : LAT_OPS_MAX;
	struct slots_run w = {0};
	w.steps = make_steps(nslots, d, lo, hi, o->seed);
	w.slots = calloc(nslots, sizeof(*w.slots));
	if (!w.slots || pool_open(o->conf) != 0) {
		free(w.slots);
		free((void *)w.steps);
		return -1;
	}
	r->conf = o->conf;

	for (uint32_t i = 0; i < nslots; i++) { /* fill */
		uint32_t n = w.steps[(RTAB - 1 - i) & RTAB_MASK].size;
		w.slots[i].p = bx_alloc(n);
		w.slots[i].n = n;
		if (w.slots[i].p)
			mark(w.slots[i].p, n);
	}
	for (uint64_t i = 0; i < ops / 10; i++) /* warm up */
		slots_step(&w, NULL, NULL);

	uint64_t f0 = minflt(RUSAGE_THREAD), t0 = now_ns();
	for (uint64_t i = 0; i < ops; i++)
		slots_step(&w, NULL, NULL);
	uint64_t t1 = now_ns();
	r->thread_minflt = minflt(RUSAGE_THREAD) - f0;
	r->ops = ops;
	r->secs = secs_between(t0, t1);

	r->lat_alloc = hist_new();
	r->lat_free = hist_new();
	for (uint64_t i = 0; i < lat_ops; i++)
		slots_step(&w, r->lat_alloc, r->lat_free);

	for (uint32_t i = 0; i < nslots; i++) {
		if (w.slots[i].p) {
			w.verify_errors += check(w.slots[i].p, w.slots[i].n);
			bx_free(w.slots[i].p);
		}
	}
	r->verify_errors = w.verify_errors;
	r->alloc_failures = w.alloc_failures;
	pool_close(r);
	free(w.slots);
	free((void *)w.steps);
	return 0;
}

static int run_a(struct result *r, const struct opts *o)
{
	r->desc = "16-256 B uniform, 1000 live, 1 thread, free random slot + alloc";
	return run_slots(r, o, 1000, UNIFORM, 16, 256, OPS_A);
}

static int run_b(struct result *r, const struct opts *o)
{
	r->desc = "16 B-64 KiB log-uniform, 10000 live, 1 thread, free random slot + alloc";
	return run_slots(r, o, 10000, LOGUNIFORM, 16, 65536, OPS_B);
}

/* ---- (c): two threads, each block freed by the other ---------------------- */

/*
 * A bounded single-producer single-consumer ring of pointers. Each side
 * keeps a private copy of the other side's index and re-reads the shared one
 * only when its copy says full/empty, so the two cache lines bounce only
 * when they must. Release on publish, acquire on observe: the slot write
 * happens before the consumer sees the new tail, the slot read before the
 * producer sees the new head.
 */
#define Q_CAP 1024u /* a few hundred KiB of blocks in flight: absorbs a
			 * descheduled peer without stalling the producer */

struct spsc {
	_Alignas(64) _Atomic uint64_t head; /* consumer side */
	uint64_t tail_seen;
	_Alignas(64) _Atomic uint64_t tail; /* producer side */
	uint64_t head_seen;
	_Alignas(64) void *slot[Q_CAP];
};

static bool spsc_push(struct spsc *q, void *p)
{
	uint64_t t = atomic_load_explicit(&q->tail, memory_order_relaxed);
	if (t - q->head_seen == Q_CAP) {
		q->head_seen = atomic_load_explicit(&q->head, memory_order_acquire);
		if (t - q->head_seen == Q_CAP)
			return false;
	}
	q->slot[t & (Q_CAP - 1)] = p;
	atomic_store_explicit(&q->tail, t + 1, memory_order_release);
	return true;
}

static void *spsc_pop(struct spsc *q)
{
	uint64_t h = atomic_load_explicit(&q->head, memory_order_relaxed);
	if (h == q->tail_seen) {
		q->tail_seen = atomic_load_explicit(&q->tail, memory_order_acquire);
		if (h == q->tail_seen)
			return NULL;
	}
	void *p = q->slot[h & (Q_CAP - 1)];
	atomic_store_explicit(&q->head, h + 1, memory_order_release);
	return p;
}

struct cworker {
	struct spsc *in, *out;
	struct cworker *peer;
	const struct step *steps;
	uint64_t n, off;
	_Atomic int done; /* set (release) after the last push */
	pthread_barrier_t *start;
	struct hist *ha, *hf; /* NULL: untimed */
	uint64_t verify_errors, alloc_failures, minflt;
};

/* The block carries its size in its first 4 bytes (sizes are >= 16) and a
 * tag in its last, so the freeing thread can check it without a side table. */
static inline unsigned cross_check(const void *p)
{
	uint32_t n = *(const volatile uint32_t *)p;
	if (n < 16 || n > 256)
		return 1;
	return ((const volatile unsigned char *)p)[n - 1] != tag_of(n);
}

/* Pop and free up to 256 blocks; returns how many. */
static unsigned cworker_drain(struct cworker *w)
{
	unsigned k = 0;
	void *p;
	while (k < 256 && (p = spsc_pop(w->in)) != NULL) {
		w->verify_errors += cross_check(p);
		if (w->hf) {
			uint64_t t0 = now_ns();
			bx_free(p);
			hist_add(w->hf, now_ns() - t0);
		} else {
			bx_free(p);
		}
		k++;
	}
	return k;
}

static void *cworker_main(void *arg)
{
	struct cworker *w = arg;
	unsigned spins = 0;
	pthread_barrier_wait(w->start);
	uint64_t f0 = minflt(RUSAGE_THREAD);
	for (uint64_t i = 0; i < w->n; i++) {
		uint32_t n = w->steps[(w->off + i) & RTAB_MASK].size;
		void *p;
		if (w->ha) {
			uint64_t t0 = now_ns();
			p = bx_alloc(n);
			hist_add(w->ha, now_ns() - t0);
		} else {
			p = bx_alloc(n);
		}
		if (!p) {
			w->alloc_failures++;
			continue;
		}
		*(volatile uint32_t *)p = n;
		((volatile unsigned char *)p)[n - 1] = tag_of(n);
		while (!spsc_push(w->out, p))
			if (cworker_drain(w) == 0)
				cpu_relax(&spins);
		cworker_drain(w);
	}
	atomic_store_explicit(&w->done, 1, memory_order_release);
	for (;;) {
		/* Everything the peer pushed happened before its done flag:
		 * once it is seen, an empty queue stays empty. */
		int peer_done = atomic_load_explicit(&w->peer->done, memory_order_acquire);
		if (cworker_drain(w) == 0) {
			if (peer_done)
				break;
			cpu_relax(&spins);
		}
	}
	w->minflt = minflt(RUSAGE_THREAD) - f0;
	return NULL;
}

/* One phase: two fresh threads, ops allocations in all. Returns seconds. */
static double cross_phase(struct result *r, const struct step *steps, uint64_t ops, bool timed)
{
	struct spsc *q[2];
	struct cworker w[2];
	pthread_t th[2];
	pthread_barrier_t start;
	pthread_barrier_init(&start, NULL, 3);
	for (int i = 0; i < 2; i++) {
		q[i] = aligned_alloc(64, sizeof(struct spsc));
		if (!q[i]) {
			fprintf(stderr, "kpbench: out of memory for a queue\n");
			exit(2);
		}
		memset(q[i], 0, sizeof(struct spsc));
	}
	for (int i = 0; i < 2; i++) {
		memset(&w[i], 0, sizeof(w[i]));
		w[i].out = q[i];
		w[i].in = q[1 - i];
		w[i].peer = &w[1 - i];
		w[i].steps = steps;
		w[i].n = ops / 2 + (i == 0 ? ops % 2 : 0);
		w[i].off = i ? RTAB / 2 : 0;
		w[i].start = &start;
		w[i].ha = timed ? hist_new() : NULL;
		w[i].hf = timed ? hist_new() : NULL;
		if (pthread_create(&th[i], NULL, cworker_main, &w[i]) != 0) {
			fprintf(stderr, "kpbench: pthread_create failed\n");
			exit(2);
		}
	}
	pthread_barrier_wait(&start);
	uint64_t t0 = now_ns();
	pthread_join(th[0], NULL);
	pthread_join(th[1], NULL);
	uint64_t t1 = now_ns();
	for (int i = 0; i < 2; i++) {
		r->verify_errors += w[i].verify_errors;
		r->alloc_failures += w[i].alloc_failures;
		if (timed) {
			hist_merge(r->lat_alloc, w[i].ha);
			hist_merge(r->lat_free, w[i].hf);
			free(w[i].ha);
			free(w[i].hf);
		} else {
			r->thread_minflt += w[i].minflt;
		}
		free(q[i]);
	}
	pthread_barrier_destroy(&start);
	return secs_between(t0, t1);
}

static int run_c(struct result *r, const struct opts *o)
{
	r->desc = "2 threads, 16-256 B uniform, every block freed by the other thread";
	uint64_t ops = o->ops ? o->ops : OPS_C;
	uint64_t lat_ops = ops < LAT_OPS_MAX ? ops : LAT_OPS_MAX;
	struct step *steps = make_steps(0, UNIFORM, 16, 256, o->seed);
	if (pool_open(o->conf) != 0) {
		free(steps);
		return -1;
	}
	r->conf = o->conf;
	r->lat_alloc = hist_new();
	r->lat_free = hist_new();
	cross_phase(r, steps, ops / 10, false); /* warm up */
	r->thread_minflt = 0;
	r->ops = ops;
	r->secs = cross_phase(r, steps, ops, false);
	cross_phase(r, steps, lat_ops, true);
	pool_close(r);
	free(steps);
	return 0;
}

/* ---- (d): grow to 1 GiB touching every page, free all, three rounds ------- */

static inline void touch_pages(void *p, uint32_t n)
{
	volatile unsigned char *v = p;
	for (uint32_t off = PAGE; off < n; off += PAGE)
		v[off] = 1;
	mark(p, n); /* first and last byte */
}

static int run_d(struct result *r, const struct opts *o)
{
	static char desc[96];
	snprintf(desc, sizeof(desc), "grow to %.0f MiB in 4-64 KiB blocks touching every page, free all",
		 (double)o->grow / 1048576.0);
	r->desc = desc;
	struct step *steps = make_steps(0, UNIFORM, 4096, 65536, o->seed);
	uint64_t cap = o->grow / 4096 + 1;
	struct slot *blocks = calloc(cap, sizeof(*blocks));
	const char *conf = o->conf ? o->conf : GROW_CONF;
	if (!blocks || pool_open(conf) != 0) {
		free(blocks);
		free(steps);
		return -1;
	}
	r->conf = conf;
	r->lat_alloc = hist_new();
	uint64_t pos = 0;
	for (int k = 0; k < o->rounds; k++) {
		struct round *rd = &r->rounds[r->nrounds++];
		rd->lat = hist_new();
		uint64_t tf0 = minflt(RUSAGE_THREAD), pf0 = minflt(RUSAGE_SELF);
		uint64_t t0 = now_ns();
		uint64_t nb = 0;
		while (rd->bytes < o->grow && nb < cap) {
			uint32_t n = steps[pos++ & RTAB_MASK].size;
			uint64_t ta = now_ns();
			void *p = bx_alloc(n);
			if (!p) {
				r->alloc_failures++;
				break; /* out of memory: end the round here */
			}
			touch_pages(p, n);
			hist_add(rd->lat, now_ns() - ta);
			blocks[nb].p = p;
			blocks[nb++].n = n;
			rd->bytes += n;
			rd->pages += (n + PAGE - 1) / PAGE;
		}
		uint64_t t1 = now_ns();
		rd->thread_minflt = minflt(RUSAGE_THREAD) - tf0;
		rd->process_minflt = minflt(RUSAGE_SELF) - pf0;
		rd->blocks = nb;
		for (uint64_t i = 0; i < nb; i++) {
			r->verify_errors += check(blocks[i].p, blocks[i].n);
			bx_free(blocks[i].p);
		}
		uint64_t t2 = now_ns();
		rd->alloc_s = secs_between(t0, t1);
		rd->free_s = secs_between(t1, t2);
		hist_merge(r->lat_alloc, rd->lat);
		r->ops += nb;
		r->secs += rd->alloc_s + rd->free_s;
		r->thread_minflt += rd->thread_minflt;
	}
	pool_close(r);
	free(blocks);
	free(steps);
	return 0;
}

/* ---- output ------------------------------------------------------------------ */

static void json_str(const char *s)
{
	if (!s) {
		fputs("null", stdout);
		return;
	}
	putchar('"');
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		if (c == '"' || c == '\\')
			printf("\\%c", c);
		else if (c < 0x20)
			printf("\\u%04x", c);
		else
			putchar(c);
	}
	putchar('"');
}

static void json_lat(const char *key, const struct hist *h)
{
	printf("\"%s\":{\"count\":%" PRIu64 ",\"p50\":%" PRIu64 ",\"p99\":%" PRIu64
	       ",\"p999\":%" PRIu64 ",\"max\":%" PRIu64 ",\"mean\":%.1f}",
	       key, h->count, hist_pct(h, 0.50), hist_pct(h, 0.99), hist_pct(h, 0.999), h->max,
	       h->count ? (double)h->sum / (double)h->count : 0.0);
}

static void print_json(const struct result *r, uint64_t clock_ns)
{
	printf("{\"workload\":\"%c\",\"desc\":", r->wl);
	json_str(r->desc);
	printf(",\"alloc\":\"%s\",\"preload\":", g_use_kpool ? "kpool" : "malloc");
	json_str(getenv("LD_PRELOAD"));
	printf(",\"conf\":");
	json_str(g_use_kpool ? (r->conf ? r->conf : "") : NULL);
	printf(",\"ops\":%" PRIu64 ",\"seconds\":%.6f,\"ops_per_s\":%.1f,\"clock_ns\":%" PRIu64
	       ",\"thread_minflt\":%" PRIu64 ",\"verify_errors\":%" PRIu64
	       ",\"alloc_failures\":%" PRIu64 ",\"free_errors\":%" PRIu64 ",\"lat_ns\":{",
	       r->ops, r->secs, r->secs > 0 ? (double)r->ops / r->secs : 0.0, clock_ns,
	       r->thread_minflt, r->verify_errors, r->alloc_failures, r->free_errors);
	json_lat("alloc", r->lat_alloc);
	if (r->lat_free) {
		putchar(',');
		json_lat("free", r->lat_free);
	}
	printf("}");
	if (r->nrounds) {
		printf(",\"rounds\":[");
		for (int i = 0; i < r->nrounds; i++) {
			const struct round *rd = &r->rounds[i];
			printf("%s{\"alloc_s\":%.6f,\"free_s\":%.6f,\"blocks\":%" PRIu64
			       ",\"bytes\":%" PRIu64 ",\"pages\":%" PRIu64
			       ",\"thread_minflt\":%" PRIu64 ",\"process_minflt\":%" PRIu64 ",",
			       i ? "," : "", rd->alloc_s, rd->free_s, rd->blocks, rd->bytes,
			       rd->pages, rd->thread_minflt, rd->process_minflt);
			json_lat("lat_ns", rd->lat);
			putchar('}');
		}
		putchar(']');
	}
	printf(",\"kpool_stats\":%s}\n", r->kp_stats ? r->kp_stats : "null");
	fflush(stdout);
}

static void print_text(const struct result *r, uint64_t clock_ns)
{
	const struct hist *h = r->lat_alloc;
	printf("(%c) %s\n", r->wl, r->desc);
	printf("    %-6s %12.0f ops/s  %" PRIu64 " ops in %.3f s   alloc ns p50 %" PRIu64
	       " p99 %" PRIu64 " p99.9 %" PRIu64 " max %" PRIu64 " (clock read %" PRIu64
	       " ns)\n",
	       g_use_kpool ? "kpool" : "malloc", r->secs > 0 ? (double)r->ops / r->secs : 0.0,
	       r->ops, r->secs, hist_pct(h, 0.5), hist_pct(h, 0.99), hist_pct(h, 0.999), h->max,
	       clock_ns);
	for (int i = 0; i < r->nrounds; i++) {
		const struct round *rd = &r->rounds[i];
		printf("    round %d: %" PRIu64 " blocks, %.1f MiB, alloc+touch %.3f s, free %.3f s, "
		       "page faults %" PRIu64 " thread / %" PRIu64 " process (%" PRIu64
		       " pages), p99 %" PRIu64 " ns\n",
		       i + 1, rd->blocks, (double)rd->bytes / 1048576.0, rd->alloc_s, rd->free_s,
		       rd->thread_minflt, rd->process_minflt, rd->pages, hist_pct(rd->lat, 0.99));
	}
	if (r->verify_errors || r->alloc_failures || r->free_errors)
		printf("    ERRORS: %" PRIu64 " verify, %" PRIu64 " alloc failures, %" PRIu64
		       " free errors\n",
		       r->verify_errors, r->alloc_failures, r->free_errors);
	if (r->kp_stats)
		printf("    kpool stats: %s\n", r->kp_stats);
	fflush(stdout);
}

static void result_free(struct result *r)
{
	free(r->lat_alloc);
	free(r->lat_free);
	for (int i = 0; i < r->nrounds; i++)
		free(r->rounds[i].lat);
	free(r->kp_stats);
}

/* ---- options and main ---------------------------------------------------------- */

static void usage(FILE *f)
{
	fprintf(f,
		"usage: kpbench [--alloc kpool|malloc] [--workload a|b|c|d|all] [--ops N]\n"
		"               [--seed S] [--conf STR] [--grow BYTES] [--rounds N] [--json]\n"
		"  --alloc     kpool (default), or malloc: the process's malloc/free, so\n"
		"              LD_PRELOAD=libjemalloc.so.2 etc. measures a peer\n"
		"  --workload  a: 16-256 B, 1000 live; b: 16 B-64 KiB log-uniform, 10000 live;\n"
		"              c: two threads, cross-thread frees; d: grow to 1 GiB touching\n"
		"              every page, free all, repeated; all (default)\n"
		"  --ops       operations (alloc+free pairs) for a/b/c; default a 50M, b 10M, c 10M\n"
		"  --seed      seed of the precomputed random slots and sizes (default 1)\n"
		"  --conf      kpool conf for every workload (default: none for a/b/c,\n"
		"              \"" GROW_CONF "\" for d)\n"
		"  --grow      bytes per round of d, k/m/g suffixes (default 1g)\n"
		"  --rounds    rounds of d (default 3, at most %d)\n"
		"  --json      one JSON object per workload on stdout\n",
		MAX_ROUNDS);
}

static int parse_u64(const char *s, uint64_t *out, bool suffixes)
{
	char *end;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno || end == s || *s == '-')
		return -1;
	uint64_t mul = 1;
	if (suffixes && *end) {
		switch (*end | 0x20) {
		case 'k': mul = 1ull << 10; break;
		case 'm': mul = 1ull << 20; break;
		case 'g': mul = 1ull << 30; break;
		default: return -1;
		}
		end++;
	}
	if (*end || (mul > 1 && v > UINT64_MAX / mul))
		return -1;
	*out = (uint64_t)v * mul;
	return 0;
}

static int parse_opts(int argc, char **argv, struct opts *o, const char **workloads)
{
	static const struct option longopts[] = {
		{"alloc", required_argument, NULL, 'a'}, {"workload", required_argument, NULL, 'w'},
		{"ops", required_argument, NULL, 'n'},   {"seed", required_argument, NULL, 's'},
		{"conf", required_argument, NULL, 'c'},  {"grow", required_argument, NULL, 'g'},
		{"rounds", required_argument, NULL, 'r'}, {"json", no_argument, NULL, 'j'},
		{"help", no_argument, NULL, 'h'},        {NULL, 0, NULL, 0},
	};
	uint64_t v;
	int c;
	while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		switch (c) {
		case 'a':
			if (strcmp(optarg, "kpool") && strcmp(optarg, "malloc")) {
				fprintf(stderr, "kpbench: --alloc %s: use kpool or malloc\n", optarg);
				return -1;
			}
			g_use_kpool = !strcmp(optarg, "kpool");
			break;
		case 'w':
			if (strcmp(optarg, "all") && strspn(optarg, "abcd,") != strlen(optarg)) {
				fprintf(stderr, "kpbench: --workload %s: use a, b, c, d or all\n",
					optarg);
				return -1;
			}
			*workloads = strcmp(optarg, "all") ? optarg : "abcd";
			break;
		case 'n':
		case 's':
		case 'g':
		case 'r':
			if (parse_u64(optarg, &v, c == 'g' || c == 'n') != 0 ||
			    (c == 'r' && (v < 1 || v > MAX_ROUNDS)) || (c == 'g' && v == 0)) {
				fprintf(stderr, "kpbench: bad value for --%s: %s\n",
					c == 'n' ? "ops" : c == 's' ? "seed" : c == 'g' ? "grow" : "rounds",
					optarg);
				return -1;
			}
			if (c == 'n')
				o->ops = v;
			else if (c == 's')
				o->seed = v;
			else if (c == 'g')
				o->grow = v;
			else
				o->rounds = (int)v;
			break;
		case 'c': o->conf = optarg; break;
		case 'j': o->json = true; break;
		case 'h': usage(stdout); exit(0);
		default: usage(stderr); return -1;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "kpbench: unexpected argument: %s\n", argv[optind]);
		return -1;
	}
	return 0;
}

int main(int argc, char **argv)
{
	struct opts o = {.seed = 1, .grow = 1ull << 30, .rounds = 3};
	const char *workloads = "abcd";
	g_use_kpool = true;
	if (parse_opts(argc, argv, &o, &workloads) != 0)
		return 2;
	uint64_t clock_ns = clock_cost_ns();
	int rc = 0;
	for (const char *w = workloads; *w; w++) {
		if (*w == ',')
			continue;
		struct result r = {.wl = *w};
		atomic_store(&g_free_errors, 0);
		int err = *w == 'a'   ? run_a(&r, &o)
			  : *w == 'b' ? run_b(&r, &o)
			  : *w == 'c' ? run_c(&r, &o)
				      : run_d(&r, &o);
		r.free_errors = atomic_load(&g_free_errors);
		if (err) {
			fprintf(stderr, "kpbench: workload %c failed\n", *w);
			rc = 1;
		} else {
			if (o.json)
				print_json(&r, clock_ns);
			else
				print_text(&r, clock_ns);
			if (r.verify_errors || r.alloc_failures || r.free_errors)
				rc = 1;
		}
		result_free(&r);
	}
	return rc;
}
