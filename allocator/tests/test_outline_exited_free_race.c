/*
 * test_outline_exited_free_race.c - s39-exit: a stale free from a thread
 * past kpool's exit hook while the daemon gives the block's segment back.
 * s38-race made the daemon wait before unmapping a spare segment until
 * every thread's slot marked for the pool at a membarrier was seen
 * unmarked (outline.c, ol_readers_quiet), so that a kp_free that loaded
 * the slice map's entry before return_idle cleared it ends before the
 * segment's spans, records and blocks go (test_outline_map_race_attack30b).
 * Left then: a thread whose exit hook (ol_thread_exit) has run has its slot
 * emptied and off the readers' list (ol_reader_exit), and its frees (a
 * pthread key's destructor that runs after kpool's, as a C++ program's
 * thread_local or a library's key) go through free_nested unmarked, on
 * the map's entry and the span it names with nothing but time between
 * the load and the unmap.
 *
 * Each round: a thread allocates 300 blocks of 7,000 bytes (a segment of
 * its own), frees them and ends (its heap abandoned, its segment idle); a
 * racer allocates and frees once (its heap: kpool's exit hook armed, its
 * slot on the readers' list) and ends; its destructor (a key made after
 * kpool's, so run after its exit hook: asserted, the slot names no pool
 * there) frees the stale pointers again and again, while the main thread
 * drives the daemon's passes (daemon:off, kp_daemon_step) in bursts. The
 * test pins itself to one CPU: the racer runs only while the main thread
 * waits for it, so each burst finds it preempted at some point of its
 * free, and a burst that clears the segment's entries and unmaps it (two
 * passes, decay_ms 1, the clock stepped 5 ms each) while the racer sits
 * between free_nested's load of the entry and its reads of the span sends
 * it into unmapped memory when it runs again.
 * Asserted (every build): no crash; each bad free reported once
 * (double_free + invalid_free); the spares still unmapped.
 * On f50fe5a (the test alone, /tmp/s39exit-loop.sh, runs under taskset -c
 * 0 and setarch -R): release 30 runs of 30 failed, SIGSEGV in free_slow
 * (outline.c, pg->fresh of a KP_OL_DFREE) from free_nested from a key's
 * destructor (__nptl_deallocate_tsd), within 0.1-0.6 s; TSan 19 of 20,
 * "SEGV on unknown address" in free_nested's atomic load of the record.
 * With post-exit frees counted (outline.c, ol_exited_enter; s39-exit):
 * release 0 of 30 (400 rounds each, 6-12 passes a run waited for such a
 * free), TSan 0 of 20.
 */
#define _GNU_SOURCE 1
#include "ktest.h"
#include "internal.h"
#include "outline.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>

#define NBLK 300
/* Rounds at least (a round is one chance: the burst that gives the segment
 * back while the racer is preempted inside the window; the window is a few
 * dozen instructions of a free that reports a double free), and the time
 * past which no more are started. */
#define ROUNDS 400
#define ROUNDS_SANITIZED 150
#define ROUND_BUDGET_MS 8000
/* Passes a burst: the segment's entries cleared (return_idle) and it
 * unmapped (idle past decay_ms) in two; the rest for a pass that waited. */
#define BURST_PASSES 4
#define BURSTS 8

static kp_pool *pool;
static void *blk[NBLK];
static pthread_key_t late_key;
static _Atomic int stop_round, in_dtor;
static _Atomic uint64_t made, dtors, after_hook;

static void *owner(void *arg)
{
	(void)arg;
	for (int i = 0; i < NBLK; i++)
		blk[i] = kp_alloc(pool, 7000, 0);
	for (int i = 0; i < NBLK; i++)
		kp_free(pool, blk[i]);
	return NULL;
}

/* The racer's last destructor: stale frees until the round ends. */
static void stale_frees(void *arg)
{
	(void)arg;
	atomic_fetch_add(&dtors, 1);
	if (kp__ol_slot.aid == 0) /* kpool's exit hook ran (ol_thread_exit: the slot names no pool) */
		atomic_fetch_add(&after_hook, 1);
	atomic_store(&in_dtor, 1);
	while (!atomic_load(&stop_round))
		for (int i = 0; i < NBLK && !atomic_load_explicit(&stop_round, memory_order_relaxed); i++) {
			if (!blk[i])
				continue;
			kp_free(pool, blk[i]);
			atomic_fetch_add_explicit(&made, 1, memory_order_relaxed);
		}
}

static void *racer(void *arg)
{
	(void)arg;
	void *q = kp_alloc(pool, 16, 0);
	kp_free(pool, q);
	pthread_setspecific(late_key, (void *)1);
	return NULL;
}

static void test_exited_stale_frees_while_segments_go_back(void)
{
	cpu_set_t one;
	CPU_ZERO(&one);
	int cpu = sched_getcpu();
	CPU_SET(cpu < 0 ? 0 : cpu, &one);
	REQUIRE(sched_setaffinity(0, sizeof one, &one) == 0, "sched_setaffinity");
	pool = kp_create("layout:outline,daemon:off,seed:39,decay_ms:1");
	REQUIRE(pool, "create %s", kp_last_error());
	/* after kp_create's keys (outline.c, ol_exit_key_init): destructors
	 * run in the keys' order */
	REQUIRE(pthread_key_create(&late_key, stale_frees) == 0, "pthread_key_create");
	int rounds = 0, least = KT_SANITIZED ? ROUNDS_SANITIZED : ROUNDS;
	uint64_t t0 = kt_now_ms(), gave_back = 0;
	for (; rounds < least && kt_now_ms() - t0 < ROUND_BUDGET_MS; rounds++) {
		pthread_t o, x;
		pthread_create(&o, NULL, owner, NULL);
		pthread_join(o, NULL);
		atomic_store(&stop_round, 0);
		atomic_store(&in_dtor, 0);
		pthread_create(&x, NULL, racer, NULL);
		while (!atomic_load(&in_dtor))
			sched_yield();
		uint64_t u0 = atomic_load(&pool->ol->unmapped);
		for (int b = 0; b < BURSTS && atomic_load(&pool->ol->unmapped) == u0; b++) {
			/* the racer runs: then it is preempted somewhere in a free */
			uint64_t m = atomic_load(&made);
			while (atomic_load(&made) < m + 20)
				sched_yield();
			for (int k = 0; k < BURST_PASSES; k++)
				kp_daemon_step(pool, 5);
		}
		gave_back += atomic_load(&pool->ol->unmapped) != u0;
		atomic_store(&stop_round, 1);
		pthread_join(x, NULL);
	}
	uint64_t unmapped = atomic_load(&pool->ol->unmapped), waits = atomic_load(&pool->ol->unmap_waits);
	uint64_t df = atomic_load(&pool->double_frees), inv = atomic_load(&pool->invalid_frees);
	printf("  %d rounds (%lu gave a segment back), %lu stale frees after the exit hook: double_free %lu + "
	       "invalid_free %lu; %lu segments unmapped, %lu passes waited\n",
	       rounds, (unsigned long)gave_back, (unsigned long)made, (unsigned long)df, (unsigned long)inv,
	       (unsigned long)unmapped, (unsigned long)waits);
	CHECK(atomic_load(&dtors) == (uint64_t)rounds, "%lu destructors ran for %d rounds",
	      (unsigned long)atomic_load(&dtors), rounds);
	CHECK(atomic_load(&after_hook) == atomic_load(&dtors), "%lu of %lu destructors ran before kpool's exit hook",
	      (unsigned long)(atomic_load(&dtors) - atomic_load(&after_hook)), (unsigned long)atomic_load(&dtors));
	CHECK(df + inv == made, "%lu bad frees reported as %lu", (unsigned long)made, (unsigned long)(df + inv));
	CHECK(gave_back > 0 && unmapped > 0, "no segment went back during the stale frees: the race not met");
	pthread_key_delete(late_key);
	kp_destroy(pool);
}

int main(void)
{
	RUN(test_exited_stale_frees_while_segments_go_back);
	return ktest_summary();
}
