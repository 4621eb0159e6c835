/*
 * kpbench.h - what the kpbench files share: constants, the clock, the
 * histogram, the allocator under test, the step tables and the results.
 * One file per concept: common.c (clock, histogram, steps, the pool),
 * slots.c (workloads a and b), cross.c (c), grow.c (d), rss.c (resident
 * memory over a run), kpbench.c (options, output, main). The Makefile's bench rule depends on the bench .c files
 * only: after editing this header alone, touch a .c file (or make clean).
 */
#ifndef KPBENCH_H
#define KPBENCH_H

#define _GNU_SOURCE
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
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

static inline uint64_t thread_cpu_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

double secs_between(uint64_t t0, uint64_t t1);
/* Minor page faults of the calling thread (RUSAGE_THREAD) or of the whole
 * process (RUSAGE_SELF). */
uint64_t minflt(int who);

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
			i = H_SUB + (e - H_SUB_BITS) * H_SUB + (unsigned)((v >> (e - H_SUB_BITS)) & (H_SUB - 1));
	}
	h->b[i]++;
	h->count++;
	h->sum += v;
	if (v > h->max)
		h->max = v;
}

uint64_t hist_pct(const struct hist *h, double q);
void hist_merge(struct hist *into, const struct hist *from);
struct hist *hist_new(void); /* zeroed; exits on out of memory */
/* The cost of one clock read, as it shows up inside every latency sample. */
uint64_t clock_cost_ns(void);

/* ---- the allocator under test -------------------------------------------- */

extern kp_pool *g_pool; /* NULL: the process's malloc/free */
extern bool g_use_kpool;
extern _Atomic uint64_t g_free_errors;

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

/* RSS over a workload (rss.c). */
#define RSS_SAMPLES 512
struct rss_trace {
	unsigned n, interval_ms, skip;
	uint64_t start_kib, end_kib;
	uint64_t peak_kib; /* the largest sample */
	uint64_t hwm_kib;  /* VmHWM: the process's exact peak so far */
	uint32_t kib[RSS_SAMPLES];
};
void rss_start(struct rss_trace *t);
void rss_stop(struct rss_trace *t);
uint64_t rss_now_kib(void);
uint64_t rss_hwm_kib(void);

struct result {
	char wl;
	const char *desc;
	const char *conf; /* kpool only */
	uint64_t ops;
	double secs;
	/* The timed loop's thread's CPU time (workloads a and b, one thread;
	 * 0 elsewhere): on a shared machine, where other processes take the
	 * CPU from the loop, ops per CPU second compare builds and settings
	 * (checks on against off) far more steadily than wall time. */
	double cpu_secs;
	uint64_t thread_minflt; /* faults of the timed loop's thread(s) */
	uint64_t verify_errors, alloc_failures, free_errors;
	struct hist *lat_alloc, *lat_free;
	int nrounds;
	struct round rounds[MAX_ROUNDS];
	/* (c) only, over the timed loop: which mode the run was in (cross.c). */
	struct cross_mode {
		bool set;
		double same_cpu;      /* share of samples with both threads on one CPU */
		uint64_t queue_full;  /* pushes that found the peer's queue full */
		uint64_t yields;      /* sched_yield calls while waiting for the peer */
		uint64_t vcsw, ivcsw; /* the two threads' voluntary, involuntary switches */
	} cross;
	char *kp_stats; /* kp_stats_json() at the end, or NULL */
	struct rss_trace rss;
};

struct opts {
	bool json;
	const char *conf;
	uint64_t ops; /* 0: the workload's default */
	uint64_t seed;
	uint64_t grow;
	int rounds;
	char pin; /* (c): 0 the scheduler's choice, 's' both threads on one CPU, 'a' one each */
};

/* Create the pool (kpool only): 0, or -1 with a message on stderr. */
int pool_open(const char *conf);
/* Flush this thread's cache, keep the stats in r, destroy the pool. */
void pool_close(struct result *r);

/* ---- precomputed random steps -------------------------------------------- */

struct step {
	uint32_t slot, size;
};

enum dist { UNIFORM, LOGUNIFORM };

/* RTAB steps: a slot below nslots (0 if nslots is 0) and a size in [lo, hi]. */
struct step *make_steps(uint32_t nslots, enum dist d, uint32_t lo, uint32_t hi, uint64_t seed);

struct slot {
	void *p;
	uint32_t n;
};

/* ---- the workloads: 0, or -1 when the pool could not be set up ----------- */

int run_a(struct result *r, const struct opts *o);
int run_b(struct result *r, const struct opts *o);
int run_c(struct result *r, const struct opts *o);
int run_d(struct result *r, const struct opts *o);
int run_e(struct result *r, const struct opts *o); /* kpool only */
int run_f(struct result *r, const struct opts *o);

#endif /* KPBENCH_H */
