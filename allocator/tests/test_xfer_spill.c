/*
 * test_xfer_spill.c - blocks handed from one thread to another in bursts go
 * through the transfer cache, not back to their spans: a batch offered
 * when the class has no room parked goes to its spans (kp__central_give,
 * about 210 instructions a block), and the bin that runs empty then takes
 * blocks from the spans again (kp__central_take); the stats count the
 * first as transfer.full.
 *
 * kpbench c's two threads run out of step by up to a queue of 1024
 * blocks: one frees a queue's worth while the other allocates, then the
 * other way round. On main each class parked 2 batches at most: under
 * callgrind (c's threads take turns) 2.7-2.8k of 8.5k batches offered went
 * to the spans, pinned to two CPUs 4-7k of 135k.
 *
 * 1. A producer and a consumer of one class of 64-byte blocks, in lockstep
 *    bursts of BURST blocks: the producer allocates them, then the consumer
 *    frees them all (a bin that only frees keeps its start, 16 blocks, and
 *    parks a batch of 15-16 each time it fills: 32 batches a burst).
 * 2. kpbench c's turns: threads A and B alternately free the BURST blocks
 *    the other allocated last turn, then allocate BURST of their own, of
 *    16-256 bytes (11 classes), each thread using each class both ways.
 *
 * Counted over the rounds after the first WARM (bins grown, spans carved),
 * batches that found no room, per burst.
 */
#define _GNU_SOURCE 1
/* Tests the transfer cache and central lists (transfer.c, tcache.c): every pool layout:inline (ktest.h, KT_LAYOUT_INLINE). */
#define KT_LAYOUT_INLINE 1
#include "ktest.h"

#include "internal.h"

#include "kt_worker.h"

#define CONF "primary_initial:16m,daemon:off,backup:0,seed:53"
#define BURST 1024
#define ROUNDS 24
#define WARM 4
/* Batches gone to the spans per burst, at most (after WARM rounds). On main
 * (2 batches parked per class): one-way 30 a burst, turns 5.5. */
#define FULL_PER_BURST_ONE_WAY 1.0
#define FULL_PER_BURST_TURNS 0.5

typedef struct job {
	kp_pool *pool;
	char **v;
	unsigned n;
	uint64_t rng; /* sizes: 0 for a fixed 40 bytes (a 64-byte class) */
	atomic_int failed;
} job;

static size_t next_size(job *j)
{
	if (!j->rng)
		return 40;
	j->rng = j->rng * 6364136223846793005ull + 1442695040888963407ull;
	return 16 + (size_t)((j->rng >> 33) % 241); /* kpbench c's 16-256 B */
}

static void do_alloc(void *arg)
{
	job *j = arg;
	for (unsigned i = 0; i < j->n; i++) {
		size_t size = next_size(j);
		char *p = kp_alloc(j->pool, size, 0);
		if (!p) {
			atomic_store(&j->failed, 1);
			continue;
		}
		memset(p, (int)(i & 0xff), size);
		j->v[i] = p;
	}
}

static void do_free(void *arg)
{
	job *j = arg;
	for (unsigned i = 0; i < j->n; i++)
		if (j->v[i] && kp_free(j->pool, j->v[i]) != 0)
			atomic_store(&j->failed, 1);
}

static int64_t full_now(kp_pool *pool)
{
	return kt_stat(pool, "transfer.full");
}

static void report(kp_pool *pool, const char *what, int64_t full, double per_burst, double most)
{
	printf("   %s: %lld batches to the spans in %d bursts of %d (%.2f a burst, want <= %.2f); parked %lld, "
	       "taken %lld, empty %lld\n",
	       what, (long long)full, ROUNDS - WARM, BURST, per_burst, most,
	       (long long)kt_stat(pool, "transfer.parked"), (long long)kt_stat(pool, "transfer.taken"),
	       (long long)kt_stat(pool, "transfer.empty"));
}

static void test_one_way_bursts(void)
{
	KT_POOL(pool, CONF);
	static char *v[BURST];
	worker prod, cons;
	w_start(&prod);
	w_start(&cons);
	job j = {.pool = pool, .v = v, .n = BURST};
	int64_t full0 = 0;
	for (unsigned r = 0; r < ROUNDS; r++) {
		if (r == WARM)
			full0 = full_now(pool);
		w_call(&prod, do_alloc, &j);
		w_call(&cons, do_free, &j);
	}
	int64_t full = full_now(pool) - full0;
	double per_burst = (double)full / (ROUNDS - WARM);
	report(pool, "one way", full, per_burst, FULL_PER_BURST_ONE_WAY);
	CHECK(!atomic_load(&j.failed), "an allocation or a free failed");
	CHECK(per_burst <= FULL_PER_BURST_ONE_WAY, "%.2f batches a burst went to the spans", per_burst);
	w_stop(&prod);
	w_stop(&cons);
	CHECK(kt_stat(pool, "integrity.freelist_errors") == 0, "freelist errors");
	kp_destroy(pool);
}

static void test_turns(void)
{
	KT_POOL(pool, CONF);
	static char *v[2][BURST];
	worker w[2];
	w_start(&w[0]);
	w_start(&w[1]);
	job j[2] = {{.pool = pool, .v = v[0], .n = BURST, .rng = 1}, {.pool = pool, .v = v[1], .n = BURST, .rng = 2}};
	int64_t full0 = 0;
	w_call(&w[0], do_alloc, &j[0]);
	for (unsigned r = 0; r < ROUNDS; r++) {
		if (r == WARM)
			full0 = full_now(pool);
		unsigned me = (r + 1) % 2; /* frees the other's, then allocates its own */
		w_call(&w[me], do_free, &j[1 - me]);
		w_call(&w[me], do_alloc, &j[me]);
	}
	w_call(&w[1 - ROUNDS % 2], do_free, &j[ROUNDS % 2]); /* the last burst, by the other */
	int64_t full = full_now(pool) - full0;
	double per_burst = (double)full / (ROUNDS - WARM);
	report(pool, "turns", full, per_burst, FULL_PER_BURST_TURNS);
	CHECK(!atomic_load(&j[0].failed) && !atomic_load(&j[1].failed), "an allocation or a free failed");
	CHECK(per_burst <= FULL_PER_BURST_TURNS, "%.2f batches a burst went to the spans", per_burst);
	w_stop(&w[0]);
	w_stop(&w[1]);
	CHECK(kt_stat(pool, "integrity.freelist_errors") == 0, "freelist errors");
	kp_destroy(pool);
}

int main(void)
{
	RUN(test_one_way_bursts);
	RUN(test_turns);
	return ktest_summary();
}
