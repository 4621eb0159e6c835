/*
 * test_outline_hand_race_attack32.c - s32-attm: the daemon's purge of the
 * free blocks of the spans IN A THREAD'S HAND (s32-mem's "hand_back": idle
 * classes' spans listed, used ones lending their free stack's bottom to the
 * pass by compare-and-swap of its slot, published only while the top is
 * above it; lend_take at heap_abandon) against everything that pops and
 * pushes those stacks: the owner's fast allocations and frees in bursts
 * (free a burst, sit idle 0-2 ms so that a pass finds the class idle or its
 * stack's bottom still, then pop the burst back down through the lent
 * slots), a signal handler that allocates, writes, verifies and frees on
 * the interrupted thread (the same stacks, mid-pop or mid-free), frees from
 * other threads (the foreign cache, the owner's drain), kp_realloc in place,
 * KP_ZERO, kp_alloc_aligned, and threads that end (heap_abandon) with their
 * blocks handed to the next thread, which adopts the heap.
 * A stepper runs kp_daemon_step back to back (10 ms of the pool's clock a
 * step). Classes of a page and more, including 4096, 4384 (off the grid)
 * and 4608, whose blocks hold 0 or 1 whole pages depending on their place.
 * Asserted: no live block loses a byte (a purged page reads zero), every
 * KP_ZERO block reads zero, no two live blocks overlap (a block handed out
 * twice), no integrity event, every block reusable at the end (in-use bytes
 * 0 once all are freed, and a second fill of the same blocks takes no new
 * segment), and the pass purged something.
 * Rounds: checks:on, checks:off, poison:on, and checks:on with signals (in
 * a child: kpool's handler abort is counted, not a failure; a worker's
 * signals start after its first allocation, as heap_get's lock is one such
 * abort every round).
 * Found (not s32-mem's, pre-existing): under TSan the signal round reports a
 * lock-order inversion that is a real deadlock: a handler's allocation on
 * a thread inside fc_steal (ol->lock held, ol_busy set) takes alloc.c's
 * classic path, whose kp__primary_grow takes release_mu then pool->lock,
 * while kp_stats_json (kp__stats_primary -> kp__ol_in_use) holds pool->lock
 * and waits for ol->lock. kp__mutex_lock's abort catches only the same
 * thread's lock. Reproduce: setarch -R make -C allocator VARIANT=tsan
 * build/tsan/tests/test_outline_hand_race_attack32 && setarch -R
 * allocator/build/tsan/tests/test_outline_hand_race_attack32 sig (1 of 4
 * rounds here). So under TSan the signal round runs only when asked.
 * Reproduce: make -C allocator VARIANT=release build/release/tests/test_outline_hand_race_attack32
 * && allocator/build/release/tests/test_outline_hand_race_attack32 [on|off|poison|sig]
 */
#define _GNU_SOURCE 1
#include "ktest.h"
#include "internal.h"

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#define NT 4
#define M 96 /* live slots a thread */
#define RUN_MS (KT_SANITIZED ? 1500 : 1200)
#define LIFE_MS 150 /* a worker's life before it ends and another takes its blocks */
#define BOX 48

static const size_t cls[] = {4096, 4384, 4608, 5120, 8192, 12288, 16384, 36864, 65536};
#define NCLS (sizeof cls / sizeof cls[0])

struct blk {
	unsigned char *p;
	size_t n, c;
	uint64_t salt;
};

static kp_pool *pool;
static atomic_bool stop;
static atomic_ulong bad, nonzero, ops, steps, handler_bad, handler_runs, lives;
static atomic_ulong salt_next = 1;
static bool use_zero = true;

static struct box {
	pthread_mutex_t mu;
	struct blk b[BOX];
	unsigned n;
} inbox[NT];

static struct blk live[NT][M];

static size_t pick_size(uint64_t *s, size_t *c)
{
	*c = cls[kt_rand(s) % NCLS];
	/* the class's largest request, or one of the 64 below it (the class
	 * below is at least 256 B away) */
	return *c - 8 - (kt_rand(s) % 2 ? 0 : kt_rand(s) % 64);
}

static bool all_zero(const unsigned char *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (p[i])
			return false;
	return true;
}

static void take(struct blk *b, uint64_t *s)
{
	size_t c, n = pick_size(s, &c);
	unsigned r = (unsigned)(kt_rand(s) % 8);
	bool z = use_zero && r < 2;
	unsigned char *p = r == 7 ? kp_alloc_aligned(pool, n, (size_t)64 << (kt_rand(s) % 7), 0)
				  : kp_alloc(pool, n, z ? KP_ZERO : 0);
	if (!p) {
		atomic_fetch_add(&bad, 1);
		fprintf(stderr, "   kp_alloc(%zu): %s\n", n, kp_last_error());
		b->p = NULL;
		return;
	}
	if (z && !all_zero(p, n)) {
		atomic_fetch_add(&nonzero, 1);
		fprintf(stderr, "   KP_ZERO %p of %zu B: not zero\n", (void *)p, n);
	}
	b->p = p;
	b->n = n;
	b->c = c;
	b->salt = atomic_fetch_add(&salt_next, 1);
	kt_fill(p, n, b->salt);
}

static void check(const struct blk *b)
{
	size_t at;
	if (b->p && (at = kt_verify(b->p, b->n, b->salt)) != KT_OK) {
		atomic_fetch_add(&bad, 1);
		fprintf(stderr, "   block %p of %zu B (class %zu): byte %zu changed (0x%02x)\n", (void *)b->p, b->n,
			b->c, at, b->p[at]);
	}
}

static void give(struct blk *b)
{
	check(b);
	int r = kp_free(pool, b->p);
	if (r != KP_OK) {
		atomic_fetch_add(&bad, 1);
		fprintf(stderr, "   kp_free(%p) refused: %d %s\n", (void *)b->p, r, kp_last_error());
	}
	b->p = NULL;
}

static void grow_in_place(struct blk *b, uint64_t *s)
{
	size_t room = b->c - 8;
	size_t want = room / 2 + kt_rand(s) % (room / 2 + 1);
	unsigned char *q = kp_realloc(pool, b->p, want, 0);
	if (!q) {
		atomic_fetch_add(&bad, 1);
		return;
	}
	size_t keep = want < b->n ? want : b->n, at;
	if ((at = kt_verify_from(q, b->p, keep, b->salt)) != KT_OK) {
		atomic_fetch_add(&bad, 1);
		fprintf(stderr, "   realloc %p -> %p (%zu -> %zu B): byte %zu changed\n", (void *)b->p, (void *)q, b->n,
			want, at);
	}
	if (q != b->p)
		b->c = kp_usable_size(pool, q) + 8;
	b->p = q;
	b->n = want;
	b->salt = atomic_fetch_add(&salt_next, 1);
	kt_fill(q, want, b->salt);
}

static _Atomic pthread_t wth[NT]; /* pthread_t: an integer here (glibc) */
static _Atomic int wth_live[NT];

static void *worker(void *arg)
{
	unsigned t = (unsigned)(uintptr_t)arg;
	uint64_t s = 0x9e3779b97f4a7c15ull * (t + 1) + atomic_fetch_add(&lives, 1);
	struct blk *mine = live[t];
	/* the heap first (heap_get takes the pool's lock: a handler's call
	 * there aborts by design, outline.c's ol_busy), then the signals */
	void *first = kp_alloc(pool, 4000, 0);
	kp_free(pool, first);
	atomic_store(&wth[t], pthread_self());
	atomic_store(&wth_live[t], 1);
	/* blocks left by the thread before (ended): verified, kept */
	for (unsigned i = 0; i < M; i++)
		if (!mine[i].p)
			take(&mine[i], &s);
		else
			check(&mine[i]);
	struct timespec t0;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	unsigned long k = 0;
	while (!atomic_load(&stop)) {
		struct blk got[BOX];
		unsigned ng;
		pthread_mutex_lock(&inbox[t].mu);
		ng = inbox[t].n;
		memcpy(got, inbox[t].b, ng * sizeof got[0]);
		inbox[t].n = 0;
		pthread_mutex_unlock(&inbox[t].mu);
		for (unsigned i = 0; i < ng; i++)
			give(&got[i]);
		/* a burst of frees, a pause, a burst of allocations */
		unsigned burst = 8 + (unsigned)(kt_rand(&s) % (M / 2));
		for (unsigned j = 0; j < burst; j++) {
			struct blk *b = &mine[kt_rand(&s) % M];
			if (!b->p)
				continue;
			unsigned r = (unsigned)(kt_rand(&s) % 8);
			if (r < 2) {
				unsigned to = (t + 1) % NT;
				check(b);
				pthread_mutex_lock(&inbox[to].mu);
				if (inbox[to].n < BOX) {
					inbox[to].b[inbox[to].n++] = *b;
					b->p = NULL;
				}
				pthread_mutex_unlock(&inbox[to].mu);
				if (b->p)
					give(b);
			} else if (r == 2)
				grow_in_place(b, &s);
			else
				give(b);
		}
		if (kt_rand(&s) % 2)
			usleep((useconds_t)(kt_rand(&s) % 2000));
		for (unsigned i = 0; i < M; i++)
			if (!mine[i].p)
				take(&mine[i], &s);
		if (++k % 4 == 0)
			for (unsigned i = 0; i < M; i++)
				check(&mine[i]);
		atomic_fetch_add(&ops, burst);
		struct timespec t1;
		clock_gettime(CLOCK_MONOTONIC, &t1);
		if ((t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000 > LIFE_MS)
			break; /* end: the next thread of this slot takes the blocks */
	}
	atomic_store(&wth_live[t], 0);
	usleep(3000); /* a signal sent before the store lands while the thread lives */
	for (unsigned i = 0; i < M; i++)
		check(&mine[i]);
	return NULL;
}

/* each slot's threads one after another: a thread ends, its heap is
 * abandoned with its spans in hand, the next adopts it */
static void *slot_runner(void *arg)
{
	unsigned t = (unsigned)(uintptr_t)arg;
	while (!atomic_load(&stop)) {
		pthread_t th;
		pthread_create(&th, NULL, worker, arg);
		pthread_join(th, NULL);
		atomic_store(&wth_live[t], 0);
	}
	return NULL;
}

static void *stepper(void *arg)
{
	(void)arg;
	while (!atomic_load(&stop)) {
		kp_daemon_step(pool, 10);
		atomic_fetch_add(&steps, 1);
	}
	return NULL;
}

static void handler(int sig)
{
	(void)sig;
	int e = errno;
	static __thread uint64_t hs = 77;
	unsigned char *p[3];
	size_t n[3], c;
	unsigned k = 1 + (unsigned)(kt_rand(&hs) % 3);
	for (unsigned i = 0; i < k; i++) {
		n[i] = pick_size(&hs, &c);
		p[i] = kp_alloc(pool, n[i], 0);
		if (p[i])
			kt_fill(p[i], n[i], 0xabcdef00ull + i);
	}
	for (unsigned i = 0; i < k; i++)
		if (p[i]) {
			if (kt_verify(p[i], n[i], 0xabcdef00ull + i) != KT_OK)
				atomic_fetch_add(&handler_bad, 1);
			kp_free(pool, p[i]);
			atomic_fetch_add(&handler_runs, 1);
		}
	errno = e;
}

static void *signaller(void *arg)
{
	(void)arg;
	uint64_t s = 99;
	while (!atomic_load(&stop)) {
		unsigned t = (unsigned)(kt_rand(&s) % NT);
		if (atomic_load(&wth_live[t]))
			pthread_kill(atomic_load(&wth[t]), SIGUSR1); /* a thread just ended: ESRCH, harmless */
		usleep(1000);
	}
	return NULL;
}

static int cmp_blk(const void *a, const void *b)
{
	uintptr_t x = (uintptr_t)((const struct blk *)a)->p, y = (uintptr_t)((const struct blk *)b)->p;
	return x < y ? -1 : x > y;
}

static int64_t events(void)
{
	return kt_stat(pool, "integrity.double_frees") + kt_stat(pool, "integrity.invalid_frees") +
	       kt_stat(pool, "integrity.overflows") + kt_stat(pool, "integrity.corruptions") +
	       kt_stat(pool, "integrity.use_after_frees") + kt_stat(pool, "integrity.freelist_errors");
}

static void *refill(void *arg)
{
	/* one thread takes as many blocks again as were live: from the free
	 * ones, no new segment */
	static struct blk again[NT * (M + BOX)];
	size_t n = (size_t)(uintptr_t)arg;
	uint64_t s = 5;
	for (size_t i = 0; i < n; i++) {
		take(&again[i], &s);
	}
	for (size_t i = 0; i < n; i++)
		if (again[i].p)
			give(&again[i]);
	return NULL;
}

static unsigned round_run(const char *conf, bool signals, bool expect_purge)
{
	pool = kp_create(conf);
	if (!pool) {
		printf("   kp_create(%s): %s\n", conf, kp_last_error());
		return 100;
	}
	atomic_store(&stop, false);
	atomic_store(&bad, 0);
	atomic_store(&nonzero, 0);
	atomic_store(&ops, 0);
	atomic_store(&steps, 0);
	atomic_store(&lives, 0);
	memset(live, 0, sizeof live);
	for (unsigned t = 0; t < NT; t++) {
		pthread_mutex_init(&inbox[t].mu, NULL);
		inbox[t].n = 0;
	}
	if (signals) {
		struct sigaction sa = {.sa_handler = handler};
		sigemptyset(&sa.sa_mask);
		sa.sa_flags = SA_RESTART;
		sigaction(SIGUSR1, &sa, NULL);
	}
	pthread_t st, sg = 0, sl[NT];
	uint64_t purged0 = atomic_load(&pool->purged_bytes);
	for (unsigned t = 0; t < NT; t++)
		pthread_create(&sl[t], NULL, slot_runner, (void *)(uintptr_t)t);
	pthread_create(&st, NULL, stepper, NULL);
	if (signals)
		pthread_create(&sg, NULL, signaller, NULL);
	kt_sleep_ms(RUN_MS);
	atomic_store(&stop, true);
	if (signals)
		pthread_join(sg, NULL);
	for (unsigned t = 0; t < NT; t++)
		pthread_join(sl[t], NULL);
	pthread_join(st, NULL);
	if (signals)
		signal(SIGUSR1, SIG_IGN);
	/* a few passes with everything idle (the spans in the ended threads'
	 * heaps), then verify every live block again */
	for (int i = 0; i < 6; i++)
		kp_daemon_step(pool, 30);
	static struct blk all[NT * (M + BOX)];
	size_t na = 0;
	for (unsigned t = 0; t < NT; t++) {
		for (unsigned i = 0; i < inbox[t].n; i++)
			all[na++] = inbox[t].b[i];
		for (unsigned i = 0; i < M; i++)
			if (live[t][i].p)
				all[na++] = live[t][i];
	}
	qsort(all, na, sizeof all[0], cmp_blk);
	unsigned long overlap = 0;
	for (size_t i = 0; i + 1 < na; i++)
		overlap += all[i].p + all[i].n > all[i + 1].p;
	for (size_t i = 0; i < na; i++)
		give(&all[i]);
	uint64_t purged = atomic_load(&pool->purged_bytes) - purged0;
	int64_t in_use = kt_stat(pool, "primary.in_use_bytes");
	/* the blocks again, from one new thread: no new segment */
	int64_t maps0 = kt_stat(pool, "syscalls.alloc.mmap");
	pthread_t rt;
	pthread_create(&rt, NULL, refill, (void *)(uintptr_t)na);
	pthread_join(rt, NULL);
	int64_t maps = kt_stat(pool, "syscalls.alloc.mmap") - maps0;
	int64_t ev = events();
	printf("   %s%s: %lu ops, %lu thread lives, %lu passes, %llu KiB purged; bad %lu, zeroed not zero %lu, "
	       "overlaps %lu, events %lld, in use after all freed %lld B, maps by the refill %lld\n",
	       conf, signals ? " +signals" : "", atomic_load(&ops), atomic_load(&lives), atomic_load(&steps),
	       (unsigned long long)(purged >> 10), atomic_load(&bad), atomic_load(&nonzero), overlap, (long long)ev,
	       (long long)in_use, (long long)maps);
	if (signals)
		printf("   handler: %lu blocks, %lu bad\n", atomic_load(&handler_runs), atomic_load(&handler_bad));
	unsigned fails = 0;
	fails += atomic_load(&bad) != 0;
	fails += atomic_load(&nonzero) != 0;
	fails += overlap != 0;
	fails += ev != 0;
	fails += atomic_load(&handler_bad) != 0;
	fails += in_use != 0;
	fails += maps > 2;		      /* a heap past the arena's or a segment's metadata: no more */
	fails += expect_purge && purged == 0; /* poison:on: wholly free spans' purge may run, or not */
	kp_destroy(pool);
	return fails;
}

#define CONF "layout:outline,daemon:off,step_clock:on,prefault:off,decay_ms:100"

static void test_checks_on(void)
{
	CHECK(round_run(CONF ",seed:1", false, true) == 0, "checks:on round");
}

static void test_checks_off(void)
{
	CHECK(round_run(CONF ",checks:off,seed:2", false, true) == 0, "checks:off round");
}

static void test_poison(void)
{
	use_zero = false;
	CHECK(round_run(CONF ",poison:on,seed:3", false, false) == 0, "poison:on round");
	use_zero = true;
}

static void test_signals(void)
{
	unsigned aborted = 0, failed = 0;
	for (int r = 0; r < 4; r++) {
		fflush(stdout);
		pid_t pid = fork();
		REQUIRE(pid >= 0, "fork");
		if (pid == 0) {
			unsigned f = round_run(CONF ",seed:4", true, true);
			fflush(stdout);
			_exit(f ? 3 : 0);
		}
		int st = 0;
		waitpid(pid, &st, 0);
		if (WIFSIGNALED(st) && WTERMSIG(st) == SIGABRT)
			aborted++;
		else if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
			failed++;
			printf("   signal round %d: %s %d\n", r, WIFSIGNALED(st) ? "killed by signal" : "exit status",
			       WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st));
		}
	}
	printf("   signal rounds: %u failed, %u aborted (kpool's handler abort)\n", failed, aborted);
	CHECK(failed == 0, "%u signal rounds lost bytes or events", failed);
}

int main(int argc, char **argv)
{
	if (argc > 1) {
		if (!strcmp(argv[1], "on"))
			RUN(test_checks_on);
		else if (!strcmp(argv[1], "off"))
			RUN(test_checks_off);
		else if (!strcmp(argv[1], "poison"))
			RUN(test_poison);
		else if (!strcmp(argv[1], "sig"))
			RUN(test_signals);
		return ktest_summary();
	}
	RUN(test_checks_on);
	RUN(test_checks_off);
	RUN(test_poison);
	if (!KT_TSAN) /* the lock-order inversion above: run with "sig" */
		RUN(test_signals);
	return ktest_summary();
}
