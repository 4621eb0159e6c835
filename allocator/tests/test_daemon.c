/*
 * test_daemon.c - the grow daemon: clean start and stop; woken by the
 * allocation path (not by its timer); grows ahead of an allocating thread so
 * that thread makes no mmap and takes almost no page faults; shrinks after
 * decay_ms; and kp_daemon_step drives the same decisions deterministically.
 *
 * Every wait for the daemon's thread ends when its work is seen, bounded by
 * WAIT_MS, a safety bound and no deadline: a daemon the machine starves
 * does the same work, late.
 */
#define _GNU_SOURCE /* RUSAGE_THREAD */
/* Tests the grow daemon's growth, front and purge of the inline primary (daemon.c, primary.c; layout:outline's: test_outline_grow.c, test_outline_memory.c): every pool layout:inline (ktest.h, KT_LAYOUT_INLINE). */
#define KT_LAYOUT_INLINE 1
#include "ktest.h"

#include <dirent.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <pthread.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>

#define KiB ((size_t)1 << 10)
#define MiB ((size_t)1 << 20)
/* How long a test waits for the daemon's thread to do what it was woken or
 * timed for, at most: a run whose daemon never does it fails, one whose
 * daemon the machine starves waits for it. Deadlines near the work's usual
 * time (1-3 s) failed under load: with the daemon SCHED_IDLE beside two busy
 * loops, the paced 256 MiB run's thread went on after a 2 s pacing wait
 * into memory the daemon had not pre-faulted yet (769 faults, over its 1%
 * bound) and the shrink was judged settled before the daemon had run. Under
 * test_wake_not_timer's 60 s timer, so that a wait that ends in time was
 * not ended by the timer. */
#define WAIT_MS 30000u

static void *noop_thread(void *arg)
{
	return arg;
}

/* Threads of this process. The first call starts and joins one thread, so
 * that helper threads a sanitizer runtime starts with the first
 * pthread_create already exist and sit in every baseline. */
static int thread_count(void)
{
	static int primed;
	if (!primed) {
		pthread_t t;
		primed = 1;
		if (pthread_create(&t, NULL, noop_thread, NULL) == 0)
			pthread_join(t, NULL);
	}
	DIR *d = opendir("/proc/self/task");
	int n = 0;
	struct dirent *e;
	if (d == NULL)
		return -1;
	while ((e = readdir(d)) != NULL)
		n += e->d_name[0] != '.';
	closedir(d);
	return n;
}

/* Wait until the thread count is 'want' (a joined thread may linger in
 * /proc for a moment after its futex wake); returns the last count seen. */
static int wait_threads(int want, unsigned ms)
{
	uint64_t t0 = kt_now_ms();
	int n;
	while ((n = thread_count()) != want && kt_now_ms() - t0 < ms)
		kt_sleep_ms(5);
	return n;
}

static int64_t wait_stat(kp_pool *pool, const char *key, int64_t want, unsigned ms)
{
	uint64_t t0 = kt_now_ms();
	int64_t v;
	while ((v = kt_stat(pool, key)) != want && kt_now_ms() - t0 < ms)
		kt_sleep_ms(5);
	return v;
}

static long thread_minflt(void)
{
	struct rusage ru;
	if (getrusage(RUSAGE_THREAD, &ru) != 0)
		return -1;
	return ru.ru_minflt;
}

/* ---- start and stop ---------------------------------------------------- */

static void test_start_stop(void)
{
	int base = thread_count();
	REQUIRE(base > 0, "cannot count threads in /proc/self/task");
	kp_pool *pool = kp_create("daemon:on,seed:1");
	REQUIRE(pool != NULL, "kp_create: %s", kp_last_error());
	CHECK(wait_stat(pool, "daemon.running", 1, WAIT_MS) == 1, "daemon.running not true after kp_create");
	CHECK(wait_threads(base + 1, WAIT_MS) == base + 1, "want one daemon thread: %d threads, base %d",
	      thread_count(), base);
	CHECK(kt_events_count(pool, KP_EV_DAEMON) >= 1, "no daemon event at start");
	kp_destroy(pool);
	CHECK(wait_threads(base, WAIT_MS) == base, "daemon thread still alive after kp_destroy: %d threads, base %d",
	      thread_count(), base);

	pool = kp_create("daemon:off,seed:1");
	REQUIRE(pool != NULL, "kp_create: %s", kp_last_error());
	CHECK(kt_stat(pool, "daemon.running") == 0, "daemon:off but daemon.running is true");
	kt_sleep_ms(50);
	CHECK(thread_count() == base, "daemon:off started a thread (%d threads, base %d)", thread_count(), base);
	CHECK(kt_stat(pool, "daemon.passes") == 0, "daemon:off but daemon passes counted");
	kp_destroy(pool);

	/* create/destroy back to back, with and without work in between */
	for (int i = 0; i < 30; i++) {
		kp_pool *p = kp_create("daemon:on,daemon_interval_ms:1,primary_initial:1m,low_wm:4m,high_wm:8m");
		REQUIRE(p != NULL, "kp_create #%d: %s", i, kp_last_error());
		if (i & 1) {
			void *b = kp_alloc(p, 100000, 0);
			kp_daemon_wake(p);
			kp_free(p, b);
		}
		kp_destroy(p);
	}
	CHECK(wait_threads(base, WAIT_MS) == base, "threads leaked by create/destroy cycles: %d, base %d",
	      thread_count(), base);
}

/* ---- woken by the allocation path ------------------------------------- */

/* The timer is a minute away: only a wake from the allocation path can make
 * the daemon grow the pool within WAIT_MS. */
static void test_wake_not_timer(void)
{
	KT_POOL(pool, "primary_initial:4m,low_wm:8m,high_wm:16m,daemon_interval_ms:60000,decay_ms:60000,seed:2");
	/* kp_create asks for a first pass at once: wait until it has begun (its
	 * wake-up is then counted). A starved daemon may still be in it when
	 * the allocations below cross low_wm, and grow there: the kick they
	 * leave pending is counted when it loops, so the wake-ups are waited
	 * for too (a fixed 200 ms sleep here, the daemon SCHED_IDLE: grows
	 * moved, wake-ups not yet, 1 run of 30) */
	uint64_t t0 = kt_now_ms();
	while (kt_stat(pool, "daemon.passes") == 0 && kt_now_ms() - t0 < WAIT_MS)
		kt_sleep_ms(2);
	int64_t grows0 = kt_stat(pool, "daemon.grows");
	int64_t wakes0 = kt_stat(pool, "daemon.wakeups");
	int64_t cap0 = kt_stat(pool, "primary.capacity_bytes");
	/* allocate until the headroom is below low_wm */
	void *blk[1024];
	size_t n = 0;
	while (n < 1024 && kt_stat(pool, "primary.capacity_bytes") - kt_stat(pool, "primary.committed_bytes") >=
				   (int64_t)(4 * MiB)) {
		blk[n] = kp_alloc(pool, 64 * KiB, 0);
		REQUIRE(blk[n] != NULL, "kp_alloc");
		n++;
	}
	t0 = kt_now_ms();
	while ((kt_stat(pool, "daemon.grows") == grows0 || kt_stat(pool, "daemon.wakeups") == wakes0) &&
	       kt_now_ms() - t0 < WAIT_MS)
		kt_sleep_ms(2);
	CHECK(kt_stat(pool, "daemon.grows") > grows0, "crossing low_wm did not wake the daemon to grow within %u ms",
	      WAIT_MS);
	CHECK(kt_stat(pool, "daemon.wakeups") > wakes0, "daemon.wakeups did not move");
	CHECK(kt_stat(pool, "daemon.timer_wakeups") == 0, "a 60 s timer fired: %lld",
	      (long long)kt_stat(pool, "daemon.timer_wakeups"));
	CHECK(kt_stat(pool, "primary.capacity_bytes") > cap0, "capacity did not grow");
	/* kp_daemon_wake is what the allocation path does: it runs a pass */
	int64_t passes = kt_stat(pool, "daemon.passes");
	kp_daemon_wake(pool);
	t0 = kt_now_ms();
	while (kt_stat(pool, "daemon.passes") == passes && kt_now_ms() - t0 < WAIT_MS)
		kt_sleep_ms(2);
	CHECK(kt_stat(pool, "daemon.passes") > passes, "kp_daemon_wake did not cause a pass within %u ms", WAIT_MS);
	for (size_t i = 0; i < n; i++)
		kp_free(pool, blk[i]);
	kp_destroy(pool);
}

/* ---- the 256 MiB run -------------------------------------------------- */

#define GROW_TOTAL (256 * MiB)
#define LOW_WM (16 * MiB)
static char stats_buf[16384];
static void *grow_blk[GROW_TOTAL / (4 * KiB) + 16];

/* Touch every page of a block, one write each. Not instrumented: under a
 * sanitizer the check of each access would fault in shadow memory on this
 * thread and drown the allocator's own page faults. */
__attribute__((no_sanitize("address", "thread", "undefined"))) static void touch(void *p, size_t n)
{
	volatile char *c = (volatile char *)p;
	for (size_t i = 0; i < n; i += 4096)
		c[i] = 1;
	c[n - 1] = 1;
}

/* Free primary capacity: "headroom_bytes" when the pool exports it (free
 * units, exactly what the daemon watches), else capacity minus committed
 * bytes (which overstates it by segment headers and in-flight grows). */
static int64_t fast_headroom(kp_pool *pool)
{
	if (kp_stats_json(pool, stats_buf, sizeof stats_buf) >= (int)sizeof stats_buf)
		return -1;
	int64_t h = kt_json_int(stats_buf, "primary.headroom_bytes", KT_MISSING);
	if (h != KT_MISSING)
		return h;
	return kt_json_int(stats_buf, "primary.capacity_bytes", 0) -
	       kt_json_int(stats_buf, "primary.committed_bytes", 0);
}

/* Pages of [p, p + n) not resident (mincore): what the allocating thread
 * will fault in when it writes them. */
static long pages_missing(void *p, size_t n)
{
	static unsigned char vec[64 * KiB / 4096 + 2];
	uintptr_t a = (uintptr_t)p & ~(uintptr_t)4095, e = ((uintptr_t)p + n + 4095) & ~(uintptr_t)4095;
	size_t np = (e - a) / 4096;
	if (np > sizeof vec || mincore((void *)a, e - a, vec) != 0)
		return 0;
	long m = 0;
	for (size_t i = 0; i < np; i++)
		m += !(vec[i] & 1);
	return m;
}

/* What one paced run measured. The thread's faults, split by whose they
 * are: taken inside kp_alloc (the allocator's own writes), on pages that
 * were not resident when kp_alloc handed them out (the daemon did not
 * pre-fault them in time), and the rest: pages that were resident when
 * handed out and faulted all the same on the first write (the kernel's
 * doing: nothing the pool maps or pre-faults explains them). */
struct paced {
	size_t total, n;
	unsigned waits;
	double secs;
	long faults, in_alloc, missing, pages;
	int64_t mmap0, alloc_calls0, dgrows0;
};

/* The paced 256 MiB run on pool (its daemon running). The thread paces
 * itself by the daemon's work (the headroom it restored), not by time, so
 * that a daemon the machine starves makes the run slower, not the thread
 * fault. Returns false when the pool failed (a CHECK said why). */
static bool paced_run(kp_pool *pool, struct paced *r)
{
	memset(r, 0, sizeof *r);
	uint64_t rng = 12345;
	CHECK(wait_stat(pool, "daemon.running", 1, WAIT_MS) == 1, "daemon not running");
	/* Start when the daemon has done its first grow: the test paces itself so
	 * that the daemon can keep ahead, as the issue asks. */
	uint64_t t0 = kt_now_ms();
	while (fast_headroom(pool) < (int64_t)LOW_WM && kt_now_ms() - t0 < WAIT_MS)
		kt_sleep_ms(1);
	CHECK(fast_headroom(pool) >= (int64_t)LOW_WM, "the daemon did not grow a fresh pool to low_wm in %u ms",
	      WAIT_MS);

	kp_free(pool, kp_alloc(pool, 16, 0)); /* this thread's cache set-up: not growth */
	char *js = kt_stats(pool);
	r->mmap0 = kt_json_int(js, "syscalls.alloc.mmap", -1);
	r->alloc_calls0 = kt_syscalls(js, "alloc");
	r->dgrows0 = kt_json_int(js, "daemon.grows", -1);
	free(js);
	long flt0 = thread_minflt(), flt = flt0;
	size_t next_check = 0;
	uint64_t t_alloc = kt_now_ns();
	while (r->total < GROW_TOTAL) {
		size_t s = kt_rand_range(&rng, 4 * KiB, 64 * KiB);
		void *p = kp_alloc(pool, s, 0);
		long f = thread_minflt();
		r->in_alloc += f - flt;
		if (p == NULL) {
			CHECK(0, "kp_alloc(%zu) returned NULL after %zu bytes", s, r->total);
			return false;
		}
		r->missing += pages_missing(p, s);
		touch(p, s);
		grow_blk[r->n++] = p;
		r->total += s;
		if (r->total >= next_check) { /* pace: stay out of the low-watermark zone */
			next_check = r->total + MiB;
			uint64_t tw = kt_now_ms();
			while (fast_headroom(pool) < (int64_t)LOW_WM / 2 && kt_now_ms() - tw < WAIT_MS) {
				usleep(200);
				r->waits++;
			}
			if (fast_headroom(pool) < (int64_t)LOW_WM / 2) {
				CHECK(0, "the daemon restored no headroom in %u ms (%zu MiB allocated)", WAIT_MS,
				      r->total >> 20);
				return false;
			}
		}
		flt = thread_minflt();
	}
	r->secs = (double)(kt_now_ns() - t_alloc) / 1e9;
	r->faults = thread_minflt() - flt0;
	r->pages = (long)(r->total / 4096);
	return true;
}

static void paced_free(kp_pool *pool, struct paced *r)
{
	for (size_t i = 0; i < r->n; i++)
		kp_free(pool, grow_blk[i]);
	r->n = 0;
}

/* Pages faulted on the allocating thread that are the pool's: in kp_alloc,
 * or handed out not resident. */
static long paced_own(const struct paced *r)
{
	return r->in_alloc + r->missing;
}

/* One paced 256 MiB run and the shrink after it. */
static void test_grow_ahead_and_shrink(void)
{
	const unsigned decay_ms = 1000;
	const char *conf = "primary_initial:1m,primary_max:1g,low_wm:16m,high_wm:64m,decay_ms:1000,"
			   "daemon_interval_ms:50,seed:3";
	kp_pool *pool = kp_create(conf);
	REQUIRE(pool != NULL, "kp_create(\"%s\"): %s", conf, kp_last_error());
	memset(grow_blk, 0, sizeof grow_blk); /* pre-fault our own arrays */
	memset(stats_buf, 0, sizeof stats_buf);
	struct paced r;
	/* A run over the 1% bound whose faults were not the pool's (the pages
	 * were resident when kp_alloc handed them out, and kp_alloc itself
	 * faulted under the bound) is made once more on a fresh pool, and the
	 * second decides. The fresh-clone CI of b7ad467 took 772 faults for
	 * 65,542 pages in a 0.09 s run (the daemon keeping up: 286 pacing
	 * waits); 19-22 on a quiet machine, beside pytest -n 2, beside busy
	 * loops on both CPUs and with the test and two busy loops on one CPU
	 * (50+ runs). Which of the two it was, the split now says. */
	for (int attempt = 0;; attempt++) {
		if (!paced_run(pool, &r)) {
			kp_destroy(pool);
			return;
		}
		bool over = r.faults * 100 >= r.pages, own_over = paced_own(&r) * 100 >= r.pages;
		printf("   allocated %zu MiB in %zu blocks in %.2f s (%u pacing waits); thread minor faults %ld "
		       "(%.3f%% of %ld pages: %ld in kp_alloc, %ld pages handed out not resident)\n",
		       r.total >> 20, r.n, r.secs, r.waits, r.faults, 100.0 * (double)r.faults / (double)r.pages,
		       r.pages, r.in_alloc, r.missing);
		if (KT_SANITIZED || !over || own_over || attempt == 1)
			break;
		printf("   the faults over the bound were on pages resident when handed out: once more on a fresh "
		       "pool\n");
		paced_free(pool, &r);
		kp_destroy(pool);
		pool = kp_create(conf);
		REQUIRE(pool != NULL, "kp_create(\"%s\"): %s", conf, kp_last_error());
	}
	char *js = kt_stats(pool);
	size_t total = r.total, n = r.n;
	printf("   alloc-path syscalls %lld -> %lld; daemon grows %lld -> %lld\n", (long long)r.alloc_calls0,
	       (long long)kt_syscalls(js, "alloc"), (long long)r.dgrows0,
	       (long long)kt_json_int(js, "daemon.grows", -1));
	CHECK(kt_json_int(js, "syscalls.alloc.mmap", -2) == r.mmap0,
	      "the allocation path called mmap: syscalls.alloc.mmap %lld -> %lld", (long long)r.mmap0,
	      (long long)kt_json_int(js, "syscalls.alloc.mmap", -2));
	CHECK(kt_json_int(js, "daemon.grows", -1) > r.dgrows0, "no daemon grows during a 256 MiB run");
	CHECK(kt_json_int(js, "syscalls.daemon.mmap", 0) > 0, "syscalls.daemon.mmap is 0");
	CHECK(kt_json_int(js, "primary.capacity_bytes", 0) >= (int64_t)total, "capacity below what was allocated");
	if (KT_SANITIZED)
		/* The allocator's own instrumented header writes fault in the
		 * sanitizer's shadow of every fresh span on this thread: ~1 page
		 * per 32 KiB under ASan. That measures the instrumentation, not
		 * the pool, so the bound is checked in uninstrumented builds. */
		printf("   (sanitizer build: the 1%% page-fault bound is checked in the release variant)\n");
	else {
		CHECK(paced_own(&r) * 100 < r.pages,
		      "the pool's share of the allocating thread's faults is %ld for %ld pages (>= 1%%): %ld in "
		      "kp_alloc, %ld pages handed out not resident",
		      paced_own(&r), r.pages, r.in_alloc, r.missing);
		CHECK(r.faults * 100 < r.pages,
		      "the allocating thread took %ld minor page faults for %ld pages (>= 1%%)", r.faults, r.pages);
	}
	CHECK(kt_json_int(js, "daemon.running", 0) == 1, "daemon.running false during the run");
	free(js);

	/* free everything: the pool shrinks after decay_ms, not at once */
	long rss_full = (kt_rss_kb() / 4);
	int64_t cap_full = kt_stat(pool, "primary.capacity_bytes");
	/* Headroom that was already free when the frees began: segments the
	 * daemon grew and nobody used may decay before decay_ms after t_free
	 * (their free time began earlier; under a slow sanitizer run, long
	 * before). Only memory freed at t_free must wait for decay_ms. */
	int64_t idle_full = cap_full - kt_stat(pool, "primary.in_use_bytes");
	int64_t shrinks0 = kt_stat(pool, "primary.shrinks");
	kt_events_clear(pool);
	uint64_t t_free = kt_now_ns();
	for (size_t i = 0; i < n; i++)
		kp_free(pool, grow_blk[i]);
	kp_thread_flush(pool);
	CHECK(kt_stat(pool, "primary.in_use_bytes") == 0, "in_use_bytes after freeing all");
	/* wait past decay_ms for the first shrink, then until the pool has
	 * shrunk as far as the checks below ask and the capacity has settled:
	 * a whole daemon pass has run since it last changed (passes are
	 * counted as they start, one at a time: with the count two past the
	 * one seen at the change, a pass began and ended after it), one more
	 * has begun (it unmaps what the last released, pagemap.c), and a
	 * quarter of decay_ms has passed (the half-life of the demand rate
	 * that sizes the headroom kept: it goes on falling after the first
	 * shrinks). A starved daemon's passes come late: WAIT_MS bounds it. */
	const uint64_t settle_ns = (uint64_t)decay_ms / 4 * 1000000u;
	const long rss_drop = (long)(128 * MiB / 4096); /* pages */
	uint64_t deadline = t_free + (uint64_t)(decay_ms + WAIT_MS) * 1000000u;
	while (kt_stat(pool, "primary.shrinks") == shrinks0 && kt_now_ns() < deadline)
		kt_sleep_ms(10);
	int64_t cap_after = kt_stat(pool, "primary.capacity_bytes");
	int64_t seen = kt_stat(pool, "daemon.passes");
	uint64_t changed = kt_now_ns();
	while (kt_now_ns() < deadline) {
		kt_sleep_ms(10);
		int64_t c = kt_stat(pool, "primary.capacity_bytes"), passes = kt_stat(pool, "daemon.passes");
		if (c != cap_after) {
			cap_after = c, seen = passes, changed = kt_now_ns();
			continue;
		}
		bool shrunk = c <= cap_full / 2 && rss_full - kt_rss_kb() / 4 >= rss_drop;
		if (shrunk && passes >= seen + 3 && kt_now_ns() - changed >= settle_ns)
			break;
	}
	long rss_after = (kt_rss_kb() / 4);
	size_t nev;
	kp_event *ev = kt_events_all(pool, &nev);
	double first_ms = -1, last_ms = -1;
	int64_t early_bytes = 0; /* released before decay_ms */
	for (size_t i = 0; ev != NULL && i < nev; i++) {
		if (ev[i].kind != KP_EV_SHRINK)
			continue;
		double ms = ((double)ev[i].time_ns - (double)t_free) / 1e6;
		if (first_ms < 0)
			first_ms = ms;
		last_ms = ms;
		if (ms < decay_ms - 20)
			early_bytes += (int64_t)ev[i].size;
	}
	printf("   shrink: capacity %lld -> %lld MiB, RSS %ld -> %ld MiB, shrink events %.0f .. %.0f ms after "
	       "the frees began\n",
	       (long long)(cap_full >> 20), (long long)(cap_after >> 20), rss_full / 256, rss_after / 256, first_ms,
	       last_ms);
	CHECK(kt_stat(pool, "primary.shrinks") > shrinks0, "no shrink within decay_ms + %u ms", WAIT_MS);
	CHECK(early_bytes <= idle_full,
	      "%lld bytes released before decay_ms %u after the frees began (first at %.0f ms), more than the "
	      "%lld bytes of headroom that were already free then",
	      (long long)early_bytes, decay_ms, first_ms, (long long)idle_full);
	if (early_bytes > idle_full)
		for (size_t i = 0; i < nev; i++)
			printf("     event +%.1f ms %s %s\n", ((double)ev[i].time_ns - (double)t_free) / 1e6,
			       kp_event_name(ev[i].kind), ev[i].text);
	free(ev);
	CHECK(cap_after <= cap_full / 2, "capacity only went %lld -> %lld", (long long)cap_full, (long long)cap_after);
	CHECK(rss_full - rss_after >= rss_drop, "RSS dropped only %ld -> %ld pages", rss_full, rss_after);
	CHECK(cap_after - kt_stat(pool, "primary.in_use_bytes") >= (int64_t)(64 * MiB) ||
		      cap_after >= kt_stat(pool, "primary.max_bytes"),
	      "the shrink left less than high_wm of headroom: capacity %lld", (long long)cap_after);
	CHECK(kt_stat(pool, "daemon.shrinks") > 0, "daemon.shrinks not counted");
	kp_destroy(pool);
}

/* ---- kp_daemon_step: the same decisions, driven by the test ------------- */

static void test_daemon_step(void)
{
	/* step_clock:on: the pool's time is the steps' alone (a TSan run beside a
	 * loaded CI took over 600 ms of real time between the frees and the
	 * step 400 ms after them, and shrank "before decay_ms") */
	KT_POOL(pool, "primary_initial:4m,primary_max:512m,low_wm:8m,high_wm:16m,decay_ms:1000,daemon:off,"
		      "step_clock:on,seed:4");
	CHECK(kt_stat(pool, "daemon.running") == 0, "daemon:off but running");
	/* this thread's first allocation sets up its cache (which may map
	 * memory): that is thread setup, not growth, so it is left out */
	kp_free(pool, kp_alloc(pool, 16, 0));
	int64_t amm0 = kt_stat(pool, "syscalls.alloc.mmap");
	int64_t aun0 = kt_stat(pool, "syscalls.alloc.munmap");
	int r = kp_daemon_step(pool, 0);
	CHECK(r >= 1, "a step on a pool below low_wm took %d actions", r);
	int64_t cap = kt_stat(pool, "primary.capacity_bytes"), use = kt_stat(pool, "primary.committed_bytes");
	CHECK(cap - use >= (int64_t)(16 * MiB), "after a step the headroom %lld is below high_wm",
	      (long long)(cap - use));
	CHECK(kt_stat(pool, "daemon.grows") >= 1 && kt_stat(pool, "primary.grows") >= 1, "grows not counted");
	CHECK(kt_stat(pool, "syscalls.daemon.mmap") >= 1, "a daemon step's mmap not counted as the daemon's");
	CHECK(kt_stat(pool, "syscalls.alloc.mmap") == amm0, "a daemon step counted as allocation path");
	r = kp_daemon_step(pool, 0);
	CHECK(r == 0, "a second step with nothing to do took %d actions", r);

	/* allocate 64 MiB, stepping after each MiB the way the daemon would */
	enum { NB = 1024 };
	static void *b[NB];
	for (int i = 0; i < NB; i++) {
		b[i] = kp_alloc(pool, 64 * KiB, 0);
		REQUIRE(b[i] != NULL, "kp_alloc #%d", i);
		memset(b[i], 1, 64 * KiB);
		if (i % 16 == 15) {
			kp_daemon_step(pool, 0);
			cap = kt_stat(pool, "primary.capacity_bytes");
			use = kt_stat(pool, "primary.committed_bytes");
			if (cap - use < (int64_t)(8 * MiB)) {
				CHECK(0, "after a step at %d MiB the headroom %lld is below low_wm", i / 16,
				      (long long)(cap - use));
				break;
			}
		}
	}
	CHECK(kt_stat(pool, "syscalls.alloc.mmap") == amm0,
	      "allocation path mapped memory although each step kept headroom: %lld -> %lld", (long long)amm0,
	      (long long)kt_stat(pool, "syscalls.alloc.mmap"));
	int64_t cap_full = kt_stat(pool, "primary.capacity_bytes");

	/* free all: no shrink until decay_ms of (virtual) time has passed */
	for (int i = 0; i < NB; i++)
		kp_free(pool, b[i]);
	kp_thread_flush(pool);
	int64_t shrinks0 = kt_stat(pool, "primary.shrinks");
	r = kp_daemon_step(pool, 0);
	CHECK(r == 0, "a step right after the frees took %d actions (shrink before decay_ms?)", r);
	r = kp_daemon_step(pool, 400);
	CHECK(r == 0, "a step 400 ms after the frees took %d actions (decay_ms is 1000)", r);
	CHECK(kt_stat(pool, "primary.shrinks") == shrinks0, "shrank before decay_ms");
	r = kp_daemon_step(pool, 700);
	CHECK(r >= 1, "a step 1100 ms after the frees took %d actions: no shrink after decay_ms", r);
	int64_t cap_after = kt_stat(pool, "primary.capacity_bytes");
	CHECK(kt_stat(pool, "primary.shrinks") > shrinks0, "primary.shrinks not counted");
	CHECK(cap_after < cap_full, "capacity %lld -> %lld", (long long)cap_full, (long long)cap_after);
	CHECK(cap_after >= (int64_t)(16 * MiB), "the shrink went below high_wm of headroom: %lld",
	      (long long)cap_after);
	kp_daemon_step(pool, 100000);
	CHECK(kt_stat(pool, "primary.capacity_bytes") >= (int64_t)(16 * MiB), "repeated steps shrank below high_wm");
	CHECK(kt_stat(pool, "syscalls.alloc.munmap") == aun0, "a step's munmap counted as the allocation path's");
	/* the pool works after the shrink */
	void *p = kp_alloc(pool, 3 * MiB, KP_ZERO);
	CHECK(p != NULL, "alloc after shrink");
	kp_free(pool, p);
	kp_destroy(pool);
}

/*
 * Decay holds even when a segment empties while a daemon pass is running:
 * with decay_ms at 100 s no segment may ever be released in this test. One
 * thread drives daemon passes back to back, the other empties a segment
 * over and over (a 2 MiB block in a pool with no other use).
 */
static kp_pool *race_pool;
static int race_stop;

static void *race_stepper(void *arg)
{
	(void)arg;
	while (!__atomic_load_n(&race_stop, __ATOMIC_RELAXED))
		kp_daemon_step(race_pool, 0);
	return NULL;
}

static void test_decay_race(void)
{
	KT_POOL(pool, "primary_initial:0,low_wm:0,high_wm:0,decay_ms:100000,daemon:off,seed:6");
	race_pool = pool;
	race_stop = 0;
	pthread_t th;
	REQUIRE(pthread_create(&th, NULL, race_stepper, NULL) == 0, "pthread_create");
	uint64_t t0 = kt_now_ms();
	long rounds = 0;
	while (kt_now_ms() - t0 < 2000 && kt_stat(pool, "primary.shrinks") == 0) {
		for (int i = 0; i < 100; i++, rounds++) {
			void *b = kp_alloc(pool, 2 * MiB, 0);
			if (b == NULL) {
				CHECK(0, "kp_alloc(2 MiB) failed");
				break;
			}
			kp_free(pool, b);
		}
	}
	__atomic_store_n(&race_stop, 1, __ATOMIC_RELAXED);
	pthread_join(th, NULL);
	int64_t shrinks = kt_stat(pool, "primary.shrinks");
	CHECK(shrinks == 0,
	      "%lld segments released within %llu ms with decay_ms 100000 (%ld alloc/free rounds racing daemon "
	      "passes): a segment emptied after the pass read the clock has empty_since > now",
	      (long long)shrinks, (unsigned long long)(kt_now_ms() - t0), rounds);
	kp_destroy(pool);
}

/* daemon:off: the allocation path grows the pool itself, up to primary_max */
static void test_no_daemon_grows_inline(void)
{
	KT_POOL(pool, "primary_initial:1m,primary_max:64m,daemon:off,seed:5");
	static void *b[2048];
	size_t n = 0, total = 0;
	while (n < 2048) {
		b[n] = kp_alloc(pool, 64 * KiB, 0);
		if (b[n] == NULL)
			break;
		total += 64 * KiB;
		n++;
	}
	CHECK(total >= 32 * MiB, "a daemon-less pool with primary_max 64m served only %zu MiB", total >> 20);
	CHECK(total <= 64 * MiB, "served %zu MiB past primary_max 64m", total >> 20);
	CHECK(kt_stat(pool, "primary.grows") > 0, "no grows");
	CHECK(kt_stat(pool, "syscalls.alloc.mmap") > 0, "grown without an allocation-path mmap?");
	CHECK(kt_stat(pool, "daemon.passes") == 0, "daemon passes with daemon:off");
	CHECK(kt_stat(pool, "primary.capacity_bytes") <= (int64_t)(64 * MiB), "capacity past primary_max");
	for (size_t i = 0; i < n; i++)
		kp_free(pool, b[i]);
	kp_destroy(pool);
}

/* kp_destroy while other threads just finished hammering the pool and the
 * daemon is mid-pass: it returns, and no thread is left behind. */
static void *hammer(void *arg)
{
	kp_pool *pool = (kp_pool *)arg;
	uint64_t rng = (uint64_t)(uintptr_t)&rng;
	void *b[64] = {0};
	for (int i = 0; i < 20000; i++) {
		unsigned k = (unsigned)(kt_rand(&rng) % 64);
		kp_free(pool, b[k]);
		b[k] = kp_alloc(pool, kt_rand_log(&rng, 16, 256 * 1024), 0);
	}
	for (int k = 0; k < 64; k++)
		kp_free(pool, b[k]);
	return NULL;
}

static void test_destroy_busy(void)
{
	int base = thread_count();
	for (int round = 0; round < 5; round++) {
		kp_pool *pool = kp_create("primary_initial:1m,low_wm:4m,high_wm:8m,daemon_interval_ms:1,decay_ms:0");
		REQUIRE(pool != NULL, "kp_create: %s", kp_last_error());
		pthread_t th[2];
		for (int i = 0; i < 2; i++)
			REQUIRE(pthread_create(&th[i], NULL, hammer, pool) == 0, "pthread_create");
		for (int i = 0; i < 2; i++)
			pthread_join(th[i], NULL);
		kp_daemon_wake(pool);
		kp_destroy(pool);
	}
	CHECK(wait_threads(base, WAIT_MS) == base, "threads left after busy destroys: %d, base %d", thread_count(),
	      base);
}

int main(void)
{
	RUN(test_start_stop);
	RUN(test_wake_not_timer);
	RUN(test_daemon_step);
	RUN(test_decay_race);
	RUN(test_no_daemon_grows_inline);
	RUN(test_destroy_busy);
	RUN(test_grow_ahead_and_shrink);
	return ktest_summary();
}
