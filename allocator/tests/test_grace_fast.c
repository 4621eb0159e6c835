/*
 * test_grace_fast.c - kp_free's inline grace section uses the thread's
 * "fast" record (internal.h, kp__grace_tls), which a thread gets only once
 * the grace word says readers do not fence (KP_GRACE_FENCE clear: the
 * releasing side has membarrier). A thread whose record was claimed while
 * readers fenced must not take the inline section, which publishes with a
 * plain store: its frees go through kp__grace_enter (an exchange) and still
 * work. Once the fence is gone, its next free makes the record fast.
 * (The fence bit is set here by hand, in this test's own child process:
 * only a process without membarrier keeps it.)
 */
#define _GNU_SOURCE 1
/* Tests the inline fast paths and their slot and grace words (alloc.c, kp__tls): every pool layout:inline (ktest.h, KT_LAYOUT_INLINE). */
#define KT_LAYOUT_INLINE 1
#include "ktest.h"

#include "internal.h"

#include <pthread.h>

struct arg {
	kp_pool *pool;
	int fails;
	bool fast_while_fenced, rec_while_fenced, fast_after;
};

static void *worker(void *v)
{
	struct arg *a = v;
	for (int i = 0; i < 1000; i++) {
		void *p = kp_alloc(a->pool, 32 + i % 200, 0);
		a->fails += !p || kp_free(a->pool, p) != 0;
	}
	a->rec_while_fenced = kp__grace_self.rec != NULL;
	a->fast_while_fenced = kp__grace_self.fast != NULL;
	atomic_fetch_and(&kp__grace_epoch, ~KP_GRACE_FENCE);
	for (int i = 0; i < 1000; i++) {
		void *p = kp_alloc(a->pool, 32 + i % 200, 0);
		a->fails += !p || kp_free(a->pool, p) != 0;
	}
	a->fast_after = kp__grace_self.fast != NULL && kp__grace_self.fast == kp__grace_self.rec;
	return NULL;
}

static void test_no_fast_record_while_fencing(void)
{
	kp_pool *pool = kp_create("primary_initial:4m,daemon:off,backup:0");
	REQUIRE(pool, "kp_create: %s", kp_last_error());
	bool had_fence = atomic_load(&kp__grace_epoch) & KP_GRACE_FENCE;
	atomic_fetch_or(&kp__grace_epoch, KP_GRACE_FENCE);
	struct arg a = {.pool = pool};
	pthread_t t;
	REQUIRE(pthread_create(&t, NULL, worker, &a) == 0, "pthread_create");
	pthread_join(t, NULL);
	CHECK(a.fails == 0, "%d allocations or frees failed", a.fails);
	CHECK(a.rec_while_fenced, "the thread claimed a record while readers fenced");
	CHECK(!a.fast_while_fenced, "no fast record while readers fence");
	CHECK(a.fast_after, "the record became fast once the fence was gone");
	if (had_fence)
		atomic_fetch_or(&kp__grace_epoch, KP_GRACE_FENCE);
	kp_destroy(pool);
}

int main(void)
{
	RUN(test_no_fast_record_while_fencing);
	return ktest_summary();
}
