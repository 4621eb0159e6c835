/*
 * test_huge_cache_miss.c - a huge request that none of the kept huge
 * mappings serves, and that maps a new one, gives back the pages the kept
 * ones hold (huge.c, huge_cache_missed); a request one of them serves
 * takes it and leaves the others' pages alone.
 *
 * A freed huge block's mapping is kept (at most four) for the next request
 * it fits with at most half of it to spare. CPython's test_unicode under the
 * preload frees two lists of 8.5 and 9 MiB and then asks for strings of
 * 4.4 MiB: no kept mapping fits them (each has more than half to spare), so
 * each is mapped and faulted in while the 17 MiB of the freed lists stay
 * resident until the daemon's trim; its peak was 242-249 MiB, 237-239 with
 * the cache compiled out (s30). Checked, the daemon off (no pass gives
 * anything back):
 *   - two blocks of 9 and 10 MiB written and freed, then two of 4 MiB
 *     (a miss each): the kept mappings' pages are no longer resident
 *     (mincore), their mappings still kept (huge_cached_bytes), and a
 *     9 MiB request takes one again without an mmap, its bytes zero for
 *     KP_ZERO;
 *   - two blocks of 9 and 3 MiB freed, then a 9 MiB request (served by a
 *     kept mapping): no system call, and the 3 MiB kept mapping keeps its
 *     pages;
 *   - the same 9 and 10 MiB then 4 MiB run with checks off.
 */
#define _GNU_SOURCE
#include "ktest.h"

#include "internal.h"

#include <sys/mman.h>

#define MIB ((size_t)1 << 20)
/* <sys/mman.h>'s name for it from glibc 2.37; the kernel's number */
#ifdef MADV_COLLAPSE
#define KT_MADV_COLLAPSE MADV_COLLAPSE
#else
#define KT_MADV_COLLAPSE 25
#endif

/* Resident bytes of [p, p + n) outside the live blocks [l[i], l[i] + ln[i]):
 * a mapping given back may be mapped again for a live block. */
static size_t resident_outside(const char *p, size_t n, char *const *l, const size_t *ln, unsigned nl)
{
	size_t res = 0;
	for (size_t off = 0; off < n; off += KP_PAGE) {
		const char *pg = p + off;
		bool live = false;
		for (unsigned i = 0; i < nl; i++)
			live |= pg >= l[i] && pg < l[i] + ln[i];
		if (!live)
			res += kt_not_resident(pg, KP_PAGE) == 0 ? KP_PAGE : 0;
	}
	return res;
}

/* The VmFlags line of the mapping holding p (/proc/self/smaps), or "". */
static void vm_flags(const void *p, char *out, size_t n)
{
	out[0] = 0;
	FILE *f = fopen("/proc/self/smaps", "r");
	if (!f)
		return;
	char line[512];
	bool in = false;
	while (fgets(line, sizeof line, f)) {
		unsigned long lo, hi;
		if (sscanf(line, "%lx-%lx ", &lo, &hi) == 2 && strchr(line, '-') < strchr(line, ' '))
			in = (uintptr_t)p >= lo && (uintptr_t)p < hi;
		else if (in && strncmp(line, "VmFlags:", 8) == 0) {
			size_t len = strlen(line + 8);
			len = len < n - 1 ? len : n - 1;
			memcpy(out, line + 8, len);
			out[len] = 0;
			break;
		}
	}
	fclose(f);
}

static int64_t syscalls_alloc(kp_pool *pool)
{
	return kt_stat(pool, "syscalls.alloc.mmap") + kt_stat(pool, "syscalls.alloc.munmap") +
	       kt_stat(pool, "syscalls.alloc.madvise") + kt_stat(pool, "syscalls.alloc.mprotect");
}

static void miss_gives_kept_pages_back(const char *conf)
{
	KT_POOL(pool, conf);
	static const size_t big[2] = {9 * MIB, 10 * MIB};
	char *freed[2];
	for (unsigned i = 0; i < 2; i++) {
		freed[i] = kp_alloc(pool, big[i], 0);
		REQUIRE(freed[i] != NULL, "kp_alloc(%zu): %s", big[i], kp_last_error());
		memset(freed[i], 0x33, big[i]);
	}
	for (unsigned i = 0; i < 2; i++)
		REQUIRE(kp_free(pool, freed[i]) == KP_OK, "kp_free");
	int64_t kept = kt_stat(pool, "primary.huge_cached_bytes");
	REQUIRE(kept >= (int64_t)(big[0] + big[1]), "both freed mappings kept (%lld bytes)", (long long)kept);
	/* 4 MiB: each kept mapping has more than half of it to spare */
	char *live[2];
	size_t live_n[2] = {4 * MIB, 4 * MIB};
	for (unsigned i = 0; i < 2; i++) {
		live[i] = kp_alloc(pool, live_n[i], 0);
		REQUIRE(live[i] != NULL, "kp_alloc(%zu): %s", live_n[i], kp_last_error());
		memset(live[i], 0x44, live_n[i]);
	}
	/* khugepaged's scan, done now: it makes a 2 MiB range with a page
	 * resident a huge page (here the headers' pages in each kept mapping's
	 * first 2 MiB), and did so within 10-21 s here, so the check failed
	 * when the machine's load held this test that long (ASan: 4,080 KiB,
	 * 2 x 2,040, resident). MADV_COLLAPSE (Linux 6.1) collapses what
	 * khugepaged may; refused (EINVAL) where it may not or on an older
	 * kernel, so its result is not checked. */
	for (unsigned i = 0; i < 2; i++)
		(void)madvise((void *)((uintptr_t)freed[i] & ~(uintptr_t)(2 * MIB - 1)), 2 * MIB, KT_MADV_COLLAPSE);
	size_t res = 0;
	for (unsigned i = 0; i < 2; i++)
		res += resident_outside(freed[i], big[i], live, live_n, 2);
	/* the block header's page of each may stay (the segment header before
	 * the payload is not in the range) */
	CHECK(res <= 2 * KP_PAGE,
	      "%s: %zu KiB of the freed 9 and 10 MiB blocks resident beside 8 MiB mapped anew for requests they missed",
	      conf, res >> 10);
	CHECK(kt_stat(pool, "primary.huge_cached_bytes") == kept, "%s: the kept mappings stay kept (%lld, was %lld)",
	      conf, (long long)kt_stat(pool, "primary.huge_cached_bytes"), (long long)kept);
	/* a purged kept mapping still serves its size: no mmap, zero for KP_ZERO */
	int64_t mmaps = kt_stat(pool, "syscalls.alloc.mmap");
	char *again = kp_alloc(pool, big[0], KP_ZERO);
	REQUIRE(again != NULL, "kp_alloc(%zu, KP_ZERO): %s", big[0], kp_last_error());
	CHECK(kt_stat(pool, "syscalls.alloc.mmap") == mmaps, "%s: a kept mapping served %zu MiB again without an mmap",
	      conf, big[0] >> 20);
	/* advised off huge pages while purged and kept, on again for its block
	 * (thp:on, the default) */
	char flags[256];
	vm_flags(again, flags, sizeof flags);
	CHECK(!flags[0] || (strstr(flags, " hg") && !strstr(flags, " nh")),
	      "%s: the block from a purged kept mapping is advised huge pages again (VmFlags:%s)", conf, flags);
	size_t nonzero = 0;
	for (size_t off = 0; off < big[0]; off += 512)
		nonzero += again[off] != 0;
	nonzero += again[big[0] - 1] != 0;
	CHECK(nonzero == 0, "%s: %zu bytes not zero in a KP_ZERO block from a kept mapping", conf, nonzero);
	kt_fill(again, big[0], 7);
	for (unsigned i = 0; i < 2; i++) {
		size_t bad = 0;
		for (size_t off = 0; off < live_n[i]; off += 4096)
			bad += (unsigned char)live[i][off] != 0x44;
		CHECK(bad == 0, "%s: live block %u changed (%zu pages)", conf, i, bad);
		REQUIRE(kp_free(pool, live[i]) == KP_OK, "kp_free");
	}
	CHECK(kt_verify(again, big[0], 7) == KT_OK, "%s: the block from the kept mapping keeps what was written", conf);
	REQUIRE(kp_free(pool, again) == KP_OK, "kp_free");
	CHECK(kt_stat(pool, "integrity.corruptions") == 0 && kt_stat(pool, "integrity.double_frees") == 0,
	      "%s: no integrity event", conf);
	kp_destroy(pool);
}

static void test_miss_gives_kept_pages_back(void)
{
	miss_gives_kept_pages_back("daemon:off,prefault:off,seed:9");
}

static void test_miss_gives_kept_pages_back_unchecked(void)
{
	miss_gives_kept_pages_back("daemon:off,prefault:off,seed:9,checks:off");
}

static void test_hit_leaves_other_kept_pages(void)
{
	KT_POOL(pool, "daemon:off,prefault:off,seed:9");
	char *a = kp_alloc(pool, 9 * MIB, 0), *b = kp_alloc(pool, 3 * MIB, 0);
	REQUIRE(a && b, "kp_alloc: %s", kp_last_error());
	memset(a, 0x11, 9 * MIB);
	memset(b, 0x22, 3 * MIB);
	REQUIRE(kp_free(pool, a) == KP_OK && kp_free(pool, b) == KP_OK, "kp_free");
	int64_t calls = syscalls_alloc(pool);
	char *c = kp_alloc(pool, 9 * MIB, 0);
	REQUIRE(c != NULL, "kp_alloc: %s", kp_last_error());
	CHECK(c == a, "the kept 9 MiB mapping serves 9 MiB again (%p, was %p)", (void *)c, (void *)a);
	CHECK(syscalls_alloc(pool) == calls, "%lld system calls for a request a kept mapping serves",
	      (long long)(syscalls_alloc(pool) - calls));
	size_t missing = kt_not_resident(b, 3 * MIB);
	CHECK(missing == 0, "%zu pages of the other kept mapping given back on a hit", missing);
	REQUIRE(kp_free(pool, c) == KP_OK, "kp_free");
	kp_destroy(pool);
}

int main(void)
{
	RUN(test_miss_gives_kept_pages_back);
	RUN(test_miss_gives_kept_pages_back_unchecked);
	RUN(test_hit_leaves_other_kept_pages);
	return ktest_summary();
}
