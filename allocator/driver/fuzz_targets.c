/*
 * fuzz_targets.c - the fuzz entry points (kpfuzz.h): which pools, which
 * interpreter mode, and the conf parser target.
 *
 * The first input byte picks one of the target's pools, so one corpus
 * covers several configurations (checks on and off, poisoning, a tight pool
 * whose primary fails over to the backup, layout:outline). Seeds are fixed:
 * a crash input replays against the same secret.
 *
 * The outline pools (layout:outline, allocator/src/outline.c) come after the
 * inline ones in each table: an input's first byte picks one modulo the
 * table's length. $KPOOL_FUZZ_LAYOUT=outline (or inline) narrows the pick to
 * that layout's pools: a plant in both paths (KP_PLANT 2, 5, 8) is then found
 * on the one asked for (tests/test_fuzz_outline.py).
 *
 * Every pool names its layout: the tables are the corpora's format (as
 * fuzz_model.c's), so an inline pool stays inline whatever the default
 * layout is (outline since s24-flip; FZ_BASE and FZ_TIGHT say inline, an
 * outline pool's later layout:outline wins), and pick_pool's test of the
 * conf tells them apart.
 */
#include "fuzz_model.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Common to the sequential pools: no daemon thread (kp_daemon_step drives
 * passes), one segment kept (primary_initial: a shrink never unmaps it, so
 * an input does not pay for mapping and poisoning 4 MiB again), grown on
 * demand to 64 MiB at most, a 1 MiB backup, 400 ms of decay (a daemon step
 * advances the clock by up to 1 s, so a long step shrinks, but not every
 * step unmaps and the next input maps again), the smallest thread cache (the per-input flush returns a few
 * blocks, not batches of 128), and no pre-faulting and no transparent huge pages: an input touches a few
 * bytes of each block, and a 2 MiB page would be zeroed whole on the first. */
#define FZ_BASE                                                                                                     \
	"layout:inline,daemon:off,step_clock:on,prefault:off,thp:off,primary_initial:4m,primary_max:64m,backup:1m," \
	"decay_ms:400,tcache_bytes:0"
/* The tight pool: two segments at most, the backup taking critical traffic
 * from half of them. */
#define FZ_TIGHT                                                                                         \
	"layout:inline,daemon:off,step_clock:on,prefault:off,thp:off,tcache_bytes:0,primary_initial:4m," \
	"primary_max:8m,backup:1m,critical_wm:50,recover_wm:25,low_wm:0,high_wm:0,decay_ms:10"

static fz_pool api_pools[] = {
	{.conf = FZ_BASE ",seed:11,low_wm:0,high_wm:0"},
	{.conf = FZ_BASE ",seed:12,low_wm:0,high_wm:0,checks:off"},
	{.conf = FZ_BASE ",seed:13,low_wm:4m,high_wm:8m,poison:on"},
	{.conf = FZ_TIGHT ",seed:14"},
	/* layout:outline: no poison (outline.c does not apply it), so none is asked for */
	{.conf = FZ_BASE ",seed:15,low_wm:0,high_wm:0,layout:outline"},
	{.conf = FZ_BASE ",seed:16,low_wm:0,high_wm:0,checks:off,layout:outline"},
};

static fz_pool fault_pools[] = {
	{.conf = FZ_BASE ",seed:21,low_wm:0,high_wm:0"},
	{.conf = FZ_BASE ",seed:22,low_wm:0,high_wm:0,poison:on", .log = true},
	/* transparent huge pages asked for (and their madvise failing when injected) */
	{.conf = FZ_BASE ",seed:23,low_wm:0,high_wm:0,checks:off,thp:on"},
	{.conf = FZ_TIGHT ",seed:24,poison:on"},
	{.conf = FZ_BASE ",seed:25,low_wm:0,high_wm:0,layout:outline"},
	{.conf = FZ_TIGHT ",seed:26,layout:outline"},
};

#define NPOOLS(a) (sizeof(a) / sizeof((a)[0]))

/* The pool of a table an input's first byte picks: among all of them, or
 * among those of one layout when $KPOOL_FUZZ_LAYOUT names it (read once). */
static fz_pool *pick_pool(fz_pool *pools, size_t npools, uint8_t b)
{
	static int layout = -1; /* -1 unread, 0 any, 1 inline, 2 outline */
	if (layout < 0) {
		const char *want = getenv("KPOOL_FUZZ_LAYOUT");
		layout = !want || !want[0] ? 0 : !strcmp(want, "outline") ? 2 : !strcmp(want, "inline") ? 1 : -2;
		if (layout == -2)
			FZ_FAIL("harness", "getenv", "KPOOL_FUZZ_LAYOUT='%s': inline, outline or unset", want);
	}
	if (layout == 0)
		return &pools[b % npools];
	size_t n = 0, idx[16];
	for (size_t i = 0; i < npools && n < 16; i++)
		if ((strstr(pools[i].conf, "layout:outline") != NULL) == (layout == 2))
			idx[n++] = i;
	if (n == 0)
		FZ_FAIL("harness", "getenv", "KPOOL_FUZZ_LAYOUT='%s': no pool of this target has that layout",
			getenv("KPOOL_FUZZ_LAYOUT"));
	return &pools[idx[b % n]];
}

static int run_sequence(fz_pool *pools, size_t npools, unsigned mode, const uint8_t *data, size_t len)
{
	if (len < 1)
		return 0;
	fz_history_add(pools, npools, data, len);
	fz_input_begin();
	fz_in r = {data + 1, len - 1};
	fz_ctx c;
	fz_trace_reset();
	fz_ctx_init(&c, pick_pool(pools, npools, data[0]), mode);
	fz_run(&c, &r);
	fz_finish(&c);
	fz_input_end();
	return 0;
}

KP_EXPORT int kp_fuzz_api_sequence(const uint8_t *data, size_t len)
{
	return run_sequence(api_pools, NPOOLS(api_pools), FZ_STRICT, data, len);
}

KP_EXPORT int kp_fuzz_faults(const uint8_t *data, size_t len)
{
	return run_sequence(fault_pools, NPOOLS(fault_pools), FZ_MISUSE | FZ_FAULTS, data, len);
}

/* ---- concurrent: two threads, one pool, the daemon running ----------------- */

/* The daemon wakes every millisecond and returns segments at once (decay 0),
 * so it races the two threads for every segment they empty. In the first
 * pool a thread that must grow waits up to 50 us for the daemon's segment
 * first (grow_wait_us). No transparent huge pages, as in the sequential
 * pools: an input touches a few bytes of a huge block, and its first 2 MiB
 * page would be zeroed whole (a quarter of this target's time). */
static fz_pool thread_pools[] = {
	{.conf = "primary_initial:0,primary_max:128m,backup:1m,low_wm:4m,high_wm:4m,decay_ms:0,"
		 "daemon_interval_ms:1,grow_wait_us:50,thp:off,seed:31,layout:inline"},
	{.conf = "primary_initial:4m,primary_max:128m,backup:1m,low_wm:0,high_wm:0,decay_ms:0,"
		 "daemon_interval_ms:1,poison:on,thp:off,seed:32,layout:inline"},
	{.conf = "primary_initial:4m,primary_max:128m,backup:1m,low_wm:0,high_wm:0,decay_ms:0,"
		 "daemon_interval_ms:1,thp:off,seed:33,layout:outline"},
};

typedef struct half {
	fz_ctx ctx;
	fz_in in;
} half;

#if KP_PLANT == 12
/* planted 12: the second thread of the concurrent target takes a lock it
 * already holds when its half of the input opens with "HG" (a hang in the
 * second thread: kpool fuzz must sign it with this frame, not with the
 * fuzzing thread's wait for it). */
static pthread_mutex_t planted_lock = PTHREAD_MUTEX_INITIALIZER;
__attribute__((noinline)) static void fz_planted_hang(void)
{
	/* glibc's own lock, not kpool's kp__mutex_lock (internal.h), which
	 * turns a thread's second take of a lock it holds into an abort: the
	 * plant is a hang (test_fuzz_hang) */
	(pthread_mutex_lock)(&planted_lock);
	(pthread_mutex_lock)(&planted_lock);
}
#endif

static void *half_main(void *arg)
{
	half *h = arg;
	fz_thread_mark(FZ_RUNNING);
#if KP_PLANT == 12 /* planted 12 */
	if (h->ctx.next_tag == 0x80 && h->in.n >= 2 && h->in.p[0] == 'H' && h->in.p[1] == 'G')
		fz_planted_hang();
#endif
	fz_trace_reset();
	fz_run(&h->ctx, &h->in);
	fz_finish(&h->ctx);
	fz_thread_mark(FZ_IDLE);
	return NULL;
}

/* Two worker threads that live for the process and run one half each per
 * input. A thread created and joined per input cost 370 us of the 460 us an
 * input took under ASan (its stack, its shadow, its cache); one input in
 * sixteen (the top nibble of the first byte all ones) still runs on two
 * fresh threads, so thread start-up and exit with cached blocks stay fuzzed. */
typedef struct worker {
	pthread_t thread;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	half *job; /* set by the fuzzer thread, cleared by the worker when done */
	bool started;
} worker;

static worker workers[2] = {{.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER},
			    {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER}};

static void *worker_main(void *arg)
{
	worker *w = arg;
	for (;;) {
		pthread_mutex_lock(&w->mu);
		while (!w->job)
			pthread_cond_wait(&w->cv, &w->mu);
		half *h = w->job;
		pthread_mutex_unlock(&w->mu);
		half_main(h);
		pthread_mutex_lock(&w->mu);
		w->job = NULL;
		pthread_cond_broadcast(&w->cv);
		pthread_mutex_unlock(&w->mu);
	}
	return NULL;
}

static void run_halves(half h[2], bool fresh)
{
	if (fresh) {
		pthread_t t[2];
		for (int i = 0; i < 2; i++)
			if (pthread_create(&t[i], NULL, half_main, &h[i]) != 0)
				FZ_FAIL("harness", "pthread_create", "pthread_create failed");
		for (int i = 0; i < 2; i++)
			pthread_join(t[i], NULL);
		return;
	}
	for (int i = 0; i < 2; i++) {
		worker *w = &workers[i];
		if (!w->started) {
			if (pthread_create(&w->thread, NULL, worker_main, w) != 0)
				FZ_FAIL("harness", "pthread_create", "pthread_create failed");
			w->started = true;
		}
		pthread_mutex_lock(&w->mu);
		w->job = &h[i];
		pthread_cond_broadcast(&w->cv);
		pthread_mutex_unlock(&w->mu);
	}
	for (int i = 0; i < 2; i++) {
		worker *w = &workers[i];
		pthread_mutex_lock(&w->mu);
		while (w->job)
			pthread_cond_wait(&w->cv, &w->mu);
		pthread_mutex_unlock(&w->mu);
	}
}

KP_EXPORT int kp_fuzz_concurrent(const uint8_t *data, size_t len)
{
	if (len < 2)
		return 0;
	fz_history_add(thread_pools, NPOOLS(thread_pools), data, len);
	fz_input_begin();
	fz_pool *fp = pick_pool(thread_pools, NPOOLS(thread_pools), data[0]);
	_Atomic(fz_slot *) mailbox = NULL;
	size_t rest = len - 1, first = rest / 2;
	half h[2];
	fz_ctx_init(&h[0].ctx, fp, FZ_HANDOFF);
	fz_ctx_init(&h[1].ctx, fp, FZ_HANDOFF);
	h[0].in = (fz_in){data + 1, first};
	h[1].in = (fz_in){data + 1 + first, rest - first};
	h[0].ctx.mailbox = h[1].ctx.mailbox = &mailbox;
	h[1].ctx.next_tag = 0x80; /* the two threads' fill bytes differ */
	fz_thread_mark(FZ_WAITING);
	run_halves(h, (data[0] & 0xf0) == 0xf0);
	fz_thread_mark(FZ_RUNNING);
	fz_slot *left = atomic_exchange(&mailbox, NULL);
	if (left) {
		h[0].ctx.slot[0] = *left;
		free(left);
		h[0].ctx.mailbox = NULL;
		fz_finish(&h[0].ctx);
	}
	fz_drain(&h[0].ctx);
	fz_input_end();
	return 0;
}

/* ---- conf: the option and fault-spec parsers ------------------------------------ */

static fz_pool conf_pool = {.conf = "daemon:off,primary_initial:0,backup:0,seed:41"};

#define FZ_CONF_MAX 512

/* The option table (kp_options) documents every option with a kind, a help
 * text and a default that the parser itself accepts. */
static void check_option_table(void)
{
	const kp_option_info *opt;
	size_t n = kp_options(&opt);
	if (n == 0 || !opt)
		FZ_FAIL("conf-contract", "kp_options", "kp_options returned %zu options", n);
	for (size_t i = 0; i < n; i++) {
		char one[128];
		kp__conf c;
		if (!opt[i].name || !opt[i].kind || !opt[i].deflt || !opt[i].help || !opt[i].help[0])
			FZ_FAIL("conf-contract", "kp_options", "option %zu of kp_options is not documented", i);
		snprintf(one, sizeof one, "%s:%s", opt[i].name, opt[i].deflt);
		if (kp__conf_load(&c, one) < 0)
			FZ_FAIL("conf-contract", "kp_options", "the documented default '%s' is refused: %s", one,
				kp_last_error());
	}
}

static void conf_one(const uint8_t *data, size_t len)
{
	char s[FZ_CONF_MAX + 1];
	size_t n = len - 1 < FZ_CONF_MAX ? len - 1 : FZ_CONF_MAX;
	memcpy(s, data + 1, n);
	s[n] = 0;
	if (data[0] & 1) { /* a fault spec, on a pool that never allocates */
		kp_pool *pool = fz_pool_get(&conf_pool);
		int rc = kp_fault_inject(pool, s);
		if (rc != 0 && (rc != KP_EINVAL || !kp_last_error()[0]))
			FZ_FAIL("conf-contract", "kp_fault_inject", "kp_fault_inject('%s') returned %d with error '%s'",
				s, rc, kp_last_error());
		kp_fault_inject(pool, "all@off");
		return;
	}
	kp__conf c;
	errno = 0;
	if (kp__conf_load(&c, s) < 0) {
		if (errno != EINVAL || !kp_last_error()[0])
			FZ_FAIL("conf-contract", "kp__conf_load", "conf '%s' refused with errno %d and error '%s'", s,
				errno, kp_last_error());
		return;
	}
	if (kp_last_error()[0])
		FZ_FAIL("conf-contract", "kp__conf_load", "conf '%s' accepted but kp_last_error is '%s'", s,
			kp_last_error());
	if (data[0] & 4)
		check_option_table();
	if (c.primary_initial > c.primary_max || c.recover_wm > c.critical_wm || c.low_wm > c.high_wm ||
	    c.critical_wm < 1 || c.critical_wm > 100 || c.primary_max < ((size_t)4 << 20) ||
	    strlen(c.faults) >= KP_FAULT_SPEC_MAX)
		FZ_FAIL("conf-contract", "kp__conf_load", "conf '%s' accepted with inconsistent values", s);
	/* A cheap conf is also made into a pool and used once: at most one
	 * segment and a 1 MiB reserve to map and pre-fault, and a headroom
	 * floor (high_wm, mapped when the pool is made) of at most a segment:
	 * 'high_wm:5g' pools, ASan-poisoned, ran the target out of memory. (With the defaults,
	 * 8 MiB and 4 MiB, made cheap, pre-faulting them was 80% of this
	 * target's time: 3.1k exec/s and 380 libkpool edges after 40 s, now
	 * 25.8k and 487.) */
	if (!(data[0] & 2) || c.primary_initial > ((size_t)4 << 20) ||
	    (c.backup != KP_BK_AUTO && c.backup > ((size_t)1 << 20)) || c.log_fd || c.wait_ms > 10 ||
	    c.high_wm > ((size_t)4 << 20))
		return;
	kp_pool *pool = kp_create(s);
	if (!pool) {
		if ((errno != EINVAL && errno != ENOMEM) || !kp_last_error()[0])
			FZ_FAIL("conf-contract", "kp_create", "kp_create('%s') failed with errno %d and error '%s'", s,
				errno, kp_last_error());
		return;
	}
	void *p = kp_alloc(pool, 100, 0);
	if (p) {
		memset(p, 1, 100);
		if (kp_free(pool, p) != 0)
			FZ_FAIL("refused", "kp_free", "kp_free in a pool made with '%s' failed: %s", s,
				kp_last_error());
	}
	kp_destroy(pool);
}

KP_EXPORT int kp_fuzz_conf(const uint8_t *data, size_t len)
{
	if (len < 1)
		return 0;
	fz_input_begin();
	conf_one(data, len);
	fz_input_end();
	return 0;
}
