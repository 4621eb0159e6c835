/*
 * test_backup_state_race_attack37.c - kp__backup_state (backup.c), the
 * lock-free read of a backup granule's state byte that vets a signal
 * handler's free nested inside its thread's call (alloc.c,
 * kp__classic_defer_vet: the interrupted call may hold the backup's lock),
 * beside another thread's kp__backup_alloc and kp__backup_free of blocks
 * over the same granules, which write those bytes under the lock. The
 * read is atomic; were the writes plain, it is a data race in C11's terms
 * (and ThreadSanitizer's): the reader may see any value, and the compiler
 * may tear or merge the writes. Asserted in every build: each answer is
 * one of the three kp__backup_state gives (0, KP_EDOUBLEFREE,
 * KP_ENOTOURS); under TSan, no race report (halt_on_error: the run dies).
 * Found (s37-robust, main 74a960a): TSan reported the read racing
 * kp__backup_free's write of the byte (FREED) in the first run (0.18 s).
 * Fixed in backup.c (every write of the byte a relaxed atomic store,
 * state_put, under the lock as before): no report in 3 runs.
 * Reproduce:
 *   make -C allocator VARIANT=tsan build/tsan/tests/test_backup_state_race_attack37 &&
 *   allocator/build/tsan/tests/test_backup_state_race_attack37
 */
#define _GNU_SOURCE 1
#include "ktest.h"

#include "internal.h"

#include <sched.h>

#define BLOCKS 8
#define ROUNDS 20000 /* the writer's allocations: each run of it under TSan ~0.3 s */
static kp_pool *pool;
static _Atomic bool done;
/* set by the reader as it starts: the writer waits for it, else on a loaded
 * machine it may run all its rounds before the reader is scheduled (CI,
 * ASan: "0 reads beside 10001 blocks") and the test races nothing */
static _Atomic bool reading;
static void *blocks[BLOCKS];
static long got; /* the writer's blocks: read after the join */

static void *writer(void *arg)
{
	(void)arg;
	uint64_t seed = 5;
	while (!atomic_load(&reading))
		sched_yield();
	for (int r = 0; r < ROUNDS; r++) {
		unsigned k = (unsigned)(kt_rand(&seed) % BLOCKS);
		void *p = atomic_load_explicit((void *_Atomic *)&blocks[k], memory_order_relaxed);
		if (p) {
			atomic_store_explicit((void *_Atomic *)&blocks[k], NULL, memory_order_relaxed);
			kp__backup_free(pool, p);
		} else {
			size_t usable;
			p = kp__backup_alloc(pool, 64 + (kt_rand(&seed) % 4) * 1000, 16, &usable);
			atomic_store_explicit((void *_Atomic *)&blocks[k], p, memory_order_relaxed);
			got += p != NULL;
		}
	}
	atomic_store(&done, true);
	return NULL;
}

static void test_state_read_beside_writes(void)
{
	KT_POOL(p, "layout:outline,daemon:off,backup:256k");
	pool = p;
	pthread_t t;
	pthread_create(&t, NULL, writer, NULL);
	long reads = 0, odd = 0;
	char *base = pool->backup.base;
	atomic_store(&reading, true);
	while (!atomic_load(&done)) {
		/* every granule of the first 64 KiB: live starts, insides, free heads */
		for (size_t off = 0; off < ((size_t)64 << 10); off += (size_t)1 << KP_BK_GRAN_SHIFT) {
			int rc = kp__backup_state(pool, base + off);
			odd += rc != 0 && rc != KP_EDOUBLEFREE && rc != KP_ENOTOURS;
			reads++;
		}
	}
	pthread_join(t, NULL);
	for (int k = 0; k < BLOCKS; k++)
		if (blocks[k])
			kp__backup_free(pool, blocks[k]);
	fprintf(stderr, "  %ld reads beside %ld backup blocks allocated and freed\n", reads, got);
	CHECK(odd == 0, "%ld answers of kp__backup_state none of its three", odd);
	CHECK(reads > 0 && got > ROUNDS / 4, "%ld reads, %ld blocks", reads, got);
	kp_destroy(pool);
}

int main(void)
{
	RUN(test_state_read_beside_writes);
	return ktest_summary();
}
