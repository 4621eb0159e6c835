/*
 * test_fork_held.c - a fork() that lands while a daemon pass holds mappings
 * off the pool's lists, on their way out: the child must neither leak them
 * nor unmap them twice, and the parent must still give them back.
 *
 * A pass takes mappings off the pool's lists under the pool lock and unmaps
 * them without it: the grace list (pagemap.c, kp__grace_reclaim: the whole
 * limbo list taken out at once), the huge mappings the huge cache let go
 * (huge.c, kp__huge_cache_trim: expired ones; a kept mapping evicted by an
 * allocation while the daemon gave its pages back, purging 2), and the free
 * segments a shrink released (primary.c, kp__primary_shrink: out of the
 * segment list, retired one by one), and a grow maps a segment before it
 * links it (primary.c, kp__primary_grow). A fork in between copied the mappings
 * into the child, where nothing held them any more: the pass that would
 * have unmapped them runs on in the parent only. The tests stop the pass
 * inside each window by interposing the call it makes there (munmap,
 * madvise, the event log's write), fork from another thread, and in the
 * child (one thread, the pool inherited) check:
 *
 *   - the ranges the pass held are unmapped once the child has used its
 *     pool (small, large and huge blocks, a pass) and destroyed it: not
 *     leaked;
 *   - its capacity counts the segments on its list, none a grow reserved;
 *   - a sentinel the child maps over any of them that was already unmapped
 *     at the fork survives all that: nothing unmapped twice;
 * and in the parent: the pass ends, the ranges are unmapped, the pool works.
 * The window waits at most 300 ms for the fork (a fork that waits for the
 * window to close is the fix), so the tests never hang.
 */
#define _GNU_SOURCE 1
/* Tests the grow daemon's growth, front and purge of the inline primary (daemon.c, primary.c; layout:outline's: test_outline_grow.c, test_outline_memory.c): every pool layout:inline (ktest.h, KT_LAYOUT_INLINE). */
#define KT_LAYOUT_INLINE 1
#include "ktest.h"

#include "internal.h"

#include <pthread.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/syscall.h>

#define KiB ((size_t)1 << 10)
#define MiB ((size_t)1 << 20)

/* Children of this multi-threaded test allocate (TSan's die_after_fork). */
const char *__tsan_default_options(void);
__attribute__((visibility("default"), used)) const char *__tsan_default_options(void)
{
	return "die_after_fork=0";
}

static kp_pool *pool;

/* ---- the window: an interposed call stops the pass until the fork ------- */

enum { W_NONE, W_MUNMAP, W_MADVISE, W_WRITE, W_MMAP };
static _Atomic int armed;		     /* which call, once */
static _Atomic uintptr_t watch_lo, watch_hi; /* munmap/madvise: its address in [lo, hi) */
static const char *watch_text;		     /* write: a line that holds this */
static sem_t in_window, forked;

static void window(void)
{
	sem_post(&in_window);
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_nsec += 300 * 1000000L;
	if (ts.tv_nsec >= 1000000000L) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000L;
	}
	while (sem_timedwait(&forked, &ts) < 0 && errno == EINTR)
		;
}

static bool watched(int kind, const void *addr)
{
	uintptr_t a = (uintptr_t)addr;
	if (atomic_load(&armed) != kind || a < atomic_load(&watch_lo) || a >= atomic_load(&watch_hi))
		return false;
	int k = kind;
	return atomic_compare_exchange_strong(&armed, &k, W_NONE);
}

int munmap(void *addr, size_t len)
{
	if (watched(W_MUNMAP, addr))
		window();
	return (int)syscall(SYS_munmap, addr, len);
}

int madvise(void *addr, size_t len, int advice)
{
	if (advice == MADV_DONTNEED && watched(W_MADVISE, addr))
		window();
	return (int)syscall(SYS_madvise, addr, len, advice);
}

/* W_MMAP: after the stepper thread's mmap of a segment or more returns
 * (the grow's), its range recorded. */
static __thread bool is_stepper;
static _Atomic uintptr_t mmap_got;
static size_t mmap_len;

void *mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
	void *r = (void *)syscall(SYS_mmap, addr, len, prot, flags, fd, off);
	if (atomic_load(&armed) == W_MMAP && len >= KP_SEG_SIZE && r != MAP_FAILED && is_stepper) {
		int k = W_MMAP;
		if (atomic_compare_exchange_strong(&armed, &k, W_NONE)) {
			mmap_len = len;
			atomic_store(&mmap_got, (uintptr_t)r);
			window();
		}
	}
	return r;
}

ssize_t write(int fd, const void *buf, size_t len)
{
	if (atomic_load(&armed) == W_WRITE && memmem(buf, len, watch_text, strlen(watch_text))) {
		int k = W_WRITE;
		if (atomic_compare_exchange_strong(&armed, &k, W_NONE))
			window();
	}
	return syscall(SYS_write, fd, buf, len);
}

static void arm(int kind, const void *lo, size_t len)
{
	atomic_store(&watch_lo, (uintptr_t)lo);
	atomic_store(&watch_hi, (uintptr_t)lo + len);
	atomic_store(&armed, kind);
}

/* ---- ranges ---------------------------------------------------------------- */

#define NRANGE 8
static struct {
	char *p;
	size_t len;
} held[NRANGE];
static unsigned nheld;

static void hold(void *p, size_t len)
{
	held[nheld].p = p;
	held[nheld++].len = len;
}

/* Pages of [p, p + len) mapped in this process. */
static size_t pages_mapped(char *p, size_t len)
{
	size_t n = 0;
	unsigned char v;
	for (size_t off = 0; off < len; off += KP_PAGE)
		n += mincore(p + off, KP_PAGE, &v) == 0;
	return n;
}

static size_t held_mapped(void)
{
	size_t n = 0;
	for (unsigned i = 0; i < nheld; i++)
		n += pages_mapped(held[i].p, held[i].len);
	return n;
}

/* ---- the child --------------------------------------------------------------- */

#define SENTINEL 0x5a

/* One thread: a pool used, stepped and destroyed; 0 when nothing leaked
 * and no sentinel was unmapped. */
static int child(void)
{
	int bad = 0;
	char *sent[NRANGE] = {0};
	if (!nheld && atomic_load(&mmap_got))
		hold((char *)atomic_load(&mmap_got), mmap_len);
	/* the capacity is the segments on the list: none reserved for a grow
	 * that the fork cut short */
	size_t nseg = 0;
	for (kp__seg *s = pool->segs; s; s = s->next)
		nseg++;
	if (pool->capacity != nseg * KP_SEG_SIZE) {
		printf("   child: capacity %zu MiB, %zu segments of 4 MiB\n", pool->capacity >> 20, nseg);
		bad |= 8;
	}
	size_t at_fork = held_mapped();
	for (unsigned i = 0; i < nheld; i++) {
		if (pages_mapped(held[i].p, held[i].len))
			continue;
		sent[i] = mmap(held[i].p, KP_PAGE, PROT_READ | PROT_WRITE,
			       MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
		if (sent[i] != held[i].p) {
			sent[i] = NULL;
			continue;
		}
		memset(sent[i], SENTINEL, KP_PAGE);
	}
	static void *p[64];
	for (unsigned round = 0; round < 3; round++) {
		for (unsigned i = 0; i < 64; i++) {
			size_t size = i == 0 ? 5 * MiB : i % 4 == 0 ? 200 * KiB : 16 + i * 40;
			p[i] = kp_alloc(pool, size, 0);
			if (p[i])
				memset(p[i], (int)i, size < 4096 ? size : 4096);
			else
				bad |= 1;
		}
		for (unsigned i = 0; i < 64; i++)
			if (p[i] && kp_free(pool, p[i]) != 0)
				bad |= 1;
		kp_daemon_step(pool, 2000);
	}
	kp_destroy(pool);
	size_t leaked = 0;
	for (unsigned i = 0; i < nheld; i++)
		if (!sent[i])
			leaked += pages_mapped(held[i].p, held[i].len);
	unsigned lost = 0;
	for (unsigned i = 0; i < nheld; i++) {
		if (!sent[i])
			continue;
		if (!pages_mapped(sent[i], KP_PAGE))
			lost++;
		else
			for (size_t b = 0; b < KP_PAGE; b++)
				if ((unsigned char)sent[i][b] != SENTINEL) {
					lost++;
					break;
				}
	}
	printf("   child: %zu pages of the held ranges mapped at the fork, %zu after destroy; %u sentinels "
	       "lost%s\n",
	       at_fork, leaked, lost, bad & 1 ? "; the pool failed" : "");
	fflush(stdout);
	if (leaked)
		bad |= 2;
	if (lost)
		bad |= 4;
	/* 8: the capacity counted a segment not on the list (above) */
	return bad;
}

/* ---- the parent ------------------------------------------------------------ */

static uint64_t step_ms;
static sem_t may_exit; /* the stepper ends after the fork: TSan's child saw a finished thread not joined (a leak) */
static void *stepper(void *arg)
{
	(void)arg;
	is_stepper = true;
	kp_daemon_step(pool, step_ms);
	sem_wait(&may_exit);
	return NULL;
}

/* Run a pass (a stepper thread, or the daemon thread when ms is
 * UINT64_MAX: woken) into the window, fork, check the child and the parent. */
static bool (*still_held)(char *p); /* a held range the pass kept (the shrink's) */

static void fork_in_window(uint64_t ms, const char *what)
{
	pthread_t t;
	step_ms = ms;
	bool thread = ms != UINT64_MAX;
	if (thread)
		REQUIRE(pthread_create(&t, NULL, stepper, NULL) == 0, "pthread_create");
	else
		kp_daemon_wake(pool);
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += 10;
	bool in = sem_timedwait(&in_window, &ts) == 0;
	CHECK(in, "%s: the pass never reached the window", what);
	atomic_store(&armed, W_NONE);
	pid_t pid = in ? fork() : -1;
	if (pid == 0)
		_exit(child());
	sem_post(&forked);
	if (thread) {
		sem_post(&may_exit);
		pthread_join(t, NULL);
	}
	int status = 0;
	if (pid > 0) {
		waitpid(pid, &status, 0);
		CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "%s: the child %s%s%s%s (status %#x)", what,
		      WIFEXITED(status) && WEXITSTATUS(status) & 1 ? "failed to allocate; " : "",
		      WIFEXITED(status) && WEXITSTATUS(status) & 2 ? "leaked the held mappings; " : "",
		      WIFEXITED(status) && WEXITSTATUS(status) & 4 ? "unmapped a sentinel (unmapped twice); " : "",
		      WIFEXITED(status) && WEXITSTATUS(status) & 8 ? "counted a segment it does not have" : "",
		      (unsigned)status);
	}
	while (sem_trywait(&forked) == 0)
		;
	/* the parent: the pass ended, what it held is unmapped */
	kp_daemon_step(pool, 0);
	size_t left = 0;
	for (unsigned i = 0; i < nheld; i++)
		if (!still_held || !still_held(held[i].p))
			left += pages_mapped(held[i].p, held[i].len);
	CHECK(left == 0, "%s: %zu pages of the held ranges still mapped in the parent", what, left);
	void *q = kp_alloc(pool, 3 * MiB, 0);
	CHECK(q && kp_free(pool, q) == 0, "%s: the parent's pool", what);
}

static void start(const char *conf)
{
	pool = kp_create(conf);
	nheld = 0;
	still_held = NULL;
	sem_init(&in_window, 0, 0);
	sem_init(&forked, 0, 0);
	sem_init(&may_exit, 0, 0);
}

/* A huge block past the cache's bound: its payload goes at once, its two
 * header pages to the grace list, which the pass's reclaim takes whole. */
static void limbo(const char *conf, uint64_t ms, const char *what)
{
	start(conf);
	REQUIRE(pool != NULL, "kp_create: %s", kp_last_error());
	char *p = kp_alloc(pool, 40 * MiB, 0);
	REQUIRE(p != NULL, "kp_alloc: %s", kp_last_error());
	char *s = p - 2 * KP_PAGE; /* the payload starts at 8 KiB (huge.c) */
	arm(W_MUNMAP, s, 1);
	REQUIRE(kp_free(pool, p) == 0, "kp_free");
	REQUIRE(pages_mapped(s, 2 * KP_PAGE) == 2, "the header pages are not waiting in the grace list");
	hold(s, 2 * KP_PAGE);
	fork_in_window(ms, what);
	kp_destroy(pool);
}

static void test_fork_in_grace_reclaim(void)
{
	limbo("daemon:off,seed:5,backup:0", 0, "grace list, a stepped pass");
}

static void test_fork_in_grace_reclaim_daemon(void)
{
	/* the daemon thread's own pass, woken. Not under TSan: the child's new
	 * daemon reuses the parent's daemon thread's stack and id ("dup thread
	 * with used id", as test_fork notes) */
	if (KT_TSAN) {
		printf("   skipped under TSan\n");
		return;
	}
	limbo("daemon:on,daemon_interval_ms:60000,seed:5,backup:0", UINT64_MAX, "grace list, the daemon thread");
}

/* A kept huge mapping past decay_ms: the trim takes it out of the cache and
 * unmaps its payload (then retires its headers). */
static void test_fork_in_huge_trim(void)
{
	start("daemon:off,seed:6,backup:0,decay_ms:100");
	REQUIRE(pool != NULL, "kp_create: %s", kp_last_error());
	char *p = kp_alloc(pool, 6 * MiB, 0);
	REQUIRE(p != NULL, "kp_alloc: %s", kp_last_error());
	char *s = p - 2 * KP_PAGE; /* the payload starts at 8 KiB (huge.c) */
	size_t size = ((kp__seg *)s)->size;
	REQUIRE(kp_free(pool, p) == 0, "kp_free");
	REQUIRE(atomic_load(&pool->huge_cached_bytes) == size, "the mapping was not kept");
	hold(s, size);
	arm(W_MUNMAP, s + 2 * KP_PAGE, 1);
	fork_in_window(1000, "expired huge mapping");
	kp_destroy(pool);
}

/* A kept mapping whose pages the daemon is giving back (purging) evicted by
 * an allocation that needs its room: the daemon unmaps it after its madvise. */
static void test_fork_in_huge_purge_evicted(void)
{
	start("daemon:off,seed:7,backup:0,decay_ms:60000,primary_initial:4m,primary_max:40m");
	REQUIRE(pool != NULL, "kp_create: %s", kp_last_error());
	char *p = kp_alloc(pool, 12 * MiB, 0);
	REQUIRE(p != NULL, "kp_alloc: %s", kp_last_error());
	memset(p, 1, 12 * MiB);
	char *s = p - 2 * KP_PAGE; /* the payload starts at 8 KiB (huge.c) */
	size_t size = ((kp__seg *)s)->size;
	REQUIRE(kp_free(pool, p) == 0, "kp_free");
	/* the pool grows after the free: the daemon gives the kept pages back */
	static void *q[40];
	for (unsigned i = 0; i < 40; i++)
		q[i] = kp_alloc(pool, 200 * KiB, 0);
	REQUIRE(atomic_load(&pool->grows) > 0 && atomic_load(&pool->huge_cached_bytes) == size, "no growth");
	hold(s, size);
	arm(W_MADVISE, s, size);
	pthread_t t;
	step_ms = 1;
	REQUIRE(pthread_create(&t, NULL, stepper, NULL) == 0, "pthread_create");
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += 10;
	bool in = sem_timedwait(&in_window, &ts) == 0;
	CHECK(in, "the daemon never purged the kept mapping");
	/* 16 MiB: no room under primary_max unless the kept mapping goes */
	void *big = in ? kp_alloc(pool, 16 * MiB, 0) : NULL;
	CHECK(big != NULL, "the allocation that evicts: %s", kp_last_error());
	CHECK(atomic_load(&pool->huge_cached_bytes) == 0, "the kept mapping was not evicted");
	kp_free(pool, big); /* kept: the child's room */
	big = NULL;
	pid_t pid = in ? fork() : -1;
	if (pid == 0)
		_exit(child());
	sem_post(&forked);
	sem_post(&may_exit);
	pthread_join(t, NULL);
	int status = 0;
	if (pid > 0) {
		waitpid(pid, &status, 0);
		CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0,
		      "the child: status %#x (2: leaked, 4: unmapped twice)", (unsigned)status);
	}
	kp_daemon_step(pool, 0);
	size_t left = held_mapped();
	CHECK(left == 0, "%zu pages of the evicted mapping still mapped in the parent", left);
	kp_free(pool, big);
	for (unsigned i = 0; i < 40; i++)
		kp_free(pool, q[i]);
	kp_destroy(pool);
}

static bool in_segs(char *p)
{
	bool in = false;
	kp__pool_lock(pool);
	for (kp__seg *s = pool->segs; s; s = s->next)
		in |= (char *)s == p;
	pthread_mutex_unlock(&pool->lock);
	return in;
}

/* Free segments past decay_ms: the shrink takes them out of the segment
 * list and retires them one by one, logging each (the window: that write). */
static void test_fork_in_shrink(void)
{
	int fd[2];
	REQUIRE(pipe(fd) == 0, "pipe");
	char conf[160];
	snprintf(conf, sizeof conf,
		 "daemon:off,seed:8,backup:0,decay_ms:100,primary_initial:4m,log_fd:%d,log_rate:1000000", fd[1]);
	start(conf);
	REQUIRE(pool != NULL, "kp_create: %s", kp_last_error());
	static void *q[160];
	for (unsigned i = 0; i < 160; i++)
		q[i] = kp_alloc(pool, 200 * KiB, 0);
	for (unsigned i = 0; i < 160; i++)
		kp_free(pool, q[i]);
	kp_thread_flush(pool);
	kp_daemon_step(pool, 0);
	/* the free segments: every segment of the pool but the first */
	kp__pool_lock(pool);
	for (kp__seg *s = pool->segs; s; s = s->next)
		if (s->nfree_units == KP_SEG_UNITS && nheld < NRANGE)
			hold(s, KP_SEG_SIZE);
	pthread_mutex_unlock(&pool->lock);
	REQUIRE(nheld >= 3, "only %u free segments", nheld);
	/* drain the pipe meanwhile: the log must not block */
	fcntl(fd[0], F_SETFL, O_NONBLOCK);
	fcntl(fd[1], F_SETFL, O_NONBLOCK);
	watch_text = "released";
	still_held = in_segs;
	arm(W_WRITE, NULL, 0);
	fork_in_window(1000, "segments released by a shrink");
	kp_destroy(pool);
	close(fd[0]);
	close(fd[1]);
}

static bool any(char *p)
{
	(void)p;
	return true;
}

/* The pass grows the pool: the mmap of a new segment has returned, the
 * segment is not on the pool's list yet (and pre-faulted first when the
 * program touches what it takes). */
static void test_fork_in_grow(void)
{
	start("daemon:off,seed:9,backup:0,primary_initial:4m");
	REQUIRE(pool != NULL, "kp_create: %s", kp_last_error());
	atomic_store(&mmap_got, 0);
	static void *q[64];
	for (unsigned i = 0; i < 64; i++)
		q[i] = kp_alloc(pool, 48 * KiB, 0); /* demand: the pass grows */
	still_held = any;			    /* the parent links it: its segment */
	arm(W_MMAP, NULL, 0);
	fork_in_window(1, "a segment the pass mapped");
	size_t nseg = 0;
	kp__pool_lock(pool);
	for (kp__seg *s = pool->segs; s; s = s->next)
		nseg++;
	size_t cap = pool->capacity;
	pthread_mutex_unlock(&pool->lock);
	CHECK(cap == nseg * KP_SEG_SIZE, "the parent: capacity %zu MiB, %zu segments", cap >> 20, nseg);
	for (unsigned i = 0; i < 64; i++)
		kp_free(pool, q[i]);
	kp_destroy(pool);
	atomic_store(&mmap_got, 0);
}

int main(void)
{
	RUN(test_fork_in_grace_reclaim);
	RUN(test_fork_in_grace_reclaim_daemon);
	RUN(test_fork_in_huge_trim);
	RUN(test_fork_in_huge_purge_evicted);
	RUN(test_fork_in_shrink);
	RUN(test_fork_in_grow);
	return ktest_summary();
}
