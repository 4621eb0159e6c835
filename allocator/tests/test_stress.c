/*
 * test_stress.c - the knob-driven stress test. Every thread runs a random
 * mix of alloc, aligned alloc, zeroed alloc, realloc, free, cross-thread
 * free and (for one thread) critical allocations, verifying each block's
 * pattern before it lets go of it. At the end the stats must balance.
 *
 * Knobs (environment; small defaults so it runs in seconds under TSan):
 *   KP_STRESS_THREADS   threads                         (default 4, max 64)
 *   KP_STRESS_OPS       operations per thread           (default 300000)
 *   KP_STRESS_MAX_SIZE  largest request in bytes        (default 262144)
 *   KP_STRESS_SLOTS     live blocks per thread          (default 256)
 *   KP_STRESS_SEED      seed (0: from the clock; printed either way)
 *   KP_STRESS_ALIGNED   1: include kp_alloc_aligned in the mix; 0: leave it out
 *                       (default 1)
 *   KP_STRESS_CONF      the pool's conf string          (default below)
 * A failure prints the seed: rerun with KP_STRESS_SEED=<seed> to replay the
 * same per-thread operation streams (thread interleaving aside).
 */
#include "ktest.h"

#include <pthread.h>

#define MAX_THREADS 64
#define XFER 128

struct shared {
	kp_pool *pool;
	uint64_t token;
	size_t max_size, slots;
	long ops;
	int aligned;
	pthread_mutex_t lock; /* the transfer pool: blocks any thread may free */
	void *xfer[XFER];
	size_t xfer_size[XFER];
	uint64_t xfer_salt[XFER];
	int nxfer;
};

struct worker {
	struct shared *sh;
	int id;
	uint64_t seed;
	long corrupt, nulls, bad_frees, bad_usable, bad_align, bad_zero, crit_served;
};

static size_t pick_size(uint64_t *rng, size_t max)
{
	uint64_t r = kt_rand(rng);
	if ((r & 15) == 0)
		return kt_rand_log(rng, 1, max);
	if ((r & 15) == 1)
		return 0;
	return kt_rand_log(rng, 1, max < 1024 ? max : 1024);
}

static void *worker_main(void *varg)
{
	struct worker *w = (struct worker *)varg;
	struct shared *sh = w->sh;
	kp_pool *pool = sh->pool;
	void **slot = (void **)calloc(sh->slots, sizeof(void *));
	size_t *size = (size_t *)calloc(sh->slots, sizeof(size_t));
	uint64_t rng = w->seed;
	const uint64_t salt = w->seed; /* per thread: a block seen by the wrong thread fails */
	int critical = w->id == 0 && sh->token != 0;
	if (slot == NULL || size == NULL) {
		w->nulls++;
		free(slot);
		free(size);
		return NULL;
	}
	if (critical && kp_critical_enter(pool, sh->token) != 0)
		w->bad_frees++;
	for (long op = 0; op < sh->ops; op++) {
		uint64_t r = kt_rand(&rng);
		size_t i = (size_t)(r % sh->slots);
		unsigned kind = (unsigned)(r >> 40) % 20;
		if (slot[i] == NULL) {
			size_t s = pick_size(&rng, sh->max_size);
			void *p;
			if (kind < 3 && sh->aligned) {
				size_t a = (size_t)1 << (kt_rand(&rng) % 13);
				p = kp_alloc_aligned(pool, s, a, 0);
				if (p != NULL && ((uintptr_t)p & (a - 1)) != 0)
					w->bad_align++;
			} else if (kind < 6) {
				p = kp_alloc(pool, s, KP_ZERO);
				if (p != NULL)
					for (size_t b = 0; b < s; b += 61)
						if (((unsigned char *)p)[b] != 0) {
							w->bad_zero++;
							break;
						}
			} else {
				p = kp_alloc(pool, s, critical && kind == 7 ? KP_CRITICAL : 0);
			}
			if (p == NULL) {
				w->nulls++;
				continue;
			}
			if (kp_usable_size(pool, p) < s)
				w->bad_usable++;
			kt_fill(p, s, salt);
			slot[i] = p;
			size[i] = s;
		} else if (kind < 5) {
			size_t s = pick_size(&rng, sh->max_size);
			void *old = slot[i];
			if (kt_verify(old, size[i], salt) != KT_OK)
				w->corrupt++;
			void *p = kp_realloc(pool, old, s, kind == 0 ? KP_ZERO : 0);
			if (p == NULL) {
				if (s == 0)
					slot[i] = NULL; /* realloc(p, 0) freed it */
				else
					w->nulls++;
				continue;
			}
			size_t keep = s < size[i] ? s : size[i];
			if (kt_verify_from(p, old, keep, salt) != KT_OK)
				w->corrupt++;
			kt_fill(p, s, salt);
			slot[i] = p;
			size[i] = s;
		} else if (kind < 7) { /* give the block away */
			if (kt_verify(slot[i], size[i], salt) != KT_OK)
				w->corrupt++;
			pthread_mutex_lock(&sh->lock);
			if (sh->nxfer < XFER) {
				sh->xfer[sh->nxfer] = slot[i];
				sh->xfer_size[sh->nxfer] = size[i];
				sh->xfer_salt[sh->nxfer++] = salt;
				slot[i] = NULL;
			}
			pthread_mutex_unlock(&sh->lock);
		} else if (kind < 8) { /* free a block someone gave away */
			void *p = NULL;
			size_t s = 0;
			uint64_t their = 0;
			pthread_mutex_lock(&sh->lock);
			if (sh->nxfer > 0) {
				int k = (int)(kt_rand(&rng) % (uint64_t)sh->nxfer);
				p = sh->xfer[k];
				s = sh->xfer_size[k];
				their = sh->xfer_salt[k];
				sh->xfer[k] = sh->xfer[--sh->nxfer];
				sh->xfer_size[k] = sh->xfer_size[sh->nxfer];
				sh->xfer_salt[k] = sh->xfer_salt[sh->nxfer];
			}
			pthread_mutex_unlock(&sh->lock);
			if (p != NULL) {
				if (kt_verify(p, s, their) != KT_OK)
					w->corrupt++;
				if (kp_free(pool, p) != 0)
					w->bad_frees++;
			}
		} else if (kind == 8 && (r & 0xff) == 0) {
			kp_thread_flush(pool);
		} else {
			if (kt_verify(slot[i], size[i], salt) != KT_OK)
				w->corrupt++;
			if (kp_free(pool, slot[i]) != 0)
				w->bad_frees++;
			slot[i] = NULL;
		}
	}
	for (size_t i = 0; i < sh->slots; i++) {
		if (slot[i] == NULL)
			continue;
		if (kt_verify(slot[i], size[i], salt) != KT_OK)
			w->corrupt++;
		if (kp_free(pool, slot[i]) != 0)
			w->bad_frees++;
	}
	if (critical)
		kp_critical_exit(pool);
	free(slot);
	free(size);
	return NULL;
}

static long env_long(const char *name, long deflt, long lo, long hi)
{
	const char *v = getenv(name);
	if (v == NULL || *v == 0)
		return deflt;
	char *end;
	long x = strtol(v, &end, 0);
	if (*end != 0 || x < lo || x > hi) {
		fprintf(stderr, "%s=%s: want an integer in [%ld, %ld]; using %ld\n", name, v, lo, hi, deflt);
		return deflt;
	}
	return x;
}

static void test_stress(void)
{
	int nthreads = (int)env_long("KP_STRESS_THREADS", 4, 1, MAX_THREADS);
	long ops = env_long("KP_STRESS_OPS", 300000, 1, 1L << 40);
	size_t max_size = (size_t)env_long("KP_STRESS_MAX_SIZE", 262144, 1, 1L << 32);
	size_t slots = (size_t)env_long("KP_STRESS_SLOTS", 256, 1, 1 << 20);
	uint64_t seed = (uint64_t)env_long("KP_STRESS_SEED", 0, 0, 0x7fffffffffffffffL);
	int aligned = (int)env_long("KP_STRESS_ALIGNED", 1, 0, 1);
	const char *conf = getenv("KP_STRESS_CONF");
	int default_conf = conf == NULL;
	if (seed == 0)
		seed = kt_now_ns() % 1000000007u + 1;
	if (conf == NULL)
		conf = "primary_initial:2m,low_wm:4m,high_wm:16m,decay_ms:50,daemon_interval_ms:5";
	printf("   threads=%d ops=%ld max_size=%zu slots=%zu aligned=%d seed=%llu conf=\"%s\"\n", nthreads, ops,
	       max_size, slots, aligned, (unsigned long long)seed, conf);
	fflush(stdout);

	KT_POOL(pool, conf);
	static struct shared sh;
	memset(&sh, 0, sizeof sh);
	sh.pool = pool;
	sh.token = kp_critical_token(pool);
	sh.max_size = max_size;
	sh.slots = slots;
	sh.ops = ops;
	sh.aligned = aligned;
	pthread_mutex_init(&sh.lock, NULL);
	static struct worker w[MAX_THREADS];
	pthread_t th[MAX_THREADS];
	uint64_t t0 = kt_now_ns();
	for (int i = 0; i < nthreads; i++) {
		w[i] = (struct worker){.sh = &sh, .id = i, .seed = seed * 1000003u + (uint64_t)i};
		REQUIRE(pthread_create(&th[i], NULL, worker_main, &w[i]) == 0, "pthread_create");
	}
	for (int i = 0; i < nthreads; i++)
		pthread_join(th[i], NULL);
	double secs = (double)(kt_now_ns() - t0) / 1e9;
	for (int k = 0; k < sh.nxfer; k++) {
		CHECK(kt_verify(sh.xfer[k], sh.xfer_size[k], sh.xfer_salt[k]) == KT_OK, "transferred block corrupt");
		CHECK(kp_free(pool, sh.xfer[k]) == 0, "free of a transferred block");
	}
	long nulls = 0;
	for (int i = 0; i < nthreads; i++) {
		CHECK(w[i].corrupt == 0, "seed %llu thread %d: %ld blocks failed their pattern",
		      (unsigned long long)seed, i, w[i].corrupt);
		CHECK(w[i].bad_frees == 0, "seed %llu thread %d: %ld frees failed", (unsigned long long)seed, i,
		      w[i].bad_frees);
		CHECK(w[i].bad_usable == 0, "seed %llu thread %d: %ld usable sizes too small", (unsigned long long)seed,
		      i, w[i].bad_usable);
		CHECK(w[i].bad_align == 0, "seed %llu thread %d: %ld misaligned blocks", (unsigned long long)seed, i,
		      w[i].bad_align);
		CHECK(w[i].bad_zero == 0, "seed %llu thread %d: %ld KP_ZERO blocks not zero", (unsigned long long)seed,
		      i, w[i].bad_zero);
		nulls += w[i].nulls;
	}
	kp_thread_flush(pool);
	char *js = kt_stats(pool);
	REQUIRE(js != NULL, "kp_stats_json");
	printf("   %.2f s, %.0f ops/s, %ld NULLs; stats: %s\n", secs, (double)ops * nthreads / secs, nulls, js);
	int64_t pa = kt_json_int(js, "primary.allocs", -1), pf = kt_json_int(js, "primary.frees", -2);
	int64_t ba = kt_json_int(js, "backup.allocs", -1), bf = kt_json_int(js, "backup.frees", -2);
	CHECK(pa == pf, "seed %llu: primary.allocs %lld != frees %lld", (unsigned long long)seed, (long long)pa,
	      (long long)pf);
	CHECK(ba == bf, "seed %llu: backup.allocs %lld != frees %lld", (unsigned long long)seed, (long long)ba,
	      (long long)bf);
	CHECK(kt_json_int(js, "primary.in_use_bytes", -1) == 0, "seed %llu: primary.in_use_bytes not 0",
	      (unsigned long long)seed);
	CHECK(kt_json_int(js, "backup.in_use_bytes", -1) == 0, "seed %llu: backup.in_use_bytes not 0",
	      (unsigned long long)seed);
	static const char *const integrity[] = {"integrity.double_frees", "integrity.invalid_frees",
						"integrity.corruptions", "integrity.bad_sizes"};
	for (size_t k = 0; k < 4; k++)
		CHECK(kt_json_int(js, integrity[k], -1) == 0, "seed %llu: %s = %lld", (unsigned long long)seed,
		      integrity[k], (long long)kt_json_int(js, integrity[k], -1));
	/* NULLs only where the pool ran out for real, and then counted; the
	 * default pool (1 GiB max) never runs out */
	if (default_conf)
		CHECK(nulls == 0, "seed %llu: %ld allocations returned NULL", (unsigned long long)seed, nulls);
	if (nulls > 0)
		CHECK(kt_json_int(js, "primary.failures", 0) > 0, "seed %llu: %ld NULLs but primary.failures is 0",
		      (unsigned long long)seed, nulls);
	free(js);
	pthread_mutex_destroy(&sh.lock);
	kp_destroy(pool);
}

int main(void)
{
	RUN(test_stress);
	return ktest_summary();
}
