/*
 * rss.c - the process's resident memory over a workload: a sampler thread
 * reads /proc/self/statm every few milliseconds while the workload runs, and
 * the kernel's high-water mark (VmHWM) gives the exact peak. The thread uses
 * open/read only (no malloc: under LD_PRELOAD the peer's allocator would be
 * measured doing the sampler's work) and sleeps between samples, so it costs
 * the workload well under 1% of a core.
 */
#include "kpbench.h"

#include <fcntl.h>
#include <pthread.h>
#include <string.h>
#include <unistd.h>

/* 5 ms: a sample per scheduler tick or two; a 1 s workload gives 200 points,
 * and the trace halves its resolution whenever it fills (RSS_SAMPLES). */
#define RSS_START_MS 5

static pthread_t sampler;
static _Atomic int sampling;
static struct rss_trace *trace;

static uint64_t read_number_after(const char *path, const char *key)
{
	char buf[4096];
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	ssize_t n = read(fd, buf, sizeof buf - 1);
	close(fd);
	if (n <= 0)
		return 0;
	buf[n] = 0;
	const char *p = key ? strstr(buf, key) : buf;
	if (!p)
		return 0;
	p += key ? strlen(key) : 0;
	while (*p == ' ' || *p == '\t')
		p++;
	uint64_t v = 0;
	if (!key) /* statm: size, then resident (pages) */
		while (*p && *p != ' ')
			p++;
	while (*p == ' ')
		p++;
	while (*p >= '0' && *p <= '9')
		v = v * 10 + (uint64_t)(*p++ - '0');
	return v;
}

uint64_t rss_now_kib(void)
{
	return read_number_after("/proc/self/statm", NULL) * (PAGE / 1024);
}

uint64_t rss_hwm_kib(void)
{
	return read_number_after("/proc/self/status", "VmHWM:");
}

static void *sample_loop(void *arg)
{
	(void)arg;
	struct rss_trace *t = trace;
	while (atomic_load(&sampling)) {
		uint64_t kib = rss_now_kib();
		if (kib > t->peak_kib)
			t->peak_kib = kib;
		if (t->n == RSS_SAMPLES) { /* full: keep every other sample */
			for (unsigned i = 0; i < RSS_SAMPLES / 2; i++)
				t->kib[i] = t->kib[2 * i];
			t->n = RSS_SAMPLES / 2;
			t->interval_ms *= 2;
			t->skip = 1;
		}
		if (t->skip) { /* the first sample after a halving is dropped */
			t->skip = 0;
		} else {
			t->kib[t->n++] = (uint32_t)kib;
		}
		struct timespec ts = {0, (long)t->interval_ms * 1000000L};
		nanosleep(&ts, NULL);
	}
	return NULL;
}

void rss_start(struct rss_trace *t)
{
	memset(t, 0, sizeof *t);
	t->interval_ms = RSS_START_MS;
	t->start_kib = rss_now_kib();
	trace = t;
	atomic_store(&sampling, 1);
	if (pthread_create(&sampler, NULL, sample_loop, NULL) != 0)
		atomic_store(&sampling, 0);
}

void rss_stop(struct rss_trace *t)
{
	if (atomic_exchange(&sampling, 0))
		pthread_join(sampler, NULL);
	uint64_t kib = rss_now_kib();
	if (kib > t->peak_kib)
		t->peak_kib = kib;
	t->end_kib = kib;
	t->hwm_kib = rss_hwm_kib();
}
