/*
 * slots.c - workloads (a) and (b): a fixed number of live blocks; each step
 * frees a random slot and allocates a new block into it.
 */
#include "kpbench.h"

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

static int run_slots(struct result *r, const struct opts *o, uint32_t nslots, enum dist d, uint32_t lo, uint32_t hi,
		     uint64_t default_ops)
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

	uint64_t f0 = minflt(RUSAGE_THREAD), c0 = thread_cpu_ns(), t0 = now_ns();
	for (uint64_t i = 0; i < ops; i++)
		slots_step(&w, NULL, NULL);
	uint64_t t1 = now_ns(), c1 = thread_cpu_ns();
	r->thread_minflt = minflt(RUSAGE_THREAD) - f0;
	r->ops = ops;
	r->secs = secs_between(t0, t1);
	r->cpu_secs = secs_between(c0, c1);

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

int run_a(struct result *r, const struct opts *o)
{
	r->desc = "16-256 B uniform, 1000 live, 1 thread, free random slot + alloc";
	return run_slots(r, o, 1000, UNIFORM, 16, 256, OPS_A);
}

int run_b(struct result *r, const struct opts *o)
{
	r->desc = "16 B-64 KiB log-uniform, 10000 live, 1 thread, free random slot + alloc";
	return run_slots(r, o, 10000, LOGUNIFORM, 16, 65536, OPS_B);
}
