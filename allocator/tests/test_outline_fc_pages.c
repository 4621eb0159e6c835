/*
 * test_outline_fc_pages.c - what a thread's foreign cache costs in
 * resident memory (issue 14: bench-prodcons' peak RSS 1.18x glibc's, s35).
 * A consumer thread that frees another thread's blocks of many classes
 * caches a few of each (outline.h, OL_FC_LONE_BYTES), and its heap's
 * entries of a class are a row of its cache: s34 gave every class a row of
 * OL_FC_MAX entries (512 bytes), so a consumer of 16 B-2 KiB messages
 * (32 classes) touched 4 pages of rows for at most 4 blocks of each class
 * over 256 B. Rows sized by the most a class caches (OL_FC_BYTES' worth,
 * OL_FC_MAX at most) take 8.3 KiB for all 73 classes.
 *
 * Checked: the main thread allocates two blocks of every class from 64 B to
 * 2 KiB (the classes under a line cache none: FC_LINE_CLASSES), a second
 * thread frees them all; its heap's resident pages (its structure's and
 * its rows', mincore) at most 3 (s34: 5); then every block allocated
 * again and freed by its owner (the cache went back at the thread's end).
 */
#define _GNU_SOURCE 1
#include "ktest.h"
#include "outline.h"

#include <pthread.h>

/* the classes from 64 B to 2 KiB (outline.c's class_size, 4-31) */
static const unsigned sizes[] = {64,  80,  96,	112, 128, 144,	160,  176,  192,  208,	224,  240,  256,  320, 384,
				 448, 512, 640, 768, 896, 1024, 1152, 1280, 1408, 1536, 1664, 1792, 1920, 2048};
#define NS (sizeof sizes / sizeof sizes[0])
#define PER 2 /* blocks of each class: under every class's lone cap (OL_FC_LONE_MIN at least) */

static kp_pool *pool;
static void *blk[NS * PER];
static struct ol_heap *consumer;

static void *consume(void *arg)
{
	(void)arg;
	for (size_t i = 0; i < NS * PER; i++)
		kp_free(pool, blk[i]);
	consumer = kp__ol_slot.heap;
	return NULL;
}

static void test_a_consumer_s_rows(void)
{
	KT_POOL(pl, "layout:outline,daemon:off,prefault:off");
	pool = pl;
	for (size_t i = 0; i < NS * PER; i++) {
		/* the class's size less the canary: the class itself */
		blk[i] = kp_alloc(pool, sizes[i / PER] - OL_CANARY, 0);
		REQUIRE(blk[i] != NULL, "kp_alloc");
		kt_fill(blk[i], sizes[i / PER] - OL_CANARY, 3);
	}
	pthread_t t;
	REQUIRE(pthread_create(&t, NULL, consume, NULL) == 0, "pthread_create");
	pthread_join(t, NULL);
	REQUIRE(consumer != NULL && consumer != &kp__ol_empty_heap, "the consumer's heap");
	/* its structure's page and s34's extent of its rows (73 of 512 bytes):
	 * no heap follows it in the arena, so pages past its own are untouched */
	size_t span = ((uintptr_t)consumer & (KP_PAGE - 1)) + KP_PAGE - ((uintptr_t)consumer & (KP_PAGE - 1)) +
		      (size_t)OL_NCLASS * OL_FC_MAX * sizeof(uint64_t);
	uint8_t *lo = (uint8_t *)((uintptr_t)consumer & ~(uintptr_t)(KP_PAGE - 1));
	span = (span + KP_PAGE - 1) & ~(size_t)(KP_PAGE - 1);
	size_t pages = span / KP_PAGE, resident = pages - kt_not_resident(lo, span);
	printf("   a consumer of %zu classes: %zu of %zu pages of its heap resident\n", NS, resident, pages);
	CHECK(resident <= 3, "%zu pages of the consumer's heap resident (its structure's and 2 of rows)", resident);
	/* its rows: each as long as the class's cap at least, OL_FC_SLOTS in
	 * all (the last class, 64 KiB, caches one) */
	unsigned short_rows = 0;
	for (unsigned c = 0; c + 1 < OL_NCLASS; c++)
		short_rows += consumer->fc_off[c + 1] - consumer->fc_off[c] < consumer->fc_cap[c];
	CHECK(short_rows == 0, "%u rows shorter than their class's cap", short_rows);
	CHECK(consumer->fc_off[OL_NCLASS - 1] + 1u == OL_FC_SLOTS, "rows end at %u, OL_FC_SLOTS %u",
	      consumer->fc_off[OL_NCLASS - 1] + 1u, OL_FC_SLOTS);
	/* its cache went back at its end: every block allocated again, freed */
	for (size_t i = 0; i < NS * PER; i++) {
		blk[i] = kp_alloc(pool, sizes[i / PER] - OL_CANARY, 0);
		REQUIRE(blk[i] != NULL, "kp_alloc");
	}
	for (size_t i = 0; i < NS * PER; i++)
		kp_free(pool, blk[i]);
	kp_destroy(pool);
}

int main(void)
{
	RUN(test_a_consumer_s_rows);
	return ktest_summary();
}
