/*
 * grow.c - workload (d): grow to 1 GiB in 4-64 KiB blocks touching every
 * page, free all; three rounds, each timed, with the allocating thread's
 * page faults and every malloc+touch's latency.
 */
#include "kpbench.h"

static inline void touch_pages(void *p, uint32_t n)
{
	volatile unsigned char *v = p;
	for (uint32_t off = PAGE; off < n; off += PAGE)
		v[off] = 1;
	mark(p, n); /* first and last byte */
}

int run_d(struct result *r, const struct opts *o)
{
	static char desc[96];
	snprintf(desc, sizeof(desc), "grow to %.0f MiB in 4-64 KiB blocks touching every page, free all",
		 (double)o->grow / 1048576.0);
	r->desc = desc;
	struct step *steps = make_steps(0, UNIFORM, 4096, 65536, o->seed);
	uint64_t cap = o->grow / 4096 + 1;
	struct slot *blocks = calloc(cap, sizeof(*blocks));
	/* kpool's defaults unless --conf says otherwise (issue 14 measures the
	 * defaults: d's own watermarks, high_wm:128m kept pre-faulted, put its
	 * peak RSS at 1.26x glibc's, 1.16x on the defaults at the same speed) */
	const char *conf = o->conf;
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
