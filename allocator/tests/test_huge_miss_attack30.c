/*
 * test_huge_miss_attack30.c - attacks on huge_cache_missed (huge.c, s30
 * 4269562): a huge request that misses every kept freed mapping and maps a
 * new one gives back the kept mappings' pages (marked purging under
 * pool->lock, purged without it, marked purged after; release_mu held
 * throughout), their mappings still kept. Checked:
 *   - the purge refused (every madvise failed by fault injection; the pages
 *     mlock'ed, a real EINVAL): no crash, no purged bytes counted, the
 *     mapping still kept and usable, a KP_ZERO block taken from it zero, a
 *     block without KP_ZERO holding what it is written;
 *   - threads taking kept mappings (huge_cache_take, realloc growth through
 *     huge_cache_take_window and kp__huge_resize) while others miss, the
 *     daemon running with decay_ms 1 (trim, decay eviction) and a thread
 *     stepping passes: every block's words (one a page, from its address)
 *     kept, KP_ZERO blocks zero, no integrity or OS event, the cache's list
 *     agreeing with its counts and no purging mark left once no pass or
 *     miss runs; with madvise failing at random too;
 *   - fork() while a thread misses: the child finds no purging mark, the
 *     cache consistent, and allocates, takes kept mappings and misses;
 *   - a block grown by kp_realloc from 4 to 40 MiB, 1/8 more a step, while
 *     mappings of 6, 12 and 24 MiB are kept: its bytes kept at every step,
 *     the grown part zero under KP_ZERO.
 */
#define _GNU_SOURCE 1
#include "ktest.h"

#include "internal.h"

#include <pthread.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#define MIB ((size_t)1 << 20)

/* One word a page, at an offset that moves with the page (so a page moved
 * or zeroed whole, or shifted by a page, fails), and the last word. */
static size_t word_at(size_t page, size_t n)
{
	size_t off = page * KP_PAGE + ((page * 7) % (KP_PAGE / 8)) * 8;
	return off + 8 <= n ? off : (n & ~(size_t)7) - 8;
}

static void sparse_fill(unsigned char *p, size_t n, const void *origin, uint64_t salt)
{
	for (size_t pg = 0; pg * KP_PAGE < n; pg++) {
		size_t off = word_at(pg, n);
		uint64_t w = kt_pattern_word(origin, salt, off / 8);
		memcpy(p + off, &w, 8);
	}
}

/* Pages whose word is not the pattern written at origin (first n bytes). */
static size_t sparse_bad(const unsigned char *p, size_t n, const void *origin, uint64_t salt)
{
	size_t bad = 0;
	for (size_t pg = 0; pg * KP_PAGE < n; pg++) {
		size_t off = word_at(pg, n);
		uint64_t w;
		memcpy(&w, p + off, 8);
		bad += w != kt_pattern_word(origin, salt, off / 8);
	}
	return bad;
}

/* Pages whose word (and the page's first and last 8 bytes) is not zero. */
static size_t sparse_nonzero(const unsigned char *p, size_t n)
{
	size_t bad = 0;
	for (size_t pg = 0; pg * KP_PAGE < n; pg++) {
		uint64_t a, b = 0, c = 0;
		memcpy(&a, p + word_at(pg, n), 8);
		memcpy(&b, p + pg * KP_PAGE, 8);
		size_t end = (pg + 1) * KP_PAGE < n ? (pg + 1) * KP_PAGE : n;
		if (end - pg * KP_PAGE >= 8)
			memcpy(&c, p + end - 8, 8);
		bad += (a | b | c) != 0;
	}
	return bad;
}

static size_t nonzero_all(const unsigned char *p, size_t n)
{
	size_t k = 0;
	for (size_t i = 0; i < n; i++)
		k += p[i] != 0;
	return k;
}

/* Integrity and OS-failure events drained (fault_injected not counted). */
static size_t bad_events(kp_pool *pool, size_t *injected, bool oom_ok)
{
	kp_event ev[64];
	size_t n, bad = 0;
	while ((n = kp_events_drain(pool, ev, 64)) > 0)
		for (size_t i = 0; i < n; i++) {
			unsigned k = ev[i].kind;
			if (k == KP_EV_FAULT_INJECTED) {
				if (injected)
					++*injected;
				continue;
			}
			if (k == KP_EV_DOUBLE_FREE || k == KP_EV_INVALID_FREE || k == KP_EV_CORRUPTION ||
			    k == KP_EV_OVERFLOW || k == KP_EV_USE_AFTER_FREE || k == KP_EV_FREELIST ||
			    k == KP_EV_QUARANTINE || (k == KP_EV_OOM && !oom_ok) || (k == KP_EV_OS_FAIL && !injected)) {
				if (getenv("KT_VERBOSE"))
					printf("   event %s %s\n", kp_event_name(k), ev[i].text);
				bad++;
			}
		}
	return bad;
}

/* The cache walked with no pass or miss running (step_mu, release_mu, then
 * pool->lock: a pass's order): the count and bytes agree with the list, no
 * mapping marked purging, none evicted and waiting. 0 when consistent. */
static int cache_inconsistent(kp_pool *pool, char *why, size_t len)
{
	pthread_mutex_lock(&pool->daemon.step_mu);
	pthread_mutex_lock(&pool->release_mu);
	pthread_mutex_lock(&pool->lock);
	unsigned n = 0, marked = 0;
	size_t bytes = 0;
	for (kp__seg *c = pool->huge_cache; c; c = c->next) {
		n++;
		bytes += c->size;
		marked += c->purging != 0;
	}
	int bad = n != pool->huge_ncached || bytes != atomic_load(&pool->huge_cached_bytes) || marked || n > 4;
	snprintf(why, len, "%u listed (count %u), %zu bytes (counted %zu), %u marked purging", n,
		 (unsigned)pool->huge_ncached, bytes, (size_t)atomic_load(&pool->huge_cached_bytes), marked);
	pthread_mutex_unlock(&pool->lock);
	pthread_mutex_unlock(&pool->release_mu);
	pthread_mutex_unlock(&pool->daemon.step_mu);
	return bad;
}

/* Two blocks of 9 and 10 MiB written whole and freed: kept mappings. */
static void keep_two(kp_pool *pool, char **freed)
{
	static const size_t big[2] = {9 * MIB, 10 * MIB};
	for (unsigned i = 0; i < 2; i++) {
		freed[i] = kp_alloc(pool, big[i], 0);
		REQUIRE(freed[i] != NULL, "kp_alloc(%zu): %s", big[i], kp_last_error());
		memset(freed[i], 0x5a, big[i]);
	}
	for (unsigned i = 0; i < 2; i++)
		REQUIRE(kp_free(pool, freed[i]) == KP_OK, "kp_free");
}

/* ---- the purge refused ------------------------------------------------ */

static void refused_by_injection(const char *conf)
{
	KT_POOL(pool, conf);
	char *freed[2];
	keep_two(pool, freed);
	int64_t kept = kt_stat(pool, "primary.huge_cached_bytes");
	REQUIRE(kept >= (int64_t)(19 * MIB), "both kept (%lld)", (long long)kept);
	kt_events_clear(pool);
	int64_t pb = kt_stat(pool, "primary.purged_bytes"), pn = kt_stat(pool, "primary.purges");
	REQUIRE(kp_fault_inject(pool, "madvise@every=1") == 0, "kp_fault_inject: %s", kp_last_error());
	char *miss = kp_alloc(pool, 4 * MIB, 0); /* more than half of each to spare: a miss */
	REQUIRE(miss != NULL, "kp_alloc(4 MiB): %s", kp_last_error());
	kt_fill(miss, 4 * MIB, 41);
	size_t injected = 0;
	CHECK(bad_events(pool, &injected, false) == 0, "%s: no integrity event for a refused purge", conf);
	CHECK(injected >= 1, "%s: the miss's purge met the injected madvise failure (%zu events)", conf, injected);
	CHECK(kt_stat(pool, "primary.purged_bytes") == pb && kt_stat(pool, "primary.purges") == pn,
	      "%s: a refused purge counted (purged_bytes %lld -> %lld, purges %lld -> %lld)", conf, (long long)pb,
	      (long long)kt_stat(pool, "primary.purged_bytes"), (long long)pn,
	      (long long)kt_stat(pool, "primary.purges"));
	CHECK(kt_stat(pool, "primary.huge_cached_bytes") == kept, "%s: the mappings stay kept", conf);
	CHECK(kt_not_resident(freed[0] + KP_PAGE, 8 * MIB) == 0, "%s: the refused purge left the pages resident", conf);
	REQUIRE(kp_fault_inject(pool, "madvise@off") == 0, "kp_fault_inject off");
	/* the 10 MiB one without KP_ZERO (only it fits 10 MiB; the 9 MiB
	 * request would take whichever was freed last): usable, keeps what it
	 * is written */
	unsigned char *w = kp_alloc(pool, 10 * MIB, 0);
	REQUIRE(w != NULL, "kp_alloc(10 MiB): %s", kp_last_error());
	CHECK((char *)w == freed[1], "%s: the kept 10 MiB mapping served it (%p, was %p)", conf, (void *)w,
	      (void *)freed[1]);
	/* the 9 MiB mapping, not purged: KP_ZERO zeroes it whole */
	unsigned char *z = kp_alloc(pool, 9 * MIB, KP_ZERO);
	REQUIRE(z != NULL, "kp_alloc(9 MiB, KP_ZERO): %s", kp_last_error());
	CHECK((char *)z == freed[0], "%s: the kept 9 MiB mapping served it (%p, was %p)", conf, (void *)z,
	      (void *)freed[0]);
	size_t nz = nonzero_all(z, 9 * MIB);
	CHECK(nz == 0, "%s: %zu bytes not zero in a KP_ZERO block from a mapping whose purge was refused", conf, nz);
	kt_fill(w, 10 * MIB, 42);
	kt_fill(z, 9 * MIB, 43);
	CHECK(kt_verify(w, 10 * MIB, 42) == KT_OK && kt_verify(z, 9 * MIB, 43) == KT_OK &&
		      kt_verify(miss, 4 * MIB, 41) == KT_OK,
	      "%s: the blocks keep what was written", conf);
	CHECK(kp_free(pool, w) == KP_OK && kp_free(pool, z) == KP_OK && kp_free(pool, miss) == KP_OK, "kp_free");
	CHECK(bad_events(pool, NULL, false) == 0, "%s: no integrity or OS event", conf);
	char why[160];
	CHECK(!cache_inconsistent(pool, why, sizeof why), "%s: cache: %s", conf, why);
	kp_destroy(pool);
}

static void test_refused_by_injection(void)
{
	refused_by_injection("daemon:off,prefault:off,seed:3");
	refused_by_injection("daemon:off,prefault:off,seed:3,checks:off");
	refused_by_injection("daemon:off,prefault:off,seed:3,poison:on");
}

/* madvise(MADV_DONTNEED) of mlock'ed pages fails (EINVAL): a real refusal. */
static void test_refused_by_mlock(void)
{
	if (KT_SANITIZED) { /* ASan's and TSan's mlock interceptors do nothing */
		printf("   (sanitizer: mlock is a no-op; skipped)\n");
		return;
	}
	KT_POOL(pool, "daemon:off,prefault:off,seed:4");
	char *a = kp_alloc(pool, 9 * MIB, 0);
	REQUIRE(a != NULL, "kp_alloc: %s", kp_last_error());
	memset(a, 0x77, 9 * MIB);
	if (mlock(a, 9 * MIB) != 0) {
		printf("   (mlock refused: %s; skipped)\n", strerror(errno));
		kp_free(pool, a);
		kp_destroy(pool);
		return;
	}
	REQUIRE(kp_free(pool, a) == KP_OK, "kp_free");
	int64_t pb = kt_stat(pool, "primary.purged_bytes");
	char *miss = kp_alloc(pool, 4 * MIB, 0);
	REQUIRE(miss != NULL, "kp_alloc(4 MiB): %s", kp_last_error());
	CHECK(kt_stat(pool, "primary.purged_bytes") == pb, "mlock'ed pages counted purged (%lld bytes)",
	      (long long)(kt_stat(pool, "primary.purged_bytes") - pb));
	unsigned char *z = kp_alloc(pool, 9 * MIB, KP_ZERO);
	REQUIRE(z != NULL, "kp_alloc(KP_ZERO): %s", kp_last_error());
	CHECK((char *)z == a, "the kept (locked) mapping served 9 MiB again");
	size_t nz = nonzero_all(z, 9 * MIB);
	CHECK(nz == 0, "%zu bytes not zero in a KP_ZERO block from a mapping whose pages stayed locked", nz);
	kt_fill(z, 9 * MIB, 5);
	CHECK(kt_verify(z, 9 * MIB, 5) == KT_OK, "the block keeps what was written");
	munlock(a, 9 * MIB);
	CHECK(kp_free(pool, z) == KP_OK && kp_free(pool, miss) == KP_OK, "kp_free");
	CHECK(bad_events(pool, NULL, false) == 0, "no integrity event");
	kp_destroy(pool);
}

/* ---- threads taking kept mappings while others miss -------------------- */

struct churn {
	kp_pool *pool;
	unsigned id, iters;
	unsigned long bad, nonzero, fails, ops, reallocs, zeros;
	_Atomic int *stop;
};

static const size_t churn_sizes[] = {
	(size_t)4200 << 10, 5 * MIB, 6 * MIB, 9 * MIB, 10 * MIB, 12 * MIB, 17 * MIB,
};
#define NSIZES (sizeof churn_sizes / sizeof churn_sizes[0])

static void *churn_thread(void *arg)
{
	struct churn *c = arg;
	uint64_t rng = 0x9e3779b97f4a7c15ull * (c->id + 1);
	struct {
		unsigned char *p;
		const void *origin;
		size_t n;
		uint64_t salt;
	} live[2] = {{0}};
	for (unsigned it = 0; it < c->iters; it++) {
		unsigned k = (unsigned)(kt_rand(&rng) % 2);
		if (live[k].p) {
			/* grow by realloc one time in three: a take_window or a miss */
			if (kt_rand(&rng) % 3 == 0) {
				size_t m = live[k].n + live[k].n / 8 + kt_rand_range(&rng, 0, 3 * MIB);
				/* the grown part (KP_ZERO's) is past the old usable size:
				 * with checks off the slack past the request is usable,
				 * kept as it was (kp_realloc's contract) */
				size_t u = kp_usable_size(c->pool, live[k].p);
				unsigned fl = kt_rand(&rng) % 2 ? KP_ZERO : 0;
				unsigned char *q = kp_realloc(c->pool, live[k].p, m, fl);
				if (!q) {
					c->fails++;
				} else {
					c->reallocs++;
					c->bad += sparse_bad(q, live[k].n, live[k].origin, live[k].salt);
					if (fl) {
						size_t from = u > live[k].n ? u : live[k].n;
						if (from < m)
							c->nonzero += sparse_nonzero(q + from, m - from);
					}
					live[k].p = q;
					live[k].origin = q;
					live[k].n = m;
					sparse_fill(q, m, q, live[k].salt);
				}
			}
			c->bad += sparse_bad(live[k].p, live[k].n, live[k].origin, live[k].salt);
			if (kp_free(c->pool, live[k].p) != KP_OK)
				c->fails++;
			live[k].p = NULL;
		}
		size_t n = churn_sizes[kt_rand(&rng) % NSIZES] + kt_rand_range(&rng, 0, 64) * KP_PAGE;
		unsigned fl = kt_rand(&rng) % 2 ? KP_ZERO : 0;
		unsigned char *p = kp_alloc(c->pool, n, fl);
		c->ops++;
		if (!p) {
			c->fails++;
			continue;
		}
		if (fl) {
			c->zeros++;
			c->nonzero += sparse_nonzero(p, n);
		}
		live[k].p = p;
		live[k].origin = p;
		live[k].n = n;
		live[k].salt = kt_rand(&rng);
		sparse_fill(p, n, p, live[k].salt);
	}
	for (unsigned k = 0; k < 2; k++)
		if (live[k].p) {
			c->bad += sparse_bad(live[k].p, live[k].n, live[k].origin, live[k].salt);
			if (kp_free(c->pool, live[k].p) != KP_OK)
				c->fails++;
		}
	return NULL;
}

static void *stepper_thread(void *arg)
{
	struct churn *c = arg;
	while (!atomic_load(c->stop)) {
		kp_daemon_step(c->pool, 2); /* past decay_ms 1: expired mappings unmapped */
		c->ops++;
		kt_sleep_ms(1);
	}
	return NULL;
}

static void concurrent(const char *conf, const char *faults, bool tight)
{
	KT_POOL(pool, conf);
	if (faults)
		REQUIRE(kp_fault_inject(pool, faults) == 0, "kp_fault_inject(%s): %s", faults, kp_last_error());
	enum { T = 3 };
	unsigned iters = KT_SANITIZED ? 60 : 250;
	_Atomic int stop = 0;
	struct churn c[T + 1];
	pthread_t th[T + 1];
	for (unsigned i = 0; i <= T; i++) {
		c[i] = (struct churn){.pool = pool, .id = i, .iters = iters, .stop = &stop};
		REQUIRE(pthread_create(&th[i], NULL, i < T ? churn_thread : stepper_thread, &c[i]) == 0,
			"pthread_create");
	}
	for (unsigned i = 0; i < T; i++)
		pthread_join(th[i], NULL);
	atomic_store(&stop, 1);
	pthread_join(th[T], NULL);
	unsigned long bad = 0, nz = 0, fails = 0, ops = 0, re = 0, zeros = 0;
	for (unsigned i = 0; i < T; i++) {
		bad += c[i].bad;
		nz += c[i].nonzero;
		fails += c[i].fails;
		ops += c[i].ops;
		re += c[i].reallocs;
		zeros += c[i].zeros;
	}
	if (faults)
		kp_fault_inject(pool, "madvise@off");
	CHECK(bad == 0, "%s%s: %lu pages lost their words (of %lu allocations, %lu reallocs)", conf,
	      faults ? " +faults" : "", bad, ops, re);
	CHECK(nz == 0, "%s%s: %lu pages not zero in KP_ZERO blocks or grown parts (%lu KP_ZERO allocations)", conf,
	      faults ? " +faults" : "", nz, zeros);
	/* under a tight primary_max allocations may fail (an oom event each) */
	CHECK(tight || fails == 0, "%s%s: %lu allocations, reallocs or frees failed", conf, faults ? " +faults" : "",
	      fails);
	size_t injected = 0;
	CHECK(bad_events(pool, faults ? &injected : NULL, tight) == 0, "%s%s: no integrity or OS event", conf,
	      faults ? " +faults" : "");
	char why[160];
	CHECK(!cache_inconsistent(pool, why, sizeof why), "%s%s: cache: %s", conf, faults ? " +faults" : "", why);
	CHECK(kt_stat(pool, "primary.huge_bytes") == 0, "%s: huge_bytes %lld with no huge block live", conf,
	      (long long)kt_stat(pool, "primary.huge_bytes"));
	int64_t pb = kt_stat(pool, "primary.purged_bytes"), pn = kt_stat(pool, "primary.purges");
	CHECK(pb % KP_PAGE == 0 && (pn == 0) == (pb == 0), "%s: purged_bytes %lld in %lld purges", conf, (long long)pb,
	      (long long)pn);
	printf("   %s%s: %lu allocations, %lu reallocs, %lu failed, %lld purges (%lld MiB), %lld steps\n", conf,
	       faults ? " +faults" : "", ops, re, fails, (long long)pn, (long long)(pb >> 20), (long long)c[T].ops);
	kp_destroy(pool);
}

static void test_concurrent_takers_and_misses(void)
{
	concurrent("daemon:on,decay_ms:1,daemon_interval_ms:1,prefault:off,seed:5", NULL, false);
	concurrent("daemon:on,decay_ms:1,daemon_interval_ms:1,prefault:off,seed:6,checks:off", NULL, false);
	concurrent("daemon:off,decay_ms:1000000,seed:7", NULL, false);
	concurrent("daemon:on,decay_ms:1,daemon_interval_ms:1,prefault:off,seed:8", "madvise@p=0.3@seed=9", false);
	/* 80 MiB: three threads' two blocks of up to 20 MiB each and the kept
	 * mappings do not fit: blocks evict kept mappings (some of them being
	 * purged by a miss or a pass: kp__huge_cache_detach's purging 2) */
	concurrent("daemon:on,decay_ms:1000,daemon_interval_ms:1,prefault:off,seed:13,primary_max:80m", NULL, true);
}

/* ---- fork while a thread misses ---------------------------------------- */

static void *misser_thread(void *arg)
{
	struct churn *c = arg;
	while (!atomic_load(c->stop)) {
		char *freed[2];
		keep_two(c->pool, freed);
		char *m = kp_alloc(c->pool, (size_t)4200 << 10, 0); /* a miss: purges the two */
		if (!m) {
			c->fails++;
			continue;
		}
		memset(m, 0x3c, KP_PAGE);
		if (kp_free(c->pool, m) != KP_OK)
			c->fails++;
		c->ops++;
		/* take the two again (or miss, when the mappings are gone) */
		unsigned char *a = kp_alloc(c->pool, 9 * MIB, KP_ZERO), *b = kp_alloc(c->pool, 10 * MIB, 0);
		if (!a || !b) {
			c->fails++;
		} else {
			c->nonzero += sparse_nonzero(a, 9 * MIB);
		}
		kp_free(c->pool, a);
		kp_free(c->pool, b);
	}
	return NULL;
}

static void test_fork_while_missing(void)
{
	KT_POOL(pool, "daemon:off,prefault:off,seed:10");
	_Atomic int stop = 0;
	struct churn c = {.pool = pool, .stop = &stop};
	pthread_t th;
	REQUIRE(pthread_create(&th, NULL, misser_thread, &c) == 0, "pthread_create");
	unsigned forks = KT_SANITIZED ? 6 : 25, bad_children = 0;
	for (unsigned f = 0; f < forks; f++) {
		kt_sleep_ms(3);
		pid_t pid = fork();
		REQUIRE(pid >= 0, "fork");
		if (pid == 0) {
			int rc = 0;
			char why[160];
			if (cache_inconsistent(pool, why, sizeof why)) {
				fprintf(stderr, "child: cache: %s\n", why);
				rc |= 1;
			}
			for (unsigned r = 0; r < 3; r++) {
				unsigned char *a = kp_alloc(pool, 9 * MIB, KP_ZERO);
				unsigned char *b = kp_alloc(pool, (size_t)4200 << 10, 0);
				if (!a || !b) {
					rc |= 2;
					break;
				}
				if (sparse_nonzero(a, 9 * MIB))
					rc |= 4;
				sparse_fill(a, 9 * MIB, a, r);
				sparse_fill(b, (size_t)4200 << 10, b, r + 9);
				if (sparse_bad(a, 9 * MIB, a, r) || sparse_bad(b, (size_t)4200 << 10, b, r + 9))
					rc |= 8;
				if (kp_free(pool, a) != KP_OK || kp_free(pool, b) != KP_OK)
					rc |= 16;
			}
			if (bad_events(pool, NULL, false))
				rc |= 32;
			if (cache_inconsistent(pool, why, sizeof why)) {
				fprintf(stderr, "child: cache after: %s\n", why);
				rc |= 64;
			}
			_exit(rc);
		}
		int st = 0;
		REQUIRE(waitpid(pid, &st, 0) == pid, "waitpid");
		if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
			bad_children++;
			printf("   child %u: %s %d\n", f, WIFEXITED(st) ? "exit" : "signal",
			       WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
		}
	}
	atomic_store(&stop, 1);
	pthread_join(th, NULL);
	CHECK(bad_children == 0, "%u of %u children forked while a thread missed found the pool inconsistent",
	      bad_children, forks);
	CHECK(c.fails == 0 && c.nonzero == 0, "the missing thread: %lu failures, %lu pages not zero", c.fails,
	      c.nonzero);
	CHECK(c.ops > 0, "the missing thread missed (%lu rounds)", c.ops);
	CHECK(bad_events(pool, NULL, false) == 0, "no integrity event in the parent");
	kp_destroy(pool);
}

/* ---- realloc growth beside kept mappings --------------------------------- */

static void realloc_growth(unsigned flags)
{
	KT_POOL(pool, "daemon:off,prefault:off,seed:11");
	static const size_t keep[3] = {6 * MIB, 12 * MIB, 24 * MIB};
	char *k[3];
	for (unsigned i = 0; i < 3; i++) {
		k[i] = kp_alloc(pool, keep[i], 0);
		REQUIRE(k[i] != NULL, "kp_alloc");
		memset(k[i], 0x66, keep[i]);
	}
	for (unsigned i = 0; i < 3; i++)
		REQUIRE(kp_free(pool, k[i]) == KP_OK, "kp_free");
	size_t n = (size_t)4100 << 10;
	unsigned char *p = kp_alloc(pool, n, 0);
	REQUIRE(p != NULL, "kp_alloc");
	kt_fill(p, n, 12);
	const void *origin = p;
	unsigned steps = 0, bad = 0, nz = 0, moved = 0;
	while (n < 40 * MIB) {
		size_t m = n + n / 8;
		unsigned char *q = kp_realloc(pool, p, m, flags);
		REQUIRE(q != NULL, "kp_realloc(%zu): %s", m, kp_last_error());
		moved += q != p;
		bad += kt_verify_from(q, origin, n, 12) != KT_OK;
		if (flags & KP_ZERO)
			nz += nonzero_all(q + n, m - n) != 0;
		CHECK(kp_usable_size(pool, q) >= m, "usable %zu < %zu", kp_usable_size(pool, q), m);
		kt_fill(q, m, 12);
		origin = q;
		p = q;
		n = m;
		steps++;
	}
	CHECK(bad == 0, "flags %u: %u of %u realloc steps lost the block's bytes", flags, bad, steps);
	CHECK(nz == 0, "flags %u: %u of %u KP_ZERO realloc steps left the grown part not zero", flags, nz, steps);
	CHECK(kp_free(pool, p) == KP_OK, "kp_free");
	CHECK(bad_events(pool, NULL, false) == 0, "no integrity event");
	char why[160];
	CHECK(!cache_inconsistent(pool, why, sizeof why), "cache: %s", why);
	printf("   flags %u: %u steps to %zu MiB, %u moved, %lld purges\n", flags, steps, n >> 20, moved,
	       (long long)kt_stat(pool, "primary.purges"));
	kp_destroy(pool);
}

static void test_realloc_growth_beside_kept(void)
{
	realloc_growth(0);
	realloc_growth(KP_ZERO);
}

int main(void)
{
	RUN(test_refused_by_injection);
	RUN(test_refused_by_mlock);
	RUN(test_concurrent_takers_and_misses);
	RUN(test_fork_while_missing);
	RUN(test_realloc_growth_beside_kept);
	return ktest_summary();
}
