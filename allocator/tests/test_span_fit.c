/*
 * test_span_fit.c - a class used in bulk carves spans that leave little of
 * their run past their last block.
 *
 * A span's tail (its run's bytes past its last block) holds no block, yet
 * is resident whenever the daemon pre-faulted the units the span took: the
 * 9-64 KiB classes left up to a tenth of their run there (the 36 KiB class:
 * 8 blocks in 5 units, 32 KiB of tail), 4.3% of kpbench d's 1 GiB. A class
 * that holds 4 spans (one used in bulk) carves its next ones to fit. For
 * the first and the fifth span of every class this checks: at least 8
 * blocks, at most 16 units, at most 2048 blocks (kp__span's nfree), for
 * blocks of 16 KiB and more at most 17 (the bound of the daemon's purge
 * walk, primary.c KP_BPURGE_SPAN); and for the fifth a tail of at most 3.6%
 * of its run (36/1000), one-unit spans too (3-8 KiB blocks left up to 8.6%
 * there, 6656: 9 blocks in 64 KiB).
 */
#define _GNU_SOURCE
/* Tests the inline primary's segments, spans and units (primary.c): every pool layout:inline (ktest.h, KT_LAYOUT_INLINE). */
#define KT_LAYOUT_INLINE 1
#include "ktest.h"

#include "internal.h"

#define NSPAN 5
#define MAXB (NSPAN * 2048)

static kp__span *span_of_block(const char *p)
{
	kp__seg *s = (kp__seg *)((uintptr_t)p & ~(uintptr_t)(KP_SEG_SIZE - 1));
	unsigned u = (unsigned)(((uintptr_t)p - (uintptr_t)s) >> KP_UNIT_SHIFT);
	return &s->span[s->span[u].head];
}

static void check_span(const kp__span *sp, unsigned cls, bool bulk, double *worst, unsigned *worst_cls)
{
	size_t block = kp__class_size[cls];
	size_t run = (size_t)sp->units << KP_UNIT_SHIFT, fill = (size_t)sp->nblocks * block;
	CHECK(sp->kind == KP_SPAN_SMALL && sp->cls == cls && sp->block == block, "class %u: span of class %u, block %u",
	      cls, sp->cls, sp->block);
	CHECK(sp->units >= 1 && sp->units <= 16, "class %u (%zu B): %u units", cls, block, sp->units);
	CHECK(sp->nblocks >= 8, "class %u (%zu B): %u blocks", cls, block, sp->nblocks);
	CHECK(fill <= run && run - fill < block, "class %u: %u blocks of %zu B in %zu B", cls, sp->nblocks, block, run);
	CHECK(sp->nblocks <= 2048, "class %u (%zu B): %u blocks", cls, block, sp->nblocks);
	if (block >= 16384)
		CHECK(sp->nblocks <= 17, "class %u (%zu B): %u blocks", cls, block, sp->nblocks);
	if (!bulk)
		return;
	double tail = (double)(run - fill) / (double)run;
	CHECK((run - fill) * 1000 <= run * 36, "class %u (%zu B) in bulk: %u blocks in %u units leave %zu B (%.1f%%)",
	      cls, block, sp->nblocks, sp->units, run - fill, 100.0 * tail);
	if (tail > *worst)
		*worst = tail, *worst_cls = cls;
}

static void test_every_class_fits_its_run(void)
{
	KT_POOL(pool, "daemon:off,prefault:off,tcache_bytes:0,seed:5");
	static char *blk[MAXB];
	unsigned worst_cls = 0;
	double worst = 0;
	for (unsigned cls = 0; cls < KP_NCLASS; cls++) {
		size_t req = kp__class_size[cls] - KP_HDR - KP_CANARY;
		/* the distinct spans its blocks came from, in the order first seen
		 * (a thread's bin hands a batch out in reverse) */
		kp__span *seen[NSPAN];
		unsigned nspan = 0, nb = 0;
		while (nspan < NSPAN && nb < MAXB) {
			char *p = kp_alloc(pool, req, 0);
			REQUIRE(p != NULL, "kp_alloc(%zu): %s", req, kp_last_error());
			blk[nb++] = p;
			kp__span *sp = span_of_block(p - KP_HDR);
			unsigned k = 0;
			while (k < nspan && seen[k] != sp)
				k++;
			if (k == nspan)
				seen[nspan++] = sp;
		}
		REQUIRE(nspan == NSPAN, "class %u: %u spans for %u blocks", cls, nspan, nb);
		check_span(seen[0], cls, false, &worst, &worst_cls);
		check_span(seen[NSPAN - 1], cls, true, &worst, &worst_cls);
		for (unsigned i = 0; i < nb; i++)
			CHECK(kp_free(pool, blk[i]) == KP_OK, "kp_free");
		kp_thread_flush(pool);
	}
	printf("    worst tail of a bulk class's span of 2 units or more: class %u (%u B), %.2f%% of its run\n",
	       worst_cls, kp__class_size[worst_cls], 100.0 * worst);
	kp_destroy(pool);
}

int main(void)
{
	RUN(test_every_class_fits_its_run);
	return ktest_summary();
}
