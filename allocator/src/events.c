/*
 * events.c - the event ring: every decision and fault, as it happens.
 *
 * Many writers, one drainer, and writers never block or wait. A writer claims
 * a position with one fetch_add on head and publishes its slot with a
 * per-slot sequence number, seqlock style: odd while the words are written,
 * even when complete. The drainer copies a slot and re-reads its sequence; a
 * slot overwritten in between (the ring wrapped) is counted as dropped, so a
 * full ring keeps the newest events and says how many it lost.
 */
#include "internal.h"

#include <stdarg.h>
#include <stdlib.h>

static const char *const names[KP_EV__COUNT] = {
	"none",	  "grow",	    "shrink",	   "backup_enter",   "backup_leave", "backup_alloc", "denied",
	"oom",	  "bad_size",	    "double_free", "invalid_free",   "corruption",   "token",	     "os_fail",
	"daemon", "fault_injected", "overflow",	   "use_after_free", "freelist",     "quarantine",   "log_suppressed",
};

KP_EXPORT const char *kp_event_name(unsigned kind)
{
	return kind < KP_EV__COUNT && names[kind] ? names[kind] : "unknown";
}

/* ---- a formatter with no allocation, safe in a signal handler ---------- */

typedef struct sink {
	char *buf;
	size_t len, pos;
} sink;

static void put_c(sink *k, char c)
{
	if (k->pos + 1 < k->len)
		k->buf[k->pos] = c;
	k->pos++;
}

static void put_s(sink *k, const char *s)
{
	for (; s && *s; s++)
		put_c(k, *s);
}

static void put_u(sink *k, unsigned long long v, unsigned base, int width)
{
	char tmp[24];
	int n = 0;
	do {
		tmp[n++] = "0123456789abcdef"[v % base];
		v /= base;
	} while (v);
	while (n < width && n < (int)sizeof tmp)
		tmp[n++] = '0';
	while (n)
		put_c(k, tmp[--n]);
}

size_t kp__fmt(char *buf, size_t len, const char *fmt, va_list ap)
{
	sink k = {buf, len, 0};
	for (const char *f = fmt; *f; f++) {
		if (*f != '%') {
			put_c(&k, *f);
			continue;
		}
		f++;
		int width = 0;
		if (*f == '0') { /* zero-padded width, as in %03llu */
			while (*++f >= '0' && *f <= '9')
				width = width * 10 + (*f - '0');
		}
		if (*f == 's') {
			put_s(&k, va_arg(ap, const char *));
		} else if (*f == 'p') {
			put_s(&k, "0x");
			put_u(&k, (uintptr_t)va_arg(ap, void *), 16, 0);
		} else if (*f == 'c') {
			put_c(&k, (char)va_arg(ap, int));
		} else if (*f == 'd') {
			int v = va_arg(ap, int);
			if (v < 0)
				put_c(&k, '-');
			put_u(&k, v < 0 ? (unsigned long long)-(long long)v : (unsigned long long)v, 10, width);
		} else if (*f == 'u') {
			put_u(&k, va_arg(ap, unsigned), 10, width);
		} else if (*f == 'x') {
			put_u(&k, va_arg(ap, unsigned), 16, width);
		} else if (f[0] == 'z' && f[1] == 'u') {
			put_u(&k, va_arg(ap, size_t), 10, width);
			f++;
		} else if (f[0] == 'l' && f[1] == 'l' && f[2] == 'u') {
			put_u(&k, va_arg(ap, unsigned long long), 10, width);
			f += 2;
		} else if (*f == '%') {
			put_c(&k, '%');
		} else {
			put_c(&k, '?');
			if (!*f)
				break;
		}
	}
	if (len)
		buf[k.pos < len ? k.pos : len - 1] = 0;
	return k.pos;
}

static size_t fmt(char *buf, size_t len, const char *f, ...)
{
	va_list ap;
	va_start(ap, f);
	size_t n = kp__fmt(buf, len, f, ap);
	va_end(ap);
	return n < len ? n : len - 1;
}

/* ---- the event log --------------------------------------------------------
 * One line per event, written with one write(2) as it happens. At most
 * log_rate lines a second: past that, lines are counted, and the first line
 * of the next second says how many were suppressed, so a storm of double
 * frees does not become a storm of system calls. */
static void log_line(kp_pool *pool, const kp_event *ev)
{
	uint64_t sec = ev->time_ns / 1000000000ull;
	char line[KP_EVENT_TEXT + 64]; /* "kpool", 20+4 digits of time, the kind's name, the text, "\n" */
	if (atomic_exchange(&pool->log_sec, sec) != sec) {
		atomic_store(&pool->log_used, 0);
		uint64_t lost = atomic_exchange(&pool->log_suppressed, 0);
		if (lost) {
			size_t n = fmt(line, sizeof line, "kpool %llu.%03llu %s suppressed %llu lines\n",
				       (unsigned long long)sec,
				       (unsigned long long)(ev->time_ns % 1000000000ull / 1000000),
				       kp_event_name(KP_EV_LOG_SUPPRESSED), (unsigned long long)lost);
			kp__os_write(&pool->os, pool->log_fd, line, n);
		}
	}
	if (atomic_fetch_add(&pool->log_used, 1) >= pool->conf.log_rate) {
		atomic_fetch_add(&pool->log_suppressed, 1);
		return;
	}
	size_t n = fmt(line, sizeof line, "kpool %llu.%03llu %s %s\n", (unsigned long long)sec,
		       (unsigned long long)(ev->time_ns % 1000000000ull / 1000000), kp_event_name(ev->kind), ev->text);
	kp__os_write(&pool->os, pool->log_fd, line, n);
}

int kp__log_open(kp_pool *pool)
{
	pool->log_fd = (int)pool->conf.log_fd;
	const char *env = getenv("KPOOL_LOG");
	if (pool->log_fd || !env || !*env)
		return 0;
	if (!strcmp(env, "stderr"))
		pool->log_fd = 2;
	else if (!strcmp(env, "stdout"))
		pool->log_fd = 1;
	else if (env[0] >= '0' && env[0] <= '9')
		pool->log_fd = atoi(env);
	else {
		pool->log_fd = kp__os_open_log(&pool->os, env);
		if (pool->log_fd < 0) {
			pool->log_fd = 0;
			kp__set_error("KPOOL_LOG: cannot open '%s' for writing", env);
			return -1;
		}
		pool->log_owned = true;
	}
	return 0;
}

void kp__log_close(kp_pool *pool)
{
	if (pool->log_owned)
		kp__os_close(&pool->os, pool->log_fd);
	pool->log_fd = 0;
}

void kp__event(kp_pool *pool, unsigned kind, unsigned which, const void *addr, size_t size, const char *fmt, ...)
{
	kp__ring *r = &pool->ring;
	union {
		kp_event ev;
		uint64_t w[KP_RING_WORDS];
	} u;
	memset(&u, 0, sizeof u);
	uint64_t pos = atomic_fetch_add_explicit(&r->head, 1, memory_order_relaxed);
	u.ev.seq = pos;
	u.ev.time_ns = kp__now_ns();
	u.ev.kind = kind;
	u.ev.pool = which;
	u.ev.addr = (uintptr_t)addr;
	u.ev.size = size;
	va_list ap;
	va_start(ap, fmt);
	if (kp__fmt(u.ev.text, sizeof u.ev.text, fmt, ap) >= sizeof u.ev.text) /* never so (KP_EVENT_TEXT) */
		memcpy(u.ev.text + sizeof u.ev.text - 4, "...", 4);
	va_end(ap);

	/* The slot is claimed by compare-and-swap from an older lap's sequence
	 * only: a writer lapped between its position and this (a signal
	 * handler's events, a thread preempted while 1,024 more were
	 * recorded) finds a later lap's sequence there and leaves the slot to
	 * it. Its event is the ring's loss, which the drainer counts (the slot
	 * holds another sequence than the one it wants, or it skipped the
	 * position). Before (s35), the lapped writer stored its older event
	 * over the newer one; the drainer took the older sequence for a slot
	 * still being written and stopped there, and every event after it was
	 * neither drained nor counted (test_ring_lapped_writer_attack35: 470-
	 * 554 of a round's; test_ring_storm_attack33 under TSan). Its end is a
	 * compare-and-swap too: a later lap that claimed the slot meanwhile
	 * (past this writer's claim: it found the odd sequence below its own)
	 * owns it, and its sequence stays. */
	kp__ring_slot *s = &r->slot[pos % KP_RING_SLOTS];
	uint64_t mine = 2 * pos + 1, cur = atomic_load_explicit(&s->seq, memory_order_relaxed);
	bool claimed = true;
	do {
		if (cur >= mine) {
			claimed = false;
			break;
		}
	} while (!atomic_compare_exchange_weak_explicit(&s->seq, &cur, mine, memory_order_relaxed,
							memory_order_relaxed));
	if (claimed) {
		atomic_thread_fence(memory_order_release);
		for (size_t i = 0; i < KP_RING_WORDS; i++)
			atomic_store_explicit(&s->w[i], u.w[i], memory_order_relaxed);
		atomic_compare_exchange_strong_explicit(&s->seq, &mine, mine + 1, memory_order_release,
							memory_order_relaxed);
	}
	if (pool->log_fd > 0)
		log_line(pool, &u.ev);
}

KP_EXPORT size_t kp_events_drain(kp_pool *pool, kp_event *out, size_t max)
{
	if (!kp__pool_live(pool, "kp_events_drain") || (!out && max))
		return 0;
	kp__ring *r = &pool->ring;
	uint64_t tail = atomic_load_explicit(&r->tail, memory_order_relaxed);
	uint64_t head = atomic_load_explicit(&r->head, memory_order_acquire);
	if (head - tail > KP_RING_SLOTS) {
		atomic_fetch_add_explicit(&r->dropped, head - KP_RING_SLOTS - tail, memory_order_relaxed);
		tail = head - KP_RING_SLOTS;
	}
	size_t n = 0;
	for (; tail < head && n < max; tail++) {
		kp__ring_slot *s = &r->slot[tail % KP_RING_SLOTS];
		uint64_t want = 2 * tail + 2;
		uint64_t s1 = atomic_load_explicit(&s->seq, memory_order_acquire);
		if (s1 < want)
			break; /* still being written: leave it for the next drain */
		union {
			kp_event ev;
			uint64_t w[KP_RING_WORDS];
		} u;
		for (size_t i = 0; i < KP_RING_WORDS; i++)
			u.w[i] = atomic_load_explicit(&s->w[i], memory_order_relaxed);
		atomic_thread_fence(memory_order_acquire);
		uint64_t s2 = atomic_load_explicit(&s->seq, memory_order_relaxed);
		/* (the event's own sequence too: a lapped writer's late words
		 * under a later lap's sequence, kp__event) */
		if (s1 != want || s2 != want || u.ev.seq != tail) {
			atomic_fetch_add_explicit(&r->dropped, 1, memory_order_relaxed);
			continue;
		}
		u.ev.text[KP_EVENT_TEXT - 1] = 0;
		out[n++] = u.ev;
	}
	atomic_store_explicit(&r->tail, tail, memory_order_relaxed);
	return n;
}
