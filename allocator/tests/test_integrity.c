/*
 * test_integrity.c - every bad-input class is detected, reported with its own
 * event kind and return code, and contained: the pool keeps serving.
 *
 * Tests that write where the caller must not (past a block, into a freed
 * block, into a header) are skipped under ASan: there ASan itself reports the
 * write, which is what the allocator's poisoning is for (the fuzz variant).
 */
#define _GNU_SOURCE 1
/* Tests the inline block headers and their keys (integrity.c; layout:outline's checks: test_outline_integrity.c): every pool layout:inline (ktest.h, KT_LAYOUT_INLINE). */
#define KT_LAYOUT_INLINE 1
#include "ktest.h"

#include <fcntl.h>
#include <stdbool.h>
#include <pthread.h>

static const char *const CONF = "primary_initial:4m,backup:1m,daemon:off,seed:5";

/* The pool still serves: a round of allocations, filled and verified. */
static int still_works(kp_pool *pool)
{
	void *p[64];
	for (int i = 0; i < 64; i++) {
		p[i] = kp_alloc(pool, (size_t)(16 + 97 * i), 0);
		if (!p[i])
			return 0;
		kt_fill(p[i], (size_t)(16 + 97 * i), (uint64_t)i);
	}
	int ok = 1;
	for (int i = 0; i < 64; i++) {
		ok &= kt_verify(p[i], (size_t)(16 + 97 * i), (uint64_t)i) == KT_OK;
		ok &= kp_free(pool, p[i]) == 0;
	}
	return ok;
}

/* The event names the address (as 0x...) and, when there is one, the size. */
static void check_text(const kp_event *ev, const void *addr)
{
	char want[32];
	snprintf(want, sizeof want, "%p", addr);
	CHECK(strstr(ev->text, want) != NULL, "event text '%s' does not name %s", ev->text, want);
	CHECK(strstr(ev->text, "size") != NULL, "event text '%s' does not name the size", ev->text);
	CHECK(ev->addr == (uint64_t)(uintptr_t)addr, "event addr %#llx, want %p", (unsigned long long)ev->addr, addr);
}

static void test_double_free(void)
{
	kp_pool *pool = kp_create(CONF);
	REQUIRE(pool, "kp_create: %s", kp_last_error());
	void *p = kp_alloc(pool, 100, 0);
	CHECK(kp_free(pool, p) == 0, "first free");
	CHECK(kp_free(pool, p) == KP_EDOUBLEFREE, "second free is a double free");
	kp_event ev = kt_last_event(pool, KP_EV_DOUBLE_FREE);
	CHECK(ev.kind == KP_EV_DOUBLE_FREE, "no double_free event");
	check_text(&ev, p);
	CHECK(kt_stat(pool, "integrity.double_frees") == 1, "counter");
	CHECK(still_works(pool), "pool broken after a double free");
	kp_destroy(pool);
}

static int a_static;

static void test_foreign_pointers(void)
{
	kp_pool *pool = kp_create(CONF), *other = kp_create(CONF);
	REQUIRE(pool && other, "kp_create: %s", kp_last_error());
	int on_stack;
	char *mine = kp_alloc(pool, 256, 0), *theirs = kp_alloc(other, 256, 0);
	void *bad[] = {&on_stack, &a_static, mine + 16, mine + 8, theirs, (void *)(uintptr_t)0x1000};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		int rc = kp_free(pool, bad[i]);
		CHECK(rc == KP_ENOTOURS, "free of bad pointer %zu (%p): %d", i, bad[i], rc);
		kp_event ev = kt_last_event(pool, KP_EV_INVALID_FREE);
		CHECK(ev.kind == KP_EV_INVALID_FREE, "no invalid_free event for %p", bad[i]);
		check_text(&ev, bad[i]);
		CHECK(kp_usable_size(pool, bad[i]) == 0, "usable size of a foreign pointer");
	}
	CHECK(kp_free(pool, mine) == 0 && kp_free(other, theirs) == 0, "the real blocks still free");
	CHECK(still_works(pool), "pool broken after bad frees");
	kp_destroy(pool);
	kp_destroy(other);
}

static void test_overflow(void)
{
	if (KT_ASAN)
		return; /* ASan reports the write itself */
	kp_pool *pool = kp_create(CONF);
	REQUIRE(pool, "kp_create: %s", kp_last_error());
	size_t sizes[] = {1, 15, 16, 100, 4000, 100000, 300000};
	for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
		char *p = kp_alloc(pool, sizes[i], 0);
		REQUIRE(p, "alloc %zu", sizes[i]);
		memset(p, 'x', sizes[i] + 1); /* one byte too many */
		int rc = kp_free(pool, p);
		CHECK(rc == KP_EOVERFLOW, "free after a 1-byte overflow of %zu: %d", sizes[i], rc);
		kp_event ev = kt_last_event(pool, KP_EV_OVERFLOW);
		CHECK(ev.kind == KP_EV_OVERFLOW && ev.size == sizes[i], "overflow event for %zu", sizes[i]);
		check_text(&ev, p);
		/* contained: the block is quarantined, not freed twice, not reused */
		CHECK(kp_free(pool, p) != 0, "a quarantined block cannot be freed again");
	}
	CHECK(kt_stat(pool, "integrity.overflows") == 7, "overflow counter");
	CHECK(kt_stat(pool, "integrity.quarantined") >= 7, "quarantine counter");
	CHECK(still_works(pool), "pool broken after overflows");
	kp_destroy(pool);
}

/* An off-by-one write of a NUL or any ASCII byte is always caught, whatever
 * the block's key: the canary's first byte has its top bit set. (With a free
 * key byte, one write in 256 matched it: this test then failed nine runs in
 * ten, and test_overflow's single 'x' one run in forty.) */
static void test_off_by_one_ascii_always_caught(void)
{
	if (KT_ASAN)
		return; /* ASan reports the write itself */
	KT_POOL(pool, "primary_initial:4m,primary_max:256m,backup:0,daemon:off,tcache_bytes:0");
	static const size_t sizes[] = {24, 100, 1000, 5000, 100000};
	int missed = 0;
	for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++)
		for (int v = 0; v < 0x80; v++) {
			char *p = kp_alloc(pool, sizes[k], 0);
			REQUIRE(p, "alloc %zu", sizes[k]);
			p[sizes[k]] = (char)v;
			if (kp_free(pool, p) != KP_EOVERFLOW && missed++ < 5)
				CHECK(0, "a write of %#x one past %zu bytes went unseen", v, sizes[k]);
		}
	CHECK(missed == 0, "%d of %zu off-by-one writes unseen", missed, (sizeof sizes / sizeof sizes[0]) * 0x80);
	kp_events_drain(pool, NULL, 0);
	kp_destroy(pool);
}

/* The same for a block placed by kp_alloc_aligned, whose payload sits inside
 * a larger block: the canary follows the aligned payload (before, such a
 * block had none, and every one of these writes went unseen). */
static void test_off_by_one_aligned_caught(void)
{
	if (KT_ASAN)
		return; /* ASan reports the write itself */
	KT_POOL(pool, "primary_initial:4m,primary_max:256m,backup:0,daemon:off,tcache_bytes:0");
	static const size_t sizes[] = {0, 24, 1000, 100000};
	static const size_t aligns[] = {32, 64, 256, 4096};
	int missed = 0, n = 0;
	for (size_t a = 0; a < sizeof aligns / sizeof aligns[0]; a++)
		for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++)
			for (int v = 0; v < 0x80; v += 7, n++) {
				char *p = kp_alloc_aligned(pool, sizes[k], aligns[a], 0);
				REQUIRE(p && (uintptr_t)p % aligns[a] == 0, "aligned %zu/%zu", sizes[k], aligns[a]);
				CHECK(kp_usable_size(pool, p) >= sizes[k], "usable size");
				p[sizes[k]] = (char)v;
				if (kp_free(pool, p) != KP_EOVERFLOW && missed++ < 5)
					CHECK(0, "a write of %#x one past %zu bytes aligned to %zu went unseen", v,
					      sizes[k], aligns[a]);
			}
	CHECK(missed == 0, "%d of %d off-by-one writes past aligned blocks unseen", missed, n);
	/* and an aligned block written exactly to its end frees cleanly */
	for (size_t a = 0; a < sizeof aligns / sizeof aligns[0]; a++) {
		char *p = kp_alloc_aligned(pool, 1000, aligns[a], 0);
		REQUIRE(p, "aligned");
		memset(p, 0x7a, 1000);
		CHECK(kp_free(pool, p) == 0, "a clean aligned block of 1000 (align %zu) refused", aligns[a]);
	}
	kp_events_drain(pool, NULL, 0);
	kp_destroy(pool);
}

static void test_header_damage(void)
{
	if (KT_ASAN)
		return;
	kp_pool *pool = kp_create(CONF);
	REQUIRE(pool, "kp_create: %s", kp_last_error());
	char *p = kp_alloc(pool, 64, 0);
	p[-3] ^= 0x40; /* one bit in the header */
	CHECK(kp_free(pool, p) == KP_ECORRUPT, "free of a block with a damaged header");
	kp_event ev = kt_last_event(pool, KP_EV_CORRUPTION);
	CHECK(ev.kind == KP_EV_CORRUPTION, "corruption event");
	check_text(&ev, p);
	CHECK(kp_usable_size(pool, p) == 0, "usable size does not trust a damaged header");
	CHECK(kp_realloc(pool, p, 128, 0) == NULL, "realloc does not trust a damaged header");
	CHECK(still_works(pool), "pool broken after header damage");
	kp_destroy(pool);
}

static void test_use_after_free(void)
{
	if (KT_ASAN)
		return;
	kp_pool *pool = kp_create("primary_initial:4m,daemon:off,poison:on,seed:5");
	REQUIRE(pool, "kp_create: %s", kp_last_error());
	char *p = kp_alloc(pool, 200, 0);
	CHECK(kp_free(pool, p) == 0, "free");
	p[100] = 7; /* a write after free */
	/* The block is at the head of this thread's cache: the next allocations
	 * of its class find the damage and set the block aside. */
	void *q[4];
	for (int i = 0; i < 4; i++) {
		q[i] = kp_alloc(pool, 200, 0);
		CHECK(q[i] != NULL && q[i] != p, "allocation %d after a write after free: %p", i, q[i]);
	}
	kp_event ev = kt_last_event(pool, KP_EV_USE_AFTER_FREE);
	CHECK(ev.kind == KP_EV_USE_AFTER_FREE, "use_after_free event");
	check_text(&ev, p);
	CHECK(kt_stat(pool, "integrity.use_after_frees") == 1, "counter");
	for (int i = 0; i < 4; i++)
		kp_free(pool, q[i]);
	CHECK(still_works(pool), "pool broken after a write after free");
	kp_destroy(pool);
}

static void test_freelist_damage(void)
{
	const char *what[] = {"corrupt@freelist", "corrupt@header"};
	for (int w = 0; w < 2; w++) {
		kp_pool *pool = kp_create(CONF);
		REQUIRE(pool, "kp_create: %s", kp_last_error());
		void *p[8];
		for (int i = 0; i < 8; i++)
			p[i] = kp_alloc(pool, 48, 0);
		for (int i = 0; i < 8; i++)
			kp_free(pool, p[i]);
		CHECK(kp_fault_inject(pool, what[w]) == 0, "%s: %s", what[w], kp_last_error());
		for (int i = 0; i < 8; i++) {
			p[i] = kp_alloc(pool, 48, 0);
			CHECK(p[i] != NULL, "%s: allocation %d", what[w], i);
			if (p[i])
				kt_fill(p[i], 48, 1);
		}
		CHECK(kt_stat(pool, "integrity.freelist_errors") == 1, "%s: freelist error counted", what[w]);
		CHECK(kt_events_count(pool, KP_EV_FAULT_INJECTED) == 0 || 1, "drained");
		for (int i = 0; i < 8; i++)
			CHECK(kp_free(pool, p[i]) == 0, "%s: free %d", what[w], i);
		CHECK(still_works(pool), "%s: pool broken", what[w]);
		kp_destroy(pool);
	}
}

static void test_span_quarantine(void)
{
	kp_pool *pool = kp_create(CONF);
	REQUIRE(pool, "kp_create: %s", kp_last_error());
	void *p = kp_alloc(pool, 1000, 0);
	CHECK(kp_fault_inject(pool, "corrupt@span") == 0, "corrupt@span: %s", kp_last_error());
	CHECK(kt_events_count(pool, KP_EV_QUARANTINE) == 1, "quarantine event");
	CHECK(kp_free(pool, p) == 0, "a live block of a quarantined span still frees");
	CHECK(still_works(pool), "pool broken after a span quarantine");
	kp_destroy(pool);
}

static void test_fault_spec_errors(void)
{
	kp_pool *pool = kp_create(CONF);
	REQUIRE(pool, "kp_create: %s", kp_last_error());
	const char *bad[] = {"mmap", "mmap@nth=0", "bogus@nth=1", "mmap@p=2", "mmap@every=x", "corrupt@disk"};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		CHECK(kp_fault_inject(pool, bad[i]) == KP_EINVAL, "spec '%s' accepted", bad[i]);
		CHECK(strstr(kp_last_error(), bad[i]) != NULL || strstr(kp_last_error(), "mode") != NULL,
		      "error '%s' does not name '%s'", kp_last_error(), bad[i]);
	}
	CHECK(kp_create("faults:mmap@sometimes") == NULL && strstr(kp_last_error(), "faults"),
	      "a bad faults option is refused at create: %s", kp_last_error());
	kp_destroy(pool);
}

/* Every mmap fails: the primary cannot grow, ordinary requests get NULL and
 * events, a privileged critical request is served by the backup at once. */
static void test_os_failure_failover(void)
{
	kp_pool *pool = kp_create("primary_initial:4m,primary_max:64m,backup:1m,daemon:off,seed:5");
	REQUIRE(pool, "kp_create: %s", kp_last_error());
	uint64_t token = kp_critical_token(pool);
	CHECK(kp_fault_inject(pool, "mmap@every=1") == 0, "inject: %s", kp_last_error());
	void *p[200];
	int n = 0;
	while (n < 200 && (p[n] = kp_alloc(pool, 60000, 0)) != NULL)
		n++;
	CHECK(n > 0 && n < 200, "the primary filled up (%d blocks)", n);
	CHECK(kt_events_count(pool, KP_EV_FAULT_INJECTED) >= 1, "fault_injected events");
	CHECK(kp_alloc(pool, 60000, KP_CRITICAL) == NULL, "critical without scope refused");
	REQUIRE(kp_critical_enter(pool, token) == 0, "enter");
	void *c = kp_alloc(pool, 60000, KP_CRITICAL);
	CHECK(c != NULL, "critical caller served by the backup during an OS failure");
	CHECK(kt_stat(pool, "backup.in_use_bytes") > 0, "backup in use");
	kp_critical_exit(pool);
	kp_free(pool, c);
	CHECK(kp_fault_inject(pool, "mmap@off") == 0, "off");
	void *q = kp_alloc(pool, 60000, 0);
	CHECK(q != NULL, "the primary grows again once the OS recovers");
	kp_free(pool, q);
	for (int i = 0; i < n; i++)
		kp_free(pool, p[i]);
	kp_destroy(pool);
}

/* wait_ms: an ordinary request at primary_max waits for the daemon while
 * another thread frees; without wait_ms it fails at once. */
struct freer {
	kp_pool *pool;
	void **p;
	int n;
};
static void *free_later(void *arg)
{
	struct freer *f = arg;
	kt_sleep_ms(50);
	for (int i = 0; i < f->n; i++)
		kp_free(f->pool, f->p[i]);
	kp_thread_flush(f->pool);
	return NULL;
}

static void test_wait_for_daemon(void)
{
	kp_pool *pool = kp_create("primary_initial:4m,primary_max:4m,backup:0,low_wm:0,high_wm:0,wait_ms:2000,"
				  "daemon_interval_ms:20,seed:5");
	REQUIRE(pool, "kp_create: %s", kp_last_error());
	static void *p[100];
	int n = 0;
	/* fill with KP_CRITICAL outside a scope: served as ordinary, and when the
	 * primary is full refused at once (only ordinary requests wait) */
	while (n < 100 && (p[n] = kp_alloc(pool, 200000, KP_CRITICAL)) != NULL)
		n++;
	CHECK(n > 5 && kt_stat(pool, "faults.waits") == 0, "filled with %d blocks, no wait", n);
	struct freer f = {pool, p, n};
	pthread_t t;
	pthread_create(&t, NULL, free_later, &f);
	uint64_t t0 = kt_now_ms();
	void *q = kp_alloc(pool, 200000, 0);
	uint64_t waited = kt_now_ms() - t0;
	pthread_join(t, NULL);
	CHECK(q != NULL, "served after waiting %llu ms", (unsigned long long)waited);
	CHECK(waited >= 30 && waited < 2000, "waited %llu ms", (unsigned long long)waited);
	CHECK(kt_stat(pool, "faults.waits") == 1 && kt_stat(pool, "faults.wait_successes") == 1,
	      "wait and its success counted");
	kp_free(pool, q);
	kp_destroy(pool);
}

static void test_abort_on_corruption(void)
{
	pid_t pid = fork();
	if (pid == 0) {
		kp_pool *pool = kp_create("abort_on_corruption:on,daemon:off");
		void *p = kp_alloc(pool, 10, 0);
		kp_free(pool, p);
		kp_free(pool, p);
		_exit(0);
	}
	int st = 0;
	waitpid(pid, &st, 0);
	CHECK(WIFSIGNALED(st) && WTERMSIG(st) == SIGABRT, "abort_on_corruption aborts (status %#x)", st);
}

static void test_backup_guard_pages(void)
{
	kp_pool *pool = kp_create("primary_initial:4m,primary_max:4m,backup:64k,daemon:off,critical_wm:1,recover_wm:0");
	REQUIRE(pool, "kp_create: %s", kp_last_error());
	uint64_t token = kp_critical_token(pool);
	/* critical_wm:1: the first ordinary block puts the pool in the critical
	 * state, so the first critical block is the backup's first granule. */
	void *ordinary = kp_alloc(pool, 100000, 0);
	kp_critical_enter(pool, token);
	/* 60 KiB: the whole 64 KiB reserve once the block's canary is added. */
	void *first = kp_alloc(pool, 60 * 1024, KP_CRITICAL);
	kp_critical_exit(pool);
	REQUIRE(first != NULL && kt_stat(pool, "backup.in_use_bytes") == 64 * 1024, "backup block");
	for (int side = 0; side < 2; side++) {
		pid_t pid = fork();
		if (pid == 0) {
			volatile char *g = side ? (char *)first + 64 * 1024 : (char *)first - 1;
			*g = 1;
			_exit(0);
		}
		int st = 0;
		waitpid(pid, &st, 0);
		/* a sanitizer's own SEGV handler turns the signal into an exit code */
		bool hit = (WIFSIGNALED(st) && WTERMSIG(st) == SIGSEGV) ||
			   (KT_SANITIZED && WIFEXITED(st) && WEXITSTATUS(st) != 0);
		CHECK(hit, "guard page %s the backup (status %#x)", side ? "after" : "before", st);
	}
	kp_free(pool, first);
	kp_free(pool, ordinary);
	kp_destroy(pool);
}

/* log_fd: one line per event, rate-limited: a storm of 5000 double frees
 * costs at most log_rate writes, and the next second says how many were
 * suppressed. */
static void test_event_log(void)
{
	int fds[2];
	REQUIRE(pipe(fds) == 0, "pipe");
	fcntl(fds[0], F_SETFL, O_NONBLOCK);
	fcntl(fds[1], F_SETPIPE_SZ, 1 << 20);
	char conf[128];
	snprintf(conf, sizeof conf, "daemon:off,log_fd:%d,log_rate:50", fds[1]);
	kp_pool *pool = kp_create(conf);
	REQUIRE(pool, "kp_create: %s", kp_last_error());
	void *p = kp_alloc(pool, 10, 0);
	kp_free(pool, p);
	int64_t writes0 = kt_stat(pool, "syscalls.alloc.other");
	uint64_t t0 = kt_now_ns();
	for (int i = 0; i < 5000; i++)
		kp_free(pool, p);
	/* The limit is per second: a storm that crosses a second boundary (a
	 * slow sanitizer run on a loaded machine takes most of a second) may
	 * write log_rate lines in each second it touches, plus one suppressed
	 * count per new second. */
	int64_t windows = (int64_t)((kt_now_ns() - t0) / 1000000000u) + 2;
	int64_t writes = kt_stat(pool, "syscalls.alloc.other") - writes0;
	CHECK(writes <= 51 * windows, "a storm of 5000 double frees made %lld writes in %lld rate windows",
	      (long long)writes, (long long)windows);
	kt_sleep_ms(1100);
	kp_free(pool, p); /* a new second: the suppressed count comes first */
	static char buf[1 << 20];
	ssize_t n = read(fds[0], buf, sizeof buf - 1);
	REQUIRE(n > 0, "log lines read");
	buf[n] = 0;
	CHECK(strstr(buf, "double_free 0x") != NULL, "a double_free line: %.200s", buf);
	CHECK(strstr(buf, "suppressed") != NULL, "a suppressed line");
	int lines = 0;
	for (char *c = buf; *c; c++)
		lines += *c == '\n';
	CHECK(lines >= 50 && lines <= 51 * windows + 9, "%d lines logged in %lld rate windows", lines,
	      (long long)windows);
	kp_destroy(pool);
	close(fds[0]);
	close(fds[1]);
}

/* In an ASan build the pool tells ASan what is poisoned: a write to a freed
 * block, past a block, or into a header is ASan's report, not silence. */
static void test_asan_sees_inside(void)
{
	if (!KT_ASAN)
		return;
	const char *want[] = {"use-after-poison", "use-after-poison", "use-after-poison"};
	for (int k = 0; k < 3; k++) {
		int fds[2];
		REQUIRE(pipe(fds) == 0, "pipe");
		pid_t pid = fork();
		if (pid == 0) {
			dup2(fds[1], 2);
			kp_pool *pool = kp_create("daemon:off");
			volatile char *p = kp_alloc(pool, 100, 0);
			if (k == 0) {
				kp_free(pool, (void *)p);
				p[10] = 1; /* after free */
			} else if (k == 1) {
				p[100] = 1; /* one past the end */
			} else {
				p[-8] = 1; /* the header */
			}
			_exit(0);
		}
		close(fds[1]);
		static char buf[65536];
		size_t n = 0;
		ssize_t r;
		while (n < sizeof buf - 1 && (r = read(fds[0], buf + n, sizeof buf - 1 - n)) > 0)
			n += (size_t)r;
		buf[n] = 0;
		close(fds[0]);
		int st = 0;
		waitpid(pid, &st, 0);
		CHECK(!(WIFEXITED(st) && WEXITSTATUS(st) == 0), "case %d: the bad write went unnoticed", k);
		CHECK(strstr(buf, want[k]) != NULL, "case %d: no ASan %s report: %.300s", k, want[k], buf);
	}
}

/* A block aligned 16 bytes into its enclosing block: the enclosing block's
 * free-list link lands on the redirect header, yet a second free is still a
 * double free (it was reported as a foreign pointer). */
static void test_aligned_double_free(void)
{
	kp_pool *pool = kp_create(CONF);
	REQUIRE(pool, "kp_create: %s", kp_last_error());
	int doubles = 0, tried = 0;
	for (size_t align = 32; align <= 4096; align *= 2) {
		for (size_t size = 1; size < 5000; size = size * 3 + 1) {
			void *p = kp_alloc_aligned(pool, size, align, 0);
			REQUIRE(p, "aligned %zu/%zu", size, align);
			CHECK(kp_free(pool, p) == 0, "free");
			int rc = kp_free(pool, p);
			CHECK(rc == KP_EDOUBLEFREE, "second free of aligned %zu/%zu: %d", size, align, rc);
			doubles += rc == KP_EDOUBLEFREE;
			tried++;
		}
	}
	CHECK(kt_stat(pool, "integrity.double_frees") == doubles && doubles == tried, "%d of %d", doubles, tried);
	CHECK(still_works(pool), "pool broken after aligned double frees");
	kp_destroy(pool);
}

/* The OS refuses to unmap a free segment: the pool keeps it (it was leaked). */
static void test_refused_munmap_keeps_the_segment(void)
{
	kp_pool *pool = kp_create("primary_initial:4m,high_wm:0,low_wm:0,decay_ms:0,daemon:off,seed:5");
	REQUIRE(pool, "kp_create: %s", kp_last_error());
	void *p[64];
	for (int i = 0; i < 64; i++)
		p[i] = kp_alloc(pool, 200000, 0); /* grows past the initial segment */
	for (int i = 0; i < 64; i++)
		kp_free(pool, p[i]);
	kp_thread_flush(pool);
	int64_t cap = kt_stat(pool, "primary.capacity_bytes");
	CHECK(cap > 4 << 20, "grew to %lld", (long long)cap);
	CHECK(kp_fault_inject(pool, "munmap@every=1") == 0, "inject");
	kp_daemon_step(pool, 10);
	CHECK(kt_stat(pool, "primary.capacity_bytes") == cap, "capacity %lld after refused unmaps (was %lld)",
	      (long long)kt_stat(pool, "primary.capacity_bytes"), (long long)cap);
	CHECK(kt_events_count(pool, KP_EV_OS_FAIL) >= 1, "os_fail events");
	kp_fault_inject(pool, "munmap@off");
	kp_daemon_step(pool, 10);
	CHECK(kt_stat(pool, "primary.capacity_bytes") == 4 << 20, "shrinks once the OS agrees: %lld",
	      (long long)kt_stat(pool, "primary.capacity_bytes"));
	CHECK(still_works(pool), "pool broken after refused unmaps");
	kp_destroy(pool);
}

/* KP_ZERO on a huge block (a fresh mapping, not written again) and on a
 * reused large one. */
static void test_zero_huge_and_large(void)
{
	kp_pool *pool = kp_create(CONF);
	REQUIRE(pool, "kp_create: %s", kp_last_error());
	for (int round = 0; round < 2; round++) {
		size_t sizes[] = {300000, 10u << 20};
		for (int k = 0; k < 2; k++) {
			unsigned char *p = kp_alloc(pool, sizes[k], KP_ZERO);
			REQUIRE(p, "alloc %zu", sizes[k]);
			size_t bad = 0;
			for (size_t i = 0; i < sizes[k]; i += 511)
				bad += p[i] != 0;
			CHECK(bad == 0 && p[sizes[k] - 1] == 0, "KP_ZERO block of %zu has %zu non-zero bytes", sizes[k],
			      bad);
			memset(p, 0xee, sizes[k]);
			kp_free(pool, p);
		}
	}
	kp_destroy(pool);
}

int main(void)
{
	RUN(test_aligned_double_free);
	RUN(test_refused_munmap_keeps_the_segment);
	RUN(test_zero_huge_and_large);
	RUN(test_asan_sees_inside);
	RUN(test_double_free);
	RUN(test_foreign_pointers);
	RUN(test_overflow);
	RUN(test_off_by_one_ascii_always_caught);
	RUN(test_off_by_one_aligned_caught);
	RUN(test_header_damage);
	RUN(test_use_after_free);
	RUN(test_freelist_damage);
	RUN(test_span_quarantine);
	RUN(test_fault_spec_errors);
	RUN(test_os_failure_failover);
	RUN(test_wait_for_daemon);
	RUN(test_abort_on_corruption);
	RUN(test_backup_guard_pages);
	RUN(test_event_log);
	return ktest_summary();
}
