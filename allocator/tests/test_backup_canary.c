/*
 * test_backup_canary.c - writes past the end of a backup block are caught
 * as those past a primary block are (issue 12, defect 4: two backup blocks of
 * 300 bytes, 612 bytes written into the first changed the second, and both
 * frees returned 0 with no event). A keyed canary past every backup block,
 * checked at free: KP_EOVERFLOW and an overflow event; kp_usable_size leaves
 * room for it.
 *
 * The damaging writes go through raw_put, which ASan does not check, so that
 * the pool's own detection is what is tested in every build (ASan would
 * otherwise report the write into the poisoned canary itself).
 */
#include "ktest.h"

#include <pthread.h>

#define KiB ((size_t)1 << 10)

static const char *const CONF = "primary_initial:4m,primary_max:4m,backup:1m,daemon:off,seed:4";

#define FILL_MAX 16384
static void *fill[FILL_MAX];
static size_t nfill;

static void fill_primary(kp_pool *pool)
{
	static const size_t sizes[] = {64 * KiB, 4 * KiB, 256, 16};
	for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++)
		while (nfill < FILL_MAX && (fill[nfill] = kp_alloc(pool, sizes[k], 0)) != NULL)
			nfill++;
}

static void unfill(kp_pool *pool)
{
	while (nfill)
		kp_free(pool, fill[--nfill]);
}

/* A pool whose primary is full, with a critical scope open: every
 * KP_CRITICAL request is served by the backup. */
static kp_pool *critical_pool(const char *conf)
{
	kp_pool *pool = kp_create(conf);
	if (!pool)
		return NULL;
	nfill = 0;
	fill_primary(pool);
	kp_critical_enter(pool, kp_critical_token(pool));
	kt_events_clear(pool);
	return pool;
}

static void release(kp_pool *pool)
{
	kp_critical_exit(pool);
	unfill(pool);
	kp_destroy(pool);
}

#if KT_ASAN
#define KT_NOASAN __attribute__((no_sanitize("address")))
#else
#define KT_NOASAN
#endif
static KT_NOASAN void raw_put(char *p, size_t n, int c)
{
	volatile char *v = p;
	for (size_t i = 0; i < n; i++)
		v[i] = (char)c;
}

static kp_event last_event(kp_pool *pool, unsigned kind)
{
	size_t n;
	kp_event *ev = kt_events_all(pool, &n), last = {0};
	for (size_t i = 0; i < n; i++)
		if (ev[i].kind == kind)
			last = ev[i];
	free(ev);
	return last;
}

/* The case: 612 bytes into the first of two 300-byte blocks. */
static void test_backup_overflow_into_neighbour(void)
{
	kp_pool *pool = critical_pool(CONF);
	REQUIRE(pool, "kp_create: %s", kp_last_error());
	char *a = kp_alloc(pool, 300, KP_CRITICAL), *b = kp_alloc(pool, 300, KP_CRITICAL);
	REQUIRE(a && b, "critical allocs from the backup: %p %p", (void *)a, (void *)b);
	CHECK(kt_stat(pool, "backup.allocs") == 2, "both blocks from the backup");
	size_t ua = kp_usable_size(pool, a);
	CHECK(ua >= 300 && ua < 612, "usable size of a 300-byte backup block: %zu", ua);
	kt_fill(b, 300, 7);
	raw_put(a, 612, 'A');
	int rc = kp_free(pool, a);
	CHECK(rc == KP_EOVERFLOW, "free of a backup block overflowed by %zu bytes returned %d, not KP_EOVERFLOW",
	      612 - ua, rc);
	kp_event ev = last_event(pool, KP_EV_OVERFLOW);
	CHECK(ev.kind == KP_EV_OVERFLOW, "no overflow event for the backup block");
	CHECK(ev.pool == KP_POOL_BACKUP && ev.addr == (uint64_t)(uintptr_t)a, "the event names pool %u addr %#llx",
	      ev.pool, (unsigned long long)ev.addr);
	CHECK(kt_stat(pool, "integrity.overflows") == 1, "integrity.overflows = %lld",
	      (long long)kt_stat(pool, "integrity.overflows"));
	/* The neighbour's own canary lies at its end, out of the write's reach:
	 * its free is clean (its first bytes were the overflowed ones). */
	CHECK(kp_free(pool, b) == 0, "free of the neighbour");
	CHECK(kp_free(pool, a) == KP_EDOUBLEFREE, "a second free of the overflowed block: not a double free");
	CHECK(kt_stat(pool, "backup.in_use_bytes") == 0, "the reserve did not get its blocks back: %lld bytes",
	      (long long)kt_stat(pool, "backup.in_use_bytes"));
	release(pool);
}

/* One byte past the usable size, of every value a stray write is likely to
 * have (NUL, ASCII), for sizes on both sides of the buddy orders: always
 * caught. Sizes filling the usable size exactly are not reported. */
static void test_backup_off_by_one(void)
{
	kp_pool *pool = critical_pool(CONF);
	REQUIRE(pool, "kp_create: %s", kp_last_error());
	static const size_t sizes[] = {0, 1, 16, 247, 248, 249, 300, 503, 504, 505, 1000, 4096, 70000};
	int missed = 0, false_alarms = 0;
	for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
		for (int v = 0; v < 0x80; v += 7) {
			char *p = kp_alloc(pool, sizes[k], KP_CRITICAL);
			REQUIRE(p, "critical alloc %zu", sizes[k]);
			size_t u = kp_usable_size(pool, p);
			CHECK(u >= sizes[k], "usable %zu < request %zu", u, sizes[k]);
			raw_put(p + u, 1, v);
			int rc = kp_free(pool, p);
			if (rc != KP_EOVERFLOW && missed++ < 5)
				CHECK(0,
				      "a write of %#x one past the usable %zu bytes of a %zu-byte backup block: free "
				      "returned %d",
				      v, u, sizes[k], rc);
		}
		char *p = kp_alloc(pool, sizes[k], KP_CRITICAL);
		REQUIRE(p, "critical alloc %zu", sizes[k]);
		size_t u = kp_usable_size(pool, p);
		memset(p, 0xff, u); /* every usable byte is the caller's */
		if (kp_free(pool, p) != 0)
			false_alarms++;
	}
	CHECK(missed == 0, "%d one-byte overflows of backup blocks unseen", missed);
	CHECK(false_alarms == 0, "%d backup blocks written within their usable size were reported", false_alarms);
	CHECK(kt_stat(pool, "backup.in_use_bytes") == 0, "backup blocks not returned");
	release(pool);
}

/* Aligned critical blocks and realloc: the canary follows the block; a realloc
 * of an overflowed block moves it and its free reports the overflow. */
static void test_backup_aligned_and_realloc(void)
{
	kp_pool *pool = critical_pool(CONF);
	REQUIRE(pool, "kp_create: %s", kp_last_error());
	char *p = kp_alloc_aligned(pool, 100, 4096, KP_CRITICAL);
	REQUIRE(p, "aligned critical alloc");
	CHECK(((uintptr_t)p & 4095) == 0, "alignment");
	size_t u = kp_usable_size(pool, p);
	CHECK(u >= 100, "usable %zu", u);
	raw_put(p + u, 1, 0);
	CHECK(kp_free(pool, p) == KP_EOVERFLOW, "aligned backup block overflow unseen");

	p = kp_alloc(pool, 200, KP_CRITICAL);
	REQUIRE(p, "critical alloc");
	kt_fill(p, 200, 9);
	u = kp_usable_size(pool, p);
	raw_put(p + u, 1, 'x');
	int64_t before = kt_stat(pool, "integrity.overflows");
	char *q = kp_realloc(pool, p, 100, KP_CRITICAL); /* a shrink: in place unless the canary is bad */
	CHECK(q != NULL, "realloc of an overflowed backup block");
	CHECK(kt_stat(pool, "integrity.overflows") == before + 1, "realloc kept an overflowed backup block silently");
	if (q) {
		CHECK(kt_verify_from(q, p, 100, 9) == KT_OK, "realloc lost contents");
		CHECK(kp_free(pool, q) == 0, "free after realloc");
	}
	release(pool);
}

/* checks:off: no canary, the whole buddy block is usable and nothing is
 * reported. */
static void test_backup_checks_off(void)
{
	kp_pool *pool = critical_pool("primary_initial:4m,primary_max:4m,backup:1m,daemon:off,checks:off");
	REQUIRE(pool, "kp_create: %s", kp_last_error());
	char *p = kp_alloc(pool, 300, KP_CRITICAL);
	REQUIRE(p, "critical alloc");
	CHECK(kp_usable_size(pool, p) == 512, "checks:off: usable %zu of a 512-byte buddy block",
	      kp_usable_size(pool, p));
	memset(p, 1, 512);
	CHECK(kp_free(pool, p) == 0, "checks:off free");
	release(pool);
}

int main(void)
{
	RUN(test_backup_overflow_into_neighbour);
	RUN(test_backup_off_by_one);
	RUN(test_backup_aligned_and_realloc);
	RUN(test_backup_checks_off);
	return ktest_summary();
}
