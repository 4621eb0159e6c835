/*
 * failover.c - workload (e), kpool only: what a critical caller pays when
 * the primary has failed and the backup serves it.
 *
 * Both phases run the same alloc/free pattern (16-256 B, 1000 live, a random
 * slot freed and refilled) and time every kp_alloc in C:
 *   alloc histogram: ordinary requests served by a healthy primary;
 *   free histogram:  critical requests (inside a critical scope) served by
 *                    the backup, with the primary exhausted (at primary_max
 *                    and full).
 * The bound: the second p99 at most twice the first.
 */
#include "kpbench.h"

#include <string.h>

#define E_CONF "primary_initial:16m,primary_max:16m,backup:4m,daemon:off"
#define E_LIVE 1000u

static void phase(kp_pool *pool, const struct step *steps, uint64_t n, unsigned flags, struct hist *h, struct result *r)
{
	static void *slot[E_LIVE];
	static uint32_t size[E_LIVE];
	for (uint64_t i = 0; i < n; i++) {
		struct step st = steps[i & RTAB_MASK];
		unsigned k = st.slot;
		if (slot[k]) {
			r->verify_errors += check(slot[k], size[k]);
			if (kp_free(pool, slot[k]) != 0)
				r->free_errors++;
		}
		uint64_t t0 = now_ns();
		void *p = kp_alloc(pool, st.size, flags);
		if (h)
			hist_add(h, now_ns() - t0);
		if (!p)
			r->alloc_failures++;
		else
			mark(p, st.size);
		slot[k] = p;
		size[k] = st.size;
	}
	for (unsigned k = 0; k < E_LIVE; k++) {
		if (slot[k])
			kp_free(pool, slot[k]);
		slot[k] = NULL;
	}
}

int run_e(struct result *r, const struct opts *o)
{
	r->desc = "failover: alloc = ordinary from a healthy primary; free column = critical from the backup, "
		  "primary exhausted (16-256 B, 1000 live, kp_alloc timed)";
	r->conf = o->conf ? o->conf : E_CONF;
	uint64_t ops = o->ops ? o->ops : LAT_OPS_MAX;
	struct step *steps = make_steps(E_LIVE, UNIFORM, 16, 256, o->seed);
	kp_pool *pool = kp_create(r->conf);
	if (!pool || !steps) {
		fprintf(stderr, "kpbench (e): %s\n", kp_last_error());
		free(steps);
		return -1;
	}
	r->lat_alloc = hist_new();
	r->lat_free = hist_new();
	phase(pool, steps, ops / 10, 0, NULL, r); /* warm up */
	phase(pool, steps, ops, 0, r->lat_alloc, r);

	/* Exhaust the primary: large blocks, then small ones, until NULL. */
	size_t cap = 1u << 16, nfill = 0;
	void **fill = calloc(1u << 20, sizeof(void *));
	for (size_t sz = 1u << 16; sz >= 16 && fill; sz >>= 2)
		while (nfill < (1u << 20) && (fill[nfill] = kp_alloc(pool, sz, 0)) != NULL)
			nfill++;
	(void)cap;
	uint64_t token = kp_critical_token(pool);
	kp_critical_enter(pool, token);
	uint64_t fails = r->alloc_failures;
	phase(pool, steps, ops / 10, KP_CRITICAL, NULL, r);
	phase(pool, steps, ops, KP_CRITICAL, r->lat_free, r);
	kp_critical_exit(pool);
	if (r->alloc_failures != fails)
		fprintf(stderr, "kpbench (e): %llu critical requests not served\n",
			(unsigned long long)(r->alloc_failures - fails));
	char js[4096];
	kp_stats_json(pool, js, sizeof js);
	r->kp_stats = strdup(js);
	for (size_t i = 0; i < nfill; i++)
		kp_free(pool, fill[i]);
	free(fill);
	kp_destroy(pool);
	free(steps);
	r->ops = 2 * ops;
	r->secs = 0;
	return 0;
}
