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
 *     taken (its resident pages would sit inside the new block unused).
 */
#define _GNU_SOURCE
#include "ktest.h"

#include <sys/mman.h>

#define KEEP 200001 /* kept, five of them */
#define PASS 332744 /* written whole and freed at once */
#define ROUNDS 5

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

int main(void)
{
	RUN(test_same_length_reuses_run);
	RUN(test_other_length_not_reused);
	return ktest_summary();
}
