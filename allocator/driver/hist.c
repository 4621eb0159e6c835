/*
 * hist.c - the log-linear latency histogram: bucket bounds, percentiles,
 * merging, and the cost of the clock read inside every sample.
 */
#include "kpdriver.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

bool kpd_tsc_on;
uint64_t kpd_tsc_mult, kpd_tsc_base, kpd_mono_base;

static bool file_has(const char *path, const char *word)
{
	FILE *f = fopen(path, "r");
	if (!f)
		return false;
	char line[4096];
	bool found = false;
	while (!found && fgets(line, sizeof(line), f)) {
		char *p = line;
		size_t n = strlen(word);
		while (!found && (p = strstr(p, word)) != NULL) {
			found = (p == line || p[-1] == ' ' || p[-1] == '\t') &&
				(p[n] == ' ' || p[n] == '\n' || p[n] == 0);
			p += n;
		}
	}
	fclose(f);
	return found;
}

int kpd_timer_use_tsc(char *note, size_t len)
{
#if defined(__x86_64__)
	if (!file_has("/sys/devices/system/clocksource/clocksource0/current_clocksource", "tsc") ||
	    !file_has("/proc/cpuinfo", "constant_tsc") || !file_has("/proc/cpuinfo", "nonstop_tsc")) {
		snprintf(note, len, "no invariant TSC behind CLOCK_MONOTONIC: timed with clock_gettime");
		return -1;
	}
	/* 20 ms of calibration: the factor is good to a few parts per million. */
	uint64_t m0 = kpd_now(), c0 = __rdtsc(), m1, c1;
	do {
		m1 = kpd_now();
		c1 = __rdtsc();
	} while (m1 - m0 < 20000000ull);
	kpd_tsc_mult = (uint64_t)(((unsigned __int128)(m1 - m0) << 32) / (c1 - c0));
	kpd_tsc_base = c1;
	kpd_mono_base = m1;
	kpd_tsc_on = true;
	snprintf(note, len, "tsc calibrated against CLOCK_MONOTONIC: %.4f ns per tick",
		 (double)kpd_tsc_mult / 4294967296.0);
	return 0;
#else
	snprintf(note, len, "no TSC on this architecture: timed with clock_gettime");
	return -1;
#endif
}

struct kpd_hist *kpd_hist_new(void)
{
	struct kpd_hist *h = calloc(1, sizeof(*h));
	if (h)
		h->min = UINT64_MAX;
	return h;
}

void kpd_hist_seal(struct kpd_hist *h)
{
	h->count = 0;
	h->min = UINT64_MAX;
	for (unsigned i = 0; i < KPD_H_BUCKETS; i++) {
		if (h->b[i] && h->min == UINT64_MAX)
			h->min = kpd_hist_bucket_low(i);
		h->count += h->b[i];
	}
}

void kpd_hist_merge(struct kpd_hist *into, const struct kpd_hist *from)
{
	for (unsigned i = 0; i < KPD_H_BUCKETS; i++)
		into->b[i] += from->b[i];
	into->count += from->count;
	into->sum += from->sum;
	if (from->max > into->max)
		into->max = from->max;
	if (from->min < into->min)
		into->min = from->min;
}

uint64_t kpd_hist_bucket_low(unsigned i)
{
	if (i < KPD_H_SUB)
		return i;
	unsigned g = (i - KPD_H_SUB) / KPD_H_SUB, sub = (i - KPD_H_SUB) % KPD_H_SUB;
	unsigned e = g + KPD_H_SUB_BITS;
	return (1ull << e) + (uint64_t)sub * (1ull << (e - KPD_H_SUB_BITS));
}

/* The highest value that lands in bucket i (HdrHistogram's "highest
 * equivalent value"), so that percentiles never flatter the allocator. */
uint64_t kpd_hist_bucket_high(unsigned i)
{
	if (i < KPD_H_SUB)
		return i;
	unsigned e = (i - KPD_H_SUB) / KPD_H_SUB + KPD_H_SUB_BITS;
	return kpd_hist_bucket_low(i) + (1ull << (e - KPD_H_SUB_BITS)) - 1;
}

uint64_t kpd_hist_pct(const struct kpd_hist *h, double q)
{
	if (h->count == 0)
		return 0;
	uint64_t want = (uint64_t)ceil(q * (double)h->count), seen = 0;
	if (want < 1)
		want = 1;
	for (unsigned i = 0; i < KPD_H_BUCKETS; i++) {
		seen += h->b[i];
		if (seen >= want) {
			uint64_t top = kpd_hist_bucket_high(i);
			return top < h->max ? top : h->max;
		}
	}
	return h->max;
}

uint64_t kpd_clock_cost_ns(void)
{
	struct kpd_hist *h = kpd_hist_new();
	if (!h)
		return 0;
	for (int i = 0; i < 20000; i++) {
		uint64_t t0 = kpd_tick();
		kpd_hist_add(h, kpd_tick_ns(kpd_tick() - t0));
	}
	kpd_hist_seal(h);
	uint64_t c = kpd_hist_pct(h, 0.5);
	free(h);
	return c;
}
