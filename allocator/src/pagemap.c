/*
 * pagemap.c - address -> segment, for every pool in the process.
 *
 * Two levels over the 47-bit user address space in 4 MiB chunks: 2^25
 * chunks, a static root of 2^12 leaf pointers and leaves of 2^13 entries
 * (64 KiB each) mapped on first use. A lookup is two dependent loads and
 * never faults, whatever the pointer: that is what lets kp_free reject a
 * pointer the pool never gave out before it reads a single byte near it.
 * Leaves are never unmapped: a stale reader always finds valid memory.
 */
#include "internal.h"

#define VA_BITS 47
#define LEAF_BITS 13
#define ROOT_BITS (VA_BITS - KP_SEG_SHIFT - LEAF_BITS)

typedef struct leaf {
	_Atomic(kp__seg *) e[1u << LEAF_BITS];
} leaf;

static _Atomic(leaf *) root[1u << ROOT_BITS];
static pthread_mutex_t grow_lock = PTHREAD_MUTEX_INITIALIZER;

kp__seg *kp__pagemap_get(const void *p)
{
	uintptr_t chunk = (uintptr_t)p >> KP_SEG_SHIFT;
	if (KP_UNLIKELY(chunk >> (ROOT_BITS + LEAF_BITS)))
		return NULL;
	leaf *l = atomic_load_explicit(&root[chunk >> LEAF_BITS], memory_order_acquire);
	if (KP_UNLIKELY(!l))
		return NULL;
	return atomic_load_explicit(&l->e[chunk & ((1u << LEAF_BITS) - 1)], memory_order_acquire);
}

int kp__pagemap_set(kp__oscount *c, void *base, size_t size, kp__seg *s)
{
	uintptr_t first = (uintptr_t)base >> KP_SEG_SHIFT;
	uintptr_t last = ((uintptr_t)base + size - 1) >> KP_SEG_SHIFT;
	if (last >> (ROOT_BITS + LEAF_BITS))
		return -1;
	for (uintptr_t ch = first; ch <= last; ch++) {
		leaf *l = atomic_load_explicit(&root[ch >> LEAF_BITS], memory_order_acquire);
		if (!l) {
			pthread_mutex_lock(&grow_lock);
			l = atomic_load_explicit(&root[ch >> LEAF_BITS], memory_order_acquire);
			if (!l) {
				l = kp__os_map(c, sizeof(leaf), KP_PAGE, false);
				if (l)
					atomic_store_explicit(&root[ch >> LEAF_BITS], l, memory_order_release);
			}
			pthread_mutex_unlock(&grow_lock);
			if (!l)
				return -1;
		}
		atomic_store_explicit(&l->e[ch & ((1u << LEAF_BITS) - 1)], s, memory_order_release);
	}
	return 0;
}

void kp__pagemap_fork(int phase)
{
	if (phase == 0)
		pthread_mutex_lock(&grow_lock);
	else if (phase == 1)
		pthread_mutex_unlock(&grow_lock);
	else
		pthread_mutex_init(&grow_lock, NULL);
}
