/*
 * fuzz_model.c - the operation interpreter behind the fuzz entry points, and
 * the shadow model it checks libkpool against.
 *
 * An input is a stream of operations: one byte picks the operation (from the
 * table of the interpreter's mode), the next bytes its slot and arguments.
 * Sizes are decoded so that most are small, many sit on a size-class
 * boundary, and a few are large, huge or impossible. Every block the
 * interpreter holds has a slot: its pointer, the size asked for, the
 * alignment, and a fill byte written over its head and tail; whatever the
 * pool does, a live block must keep its bytes, its alignment and a usable
 * size at least the request, and never overlap another live block.
 */
#include "fuzz_model.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

/* ---- input ----------------------------------------------------------------- */

uint8_t fz_u8(fz_in *r)
{
	if (!r->n)
		return 0;
	r->n--;
	return *r->p++;
}

uint16_t fz_u16(fz_in *r)
{
	uint16_t lo = fz_u8(r);
	return (uint16_t)(lo | (uint16_t)fz_u8(r) << 8);
}

/* ---- the operations ---------------------------------------------------------- */

enum op {
	OP_ALLOC,
	OP_ALLOC_ZERO,
	OP_ALIGNED,
	OP_REALLOC,
	OP_REALLOC_ZERO,
	OP_FREE,
	OP_CRIT_ENTER,
	OP_CRIT_EXIT,
	OP_ALLOC_CRIT,
	OP_USABLE,
	OP_VERIFY,
	OP_STATS,
	OP_FLUSH,
	OP_DAEMON,
	/* FZ_HANDOFF */
	OP_GIVE,
	OP_TAKE,
	/* FZ_MISUSE */
	OP_STALE,
	OP_INTERIOR_FREE,
	OP_FOREIGN_FREE,
	OP_OVERFLOW,
	OP_UAF_WRITE,
	/* FZ_FAULTS */
	OP_OS_FAULT,
	OP_CORRUPT,
	OP__N
};

static const char *const op_name[OP__N] = {
	"alloc",	"alloc_zero",  "aligned",    "realloc",	 "realloc_zero", "free",
	"crit_enter",	"crit_exit",   "alloc_crit", "usable",	 "verify",	 "stats",
	"flush",	"daemon_step", "give",	     "take",	 "stale_free",	 "interior_free",
	"foreign_free", "overflow",    "uaf_write",  "os_fault", "corrupt",
};

/* Operation tables: allocation and free appear more than once, so a random
 * input keeps a few blocks live; the costly ones (stats formats JSON, a
 * daemon pass may unmap and so refault a segment, a flush walks every bin)
 * once. */
static const uint8_t ops_api[32] = {
	OP_ALLOC,	 OP_ALLOC,	OP_ALLOC,     OP_ALLOC,	    OP_ALLOC,	   OP_ALLOC_ZERO, OP_ALLOC_ZERO,
	OP_ALIGNED,	 OP_ALIGNED,	OP_ALIGNED,   OP_REALLOC,   OP_REALLOC,	   OP_REALLOC,	  OP_REALLOC_ZERO,
	OP_REALLOC_ZERO, OP_FREE,	OP_FREE,      OP_FREE,	    OP_FREE,	   OP_FREE,	  OP_FREE,
	OP_CRIT_ENTER,	 OP_CRIT_ENTER, OP_CRIT_EXIT, OP_CRIT_EXIT, OP_ALLOC_CRIT, OP_ALLOC_CRIT, OP_USABLE,
	OP_VERIFY,	 OP_STATS,	OP_FLUSH,     OP_DAEMON};
static const uint8_t ops_faults[32] = {
	OP_ALLOC,	  OP_ALLOC,	   OP_ALLOC,	OP_ALLOC,     OP_ALIGNED,   OP_ALIGNED,	   OP_REALLOC,
	OP_REALLOC,	  OP_FREE,	   OP_FREE,	OP_FREE,      OP_FREE,	    OP_CRIT_ENTER, OP_CRIT_EXIT,
	OP_ALLOC_CRIT,	  OP_USABLE,	   OP_VERIFY,	OP_FLUSH,     OP_DAEMON,    OP_STALE,	   OP_STALE,
	OP_INTERIOR_FREE, OP_FOREIGN_FREE, OP_OVERFLOW, OP_OVERFLOW,  OP_UAF_WRITE, OP_UAF_WRITE,  OP_OS_FAULT,
	OP_OS_FAULT,	  OP_CORRUPT,	   OP_CORRUPT,	OP_ALLOC_ZERO};
static const uint8_t ops_threads[32] = {
	OP_ALLOC,     OP_ALLOC,	     OP_ALLOC,	OP_ALLOC,  OP_ALLOC_ZERO, OP_ALIGNED, OP_ALIGNED, OP_REALLOC,
	OP_REALLOC,   OP_REALLOC,    OP_FREE,	OP_FREE,   OP_FREE,	  OP_FREE,    OP_FREE,	  OP_CRIT_ENTER,
	OP_CRIT_EXIT, OP_ALLOC_CRIT, OP_USABLE, OP_VERIFY, OP_FLUSH,	  OP_DAEMON,  OP_GIVE,	  OP_GIVE,
	OP_GIVE,      OP_GIVE,	     OP_TAKE,	OP_TAKE,   OP_TAKE,	  OP_TAKE,    OP_ALLOC,	  OP_FREE};

/* ---- the trace and failures -------------------------------------------------- */

typedef struct note {
	uint8_t op, slot;
	uint64_t a, b;
} note;
static __thread note trace[FZ_TRACE];
static __thread unsigned trace_n;

void fz_note(unsigned op, unsigned slot, uint64_t a, uint64_t b)
{
	trace[trace_n++ % FZ_TRACE] = (note){(uint8_t)op, (uint8_t)slot, a, b};
}

void fz_trace_reset(void)
{
	trace_n = 0;
}

/* The pool the calling thread's interpreter runs on (fz_ctx_init), for the verdict. */
static __thread const fz_pool *cur_pool;

void fz_fail(const char *kind, const char *api, const char *file, int line, const char *fmt, ...)
{
	va_list ap;
	/* The first line is the verdict triage signs with (harness/triage/patterns.py, "kpfuzz"):
	 * the violation's kind and the API call it applies to, whatever path led there. A
	 * violation on a layout:outline pool is "outline-<kind>": the same check failing there is
	 * another bug (outline.c's), and triage files it apart from the inline path's. */
	fprintf(stderr, "==kpfuzz== VIOLATION %s%s in %s (%s:%d): ", cur_pool && cur_pool->outline ? "outline-" : "",
		kind, api, file, line);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\n==kpfuzz== last operations (op slot a b), oldest first:\n");
	unsigned first = trace_n > FZ_TRACE ? trace_n - FZ_TRACE : 0;
	for (unsigned i = first; i < trace_n; i++) {
		note *n = &trace[i % FZ_TRACE];
		fprintf(stderr, "==kpfuzz==   #%u %s slot=%u a=%#llx b=%#llx\n", i,
			n->op < OP__N ? op_name[n->op] : "?", n->slot, (unsigned long long)n->a,
			(unsigned long long)n->b);
	}
	/* kp_last_error is only set by a failing call: it says something about this
	 * violation only when the call refused (or failed the wrong way). */
	if (!strcmp(kind, "refused") || !strcmp(kind, "wrong-error"))
		fprintf(stderr, "==kpfuzz== last error: %s\n", kp_last_error());
	abort();
}

/* ---- pools ------------------------------------------------------------------- */

kp_pool *fz_pool_get(fz_pool *fp)
{
	if (KP_LIKELY(fp->pool))
		return fp->pool;
	char conf[512];
	const char *use = fp->conf;
	if (fp->log) {
		static int null_fd = -1; /* kept open for the life of the process */
		if (null_fd < 0 && (null_fd = open("/dev/null", O_WRONLY | O_CLOEXEC)) < 0)
			FZ_FAIL("harness", "open", "open /dev/null: %s", strerror(errno));
		if ((size_t)snprintf(conf, sizeof conf, "%s,log_fd:%d", fp->conf, null_fd) >= sizeof conf)
			FZ_FAIL("harness", "kp_create", "the fuzz pool conf '%s' is too long", fp->conf);
		use = conf;
	}
	fp->pool = kp_create(use);
	if (!fp->pool)
		FZ_FAIL("refused", "kp_create", "kp_create refused the fuzz pool conf '%s': %s", use, kp_last_error());
	fp->token = kp_critical_token(fp->pool);
	fp->checks = !strstr(fp->conf, "checks:off");
	fp->poison = strstr(fp->conf, "poison:on") != NULL;
	fp->daemon = !strstr(fp->conf, "daemon:off");
	fp->outline = strstr(fp->conf, "layout:outline") != NULL;
	return fp->pool;
}

void fz_pool_reset(fz_pool *fp)
{
	kp_destroy(fp->pool);
	fp->pool = NULL;
	free(fp->seen);
	fp->seen = NULL;
	fp->nseen = 0;
	fp->seen_full = false;
}

/* The addresses a pool handed out (fz_pool's seen): an open-addressed set
 * of FZ_SEEN, half filled at most (past that, no longer kept: seen_never
 * says false, and a block's non-zero byte is "not-zeroed" as before).
 * Planted 5 (a realloc in place 8 bytes past the room) writes its canary
 * into the next block; when that block was never handed out (an outline
 * span's OL_VIRGIN block, handed out unwritten under KP_ZERO) the damage
 * read as "not-zeroed", planted 8's verdict: the two plants under one
 * signature (s31's CI, test_fuzz_outline). Outline pools only: an inline
 * block's address may never have been handed out while its bytes were
 * another block's (headers, splits), and planted 8 there read
 * "fresh-written" (test_triage_quality, s31's last CI). */
#define FZ_SEEN_BITS 17
#define FZ_SEEN ((size_t)1 << FZ_SEEN_BITS)
static size_t seen_at(const fz_pool *fp, uintptr_t a)
{
	size_t i = (size_t)(((uint64_t)(a >> 4) * 0x9E3779B97F4A7C15ull) >> (64 - FZ_SEEN_BITS));
	while (fp->seen[i] && fp->seen[i] != a)
		i = (i + 1) & (FZ_SEEN - 1);
	return i;
}

static void seen_add(fz_pool *fp, const void *p)
{
	if (fp->seen_full)
		return;
	if (!fp->seen && !(fp->seen = calloc(FZ_SEEN, sizeof *fp->seen))) {
		fp->seen_full = true;
		return;
	}
	size_t i = seen_at(fp, (uintptr_t)p);
	if (fp->seen[i])
		return;
	if (++fp->nseen > FZ_SEEN / 2) {
		fp->seen_full = true;
		return;
	}
	fp->seen[i] = (uintptr_t)p;
}

/* p was never handed out by this pool (as far as the set knows) */
static bool seen_never(const fz_pool *fp, const void *p)
{
	if (fp->seen_full)
		return false;
	return !fp->seen || !fp->seen[seen_at(fp, (uintptr_t)p)]; /* no set yet: nothing handed out */
}

/* ---- contents ------------------------------------------------------------------- */

static bool all_eq(const char *p, size_t n, uint8_t v)
{
	uint64_t w = 0x0101010101010101ull * v, x;
	size_t i = 0;
	for (; i + 8 <= n; i += 8) {
		memcpy(&x, p + i, 8);
		if (x != w)
			return false;
	}
	for (; i < n; i++)
		if ((uint8_t)p[i] != v)
			return false;
	return true;
}

/* The bytes of a block of req bytes that carry its fill: the head, and the
 * tail when the block is longer than the head. */
static void fill(char *p, size_t req, uint8_t tag)
{
	size_t head = req < FZ_HEAD ? req : FZ_HEAD;
	memset(p, tag, head);
	if (req > FZ_HEAD) {
		size_t from = req - FZ_TAIL > FZ_HEAD ? req - FZ_TAIL : FZ_HEAD;
		memset(p + from, tag, req - from);
	}
}

/* Check the fill of a block written with req bytes, over its first limit
 * bytes. Returns the offset of the first wrong byte, or SIZE_MAX. */
static size_t check_fill(const char *p, size_t req, uint8_t tag, size_t limit)
{
	size_t n = req < limit ? req : limit;
	size_t head = n < FZ_HEAD ? n : FZ_HEAD;
	if (!all_eq(p, head, tag)) { /* find the byte */
		for (size_t i = 0; i < head; i++)
			if ((uint8_t)p[i] != tag)
				return i;
	}
	if (req > FZ_HEAD) {
		size_t from = req - FZ_TAIL > FZ_HEAD ? req - FZ_TAIL : FZ_HEAD;
		if (from < n && !all_eq(p + from, n - from, tag))
			for (size_t i = from; i < n; i++)
				if ((uint8_t)p[i] != tag)
					return i;
	}
	return SIZE_MAX;
}

static void verify(fz_ctx *c, unsigned i, const char *why)
{
	fz_slot *s = &c->slot[i];
	size_t bad = check_fill(s->p, s->req, s->tag, s->req);
	if (bad != SIZE_MAX)
		FZ_FAIL("content-damaged", "live_block",
			"%s: block %p (slot %u, %zu bytes) lost its contents at offset %zu: %#x, expected %#x", why,
			(void *)s->p, i, s->req, bad, (uint8_t)s->p[bad], s->tag);
}

static uint8_t new_tag(fz_ctx *c)
{
	/* Never 0 (zeroed memory) nor the allocator's poison byte. */
	do
		c->next_tag++;
	while (c->next_tag == 0 || c->next_tag == KP_POISON_BYTE);
	return c->next_tag;
}

/* ---- sizes --------------------------------------------------------------------- */

static size_t edge_size(uint8_t b)
{
	static const size_t special[] = {
		0,
		1,
		KP_HDR,
		KP_SMALL_MAX - KP_HDR - 1,
		KP_SMALL_MAX - KP_HDR,
		KP_LARGE_MAX - KP_HDR - 1,
		KP_LARGE_MAX - KP_HDR,
		KP_LARGE_MAX,
		KP_SEG_SIZE,
		UINT32_MAX,
		(size_t)UINT32_MAX + 1,
		KP_REQ_MAX,
		KP_REQ_MAX + 1,
		SIZE_MAX,
		SIZE_MAX - 15,
		(size_t)1 << 40,
		KP_UNIT_SIZE - KP_HDR - 1,
	};
	/* The 47 class sizes of the layout this table was written for (4 per
	 * doubling above 1 KiB), frozen: the byte -> size map is the corpora's
	 * file format, and a class table that grew (75 classes, 8 per doubling
	 * above 1 KiB) must not shift the specials out of reach. Each of these
	 * is still a class boundary. The tables here are append only, and no
	 * byte value is free to append to: each decodes to something, and the
	 * stored inputs use the redundant ones too (the specials' top two
	 * bits: 439 of their edge bytes are 0xef-0xff). The current classes'
	 * boundaries are one dictionary token each instead (corpora/<target>/
	 * dict, checked by tests/test_fuzz_class_edges.py). */
	static const uint32_t edge_class[47] = {32,    48,    64,    80,    96,	   112,	   128,	  160,	 192,	224,
						256,   320,   384,   448,   512,   640,	   768,	  896,	 1024,	1280,
						1536,  1792,  2048,  2560,  3072,  3584,   4096,  5120,	 6144,	7168,
						8192,  10240, 12288, 14336, 16384, 20480,  24576, 28672, 32768, 40960,
						49152, 57344, 65536, 81920, 98304, 114688, 131072};
	unsigned i = b & 63;
	if (i < 47) /* around a class boundary: the largest fit, and either side */
		return edge_class[i] - KP_HDR - 2 + (b >> 6);
	return special[(i - 47) % (sizeof special / sizeof special[0])];
}

/* Mostly small; a page run one time in eight, a huge block rarely: ASan
 * poisons and unpoisons every byte of a block and a huge block is mapped and
 * faulted in anew each time, so one costs as much as hundreds of small ones. */
/* A size: small ones most of the time, every class boundary and impossible
 * sizes from a table, page runs and huge regions now and then. lean (the
 * api_sequence target) sees the costly cases (up to 128 KiB, page runs,
 * huge regions) half as often: one of those costs tens of microseconds
 * (copies, page faults, mmap), the rest a fraction of one, and the paths
 * depend on the class of a size, not on its bytes (about 30% more
 * executions per second). The faults and concurrent targets keep the plain
 * distribution, so their saved crash inputs replay as they were found. */
static size_t read_size(fz_in *r, bool lean)
{
	uint8_t b = fz_u8(r);
	unsigned k = b & 15;
	if (lean && (k == 10 || k == 11 || k == 14 || k == 15) && (b & 0x10))
		k = k & 1 ? 1 : 6;
	switch (k) {
	case 0:
	case 1:
	case 2:
	case 3:
	case 4:
	case 5: return fz_u8(r);
	case 6:
	case 7:
	case 8:
	case 9: return fz_u16(r) & 4095;
	case 10:
	case 11: return (size_t)fz_u16(r) * 2 + (b >> 7); /* up to 128 KiB */
	case 12:
	case 13: return edge_size(fz_u8(r));
	case 14: return ((size_t)fz_u8(r) + 1) << 12; /* 4 KiB .. 1 MiB */
	default:				      /* huge (its own mapping) one time in sixteen: 32 KiB .. 8 MiB */
		return ((size_t)fz_u8(r) + 1) << (b >= 0xf0 ? 15 : 13);
	}
}

/* Must this ordinary request succeed? Only in a strict interpreter, for a
 * modest size in a roomy pool with modest live data: 64 MiB of primary_max
 * against at most 16 MiB live and 256 KiB asked leaves room for any
 * fragmentation the interpreter can cause. */
#define FZ_SURE_SIZE ((size_t)256 << 10)
#define FZ_SURE_LIVE ((size_t)16 << 20)
static bool must_succeed(fz_ctx *c, size_t size)
{
	if (!(c->mode & FZ_STRICT) || size > FZ_SURE_SIZE || strstr(c->fp->conf, "primary_max:8m"))
		return false;
	size_t live = 0;
	for (unsigned i = 0; i < FZ_SLOTS; i++)
		if (c->slot[i].live)
			live += c->slot[i].req;
	return live + size <= FZ_SURE_LIVE;
}

/* ---- the shadow model ------------------------------------------------------------ */

/* A new block: aligned, usable >= request, overlapping no live block.
 * Returns its usable size. */
static size_t check_new(fz_ctx *c, unsigned i, char *p, size_t req, size_t align, const char *what)
{
	if ((uintptr_t)p % align)
		FZ_FAIL("misaligned", what, "%s(%zu, align %zu) returned %p: misaligned", what, req, align, (void *)p);
	size_t us = kp_usable_size(c->pool, p);
	if (us < req)
		FZ_FAIL("usable-short", what, "%s(%zu) returned %p with usable size %zu < request", what, req,
			(void *)p, us);
	uintptr_t lo = (uintptr_t)p, hi = lo + (req ? req : 1);
	for (unsigned j = 0; j < FZ_SLOTS; j++) {
		fz_slot *o = &c->slot[j];
		if (j == i || !o->live)
			continue;
		uintptr_t olo = (uintptr_t)o->p, ohi = olo + (o->req ? o->req : 1);
		if (lo < ohi && olo < hi)
			FZ_FAIL("overlap", what,
				"%s(%zu) returned %p..%p, overlapping the live block %p..%p of slot %u", what, req,
				(void *)lo, (void *)hi, (void *)olo, (void *)ohi, j);
	}
	return us;
}

static void slot_set(fz_ctx *c, unsigned i, char *p, size_t req, size_t usable, size_t align)
{
	fz_slot *s = &c->slot[i];
	*s = (fz_slot){.p = p, .req = req, .usable = usable, .align = align, .tag = new_tag(c), .live = true};
	seen_add(c->fp, p);
	s->backup = kp__backup_owns(&c->pool->backup, p);
	fill(p, req, s->tag);
}

static void slot_free(fz_ctx *c, unsigned i)
{
	fz_slot *s = &c->slot[i];
	verify(c, i, "before free");
	kp__seg *seg = kp__pagemap_get(s->p);
	bool huge = !s->backup && seg && seg->kind == KP_SEG_HUGE;
	int rc = kp_free(c->pool, s->p);
	if (rc != 0)
		FZ_FAIL("refused", "kp_free", "kp_free(%p) of a live block (slot %u, %zu bytes) returned %d",
			(void *)s->p, i, s->req, rc);
	c->last_freed = s->p;
	c->last_freed_req = s->req;
	c->last_freed_backup = s->backup || huge; /* gone from the primary's spans */
	c->last_freed_aligned = s->align > KP_HDR;
	s->live = false;
}

/* KP_ZERO only up to this size: zeroing a fresh huge mapping faults in every
 * page of it, a thousand page faults for one operation. */
#define FZ_ZERO_MAX ((size_t)256 << 10)

static void do_alloc(fz_ctx *c, unsigned i, size_t size, size_t align, unsigned flags, bool aligned)
{
	if (size > FZ_ZERO_MAX)
		flags &= ~KP_ZERO;
	if (c->slot[i].live)
		slot_free(c, i);
	const char *api = aligned ? "kp_alloc_aligned" : "kp_alloc";
	char *p = aligned ? kp_alloc_aligned(c->pool, size, align, flags) : kp_alloc(c->pool, size, flags);
	fz_note(aligned ? OP_ALIGNED : OP_ALLOC, i, size, (uintptr_t)p);
	bool align_ok = align && !(align & (align - 1)) && align <= KP_ALIGN_MAX;
	if (!p) {
		if (aligned && !align_ok)
			return;
		if (must_succeed(c, size) && !(flags & KP_CRITICAL))
			FZ_FAIL("refused", aligned ? "kp_alloc_aligned" : "kp_alloc",
				"kp_alloc%s(%zu, align %zu) returned NULL in a roomy pool: %s",
				aligned ? "_aligned" : "", size, align, kp_last_error());
		return;
	}
	if (aligned && !align_ok)
		FZ_FAIL("impossible-served", "kp_alloc_aligned",
			"kp_alloc_aligned(%zu, align %zu) accepted an impossible alignment", size, align);
	if (size > KP_REQ_MAX)
		FZ_FAIL("impossible-served", api, "%s(%zu) served an impossible size at %p", api, size, (void *)p);
	/* An alignment past 16 is served by alloc.c's path in either layout
	 * (outline.c's blocks are 16-aligned): a bug there is one bug whichever
	 * pool shows it, so no "outline-" (fz_fail; as do_realloc's moved block).
	 * Planted 6 was filed under two signatures once a seed found it on an
	 * outline pool (test_triage_quality, session 23's CI). check_new does
	 * not return on a violation; cur_pool is set again below. */
	const fz_pool *pool_was = cur_pool;
	if (aligned && align > KP_HDR)
		cur_pool = NULL;
	size_t us = check_new(c, i, p, size, align < KP_HDR ? KP_HDR : align, api);
	cur_pool = pool_was;
	if ((flags & KP_ZERO) && check_fill(p, size, 0, size) != SIZE_MAX) {
		if (c->fp->outline && seen_never(c->fp, p))
			FZ_FAIL("fresh-written", api,
				"%s(%zu, KP_ZERO) returned %p, never handed out before, with a non-zero byte: a write "
				"past another block reached it",
				api, size, (void *)p);
		FZ_FAIL("not-zeroed", api, "%s(%zu, KP_ZERO) returned %p with a non-zero byte", api, size, (void *)p);
	}
	if ((flags & KP_CRITICAL) && c->depth == 0 && kp__backup_owns(&c->pool->backup, p))
		FZ_FAIL("backup-outside-scope", api,
			"%s(%zu, KP_CRITICAL) outside a critical scope was served by the backup: %p", api, size,
			(void *)p);
	slot_set(c, i, p, size, us, align < KP_HDR ? KP_HDR : align);
	c->last_freed = NULL; /* the block freed just before may be this one */
}

static void do_realloc(fz_ctx *c, unsigned i, size_t size, unsigned flags)
{
	fz_slot *s = &c->slot[i];
	if (!s->live) {
		do_alloc(c, i, size, KP_HDR, flags, false);
		return;
	}
	verify(c, i, "before realloc");
	if (size > FZ_ZERO_MAX)
		flags &= ~KP_ZERO;
	fz_slot old = *s;
	kp__seg *seg = kp__pagemap_get(old.p);
	bool huge = !old.backup && seg && seg->kind == KP_SEG_HUGE;
	char *p = kp_realloc(c->pool, old.p, size, flags);
	fz_note(OP_REALLOC, i, size, (uintptr_t)p);
	if (!p) {
		if (size == 0) { /* freed */
			s->live = false;
			c->last_freed = old.p;
			c->last_freed_req = old.req;
			c->last_freed_backup = old.backup || huge;
			c->last_freed_aligned = old.align > KP_HDR;
			return;
		}
		if (must_succeed(c, size))
			FZ_FAIL("refused", "kp_realloc", "kp_realloc(%p, %zu) returned NULL in a roomy pool: %s",
				(void *)old.p, size, kp_last_error());
		verify(c, i, "after a failed realloc"); /* untouched */
		return;
	}
	if (size > KP_REQ_MAX)
		FZ_FAIL("impossible-served", "kp_realloc", "kp_realloc(%zu) served an impossible size at %p", size,
			(void *)p);
	s->live = false; /* the old block is gone: no overlap with it */
	size_t us = check_new(c, i, p, size, KP_HDR, "kp_realloc");
	size_t bad = check_fill(p, old.req, old.tag, size);
	if (bad != SIZE_MAX) {
		/* A block that moved was copied by kp__realloc_move, which both layouts end in:
		 * one bug whichever pool it shows on, so no "outline-" (fz_fail). In place, the
		 * layout's own code kept or lost it. fz_fail does not return. */
		if (p != old.p)
			cur_pool = NULL;
		FZ_FAIL("content-lost", "kp_realloc",
			"kp_realloc(%p -> %p, %zu -> %zu) lost the contents at offset %zu", (void *)old.p, (void *)p,
			old.req, size, bad);
	}
	/* The grown part is what lies past the old usable size. */
	if ((flags & KP_ZERO) && size > old.usable) {
		size_t n = size - old.usable < FZ_HEAD ? size - old.usable : FZ_HEAD;
		if (!all_eq(p + old.usable, n, 0))
			FZ_FAIL("not-zeroed", "kp_realloc",
				"kp_realloc(%p, usable %zu -> %zu, KP_ZERO) left a non-zero byte in the grown part",
				(void *)p, old.usable, size);
	}
	slot_set(c, i, p, size, us, KP_HDR);
	c->last_freed = NULL;
}

/* Stats against the model: primary allocs - frees counts the live primary
 * blocks, the backup's bytes in use are its live blocks' sizes. The counters
 * are read as numbers (formatting and parsing JSON on every check would cost
 * more than the rest of an input); check_json checks that kp_stats_json says
 * the same, into a buffer of the input's choosing. */
static void check_stats(fz_ctx *c)
{
	kp__primary_stats st;
	kp__stats_primary(c->pool, &st);
	uint64_t live = 0, bk_bytes = 0, req = 0;
	for (unsigned i = 0; i < FZ_SLOTS; i++) {
		fz_slot *s = &c->slot[i];
		if (!s->live)
			continue;
		if (s->backup) /* in_use counts whole blocks, the canary's 8 bytes included */
			bk_bytes += kp__backup_usable(c->pool, s->p) + c->pool->canary;
		else
			live++, req += s->req;
	}
	uint64_t bk_in_use = atomic_load(&c->pool->backup.in_use);
	/* outline.c does not count its allocations and frees in kp_stats (yet): only the backup's are checked */
	if (!c->fp->outline && st.allocs - st.frees != live)
		FZ_FAIL("stats-mismatch", "kp_stats", "stats: primary allocs %llu - frees %llu != %llu live blocks",
			(unsigned long long)st.allocs, (unsigned long long)st.frees, (unsigned long long)live);
	if (!c->fp->outline && (st.in_use < req || (live == 0 && st.in_use != 0)))
		FZ_FAIL("stats-mismatch", "kp_stats",
			"stats: primary in_use_bytes %llu for %llu live blocks of %llu bytes",
			(unsigned long long)st.in_use, (unsigned long long)live, (unsigned long long)req);
	if (bk_in_use != bk_bytes)
		FZ_FAIL("stats-mismatch", "kp_stats",
			"stats: backup in_use_bytes %llu != %llu bytes of live backup blocks",
			(unsigned long long)bk_in_use, (unsigned long long)bk_bytes);
}

static uint64_t json_u64(const char *js, const char *section, const char *key)
{
	const char *s = strstr(js, section);
	const char *k = s ? strstr(s, key) : NULL;
	if (!k)
		FZ_FAIL("stats-mismatch", "kp_stats_json", "kp_stats_json has no %s%s: %s", section, key, js);
	return strtoull(k + strlen(key), NULL, 10);
}

/* kp_stats_json into a buffer of len bytes (0 .. the whole): snprintf-style,
 * the same length whatever the buffer, always terminated; the whole text
 * agrees with the counters. */
static void check_json(fz_ctx *c, size_t len)
{
	char js[4096];
	memset(js, 'x', sizeof js);
	int n = kp_stats_json(c->pool, len ? js : NULL, len);
	if (n <= 0 || (size_t)n >= sizeof js)
		FZ_FAIL("stats-mismatch", "kp_stats_json", "kp_stats_json returned %d", n);
	if (len) {
		size_t end = (size_t)n < len ? (size_t)n : len - 1;
		if (js[end] != 0 || memchr(js, 0, end) || (end + 1 < sizeof js && js[end + 1] != 'x'))
			FZ_FAIL("stats-mismatch", "kp_stats_json",
				"kp_stats_json(len %zu) = %d: not terminated at %zu, or wrote past it", len, n, end);
	}
	if (len <= (size_t)n)
		return;
	kp__primary_stats st;
	kp__stats_primary(c->pool, &st);
	if (json_u64(js, "\"primary\":", "\"allocs\":") != st.allocs ||
	    json_u64(js, "\"primary\":", "\"frees\":") != st.frees ||
	    json_u64(js, "\"primary\":", "\"in_use_bytes\":") != st.in_use ||
	    json_u64(js, "\"backup\":", "\"in_use_bytes\":") != atomic_load(&c->pool->backup.in_use))
		FZ_FAIL("stats-mismatch", "kp_stats_json", "kp_stats_json disagrees with the counters: %s", js);
}

/* ---- misuse (FZ_MISUSE): each refused, reported and contained ------------------------- */

static KP_NOASAN uint8_t raw_get(const char *p)
{
	return *(const volatile uint8_t *)p;
}

static KP_NOASAN void raw_put(char *p, uint8_t v)
{
	*(volatile uint8_t *)p = v;
}

/* Free the block freed by the previous operation again. */
static void op_stale(fz_ctx *c)
{
	char *p = c->last_freed;
	if (!p)
		return;
	size_t us = kp_usable_size(c->pool, p);
	if (us)
		FZ_FAIL("stale-usable", "kp_usable_size", "kp_usable_size(%p) of a freed block returned %zu", (void *)p,
			us);
	int rc = kp_free(c->pool, p);
	fz_note(OP_STALE, 0, (uintptr_t)p, (uint64_t)(int64_t)rc);
	if (rc != KP_EDOUBLEFREE && rc != KP_ENOTOURS)
		FZ_FAIL("wrong-error", "kp_free", "double free of %p (%zu bytes) returned %d, not KP_EDOUBLEFREE",
			(void *)p, c->last_freed_req, rc);
	/* Known: a freed aligned block's redirect header can lie in the enclosing
	 * block's link word, so its double free reads as a foreign pointer. */
	if (rc == KP_ENOTOURS && !c->last_freed_backup && !c->last_freed_aligned &&
	    c->last_freed_req + KP_HDR + 1 <= KP_LARGE_MAX)
		FZ_FAIL("wrong-error", "kp_free",
			"double free of %p (%zu bytes, still mapped) returned KP_ENOTOURS, not KP_EDOUBLEFREE",
			(void *)p, c->last_freed_req);
}

static void op_interior(fz_ctx *c, unsigned i, uint8_t b)
{
	fz_slot *s = &c->slot[i];
	size_t off = KP_HDR * (1 + (size_t)(b & 3));
	if (!s->live || off >= s->req)
		return;
	int rc = kp_free(c->pool, s->p + off);
	fz_note(OP_INTERIOR_FREE, i, (uintptr_t)s->p + off, (uint64_t)(int64_t)rc);
	if (rc >= 0)
		FZ_FAIL("wrong-error", "kp_free",
			"kp_free(%p) of an interior pointer (%zu bytes into slot %u) returned %d", (void *)(s->p + off),
			off, i, rc);
	verify(c, i, "after an interior free");
}

static void op_foreign(fz_ctx *c, uint8_t b)
{
	static _Alignas(64) char global[256];
	_Alignas(16) char local[64];
	char *heap = malloc(64);
	char *cand[] = {global + 16 * (b & 7), local, heap, (char *)(uintptr_t)16, (char *)(uintptr_t)-16};
	char *p = cand[b % (sizeof cand / sizeof cand[0])];
	int rc = kp_free(c->pool, p);
	fz_note(OP_FOREIGN_FREE, 0, (uintptr_t)p, (uint64_t)(int64_t)rc);
	free(heap);
	if (rc != KP_ENOTOURS)
		FZ_FAIL("wrong-error", "kp_free", "kp_free(%p) of a foreign pointer returned %d, not KP_ENOTOURS",
			(void *)p, rc);
}

/* Write one byte past the request of a plain primary block, or past the
 * usable size of a backup block (checks on: the canary is there), then free
 * it: KP_EOVERFLOW; a primary block is set aside, a backup block freed (the
 * reserve keeps no metadata in its blocks). */
static void op_overflow(fz_ctx *c, unsigned i)
{
	fz_slot *s = &c->slot[i];
	if (!s->live || !c->fp->checks || (!s->backup && (s->align != KP_HDR || s->req >= UINT32_MAX)))
		return;
	verify(c, i, "before an overflow");
	char *past = s->p + (s->backup ? s->usable : s->req);
	raw_put(past, (uint8_t)~raw_get(past));
	int rc = kp_free(c->pool, s->p);
	fz_note(OP_OVERFLOW, i, (uintptr_t)s->p, (uint64_t)(int64_t)rc);
	if (rc != KP_EOVERFLOW)
		FZ_FAIL("wrong-error", "kp_free",
			"kp_free(%p) after a write one byte past its %zu %s bytes returned %d, not KP_EOVERFLOW",
			(void *)s->p, s->backup ? s->usable : s->req, s->backup ? "usable backup" : "requested", rc);
	s->live = false;
	if (s->backup) {
		c->last_freed = s->p;
		c->last_freed_req = s->req;
		c->last_freed_backup = true;
		c->last_freed_aligned = false;
	}
	c->damaged = true;
}

/* Write into the block freed by the previous operation (poison on: found
 * when the block is handed out again, and set aside). */
static void op_uaf(fz_ctx *c, uint8_t b)
{
	char *p = c->last_freed;
	if (!p || c->last_freed_backup || !c->fp->poison || c->last_freed_req < 16)
		return;
	size_t off = 8 + (b % (c->last_freed_req - 8));
	raw_put(p + off, (uint8_t)(raw_get(p + off) ^ 0x5a));
	fz_note(OP_UAF_WRITE, 0, (uintptr_t)p, off);
	c->damaged = true;
}

/* ---- faults (FZ_FAULTS) ------------------------------------------------------------ */

static void op_os_fault(fz_ctx *c, fz_in *r)
{
	/* Not munmap: a refused munmap leaves the mapping in place for good (as
	 * the kernel would), and thousands of inputs of it exhaust the fuzzing
	 * process's memory limit. */
	static const char *const kinds[] = {"mmap", "madvise", "mprotect", "other", "mmap", "madvise"};
	uint8_t k = fz_u8(r), m = fz_u8(r), n = fz_u8(r);
	char spec[64];
	const char *kind = kinds[k % 6];
	switch (m & 3) {
	case 0: snprintf(spec, sizeof spec, "%s@nth=%u", kind, 1u + n % 8); break;
	case 1: snprintf(spec, sizeof spec, "%s@every=%u", kind, 1u + n % 4); break;
	case 2: snprintf(spec, sizeof spec, "%s@p=0.%u@seed=%u", kind, n % 10, (unsigned)m); break;
	default: snprintf(spec, sizeof spec, "%s@off", kind); break;
	}
	int rc = kp_fault_inject(c->pool, spec);
	fz_note(OP_OS_FAULT, 0, k, m);
	if (rc != 0)
		FZ_FAIL("refused", "kp_fault_inject", "kp_fault_inject('%s') refused a valid spec: %s", spec,
			kp_last_error());
}

static void op_corrupt(fz_ctx *c, uint8_t b)
{
	static const char *const what[] = {"corrupt@span", "corrupt@header", "corrupt@freelist"};
	int rc = kp_fault_inject(c->pool, what[b % 3]);
	fz_note(OP_CORRUPT, 0, b % 3, (uint64_t)(int64_t)rc);
	if (rc == 0)
		c->damaged = true;
	else if (rc != KP_EINVAL)
		FZ_FAIL("refused", "kp_fault_inject", "kp_fault_inject('%s') returned %d", what[b % 3], rc);
}

/* ---- handoff between two interpreters (FZ_HANDOFF) ------------------------------------ */

static void op_give(fz_ctx *c, unsigned i)
{
	fz_slot *s = &c->slot[i];
	if (!s->live || !c->mailbox)
		return;
	fz_slot *rec = malloc(sizeof *rec);
	if (!rec)
		return;
	*rec = *s;
	fz_slot *expect = NULL;
	if (atomic_compare_exchange_strong(c->mailbox, &expect, rec)) {
		fz_note(OP_GIVE, i, (uintptr_t)s->p, 0);
		s->live = false;
	} else {
		free(rec);
	}
}

static void op_take(fz_ctx *c, unsigned i)
{
	if (!c->mailbox)
		return;
	fz_slot *rec = atomic_exchange(c->mailbox, NULL);
	if (!rec)
		return;
	if (c->slot[i].live)
		slot_free(c, i);
	c->slot[i] = *rec;
	free(rec);
	fz_note(OP_TAKE, i, (uintptr_t)c->slot[i].p, 0);
	verify(c, i, "after a handoff");
}

/* ---- the interpreter --------------------------------------------------------------------- */

void fz_ctx_init(fz_ctx *c, fz_pool *fp, unsigned mode)
{
	memset(c, 0, sizeof *c);
	c->fp = fp;
	c->pool = fz_pool_get(fp);
	c->mode = mode;
	cur_pool = fp;
}

static void step(fz_ctx *c, fz_in *r)
{
	const uint8_t *table = ops_api;
	size_t n = sizeof ops_api;
	if (c->mode & FZ_MISUSE)
		table = ops_faults, n = sizeof ops_faults;
	else if (c->mode & FZ_HANDOFF)
		table = ops_threads, n = sizeof ops_threads;
	unsigned op = table[fz_u8(r) % n];
	unsigned i = fz_u8(r) % FZ_SLOTS;
	fz_slot *s = &c->slot[i];
	char *freed = c->last_freed;
	c->last_freed = NULL;
	switch (op) {
	case OP_ALLOC: do_alloc(c, i, read_size(r, c->mode & FZ_STRICT), KP_HDR, 0, false); break;
	case OP_ALLOC_ZERO: do_alloc(c, i, read_size(r, c->mode & FZ_STRICT), KP_HDR, KP_ZERO, false); break;
	case OP_ALLOC_CRIT:
		do_alloc(c, i, read_size(r, c->mode & FZ_STRICT), KP_HDR, KP_CRITICAL | (fz_u8(r) & KP_ZERO), false);
		break;
	case OP_ALIGNED: {
		uint8_t a = fz_u8(r);
		size_t align = a < 240 ? (size_t)1 << (a % 14) : (size_t)(a - 240) * 24; /* some impossible ones */
		do_alloc(c, i, read_size(r, c->mode & FZ_STRICT), align, a & 0x40 ? KP_ZERO : 0, true);
		break;
	}
	case OP_REALLOC: do_realloc(c, i, read_size(r, c->mode & FZ_STRICT), 0); break;
	case OP_REALLOC_ZERO: do_realloc(c, i, read_size(r, c->mode & FZ_STRICT), KP_ZERO); break;
	case OP_FREE:
		if (s->live) {
			fz_note(OP_FREE, i, (uintptr_t)s->p, s->req);
			slot_free(c, i);
		}
		break;
	case OP_CRIT_ENTER:
		fz_note(op, 0, (uint64_t)c->depth, 0);
		if (kp_critical_enter(c->pool, c->fp->token) != 0)
			FZ_FAIL("refused", "kp_critical_enter", "kp_critical_enter refused the pool's token: %s",
				kp_last_error());
		c->depth++;
		break;
	case OP_CRIT_EXIT:
		fz_note(op, 0, (uint64_t)c->depth, 0);
		kp_critical_exit(c->pool); /* without a scope: an event, nothing else */
		c->depth -= c->depth > 0;
		break;
	case OP_USABLE:
		if (s->live) {
			size_t us = kp_usable_size(c->pool, s->p);
			fz_note(op, i, (uintptr_t)s->p, us);
			if (us < s->req)
				FZ_FAIL("usable-short", "kp_usable_size", "kp_usable_size(%p) = %zu < %zu asked for",
					(void *)s->p, us, s->req);
		}
		break;
	case OP_VERIFY:
		if (s->live) {
			fz_note(op, i, (uintptr_t)s->p, s->req);
			verify(c, i, "verify");
		}
		break;
	case OP_STATS: {
		/* One time in four, the JSON as well, into a buffer of 0 to 1 KiB
		 * (truncated) or of 4 KiB (whole). */
		uint8_t b = fz_u8(r);
		fz_note(op, 0, b, 0);
		c->stats_seen = true;
		if (c->mode & FZ_STRICT)
			check_stats(c);
		if ((b & 3) == 0)
			check_json(c, b & 4 ? 4096 : (size_t)(b >> 3) * 33);
		break;
	}
	case OP_FLUSH:
		fz_note(op, 0, 0, 0);
		kp_thread_flush(c->pool);
		break;
	case OP_DAEMON: {
		uint8_t ms = fz_u8(r);
		fz_note(op, 0, ms, 0);
		if (c->fp->daemon && (ms & 1)) /* the thread runs: wake it, as the allocation path does */
			kp_daemon_wake(c->pool);
		else
			kp_daemon_step(c->pool, (uint64_t)ms * 4);
		break;
	}
	case OP_GIVE: op_give(c, i); break;
	case OP_TAKE: op_take(c, i); break;
	case OP_STALE: c->last_freed = freed, op_stale(c); break;
	case OP_INTERIOR_FREE: op_interior(c, i, fz_u8(r)); break;
	case OP_FOREIGN_FREE: op_foreign(c, fz_u8(r)); break;
	case OP_OVERFLOW: op_overflow(c, i); break;
	case OP_UAF_WRITE: c->last_freed = freed, op_uaf(c, fz_u8(r)); break;
	case OP_OS_FAULT: op_os_fault(c, r); break;
	case OP_CORRUPT: op_corrupt(c, fz_u8(r)); break;
	default: break;
	}
}

/* Operations per input: enough for deep sequences, few enough that one
 * input stays well under a millisecond. */
#define FZ_MAX_OPS 512

void fz_run(fz_ctx *c, fz_in *r)
{
	cur_pool = c->fp; /* the thread that runs it (the concurrent target's halves) */
	for (unsigned n = 0; r->n && n < FZ_MAX_OPS; n++)
		step(c, r);
}

static bool integrity_kind(unsigned kind)
{
	return (kind >= KP_EV_DOUBLE_FREE && kind <= KP_EV_CORRUPTION) ||
	       (kind >= KP_EV_OVERFLOW && kind <= KP_EV_QUARANTINE);
}

void fz_drain(fz_ctx *c)
{
	cur_pool = c->fp;
	kp_event ev[64];
	size_t n;
	uint64_t last = 0;
	bool first = true;
	while ((n = kp_events_drain(c->pool, ev, 64)) > 0) {
		for (size_t k = 0; k < n; k++) {
			/* Every event names a real kind, says something, and comes
			 * after the one before it. */
			if (ev[k].kind == KP_EV_NONE || ev[k].kind >= KP_EV__COUNT ||
			    !strcmp(kp_event_name(ev[k].kind), "unknown") || !ev[k].text[0] ||
			    (!first && ev[k].seq <= last))
				FZ_FAIL("malformed-event", "kp_events_drain",
					"event #%llu (after #%llu) of kind %u is malformed: '%s'",
					(unsigned long long)ev[k].seq, (unsigned long long)last, ev[k].kind,
					ev[k].text);
			first = false;
			last = ev[k].seq;
			if ((c->mode & FZ_STRICT) && integrity_kind(ev[k].kind)) {
				char kind[48];
				snprintf(kind, sizeof kind, "integrity-%s", kp_event_name(ev[k].kind));
				FZ_FAIL(kind, "kp_events_drain", "integrity event '%s' from correct use: %s",
					kp_event_name(ev[k].kind), ev[k].text);
			}
		}
		if (n < 64)
			break;
	}
}

void fz_finish(fz_ctx *c)
{
	cur_pool = c->fp;
	if (c->mode & FZ_FAULTS)
		kp_fault_inject(c->pool, "all@off");
	for (; c->depth > 0; c->depth--)
		kp_critical_exit(c->pool);
	for (unsigned i = 0; i < FZ_SLOTS; i++)
		if (c->slot[i].live)
			slot_free(c, i);
	kp_thread_flush(c->pool);
	if ((c->mode & FZ_STRICT) && c->stats_seen)
		check_stats(c);
	if (!(c->mode & FZ_HANDOFF)) /* two threads share the ring: its one drainer runs after both */
		fz_drain(c);
	if (c->damaged)
		fz_pool_reset(c->fp);
}
