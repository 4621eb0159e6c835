/*
 * test_realloc_checks.c - kp_realloc and kp_usable_size make every check
 * kp_free makes, whichever path serves them: a small block resized within
 * its class (in place) or across classes (a move), and the blocks a fast
 * path must hand on (backup, huge, large, aligned, another pool's, a freed
 * one, a wild pointer, a damaged one). Each case says what is reported
 * (the event, the counter) and that the pool goes on serving; in-place
 * resizes keep the canary at the new request (a shrink, then a growth,
 * then one byte past: caught at free).
 *
 * Damaging writes go through raw_put, which ASan does not check, so that the
 * pool's own detection is what is tested in every build (ASan would report
 * the write into the poisoned slack itself).
 */
#include "ktest.h"
#include "outline.h"
#include "ol_lend.h"

#define KiB ((size_t)1 << 10)
#define MiB ((size_t)1 << 20)

static const char *const CONF = "primary_initial:4m,backup:1m,daemon:off,seed:11";
static const char *const INLINE_CONF = "layout:inline,primary_initial:4m,backup:1m,daemon:off,seed:11";

#if KT_ASAN
#define KT_NOASAN __attribute__((no_sanitize("address")))
#else
#define KT_NOASAN
#endif
static KT_NOASAN __attribute__((noinline)) void raw_put(char *p, size_t n, int c)
{
	volatile char *v = p;
	for (size_t i = 0; i < n; i++)
		v[i] = (char)c;
}

static int64_t overflows(kp_pool *pool)
{
	return kt_stat(pool, "integrity.overflows");
}

/* Integrity events drained (a grow is none). */
static size_t integrity_events(kp_pool *pool)
{
	size_t n, bad = 0;
	kp_event *ev = kt_events_all(pool, &n);
	for (size_t i = 0; i < n; i++)
		bad += ev[i].kind == KP_EV_DOUBLE_FREE || ev[i].kind == KP_EV_INVALID_FREE ||
		       ev[i].kind == KP_EV_CORRUPTION || ev[i].kind == KP_EV_OVERFLOW ||
		       ev[i].kind == KP_EV_USE_AFTER_FREE || ev[i].kind == KP_EV_FREELIST;
	free(ev);
	return bad;
}

/* The pool still serves: blocks of many classes, filled, verified, freed. */
static int still_works(kp_pool *pool)
{
	void *p[48];
	int ok = 1;
	for (int i = 0; i < 48; i++) {
		size_t n = (size_t)(8 + 61 * i);
		p[i] = kp_alloc(pool, n, 0);
		if (!p[i])
			return 0;
		kt_fill(p[i], n, (uint64_t)i);
	}
	for (int i = 0; i < 48; i++) {
		ok &= kt_verify(p[i], (size_t)(8 + 61 * i), (uint64_t)i) == KT_OK;
		ok &= kp_free(pool, p[i]) == 0;
	}
	return ok;
}

/* The sizes a small block is resized to: within its class (in place), one
 * class up, one class down, far up (a page run), far down. */
struct resize {
	size_t from, to;
	int in_place; /* 1: the block stays where it is */
};
static const struct resize RESIZES[] = {
	{100, 101, 1},			     /* 124 -> 125 of the 128-byte class */
	{100, 90, 1},			     /* a shrink by less than half */
	{100, 104, 1},			     /* the class's whole room (128 - 16 - 8) */
	{100, 105, 0},			     /* one past it: the next class */
	{40, 200, 0},			     /* 64 -> 224 */
	{200, 40, 0},			     /* a shrink past half */
	{990, 1000, 1},			     /* the 1024-byte class, to its end */
	{3000, 70000, 0},		     /* a class past 64 KiB */
	{70000, 70001, 1}, {100, 200000, 0}, /* a page run */
	{16, 12, 1},			     /* 48-byte class: 12 is half its room */
	{16, 11, 0},			     /* less than half: a smaller class */
};

/* In place or moved, the contents come along, the usable size is the new
 * request, and the block frees cleanly when written to its end. */
static void test_resize_keeps_contents_and_canary(void)
{
	kp_pool *pool = kp_create(CONF);
	REQUIRE(pool, "kp_create: %s", kp_last_error());
	/* a young heap's 100 bytes are a block of the 128-byte class (outline.c,
	 * LEND: its room, 120, holds 105 in place); each class's own from here
	 * (ol_lend.h), which the table's cases are */
	char *y = kp_alloc(pool, 100, 0), *y2 = kp_realloc(pool, y, 120, 0);
	CHECK(y && y2 == y && kp_usable_size(pool, y2) == 120, "a young heap's block of 100 bytes grown to 120: %s",
	      y2 == y ? "usable wrong" : "moved");
	CHECK(kp_free(pool, y2) == 0, "free of the grown block");
	ol_lend_done(pool);
	for (size_t k = 0; k < sizeof RESIZES / sizeof RESIZES[0]; k++) {
		const struct resize *r = &RESIZES[k];
		char *p = kp_alloc(pool, r->from, 0);
		REQUIRE(p, "alloc %zu", r->from);
		kt_fill(p, r->from, k);
		char *q = kp_realloc(pool, p, r->to, 0);
		REQUIRE(q, "realloc %zu -> %zu", r->from, r->to);
		size_t keep = r->from < r->to ? r->from : r->to;
		CHECK(kt_verify_from(q, p, keep, k) == KT_OK, "%zu -> %zu: contents lost", r->from, r->to);
		CHECK(kp_usable_size(pool, q) == r->to, "%zu -> %zu: usable %zu", r->from, r->to,
		      kp_usable_size(pool, q));
		CHECK((q == p) == r->in_place, "%zu -> %zu: %s", r->from, r->to, q == p ? "stayed in place" : "moved");
		memset(q, 0x5c, r->to); /* every byte asked for is the caller's */
		CHECK(kp_free(pool, q) == 0, "%zu -> %zu: free of a block written to its end", r->from, r->to);
		if (q != p)
			CHECK(kp_usable_size(pool, p) == 0, "%zu -> %zu: the old block is no longer live", r->from,
			      r->to);
	}
	CHECK(overflows(pool) == 0, "false alarms: %lld overflows", (long long)overflows(pool));
	CHECK(integrity_events(pool) == 0, "integrity events on a clean run");
	kp_destroy(pool);
}

/* An in-place shrink moves the canary to the new end, and a growth moves it
 * again: one byte past the request, whatever it was last, is caught. */
static void test_in_place_canary_follows_the_request(void)
{
	if (KT_ASAN) /* the write past the request is ASan's to catch there */
		return;
	kp_pool *pool = kp_create(CONF);
	REQUIRE(pool, "kp_create: %s", kp_last_error());
	static const size_t steps[] = {100, 90, 104, 60, 101};
	for (size_t last = 0; last < sizeof steps / sizeof steps[0]; last++) {
		char *p = kp_alloc(pool, steps[0], 0);
		REQUIRE(p, "alloc");
		for (size_t i = 1; i <= last; i++) {
			char *q = kp_realloc(pool, p, steps[i], 0);
			CHECK(q == p, "%zu -> %zu moved", steps[i - 1], steps[i]);
			REQUIRE(q, "realloc");
			memset(q, 0x11, steps[i]);
		}
		int64_t before = overflows(pool);
		raw_put(p + steps[last], 1, 0); /* a NUL one past the end */
		CHECK(kp_free(pool, p) == KP_EOVERFLOW, "one past %zu bytes (after %zu resizes) unseen", steps[last],
		      last);
		CHECK(overflows(pool) == before + 1, "overflow not counted");
	}
	kt_events_clear(pool);
	CHECK(still_works(pool), "pool broken");
	kp_destroy(pool);
}

/* A write past the request is found by the realloc that comes next, in
 * place or not: an overflow event, the block set aside (kp_usable_size 0, a
 * free of it refused), the contents moved to a new block. On each layout:
 * the outline one (the default) quarantines the block's record (outline.c,
 * free_slow); before, it stayed live and kp_usable_size gave the old
 * block's size. */
static void overflow_found_at_realloc(const char *conf)
{
	if (KT_ASAN)
		return;
	kp_pool *pool = kp_create(conf);
	REQUIRE(pool, "kp_create: %s", kp_last_error());
	for (size_t k = 0; k < sizeof RESIZES / sizeof RESIZES[0]; k++) {
		const struct resize *r = &RESIZES[k];
		char *p = kp_alloc(pool, r->from, 0);
		REQUIRE(p, "alloc %zu", r->from);
		kt_fill(p, r->from, k);
		int64_t before = overflows(pool);
		raw_put(p + r->from, 1, 'x');
		char *q = kp_realloc(pool, p, r->to, 0);
		CHECK(overflows(pool) == before + 1, "%zu -> %zu: a write one past the request unseen by realloc",
		      r->from, r->to);
		CHECK(kt_events_count(pool, KP_EV_OVERFLOW) == 1, "%zu -> %zu: overflow event", r->from, r->to);
		REQUIRE(q, "%zu -> %zu: realloc of an overflowed block", r->from, r->to);
		CHECK(q != p, "%zu -> %zu: an overflowed block kept in place", r->from, r->to);
		size_t keep = r->from < r->to ? r->from : r->to;
		CHECK(kt_verify_from(q, p, keep, k) == KT_OK, "%zu -> %zu: contents lost", r->from, r->to);
		CHECK(kp_usable_size(pool, p) == 0, "%zu -> %zu: the overflowed block is still live", r->from, r->to);
		CHECK(kp_free(pool, p) < 0, "%zu -> %zu: a free of the block set aside accepted", r->from, r->to);
		CHECK(kp_free(pool, q) == 0, "%zu -> %zu: free of the new block", r->from, r->to);
	}
	CHECK(still_works(pool), "pool broken");
	kp_destroy(pool);
}

static void test_overflow_found_at_realloc(void)
{
	overflow_found_at_realloc(CONF);
}

static void test_overflow_found_at_realloc_inline(void)
{
	overflow_found_at_realloc(INLINE_CONF);
}

/* realloc of a freed block is a double free: NULL, EINVAL, the event, and
 * the block is not handed out twice. So is realloc of the block a move left
 * behind. */
static void test_realloc_of_a_freed_block(void)
{
	kp_pool *pool = kp_create(CONF);
	REQUIRE(pool, "kp_create: %s", kp_last_error());
	static const size_t sizes[] = {100, 101, 90, 200, 40, 70000};
	for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
		char *p = kp_alloc(pool, 100, 0);
		REQUIRE(p, "alloc");
		CHECK(kp_free(pool, p) == 0, "free");
		CHECK(kp_usable_size(pool, p) == 0, "usable size of a freed block");
		int64_t before = kt_stat(pool, "integrity.double_frees");
		errno = 0;
		CHECK(kp_realloc(pool, p, sizes[k], 0) == NULL, "realloc of a freed block to %zu served", sizes[k]);
		CHECK(errno == EINVAL, "errno %d", errno);
		CHECK(kt_stat(pool, "integrity.double_frees") == before + 1, "realloc to %zu: double free not counted",
		      sizes[k]);
		CHECK(kt_events_count(pool, KP_EV_DOUBLE_FREE) == 1, "realloc to %zu: no double_free event", sizes[k]);
		char *a = kp_alloc(pool, 100, 0), *b = kp_alloc(pool, 100, 0);
		CHECK(a && b && a != b, "the freed block handed out twice: %p %p", (void *)a, (void *)b);
		kp_free(pool, a);
		kp_free(pool, b);
	}
	/* the block a move left behind */
	char *p = kp_alloc(pool, 40, 0);
	REQUIRE(p, "alloc");
	char *q = kp_realloc(pool, p, 200, 0);
	REQUIRE(q && q != p, "a move");
	errno = 0;
	CHECK(kp_realloc(pool, p, 50, 0) == NULL && errno == EINVAL, "realloc of the block a move freed");
	CHECK(kt_events_count(pool, KP_EV_DOUBLE_FREE) == 1, "no double_free event for it");
	CHECK(kp_usable_size(pool, q) == 200, "the moved block is intact");
	CHECK(kp_free(pool, q) == 0, "free of the moved block");
	CHECK(still_works(pool), "pool broken");
	kp_destroy(pool);
}

/* Pointers the pool never gave out: inside a block, off by 8, on the
 * stack, libc's, another pool's. NULL and EINVAL from realloc, 0 from
 * usable_size, an invalid_free event, and the blocks they point into left
 * alone. */
static void test_wild_pointers(void)
{
	kp_pool *pool = kp_create(CONF), *other = kp_create(CONF);
	REQUIRE(pool && other, "kp_create: %s", kp_last_error());
	char *p = kp_alloc(pool, 200, 0), *big = kp_alloc(pool, 3000, 0), *theirs = kp_alloc(other, 100, 0);
	char *libc = malloc(100);
	REQUIRE(p && big && theirs && libc, "allocs");
	kt_fill(p, 200, 1);
	kt_fill(theirs, 100, 2);
	char local[64];
	char *wild[] = {p + 16, p + 8, p + 32, big + 1024, big + 16, local + 16, libc, theirs};
	for (size_t k = 0; k < sizeof wild / sizeof wild[0]; k++) {
		CHECK(kp_usable_size(pool, wild[k]) == 0, "usable size of wild pointer %zu", k);
		int64_t before = kt_stat(pool, "integrity.invalid_frees") + kt_stat(pool, "integrity.corruptions");
		errno = 0;
		CHECK(kp_realloc(pool, wild[k], 101, 0) == NULL, "realloc of wild pointer %zu served", k);
		CHECK(errno == EINVAL, "wild pointer %zu: errno %d", k, errno);
		CHECK(kt_stat(pool, "integrity.invalid_frees") + kt_stat(pool, "integrity.corruptions") == before + 1,
		      "wild pointer %zu: not counted", k);
		CHECK(kt_events_count(pool, KP_EV_INVALID_FREE) + kt_events_count(pool, KP_EV_CORRUPTION) <= 1 &&
			      kt_events_count(pool, KP_EV_DOUBLE_FREE) == 0,
		      "wild pointer %zu: events", k);
	}
	CHECK(kt_verify(p, 200, 1) == KT_OK && kt_verify(theirs, 100, 2) == KT_OK, "blocks changed");
	CHECK(kp_usable_size(pool, p) == 200 && kp_usable_size(other, theirs) == 100, "blocks no longer live");
	CHECK(kp_free(pool, p) == 0 && kp_free(pool, big) == 0, "frees");
	CHECK(kp_free(other, theirs) == 0, "the other pool's block was touched");
	free(libc);
	CHECK(still_works(pool) && still_works(other), "pools broken");
	kp_destroy(other);
	kp_destroy(pool);
}

/* A header damaged in place (one bit of the tag, the class, the request):
 * not trusted by usable_size, realloc refuses the block with a corruption
 * event. */
static void test_damaged_header(void)
{
	if (KT_ASAN)
		return;
	kp_pool *pool = kp_create(INLINE_CONF); /* the inline block header */
	REQUIRE(pool, "kp_create: %s", kp_last_error());
	static const int at[] = {-3, -9, -15, -16};
	for (size_t k = 0; k < sizeof at / sizeof at[0]; k++) {
		char *p = kp_alloc(pool, 100, 0);
		REQUIRE(p, "alloc");
		uint64_t w = kt_raw_get(p + (at[k] & ~7));
		kt_raw_put(p + (at[k] & ~7), w ^ (0x40ull << (8 * (at[k] & 7))));
		CHECK(kp_usable_size(pool, p) == 0, "usable size trusts a header damaged at %d", at[k]);
		errno = 0;
		CHECK(kp_realloc(pool, p, 101, 0) == NULL && errno == EINVAL, "realloc trusts a header damaged at %d",
		      at[k]);
		CHECK(kp_realloc(pool, p, 300, 0) == NULL, "realloc (a move) trusts a header damaged at %d", at[k]);
		CHECK(kt_events_count(pool, KP_EV_CORRUPTION) == 2, "corruption events for damage at %d", at[k]);
	}
	CHECK(still_works(pool), "pool broken");
	kp_destroy(pool);
}

/* A caller who read its block's header knows K(h) (tag ^ meta) and can
 * rewrite the request it holds (test_seg_guard's test_req_rewritten, for
 * kp_free): the header is damaged. kp_usable_size does not trust it (0),
 * kp_realloc refuses the block (NULL, EINVAL, a corruption event: as
 * test_damaged_header's) and reads no canary at p + 2^40 (SIGSEGV). */
static void test_request_rewritten(void)
{
	kp_pool *pool = kp_create(INLINE_CONF); /* the inline block header */
	REQUIRE(pool, "kp_create: %s", kp_last_error());
	static const uint64_t reqs[] = {1ull << 40, 1ull << 30, (uint64_t)5 << 20, 200000, 4096, 33};
	for (unsigned i = 0; i < sizeof reqs / sizeof reqs[0]; i++) {
		char *p = kp_alloc(pool, 20, 0); /* the 48-byte class: 32 bytes past the header */
		REQUIRE(p, "alloc");
		uint64_t tag = kt_raw_get(p - 16), meta = kt_raw_get(p - 8);
		uint64_t m2 = (meta & 0xffff) | reqs[i] << 16;
		kt_raw_put(p - 16, tag ^ meta ^ m2);
		kt_raw_put(p - 8, m2);
		CHECK(kp_usable_size(pool, p) == 0, "a request rewritten to %llu: usable size %zu",
		      (unsigned long long)reqs[i], kp_usable_size(pool, p));
		int64_t before = kt_stat(pool, "integrity.corruptions");
		errno = 0;
		char *q = kp_realloc(pool, p, i & 1 ? 24 : 200, 0);
		CHECK(q == NULL && errno == EINVAL, "a request rewritten to %llu: realloc served it",
		      (unsigned long long)reqs[i]);
		CHECK(kt_stat(pool, "integrity.corruptions") == before + 1,
		      "a request rewritten to %llu: not reported by realloc", (unsigned long long)reqs[i]);
		if (q && q != p)
			kp_free(pool, q);
	}
	/* a page run's, resized within its run or moved */
	for (unsigned i = 0; i < 4; i++) {
		char *p = kp_alloc(pool, 200000, 0);
		REQUIRE(p, "alloc");
		size_t u = kp_usable_size(pool, p);
		uint64_t tag = kt_raw_get(p - 16), meta = kt_raw_get(p - 8);
		uint64_t m2 = (meta & 0xffff) | (i & 2 ? 1ull << 40 : 300000ull) << 16;
		kt_raw_put(p - 16, tag ^ meta ^ m2);
		kt_raw_put(p - 8, m2);
		CHECK(kp_usable_size(pool, p) == 0, "a large block's request rewritten: usable size %zu",
		      kp_usable_size(pool, p));
		int64_t before = kt_stat(pool, "integrity.corruptions");
		errno = 0;
		char *q = kp_realloc(pool, p, i & 1 ? u : 100000, 0);
		CHECK(q == NULL && errno == EINVAL, "a large block's request rewritten (%u): realloc served it", i);
		CHECK(kt_stat(pool, "integrity.corruptions") == before + 1,
		      "a large block's request rewritten (%u): not reported by realloc", i);
		if (q && q != p)
			kp_free(pool, q);
	}
	kt_events_clear(pool);
	CHECK(still_works(pool), "pool broken");
	kp_destroy(pool);
}

/* Backup blocks: usable size, an in-place shrink, a move within the
 * reserve, and an overflow found at realloc. */
static void test_backup_blocks(void)
{
	kp_pool *pool = kp_create("primary_initial:4m,primary_max:4m,backup:1m,daemon:off,seed:4");
	REQUIRE(pool, "kp_create: %s", kp_last_error());
	static void *fill[16384];
	size_t nfill = 0;
	static const size_t sizes[] = {64 * KiB, 4 * KiB, 256, 16};
	for (size_t k = 0; k < 4; k++)
		while (nfill < 16384 && (fill[nfill] = kp_alloc(pool, sizes[k], 0)) != NULL)
			nfill++;
	REQUIRE(kp_critical_enter(pool, kp_critical_token(pool)) == 0, "critical scope");
	kt_events_clear(pool);
	char *c = kp_alloc(pool, 300, KP_CRITICAL);
	REQUIRE(c, "a backup block");
	CHECK(kt_stat(pool, "backup.allocs") == 1, "from the backup");
	size_t u = kp_usable_size(pool, c);
	CHECK(u >= 300, "usable %zu", u);
	kt_fill(c, 300, 3);
	char *d = kp_realloc(pool, c, 200, 0);
	CHECK(d == c, "a shrink of a backup block moved it");
	CHECK(kt_verify(d, 200, 3) == KT_OK, "contents");
	char *e = kp_realloc(pool, d, 3000, KP_CRITICAL);
	REQUIRE(e, "a backup block grown in a scope");
	CHECK(kt_verify_from(e, c, 200, 3) == KT_OK, "contents after a move");
	CHECK(kp_usable_size(pool, d) == 0 || d == e, "the old backup block is still live");
	if (!KT_ASAN) {
		int64_t before = overflows(pool);
		raw_put(e + kp_usable_size(pool, e), 1, 'y');
		char *f = kp_realloc(pool, e, 100, KP_CRITICAL);
		CHECK(f != NULL, "realloc of an overflowed backup block");
		CHECK(overflows(pool) == before + 1, "a backup block's overflow unseen by realloc");
		e = f;
	}
	CHECK(kp_free(pool, e) == 0, "free");
	errno = 0;
	CHECK(kp_realloc(pool, e, 50, KP_CRITICAL) == NULL && errno == EINVAL, "realloc of a freed backup block");
	CHECK(kt_events_count(pool, KP_EV_DOUBLE_FREE) == 1, "double free of a backup block through realloc");
	CHECK(kt_stat(pool, "backup.in_use_bytes") == 0, "backup blocks not returned");
	kp_critical_exit(pool);
	while (nfill)
		kp_free(pool, fill[--nfill]);
	kp_destroy(pool);
}

/* Huge and large blocks: usable size, growth and shrink keep the contents,
 * an overflow past the request is found at realloc, a freed one is a
 * double free. */
static void test_huge_and_large_blocks(void)
{
	kp_pool *pool = kp_create(CONF);
	REQUIRE(pool, "kp_create: %s", kp_last_error());
	static const size_t sizes[][2] = {{8 * MiB, 12 * MiB},
					  {8 * MiB + 5, 3 * MiB},
					  {200 * KiB, 300 * KiB},
					  {300 * KiB, 150 * KiB},
					  {200 * KiB, 100}};
	for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
		size_t from = sizes[k][0], to = sizes[k][1];
		char *p = kp_alloc(pool, from, 0);
		REQUIRE(p, "alloc %zu", from);
		CHECK(kp_usable_size(pool, p) == from, "usable of %zu: %zu", from, kp_usable_size(pool, p));
		kt_fill(p, 4096, k);
		char *q = kp_realloc(pool, p, to, 0);
		REQUIRE(q, "%zu -> %zu", from, to);
		CHECK(kt_verify_from(q, p, to < 4096 ? to : 4096, k) == KT_OK, "%zu -> %zu: contents", from, to);
		CHECK(kp_usable_size(pool, q) == to, "%zu -> %zu: usable %zu", from, to, kp_usable_size(pool, q));
		if (!KT_ASAN) {
			int64_t before = overflows(pool);
			raw_put(q + to, 1, 0);
			char *r = kp_realloc(pool, q, from, 0);
			CHECK(overflows(pool) == before + 1, "%zu -> %zu: overflow unseen by realloc", to, from);
			REQUIRE(r, "realloc of an overflowed block");
			q = r;
		}
		CHECK(kp_free(pool, q) == 0, "free");
		errno = 0;
		CHECK(kp_realloc(pool, q, 64, 0) == NULL && errno == EINVAL, "realloc of a freed %zu-byte block", to);
		CHECK(kt_events_count(pool, KP_EV_DOUBLE_FREE) + kt_events_count(pool, KP_EV_INVALID_FREE) == 1,
		      "no event for the realloc of a freed %zu-byte block", to);
	}
	CHECK(still_works(pool), "pool broken");
	kp_destroy(pool);
}

/* Aligned blocks (a redirect header in front) and checks:off pools go
 * their own ways; the contents and usable sizes are what they were. */
static void test_aligned_and_checks_off(void)
{
	kp_pool *pool = kp_create(CONF);
	REQUIRE(pool, "kp_create: %s", kp_last_error());
	char *p = kp_alloc_aligned(pool, 100, 64, 0);
	REQUIRE(p && ((uintptr_t)p & 63) == 0, "aligned");
	kt_fill(p, 100, 5);
	CHECK(kp_usable_size(pool, p) >= 100, "usable of an aligned block");
	char *q = kp_realloc(pool, p, 101, 0);
	REQUIRE(q, "realloc of an aligned block");
	CHECK(kt_verify_from(q, p, 100, 5) == KT_OK, "contents");
	CHECK(kp_free(pool, q) == 0, "free");
	kp_destroy(pool);

	pool = kp_create("primary_initial:4m,daemon:off,checks:off");
	REQUIRE(pool, "kp_create: %s", kp_last_error());
	ol_lend_done(pool); /* the 112-byte class's own block (a young heap's: the 128-byte class's, LEND) */
	p = kp_alloc(pool, 100, 0);
	REQUIRE(p, "alloc");
	CHECK(kp_usable_size(pool, p) == 112, "checks:off: the whole class: %zu", kp_usable_size(pool, p));
	memset(p, 1, 112);
	q = kp_realloc(pool, p, 112, 0);
	CHECK(q == p, "checks:off: a growth to the class's end moved");
	q = kp_realloc(pool, q, 300, 0);
	REQUIRE(q, "move");
	CHECK(q[0] == 1 && q[111] == 1, "contents");
	CHECK(kp_free(pool, q) == 0, "free");
	kp_destroy(pool);
}

/* A chain of reallocs that grows one byte at a time (a string builder, as
 * git's strbuf and CPython's lists make): the contents survive every step,
 * and the counters add up (every move an alloc and a free). */
static void test_growing_chain(void)
{
	kp_pool *pool = kp_create(CONF);
	REQUIRE(pool, "kp_create: %s", kp_last_error());
	int64_t a0 = kt_stat(pool, "primary.allocs"), f0 = kt_stat(pool, "primary.frees");
	char *p = NULL;
	size_t bad = 0, moves = 0;
	for (size_t n = 1; n <= 20000; n++) {
		char *q = kp_realloc(pool, p, n, 0);
		REQUIRE(q, "realloc to %zu", n);
		if (p && q != p)
			moves++;
		if (n > 1 && (unsigned char)q[n - 2] != (unsigned char)((n - 2) * 7))
			bad++;
		q[n - 1] = (char)((n - 1) * 7);
		p = q;
	}
	CHECK(bad == 0, "%zu bytes lost on the way", bad);
	for (size_t i = 0; i < 20000; i++)
		if ((unsigned char)p[i] != (unsigned char)(i * 7) && bad++ < 3)
			CHECK(0, "byte %zu", i);
	CHECK(moves > 10, "only %zu moves", moves);
	CHECK(kp_free(pool, p) == 0, "free");
	kp_thread_flush(pool);
	int64_t allocs = kt_stat(pool, "primary.allocs") - a0, frees = kt_stat(pool, "primary.frees") - f0;
	CHECK(allocs == frees, "allocs %lld, frees %lld", (long long)allocs, (long long)frees);
	CHECK(kt_stat(pool, "primary.in_use_bytes") == 0, "in use %lld",
	      (long long)kt_stat(pool, "primary.in_use_bytes"));
	CHECK(integrity_events(pool) == 0, "integrity events");
	kp_destroy(pool);
}

int main(void)
{
	RUN(test_resize_keeps_contents_and_canary);
	RUN(test_in_place_canary_follows_the_request);
	RUN(test_overflow_found_at_realloc);
	RUN(test_overflow_found_at_realloc_inline);
	RUN(test_realloc_of_a_freed_block);
	RUN(test_wild_pointers);
	RUN(test_damaged_header);
	RUN(test_request_rewritten);
	RUN(test_backup_blocks);
	RUN(test_huge_and_large_blocks);
	RUN(test_aligned_and_checks_off);
	RUN(test_growing_chain);
	return ktest_summary();
}
