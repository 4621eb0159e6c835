/*
 * test_xfer_phases.c - two threads that take turns producing and consuming
 * one class (kpbench c when its threads run in parallel: for thousands of
 * blocks at a time one thread only allocates and the other only frees the
 * blocks it is handed, then the roles swap) move them through the transfer
 * cache in big batches: a bin whose thread uses its class both ways over
 * its life grows in a one-way phase (tcache.c, kp__bin_miss), so the class
 * lock is taken a few times per 128 blocks, not twice per 16.
 *
 * On main such a bin never grew inside a phase (only a swing, a miss at the
 * other end from the last one, grew it: once per change of roles), so a
 * long phase moved 16 blocks per refill and per flush, each a class lock:
 * kpbench c under two busy CPUs made 1.2-1.5M class locks per 10M
 * operations (its bins stuck at their start) against ~12K when its
 * threads take turns.
 *
 * Threads A and B; phase p: one of them (A, B, A) allocates N blocks of a
 * 64-byte class, then the other frees them all. The class lock's locks
 * (pthread_mutex_lock interposed, as test_xfer_lock_once does) are counted
 * in the third phase, the first where both threads have used the class
 * both ways, per 1000 blocks.
 */
#define _GNU_SOURCE 1
/* Tests the transfer cache and central lists (transfer.c, tcache.c): every pool layout:inline (ktest.h, KT_LAYOUT_INLINE). */
#define KT_LAYOUT_INLINE 1
#include "ktest.h"

#include "internal.h"

#include <dlfcn.h>
#include <pthread.h>

#define CONF "primary_initial:16m,daemon:off,backup:0,seed:41"
#define REQ 40 /* a class of 64-byte blocks: a bin starts at 16, its cap 256 */
#define N 4096
#define PHASES 5
/* Per 1000 blocks of the third phase: a refill and a flush per 16 blocks
 * are 125; batches of 128 about 16, plus the growth of the bins. */
#define LOCKS_PER_1000 35
/* And in the fifth, the bins grown to 256: a full bin parked whole and
 * taken whole (KP_XFER_KEYS) is 2 locks per 256 blocks, 8 per 1000; cut to
 * batches of 128, 16. */
#define LOCKS_PER_1000_GROWN 10

static int (*real_lock)(pthread_mutex_t *), (*real_trylock)(pthread_mutex_t *);
static pthread_mutex_t *_Atomic watch;
static atomic_int phase; /* the phase under way: its locks go to locks[phase] */
static atomic_int locks[PHASES];

__attribute__((constructor)) static void find_real_lock(void)
{
	real_lock = (int (*)(pthread_mutex_t *))dlsym(RTLD_NEXT, "pthread_mutex_lock");
	real_trylock = (int (*)(pthread_mutex_t *))dlsym(RTLD_NEXT, "pthread_mutex_trylock");
}

#undef pthread_mutex_lock /* internal.h's kp__mutex_lock calls this one */
int pthread_mutex_lock(pthread_mutex_t *m)
{
	if (m == atomic_load(&watch))
		atomic_fetch_add(&locks[atomic_load(&phase)], 1);
	return real_lock(m);
}

/* A class lock is tried first (kp__class_lock_take): a try that takes it
 * counts as a lock, one that fails does not (the lock that follows does). */
#undef pthread_mutex_trylock /* internal.h sends kpool's trylocks to kp__mutex_trylock, which calls this */
int pthread_mutex_trylock(pthread_mutex_t *m)
{
	int r = real_trylock(m);
	if (r == 0 && m == atomic_load(&watch))
		atomic_fetch_add(&locks[atomic_load(&phase)], 1);
	return r;
}

static kp_pool *pool;
static char *blocks[N];
static pthread_barrier_t turn;
static atomic_int failed;

static void *worker(void *arg)
{
	unsigned me = (unsigned)(uintptr_t)arg;
	for (unsigned p = 0; p < PHASES; p++) {
		if (p % 2 == me)
			for (unsigned i = 0; i < N; i++)
				if (!(blocks[i] = kp_alloc(pool, REQ, 0)))
					atomic_store(&failed, 1);
		pthread_barrier_wait(&turn);
		if (p % 2 != me)
			for (unsigned i = 0; i < N; i++)
				if (blocks[i] && kp_free(pool, blocks[i]) != 0)
					atomic_store(&failed, 1);
		if (pthread_barrier_wait(&turn) == PTHREAD_BARRIER_SERIAL_THREAD && p + 1 < PHASES)
			atomic_store(&phase, (int)p + 1);
		pthread_barrier_wait(&turn);
	}
	return NULL;
}

static void test_phases_move_big_batches(void)
{
	REQUIRE(real_lock && real_trylock, "dlsym(pthread_mutex_lock, pthread_mutex_trylock)");
	pool = kp_create(CONF);
	REQUIRE(pool, "kp_create: %s", kp_last_error());
	unsigned cls = kp__class_of(REQ + KP_HDR + pool->canary);
	atomic_store(&watch, kp__class_lock(pool, cls));
	pthread_barrier_init(&turn, NULL, 2);
	pthread_t t[2];
	for (unsigned i = 0; i < 2; i++)
		REQUIRE(pthread_create(&t[i], NULL, worker, (void *)(uintptr_t)i) == 0, "pthread_create");
	for (unsigned i = 0; i < 2; i++)
		pthread_join(t[i], NULL);
	atomic_store(&watch, NULL);
	pthread_barrier_destroy(&turn);
	CHECK(!atomic_load(&failed), "an allocation or a free failed");
	for (unsigned p = 0; p < PHASES; p++)
		printf("   phase %u: %d class locks for %d blocks (%u per 1000)\n", p, atomic_load(&locks[p]), N,
		       (unsigned)atomic_load(&locks[p]) * 1000u / N);
	unsigned third = (unsigned)atomic_load(&locks[2]) * 1000u / N,
		 last = (unsigned)atomic_load(&locks[PHASES - 1]) * 1000u / N;
	CHECK(third <= LOCKS_PER_1000, "%u class locks per 1000 blocks in the third phase (want <= %d)", third,
	      LOCKS_PER_1000);
	CHECK(last <= LOCKS_PER_1000_GROWN, "%u class locks per 1000 blocks in the last phase (want <= %d)", last,
	      LOCKS_PER_1000_GROWN);
	CHECK(kt_stat(pool, "integrity.freelist_errors") == 0, "freelist errors");
	kp_destroy(pool);
}

int main(void)
{
	RUN(test_phases_move_big_batches);
	return ktest_summary();
}
