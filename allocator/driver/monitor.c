/*
 * monitor.c - the observer thread: drains the pool's events (the only
 * drainer), samples the pool's stats into a timeline, prints progress lines
 * for the runner, and after the run marks each outlier that overlapped a
 * grow or ran while the backup pool was serving.
 */
#include "kpdriver.h"

#include <dirent.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The monitor wakes every TICK_MS: events are drained long before the ring
 * (thousands of entries) fills at any rate a workload produces. */
#define TICK_MS 5
#define FIRST_EVENTS 64	  /* events kept verbatim: the start of the story */
#define MAX_MARKS 16384	  /* grow and backup transition times kept */
#define MAX_SAMPLES 20000 /* timeline: 16 min at 50 ms */
/* A grow event is recorded when the grow is done; mapping and pre-faulting
 * take up to a few hundred microseconds, so an op that ended shortly before
 * the event still overlapped the grow. */
#define GROW_SLACK_NS 300000ull

struct mark {
	uint64_t t;
	uint32_t kind;
};

struct sample {
	uint64_t t_ms, ops;
	long long cap, in_use, b_in_use, syscalls;
	int b_active;
};

/* The grow daemon's wait for a CPU: run_delay from the kernel's schedstat of
 * the thread named kpool-daemon (the time it was runnable but not running).
 * A verdict on the allocation path's system calls means little when the
 * machine kept the daemon off every CPU for longer than the allocation path
 * waits for it (grow_wait_us): the runner reads this to tell the two apart. */
struct daemon_sched {
	pid_t tid;	      /* 0: not found yet (no pool, glibc, or not started) */
	bool found;	      /* read at least once */
	uint64_t first, last; /* run_delay at the first and the last read, ns */
	uint64_t last_t;      /* when the last read was made, kpd_now() */
	uint64_t stretch;     /* run_delay over the current stretch of reads that found it waiting */
	uint64_t longest;     /* the longest such stretch, ns */
};

struct kpd_monitor {
	pthread_t th;
	struct daemon_sched ds;
	_Atomic int stop;
	uint64_t counts[KP_EV__COUNT + 1];
	uint64_t total;
	kp_event first[FIRST_EVENTS];
	unsigned nfirst;
	struct mark *marks;
	unsigned nmarks;
	struct sample *samples;
	unsigned nsamples;
	kp_event buf[256];
};

static void drain(struct kpd_run *run, struct kpd_monitor *m)
{
	if (!run->pool)
		return;
	size_t n;
	while ((n = kp_events_drain(run->pool, m->buf, 256)) > 0) {
		for (size_t i = 0; i < n; i++) {
			const kp_event *e = &m->buf[i];
			m->counts[e->kind < KP_EV__COUNT ? e->kind : KP_EV__COUNT]++;
			m->total++;
			if (m->nfirst < FIRST_EVENTS)
				m->first[m->nfirst++] = *e;
			if ((e->kind == KP_EV_GROW || e->kind == KP_EV_BACKUP_ENTER || e->kind == KP_EV_BACKUP_LEAVE) &&
			    m->nmarks < MAX_MARKS)
				m->marks[m->nmarks++] = (struct mark){e->time_ns, e->kind};
		}
		if (n < 256)
			break;
	}
}

/* The number after "key": inside the object "section" of a stats JSON. */
static long long jnum(const char *js, const char *section, const char *key)
{
	char pat[64];
	snprintf(pat, sizeof(pat), "\"%s\":", section);
	const char *s = strstr(js, pat);
	if (!s)
		return -1;
	snprintf(pat, sizeof(pat), "\"%s\":", key);
	s = strstr(s, pat);
	if (!s)
		return -1;
	s += strlen(pat);
	if (!strncmp(s, "true", 4))
		return 1;
	if (!strncmp(s, "false", 5))
		return 0;
	return strtoll(s, NULL, 10);
}

static char *stats_json(kp_pool *pool)
{
	char small[1];
	int need = kp_stats_json(pool, small, sizeof(small));
	if (need < 0)
		return NULL;
	char *buf = malloc((size_t)need + 1);
	if (buf && kp_stats_json(pool, buf, (size_t)need + 1) < 0) {
		free(buf);
		return NULL;
	}
	return buf;
}

/* The contents of a small /proc file into buf (NUL-terminated); false if
 * it cannot be read. */
static bool read_small(const char *path, char *buf, size_t size)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return false;
	ssize_t n = read(fd, buf, size - 1);
	close(fd);
	if (n <= 0)
		return false;
	buf[n] = 0;
	return true;
}

static pid_t find_daemon(void)
{
	DIR *d = opendir("/proc/self/task");
	if (!d)
		return 0;
	pid_t tid = 0;
	struct dirent *e;
	char path[300], comm[32];
	while (!tid && (e = readdir(d)) != NULL) {
		if (e->d_name[0] < '0' || e->d_name[0] > '9')
			continue;
		snprintf(path, sizeof path, "/proc/self/task/%s/comm", e->d_name);
		if (read_small(path, comm, sizeof comm) && strcmp(comm, "kpool-daemon\n") == 0)
			tid = (pid_t)atoi(e->d_name);
	}
	closedir(d);
	return tid;
}

/* One read of the daemon's run_delay at now. A read that finds it grew by at
 * least half the time since the last one (the daemon waited for a CPU most of
 * that interval) extends the current stretch, any other ends it: a daemon kept
 * off the CPU for 200 ms reads as one stretch of about 200 ms, however often
 * the monitor reads (a sleeping monitor wakes with the scheduler's favour). */
static void daemon_sched_read(struct daemon_sched *ds, uint64_t now)
{
	if (!ds->tid && !(ds->tid = find_daemon()))
		return;
	char path[64], buf[128];
	unsigned long long run_ns, delay_ns;
	snprintf(path, sizeof path, "/proc/self/task/%d/schedstat", (int)ds->tid);
	if (!read_small(path, buf, sizeof buf) || sscanf(buf, "%llu %llu", &run_ns, &delay_ns) != 2) {
		ds->tid = 0; /* gone (a daemon stopped and started again): found anew next time */
		return;
	}
	if (!ds->found) {
		ds->found = true;
		ds->first = ds->last = delay_ns;
		ds->last_t = now;
		return;
	}
	uint64_t step = delay_ns > ds->last ? delay_ns - ds->last : 0, dt = now > ds->last_t ? now - ds->last_t : 0;
	ds->stretch = step && 2 * step >= dt ? ds->stretch + step : 0;
	if (ds->stretch > ds->longest)
		ds->longest = ds->stretch;
	if (delay_ns > ds->last)
		ds->last = delay_ns;
	ds->last_t = now;
}

static void sample(struct kpd_run *run, struct kpd_monitor *m, uint64_t now)
{
	if (m->nsamples >= MAX_SAMPLES)
		return;
	struct sample s = {.t_ms = (now - run->t0) / 1000000, .ops = kpd_ops_done(run)};
	char *js = run->pool ? stats_json(run->pool) : NULL;
	if (js) {
		s.cap = jnum(js, "primary", "capacity_bytes");
		s.in_use = jnum(js, "primary", "in_use_bytes");
		s.b_in_use = jnum(js, "backup", "in_use_bytes");
		s.b_active = (int)jnum(js, "backup", "active");
		s.syscalls = jnum(js, "syscalls", "total");
		free(js);
	}
	m->samples[m->nsamples++] = s;
}

static void *monitor_main(void *arg)
{
	struct kpd_run *run = arg;
	struct kpd_monitor *m = run->mon;
	const struct kpd_program *pr = run->prog;
	uint64_t next_sample = run->t0, next_progress = run->t0 + pr->progress_ms * 1000000ull;
	/* Under a runner (KPDRIVE_WATCH_PARENT=1), a worker whose runner is gone
	 * exits rather than run on (or hang) unwatched. */
	const char *watch = getenv("KPDRIVE_WATCH_PARENT");
	pid_t parent = watch && watch[0] == '1' ? getppid() : 0;
	while (!atomic_load(&m->stop)) {
		uint64_t now = kpd_now();
		if (parent && getppid() != parent) {
			fprintf(stderr, "kpdrive: the runner (pid %d) is gone; exiting\n", (int)parent);
			_exit(4);
		}
		drain(run, m);
		if (run->pool)
			daemon_sched_read(&m->ds, now);
		if (pr->timeline_ms && now >= next_sample) {
			sample(run, m, now);
			next_sample = now + pr->timeline_ms * 1000000ull;
		}
		if (pr->progress_ms && now >= next_progress) {
			fprintf(stderr, "kpdrive: progress ops=%llu elapsed_ms=%llu\n",
				(unsigned long long)kpd_ops_done(run), (unsigned long long)((now - run->t0) / 1000000));
			next_progress = now + pr->progress_ms * 1000000ull;
		}
		struct timespec ts = {.tv_sec = 0, .tv_nsec = TICK_MS * 1000000L};
		nanosleep(&ts, NULL);
	}
	return NULL;
}

int kpd_monitor_start(struct kpd_run *run)
{
	struct kpd_monitor *m = calloc(1, sizeof(*m));
	if (m) {
		m->marks = calloc(MAX_MARKS, sizeof(*m->marks));
		m->samples = calloc(MAX_SAMPLES, sizeof(*m->samples));
	}
	if (!m || !m->marks || !m->samples) {
		if (m) {
			free(m->marks);
			free(m->samples);
		}
		free(m);
		snprintf(run->error, sizeof(run->error), "monitor: out of memory");
		return -1;
	}
	run->mon = m;
	int rc = pthread_create(&m->th, NULL, monitor_main, run);
	if (rc) {
		snprintf(run->error, sizeof(run->error), "monitor thread: %s", strerror(rc));
		run->mon = NULL;
		free(m->marks);
		free(m->samples);
		free(m);
		return -1;
	}
	return 0;
}

void kpd_monitor_stop(struct kpd_run *run)
{
	struct kpd_monitor *m = run->mon;
	if (!m)
		return;
	atomic_store(&m->stop, 1);
	pthread_join(m->th, NULL);
	drain(run, m);
	if (run->pool)
		daemon_sched_read(&m->ds, kpd_now());
	sample(run, m, kpd_now());
	if (run->pool)
		run->stats_json = stats_json(run->pool);
}

void kpd_monitor_free(struct kpd_run *run)
{
	struct kpd_monitor *m = run->mon;
	if (!m)
		return;
	free(m->marks);
	free(m->samples);
	free(m);
	run->mon = NULL;
}

void kpd_monitor_annotate(struct kpd_run *run)
{
	struct kpd_monitor *m = run->mon;
	if (!m)
		return;
	for (unsigned i = 0; i < run->noutliers; i++) {
		struct kpd_outlier *o = &run->outliers[i];
		uint64_t start = run->t0 + o->t_ns, end = start + o->lat_ns;
		bool backup = false;
		for (unsigned j = 0; j < m->nmarks; j++) {
			const struct mark *k = &m->marks[j];
			if (k->kind == KP_EV_GROW && k->t >= start && k->t <= end + GROW_SLACK_NS)
				o->grow = 1;
			if (k->kind != KP_EV_GROW && k->t <= end)
				backup = k->kind == KP_EV_BACKUP_ENTER;
		}
		o->backup = backup;
	}
}

void kpd_monitor_report(FILE *out, const struct kpd_run *run)
{
	const struct kpd_monitor *m = run->mon;
	if (!m) {
		fprintf(out, "\"events\":null,\"timeline\":null,\"daemon_sched\":null");
		return;
	}
	fprintf(out, "\"events\":{\"total\":%llu,\"counts\":{", (unsigned long long)m->total);
	bool first = true;
	for (unsigned k = 0; k <= KP_EV__COUNT; k++) {
		if (!m->counts[k])
			continue;
		fprintf(out, "%s\"%s\":%llu", first ? "" : ",", kp_event_name(k), (unsigned long long)m->counts[k]);
		first = false;
	}
	fprintf(out, "},\"first\":[");
	for (unsigned i = 0; i < m->nfirst; i++) {
		const kp_event *e = &m->first[i];
		fprintf(out,
			"%s{\"seq\":%llu,\"t_ms\":%.3f,\"kind\":\"%s\",\"pool\":\"%s\","
			"\"addr\":%llu,\"size\":%llu,\"text\":",
			i ? "," : "", (unsigned long long)e->seq,
			e->time_ns >= run->t0 ? (double)(e->time_ns - run->t0) / 1e6 : 0.0, kp_event_name(e->kind),
			e->pool == KP_POOL_BACKUP ? "backup" : "primary", (unsigned long long)e->addr,
			(unsigned long long)e->size);
		kpd_json_string(out, e->text);
		fputc('}', out);
	}
	fprintf(out, "]},\"timeline\":{\"columns\":[\"t_ms\",\"ops\",\"primary_capacity\","
		     "\"primary_in_use\",\"backup_in_use\",\"backup_active\",\"syscalls\"],\"rows\":[");
	for (unsigned i = 0; i < m->nsamples; i++) {
		const struct sample *s = &m->samples[i];
		fprintf(out, "%s[%llu,%llu,%lld,%lld,%lld,%d,%lld]", i ? "," : "", (unsigned long long)s->t_ms,
			(unsigned long long)s->ops, s->cap, s->in_use, s->b_in_use, s->b_active, s->syscalls);
	}
	fprintf(out, "]},\"daemon_sched\":{\"found\":%s,\"run_delay_ms\":%.3f,\"longest_wait_ms\":%.3f}",
		m->ds.found ? "true" : "false", (double)(m->ds.last - m->ds.first) / 1e6, (double)m->ds.longest / 1e6);
}
