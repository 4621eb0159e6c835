/*
 * test_outline_poison_steal.c - layout:outline with poison:on and checks:off:
 * a block another thread freed (onto its span's cross-thread list: a poison
 * pool's heap caches none of the blocks it frees) and a third thread's
 * refill took from that list (fc_steal, then fc_pop) is handed out with its
 * fill intact, so poison_alloc finds no write after its free.
 *
 * Found on s34-cross d8dc37e, whose fc_pop wrote the canary's 8 bytes in
 * either mode, as kp__ol_pop_fast does (the record's canary, 0, with checks
 * off): the steal's blocks then read 8 zero bytes past the request in their
 * fill, and each was quarantined with a use-after-free event no program
 * made. Fixed there (fc_pop writes the canary only with checks on, as
 * before). Reproduce:
 *   make -C allocator VARIANT=release build/release/tests/test_outline_poison_steal &&
 *   allocator/build/release/tests/test_outline_poison_steal
 */
#define _GNU_SOURCE 1
#include "ktest.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

/* 200-byte requests: a class over a cache line (fc_steal leaves the classes
 * under one to their owners); 256 of them fill the heap's first span of the
 * class (128 blocks) and half its second, which stays in hand (not retired,
 * so the steal takes its listed blocks one by one: fc_pop) */
#define NB 256
#define SZ 200

static kp_pool *pool;
static void *blk[NB];
static int stolen;

static void *freer(void *arg)
{
	(void)arg;
	for (int i = 0; i < NB; i++)
		kp_free(pool, blk[i]);
	return NULL;
}

static pthread_barrier_t phase;

/* First one block of the class (a span of its own, whose first page of
 * blocks is made), then, once the other thread has freed this one's blocks
 * onto their lists, more than that page holds: the refill that finds the
 * span in hand dry with blocks untouched takes the listed ones first
 * (refill_body: fc_steal, then fc_pop), and poison_alloc checks each
 * against the span in hand's block size, its own class's. */
static void *taker(void *arg)
{
	(void)arg;
	void *got[NB + 1];
	got[NB] = kp_alloc(pool, SZ, 0);
	pthread_barrier_wait(&phase);
	pthread_barrier_wait(&phase);
	for (int i = 0; i < NB; i++) {
		got[i] = kp_alloc(pool, SZ, 0);
		for (int j = 0; j < NB && got[i]; j++)
			if (got[i] == blk[j]) {
				stolen++;
				break;
			}
	}
	for (int i = 0; i <= NB; i++)
		kp_free(pool, got[i]);
	return NULL;
}

static void test_a_stolen_block_keeps_its_fill(void)
{
	pool = kp_create("layout:outline,poison:on,checks:off,daemon:off");
	REQUIRE(pool, "kp_create: %s", kp_last_error());
	for (int i = 0; i < NB; i++) {
		blk[i] = kp_alloc(pool, SZ, 0);
		REQUIRE(blk[i], "kp_alloc");
		memset(blk[i], 0x5a, SZ);
	}
	pthread_t t, u;
	pthread_barrier_init(&phase, NULL, 2);
	pthread_create(&u, NULL, taker, NULL);
	pthread_barrier_wait(&phase);
	pthread_create(&t, NULL, freer, NULL); /* onto this thread's spans' lists */
	pthread_join(t, NULL);
	pthread_barrier_wait(&phase); /* the taker's refills steal them */
	pthread_join(u, NULL);
	pthread_barrier_destroy(&phase);
	int64_t uaf = kt_stat(pool, "integrity.use_after_frees"), q = kt_stat(pool, "integrity.quarantined");
	fprintf(stderr, "  %d of %d blocks taken again by the third thread; use after free %lld, quarantined %lld\n",
		stolen, NB, (long long)uaf, (long long)q);
	CHECK(stolen > 0, "no block freed by another thread was taken by the third (the steal not exercised)");
	CHECK(uaf == 0, "%lld use-after-free events for blocks no one wrote after their free", (long long)uaf);
	CHECK(q == 0, "%lld blocks quarantined", (long long)q);
	kp_destroy(pool);
}

int main(void)
{
	RUN(test_a_stolen_block_keeps_its_fill);
	return ktest_summary();
}
