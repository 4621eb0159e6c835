/*
 * common.c - the clock, the latency histogram, the step tables and the pool
 * under test.
 */
#include "kpbench.h"

#include <math.h>

double secs_between(uint64_t t0, uint64_t t1)
{
	return (double)(t1 - t0) / 1e9;
}

/* Minor page faults of the calling thread (RUSAGE_THREAD), or of the whole
 * process. */
uint64_t minflt(int who)
{
	struct rusage ru;
	if (getrusage(who, &ru) != 0)
		return 0;
	return (uint64_t)ru.ru_minflt;
}

/* The highest value that lands in bucket i (HdrHistogram's "highest
 * equivalent value"), so percentiles never flatter the allocator. */
static uint64_t hist_bucket_top(unsigned i)
{
	if (i < H_SUB)
		return i;
	unsigned g = (i - H_SUB) / H_SUB, sub = (i - H_SUB) % H_SUB;
	unsigned e = g + H_SUB_BITS;
	uint64_t width = 1ull << (e - H_SUB_BITS);
	return (1ull << e) + sub * width + width - 1;
}

uint64_t hist_pct(const struct hist *h, double q)
{
	if (h->count == 0)
		return 0;
	uint64_t want = (uint64_t)ceil(q * (double)h->count), seen = 0;
	if (want < 1)
		want = 1;
	for (unsigned i = 0; i < H_BUCKETS; i++) {
		seen += h->b[i];
		if (seen >= want) {
			uint64_t top = hist_bucket_top(i);
			return top < h->max ? top : h->max;
		}
	}
	return h->max;
}

void hist_merge(struct hist *into, const struct hist *from)
{
	for (unsigned i = 0; i < H_BUCKETS; i++)
		into->b[i] += from->b[i];
	into->count += from->count;
	into->sum += from->sum;
	if (from->max > into->max)
		into->max = from->max;
}

struct hist *hist_new(void)
{
	struct hist *h = calloc(1, sizeof(*h));
	if (!h) {
		fprintf(stderr, "kpbench: out of memory for a histogram\n");
		exit(2);
	}
	return h;
}

/* The cost of one clock read, as it shows up inside every latency sample:
 * the median gap between back-to-back reads. */
uint64_t clock_cost_ns(void)
{
	struct hist *h = hist_new();
	for (int i = 0; i < 10000; i++) {
		uint64_t t0 = now_ns();
		hist_add(h, now_ns() - t0);
	}
	uint64_t c = hist_pct(h, 0.5);
	free(h);
	return c;
}

/* ---- the allocator under test -------------------------------------------- */

kp_pool *g_pool; /* NULL: the process's malloc/free */
bool g_use_kpool;
_Atomic uint64_t g_free_errors;

static char *stats_json(void)
{
	if (!g_pool)
		return NULL;
	char small[1];
	int need = kp_stats_json(g_pool, small, sizeof(small));
	if (need < 0)
		return NULL;
	char *buf = malloc((size_t)need + 1);
	if (buf && kp_stats_json(g_pool, buf, (size_t)need + 1) < 0) {
		free(buf);
		return NULL;
	}
	return buf;
}

int pool_open(const char *conf)
{
	if (!g_use_kpool)
		return 0;
	g_pool = kp_create(conf);
	if (!g_pool) {
		fprintf(stderr, "kpbench: kp_create(\"%s\") failed: %s\n", conf ? conf : "", kp_last_error());
		return -1;
	}
	return 0;
}

void pool_close(struct result *r)
{
	if (!g_pool)
		return;
	kp_thread_flush(g_pool);
	r->kp_stats = stats_json();
	kp_destroy(g_pool);
	g_pool = NULL;
}

static uint32_t draw_size(enum dist d, uint32_t lo, uint32_t hi, uint64_t r)
{
	if (d == UNIFORM)
		return lo + (uint32_t)(r % (hi - lo + 1));
	double x = (double)lo * pow((double)hi / lo, unit(r));
	uint32_t n = (uint32_t)x;
	return n < lo ? lo : n > hi ? hi : n;
}

struct step *make_steps(uint32_t nslots, enum dist d, uint32_t lo, uint32_t hi, uint64_t seed)
{
	struct step *s = malloc(sizeof(*s) * RTAB);
	if (!s) {
		fprintf(stderr, "kpbench: out of memory for the step table\n");
		exit(2);
	}
	for (uint32_t i = 0; i < RTAB; i++) {
		uint64_t r = splitmix64(&seed);
		s[i].slot = nslots ? (uint32_t)((r >> 32) % nslots) : 0;
		s[i].size = draw_size(d, lo, hi, splitmix64(&seed));
	}
	return s;
}
