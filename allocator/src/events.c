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
#include <stdio.h>

static const char *const names[KP_EV__COUNT] = {
	"none",         "grow",          "shrink",     "backup_enter", "backup_leave", "backup_alloc",
	"denied",       "oom",           "bad_size",   "double_free",  "invalid_free", "corruption",
	"token",        "os_fail",       "daemon",     "fault_injected",
};

KP_EXPORT const char *kp_event_name(unsigned kind)
{
	return kind < KP_EV__COUNT && names[kind] ? names[kind] : "unknown";
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
	vsnprintf(u.ev.text, sizeof u.ev.text, fmt, ap);
	va_end(ap);

	kp__ring_slot *s = &r->slot[pos % KP_RING_SLOTS];
	atomic_store_explicit(&s->seq, 2 * pos + 1, memory_order_relaxed);
	atomic_thread_fence(memory_order_release);
	for (size_t i = 0; i < KP_RING_WORDS; i++)
		atomic_store_explicit(&s->w[i], u.w[i], memory_order_relaxed);
	atomic_store_explicit(&s->seq, 2 * pos + 2, memory_order_release);
}

KP_EXPORT size_t kp_events_drain(kp_pool *pool, kp_event *out, size_t max)
{
	if (!pool || (!out && max))
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
		if (s1 != want || s2 != want) {
			atomic_fetch_add_explicit(&r->dropped, 1, memory_order_relaxed);
			continue;
		}
		u.ev.text[KP_EVENT_TEXT - 1] = 0;
		out[n++] = u.ev;
	}
	atomic_store_explicit(&r->tail, tail, memory_order_relaxed);
	return n;
}
