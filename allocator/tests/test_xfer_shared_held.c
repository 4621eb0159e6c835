/*
 * test_xfer_shared_held.c - two threads that free each other's blocks of
 * small classes (kpbench c: 16-256 bytes, every block freed by the other
 * thread) keep few bytes out of their spans: a bin of a small class of a
 * pool shared by threads grows to at most KP_BIN_SHARED_BYTES (16 KiB) of
 * its class, never below 64 blocks (tcache.c, shared_bin_bound), so what
 * the two threads' bins and the batches parked between them hold is
 * bounded by it.
 *
 * On main each such bin grew to the cap of 256 blocks at the threads'
 * swaps of roles: kpbench c's two threads held 300-450 KiB in bins and
 * 100-250 KiB parked beside 50-150 KiB live, its spans reached 1 MiB
 * (glibc's two arenas: 0.4), its peak RSS 5.3 MiB against glibc's 4.3.
 *
 * Threads A and B, PHASES phases: in each, one of them (A, B, A, ...)
 * allocates N blocks of 16-256 bytes (12 classes), then the other frees
 * them all. After each phase, with both threads waiting at a barrier, the
 * blocks held in the two threads' bins and in the parked batches (none is
 * live then) are counted, and the largest bin's max in bytes. The class
 * locks are counted too (pthread_mutex_lock interposed, as
 * test_xfer_phases does), per 1000 blocks, over the phases after the
 * first two: a guard on what the bound costs.
 */
#define _GNU_SOURCE 1
/* Tests the transfer cache and central lists (transfer.c, tcache.c): every pool layout:inline (ktest.h, KT_LAYOUT_INLINE). */
#define KT_LAYOUT_INLINE 1
#include "ktest.h"

#include "internal.h"

#include <dlfcn.h>
#include <pthread.h>

#define CONF "primary_initial:16m,daemon:off,backup:0,seed:43"
#define N 4096
#define PHASES 8
/* Per class at most a bin of 16 KiB (or 64 blocks) in each thread and two
 * parked batches of at most that: 12 classes of 32-320 bytes, 64 blocks of
 * 320 are 20 KiB. On main: 1-1.3 MiB after a phase. */
/* The largest bin: 16 KiB, or 64 blocks of the 320-byte class. */
#define BIN_MOST ((size_t)20 << 10)
#define HELD_MAX ((size_t)600 << 10)
/* 2 class locks per bin-full of blocks (a park and a take), bins of 51-256
 * blocks; on main (bins of 256, parked up to 32 KiB) 12-16. */
#define LOCKS_PER_1000 40

static int (*real_lock)(pthread_mutex_t *), (*real_trylock)(pthread_mutex_t *);
static atomic_int counting;
static atomic_long locks;

__attribute__((constructor)) static void find_real_lock(void)
{
	real_lock = (int (*)(pthread_mutex_t *))dlsym(RTLD_NEXT, "pthread_mutex_lock");
	real_trylock = (int (*)(pthread_mutex_t *))dlsym(RTLD_NEXT, "pthread_mutex_trylock");
}

#undef pthread_mutex_lock /* internal.h's kp__mutex_lock calls this one */
int pthread_mutex_lock(pthread_mutex_t *m)
{
	if (atomic_load_explicit(&counting, memory_order_relaxed))
		atomic_fetch_add_explicit(&locks, 1, memory_order_relaxed);
	return real_lock(m);
}

/* A class lock is tried first (kp__class_lock_take): a try that takes it
 * counts as a lock, one that fails does not (the lock that follows does). */
#undef pthread_mutex_trylock /* internal.h sends kpool's trylocks to kp__mutex_trylock, which calls this */
int pthread_mutex_trylock(pthread_mutex_t *m)
{
	int r = real_trylock(m);
	if (r == 0 && atomic_load_explicit(&counting, memory_order_relaxed))
		atomic_fetch_add_explicit(&locks, 1, memory_order_relaxed);
	return r;
}

static kp_pool *pool;
static char *blocks[N];
static size_t sizes[N];
static pthread_barrier_t turn;
static atomic_int failed;
static kp__tcache *caches[2];
static size_t held_most, bin_most;

/* Bytes of blocks in both threads' bins and in the parked batches, and the
 * largest bin's max in bytes. Both workers wait at the barrier: nothing
 * moves. */
static void count_held(size_t *held, size_t *most)
{
	*held = 0;
	*most = 0;
	for (unsigned t = 0; t < 2; t++)
		for (unsigned c = 0; c < KP_NCLASS && caches[t]; c++) {
			const kp__bin *b = &caches[t]->bin[c];
			*held += (size_t)b->count * kp__class_size[c];
			if ((size_t)b->max * kp__class_size[c] > *most && (b->allocs || b->frees))
				*most = (size_t)b->max * kp__class_size[c];
		}
	for (unsigned c = 0; c < KP_NCLASS; c++)
		for (unsigned i = 0; i < atomic_load(&pool->central[c].nxfer) && i < KP_XFER_SLOTS; i++)
			*held += (size_t)kp__xfer_slot(pool, c, i)->n * kp__class_size[c];
}

static void *worker(void *arg)
{
	unsigned me = (unsigned)(uintptr_t)arg;
	caches[me] = NULL;
	for (unsigned p = 0; p < PHASES; p++) {
		if (p % 2 == me)
			for (unsigned i = 0; i < N; i++) {
				if (!(blocks[i] = kp_alloc(pool, sizes[i], 0)))
					atomic_store(&failed, 1);
				else
					memset(blocks[i], (int)i, 8);
			}
		if (!caches[me] && kp__tls_state.id[0] == pool->id)
			caches[me] = kp__tls_state.tc[0];
		pthread_barrier_wait(&turn);
		if (p % 2 != me)
			for (unsigned i = 0; i < N; i++)
				if (blocks[i] && kp_free(pool, blocks[i]) != 0)
					atomic_store(&failed, 1);
		if (!caches[me] && kp__tls_state.id[0] == pool->id)
			caches[me] = kp__tls_state.tc[0];
		if (pthread_barrier_wait(&turn) == PTHREAD_BARRIER_SERIAL_THREAD) {
			size_t held, most;
			count_held(&held, &most);
			if (held > held_most)
				held_most = held;
			if (most > bin_most)
				bin_most = most;
			printf("   phase %u: %zu KiB held in bins and parked, largest bin %zu KiB\n", p, held >> 10,
			       most >> 10);
			if (p == 1)
				atomic_store(&counting, 1);
		}
		pthread_barrier_wait(&turn);
	}
	return NULL;
}

static void test_shared_bins_hold_little(void)
{
	REQUIRE(real_lock && real_trylock, "dlsym(pthread_mutex_lock, pthread_mutex_trylock)");
	pool = kp_create(CONF);
	REQUIRE(pool, "kp_create: %s", kp_last_error());
	uint64_t s = 0x9E3779B97F4A7C15ull;
	for (unsigned i = 0; i < N; i++) {
		s ^= s << 13;
		s ^= s >> 7;
		s ^= s << 17;
		sizes[i] = 16 + s % 241; /* 16-256 bytes, as kpbench c */
	}
	pthread_barrier_init(&turn, NULL, 2);
	pthread_t t[2];
	for (unsigned i = 0; i < 2; i++)
		REQUIRE(pthread_create(&t[i], NULL, worker, (void *)(uintptr_t)i) == 0, "pthread_create");
	for (unsigned i = 0; i < 2; i++)
		pthread_join(t[i], NULL);
	atomic_store(&counting, 0);
	pthread_barrier_destroy(&turn);
	CHECK(!atomic_load(&failed), "an allocation or a free failed");
	unsigned per_1000 = (unsigned)(atomic_load(&locks) * 1000 / ((long)N * (PHASES - 2)));
	printf("   at most %zu KiB held, largest bin %zu KiB; %u locks per 1000 blocks\n", held_most >> 10,
	       bin_most >> 10, per_1000);
	CHECK(bin_most <= BIN_MOST, "a bin grew to %zu bytes of its class (want <= %zu)", bin_most, BIN_MOST);
	CHECK(held_most <= HELD_MAX, "%zu KiB held in bins and parked batches (want <= %zu)", held_most >> 10,
	      HELD_MAX >> 10);
	CHECK(per_1000 <= LOCKS_PER_1000, "%u locks per 1000 blocks (want <= %d)", per_1000, LOCKS_PER_1000);
	CHECK(kt_stat(pool, "integrity.freelist_errors") == 0, "freelist errors");
	kp_destroy(pool);
}

int main(void)
{
	RUN(test_shared_bins_hold_little);
	return ktest_summary();
}
