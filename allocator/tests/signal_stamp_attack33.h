/*
 * signal_stamp_attack33.h - what test_outline_signal_big_attack33.c and
 * test_outline_signal_full_attack33.c share: a block stamped with its
 * serial in its first and last 8 bytes (a block held by two at once shows
 * as a mismatch), and the handler's slots of held blocks. Include after
 * <stdatomic.h>, <stdint.h> and <string.h>.
 */
#ifndef SIGNAL_STAMP_ATTACK33_H
#define SIGNAL_STAMP_ATTACK33_H

/* a block's stamp: its serial in its first and last 8 bytes */
static _Atomic uint64_t serial;
static _Atomic long mismatches;
static void stamp(void *p, size_t n, uint64_t s)
{
	memcpy(p, &s, 8);
	memcpy((char *)p + n - 8, &s, 8);
}
static void check(const void *p, size_t n, uint64_t s)
{
	uint64_t a, b;
	memcpy(&a, p, 8);
	memcpy(&b, (const char *)p + n - 8, 8);
	if (a != s || b != s)
		atomic_fetch_add(&mismatches, 1);
}

#define HSLOTS 16
struct held {
	void *p;
	size_t n;
	uint64_t s;
};
static struct held hslot[HSLOTS];

#endif
