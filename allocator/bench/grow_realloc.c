/*
 * grow_realloc.c - workload (f): growing buffers, as a vector or a string
 * builder that appends. Eight live buffers; each step picks one and grows it
 * by realloc to twice its size, from 4 KiB to 16 MiB; one at the top is
 * freed and starts again at 4 KiB. An allocator that grows a block in place
 * or moves its pages (mremap) copies nothing; one that moves the bytes
 * copies the whole buffer each time, into pages it must fault in.
 */
#include "kpbench.h"

#define F_BUFS 8
#define F_MIN 4096u
#define F_MAX (16u << 20)
#define OPS_F 20000ull

static inline void *bx_realloc(void *p, size_t n)
{
	return g_pool ? kp_realloc(g_pool, p, n, 0) : realloc(p, n);
}

struct grow_run {
	void *buf[F_BUFS];
	uint32_t len[F_BUFS];
	uint64_t rng;
	uint64_t verify_errors, alloc_failures;
};

static inline void grow_step(struct grow_run *w, struct hist *ha, struct hist *hf)
{
	unsigned i = (unsigned)(splitmix64(&w->rng) % F_BUFS);
	if (w->len[i] >= F_MAX) {
		w->verify_errors += check(w->buf[i], w->len[i]);
		uint64_t t0 = hf ? now_ns() : 0;
		bx_free(w->buf[i]);
		if (hf)
			hist_add(hf, now_ns() - t0);
		w->buf[i] = NULL;
		w->len[i] = 0;
	}
	uint32_t old = w->len[i], n = old ? old * 2 : F_MIN;
	if (old)
		w->verify_errors += check(w->buf[i], old);
	uint64_t t0 = ha ? now_ns() : 0;
	void *p = bx_realloc(w->buf[i], n);
	if (ha)
		hist_add(ha, now_ns() - t0);
	if (!p) {
		w->alloc_failures++;
		return;
	}
	/* the old contents came along: the first byte still carries the old mark */
	if (old && ((volatile unsigned char *)p)[0] != tag_of(old))
		w->verify_errors++;
	mark(p, n);
	w->buf[i] = p;
	w->len[i] = n;
}

int run_f(struct result *r, const struct opts *o)
{
	r->desc = "8 buffers grown by realloc from 4 KiB to 16 MiB (doubling), freed at the top, 1 thread";
	uint64_t ops = o->ops ? o->ops : OPS_F;
	uint64_t lat_ops = ops < LAT_OPS_MAX ? ops : LAT_OPS_MAX;
	struct grow_run w = {.rng = o->seed};
	if (pool_open(o->conf) != 0)
		return -1;
	r->conf = o->conf;
	for (uint64_t i = 0; i < ops / 10; i++) /* warm up */
		grow_step(&w, NULL, NULL);
	uint64_t f0 = minflt(RUSAGE_THREAD), t0 = now_ns();
	for (uint64_t i = 0; i < ops; i++)
		grow_step(&w, NULL, NULL);
	uint64_t t1 = now_ns();
	r->thread_minflt = minflt(RUSAGE_THREAD) - f0;
	r->ops = ops;
	r->secs = secs_between(t0, t1);
	r->lat_alloc = hist_new();
	r->lat_free = hist_new();
	for (uint64_t i = 0; i < lat_ops; i++)
		grow_step(&w, r->lat_alloc, r->lat_free);
	for (unsigned i = 0; i < F_BUFS; i++) {
		if (w.buf[i]) {
			w.verify_errors += check(w.buf[i], w.len[i]);
			bx_free(w.buf[i]);
		}
	}
	r->verify_errors = w.verify_errors;
	r->alloc_failures = w.alloc_failures;
	pool_close(r);
	return 0;
}
