/*
 * test_outline_memory.c - layout:outline gives memory back: a thread that
 * allocated and freed many MiB of small blocks leaves them resident no
 * longer than the daemon's decay (outline.c, kp__ol_daemon_pass: a span
 * wholly free on its heap's avail list for two passes is purged), and a
 * steady churn makes no system call (the purge is the daemon's alone).
 */
#define _GNU_SOURCE 1
#include "ktest.h"
#include "outline.h"

#include <pthread.h>
#include <sys/mman.h>
#include <unistd.h>

#define NBLK (64u << 10) /* 64 Ki blocks of 256 B: 16 MiB, and 1 KiB ones: 64 MiB */

/* Resident pages among the pages of the blocks at p[0..n) (mincore). */
static size_t resident_pages(void **p, size_t n)
{
	size_t res = 0;
	uintptr_t last = 0;
	for (size_t i = 0; i < n; i++) {
		uintptr_t pg = (uintptr_t)p[i] & ~(uintptr_t)(KP_PAGE - 1);
		if (pg == last)
			continue;
		last = pg;
		unsigned char v = 0;
		if (mincore((void *)pg, KP_PAGE, &v) == 0 && (v & 1))
			res++;
	}
	return res;
}

struct job {
	kp_pool *pool;
	void **p;
	size_t n, size;
};

static void *fill_and_free(void *arg)
{
	struct job *j = arg;
	for (size_t i = 0; i < j->n; i++) {
		j->p[i] = kp_alloc(j->pool, j->size, 0);
		if (j->p[i])
			memset(j->p[i], 0xa5, j->size);
	}
	for (size_t i = 0; i < j->n; i++)
		kp_free(j->pool, j->p[i]);
	return NULL;
}

/* One thread fills size-byte blocks and frees them all, and ends; after two
 * daemon passes, at most a span's worth of those pages stays resident. */
static void give_back(size_t size)
{
	kp_pool *pool = kp_create("layout:outline,daemon:off,seed:3");
	REQUIRE(pool, "kp_create: %s", kp_last_error());
	void **p = calloc(NBLK, sizeof *p);
	REQUIRE(p, "calloc");
	struct job j = {pool, p, NBLK, size};
	pthread_t t;
	pthread_create(&t, NULL, fill_and_free, &j);
	pthread_join(t, NULL);
	size_t total = NBLK * size / KP_PAGE;
	size_t before = resident_pages(p, NBLK);
	CHECK(before > total / 2, "%zu of %zu pages resident right after the frees", before, total);
	kp_daemon_step(pool, 1); /* seen idle */
	size_t mid = resident_pages(p, NBLK);
	CHECK(mid > total / 2, "%zu of %zu pages resident after one pass: the decay is decay_ms (1 s)", mid, total);
	kp_daemon_step(pool, 1000); /* idle for decay_ms: purged */
	size_t after = resident_pages(p, NBLK);
	/* the span in hand stays (a span: 64 KiB for 256 B, 64 KiB for 1 KiB) */
	CHECK(after <= 16 + (OL_SLICE_SIZE / KP_PAGE), "%zu of %zu pages still resident after two passes (%zu before)",
	      after, total, before);
	fprintf(stderr, "  size %zu: %zu pages resident after the frees, %zu after two passes\n", size, before, after);
	/* and the pool serves again, the purged pages zero on their next touch */
	void *q[256];
	for (int i = 0; i < 256; i++) {
		q[i] = kp_alloc(pool, size, 0);
		CHECK(q[i], "alloc after purge");
		if (q[i])
			memset(q[i], 1, size);
	}
	for (int i = 0; i < 256; i++)
		kp_free(pool, q[i]);
	CHECK(kt_events_count(pool, KP_EV_OVERFLOW) == 0, "no violation");
	free(p);
	kp_destroy(pool);
}

static void test_give_back_256(void)
{
	give_back(256);
}
static void test_give_back_1k(void)
{
	give_back(1000);
}

/* A churn between two passes: the purge touches no span in use, and kp_alloc
 * and kp_free make no system call. */
static void test_churn_no_syscall(void)
{
	kp_pool *pool = kp_create("layout:outline,daemon:off,seed:3");
	REQUIRE(pool, "kp_create: %s", kp_last_error());
	static void *p[4096];
	for (int r = 0; r < 3; r++) {
		for (int i = 0; i < 4096; i++)
			p[i] = kp_alloc(pool, 48 + (i % 7) * 100, 0);
		for (int i = 0; i < 4096; i++)
			kp_free(pool, p[i]);
		kp_daemon_step(pool, 1000);
	}
	char *json = kt_stats(pool);
	int64_t before = kt_syscalls(json, "alloc");
	free(json);
	for (int r = 0; r < 200; r++) {
		for (int i = 0; i < 4096; i++)
			p[i] = kp_alloc(pool, 48 + (i % 7) * 100, 0);
		for (int i = 0; i < 4096; i++)
			kp_free(pool, p[i]);
		if (r % 50 == 0)
			kp_daemon_step(pool, 1000);
	}
	json = kt_stats(pool);
	int64_t after = kt_syscalls(json, "alloc");
	free(json);
	CHECK(before != KT_MISSING && after == before, "%lld system calls on 1.6M allocations and frees",
	      (long long)(after - before));
	kp_destroy(pool);
}

/* primary_max bounds layout:outline as it bounds inline: 1 KiB blocks until
 * NULL within the cap (with an oom event), then a critical caller in its
 * scope is served by the backup. */
static void test_primary_max(void)
{
	kp_pool *pool = kp_create("layout:outline,primary_initial:1m,primary_max:8m,backup:4m,daemon:off,seed:3");
	REQUIRE(pool, "kp_create: %s", kp_last_error());
	enum { MAX = 64 << 10 }; /* 64 MiB of 1 KiB blocks: 8 times the cap */
	static void *p[MAX];
	size_t n = 0;
	while (n < MAX && (p[n] = kp_alloc(pool, 1024, 0)) != NULL)
		n++;
	CHECK(n < MAX, "%zu blocks of 1 KiB (%zu MiB) with primary_max 8m, and no NULL", n, n >> 10);
	CHECK(n <= 8 << 10, "%zu blocks of 1 KiB (%zu MiB) with primary_max 8m", n, n >> 10);
	CHECK(n >= 4 << 10, "NULL after %zu blocks of 1 KiB: the cap is 8 MiB", n);
	CHECK(kt_events_count(pool, KP_EV_OOM) >= 1, "no oom event");
	CHECK(kp_alloc(pool, 100, 0) == NULL, "a smaller block past the cap");
	kp_critical_enter(pool, kp_critical_token(pool));
	void *c = kp_alloc(pool, 1024, KP_CRITICAL);
	CHECK(c != NULL, "a critical caller in its scope was refused past the cap");
	CHECK(kt_stat(pool, "backup.allocs") >= 1, "the critical block came from no backup");
	kp_free(pool, c);
	kp_critical_exit(pool);
	for (size_t i = 0; i < n; i++)
		kp_free(pool, p[i]);
	void *q = kp_alloc(pool, 1024, 0);
	CHECK(q != NULL, "served again once freed");
	kp_free(pool, q);
	kp_destroy(pool);
}

int main(void)
{
	RUN(test_give_back_256);
	RUN(test_give_back_1k);
	RUN(test_churn_no_syscall);
	RUN(test_primary_max);
	return ktest_summary();
}
