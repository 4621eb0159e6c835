/*
 * test_create_libc.c - the C library code that making a pool runs. A page of
 * libc's text that a program touches costs it the whole 64 KiB window the
 * kernel maps around a fault (fault-around), so a function that nothing else
 * in a small program calls, called once by kp_create, is up to 64 KiB of its
 * peak RSS (issue 14's memory target): strcspn (libc's SSE4.2 version, in a
 * window of string code a program rarely runs) cost small_objects under the
 * preload 7-12 pages of libc, and was called only to find the end of a line
 * of /proc/self/cgroup. Likewise sysconf (its jump table is a window of
 * libc's read-only data), strcasecmp and strtoull (the option defaults are
 * parsed at every kp_create) and snprintf (a cgroup path, and an empty
 * kp_last_error), and open (the files that say how much memory the machine
 * and the cgroup allow). And clock_gettime, a wrapper of the vDSO's function
 * in libc's window of time functions, which the pool's clock called from
 * kp_create on: 16 pages of libc's text in small_objects' peak RSS. The
 * daemon's timed wait read CLOCK_REALTIME with that wrapper on every pass,
 * and kpool's yield (its spin locks) and kp_create's address-space limit
 * called sched_yield and getrlimit, in libc's window of file-system calls
 * (s35: bench-prodcons under the preload, setarch -R, 32 pages of libc's
 * text more than under glibc's malloc, these two windows). This
 * file defines those functions, which the test's copy of libkpool then calls
 * instead of libc's, counts the calls and passes them on to the C library.
 */
#define _GNU_SOURCE 1
#include "internal.h"
#include "ktest.h"

#include <dlfcn.h>
#include <fcntl.h>
#include <string.h>

#include <sched.h>
#include <sys/resource.h>

static unsigned strcspn_calls, sysconf_calls, strcasecmp_calls, strtoull_calls, printf_calls, open_calls, clock_calls;
static unsigned yield_calls, rlimit_calls;

size_t strcspn(const char *s, const char *reject)
{
	strcspn_calls++;
	size_t n = 0;
	while (s[n] && !strchr(reject, s[n]))
		n++;
	return n;
}

/* The next definition of name (libc's, or a sanitizer's interceptor). */
static void *next(const char *name)
{
	void *f = dlsym(RTLD_NEXT, name);
	if (!f)
		abort();
	return f;
}

long sysconf(int name)
{
	sysconf_calls++;
	return ((long (*)(int))next("sysconf"))(name);
}

int strcasecmp(const char *a, const char *b)
{
	strcasecmp_calls++;
	return ((int (*)(const char *, const char *))next("strcasecmp"))(a, b);
}

unsigned long long strtoull(const char *s, char **end, int base)
{
	strtoull_calls++;
	return ((unsigned long long (*)(const char *, char **, int))next("strtoull"))(s, end, base);
}

int open(const char *path, int flags, ...)
{
	open_calls++;
	va_list ap;
	va_start(ap, flags);
	int mode = flags & O_CREAT ? va_arg(ap, int) : 0;
	va_end(ap);
	return ((int (*)(const char *, int, ...))next("open"))(path, flags, mode);
}

int clock_gettime(clockid_t id, struct timespec *ts)
{
	clock_calls++;
	return ((int (*)(clockid_t, struct timespec *))next("clock_gettime"))(id, ts);
}

int sched_yield(void)
{
	yield_calls++;
	return ((int (*)(void))next("sched_yield"))();
}

int getrlimit(__rlimit_resource_t res, struct rlimit *rl)
{
	rlimit_calls++;
	return ((int (*)(__rlimit_resource_t, struct rlimit *))next("getrlimit"))(res, rl);
}

int vsnprintf(char *buf, size_t len, const char *fmt, va_list ap)
{
	printf_calls++;
	return ((int (*)(char *, size_t, const char *, va_list))next("vsnprintf"))(buf, len, fmt, ap);
}

int snprintf(char *buf, size_t len, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(buf, len, fmt, ap);
	va_end(ap);
	return n;
}

static void test_create_calls_no_strcspn(void)
{
	strcspn_calls = 0;
	kp_pool *pool = kp_create("daemon:off");
	REQUIRE(pool, "kp_create: %s", kp_last_error());
	void *p = kp_alloc(pool, 100, 0);
	CHECK(p != NULL, "alloc");
	kp_free(pool, p);
	CHECK(strcspn_calls == 0, "kp_create called strcspn %u times", strcspn_calls);
	kp_destroy(pool);
	/* the definition above is the one the library calls (else the check
	 * above could not fail): a fault spec is split with it */
	pool = kp_create("daemon:off,faults:mmap@nth=1000000");
	REQUIRE(pool, "kp_create: %s", kp_last_error());
	CHECK(strcspn_calls > 0, "strcspn here is not the library's");
	kp_destroy(pool);
}

/* The default pool (primary_max 0: the machine's memory, the cgroup's
 * limit) with a conf of each kind of value: no sysconf, strcasecmp,
 * strtoull or printf family, and the values still parsed. */
static void test_create_calls_none_of_the_rare_windows(void)
{
	sysconf_calls = strcasecmp_calls = strtoull_calls = printf_calls = open_calls = rlimit_calls = 0;
	kp_pool *pool = kp_create("daemon:OFF,checks:True,decay_ms:250,backup:1MiB,high_wm:auto");
	REQUIRE(pool, "kp_create: %s", kp_last_error());
	void *p = kp_alloc(pool, 100, 0);
	CHECK(p != NULL, "alloc");
	kp_free(pool, p);
	CHECK(sysconf_calls == 0, "kp_create called sysconf %u times", sysconf_calls);
	CHECK(strcasecmp_calls == 0, "kp_create called strcasecmp %u times", strcasecmp_calls);
	CHECK(strtoull_calls == 0, "kp_create called strtoull %u times", strtoull_calls);
	CHECK(printf_calls == 0, "kp_create called the printf family %u times", printf_calls);
	CHECK(open_calls == 0, "kp_create called open %u times", open_calls);
	CHECK(rlimit_calls == 0, "kp_create called getrlimit %u times", rlimit_calls);
	CHECK(kt_stat(pool, "backup.capacity_bytes") == 1 << 20, "backup:1MiB parsed: %lld",
	      (long long)kt_stat(pool, "backup.capacity_bytes"));
	CHECK(kt_stat(pool, "daemon.running") == 0, "daemon:OFF parsed");
	kp_destroy(pool);
	/* the library calls the definitions above: a bad value's message is
	 * formatted with vsnprintf */
	CHECK(kp_create("decay_ms:x") == NULL, "a bad value is refused");
	CHECK(printf_calls > 0, "vsnprintf here is not the library's");
	/* and open: a log file is opened with it */
	char log[] = "/tmp/kpool-create-libc-XXXXXX";
	int fd = mkstemp(log);
	REQUIRE(fd >= 0, "mkstemp");
	close(fd);
	setenv("KPOOL_LOG", log, 1);
	pool = kp_create("daemon:off");
	unsetenv("KPOOL_LOG");
	CHECK(pool != NULL, "kp_create with KPOOL_LOG=%s: %s", log, kp_last_error());
	CHECK(open_calls > 0, "open here is not the library's");
	if (pool)
		kp_destroy(pool);
	unlink(log);
	/* values past 64 bits are refused, as strtoull's ERANGE refused them */
	CHECK(kp_create("decay_ms:18446744073709551616") == NULL, "2^64 is refused");
	CHECK(kp_create("backup:17179869184g") == NULL, "2^64 bytes are refused");
}

/* A pool's life in a small program (made, a few thousand blocks of a dozen
 * classes, a daemon pass, events, stats) reads the clock without libc's
 * clock_gettime, and the clock it reads is CLOCK_MONOTONIC's. On main
 * before the vDSO was called directly: 34 calls here. */
static void test_the_clock_calls_no_libc_clock_gettime(void)
{
	clock_calls = 0;
	kp_pool *pool = kp_create("daemon:off");
	REQUIRE(pool, "kp_create: %s", kp_last_error());
	static void *p[4000];
	for (unsigned i = 0; i < 4000; i++)
		p[i] = kp_alloc(pool, 16 + i % 12 * 40, 0);
	for (unsigned i = 0; i < 4000; i++)
		kp_free(pool, p[i]);
	CHECK(kp_daemon_step(pool, 10) >= 0, "a pass");
	kp_free(pool, (void *)8); /* an event, stamped with the clock */
	char buf[8192];
	CHECK(kp_stats_json(pool, buf, sizeof buf) > 0, "stats");
	kp_destroy(pool);
	CHECK(clock_calls == 0, "the pool called libc's clock_gettime %u times", clock_calls);
	int (*libc_clock)(clockid_t, struct timespec *) = (int (*)(clockid_t, struct timespec *))next("clock_gettime");
	struct timespec ts;
	uint64_t before = kp__now_ns();
	CHECK(libc_clock(CLOCK_MONOTONIC, &ts) == 0, "clock_gettime");
	uint64_t mono = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec, after = kp__now_ns();
	CHECK(before <= mono && mono <= after, "kp__now_ns %llu, %llu around CLOCK_MONOTONIC's %llu",
	      (unsigned long long)before, (unsigned long long)after, (unsigned long long)mono);
}

/* The daemon's passes (its timed wait's deadline, CLOCK_REALTIME) and
 * kpool's yield: none of libc's clock_gettime, sched_yield or getrlimit
 * (s34's main: the daemon called clock_gettime on every pass, the yield
 * sched_yield each time). The limit and the deadline still right: the
 * address-space limit read as getrlimit gives it, and the daemon's passes
 * paced by its interval. */
static void test_the_daemon_and_the_yield_call_no_rare_window(void)
{
	clock_calls = yield_calls = rlimit_calls = 0;
	kp_pool *pool = kp_create("daemon_interval_ms:1");
	REQUIRE(pool, "kp_create: %s", kp_last_error());
	void *p = kp_alloc(pool, 100, 0);
	CHECK(p != NULL, "alloc");
	uint64_t t0 = kp__now_ns();
	while (kt_stat(pool, "daemon.passes") < 5 && kp__now_ns() - t0 < 5000000000ull)
		kt_sleep_ms(2);
	long long passes = kt_stat(pool, "daemon.passes");
	kp__os_yield(&pool->os);
	kp_free(pool, p);
	kp_destroy(pool);
	CHECK(passes >= 5, "the daemon made %lld passes", passes);
	CHECK(clock_calls == 0, "the daemon called libc's clock_gettime %u times in %lld passes", clock_calls, passes);
	CHECK(yield_calls == 0, "kp__os_yield called libc's sched_yield %u times", yield_calls);
	struct rlimit rl;
	REQUIRE(((int (*)(__rlimit_resource_t, struct rlimit *))next("getrlimit"))(RLIMIT_AS, &rl) == 0, "getrlimit");
	size_t want = rl.rlim_cur == RLIM_INFINITY ? SIZE_MAX : (size_t)rl.rlim_cur;
	CHECK(kp__os_as_limit() == want, "kp__os_as_limit %zu, getrlimit's %zu", kp__os_as_limit(), want);
}

int main(void)
{
	RUN(test_the_daemon_and_the_yield_call_no_rare_window);
	RUN(test_the_clock_calls_no_libc_clock_gettime);
	RUN(test_create_calls_no_strcspn);
	RUN(test_create_calls_none_of_the_rare_windows);
	return ktest_summary();
}
