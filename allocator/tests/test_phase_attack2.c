/*
 * test_phase_attack2.c - pathological producer/consumer phases over every
 * small class (tcache.c, kp__bin_miss's phase growth; KP_XFER_KEYS 256:
 * full bins parked whole and taken whole).
 *
 * Three threads in a ring. In each round every thread allocates a burst
 * of each small class (its size from a schedule that sits on the bins'
 * edges: 1, 15, 16, 17, 31, 255, 256, 257, 511, 513 blocks, at most 512
 * KiB a class), fills each block with a pattern of its address, frees a
 * share of its own burst itself (0, 1/2 or all: the class used both ways,
 * one way, or as a phase), and hands the rest to the next thread, which
 * verifies each block's pattern and frees it. Checks on and off. After
 * the rounds: no block's bytes were overwritten (a block handed out twice,
 * or a batch given to two bins), no integrity event, the bytes in use back
 * where they were, and once every thread flushed its cache and the parked
 * batches (kp_thread_flush) the committed units back under 8 MiB. With
 * the 7 classes of 128 B or less, 14 of the 21 bins grow to 256 (the
 * phases reach whole parked bins: asserted); with all 76 small classes
 * none grows past its start (each class is idle through more than
 * KP_SWEEP_MISSES misses of the others in a round: swept).
 */
#define _GNU_SOURCE 1
/* Tests the thread caches' bins (tcache.c): every pool layout:inline (ktest.h, KT_LAYOUT_INLINE). */
#define KT_LAYOUT_INLINE 1
#include "ktest.h"

#include "internal.h"

#include <pthread.h>

#define NT 3
#define ROUNDS 24
#define MAXN 513
#define CLASS_BYTES ((size_t)512 << 10)

static const unsigned sched[] = {1, 15, 16, 17, 31, 255, 256, 257, 511, 513, 256, 256, 17, 1, 256};
#define NSCHED (sizeof sched / sizeof *sched)

typedef struct hand {
	char **v;
	size_t *size;
	unsigned n;
} hand;

static kp_pool *pool;
static unsigned first_cls, ncls;
static hand box[NT]; /* box[i]: what thread i hands to thread i + 1 */
static pthread_barrier_t bar;
static atomic_long bad_bytes, failed, bins_at_max, hist[5]; /* hist: the bins' max at the end */

static size_t req_of(unsigned c)
{
	return kp__class_size[c] - KP_HDR - pool->canary;
}

static void *ring(void *arg)
{
	unsigned me = (unsigned)(uintptr_t)arg;
	size_t cap = (size_t)ncls * MAXN;
	char **mine = malloc(cap * sizeof *mine);
	box[me].v = malloc(cap * sizeof(char *));
	box[me].size = malloc(cap * sizeof(size_t));
	if (!mine || !box[me].v || !box[me].size)
		abort();
	pthread_barrier_wait(&bar);
	for (unsigned r = 0; r < ROUNDS; r++) {
		hand *out = &box[me];
		out->n = 0;
		for (unsigned k = 0; k < ncls; k++) {
			unsigned c =
				first_cls + (k * 7 + r * 3 + me) % ncls; /* classes in a different order each round */
			size_t req = req_of(c);
			unsigned n = sched[(r + me + c) % NSCHED];
			if ((size_t)n * kp__class_size[c] > CLASS_BYTES)
				n = (unsigned)(CLASS_BYTES / kp__class_size[c]) + 1;
			unsigned keep = (r + c + me) % 3 == 0 ? n : (r + c) % 3 == 1 ? n / 2 : 0; /* freed here */
			for (unsigned i = 0; i < n; i++) {
				char *p = kp_alloc(pool, req, 0);
				if (!p) {
					atomic_fetch_add(&failed, 1);
					continue;
				}
				kt_fill(p, req < 64 ? req : 64, (uint64_t)c);
				mine[i] = p;
			}
			for (unsigned i = 0; i < n; i++) {
				if (!mine[i])
					continue;
				if (i < keep) {
					if (kt_verify(mine[i], req < 64 ? req : 64, (uint64_t)c) != KT_OK)
						atomic_fetch_add(&bad_bytes, 1);
					if (kp_free(pool, mine[i]) != 0)
						atomic_fetch_add(&failed, 1);
				} else {
					out->v[out->n] = mine[i];
					out->size[out->n++] = (size_t)c;
				}
				mine[i] = NULL;
			}
		}
		pthread_barrier_wait(&bar);
		hand *in = &box[(me + NT - 1) % NT];
		for (unsigned i = 0; i < in->n; i++) {
			unsigned c = (unsigned)in->size[i];
			size_t req = req_of(c);
			if (kt_verify(in->v[i], req < 64 ? req : 64, (uint64_t)c) != KT_OK)
				atomic_fetch_add(&bad_bytes, 1);
			if (kp_free(pool, in->v[i]) != 0)
				atomic_fetch_add(&failed, 1);
		}
		pthread_barrier_wait(&bar);
	}
	kp__tcache *tc = kp__tcache_get(pool, pool->id);
	unsigned grown = 0;
	for (unsigned c = 0; tc && c < KP_NCLASS; c++) {
		unsigned m = tc->bin[c].max;
		grown += m > 32;
		atomic_fetch_add(&hist[m >= 256 ? 4 : m >= 128 ? 3 : m >= 64 ? 2 : m > 16 ? 1 : 0], 1);
	}
	atomic_fetch_add(&bins_at_max, grown);
	kp_thread_flush(pool);
	pthread_barrier_wait(&bar);
	free(mine);
	return NULL;
}

static void phases(const char *conf, size_t top, long want_grown)
{
	pool = kp_create(conf);
	REQUIRE(pool, "kp_create(%s): %s", conf, kp_last_error());
	first_cls = kp__class_of(1 + KP_HDR + pool->canary);
	unsigned last = kp__class_of(top);
	ncls = last - first_cls + 1;
	int64_t u0 = kt_stat(pool, "primary.in_use_bytes");
	atomic_store(&bad_bytes, 0);
	atomic_store(&failed, 0);
	atomic_store(&bins_at_max, 0);
	pthread_barrier_init(&bar, NULL, NT);
	pthread_t t[NT];
	for (unsigned i = 0; i < NT; i++)
		REQUIRE(pthread_create(&t[i], NULL, ring, (void *)(uintptr_t)i) == 0, "pthread_create");
	for (unsigned i = 0; i < NT; i++)
		pthread_join(t[i], NULL);
	pthread_barrier_destroy(&bar);
	for (unsigned i = 0; i < NT; i++)
		free(box[i].v), free(box[i].size);
	kp_thread_flush(pool);
	int64_t u = kt_stat(pool, "primary.in_use_bytes"), committed = kt_stat(pool, "primary.committed_bytes");
	printf("   %s: %u classes, %ld overwritten, %ld failed; in use %lld (was %lld), committed %lld KiB\n", conf,
	       ncls, atomic_load(&bad_bytes), atomic_load(&failed), (long long)u, (long long)u0,
	       (long long)(committed >> 10));
	printf("   bins' max: <= 16 %ld, 17-63 %ld, 64-127 %ld, 128-255 %ld, 256 %ld\n", atomic_load(&hist[0]),
	       atomic_load(&hist[1]), atomic_load(&hist[2]), atomic_load(&hist[3]), atomic_load(&hist[4]));
	for (int i = 0; i < 5; i++)
		atomic_store(&hist[i], 0);
	CHECK(atomic_load(&bins_at_max) >= want_grown, "%s: %ld bins grew past 32 (want %ld: the phases grew none)",
	      conf, atomic_load(&bins_at_max), want_grown);
	CHECK(atomic_load(&bad_bytes) == 0, "%s: %ld blocks overwritten while live", conf, atomic_load(&bad_bytes));
	CHECK(atomic_load(&failed) == 0, "%s: %ld allocations or frees failed", conf, atomic_load(&failed));
	CHECK(kt_stat(pool, "integrity.freelist_errors") == 0 && kt_stat(pool, "integrity.double_frees") == 0 &&
		      kt_stat(pool, "integrity.corruptions") == 0,
	      "%s: integrity events", conf);
	CHECK(u == u0, "%s: in use %lld after all freed (was %lld)", conf, (long long)u, (long long)u0);
	CHECK(committed <= (int64_t)8 << 20, "%s: %lld KiB committed after all freed and flushed", conf,
	      (long long)(committed >> 10));
	kp_destroy(pool);
}

static void test_ring_phases_every_class(void)
{
	/* the classes that park a whole bin of 256 (<= 128 B): their bins grow */
	phases("primary_initial:32m,daemon:off,backup:0,seed:61", 128, NT * 4);
	phases("primary_initial:32m,daemon:off,backup:0,seed:62,checks:off", 128, NT * 4);
	/* every small class (the caches' budget grows few of them) */
	phases("primary_initial:32m,daemon:off,backup:0,seed:61", KP_SMALL_MAX, 0);
	phases("primary_initial:32m,daemon:off,backup:0,seed:62,checks:off", KP_SMALL_MAX, 0);
	phases("primary_initial:8m,backup:0,seed:63,daemon_interval_ms:2", KP_SMALL_MAX, 0);
}

int main(void)
{
	RUN(test_ring_phases_every_class);
	return ktest_summary();
}
