/*
 * test_integrity.c - each of the prototype's integrity checks, shown to
 * catch what it is for. Linked against libproto.so (or libproto-aes.so), so
 * malloc and free here are the prototype's. Violations are counted, not
 * aborted on (proto_set_contain), and every case asserts the exact count.
 * A case can fail: build with -DPROTO_CHECK_DFREE=0 (libproto-nodfree.so),
 * and the double-free case reports it (README.md, "The test").
 */
#define _GNU_SOURCE
#include "proto.h"

#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

static int failures;
#define CHECK(cond, ...)                                            \
	do {                                                        \
		if (!(cond)) {                                      \
			failures++;                                 \
			printf("FAIL %s:%d: ", __FILE__, __LINE__); \
			printf(__VA_ARGS__);                        \
			printf("\n");                               \
		}                                                   \
	} while (0)

static uint64_t seen[PROTO_ERR_KINDS];
/* How many violations of kind k since the last call (and none of the others). */
static uint64_t new_errors(int k, uint64_t *other)
{
	uint64_t got = 0;
	*other = 0;
	for (int i = 0; i < PROTO_ERR_KINDS; i++) {
		uint64_t now = proto_errors(i), d = now - seen[i];
		seen[i] = now;
		if (i == k)
			got = d;
		else
			*other += d;
	}
	return got;
}

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint64_t next_rand(void)
{
	rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
	return rng;
}

/* Every free of a free block is found: no probability in it. */
static void test_double_free(void)
{
	enum { N = 4000 };
	static void *p[N];
	uint64_t other;
	for (int i = 0; i < N; i++)
		p[i] = malloc(1 + next_rand() % 1024);
	for (int i = 0; i < N; i++)
		free(p[i]);
	for (int i = 0; i < N; i++) /* each a second time, none given out again */
		free(p[i]);
	uint64_t n = new_errors(PROTO_ERR_DOUBLE_FREE, &other);
	CHECK(n == N && other == 0, "double free: %llu of %d found (%llu others)", (unsigned long long)n, N,
	      (unsigned long long)other);
	void *q = malloc(0); /* the canary sits at q + 0: still found by the bit */
	free(q);
	free(q);
	n = new_errors(PROTO_ERR_DOUBLE_FREE, &other);
	CHECK(n == 1 && other == 0, "double free of malloc(0): %llu found", (unsigned long long)n);
}

/* A pointer that is no block start of ours is refused, the block it points
 * into (if any) untouched. */
static void test_invalid(void)
{
	uint64_t other, n;
	int on_stack = 0;
	static char in_data[64];
	char *p = malloc(200);
	char *span_tail = NULL;
	free(&on_stack);
	free(in_data);
	free(p + 8);			/* interior */
	free(p + 199);			/* interior, last byte */
	free((char *)proto_meta_of(p)); /* the allocator's own metadata */
	char *big = malloc(1 << 20);	/* another mapping (the huge path) */
	free(big + 4096);
	/* a pointer into another allocator's memory: one mmap of our own */
	char *other_pool = mmap(NULL, 1 << 22, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	free(other_pool + (1 << 16));
	/* past the last block of a span: 48-byte blocks in 64 KiB leave 16 bytes */
	char *b48 = malloc(40);
	span_tail = (char *)(((uintptr_t)b48 & ~(uintptr_t)0xffff) + 65536 - 65536 % 48);
	free(span_tail);
	n = new_errors(PROTO_ERR_INVALID, &other);
	CHECK(n == 8 && other == 0, "invalid frees: %llu of 8 refused (%llu others)", (unsigned long long)n,
	      (unsigned long long)other);
	free(p); /* the block itself is still good */
	free(big);
	munmap(other_pool, 1 << 22);
	free(b48);
	n = new_errors(PROTO_ERR_INVALID, &other);
	CHECK(n == 0 && other == 0, "the real blocks freed cleanly: %llu, %llu", (unsigned long long)n,
	      (unsigned long long)other);
}

/* One byte past the request, at every size up to 2 KiB and some larger:
 * caught at free. A canary copied from another block (same class, another
 * address), which an attacker can read, does not pass either. */
static void test_overflow(void)
{
	uint64_t other, n, want = 0;
	for (size_t sz = 0; sz <= 2048; sz++) {
		unsigned char *p = malloc(sz);
		p[sz] ^= 1;
		free(p);
		want++;
	}
	size_t big[] = {4000, 65536, 65537, 300000};
	for (int i = 0; i < 4; i++) {
		unsigned char *p = malloc(big[i]);
		p[big[i]] ^= 0x80;
		free(p);
		want++;
	}
	n = new_errors(PROTO_ERR_OVERFLOW, &other);
	CHECK(n == want && other == 0, "overflows: %llu of %llu caught (%llu others)", (unsigned long long)n,
	      (unsigned long long)want, (unsigned long long)other);

	enum { K = 64 };
	unsigned char *b[K];
	uint64_t can[K];
	for (int i = 0; i < K; i++) {
		b[i] = malloc(100);
		memcpy(&can[i], b[i] + 100, 8); /* the attacker reads each canary */
	}
	int distinct = 1;
	for (int i = 0; i < K; i++)
		for (int j = 0; j < i; j++)
			distinct &= can[i] != can[j];
	CHECK(distinct, "canaries of 64 blocks are not all distinct");
	for (int i = 1; i < K; i++) { /* overflow i, writing i-1's canary back */
		memset(b[i] + 100, 'A', 8);
		memcpy(b[i] + 100, &can[i - 1], 8);
		free(b[i]);
	}
	free(b[0]);
	n = new_errors(PROTO_ERR_OVERFLOW, &other);
	CHECK(n == K - 1 && other == 0, "forged canaries: %llu of %d caught", (unsigned long long)n, K - 1);
}

/* Nothing of the allocator follows a block or lives in a free one: overwrite
 * every free block of a span (a long overflow, a use after free) with
 * pointers to a live block; the allocator hands out exactly the span's free
 * blocks, never the live one, never outside the span, and finds no fault. */
static void test_no_inline_metadata(void)
{
	uint64_t other;
	enum { N = 64 * 1024 / 64 };
	static char *p[N];
	for (int i = 0; i < N; i++)
		p[i] = malloc(50); /* the 64-byte class: fills a span (or two) */
	char *live = p[N / 2];
	uintptr_t span = (uintptr_t)live & ~(uintptr_t)0xffff;
	int nfree = 0;
	for (int i = 0; i < N; i++)
		if (p[i] != live && ((uintptr_t)p[i] & ~(uintptr_t)0xffff) == span) {
			free(p[i]);
			p[i] = NULL;
			nfree++;
		}
	for (uintptr_t a = span; a < span + 65536; a += sizeof(void *)) /* all but the live block */
		if (a < (uintptr_t)live || a >= (uintptr_t)live + 64)
			memcpy((void *)a, &live, sizeof(live));
	/* allocate until the span's free blocks are all handed out again */
	int bad = 0, back = 0, nq = 0;
	static char *q[4 * N];
	while (back < nfree && nq < 4 * N) {
		char *x = q[nq++] = malloc(50);
		bad += x == live || ((uintptr_t)x & 63) != 0;
		back += ((uintptr_t)x & ~(uintptr_t)0xffff) == span;
	}
	CHECK(bad == 0 && back == nfree, "after overwriting the free blocks: %d bad blocks, %d of %d back", bad, back,
	      nfree);
	for (int i = 0; i < nq; i++)
		free(q[i]);
	for (int i = 0; i < N; i++)
		free(p[i]);
	uint64_t n = new_errors(PROTO_ERR_INVALID, &other);
	CHECK(n == 0 && other == 0, "no fault from overwritten free memory: %llu, %llu", (unsigned long long)n,
	      (unsigned long long)other);

	/* the metadata mapping is fenced: the page before it faults */
	char *meta = proto_meta_of(live);
	pid_t pid = fork();
	if (pid == 0) {
		meta[-1] = 1;
		_exit(0);
	}
	int st = 0;
	waitpid(pid, &st, 0);
	CHECK(WIFSIGNALED(st) && WTERMSIG(st) == SIGSEGV, "a write to the guard page below the metadata did not fault");
	/* and it is in no data segment: a mapping of its own */
	CHECK(proto_meta_of(meta) == NULL, "metadata %p lies in a data segment", (void *)meta);
}

/* Steady state makes no system call. */
static void test_no_syscall(void)
{
	enum { N = 1000 };
	static void *slot[N];
	static size_t size[N];
	for (int i = 0; i < N; i++)
		slot[i] = malloc(size[i] = 16 + next_rand() % 1009);
	for (int i = 0; i < 200000; i++) { /* warm: every class has its spans */
		int k = (int)(next_rand() % N);
		free(slot[k]);
		slot[k] = malloc(16 + next_rand() % 1009);
	}
	uint64_t before = proto_os_calls();
	for (int i = 0; i < 2000000; i++) {
		int k = (int)(next_rand() % N);
		free(slot[k]);
		slot[k] = malloc(16 + next_rand() % 1009);
	}
	uint64_t calls = proto_os_calls() - before;
	CHECK(calls == 0, "%llu system calls in 2M steady-state malloc/free", (unsigned long long)calls);
	for (int i = 0; i < N; i++)
		free(slot[i]);
}

/* Cross-thread frees come back to the owner, and a double one is found. */
static void *freer(void *arg)
{
	void **v = arg;
	for (int i = 0; i < 1000; i++)
		free(v[i]);
	free(v[0]); /* a double free from a thread that does not own the block */
	return NULL;
}
static void test_cross_thread(void)
{
	static void *v[1000];
	uint64_t other;
	for (int i = 0; i < 1000; i++)
		v[i] = malloc(64);
	pthread_t t;
	pthread_create(&t, NULL, freer, v);
	pthread_join(t, NULL);
	uint64_t n = new_errors(PROTO_ERR_DOUBLE_FREE, &other);
	CHECK(n == 1 && other == 0, "cross-thread double free: %llu found", (unsigned long long)n);
	int reused = 0;
	for (int i = 0; i < 2000; i++) {
		void *p = malloc(64);
		for (int j = 0; j < 1000; j++)
			reused += p == v[j];
	}
	CHECK(reused == 1000, "%d of 1000 blocks freed by another thread reused", reused);
}

/* realloc keeps the contents, moves the canary when it resizes in place,
 * and finds an overflow made before it. */
static void test_realloc(void)
{
	uint64_t other, n;
	size_t sizes[] = {100, 110, 60, 900, 5000, 70000, 1000000, 3000000, 5000000, 200, 0};
	unsigned char *p = malloc(50);
	memset(p, 7, 50);
	size_t have = 50;
	for (int i = 0; i < 11; i++) {
		p = realloc(p, sizes[i]);
		size_t keep = have < sizes[i] ? have : sizes[i];
		int same = 1;
		for (size_t k = 0; k < keep; k++)
			same &= p[k] == 7;
		CHECK(same, "realloc to %zu lost the contents", sizes[i]);
		memset(p, 7, sizes[i]);
		have = sizes[i];
	}
	free(p);
	n = new_errors(PROTO_ERR_OVERFLOW, &other);
	CHECK(n == 0 && other == 0, "clean reallocs reported %llu, %llu", (unsigned long long)n,
	      (unsigned long long)other);
	unsigned char *q = malloc(100);
	q[100] ^= 1;
	CHECK(realloc(q, 104) == NULL, "realloc in place of an overflowed block did not refuse");
	unsigned char *h = malloc(100000);
	h[100000] ^= 1;
	CHECK(realloc(h, 100008) == NULL, "realloc in place of an overflowed huge block did not refuse");
	n = new_errors(PROTO_ERR_OVERFLOW, &other);
	CHECK(n == 2 && other == 0, "overflows found by realloc: %llu of 2", (unsigned long long)n);
}

int main(void)
{
	proto_set_contain(1);
	uint64_t other;
	new_errors(0, &other);
	test_double_free();
	test_invalid();
	test_overflow();
	test_no_inline_metadata();
	test_no_syscall();
	test_cross_thread();
	test_realloc();
	printf("%s: %d failure(s)\n", failures ? "FAIL" : "ok", failures);
	return failures != 0;
}
