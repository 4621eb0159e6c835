/*
 * conf.c - every option declared once, with its default beside it.
 *
 * Syntax: "key:value,key:value". Sizes take k/m/g suffixes (powers of 1024),
 * booleans on/off (also 1/0, true/false). Defaults, then KPOOL_CONF, then
 * the string given to kp_create.
 */
#include "internal.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

static __thread char last_error[256];

void kp__set_error(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(last_error, sizeof last_error, fmt, ap);
	va_end(ap);
}

void kp__set_error_path(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	kp__fmt(last_error, sizeof last_error, fmt, ap);
	va_end(ap);
}

KP_EXPORT const char *kp_last_error(void)
{
	return last_error;
}

enum kind { SIZE, INT, BOOL, PERCENT, STRING };
static const char *const kind_name[] = {"size", "int", "bool", "percent", "string"};
/* For messages: "an int", never "a int". */
static const char *const kind_article[] = {"a", "an", "a", "a", "a"};

struct option {
	const char *name;
	enum kind kind;
	const char *deflt;
	size_t offset;
	uint64_t min, max;
	const char *help;
};

#define OFF(f) offsetof(kp__conf, f)
#define GiB (1ull << 30)
static const struct option options[] = {
	/* One segment: address space, not memory. Only the daemon's floor of
	 * it (high_wm) is pre-faulted at creation; shrink keeps this capacity. */
	{"primary_initial", SIZE, "4m", OFF(primary_initial), 0, 1ull << 40,
	 "primary capacity mapped at creation (address space: only high_wm of it is pre-faulted) and kept by "
	 "shrink"},
	/* 0: no cap of kpool's own. A pool grows as far as the machine allows,
	 * resolved at kp_create: the smaller of physical memory plus swap and
	 * the process's cgroup memory limit (v2's memory.max or v1's
	 * memory.limit_in_bytes, the tightest of its group and ancestors), less
	 * a sixteenth of it, a fixed backup and what the process holds then
	 * (kp__conf_load). Past it kp_alloc gives NULL, an OOM event and the
	 * backup to critical callers, before the cgroup's OOM killer would act. Under
	 * strict overcommit (vm.overcommit_memory=2) the kernel may refuse a
	 * mapping earlier: that too is NULL, an event and the backup. */
	{"primary_max", SIZE, "0", OFF(primary_max), 0, 1ull << 44,
	 "the primary pool never grows past this (0: as far as the machine allows: physical memory plus swap or "
	 "the cgroup's memory limit, whichever is smaller, less a sixteenth, a fixed backup and what the process "
	 "holds at kp_create)"},
	/* The reserve stays resident (pre-faulted: a reserve that must first be
	 * faulted in fails exactly when memory is short). auto: it scales with
	 * the pool, as Linux's min_free_kbytes scales with memory (backup.c):
	 * 16 KiB at creation, what a small program's critical path needs to
	 * finish and report while its primary is exhausted (a log line, an
	 * error reply, a stdio stream, a few dozen small blocks), grown by the
	 * daemon to 1/128-1/64 of the primary's peak bytes in use, up to 1 MiB
	 * (reserved and guard-fenced at creation, reached at 64 MiB in use).
	 * The fixed 256 KiB it replaces was a tenth of a 2.3 MiB program's
	 * peak, the whole of its 1.1x margin over glibc (issue 14). A size
	 * fixes the reserve, all of it resident from kp_create (the
	 * critical-exhaustion workload uses 4m). */
	{"backup", SIZE, "auto", OFF(backup), 0, 16 * GiB,
	 "bytes reserved for the backup pool, resident from creation (auto: 16 KiB at creation, grown by the daemon "
	 "to 1/128-1/64 of the primary's peak bytes in use, at most 1 MiB; 0: none)"},
	/* 0: half the daemon's current target (it moves with the demand). */
	{"low_wm", SIZE, "0", OFF(low_wm), 0, 1ull << 40,
	 "pre-faulted headroom below which the allocation path wakes the daemon (0: half the daemon's target)"},
	/* The floor of an adaptive target (daemon.c: the measured allocation
	 * rate, what the allocation path had to fault itself, at most 1/16 of
	 * the bytes in use or 8 MiB). auto: a quarter of the bytes in use, at
	 * most 1 MiB (16 units, a burst of a few spans served without a
	 * fault): every pre-faulted byte is resident memory no program asked
	 * for, and a fixed 1 MiB was most of a small program's excess over
	 * glibc (test_memory's small program: 2.8x glibc's peak). A size fixes
	 * the floor whatever the pool holds; 0: none. */
	{"high_wm", SIZE, "auto", OFF(high_wm), 0, 1ull << 40,
	 "the least headroom the daemon keeps mapped and pre-faulted (auto: a quarter of the bytes in use, at most "
	 "1 MiB, never under low_wm); above it the daemon follows the measured allocation rate (at most 1/16 of the "
	 "bytes in use, or "
	 "8 MiB)"},
	{"critical_wm", PERCENT, "95", OFF(critical_wm), 1, 100,
	 "primary use (% of primary_max) at which critical traffic moves to the backup"},
	{"recover_wm", PERCENT, "85", OFF(recover_wm), 0, 100,
	 "primary use (% of primary_max) below which it moves back (hysteresis)"},
	{"daemon", BOOL, "on", OFF(daemon), 0, 1, "run the grow daemon thread"},
	{"step_clock", BOOL, "off", OFF(step_clock), 0, 1,
	 "with daemon:off, the pool's clock moves only by what kp_daemon_step advances it (tests and fuzz targets: "
	 "what a pass does, decay and checkpoints, does not depend on how fast the machine runs)"},
	{"daemon_interval_ms", INT, "100", OFF(daemon_interval_ms), 1, 60000,
	 "the daemon's fallback timer; the allocation path wakes it sooner"},
	{"prefault", BOOL, "on", OFF(prefault), 0, 1,
	 "pre-fault the daemon's headroom (the free memory the allocation path takes next; past a floor set with "
	 "high_wm, only once the pool has handed out 1 MiB) and the backup reserve (off: pages fault on first touch, "
	 "and the reserve is not memory until used)"},
	/* 90: pre-faulted memory the program leaves unwritten stays under a
	 * tenth of what it takes (issue 14's 1.1x); daemon.c samples it. */
	{"prefault_touch", PERCENT, "90", OFF(prefault_touch), 0, 100,
	 "the daemon pre-faults ahead of demand while the program writes at least N% of the pages it takes "
	 "(sampled: a page inside a live block is read, all zero is unwritten); under it only a floor set with "
	 "high_wm is pre-faulted (0: pre-fault always)"},
	{"thp", BOOL, "on", OFF(thp), 0, 1,
	 "ask for transparent huge pages on huge blocks (MADV_HUGEPAGE): a 2 MiB fault instead of 512"},
	{"decay_ms", INT, "1000", OFF(decay_ms), 0, 3600000,
	 "free memory is given back to the OS after staying free this long: whole segments, and the pages of "
	 "free units past the headroom the daemon keeps"},
	{"seed", INT, "0", OFF(seed), 0, UINT64_MAX, "0: a random per-pool secret; else a fixed one (tests)"},
	/* outline (outline.c): blocks up to 64 KiB with their metadata out of
	 * line (issue 14: 60 instructions a kp_alloc + kp_free against the
	 * inline path's 186 on kpbench a, allocator/proto/README.md); larger
	 * blocks, critical requests and the backup as with inline. The default
	 * since s24 (issue 14: kpool wins on its own defaults); the C tests of
	 * the inline path's own mechanism name layout:inline (tests/ktest.h,
	 * KT_LAYOUT_INLINE). */
	{"layout", STRING, "outline", OFF(layout), 0, sizeof(((kp__conf *)0)->layout) - 1,
	 "where a small block's metadata lives: inline (a keyed 16-byte header before each block, free-list links "
	 "inside free blocks) or outline (no header: per-span index stacks and per-block records in guard-paged "
	 "mappings of their own, a canary secret per block; blocks up to 64 KiB, larger ones as with inline). "
	 "outline maps a 16 GiB slice map of untouched address space: under an address-space limit (ulimit -v) "
	 "that refuses it, the default falls back to inline (stats: primary.layout)"},
	/* on: thread_churn's heaps (64 blocks of 16-512 B live) 30.8 -> 15.9
	 * pages of data and metadata each (outline.c, LEND) */
	{"lend", BOOL, "on", OFF(lend), 0, 1,
	 "layout:outline: a thread's classes up to 1 KiB take their blocks from a coarser class's span until it runs "
	 "dry, so that a thread holding a few blocks of many classes touches a page for each lender, not each class "
	 "(off: each class its own spans from its first block)"},
	{"checks", BOOL, "on", OFF(checks), 0, 1,
	 "an 8-byte canary past every block, free-list links vetted before use (off: header tags only)"},
	{"poison", BOOL, "off", OFF(poison), 0, 1, "fill freed payloads and verify them on reuse (write after free)"},
	{"abort_on_corruption", BOOL, "off", OFF(abort_on_corruption), 0, 1,
	 "abort() at the first integrity violation instead of containing it (debugging)"},
	/* Shared by the pool's threads (tcache.c). A bound per class let each
	 * of two consumer threads cache 256 KiB of every class it freed
	 * (prodcons: 14 MiB against glibc's 4). 8m: one thread of 40 classes
	 * (kpbench b: 16 B-64 KiB) runs the instructions it ran before the
	 * bound (904M for 1M operations; 2m: 968M, 4m: 930M) and peaks at
	 * 64-68 MiB against 73-77 (a block reused from a bin is one whose
	 * pages are resident); larson's five threads get 1.6 MiB each and
	 * peak at 12.5 MiB (2m: 10.9; before the bound: 14.4). */
	{"tcache_bytes", SIZE, "8m", OFF(tcache_bytes), 0, 64ull << 20,
	 "bytes the pool's thread caches may grow by, shared among its threads (at least 256k each; a lone "
	 "thread up to twice it, within a quarter of its heap), a quarter of it and 256 KiB at most in one class "
	 "(a lone thread's budget / 32, 1 MiB at most), past each class's start of at most 16 blocks or 4 KiB (a "
	 "class holds 2 to 256 blocks; one left unused gives them back); smaller: less memory pinned per thread"},
	{"grow_wait_us", INT, "0", OFF(grow_wait_us), 0, 1000000,
	 "when headroom runs out, wait this long for the daemon's next segment before growing on the allocation path"},
	{"wait_ms", INT, "0", OFF(wait_ms), 0, 60000,
	 "an ordinary request the primary cannot serve waits this long for the daemon (0: fail at once)"},
	{"faults", STRING, "", OFF(faults), 0, KP_FAULT_SPEC_MAX - 1,
	 "OS faults to inject, e.g. mmap@nth=3;madvise@p=0.1@seed=7 (see kp_fault_inject)"},
	{"log_fd", INT, "0", OFF(log_fd), 0, 65535, "write one line per event to this descriptor (0: no log)"},
	{"log_rate", INT, "200", OFF(log_rate), 1, 1000000,
	 "at most this many log lines per second; the rest are counted and reported as suppressed"},
};
#define NOPT (sizeof options / sizeof options[0])

/* kp_options' list, made at its first call: in .lbss (after .bss), so that
 * its 800 bytes keep no page of the small state resident (s33). */
__attribute__((section(".lbss"))) static kp_option_info info[NOPT];

static void info_init(void)
{
	for (size_t i = 0; i < NOPT; i++)
		info[i] = (kp_option_info){options[i].name, kind_name[options[i].kind], options[i].deflt,
					   options[i].help};
}

KP_EXPORT size_t kp_options(const kp_option_info **out)
{
	static pthread_once_t once = PTHREAD_ONCE_INIT;
	pthread_once(&once, info_init);
	if (out)
		*out = info;
	return NOPT;
}

/* s equals lower (lower case letters), ignoring the case of s. Not
 * strcasecmp, nor strtoull below: the defaults are parsed at every kp_create,
 * and each of those sits in a 64 KiB window of libc that a small program
 * otherwise never touches, which fault-around maps whole
 * (tests/test_create_libc.c). */
static bool lower_eq(const char *s, const char *lower)
{
	for (; *s && (*s | 0x20) == *lower; s++, lower++)
		;
	return !*s && !*lower;
}

static int parse_value(const struct option *o, const char *v, size_t vlen, uint64_t *out, bool *is_auto)
{
	char buf[64];
	if (o->kind == STRING)
		return vlen <= o->max ? (*out = vlen, 0) : -1;
	if (vlen == 0 || vlen >= sizeof buf)
		return -1;
	memcpy(buf, v, vlen);
	buf[vlen] = 0;
	/* auto, not a number: KP_WM_AUTO is past every option's max, so the
	 * range check lets it through by *is_auto, never by its value */
	if (o->kind == SIZE && (o->offset == OFF(high_wm) || o->offset == OFF(backup)) && lower_eq(buf, "auto"))
		return *is_auto = true, *out = KP_WM_AUTO, 0; /* KP_BK_AUTO for backup */
	if (o->kind == BOOL) {
		if (lower_eq(buf, "on") || !strcmp(buf, "1") || lower_eq(buf, "true"))
			return *out = 1, 0;
		if (lower_eq(buf, "off") || !strcmp(buf, "0") || lower_eq(buf, "false"))
			return *out = 0, 0;
		return -1;
	}
	if (buf[0] < '0' || buf[0] > '9')
		return -1;
	char *end = buf;
	uint64_t n = 0;
	for (; *end >= '0' && *end <= '9'; end++) {
		unsigned d = (unsigned)(*end - '0');
		if (n > (UINT64_MAX - d) / 10)
			return -1; /* past 64 bits */
		n = n * 10 + d;
	}
	unsigned shift = 0;
	if (o->kind == SIZE && *end) {
		switch (*end | 0x20) {
		case 'k': shift = 10; break;
		case 'm': shift = 20; break;
		case 'g': shift = 30; break;
		default: return -1;
		}
		end++;
		if ((*end | 0x20) == 'b' || (*end | 0x20) == 'i')
			end += (end[0] | 0x20) == 'i' && (end[1] | 0x20) == 'b' ? 2 : 1;
	}
	if (*end || (shift && n > (UINT64_MAX >> shift)))
		return -1;
	*out = (uint64_t)n << shift;
	return 0;
}

static void store(kp__conf *c, const struct option *o, uint64_t v, const char *text)
{
	char *f = (char *)c + o->offset;
	switch (o->kind) {
	case STRING:
		memcpy(f, text, (size_t)v);
		f[v] = 0;
		break;
	case SIZE: *(size_t *)f = (size_t)v; break;
	case INT:
		if (o->offset == OFF(seed))
			*(uint64_t *)f = v;
		else
			*(unsigned *)f = (unsigned)v;
		break;
	case PERCENT: *(unsigned *)f = (unsigned)v; break;
	case BOOL: *(bool *)f = v != 0; break;
	}
}

static int apply(kp__conf *c, const char *s, const char *origin)
{
	while (s && *s) {
		const char *item = s, *comma = strchr(s, ',');
		size_t len = comma ? (size_t)(comma - s) : strlen(s);
		s = comma ? comma + 1 : NULL;
		while (len && (*item == ' ' || *item == '\t'))
			item++, len--;
		while (len && (item[len - 1] == ' ' || item[len - 1] == '\t'))
			len--;
		if (len == 0)
			continue;
		const char *colon = memchr(item, ':', len);
		if (!colon) {
			kp__set_error("%s: option '%.*s' has no value (expected key:value)", origin, (int)len, item);
			return -1;
		}
		size_t klen = (size_t)(colon - item);
		const char *v = colon + 1;
		size_t vlen = len - klen - 1;
		const struct option *o = NULL;
		for (size_t i = 0; i < NOPT; i++)
			if (strlen(options[i].name) == klen && !memcmp(options[i].name, item, klen))
				o = &options[i];
		if (!o) {
			kp__set_error("%s: unknown option '%.*s' (value '%.*s')", origin, (int)klen, item, (int)vlen,
				      v);
			return -1;
		}
		uint64_t n;
		bool is_auto = false;
		if (parse_value(o, v, vlen, &n, &is_auto) < 0 || n < o->min || (n > o->max && !is_auto)) {
			kp__set_error("%s: bad value '%.*s' for option '%s' (%s %s from %llu to %llu%s)", origin,
				      (int)vlen, v, o->name, kind_article[o->kind], kind_name[o->kind],
				      (unsigned long long)o->min, (unsigned long long)o->max,
				      o->offset == OFF(high_wm) || o->offset == OFF(backup) ? ", or auto" : "");
			return -1;
		}
		store(c, o, n, v);
	}
	return 0;
}

/* A fixed reserve up to this size is not compared with the memory limit
 * (which costs kp_create four more system calls): 64 MiB fits any machine
 * kpool runs on, and the workloads' reserves are a few MiB. */
#define KP_BACKUP_UNCHECKED ((size_t)64 << 20)

/* Does the conf string s name option `name` (as apply reads it: items
 * between commas, blanks trimmed, the key before the first colon)? */
static bool names(const char *s, const char *name)
{
	size_t n = strlen(name);
	while (s && *s) {
		while (*s == ' ' || *s == '\t')
			s++;
		if (!strncmp(s, name, n) && s[n] == ':')
			return true;
		s = strchr(s, ',');
		s = s ? s + 1 : NULL;
	}
	return false;
}

/* Out of line and cold: kp_create's error path only, and conf_load is in the
 * text small programs keep (preload/hot.txt), which is full. */
__attribute__((cold, noinline)) bool kp__conf_given(const char *s, const char *name)
{
	return names(getenv("KPOOL_CONF"), name) || names(s, name);
}

int kp__conf_load(kp__conf *c, const char *s)
{
	memset(c, 0, sizeof *c);
	for (size_t i = 0; i < NOPT; i++) {
		uint64_t n = 0;
		bool is_auto;
		parse_value(&options[i], options[i].deflt, strlen(options[i].deflt), &n, &is_auto);
		store(c, &options[i], n, options[i].deflt);
	}
	if (apply(c, getenv("KPOOL_CONF"), "KPOOL_CONF") < 0 || apply(c, s, "conf") < 0) {
		errno = EINVAL;
		return -1;
	}
	/* The memory this process may use: the machine's (physical plus swap)
	 * or its cgroup's limit, whichever is smaller (os.c). Read only when a
	 * setting depends on it: the default primary_max, or a fixed reserve
	 * large enough to matter. */
	size_t lim = c->primary_max == 0 || (c->backup != KP_BK_AUTO && c->backup > KP_BACKUP_UNCHECKED)
			     ? kp__os_memory_limit()
			     : SIZE_MAX;
	/* The reserve is faulted in whole by kp_create: one past the limit is
	 * not a reserve but an OOM kill inside kp_create (a cgroup of 256 MiB
	 * and backup:1g: the process ended by SIGKILL). It must fit beside what
	 * the process holds already and the sixteenth of the limit kept for
	 * what it holds outside the pool (as primary_max below). */
	size_t spare = 0;
	if (lim != SIZE_MAX) {
		size_t held = kp__os_self_resident() + lim / 16;
		spare = lim > held ? lim - held : 0;
	}
	if (c->backup != KP_BK_AUTO && c->backup > KP_BACKUP_UNCHECKED && c->backup > spare) {
		kp__set_error(
			"conf: backup (%zu) is more than this process has room for (%zu: the memory limit %zu, the "
			"smaller of physical memory plus swap and the cgroup's, less what the process holds and a "
			"sixteenth); the reserve is resident from kp_create",
			(size_t)c->backup, spare, lim);
		errno = EINVAL;
		return -1;
	}
	if (c->primary_max == 0) { /* as far as the machine allows */
		/* Less what the process holds already, a fixed reserve, and a
		 * sixteenth for what it will hold outside the pool (stacks,
		 * libraries, page tables), so that the pool says NULL before
		 * the cgroup's OOM killer acts (tests/test_cgroup_limits.py). */
		size_t bk = c->backup != KP_BK_AUTO ? (size_t)c->backup : 0, room = spare > bk ? spare - bk : 0;
		c->primary_max = room > (1ull << 44) ? (size_t)1 << 44 : room < (4u << 20) ? (size_t)4 << 20 : room;
	} else if (c->primary_max < KP_SEG_SIZE) { /* a primary holds at least one segment */
		kp__set_error("conf: primary_max (%zu) is less than one segment (%zu); 0 means the machine's limit",
			      c->primary_max, (size_t)KP_SEG_SIZE);
		errno = EINVAL;
		return -1;
	}
	if (c->primary_initial > c->primary_max) {
		kp__set_error("conf: primary_initial (%zu) exceeds primary_max (%zu)", c->primary_initial,
			      c->primary_max);
		errno = EINVAL;
		return -1;
	}
	if (!strcmp(c->layout, "outline")) {
		c->outline = true;
	} else if (strcmp(c->layout, "inline")) {
		kp__set_error("conf: bad value '%s' for option 'layout' (inline or outline)", c->layout);
		errno = EINVAL;
		return -1;
	}
	if (c->recover_wm > c->critical_wm) {
		kp__set_error("conf: recover_wm (%u) must not exceed critical_wm (%u)", c->recover_wm, c->critical_wm);
		errno = EINVAL;
		return -1;
	}
	if (c->high_wm != KP_WM_AUTO && c->low_wm > c->high_wm) {
		kp__set_error("conf: low_wm (%zu) must not exceed high_wm (%zu)", c->low_wm, c->high_wm);
		errno = EINVAL;
		return -1;
	}
	last_error[0] = 0; /* no vsnprintf for nothing (test_create_libc.c) */
	return 0;
}
