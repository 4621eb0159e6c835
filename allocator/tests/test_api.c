/*
 * test_api.c - the contract around the allocator: conf parsing and its
 * errors, the option table, the stats JSON (shape and snprintf semantics),
 * the event ring (order, drops) and event names.
 */
#include "ktest.h"

#include <pthread.h>

static void test_conf_errors(void)
{
	static const struct {
		const char *conf, *key, *value;
	} bad[] = {
		{"no_such_option:1", "no_such_option", "1"},
		{"primary_max:12q", "primary_max", "12q"},
		{"primary_initial:-1", "primary_initial", "-1"},
		{"daemon:maybe", "daemon", "maybe"},
		{"critical_wm:101", "critical_wm", "101"},
		{"seed:1,backup:lots", "backup", "lots"},
		{"decay_ms:", "decay_ms", ""},
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		errno = 0;
		kp_pool *p = kp_create(bad[i].conf);
		int e = errno;
		CHECK(p == NULL, "kp_create(\"%s\") accepted a bad option", bad[i].conf);
		CHECK(e == EINVAL, "kp_create(\"%s\"): errno %d, want EINVAL", bad[i].conf, e);
		const char *msg = kp_last_error();
		CHECK(msg != NULL && strstr(msg, bad[i].key) != NULL, "error for \"%s\" does not name the key: \"%s\"",
		      bad[i].conf, msg ? msg : "(null)");
		if (bad[i].value[0])
			CHECK(msg != NULL && strstr(msg, bad[i].value) != NULL,
			      "error for \"%s\" does not name the value: \"%s\"", bad[i].conf, msg ? msg : "(null)");
		kp_destroy(p);
	}
	/* a missing colon, an initial above the max */
	CHECK(kp_create("daemon") == NULL, "\"daemon\" (no value) accepted");
	CHECK(kp_create("primary_initial:64m,primary_max:8m") == NULL, "primary_initial > primary_max accepted");

	/* KPOOL_CONF is read the same way, and conf wins over it */
	setenv("KPOOL_CONF", "bogus_key:1", 1);
	errno = 0;
	CHECK(kp_create(NULL) == NULL && errno == EINVAL, "a bad KPOOL_CONF accepted");
	CHECK(strstr(kp_last_error(), "bogus_key") != NULL, "KPOOL_CONF error: \"%s\"", kp_last_error());
	setenv("KPOOL_CONF", "backup:2m,daemon:off", 1);
	kp_pool *p = kp_create("backup:3m");
	CHECK(p != NULL, "kp_create with KPOOL_CONF: %s", kp_last_error());
	if (p != NULL) {
		CHECK(kt_stat(p, "backup.capacity_bytes") >= 3 << 20, "conf did not win over KPOOL_CONF: %lld",
		      (long long)kt_stat(p, "backup.capacity_bytes"));
		CHECK(kt_stat(p, "daemon.running") == 0, "KPOOL_CONF daemon:off ignored");
		kp_destroy(p);
	}
	unsetenv("KPOOL_CONF");

	/* good spellings: NULL, "", suffixes, spaces, booleans */
	static const char *const good[] = {NULL,
					   "",
					   "primary_initial:1m",
					   "backup:512k,primary_max:1g",
					   "daemon:off",
					   "daemon:on,seed:42",
					   " seed:1 , decay_ms:10 "};
	for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
		kp_pool *g = kp_create(good[i]);
		CHECK(g != NULL, "kp_create(\"%s\") refused: %s", good[i] ? good[i] : "NULL", kp_last_error());
		kp_destroy(g);
	}
	kp_destroy(NULL); /* a no-op */
}

static void test_options(void)
{
	const kp_option_info *opt = NULL;
	size_t n = kp_options(&opt);
	CHECK(n >= 10 && opt != NULL, "kp_options: %zu options", n);
	static const char *const need[] = {
		"primary_initial", "primary_max",	 "backup",   "low_wm", "high_wm", "critical_wm", "recover_wm",
		"daemon",	   "daemon_interval_ms", "decay_ms", "seed"};
	for (size_t k = 0; k < sizeof need / sizeof need[0]; k++) {
		int found = 0;
		for (size_t i = 0; i < n && opt; i++)
			if (strcmp(opt[i].name, need[k]) == 0) {
				found = 1;
				CHECK(opt[i].kind && opt[i].deflt && opt[i].help && opt[i].help[0],
				      "option %s lacks kind/default/help", need[k]);
			}
		CHECK(found, "option %s missing from kp_options", need[k]);
	}
	/* every default is itself accepted */
	for (size_t i = 0; i < n && opt; i++) {
		char conf[128];
		snprintf(conf, sizeof conf, "%s:%s", opt[i].name, opt[i].deflt);
		kp_pool *p = kp_create(conf);
		CHECK(p != NULL, "the default \"%s\" is refused: %s", conf, kp_last_error());
		kp_destroy(p);
	}
}

static void test_stats_json(void)
{
	/* layout:inline: its peak is counted on the allocation path, so a block
	 * freed before the stats are read is in it (layout:outline samples its
	 * peak when the stats are read: test_stats_peak_sampled) */
	KT_POOL(pool, "layout:inline,seed:1,daemon:off");
	char *js = kt_stats(pool);
	REQUIRE(js != NULL, "kp_stats_json");
	static const char *const keys[] = {"primary.capacity_bytes",
					   "primary.max_bytes",
					   "primary.in_use_bytes",
					   "primary.peak_in_use_bytes",
					   "primary.committed_bytes",
					   "primary.segments",
					   "primary.allocs",
					   "primary.frees",
					   "primary.failures",
					   "primary.grows",
					   "primary.shrinks",
					   "backup.capacity_bytes",
					   "backup.in_use_bytes",
					   "backup.peak_in_use_bytes",
					   "backup.allocs",
					   "backup.frees",
					   "backup.refusals",
					   "backup.active",
					   "backup.enters",
					   "backup.leaves",
					   "daemon.running",
					   "daemon.wakeups",
					   "daemon.timer_wakeups",
					   "daemon.passes",
					   "daemon.grows",
					   "daemon.shrinks",
					   "daemon.backup_refills",
					   "integrity.double_frees",
					   "integrity.invalid_frees",
					   "integrity.corruptions",
					   "integrity.bad_sizes",
					   "syscalls.alloc.mmap",
					   "syscalls.alloc.munmap",
					   "syscalls.alloc.madvise",
					   "syscalls.alloc.mprotect",
					   "syscalls.alloc.other",
					   "syscalls.daemon.mmap",
					   "syscalls.daemon.munmap",
					   "syscalls.daemon.madvise",
					   "syscalls.daemon.mprotect",
					   "syscalls.daemon.other",
					   "syscalls.total",
					   "events.recorded",
					   "events.dropped",
					   "threads"};
	for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
		CHECK(kt_json_int(js, keys[i], KT_MISSING) != KT_MISSING, "stats key %s missing: %s", keys[i], js);
	int64_t total = kt_json_int(js, "syscalls.total", -1);
	/* alloc and daemon are required; other callers (creation, ...) may exist */
	int64_t sum = 0;
	for (const char *c = strstr(js, "\"syscalls\":{"); c != NULL && (c = strstr(c, "\":{\"mmap\"")) != NULL; c++) {
		const char *q = c;
		while (q > js && q[-1] != '"')
			q--;
		char caller[32];
		snprintf(caller, sizeof caller, "%.*s", (int)(c - q), q);
		int64_t v = kt_syscalls(js, caller);
		CHECK(v != KT_MISSING, "syscalls.%s incomplete", caller);
		sum += v == KT_MISSING ? 0 : v;
	}
	CHECK(total == sum, "syscalls.total %lld != the sum over callers %lld", (long long)total, (long long)sum);
	CHECK(kt_syscalls(js, "alloc") != KT_MISSING && kt_syscalls(js, "daemon") != KT_MISSING,
	      "syscalls.alloc / syscalls.daemon missing");
	CHECK(total > 0, "kp_create made no counted system call");
	/* primary_max 0: as far as the machine allows (issue 14: no 1 GiB cap) */
	CHECK(kt_json_int(js, "primary.max_bytes", 0) > 1 << 30, "primary.max_bytes default: the machine's limit");
	CHECK(kt_json_int(js, "primary.capacity_bytes", 0) >= 4 << 20, "primary_initial 4m not mapped");
	/* balanced braces: one object */
	int depth = 0, min_depth = 1;
	for (const char *c = js; *c; c++) {
		depth += *c == '{';
		depth -= *c == '}';
		if (c[1] && depth < min_depth)
			min_depth = depth;
	}
	CHECK(depth == 0 && min_depth >= 1 && js[0] == '{', "stats JSON is not one object: %s", js);
	size_t full = strlen(js);

	/* snprintf semantics */
	char small[16];
	memset(small, 'x', sizeof small);
	int need = kp_stats_json(pool, small, sizeof small);
	CHECK(need >= (int)full - 8 && need <= (int)full + 8, "length %d, full object %zu", need, full);
	CHECK(small[15] == 0 && strncmp(small, js, 15) == 0, "truncated output not a NUL-terminated prefix");
	CHECK(kp_stats_json(pool, NULL, 0) == need, "len 0 must return the length");
	memset(small, 'x', sizeof small);
	kp_stats_json(pool, small, 1);
	CHECK(small[0] == 0 && small[1] == 'x', "len 1 must write just the NUL");
	CHECK(kp_stats_json(NULL, small, sizeof small) < 0, "NULL pool must be negative");
	free(js);

	/* counters move */
	void *p = kp_alloc(pool, 1000, 0);
	kp_free(pool, p);
	kp_thread_flush(pool);
	CHECK(kt_stat(pool, "primary.allocs") == 1 && kt_stat(pool, "primary.frees") == 1,
	      "one alloc and one free: allocs %lld frees %lld", (long long)kt_stat(pool, "primary.allocs"),
	      (long long)kt_stat(pool, "primary.frees"));
	CHECK(kt_stat(pool, "primary.peak_in_use_bytes") >= 1000, "peak_in_use_bytes %lld",
	      (long long)kt_stat(pool, "primary.peak_in_use_bytes"));
	kp_destroy(pool);
}

/* The default layout (outline) counts no peak on its fast paths: its peak is
 * the most a kp_stats reading found in use (stats.c), and stays there once
 * the blocks are freed. */
static void test_stats_peak_sampled(void)
{
	unsetenv("KPOOL_CONF");
	KT_POOL(pool, "seed:1,daemon:off");
	void *p = kp_alloc(pool, 1000, 0);
	REQUIRE(p != NULL, "kp_alloc");
	int64_t live = kt_stat(pool, "primary.peak_in_use_bytes");
	kp_free(pool, p);
	kp_thread_flush(pool);
	CHECK(live >= 1000, "peak_in_use_bytes %lld with a 1000-byte block live", (long long)live);
	CHECK(kt_stat(pool, "primary.peak_in_use_bytes") >= live, "the peak fell to %lld once the block was freed",
	      (long long)kt_stat(pool, "primary.peak_in_use_bytes"));
	kp_destroy(pool);
}

static void test_events(void)
{
	KT_POOL(pool, "seed:1,daemon:off");
	kt_events_clear(pool);
	/* a storm of bad-size events: far more than any ring holds */
	enum { STORM = 100000 };
	for (int i = 0; i < STORM; i++)
		kp_alloc(pool, SIZE_MAX - (size_t)i, 0);
	size_t n;
	kp_event *ev = kt_events_all(pool, &n);
	REQUIRE(ev != NULL, "drain");
	CHECK(n > 0 && n < STORM, "drained %zu of %d events", n, STORM);
	int ordered = 1;
	for (size_t i = 1; i < n; i++)
		if (ev[i].seq != ev[i - 1].seq + 1 || ev[i].time_ns < ev[i - 1].time_ns)
			ordered = 0;
	CHECK(ordered, "events not oldest first with consecutive seq");
	CHECK(n > 0 && ev[n - 1].kind == KP_EV_BAD_SIZE, "last event kind %u", n ? ev[n - 1].kind : 0);
	CHECK(n > 0 && ev[n - 1].size == SIZE_MAX - (STORM - 1), "the ring did not keep the newest: last size %#llx",
	      n ? (unsigned long long)ev[n - 1].size : 0ull);
	CHECK(n > 0 && memchr(ev[n - 1].text, 0, KP_EVENT_TEXT) != NULL && ev[n - 1].text[0] != 0,
	      "event text empty or not NUL-terminated");
	int64_t rec = kt_stat(pool, "events.recorded"), drop = kt_stat(pool, "events.dropped");
	CHECK(drop > 0, "events.dropped is 0 after a storm");
	CHECK(n > 0 && (int64_t)ev[n - 1].seq + 1 == rec, "last seq %llu, recorded %lld",
	      n ? (unsigned long long)ev[n - 1].seq : 0ull, (long long)rec);
	CHECK(n > 0 && (int64_t)ev[0].seq == rec - (int64_t)n, "first seq %llu, %zu kept of %lld recorded",
	      n ? (unsigned long long)ev[0].seq : 0ull, n, (long long)rec);
	CHECK(drop == STORM - (int64_t)n, "events.dropped %lld, want %lld", (long long)drop,
	      (long long)(STORM - (int64_t)n));
	free(ev);
	CHECK(kp_events_drain(pool, NULL, 0) == 0, "drain with max 0");
	kp_event one;
	CHECK(kp_events_drain(pool, &one, 1) == 0, "ring not empty after a full drain");
	kp_destroy(pool);

	/* names */
	CHECK(strcmp(kp_event_name(KP_EV_GROW), "grow") == 0, "name of grow: %s", kp_event_name(KP_EV_GROW));
	CHECK(strcmp(kp_event_name(KP_EV_DOUBLE_FREE), "double_free") == 0, "name of double_free: %s",
	      kp_event_name(KP_EV_DOUBLE_FREE));
	for (unsigned k = 1; k < KP_EV__COUNT; k++)
		CHECK(strcmp(kp_event_name(k), "unknown") != 0 && kp_event_name(k)[0] != 0, "kind %u has no name", k);
	CHECK(strcmp(kp_event_name(KP_EV__COUNT), "unknown") == 0, "out-of-range kind");
	CHECK(strcmp(kp_event_name(~0u), "unknown") == 0, "out-of-range kind");
}

/* A thread that used a pool may outlive it: its cache for the dead pool is
 * never touched again (not at its next allocation on a new pool, which may
 * sit at the same address, nor at its exit). */
static kp_pool *outlived;
static pthread_barrier_t used_it, destroyed_it;

static void *outliving_thread(void *arg)
{
	void *p[100];
	for (int i = 0; i < 100; i++)
		p[i] = kp_alloc(outlived, (size_t)(64 + i), 0);
	for (int i = 0; i < 100; i++)
		kp_free(outlived, p[i]);
	pthread_barrier_wait(&used_it);
	pthread_barrier_wait(&destroyed_it);
	kp_pool *fresh = kp_create("daemon:off");
	int *ok = (int *)arg;
	if (fresh != NULL) {
		void *x = kp_alloc(fresh, 64, 0);
		*ok = x != NULL && kp_free(fresh, x) == 0;
		kp_destroy(fresh);
	}
	return NULL;
}

static void test_thread_outlives_pool(void)
{
	for (int round = 0; round < 20; round++) {
		outlived = kp_create("daemon:off");
		REQUIRE(outlived != NULL, "kp_create: %s", kp_last_error());
		pthread_barrier_init(&used_it, NULL, 2);
		pthread_barrier_init(&destroyed_it, NULL, 2);
		int ok = 0;
		pthread_t t;
		REQUIRE(pthread_create(&t, NULL, outliving_thread, &ok) == 0, "pthread_create");
		pthread_barrier_wait(&used_it);
		kp_destroy(outlived);
		pthread_barrier_wait(&destroyed_it);
		pthread_join(t, NULL);
		CHECK(ok, "round %d: a thread that outlived its pool could not use a new one", round);
		pthread_barrier_destroy(&used_it);
		pthread_barrier_destroy(&destroyed_it);
	}
}

int main(void)
{
	RUN(test_conf_errors);
	RUN(test_options);
	RUN(test_stats_json);
	RUN(test_stats_peak_sampled);
	RUN(test_events);
	RUN(test_thread_outlives_pool);
	return ktest_summary();
}
