/*
 * ol_lend.h - the calling thread's layout:outline heap made past LEND's
 * young start (outline.c, LEND: a young heap's classes up to 1 KiB pop a
 * coarser class's span until they find it dry), for the tests whose
 * checks are of one class's own spans, room or cache under the default
 * configuration: rather than lend:off, each class up to 1 KiB is
 * allocated until it has left its lender (ol_heap's lender[] 0), as a heap
 * that used the class much has; the blocks are then freed. Include after
 * ktest.h and outline.h.
 */
#ifndef KP_TEST_OL_LEND_H
#define KP_TEST_OL_LEND_H

#include <stdlib.h>

/* A class whose lender's page of blocks (span_extend makes a page's worth
 * at a time) is dry leaves it at its next refill: 4096 / 32 + 1 blocks at
 * the most, with room to spare. */
#define OL_LEND_MOST 1024

static void ol_lend_done(kp_pool *pool)
{
	void **held = calloc(OL_LEND_MOST, sizeof *held);
	REQUIRE(held, "calloc");
	for (unsigned q = 1; q <= 64; q++) { /* each class's requests up to 1 KiB: q, by (n + 8 + 15) >> 4 */
		uint32_t cls = kp__ol_class_tbl[q];
		size_t n = (size_t)q * 16 - OL_CANARY, k = 0;
		for (;;) {
			struct ol_heap *h = kp__ol_slot.heap;
			if (k && (h == &kp__ol_empty_heap || !h->lender[cls]))
				break;
			REQUIRE(k < OL_LEND_MOST, "class %u still lent after %zu blocks", cls, k);
			REQUIRE((held[k++] = kp_alloc(pool, n, 0)) != NULL, "kp_alloc(%zu)", n);
		}
		while (k)
			REQUIRE(kp_free(pool, held[--k]) == 0, "kp_free");
	}
	free(held);
}

#endif
