/*
 * test_young_attack.c - young bins (tcache.c, KP_BIN_YOUNG) at the edge of
 * young, in every class: short-lived threads, four at a time and 48 in all
 * (so later ones reuse the caches of those that exited: page-aligned caches
 * handed out again), each allocate m blocks of one class and free them, m
 * around KP_BIN_YOUNG/2 times the bin's start (the operations a bin is young
 * for), then again past it. Every block is handed out once (a tag written in
 * each is intact at its free), every free succeeds, nothing is quarantined
 * and no error event is recorded.
 */
/* Tests the thread caches' bins (tcache.c): every pool layout:inline (ktest.h, KT_LAYOUT_INLINE). */
#define KT_LAYOUT_INLINE 1
#include "ktest.h"

#include "internal.h"

#include <pthread.h>

static kp_pool *pool;
static atomic_uint failures;
static atomic_uint next_thread;

static void *worker(void *arg)
{
	(void)arg;
	unsigned id = atomic_fetch_add(&next_thread, 1);
	unsigned fails = 0;
	static _Thread_local uint64_t *blk[1200];
	for (unsigned cls = id % 3; cls < KP_NCLASS; cls += 3) {
		size_t size = kp__class_size[cls];
		if (size > 64 * 1024)
			break;
		size_t st = KP_BIN_START_BYTES / size;
		st = st < 2 ? 2 : st > KP_BIN_START ? KP_BIN_START : st;
		unsigned edge = (unsigned)(KP_BIN_YOUNG * st / 2);
		const unsigned ms[] = {edge - 1, 1, edge, 3, edge + 1, (unsigned)st * 4};
		for (size_t r = 0; r < sizeof ms / sizeof ms[0]; r++) {
			unsigned m = ms[r] > 1200 ? 1200 : ms[r];
			for (unsigned i = 0; i < m; i++) {
				blk[i] = kp_alloc(pool, size, 0);
				if (!blk[i]) {
					fails++;
					continue;
				}
				blk[i][0] = (uint64_t)(uintptr_t)blk[i] ^ id;
				blk[i][size / 8 - 1] = i;
			}
			for (unsigned i = 0; i < m; i++) {
				if (!blk[i])
					continue;
				fails += blk[i][0] != ((uint64_t)(uintptr_t)blk[i] ^ id) || blk[i][size / 8 - 1] != i;
				fails += kp_free(pool, blk[i]) != 0;
			}
		}
	}
	atomic_fetch_add(&failures, fails);
	return NULL;
}

static void test_young_edges_threads(void)
{
	pool = kp_create("primary_initial:8m,backup:1m,daemon_interval_ms:2");
	REQUIRE(pool, "kp_create: %s", kp_last_error());
	for (int wave = 0; wave < 12; wave++) {
		pthread_t t[4];
		for (int i = 0; i < 4; i++)
			REQUIRE(pthread_create(&t[i], NULL, worker, NULL) == 0, "pthread_create");
		for (int i = 0; i < 4; i++)
			pthread_join(t[i], NULL);
	}
	CHECK(atomic_load(&failures) == 0, "%u failures (alloc, tag, free)", atomic_load(&failures));
	CHECK(kt_stat(pool, "integrity.quarantined") == 0, "%lld quarantined",
	      (long long)kt_stat(pool, "integrity.quarantined"));
	static kp_event ev[4096];
	size_t n = kp_events_drain(pool, ev, 4096), bad = 0;
	for (size_t i = 0; i < n; i++) {
		unsigned k = ev[i].kind;
		bad += k == KP_EV_OOM || (k >= KP_EV_DOUBLE_FREE && k <= KP_EV_CORRUPTION) || k >= KP_EV_OVERFLOW;
	}
	CHECK(bad == 0, "%zu error events of %zu", bad, n);
	kp_destroy(pool);
}

int main(void)
{
	RUN(test_young_edges_threads);
	return ktest_summary();
}
