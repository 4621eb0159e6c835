/*
 * ktest.h - the tiny test framework of the libkpool C tests.
 *
 * One header, no library. A test file includes it, defines its tests as
 * static functions and ends with:
 *
 *     int main(void) { RUN(test_a); RUN(test_b); return ktest_summary(); }
 *
 * CHECK(cond, fmt, ...)  records a pass or a failure; a failure prints
 *                        "file:line: CHECK(cond) failed: <message>" to stderr
 *                        and the test goes on.
 * REQUIRE(cond, fmt, ...) as CHECK, but returns from the calling test
 *                        function on failure (use it where going on would
 *                        dereference NULL).
 * RUN(fn)                runs one test function in a child process (see
 *                        ktest_run_) and prints its name, result and time.
 * ktest_summary()        prints "<binary>: N passed, M failed" and returns
 *                        the exit code (0 only when nothing failed).
 *
 * CHECK may be used from any thread: the counters are atomic. In a hot loop,
 * count errors locally and CHECK once at the end, so a million operations do
 * not print a million lines.
 *
 * The second half reads the pool through its public observation API only:
 * kt_stat(pool, "primary.allocs") walks kp_stats_json's object by a dotted key
 * path, and kt_events_count() drains the event ring and counts one kind.
 */
#ifndef KTEST_H
#define KTEST_H

/* KT_ASAN: 1 in an AddressSanitizer build (tests that ASan would stop
 * before the pool sees the damage skip themselves; others check what the
 * pool poisoned), else 0. */
#if defined(__SANITIZE_ADDRESS__)
#define KT_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define KT_ASAN 1
#endif
#endif
#ifndef KT_ASAN
#define KT_ASAN 0
#endif
#if KT_ASAN
#include <sanitizer/asan_interface.h>
#endif

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "kpool.h"

/* ---- sanitizers -------------------------------------------------------- */

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define KT_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define KT_SANITIZED 1
#endif
#endif
#ifndef KT_SANITIZED
#define KT_SANITIZED 0
#endif

#if defined(__SANITIZE_THREAD__)
#define KT_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define KT_TSAN 1
#endif
#endif
#ifndef KT_TSAN
#define KT_TSAN 0
#endif

/* ---- checks and the summary -------------------------------------------- */

static unsigned long ktest_passed_, ktest_failed_;

static inline void ktest_fail_(const char *file, int line, const char *expr, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static inline void ktest_fail_(const char *file, int line, const char *expr, const char *fmt, ...)
{
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	__atomic_fetch_add(&ktest_failed_, 1, __ATOMIC_RELAXED);
	fprintf(stderr, "%s:%d: CHECK(%s) failed: %s\n", file, line, expr, msg);
	fflush(stderr);
}

#define CHECK(cond, ...)                                                         \
	do {                                                                     \
		if (cond)                                                        \
			__atomic_fetch_add(&ktest_passed_, 1, __ATOMIC_RELAXED); \
		else                                                             \
			ktest_fail_(__FILE__, __LINE__, #cond, __VA_ARGS__);     \
	} while (0)

#define REQUIRE(cond, ...)                                                       \
	do {                                                                     \
		if (cond) {                                                      \
			__atomic_fetch_add(&ktest_passed_, 1, __ATOMIC_RELAXED); \
		} else {                                                         \
			ktest_fail_(__FILE__, __LINE__, #cond, __VA_ARGS__);     \
			return;                                                  \
		}                                                                \
	} while (0)

static inline uint64_t kt_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static inline uint64_t kt_now_ms(void)
{
	return kt_now_ns() / 1000000ull;
}

static inline void kt_sleep_ms(unsigned ms)
{
	struct timespec ts = {ms / 1000u, (long)(ms % 1000u) * 1000000L};
	while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
	}
}

/*
 * Run one test function. By default in a child process of its own, so that a
 * crash or a hang in one test is reported as that test's failure ("crashed:
 * signal 11", "timed out") and the other tests still run; the child sends its
 * pass/fail counts back through a pipe. KT_NOFORK=1 runs tests in-process
 * (for gdb); KT_TIMEOUT=<seconds> sets the per-test limit (default 300).
 */
/* Reads and writes of allocator memory that an attack test makes on
 * purpose (a header, a link, a canary): under ASan they must reach the
 * pool, not ASan's report. KT_RAW for a test's own helpers of the kind. */
#if KT_ASAN
#define KT_RAW __attribute__((no_sanitize("address"), noinline))
#else
#define KT_RAW __attribute__((noinline))
#endif
static KT_RAW __attribute__((unused)) uint64_t kt_raw_get(const void *at)
{
	return *(const volatile uint64_t *)at;
}
static KT_RAW __attribute__((unused)) void kt_raw_put(void *at, uint64_t v)
{
	*(volatile uint64_t *)at = v;
}

/* Sort n figures in place, smallest first (n is a handful of alternated
 * runs: v[n / 2] is their median). */
static inline __attribute__((unused)) void kt_sort_longs(long *v, int n)
{
	for (int i = 0; i < n; i++)
		for (int j = i + 1; j < n; j++)
			if (v[j] < v[i]) {
				long t = v[i];
				v[i] = v[j];
				v[j] = t;
			}
}

/* The process's resident memory in KiB (/proc/self/statm), -1 if unread. */
static inline long kt_rss_kb(void)
{
	long size = 0, resident = -1;
	FILE *f = fopen("/proc/self/statm", "r");
	if (f == NULL)
		return -1;
	if (fscanf(f, "%ld %ld", &size, &resident) != 2)
		resident = -1;
	fclose(f);
	return resident < 0 ? -1 : resident * 4;
}

/* A "Key: value kB" line of /proc/self/status (VmRSS, VmHWM), in KiB; -1 if
 * unread. */
static inline long kt_status_kb(const char *key)
{
	FILE *f = fopen("/proc/self/status", "r");
	char line[256];
	long v = -1;
	size_t n = strlen(key);
	while (f != NULL && fgets(line, sizeof line, f) != NULL)
		if (!strncmp(line, key, n) && line[n] == ':')
			v = atol(line + n + 1);
	if (f != NULL)
		fclose(f);
	return v;
}

/* fn(arg) run in a fresh child (fork), its result sent back through a pipe:
 * a measure of a new process (its peak RSS) that nothing the parent did
 * weighs on. Negative when the child failed: -3 no answer, -4 a short one,
 * -5 no pipe, -6 no fork. */
static inline long kt_in_child(long (*fn)(void *), void *arg)
{
	int fd[2];
	if (pipe(fd) != 0)
		return -5;
	pid_t pid = fork();
	if (pid < 0)
		return -6;
	if (pid == 0) {
		close(fd[0]);
		long v = fn(arg);
		ssize_t w = write(fd[1], &v, sizeof v);
		_exit(w == (ssize_t)sizeof v ? 0 : 1);
	}
	close(fd[1]);
	long v = -3;
	ssize_t r = read(fd[0], &v, sizeof v);
	close(fd[0]);
	waitpid(pid, NULL, 0);
	return r == (ssize_t)sizeof v ? v : r == 0 ? -3 : -4;
}

#define RUN(fn) ktest_run_(#fn, fn)

static inline void ktest_run_(const char *name, void (*fn)(void))
{
	unsigned long f0 = ktest_failed_;
	uint64_t t0 = kt_now_ns();
	printf("-- %s\n", name);
	fflush(stdout);
	fflush(stderr);
	int fds[2];
	pid_t pid = -1;
	if (getenv("KT_NOFORK") == NULL && pipe(fds) == 0)
		pid = fork();
	if (pid < 0) {
		fn();
	} else if (pid == 0) {
		close(fds[0]);
		ktest_passed_ = ktest_failed_ = 0;
		fn();
		unsigned long counts[2] = {ktest_passed_, ktest_failed_};
		fflush(stdout);
		fflush(stderr);
		if (write(fds[1], counts, sizeof counts) != (ssize_t)sizeof counts)
			_exit(125);
		exit(0); /* exit, not _exit: sanitizers run their exit checks */
	} else {
		close(fds[1]);
		const char *tv = getenv("KT_TIMEOUT");
		uint64_t limit_ms = (tv && atol(tv) > 0 ? (uint64_t)atol(tv) : 300) * 1000;
		int status = 0, timed_out = 0;
		for (;;) {
			pid_t r = waitpid(pid, &status, WNOHANG);
			if (r == pid || (r < 0 && errno != EINTR))
				break;
			if ((kt_now_ns() - t0) / 1000000 > limit_ms) {
				kill(pid, SIGKILL);
				waitpid(pid, &status, 0);
				timed_out = 1;
				break;
			}
			kt_sleep_ms(5);
		}
		unsigned long counts[2] = {0, 0};
		ssize_t got = read(fds[0], counts, sizeof counts);
		close(fds[0]);
		if (got == (ssize_t)sizeof counts) {
			ktest_passed_ += counts[0];
			ktest_failed_ += counts[1];
		}
		if (timed_out) {
			ktest_failed_++;
			fprintf(stderr, "%s: timed out after %llu s (killed)\n", name,
				(unsigned long long)(limit_ms / 1000));
		} else if (WIFSIGNALED(status)) {
			ktest_failed_++;
			fprintf(stderr, "%s: crashed: signal %d (%s)\n", name, WTERMSIG(status),
				strsignal(WTERMSIG(status)));
		} else if (WIFEXITED(status) && WEXITSTATUS(status) != 0) {
			ktest_failed_++;
			fprintf(stderr, "%s: child exited with status %d%s\n", name, WEXITSTATUS(status),
				got == (ssize_t)sizeof counts ? " after the test body (sanitizer exit check?)" : "");
		}
	}
	printf("   %s: %s (%.2f s)\n", name, ktest_failed_ == f0 ? "ok" : "FAILED", (double)(kt_now_ns() - t0) / 1e9);
	fflush(stdout);
}

static inline int ktest_summary(void)
{
	extern char *program_invocation_short_name;
	printf("%s: %lu passed, %lu failed\n", program_invocation_short_name, ktest_passed_, ktest_failed_);
	fflush(stdout);
	return ktest_failed_ == 0 ? 0 : 1;
}

/* ---- a small deterministic PRNG (splitmix64) --------------------------- */

static inline uint64_t kt_rand(uint64_t *s)
{
	uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
	return z ^ (z >> 31);
}

/* xorshift64*: the generator the tests whose bounds were measured with it
 * use (test_bin_young, test_tcache_thread_pages, test_park_single,
 * test_refill_quarter); a seed must not be 0. */
static inline uint64_t kt_xorshift(uint64_t *s)
{
	uint64_t x = *s;
	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	*s = x;
	return x * 0x2545F4914F6CDD1DULL;
}

/* Uniform in [lo, hi]. */
static inline size_t kt_rand_range(uint64_t *s, size_t lo, size_t hi)
{
	return lo + (size_t)(kt_rand(s) % (uint64_t)(hi - lo + 1));
}

/* Log-uniform in [lo, hi] (lo >= 1): small sizes as often as large ones. */
static inline size_t kt_rand_log(uint64_t *s, size_t lo, size_t hi)
{
	unsigned lo_b = 63u - (unsigned)__builtin_clzll((unsigned long long)lo);
	unsigned hi_b = 63u - (unsigned)__builtin_clzll((unsigned long long)hi);
	unsigned b = lo_b + (unsigned)(kt_rand(s) % (hi_b - lo_b + 1u));
	size_t base = (size_t)1 << b;
	size_t v = base + (size_t)(kt_rand(s) % base);
	if (v < lo)
		v = lo;
	if (v > hi)
		v = hi;
	return v;
}

/* ---- block patterns ----------------------------------------------------- */

/*
 * A pattern derived from the block's address and a salt: a block handed out
 * twice, or overwritten by a neighbour, fails the check because the other
 * block's pattern differs.
 */
static inline uint64_t kt_pattern_word(const void *addr, uint64_t salt, size_t i)
{
	uint64_t x = (uint64_t)(uintptr_t)addr ^ salt ^ ((uint64_t)i * 0x9E3779B97F4A7C15ull);
	return x ^ (x >> 29);
}

/* Byte i of the pattern: byte i % 8 of word i / 8 (little-endian), so that
 * any prefix of a filled block verifies, whatever its length. */
static inline unsigned char kt_pattern_byte(const void *addr, uint64_t salt, size_t i)
{
	return (unsigned char)(kt_pattern_word(addr, salt, i / 8) >> (8 * (i % 8)));
}

static inline void kt_fill(void *p, size_t n, uint64_t salt)
{
	unsigned char *c = (unsigned char *)p;
	size_t words = n / 8, i;
	for (i = 0; i < words; i++) { /* memcpy: p need not be 8-aligned */
		uint64_t w = kt_pattern_word(p, salt, i);
		memcpy(c + i * 8, &w, 8);
	}
	for (i = words * 8; i < n; i++)
		c[i] = kt_pattern_byte(p, salt, i);
}

/* Check the first n bytes of p against the pattern written at 'origin' (the
 * address the block had when it was filled: realloc may move it). Returns
 * the offset of the first bad byte, or (size_t)-1 when all is well. */
static inline size_t kt_verify_from(const void *p, const void *origin, size_t n, uint64_t salt)
{
	const unsigned char *c = (const unsigned char *)p;
	size_t words = n / 8, i;
	for (i = 0; i < words; i++) {
		uint64_t w;
		memcpy(&w, c + i * 8, 8);
		if (w != kt_pattern_word(origin, salt, i))
			return i * 8;
	}
	for (i = words * 8; i < n; i++)
		if (c[i] != kt_pattern_byte(origin, salt, i))
			return i;
	return (size_t)-1;
}

static inline size_t kt_verify(const void *p, size_t n, uint64_t salt)
{
	return kt_verify_from(p, p, n, salt);
}

#define KT_OK ((size_t)-1)

/* ---- the stats JSON ----------------------------------------------------- */

/* The whole stats object in a malloc'd buffer (caller frees), or NULL. */
static inline char *kt_stats(kp_pool *pool)
{
	char small[4096];
	int n = kp_stats_json(pool, small, sizeof small);
	if (n < 0)
		return NULL;
	char *buf = (char *)malloc((size_t)n + 1);
	if (buf == NULL)
		return NULL;
	if ((size_t)n < sizeof small) {
		memcpy(buf, small, (size_t)n + 1);
		return buf;
	}
	int m = kp_stats_json(pool, buf, (size_t)n + 1);
	if (m < 0 || m > n) { /* grew in between: try once more, larger */
		free(buf);
		buf = (char *)malloc((size_t)n * 2 + 256);
		if (buf == NULL || kp_stats_json(pool, buf, (size_t)n * 2 + 256) < 0) {
			free(buf);
			return NULL;
		}
	}
	return buf;
}

static inline const char *kt_json_ws(const char *s)
{
	while (*s == ' ' || *s == '\n' || *s == '\t' || *s == '\r')
		s++;
	return s;
}

/* Past one JSON string starting at its opening quote; NULL if malformed. */
static inline const char *kt_json_skip_string(const char *s)
{
	if (*s != '"')
		return NULL;
	for (s++; *s; s++) {
		if (*s == '\\') {
			if (!*++s)
				return NULL;
		} else if (*s == '"') {
			return s + 1;
		}
	}
	return NULL;
}

/* Past one JSON value of any kind; NULL if malformed. */
static inline const char *kt_json_skip_value(const char *s)
{
	s = kt_json_ws(s);
	if (*s == '"')
		return kt_json_skip_string(s);
	if (*s == '{' || *s == '[') {
		int depth = 0;
		while (*s) {
			if (*s == '"') {
				s = kt_json_skip_string(s);
				if (s == NULL)
					return NULL;
				continue;
			}
			if (*s == '{' || *s == '[')
				depth++;
			else if (*s == '}' || *s == ']') {
				if (--depth == 0)
					return s + 1;
			}
			s++;
		}
		return NULL;
	}
	while (*s && *s != ',' && *s != '}' && *s != ']' && *s != ' ' && *s != '\n')
		s++;
	return s;
}

/*
 * The value at a dotted key path ("syscalls.alloc.mmap") of a JSON object:
 * a pointer to its first character, or NULL when the path does not exist.
 */
static inline const char *kt_json_find(const char *json, const char *path)
{
	const char *s = kt_json_ws(json);
	while (*path) {
		const char *dot = strchr(path, '.');
		size_t klen = dot ? (size_t)(dot - path) : strlen(path);
		if (*s != '{')
			return NULL;
		s = kt_json_ws(s + 1);
		for (;;) {
			if (*s == '}' || *s != '"')
				return NULL;
			const char *key = s + 1;
			const char *end = kt_json_skip_string(s);
			if (end == NULL)
				return NULL;
			int match = (size_t)(end - 1 - key) == klen && memcmp(key, path, klen) == 0;
			s = kt_json_ws(end);
			if (*s != ':')
				return NULL;
			s = kt_json_ws(s + 1);
			if (match)
				break;
			s = kt_json_skip_value(s);
			if (s == NULL)
				return NULL;
			s = kt_json_ws(s);
			if (*s == ',')
				s = kt_json_ws(s + 1);
		}
		path += klen;
		if (*path == '.')
			path++;
	}
	return s;
}

/* An integer (true = 1, false = 0) at a key path; 'missing' if absent. */
static inline int64_t kt_json_int(const char *json, const char *path, int64_t missing)
{
	const char *v = json ? kt_json_find(json, path) : NULL;
	if (v == NULL)
		return missing;
	if (strncmp(v, "true", 4) == 0)
		return 1;
	if (strncmp(v, "false", 5) == 0)
		return 0;
	char *end;
	errno = 0;
	long long x = strtoll(v, &end, 10);
	if (end == v || errno != 0)
		return missing;
	return (int64_t)x;
}

#define KT_MISSING INT64_MIN

/* One counter read fresh from the pool; a missing key fails a CHECK. */
#define kt_stat(pool, path) kt_stat_at_((pool), (path), __FILE__, __LINE__)
static inline int64_t kt_stat_at_(kp_pool *pool, const char *path, const char *file, int line)
{
	char *json = kt_stats(pool);
	int64_t v = kt_json_int(json, path, KT_MISSING);
	if (v == KT_MISSING) {
		ktest_fail_(file, line, "kt_stat", "stats key \"%s\" missing in %s", path,
			    json ? json : "(kp_stats_json failed)");
		v = -1;
	}
	free(json);
	return v;
}

/* The sum of the five syscall kinds for one caller ("alloc" or "daemon"). */
static inline int64_t kt_syscalls(const char *json, const char *caller)
{
	static const char *const kinds[] = {"mmap", "munmap", "madvise", "mprotect", "other"};
	char path[64];
	int64_t sum = 0;
	for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++) {
		snprintf(path, sizeof path, "syscalls.%s.%s", caller, kinds[i]);
		int64_t v = kt_json_int(json, path, KT_MISSING);
		if (v == KT_MISSING)
			return KT_MISSING;
		sum += v;
	}
	return sum;
}

/* ---- events ------------------------------------------------------------- */

/* Drain every pending event; returns how many were drained. */
static inline size_t kt_events_clear(kp_pool *pool)
{
	kp_event ev[64];
	size_t n, total = 0;
	while ((n = kp_events_drain(pool, ev, 64)) > 0)
		total += n;
	return total;
}

/* Drain every pending event and keep the newest of one kind (kind 0 in the
 * result: none found). */
static inline kp_event kt_last_event(kp_pool *pool, unsigned kind)
{
	kp_event ev[64], found;
	memset(&found, 0, sizeof found);
	size_t n;
	while ((n = kp_events_drain(pool, ev, 64)) > 0)
		for (size_t i = 0; i < n; i++)
			if (ev[i].kind == kind)
				found = ev[i];
	return found;
}

/* Drain every pending event and count those of one kind (all kinds when
 * kind is KP_EV_NONE). With 'verbose' set in KT_VERBOSE, print them. */
static inline size_t kt_events_count(kp_pool *pool, unsigned kind)
{
	kp_event ev[64];
	size_t n, count = 0;
	int verbose = getenv("KT_VERBOSE") != NULL;
	while ((n = kp_events_drain(pool, ev, 64)) > 0) {
		for (size_t i = 0; i < n; i++) {
			if (verbose)
				printf("   event %llu %s pool=%u addr=%#llx size=%llu %s\n",
				       (unsigned long long)ev[i].seq, kp_event_name(ev[i].kind), ev[i].pool,
				       (unsigned long long)ev[i].addr, (unsigned long long)ev[i].size, ev[i].text);
			if (kind == KP_EV_NONE || ev[i].kind == kind)
				count++;
		}
	}
	return count;
}

/* Drain every pending event into a malloc'd array (caller frees). */
static inline kp_event *kt_events_all(kp_pool *pool, size_t *count)
{
	size_t cap = 256, n = 0, got;
	kp_event *ev = (kp_event *)malloc(cap * sizeof *ev);
	while (ev != NULL && (got = kp_events_drain(pool, ev + n, cap - n)) > 0) {
		n += got;
		if (n == cap) {
			cap *= 2;
			kp_event *grown = (kp_event *)realloc(ev, cap * sizeof *ev);
			if (grown == NULL)
				break;
			ev = grown;
		}
	}
	*count = n;
	return ev;
}

static inline size_t kt_count_kind(const kp_event *ev, size_t n, unsigned kind)
{
	size_t c = 0;
	for (size_t i = 0; i < n; i++)
		c += ev[i].kind == kind;
	return c;
}

/* Pages of [p, p + n) not resident (mincore), before anything touches them;
 * all of them when mincore fails or the range is past 16 MiB. */
static inline size_t kt_not_resident(const void *p, size_t n)
{
	size_t page = (size_t)sysconf(_SC_PAGESIZE);
	uintptr_t lo = (uintptr_t)p & ~(uintptr_t)(page - 1);
	size_t pages = ((uintptr_t)p + n - lo + page - 1) / page;
	static unsigned char vec[1 << 12];
	if (pages > sizeof vec || mincore((void *)lo, pages * page, vec) != 0)
		return pages;
	size_t missing = 0;
	for (size_t i = 0; i < pages; i++)
		missing += !(vec[i] & 1);
	return missing;
}

/* Free n blocks of b and flush this thread's cache, so that they are back
 * in the pool's central lists. */
static inline void kt_free_all(kp_pool *pool, void **b, size_t n)
{
	for (size_t i = 0; i < n; i++)
		kp_free(pool, b[i]);
	kp_thread_flush(pool);
}

/* ---- rounds in children ------------------------------------------------ */

/* Run round(r) for r in [0, rounds), each in a child of its own (its
 * return: the child's exit status, 0 clean), where kpool's documented
 * refusal of a call nested in a signal handler is allowed: one line and
 * SIGABRT (internal.h, kp__mutex_lock: a lock the thread holds itself).
 * A round that ends any other way fails the calling test, its CHECK
 * naming the round, how it ended and what (what the round's counts above
 * say). Returns the rounds that ended clean; *refused, the aborted ones.
 * The signal and ring attack tests' loop, once. */
static inline __attribute__((unused)) int kt_fork_rounds(int rounds, int (*round)(int r), const char *what,
							 int *refused)
{
	int clean = 0;
	*refused = 0;
	for (int r = 0; r < rounds; r++) {
		fflush(NULL);
		pid_t pid = fork();
		CHECK(pid >= 0, "round %d: fork: %s", r, strerror(errno));
		if (pid < 0)
			break;
		if (pid == 0)
			_exit(round(r));
		int st;
		pid_t w = waitpid(pid, &st, 0);
		CHECK(w == pid, "round %d: waitpid: %s", r, strerror(errno));
		if (w != pid)
			break;
		if (WIFEXITED(st) && WEXITSTATUS(st) == 0)
			clean++;
		else if (WIFSIGNALED(st) && WTERMSIG(st) == SIGABRT) /* kpool's abort, signals held off (os.c) */
			(*refused)++;
		else
			CHECK(0, "round %d: %s %d (%s)", r, WIFEXITED(st) ? "exit" : "signal",
			      WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st), what);
	}
	return clean;
}

/* ---- a thread pestered by signals -------------------------------------- */

/* kt_pestered: one round of a worker thread whose calls are interrupted by
 * SIGUSR1, the set-up the signal attack tests share
 * (test_outline_signal_*_attack3x.c). Installs handler for SIGUSR1 with
 * sa_flags, starts the worker and `pesters` threads (1 to 4) that each send
 * it SIGUSR1 every period_ns while it runs work (after warm, before any
 * signal; may be NULL). Once work returns the pesters are stopped and
 * joined before the worker runs drain (may be NULL) and ends: no signal
 * reaches a joined thread (pthread_kill of one is undefined; a pester that
 * read "live" before the worker's end sent it after the join, and rounds
 * died of SIGSEGV, 3 of 30 runs under ASan, s35). SIGUSR1 is ignored on
 * return. KT_NOSIG=1 in the environment sends no signal (the same round
 * without them). Blocks the caller until the worker ends; call it from the
 * test's thread (a kt_fork_rounds round), once at a time. */
struct kt_pester {
	void (*handler)(int sig);
	int sa_flags;	     /* SA_RESTART, | SA_NODEFER for handlers nested in themselves */
	void (*warm)(void);  /* the worker's calls before any signal */
	void (*work)(void);  /* the worker's calls while it is signalled */
	void (*drain)(void); /* the worker's calls once no signal can come */
	int pesters;	     /* threads sending SIGUSR1, 1 to 4 */
	long period_ns;	     /* each one's pause between signals */
};
struct kt_pester_run_ {
	const struct kt_pester *p;
	pthread_t worker;
	bool nosig;
	_Atomic bool live, stop, finished, quiet;
};
static inline void *kt_pester_worker_(void *arg)
{
	struct kt_pester_run_ *r = arg;
	if (r->p->warm)
		r->p->warm();
	atomic_store(&r->live, true);
	r->p->work();
	atomic_store(&r->live, false);
	atomic_store(&r->finished, true);
	while (!atomic_load(&r->quiet)) {
		struct timespec ts = {0, 100000};
		nanosleep(&ts, NULL);
	}
	if (r->p->drain)
		r->p->drain();
	return NULL;
}
static inline void *kt_pester_signaller_(void *arg)
{
	struct kt_pester_run_ *r = arg;
	while (!atomic_load(&r->stop)) {
		if (atomic_load(&r->live) && !r->nosig)
			pthread_kill(r->worker, SIGUSR1);
		struct timespec ts = {0, r->p->period_ns};
		nanosleep(&ts, NULL);
	}
	return NULL;
}
static inline __attribute__((unused)) void kt_pestered(void (*handler)(int sig), int sa_flags, void (*warm)(void),
						       void (*work)(void), void (*drain)(void), int pesters,
						       long period_ns)
{
	const struct kt_pester pp = {handler, sa_flags, warm, work, drain, pesters, period_ns};
	const struct kt_pester *p = &pp;
	struct kt_pester_run_ r = {.p = p, .nosig = getenv("KT_NOSIG") != NULL};
	pthread_t pt[4];
	int n = p->pesters < 1 ? 1 : p->pesters > 4 ? 4 : p->pesters;
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = p->handler;
	sa.sa_flags = p->sa_flags;
	sigaction(SIGUSR1, &sa, NULL);
	pthread_create(&r.worker, NULL, kt_pester_worker_, &r);
	for (int i = 0; i < n; i++)
		pthread_create(&pt[i], NULL, kt_pester_signaller_, &r);
	while (!atomic_load(&r.finished)) {
		struct timespec ts = {0, 1000000};
		nanosleep(&ts, NULL);
	}
	atomic_store(&r.stop, true);
	for (int i = 0; i < n; i++)
		pthread_join(pt[i], NULL);
	atomic_store(&r.quiet, true);
	pthread_join(r.worker, NULL);
	signal(SIGUSR1, SIG_IGN);
}

/* A pool, or a failed REQUIRE naming the conf and kp_last_error(). */
#define KT_POOL(var, conf)              \
	kp_pool *var = kp_create(conf); \
	REQUIRE(var != NULL, "kp_create(\"%s\"): %s", (conf), kp_last_error())

/* A file that tests the inline layout's own mechanism (block headers and
 * their keys, the thread caches and central lists of the inline primary, its
 * segments and spans, the daemon's growth of it, planted bugs in that code)
 * defines KT_LAYOUT_INLINE before it includes this header: each kp_create of
 * the file then gets "layout:inline" ahead of its own conf, so that the file
 * keeps testing what it tested once the default layout became outline. A
 * layout named in the test's own conf comes later and wins; kp_create(NULL)
 * (the pool KPOOL_CONF makes) is left as it is. The joined conf is built in a
 * thread-local buffer: no allocation, no stack below the test's frame. */
#ifdef KT_LAYOUT_INLINE
#define KT_INLINE_CONF "layout:inline,"
static inline kp_pool *kt_create_inline_(const char *conf)
{
	static __thread char buf[4096];
	if (!conf)
		return kp_create(NULL);
	size_t n = strlen(conf);
	if (n + sizeof KT_INLINE_CONF > sizeof buf) {
		fprintf(stderr, "ktest: conf of %zu bytes too long to pin to layout:inline\n", n);
		abort();
	}
	memcpy(buf, KT_INLINE_CONF, sizeof KT_INLINE_CONF - 1);
	memcpy(buf + sizeof KT_INLINE_CONF - 1, conf, n + 1);
	return kp_create(buf);
}
#define kp_create(conf) kt_create_inline_(conf)
#endif

#endif /* KTEST_H */
