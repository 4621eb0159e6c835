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

#define LEAF_BITS KP_LEAF_BITS
#define ROOT_BITS KP_ROOT_BITS
typedef kp__leaf leaf;

_Atomic(kp__leaf *) kp__pagemap_root[1u << KP_ROOT_BITS];
#define root kp__pagemap_root
static pthread_mutex_t grow_lock = PTHREAD_MUTEX_INITIALIZER;

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
