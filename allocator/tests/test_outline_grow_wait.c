/*
 * test_outline_grow_wait.c - grow_wait_us holds on the default layout
 * (layout:outline) as it does on layout:inline (primary.c, run_alloc): a
 * heap that finds no spare segment waits up to grow_wait_us for the
 * daemon's next one before it maps a segment on its allocation path.
 *
 * A thread takes 4 MiB segments faster than any daemon maps them (60 KiB
 * blocks, none written: 4,096 blocks, 256 MiB, in a tight loop; four
 * rounds of each pool, alternated). With
 * grow_wait_us:1s it must make no mmap itself (kp_stats' system calls by
 * who); the daemon mapped every segment. Without it (grow_wait_us:0, the
 * default) the loop outruns the daemon now and then and maps segments
 * itself (printed: 0-68 calls a round); with no daemon (daemon:off) it
 * always does, which shows the loop needs more than kp_create's spares.
 *
 * Before (session 24's main): outline.c's segment_new never read
 * grow_wait_us; kpdrive's workloads/paced-growth.yaml (grow_wait_us:5000)
 * broke its max_alloc_path_syscalls: 0 in a loaded CI run (1 mmap), and
 * this test's first pool made 20-31 mmap calls on the allocation path.
 */
#include "ktest.h"

#define NBLK 4096
#define ROUNDS 4
#define BLK (60u << 10) /* a 64 KiB block of outline.c's largest class: 64 to a segment */

static void *blk[NBLK];

/* the allocation path's mmap calls while one thread takes NBLK blocks */
static int64_t run(const char *conf)
{
	kp_pool *pool = kp_create(conf);
	if (!pool) {
		CHECK(pool, "kp_create(%s): %s", conf, kp_last_error());
		return -1;
	}
	int got = 0;
	for (int i = 0; i < NBLK; i++)
		got += (blk[i] = kp_alloc(pool, BLK, 0)) != NULL;
	CHECK(got == NBLK, "%d of %d blocks", got, NBLK);
	int64_t maps = kt_stat(pool, "syscalls.alloc.mmap");
	for (int i = 0; i < NBLK; i++)
		if (blk[i])
			kp_free(pool, blk[i]);
	kp_destroy(pool);
	return maps;
}

static void test_waits_for_the_daemon(void)
{
	int64_t waited = 0, plain = 0;
	for (int r = 0; r < ROUNDS; r++) {
		int64_t w = run("layout:outline,grow_wait_us:1000000,primary_max:1g,prefault:off");
		int64_t p = run("layout:outline,primary_max:1g,prefault:off");
		printf("   round %d: alloc-path mmap %lld with grow_wait_us:1s, %lld without\n", r, (long long)w,
		       (long long)p);
		CHECK(w == 0, "round %d: %lld mmap calls on the allocation path with grow_wait_us:1s", r, (long long)w);
		waited += w;
		plain += p;
	}
	printf("   %lld mmap calls on the allocation path in all with grow_wait_us:1s, %lld without\n",
	       (long long)waited, (long long)plain);
	/* the loop needs segments no spare of kp_create's covers: with no
	 * daemon to await, the allocation path maps them (so a 0 above is the
	 * daemon's doing, not a loop too short to need it) */
	int64_t alone = run("layout:outline,grow_wait_us:1000000,daemon:off,primary_max:1g,prefault:off");
	CHECK(alone > 0, "%lld mmap calls on the allocation path without a daemon", (long long)alone);
}

int main(void)
{
	unsetenv("KPOOL_CONF");
	RUN(test_waits_for_the_daemon);
	return ktest_summary();
}
