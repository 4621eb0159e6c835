/*
 * test_xfer_attack2.c - attacks on full bins parked whole (KP_XFER_KEYS
 * 256) by bins that grew in producer/consumer phases (tcache.c,
 * kp__bin_miss's phase): the batches here are 256 blocks of a 64-byte
 * class, their keys past the first KP_XFER_HEAD in xfer_tail, taken whole
 * by a thread whose bin grew to 256 (test_xfer_attack's are 16).
 *
 * Two persistent threads A and B take turns (test_xfer_phases): in phase p
 * one allocates NB blocks and the other frees them; after six phases both
 * bins are at 256, B allocated last and A freed: two batches or more are
 * parked (the class's room grew in the phases: transfer.c), the top one a
 * whole bin of 256 (the one below it 128 or 256); the attacks are on those
 * two (xfer_rig.h's slots 0 and 1). Then, per attack, with checks on and off:
 *
 * 1. the top batch damaged at block 0, 15, 16, 17, 200, 254, 255 (a link
 *    to a live block, a link that ends the list early, a header flipped,
 *    a link forged out of the pool and back), and A allocates 1,024: each
 *    damage reported once (KP_EV_FREELIST), no block handed out twice, none
 *    live, none outside the pool;
 * 2. a parked block freed again: a double free reported, nothing handed
 *    out twice;
 * 3. the damage found by the daemon's drain of stale batches (step_clock)
 *    and by kp_thread_flush (batch_vet over a batch of 256);
 * 4. A leaves with its bin holding up to 256 and both batches parked; a
 *    fresh thread and B then allocate: nothing twice, accounting right;
 * 5. A forks with both batches parked: the child's A takes them, so does
 *    the parent's, each hands each block out once;
 * 6. A takes the batches through kp_realloc and kp_alloc_aligned;
 * 7. pools destroyed with batches of 256 parked while their daemons run,
 *    8 pools at once from 8 threads;
 * 8. threads on the least stacks parking, taking and flushing.
 */
#define _GNU_SOURCE 1
/* Tests the transfer cache and central lists (transfer.c, tcache.c): every pool layout:inline (ktest.h, KT_LAYOUT_INLINE). */
#define KT_LAYOUT_INLINE 1
#include "ktest.h"

#include "internal.h"

#include <limits.h>
#include <pthread.h>

#include "xfer_rig.h"

static void do_flush(void *arg)
{
	kp_thread_flush(arg);
}

/* NULLs, duplicates, live blocks and blocks outside the pool in v[0..n). */
static unsigned bad_handouts(char *const *v, unsigned n, unsigned *outside)
{
	unsigned d = 0;
	*outside = 0;
	for (unsigned i = 0; i < n; i++) {
		d += v[i] == NULL;
		if (v[i] && !kp__pagemap_owns(pool->id, v[i] - KP_HDR))
			(*outside)++;
		for (unsigned j = 0; j < LIVE; j++)
			d += v[i] == live[j];
	}
	char **s = malloc(n * sizeof *s);
	if (!s)
		return d + 1;
	memcpy(s, v, n * sizeof *s);
	for (unsigned i = 1; i < n; i++) /* insertion sort: n is small */
		for (unsigned j = i; j && s[j - 1] > s[j]; j--) {
			char *t = s[j];
			s[j] = s[j - 1];
			s[j - 1] = t;
		}
	for (unsigned i = 1; i < n; i++)
		d += s[i] && s[i] == s[i - 1];
	free(s);
	return d;
}

static _Alignas(64) char outside_block[256];

/* how: 0 a link to a live block, 1 a link that ends the list, 2 a header
 * flipped, 3 block pos + 1 replaced by a forgery outside the pool whose
 * link leads back to pos + 2 */
static void damage(unsigned slot, unsigned pos, int how)
{
	if (how == 0) {
		relink(slot, pos, live[3] - KP_HDR);
	} else if (how == 1) {
		relink(slot, pos, NULL);
	} else if (how == 2) {
		char *at = batch_at(slot, pos);
		kt_raw_put(at, kt_raw_get(at) ^ 0x100);
	} else {
		char *at = batch_at(slot, pos + 1), *next = batch_at(slot, pos + 2);
		uint64_t k = kt_raw_get(at) ^ kt_raw_get(at + 8);
		kt_raw_put(outside_block, kt_raw_get(at));
		kt_raw_put(outside_block + 8, kt_raw_get(at + 8));
		kt_raw_put(outside_block + KP_HDR, (uint64_t)(uintptr_t)next ^ (uint64_t)kp__link_pad(k));
		relink(slot, pos, outside_block);
	}
}

static const char *const hows[] = {"link to a live block", "link ends the list", "header flipped",
				   "link out of the pool and back"};

/* 1. */
static void taker_catches(const char *conf, unsigned pos, int how)
{
	if ((how == 3 && pos + 2 >= KP_XFER_KEYS) || (how == 1 && pos == KP_XFER_KEYS - 1))
		return; /* no block past it to forge; its link is NULL already */
	if (!setup(conf))
		return;
	kt_events_clear(pool);
	damage(1, pos, how);
	job t = {.pool = pool, .v = taken, .n = TAKE};
	w_call(&wa, do_alloc, &t);
	unsigned out, d = bad_handouts(taken, TAKE, &out);
	int64_t fl = kt_stat(pool, "integrity.freelist_errors");
	size_t ev = kt_events_count(pool, KP_EV_FREELIST);
	CHECK(d == 0 && out == 0 && fl == 1 && ev == 1,
	      "%s: %s at %u: %u bad hand-outs, %u outside the pool, %lld freelist errors, %zu events (want 0 0 1 1)",
	      conf, hows[how], pos, d, out, (long long)fl, ev);
	CHECK(atomic_load(&pool->central[cls].nxfer) == 0, "%s: batches left parked after 1,024 taken", conf);
	teardown();
}

static void test_taker_catches_deep_damage(void)
{
	static const unsigned pos[] = {0, 15, 16, 17, 200, 254, 255};
	const char *confs[] = {CONF, CONF ",checks:off"};
	for (unsigned c = 0; c < 2; c++)
		for (unsigned p = 0; p < sizeof pos / sizeof *pos; p++)
			for (int h = 0; h < 4; h++)
				taker_catches(confs[c], pos[p], h);
}

/* 2. */
static void double_free_parked(const char *conf)
{
	if (!setup(conf))
		return;
	char *p = batch_at(1, 200);
	int rc = kp_free(pool, p + KP_HDR);
	CHECK(rc != 0, "%s: a double free of a parked block returned 0", conf);
	CHECK(kt_stat(pool, "integrity.double_frees") == 1, "%s: %lld double frees reported", conf,
	      (long long)kt_stat(pool, "integrity.double_frees"));
	job t = {.pool = pool, .v = taken, .n = TAKE};
	w_call(&wa, do_alloc, &t);
	unsigned out, d = bad_handouts(taken, TAKE, &out);
	CHECK(d == 0 && out == 0, "%s: %u bad hand-outs, %u outside", conf, d, out);
	CHECK(kt_stat(pool, "integrity.freelist_errors") == 0, "%s: freelist errors", conf);
	teardown();
}

static void test_double_free_of_parked_block(void)
{
	double_free_parked(CONF);
	double_free_parked(CONF ",checks:off");
}

/* 3. */
static void drained(const char *conf, bool daemon, unsigned pos, int how)
{
	if (!setup(conf))
		return;
	damage(0, pos % (kp__xfer_slot(pool, cls, base_slot)->n - 2), how);
	damage(1, 255 - pos, how == 3 ? 0 : how);
	if (daemon)
		for (int i = 0; i < 4; i++)
			kp_daemon_step(pool, 20);
	else
		w_call(&wb, do_flush, pool);
	int64_t fl = kt_stat(pool, "integrity.freelist_errors");
	CHECK(atomic_load(&pool->central[cls].nxfer) == 0, "%s: batches still parked", conf);
	CHECK(fl == 2, "%s (%s): %s at %u: %lld freelist errors (want 2)", conf, daemon ? "daemon" : "flush", hows[how],
	      pos, (long long)fl);
	job t = {.pool = pool, .v = taken, .n = TAKE};
	w_call(&wa, do_alloc, &t);
	unsigned out, d = bad_handouts(taken, TAKE, &out);
	CHECK(d == 0 && out == 0, "%s: %u bad hand-outs, %u outside", conf, d, out);
	teardown();
}

static void test_drain_vets_batches_of_256(void)
{
	const char *confs[] = {CONF ",step_clock:on,decay_ms:100", CONF ",step_clock:on,decay_ms:100,checks:off"};
	for (unsigned c = 0; c < 2; c++)
		for (int h = 0; h < 4; h++) {
			drained(confs[c], true, 20, h);
			drained(confs[c], false, 130, h);
		}
}

/* 4. */
static void *fresh_alloc(void *arg)
{
	do_alloc(arg);
	return NULL;
}

static void test_exit_with_full_bin_and_parked(void)
{
	if (!setup(CONF))
		return;
	int64_t u0 = kt_stat(pool, "primary.in_use_bytes");
	w_stop(&wa); /* its bin (up to 256) walked back to the spans */
	CHECK(kt_stat(pool, "primary.in_use_bytes") == u0, "in use %lld after A left (was %lld)",
	      (long long)kt_stat(pool, "primary.in_use_bytes"), (long long)u0);
	static char *t1[TAKE], *t2[TAKE];
	job j1 = {.pool = pool, .v = t1, .n = TAKE}, j2 = {.pool = pool, .v = t2, .n = TAKE};
	pthread_t t;
	REQUIRE(pthread_create(&t, NULL, fresh_alloc, &j1) == 0, "pthread_create");
	w_call(&wb, do_alloc, &j2);
	pthread_join(t, NULL);
	static char *all[2 * TAKE];
	memcpy(all, t1, sizeof t1);
	memcpy(all + TAKE, t2, sizeof t2);
	unsigned out, d = bad_handouts(all, 2 * TAKE, &out);
	CHECK(d == 0 && out == 0, "%u bad hand-outs, %u outside", d, out);
	CHECK(kt_stat(pool, "integrity.freelist_errors") == 0, "freelist errors");
	w_call(&wb, do_free, &j1);
	w_call(&wb, do_free, &j2);
	CHECK(kt_stat(pool, "primary.in_use_bytes") == u0, "in use %lld after all freed (was %lld)",
	      (long long)kt_stat(pool, "primary.in_use_bytes"), (long long)u0);
	w_stop(&wb);
	kp_destroy(pool);
}

/* 5. */
static long child_takes(void *arg)
{
	(void)arg;
	job t = {.pool = pool, .v = taken, .n = TAKE};
	do_alloc(&t); /* the child's A: the forking thread, its bin at 256 */
	unsigned out;
	long bad = (long)bad_handouts(taken, TAKE, &out) + out;
	bad += kt_stat(pool, "integrity.freelist_errors") != 0;
	bad += atomic_load(&pool->central[cls].nxfer) != 0;
	return bad;
}

static long child_result;
static void do_fork(void *arg)
{
	(void)arg;
	child_result = kt_in_child(child_takes, NULL);
}

static void test_fork_with_batches_of_256(void)
{
	if (!setup(CONF))
		return;
	w_call(&wa, do_fork, NULL);
	CHECK(child_result == 0, "the child: %ld bad", child_result);
	job t = {.pool = pool, .v = taken, .n = TAKE};
	w_call(&wa, do_alloc, &t);
	unsigned out, d = bad_handouts(taken, TAKE, &out);
	CHECK(d == 0 && out == 0, "the parent: %u bad, %u outside", d, out);
	CHECK(atomic_load(&pool->central[cls].nxfer) == 0, "the parent's batches not taken");
	teardown();
}

/* 6. */
static void test_realloc_and_aligned_take_batches(void)
{
	for (int how = 1; how <= 2; how++) {
		if (!setup(how == 1 ? CONF : CONF ",checks:off"))
			return;
		job t = {.pool = pool, .v = taken, .n = TAKE, .how = how};
		w_call(&wa, do_alloc, &t);
		unsigned out, d = bad_handouts(taken, TAKE, &out);
		CHECK(!atomic_load(&t.failed), "%s: a realloc lost its bytes or an aligned block was misaligned",
		      how == 1 ? "realloc" : "aligned");
		CHECK(d == 0 && out == 0, "%s: %u bad, %u outside", how == 1 ? "realloc" : "aligned", d, out);
		CHECK(kt_stat(pool, "integrity.freelist_errors") == 0, "freelist errors");
		w_call(&wb, do_free, &t);
		teardown();
	}
}

/* 7. */
#define NPOOLS 8
static atomic_int pools_parked;
static void *pool_life(void *arg)
{
	unsigned me = (unsigned)(uintptr_t)arg;
	char conf[128];
	snprintf(conf, sizeof conf, "primary_initial:8m,backup:0,seed:%u,daemon_interval_ms:1", 50 + me);
	kp_pool *p = kp_create(conf);
	if (!p) {
		snprintf(conf, sizeof conf, "primary_initial:8m,backup:0,seed:%u", 50 + me);
		p = kp_create(conf);
	}
	if (!p)
		return (void *)1;
	char **v = malloc(NB * sizeof *v);
	if (!v)
		return (void *)1;
	uintptr_t bad = 0;
	for (unsigned round = 0; round < 4; round++) {
		/* this thread both ways, with a helper thread as the other */
		for (unsigned i = 0; i < NB; i++)
			bad += !(v[i] = kp_alloc(p, REQ + (me % 4) * 16, 0));
		for (unsigned i = 0; i < NB; i++)
			kp_free(p, v[i]);
	}
	bad += kt_stat(p, "integrity.freelist_errors") != 0;
	unsigned parked = 0;
	for (unsigned c = 0; c < KP_NCLASS; c++)
		parked += atomic_load(&p->central[c].nxfer);
	atomic_fetch_add(&pools_parked, parked != 0);
	kp_destroy(p); /* batches parked, the daemon running */
	free(v);
	return (void *)bad;
}

static void test_many_pools_destroyed_parked(void)
{
	pthread_t t[NPOOLS];
	for (unsigned i = 0; i < NPOOLS; i++)
		REQUIRE(pthread_create(&t[i], NULL, pool_life, (void *)(uintptr_t)i) == 0, "pthread_create");
	uintptr_t bad = 0;
	for (unsigned i = 0; i < NPOOLS; i++) {
		void *r;
		pthread_join(t[i], &r);
		bad += (uintptr_t)r;
	}
	CHECK(bad == 0, "%lu failures over %d pools", (unsigned long)bad, NPOOLS);
	printf("   %d of %d pools destroyed with batches parked\n", atomic_load(&pools_parked), NPOOLS);
	/* and with the two threads' batches of 256 parked, daemon on */
	for (int k = 0; k < 3; k++) {
		if (!setup("primary_initial:16m,backup:0,seed:47"))
			return;
		teardown();
	}
}

/* 8. Threads on the least stack glibc gives them park and take batches
 * of 256 and call kp_thread_flush, whose drain holds two slots' keys and
 * a move buffer on its stack (transfer.c: 6 KiB at KP_XFER_KEYS 256). */
static void *small_prod(void *arg)
{
	job *j = arg;
	do_alloc(j);
	return NULL;
}

static void *small_cons(void *arg)
{
	job *j = arg;
	do_free(j);
	kp_thread_flush(j->pool);
	return NULL;
}

static void test_least_stack_threads(void)
{
	pool = kp_create(CONF);
	REQUIRE(pool, "kp_create: %s", kp_last_error());
	cls = kp__class_of(REQ + KP_HDR + pool->canary);
	pthread_attr_t at;
	pthread_attr_init(&at);
	/* the least glibc takes (PTHREAD_STACK_MIN where the static TLS
	 * leaves room) */
	size_t st = PTHREAD_STACK_MIN;
	pthread_t probe;
	job none = {.pool = pool};
	while (st < ((size_t)1 << 20) &&
	       (pthread_attr_setstacksize(&at, st) != 0 || pthread_create(&probe, &at, small_prod, &none) != 0))
		st *= 2;
	REQUIRE(st < ((size_t)1 << 20), "no thread on a stack under 1 MiB");
	pthread_join(probe, NULL);
	printf("   threads on %zu KiB stacks\n", st >> 10);
	job j = {.pool = pool, .v = blocks, .n = NB};
	for (int r = 0; r < 6; r++) {
		pthread_t t;
		REQUIRE(pthread_create(&t, &at, small_prod, &j) == 0, "pthread_create");
		pthread_join(t, NULL);
		REQUIRE(pthread_create(&t, &at, small_cons, &j) == 0, "pthread_create");
		pthread_join(t, NULL);
	}
	pthread_attr_destroy(&at);
	CHECK(!atomic_load(&j.failed), "an allocation or a free failed");
	CHECK(atomic_load(&pool->central[cls].nxfer) == 0, "batches parked after kp_thread_flush");
	CHECK(kt_stat(pool, "integrity.freelist_errors") == 0, "freelist errors");
	kp_destroy(pool);
}

int main(void)
{
	RUN(test_taker_catches_deep_damage);
	RUN(test_double_free_of_parked_block);
	RUN(test_drain_vets_batches_of_256);
	RUN(test_exit_with_full_bin_and_parked);
	RUN(test_fork_with_batches_of_256);
	RUN(test_realloc_and_aligned_take_batches);
	RUN(test_many_pools_destroyed_parked);
	RUN(test_least_stack_threads);
	return ktest_summary();
}
