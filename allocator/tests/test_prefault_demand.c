/*
 * test_prefault_demand.c - the grow daemon of a layout:outline pool
 * pre-faults what the program's demand asks for, not every page the heaps
 * may hand out (outline.c, kp__ol_daemon_pass, cold_finish): a program that
 * grows past OL_PREFAULT_MIN and then only churns holds about what it holds
 * with prefault:off.
 *
 * The model: bench/programs/fork_churn.c `300 8 4096 4096` (mode 3, no
 * fork), as a stepped pool (daemon:off, step_clock:on): 8 threads, each
 * replacing random blocks of a live set of 4,096 (16 B-4 KiB, uniform, the
 * first 64 bytes written), ~2.2 MB taken between two passes 10 ms apart on
 * the pool's clock (fork_churn's 8 threads fill ~70 MB in ~0.3 s), then
 * replacing blocks for 2 s of passes. The threads take turns (w_call), so a
 * run is the same every time. The peak of the pool's segments resident
 * (heaps' and spares', data and metadata: mincore after each pass) with
 * pre-faulting on is at most 1.045x that of the same run with prefault:off
 * (1.1x, the bound over the best peer, before s38).
 *
 * Before (s37): the first pass past OL_PREFAULT_MIN finished the 29
 * segments the 8 heaps had taken cold, every page they "may hand out next"
 * (their free slices, the free blocks of their spans), 31.7 MiB, after the
 * program had stopped growing: fork_churn under the preload peaked at
 * 133 MiB against 96-98 with prefault:off or daemon:off. After (cold_finish
 * by demand): 1.062x here (87.7 against 82.5 MiB); fork_churn 106-108 MiB.
 * Then (s38) the spares pre-faulted whole while the program crept on at
 * 0.1-0.2 MiB a pass past OL_PREFAULT_MIN: a heap took a spare with 4 MiB
 * resident and used a few hundred KiB of it. With the spares pre-faulted
 * by demand too (outline.c, kp__ol_daemon_pass): 1.026x (84.7 MiB);
 * fork_churn under the preload 98.6 MiB against main's 105.9 (medians of
 * 6 alternated runs, load 9-20).
 */
#include "kt_worker.h"
#include "ktest.h"
#include "outline.h"
#include "ol_resident.h"

#include <sys/mman.h>

#define MiB ((size_t)1 << 20)
#define THREADS 8
#define LIVE 4096
#define LARGEST 4096
#define PER_STEP 140 /* replacements per thread per pass: 8 x 140 x ~2 KiB, ~2.2 MB */
#define STEPS (KT_SANITIZED ? 120 : 200)

struct churner {
	kp_pool *pool;
	uint64_t seed;
	unsigned n; /* replacements this call */
	size_t fails;
	void *live[LIVE];
};

static uint64_t rnd(uint64_t *x)
{
	*x ^= *x << 13, *x ^= *x >> 7, *x ^= *x << 17;
	return *x;
}

/* fork_churn's step: free a random block of the live set, take another */
static void churn(void *arg)
{
	struct churner *c = arg;
	for (unsigned r = 0; r < c->n; r++) {
		size_t sz = 16 + (size_t)(rnd(&c->seed) % (LARGEST - 16 + 1));
		size_t k = (size_t)(rnd(&c->seed) % LIVE);
		kp_free(c->pool, c->live[k]);
		c->live[k] = kp_alloc(c->pool, sz, 0);
		if (!c->live[k]) {
			c->fails++;
			continue;
		}
		memset(c->live[k], 0x5a, sz < 64 ? sz : 64);
	}
}

static void release(void *arg)
{
	struct churner *c = arg;
	for (size_t k = 0; k < LIVE; k++)
		kp_free(c->pool, c->live[k]);
	kp_thread_flush(c->pool);
}

static struct churner ch[THREADS];

/* The run above on a pool made with conf: the peak of its segments
 * resident, and the bytes in use at the end of the growth. */
static size_t run(const char *conf, size_t *in_use)
{
	kp_pool *p = kp_create(conf);
	if (!p) {
		CHECK(0, "kp_create(%s): %s", conf, kp_last_error());
		exit(1);
	}
	kp_daemon_step(p, 0);
	worker w[THREADS];
	for (unsigned t = 0; t < THREADS; t++) {
		memset(&ch[t], 0, sizeof ch[t]);
		ch[t].pool = p;
		ch[t].seed = 0x9E3779B97F4A7C15ull ^ (t + 1);
		ch[t].n = PER_STEP;
		w_start(&w[t]);
	}
	size_t peak = 0, fails = 0;
	*in_use = 0;
	for (unsigned s = 0; s < STEPS; s++) {
		for (unsigned t = 0; t < THREADS; t++)
			w_call(&w[t], churn, &ch[t]);
		kp_daemon_step(p, 10);
		size_t r = pool_resident(p);
		peak = r > peak ? r : peak;
		size_t u = kp__ol_in_use(p);
		*in_use = u > *in_use ? u : *in_use;
	}
	for (unsigned t = 0; t < THREADS; t++) {
		w_call(&w[t], release, &ch[t]);
		fails += ch[t].fails;
		w_stop(&w[t]);
	}
	CHECK(fails == 0, "%zu allocations failed", fails);
	kp_destroy(p);
	return peak;
}

static void test_churn_after_growth(void)
{
	size_t use_on, use_off;
	size_t on = run("layout:outline,daemon:off,step_clock:on,seed:7", &use_on);
	size_t off = run("layout:outline,daemon:off,step_clock:on,seed:7,prefault:off", &use_off);
	printf("   %u threads, %u blocks of 16-%u B each: peak in use %.1f MiB; peak resident %.1f MiB pre-faulting, "
	       "%.1f with prefault:off (%.3fx)\n",
	       THREADS, LIVE, LARGEST, (double)use_on / (double)MiB, (double)on / (double)MiB,
	       (double)off / (double)MiB, (double)on / (double)off);
	/* the model reaches the size the daemon pre-faults for (outline.c,
	 * OL_PREFAULT_MIN), or it checks nothing */
	CHECK(use_on >= ((size_t)64 << 20), "%zu bytes in use at the peak: under OL_PREFAULT_MIN", use_on);
	CHECK(on * 1000 <= off * 1045, "peak resident %zu KiB pre-faulting, %zu KiB with prefault:off: over 1.045x",
	      on >> 10, off >> 10);
}

int main(void)
{
	unsetenv("KPOOL_CONF");
	RUN(test_churn_after_growth);
	return ktest_summary();
}
