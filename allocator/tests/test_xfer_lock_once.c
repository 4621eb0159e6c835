/*
 * test_xfer_lock_once.c - a flush that finds both of its class's transfer
 * slots taken (transfer.c, KP_XFER_BASE) takes the class lock once: to
 * give the batch to its spans (kp__central_give). It took it three times:
 * kp__xfer_put of the whole bin found no room, the flush cut the bin to
 * one block, kp__xfer_put of that part found no room again, and the give
 * took it a third time: two more locks and unlocks of the lock every
 * refill and flush of the class contends for, on each flush of a thread
 * that frees more than the other bins take (kpbench c's consumer, a
 * server's). On main: 3.
 *
 * Thread P allocates 3 * 16 + 1 blocks of a 64-byte class; thread C frees
 * them in order: its bin (16 blocks, one way: it never grows) overflows at
 * the 17th, 33rd and 49th free, and each flush is whole (tcache.c,
 * KP_FLUSH_WHOLE): the first two park, the third finds both slots taken.
 * The test interposes pthread_mutex_lock (forwarding to the real one, as
 * test_block_purge_held does with unlock) and counts the class lock's
 * locks by C during its 49th free.
 */
#define _GNU_SOURCE 1
/* Tests the transfer cache and central lists (transfer.c, tcache.c): every pool layout:inline (ktest.h, KT_LAYOUT_INLINE). */
#define KT_LAYOUT_INLINE 1
#include "ktest.h"

#include "internal.h"

#include <dlfcn.h>
#include <pthread.h>

#include "kt_worker.h"

#define CONF "primary_initial:8m,daemon:off,backup:0,seed:37"
#define REQ 40 /* a class of 64-byte blocks: a bin starts at 16 */
#define BIN 16
#define N (3 * BIN + 1)

static int (*real_lock)(pthread_mutex_t *), (*real_trylock)(pthread_mutex_t *);
static pthread_mutex_t *_Atomic watch;
static __thread int counting;
static atomic_int locks;

__attribute__((constructor)) static void find_real_lock(void)
{
	real_lock = (int (*)(pthread_mutex_t *))dlsym(RTLD_NEXT, "pthread_mutex_lock");
	real_trylock = (int (*)(pthread_mutex_t *))dlsym(RTLD_NEXT, "pthread_mutex_trylock");
}

#undef pthread_mutex_lock /* internal.h's kp__mutex_lock calls this one */
int pthread_mutex_lock(pthread_mutex_t *m)
{
	if (counting && m == atomic_load(&watch))
		atomic_fetch_add(&locks, 1);
	return real_lock(m);
}

/* A class lock is tried first (kp__class_lock_take): a try that takes it
 * counts as a lock, one that fails does not (the lock that follows does). */
#undef pthread_mutex_trylock /* internal.h sends kpool's trylocks to kp__mutex_trylock, which calls this */
int pthread_mutex_trylock(pthread_mutex_t *m)
{
	int r = real_trylock(m);
	if (r == 0 && counting && m == atomic_load(&watch))
		atomic_fetch_add(&locks, 1);
	return r;
}

static kp_pool *pool;
static char *blocks[N];
static unsigned parked_before;

static void *producer(void *arg)
{
	(void)arg;
	for (unsigned i = 0; i < N; i++)
		blocks[i] = kp_alloc(pool, REQ, 0);
	return NULL;
}

static void *consumer(void *arg)
{
	unsigned cls = (unsigned)(uintptr_t)arg;
	for (unsigned i = 0; i < N - 1; i++)
		kp_free(pool, blocks[i]);
	parked_before = atomic_load(&pool->central[cls].nxfer);
	counting = 1;
	kp_free(pool, blocks[N - 1]); /* the third flush */
	counting = 0;
	return NULL;
}

static void run(void *(*fn)(void *), void *arg)
{
	pthread_t t;
	if (pthread_create(&t, NULL, fn, arg) == 0)
		pthread_join(t, NULL);
}

static void test_full_slots_one_lock(void)
{
	REQUIRE(real_lock && real_trylock, "dlsym(pthread_mutex_lock, pthread_mutex_trylock)");
	pool = kp_create(CONF);
	REQUIRE(pool, "kp_create: %s", kp_last_error());
	unsigned cls = kp__class_of(REQ + KP_HDR + pool->canary);
	kt_cache_holder(pool); /* P and C run one after the other: a cache beside C's */
	run(producer, NULL);
	for (unsigned i = 0; i < N; i++)
		REQUIRE(blocks[i], "allocation %u failed", i);
	atomic_store(&locks, 0);
	atomic_store(&watch, kp__class_lock(pool, cls));
	run(consumer, (void *)(uintptr_t)cls);
	atomic_store(&watch, NULL);
	unsigned parked = atomic_load(&pool->central[cls].nxfer);
	printf("   slots taken before the third flush %u, after %u; class lock taken %d times by it\n", parked_before,
	       parked, atomic_load(&locks));
	/* no bin took a batch of the class: its room is the base's (transfer.c) */
	REQUIRE(parked_before == KP_XFER_BASE && parked == KP_XFER_BASE,
		"slots taken %u before the third flush, %u after (want %d: the set-up failed)", parked_before, parked,
		KP_XFER_BASE);
	CHECK(atomic_load(&locks) == 1, "the flush into full slots took the class lock %d times (want 1)",
	      atomic_load(&locks));
	/* the batch went to the spans: every block of the pool handed out once */
	static char *v[256];
	for (unsigned i = 0; i < 256; i++)
		v[i] = kp_alloc(pool, REQ, 0);
	unsigned d = 0;
	for (unsigned i = 0; i < 256; i++)
		for (unsigned j = 0; j < i; j++)
			d += !v[i] || v[i] == v[j];
	CHECK(d == 0, "%u blocks handed out twice or NULL", d);
	CHECK(kt_stat(pool, "integrity.freelist_errors") == 0, "freelist errors");
	kp_destroy(pool);
}

int main(void)
{
	RUN(test_full_slots_one_lock);
	return ktest_summary();
}
