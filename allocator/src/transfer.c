/*
 * transfer.c - the transfer cache: whole batches of free blocks handed from
 * a thread cache that overflowed to the next one of the class that runs
 * empty, without going back to their spans (tcmalloc's transfer cache).
 *
 * Two threads that free each other's blocks (kpbench c, a server's
 * producer and consumer) fill one bin and empty another of the same class.
 * Through the spans, each block of such a batch cost about 210 instructions
 * (callgrind, kpbench c): its segment vetted and span found and its link
 * rewritten when given back (kp__central_give), its key computed again (one
 * AES) and its link vetted and rewritten when taken (kp__central_take), two
 * cache lines of span metadata written per block by both threads. Parked
 * here, a batch moves as it is: its list and its bin's key stack, one copy
 * of the keys under the class lock on each side.
 *
 * Nothing is verified less. The flushing bin vets every block of the batch
 * against its key before it parks it (tcache.c, kp__tcache_flush_bin), and
 * the bin that takes it vets each block again when it hands it out
 * (alloc.c, bin_head_ok), as it does every block of a bin: a free block
 * written while parked is caught there, as it would be in a thread's bin.
 * The keys stay out of line, in the pool's own mapping.
 *
 * A parked batch is memory its spans do not get back: the flush of a
 * thread that leaves, or of kp_thread_flush, goes to the spans (keep 0),
 * and the bytes parked per class are bounded (KP_XFER_BYTES, KP_XFER_SLOTS).
 */
#include "internal.h"

bool kp__xfer_put(kp_pool *pool, unsigned cls, void *list, const uint64_t *keys, unsigned n)
{
	if (!n || n > KP_XFER_KEYS || (size_t)n * kp__class_size[cls] > KP_XFER_BYTES)
		return false;
	kp__central *c = &pool->central[cls];
	pthread_mutex_lock(kp__class_lock(pool, cls));
	unsigned i = atomic_load_explicit(&c->nxfer, memory_order_relaxed);
	bool ok = i < KP_XFER_SLOTS;
	if (ok) {
		kp__xfer *x = &pool->xfer[cls][i];
		x->list = list;
		x->n = n;
		memcpy(x->keys, keys, (size_t)n * sizeof *keys);
		atomic_store_explicit(&c->nxfer, i + 1, memory_order_relaxed);
	}
	pthread_mutex_unlock(kp__class_lock(pool, cls));
	return ok;
}

unsigned kp__xfer_take(kp_pool *pool, unsigned cls, void **list, uint64_t *keys, unsigned n)
{
	kp__central *c = &pool->central[cls];
	/* A peek without the lock: a batch parked meanwhile waits for the next
	 * refill, one the peek saw may be gone (checked again below). */
	if (!atomic_load_explicit(&c->nxfer, memory_order_relaxed))
		return 0;
	unsigned got = 0;
	pthread_mutex_lock(kp__class_lock(pool, cls));
	unsigned i = atomic_load_explicit(&c->nxfer, memory_order_relaxed);
	if (i && i <= KP_XFER_SLOTS && pool->xfer[cls][i - 1].n <= n) {
		kp__xfer *x = &pool->xfer[cls][i - 1];
		got = x->n;
		*list = x->list;
		memcpy(keys, x->keys, (size_t)got * sizeof *keys);
		x->list = NULL;
		x->n = 0;
		atomic_store_explicit(&c->nxfer, i - 1, memory_order_relaxed);
	}
	pthread_mutex_unlock(kp__class_lock(pool, cls));
	return got;
}
