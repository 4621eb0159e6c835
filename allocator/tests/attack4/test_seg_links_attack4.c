/*
 * test_seg_links_attack4.c - FAILING (sess16-hA4): several walks of the
 * segment list follow a normal segment's next link unchecked, and a link
 * rewritten by an overflow into the segment's header makes kp_destroy of
 * one pool release another pool's live segments (their blocks unmapped
 * under their owner, kp_free of them refused), crashes kp_destroy and
 * kp_stats_json, and hangs kp_stats_json and the daemon's pass with the
 * pool lock held.
 *
 * The allocation path's walks vet each link (seg_step: the pagemap must
 * say the address is a segment of this pool); these do not, nor check the
 * magic of what they reach: kp__primary_release_all (kp_destroy),
 * kp__stats_primary (kp_stats_json), and the daemon's probe, short_runs,
 * prefault_front and others (daemon.c). The
 * attacker of test_forgery.c overflows past its big block in segment A
 * into segment B's header, keeps the magic and seal, and sets B's next:
 *   - test_destroy_other_pool: to a segment of a second pool that holds a
 *     live block V: kp_destroy(first pool) takes V's segment out of the
 *     pagemap and unmaps it; the second pool's owner then finds V gone
 *     (mincore: ENOMEM) and kp_free(second pool, V) refused;
 *   - test_destroy_crash: to 0x1000: kp_destroy dies of SIGSEGV;
 *   - test_stats_crash: to 0x1000: kp_stats_json dies of SIGSEGV;
 *   - test_loop_hangs: to B itself: kp_stats_json and a daemon pass
 *     (kp_daemon_step) never return, the pool lock held (every thread that
 *     needs it then hangs too).
 *
 * Build and run (from the repository root):
 *   make -C allocator VARIANT=release build/release/tests/attack4/test_seg_links_attack4 &&
 *     allocator/build/release/tests/attack4/test_seg_links_attack4
 *   (VARIANT=asan: the same with asan in both paths)
 */
#define _GNU_SOURCE 1
#include "seg_rig.h"

#include <pthread.h>
#include <stdatomic.h>

static void set_next(rig *r, void *next)
{
	unsigned char hdr[sizeof(kp__seg)];
	size_t n = offsetof(kp__seg, next) + sizeof(void *);
	rig_hdr_read(r, hdr, n);
	memcpy(hdr + offsetof(kp__seg, next), &next, sizeof next);
	rig_hdr_write(r, hdr, n);
}

static void test_destroy_other_pool(void)
{
	kp_pool *p2 = kp_create("primary_initial:4m,backup:1m,daemon:off");
	REQUIRE(p2, "second pool");
	char *V = kp_alloc(p2, 5000, 0);
	REQUIRE(V, "V");
	memset(V, 0x56, 5000);
	rig r;
	if (!rig_open(&r, "primary_initial:16m,primary_max:16m,backup:1m,daemon:off")) {
		printf("   no two segments back to back (skipped)\n");
		return;
	}
	kp__seg *vseg = kp__pagemap_get(V);
	set_next(&r, vseg);
	kp_destroy(r.pool);
	unsigned char vec;
	int gone = mincore((void *)((uintptr_t)V & ~(uintptr_t)(KP_PAGE - 1)), KP_PAGE, &vec) != 0 && errno == ENOMEM;
	int rc = kp_free(p2, V); /* the pagemap only: V's memory is not read */
	printf("   after kp_destroy(first pool): the second pool's live V %s; kp_free(second, V) = %d\n",
	       gone ? "is unmapped" : "is mapped", rc);
	CHECK(!gone, "kp_destroy of one pool unmapped another pool's live block");
	CHECK(rc == 0, "the second pool refused its own live block (rc %d)", rc);
}

static void test_destroy_crash(void)
{
	rig r;
	if (!rig_open(&r, "primary_initial:16m,primary_max:16m,backup:1m,daemon:off")) {
		printf("   no two segments back to back (skipped)\n");
		return;
	}
	set_next(&r, (void *)0x1000);
	kp_destroy(r.pool); /* SIGSEGV here before a fix */
	CHECK(1, "survived");
}

static void test_stats_crash(void)
{
	rig r;
	if (!rig_open(&r, "primary_initial:16m,primary_max:16m,backup:1m,daemon:off")) {
		printf("   no two segments back to back (skipped)\n");
		return;
	}
	set_next(&r, (void *)0x1000);
	char buf[8192];
	int rc = kp_stats_json(r.pool, buf, sizeof buf); /* SIGSEGV here before a fix */
	CHECK(rc >= 0, "kp_stats_json: %d", rc);
}

static kp_pool *loop_pool;
static atomic_int loop_done;

static void *loop_calls(void *arg)
{
	char buf[8192];
	if (arg)
		kp_daemon_step(loop_pool, 100);
	else
		kp_stats_json(loop_pool, buf, sizeof buf);
	atomic_store(&loop_done, 1);
	return NULL;
}

/* Each call on a thread of its own, given 3 s; a hung one is reported and
 * left (the test's process exits). */
static void loop_case(bool daemon)
{
	rig r;
	if (!rig_open(&r, "primary_initial:16m,primary_max:16m,backup:1m,daemon:off")) {
		printf("   no two segments back to back (skipped)\n");
		return;
	}
	set_next(&r, r.segb); /* B's next: B */
	loop_pool = r.pool;
	atomic_store(&loop_done, 0);
	pthread_t th;
	REQUIRE(pthread_create(&th, NULL, loop_calls, daemon ? (void *)1 : NULL) == 0, "thread");
	for (int i = 0; i < 300 && !atomic_load(&loop_done); i++)
		kt_sleep_ms(10);
	int done = atomic_load(&loop_done);
	printf("   %s with B's next -> B: %s\n", daemon ? "kp_daemon_step" : "kp_stats_json",
	       done ? "returned" : "still running after 3 s");
	CHECK(done, "%s hung on a segment list loop", daemon ? "a daemon pass" : "kp_stats_json");
	if (done)
		pthread_join(th, NULL);
	fflush(stdout);
	fflush(stderr);
}

static void test_loop_hangs(void)
{
	loop_case(false);
	loop_case(true);
}

int main(void)
{
	RUN(test_destroy_other_pool);
	RUN(test_destroy_crash);
	RUN(test_stats_crash);
	RUN(test_loop_hangs);
	return ktest_summary();
}
