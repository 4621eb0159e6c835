/*
 * test_outline_free_first_attack33.c - layout:outline, a thread whose first
 * call into the pool is a kp_free (a consumer's: it frees what a producer
 * allocated, then allocates): does it get a heap of its own, or are all its
 * small allocations served by alloc.c's path (the inline primary) for as
 * long as it lives?
 *
 * Found on s33-lead ac38171 (the integration of s33-sig's marked slot,
 * outline.h kp__ol_enter, with the rest): the first free makes the thread's
 * slot name the pool with the empty heap (kp__ol_free); its next
 * kp_alloc's fast path marks the slot, finds the empty heap's class run
 * dry and goes to kp__ol_refill -> refill_span -> refill_body, whose
 * empty-heap case calls kp__alloc_slow -> kp__ol_alloc with the slot still
 * marked, which takes that for a signal handler's nested call
 * (alloc_nested) and serves it from alloc.c's path without heap_get: the
 * thread never gets a heap. Every small allocation of such a thread went
 * through alloc.c's thread cache and inline segments.
 * Measured there (release, 3 runs alike): the consumer's 65,536 allocations
 * of 48 bytes after its first free: 65,536 of 65,536 not outline blocks
 * (none in the slice map), the thread's slot still the empty heap, and
 * the pool's primary.segments 0 -> 4 (2 on s33-speed 37201a1, where this
 * test passes: the outline heap's; the other 2 inline segments for them). test_outline_line_stranded_attack32, which passed on
 * s33-speed 37201a1 (+128/+128/+128/+64 KiB), failed 6 of 6 runs on the
 * integration for this cause (+4096/+6208/+8192/+10304 KiB committed by
 * the consumer's second round: its allocations were all alloc.c's).
 * On main (before the mark) the same thread got its heap at its first
 * free of a class its heap caches (free_remote_slow's heap_get), and at
 * its first allocation (kp__ol_alloc's heap_get). With the mark, heap_get
 * refuses a marked slot: free_remote_slow's call got NULL too, and every
 * such free went onto its span's list; with the allocation fixed alone,
 * test_outline_line_stranded_attack32's 64-byte class still failed
 * (+4288 KiB: fc_steal met the producer's span in hand, not quiet, first,
 * and stole blocks instead of adopting spans; +64 on 37201a1).
 * Fixed: refill_span unmarks the slot and takes kp__alloc_slow (heap_get)
 * for the empty heap; free_remote_slow unmarks for heap_get and marks
 * again. Both checks pass; line_stranded +128/+128/+128/+64 KiB again.
 * Reproduce:
 *   make -C allocator VARIANT=release build/release/tests/test_outline_free_first_attack33 &&
 *   allocator/build/release/tests/test_outline_free_first_attack33
 */
#define _GNU_SOURCE 1
#include "ktest.h"

#include "internal.h"
#include "outline.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#define NB 65536

static kp_pool *pool;
static void *blk[NB];

static void *producer(void *arg)
{
	(void)arg;
	for (int i = 0; i < NB; i++)
		blk[i] = kp_alloc(pool, 48, 0);
	return NULL;
}

/* Is p one of the pool's outline blocks (its slice map knows it)? */
static bool outline_block(const void *p)
{
	uintptr_t a = (uintptr_t)p;
	uintptr_t *map = pool->ol->map;
	uintptr_t e = __atomic_load_n(&map[(a >> OL_SLICE_SHIFT) & (OL_MAP_N - 1)], __ATOMIC_RELAXED);
	return e != 0;
}

static long not_outline;
static bool empty_heap_freed, empty_heap_after;
static void *consumer(void *arg)
{
	(void)arg;
	for (int i = 0; i < NB; i++) /* its first calls: frees */
		kp_free(pool, blk[i]);
	empty_heap_freed = kp__ol_slot.heap == &kp__ol_empty_heap;
	for (int i = 0; i < NB; i++) {
		blk[i] = kp_alloc(pool, 48, 0);
		if (blk[i] && !outline_block(blk[i]))
			not_outline++;
	}
	empty_heap_after = kp__ol_slot.heap == &kp__ol_empty_heap;
	for (int i = 0; i < NB; i++)
		kp_free(pool, blk[i]);
	return NULL;
}

static void test_a_consumer_gets_a_heap(void)
{
	pool = kp_create("layout:outline,daemon:off,primary_initial:0");
	REQUIRE(pool, "kp_create: %s", kp_last_error());
	int64_t s0 = kt_stat(pool, "primary.segments");
	pthread_t t;
	pthread_create(&t, NULL, producer, NULL);
	pthread_join(t, NULL);
	pthread_create(&t, NULL, consumer, NULL);
	pthread_join(t, NULL);
	int64_t s1 = kt_stat(pool, "primary.segments");
	fprintf(stderr,
		"  %ld of %d allocations not outline blocks; slot's heap the empty one: %d; segments %lld -> %lld\n",
		not_outline, NB, empty_heap_after, (long long)s0, (long long)s1);
	CHECK(not_outline == 0, "%ld of %d small allocations of a thread that freed first went to alloc.c's path",
	      not_outline, NB);
	CHECK(!empty_heap_freed, "no heap for the thread after its %d cross-thread frees of 48-byte blocks", NB);
	CHECK(!empty_heap_after, "the thread's slot still holds the empty heap after %d allocations", NB);
	CHECK(kt_stat(pool, "primary.in_use_bytes") == 0, "bytes left in use");
	kp_destroy(pool);
}

int main(void)
{
	RUN(test_a_consumer_gets_a_heap);
	return ktest_summary();
}
