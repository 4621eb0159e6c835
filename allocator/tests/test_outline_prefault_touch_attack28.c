/*
 * test_outline_prefault_touch_attack28.c - s28-att2: the daemon's
 * pre-fault of the outline layout's segments where the kernel has no
 * MADV_POPULATE_WRITE (before Linux 5.14: EINVAL), modelled here by a
 * seccomp filter that makes madvise(MADV_POPULATE_WRITE) say EINVAL.
 *
 * Failed before touch_pages's atomic add (test_prefault_fallback_keeps_writes, on 1eaf4d9:
 * release 5 of 5 runs, 52-150 blocks of 400,000 lost their first bytes;
 * ASan 3 of 3, 1,603-2,670 of 160,000; TSan 2 of 3, 2-5, and in 3 of 3
 * TSan reports a data race: touch_pages (os.c:206, from spare_fault's
 * populate of the metadata) against span_new's span record (outline.c:1411);
 * the control without the filter: 0 in every run). os.c's kp__os_populate
 * falls back to touch_pages, v[off] = v[off] on the first byte of every
 * page: a read, then a store of what it read. The daemon's pass calls it
 * on segments heaps are carving (outline.c, kp__ol_daemon_pass 2.: the
 * cold segments finished with kp__os_populate_missing, whose mincore
 * found the pages not resident a moment before; 1.: spare_fault on a
 * spare a heap took within a 1 MiB step). On a page not resident the read
 * maps the zero page and the store faults again (microseconds between
 * them): a heap's thread that writes the page meanwhile (its new block's
 * first bytes) has its write undone, the block's first byte zero again. A
 * live block's contents lost, no event; the same store lands on
 * metadata pages (records, stack entries) the owner is writing.
 *
 * Each round: a pool with the daemon on (1 ms passes, prefault_touch:0:
 * pre-faulting whatever the program writes), one thread takes 40,000
 * blocks of 4088 bytes (page-aligned, a page each) and writes each one's
 * first 8 bytes at once; then each is read back. Asserted: every block's
 * bytes as written, no block handed out twice, each block's usable size
 * not 0 (its record live). Run in a fork child (the filter cannot be
 * taken off); test_prefault_control runs the same without it.
 */
#define _GNU_SOURCE 1
#include "ktest.h"
#include "no_populate.h"
#include "outline.h"

#include <errno.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>

#define NBLK 40000
#define BLK 4088 /* the 4096-byte class with its canary: a page each, page-aligned */
#define ROUNDS (KT_SANITIZED ? 4 : 10)
#define CONF "layout:outline,daemon:on,daemon_interval_ms:1,prefault_touch:0,decay_ms:50,seed:9"

static uint64_t *blk[NBLK];

static int by_ptr(const void *a, const void *b)
{
	uintptr_t x = (uintptr_t) * (uint64_t *const *)a, y = (uintptr_t) * (uint64_t *const *)b;
	return x < y ? -1 : x > y;
}

/* The rounds: blocks whose first bytes were lost, handed out twice and
 * with no live record, packed as lost | twice << 20 | dead << 40; -1 where
 * the filter or a pool could not be made. */
static long rounds(void *filter)
{
	if (filter && no_populate_write() != 0)
		return -1;
	uint64_t lost = 0, twice = 0, dead = 0;
	for (int r = 0; r < ROUNDS; r++) {
		kp_pool *pool = kp_create(CONF);
		if (!pool)
			return -1;
		for (int i = 0; i < NBLK; i++) {
			blk[i] = kp_alloc(pool, BLK, 0);
			if (blk[i])
				blk[i][0] = 0x1122334455667788ull ^ (uint64_t)i;
		}
		unsigned l = 0;
		for (int i = 0; i < NBLK; i++) {
			l += blk[i] && blk[i][0] != (0x1122334455667788ull ^ (uint64_t)i);
			dead += blk[i] && kp_usable_size(pool, blk[i]) == 0;
		}
		printf("   round %d: %u of %d blocks lost their first bytes\n", r, l, NBLK);
		lost += l;
		qsort(blk, NBLK, sizeof blk[0], by_ptr);
		for (int i = 1; i < NBLK; i++)
			twice += blk[i] && blk[i] == blk[i - 1];
		kp_destroy(pool);
	}
	fflush(stdout);
	return (long)(lost | twice << 20 | dead << 40);
}

static void report(long v)
{
	REQUIRE(v >= 0, "the child failed (%ld): seccomp or kp_create refused", v);
	unsigned long lost = (unsigned long)v & 0xfffff, twice = (unsigned long)v >> 20 & 0xfffff,
		      dead = (unsigned long)v >> 40;
	printf("   %lu blocks lost their first bytes, %lu handed out twice, %lu with no live record\n", lost, twice,
	       dead);
	CHECK(lost == 0, "%lu live blocks' first bytes undone (no event)", lost);
	CHECK(twice == 0, "%lu blocks handed out twice", twice);
	CHECK(dead == 0, "%lu live blocks whose record reads free", dead);
}

/* Failed on 1eaf4d9, passes with the atomic touch (above) */
static void test_prefault_fallback_keeps_writes(void)
{
	fflush(stdout);
	report(kt_in_child(rounds, (void *)1));
}

/* held: MADV_POPULATE_WRITE as the kernel has it */
static void test_prefault_control(void)
{
	fflush(stdout);
	report(kt_in_child(rounds, NULL));
}

int main(void)
{
	RUN(test_prefault_control);
	RUN(test_prefault_fallback_keeps_writes);
	return ktest_summary();
}
