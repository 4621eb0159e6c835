/*
 * test_block_purge_held.c - the blocks the daemon holds off their lists
 * while it gives their pages back (primary.c, "purging free blocks"), and
 * its walk of the central lists, attacked.
 *
 * The daemon takes free blocks of the big classes off their spans' lists
 * under the class lock, counts them in use, gives their pages back with no
 * lock held (mincore, madvise), and returns them (bpurge_return). The tests
 * stop it inside that window: they interpose madvise (the daemon's call,
 * os.c) and pthread_mutex_unlock (to catch the moment right after the
 * daemon released the class lock), both forwarding to the real ones.
 *
 *   - held: while a block is held, the program frees it again, reallocs it,
 *     asks its usable size, and takes every block of its class: refused with
 *     double-free events, and never handed out; the live blocks keep every
 *     byte; a pool destroyed while its daemon thread is inside the window
 *     waits for the pass;
 *   - fork while held: a child forked while blocks are held gets them back
 *     once (its next pass), none lost, none twice;
 *   - fork after the return: a child forked right after the daemon returned
 *     the blocks and released the class lock must not return them again.
 *     bpurge_return cleared its count of held blocks after the unlock, so
 *     such a child put every block of the batch on its list a second time
 *     and handed them out twice (a fork from another thread lands there on
 *     its own: 41 of 24,450 forks in one 8 s run with both threads on one
 *     CPU, the forker waiting on that class lock);
 *   - a waiting thread: a thread that finds no free units waits for the
 *     daemon's next segment (grow_wait_us) holding its class lock; the
 *     daemon, in its walk, waited for that lock, so neither grew nor ended
 *     its pass until the thread gave up and mapped a segment itself (1000 ms
 *     and 2 mmap calls on the allocation path with grow_wait_us:1s); it now
 *     leaves a class whose lock it does not get within 1 ms to its next pass;
 *   - damaged span table: a span slot's free-list head or geometry
 *     rewritten (the span table is not sealed; test_probe does the same to
 *     the probe) must not send the daemon's reads or writes outside the
 *     span's run: the walk read the head's link at any address and crashed.
 */
#define _GNU_SOURCE
/* Tests the inline primary's segments, spans and units (primary.c): every pool layout:inline (ktest.h, KT_LAYOUT_INLINE). */
#define KT_LAYOUT_INLINE 1
#include "ktest.h"

#include "internal.h"

#include <dlfcn.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <sys/mman.h>
#include <sys/syscall.h>

#define KiB ((size_t)1 << 10)
#define BLK (40 * KiB - 64) /* the 40 KiB class: ten pages, eight blocks to a span of five units */
#define NBLK 64

static kp_pool *pool;
static char *blk[NBLK];

/* ---- the interposed calls ------------------------------------------------ */

/* Called on the daemon's MADV_DONTNEED (no lock held), once at a time. */
typedef void madvise_fn(void *addr, size_t len);
static madvise_fn *_Atomic madvise_hook;
static _Atomic int in_madvise_hook;

int madvise(void *addr, size_t len, int advice)
{
	madvise_fn *h = atomic_load(&madvise_hook);
	if (advice == MADV_DONTNEED && h && !atomic_exchange(&in_madvise_hook, 1)) {
		h(addr, len);
		atomic_store(&in_madvise_hook, 0);
	}
	return (int)syscall(SYS_madvise, addr, len, advice);
}

/* Called right after unlock_watch (a class lock) is released by the thread
 * unlock_thread. */
static int (*real_unlock)(pthread_mutex_t *);
static pthread_mutex_t *_Atomic unlock_watch;
static pthread_t unlock_thread;
static void (*unlock_hook)(void);

__attribute__((constructor)) static void find_real_unlock(void)
{
	real_unlock = (int (*)(pthread_mutex_t *))dlsym(RTLD_NEXT, "pthread_mutex_unlock");
}

#undef pthread_mutex_unlock /* internal.h sends kpool's unlocks to kp__mutex_unlock, which calls this */
int pthread_mutex_unlock(pthread_mutex_t *m)
{
	int rc = real_unlock(m);
	if (m == atomic_load(&unlock_watch) && pthread_equal(pthread_self(), unlock_thread))
		unlock_hook();
	return rc;
}

/* ---- helpers --------------------------------------------------------------- */

/* NBLK blocks, every byte written, every other one freed to its span. */
/* Set (release) once blk[] is written: a madvise hook installed before
 * take_and_free_half reads blk[] only after it (acquire). */
static _Atomic bool blk_ready;

static void take_and_free_half(void)
{
	for (unsigned i = 0; i < NBLK; i++) {
		blk[i] = kp_alloc(pool, BLK, 0);
		REQUIRE(blk[i] != NULL, "kp_alloc: %s", kp_last_error());
		kt_fill(blk[i], BLK, i);
	}
	atomic_store_explicit(&blk_ready, true, memory_order_release);
	for (unsigned i = 1; i < NBLK; i += 2)
		CHECK(kp_free(pool, blk[i]) == 0, "kp_free: %s", kp_last_error());
	kp_thread_flush(pool);
	/* the pass that finds the memory taken above: growth, in which the
	 * daemon stamps the freed blocks (prefault off, headroom to spare:
	 * primary.c, blocks_purge); the tests' passes follow */
	kp_daemon_step(pool, 100);
}

static unsigned live_damaged(void)
{
	unsigned bad = 0;
	for (unsigned i = 0; i < NBLK; i += 2)
		bad += kt_verify(blk[i], BLK, i) != KT_OK;
	return bad;
}

/* The freed block (payload) whose pages [addr, addr + len) are. */
static char *freed_at(const void *addr)
{
	for (unsigned i = 1; i < NBLK; i += 2)
		if ((const char *)addr > blk[i] && (const char *)addr < blk[i] + BLK)
			return blk[i];
	return NULL;
}

/* Take NBLK blocks of the class (all of them live at once): how many are
 * one another, or one of the live blocks blk[even]. */
static unsigned duplicates_when_taking_all(void)
{
	static char *q[NBLK];
	unsigned dup = 0;
	for (unsigned i = 0; i < NBLK; i++) {
		q[i] = kp_alloc(pool, BLK, 0);
		for (unsigned j = 0; q[i] && j < i; j++)
			dup += q[i] == q[j];
		for (unsigned j = 0; q[i] && j < NBLK; j += 2)
			dup += q[i] == blk[j];
	}
	return dup;
}

/* ---- held blocks: a program's frees, reallocs and allocations ------------ */

static unsigned held_seen, held_freed, held_realloced, held_usable, held_handed_out;

static void use_held_block(void *addr, size_t len)
{
	(void)len;
	char *p = freed_at(addr);
	if (!p)
		return;
	held_seen++;
	held_freed += kp_free(pool, p) == 0;
	held_realloced += kp_realloc(pool, p, 100, 0) != NULL;
	held_usable += kp_usable_size(pool, p) != 0;
	void *q[16];
	for (unsigned i = 0; i < 16; i++) {
		q[i] = kp_alloc(pool, BLK, KP_ZERO);
		held_handed_out += q[i] == p;
	}
	for (unsigned i = 0; i < 16; i++)
		kp_free(pool, q[i]);
}

static void test_held_blocks_stay_held(void)
{
	pool = kp_create("daemon:off,prefault:off,seed:21,tcache_bytes:0");
	REQUIRE(pool != NULL, "kp_create: %s", kp_last_error());
	take_and_free_half();
	int64_t df0 = kt_stat(pool, "integrity.double_frees");
	atomic_store(&madvise_hook, use_held_block);
	for (int i = 0; i < 4; i++)
		kp_daemon_step(pool, 100);
	atomic_store(&madvise_hook, NULL);
	int64_t df = kt_stat(pool, "integrity.double_frees") - df0;
	printf("   %u blocks met while held: freed %u, realloced %u, usable %u, handed out %u; %lld double-free "
	       "events\n",
	       held_seen, held_freed, held_realloced, held_usable, held_handed_out, (long long)df);
	CHECK(held_seen >= NBLK / 4, "the daemon gave back the pages of %u freed blocks only", held_seen);
	CHECK(held_freed == 0, "kp_free accepted %u blocks the daemon held (double frees)", held_freed);
	CHECK(held_realloced == 0, "kp_realloc accepted %u blocks the daemon held", held_realloced);
	CHECK(held_usable == 0, "kp_usable_size gave a size for %u blocks the daemon held", held_usable);
	CHECK(held_handed_out == 0, "%u blocks handed out while the daemon held them", held_handed_out);
	CHECK(df >= (int64_t)held_seen, "%lld double-free events for %u double frees", (long long)df, held_seen);
	CHECK(live_damaged() == 0, "live blocks lost bytes");
	CHECK(duplicates_when_taking_all() == 0, "blocks handed out twice after the passes");
	kp_destroy(pool);
}

/* kp_destroy from another thread while the daemon thread is in the window. */
static sem_t in_window;
static _Atomic int window_hits;

static void slow_madvise(void *addr, size_t len)
{
	(void)len;
	if (!atomic_load_explicit(&blk_ready, memory_order_acquire) || !freed_at(addr))
		return;
	if (atomic_fetch_add(&window_hits, 1) == 0)
		sem_post(&in_window);
	kt_sleep_ms(20);
}

static void test_destroy_while_held(void)
{
	pool = kp_create("prefault:off,seed:22,decay_ms:1,daemon_interval_ms:1");
	REQUIRE(pool != NULL, "kp_create: %s", kp_last_error());
	sem_init(&in_window, 0, 0);
	/* The hook before the blocks are freed: this pool's daemon runs every
	 * 1 ms, and it purged all of them before the hook was in place in 3
	 * of 32 runs under TSan (each purged block is marked and not purged
	 * again, so the hook then never saw one in 5 s). */
	atomic_store(&blk_ready, false);
	atomic_store(&madvise_hook, slow_madvise);
	take_and_free_half();
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += 5;
	bool hit = sem_timedwait(&in_window, &ts) == 0;
	CHECK(hit, "the daemon gave back no free block's pages in 5 s");
	kp_destroy(pool); /* waits for the pass: no crash, nothing left behind (ASan) */
	atomic_store(&madvise_hook, NULL);
	printf("   destroyed with the daemon thread inside the window (%d pages calls)\n", atomic_load(&window_hits));
}

/* ---- fork ---------------------------------------------------------------- */

/* The forking thread: forks when told, the child takes every block of the
 * class after a pass (which returns what it holds) and exits 0 when none
 * is handed out twice. */
static sem_t fork_go, fork_done;
static _Atomic int fork_quit;
static unsigned children, bad_children;

static void *forker(void *arg)
{
	(void)arg;
	for (;;) {
		sem_wait(&fork_go);
		if (atomic_load(&fork_quit))
			return NULL;
		pid_t pid = fork();
		if (pid == 0) {
			kp_daemon_step(pool, 0);
			_exit(duplicates_when_taking_all() || live_damaged() ? 3 : 0);
		}
		int st = 0;
		if (pid > 0)
			waitpid(pid, &st, 0);
		children++;
		bad_children += pid < 0 || !WIFEXITED(st) || WEXITSTATUS(st) != 0;
		sem_post(&fork_done);
	}
}

static void fork_now(void)
{
	sem_post(&fork_go);
	sem_wait(&fork_done);
}

static void fork_in_madvise(void *addr, size_t len)
{
	(void)len;
	if (freed_at(addr)) {
		atomic_store(&madvise_hook, NULL);
		fork_now();
	}
}

static void fork_run(void (*arm)(void), void (*disarm)(void))
{
	pool = kp_create("daemon:off,prefault:off,seed:23,tcache_bytes:0");
	REQUIRE(pool != NULL, "kp_create: %s", kp_last_error());
	sem_init(&fork_go, 0, 0);
	sem_init(&fork_done, 0, 0);
	atomic_store(&fork_quit, 0);
	children = bad_children = 0;
	pthread_t t;
	REQUIRE(pthread_create(&t, NULL, forker, NULL) == 0, "pthread_create");
	take_and_free_half();
	arm();
	/* the freed blocks stamped, then given back: the fork happens in
	 * there (the growth pass in take_and_free_half stamps them already
	 * with prefault off: primary.c, blocks_purge) */
	kp_daemon_step(pool, 100);
	kp_daemon_step(pool, 100);
	disarm();
	atomic_store(&fork_quit, 1);
	sem_post(&fork_go);
	pthread_join(t, NULL);
	printf("   %u children, %u handed out a block twice or lost bytes\n", children, bad_children);
	CHECK(children > 0, "no fork happened");
	CHECK(bad_children == 0, "%u of %u children handed out a block twice or lost bytes", bad_children, children);
	CHECK(live_damaged() == 0, "live blocks lost bytes in the parent");
	CHECK(duplicates_when_taking_all() == 0, "blocks handed out twice in the parent");
	kp_destroy(pool);
}

static void arm_madvise(void)
{
	atomic_store(&madvise_hook, fork_in_madvise);
}
static void disarm_madvise(void)
{
	atomic_store(&madvise_hook, NULL);
}

static void test_fork_while_held(void)
{
	fork_run(arm_madvise, disarm_madvise);
}

/* After every release of the class lock by the daemon's pass: after it took
 * the blocks (held: the child returns them), and after it returned them. */
static void arm_unlock(void)
{
	unlock_thread = pthread_self();
	unlock_hook = fork_now;
	atomic_store(&unlock_watch, kp__class_lock(pool, kp__class_of(BLK + KP_HDR + KP_CANARY)));
}
static void disarm_unlock(void)
{
	atomic_store(&unlock_watch, NULL);
}

static void test_fork_after_return(void)
{
	fork_run(arm_unlock, disarm_unlock);
}

/* ---- a damaged span table met by the walk ---------------------------------- */

static kp__span *span_of_block(const char *p)
{
	kp__seg *s = kp__pagemap_get(p);
	unsigned u = (unsigned)(((uintptr_t)p - (uintptr_t)s) >> KP_UNIT_SHIFT);
	return &s->span[s->span[u].head];
}

/* Rewrite one field of the span of blk[0] (listed: it has free blocks) with
 * what, run passes, put it back. */
enum field { F_FREE_UNMAPPED, F_FREE_INSIDE, F_FREE_LIVE, F_START, F_BLOCK, F_NBLOCKS };
static const char *const field_name[] = {"free -> unmapped",	 "free -> inside a block",
					 "free -> a live block", "start -> unmapped",
					 "block -> 16",		 "nblocks -> 4096"};

static void damage_one(enum field f)
{
	pool = kp_create("daemon:off,prefault:off,seed:24,tcache_bytes:0");
	REQUIRE(pool != NULL, "kp_create: %s", kp_last_error());
	take_and_free_half();
	kp__span *sp = span_of_block(blk[0]);
	REQUIRE(sp->in_partial && sp->free, "blk[0]'s span has no free block");
	kp__span saved = *sp;
	switch (f) {
	case F_FREE_UNMAPPED: sp->free = (char *)(uintptr_t)KP_PAGE; break;
	case F_FREE_INSIDE: sp->free = saved.free + 4 * KiB; break;
	case F_FREE_LIVE: sp->free = blk[0] - KP_HDR; break;
	case F_START: sp->start = (char *)(uintptr_t)KP_PAGE; break;
	case F_BLOCK: sp->block = 16; break;
	case F_NBLOCKS: sp->nblocks = 4096; break;
	}
	for (int i = 0; i < 4; i++)
		kp_daemon_step(pool, 100);
	sp->free = saved.free, sp->start = saved.start, sp->block = saved.block, sp->nblocks = saved.nblocks;
	CHECK(live_damaged() == 0, "%s: live blocks lost bytes", field_name[f]);
	printf("   %s: passes ran, live blocks intact\n", field_name[f]);
	kp_destroy(pool);
}

static void test_damaged_span_table(void)
{
	for (enum field f = F_FREE_UNMAPPED; f <= F_NBLOCKS; f++) {
		unsigned long failed = ktest_failed_;
		pid_t pid = fork(); /* one pool each, and a crash is this field's */
		if (pid == 0) {
			damage_one(f);
			fflush(stdout);
			_exit(ktest_failed_ != failed);
		}
		int st = 0;
		waitpid(pid, &st, 0);
		CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "%s: %s %d", field_name[f],
		      WIFSIGNALED(st) ? "crashed: signal" : "failed, status", WIFSIGNALED(st) ? WTERMSIG(st) : st);
	}
}

/* ---- the daemon never waits on an allocating thread ------------------------ */

/* A thread that finds no free units waits up to grow_wait_us for the
 * daemon's next segment, holding the class lock it carves under. The
 * daemon, stopped inside its purge of class A (the madvise hook), goes on
 * once that thread waits; the walk reaches class B, whose lock the thread
 * holds. */
#define WAIT_US 1000000 /* grow_wait_us: what a daemon stuck on the lock costs the thread */
static sem_t purge_paused, purge_go;
static _Atomic int paused_once;
static _Atomic uint64_t alloc_since_ns;
static unsigned cls_a, cls_b;

/* Where class c comes in checkpoint seq's walk (blocks_purge's order). */
static unsigned walk_pos(unsigned c, uint64_t seq)
{
	unsigned first = kp__class_of(16384), n = KP_NCLASS - first;
	return (unsigned)((c - first + n - seq % n) % n);
}

static void pause_in_purge(void *addr, size_t len)
{
	(void)len;
	uint64_t seq = pool->bpurge_seq + 1; /* the daemon's own field, read on its thread */
	if (!freed_at(addr) || walk_pos(cls_b, seq) <= walk_pos(cls_a, seq) || atomic_exchange(&paused_once, 1))
		return;
	sem_post(&purge_paused);
	sem_wait(&purge_go);
}

static void *release_when_waiting(void *arg)
{
	(void)arg;
	for (;;) {
		uint64_t t0 = atomic_load(&alloc_since_ns);
		if (t0 && kt_now_ns() - t0 > 20000000ull) /* 20 ms in one allocation: it waits */
			break;
		kt_sleep_ms(1);
	}
	sem_post(&purge_go);
	return NULL;
}

static void test_daemon_does_not_wait_on_a_waiting_thread(void)
{
	char conf[128];
	snprintf(conf, sizeof conf, "prefault:off,high_wm:8m,low_wm:8m,grow_wait_us:%u,seed:25", WAIT_US);
	pool = kp_create(conf);
	REQUIRE(pool != NULL, "kp_create: %s", kp_last_error());
	sem_init(&purge_paused, 0, 0);
	sem_init(&purge_go, 0, 0);
	/* A: the 40 KiB class (blk[], freed ones to purge); B: another lock's */
	cls_a = kp__class_of(BLK + KP_HDR + KP_CANARY);
	cls_b = cls_a + 2;
	REQUIRE(kp__class_lock(pool, cls_b) != kp__class_lock(pool, cls_a), "classes A and B share a lock");
	take_and_free_half();
	atomic_store(&madvise_hook, pause_in_purge);
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += 10;
	REQUIRE(sem_timedwait(&purge_paused, &ts) == 0, "the daemon gave back no page of a freed block in 10 s");
	/* the daemon is stopped in its walk, before class B: take B's blocks
	 * until the free units run out and an allocation waits */
	pthread_t t;
	REQUIRE(pthread_create(&t, NULL, release_when_waiting, NULL) == 0, "pthread_create");
	int64_t mmaps0 = kt_stat(pool, "syscalls.alloc.mmap");
	size_t size = kp__class_size[cls_b] - KP_HDR - KP_CANARY;
	static void *b[8192];
	unsigned n = 0;
	uint64_t longest = 0;
	for (; n < 8192; n++) {
		uint64_t t0 = kt_now_ns();
		atomic_store(&alloc_since_ns, t0);
		b[n] = kp_alloc(pool, size, 0);
		atomic_store(&alloc_since_ns, 0);
		uint64_t dt = kt_now_ns() - t0;
		longest = dt > longest ? dt : longest;
		if (!b[n] || dt > 20000000ull)
			break;
	}
	pthread_join(t, NULL);
	atomic_store(&madvise_hook, NULL);
	int64_t mmaps = kt_stat(pool, "syscalls.alloc.mmap") - mmaps0;
	printf("   %u blocks of %u B; the one that waited for the daemon: %.0f ms (grow_wait_us %u ms), "
	       "%lld mmap on the allocation path\n",
	       n, kp__class_size[cls_b], (double)longest / 1e6, WAIT_US / 1000, (long long)mmaps);
	CHECK(longest < WAIT_US * 1000ull / 2,
	      "an allocation waited %.0f ms for a segment: the daemon waited for its class lock (grow_wait_us %u ms)",
	      (double)longest / 1e6, WAIT_US / 1000);
	CHECK(mmaps == 0, "%lld mmap calls on the allocation path: the daemon did not grow while it waited",
	      (long long)mmaps);
	for (unsigned i = 0; i <= n && i < 8192; i++)
		kp_free(pool, b[i]);
	kp_destroy(pool);
}

int main(void)
{
	RUN(test_daemon_does_not_wait_on_a_waiting_thread);
	RUN(test_held_blocks_stay_held);
	RUN(test_destroy_while_held);
	RUN(test_fork_while_held);
	RUN(test_fork_after_return);
	RUN(test_damaged_span_table);
	return ktest_summary();
}
