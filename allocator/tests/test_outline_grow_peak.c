/*
 * test_outline_grow_peak.c - the peak RSS of a program that grows fast
 * (kpbench d's pattern: blocks of 4-64 KiB, every page written, GROW bytes
 * in one go) on a default pool, against the same program on glibc's malloc,
 * side by side in children of this test (issue 14, point 2: peak RSS at
 * most 1.1x the best peer).
 *
 * What the pool's own defaults cost here is what the daemon pre-faults and
 * the program never writes: the spare segments ahead of the heaps when the
 * growth stops, and the free slices of segments the heaps left because a
 * span did not fit (outline.c, segment_for), pre-faulted whole.
 *
 * test_meta_ahead: the metadata the daemon pre-faults with a segment is
 * what the heaps' segments use, not a fixed 64 KiB.
 *
 * RSS is meaningless under a sanitizer: there the program runs smaller and
 * the bound is left to the release variant.
 */
#include "ktest.h"
#include "outline.h"
#include "ol_resident.h"

#include <stdbool.h>
#include <sys/mman.h>
#include <unistd.h>

/* 1 GiB, as kpbench d (about 0.5 s a run): at 512 MiB the ratio was
 * 1.09x where d's was 1.14x (the spares the daemon keeps ahead are a share
 * of the bytes in use, but it falls further behind a program that grows
 * for longer, and pre-faults more once it catches up). */
#define GROW (KT_SANITIZED ? ((size_t)32 << 20) : ((size_t)1 << 30))
#define MAXBLOCKS (GROW / 4096 + 1)
/* After the growth: a few of the daemon's passes (its timer: 100 ms). */
#define PASSES_MS 300

static kp_pool *pool; /* NULL: malloc */

static void *take(size_t n)
{
	return pool ? kp_alloc(pool, n, 0) : malloc(n);
}

static void give(void *p)
{
	if (pool)
		kp_free(pool, p);
	else
		free(p);
}

/* Grow to GROW bytes of 4-64 KiB blocks (uniform, as kpbench d), every
 * page written, then free them: the peak RSS (VmHWM, KiB), negative when
 * an allocation failed or a block was overwritten. */
static long grow(void)
{
	void **blocks = calloc(MAXBLOCKS, sizeof *blocks);
	size_t *sizes = calloc(MAXBLOCKS, sizeof *sizes);
	if (!blocks || !sizes)
		return -10;
	uint64_t x = 0x9e3779b97f4a7c15ull;
	size_t nb = 0, bytes = 0;
	while (bytes < GROW && nb < MAXBLOCKS) {
		x ^= x << 13, x ^= x >> 7, x ^= x << 17;
		size_t n = 4096 + (size_t)(x % (65536 - 4096 + 1));
		unsigned char *p = take(n);
		if (!p)
			return -11;
		for (size_t off = 0; off < n; off += 4096)
			p[off] = (unsigned char)nb;
		p[n - 1] = (unsigned char)nb;
		blocks[nb] = p;
		sizes[nb++] = n;
		bytes += n;
	}
	for (size_t i = 0; i < nb; i++) {
		unsigned char *p = blocks[i];
		if (p[0] != (unsigned char)i || p[sizes[i] - 1] != (unsigned char)i)
			return -12;
		give(p);
	}
	free(blocks);
	free(sizes);
	/* the peak of the whole run, as /usr/bin/time's: the daemon's passes
	 * just after the growth stopped pre-fault too (a program's RSS at its
	 * last allocation was 1.10x glibc's, its peak 1.14x) */
	usleep(PASSES_MS * 1000);
	return kt_status_kb("VmHWM");
}

static long in_child(void *kpool)
{
	unsetenv("KPOOL_CONF");
	if (*(bool *)kpool && (pool = kp_create("")) == NULL)
		return -2;
	return grow();
}

static long child(bool kpool)
{
	return kt_in_child(in_child, &kpool);
}

enum { REPEATS = 3 };

/* Medians of REPEATS runs alternated (the machine is shared): the default
 * pool's peak at most 1.1x glibc's. */
static void test_grow_peak(void)
{
	long gl[REPEATS], kp[REPEATS];
	for (int i = 0; i < REPEATS; i++) {
		gl[i] = child(false);
		kp[i] = child(true);
		REQUIRE(gl[i] > 0 && kp[i] > 0, "a child failed (glibc %ld, kpool %ld)", gl[i], kp[i]);
	}
	kt_sort_longs(gl, REPEATS);
	kt_sort_longs(kp, REPEATS);
	long gm = gl[REPEATS / 2], km = kp[REPEATS / 2];
	printf("   grow to %zu MiB, 4-64 KiB blocks, peak RSS (medians of %d): glibc %ld KiB, kpool %ld KiB "
	       "(%.3fx; kpool %ld-%ld, glibc %ld-%ld)\n",
	       GROW >> 20, REPEATS, gm, km, (double)km / (double)gm, kp[0], kp[REPEATS - 1], gl[0], gl[REPEATS - 1]);
	if (KT_SANITIZED) {
		printf("   (sanitizer build: the RSS bound is checked in the release variant)\n");
		return;
	}
	CHECK(km * 10 <= gm * 11, "kpool's peak %ld KiB is more than 1.1x glibc's %ld KiB", km, gm);
}

/* A stepped pool (daemon:off, step_clock:on: a pass per 2 MiB, 10 ms of its
 * clock, 200 MB/s) grows to 160 MiB of 4-64 KiB blocks, every byte written:
 * the metadata pages resident in the heaps' segments are those their spans
 * use (to s->bump) and a page more each. On main: 16 pages each for the
 * segments the daemon pre-faulted or finished (OL_META_AHEAD, 64 KiB), about
 * 5 of them used. */
static void test_meta_ahead(void)
{
	kp_pool *p = kp_create("layout:outline,daemon:off,step_clock:on,seed:7");
	REQUIRE(p, "kp_create: %s", kp_last_error());
	kp_daemon_step(p, 0);
	size_t total = KT_SANITIZED ? ((size_t)96 << 20) : ((size_t)160 << 20), done = 0, burst = 0, n = 0;
	static void *held[(160 << 20) / 4096];
	uint64_t x = 0x9e3779b97f4a7c15ull;
	while (done < total) {
		x ^= x << 13, x ^= x >> 7, x ^= x << 17;
		size_t sz = 4096 + (size_t)(x % (65536 - 8 - 4096 + 1));
		void *b = kp_alloc(p, sz, 0);
		REQUIRE(b, "kp_alloc(%zu): %s", sz, kp_last_error());
		memset(b, 0x5a, sz);
		held[n++] = b;
		done += sz, burst += sz;
		if (burst >= ((size_t)2 << 20)) {
			burst = 0;
			kp_daemon_step(p, 10);
		}
	}
	kp__ol *ol = p->ol;
	size_t res = 0, used = 0;
	unsigned nseg = 0;
	pthread_mutex_lock(&ol->lock);
	for (struct ol_seg *s = ol->segs; s; s = s->next, nseg++) {
		res += resident(s, OL_META) / 4096;
		used += ((size_t)(s->bump - (uint8_t *)s) + 4095) / 4096 + 1;
	}
	pthread_mutex_unlock(&ol->lock);
	printf("   %u segments: %zu metadata pages resident, %zu used (and a page more each)\n", nseg, res, used);
	CHECK(res <= used, "%zu metadata pages resident in %u segments whose spans use %zu", res, nseg, used);
	for (size_t i = 0; i < n; i++)
		kp_free(p, held[i]);
	kp_destroy(p);
}

int main(void)
{
	RUN(test_meta_ahead);
	RUN(test_grow_peak);
	return ktest_summary();
}
