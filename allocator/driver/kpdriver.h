/*
 * kpdriver.h - the op driver: a compact program (op mix, size distributions,
 * working set, seed, threads, interference, faults) that the driver expands
 * itself, runs against a kpool pool or the process's malloc, and reports as
 * one JSON document (histograms, outliers, counters, events, pool stats).
 *
 * The map of the files (one per concept):
 *   program.c    parse the key=value program text into struct kpd_program
 *   hist.c       the log-linear latency histogram (HdrHistogram-style)
 *   driver.c     the worker threads: the op loop, timing, pattern checks
 *   interfere.c  interference threads and processes (system-call noise)
 *   crash.c      the fatal-signal line and backtrace the runner parses
 *   monitor.c    the observer thread: kpool events, stats timeline, progress
 *   report.c     the JSON writer and the result document
 *   kpdrive.c    the kpdrive executable: read a program, run, print JSON
 *
 * Python never sits inside the timed loop: the harness compiles a workload
 * file into a program, runs kpdrive, and reads its JSON.
 */
#ifndef KPDRIVER_H
#define KPDRIVER_H

#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <time.h>

#include "kpool.h"

/* ---- limits ----------------------------------------------------------------- */

#define KPD_MAX_THREADS 64 /* far above the cores of the machines we run on */
#define KPD_MAX_INTERF 16  /* interference entries per program */
#define KPD_MAX_LIST 32	   /* entries of a weighted size list */
#define KPD_CONF_LEN 1024  /* kpool conf and fault spec strings */
#define KPD_MAX_OUTLIERS 1024
#define KPD_MAX_DAMAGE 16 /* damaged blocks described in detail */

/* ---- clock ------------------------------------------------------------------ */

static inline uint64_t kpd_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/*
 * The op timer. timer=clock: CLOCK_MONOTONIC (a vDSO call, ~20 ns on a VM).
 * timer=tsc: the CPU's invariant time-stamp counter (rdtsc, ~8 ns),
 * the counter the kernel itself reads for CLOCK_MONOTONIC when its
 * clocksource is tsc, scaled to ns by a factor calibrated against
 * CLOCK_MONOTONIC at start. Only offered when the kernel reports
 * constant_tsc and nonstop_tsc and the clocksource is tsc. timer=auto (the
 * default) takes the TSC where it is offered and the clock elsewhere: the
 * same monotonic time, read for half the cost.
 */
extern bool kpd_tsc_on;
extern uint64_t kpd_tsc_mult; /* ns per tick, 32.32 fixed point */
extern uint64_t kpd_tsc_base, kpd_mono_base;

#if defined(__x86_64__)
#include <x86intrin.h>
#endif

static inline uint64_t kpd_tick(void)
{
#if defined(__x86_64__)
	if (kpd_tsc_on)
		return __rdtsc();
#endif
	return kpd_now();
}

static inline uint64_t kpd_tick_ns(uint64_t ticks)
{
	if (!kpd_tsc_on)
		return ticks;
	return (uint64_t)(((unsigned __int128)ticks * kpd_tsc_mult) >> 32);
}

static inline uint64_t kpd_tick_to_mono(uint64_t tick)
{
	if (!kpd_tsc_on)
		return tick;
	return kpd_mono_base + kpd_tick_ns(tick - kpd_tsc_base);
}

/* Switch the timer to the TSC: 0, or -1 with the reason in note. */
int kpd_timer_use_tsc(char *note, size_t len);

static inline uint64_t kpd_splitmix(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

/* A uniform double in [0, 1) from the top 53 bits. */
static inline double kpd_unit(uint64_t r)
{
	return (double)(r >> 11) * (1.0 / 9007199254740992.0);
}

/* ---- histogram (hist.c) ----------------------------------------------------- */

/*
 * Log-linear like HdrHistogram: values below 2^SUB_BITS ns are exact; each
 * power of two above is cut into 2^SUB_BITS equal buckets, so a value is kept
 * within 1/128 (0.8%) of itself. 2^KPD_H_MAX_EXP ns is 17 s; slower values
 * land in the last bucket (and max keeps the true value). kpbench's histogram
 * is the same design with 5 sub-bucket bits (3%).
 */
#define KPD_H_SUB_BITS 7
#define KPD_H_SUB (1u << KPD_H_SUB_BITS)
#define KPD_H_MAX_EXP 34
#define KPD_H_BUCKETS ((KPD_H_MAX_EXP - KPD_H_SUB_BITS + 1) * KPD_H_SUB + KPD_H_SUB)

struct kpd_hist {
	uint64_t count, sum, min, max;
	uint64_t b[KPD_H_BUCKETS];
};

static inline unsigned kpd_hist_index(uint64_t v)
{
	if (v < KPD_H_SUB)
		return (unsigned)v;
	unsigned e = 63u - (unsigned)__builtin_clzll(v);
	if (e > KPD_H_MAX_EXP)
		return KPD_H_BUCKETS - 1;
	return KPD_H_SUB + (e - KPD_H_SUB_BITS) * KPD_H_SUB + (unsigned)((v >> (e - KPD_H_SUB_BITS)) & (KPD_H_SUB - 1));
}

/* The hot path keeps buckets, sum and max only; kpd_hist_seal() derives
 * count and min (the low bound of the first bucket: exact below 128 ns). */
static inline void kpd_hist_add(struct kpd_hist *h, uint64_t v)
{
	h->b[kpd_hist_index(v)]++;
	h->sum += v;
	if (v > h->max)
		h->max = v;
}

struct kpd_hist *kpd_hist_new(void);	/* empty; NULL on out of memory */
void kpd_hist_seal(struct kpd_hist *h); /* count and min from the buckets */
void kpd_hist_merge(struct kpd_hist *into, const struct kpd_hist *from);
uint64_t kpd_hist_bucket_low(unsigned i);
uint64_t kpd_hist_bucket_high(unsigned i);
uint64_t kpd_hist_pct(const struct kpd_hist *h, double q);
/* The cost of one clock read as it shows up in every sample (median). */
uint64_t kpd_clock_cost_ns(void);

/* ---- the program (program.c) ------------------------------------------------- */

/* Operation kinds of the mix. */
enum kpd_op {
	KPD_OP_ALLOC,	/* allocate into the working set (free a victim when full) */
	KPD_OP_FREE,	/* free a random live block */
	KPD_OP_REALLOC, /* resize a random live block */
	KPD_OP_CALLOC,	/* zeroed allocation (KP_ZERO / calloc), checked for zeros */
	KPD_OP_ALIGNED, /* aligned allocation (kp_alloc_aligned / posix_memalign) */
	KPD_OP_XFREE,	/* hand a block to the next thread, which frees it */
	KPD_OP_TOUCH,	/* rewrite the pattern of a random live block */
	KPD_OP_VERIFY,	/* check the pattern of a random live block */
	KPD_OP__COUNT
};

/* Histogram kinds: what was timed. */
enum kpd_kind {
	KPD_K_ALLOC,
	KPD_K_FREE,
	KPD_K_REALLOC,
	KPD_K_CALLOC,
	KPD_K_ALIGNED,
	KPD_K_FREE_REMOTE,
	KPD_K_TOUCH,
	KPD_K_VERIFY,
	KPD_K_CRITICAL, /* KP_CRITICAL allocation inside a critical scope */
	KPD_K__COUNT
};

extern const char *const kpd_op_names[KPD_OP__COUNT];
extern const char *const kpd_kind_names[KPD_K__COUNT];

enum kpd_dist_kind { KPD_D_FIXED, KPD_D_UNIFORM, KPD_D_LOGUNIFORM, KPD_D_LOGNORMAL, KPD_D_LIST };

struct kpd_dist {
	enum kpd_dist_kind kind;
	uint64_t lo, hi;      /* fixed: lo; uniform/loguniform: [lo, hi]; lognormal: clamp */
	double median, sigma; /* lognormal: exp(N(ln median, sigma)) */
	unsigned n;	      /* list */
	uint64_t v[KPD_MAX_LIST];
	double w[KPD_MAX_LIST]; /* cumulative weights, normalised to 1 */
};

enum kpd_if_kind {
	KPD_IF_MMAP,	 /* mmap + touch one page + munmap */
	KPD_IF_MADVISE,	 /* touch a region, madvise(DONTNEED) it */
	KPD_IF_FAULTS,	 /* fault storm: touch every page of a fresh mapping */
	KPD_IF_MPROTECT, /* flip a region between read-only and read-write */
	KPD_IF_BRK,	 /* brk: grow/shrink in a process, set-to-same in a thread */
	KPD_IF_FSYNC,	 /* write a page to a temporary file and fsync it */
	KPD_IF_FORK,	 /* fork a child that exits at once, and reap it */
	KPD_IF_GETPID,	 /* cheap system call */
	KPD_IF_YIELD,	 /* sched_yield */
	KPD_IF__COUNT
};

extern const char *const kpd_if_names[KPD_IF__COUNT];

struct kpd_interf {
	enum kpd_if_kind kind;
	double rate;	  /* calls per second per thread/process; 0 = flat out */
	uint64_t size;	  /* region size where it matters */
	unsigned threads; /* how many threads (or processes) */
	bool process;	  /* sibling processes instead of threads */
};

enum kpd_verify { KPD_VERIFY_FULL, KPD_VERIFY_ENDS, KPD_VERIFY_NONE };

struct kpd_program {
	char name[128];
	bool use_kpool;		   /* false: the process's malloc */
	char conf[KPD_CONF_LEN];   /* kp_create conf */
	char faults[KPD_CONF_LEN]; /* kp_fault_inject spec, applied after create */
	double weight[KPD_OP__COUNT];
	struct kpd_dist size, realloc_size;
	uint64_t align;	      /* for aligned ops */
	uint64_t working_set; /* live blocks per thread, at most */
	uint64_t ops;	      /* operations per thread (0: use duration) */
	uint64_t duration_ms; /* run time when ops is 0 */
	uint64_t seed;
	double critical; /* share of allocations made as critical */
	unsigned threads;
	unsigned sample;   /* time 1 op in `sample` (1: every op) */
	unsigned outliers; /* K slowest kept */
	enum kpd_verify verify;
	double rate; /* ops per second per thread; 0 = flat out */
	struct kpd_interf interf[KPD_MAX_INTERF];
	unsigned ninterf;
	unsigned timeline_ms; /* stats sample period */
	bool timer_tsc;	      /* time ops with the TSC instead of clock_gettime */
	bool timer_auto;      /* ... where possible, silently falling back to the clock */
	unsigned progress_ms; /* progress line period on stderr; 0 = none */
	/* planted bugs, for the harness's own tests */
	uint64_t stray_every;	/* every Nth op flips a byte inside a live block */
	uint64_t overrun_every; /* every Nth allocation writes 8 bytes past its end */
	uint64_t hang_at;	/* thread 0 stops forever at this op (1-based) */
	uint64_t crash_at;	/* thread 0 dereferences a bad pointer here */
};

/* Defaults, then `text` (lines of key=value; '#' starts a comment). 0, or -1
 * with a message naming the line, key and allowed values in err. */
int kpd_program_parse(struct kpd_program *p, const char *text, char *err, size_t errlen);
void kpd_program_defaults(struct kpd_program *p);

/* Draw one size. */
uint64_t kpd_dist_draw(const struct kpd_dist *d, uint64_t *rng);

/* ---- the run (driver.c) --------------------------------------------------------- */

struct kpd_outlier {
	uint64_t lat_ns, t_ns; /* latency; start, ns since the run started */
	uint64_t index;	       /* op index in its thread */
	uint64_t size;
	uint32_t thread, kind; /* enum kpd_kind */
	uint8_t interf;	       /* an interference call was in flight */
	uint8_t grow, backup;  /* filled by the monitor after the run */
};

struct kpd_damage {
	uint32_t thread;
	uint64_t index, size, offset; /* op index; block size; first bad byte */
	uint8_t want, got;
	const char *when; /* "free", "verify", "realloc", "remote free", "calloc" */
};

struct kpd_counters {
	uint64_t ops, steps, timed; /* ops: every op done, victims' frees too; steps: loop turns */
	uint64_t by_op[KPD_OP__COUNT];
	uint64_t alloc_failures, critical_allocs, critical_failures, critical_denied;
	uint64_t realloc_failures;
	uint64_t verify_errors, zero_errors; /* damaged blocks; calloc not zero */
	uint64_t free_errors[8];	     /* by -code of kp_free (0 unused) */
	uint64_t remote_sent, remote_local;  /* handed over; freed locally (inbox full) */
	uint64_t planted_stray, planted_overrun;
	uint64_t bytes_allocated;
};

struct kpd_thread;	 /* private to driver.c */
struct kpd_monitor;	 /* private to monitor.c */
struct kpd_interference; /* private to interfere.c */

struct kpd_run {
	const struct kpd_program *prog;
	kp_pool *pool;
	uint64_t token;		       /* the critical token, 0 without kpool */
	uint64_t t0;		       /* run start (CLOCK_MONOTONIC ns) */
	uint64_t loop_start, loop_end; /* first thread start, last thread end */
	uint64_t loop_cpu_ns;	       /* CPU time of all op loops together */
	uint64_t clock_ns;	       /* cost of one timer read */
	bool timer_tsc_refused;
	char timer_note[128];
	_Atomic int stop;
	struct kpd_thread *threads[KPD_MAX_THREADS];
	struct kpd_monitor *mon;
	struct kpd_interference *intf;
	/* merged results */
	struct kpd_hist *hist[KPD_K__COUNT];
	struct kpd_counters c;
	struct kpd_outlier *outliers;
	unsigned noutliers;
	struct kpd_damage damage[KPD_MAX_DAMAGE];
	unsigned ndamage;
	char *stats_json;	      /* kp_stats_json at the end, or NULL */
	char error[3 * KPD_CONF_LEN]; /* a setup failure, "" if none */
};

/* Run the program; results in run. 0, or -1 with run->error set. */
int kpd_run(struct kpd_run *run, const struct kpd_program *prog);
void kpd_run_free(struct kpd_run *run);
/* Ops completed so far over all threads (any thread may call it). */
uint64_t kpd_ops_done(struct kpd_run *run);

/* ---- crashes (crash.c) ------------------------------------------------------------ */

/* Install the fatal-signal handlers (unless a sanitizer has its own). */
void kpd_crash_handlers(void);
/* The calling driver thread's id and the address of its op counter. */
void kpd_crash_context(unsigned thread, const uint64_t *index);

/* ---- interference (interfere.c) --------------------------------------------------- */

/* Start the process-mode interference (before the pool exists, so that the
 * children carry no pool) and then the thread-mode one. 0, or -1 + error. */
int kpd_interfere_start_processes(struct kpd_run *run);
int kpd_interfere_start_threads(struct kpd_run *run);
void kpd_interfere_stop(struct kpd_run *run);
void kpd_interfere_free(struct kpd_run *run);
/* Cheap: is an interference call in flight, or did one end after t? */
bool kpd_interfere_busy_since(const struct kpd_run *run, uint64_t t);
/* Calls made per interference kind; errors (failed calls). */
void kpd_interfere_counts(const struct kpd_run *run, uint64_t calls[KPD_IF__COUNT], uint64_t *errors);

/* ---- monitor (monitor.c) ------------------------------------------------------------ */

int kpd_monitor_start(struct kpd_run *run);
void kpd_monitor_stop(struct kpd_run *run);
void kpd_monitor_free(struct kpd_run *run);
/* Mark the outliers that overlapped a grow or ran while the backup served. */
void kpd_monitor_annotate(struct kpd_run *run);

/* ---- report (report.c) ----------------------------------------------------------------- */

void kpd_report(FILE *out, const struct kpd_run *run);
/* Write one JSON string (quoted, escaped). */
void kpd_json_string(FILE *out, const char *s);
/* The monitor's part of the report: events and timeline. */
void kpd_monitor_report(FILE *out, const struct kpd_run *run);

#endif /* KPDRIVER_H */
