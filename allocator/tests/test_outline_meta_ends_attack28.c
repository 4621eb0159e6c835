/*
 * test_outline_meta_ends_attack28.c - s28-att2: attacks on a segment's
 * metadata ends (outline.c: meta_take from meta_first up, meta_take_top's
 * cross-thread links from the top down, segment_fits between them), their
 * reset when a returned segment is taken again (segment_new,
 * meta_clear_head; return_idle's meta_discard and its purge of the link
 * pages) and short spans (span_blocks, OL_FIRST_BLOCKS: 128 blocks, 4x
 * each next).
 *
 * Each round: a maker thread takes blocks of a mix of classes (the round's:
 * the 16-byte class to its full spans, the 64 KiB class, and mid classes
 * whose spans stay short), fills them; a freer thread frees half of them
 * (cross-thread: foreign caches flushed through the links, at its exit
 * too); the maker exits holding the other half (its short spans in hand,
 * heap_abandon). A second maker (adopting the dead heap) takes a different
 * mix, then a thread frees every block, the daemon's passes give the
 * segments back (purge_idle, return_idle), and the next round's mix takes
 * them again. Checked after each phase: every segment's spans' stacks,
 * records and links inside its metadata, the stacks and records below its
 * bump, the links at or above its end, bump <= end, no two arrays
 * overlapping; no two live blocks overlapping; every live block keeping its
 * pattern; each stale free (of a block freed, its segment given back or
 * not) refused and reported; after the last round every block freed: no
 * block in use (kp__ol_in_use 0), every segment given back.
 *
 * All held on 1eaf4d9 (release, ASan, TSan).
 */
#define _GNU_SOURCE 1
#include "ktest.h"
#include "outline.h"

#include <pthread.h>
#include <stdlib.h>

#define ROUNDS 6
#define MAXB 20000
#define NSTALE 64

static kp_pool *pool;

struct blk {
	unsigned char *p;
	size_t n;
	uint64_t salt;
};
static struct blk live[3 * MAXB];
static int nlive;
static struct blk made[MAXB];
static int nmade;
static unsigned char *stale[NSTALE];
static int nstale;

/* The round's mixes: sizes and counts (16 B x 6784: spans of 128, 512,
 * 2048, 4096 blocks, and a next; 64 KiB: a span a block; mid classes short). */
struct mix {
	size_t size;
	int n;
};
static const struct mix mix_a[] = {{8, 6784}, {65000, 40}, {40, 700}, {3000, 300}, {200, 150}};
static const struct mix mix_b[] = {{1000, 900}, {24, 5000}, {20000, 30}, {100, 2000}, {500, 129}};
static const struct mix mix_c[] = {{8, 128}, {16, 129}, {4000, 640}, {60000, 60}, {32, 3000}, {7000, 100}};
static const struct mix *mixes[3] = {mix_a, mix_b, mix_c};
static const int nmix[3] = {5, 5, 6};

static const struct mix *cur_mix;
static int cur_nmix;
static uint64_t salt_base;

static void *maker(void *arg)
{
	(void)arg;
	nmade = 0;
	for (int m = 0; m < cur_nmix; m++)
		for (int i = 0; i < cur_mix[m].n && nmade < MAXB; i++) {
			size_t n = cur_mix[m].size;
			unsigned char *p = kp_alloc(pool, n, 0);
			if (!p)
				continue;
			made[nmade] = (struct blk){p, n, salt_base + (uint64_t)nmade};
			kt_fill(p, n, made[nmade].salt);
			nmade++;
		}
	return NULL;
}

/* frees made[] blocks of index % 2 == parity (cross-thread), then exits
 * (its foreign caches flushed onto the spans' lists) */
static int free_parity;
static void *freer(void *arg)
{
	(void)arg;
	for (int i = free_parity; i < nmade; i += 2) {
		if (nstale < NSTALE && i % 97 == 0)
			stale[nstale++] = made[i].p;
		kp_free(pool, made[i].p);
	}
	return NULL;
}

/* Every live block freed (cross-thread) but, while pinning, one in
 * PIN_EVERY: its segment stays (no return_idle), its wholly free spans'
 * pages go (purge_idle, short spans among them) beside it. */
#define PIN_EVERY 499
static bool pinning;
static void *free_live(void *arg)
{
	(void)arg;
	int kept = 0;
	for (int i = 0; i < nlive; i++) {
		if (pinning && i % PIN_EVERY == 0) {
			live[kept++] = live[i];
			continue;
		}
		if (nstale < NSTALE && i % 131 == 0)
			stale[nstale++] = live[i].p;
		kp_free(pool, live[i].p);
	}
	nlive = kept;
	return NULL;
}

static void run(void *(*fn)(void *))
{
	pthread_t t;
	pthread_create(&t, NULL, fn, NULL);
	pthread_join(t, NULL);
}

struct iv {
	uintptr_t lo, hi;
	const char *what;
};
static int by_lo(const void *a, const void *b)
{
	const struct iv *x = a, *y = b;
	return x->lo < y->lo ? -1 : x->lo > y->lo;
}

/* Every segment's arrays within bounds and disjoint; returns the problems. */
static unsigned meta_walk(const char *phase)
{
	kp__ol *ol = pool->ol;
	unsigned bad = 0, nseg = 0, nspan = 0;
	static struct iv v[3 * OL_NSLICES];
	pthread_mutex_lock(&ol->lock);
	for (struct ol_seg *s = ol->segs; s; s = s->next, nseg++) {
		uintptr_t first = ((uintptr_t)(s + 1) + 63) & ~(uintptr_t)63, top = (uintptr_t)s + OL_META;
		uintptr_t bump = (uintptr_t)s->bump, end = (uintptr_t)s->end;
		if (bump > end || bump < first || end > top) {
			printf("   %s: segment %p bump %#lx end %#lx (first %#lx top %#lx)\n", phase, (void *)s,
			       (unsigned long)bump, (unsigned long)end, (unsigned long)first, (unsigned long)top);
			bad++;
		}
		int k = 0;
		for (uint32_t i = 0; i < s->used && i < OL_NSLICES; i++) {
			struct ol_span *pg = &s->spans[i];
			if (!pg->start)
				continue;
			nspan++;
			uint32_t nb = pg->nblocks;
			v[k++] = (struct iv){(uintptr_t)pg->stack0, (uintptr_t)(pg->stack0 + nb + 1), "stack"};
			v[k++] = (struct iv){(uintptr_t)pg->rec, (uintptr_t)(pg->rec + nb + 1), "records"};
			v[k++] = (struct iv){(uintptr_t)pg->link, (uintptr_t)(pg->link + nb), "links"};
			for (int j = k - 3; j < k; j++) {
				bool links = j == k - 1;
				bool in =
					links ? v[j].lo >= end && v[j].hi <= top : v[j].lo >= first && v[j].hi <= bump;
				if (!in) {
					printf("   %s: span %u (%u B x %u) %s [%#lx, %#lx) outside (bump %#lx end "
					       "%#lx)\n",
					       phase, i, pg->bsize, nb, v[j].what, (unsigned long)v[j].lo,
					       (unsigned long)v[j].hi, (unsigned long)bump, (unsigned long)end);
					bad++;
				}
			}
		}
		qsort(v, (size_t)k, sizeof v[0], by_lo);
		for (int j = 1; j < k; j++)
			if (v[j].lo < v[j - 1].hi) {
				printf("   %s: segment %p: %s [%#lx, %#lx) overlaps %s [%#lx, %#lx)\n", phase,
				       (void *)s, v[j].what, (unsigned long)v[j].lo, (unsigned long)v[j].hi,
				       v[j - 1].what, (unsigned long)v[j - 1].lo, (unsigned long)v[j - 1].hi);
				bad++;
			}
	}
	pthread_mutex_unlock(&ol->lock);
	printf("   %s: %u segments, %u spans walked, %u problems\n", phase, nseg, nspan, bad);
	return bad;
}

static int by_p(const void *a, const void *b)
{
	const struct blk *x = a, *y = b;
	return x->p < y->p ? -1 : x->p > y->p;
}

/* Live blocks: none overlapping, each with its pattern. */
static void live_check(const char *phase)
{
	qsort(live, (size_t)nlive, sizeof live[0], by_p);
	unsigned over = 0, pat = 0;
	for (int i = 0; i < nlive; i++) {
		if (i && live[i].p < live[i - 1].p + live[i - 1].n)
			over++;
		if (kt_verify(live[i].p, live[i].n, live[i].salt) != KT_OK)
			pat++;
	}
	CHECK(over == 0, "%s: %u live blocks overlap another", phase, over);
	CHECK(pat == 0, "%s: %u live blocks lost their pattern", phase, pat);
}

static void keep_made(int parity)
{
	for (int i = parity; i < nmade; i += 2)
		live[nlive++] = made[i];
}

static void keep_all_made(void)
{
	for (int i = 0; i < nmade; i++)
		live[nlive++] = made[i];
}

/* Each stale pointer freed again: refused (kp_free not 0) and one event. */
static void stale_frees(void)
{
	unsigned taken = 0, silent = 0;
	kt_events_clear(pool);
	for (int i = 0; i < nstale; i++) {
		taken += kp_free(pool, stale[i]) == 0;
		kp_event ev[8];
		size_t n = kp_events_drain(pool, ev, 8);
		unsigned k = 0;
		for (size_t j = 0; j < n; j++)
			k += ev[j].kind == KP_EV_INVALID_FREE || ev[j].kind == KP_EV_DOUBLE_FREE;
		silent += k != 1;
	}
	CHECK(taken == 0, "%u of %d stale frees taken", taken, nstale);
	CHECK(silent == 0, "%u of %d stale frees without exactly one event", silent, nstale);
	nstale = 0;
}

/* Short spans (fewer blocks than their slices hold) purged by purge_idle. */
static unsigned purged_short(void)
{
	kp__ol *ol = pool->ol;
	unsigned n = 0;
	pthread_mutex_lock(&ol->lock);
	for (struct ol_seg *s = ol->segs; s; s = s->next)
		for (uint32_t i = 0; i < s->used && i < OL_NSLICES; i++) {
			struct ol_span *pg = &s->spans[i];
			n += pg->start && pg->idle_ns == OL_PURGED && pg->nblocks < OL_SLICE_SIZE / pg->bsize;
		}
	pthread_mutex_unlock(&ol->lock);
	return n;
}

static const char *fault_spec; /* injected around the daemon's passes */

static void rounds(const char *conf)
{
	pool = kp_create(conf);
	REQUIRE(pool, "kp_create: %s", kp_last_error());
	kp__ol *ol = pool->ol;
	nlive = nstale = 0;
	for (int r = 0; r < ROUNDS; r++) {
		char ph[64];
		cur_mix = mixes[r % 3], cur_nmix = nmix[r % 3];
		salt_base = (uint64_t)r << 40;
		run(maker);
		free_parity = 1;
		run(freer); /* the odd ones cross-thread, the maker alive no more: */
		keep_made(0);
		snprintf(ph, sizeof ph, "round %d, first mix", r);
		CHECK(meta_walk(ph) == 0, "%s: metadata arrays out of place", ph);
		live_check(ph);
		cur_mix = mixes[(r + 1) % 3], cur_nmix = nmix[(r + 1) % 3];
		salt_base = (uint64_t)r << 40 | 1ull << 39;
		run(maker); /* adopts the dead heap, its short spans listed */
		keep_all_made();
		snprintf(ph, sizeof ph, "round %d, second mix", r);
		CHECK(meta_walk(ph) == 0, "%s: metadata arrays out of place", ph);
		live_check(ph);
		pinning = r % 2 == 0;
		run(free_live);
		if (fault_spec)
			REQUIRE(kp_fault_inject(pool, fault_spec) == 0, "kp_fault_inject: %s", kp_last_error());
		kp_daemon_step(pool, 1);
		kp_daemon_step(pool, 1000);
		kp_daemon_step(pool, 1000);
		if (fault_spec)
			kp_fault_inject(pool, "all@off");
		if (pinning) {
			unsigned np = purged_short();
			printf("   round %d: %u short spans purged beside the pinned blocks\n", r, np);
			CHECK(np > 0, "round %d: no short span purged (purge_idle not reached)", r);
		}
		snprintf(ph, sizeof ph, "round %d, after the passes", r);
		live_check(ph);
		if (!nlive)
			stale_frees();
		printf("   round %d: %llu segments given back so far, %u mapped\n", r,
		       (unsigned long long)atomic_load(&ol->returned), ol->nsegs);
	}
	pinning = false;
	run(free_live);
	kp_daemon_step(pool, 1);
	kp_daemon_step(pool, 1000);
	kp_daemon_step(pool, 1000);
	CHECK(kp__ol_in_use(pool) == 0, "%llu bytes in use with every block freed",
	      (unsigned long long)kp__ol_in_use(pool));
	CHECK(atomic_load(&ol->returned) >= ROUNDS, "%llu segments given back in %d rounds",
	      (unsigned long long)atomic_load(&ol->returned), ROUNDS);
	CHECK(ol->nsegs == 0, "%u segments not given back with every block freed and every thread gone", ol->nsegs);
	kp_destroy(pool);
}

static void test_meta_ends_checks_off(void)
{
	rounds("layout:outline,daemon:off,step_clock:on,seed:5,decay_ms:1000,checks:off");
}

static void test_meta_ends_checks_on(void)
{
	rounds("layout:outline,daemon:off,step_clock:on,seed:5,decay_ms:1000,checks:on");
}

/* The daemon's madvise calls refused: meta_discard's memset, the link
 * pages and the purged spans' data left as they were */
static void test_meta_ends_madvise_refused(void)
{
	fault_spec = "madvise@every=1";
	rounds("layout:outline,daemon:off,step_clock:on,seed:5,decay_ms:1000,checks:on");
	fault_spec = "other@every=1";
	rounds("layout:outline,daemon:off,step_clock:on,seed:5,decay_ms:1000,checks:off");
	fault_spec = NULL;
}

int main(void)
{
	RUN(test_meta_ends_checks_off);
	RUN(test_meta_ends_checks_on);
	RUN(test_meta_ends_madvise_refused);
	return ktest_summary();
}
