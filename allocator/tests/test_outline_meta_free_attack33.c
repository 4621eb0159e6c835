/*
 * test_outline_meta_free_attack33.c - layout:outline with its metadata
 * coloured (OL_META_COLORS: each segment's metadata 0-31 pages into its
 * mapping, PROT_NONE below): kp_free and kp_usable_size of addresses inside
 * a segment's metadata (its record, its spans' stacks and records, the last
 * bytes), of its data segment's slices no span holds, and of blocks inside
 * aligned and large allocations, on segments of every colour. Asserted: no
 * crash (no read of the PROT_NONE pages), each free refused with an
 * invalid-free event (KP_ENOTOURS or KP_EINVAL) and counted once, every
 * kp_usable_size 0, the pool's live blocks intact afterwards.
 * A guard: held on s33 atta (release).
 * Reproduce:
 *   make -C allocator VARIANT=release build/release/tests/test_outline_meta_free_attack33 &&
 *   allocator/build/release/tests/test_outline_meta_free_attack33
 */
#define _GNU_SOURCE 1
#include "ktest.h"

#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "internal.h"
#include "outline.h"

#define NLIVE 40000

static void test_frees_inside_metadata(void)
{
	kp_pool *pool = kp_create("layout:outline,daemon:off");
	REQUIRE(pool, "kp_create: %s", kp_last_error());
	static void *live[NLIVE];
	static size_t sz[NLIVE];
	uint64_t seed = 5;
	/* spans of many classes over several segments: sizes 1 B - 64 KiB,
	 * and aligned ones */
	for (int i = 0; i < NLIVE; i++) {
		size_t n = 1 + (size_t)(kt_rand(&seed) % (i % 50 ? 2048 : 65000));
		sz[i] = n;
		live[i] = i % 7 ? kp_alloc(pool, n, 0) : kp_alloc_aligned(pool, n, (size_t)64 << (i % 6), 0);
		REQUIRE(live[i], "allocation %d of %zu bytes", i, n);
		memset(live[i], (int)(i & 0xff), n);
	}
	unsigned nseg = 0, colors = 0;
	long tried = 0, refused = 0, sized = 0;
	int64_t inv0 = kt_stat(pool, "integrity.invalid_frees");
	for (int list = 0; list < 2; list++)
		for (struct ol_seg *s = list ? pool->ol->spare : pool->ol->segs; s; s = s->next) {
			nseg++;
			colors |= 1u << s->color;
			uint8_t *m = (uint8_t *)s;
			uint8_t *probe[] = {m,
					    m + 8,
					    m + 16,
					    m + 64,
					    m + sizeof(struct ol_seg),
					    m + sizeof(struct ol_seg) + 64,
					    s->bump - 16,
					    s->bump,
					    m + OL_META / 2,
					    s->end,
					    m + OL_META - 64,
					    m + OL_META - 16,
					    s->base + (size_t)(OL_NSLICES - 1) * ((size_t)1 << OL_SLICE_SHIFT),
					    s->base + OL_SEG_SIZE - 16};
			for (size_t k = 0; k < sizeof probe / sizeof probe[0]; k++) {
				uint8_t *p = probe[k];
				/* a live block's own address is no invalid free */
				bool is_live = false;
				for (int i = 0; i < NLIVE && !is_live; i++)
					is_live = live[i] == p;
				if (is_live)
					continue;
				if (kp_usable_size(pool, p) != 0)
					sized++;
				tried++;
				if (kp_free(pool, p) < 0)
					refused++;
			}
		}
	int64_t inv = kt_stat(pool, "integrity.invalid_frees") - inv0;
	fprintf(stderr,
		"  %u segments, colours mask %#x: %ld frees tried, %ld refused, %lld invalid-free events, %ld sized\n",
		nseg, colors, tried, refused, (long long)inv, sized);
	CHECK(refused == tried, "%ld of %ld frees inside metadata or unused slices accepted", tried - refused, tried);
	CHECK(inv == tried, "%lld invalid-free events for %ld bad frees", (long long)inv, tried);
	CHECK(sized == 0, "kp_usable_size gave a size for %ld addresses that are no block", sized);
	long bad = 0;
	for (int i = 0; i < NLIVE; i++) {
		const uint8_t *p = live[i];
		for (size_t j = 0; j < sz[i]; j += 97)
			if (p[j] != (uint8_t)(i & 0xff)) {
				bad++;
				break;
			}
		if (kp_usable_size(pool, p) < sz[i])
			bad++;
		CHECK(kp_free(pool, live[i]) == 0, "free of live block %d", i);
	}
	CHECK(bad == 0, "%ld live blocks changed or shrunk by the bad frees", bad);
	CHECK(kt_stat(pool, "primary.in_use_bytes") == 0, "bytes in use at the end");
	kp_destroy(pool);
}

int main(void)
{
	RUN(test_frees_inside_metadata);
	return ktest_summary();
}
