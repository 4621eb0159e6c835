/*
 * test_primary.c - the primary pool through the public API: alloc, free,
 * realloc, aligned, zeroing and usable size from 0 to 64 MiB; impossible
 * sizes; two threads of mixed operations with every block verified; double
 * and invalid frees contained.
 */
#include "ktest.h"

#include <pthread.h>
#include <stdatomic.h>

#if KT_ASAN
/* ASan builds: the bytes past the request are poisoned, the last one is not. */
#define CHECK_END_POISONED(p, n)                                                                 \
	CHECK(!__asan_address_is_poisoned((p) + (n)-1) && __asan_address_is_poisoned((p) + (n)), \
	      "ASan poisoning wrong at the end of a %zu-byte block", (size_t)(n))
#else
#define CHECK_END_POISONED(p, n) ((void)(p), (void)(n))
#endif

#define MiB ((size_t)1 << 20)

/* Enough room for a 64 MiB block beside the sweep's other live blocks. */
static const char *const CONF = "primary_max:1g,seed:7";

static int aligned_to(const void *p, size_t a)
{
	return ((uintptr_t)p & (a - 1)) == 0;
}

/* Write one byte per page and both ends: proves the whole block is mapped
 * read-write without paying a full memset on 64 MiB. */
static void touch_pages(void *p, size_t n)
{
	volatile unsigned char *c = (volatile unsigned char *)p;
	if (n == 0)
		return;
	for (size_t i = 0; i < n; i += 4096)
		c[i] = (unsigned char)(i >> 12);
	c[n - 1] = 0x5a;
}

/* ---- size 0 and small sizes --------------------------------------------- */

/* Size 0 is a unique, non-NULL, freeable block (usable size >= 0). */
static void test_size_zero(void)
{
	KT_POOL(pool, CONF);
	void *a = kp_alloc(pool, 0, 0), *b = kp_alloc(pool, 0, 0), *z = kp_alloc(pool, 0, KP_ZERO);
	CHECK(a != NULL && b != NULL && z != NULL, "size 0 gave NULL: %p %p %p", a, b, z);
	CHECK(a != b && a != z && b != z, "size 0 blocks are not unique: %p %p %p", a, b, z);
	CHECK(aligned_to(a, 16) && aligned_to(b, 16), "size 0 not 16-aligned: %p %p", a, b);
	CHECK(kp_free(pool, a) == 0, "free of a size-0 block");
	CHECK(kp_free(pool, b) == 0, "free of a size-0 block");
	CHECK(kp_free(pool, z) == 0, "free of a size-0 block");
	void *r = kp_realloc(pool, NULL, 0, 0);
	/* realloc(NULL, 0) is alloc(0): a unique block (or NULL per C; both freeable) */
	CHECK(kp_free(pool, r) == 0, "free of realloc(NULL, 0)");
	CHECK(kp_free(pool, NULL) == 0, "free(NULL) must return 0");
	kp_destroy(pool);
}

/* Every size from 0 to 4 KiB, all live at once, each with its own pattern:
 * alignment, usable size and no overlap (a pattern broken by a neighbour). */
static void test_small_sweep(void)
{
	KT_POOL(pool, CONF);
	enum { N = 4097 };
	static void *blk[N];
	int bad_align = 0, bad_usable = 0, null = 0, bad_pattern = 0, bad_free = 0;
	for (size_t s = 0; s < N; s++) {
		blk[s] = kp_alloc(pool, s, 0);
		if (blk[s] == NULL) {
			null++;
			continue;
		}
		bad_align += !aligned_to(blk[s], 16);
		bad_usable += kp_usable_size(pool, blk[s]) < s;
		kt_fill(blk[s], s, 11);
	}
	for (size_t s = 0; s < N; s++)
		if (blk[s] != NULL && kt_verify(blk[s], s, 11) != KT_OK)
			bad_pattern++;
	for (size_t s = 0; s < N; s++)
		if (blk[s] != NULL)
			bad_free += kp_free(pool, blk[s]) != 0;
	CHECK(null == 0, "%d sizes in 0..4096 returned NULL", null);
	CHECK(bad_align == 0, "%d blocks not 16-aligned", bad_align);
	CHECK(bad_usable == 0, "%d blocks with usable size < request", bad_usable);
	CHECK(bad_pattern == 0, "%d blocks overwritten by a neighbour", bad_pattern);
	CHECK(bad_free == 0, "%d frees failed", bad_free);
	kp_destroy(pool);
}

/* Sizes around every power of two up to 64 MiB (the class, run and huge
 * boundaries are among them): 2^k - 17, -16, -1, +0, +1, +16. The blocks up
 * to 1 MiB stay live together; bigger ones are checked one at a time. */
static void test_boundary_sweep(void)
{
	KT_POOL(pool, CONF);
	static const long deltas[] = {-17, -16, -1, 0, 1, 16};
	enum { ND = sizeof deltas / sizeof deltas[0] };
	static void *live[27 * ND];
	static size_t live_size[27 * ND];
	size_t nlive = 0;
	int fails = 0;
	for (unsigned k = 4; k <= 26; k++) {
		for (unsigned d = 0; d < ND; d++) {
			size_t s = (size_t)((long)((size_t)1 << k) + deltas[d]);
			if ((k == 26 && deltas[d] > 0) || (long)((size_t)1 << k) + deltas[d] < 0)
				continue; /* the contract's range is 0 .. 64 MiB */
			void *p = kp_alloc(pool, s, 0);
			if (p == NULL) {
				CHECK(0, "kp_alloc(%zu) returned NULL", s);
				fails++;
				continue;
			}
			size_t u = kp_usable_size(pool, p);
			CHECK(u >= s, "usable size %zu < request %zu", u, s);
			CHECK(aligned_to(p, 16), "kp_alloc(%zu) = %p not 16-aligned", s, p);
			if (s <= MiB) {
				kt_fill(p, s, 23);
				live[nlive] = p;
				live_size[nlive++] = s;
			} else {
				touch_pages(p, u);
				kt_fill(p, 4096, 29);
				kt_fill((char *)p + s - 4096, 4096, 31);
				CHECK(kt_verify(p, 4096, 29) == KT_OK, "head of %zu-byte block", s);
				CHECK(kt_verify((char *)p + s - 4096, 4096, 31) == KT_OK, "tail of %zu-byte block", s);
				CHECK(kp_free(pool, p) == 0, "free of %zu-byte block", s);
			}
		}
	}
	for (size_t i = 0; i < nlive; i++) {
		CHECK(kt_verify(live[i], live_size[i], 23) == KT_OK,
		      "%zu-byte block at %p overwritten while others were live", live_size[i], live[i]);
		CHECK(kp_free(pool, live[i]) == 0, "free of %zu-byte block", live_size[i]);
	}
	/* Exactly 64 MiB, twice, live together. */
	void *a = kp_alloc(pool, 64 * MiB, 0), *b = kp_alloc(pool, 64 * MiB, 0);
	CHECK(a != NULL && b != NULL, "two 64 MiB blocks: %p %p", a, b);
	if (a != NULL && b != NULL) {
		CHECK((char *)a + 64 * MiB <= (char *)b || (char *)b + 64 * MiB <= (char *)a,
		      "64 MiB blocks overlap: %p %p", a, b);
		touch_pages(a, 64 * MiB);
		touch_pages(b, 64 * MiB);
	}
	CHECK(kp_free(pool, a) == 0 && kp_free(pool, b) == 0, "free of 64 MiB blocks");
	(void)fails;
	kp_thread_flush(pool);
	CHECK(kt_stat(pool, "primary.in_use_bytes") == 0, "in_use_bytes not 0 after the sweep");
	kp_destroy(pool);
}

/* KP_ZERO returns zeroes even where the memory was dirty before. */
static void test_zero(void)
{
	KT_POOL(pool, CONF);
	static const size_t sizes[] = {1,     15,     16,     17,  100,	    1000,    4096,    5000,
				       65536, 131072, 200000, MiB, 3 * MiB, 5 * MiB, 16 * MiB};
	for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
		size_t s = sizes[i];
		/* dirty several blocks of this size, free them, then ask zeroed */
		void *d[8];
		for (int j = 0; j < 8; j++) {
			d[j] = kp_alloc(pool, s, 0);
			if (d[j] != NULL)
				memset(d[j], 0xA5, kp_usable_size(pool, d[j]));
		}
		for (int j = 0; j < 8; j++)
			kp_free(pool, d[j]);
		for (int j = 0; j < 8; j++) {
			unsigned char *z = (unsigned char *)kp_alloc(pool, s, KP_ZERO);
			d[j] = z;
			if (z == NULL) {
				CHECK(0, "kp_alloc(%zu, KP_ZERO) returned NULL", s);
				continue;
			}
			size_t nz = 0;
			for (size_t b = 0; b < s; b++)
				nz += z[b] != 0;
			CHECK(nz == 0, "KP_ZERO block of %zu bytes has %zu non-zero bytes", s, nz);
		}
		for (int j = 0; j < 8; j++)
			kp_free(pool, d[j]);
		unsigned char *za = (unsigned char *)kp_alloc_aligned(pool, s, 4096, KP_ZERO);
		if (za != NULL) {
			size_t nz = 0;
			for (size_t b = 0; b < s; b++)
				nz += za[b] != 0;
			CHECK(nz == 0, "aligned KP_ZERO block of %zu bytes has %zu non-zero bytes", s, nz);
			kp_free(pool, za);
		} else {
			CHECK(0, "kp_alloc_aligned(%zu, 4096, KP_ZERO) returned NULL", s);
		}
	}
	kp_destroy(pool);
}

/* ---- alignment ---------------------------------------------------------- */

/*
 * The smallest aligned case that goes wrong when an aligned payload sits
 * exactly one header (16 bytes) past the start of its inner block: the
 * redirect header then overlays the inner block's first 16 bytes, which a
 * free reuses (free-list link). Free and reuse must not damage each other.
 */
static void test_aligned_free_reuse(void)
{
	KT_POOL(pool, CONF);
	for (int round = 0; round < 64; round++) {
		for (size_t a = 32; a <= 4096; a *= 2) {
			unsigned char *p = (unsigned char *)kp_alloc_aligned(pool, 100, a, 0);
			REQUIRE(p != NULL, "kp_alloc_aligned(100, %zu)", a);
			memset(p, 0xC3, 100);
			CHECK(kp_free(pool, p) == 0, "free of an aligned block (align %zu)", a);
			/* reuse the class: the next blocks come from the same free list */
			void *q[4];
			for (int i = 0; i < 4; i++) {
				q[i] = kp_alloc(pool, 100 + a, 0);
				CHECK(q[i] != NULL, "kp_alloc after an aligned free");
			}
			for (int i = 0; i < 4; i++)
				CHECK(kp_free(pool, q[i]) == 0, "free after an aligned free");
		}
	}
	kp_thread_flush(pool);
	CHECK(kt_stat(pool, "primary.in_use_bytes") == 0, "in_use_bytes");
	kp_destroy(pool);
}

static void test_aligned(void)
{
	KT_POOL(pool, CONF);
	static const size_t sizes[] = {0,    1,	    15,	   16,	   17,	   100,	    4095,   4096,
				       4097, 10000, 65536, 131072, 300000, MiB + 1, 5 * MiB};
	enum { NS = sizeof sizes / sizeof sizes[0] };
	for (size_t a = 1; a <= 4096; a *= 2) {
		void *p[NS];
		for (size_t i = 0; i < NS; i++) {
			p[i] = kp_alloc_aligned(pool, sizes[i], a, 0);
			CHECK(p[i] != NULL, "kp_alloc_aligned(%zu, %zu) returned NULL", sizes[i], a);
			if (p[i] == NULL)
				continue;
			CHECK(aligned_to(p[i], a < 16 ? 16 : a), "kp_alloc_aligned(%zu, %zu) = %p", sizes[i], a, p[i]);
			CHECK(kp_usable_size(pool, p[i]) >= sizes[i], "usable %zu < %zu (align %zu)",
			      kp_usable_size(pool, p[i]), sizes[i], a);
			kt_fill(p[i], sizes[i], a);
		}
		for (size_t i = 0; i < NS; i++) {
			if (p[i] == NULL)
				continue;
			CHECK(kt_verify(p[i], sizes[i], a) == KT_OK, "aligned block %zu/%zu overwritten", sizes[i], a);
			/* realloc keeps an aligned block's contents too */
			size_t grow = sizes[i] * 2 + 64;
			void *q = kp_realloc(pool, p[i], grow, 0);
			CHECK(q != NULL, "realloc of aligned block to %zu", grow);
			if (q == NULL) {
				kp_free(pool, p[i]);
				continue;
			}
			CHECK(kt_verify_from(q, p[i], sizes[i], a) == KT_OK,
			      "realloc lost an aligned block's contents (%zu/%zu)", sizes[i], a);
			CHECK(kp_free(pool, q) == 0, "free of realloc'd aligned block");
		}
	}
	/* Not a power of two, or above the page size: NULL, errno EINVAL, event. */
	static const size_t bad[] = {0, 3, 24, 48, 100, 4097, 8192, 65536, (size_t)1 << 40, SIZE_MAX};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		kt_events_clear(pool);
		int64_t before = kt_stat(pool, "integrity.bad_sizes");
		errno = 0;
		void *p = kp_alloc_aligned(pool, 64, bad[i], 0);
		int e = errno;
		CHECK(p == NULL, "kp_alloc_aligned(64, %zu) should be NULL, got %p", bad[i], p);
		CHECK(e == EINVAL, "kp_alloc_aligned(64, %zu): errno %d, want EINVAL", bad[i], e);
		CHECK(kt_events_count(pool, KP_EV_BAD_SIZE) == 1, "no bad_size event for align %zu", bad[i]);
		CHECK(kt_stat(pool, "integrity.bad_sizes") == before + 1, "bad_sizes not counted for align %zu",
		      bad[i]);
		if (p != NULL)
			kp_free(pool, p);
	}
	kp_destroy(pool);
}

/* ---- impossible sizes --------------------------------------------------- */

static void test_huge_sizes(void)
{
	/* No daemon: its events, written concurrently, could hold a drain up
	 * at a slot still being written (kp_events_drain returns events in
	 * order), and these checks count events exactly. */
	KT_POOL(pool, "primary_max:1g,seed:7,daemon:off");
	/* Near SIZE_MAX: every one of these would wrap in a naive "size + header"
	 * or "round up to alignment" computation. */
	static const size_t wrap[] = {SIZE_MAX,		SIZE_MAX - 1,	 SIZE_MAX - 15,	     SIZE_MAX - 16,
				      SIZE_MAX - 31,	SIZE_MAX - 4095, SIZE_MAX - 4096,    SIZE_MAX - MiB,
				      SIZE_MAX / 2 + 1, SIZE_MAX / 2,	 (size_t)PTRDIFF_MAX};
	for (size_t i = 0; i < sizeof wrap / sizeof wrap[0]; i++) {
		size_t s = wrap[i];
		kt_events_clear(pool);
		int64_t before = kt_stat(pool, "integrity.bad_sizes");
		void *p = kp_alloc(pool, s, 0);
		CHECK(p == NULL, "kp_alloc(%#zx) = %p", s, p);
		CHECK(kt_events_count(pool, KP_EV_BAD_SIZE) == 1, "kp_alloc(%#zx): no bad_size event", s);
		CHECK(kt_stat(pool, "integrity.bad_sizes") == before + 1, "kp_alloc(%#zx): bad_sizes", s);
		void *z = kp_alloc(pool, s, KP_ZERO);
		CHECK(z == NULL, "kp_alloc(%#zx, KP_ZERO) = %p", s, z);
		void *c = kp_alloc(pool, s, KP_CRITICAL);
		CHECK(c == NULL, "kp_alloc(%#zx, KP_CRITICAL) = %p", s, c);
		for (size_t a = 16; a <= 4096; a *= 16) {
			void *q = kp_alloc_aligned(pool, s, a, 0);
			CHECK(q == NULL, "kp_alloc_aligned(%#zx, %zu) = %p", s, a, q);
		}
		kt_events_clear(pool);
		/* realloc to an impossible size: NULL, the block untouched */
		void *b = kp_alloc(pool, 100, 0);
		REQUIRE(b != NULL, "kp_alloc(100)");
		kt_fill(b, 100, 5);
		void *r = kp_realloc(pool, b, s, 0);
		CHECK(r == NULL, "kp_realloc(p, %#zx) = %p", s, r);
		CHECK(kt_events_count(pool, KP_EV_BAD_SIZE) == 1, "kp_realloc(p, %#zx): no bad_size event", s);
		CHECK(kt_verify(b, 100, 5) == KT_OK, "failed realloc damaged the block");
		CHECK(kp_usable_size(pool, b) >= 100, "failed realloc freed the block");
		CHECK(kp_free(pool, b) == 0, "free after failed realloc");
	}
	/* Too large for the pool (1 GiB max) but representable: NULL and an event
	 * (bad_size or oom; the pool may not call it impossible). */
	static const size_t big[] = {(size_t)2 << 30, (size_t)1 << 40, (size_t)1 << 46, (size_t)1 << 50};
	for (size_t i = 0; i < sizeof big / sizeof big[0]; i++) {
		kt_events_clear(pool);
		void *p = kp_alloc(pool, big[i], 0);
		CHECK(p == NULL, "kp_alloc(%#zx) = %p beyond primary_max", big[i], p);
		size_t nev = kt_events_count(pool, KP_EV_NONE);
		CHECK(nev >= 1, "kp_alloc(%#zx): no event", big[i]);
	}
	/* The pool still works. */
	void *ok = kp_alloc(pool, 1000, 0);
	CHECK(ok != NULL, "pool broken after impossible sizes");
	CHECK(kp_free(pool, ok) == 0, "free");
	CHECK(kp_alloc(NULL, 16, 0) == NULL, "kp_alloc(NULL pool) must be NULL");
	CHECK(kp_free(NULL, ok) == KP_EINVAL, "kp_free(NULL pool) must be KP_EINVAL");
	kp_destroy(pool);
}

/* ---- realloc ------------------------------------------------------------ */

static void test_realloc(void)
{
	KT_POOL(pool, CONF);
	/* NULL allocates */
	void *p = kp_realloc(pool, NULL, 24, 0);
	REQUIRE(p != NULL, "kp_realloc(NULL, 24)");
	size_t cur = 24;
	kt_fill(p, cur, 1);
	/* grow 24 B -> 64 MiB by x1.7 steps, then shrink back: the kept prefix
	 * always carries the first fill's pattern (origin address remembered) */
	void *origin = p;
	size_t filled = cur;
	while (cur < 64 * MiB) {
		size_t next = cur + cur * 7 / 10 + 1;
		if (next > 64 * MiB)
			next = 64 * MiB;
		void *q = kp_realloc(pool, p, next, 0);
		REQUIRE(q != NULL, "kp_realloc grow to %zu", next);
		CHECK(kp_usable_size(pool, q) >= next, "usable %zu < %zu", kp_usable_size(pool, q), next);
		size_t off = kt_verify_from(q, origin, filled, 1);
		CHECK(off == KT_OK, "realloc %zu -> %zu lost contents at offset %zu", cur, next, off);
		if (off != KT_OK)
			break;
		/* refill the new size with the new address's pattern (cheap for small) */
		if (next <= 4 * MiB) {
			kt_fill(q, next, 1);
			origin = q;
			filled = next;
		}
		p = q;
		cur = next;
	}
	while (cur > 16) {
		size_t next = cur / 3;
		void *q = kp_realloc(pool, p, next, 0);
		REQUIRE(q != NULL, "kp_realloc shrink to %zu", next);
		size_t keep = next < filled ? next : filled;
		size_t off = kt_verify_from(q, origin, keep, 1);
		CHECK(off == KT_OK, "realloc shrink %zu -> %zu lost contents at %zu", cur, next, off);
		kt_fill(q, next, 1);
		origin = q;
		filled = next;
		p = q;
		cur = next;
	}
	/* size 0 frees and returns NULL */
	int64_t frees = kt_stat(pool, "primary.frees");
	void *z = kp_realloc(pool, p, 0, 0);
	CHECK(z == NULL, "kp_realloc(p, 0) should free and return NULL, got %p", z);
	kp_thread_flush(pool);
	CHECK(kt_stat(pool, "primary.frees") == frees + 1, "kp_realloc(p, 0) did not count a free");
	CHECK(kt_stat(pool, "primary.in_use_bytes") == 0, "in_use_bytes not 0 after realloc chain");

	/* KP_ZERO zeroes the grown part, on dirty memory */
	for (int round = 0; round < 3; round++) {
		void *d[16];
		for (int j = 0; j < 16; j++) {
			d[j] = kp_alloc(pool, 70000, 0);
			if (d[j])
				memset(d[j], 0xEE, 70000);
		}
		for (int j = 0; j < 16; j++)
			kp_free(pool, d[j]);
		unsigned char *a = (unsigned char *)kp_alloc(pool, 100, 0);
		REQUIRE(a != NULL, "kp_alloc(100)");
		memset(a, 0x77, 100);
		size_t old_u = kp_usable_size(pool, a);
		size_t nsz = round == 0 ? 1000 : round == 1 ? 40000 : 300000;
		unsigned char *b = (unsigned char *)kp_realloc(pool, a, nsz, KP_ZERO);
		REQUIRE(b != NULL, "kp_realloc(%zu, KP_ZERO)", nsz);
		size_t bad = 0;
		for (size_t i = 0; i < 100; i++)
			bad += b[i] != 0x77;
		CHECK(bad == 0, "KP_ZERO realloc lost %zu bytes of contents", bad);
		bad = 0;
		for (size_t i = old_u; i < nsz; i++)
			bad += b[i] != 0;
		CHECK(bad == 0, "KP_ZERO realloc 100 -> %zu: %zu non-zero bytes in the grown part", nsz, bad);
		kp_free(pool, b);
	}
	kp_destroy(pool);
}

/* ---- two threads, 1M mixed operations each ------------------------------ */

enum { MT_SLOTS = 512, MT_OPS = 1000000, MT_MAILBOX = 64 };

struct mt_shared {
	kp_pool *pool;
	pthread_mutex_t lock; /* the mailbox: blocks handed to the other thread */
	void *box[2][MT_MAILBOX];
	size_t box_size[2][MT_MAILBOX];
	int nbox[2];
};

struct mt_arg {
	struct mt_shared *sh;
	int id;
	uint64_t seed;
	long corrupt, nulls, bad_frees, bad_usable, remote;
};

static size_t mt_size(uint64_t *rng)
{
	uint64_t r = kt_rand(rng);
	if ((r & 63) == 0)
		return kt_rand_log(rng, 1, 256 * 1024); /* now and then a page-run block */
	if ((r & 7) == 0)
		return kt_rand_log(rng, 1, 16384);
	return kt_rand_range(rng, 0, 512);
}

static void *mt_thread(void *varg)
{
	struct mt_arg *a = (struct mt_arg *)varg;
	struct mt_shared *sh = a->sh;
	kp_pool *pool = sh->pool;
	void *slot[MT_SLOTS] = {0};
	size_t size[MT_SLOTS] = {0};
	uint64_t rng = a->seed;
	const uint64_t salt = 0x1234;
	for (long op = 0; op < MT_OPS; op++) {
		uint64_t r = kt_rand(&rng);
		unsigned i = (unsigned)(r % MT_SLOTS);
		unsigned kind = (unsigned)(r >> 32) % 16;
		if (slot[i] == NULL) {
			size_t s = mt_size(&rng);
			void *p = kp_alloc(pool, s, kind < 2 ? KP_ZERO : 0);
			if (p == NULL) {
				a->nulls++;
				continue;
			}
			if (kp_usable_size(pool, p) < s)
				a->bad_usable++;
			kt_fill(p, s, salt);
			slot[i] = p;
			size[i] = s;
		} else if (kind < 4) { /* realloc: verify the kept prefix */
			size_t s = mt_size(&rng);
			void *old = slot[i];
			if (kt_verify(old, size[i], salt) != KT_OK) {
				a->corrupt++;
				continue;
			}
			void *p = kp_realloc(pool, old, s, 0);
			if (p == NULL) {
				if (s != 0)
					a->nulls++;
				else
					slot[i] = NULL;
				continue;
			}
			size_t keep = s < size[i] ? s : size[i];
			if (kt_verify_from(p, old, keep, salt) != KT_OK)
				a->corrupt++;
			kt_fill(p, s, salt);
			slot[i] = p;
			size[i] = s;
		} else if (kind == 4) { /* hand the block to the other thread */
			if (kt_verify(slot[i], size[i], salt) != KT_OK)
				a->corrupt++;
			pthread_mutex_lock(&sh->lock);
			int o = 1 - a->id;
			if (sh->nbox[o] < MT_MAILBOX) {
				sh->box[o][sh->nbox[o]] = slot[i];
				sh->box_size[o][sh->nbox[o]++] = size[i];
				slot[i] = NULL;
			}
			pthread_mutex_unlock(&sh->lock);
		} else if (kind == 5) { /* free what the other thread handed us */
			void *got[MT_MAILBOX];
			size_t gsz[MT_MAILBOX];
			int n;
			pthread_mutex_lock(&sh->lock);
			n = sh->nbox[a->id];
			memcpy(got, sh->box[a->id], (size_t)n * sizeof got[0]);
			memcpy(gsz, sh->box_size[a->id], (size_t)n * sizeof gsz[0]);
			sh->nbox[a->id] = 0;
			pthread_mutex_unlock(&sh->lock);
			for (int k = 0; k < n; k++) {
				if (kt_verify(got[k], gsz[k], salt) != KT_OK)
					a->corrupt++;
				if (kp_free(pool, got[k]) != 0)
					a->bad_frees++;
				a->remote++;
			}
		} else { /* free */
			if (kt_verify(slot[i], size[i], salt) != KT_OK)
				a->corrupt++;
			if (kp_free(pool, slot[i]) != 0)
				a->bad_frees++;
			slot[i] = NULL;
		}
	}
	for (unsigned i = 0; i < MT_SLOTS; i++) {
		if (slot[i] == NULL)
			continue;
		if (kt_verify(slot[i], size[i], salt) != KT_OK)
			a->corrupt++;
		if (kp_free(pool, slot[i]) != 0)
			a->bad_frees++;
	}
	return NULL;
}

/* A huge block that stays huge is resized by moving its pages (one mremap,
 * counted as "other"), not by copying: contents kept, the grown part zeroed
 * under KP_ZERO, the canary moved with the end, the accounting right; and a
 * refused mremap falls back to the copy. */
static void test_realloc_huge_moves_pages(void)
{
	KT_POOL(pool, "primary_max:1g,daemon:off,seed:7");
	size_t a = 6 * MiB, b = 20 * MiB, c = 24 * MiB, d = 5 * MiB;
	char *p = kp_alloc(pool, a, 0);
	REQUIRE(p != NULL, "kp_alloc(6 MiB)");
	kt_fill(p, a, 3);
	CHECK_END_POISONED(p, a);
	int64_t other = kt_stat(pool, "syscalls.alloc.other");
	char *q = kp_realloc(pool, p, b, 0);
	REQUIRE(q != NULL, "kp_realloc(6 -> 20 MiB)");
	CHECK(kt_stat(pool, "syscalls.alloc.other") == other + 1, "growing a huge block made no mremap");
	CHECK(q != p, "a huge block grew from 6 to 20 MiB in place");
	CHECK(kt_verify_from(q, p, a, 3) == KT_OK, "contents lost by the move");
	CHECK(kp_usable_size(pool, q) >= b, "usable %zu < 20 MiB", kp_usable_size(pool, q));
	CHECK_END_POISONED(q, b);
	touch_pages(q, b);
	kt_fill(q, b, 4);
	char *r = kp_realloc(pool, q, c, KP_ZERO);
	REQUIRE(r != NULL, "kp_realloc(20 -> 24 MiB, KP_ZERO)");
	CHECK(kt_verify_from(r, q, b, 4) == KT_OK, "contents lost by the second move");
	size_t nonzero = 0;
	for (size_t i = b; i < c; i += 512)
		nonzero += r[i] != 0;
	CHECK(nonzero == 0 && r[c - 1] == 0, "the grown part is not zero (%zu samples)", nonzero);
	CHECK(kt_stat(pool, "primary.huge_bytes") >= (int64_t)c &&
		      kt_stat(pool, "primary.huge_bytes") < (int64_t)(c + MiB),
	      "huge_bytes %lld after growing to 24 MiB", (long long)kt_stat(pool, "primary.huge_bytes"));
	/* shrinking stays in place */
	char *s = kp_realloc(pool, r, d, 0);
	CHECK(s == r, "a huge block shrunk to 5 MiB moved (%p -> %p)", (void *)r, (void *)s);
	CHECK_END_POISONED(s, d);
	/* and below the huge sizes, down to half a segment: no copy of megabytes */
	char *s3 = kp_realloc(pool, s, 3 * MiB, 0);
	CHECK(s3 == s, "a huge block shrunk to 3 MiB moved (%p -> %p)", (void *)s, (void *)s3);
	CHECK(kt_verify_from(s3, q, 3 * MiB, 4) == KT_OK, "contents lost by the shrink to 3 MiB");
	CHECK_END_POISONED(s3, 3 * MiB);
	s = kp_realloc(pool, s3, d, 0);
	CHECK(s == s3, "a 3 MiB huge block grew back to 5 MiB elsewhere");
	CHECK(kt_verify_from(s, q, 3 * MiB, 4) == KT_OK, "contents lost growing back to 5 MiB");
	kt_fill(s + 3 * MiB, d - 3 * MiB, 9);
	CHECK(kt_stat(pool, "primary.huge_bytes") < (int64_t)(d + MiB), "huge_bytes %lld after shrinking to 5 MiB",
	      (long long)kt_stat(pool, "primary.huge_bytes"));
	CHECK(kt_stat(pool, "primary.in_use_bytes") >= (int64_t)d &&
		      kt_stat(pool, "primary.in_use_bytes") < (int64_t)(d + MiB),
	      "in_use_bytes %lld for one 5 MiB block", (long long)kt_stat(pool, "primary.in_use_bytes"));
	/* mremap refused: the block is copied instead, and the refusal is an event */
	kt_events_clear(pool);
	REQUIRE(kp_fault_inject(pool, "other@nth=1") == 0, "kp_fault_inject: %s", kp_last_error());
	char *t = kp_realloc(pool, s, 3 * d, 0);
	REQUIRE(t != NULL, "kp_realloc with mremap refused");
	CHECK(kt_verify_from(t, q, 3 * MiB, 4) == KT_OK &&
		      kt_verify_from(t + 3 * MiB, s + 3 * MiB, d - 3 * MiB, 9) == KT_OK,
	      "contents lost by the fallback copy");
	CHECK(kt_events_count(pool, KP_EV_OS_FAIL) == 1, "no os_fail event for the refused mremap");
	kp_fault_inject(pool, "all@off");
	CHECK(kp_free(pool, t) == 0, "free");
	CHECK(kt_stat(pool, "primary.huge_bytes") == 0, "huge_bytes %lld with no block",
	      (long long)kt_stat(pool, "primary.huge_bytes"));
	CHECK(kt_stat(pool, "primary.in_use_bytes") == 0, "in_use_bytes %lld with no block",
	      (long long)kt_stat(pool, "primary.in_use_bytes"));
	kp_destroy(pool);
}

/* A large block (a run of 64 KiB units) grows into the free units after it
 * and shrinks by giving its tail units back, without moving; when the units
 * after it are taken it moves, contents kept. */
static void test_realloc_large_in_place(void)
{
	KT_POOL(pool, "primary_initial:8m,daemon:off,seed:7");
	size_t a = 512 * 1024, b = MiB, c = 200 * 1024;
	char *p = kp_alloc(pool, a, 0);
	REQUIRE(p != NULL, "kp_alloc(512 KiB)");
	kt_fill(p, a, 5);
	char *q = kp_realloc(pool, p, b, KP_ZERO);
	CHECK(q == p, "512 KiB -> 1 MiB moved with free units after it (%p -> %p)", (void *)p, (void *)q);
	CHECK(kt_verify(q, a, 5) == KT_OK, "contents lost growing in place");
	size_t nonzero = 0;
	for (size_t i = a; i < b; i++)
		nonzero += q[i] != 0;
	CHECK(nonzero == 0, "%zu non-zero bytes in the grown part under KP_ZERO", nonzero);
	CHECK_END_POISONED(q, b);
	q = kp_realloc(pool, q, c, 0);
	CHECK(q == p, "1 MiB -> 200 KiB moved (%p -> %p)", (void *)p, (void *)q);
	CHECK(kt_verify(q, c, 5) == KT_OK, "contents lost shrinking in place");
	CHECK_END_POISONED(q, c);
	CHECK(kt_stat(pool, "primary.in_use_bytes") < (int64_t)(256 * 1024), "in_use_bytes %lld for one 200 KiB block",
	      (long long)kt_stat(pool, "primary.in_use_bytes"));
	/* the tail units went back: the next large block takes them */
	char *x = kp_alloc(pool, a, 0);
	REQUIRE(x != NULL, "kp_alloc(512 KiB)");
	CHECK(x == p + 256 * 1024, "the freed tail units were not reused (%p, expected %p)", (void *)x,
	      (void *)(p + 256 * 1024));
	char *r = kp_realloc(pool, q, b, 0);
	REQUIRE(r != NULL, "kp_realloc(200 KiB -> 1 MiB) with the next units taken");
	CHECK(r != q, "grew in place over a live block");
	CHECK(kt_verify_from(r, p, c, 5) == KT_OK, "contents lost by the move");
	CHECK(kp_free(pool, r) == 0 && kp_free(pool, x) == 0, "free");
	CHECK(kt_stat(pool, "primary.in_use_bytes") == 0, "in_use_bytes %lld with no block",
	      (long long)kt_stat(pool, "primary.in_use_bytes"));
	CHECK(kt_stat(pool, "primary.committed_bytes") == 0, "committed_bytes %lld with no block",
	      (long long)kt_stat(pool, "primary.committed_bytes"));
	kp_destroy(pool);
}

/* A freed huge block keeps its mapping for the next huge request that fits:
 * no munmap at free, no mmap at the reuse, zeroed under KP_ZERO although
 * reused, a stale pointer into it a double free; the daemon unmaps it after
 * decay_ms, and segments that need its room under primary_max evict it. */
static void test_huge_cache(void)
{
	KT_POOL(pool, "primary_initial:4m,primary_max:16m,daemon:off,low_wm:0,high_wm:0,decay_ms:1000,seed:7");
	size_t a = 6 * MiB;
	char *p = kp_alloc(pool, a, 0);
	REQUIRE(p != NULL, "kp_alloc(6 MiB)");
	memset(p, 0x5a, a);
	int64_t mmaps = kt_stat(pool, "syscalls.alloc.mmap"), munmaps = kt_stat(pool, "syscalls.alloc.munmap");
	CHECK(kp_free(pool, p) == 0, "free");
	CHECK(kt_stat(pool, "syscalls.alloc.munmap") == munmaps, "freeing a huge block unmapped it");
	CHECK(kt_stat(pool, "syscalls.alloc.madvise") == 1,
	      "thp:on (the default): %lld MADV_HUGEPAGE for one huge block",
	      (long long)kt_stat(pool, "syscalls.alloc.madvise"));
	CHECK(kt_stat(pool, "primary.huge_cached_bytes") >= (int64_t)a, "huge_cached_bytes %lld after the free",
	      (long long)kt_stat(pool, "primary.huge_cached_bytes"));
#if KT_ASAN
	CHECK(__asan_address_is_poisoned(p), "a kept huge payload is not poisoned");
#endif
	CHECK(kp_free(pool, p) == KP_EDOUBLEFREE, "a second free of a kept huge block");
	char *q = kp_alloc(pool, 5 * MiB, KP_ZERO);
	CHECK(q == p, "5 MiB did not reuse the kept 6 MiB mapping (%p, kept %p)", (void *)q, (void *)p);
	CHECK(kt_stat(pool, "syscalls.alloc.mmap") == mmaps, "reusing a kept mapping made an mmap");
	size_t nonzero = 0;
	for (size_t i = 0; i < 5 * MiB; i += 64)
		nonzero += q[i] != 0;
	CHECK(nonzero == 0 && q[5 * MiB - 1] == 0, "KP_ZERO on a kept mapping left %zu non-zero samples", nonzero);
	CHECK(kt_stat(pool, "primary.huge_cached_bytes") == 0, "the reused mapping is still counted as kept");
	CHECK(kp_free(pool, q) == 0, "free");
	/* the daemon gives it back after decay_ms */
	kp_daemon_step(pool, 500);
	CHECK(kt_stat(pool, "primary.huge_cached_bytes") > 0, "unmapped before decay_ms");
	kp_daemon_step(pool, 1000);
	CHECK(kt_stat(pool, "primary.huge_cached_bytes") == 0, "kept past decay_ms");
	CHECK(kt_stat(pool, "syscalls.daemon.munmap") >= 1, "the daemon made no munmap");
	/* room under primary_max: a kept 6 MiB mapping makes way for segments */
	p = kp_alloc(pool, a, 0);
	REQUIRE(p != NULL, "kp_alloc(6 MiB) again");
	CHECK(kp_free(pool, p) == 0, "free");
	void *big[4];
	int n = 0;
	for (; n < 4; n++)
		if ((big[n] = kp_alloc(pool, 3 * MiB, 0)) == NULL)
			break;
	CHECK(n == 4, "only %d of 4 blocks of 3 MiB (16 MiB of primary_max, 6 MiB kept)", n);
	CHECK(kt_stat(pool, "primary.huge_cached_bytes") == 0, "the kept mapping was not evicted");
	CHECK(kt_stat(pool, "primary.capacity_bytes") + kt_stat(pool, "primary.huge_bytes") <= (int64_t)(16 * MiB),
	      "primary_max passed");
	for (int i = 0; i < n; i++)
		kp_free(pool, big[i]);
	kp_destroy(pool);

	/* thp:off: no MADV_HUGEPAGE */
	KT_POOL(nothp, "primary_initial:4m,daemon:off,low_wm:0,high_wm:0,thp:off,seed:7");
	void *h = kp_alloc(nothp, a, 0);
	CHECK(h != NULL && kt_stat(nothp, "syscalls.alloc.madvise") == 0, "thp:off: %lld madvise calls",
	      (long long)kt_stat(nothp, "syscalls.alloc.madvise"));
	kp_free(nothp, h);
	kp_destroy(nothp);

	/* a growing huge block moves into a kept mapping big enough, takes all
	 * of it, and grows on in place: one mremap, no mmap */
	KT_POOL(pool2, "primary_initial:4m,primary_max:64m,daemon:off,low_wm:0,high_wm:0,seed:7");
	char *k = kp_alloc(pool2, 12 * MiB, 0);
	REQUIRE(k != NULL, "kp_alloc(12 MiB)");
	CHECK(kp_free(pool2, k) == 0, "free");
	char *x = kp_alloc(pool2, 5 * MiB, 0);
	REQUIRE(x != NULL && x != k, "kp_alloc(5 MiB) took the kept 12 MiB mapping (more than half to spare)");
	kt_fill(x, 5 * MiB, 6);
	mmaps = kt_stat(pool2, "syscalls.alloc.mmap");
	int64_t others = kt_stat(pool2, "syscalls.alloc.other");
	char *y = kp_realloc(pool2, x, 8 * MiB, 0);
	CHECK(y == k, "8 MiB did not move into the kept mapping (%p, kept %p)", (void *)y, (void *)k);
	CHECK(kt_stat(pool2, "syscalls.alloc.mmap") == mmaps && kt_stat(pool2, "syscalls.alloc.other") == others + 1,
	      "moving into a kept mapping: %lld mmap, %lld mremap",
	      (long long)(kt_stat(pool2, "syscalls.alloc.mmap") - mmaps),
	      (long long)(kt_stat(pool2, "syscalls.alloc.other") - others));
	CHECK(y && kt_verify_from(y, x, 5 * MiB, 6) == KT_OK, "contents lost moving into a kept mapping");
	char *z = kp_realloc(pool2, y, 11 * MiB, 0);
	CHECK(z == y && kt_stat(pool2, "syscalls.alloc.other") == others + 1, "11 MiB did not grow in place");
	CHECK(z && kt_verify_from(z, x, 5 * MiB, 6) == KT_OK, "contents lost growing in place");
	CHECK(kp_free(pool2, z) == 0, "free");
	/* steady state: a big buffer allocated and freed in a loop makes no
	 * system call after the first round */
	char *first = kp_alloc(pool2, 9 * MiB, 0);
	REQUIRE(first != NULL, "kp_alloc(9 MiB)");
	first[0] = 1;
	kp_free(pool2, first);
	int64_t before = kt_stat(pool2, "syscalls.alloc.mmap") + kt_stat(pool2, "syscalls.alloc.munmap") +
			 kt_stat(pool2, "syscalls.alloc.madvise") + kt_stat(pool2, "syscalls.alloc.other");
	for (int i = 0; i < 1000; i++) {
		char *b = kp_alloc(pool2, 9 * MiB - (size_t)(i % 7) * 4096, 0);
		if (!b)
			break;
		b[i] = (char)i;
		kp_free(pool2, b);
	}
	int64_t after = kt_stat(pool2, "syscalls.alloc.mmap") + kt_stat(pool2, "syscalls.alloc.munmap") +
			kt_stat(pool2, "syscalls.alloc.madvise") + kt_stat(pool2, "syscalls.alloc.other");
	CHECK(after == before, "1000 rounds of a 9 MiB buffer made %lld system calls", (long long)(after - before));
	kp_destroy(pool2);
}

/* Two threads each grow huge blocks by realloc (which moves them) while
 * allocating and freeing others: a block that moves must leave the list of
 * live huge blocks first, or a neighbour's free writes into its old place
 * (found by the fuzzers' concurrent target: a SEGV in kp__huge_free). */
struct huge_race {
	kp_pool *pool;
	unsigned seed, errors;
};

static void *huge_race_main(void *arg)
{
	struct huge_race *r = arg;
	for (unsigned i = 0; i < 400; i++) {
		size_t a = (size_t)(5 + (r->seed + i) % 4) * MiB;
		char *p = kp_alloc(r->pool, a, 0);
		char *q = kp_alloc(r->pool, 6 * MiB, 0);
		if (!p || !q) {
			r->errors++;
			continue;
		}
		p[0] = 1;
		p[a - 1] = 2;
		char *g = kp_realloc(r->pool, p, a + (size_t)(1 + i % 3) * 4 * MiB, 0);
		if (!g || g[0] != 1 || g[a - 1] != 2)
			r->errors++;
		r->errors += kp_free(r->pool, q) != 0;
		r->errors += g && kp_free(r->pool, g) != 0;
	}
	return NULL;
}

static void test_huge_realloc_race(void)
{
	KT_POOL(pool, "primary_max:1g,daemon:off,seed:7");
	struct huge_race r[2] = {{pool, 1, 0}, {pool, 2, 0}};
	pthread_t t[2];
	for (int i = 0; i < 2; i++)
		REQUIRE(pthread_create(&t[i], NULL, huge_race_main, &r[i]) == 0, "pthread_create");
	for (int i = 0; i < 2; i++)
		pthread_join(t[i], NULL);
	CHECK(r[0].errors + r[1].errors == 0, "%u errors", r[0].errors + r[1].errors);
	CHECK(kt_stat(pool, "primary.huge_bytes") == 0, "huge_bytes %lld with no block",
	      (long long)kt_stat(pool, "primary.huge_bytes"));
	kp_destroy(pool);
}

/* One thread shrinks large blocks in place (giving units back) while another
 * carves those units at once and writes its blocks whole: in an ASan build,
 * units poisoned after they were given back would close the other thread's
 * block (found by the fuzzers' concurrent target: use-after-poison). */
struct shrink_race {
	kp_pool *pool;
	int role;
	unsigned errors;
	_Atomic int *stop;
};

static void *shrink_race_main(void *arg)
{
	struct shrink_race *r = arg;
	for (unsigned i = 0; i < 3000 && !atomic_load(r->stop); i++) {
		if (r->role == 0) { /* shrink 1 MiB -> 130 KiB in place */
			char *p = kp_alloc(r->pool, MiB, 0);
			if (!p) {
				r->errors++;
				continue;
			}
			char *q = kp_realloc(r->pool, p, 130 * 1024, 0);
			r->errors += q != p || kp_free(r->pool, q) != 0;
		} else { /* carve and write whole */
			size_t n = i % 2 ? 150 * 1024 : 600 * 1024;
			char *p = kp_alloc(r->pool, n, 0);
			if (!p) {
				r->errors++;
				continue;
			}
			memset(p, 0x3c, n);
			r->errors += kp_free(r->pool, p) != 0;
		}
	}
	return NULL;
}

static void test_large_shrink_race(void)
{
	KT_POOL(pool, "primary_initial:8m,daemon:off,seed:7");
	_Atomic int stop = 0;
	struct shrink_race r[2] = {{pool, 0, 0, &stop}, {pool, 1, 0, &stop}};
	pthread_t t[2];
	for (int i = 0; i < 2; i++)
		REQUIRE(pthread_create(&t[i], NULL, shrink_race_main, &r[i]) == 0, "pthread_create");
	for (int i = 0; i < 2; i++)
		pthread_join(t[i], NULL);
	CHECK(r[0].errors + r[1].errors == 0, "%u errors", r[0].errors + r[1].errors);
	kp_destroy(pool);
}

/* prefault:off maps segments without pre-faulting them (no madvise), at
 * creation and in the daemon's passes; on, both pre-fault. */
static void test_prefault_option(void)
{
	static const char *const conf[2] = {
		"layout:inline,primary_initial:8m,backup:0,daemon:off,low_wm:16m,high_wm:16m,prefault:off",
		"layout:inline,primary_initial:8m,backup:0,daemon:off,low_wm:16m,high_wm:16m,prefault:on"};
	for (int on = 0; on < 2; on++) {
		KT_POOL(pool, conf[on]);
		CHECK((kt_stat(pool, "syscalls.setup.madvise") > 0) == on,
		      "prefault:%s: %lld madvise calls at creation", on ? "on" : "off",
		      (long long)kt_stat(pool, "syscalls.setup.madvise"));
		kp_daemon_step(pool, 0);
		CHECK(kt_stat(pool, "primary.capacity_bytes") >= (int64_t)(16 * MiB), "the daemon did not grow");
		CHECK((kt_stat(pool, "syscalls.daemon.madvise") > 0) == on,
		      "prefault:%s: %lld madvise calls by the daemon", on ? "on" : "off",
		      (long long)kt_stat(pool, "syscalls.daemon.madvise"));
		kp_destroy(pool);
	}
}

static void test_two_threads(void)
{
	KT_POOL(pool, CONF);
	struct mt_shared sh = {.pool = pool};
	pthread_mutex_init(&sh.lock, NULL);
	struct mt_arg arg[2] = {{.sh = &sh, .id = 0, .seed = 101}, {.sh = &sh, .id = 1, .seed = 202}};
	pthread_t th[2];
	for (int i = 0; i < 2; i++)
		REQUIRE(pthread_create(&th[i], NULL, mt_thread, &arg[i]) == 0, "pthread_create");
	for (int i = 0; i < 2; i++)
		pthread_join(th[i], NULL);
	/* what is left in the mailboxes */
	for (int b = 0; b < 2; b++)
		for (int k = 0; k < sh.nbox[b]; k++) {
			CHECK(kt_verify(sh.box[b][k], sh.box_size[b][k], 0x1234) == KT_OK, "mailbox block corrupt");
			CHECK(kp_free(pool, sh.box[b][k]) == 0, "free of mailbox block");
		}
	for (int i = 0; i < 2; i++) {
		CHECK(arg[i].corrupt == 0, "thread %d: %ld blocks failed their pattern check", i, arg[i].corrupt);
		CHECK(arg[i].nulls == 0, "thread %d: %ld allocations returned NULL", i, arg[i].nulls);
		CHECK(arg[i].bad_frees == 0, "thread %d: %ld frees failed", i, arg[i].bad_frees);
		CHECK(arg[i].bad_usable == 0, "thread %d: %ld usable sizes too small", i, arg[i].bad_usable);
		CHECK(arg[i].remote > 0, "thread %d freed no block of the other thread", i);
	}
	kp_thread_flush(pool);
	char *js = kt_stats(pool);
	REQUIRE(js != NULL, "kp_stats_json");
	int64_t allocs = kt_json_int(js, "primary.allocs", -1), frees = kt_json_int(js, "primary.frees", -2);
	CHECK(allocs > 2 * MT_OPS / 4, "primary.allocs = %lld, implausibly few", (long long)allocs);
	CHECK(allocs == frees, "primary.allocs %lld != primary.frees %lld", (long long)allocs, (long long)frees);
	CHECK(kt_json_int(js, "primary.in_use_bytes", -1) == 0, "primary.in_use_bytes = %lld after all frees",
	      (long long)kt_json_int(js, "primary.in_use_bytes", -1));
	CHECK(kt_json_int(js, "backup.in_use_bytes", -1) == 0, "backup in use");
	CHECK(kt_json_int(js, "integrity.corruptions", -1) == 0 && kt_json_int(js, "integrity.double_frees", -1) == 0 &&
		      kt_json_int(js, "integrity.invalid_frees", -1) == 0,
	      "integrity counters not zero: %s", js);
	CHECK(kt_json_int(js, "primary.peak_in_use_bytes", 0) > 0, "peak_in_use_bytes not recorded");
	free(js);
	pthread_mutex_destroy(&sh.lock);
	kp_destroy(pool);
}

/* ---- double and invalid frees ------------------------------------------- */

static void test_double_free(void)
{
	KT_POOL(pool, CONF);
	static const size_t sizes[] = {0, 16, 64, 1000, 8192, 65536, 200000, MiB, 3 * MiB};
	for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
		size_t s = sizes[i];
		void *keep = kp_alloc(pool, s, 0); /* keeps the span/segment alive */
		void *p = kp_alloc(pool, s, 0);
		REQUIRE(p != NULL && keep != NULL, "kp_alloc(%zu)", s);
		kt_events_clear(pool);
		int64_t before = kt_stat(pool, "integrity.double_frees");
		CHECK(kp_free(pool, p) == 0, "first free of %zu-byte block", s);
		int rc = kp_free(pool, p);
		CHECK(rc == KP_EDOUBLEFREE, "second free of %zu-byte block: %d, want KP_EDOUBLEFREE", s, rc);
		CHECK(kt_events_count(pool, KP_EV_DOUBLE_FREE) == 1, "no double_free event (%zu bytes)", s);
		CHECK(kt_stat(pool, "integrity.double_frees") == before + 1, "double_frees not counted (%zu)", s);
		rc = kp_free(pool, p);
		CHECK(rc == KP_EDOUBLEFREE, "third free of %zu-byte block: %d", s, rc);
		CHECK(kp_usable_size(pool, p) == 0, "usable size of a freed %zu-byte block is %zu", s,
		      kp_usable_size(pool, p));
		/* The double free was contained: the next blocks are distinct. */
		void *a = kp_alloc(pool, s, 0), *b = kp_alloc(pool, s, 0), *c = kp_alloc(pool, s, 0);
		CHECK(a && b && c && a != b && b != c && a != c,
		      "after a double free of %zu bytes the pool handed out %p %p %p", s, a, b, c);
		if (a && b && c) {
			kt_fill(a, s, 1);
			kt_fill(b, s, 2);
			kt_fill(c, s, 3);
			CHECK(kt_verify(a, s, 1) == KT_OK && kt_verify(b, s, 2) == KT_OK && kt_verify(c, s, 3) == KT_OK,
			      "blocks overlap after a double free (%zu)", s);
		}
		CHECK(kp_free(pool, a) == 0 && kp_free(pool, b) == 0 && kp_free(pool, c) == 0,
		      "frees after double free");
		CHECK(kp_free(pool, keep) == 0, "free");
	}
	/* A huge block (a region of its own) is returned to the OS at its free,
	 * so the pool may no longer know it: KP_EDOUBLEFREE or KP_ENOTOURS, an
	 * event, and never a crash. */
	void *huge = kp_alloc(pool, 16 * MiB, 0);
	REQUIRE(huge != NULL, "kp_alloc(16 MiB)");
	CHECK(kp_free(pool, huge) == 0, "free of a huge block");
	kt_events_clear(pool);
	int hrc = kp_free(pool, huge);
	CHECK(hrc == KP_EDOUBLEFREE || hrc == KP_ENOTOURS, "second free of a huge block: %d", hrc);
	CHECK(kt_events_count(pool, KP_EV_NONE) >= 1, "second free of a huge block: no event");
	/* realloc of a freed block: NULL, not a copy of freed memory */
	void *p = kp_alloc(pool, 100, 0);
	REQUIRE(p != NULL, "alloc");
	kp_free(pool, p);
	kt_events_clear(pool);
	void *r = kp_realloc(pool, p, 200, 0);
	CHECK(r == NULL, "kp_realloc of a freed block returned %p", r);
	CHECK(kt_events_count(pool, KP_EV_NONE) >= 1, "kp_realloc of a freed block: no event");
	if (r != NULL)
		kp_free(pool, r);
	kp_thread_flush(pool);
	CHECK(kt_stat(pool, "primary.in_use_bytes") == 0, "in_use_bytes after double-free tests");
	kp_destroy(pool);
}

static int static_object[64];

static void test_invalid_free(void)
{
	KT_POOL(pool, CONF);
	KT_POOL(other, CONF);
	int stack_object[64];
	void *libc = malloc(100);
	void *theirs = kp_alloc(other, 100, 0);
	REQUIRE(theirs != NULL, "alloc on the other pool");
	struct {
		const char *what;
		void *p;
	} notours[] = {
		{"stack", stack_object},
		{"static", static_object},
		{"libc malloc", libc},
		{"another pool's block", theirs},
		{"unmapped low address", (void *)(uintptr_t)0x1000},
		{"kernel-space address", (void *)(uintptr_t)0xffffffffff600000ull},
		{"misaligned junk", (void *)(uintptr_t)0x7fff00000003ull},
	};
	memset(stack_object, 0x11, sizeof stack_object);
	for (size_t i = 0; i < sizeof notours / sizeof notours[0]; i++) {
		kt_events_clear(pool);
		int64_t before = kt_stat(pool, "integrity.invalid_frees");
		int rc = kp_free(pool, notours[i].p);
		CHECK(rc == KP_ENOTOURS, "free of %s pointer: %d, want KP_ENOTOURS", notours[i].what, rc);
		CHECK(kt_events_count(pool, KP_EV_INVALID_FREE) == 1, "free of %s: no invalid_free event",
		      notours[i].what);
		CHECK(kt_stat(pool, "integrity.invalid_frees") == before + 1, "free of %s: not counted",
		      notours[i].what);
		CHECK(kp_usable_size(pool, notours[i].p) == 0, "usable size of %s pointer", notours[i].what);
		void *r = kp_realloc(pool, notours[i].p, 50, 0);
		CHECK(r == NULL, "kp_realloc of %s pointer returned %p", notours[i].what, r);
	}
	CHECK(stack_object[0] == 0x11111111 && stack_object[63] == 0x11111111, "free damaged the stack");
	/* the foreign blocks are still intact and belong to their owners */
	CHECK(kp_usable_size(other, theirs) >= 100, "other pool's block damaged");
	CHECK(kp_free(other, theirs) == 0, "other pool frees its own block");
	free(libc);

	/* interior pointers, in each kind of block: non-zero, block left alone */
	static const size_t sizes[] = {64, 1000, 65536, 300000, 2 * MiB, 8 * MiB};
	static const size_t offs[] = {1, 8, 16, 32, 4096};
	for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
		char *b = (char *)kp_alloc(pool, sizes[i], 0);
		REQUIRE(b != NULL, "kp_alloc(%zu)", sizes[i]);
		kt_fill(b, sizes[i], 9);
		for (size_t o = 0; o < sizeof offs / sizeof offs[0]; o++) {
			if (offs[o] >= sizes[i])
				continue;
			kt_events_clear(pool);
			int rc = kp_free(pool, b + offs[o]);
			CHECK(rc == KP_ENOTOURS || rc == KP_ECORRUPT,
			      "free of interior pointer %zu into a %zu-byte block: %d", offs[o], sizes[i], rc);
			CHECK(kt_events_count(pool, KP_EV_NONE) >= 1, "interior free (%zu/%zu): no event", offs[o],
			      sizes[i]);
		}
		CHECK(kt_verify(b, sizes[i], 9) == KT_OK, "interior frees damaged the %zu-byte block", sizes[i]);
		CHECK(kp_usable_size(pool, b) >= sizes[i], "block no longer live after interior frees");
		CHECK(kp_free(pool, b) == 0, "the real free after interior frees (%zu)", sizes[i]);
	}
	/* the pool still works, and balances */
	void *blk[100];
	for (int i = 0; i < 100; i++) {
		blk[i] = kp_alloc(pool, (size_t)i * 37, 0);
		CHECK(blk[i] != NULL, "alloc after invalid frees");
	}
	for (int i = 0; i < 100; i++)
		CHECK(kp_free(pool, blk[i]) == 0, "free after invalid frees");
	kp_thread_flush(pool);
	CHECK(kt_stat(pool, "primary.in_use_bytes") == 0, "in_use_bytes after invalid-free tests");
	kp_destroy(other);
	kp_destroy(pool);
}

int main(void)
{
	RUN(test_size_zero);
	RUN(test_small_sweep);
	RUN(test_boundary_sweep);
	RUN(test_zero);
	RUN(test_aligned_free_reuse);
	RUN(test_aligned);
	RUN(test_huge_sizes);
	RUN(test_realloc);
	RUN(test_realloc_huge_moves_pages);
	RUN(test_realloc_large_in_place);
	RUN(test_huge_cache);
	RUN(test_huge_realloc_race);
	RUN(test_large_shrink_race);
	RUN(test_prefault_option);
	RUN(test_double_free);
	RUN(test_invalid_free);
	RUN(test_two_threads);
	return ktest_summary();
}
