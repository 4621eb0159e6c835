/*
 * test_pagemap_attack.c - attacks on the fast paths' flat pagemap
 * (internal.h, kp__pagemap_flat): two pools whose words collide (as ids
 * 2^31 apart would: the word of pool B's chunk made pool A's) never let A
 * free, size or resize B's block, checks on or off; a chunk a pool released
 * and another pool's huge block then occupies holds 0 (no pool's fast path
 * takes it) and its blocks free to the right pool; pointers past the 47 bits,
 * in the last chunk the flat map covers and around 0 are refused without a
 * fault; and with the reservation refused by an injected mmap fault (the
 * flat map's own mmap), the pool works through the two-level map.
 */
#define _GNU_SOURCE 1
/* Tests the inline primary's segments, spans and units (primary.c): every pool layout:inline (ktest.h, KT_LAYOUT_INLINE). */
#define KT_LAYOUT_INLINE 1
#include "ktest.h"

#include "internal.h"

static uint32_t word_at(uintptr_t a)
{
	uintptr_t chunk = a >> KP_SEG_SHIFT;
	if (chunk >= atomic_load(&kp__pagemap_flat_n))
		return UINT32_MAX;
	return atomic_load(&kp__pagemap_flat[chunk]);
}

static void collide(const char *conf_a)
{
	kp_pool *a = kp_create(conf_a);
	kp_pool *b = kp_create("daemon:off,backup:0,primary_initial:4m");
	REQUIRE(a && b, "kp_create: %s", kp_last_error());
	void *pa = kp_alloc(a, 64, 0); /* A's thread cache exists */
	char *pb = kp_alloc(b, 64, 0);
	REQUIRE(pa && pb, "alloc");
	memset(pb, 0x5a, 64);
	uintptr_t chunk = (uintptr_t)pb >> KP_SEG_SHIFT;
	REQUIRE(chunk < atomic_load(&kp__pagemap_flat_n), "flat map reserved");
	/* the collision: B's chunk holds A's word */
	atomic_store(&kp__pagemap_flat[chunk], kp__pagemap_flat_tag(a->id));
	CHECK(kp_usable_size(a, pb) == 0, "A sizes B's block (%zu)", kp_usable_size(a, pb));
	int rc = kp_free(a, pb);
	CHECK(rc == KP_ENOTOURS || rc == KP_ECORRUPT, "A freed B's block (rc %d)", rc);
	CHECK(kp_realloc(a, pb, 128, 0) == NULL, "A resized B's block");
	char *again = kp_alloc(a, 64, 0);
	CHECK(again != pb, "A handed out B's block");
	unsigned bad = 0;
	for (int i = 0; i < 64; i++)
		bad += (unsigned char)pb[i] != 0x5a;
	CHECK(bad == 0, "B's block written through A (%u bytes)", bad);
	atomic_store(&kp__pagemap_flat[chunk], kp__pagemap_flat_tag(b->id));
	CHECK(kp_free(b, pb) == 0, "B frees its block");
	kp_free(a, again);
	kp_free(a, pa);
	kp_events_drain(a, NULL, 0);
	kp_destroy(a);
	kp_destroy(b);
}

static void test_collision_checks_on(void)
{
	collide("daemon:off,backup:0,primary_initial:4m");
}

static void test_collision_checks_off(void)
{
	collide("daemon:off,backup:0,primary_initial:4m,checks:off");
}

static void test_released_chunk_reused_by_huge(void)
{
	kp_pool *a = kp_create("daemon:off,backup:0,primary_initial:4m");
	REQUIRE(a, "kp_create: %s", kp_last_error());
	void *pa = kp_alloc(a, 64, 0);
	REQUIRE(pa, "alloc");
	uintptr_t s = (uintptr_t)pa & ~(uintptr_t)(KP_SEG_SIZE - 1);
	CHECK(word_at(s) == kp__pagemap_flat_tag(a->id), "A's chunk holds A's word");
	/* B made first: its own mappings do not take A's hole */
	kp_pool *b = kp_create("daemon:off,backup:0,primary_initial:4m");
	REQUIRE(b, "kp_create: %s", kp_last_error());
	kp_destroy(a);
	CHECK(word_at(s) == 0, "a destroyed pool's chunk holds %#x", word_at(s));
	enum { TRIES = 48 };
	char *h[TRIES] = {0};
	int hit = -1;
	for (int i = 0; i < TRIES && hit < 0; i++) {
		size_t sz = (size_t)(1 + i % 3) * KP_SEG_SIZE / 2 + 4096;
		h[i] = kp_alloc(b, sz, 0);
		REQUIRE(h[i], "huge alloc");
		uintptr_t lo = (uintptr_t)h[i] & ~(uintptr_t)(KP_SEG_SIZE - 1);
		if (s >= lo && s < (uintptr_t)h[i] + sz)
			hit = i;
	}
	if (hit < 0) {
		fprintf(stderr, "  (no huge block of B landed on A's old chunk: checked the words only)\n");
	} else {
		CHECK(word_at(s) == 0, "a huge block's chunk holds %#x", word_at(s));
		/* a pointer into the huge block shaped as a normal segment's block */
		int rc = kp_free(b, (void *)(s + KP_UNIT_SIZE + 64));
		CHECK(rc != 0, "an interior pointer of a huge block freed (rc %d)", rc);
	}
	unsigned fails = 0;
	for (int i = 0; i < TRIES; i++)
		if (h[i])
			fails += kp_free(b, h[i]) != 0;
	CHECK(fails == 0, "%u huge frees failed", fails);
	kp_events_drain(b, NULL, 0);
	kp_destroy(b);
}

static void test_wild_addresses(void)
{
	kp_pool *pool = kp_create("daemon:off,backup:0,primary_initial:4m");
	REQUIRE(pool, "kp_create: %s", kp_last_error());
	void *keep = kp_alloc(pool, 64, 0);
	REQUIRE(keep, "alloc");
	const uintptr_t wild[] = {
		16,
		KP_UNIT_SIZE,
		KP_SEG_SIZE + KP_UNIT_SIZE,
		((uintptr_t)1 << 47) - KP_SEG_SIZE + KP_UNIT_SIZE, /* the last chunk the flat map covers */
		((uintptr_t)1 << 47) - 16,
		(uintptr_t)1 << 47,
		((uintptr_t)1 << 47) + KP_UNIT_SIZE,
		((uintptr_t)1 << 48) + KP_UNIT_SIZE,
		(uintptr_t)0xffff800000000000ull + KP_UNIT_SIZE,
		UINTPTR_MAX - 15,
		UINTPTR_MAX & ~(uintptr_t)(KP_SEG_SIZE - 1),
	};
	for (size_t i = 0; i < sizeof wild / sizeof wild[0]; i++) {
		void *p = (void *)wild[i];
		int rc = kp_free(pool, p);
		CHECK(rc == KP_ENOTOURS || rc == KP_EINVAL, "kp_free(%p) = %d", p, rc);
		CHECK(kp_usable_size(pool, p) == 0, "kp_usable_size(%p) not 0", p);
		CHECK(kp_realloc(pool, p, 32, 0) == NULL, "kp_realloc(%p) not NULL", p);
	}
	CHECK(kp_free(pool, NULL) == 0, "kp_free(NULL) is 0");
	CHECK(kp_free(pool, keep) == 0, "the pool still frees");
	kp_events_drain(pool, NULL, 0);
	kp_destroy(pool);
}

/* One kp_create with the nth mmap refused, in a child: 2 when the pool came
 * up with the flat map unreserved and then worked, 1 when it came up with it
 * reserved (or not at all), 0 on a failure of the checks. */
static int one_fault(int nth)
{
	pid_t pid = fork();
	if (pid == 0) {
		char conf[128];
		/* primary_initial:0: the first segment, and with it the flat map,
		 * is mapped by the first allocation, past kp_create (which arms
		 * the faults last) */
		snprintf(conf, sizeof conf, "daemon:off,backup:0,primary_initial:0,faults:mmap@nth=%d", nth);
		kp_pool *pool = kp_create(conf);
		if (!pool || atomic_load(&kp__pagemap_flat_n))
			_exit(1);
		void *first = kp_alloc(pool, 64, 0);
		if (!first || atomic_load(&kp__pagemap_flat_n))
			_exit(1);
		kp_free(pool, first);
		kp_pool *other = kp_create("daemon:off,backup:0,primary_initial:4m");
		if (!other)
			_exit(1);
		char *theirs = kp_alloc(other, 64, 0);
		static void *p[20000];
		unsigned fails = 0;
		for (int round = 0; round < 3; round++) {
			for (unsigned i = 0; i < 20000; i++)
				fails += !(p[i] = kp_alloc(pool, 16 + (i * 37 + round) % 3000, 0));
			for (unsigned i = 0; i < 20000; i += 2)
				fails += kp_free(pool, p[i]) != 0;
			for (unsigned i = 1; i < 20000; i += 2)
				fails += kp_free(pool, p[i]) != 0;
		}
		if (fails || !theirs || kp_free(pool, theirs) != KP_ENOTOURS || kp_free(other, theirs) != 0 ||
		    kt_stat(pool, "integrity.quarantined") != 0) {
			fprintf(stderr, "  unreserved flat map (mmap #%d refused): %u failures\n", nth, fails);
			_exit(0);
		}
		kp_events_drain(pool, NULL, 0);
		kp_destroy(pool);
		kp_destroy(other);
		_exit(2);
	}
	int st = 0;
	waitpid(pid, &st, 0);
	CHECK(WIFEXITED(st), "child of nth=%d died (signal %d)", nth, WIFSIGNALED(st) ? WTERMSIG(st) : 0);
	return WIFEXITED(st) ? WEXITSTATUS(st) : 0;
}

static void test_reservation_refused(void)
{
	int reached = 0;
	for (int nth = 1; nth <= 16; nth++) {
		int r = one_fault(nth);
		CHECK(r != 0, "mmap #%d refused: the pool misbehaved", nth);
		reached += r == 2;
	}
	CHECK(reached > 0, "no injected fault refused the flat map's reservation alone");
}

int main(void)
{
	RUN(test_collision_checks_on);
	RUN(test_collision_checks_off);
	RUN(test_released_chunk_reused_by_huge);
	RUN(test_wild_addresses);
	RUN(test_reservation_refused);
	return ktest_summary();
}
