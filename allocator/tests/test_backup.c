/*
 * test_backup.c - the backup pool: reserved at creation and fenced by guard
 * pages, untouched while the primary serves; with the primary full, only a
 * KP_CRITICAL request inside a valid critical scope is served by it; frees go
 * back to it; traffic returns to the primary with hysteresis.
 */
#include "ktest.h"

#include <pthread.h>
#include <sys/mman.h>

#define KiB ((size_t)1 << 10)
#define MiB ((size_t)1 << 20)

/* One 4 MiB primary that cannot grow, a 1 MiB reserve, no daemon (nothing
 * moves unless the test moves it). critical at 90% of primary_max, recovery
 * below 60%: a wide hysteresis band the test can stand inside. */
static const char *const CONF =
	"primary_initial:4m,primary_max:4m,backup:1m,daemon:off,critical_wm:90,recover_wm:60,seed:9";

struct filled {
	void *p[8192];
	size_t size[8192];
	size_t n;
};

/* Allocate blocks of decreasing sizes until each size fails: afterwards the
 * primary cannot serve any of them. Returns the bytes obtained. */
static size_t fill_primary(kp_pool *pool, struct filled *f)
{
	static const size_t sizes[] = {64 * KiB, 4 * KiB, 256, 16};
	size_t total = 0;
	for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
		for (;;) {
			if (f->n == sizeof f->p / sizeof f->p[0] || total > 16 * MiB)
				return total; /* primary_max not enforced: the caller's CHECK fails */
			void *p = kp_alloc(pool, sizes[k], 0);
			if (p == NULL)
				break;
			kt_fill(p, sizes[k], 3);
			f->p[f->n] = p;
			f->size[f->n++] = sizes[k];
			total += sizes[k];
		}
	}
	return total;
}

static int64_t st(kp_pool *pool, const char *key)
{
	return kt_stat(pool, key);
}

struct try_arg {
	kp_pool *pool;
	void *got;
};

static void *try_critical(void *varg)
{
	struct try_arg *a = (struct try_arg *)varg;
	a->got = kp_alloc(a->pool, 256, KP_CRITICAL);
	return NULL;
}

/* The whole story of issue 2, point 3, in order. */
static void test_backup_story(void)
{
	KT_POOL(pool, CONF);
	static struct filled f;
	f.n = 0;

	/* reserved at creation, untouched */
	CHECK(st(pool, "backup.capacity_bytes") >= (int64_t)MiB, "backup.capacity_bytes = %lld",
	      (long long)st(pool, "backup.capacity_bytes"));
	uint64_t token = kp_critical_token(pool);
	CHECK(token != 0, "kp_critical_token gave 0 to the creator");
	kt_events_clear(pool);
	CHECK(kp_critical_token(pool) == 0, "a second kp_critical_token call must return 0");
	CHECK(kt_events_count(pool, KP_EV_TOKEN) == 1, "a second token request records a token event");

	size_t got = fill_primary(pool, &f);
	CHECK(got >= 3 * MiB && got <= 4 * MiB, "the 4 MiB primary served %zu bytes", got);
	CHECK(st(pool, "backup.allocs") == 0 && st(pool, "backup.in_use_bytes") == 0,
	      "the backup was used while the primary served");

	/* an ordinary allocation: NULL and an event */
	kt_events_clear(pool);
	size_t nev;
	kp_event *ev;
	void *p = kp_alloc(pool, 256, 0);
	CHECK(p == NULL, "ordinary alloc on a full primary returned %p", p);
	ev = kt_events_all(pool, &nev);
	CHECK(kt_count_kind(ev, nev, KP_EV_OOM) + kt_count_kind(ev, nev, KP_EV_DENIED) >= 1,
	      "ordinary alloc on a full primary: no oom/denied event (%zu events)", nev);
	CHECK(kt_count_kind(ev, nev, KP_EV_BACKUP_ALLOC) == 0, "ordinary alloc reached the backup");
	free(ev);
	CHECK(st(pool, "primary.failures") > 0, "primary.failures not counted");

	/* KP_CRITICAL without a scope: refused, with an event */
	int64_t refusals = st(pool, "backup.refusals");
	kt_events_clear(pool);
	p = kp_alloc(pool, 256, KP_CRITICAL);
	CHECK(p == NULL, "KP_CRITICAL without a scope was served: %p", p);
	CHECK(st(pool, "backup.refusals") == refusals + 1, "backup.refusals %lld -> %lld", (long long)refusals,
	      (long long)st(pool, "backup.refusals"));
	CHECK(kt_events_count(pool, KP_EV_DENIED) >= 1, "no denied event for an unprivileged KP_CRITICAL");
	CHECK(st(pool, "backup.in_use_bytes") == 0, "backup used by an unprivileged caller");

	/* bad tokens */
	kt_events_clear(pool);
	CHECK(kp_critical_enter(pool, token ^ 1) == KP_EDENIED, "a wrong token opened a scope");
	CHECK(kp_critical_enter(pool, 0) == KP_EDENIED, "token 0 opened a scope");
	CHECK(kt_events_count(pool, KP_EV_TOKEN) == 2, "bad tokens: want 2 token events");
	p = kp_alloc(pool, 256, KP_CRITICAL);
	CHECK(p == NULL, "KP_CRITICAL after a refused enter was served: %p", p);

	/* a valid scope: served by the backup */
	CHECK(kp_critical_enter(pool, token) == 0, "kp_critical_enter with the real token");
	kt_events_clear(pool);
	void *c = kp_alloc(pool, 256, KP_CRITICAL);
	CHECK(c != NULL, "KP_CRITICAL in a valid scope on a full primary got NULL");
	ev = kt_events_all(pool, &nev);
	/* In the critical state (entered with a backup_enter event when the
	 * primary failed) blocks are served without an event each, so that the
	 * failover path stays as fast as the primary; the counters show them. */
	char *js = kt_stats(pool);
	CHECK(kt_count_kind(ev, nev, KP_EV_BACKUP_ALLOC) == 1 ||
		      (kt_json_int(js, "backup.allocs", 0) >= 1 && kt_json_int(js, "backup.active", 0) == 1),
	      "no backup_alloc event, and the pool is not in the critical state");
	free(js);
	for (size_t i = 0; i < nev; i++)
		if (ev[i].kind == KP_EV_BACKUP_ALLOC)
			CHECK(ev[i].pool == KP_POOL_BACKUP, "backup_alloc event names pool %u", ev[i].pool);
	free(ev);
	CHECK(st(pool, "backup.in_use_bytes") >= 256, "backup.in_use_bytes = %lld",
	      (long long)st(pool, "backup.in_use_bytes"));
	CHECK(st(pool, "backup.allocs") == 1, "backup.allocs = %lld", (long long)st(pool, "backup.allocs"));
	CHECK(st(pool, "backup.active") == 1, "backup.active not true while serving");
	CHECK(st(pool, "backup.enters") >= 1, "backup.enters not counted");
	if (c != NULL) {
		CHECK(kp_usable_size(pool, c) >= 256, "usable size of a backup block");
		kt_fill(c, 256, 4);
	}
	/* in the scope, an ordinary request is still ordinary */
	p = kp_alloc(pool, 256, 0);
	CHECK(p == NULL, "ordinary alloc inside a scope reached the backup: %p", p);
	/* realloc of a backup block stays served (by the backup, the primary is full) */
	if (c != NULL) {
		void *c2 = kp_realloc(pool, c, 3000, KP_CRITICAL);
		CHECK(c2 != NULL, "kp_realloc of a backup block to 3000 in a scope");
		if (c2 != NULL) {
			CHECK(kt_verify_from(c2, c, 256, 4) == KT_OK, "realloc of a backup block lost contents");
			kt_fill(c2, 3000, 4);
			c = c2;
		}
	}
	/* the scope is per thread: another thread is refused */
	struct try_arg ta = {pool, NULL};
	pthread_t th;
	refusals = st(pool, "backup.refusals");
	REQUIRE(pthread_create(&th, NULL, try_critical, &ta) == 0, "pthread_create");
	pthread_join(th, NULL);
	CHECK(ta.got == NULL, "another thread without a scope was served by the backup");
	CHECK(st(pool, "backup.refusals") == refusals + 1, "the other thread's refusal not counted");

	/* scopes nest */
	CHECK(kp_critical_enter(pool, token) == 0, "nested enter");
	kp_critical_exit(pool);
	void *c3 = kp_alloc(pool, 512, KP_CRITICAL);
	CHECK(c3 != NULL, "still in the outer scope after an inner exit, but refused");
	kp_critical_exit(pool);
	p = kp_alloc(pool, 256, KP_CRITICAL);
	CHECK(p == NULL, "served after the last exit: %p", p);
	kt_events_clear(pool);
	kp_critical_exit(pool); /* unbalanced: an event, no harm */
	CHECK(kt_events_count(pool, KP_EV_TOKEN) == 1, "an unbalanced kp_critical_exit records an event");
	p = kp_alloc(pool, 256, KP_CRITICAL);
	CHECK(p == NULL, "an unbalanced exit opened a scope: %p", p);

	/* frees go back to the backup, at once */
	CHECK(c == NULL || kt_verify(c, 3000, 4) == KT_OK, "backup block corrupted");
	CHECK(kp_free(pool, c) == 0, "free of a backup block");
	CHECK(kp_free(pool, c3) == 0, "free of a backup block");
	CHECK(kp_free(pool, c) == KP_EDOUBLEFREE, "double free of a backup block");
	CHECK(st(pool, "backup.in_use_bytes") == 0, "backup.in_use_bytes = %lld after its frees",
	      (long long)st(pool, "backup.in_use_bytes"));
	CHECK(st(pool, "backup.frees") == st(pool, "backup.allocs"), "backup frees %lld != allocs %lld",
	      (long long)st(pool, "backup.frees"), (long long)st(pool, "backup.allocs"));
	CHECK(st(pool, "backup.peak_in_use_bytes") >= 3000, "backup.peak_in_use_bytes = %lld",
	      (long long)st(pool, "backup.peak_in_use_bytes"));

	/* ---- hysteresis ---- */
	REQUIRE(kp_critical_enter(pool, token) == 0, "enter");
	c = kp_alloc(pool, 256, KP_CRITICAL);
	CHECK(c != NULL, "critical alloc before the hysteresis steps");
	int64_t max_bytes = st(pool, "primary.max_bytes");
	CHECK(max_bytes == (int64_t)(4 * MiB), "primary.max_bytes = %lld", (long long)max_bytes);
	size_t i = 0;
	/* step 1: free one 64 KiB block: usage stays above critical_wm */
	kp_free(pool, f.p[i]);
	f.p[i++] = NULL;
	kp_thread_flush(pool);
	int64_t bk_allocs = st(pool, "backup.allocs");
	void *c4 = kp_alloc(pool, 256, KP_CRITICAL);
	CHECK(c4 != NULL, "critical alloc after the first free");
	CHECK(st(pool, "backup.allocs") == bk_allocs + 1, "critical traffic left the backup at the first free");
	CHECK(st(pool, "backup.active") == 1, "backup.active dropped at the first free");
	/* step 2: free down to ~75% (between recover_wm and critical_wm) */
	while (i < f.n && f.size[i] == 64 * KiB && st(pool, "primary.in_use_bytes") > max_bytes * 75 / 100) {
		kp_free(pool, f.p[i]);
		f.p[i++] = NULL;
		kp_thread_flush(pool);
	}
	int64_t use = st(pool, "primary.in_use_bytes");
	CHECK(use <= max_bytes * 75 / 100 && use > max_bytes * 65 / 100, "could not reach 75%% usage: %lld",
	      (long long)use);
	void *o = kp_alloc(pool, 4096, 0);
	CHECK(o != NULL, "ordinary alloc at 75%% usage got NULL");
	kp_free(pool, o);
	bk_allocs = st(pool, "backup.allocs");
	void *c5 = kp_alloc(pool, 256, KP_CRITICAL);
	CHECK(c5 != NULL, "critical alloc at 75%%");
	CHECK(st(pool, "backup.allocs") == bk_allocs + 1,
	      "critical traffic left the backup at 75%% usage, above recover_wm 60%%: no hysteresis");
	CHECK(st(pool, "backup.active") == 1, "backup.active dropped above recover_wm");
	/* step 3: free below recover_wm: traffic returns to the primary */
	while (i < f.n && st(pool, "primary.in_use_bytes") > max_bytes * 45 / 100) {
		kp_free(pool, f.p[i]);
		f.p[i++] = NULL;
		kp_thread_flush(pool);
	}
	kt_events_clear(pool);
	bk_allocs = st(pool, "backup.allocs");
	void *c6 = kp_alloc(pool, 256, KP_CRITICAL);
	CHECK(c6 != NULL, "critical alloc at 45%%");
	CHECK(st(pool, "backup.allocs") == bk_allocs, "critical traffic still on the backup below recover_wm");
	CHECK(st(pool, "backup.active") == 0, "backup.active still true below recover_wm");
	ev = kt_events_all(pool, &nev);
	int64_t leaves = st(pool, "backup.leaves");
	CHECK(kt_count_kind(ev, nev, KP_EV_BACKUP_LEAVE) == 1 || leaves >= 1,
	      "no backup_leave event when traffic returned");
	free(ev);
	CHECK(leaves >= 1, "backup.leaves not counted");
	kp_critical_exit(pool);
	/* blocks go back to the pool they came from, whoever frees them */
	CHECK(kp_free(pool, c) == 0 && kp_free(pool, c4) == 0 && kp_free(pool, c5) == 0 && kp_free(pool, c6) == 0,
	      "frees of critical blocks");
	CHECK(st(pool, "backup.in_use_bytes") == 0, "backup not empty at the end");
	size_t bad = 0;
	for (; i < f.n; i++) {
		bad += kt_verify(f.p[i], f.size[i], 3) != KT_OK;
		kp_free(pool, f.p[i]);
	}
	CHECK(bad == 0, "%zu primary blocks corrupted during the story", bad);
	kp_thread_flush(pool);
	CHECK(st(pool, "primary.in_use_bytes") == 0, "primary not empty at the end");
	kp_destroy(pool);
}

/* Exhaust the reserve itself: NULL with an oom event, never past its size;
 * then everything coalesces back (a large block fits again). */
static void test_backup_exhaustion(void)
{
	KT_POOL(pool, CONF);
	static struct filled f;
	f.n = 0;
	uint64_t token = kp_critical_token(pool);
	fill_primary(pool, &f);
	REQUIRE(kp_critical_enter(pool, token) == 0, "enter");
	void *blk[256];
	size_t n = 0, total = 0;
	while (n < 256) {
		blk[n] = kp_alloc(pool, 16 * KiB, KP_CRITICAL);
		if (blk[n] == NULL)
			break;
		kt_fill(blk[n], 16 * KiB, n);
		total += 16 * KiB;
		n++;
	}
	CHECK(n < 256, "the 1 MiB reserve served %zu blocks of 16 KiB", n);
	CHECK(total >= MiB / 2 && total <= MiB, "the 1 MiB reserve served %zu bytes", total);
	kt_events_clear(pool);
	CHECK(kp_alloc(pool, 16 * KiB, KP_CRITICAL) == NULL, "served past exhaustion");
	CHECK(kt_events_count(pool, KP_EV_OOM) >= 1, "no oom event when the reserve is exhausted");
	size_t bad = 0;
	for (size_t i = 0; i < n; i++) {
		bad += kt_verify(blk[i], 16 * KiB, i) != KT_OK;
		CHECK(kp_free(pool, blk[i]) == 0, "free of backup block %zu", i);
	}
	CHECK(bad == 0, "%zu backup blocks corrupted", bad);
	CHECK(st(pool, "backup.in_use_bytes") == 0, "backup.in_use_bytes after freeing all");
	void *big = kp_alloc(pool, MiB / 2, KP_CRITICAL);
	CHECK(big != NULL, "a 512 KiB critical block after freeing the reserve: fragmentation never healed");
	kp_free(pool, big);
	/* interior pointer into a backup block */
	void *b = kp_alloc(pool, 4096, KP_CRITICAL);
	CHECK(b != NULL, "critical alloc");
	if (b != NULL) {
		int rc = kp_free(pool, (char *)b + 16);
		CHECK(rc == KP_ENOTOURS || rc == KP_ECORRUPT, "interior free into a backup block: %d", rc);
		CHECK(kp_free(pool, b) == 0, "free of the backup block after an interior free");
	}
	kp_critical_exit(pool);
	for (size_t i = 0; i < f.n; i++)
		kp_free(pool, f.p[i]);
	kp_destroy(pool);
}

/* Tokens are per pool: pool A's token opens nothing on pool B. */
static void test_token_per_pool(void)
{
	KT_POOL(a, "primary_initial:4m,primary_max:4m,backup:1m,daemon:off");
	KT_POOL(b, "primary_initial:4m,primary_max:4m,backup:1m,daemon:off");
	uint64_t ta = kp_critical_token(a), tb = kp_critical_token(b);
	CHECK(ta != 0 && tb != 0 && ta != tb, "tokens %#llx %#llx", (unsigned long long)ta, (unsigned long long)tb);
	CHECK(kp_critical_enter(b, ta) == KP_EDENIED, "pool A's token opened a scope on pool B");
	CHECK(kp_critical_enter(a, ta) == 0, "own token");
	kp_critical_exit(a);
	kp_destroy(a);
	kp_destroy(b);
}

/* Guard pages: the mapping holding a backup block is read-write and both its
 * neighbours in /proc/self/maps are inaccessible (---p) and adjacent. */
static void test_guard_pages(void)
{
	KT_POOL(pool, CONF);
	static struct filled f;
	f.n = 0;
	uint64_t token = kp_critical_token(pool);
	fill_primary(pool, &f);
	REQUIRE(kp_critical_enter(pool, token) == 0, "enter");
	void *b = kp_alloc(pool, 256, KP_CRITICAL);
	REQUIRE(b != NULL, "critical alloc");
	FILE *maps = fopen("/proc/self/maps", "r");
	REQUIRE(maps != NULL, "open /proc/self/maps");
	char line[512];
	unsigned long lo[4096], hi[4096];
	char perm[4096][5];
	int n = 0, at = -1;
	while (n < 4096 && fgets(line, sizeof line, maps)) {
		if (sscanf(line, "%lx-%lx %4s", &lo[n], &hi[n], perm[n]) != 3)
			continue;
		if ((uintptr_t)b >= lo[n] && (uintptr_t)b < hi[n])
			at = n;
		n++;
	}
	fclose(maps);
	REQUIRE(at >= 0, "backup block %p not in /proc/self/maps", b);
	CHECK(perm[at][0] == 'r' && perm[at][1] == 'w', "backup mapping perms %s", perm[at]);
	int before = 0, after = 0;
	for (int i = 0; i < n; i++) {
		if (hi[i] == lo[at] && strncmp(perm[i], "---", 3) == 0)
			before = 1;
		if (lo[i] == hi[at] && strncmp(perm[i], "---", 3) == 0)
			after = 1;
	}
	CHECK(before, "no guard page right below the backup mapping %lx-%lx", lo[at], hi[at]);
	CHECK(after, "no guard page right above the backup mapping %lx-%lx", lo[at], hi[at]);
	CHECK(hi[at] - lo[at] <= 2 * MiB, "the backup mapping %lx-%lx is not fenced on its own (%lu bytes)", lo[at],
	      hi[at], hi[at] - lo[at]);
	kp_free(pool, b);
	kp_critical_exit(pool);
	for (size_t i = 0; i < f.n; i++)
		kp_free(pool, f.p[i]);
	kp_destroy(pool);
}

/* With the daemon on, a used and emptied backup is kept ready (refilled). */
static void test_backup_refill_daemon(void)
{
	KT_POOL(pool, "primary_initial:4m,primary_max:4m,backup:1m,daemon:on,daemon_interval_ms:20,"
		      "critical_wm:90,recover_wm:60,seed:2");
	static struct filled f;
	f.n = 0;
	uint64_t token = kp_critical_token(pool);
	fill_primary(pool, &f);
	REQUIRE(kp_critical_enter(pool, token) == 0, "enter");
	void *blk[32];
	int n = 0;
	for (; n < 32; n++)
		if ((blk[n] = kp_alloc(pool, 16 * KiB, KP_CRITICAL)) == NULL)
			break;
	CHECK(n == 32, "only %d critical blocks served", n);
	for (int i = 0; i < n; i++)
		kp_free(pool, blk[i]);
	kp_critical_exit(pool);
	CHECK(st(pool, "backup.in_use_bytes") == 0, "backup not empty");
	CHECK(st(pool, "daemon.running") == 1, "daemon not running");
	uint64_t t0 = kt_now_ms();
	while (st(pool, "daemon.backup_refills") == 0 && kt_now_ms() - t0 < 2000)
		kt_sleep_ms(10);
	CHECK(st(pool, "daemon.backup_refills") > 0, "the daemon never refilled the used backup");
	REQUIRE(kp_critical_enter(pool, token) == 0, "enter");
	void *big = kp_alloc(pool, MiB / 2, KP_CRITICAL);
	CHECK(big != NULL, "after a refill the reserve serves 512 KiB");
	kp_free(pool, big);
	kp_critical_exit(pool);
	for (size_t i = 0; i < f.n; i++)
		kp_free(pool, f.p[i]);
	kp_destroy(pool);
}

/* Fill the primary and enter a critical scope: what follows is served by the
 * backup. Undone by leave_and_destroy. */
static void enter_with_primary_full(kp_pool *pool, struct filled *f)
{
	f->n = 0;
	uint64_t token = kp_critical_token(pool);
	fill_primary(pool, f);
	REQUIRE(kp_critical_enter(pool, token) == 0, "enter");
}

static void leave_and_destroy(kp_pool *pool, struct filled *f)
{
	kp_critical_exit(pool);
	for (size_t i = 0; i < f->n; i++)
		kp_free(pool, f->p[i]);
	kp_destroy(pool);
}

/* A refill asks the kernel first (mincore): a reserve still resident is not
 * populated again; one whose page the kernel took back is. */
static void test_backup_refill_resident(void)
{
	KT_POOL(pool, CONF);
	static struct filled f;
	enter_with_primary_full(pool, &f);
	char *blk = kp_alloc(pool, 64 * KiB, KP_CRITICAL);
	REQUIRE(blk != NULL, "a critical block from the backup");
	CHECK(kp_free(pool, blk) == 0, "free");
	kp_daemon_step(pool, 0);
	int64_t refills = st(pool, "daemon.backup_refills"), madv = st(pool, "syscalls.daemon.madvise");
	CHECK(refills == 1, "%lld refills after the backup was used and emptied", (long long)refills);

	blk = kp_alloc(pool, 64 * KiB, KP_CRITICAL);
	REQUIRE(blk != NULL, "again");
	CHECK(kp_free(pool, blk) == 0, "free");
	kp_daemon_step(pool, 0);
	CHECK(st(pool, "daemon.backup_refills") == refills + 1, "the second use was not refilled");
	CHECK(st(pool, "syscalls.daemon.madvise") == madv, "a resident reserve was populated again");

	blk = kp_alloc(pool, 64 * KiB, KP_CRITICAL);
	REQUIRE(blk != NULL, "a third time");
	CHECK(kp_free(pool, blk) == 0, "free");
	/* what the kernel does to an idle page under memory pressure */
	REQUIRE(madvise((void *)((uintptr_t)blk & ~(uintptr_t)4095), 4096, MADV_DONTNEED) == 0, "madvise");
	kp_daemon_step(pool, 0);
	CHECK(st(pool, "syscalls.daemon.madvise") == madv + 1, "a page the kernel took back was not faulted in");
	leave_and_destroy(pool, &f);
}

/* prefault:off leaves the reserve to fault in on first use: it is not
 * populated at creation, and the daemon does not refill it after use;
 * prefault:on (the default) populates it at creation and refills it. */
static void test_backup_prefault_option(void)
{
	for (int on = 0; on < 2; on++) {
		char conf[256];
		snprintf(conf, sizeof conf, "%s,prefault:%s", CONF, on ? "on" : "off");
		/* no segment at creation: the only pages to pre-fault are the reserve's */
		char bare[128];
		snprintf(bare, sizeof bare, "primary_initial:0,backup:1m,daemon:off,prefault:%s", on ? "on" : "off");
		KT_POOL(fresh, bare);
		CHECK((st(fresh, "syscalls.setup.madvise") > 0) == on, "prefault:%s: %lld madvise calls at creation",
		      on ? "on" : "off", (long long)st(fresh, "syscalls.setup.madvise"));
		kp_destroy(fresh);

		KT_POOL(pool, conf);
		static struct filled f;
		enter_with_primary_full(pool, &f);
		char *blk = kp_alloc(pool, 64 * KiB, KP_CRITICAL);
		REQUIRE(blk != NULL, "a critical block from the backup");
		memset(blk, 7, 64 * KiB);
		CHECK(kp_free(pool, blk) == 0, "free");
		kp_daemon_step(pool, 0);
		CHECK(st(pool, "daemon.backup_refills") == on, "prefault:%s: %lld refills after the backup was used",
		      on ? "on" : "off", (long long)st(pool, "daemon.backup_refills"));
		leave_and_destroy(pool, &f);
	}
}

int main(void)
{
	RUN(test_backup_story);
	RUN(test_backup_exhaustion);
	RUN(test_token_per_pool);
	RUN(test_guard_pages);
	RUN(test_backup_refill_daemon);
	RUN(test_backup_refill_resident);
	RUN(test_backup_prefault_option);
	return ktest_summary();
}
