/*
 * ol_resident.h - how much of a layout:outline pool's segments is resident
 * (mincore), for the tests that bound what the grow daemon pre-faults
 * and the other tests that count resident pages (test_outline_grow*.c,
 * test_prefault_demand.c, test_outline_meta.c, test_outline_rec.c,
 * test_outline_zero.c, test_outline_cold_finish_attack28.c). Include after
 * ktest.h and outline.h.
 */
#ifndef KP_TEST_OL_RESIDENT_H
#define KP_TEST_OL_RESIDENT_H

#include <sys/mman.h>

/* bytes of [p, p + n) resident */
static inline size_t resident(const void *p, size_t n)
{
	uintptr_t a = (uintptr_t)p & ~(uintptr_t)4095, e = ((uintptr_t)p + n + 4095) & ~(uintptr_t)4095;
	unsigned char v[1024];
	size_t r = 0;
	for (; a < e; a += sizeof v * 4096) {
		size_t len = e - a < sizeof v * 4096 ? e - a : sizeof v * 4096;
		if (mincore((void *)a, len, v) != 0)
			return 0;
		for (size_t i = 0; i < (len + 4095) / 4096; i++)
			r += (v[i] & 1) * 4096;
	}
	return r;
}

/* the pool's segments resident, heaps' and spares' (metadata and data) */
static inline size_t pool_resident(kp_pool *p)
{
	kp__ol *ol = p->ol;
	size_t r = 0;
	pthread_mutex_lock(&ol->lock);
	for (struct ol_seg *s = ol->segs; s; s = s->next)
		r += resident(s, OL_META) + resident(s->base, OL_SEG_SIZE);
	for (struct ol_seg *s = ol->spare; s; s = s->next)
		r += resident(s, OL_META) + resident(s->base, OL_SEG_SIZE);
	pthread_mutex_unlock(&ol->lock);
	return r;
}

#endif
