/*
 * test_outline_zero_attack29.c - attacks on KP_ZERO leaving memory known
 * zero unwritten (c6a85cc: outline.c's OL_VIRGIN records and pop_zero,
 * alloc.c's zero_run to a page run, kp__large_take_fresh). Each test
 * dirties memory by one path and takes it again by KP_ZERO, asserting
 * every byte zero, or checks that a block never handed out (OL_VIRGIN)
 * is still refused by free, kp_usable_size and kp_realloc: checks on and
 * off, poison:on, segments given back and taken again (return_idle), a
 * thread's spans adopted after it ended, cross-thread frees, fork, page
 * runs reused (alloc, realloc in place, kp_alloc_aligned). All passed on
 * s29-lead 3d14416 (release, ASan, TSan): kept as guards.
 */
#define _GNU_SOURCE 1
#include "ktest.h"
#include "outline.h"

#include <pthread.h>
#include <sys/wait.h>
#include <unistd.h>

/* REQUIRE for helpers that return a value: the test cannot go on. */
#define NEED(c, what)                                                                   \
	do {                                                                            \
		if (!(c)) {                                                             \
			fprintf(stderr, "FATAL %s:%d: %s\n", __FILE__, __LINE__, what); \
			abort();                                                        \
		}                                                                       \
	} while (0)

static size_t nonzero(const void *p, size_t n)
{
	const unsigned char *c = p;
	size_t k = 0;
	for (size_t i = 0; i < n; i++)
		k += c[i] != 0;
	return k;
}

/* The invalid and double frees among the pool's events (drained). */
static size_t bad_frees(kp_pool *pool)
{
	kp_event ev[64];
	size_t n, count = 0;
	while ((n = kp_events_drain(pool, ev, 64)) > 0)
		for (size_t i = 0; i < n; i++)
			count += ev[i].kind == KP_EV_INVALID_FREE || ev[i].kind == KP_EV_DOUBLE_FREE;
	return count;
}

/* n blocks of size bytes (flags), each written whole with byte v. */
static void **dirty_fill(kp_pool *pool, size_t n, size_t size, unsigned flags, int v)
{
	void **p = calloc(n, sizeof *p);
	NEED(p, "calloc");
	for (size_t i = 0; i < n; i++) {
		p[i] = kp_alloc(pool, size, flags);
		NEED(p[i], "kp_alloc");
		memset(p[i], v, size);
	}
	return p;
}

static void free_all(kp_pool *pool, void **p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		CHECK(kp_free(pool, p[i]) == 0, "kp_free %zu", i);
	free(p);
}

/* n KP_ZERO blocks of size bytes: how many bytes not zero, all freed. */
static size_t zero_take(kp_pool *pool, size_t n, size_t size)
{
	size_t bad = 0;
	void **p = calloc(n, sizeof *p);
	NEED(p, "calloc");
	for (size_t i = 0; i < n; i++) {
		p[i] = kp_alloc(pool, size, KP_ZERO);
		NEED(p[i], "kp_alloc KP_ZERO");
		bad += nonzero(p[i], size);
		memset(p[i], 0x77, size);
	}
	free_all(pool, p, n);
	return bad;
}

/* Sizes of one outline class and others: the fast pop writes a canary at
 * p + n in either mode, so a smaller request leaves bytes a larger one of
 * the class reads. */
static const size_t sizes[] = {24, 40, 100, 1000, 3000, 4000, 30000, 65000, 65528, 65536, 100 << 10};
#define NSIZES (sizeof sizes / sizeof sizes[0])

/* Dirty, free, KP_ZERO again, in pools of each mode. */
static void reuse_in(const char *conf)
{
	kp_pool *pool = kp_create(conf);
	REQUIRE(pool, "kp_create %s: %s", conf, kp_last_error());
	for (size_t r = 0; r < 2; r++)
		for (size_t s = 0; s < NSIZES; s++) {
			size_t n = sizes[s] >= 30000 ? 8 : 200;
			CHECK(zero_take(pool, n, sizes[s]) == 0, "%s: fresh KP_ZERO %zu B not zero", conf, sizes[s]);
			free_all(pool, dirty_fill(pool, n, sizes[s] / 2 + 8, 0, 0xa5), n);
			free_all(pool, dirty_fill(pool, n, sizes[s], 0, 0xa6), n);
			CHECK(zero_take(pool, n, sizes[s]) == 0, "%s: reused KP_ZERO %zu B not zero", conf, sizes[s]);
		}
	CHECK(bad_frees(pool) == 0, "%s: integrity events", conf);
	kp_destroy(pool);
}

static void test_reuse_checks_on(void)
{
	reuse_in("daemon:off,seed:7");
}

static void test_reuse_checks_off(void)
{
	reuse_in("daemon:off,seed:7,checks:off");
}

static void test_reuse_poison(void)
{
	reuse_in("daemon:off,seed:7,poison:on");
}

static void test_reuse_inline(void)
{
	reuse_in("layout:inline,daemon:off,seed:7");
}

/* A block made and never handed out (OL_VIRGIN) past a freed one and a
 * live one: its free is a double free (as when it read OL_FREE), its
 * usable size 0, its realloc refused; KP_ZERO then hands out both zero. */
static void virgin_refused(const char *conf)
{
	kp_pool *pool = kp_create(conf);
	REQUIRE(pool, "kp_create %s: %s", conf, kp_last_error());
	unsigned char *a = kp_alloc(pool, 200, KP_ZERO), *b = kp_alloc(pool, 200, KP_ZERO);
	REQUIRE(a && b && b > a, "kp_alloc");
	size_t stride = (size_t)(b - a);
	unsigned char *v = b + stride; /* made with a and b (16 a page at least), never handed out */
	memset(b, 0x3c, 200);
	CHECK(kp_free(pool, b) == 0, "free b");
	(void)bad_frees(pool);
	CHECK(kp_usable_size(pool, v) == 0, "%s: usable size of a block never handed out %zu", conf,
	      kp_usable_size(pool, v));
	CHECK(kp_free(pool, v) != 0, "%s: free of a block never handed out taken", conf);
	CHECK(bad_frees(pool) == 1, "%s: free of a block never handed out: no event", conf);
	CHECK(kp_realloc(pool, v, 100, 0) == NULL, "%s: realloc of a block never handed out served", conf);
	CHECK(bad_frees(pool) == 1, "%s: realloc of a block never handed out: no event", conf);
	unsigned char *c = kp_alloc(pool, 200, KP_ZERO), *d = kp_alloc(pool, 200, KP_ZERO);
	CHECK(c == b && d == v, "%s: not b then v (%p %p, %p %p)", conf, (void *)c, (void *)b, (void *)d, (void *)v);
	CHECK(c && nonzero(c, 200) == 0, "%s: freed block by KP_ZERO not zero", conf);
	CHECK(d && nonzero(d, 200) == 0, "%s: block never handed out by KP_ZERO not zero", conf);
	CHECK(kp_free(pool, d) == 0 && kp_free(pool, d) != 0 && bad_frees(pool) == 1, "%s: double free of d", conf);
	kp_free(pool, a);
	kp_free(pool, c);
	kp_destroy(pool);
}

static void test_virgin_refused(void)
{
	virgin_refused("daemon:off,seed:8");
	virgin_refused("daemon:off,seed:8,checks:off");
}

/* Segments given back (return_idle: purged, onto the spares) and taken
 * again: the blocks written before must come back zero by KP_ZERO; and a
 * kp_realloc by KP_ZERO past the old size zero there. */
static void test_return_retake(void)
{
	kp_pool *pool = kp_create("layout:outline,daemon:off,step_clock:on,seed:3,decay_ms:1000");
	REQUIRE(pool, "kp_create: %s", kp_last_error());
	const size_t n = 4096;
	for (int round = 0; round < 3; round++) {
		free_all(pool, dirty_fill(pool, n, 3000, 0, 0xc3), n);
		free_all(pool, dirty_fill(pool, n / 8, 30000, 0, 0xc4), n / 8);
		size_t cap = 0, segs = 0, committed = 0, after = 0;
		kp__ol_space(pool, &cap, &segs, &committed);
		kp_daemon_step(pool, 1);
		kp_daemon_step(pool, 1000);
		kp_daemon_step(pool, 1000);
		kp__ol_space(pool, &cap, &after, &committed);
		CHECK(after < segs, "round %d: no segment given back (%zu, then %zu)", round, segs, after);
		CHECK(zero_take(pool, n, 3000) == 0, "round %d: KP_ZERO after return not zero", round);
		CHECK(zero_take(pool, n / 8, 30000) == 0, "round %d: KP_ZERO 30000 after return not zero", round);
		unsigned char *p = kp_alloc(pool, 1000, KP_ZERO);
		REQUIRE(p, "kp_alloc");
		memset(p, 0x11, 1000);
		unsigned char *q = kp_realloc(pool, p, 1100, KP_ZERO);
		CHECK(q && nonzero(q + 1000, 100) == 0, "round %d: realloc KP_ZERO tail not zero", round);
		kp_free(pool, q);
	}
	CHECK(bad_frees(pool) == 0, "integrity events");
	kp_destroy(pool);
}

/* A thread dirties and frees blocks of a class and ends; its spans are
 * adopted: KP_ZERO blocks from them zero. Also blocks this thread frees
 * across threads (the foreign cache, the span's list) and the other takes
 * again by KP_ZERO. */
static kp_pool *tpool;
static void *dirty_thread(void *arg)
{
	size_t size = (size_t)(uintptr_t)arg;
	free_all(tpool, dirty_fill(tpool, 300, size, 0, 0xd1), 300);
	void **keep = dirty_fill(tpool, 5, size, KP_ZERO, 0xd2);
	free_all(tpool, keep, 5);
	return NULL;
}

static void **xblocks;
static void *xthread(void *arg)
{
	size_t size = (size_t)(uintptr_t)arg;
	xblocks = dirty_fill(tpool, 300, size, KP_ZERO, 0xe1);
	return NULL;
}

static void test_adopt_and_xfree(void)
{
	tpool = kp_create("daemon:off,seed:9");
	REQUIRE(tpool, "kp_create: %s", kp_last_error());
	const size_t tsizes[] = {100, 2000, 12000};
	for (size_t s = 0; s < 3; s++) {
		pthread_t t;
		REQUIRE(pthread_create(&t, NULL, dirty_thread, (void *)(uintptr_t)tsizes[s]) == 0, "thread");
		pthread_join(t, NULL);
		CHECK(zero_take(tpool, 600, tsizes[s]) == 0, "KP_ZERO %zu after adoption not zero", tsizes[s]);
		REQUIRE(pthread_create(&t, NULL, xthread, (void *)(uintptr_t)tsizes[s]) == 0, "thread");
		pthread_join(t, NULL);
		free_all(tpool, xblocks, 300); /* cross-thread: the ended thread's spans */
		CHECK(zero_take(tpool, 600, tsizes[s]) == 0, "KP_ZERO %zu after cross-thread frees not zero",
		      tsizes[s]);
	}
	CHECK(bad_frees(tpool) == 0, "integrity events");
	kp_destroy(tpool);
}

/* fork: the child's KP_ZERO blocks, from spans the parent dirtied and
 * made, zero. */
static void test_fork(void)
{
	kp_pool *pool = kp_create("daemon:off,seed:10");
	REQUIRE(pool, "kp_create: %s", kp_last_error());
	void **keep = dirty_fill(pool, 50, 3000, KP_ZERO, 0xf1);
	free_all(pool, dirty_fill(pool, 50, 3000, 0, 0xf2), 50);
	fflush(NULL);
	pid_t pid = fork();
	REQUIRE(pid >= 0, "fork");
	if (pid == 0) {
		size_t bad = zero_take(pool, 200, 3000) + zero_take(pool, 8, 100 << 10);
		_exit(bad ? 1 : 0);
	}
	int st = 0;
	waitpid(pid, &st, 0);
	CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child's KP_ZERO blocks not zero (status %d)", st);
	free_all(pool, keep, 50);
	kp_destroy(pool);
}

/* Page runs (KP_ZERO of 64 KiB and more): reused after a free, after an
 * in-place growth by realloc into units after them, and aligned ones. */
static void test_large_runs(void)
{
	kp_pool *pool = kp_create("daemon:off,seed:11");
	REQUIRE(pool, "kp_create: %s", kp_last_error());
	for (int r = 0; r < 4; r++) {
		unsigned char *p = kp_alloc(pool, 70000, 0);
		REQUIRE(p, "kp_alloc");
		memset(p, 0x99, 70000);
		unsigned char *q = kp_realloc(pool, p, 300000, 0); /* in place when the next units are free */
		REQUIRE(q, "kp_realloc");
		memset(q, 0x9a, 300000);
		kp_free(pool, q);
		unsigned char *z = kp_alloc(pool, 300000, KP_ZERO);
		CHECK(z && nonzero(z, 300000) == 0, "round %d: page run reused by KP_ZERO not zero", r);
		unsigned char *a = kp_alloc_aligned(pool, 200000, 4096, KP_ZERO);
		CHECK(a && nonzero(a, 200000) == 0, "round %d: aligned KP_ZERO not zero", r);
		unsigned char *s = kp_alloc_aligned(pool, 3000, 16, KP_ZERO);
		CHECK(s && nonzero(s, 3000) == 0, "round %d: 16-aligned KP_ZERO not zero", r);
		memset(z, 0x9b, 300000);
		memset(a, 0x9c, 200000);
		memset(s, 0x9d, 3000);
		kp_free(pool, z);
		kp_free(pool, a);
		kp_free(pool, s);
		/* a run taken without KP_ZERO (its fresh mark unasked), written,
		 * shrunk by realloc, freed: then by KP_ZERO */
		p = kp_alloc(pool, 500000, 0);
		REQUIRE(p, "kp_alloc");
		memset(p, 0x9e, 500000);
		q = kp_realloc(pool, p, 100000, 0);
		REQUIRE(q, "kp_realloc");
		z = kp_alloc(pool, 350000, KP_ZERO);
		CHECK(z && nonzero(z, 350000) == 0, "round %d: units a shrink gave back, by KP_ZERO, not zero", r);
		kp_free(pool, q);
		kp_free(pool, z);
	}
	CHECK(bad_frees(pool) == 0, "integrity events");
	kp_destroy(pool);
}

int main(void)
{
	RUN(test_reuse_checks_on);
	RUN(test_reuse_checks_off);
	RUN(test_reuse_poison);
	RUN(test_reuse_inline);
	RUN(test_virgin_refused);
	RUN(test_return_retake);
	RUN(test_adopt_and_xfree);
	RUN(test_fork);
	RUN(test_large_runs);
	return ktest_summary();
}
