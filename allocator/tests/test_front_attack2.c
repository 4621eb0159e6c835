/*
 * test_front_attack2.c - attacks on the daemon's pre-faulted front that
 * skips free runs shorter than the allocation path takes (daemon.c,
 * take_len, short_runs, take_min_prev kept for decay_ms).
 *
 * 1. Idle passes: a pass counts the short runs (passed) only when units
 *    were taken since the last one (an idle pass takes no pool lock), but
 *    its shrink keeps ahead + passed: a pass with a take grows the pool
 *    past the short runs, the passes without one count them as room and
 *    unmap what it grew once it is decay_ms idle. A pool of 3-unit holes
 *    (30 MiB) and a program taking a 7-unit run every 100 ms: on main
 *    (2a93ba1) 8 grows, 0 shrinks in 64 rounds; with the front's skip 29
 *    grows and 21 shrinks (a segment mapped, pre-faulted and unmapped
 *    every 3 rounds).
 * 2. Free runs of exactly take_len: taken first, with the clock stepped
 *    2^40 ms and with decay_ms 0 (held).
 * 3. primary_max with all headroom passed over: the growth loop ends, a
 *    7-unit block fails cleanly, small blocks still fill the holes, and
 *    the pool shrinks back once all is freed (held).
 * 4. The daemon's thread passing every ms beside threads taking runs of
 *    3-63 units and small blocks and a thread stepping it by hand, 4 pools
 *    destroyed with their daemons running (held; TSan: no race).
 * 5. take_len's record at the edge of decay_ms, with passes that saw no
 *    take, and the clock stepped 2^40 ms (held).
 */
/* Tests the grow daemon's growth, front and purge of the inline primary (daemon.c, primary.c; layout:outline's: test_outline_grow.c, test_outline_memory.c): every pool layout:inline (ktest.h, KT_LAYOUT_INLINE). */
#define KT_LAYOUT_INLINE 1
#include "ktest.h"

#include "internal.h"

#include <pthread.h>

#define MiB ((size_t)1 << 20)
#define UNIT ((size_t)64 << 10)
#define RUN3 (3 * UNIT - 256) /* a large block: a run of 3 units */
#define RUN7 (7 * UNIT - 256) /* a run of 7 */

enum { NFRAG = 21 * 16, NBIG = 64 };
static void *frag[NFRAG], *big[NBIG];

/* A pool whose segments hold 3-unit holes between live 3-unit blocks
 * (free runs of 3), and a program that then takes runs of 7 alone (take_len
 * 7: the holes are passed over). One 7-unit block per round, then the
 * daemon's passes with nothing taken: the shortest run taken is kept for
 * decay_ms, but a pass with no take counts no short run as passed (it
 * takes no pool lock): does the pool grow and shrink a segment every
 * round? */
static void test_idle_pass_thrash(void)
{
	unsetenv("KPOOL_CONF");
	KT_POOL(pool, "daemon:off,step_clock:on,seed:7,decay_ms:50,primary_initial:4m");
	kp_daemon_step(pool, 0);
	for (int i = 0; i < NFRAG; i++) {
		frag[i] = kp_alloc(pool, RUN3, 0);
		REQUIRE(frag[i], "kp_alloc #%d: %s", i, kp_last_error());
		memset(frag[i], 1, 4096);
		if (i % 8 == 7)
			kp_daemon_step(pool, 10);
	}
	for (int i = 0; i < NFRAG; i += 2)
		kp_free(pool, frag[i]), frag[i] = NULL;
	for (int i = 0; i < 20; i++)
		kp_daemon_step(pool, 10);
	int64_t g0 = kt_stat(pool, "primary.grows"), s0 = kt_stat(pool, "primary.shrinks");
	for (int r = 0; r < NBIG; r++) {
		big[r] = kp_alloc(pool, RUN7, 0);
		REQUIRE(big[r], "kp_alloc big #%d: %s", r, kp_last_error());
		memset(big[r], 2, RUN7);
		for (int k = 0; k < 10; k++)
			kp_daemon_step(pool, 10);
	}
	int64_t g = kt_stat(pool, "primary.grows") - g0, s = kt_stat(pool, "primary.shrinks") - s0;
	printf("   %d rounds of one 7-unit block: %lld grows, %lld shrinks; capacity %lld MiB, headroom %lld MiB\n",
	       NBIG, (long long)g, (long long)s, (long long)(kt_stat(pool, "primary.capacity_bytes") >> 20),
	       (long long)(kt_stat(pool, "primary.headroom_bytes") >> 20));
	/* 64 blocks of 7 units are 7 segments of use: a grow per 9 rounds */
	CHECK(s <= 2, "%lld segments unmapped (and %lld mapped) over %d rounds of steady growth", (long long)s,
	      (long long)g, NBIG);
	for (int i = 0; i < NFRAG; i++)
		kp_free(pool, frag[i]);
	for (int i = 0; i < NBIG; i++)
		kp_free(pool, big[i]);
	kp_destroy(pool);
}

/* 2. Free runs exactly take_len long (holes of 7 units between live 7-unit
 * blocks), then a program that takes 7-unit runs, one per pass: the holes
 * are where it takes them (a run of take_len is not passed over), every
 * one before the pool grows for the rest; the front's record (take_len
 * 7) changes nothing there. The same with the clock stepped 2^40 ms past
 * take_min_ns between two takes, and with decay_ms 0. (Whether their
 * pages are resident when taken: test_front_purged_attack2.) */
enum { NHOLE = 9 * 8, NTAKE = 48 };
static void *hole[NHOLE], *took[NTAKE];

static void exact_runs(const char *conf, uint64_t jump)
{
	KT_POOL(pool, conf);
	kp_daemon_step(pool, 0);
	for (int i = 0; i < NHOLE; i++) {
		hole[i] = kp_alloc(pool, RUN7, 0);
		REQUIRE(hole[i], "kp_alloc #%d: %s", i, kp_last_error());
		memset(hole[i], 1, RUN7);
		kp_daemon_step(pool, 10);
	}
	size_t freed = 0;
	static void *freed_at[NHOLE / 2];
	for (int i = 0; i < NHOLE; i += 2)
		freed_at[i / 2] = hole[i], kp_free(pool, hole[i]), hole[i] = NULL, freed++;
	for (int i = 0; i < 40; i++)
		kp_daemon_step(pool, 10);
	unsigned in_holes = 0;
	for (int r = 0; r < NTAKE; r++) {
		took[r] = kp_alloc(pool, RUN7, 0);
		REQUIRE(took[r], "kp_alloc #%d: %s", r, kp_last_error());
		for (int i = 0; i < NHOLE; i += 2)
			in_holes += took[r] == freed_at[i / 2];
		memset(took[r], 2, RUN7);
		kp_daemon_step(pool, r == NTAKE / 2 ? jump : 10);
	}
	printf("   %s, jump %llu ms: %u of %d blocks in the %zu holes of exactly 7 units\n", conf,
	       (unsigned long long)jump, in_holes, NTAKE, freed);
	/* units_take: oldest segment first, lowest unit first: the holes take
	 * the first 36 blocks */
	CHECK(in_holes == freed, "%s: %u blocks in the %zu holes", conf, in_holes, freed);
	for (int i = 0; i < NHOLE; i++)
		kp_free(pool, hole[i]);
	for (int i = 0; i < NTAKE; i++)
		kp_free(pool, took[i]);
	kp_destroy(pool);
}

static void test_runs_of_exactly_take_len(void)
{
	unsetenv("KPOOL_CONF");
	exact_runs("daemon:off,step_clock:on,seed:9,decay_ms:50,primary_initial:4m", 10);
	exact_runs("daemon:off,step_clock:on,seed:9,decay_ms:50,primary_initial:4m", 1ull << 40);
	exact_runs("daemon:off,step_clock:on,seed:9,decay_ms:0,primary_initial:4m", 10);
}

/* 3. A primary_max the front cannot grow past, with take_len 7 and every
 * segment holding 3-unit holes (all the headroom passed over): the pass's
 * growth loop ends when the pool is full, kp_alloc of a 7-unit block then
 * fails cleanly, small blocks still fill the holes, and once everything is
 * freed the pool shrinks back. */
static void test_front_at_primary_max(void)
{
	unsetenv("KPOOL_CONF");
	KT_POOL(pool, "daemon:off,step_clock:on,seed:11,decay_ms:20,primary_initial:4m,primary_max:24m,backup:0");
	kp_daemon_step(pool, 0);
	int nf = 0, nb = 0;
	for (; nf < NFRAG; nf++) {
		frag[nf] = kp_alloc(pool, RUN3, 0);
		if (!frag[nf])
			break;
		memset(frag[nf], 1, 4096);
		kp_daemon_step(pool, 10);
	}
	CHECK(nf > 60 && nf < NFRAG, "%d 3-unit blocks in a 24 MiB pool", nf);
	for (int i = 0; i < nf; i += 2)
		kp_free(pool, frag[i]), frag[i] = NULL;
	for (; nb < NBIG; nb++) {
		big[nb] = kp_alloc(pool, RUN7, 0);
		kp_daemon_step(pool, 10);
		if (!big[nb])
			break;
	}
	int64_t cap = kt_stat(pool, "primary.capacity_bytes");
	printf("   %d 3-unit blocks, %d 7-unit ones in a pool of %lld MiB (max 24)\n", nf, nb, (long long)(cap >> 20));
	CHECK(cap <= (int64_t)(24 * MiB), "capacity %lld past primary_max", (long long)cap);
	CHECK(nb < NBIG, "%d 7-unit blocks in 24 MiB of 3-unit holes", nb);
	int small = 0;
	static void *sm[4096];
	for (; small < 4096; small++) {
		sm[small] = kp_alloc(pool, 1000, 0);
		if (!sm[small])
			break;
	}
	CHECK(small == 4096, "only %d 1000-byte blocks in the holes", small);
	for (int i = 0; i < small; i++)
		kp_free(pool, sm[i]);
	for (int i = 0; i < nf; i++)
		kp_free(pool, frag[i]);
	for (int i = 0; i < nb; i++)
		kp_free(pool, big[i]);
	kp_thread_flush(pool);
	for (int i = 0; i < 40; i++)
		kp_daemon_step(pool, 10);
	int64_t after = kt_stat(pool, "primary.capacity_bytes");
	printf("   all freed: capacity %lld MiB\n", (long long)(after >> 20));
	CHECK(after <= (int64_t)(16 * MiB), "capacity %lld MiB after everything was freed", (long long)(after >> 20));
	kp_destroy(pool);
}

/* 4. The daemon's thread (a pass every ms) while threads take runs of 3-63
 * units (take_min written under the pool lock, exchanged by the pass;
 * take_min_prev and take_min_ns its own) and small blocks, a thread steps
 * the daemon by hand as well (kp_daemon_step beside the thread's passes),
 * at a primary_max the front cannot always grow into; 4 pools at once,
 * destroyed with the daemons running. Under TSan: no race. */
#define NPOOL4 4
static atomic_long fails4;

static void *runs_thread(void *arg)
{
	kp_pool *pool = arg;
	uint64_t seed = (uint64_t)(uintptr_t)&seed;
	void *held[16] = {0};
	for (int i = 0; i < 6000; i++) {
		unsigned k = (unsigned)kt_rand_range(&seed, 0, 15);
		if (held[k]) {
			if (kp_free(pool, held[k]) != 0)
				atomic_fetch_add(&fails4, 1);
			held[k] = NULL;
		} else {
			size_t units = kt_rand_range(&seed, 3, 63);
			held[k] = kp_alloc(pool, units * UNIT - 256, 0); /* NULL at primary_max: fine */
			if (held[k])
				memset(held[k], 3, 64);
		}
	}
	for (int k = 0; k < 16; k++)
		if (held[k] && kp_free(pool, held[k]) != 0)
			atomic_fetch_add(&fails4, 1);
	return NULL;
}

static void *small_thread(void *arg)
{
	kp_pool *pool = arg;
	static _Thread_local void *v[512];
	for (int r = 0; r < 100; r++) {
		for (int i = 0; i < 512; i++)
			v[i] = kp_alloc(pool, 24 + (size_t)(i % 40) * 100, 0);
		for (int i = 0; i < 512; i++)
			if (v[i] && kp_free(pool, v[i]) != 0)
				atomic_fetch_add(&fails4, 1);
	}
	return NULL;
}

static void *stepper(void *arg)
{
	kp_pool *pool = arg;
	for (int i = 0; i < 1000; i++)
		kp_daemon_step(pool, 0);
	return NULL;
}

static void test_daemon_thread_and_takes(void)
{
	unsetenv("KPOOL_CONF");
	kp_pool *pools[NPOOL4];
	pthread_t t[NPOOL4][3];
	for (int p = 0; p < NPOOL4; p++) {
		pools[p] = kp_create("primary_initial:4m,primary_max:48m,backup:0,daemon_interval_ms:1,decay_ms:5");
		REQUIRE(pools[p], "kp_create: %s", kp_last_error());
	}
	for (int p = 0; p < NPOOL4; p++) {
		REQUIRE(pthread_create(&t[p][0], NULL, runs_thread, pools[p]) == 0, "pthread_create");
		REQUIRE(pthread_create(&t[p][1], NULL, small_thread, pools[p]) == 0, "pthread_create");
		REQUIRE(pthread_create(&t[p][2], NULL, stepper, pools[p]) == 0, "pthread_create");
	}
	for (int p = 0; p < NPOOL4; p++)
		for (int k = 0; k < 3; k++)
			pthread_join(t[p][k], NULL);
	for (int p = 0; p < NPOOL4; p++) {
		kp_thread_flush(pools[p]);
		CHECK(kt_stat(pools[p], "primary.in_use_bytes") == 0, "pool %d: %lld bytes in use after all freed", p,
		      (long long)kt_stat(pools[p], "primary.in_use_bytes"));
		CHECK(kt_stat(pools[p], "primary.capacity_bytes") <= (int64_t)(48 * MiB), "pool %d: past primary_max",
		      p);
		CHECK(kt_stat(pools[p], "integrity.corruptions") == 0 &&
			      kt_stat(pools[p], "integrity.freelist_errors") == 0,
		      "pool %d: integrity events", p);
		kp_destroy(pools[p]); /* its daemon running */
	}
	CHECK(atomic_load(&fails4) == 0, "%ld frees failed", atomic_load(&fails4));
}

/* 5. take_len's record at the edge of decay_ms (step_clock, decay_ms 100):
 * a pass that saw a 3-unit take keeps 3; 7-unit takes 99 ms later do not
 * replace it, 100 ms later they do; a shorter take replaces it at once; a
 * clock stepped 2^40 ms replaces it at the next pass that saw a take, and
 * passes that saw none keep it. */
static void test_take_len_record_at_decay(void)
{
	unsetenv("KPOOL_CONF");
	KT_POOL(pool, "daemon:off,step_clock:on,seed:13,decay_ms:100,primary_initial:16m");
	kp_daemon_step(pool, 0);
	void *a = kp_alloc(pool, RUN3, 0);
	REQUIRE(a, "kp_alloc: %s", kp_last_error());
	kp_daemon_step(pool, 1);
	unsigned got = atomic_load(&pool->take_min_prev);
	CHECK(got == 3, "after a 3-unit take: %u", got);
	void *b = kp_alloc(pool, RUN7, 0);
	kp_daemon_step(pool, 99);
	got = atomic_load(&pool->take_min_prev);
	CHECK(got == 3, "7 units taken 99 ms after 3: %u (want 3 kept)", got);
	void *c = kp_alloc(pool, RUN7, 0);
	kp_daemon_step(pool, 1);
	got = atomic_load(&pool->take_min_prev);
	CHECK(got == 7, "7 units taken 100 ms after 3: %u (want 7)", got);
	for (int i = 0; i < 5; i++)
		kp_daemon_step(pool, 1000);
	got = atomic_load(&pool->take_min_prev);
	CHECK(got == 7, "passes with no take: %u (want 7 kept)", got);
	void *d = kp_alloc(pool, RUN3, 0);
	kp_daemon_step(pool, 1);
	got = atomic_load(&pool->take_min_prev);
	CHECK(got == 3, "3 units taken after 7: %u (want 3 at once)", got);
	void *e = kp_alloc(pool, (size_t)KP_SEG_UNITS * UNIT - 256, 0);
	kp_daemon_step(pool, 1ull << 40);
	got = atomic_load(&pool->take_min_prev);
	CHECK(got == KP_SEG_UNITS, "a segment's units taken, the clock stepped 2^40 ms: %u (want %u)", got,
	      (unsigned)KP_SEG_UNITS);
	CHECK(a && b && c && d && e, "an allocation failed");
	kp_free(pool, a), kp_free(pool, b), kp_free(pool, c), kp_free(pool, d), kp_free(pool, e);
	kp_destroy(pool);
}

int main(void)
{
	RUN(test_idle_pass_thrash);
	RUN(test_runs_of_exactly_take_len);
	RUN(test_front_at_primary_max);
	RUN(test_daemon_thread_and_takes);
	RUN(test_take_len_record_at_decay);
	return ktest_summary();
}
