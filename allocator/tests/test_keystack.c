/*
 * test_keystack.c - a thread cache's key stack (kp__tcache.keys, issue 14
 * point 1): K of each cached block is kept out of line, so allocation
 * computes no K, and a free-list link rewritten to point at another free
 * block of the same class is caught.
 *
 * The attacker reads a freed block's header and link (a read after free)
 * and rewrites the link (a write after free). From the header it learns
 * K(h) = tag ^ meta, so it can encode any link for h. Before the key stack,
 * a link to another free block of the class (one on its span's free list)
 * passed every check (the block's own header verifies: it is free, of that
 * class, keyed by its own address), so that block was handed out by the
 * cache and stayed on the span's list: handed out twice. Now the block
 * must verify under the key the stack holds for the block the list had
 * there, and does not.
 */
#define _GNU_SOURCE 1
/* Tests the inline block headers and their keys (integrity.c; layout:outline's checks: test_outline_integrity.c): every pool layout:inline (ktest.h, KT_LAYOUT_INLINE). */
#define KT_LAYOUT_INLINE 1
#include "ktest.h"

#include "internal.h"

#include <sys/mman.h>

#define CONF "primary_initial:4m,daemon:off,backup:0,seed:11"

/* Redirect a cached block's link to a block on its span's free list. */
static void test_link_to_another_free_block(void)
{
	kp_pool *pool = kp_create(CONF);
	REQUIRE(pool, "kp_create: %s", kp_last_error());
	char *x = kp_alloc(pool, 48, 0), *a1 = kp_alloc(pool, 48, 0), *a2 = kp_alloc(pool, 48, 0);
	REQUIRE(x && a1 && a2, "allocations");
	kp_free(pool, x);
	kp_thread_flush(pool); /* x: back on its span's free list */
	kp_free(pool, a1);
	kp_free(pool, a2); /* the bin: a2 -> a1 */
	/* Read a2's header: K(a2) = tag ^ meta; its link pad follows. */
	char *h2 = a2 - KP_HDR;
	uint64_t k2 = kt_raw_get(h2) ^ kt_raw_get(h2 + 8);
	uint64_t link = kt_raw_get(a2);
	CHECK((link ^ (uint64_t)kp__link_pad(k2)) == (uint64_t)(uintptr_t)(a1 - KP_HDR), "the link decodes to a1");
	kt_raw_put(a2, (uint64_t)(uintptr_t)(x - KP_HDR) ^ (uint64_t)kp__link_pad(k2)); /* now a2 -> x */
	char *p1 = kp_alloc(pool, 48, 0), *p2 = kp_alloc(pool, 48, 0);
	CHECK(p1 == a2, "the head first: %p (a2 %p)", (void *)p1, (void *)a2);
	CHECK(p2 != x, "the redirected link handed out x (%p), a block on its span's free list", (void *)x);
	CHECK(kt_stat(pool, "integrity.freelist_errors") == 1, "freelist error counted: %llu",
	      (unsigned long long)kt_stat(pool, "integrity.freelist_errors"));
	/* No block is handed out twice from here on. */
	void *q[64];
	unsigned dup = 0;
	for (int i = 0; i < 64; i++) {
		q[i] = kp_alloc(pool, 48, 0);
		dup += q[i] == p1 || q[i] == p2;
	}
	CHECK(dup == 0, "%u blocks handed out while live", dup);
	for (int i = 0; i < 64; i++)
		CHECK(kp_free(pool, q[i]) == 0, "free %d", i);
	CHECK(kp_free(pool, p1) == 0 && kp_free(pool, p2) == 0, "frees");
	kp_destroy(pool);
}

/* The last block of a bin has a NULL link: the count says nothing follows
 * it. A link written there (here to a live block of the same segment, a
 * near one, encoded with the pad its header gives away) is never followed,
 * but it says the list and the count disagree: the allocation that takes the
 * block reports it and sets the bin aside. The fast path leaves a bin's last
 * block to small_alloc, which checks exactly that; were the fast path to
 * take it with its own check (the link near h), the damage would go
 * unseen. */
static void test_last_link_must_end_the_list(void)
{
	kp_pool *pool = kp_create(CONF);
	REQUIRE(pool, "kp_create: %s", kp_last_error());
	char *live = kp_alloc(pool, 48, 0), *w = kp_alloc(pool, 48, 0);
	REQUIRE(live && w, "allocations");
	CHECK(kp_free(pool, w) == 0, "free"); /* the bin holds blocks: w and the rest of its refill */
	unsigned cls = kp__class_of(48 + KP_HDR + KP_CANARY);
	kp__tcache *tc = kp__tls_state.tc[0];
	REQUIRE(tc && kp__tls_state.id[0] == pool->id, "the pool's cache is the thread's first");
	kp__bin *b = &tc->bin[cls];
	unsigned n = b->count;
	REQUIRE(n >= 2, "the bin holds %u blocks", n);
	char *at = b->head;
	for (unsigned i = 0; i + 1 < n; i++)
		at = kp__link_get_k(tc->stack[cls][n - 1 - i] ^ kp__kslot(&pool->secret, at), at);
	uint64_t key = tc->stack[cls][0] ^ kp__kslot(&pool->secret, at); /* stacks hold K ^ kslot */
	REQUIRE(at && kp__link_get_k(key, at) == NULL, "the last block's link is NULL");
	CHECK(((uintptr_t)(live - KP_HDR) ^ (uintptr_t)at) >> KP_SEG_SHIFT == 0, "live is near the last block");
	kt_raw_put(at + KP_HDR, (uint64_t)(uintptr_t)(live - KP_HDR) ^ kp__link_pad(key));
	int64_t before = kt_stat(pool, "integrity.freelist_errors");
	char *got[KP_BIN_MAX];
	unsigned took_last = 0;
	for (unsigned i = 0; i < n; i++) {
		got[i] = kp_alloc(pool, 48, 0);
		REQUIRE(got[i], "alloc %u", i);
		took_last += got[i] == at + KP_HDR;
	}
	CHECK(kt_stat(pool, "integrity.freelist_errors") == before + 1,
	      "a link past the bin's last block went unseen (%lld events)",
	      (long long)(kt_stat(pool, "integrity.freelist_errors") - before));
	CHECK(took_last == 0, "the block whose link was damaged was handed out");
	for (unsigned i = 0; i < n; i++)
		CHECK(kp_free(pool, got[i]) == 0, "free %u", i);
	CHECK(kp_free(pool, live) == 0, "free");
	kp_destroy(pool);
}

/* kp_free's fast path links a block freed into an empty bin to the bin's
 * head, trusting that an empty bin's head is NULL: every way a bin empties
 * must leave it so, or that block's link would lead out of the list (a
 * false alarm at best). Each way here: allocation of the last block, a
 * flush, and a damaged bin set aside then drained; after each, the block
 * freed into the empty bin must end the list and come back clean. */
static void test_empty_bin_ends_the_list(void)
{
	kp_pool *pool = kp_create(CONF);
	REQUIRE(pool, "kp_create: %s", kp_last_error());
	void *w = kp_alloc(pool, 48, 0);
	REQUIRE(w, "alloc");
	CHECK(kp_free(pool, w) == 0, "free");
	unsigned cls = kp__class_of(48 + KP_HDR + KP_CANARY);
	REQUIRE(kp__tls_state.id[0] == pool->id, "the pool's cache is the thread's first");
	kp__bin *b = &kp__tls_state.tc[0]->bin[cls];
	const char *how[] = {"allocation of its last block", "kp_thread_flush", "a damaged bin, drained"};
	for (int way = 0; way < 3; way++) {
		void *held[KP_BIN_MAX * 2];
		unsigned n = 0;
		if (way == 1)
			kp_thread_flush(pool);
		if (way == 2)
			CHECK(kp_fault_inject(pool, "corrupt@freelist") == 0, "inject: %s", kp_last_error());
		while (b->count > 0 && n < KP_BIN_MAX * 2) { /* allocation empties it */
			held[n] = kp_alloc(pool, 48, 0);
			REQUIRE(held[n], "alloc");
			n++;
		}
		REQUIRE(b->count == 0, "%s: the bin is empty", how[way]);
		char *x = kp_alloc(pool, 48, 0); /* from a refill: the bin holds its rest */
		REQUIRE(x, "alloc");
		while (b->count > 0) {
			held[n] = kp_alloc(pool, 48, 0);
			REQUIRE(held[n] && n + 1 < KP_BIN_MAX * 2, "alloc");
			n++;
		}
		int64_t before = kt_stat(pool, "integrity.freelist_errors");
		CHECK(kp_free(pool, x) == 0, "free");
		CHECK(b->count == 1 && b->head == x - KP_HDR, "%s: x heads the bin", how[way]);
		CHECK(kp__link_get_k(kp__tls_state.tc[0]->stack[cls][0] ^ kp__kslot(&pool->secret, x - KP_HDR),
				     x - KP_HDR) == NULL,
		      "after %s, a block freed into the empty bin links past the list", how[way]);
		char *y = kp_alloc(pool, 48, 0);
		CHECK(y == x, "%s: the block comes back", how[way]);
		CHECK(kt_stat(pool, "integrity.freelist_errors") == before, "%s: a free-list event", how[way]);
		kp_free(pool, y);
		for (unsigned i = 0; i < n; i++)
			kp_free(pool, held[i]);
	}
	kp_destroy(pool);
}

/* Many frees and allocations across classes and refills: the key stack and
 * the lists never disagree (no false alarm), flushes give every block
 * back. */
static void test_churn_no_false_alarm(void)
{
	kp_pool *pool = kp_create("primary_initial:8m,daemon:off,backup:0,seed:12,tcache_bytes:4k");
	REQUIRE(pool, "kp_create: %s", kp_last_error());
	uint64_t seed = 12;
	enum { N = 512 };
	void *v[N] = {0};
	size_t n[N] = {0};
	for (int i = 0; i < 200000; i++) {
		unsigned s = (unsigned)kt_rand_range(&seed, 0, N - 1);
		if (v[s]) {
			CHECK(kt_verify(v[s], n[s], s) == KT_OK, "block %u intact", s);
			CHECK(kp_free(pool, v[s]) == 0, "free");
		}
		n[s] = kt_rand_log(&seed, 1, 4096);
		v[s] = kp_alloc(pool, n[s], 0);
		REQUIRE(v[s], "alloc %zu", n[s]);
		kt_fill(v[s], n[s], s);
		if (i % 50000 == 0)
			kp_thread_flush(pool);
	}
	for (int s = 0; s < N; s++)
		kp_free(pool, v[s]);
	CHECK(kt_stat(pool, "integrity.freelist_errors") == 0 && kt_stat(pool, "integrity.corruptions") == 0,
	      "no false alarm");
	kp_destroy(pool);
}

/* What a thread's key stacks cost it in memory: a thread whose bins stay
 * at their start touches a few pages of stacks, whatever the number of
 * classes it uses. Before, each class's stack was a 2 KiB row of its own
 * (KP_BIN_MAX keys), so a bin's first key touched a page per two classes:
 * 38 pages (152 KiB) for a thread of every class, 9 for one of 16-512 B
 * blocks, and thread_churn's 9 threads alive at once held 300 KiB of
 * stacks. */
static void test_start_stacks_are_packed(void)
{
	kp_pool *pool = kp_create(CONF);
	REQUIRE(pool, "kp_create: %s", kp_last_error());
	void *b[3];
	for (unsigned c = 0; c < KP_NCLASS; c++) { /* three blocks of every class: no bin past its start */
		size_t size = kp__class_size[c] - KP_HDR - KP_CANARY;
		for (int i = 0; i < 3; i++)
			REQUIRE((b[i] = kp_alloc(pool, size, 0)) != NULL, "alloc of %zu", size);
		for (int i = 0; i < 3; i++)
			kp_free(pool, b[i]);
	}
	kp__tcache *tc = kp__tls_state.tc[0];
	REQUIRE(tc && kp__tls_state.id[0] == pool->id, "the pool's cache is the thread's first");
	uintptr_t a = (uintptr_t)tc & ~(uintptr_t)(KP_PAGE - 1);
	uintptr_t e = ((uintptr_t)tc + sizeof *tc + KP_PAGE - 1) & ~(uintptr_t)(KP_PAGE - 1);
	static unsigned char vec[1024];
	REQUIRE((e - a) / KP_PAGE <= sizeof vec && mincore((void *)a, e - a, vec) == 0, "mincore");
	unsigned pages = 0;
	for (size_t i = 0; i < (e - a) / KP_PAGE; i++)
		pages += vec[i] & 1;
	printf("   a thread cache of %zu KiB, every class used, no bin past its start: %u KiB resident\n",
	       sizeof *tc >> 10, pages * 4);
	/* its bins (75 of 48 bytes: 1-2 pages) and the start stacks (75 x 16 keys:
	 * 3 pages) */
	CHECK(pages <= 6, "a thread cache whose bins never grew has %u pages resident (%u KiB)", pages, pages * 4);
	kp_destroy(pool);
}

/* A bin grown past its start has its stack moved (kp__bin_miss): the keys
 * of the blocks it held come along, nothing is lost or invented (no false
 * alarm, every block back once), and a link redirected to a free block of
 * the span is still caught. */
static void test_grown_bin_keeps_its_keys(void)
{
	kp_pool *pool = kp_create(CONF);
	REQUIRE(pool, "kp_create: %s", kp_last_error());
	enum { N = 400 };
	static char *v[N];
	unsigned cls = kp__class_of(48 + KP_HDR + KP_CANARY);
	REQUIRE(kp_alloc(pool, 48, 0) != NULL, "alloc"); /* the thread's cache */
	kp__bin *b = &kp__tls_state.tc[0]->bin[cls];
	for (int round = 0; round < 8; round++) { /* runs empty, then full, within a few times its size */
		for (int i = 0; i < N; i++)
			REQUIRE((v[i] = kp_alloc(pool, 48, 0)) != NULL, "alloc");
		for (int i = 0; i < N; i++)
			kt_fill(v[i], 48, (unsigned)i);
		for (int i = 0; i < N; i++) {
			CHECK(kt_verify(v[i], 48, (unsigned)i) == KT_OK, "block %d", i);
			CHECK(kp_free(pool, v[i]) == 0, "free");
		}
	}
	printf("   the 48-byte bin grew to %u blocks, holds %u\n", b->max, b->count);
	REQUIRE(b->max > KP_BIN_START, "the bin did not grow past its start (%u)", b->max);
	CHECK(kt_stat(pool, "integrity.freelist_errors") == 0, "a false alarm");
	/* x on its span's free list; the bin: a2 -> a1 -> ... (more than a start's room) */
	char *x = kp_alloc(pool, 48, 0);
	for (int i = 0; i < N; i++)
		REQUIRE((v[i] = kp_alloc(pool, 48, 0)) != NULL, "alloc");
	kp_free(pool, x);
	kp_thread_flush(pool);
	unsigned n = b->max - 1 < N ? b->max - 1 : N;
	for (unsigned i = 0; i < n; i++)
		kp_free(pool, v[i]);
	REQUIRE(b->count == n && b->head == v[n - 1] - KP_HDR, "the bin holds the %u blocks freed", n);
	char *h2 = v[n - 1] - KP_HDR;
	uint64_t k2 = kt_raw_get(h2) ^ kt_raw_get(h2 + 8);
	kt_raw_put(v[n - 1], (uint64_t)(uintptr_t)(x - KP_HDR) ^ (uint64_t)kp__link_pad(k2));
	/* the head, then not x (still on its span's list); the bin, found
	 * damaged, is set aside and the rest comes from the spans: x once */
	static char *got[N];
	unsigned dup = 0;
	for (unsigned i = 0; i < n; i++) {
		REQUIRE((got[i] = kp_alloc(pool, 48, 0)) != NULL, "alloc");
		for (unsigned j = 0; j < i; j++)
			dup += got[j] == got[i];
	}
	CHECK(got[0] == v[n - 1], "the head first");
	CHECK(got[1] != x, "the redirected link handed out x, a block on its span's free list");
	CHECK(dup == 0, "%u blocks handed out twice", dup);
	CHECK(kt_stat(pool, "integrity.freelist_errors") == 1, "freelist errors: %lld",
	      (long long)kt_stat(pool, "integrity.freelist_errors"));
	kp_destroy(pool);
}

int main(void)
{
	RUN(test_link_to_another_free_block);
	RUN(test_last_link_must_end_the_list);
	RUN(test_empty_bin_ends_the_list);
	RUN(test_churn_no_false_alarm);
	RUN(test_start_stacks_are_packed);
	RUN(test_grown_bin_keeps_its_keys);
	return ktest_summary();
}
