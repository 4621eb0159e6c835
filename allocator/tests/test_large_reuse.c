/*
 * test_large_reuse.c - a large block freed and asked for again at the same
 * length takes the run the freed one held (issue 14: git's peak RSS under the
 * preload).
 *
 * git pack-objects takes, per delta-search object, blocks of 200001 and
 * 232792 bytes it keeps and one of 332744 it writes whole and frees at once.
 * While the program does not write all it takes, units_take hands a large
 * block clean units first, so each 332744-byte block went to units no block
 * had used, and the ones freed before stayed resident beside it: 1.3-1.9 MiB
 * of the 5.5 MiB kpool's peak was over glibc's (glibc reuses the chunk).
 * A large block now gets the free run of the same length a large block last
 * held, as a span gets the run a span of its class last held:
 *
 *   - same length: the 332744-byte blocks all land where the first one was,
 *     and the pool's resident memory grows by the kept blocks only;
 *   - another length: a run a large block of another length left is not
 *     taken (its resident pages would sit inside the new block unused);
 *   - realloc: buffers grown by doubling (kpbench f) move when the units
 *     after them are taken; the run a moved block left is not one to reuse
 *     (a buffer put there finds its next units taken and moves too: f ran
 *     11.6% more instructions, most of them memcpy, before the mark was
 *     kept off such runs).
 */
#define _GNU_SOURCE
#include "ktest.h"

#include <sys/mman.h>

#define KEEP 200001 /* kept, five of them */
#define PASS 332744 /* written whole and freed at once */
#define ROUNDS 5
#define MOVED_MAX ((size_t)545 << 20) /* 525 MiB before the reuse, 569 with it on moved blocks' runs */

static void test_same_length_reuses_run(void)
{
	kp_pool *pool = kp_create("daemon:off,prefault:off,seed:31");
	REQUIRE(pool != NULL, "kp_create: %s", kp_last_error());
	char *keep[ROUNDS], *first = NULL;
	unsigned same = 0;
	for (unsigned r = 0; r < ROUNDS; r++) {
		keep[r] = kp_alloc(pool, KEEP, 0);
		REQUIRE(keep[r] != NULL, "kp_alloc: %s", kp_last_error());
		memset(keep[r], 0x5a, KEEP);
		char *p = kp_alloc(pool, PASS, 0);
		REQUIRE(p != NULL, "kp_alloc: %s", kp_last_error());
		memset(p, 0xa5, PASS);
		if (!first)
			first = p;
		same += p == first;
		CHECK(kp_free(pool, p) == 0, "kp_free: %s", kp_last_error());
	}
	printf("   %u of %u %d-byte blocks where the first one was\n", same, ROUNDS, PASS);
	CHECK(same == ROUNDS, "%u of %u freed-and-taken-again large blocks reused the freed run", same, ROUNDS);
	for (unsigned r = 0; r < ROUNDS; r++)
		CHECK(kp_free(pool, keep[r]) == 0, "kp_free: %s", kp_last_error());
	kp_destroy(pool);
}

static void test_other_length_not_reused(void)
{
	kp_pool *pool = kp_create("daemon:off,prefault:off,seed:32");
	REQUIRE(pool != NULL, "kp_create: %s", kp_last_error());
	char *p = kp_alloc(pool, PASS, 0); /* six units */
	REQUIRE(p != NULL, "kp_alloc: %s", kp_last_error());
	memset(p, 0xa5, PASS);
	CHECK(kp_free(pool, p) == 0, "kp_free: %s", kp_last_error());
	char *q = kp_alloc(pool, KEEP, 0); /* four units */
	REQUIRE(q != NULL, "kp_alloc: %s", kp_last_error());
	CHECK(q != p, "a 4-unit block took the run a 6-unit block left at %p", (void *)p);
	CHECK(kp_free(pool, q) == 0, "kp_free: %s", kp_last_error());
	kp_destroy(pool);
}

/* kpbench f's loop within the large sizes: eight buffers, one picked at
 * random grown to twice its size by realloc, from 4 KiB to 2 MiB, and freed
 * at the top. Returns the bytes realloc moved. */
#define NBUF 8
static size_t growth_moved(kp_pool *pool)
{
	char *buf[NBUF] = {0};
	size_t len[NBUF] = {0}, moved = 0;
	uint64_t x = 0x9e3779b97f4a7c15ull;
	for (unsigned step = 0; step < 4000; step++) {
		x ^= x << 13, x ^= x >> 7, x ^= x << 17;
		unsigned i = (unsigned)(x % NBUF);
		if (len[i] >= ((size_t)2 << 20)) {
			CHECK(kp_free(pool, buf[i]) == 0, "kp_free: %s", kp_last_error());
			buf[i] = NULL;
			len[i] = 0;
		}
		size_t n = len[i] ? 2 * len[i] : 4096;
		char *q = kp_realloc(pool, buf[i], n, 0);
		if (q == NULL) {
			CHECK(0, "kp_realloc: %s", kp_last_error());
			return SIZE_MAX;
		}
		memset(q + len[i], (int)i, n - len[i]);
		if (buf[i] && q != buf[i])
			moved += len[i];
		buf[i] = q;
		len[i] = n;
	}
	for (unsigned i = 0; i < NBUF; i++)
		kp_free(pool, buf[i]);
	return moved;
}

static void test_realloc_growth_not_boxed_in(void)
{
	kp_pool *pool = kp_create("daemon:off,prefault:off,seed:33");
	REQUIRE(pool != NULL, "kp_create: %s", kp_last_error());
	size_t moved = growth_moved(pool);
	printf("   %zu MiB moved by realloc over 4000 growths\n", moved >> 20);
	CHECK(moved <= MOVED_MAX, "%zu MiB moved: buffers put in runs moved blocks left could not grow in place",
	      moved >> 20);
	kp_destroy(pool);
}

int main(void)
{
	RUN(test_same_length_reuses_run);
	RUN(test_other_length_not_reused);
	RUN(test_realloc_growth_not_boxed_in);
	return ktest_summary();
}
