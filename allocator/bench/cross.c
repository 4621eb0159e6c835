/*
 * cross.c - workload (c): two threads, each allocating blocks and handing
 * them to the other, which frees them.
 *
 * c is bimodal, for every allocator, on where the scheduler puts the two
 * threads. On one CPU they run in turn: one fills its queue (Q_CAP blocks),
 * yields, and the other frees them all and fills its own, each thread's
 * cache working in long one-way runs with no cache line shared at the
 * time (with --pin same, load 4-9: kpool 16-29M ops/s, jemalloc 22-36M,
 * mimalloc 18-34M; unpinned runs that were fast had same_cpu 0.96-1). On
 * two they run at once, every block and queue index moving between the
 * CPUs' caches, and each one's speed hangs on the other: a thread that
 * stops (preempted, asleep in a lock, or giving a batch back to its spans)
 * fills the peer's queue and stalls it (with --pin apart, same_cpu 0: all
 * three 0.4-42M as the machine's other work came and went, jemalloc's
 * median 0.9-2.1x kpool's in five rounds). The JSON's "cross" object says which mode a run was in:
 * compare allocators run for run, or pin.
 */
#include "kpbench.h"

#include <pthread.h>
#include <string.h>

/*
 * A bounded single-producer single-consumer ring of pointers. Each side
 * keeps a private copy of the other side's index and re-reads the shared one
 * only when its copy says full/empty, so the two cache lines bounce only
 * when they must. Release on publish, acquire on observe: the slot write
 * happens before the consumer sees the new tail, the slot read before the
 * producer sees the new head.
 */
#define Q_CAP \
	1024u /* a few hundred KiB of blocks in flight: absorbs a
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
	uint64_t cpu_ns; /* the thread's CPU time over its run, waits for the peer included */
	int pin_cpu;	 /* -1: not pinned */
	_Atomic int cpu; /* the CPU it ran on at its last sample, -1 before the first */
	uint64_t samples, same, full, yields, vcsw, ivcsw; /* the mode (struct cross_mode) */
};

/* Wait for the peer (cpu_relax), counting the yields. */
static void cworker_wait(struct cworker *w, unsigned *spins)
{
	cpu_relax(spins);
	w->yields += *spins == 0;
}

/* Every CWORKER_SAMPLE allocations each thread notes its CPU and compares
 * it with the peer's last: a few hundred samples a run, a sched_getcpu
 * (vDSO) each. */
#define CWORKER_SAMPLE 256u

static void cworker_sample(struct cworker *w)
{
	int c = sched_getcpu(), peer = atomic_load_explicit(&w->peer->cpu, memory_order_relaxed);
	atomic_store_explicit(&w->cpu, c, memory_order_relaxed);
	if (peer >= 0 && !atomic_load_explicit(&w->peer->done, memory_order_relaxed)) {
		w->samples++;
		w->same += c == peer;
	}
}

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
	if (w->pin_cpu >= 0) {
		cpu_set_t set;
		CPU_ZERO(&set);
		CPU_SET(w->pin_cpu, &set);
		pthread_setaffinity_np(pthread_self(), sizeof set, &set);
	}
	pthread_barrier_wait(w->start);
	struct rusage ru0, ru1;
	getrusage(RUSAGE_THREAD, &ru0);
	uint64_t f0 = minflt(RUSAGE_THREAD), c0 = thread_cpu_ns();
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
		if (i % CWORKER_SAMPLE == 0)
			cworker_sample(w);
		if (!spsc_push(w->out, p)) {
			w->full++;
			while (!spsc_push(w->out, p))
				if (cworker_drain(w) == 0)
					cworker_wait(w, &spins);
		}
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
			cworker_wait(w, &spins);
		}
	}
	getrusage(RUSAGE_THREAD, &ru1);
	w->vcsw = (uint64_t)(ru1.ru_nvcsw - ru0.ru_nvcsw);
	w->ivcsw = (uint64_t)(ru1.ru_nivcsw - ru0.ru_nivcsw);
	w->minflt = minflt(RUSAGE_THREAD) - f0;
	w->cpu_ns = thread_cpu_ns() - c0;
	return NULL;
}

/* One phase: two fresh threads, ops allocations in all. Returns seconds;
 * *cpu_secs (if not NULL): the two threads' CPU time. */
static double cross_phase(struct result *r, const struct step *steps, uint64_t ops, bool timed, double *cpu_secs,
			  const int pin[2])
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
		w[i].pin_cpu = pin[i];
		atomic_store(&w[i].cpu, -1);
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
	if (cpu_secs) {
		*cpu_secs = (double)(w[0].cpu_ns + w[1].cpu_ns) / 1e9;
		uint64_t samples = w[0].samples + w[1].samples;
		r->cross = (struct cross_mode){
			.set = true,
			.same_cpu = samples ? (double)(w[0].same + w[1].same) / (double)samples : 0.0,
			.queue_full = w[0].full + w[1].full,
			.yields = w[0].yields + w[1].yields,
			.vcsw = w[0].vcsw + w[1].vcsw,
			.ivcsw = w[0].ivcsw + w[1].ivcsw,
		};
	}
	return secs_between(t0, t1);
}

int run_c(struct result *r, const struct opts *o)
{
	r->desc = "2 threads, 16-256 B uniform, every block freed by the other thread";
	uint64_t ops = o->ops ? o->ops : OPS_C;
	uint64_t lat_ops = ops < LAT_OPS_MAX ? ops : LAT_OPS_MAX;
	/* --pin: the first one or two CPUs the process may run on */
	int pin[2] = {-1, -1};
	if (o->pin) {
		cpu_set_t set;
		int n = 0;
		if (sched_getaffinity(0, sizeof set, &set) == 0)
			for (int c = 0; c < CPU_SETSIZE && n < 2; c++)
				if (CPU_ISSET(c, &set))
					pin[n++] = c;
		if (n < (o->pin == 'a' ? 2 : 1)) {
			fprintf(stderr, "kpbench: --pin %s: too few CPUs\n", o->pin == 'a' ? "apart" : "same");
			return -1;
		}
		if (o->pin == 's')
			pin[1] = pin[0];
	}
	struct step *steps = make_steps(0, UNIFORM, 16, 256, o->seed);
	if (pool_open(o->conf) != 0) {
		free(steps);
		return -1;
	}
	r->conf = o->conf;
	r->lat_alloc = hist_new();
	r->lat_free = hist_new();
	cross_phase(r, steps, ops / 10, false, NULL, pin); /* warm up */
	r->thread_minflt = 0;
	r->ops = ops;
	r->secs = cross_phase(r, steps, ops, false, &r->cpu_secs, pin);
	cross_phase(r, steps, lat_ops, true, NULL, pin);
	pool_close(r);
	free(steps);
	return 0;
}
