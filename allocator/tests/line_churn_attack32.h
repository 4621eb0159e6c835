/*
 * line_churn_attack32.h - the churn of test_outline_line_churn_attack32.c
 * and test_outline_signal_dup_attack32.c (their opening comments say what
 * each checks): worker threads in waves hand blocks of the classes under a
 * cache line through shared slots, each block stamped with a serial the
 * slot keeps too; run() counts mismatches (a block held by two at once),
 * KP_ZERO blocks not zero, misaligned blocks, failed allocations, double
 * frees reported (none made) and bytes left in use. Environment, for soaks:
 * KT_WAVES, KT_OPS, KT_FLAVOURS (1: kp_alloc alone), KT_SHIFT (sizes that
 * many bytes larger), KT_WARM (a worker allocates once before it may be
 * signalled), KT_CONF (the signal run's conf).
 */
#ifndef LINE_CHURN_ATTACK32_H
#define LINE_CHURN_ATTACK32_H
#include "ktest.h"

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <sys/wait.h>

/* Shared slots: enough that a block often waits for another thread. */
#define NSLOT 512
/* Locks over the slots (slot i: lock i % NLOCK). */
#define NLOCK 64
/* Worker threads at once, and the operations each makes before it ends
 * (a new one takes its place: the heap adopted). */
#define NT 4
#define OPS 4000
static int ops = OPS; /* KT_OPS=N */
/* Threads started in all, per run (waves of NT). */
#define WAVES 40
static int waves = WAVES; /* KT_WAVES=N in the environment: a longer soak */
/* Slots for the signal handlers' own blocks (atomic exchange only). */
#define NHSLOT 64

static kp_pool *pool;
static struct {
	void *p;
	uint64_t serial;
	size_t size;
} slot[NSLOT];
static pthread_mutex_t lock[NLOCK];
static _Atomic uint64_t serials = 1;
static _Atomic unsigned mismatches, not_zero, misaligned, nulls;
static void *_Atomic hslot[NHSLOT];
static _Atomic unsigned hnulls, hcalls;
static _Atomic bool stop;
/* Held for reading around each worker's step, for writing around a fork:
 * the child's copy of the slots and blocks is then one moment's (a fork
 * while another thread stores is no snapshot: a slot's new pointer with its
 * block's old bytes read as a mismatch no allocator made). */
static pthread_rwlock_t quiet;
static bool warm;	       /* KT_WARM */
static int flavours = 4;       /* KT_FLAVOURS=1: kp_alloc alone */
static _Atomic int size_shift; /* KT_SHIFT=N: sizes N bytes larger (64 and up: classes of whole lines) */

static const size_t SIZES[] = {1, 8, 16, 24, 32, 40};

static void churn_env(void)
{
	warm = warm || getenv("KT_WARM");
	if (getenv("KT_WAVES"))
		waves = atoi(getenv("KT_WAVES"));
	if (getenv("KT_OPS"))
		ops = atoi(getenv("KT_OPS"));
	if (getenv("KT_FLAVOURS"))
		flavours = atoi(getenv("KT_FLAVOURS"));
	if (getenv("KT_SHIFT"))
		atomic_store(&size_shift, atoi(getenv("KT_SHIFT")));
}

static void stamp(void *p, size_t size, uint64_t s)
{
	memcpy(p, &s, 8 < size ? 8 : size);
	if (size >= 16) {
		uint64_t n = ~s;
		memcpy((char *)p + 8, &n, 8);
	}
}
static bool stamp_ok(const void *p, size_t size, uint64_t s)
{
	uint64_t a = 0, b = 0;
	memcpy(&a, p, 8 < size ? 8 : size);
	if (size < 8)
		return a == (s & ((1ull << (8 * size)) - 1));
	if (size >= 16) {
		memcpy(&b, (const char *)p + 8, 8);
		return a == s && b == ~s;
	}
	return a == s;
}

static void *make(uint64_t *seed, size_t *size_out, void *old, size_t old_size)
{
	size_t size = SIZES[kt_rand(seed) % (sizeof SIZES / sizeof SIZES[0])] + (size_t)atomic_load(&size_shift);
	void *p;
	switch (kt_rand(seed) % (unsigned)flavours) {
	case 0: p = kp_alloc(pool, size, 0); break;
	case 1:
		p = kp_alloc(pool, size, KP_ZERO);
		if (p) {
			bool z = true;
			for (size_t i = 0; i < size; i++)
				z &= ((unsigned char *)p)[i] == 0;
			if (!z)
				atomic_fetch_add(&not_zero, 1);
		}
		break;
	case 2: {
		size_t al = (size_t)16 << (kt_rand(seed) % 3);
		p = kp_alloc_aligned(pool, size, al, 0);
		if (p && (uintptr_t)p % al)
			atomic_fetch_add(&misaligned, 1);
		break;
	}
	default:
		if (old) { /* another thread's block, realloc'd by this one */
			p = kp_realloc(pool, old, size, 0);
			if (p)
				old = NULL;
		} else
			p = kp_alloc(pool, size, 0);
		break;
	}
	if (old) {
		(void)old_size;
		kp_free(pool, old);
	}
	if (!p)
		atomic_fetch_add(&nulls, 1);
	*size_out = size;
	return p;
}

static pthread_t live[NT];
static _Atomic bool live_ok[NT];

static void *worker(void *arg)
{
	uint64_t seed = 0x9e3779b97f4a7c15ull ^ (uintptr_t)arg;
	int me = (int)(((uintptr_t)arg - 1) % NT);
	/* signalled only inside its loop: not in pthread_create's setup nor
	 * in its exit (the exit hook's heap_abandon under locks a handler's
	 * call aborts on, by design: kp__mutex_lock) */
	if (warm) { /* the heap made (heap_get) before the first signal */
		void *w = kp_alloc(pool, 8, 0);
		kp_free(pool, w);
	}
	atomic_store(&live_ok[me], true);
	for (int op = 0; op < ops; op++) {
		pthread_rwlock_rdlock(&quiet);
		unsigned i = (unsigned)(kt_rand(&seed) % NSLOT);
		pthread_mutex_t *m = &lock[i % NLOCK];
		pthread_mutex_lock(m);
		void *p = slot[i].p;
		uint64_t s = slot[i].serial;
		size_t size = slot[i].size;
		slot[i].p = NULL;
		pthread_mutex_unlock(m);
		if (p && !stamp_ok(p, size, s))
			atomic_fetch_add(&mismatches, 1);
		void *q = NULL;
		size_t qs = 0;
		if (!p || kt_rand(&seed) % 2)
			q = make(&seed, &qs, p, size);
		else
			kp_free(pool, p);
		if (!q) {
			pthread_rwlock_unlock(&quiet);
			continue;
		}
		uint64_t ns = atomic_fetch_add(&serials, 1);
		stamp(q, qs, ns);
		pthread_mutex_lock(m);
		void *old = slot[i].p;
		uint64_t os = slot[i].serial;
		size_t osz = slot[i].size;
		slot[i].p = q;
		slot[i].serial = ns;
		slot[i].size = qs;
		pthread_mutex_unlock(m);
		if (old) {
			if (!stamp_ok(old, osz, os))
				atomic_fetch_add(&mismatches, 1);
			kp_free(pool, old);
		}
		pthread_rwlock_unlock(&quiet);
	}
	atomic_store(&live_ok[me], false);
	return NULL;
}

/* SIGUSR1: a block of a class under a line allocated, and the one in a
 * handler slot (another handler's, another thread's) freed. */
static void handler(int sig)
{
	(void)sig;
	int e = errno;
	unsigned k = atomic_fetch_add(&hcalls, 1) % NHSLOT;
	void *p = kp_alloc(pool, 8 + (k % 3) * 16 + (size_t)atomic_load(&size_shift), 0);
	if (!p)
		atomic_fetch_add(&hnulls, 1);
	void *old = atomic_exchange(&hslot[k], p);
	if (old)
		kp_free(pool, old);
	errno = e;
}

static void *pester(void *arg)
{
	(void)arg;
	while (!atomic_load(&stop)) {
		for (int i = 0; i < NT; i++)
			if (atomic_load(&live_ok[i]))
				pthread_kill(live[i], SIGUSR1);
		struct timespec ts = {0, 30000};
		nanosleep(&ts, NULL);
	}
	return NULL;
}

static void drain_all(void)
{
	for (int i = 0; i < NSLOT; i++) {
		if (slot[i].p) {
			if (!stamp_ok(slot[i].p, slot[i].size, slot[i].serial))
				atomic_fetch_add(&mismatches, 1);
			kp_free(pool, slot[i].p);
		}
		slot[i].p = NULL;
	}
	for (int k = 0; k < NHSLOT; k++) {
		void *p = atomic_exchange(&hslot[k], NULL);
		if (p)
			kp_free(pool, p);
	}
}

/* A child forked while workers run: frees every slot's block (many are
 * heaps' whose threads the child has not), allocates as many again. Exit
 * code: 0 clean, 1 a mismatch, 2 a double free reported, 3 blocks left. */
static int child(void)
{
	for (int i = 0; i < NLOCK; i++) /* a worker may have held one at the fork */
		pthread_mutex_init(&lock[i], NULL);
	drain_all();
	uint64_t seed = 99;
	for (int i = 0; i < NSLOT; i++) {
		size_t qs;
		void *q = make(&seed, &qs, NULL, 0);
		if (q) {
			stamp(q, qs, (uint64_t)i + 1);
			slot[i].p = q;
			slot[i].serial = (uint64_t)i + 1;
			slot[i].size = qs;
		}
	}
	drain_all();
	if (atomic_load(&mismatches))
		return 1;
	if (kt_stat(pool, "integrity.double_frees") != 0)
		return 2;
	return 0;
}

static void run(const char *conf, bool signals, bool forks)
{
	pool = kp_create(conf);
	REQUIRE(pool, "kp_create(%s): %s", conf, kp_last_error());
	for (int i = 0; i < NLOCK; i++)
		pthread_mutex_init(&lock[i], NULL);
	memset(slot, 0, sizeof slot);
	atomic_store(&stop, false);
	pthread_rwlockattr_t ra;
	pthread_rwlockattr_init(&ra);
	pthread_rwlockattr_setkind_np(&ra, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
	pthread_rwlock_init(&quiet, &ra);
	if (signals) {
		struct sigaction sa;
		memset(&sa, 0, sizeof sa);
		sa.sa_handler = handler;
		sa.sa_flags = SA_RESTART;
		sigaction(SIGUSR1, &sa, NULL);
	}
	pthread_t pt;
	if (signals)
		pthread_create(&pt, NULL, pester, NULL);
	unsigned children = 0, bad_children = 0;
	for (int w = 0; w < waves; w++) {
		for (int i = 0; i < NT; i++) {
			pthread_create(&live[i], NULL, worker, (void *)(uintptr_t)(w * NT + i + 1));
		}
		if (forks && w % 4 == 1) {
			pthread_rwlock_wrlock(&quiet);
			pid_t c = fork();
			if (c == 0)
				_exit(child());
			pthread_rwlock_unlock(&quiet);
			int st = 0;
			waitpid(c, &st, 0);
			children++;
			if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
				bad_children++;
				fprintf(stderr, "  child %u: %s %d\n", children, WIFEXITED(st) ? "exit" : "signal",
					WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
			}
		}
		for (int i = 0; i < NT; i++)
			pthread_join(live[i], NULL);
	}
	atomic_store(&stop, true);
	if (signals) {
		pthread_join(pt, NULL);
		signal(SIGUSR1, SIG_IGN);
	}
	drain_all();
	int64_t df = kt_stat(pool, "integrity.double_frees");
	int64_t inuse = kt_stat(pool, "primary.in_use_bytes");
	fprintf(stderr,
		"  %s%s%s: mismatches %u, not zero %u, misaligned %u, nulls %u/%u, double frees %lld, in use %lld, "
		"handler calls %u\n",
		conf, signals ? " +signals" : "", forks ? " +fork" : "", atomic_load(&mismatches),
		atomic_load(&not_zero), atomic_load(&misaligned), atomic_load(&nulls), atomic_load(&hnulls),
		(long long)df, (long long)inuse, atomic_load(&hcalls));
	CHECK(atomic_load(&mismatches) == 0, "%s: %u blocks held by two at once", conf, atomic_load(&mismatches));
	CHECK(atomic_load(&not_zero) == 0, "%s: %u KP_ZERO blocks not zero", conf, atomic_load(&not_zero));
	CHECK(atomic_load(&misaligned) == 0, "%s: %u misaligned", conf, atomic_load(&misaligned));
	CHECK(atomic_load(&nulls) == 0 && atomic_load(&hnulls) == 0, "%s: allocations failed", conf);
	CHECK(df == 0, "%s: %lld double frees reported, none made", conf, (long long)df);
	CHECK(inuse == 0, "%s: %lld bytes in use after every block freed", conf, (long long)inuse);
	CHECK(bad_children == 0, "%s: %u of %u fork children failed", conf, bad_children, children);
	kp_destroy(pool);
}

#endif
