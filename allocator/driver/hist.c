/*
 * hist.c - the log-linear latency histogram: bucket bounds, percentiles,
 * merging, and the cost of the clock read inside every sample.
 */
#include "kpdriver.h"

#include <math.h>
#include <stdlib.h>

struct kpd_hist *kpd_hist_new(void)
{
	struct kpd_hist *h = calloc(1, sizeof(*h));
	if (h)
		h->min = UINT64_MAX;
	return h;
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
		uint64_t t0 = kpd_now();
		kpd_hist_add(h, kpd_now() - t0);
	}
	uint64_t c = kpd_hist_pct(h, 0.5);
	free(h);
	return c;
}
