/*
 * test_outline_huge_purge_race_attack31b.c - s31-att: the huge cache gives
 * a kept mapping's pages back once layout:outline's heaps took segments
 * since its free (huge.c, pool_grows: branch s31-mem, 1fb2291), which makes
 * that purge (without the pool lock, the mapping marked purging) far more
 * frequent in an outline pool. A stepper thread runs the daemon's pass back
 * to back (kp_daemon_step, 25 ms a step, decay_ms 300); a thread takes and
 * frees huge blocks of three sizes (kept mappings reused), every page
 * written with a pattern and the whole block verified before its free, a
 * third taken with KP_ZERO and read whole (zero); another thread makes the
 * outline heaps take segments again and again (8 MiB of 64 KiB blocks
 * taken and freed: return_idle gives their segments back, the next round
 * takes them again: ol->taken rises). Asserted: no huge block loses a byte
 * or reads non-zero under KP_ZERO, no integrity event, the kept mappings
 * were purged (pool->purges rose) and reused.
 * Held on s31-mem a08a69c (see the report).
 */
#define _GNU_SOURCE 1
#include "ktest.h"
#include "internal.h"

#include <pthread.h>
#include <stdatomic.h>

#define MiB ((size_t)1 << 20)
#define RUN_MS (KT_SANITIZED ? 1500 : 1200)

static kp_pool *pool;
static atomic_bool stop;
static atomic_ulong bad, nonzero, huge_ops, seg_rounds;

static void *stepper(void *arg)
{
	(void)arg;
	while (!atomic_load(&stop))
		kp_daemon_step(pool, 25);
	return NULL;
}

/* one word a 256 bytes: every page written, the check quick */
static void fill_sparse(unsigned char *p, size_t n, uint64_t salt)
{
	for (size_t i = 0; i + 8 <= n; i += 256) {
		uint64_t w = kt_pattern_word(p, salt, i);
		memcpy(p + i, &w, 8);
	}
}

static bool verify_sparse(const unsigned char *p, size_t n, uint64_t salt)
{
	for (size_t i = 0; i + 8 <= n; i += 256) {
		uint64_t w;
		memcpy(&w, p + i, 8);
		if (w != kt_pattern_word(p, salt, i))
			return false;
	}
	return true;
}

static void *huge_user(void *arg)
{
	(void)arg;
	static const size_t sizes[] = {5 * MiB, 8 * MiB, 12 * MiB};
	uint64_t s = 5, salt = 1;
	while (!atomic_load(&stop)) {
		size_t n = sizes[kt_rand(&s) % 3];
		bool z = kt_rand(&s) % 3 == 0;
		unsigned char *p = kp_alloc(pool, n, z ? KP_ZERO : 0);
		if (!p) {
			atomic_fetch_add(&bad, 1);
			continue;
		}
		if (z)
			for (size_t i = 0; i < n; i += 8) {
				uint64_t w;
				memcpy(&w, p + i, 8);
				if (w) {
					atomic_fetch_add(&nonzero, 1);
					break;
				}
			}
		fill_sparse(p, n, ++salt);
		sched_yield(); /* a pass may run meanwhile */
		if (!verify_sparse(p, n, salt))
			atomic_fetch_add(&bad, 1);
		if (kp_free(pool, p) != KP_OK)
			atomic_fetch_add(&bad, 1);
		atomic_fetch_add(&huge_ops, 1);
	}
	return NULL;
}

static void *seg_taker(void *arg)
{
	(void)arg;
	static void *b[128];
	while (!atomic_load(&stop)) {
		for (int i = 0; i < 128; i++) {
			b[i] = kp_alloc(pool, 65536 - 8, 0);
			if (b[i])
				memset(b[i], 3, 64);
		}
		for (int i = 0; i < 128; i++)
			kp_free(pool, b[i]);
		atomic_fetch_add(&seg_rounds, 1);
		kt_sleep_ms(3);
	}
	return NULL;
}

static void test_huge_kept_purge_against_reuse(void)
{
	pool = kp_create("layout:outline,daemon:off,step_clock:on,prefault:off,decay_ms:300,seed:13");
	REQUIRE(pool, "kp_create: %s", kp_last_error());
	uint64_t taken0 = kp__ol_grows(pool), purges0 = atomic_load(&pool->purges);
	pthread_t a, b, c;
	pthread_create(&a, NULL, stepper, NULL);
	pthread_create(&b, NULL, huge_user, NULL);
	pthread_create(&c, NULL, seg_taker, NULL);
	kt_sleep_ms(RUN_MS);
	atomic_store(&stop, true);
	pthread_join(b, NULL);
	pthread_join(c, NULL);
	pthread_join(a, NULL);
	uint64_t taken = kp__ol_grows(pool) - taken0, purges = atomic_load(&pool->purges) - purges0;
	int64_t ev = kt_stat(pool, "integrity.double_frees") + kt_stat(pool, "integrity.invalid_frees") +
		     kt_stat(pool, "integrity.overflows") + kt_stat(pool, "integrity.corruptions");
	printf("   %lu huge blocks, %lu segment rounds; outline segments taken %llu, huge purges %llu; bad %lu, "
	       "zeroed not zero %lu, events %lld\n",
	       atomic_load(&huge_ops), atomic_load(&seg_rounds), (unsigned long long)taken, (unsigned long long)purges,
	       atomic_load(&bad), atomic_load(&nonzero), (long long)ev);
	CHECK(atomic_load(&bad) == 0, "%lu huge blocks lost bytes", atomic_load(&bad));
	CHECK(atomic_load(&nonzero) == 0, "%lu zeroed huge blocks not zero", atomic_load(&nonzero));
	CHECK(ev == 0, "%lld integrity events", (long long)ev);
	CHECK(taken > 1 && purges > 0, "segments taken %llu, purges %llu", (unsigned long long)taken,
	      (unsigned long long)purges);
	kp_destroy(pool);
}

int main(void)
{
	RUN(test_huge_kept_purge_against_reuse);
	return ktest_summary();
}
