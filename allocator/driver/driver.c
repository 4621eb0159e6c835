/*
 * driver.c - the worker threads: expand the program into steps, run the op
 * loop, time each allocator call, fill and check block patterns, and merge
 * the threads' results into the run.
 *
 * Timing: only the allocator call sits between the two clock reads; pattern
 * work, victim choice and bookkeeping stay outside. When a full working set
 * makes an allocation free a victim first, the free and the allocation run
 * back to back and share the clock read between them (three reads, two ops).
 */
#include "kpdriver.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* 2^16 precomputed steps (1 MiB a thread): the cycle is invisible to an
 * allocator, the table streams from L2 at no measurable cost, and drawing
 * sizes (pow, exp, log) stays out of the loop. */
#define STEP_BITS 16
#define NSTEPS (1u << STEP_BITS)
#define STEP_MASK (NSTEPS - 1)

/* The cross-thread inbox: a single-producer single-consumer ring. 4096 blocks
 * in transit is far more than a thread sends between two of its receiver's
 * drains (every INBOX_POLL ops). */
#define INBOX 4096u
#define INBOX_POLL 16u

/* Progress counters are published every PUBLISH loop turns: one relaxed store. */
#define PUBLISH 1024u

struct step {
	uint32_t r;	/* victim choice */
	uint32_t size;	/* allocation size */
	uint32_t size2; /* realloc size */
	uint8_t op, crit;
};

struct block {
	unsigned char *p;
	uint32_t size;
	uint32_t tag;
};

struct inbox {
	_Atomic uint32_t head, tail; /* producer writes head, consumer tail */
	struct block b[INBOX];
};

struct kpd_thread {
	struct kpd_run *run;
	unsigned id;
	pthread_t th;
	struct step *steps;
	struct block *live;
	uint64_t nlive, cap;
	uint64_t index; /* ops so far (1-based while running op `index`) */
	uint32_t next_tag;
	unsigned sample_left;
	struct kpd_hist *h[KPD_K__COUNT];
	struct kpd_outlier *heap; /* min-heap on lat_ns, K entries */
	unsigned nheap;
	uint64_t heap_floor; /* latency an op must beat to enter a full heap */
	struct kpd_counters c;
	struct kpd_damage damage[KPD_MAX_DAMAGE];
	unsigned ndamage;
	struct inbox *inbox;
	_Atomic uint64_t done; /* ops so far, published every PUBLISH turns */
	_Atomic int finished;
	uint64_t t_start, t_end;
	uint64_t cpu_ns; /* CPU time of the op loop (CLOCK_THREAD_CPUTIME_ID) */
};

/* ---- patterns ------------------------------------------------------------------- */

/* The pattern word of a block: byte i of the block is byte i%8 of it. */
static inline uint64_t pattern_word(uint32_t tag)
{
	uint64_t s = tag;
	return kpd_splitmix(&s) | 0x0101010101010101ull; /* never a zero byte */
}

/* 16-byte vectors (SSE2 on x86-64, generic code elsewhere): the pattern
 * loops run two vectors a turn, four times fewer turns than by words. */
typedef uint64_t v2u64 __attribute__((vector_size(16)));

static inline void fill_range(unsigned char *p, uint64_t from, uint64_t to, uint64_t w)
{
	uint64_t i = from;
	for (; i < to && (i & 7); i++)
		p[i] = (unsigned char)(w >> (8 * (i & 7)));
	v2u64 vw = {w, w};
	for (; i + 32 <= to; i += 32) {
		memcpy(p + i, &vw, 16);
		memcpy(p + i + 16, &vw, 16);
	}
	for (; i + 8 <= to; i += 8)
		memcpy(p + i, &w, 8);
	for (; i < to; i++)
		p[i] = (unsigned char)(w >> (8 * (i & 7)));
}

/* The first bad offset in [from, to), or to when the range is intact. The
 * fast pass folds every word into one accumulator (no early exit, so the
 * compiler vectorises it); only a damaged block pays for the slow search. */
static inline uint64_t check_range(const unsigned char *p, uint64_t from, uint64_t to, uint64_t w)
{
	uint64_t i = from, acc = 0;
	for (; i < to && (i & 7); i++)
		acc |= p[i] ^ (unsigned char)(w >> (8 * (i & 7)));
	v2u64 vw = {w, w}, vacc = {0, 0};
	for (; i + 32 <= to; i += 32) {
		v2u64 a, b;
		memcpy(&a, p + i, 16);
		memcpy(&b, p + i + 16, 16);
		vacc |= (a ^ vw) | (b ^ vw);
	}
	acc |= vacc[0] | vacc[1];
	for (; i + 8 <= to; i += 8) {
		uint64_t x;
		memcpy(&x, p + i, 8);
		acc |= x ^ w;
	}
	for (; i < to; i++)
		acc |= p[i] ^ (unsigned char)(w >> (8 * (i & 7)));
	if (__builtin_expect(acc == 0, 1))
		return to;
	for (i = from; i < to; i++)
		if (p[i] != (unsigned char)(w >> (8 * (i & 7))))
			return i;
	return to;
}

/* Pattern ranges by verify mode: full, or the first and last 8 bytes. */
static void fill_block(const struct kpd_thread *t, const struct block *b)
{
	uint64_t w = pattern_word(b->tag);
	if (t->run->prog->verify == KPD_VERIFY_FULL || b->size <= 16) {
		fill_range(b->p, 0, b->size, w);
	} else if (t->run->prog->verify == KPD_VERIFY_ENDS) {
		fill_range(b->p, 0, 8, w);
		fill_range(b->p, b->size - 8, b->size, w);
	}
}

static void record_damage(struct kpd_thread *t, const struct block *b, uint64_t off, const char *when)
{
	t->c.verify_errors++;
	if (t->ndamage >= KPD_MAX_DAMAGE)
		return;
	uint64_t w = pattern_word(b->tag);
	t->damage[t->ndamage++] = (struct kpd_damage){
		.thread = t->id,
		.index = t->index,
		.size = b->size,
		.offset = off,
		.want = (unsigned char)(w >> (8 * (off & 7))),
		.got = b->p[off],
		.when = when,
	};
}

/* Check a block's pattern up to `upto` bytes; count and describe damage. */
static void check_block(struct kpd_thread *t, const struct block *b, uint64_t upto, const char *when)
{
	enum kpd_verify v = t->run->prog->verify;
	if (v == KPD_VERIFY_NONE || !b->p)
		return;
	uint64_t w = pattern_word(b->tag), bad;
	if (v == KPD_VERIFY_FULL || upto <= 16) {
		bad = check_range(b->p, 0, upto, w);
	} else {
		bad = check_range(b->p, 0, 8, w);
		if (bad == 8 && upto == b->size)
			bad = check_range(b->p, upto - 8, upto, w) == upto ? upto : upto - 8;
		else if (bad == 8)
			bad = upto;
	}
	if (bad < upto)
		record_damage(t, b, bad, when);
}

/* ---- the allocator under test --------------------------------------------------- */

static inline void *x_alloc(struct kpd_thread *t, uint64_t n, enum kpd_op op, bool crit)
{
	kp_pool *pool = t->run->pool;
	if (pool) {
		if (op == KPD_OP_ALIGNED)
			return kp_alloc_aligned(pool, n, t->run->prog->align, crit ? KP_CRITICAL : 0);
		return kp_alloc(pool, n, (op == KPD_OP_CALLOC ? KP_ZERO : 0) | (crit ? KP_CRITICAL : 0));
	}
	if (op == KPD_OP_CALLOC)
		return calloc(1, n);
	if (op == KPD_OP_ALIGNED) {
		void *p = NULL;
		size_t a = t->run->prog->align < sizeof(void *) ? sizeof(void *) : t->run->prog->align;
		return posix_memalign(&p, a, n) == 0 ? p : NULL;
	}
	return malloc(n);
}

static inline void x_free(struct kpd_thread *t, void *p)
{
	if (!t->run->pool) {
		free(p);
		return;
	}
	int rc = kp_free(t->run->pool, p);
	if (rc < 0 && -rc < 8)
		t->c.free_errors[-rc]++;
}

/* ---- timing ------------------------------------------------------------------------ */

static void heap_sift_down(struct kpd_outlier *h, unsigned n, unsigned i)
{
	for (;;) {
		unsigned l = 2 * i + 1, r = l + 1, m = i;
		if (l < n && h[l].lat_ns < h[m].lat_ns)
			m = l;
		if (r < n && h[r].lat_ns < h[m].lat_ns)
			m = r;
		if (m == i)
			return;
		struct kpd_outlier tmp = h[i];
		h[i] = h[m];
		h[m] = tmp;
		i = m;
	}
}

static void keep_outlier(struct kpd_thread *t, enum kpd_kind k, uint64_t t0, uint64_t lat, uint64_t size)
{
	unsigned K = t->run->prog->outliers;
	struct kpd_outlier o = {
		.lat_ns = lat,
		.t_ns = t0 - t->run->t0,
		.index = t->index,
		.size = size,
		.thread = t->id,
		.kind = k,
		.interf = kpd_interfere_busy_since(t->run, t0),
	};
	if (t->nheap < K) {
		unsigned i = t->nheap++;
		t->heap[i] = o;
		while (i && t->heap[(i - 1) / 2].lat_ns > t->heap[i].lat_ns) {
			struct kpd_outlier tmp = t->heap[i];
			t->heap[i] = t->heap[(i - 1) / 2];
			t->heap[(i - 1) / 2] = tmp;
			i = (i - 1) / 2;
		}
	} else {
		t->heap[0] = o;
		heap_sift_down(t->heap, K, 0);
	}
	if (t->nheap == K)
		t->heap_floor = t->heap[0].lat_ns;
}

/* t0, t1: kpd_tick() readings around the call. */
static inline void record(struct kpd_thread *t, enum kpd_kind k, uint64_t t0, uint64_t t1, uint64_t size)
{
	uint64_t lat = kpd_tick_ns(t1 - t0);
	kpd_hist_add(t->h[k], lat);
	if (lat > t->heap_floor)
		keep_outlier(t, k, kpd_tick_to_mono(t0), lat, size);
}

/* Is this op timed? (1 in `sample`.) */
static inline bool timed(struct kpd_thread *t)
{
	if (--t->sample_left)
		return false;
	t->sample_left = t->run->prog->sample;
	t->c.timed++;
	return true;
}

/* ---- the working set --------------------------------------------------------------- */

static inline uint64_t pick(const struct kpd_thread *t, uint32_t r)
{
	return ((uint64_t)r * t->nlive) >> 32;
}

static inline struct block take(struct kpd_thread *t, uint64_t i)
{
	struct block b = t->live[i];
	t->live[i] = t->live[--t->nlive];
	return b;
}

static void free_block(struct kpd_thread *t, struct block b, bool tm, enum kpd_kind k, const char *when)
{
	check_block(t, &b, b.size, when);
	if (tm) {
		uint64_t t0 = kpd_tick();
		x_free(t, b.p);
		record(t, k, t0, kpd_tick(), b.size);
	} else {
		x_free(t, b.p);
	}
	t->c.by_op[KPD_OP_FREE]++;
}

/* After a successful allocation: zero check, planted overrun, fill, keep. */
static void adopt(struct kpd_thread *t, unsigned char *p, uint32_t size, enum kpd_op op)
{
	const struct kpd_program *pr = t->run->prog;
	struct block b = {.p = p, .size = size, .tag = t->next_tag++};
	if (op == KPD_OP_CALLOC)
		for (uint64_t i = 0; i < size; i++)
			if (p[i]) {
				t->c.zero_errors++;
				break;
			}
	t->c.bytes_allocated += size;
	if (size)
		fill_block(t, &b);
	if (pr->overrun_every && ++t->c.planted_overrun % pr->overrun_every == 0)
		memset(p + size, 0x5a, 8); /* planted: 8 bytes past the end */
	t->live[t->nlive++] = b;
}

static void op_alloc(struct kpd_thread *t, const struct step *s, enum kpd_op op, bool tm)
{
	bool crit = s->crit && t->run->pool;
	enum kpd_kind k = crit			 ? KPD_K_CRITICAL
			  : op == KPD_OP_CALLOC	 ? KPD_K_CALLOC
			  : op == KPD_OP_ALIGNED ? KPD_K_ALIGNED
						 : KPD_K_ALLOC;
	bool have_victim = t->nlive == t->cap;
	struct block victim = {0};
	if (have_victim) {
		victim = take(t, pick(t, s->r));
		check_block(t, &victim, victim.size, "free");
	}
	if (crit && kp_critical_enter(t->run->pool, t->run->token) != 0) {
		t->c.critical_denied++;
		crit = false;
	}
	void *p;
	if (tm) {
		uint64_t t0 = kpd_tick(), t1 = t0;
		if (have_victim) {
			x_free(t, victim.p);
			t1 = kpd_tick();
			record(t, KPD_K_FREE, t0, t1, victim.size);
		}
		p = x_alloc(t, s->size, op, crit);
		record(t, k, t1, kpd_tick(), s->size);
	} else {
		if (have_victim)
			x_free(t, victim.p);
		p = x_alloc(t, s->size, op, crit);
	}
	if (crit)
		kp_critical_exit(t->run->pool);
	if (have_victim)
		t->c.by_op[KPD_OP_FREE]++;
	t->c.by_op[op]++;
	if (s->crit) {
		t->c.critical_allocs++;
		if (!p)
			t->c.critical_failures++;
	}
	if (p)
		adopt(t, p, s->size, op);
	else
		t->c.alloc_failures++;
}

static void op_realloc(struct kpd_thread *t, const struct step *s, bool tm)
{
	uint64_t i = pick(t, s->r);
	struct block *b = &t->live[i];
	uint32_t old = b->size, want = s->size2;
	check_block(t, b, old, "realloc");
	void *p;
	if (tm) {
		uint64_t t0 = kpd_tick();
		p = t->run->pool ? kp_realloc(t->run->pool, b->p, want, 0) : realloc(b->p, want);
		record(t, KPD_K_REALLOC, t0, kpd_tick(), want);
	} else {
		p = t->run->pool ? kp_realloc(t->run->pool, b->p, want, 0) : realloc(b->p, want);
	}
	t->c.by_op[KPD_OP_REALLOC]++;
	if (!p) {
		if (want == 0) { /* realloc(p, 0) freed it */
			take(t, i);
			return;
		}
		t->c.realloc_failures++;
		return;
	}
	b->p = p;
	b->size = want;
	check_block(t, b, old < want ? old : want, "realloc");
	if (want > old) {
		uint64_t w = pattern_word(b->tag);
		if (t->run->prog->verify == KPD_VERIFY_FULL)
			fill_range(b->p, old, want, w);
		else
			fill_block(t, b);
	}
	t->c.bytes_allocated += want > old ? want - old : 0;
}

static void op_touch_verify(struct kpd_thread *t, const struct step *s, bool touch, bool tm)
{
	struct block *b = &t->live[pick(t, s->r)];
	uint64_t t0 = tm ? kpd_tick() : 0;
	if (touch)
		fill_block(t, b);
	else
		check_block(t, b, b->size, "verify");
	if (tm)
		record(t, touch ? KPD_K_TOUCH : KPD_K_VERIFY, t0, kpd_tick(), b->size);
	t->c.by_op[touch ? KPD_OP_TOUCH : KPD_OP_VERIFY]++;
}

static void op_xfree(struct kpd_thread *t, const struct step *s, bool tm)
{
	struct block b = take(t, pick(t, s->r));
	t->c.by_op[KPD_OP_XFREE]++;
	struct kpd_thread *to = t->run->threads[(t->id + 1) % t->run->prog->threads];
	struct inbox *q = to->inbox;
	uint32_t h = atomic_load_explicit(&q->head, memory_order_relaxed);
	if (to != t && h - atomic_load_explicit(&q->tail, memory_order_acquire) < INBOX &&
	    !atomic_load_explicit(&to->finished, memory_order_acquire)) {
		check_block(t, &b, b.size, "hand-over");
		q->b[h % INBOX] = b;
		atomic_store_explicit(&q->head, h + 1, memory_order_release);
		t->c.remote_sent++;
		return;
	}
	t->c.remote_local++;
	free_block(t, b, tm, KPD_K_FREE, "free");
}

/* Free what other threads handed to this one. */
static void drain_inbox(struct kpd_thread *t, bool timing)
{
	struct inbox *q = t->inbox;
	uint32_t tail = atomic_load_explicit(&q->tail, memory_order_relaxed);
	uint32_t head = atomic_load_explicit(&q->head, memory_order_acquire);
	for (; tail != head; tail++) {
		struct block b = q->b[tail % INBOX];
		free_block(t, b, timing && timed(t), KPD_K_FREE_REMOTE, "remote free");
	}
	atomic_store_explicit(&q->tail, tail, memory_order_release);
}

/* ---- planted bugs ----------------------------------------------------------------- */

static void plant_stray(struct kpd_thread *t, uint32_t r)
{
	if (t->nlive == 0)
		return;
	struct block *b = &t->live[pick(t, r)];
	if (b->size == 0)
		return;
	b->p[b->size / 2] ^= 0xff; /* planted: a stray write inside a live block */
	t->c.planted_stray++;
}

static void hang_forever(void)
{
	for (;;)
		pause(); /* planted: a hang, for the runner's time limit */
}

/* A pointer the compiler cannot see through, so the planted crash is a real
 * SIGSEGV at run time rather than a diagnostic at build time. */
static volatile uintptr_t g_wild = 8;

static void wild_write(void)
{
	*(volatile int *)g_wild = 1; /* planted: a wild write */
}

/* ---- the loop ------------------------------------------------------------------------ */

static void one_op(struct kpd_thread *t, const struct step *s)
{
	bool tm = timed(t);
	enum kpd_op op = (enum kpd_op)s->op;
	if (t->nlive == 0 && op != KPD_OP_CALLOC && op != KPD_OP_ALIGNED)
		op = KPD_OP_ALLOC; /* nothing live to work on: allocate instead */
	switch (op) {
	case KPD_OP_ALLOC:
	case KPD_OP_CALLOC:
	case KPD_OP_ALIGNED: op_alloc(t, s, op, tm); break;
	case KPD_OP_FREE: free_block(t, take(t, pick(t, s->r)), tm, KPD_K_FREE, "free"); break;
	case KPD_OP_REALLOC: op_realloc(t, s, tm); break;
	case KPD_OP_XFREE: op_xfree(t, s, tm); break;
	case KPD_OP_TOUCH:
	case KPD_OP_VERIFY: op_touch_verify(t, s, op == KPD_OP_TOUCH, tm); break;
	case KPD_OP__COUNT: break;
	}
}

static void pace(const struct kpd_thread *t, uint64_t i)
{
	double rate = t->run->prog->rate;
	uint64_t due = t->t_start + (uint64_t)((double)i * 1e9 / rate);
	uint64_t now = kpd_now();
	if (due > now) {
		struct timespec ts = {.tv_sec = (time_t)(due / 1000000000ull), .tv_nsec = (long)(due % 1000000000ull)};
		clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL);
	}
}

/* The next loop turn (1-based index) at which something other than an op is
 * due: progress, the deadline and stop checks, pacing, planted bugs. The loop
 * compares one counter per turn instead of testing each of them. */
static uint64_t next_special(const struct kpd_thread *t, uint64_t idx)
{
	const struct kpd_program *pr = t->run->prog;
	uint64_t next = (idx / PUBLISH + 1) * PUBLISH;
	if (pr->rate > 0 && (idx / 64 + 1) * 64 < next)
		next = (idx / 64 + 1) * 64;
	if (pr->stray_every && (idx / pr->stray_every + 1) * pr->stray_every < next)
		next = (idx / pr->stray_every + 1) * pr->stray_every;
	if (t->id == 0 && pr->hang_at > idx && pr->hang_at < next)
		next = pr->hang_at;
	if (t->id == 0 && pr->crash_at > idx && pr->crash_at < next)
		next = pr->crash_at;
	return next;
}

/* Everything due at turn idx; false when the loop must end. */
static bool special(struct kpd_thread *t, uint64_t idx, uint64_t deadline)
{
	const struct kpd_program *pr = t->run->prog;
	if (idx % PUBLISH == 0) {
		/* ops, not loop turns: a turn into a full working set is two ops
		 * (the victim's free and the alloc), as the final counters count. */
		uint64_t ops = 0;
		for (int k = 0; k < KPD_OP__COUNT; k++)
			ops += t->c.by_op[k];
		atomic_store_explicit(&t->done, ops, memory_order_relaxed);
		if (atomic_load_explicit(&t->run->stop, memory_order_relaxed))
			return false;
		if (deadline != UINT64_MAX && kpd_now() >= deadline)
			return false;
	}
	if (pr->rate > 0 && idx % 64 == 0)
		pace(t, idx);
	if (pr->stray_every && idx % pr->stray_every == 0)
		plant_stray(t, t->steps[(idx + 7) & STEP_MASK].r);
	if (t->id == 0 && idx == pr->hang_at)
		hang_forever();
	if (t->id == 0 && idx == pr->crash_at)
		wild_write();
	return true;
}

static void run_loop(struct kpd_thread *t)
{
	const struct kpd_program *pr = t->run->prog;
	bool multi = pr->threads > 1;
	uint64_t n = pr->ops ? pr->ops : UINT64_MAX;
	uint64_t deadline = pr->ops ? UINT64_MAX : t->t_start + pr->duration_ms * 1000000ull;
	uint64_t due = next_special(t, 0);
	for (uint64_t idx = 1; idx <= n; idx++) {
		t->index = idx;
		one_op(t, &t->steps[idx & STEP_MASK]);
		if (multi && (idx % INBOX_POLL) == 0)
			drain_inbox(t, true);
		if (__builtin_expect(idx == due, 0)) {
			if (!special(t, idx, deadline))
				break;
			due = next_special(t, idx);
		}
	}
	for (int k = 0; k < KPD_OP__COUNT; k++)
		t->c.ops += t->c.by_op[k];
	t->c.steps = t->index;
	atomic_store_explicit(&t->done, t->c.ops, memory_order_relaxed);
}

/* ---- setup and merge ------------------------------------------------------------------- */

static int make_steps(struct kpd_thread *t)
{
	const struct kpd_program *pr = t->run->prog;
	double total = 0, cum[KPD_OP__COUNT];
	for (int k = 0; k < KPD_OP__COUNT; k++)
		cum[k] = (total += pr->weight[k]);
	uint64_t rng = pr->seed * 0x100000001b3ull + t->id + 1;
	t->steps = malloc(sizeof(*t->steps) * NSTEPS);
	if (!t->steps)
		return -1;
	for (uint32_t i = 0; i < NSTEPS; i++) {
		struct step *s = &t->steps[i];
		double u = kpd_unit(kpd_splitmix(&rng)) * total;
		int op = 0;
		while (op < KPD_OP__COUNT - 1 && u >= cum[op])
			op++;
		s->op = (uint8_t)op;
		s->r = (uint32_t)kpd_splitmix(&rng);
		s->size = (uint32_t)kpd_dist_draw(&pr->size, &rng);
		s->size2 = (uint32_t)kpd_dist_draw(&pr->realloc_size, &rng);
		s->crit = pr->critical > 0 && kpd_unit(kpd_splitmix(&rng)) < pr->critical;
	}
	return 0;
}

static struct kpd_thread *thread_new(struct kpd_run *run, unsigned id)
{
	struct kpd_thread *t = calloc(1, sizeof(*t));
	if (!t)
		return NULL;
	t->run = run;
	t->id = id;
	t->cap = run->prog->working_set;
	t->sample_left = 1;
	t->next_tag = (uint32_t)(id << 24) + 1;
	t->live = calloc(t->cap, sizeof(*t->live));
	t->heap = calloc(run->prog->outliers ? run->prog->outliers : 1, sizeof(*t->heap));
	t->inbox = calloc(1, sizeof(*t->inbox));
	t->heap_floor = run->prog->outliers ? 0 : UINT64_MAX;
	bool ok = t->live && t->heap && t->inbox && make_steps(t) == 0;
	for (int k = 0; ok && k < KPD_K__COUNT; k++)
		ok = (t->h[k] = kpd_hist_new()) != NULL;
	if (!ok) {
		free(t->live);
		free(t->heap);
		free(t->inbox);
		free(t->steps);
		for (int k = 0; k < KPD_K__COUNT; k++)
			free(t->h[k]);
		free(t);
		return NULL;
	}
	return t;
}

static pthread_barrier_t g_start;

static uint64_t thread_cpu_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void *thread_main(void *arg)
{
	struct kpd_thread *t = arg;
	kpd_crash_context(t->id, &t->index);
	pthread_barrier_wait(&g_start);
	uint64_t c0 = thread_cpu_ns();
	t->t_start = kpd_now();
	run_loop(t);
	t->t_end = kpd_now();
	t->cpu_ns = thread_cpu_ns() - c0;
	/* Stop accepting blocks, then wait for every thread before the last
	 * drain, so that nothing handed over is left behind. */
	atomic_store_explicit(&t->finished, 1, memory_order_release);
	pthread_barrier_wait(&g_start);
	drain_inbox(t, false);
	while (t->nlive)
		free_block(t, take(t, t->nlive - 1), false, KPD_K_FREE, "free");
	if (t->run->pool)
		kp_thread_flush(t->run->pool);
	return NULL;
}

static int cmp_outlier(const void *a, const void *b)
{
	const struct kpd_outlier *x = a, *y = b;
	return x->lat_ns < y->lat_ns ? 1 : x->lat_ns > y->lat_ns ? -1 : 0;
}

static void merge(struct kpd_run *run)
{
	unsigned n = run->prog->threads, total = 0;
	for (int k = 0; k < KPD_K__COUNT; k++)
		run->hist[k] = kpd_hist_new();
	run->outliers = calloc((size_t)n * (run->prog->outliers + 1), sizeof(*run->outliers));
	run->loop_start = UINT64_MAX;
	for (unsigned i = 0; i < n; i++) {
		struct kpd_thread *t = run->threads[i];
		for (int k = 0; k < KPD_K__COUNT; k++) {
			kpd_hist_seal(t->h[k]);
			if (run->hist[k])
				kpd_hist_merge(run->hist[k], t->h[k]);
		}
		uint64_t *dst = (uint64_t *)&run->c, *src = (uint64_t *)&t->c;
		for (size_t w = 0; w < sizeof(run->c) / sizeof(uint64_t); w++)
			dst[w] += src[w];
		if (run->outliers)
			for (unsigned j = 0; j < t->nheap; j++)
				run->outliers[total++] = t->heap[j];
		for (unsigned j = 0; j < t->ndamage && run->ndamage < KPD_MAX_DAMAGE; j++)
			run->damage[run->ndamage++] = t->damage[j];
		if (t->t_start < run->loop_start)
			run->loop_start = t->t_start;
		if (t->t_end > run->loop_end)
			run->loop_end = t->t_end;
		run->loop_cpu_ns += t->cpu_ns;
	}
	if (run->outliers) {
		qsort(run->outliers, total, sizeof(*run->outliers), cmp_outlier);
		run->noutliers = total < run->prog->outliers ? total : run->prog->outliers;
	}
}

uint64_t kpd_ops_done(struct kpd_run *run)
{
	uint64_t sum = 0;
	for (unsigned i = 0; i < run->prog->threads; i++)
		if (run->threads[i])
			sum += atomic_load_explicit(&run->threads[i]->done, memory_order_relaxed);
	return sum;
}

/* ---- the run --------------------------------------------------------------------------------- */

static int setup_pool(struct kpd_run *run)
{
	const struct kpd_program *pr = run->prog;
	if (!pr->use_kpool)
		return 0;
	run->pool = kp_create(pr->conf);
	if (!run->pool) {
		snprintf(run->error, sizeof(run->error), "kp_create(\"%s\"): %s", pr->conf, kp_last_error());
		return -1;
	}
	if (pr->critical > 0)
		run->token = kp_critical_token(run->pool);
	if (pr->faults[0] && kp_fault_inject(run->pool, pr->faults) != 0) {
		snprintf(run->error, sizeof(run->error), "kp_fault_inject(\"%s\"): %s", pr->faults, kp_last_error());
		return -1;
	}
	return 0;
}

int kpd_run(struct kpd_run *run, const struct kpd_program *prog)
{
	memset(run, 0, sizeof(*run));
	run->prog = prog;
	run->t0 = kpd_now();
	kpd_crash_handlers();
	if (prog->timer_tsc && kpd_timer_use_tsc(run->timer_note, sizeof(run->timer_note)) != 0)
		run->timer_tsc_refused = !prog->timer_auto;
	run->clock_ns = kpd_clock_cost_ns();
	if (kpd_interfere_start_processes(run) != 0)
		return -1;
	if (setup_pool(run) != 0)
		return -1;
	unsigned n = prog->threads;
	for (unsigned i = 0; i < n; i++) {
		if (!(run->threads[i] = thread_new(run, i))) {
			snprintf(run->error, sizeof(run->error), "out of memory for thread %u", i);
			return -1;
		}
	}
	if (kpd_monitor_start(run) != 0 || kpd_interfere_start_threads(run) != 0)
		return -1;
	pthread_barrier_init(&g_start, NULL, n);
	for (unsigned i = 0; i < n; i++) {
		int rc = pthread_create(&run->threads[i]->th, NULL, thread_main, run->threads[i]);
		if (rc) {
			snprintf(run->error, sizeof(run->error), "pthread_create: %s", strerror(rc));
			atomic_store(&run->stop, 1);
			return -1; /* the threads started wait at the barrier forever; we exit */
		}
	}
	for (unsigned i = 0; i < n; i++)
		pthread_join(run->threads[i]->th, NULL);
	pthread_barrier_destroy(&g_start);
	kpd_interfere_stop(run);
	merge(run);
	kpd_monitor_stop(run);
	kpd_monitor_annotate(run);
	return 0;
}

void kpd_run_free(struct kpd_run *run)
{
	for (unsigned i = 0; i < KPD_MAX_THREADS; i++) {
		struct kpd_thread *t = run->threads[i];
		if (!t)
			continue;
		for (int k = 0; k < KPD_K__COUNT; k++)
			free(t->h[k]);
		free(t->steps);
		free(t->live);
		free(t->heap);
		free(t->inbox);
		free(t);
	}
	for (int k = 0; k < KPD_K__COUNT; k++)
		free(run->hist[k]);
	free(run->outliers);
	free(run->stats_json);
	run->stats_json = NULL;
	kpd_monitor_free(run);
	kpd_interfere_free(run);
	if (run->pool)
		kp_destroy(run->pool);
	run->pool = NULL;
}
