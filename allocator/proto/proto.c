/*
 * proto.c - a prototype small-object allocator with kpool's integrity
 * contract and its metadata out of line (README.md: design, measurements).
 *
 * Memory: 4 MiB data segments, each cut into 64 KiB slices; a span of one or
 * more slices holds blocks of one size class. Nothing of the allocator lives
 * in a data segment: each segment's metadata (the span records, each span's
 * free stack of block indices and its per-block records) is in a mapping of
 * its own, fenced by a guard page on either side. A flat segment map (one
 * pointer per 4 MiB of the 47-bit address space, in .bss, faulted in on use)
 * takes a pointer to its segment's metadata: a pointer the map does not know
 * is not ours.
 *
 * The checks, each switchable at compile time to measure what it costs:
 *  PROTO_CHECK_PTR   a freed pointer must be the start of a block of a live
 *                    span (segment map, slice map, index * size == offset).
 *  PROTO_CHECK_DFREE the per-block record (out of line) holds an allocated
 *                    bit: a second free of a block is found exactly.
 *  PROTO_CANARY      8 bytes after the request hold a canary checked at free:
 *                    1 = a per-block secret kept in the block's record (drawn
 *                    by AES under the process key when the span is made),
 *                    2 = K(address), AES-128 (AES-NI) under the process key,
 *                    computed at malloc and at free, 0 = none.
 * The free lists are index stacks in the metadata mapping: no link lives in
 * a free block, so none can be forged. No system call on malloc/free once the
 * spans exist (os_calls counts every one).
 *
 * Not a product: no fork handlers, a dead thread's heap is leaked, no span is
 * ever given back, cross-thread frees go through an atomic list per span.
 */
#define _GNU_SOURCE
#include "proto.h"

#include <errno.h>
#include <immintrin.h>
#include <malloc.h>
#include <stdbool.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <unistd.h>

#ifndef PROTO_CHECK_PTR
#define PROTO_CHECK_PTR 1
#endif
#ifndef PROTO_CHECK_DFREE
#define PROTO_CHECK_DFREE 1
#endif
#ifndef PROTO_CANARY
#define PROTO_CANARY 1
#endif

#define EXPORT __attribute__((visibility("default")))
#define LIKELY(x) __builtin_expect(!!(x), 1)
#define UNLIKELY(x) __builtin_expect(!!(x), 0)
#define NOINLINE __attribute__((noinline, cold))

#define SEG_SHIFT 22 /* 4 MiB segments: mimalloc's size; 64 slices each */
#define SEG_SIZE (1ul << SEG_SHIFT)
#define SLICE_SHIFT 16 /* 64 KiB: 4096 blocks of 16 B, an index fits 16 bits */
#define SLICE_SIZE (1ul << SLICE_SHIFT)
#define NSLICES (SEG_SIZE / SLICE_SIZE)
#define SEGMAP_N (1ul << (47 - SEG_SHIFT))     /* user addresses are below 2^47 */
#define SLICEMAP_N (1ul << (47 - SLICE_SHIFT)) /* 2^31 entries: 16 GiB, MAP_NORESERVE */
#define PAGE 4096ul
/* Metadata reserve per segment, untouched pages cost nothing: 64 slices of the
 * 16-byte class, 4096 blocks each of (2 B stack + 16 B record) = 4.5 MiB. */
#define META_RESERVE (6ul << 20)
#define CANARY_SZ (PROTO_CANARY ? 8u : 0u)
#define SMALL_MAX 65536u /* larger requests: a mapping of their own */
#define TBL_MAX (1024u - CANARY_SZ)
#define NCLASS 49	    /* 16..256 by 16, then 4 per doubling up to 80 KiB */
#define ST_FREE 0xffffffffu /* a block's state when free; else its request size */
#define SENT 0xffffu	    /* stack[0] of every span: the stack is empty when sp points at it */
#define OWN_FULL 1u	    /* in page->owner: retired from cur, in no list; free relists it */

struct brec { /* one per block, out of line */
#if PROTO_CANARY == 1
	uint64_t canary;
#endif
	uint32_t state; /* the request size, or ST_FREE */
	uint32_t next;	/* cross-thread free list: index + 1 */
};

struct heap;
struct page { /* a span: the first block, its size, its free stack */
	uint8_t *start;
	uint64_t recip; /* ceil(2^40 / bsize): offset * recip >> 40 = index */
	uint32_t bsize, nblocks;
	uint16_t *sp;	    /* the top of the stack of free block indices */
	uint16_t *stack0;   /* its bottom: the sentinel */
	uint32_t relist_at; /* free blocks a retired span needs to be listed again */
	struct brec *rec;
	/* the owning thread's thread pointer (%fs:0), | OWN_FULL when retired:
	 * free's one compare says "local and listed" */
	uintptr_t owner;
	struct heap *heap;
	struct page *next;	 /* in the heap's avail list */
	_Atomic uint32_t remote; /* cross-thread frees: index + 1 of the head */
	uint32_t cls;
	struct page *_Atomic dirty_next;
};

struct segment {
	uint8_t *base;
	size_t huge_size, huge_req; /* huge: one block at base */
	uint64_t huge_canary;
	uint8_t *bump, *end;	     /* metadata arrays of the spans */
	uint32_t used;		     /* slices given to spans */
	struct page *slice[NSLICES]; /* span of each slice, NULL if none */
	struct page pages[NSLICES];
};

struct heap {
	struct page *direct[65]; /* by (n + canary + 15) >> 4: cur of that class */
	struct page *cur[NCLASS];
	uintptr_t self; /* the thread pointer */
	struct page *avail[NCLASS];
	struct segment *seg;
	struct page *_Atomic dirty; /* spans with cross-thread frees */
};

static const uint32_t class_size[NCLASS] = {16,	   32,	  48,	 64,	80,    96,    112,   128,   144,   160,
					    176,   192,	  208,	 224,	240,   256,   320,   384,   448,   512,
					    640,   768,	  896,	 1024,	1280,  1536,  1792,  2048,  2560,  3072,
					    3584,  4096,  5120,	 6144,	7168,  8192,  10240, 12288, 14336, 16384,
					    20480, 24576, 28672, 32768, 40960, 49152, 57344, 65536, 81920};
/* class of q * 16 bytes, q = 0..64: every class boundary up to 1 KiB is a
 * multiple of 16, so (n + 15) >> 4 indexes it. */
static const uint8_t class_tbl[65] = {0,  0,  1,  2,  3,  4,  5,  6,  7,  8,  9,  10, 11, 12, 13, 14, 15,
				      16, 16, 16, 16, 17, 17, 17, 17, 18, 18, 18, 18, 19, 19, 19, 19, 20,
				      20, 20, 20, 20, 20, 20, 20, 21, 21, 21, 21, 21, 21, 21, 21, 22, 22,
				      22, 22, 22, 22, 22, 22, 23, 23, 23, 23, 23, 23, 23, 23};

static uint16_t empty_stack = SENT;
static struct page empty_page = {.sp = &empty_stack}; /* every malloc of a new thread goes slow */
static struct heap empty_heap = {.direct = {[0 ... 64] = &empty_page}, .cur = {[0 ... NCLASS - 1] = &empty_page}};
static __thread struct heap *tls_heap __attribute__((tls_model("initial-exec"))) = &empty_heap;

static struct segment *segmap[SEGMAP_N]; /* 256 MiB of .bss, a page per 2 GiB used */
/* The span of every 64 KiB slice of the address space, or NULL: free's one
 * lookup. slicemap_n is 0 until the map exists, so a free before the first
 * malloc (of NULL, or of a foreign pointer) fails the bound check. */
static struct page **slicemap;
static uintptr_t slicemap_n;
static __m128i aes_rk[11];
static _Atomic int inited;
static atomic_flag glock = ATOMIC_FLAG_INIT; /* segments, the segment map */
static _Atomic uint64_t span_gen;
static _Atomic uint64_t n_errors[PROTO_ERR_KINDS];
static _Atomic uint64_t n_os_calls;
static int contain; /* count and leak instead of abort */

/* ---- keys and OS --------------------------------------------------------- */

static inline uint64_t aes_k(uint64_t m)
{
	__m128i x = _mm_xor_si128(_mm_cvtsi64_si128((long long)m), aes_rk[0]);
	x = _mm_aesenc_si128(x, aes_rk[1]);
	x = _mm_aesenc_si128(x, aes_rk[2]);
	x = _mm_aesenc_si128(x, aes_rk[3]);
	x = _mm_aesenc_si128(x, aes_rk[4]);
	x = _mm_aesenc_si128(x, aes_rk[5]);
	x = _mm_aesenc_si128(x, aes_rk[6]);
	x = _mm_aesenc_si128(x, aes_rk[7]);
	x = _mm_aesenc_si128(x, aes_rk[8]);
	x = _mm_aesenc_si128(x, aes_rk[9]);
	x = _mm_aesenclast_si128(x, aes_rk[10]);
	return (uint64_t)_mm_cvtsi128_si64(x);
}

static __m128i aes_expand(__m128i k, __m128i t)
{
	t = _mm_shuffle_epi32(t, 0xff);
	k = _mm_xor_si128(k, _mm_slli_si128(k, 4));
	k = _mm_xor_si128(k, _mm_slli_si128(k, 4));
	k = _mm_xor_si128(k, _mm_slli_si128(k, 4));
	return _mm_xor_si128(k, t);
}

#define AES_STEP(i, rcon) aes_rk[i] = aes_expand(aes_rk[i - 1], _mm_aeskeygenassist_si128(aes_rk[i - 1], rcon))
static void key_init(void)
{
	uint64_t k[2] = {0, 0};
	n_os_calls++;
	if (getrandom(k, sizeof(k), 0) != sizeof(k))
		abort();
	aes_rk[0] = _mm_set_epi64x((long long)k[1], (long long)k[0]);
	AES_STEP(1, 0x01);
	AES_STEP(2, 0x02);
	AES_STEP(3, 0x04);
	AES_STEP(4, 0x08);
	AES_STEP(5, 0x10);
	AES_STEP(6, 0x20);
	AES_STEP(7, 0x40);
	AES_STEP(8, 0x80);
	AES_STEP(9, 0x1b);
	AES_STEP(10, 0x36);
}

static void lock(void)
{
	while (atomic_flag_test_and_set_explicit(&glock, memory_order_acquire))
		_mm_pause();
}
static void unlock(void)
{
	atomic_flag_clear_explicit(&glock, memory_order_release);
}

static void *os_map(size_t n)
{
	n_os_calls++;
	void *p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	return p == MAP_FAILED ? NULL : p;
}
static void os_unmap(void *p, size_t n)
{
	if (n) {
		n_os_calls++;
		munmap(p, n);
	}
}

/* n bytes aligned to SEG_SIZE. */
static uint8_t *os_map_aligned(size_t n)
{
	uint8_t *raw = os_map(n + SEG_SIZE);
	if (!raw)
		return NULL;
	uint8_t *p = (uint8_t *)(((uintptr_t)raw + SEG_SIZE - 1) & ~(SEG_SIZE - 1));
	os_unmap(raw, (size_t)(p - raw));
	os_unmap(p + n, (size_t)(raw + n + SEG_SIZE - (p + n)));
	return p;
}

/* A metadata mapping of n bytes with a PROT_NONE page on either side. */
static void *os_map_guarded(size_t n)
{
	uint8_t *p = os_map(n + 2 * PAGE);
	if (!p)
		return NULL;
	n_os_calls += 2;
	if (mprotect(p, PAGE, PROT_NONE) || mprotect(p + PAGE + n, PAGE, PROT_NONE))
		abort();
	return p + PAGE;
}

static void init(void)
{
	lock();
	if (!inited) {
		key_init();
		slicemap = os_map_guarded(SLICEMAP_N * sizeof(*slicemap));
		if (!slicemap)
			abort();
		slicemap_n = SLICEMAP_N;
		contain = getenv("PROTO_CONTAIN") != NULL;
		inited = 1;
	}
	unlock();
}

/* ---- violations ---------------------------------------------------------- */

static const char *const err_name[PROTO_ERR_KINDS] = {"invalid pointer", "double free", "write past the end"};
NOINLINE static void violation(int kind, const void *p)
{
	n_errors[kind]++;
	if (contain) /* the block stays allocated: never handed out again */
		return;
	char line[96];
	int n = snprintf(line, sizeof(line), "proto: %s at free(%p)\n", err_name[kind], p);
	if (write(2, line, (size_t)n) < 0)
		n = 0;
	abort();
}

/* ---- spans and segments -------------------------------------------------- */

static struct segment *segment_new(size_t data, size_t meta)
{
	uint8_t *base = os_map_aligned(data);
	if (!base)
		return NULL;
	struct segment *s = os_map_guarded(meta);
	if (!s) {
		os_unmap(base, data);
		return NULL;
	}
	s->base = base;
	s->bump = (uint8_t *)(((uintptr_t)(s + 1) + 63) & ~63ul);
	s->end = (uint8_t *)s + meta;
	lock();
	for (size_t off = 0; off < data; off += SEG_SIZE)
		segmap[((uintptr_t)base + off) >> SEG_SHIFT] = s;
	unlock();
	return s;
}

static void *meta_take(struct segment *s, size_t n)
{
	uint8_t *p = s->bump;
	if ((size_t)(s->end - p) < n)
		return NULL;
	s->bump = (uint8_t *)(((uintptr_t)p + n + 63) & ~63ul);
	return p;
}

static struct page *span_new(struct heap *h, uint32_t cls)
{
	uint32_t bs = class_size[cls];
	/* at least 32 blocks a span: fewer spans to switch between when the
	 * frees of a class are spread over many (kpbench b); untouched pages of
	 * a span cost no memory */
	uint32_t nsl = (uint32_t)((32ul * bs + SLICE_SIZE - 1) / SLICE_SIZE);
	uint32_t nb = (uint32_t)(nsl * SLICE_SIZE / bs);
	size_t need = (nb + 1) * sizeof(uint16_t) + 64 + (nb + 1) * sizeof(struct brec);
	struct segment *s = h->seg;
	if (!s || s->used + nsl > NSLICES || (size_t)(s->end - s->bump) < need) {
		s = segment_new(SEG_SIZE, META_RESERVE);
		if (!s)
			return NULL;
		h->seg = s;
	}
	struct page *pg = &s->pages[s->used];
	pg->start = s->base + (size_t)s->used * SLICE_SIZE;
	pg->bsize = bs;
	pg->recip = ((1ull << 40) + bs - 1) / bs;
	pg->nblocks = nb;
	uint16_t *stack = meta_take(s, (nb + 1) * sizeof(uint16_t));
	/* rec[nb]: a sentinel, never allocated, so the end check of free is the
	 * double-free check (offset nb * bsize is in the span's tail). */
	pg->rec = meta_take(s, (nb + 1) * sizeof(struct brec));
	pg->heap = h;
	pg->owner = h->self;
	pg->cls = cls;
	stack[0] = SENT;
	for (uint32_t i = 0; i < nb; i++)
		stack[i + 1] = (uint16_t)(nb - 1 - i);
	pg->sp = stack + nb;
	pg->stack0 = stack;
	pg->relist_at = nb / 8 ? nb / 8 : 1;
	for (uint32_t i = 0; i <= nb; i++)
		pg->rec[i].state = ST_FREE;
#if PROTO_CANARY == 1
	uint64_t gen = atomic_fetch_add(&span_gen, 1) << 47;
	for (uint32_t i = 0; i < nb; i++)
		pg->rec[i].canary = aes_k(gen ^ (uintptr_t)(pg->start + (size_t)i * bs));
#endif
	for (uint32_t i = 0; i < nsl; i++) {
		s->slice[s->used + i] = pg;
		slicemap[((uintptr_t)pg->start >> SLICE_SHIFT) + i] = pg;
	}
	s->used += nsl;
	return pg;
}

/* ---- cross-thread frees -------------------------------------------------- */

static void free_remote(struct page *pg, uint32_t idx, struct brec *r, uint32_t st)
{
	if (!__atomic_compare_exchange_n(&r->state, &st, ST_FREE, false, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED)) {
		violation(PROTO_ERR_DOUBLE_FREE, pg->start + (size_t)idx * pg->bsize);
		return;
	}
	uint32_t old = atomic_load_explicit(&pg->remote, memory_order_relaxed);
	do
		r->next = old;
	while (!atomic_compare_exchange_weak_explicit(&pg->remote, &old, idx + 1, memory_order_release,
						      memory_order_relaxed));
	if (old == 0) { /* first on the list: tell the owner about the span */
		struct heap *h = pg->heap;
		struct page *head = atomic_load_explicit(&h->dirty, memory_order_relaxed);
		do
			atomic_store_explicit(&pg->dirty_next, head, memory_order_relaxed);
		while (!atomic_compare_exchange_weak_explicit(&h->dirty, &head, pg, memory_order_release,
							      memory_order_relaxed));
	}
}

static void page_relist(struct heap *h, struct page *pg)
{
	pg->owner = h->self;
	pg->next = h->avail[pg->cls];
	h->avail[pg->cls] = pg;
}

/* The owner takes back what other threads freed. The next link of a span
 * is read before its list is taken: after that a freer may relist it. */
static void drain_remote(struct heap *h)
{
	struct page *pg = atomic_exchange_explicit(&h->dirty, NULL, memory_order_acquire);
	while (pg) {
		struct page *nx = atomic_load_explicit(&pg->dirty_next, memory_order_relaxed);
		uint32_t i = atomic_exchange_explicit(&pg->remote, 0, memory_order_acquire);
		while (i) {
			*++pg->sp = (uint16_t)(i - 1);
			i = pg->rec[i - 1].next;
		}
		if (pg->owner & OWN_FULL)
			page_relist(h, pg);
		pg = nx;
	}
}

/* ---- malloc -------------------------------------------------------------- */

/* Pop idx, the top of pg's stack (not SENT). */
static inline void *alloc_from(struct page *pg, uint16_t *sp, uint32_t idx, size_t n)
{
	pg->sp = sp - 1;
	uint8_t *p = pg->start + (size_t)idx * pg->bsize;
	struct brec *r = &pg->rec[idx];
	r->state = (uint32_t)n;
#if PROTO_CANARY == 1
	memcpy(p + n, &r->canary, 8);
#elif PROTO_CANARY == 2
	uint64_t c = aes_k((uintptr_t)p);
	memcpy(p + n, &c, 8);
#endif
	return p;
}

static struct heap *heap_new(void)
{
	if (!inited)
		init();
	struct heap *h = os_map_guarded((sizeof(struct heap) + PAGE - 1) & ~(PAGE - 1));
	if (!h)
		return NULL;
	for (int c = 0; c < NCLASS; c++)
		h->cur[c] = &empty_page;
	for (int q = 0; q < 65; q++)
		h->direct[q] = &empty_page;
	h->self = (uintptr_t)__builtin_thread_pointer();
	tls_heap = h;
	return h;
}

NOINLINE static void *alloc_slow(uint32_t cls, size_t n)
{
	struct heap *h = tls_heap;
	if (h == &empty_heap && !(h = heap_new()))
		goto oom;
	struct page *pg = h->cur[cls];
	if (*pg->sp != SENT)
		return alloc_from(pg, pg->sp, *pg->sp, n);
	if (pg != &empty_page)
		pg->owner = h->self | OWN_FULL;
	if (!h->avail[cls])
		drain_remote(h);
	pg = h->avail[cls];
	if (pg)
		h->avail[cls] = pg->next;
	else if (!(pg = span_new(h, cls)))
		goto oom;
	h->cur[cls] = pg;
	if (class_size[cls] <= 1024) /* the sizes of class cls, by 16 */
		for (uint32_t q = cls ? class_size[cls - 1] / 16 + 1 : 0; q <= class_size[cls] / 16; q++)
			h->direct[q] = pg;
	return alloc_from(pg, pg->sp, *pg->sp, n);
oom:
	errno = ENOMEM;
	return NULL;
}

/* One mapping of its own, 4 MiB aligned so the segment map knows it. */
NOINLINE static void *huge_alloc(size_t n)
{
	if (!inited)
		init();
	if (n > ((size_t)1 << 46))
		goto oom;
	/* whole 4 MiB units: no other mapping shares a unit the segment map
	 * gives to this block (untouched pages cost nothing) */
	size_t total = (n + CANARY_SZ + SEG_SIZE - 1) & ~(SEG_SIZE - 1);
	struct segment *s = segment_new(total, PAGE);
	if (!s)
		goto oom;
	s->huge_size = total;
	s->huge_req = n;
	s->huge_canary = aes_k((uintptr_t)s->base ^ (atomic_fetch_add(&span_gen, 1) << 47));
#if PROTO_CANARY
	memcpy(s->base + n, &s->huge_canary, 8);
#endif
	return s->base;
oom:
	errno = ENOMEM;
	return NULL;
}

static inline uint32_t class_of(size_t n) /* n: request + canary, > 1 KiB */
{
	size_t m = n - 1;
	uint32_t b = 63u - (uint32_t)__builtin_clzl(m);
	return 16u + (b - 8) * 4 + (uint32_t)((m >> (b - 2)) & 3);
}

static inline void *alloc_cls(uint32_t cls, size_t n)
{
	struct page *pg = tls_heap->cur[cls];
	uint16_t *sp = pg->sp;
	uint32_t idx = *sp;
	if (UNLIKELY(idx == SENT))
		return alloc_slow(cls, n);
	return alloc_from(pg, sp, idx, n);
}

EXPORT void *malloc(size_t n)
{
	if (LIKELY(n <= TBL_MAX)) {
		size_t q = (n + CANARY_SZ + 15) >> 4;
		struct page *pg = tls_heap->direct[q];
		uint16_t *sp = pg->sp;
		uint32_t idx = *sp;
		if (UNLIKELY(idx == SENT))
			return alloc_slow(class_tbl[q], n);
		return alloc_from(pg, sp, idx, n);
	}
	if (n <= SMALL_MAX)
		return alloc_cls(class_of(n + CANARY_SZ), n);
	return huge_alloc(n);
}

/* ---- free ---------------------------------------------------------------- */

static void huge_free(struct segment *s, void *p)
{
	if ((uint8_t *)p != s->base) {
		violation(PROTO_ERR_INVALID, p);
		return;
	}
#if PROTO_CANARY
	if (memcmp(s->base + s->huge_req, &s->huge_canary, 8)) {
		violation(PROTO_ERR_OVERFLOW, p);
		return;
	}
#endif
	lock();
	for (size_t off = 0; off < s->huge_size; off += SEG_SIZE)
		segmap[((uintptr_t)s->base + off) >> SEG_SHIFT] = NULL;
	unlock();
	os_unmap(s->base, s->huge_size);
	os_unmap((uint8_t *)s - PAGE, 3 * PAGE);
}

NOINLINE static void free_slow(void *p)
{
	uintptr_t a = (uintptr_t)p;
	if (!p)
		return;
	struct segment *s = (a >> SEG_SHIFT) < SEGMAP_N ? segmap[a >> SEG_SHIFT] : NULL;
	if (s && s->huge_size)
		huge_free(s, p);
	else
		violation(PROTO_ERR_INVALID, p);
}

/* Where p's block is, or NULL (a violation counted) if p is no block start. */
static inline struct page *block_of(void *p, uint32_t *idx_out)
{
	uintptr_t a = (uintptr_t)p;
	if (UNLIKELY((a >> SLICE_SHIFT) >= slicemap_n))
		return NULL;
	struct page *pg = slicemap[a >> SLICE_SHIFT];
	if (UNLIKELY(!pg))
		return NULL;
	uintptr_t off = a - (uintptr_t)pg->start;
	uint32_t idx = (uint32_t)((off * pg->recip) >> 40);
#if PROTO_CHECK_PTR
	/* idx == nblocks (the tail) lands on the sentinel record: free's
	 * allocated-bit check refuses it; without that check, it is checked here. */
	if (UNLIKELY((uintptr_t)idx * pg->bsize != off || (!PROTO_CHECK_DFREE && idx >= pg->nblocks)))
		return NULL;
#endif
	*idx_out = idx;
	return pg;
}

/* Not the owner's listed span: the owner's retired one (relist it), or
 * another thread's (its cross-thread list). */
NOINLINE static void free_other(struct page *pg, uint32_t idx, struct brec *r, uint32_t st)
{
	struct heap *h = tls_heap;
	if (pg->heap != h) {
		free_remote(pg, idx, r, st);
		return;
	}
#if PROTO_CHECK_DFREE
	r->state = ST_FREE;
#endif
	*++pg->sp = (uint16_t)idx;
	/* Relisted once an eighth of it is free: a span with one free block
	 * would send the next malloc of its class down the slow path again. */
	if ((uint32_t)(pg->sp - pg->stack0) >= pg->relist_at)
		page_relist(h, pg);
}

EXPORT void free(void *p)
{
	uint32_t idx;
	struct page *pg = block_of(p, &idx);
	if (UNLIKELY(!pg)) {
		free_slow(p);
		return;
	}
	struct brec *r = &pg->rec[idx];
	uint32_t st = r->state;
#if PROTO_CHECK_DFREE
	if (UNLIKELY(st == ST_FREE)) {
		violation(idx < pg->nblocks ? PROTO_ERR_DOUBLE_FREE : PROTO_ERR_INVALID, p);
		return;
	}
#endif
#if PROTO_CANARY
	uint64_t c;
	memcpy(&c, (uint8_t *)p + st, 8);
#if PROTO_CANARY == 1
	uint64_t want = r->canary;
#else
	uint64_t want = aes_k((uintptr_t)p);
#endif
	if (UNLIKELY(c != want)) {
		violation(PROTO_ERR_OVERFLOW, p);
		return;
	}
#endif
	if (UNLIKELY(pg->owner != (uintptr_t)__builtin_thread_pointer())) {
		free_other(pg, idx, r, st);
		return;
	}
#if PROTO_CHECK_DFREE
	r->state = ST_FREE;
#endif
	uint16_t *sp = pg->sp + 1;
	*sp = (uint16_t)idx;
	pg->sp = sp;
}

/* ---- the rest of the C API ----------------------------------------------- */

EXPORT size_t malloc_usable_size(void *p)
{
	uint32_t idx;
	struct page *pg = block_of(p, &idx);
	if (pg)
		return pg->rec[idx].state == ST_FREE ? 0 : pg->rec[idx].state;
	uintptr_t a = (uintptr_t)p;
	struct segment *s = p && (a >> SEG_SHIFT) < SEGMAP_N ? segmap[a >> SEG_SHIFT] : NULL;
	return s && s->huge_size && s->base == p ? s->huge_req : 0;
}

EXPORT void *calloc(size_t k, size_t n)
{
	size_t t;
	if (__builtin_mul_overflow(k, n, &t)) {
		errno = ENOMEM;
		return NULL;
	}
	void *p = malloc(t);
	if (p)
		memset(p, 0, t);
	return p;
}

/* In place when the block still fits (the canary checked first, then
 * moved); else a new block, a copy, and free's checks. */
EXPORT void *realloc(void *p, size_t n)
{
	if (!p)
		return malloc(n);
	uint32_t idx;
	struct page *pg = block_of(p, &idx);
	uintptr_t a = (uintptr_t)p;
	struct segment *s = !pg && (a >> SEG_SHIFT) < SEGMAP_N ? segmap[a >> SEG_SHIFT] : NULL;
	uint32_t *state = NULL;
	size_t old = 0, room = 0;
	const void *secret = NULL;
	if (pg && pg->rec[idx].state != ST_FREE) {
		state = &pg->rec[idx].state;
		old = *state;
		room = pg->bsize;
#if PROTO_CANARY == 1
		secret = &pg->rec[idx].canary;
#endif
	} else if (s && s->huge_size && s->base == p && n > SMALL_MAX) {
		old = s->huge_req;
		room = s->huge_size;
		secret = &s->huge_canary;
	}
	(void)secret; /* without a canary */
	/* a span's block: not twice too big; a huge block: anything that fits
	 * its mapping (its untouched pages cost nothing) */
	if (room && n + CANARY_SZ <= room && (!state || n + CANARY_SZ > room / 2)) {
#if PROTO_CANARY
		uint64_t want = 0;
		if (PROTO_CANARY == 2 && state)
			want = aes_k(a);
		else
			memcpy(&want, secret, 8);
		if (memcmp((uint8_t *)p + old, &want, 8)) {
			violation(PROTO_ERR_OVERFLOW, p);
			return NULL;
		}
		memcpy((uint8_t *)p + n, &want, 8);
#endif
		if (state)
			*state = (uint32_t)n;
		else
			s->huge_req = n;
		return p;
	}
	old = malloc_usable_size(p);
	void *q = malloc(n);
	if (!q)
		return NULL;
	memcpy(q, p, old < n ? old : n);
	free(p);
	return q;
}

EXPORT void *reallocarray(void *p, size_t k, size_t n)
{
	size_t t;
	if (__builtin_mul_overflow(k, n, &t)) {
		errno = ENOMEM;
		return NULL;
	}
	return realloc(p, t);
}

/* Power-of-two classes hold blocks aligned to their size (spans start on
 * 64 KiB); beyond, the huge path is 4 MiB aligned. */
EXPORT void *memalign(size_t al, size_t n)
{
	if (al <= 16)
		return malloc(n);
	if (al & (al - 1) || al > SEG_SIZE) {
		errno = EINVAL;
		return NULL;
	}
	size_t need = n + CANARY_SZ;
	if (need < al)
		need = al;
	if (need <= SMALL_MAX && al <= SLICE_SIZE) {
		size_t b = 16;
		while (b < need)
			b <<= 1;
		uint32_t cls = b <= 256 ? (uint32_t)(b >> 4) - 1 : class_of(b);
		return alloc_cls(cls, n);
	}
	return huge_alloc(n < SMALL_MAX + 1 ? SMALL_MAX + 1 : n); /* reqsize kept: usable >= n */
}

EXPORT int posix_memalign(void **out, size_t al, size_t n)
{
	if (al < sizeof(void *) || (al & (al - 1)))
		return EINVAL;
	void *p = memalign(al, n);
	if (!p)
		return ENOMEM;
	*out = p;
	return 0;
}

EXPORT void *aligned_alloc(size_t al, size_t n)
{
	return memalign(al, n);
}
EXPORT void *valloc(size_t n)
{
	return memalign(PAGE, n);
}
EXPORT void *pvalloc(size_t n)
{
	return memalign(PAGE, (n + PAGE - 1) & ~(PAGE - 1));
}

/* ---- the test interface (proto.h) ---------------------------------------- */

EXPORT uint64_t proto_errors(int kind)
{
	return kind >= 0 && kind < PROTO_ERR_KINDS ? n_errors[kind] : 0;
}
EXPORT uint64_t proto_os_calls(void)
{
	return n_os_calls;
}
EXPORT void proto_set_contain(int on)
{
	if (!inited)
		init();
	contain = on;
}
EXPORT void *proto_meta_of(const void *p)
{
	uintptr_t a = (uintptr_t)p;
	return (a >> SEG_SHIFT) < SEGMAP_N ? segmap[a >> SEG_SHIFT] : NULL;
}
