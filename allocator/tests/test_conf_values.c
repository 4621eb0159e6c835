/*
 * test_conf_values.c - conf.c's own number parser and case-insensitive
 * compare (they replaced strtoull and strcasecmp: test_create_libc.c), and
 * os.c's limit of the machine (sysinfo and the limit files read through
 * syscall(), where sysconf and open were).
 *
 * 1. A bad value of every kind (past 64 bits before or after its suffix,
 *    negative, empty, hex, spaces inside, junk after, an unknown suffix, a
 *    number past the option's range, an int past 32 bits) is refused with
 *    EINVAL and an error naming the option and the value: never a silent
 *    wrap to a small number.
 * 2. Good values parse to their exact numbers: each suffix in both cases,
 *    with b, ib and i after it, booleans and auto in any case, the 64-bit
 *    edge of seed.
 * 3. primary_max:0 resolves to what libc's own sysconf(_SC_PHYS_PAGES)
 *    and /proc/meminfo's swap say, or a cgroup limit file's number under
 *    it (a missing file: no limit).
 */
#define _GNU_SOURCE 1
#include "ktest.h"

#include "internal.h"

static void test_bad_values(void)
{
	static const struct {
		const char *key, *value;
	} bad[] = {
		{"primary_max", "99999999999999999999g"}, /* past 64 bits in its digits */
		{"primary_max", "18446744073709551616"},  /* 2^64 */
		{"primary_max", "17179869184g"},	  /* 2^34 g: 2^64 */
		{"primary_max", "17179869183g"},	  /* fits 64 bits, past the max */
		{"primary_max", "16777216g"},		  /* 2^54: past 2^44 */
		{"primary_max", "18014398509481984k"},	  /* 2^54 k: wraps to 0 in 64 bits */
		{"primary_max", "-1"},
		{"primary_max", "-4m"},
		{"primary_max", "+4m"},
		{"primary_max", "0x10"},
		{"primary_max", "4t"},
		{"primary_max", "4T"},
		{"primary_max", "4 m"},
		{"primary_max", " 4m"},
		{"primary_max", "4mx"},
		{"primary_max", "4mbb"},
		{"primary_max", "4mib!"},
		{"primary_max", "4k4"},
		{"primary_max", "1e9"},
		{"primary_max", "m"},
		{"high_wm", "autox"},
		{"high_wm", "aut"},
		{"high_wm", "auto4"},
		{"backup", "AUTOMATIC"},
		{"low_wm", "auto"}, /* auto only for high_wm and backup */
		{"daemon", "o"},
		{"daemon", "onn"},
		{"daemon", "of"},
		{"daemon", "yes"},
		{"daemon", "2"},
		{"daemon", "0n"},
		{"daemon", "tru"},
		{"daemon", "\x0f\x0e"},	    /* "on" with bit 5 clear and 6 too: no letters */
		{"decay_ms", "4294967296"}, /* 2^32: past the range, not 0 */
		{"decay_ms", "4294968296"}, /* 2^32 + 1000: not 1000 */
		{"decay_ms", "3600001"},
		{"decay_ms", "1k"}, /* no suffix on an int */
		{"log_fd", "65536"},
		{"critical_wm", "4294967297"}, /* not 1 */
		{"seed", "18446744073709551616"},
		{"seed", "99999999999999999999999"},
		{"tcache_bytes", "65m"},
		{"primary_initial", "1099511627777"}, /* 2^40 + 1 */
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		char conf[160];
		snprintf(conf, sizeof conf, "%s:%s", bad[i].key, bad[i].value);
		errno = 0;
		kp_pool *p = kp_create(conf);
		int e = errno;
		const char *msg = kp_last_error();
		CHECK(p == NULL, "kp_create(\"%s\") accepted it", conf);
		CHECK(e == EINVAL, "kp_create(\"%s\"): errno %d", conf, e);
		CHECK(msg && strstr(msg, bad[i].key) && strstr(msg, bad[i].value),
		      "the error for \"%s\" names not both the option and the value: \"%s\"", conf, msg ? msg : "");
		kp_destroy(p);
	}
	/* an empty value */
	CHECK(kp_create("primary_max:") == NULL && strstr(kp_last_error(), "primary_max"), "primary_max: accepted");
	CHECK(kp_create("seed:") == NULL && strstr(kp_last_error(), "seed"), "seed: accepted");
	/* a value longer than the parser's buffer */
	CHECK(kp_create("primary_max:0000000000000000000000000000000000000000000000000000000000000000001") == NULL,
	      "a 67-digit value accepted");
	printf("   %zu bad values refused, each naming its option and value\n", sizeof bad / sizeof bad[0] + 3);
}

static void test_good_values(void)
{
	static const struct {
		const char *conf;
		size_t off, size;
		uint64_t want;
	} good[] = {
#define F(f) offsetof(kp__conf, f), sizeof(((kp__conf *)0)->f)
		{"primary_initial:4k", F(primary_initial), 4096},
		{"primary_initial:4K", F(primary_initial), 4096},
		{"primary_initial:3m", F(primary_initial), 3u << 20},
		{"primary_initial:3M", F(primary_initial), 3u << 20},
		{"primary_initial:1g", F(primary_initial), 1u << 30},
		{"primary_initial:1G", F(primary_initial), 1u << 30},
		{"primary_max:16384g,primary_initial:1024G", F(primary_initial), 1ull << 40},
		{"primary_max:16384g,primary_initial:1099511627776", F(primary_initial), 1ull << 40},
		{"primary_initial:2mb", F(primary_initial), 2u << 20},
		{"primary_initial:2MB", F(primary_initial), 2u << 20},
		{"primary_initial:2MiB", F(primary_initial), 2u << 20},
		{"primary_initial:2mib", F(primary_initial), 2u << 20},
		{"primary_initial:0", F(primary_initial), 0},
		{"primary_initial:007", F(primary_initial), 7},
		{"primary_max:17592186044416", F(primary_max), 1ull << 44},
		{"primary_max:16384g", F(primary_max), 1ull << 44},
		{"primary_max:16777216m", F(primary_max), 1ull << 44},
		{"high_wm:auto", F(high_wm), KP_WM_AUTO},
		{"high_wm:AUTO", F(high_wm), KP_WM_AUTO},
		{"high_wm:Auto", F(high_wm), KP_WM_AUTO},
		{"high_wm:16m", F(high_wm), 16u << 20},
		{"backup:aUtO", F(backup), KP_WM_AUTO},
		{"backup:64m", F(backup), 64u << 20}, /* 16g, the range's top: test_machine_limit */
		{"daemon:ON", F(daemon), 1},
		{"daemon:On", F(daemon), 1},
		{"daemon:TRUE", F(daemon), 1},
		{"daemon:1", F(daemon), 1},
		{"daemon:OFF", F(daemon), 0},
		{"daemon:False", F(daemon), 0},
		{"daemon:0", F(daemon), 0},
		{"seed:18446744073709551615", F(seed), UINT64_MAX},
		{"seed:18446744073709551614", F(seed), UINT64_MAX - 1},
		{"seed:4294967296", F(seed), 1ull << 32},
		{"decay_ms:3600000", F(decay_ms), 3600000},
		{"decay_ms:0", F(decay_ms), 0},
		{"critical_wm:100", F(critical_wm), 100},
		{"log_fd:65535", F(log_fd), 65535},
#undef F
	};
	for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
		kp__conf c;
		int rc = kp__conf_load(&c, good[i].conf);
		CHECK(rc == 0, "\"%s\" refused: %s", good[i].conf, kp_last_error());
		if (rc)
			continue;
		uint64_t v = 0;
		const char *f = (const char *)&c + good[i].off;
		if (good[i].size == 8)
			memcpy(&v, f, 8);
		else if (good[i].size == 4)
			v = *(const uint32_t *)f;
		else
			v = *(const uint8_t *)f;
		CHECK(v == good[i].want, "\"%s\" read as %llu, want %llu", good[i].conf, (unsigned long long)v,
		      (unsigned long long)good[i].want);
	}
	printf("   %zu good values read exactly\n", sizeof good / sizeof good[0]);
}

/* A number file's value as the test reads it (stdio), or SIZE_MAX. */
static size_t file_value(const char *path)
{
	FILE *f = fopen(path, "r");
	if (!f)
		return SIZE_MAX;
	unsigned long long v = 0;
	int ok = fscanf(f, "%llu", &v) == 1;
	fclose(f);
	return ok ? (size_t)v : SIZE_MAX;
}

static void test_machine_limit(void)
{
	long pages = sysconf(_SC_PHYS_PAGES), psize = sysconf(_SC_PAGESIZE);
	REQUIRE(pages > 0 && psize > 0, "sysconf");
	size_t phys = (size_t)pages * (size_t)psize, swap = 0;
	FILE *f = fopen("/proc/meminfo", "r");
	char line[256];
	while (f && fgets(line, sizeof line, f)) {
		unsigned long long kb;
		if (sscanf(line, "SwapTotal: %llu kB", &kb) == 1)
			swap = (size_t)kb << 10;
	}
	if (f)
		fclose(f);
	size_t machine = phys + swap, got = kp__os_memory_limit();
	/* the cgroup files os.c reads: v1's, and v2's along this process's path */
	size_t cg = file_value("/sys/fs/cgroup/memory/memory.limit_in_bytes");
	f = fopen("/proc/self/cgroup", "r");
	while (f && fgets(line, sizeof line, f)) {
		if (strncmp(line, "0::/", 4))
			continue;
		line[strcspn(line, "\n")] = 0;
		for (size_t len = strlen(line + 3); len >= 1;) {
			char path[512];
			snprintf(path, sizeof path, "/sys/fs/cgroup%.*s/memory.max", (int)len, line + 3);
			size_t v = file_value(path);
			cg = v < cg ? v : cg;
			while (len > 1 && line[3 + len - 1] != '/')
				len--;
			if (len <= 1)
				break;
			len--;
		}
	}
	if (f)
		fclose(f);
	/* v1's group of this process too, and its ancestors, where mounted */
	f = fopen("/proc/self/cgroup", "r");
	while (f && fgets(line, sizeof line, f)) {
		char *g = strstr(line, ":memory:/");
		if (!g)
			continue;
		g += 8;
		g[strcspn(g, "\n")] = 0;
		for (size_t len = strlen(g); len >= 1;) {
			char path[512];
			snprintf(path, sizeof path, "/sys/fs/cgroup/memory%.*s/memory.limit_in_bytes", (int)len, g);
			size_t v = file_value(path);
			cg = v < cg ? v : cg;
			while (len > 1 && g[len - 1] != '/')
				len--;
			if (len <= 1)
				break;
			len--;
		}
	}
	if (f)
		fclose(f);
	size_t want = cg < machine ? cg : machine;
	printf("   physical %zu + swap %zu (sysconf, /proc/meminfo), cgroup %zu: os.c says %zu\n", phys, swap, cg, got);
	CHECK(got == want, "kp__os_memory_limit %zu, libc's sysconf and the files say %zu", got, want);
	KT_POOL(pool, "daemon:off");
	/* primary_max:0 is the limit less a sixteenth and what the process
	 * holds (this test: well under 256 MiB) */
	size_t room = want - want / 16;
	size_t top = room > (1ull << 44) ? (size_t)1 << 44 : room;
	int64_t max = kt_stat(pool, "primary.max_bytes");
	CHECK(max <= (int64_t)top && max + (256 << 20) >= (int64_t)top,
	      "max_bytes %lld, want %zu less what the process holds", (long long)max, top);
	kp_destroy(pool);
	/* The top of backup's range, 16g, where the machine has room for it; a
	 * reserve past the room is refused, naming it */
	kp__conf c;
	int rc = kp__conf_load(&c, "backup:16g");
	if ((16ull << 30) + (256u << 20) <= room)
		CHECK(rc == 0 && c.backup == 16ull << 30, "backup:16g refused with room %zu: %s", room,
		      kp_last_error());
	else if ((16ull << 30) > room)
		CHECK(rc < 0 && strstr(kp_last_error(), "backup (17179869184)"), "backup:16g with room %zu: rc %d, %s",
		      room, rc, kp_last_error());
	printf("   backup:16g with room %zu: %s\n", room, rc ? kp_last_error() : "taken");
}

int main(void)
{
	unsetenv("KPOOL_CONF");
	RUN(test_bad_values);
	RUN(test_good_values);
	RUN(test_machine_limit);
	return ktest_summary();
}
