/*
 * test_tcache_adjacent_attack4.c - FAILING (sess16-hA4): a thread cache
 * chunk (kp__tcache, the bins' heads, counts and key-stack pointers) is a
 * plain mapping with no guard page, and lands right after a user block:
 * an overflow past that block rewrites a bin's key-stack pointer, and the
 * allocation path then writes key words into another live block with no
 * event, or dies of SIGSEGV.
 *
 * A pool's 65th thread maps a new chunk of 64 caches on its allocation
 * path (tcache.c, kp__tcache_chunk_add: kp__os_map, page-aligned, no
 * guard), and the kernel puts a new mapping in the highest hole that fits.
 * The attacker makes that hole right after one of its blocks: a huge block
 * H mapped right below another huge mapping X, then shrunk by kp_realloc
 * (the mapping shrinks in place: huge.c, kp__huge_resize) by exactly a
 * chunk's size. The 65th thread's first call maps the chunk there, and its
 * cache is the chunk's first: H's payload ends where that cache's header
 * begins. The attacker overflows past H (the canary and slack as they were,
 * the cache's header as it was but for one key-stack pointer) and:
 *   - test_tcache_stack_redirect: stack[cls] = a place inside a live block
 *     W: the thread's next kp_alloc of cls refills its bin and writes the
 *     keys over W (W's bytes changed, no event);
 *   - test_tcache_stack_crash: stack[cls] = 0x1000: that kp_alloc dies of
 *     SIGSEGV inside libkpool.
 * (The same holds for a second pool's first chunk, mapped by kp_create:
 * every chunk is a plain mapping; so is the pool's own struct, its key
 * included.)
 *
 * Build and run (from the repository root):
 *   make -C allocator VARIANT=release build/release/tests/attack4/test_tcache_adjacent_attack4 &&
 *     allocator/build/release/tests/attack4/test_tcache_adjacent_attack4
 *   (VARIANT=asan: the same with asan in both paths; it skips when the
 *   kernel did not place the chunk in the hole)
 */
#define _GNU_SOURCE 1
#include "seg_rig.h"

#include <pthread.h>

#define NT (KP_TC_CHUNK - 1) /* with the first thread's (this one's helper), the first chunk's 64 caches */
#define CHUNK_BYTES (KP_TC_CHUNK * sizeof(kp__tcache))
#define H_MAP ((size_t)24 << 20)
#define H_NEW_MAP (H_MAP - ((CHUNK_BYTES + KP_PAGE - 1) & ~(size_t)(KP_PAGE - 1)))
#define X_REQ (KP_SEG_SIZE - 2 * KP_PAGE - KP_HDR - KP_CANARY)
#define SREQ 40

static kp_pool *pool;
static pthread_barrier_t b0, b1, b2;
static char *H, *X;
static size_t h_req;

static void *holder(void *arg)
{
	long i = (long)arg;
	void *p = kp_alloc(pool, 16, 0); /* takes a cache */
	pthread_barrier_wait(&b0);	 /* every thread's stack mapped first */
	if (i == 0) {
		/* X, then H right below it, then H shrunk: a hole of one chunk's
		 * size between H's end and X. */
		X = kp_alloc(pool, X_REQ, 0);
		H = kp_alloc(pool, H_MAP - 2 * KP_PAGE - KP_HDR - KP_CANARY, 0);
		h_req = H_NEW_MAP - 2 * KP_PAGE - KP_HDR - KP_CANARY;
		char *h2 = H ? kp_realloc(pool, H, h_req, 0) : NULL;
		if (h2 != H)
			H = NULL;
	}
	pthread_barrier_wait(&b1);
	pthread_barrier_wait(&b2); /* held till the attack is over */
	kp_free(pool, p);
	return NULL;
}

/* Returns the main thread's cache (the first of a chunk right after H's
 * payload), or NULL (skip). */
static kp__tcache *setup(pthread_t *th)
{
	pool = kp_create("primary_initial:4m,primary_max:1g,backup:1m,daemon:off");
	if (!pool)
		return NULL;
	pthread_barrier_init(&b0, NULL, NT + 2);
	pthread_barrier_init(&b1, NULL, NT + 2);
	pthread_barrier_init(&b2, NULL, NT + 2);
	pthread_attr_t at;
	pthread_attr_init(&at);
	pthread_attr_setstacksize(&at, 128 << 10);
	for (long i = 0; i < NT + 1; i++)
		if (pthread_create(&th[i], &at, holder, (void *)i) != 0)
			return NULL;
	pthread_barrier_wait(&b0);
	pthread_barrier_wait(&b1);
	if (!H || !X)
		return NULL;
	char *hseg = H - 2 * KP_PAGE, *xseg = X - 2 * KP_PAGE;
	printf("   H's mapping %p + %#zx, X's %p\n", (void *)hseg, (size_t)H_NEW_MAP, (void *)xseg);
	(void)kp_alloc(pool, SREQ, 0); /* the 65th cache: a new chunk */
	kp__tcache *tc = kp__tls_state.tc[0];
	printf("   the new chunk %p, this thread's cache %p, H's payload ends at %p\n", pool->tc_chunks[1], (void *)tc,
	       (void *)(hseg + H_NEW_MAP));
	if ((char *)tc != hseg + H_NEW_MAP)
		return NULL;
	return tc;
}

static void finish(pthread_t *th)
{
	pthread_barrier_wait(&b2);
	for (int i = 0; i < NT + 1; i++)
		pthread_join(th[i], NULL);
}

/* The overflow past H's request: its canary and slack, then the cache's
 * header up to stack[cls], as they were but for stack[cls]. */
static void overflow_stack(kp__tcache *tc, unsigned cls, uint64_t *to)
{
	char *from = H + h_req;
	size_t n = (size_t)((char *)&tc->stack[cls + 1] - from);
	unsigned char *buf = malloc(n);
	rig_raw_read(buf, from, n);
	memcpy(buf + ((char *)&tc->stack[cls] - from), &to, sizeof to);
	rig_raw_write(from, buf, n);
	free(buf);
}

static void test_tcache_stack_redirect(void)
{
	static pthread_t th[NT + 1];
	kp__tcache *tc = setup(th);
	if (!tc) {
		printf("   the chunk did not land right after H (skipped)\n");
		return;
	}
	unsigned cls = kp__class_of(SREQ + KP_HDR + KP_CANARY);
	/* drain the bin, so that the next allocation refills it */
	while (tc->bin[cls].count)
		(void)kp_alloc(pool, SREQ, 0);
	char *W = kp_alloc(pool, 4000, 0), copy[4000];
	REQUIRE(W, "W");
	memset(W, 0x57, 4000);
	memcpy(copy, W, 4000);
	overflow_stack(tc, cls, (uint64_t *)(W + 1024));
	int64_t ev0 = rig_events(pool);
	char *q = kp_alloc(pool, SREQ, 0);
	int changed = memcmp(copy, W, 4000) != 0;
	printf("   kp_alloc after the overflow: %p; live W changed: %d; events %lld -> %lld\n", (void *)q, changed,
	       (long long)ev0, (long long)rig_events(pool));
	CHECK(!changed, "the allocation path wrote into the live block W (key stack redirected by an overflow)");
	CHECK(!changed || rig_events(pool) > ev0, "and no event");
	finish(th);
}

static void test_tcache_stack_crash(void)
{
	static pthread_t th[NT + 1];
	kp__tcache *tc = setup(th);
	if (!tc) {
		printf("   the chunk did not land right after H (skipped)\n");
		return;
	}
	unsigned cls = kp__class_of(SREQ + KP_HDR + KP_CANARY);
	while (tc->bin[cls].count)
		(void)kp_alloc(pool, SREQ, 0);
	overflow_stack(tc, cls, (uint64_t *)0x1000);
	char *q = kp_alloc(pool, SREQ, 0); /* SIGSEGV here before a fix */
	CHECK(q != NULL, "no block");
	finish(th);
}

int main(void)
{
	RUN(test_tcache_stack_redirect);
	RUN(test_tcache_stack_crash);
	return ktest_summary();
}
