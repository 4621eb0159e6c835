/*
 * test_preload_fork_locks_attack31.c - a fork child of a threaded program
 * under the preload library inherits the preload's own locks free.
 *
 * The preload keeps two mutexes of its own, beside the pool's (which
 * pool.c's fork handlers take and give back): drain_lock, held by a sweep of
 * the event ring (every 1024 allocations of each thread, and at exit), and
 * big_lock, held over the table of blocks aligned past 4096. A thread that
 * held one when another thread forked left it held in the child forever: a
 * sweep that starts while the fork runs even waits, drain_lock in hand, for
 * the registry lock that pool.c's fork handler holds, so a fork beside a
 * busy thread often meets it. The child's exit (the preload's destructor
 * sweeps with the lock) then hung: 7 of 100 children of a program with two
 * allocating threads (attack helper s31-real, `forkexit.c`), each waiting on
 * drain_lock in preload_fini. The same for a child's free of a big
 * alignment's block while big_lock was held.
 *
 * Each mode runs under the preload (preload_rig.h) and forks up to
 * CHILDREN children beside two threads that allocate; each child must end
 * within CHILD_LIMIT_S. "exit": the children free a block and exit(0) (the
 * destructors run); "big": the threads churn blocks aligned to 8 KiB and
 * the children free such a block made before the fork, then _exit(0).
 * Before the fix: mode exit, the first hung child within the first 30.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>

#include "preload_rig.h"

/* 7 of 100 children hung before the fix: no hang in 200 is a chance of
 * 0.93^200 (about 5e-7) for the bug; 200 forks take 2-4 s here. */
#define CHILDREN 200
/* A child frees a block and exits within milliseconds; 10 s is for a
 * machine loaded many times over. */
#define CHILD_LIMIT_S 10
/* The whole run: CHILDREN forks, or one hang and its limit, on a loaded
 * machine. */
#define RUN_LIMIT_S 120

static atomic_bool stop;
static bool big_mode;

static void *churn(void *arg)
{
	(void)arg;
	while (!atomic_load(&stop)) {
		void *p[16];
		for (int i = 0; i < 16; i++) {
			if (big_mode && i % 4 == 0) {
				if (posix_memalign(&p[i], 8192, 64) != 0)
					p[i] = NULL;
			} else {
				p[i] = malloc(24 + (size_t)i * 8);
			}
		}
		for (int i = 0; i < 16; i++)
			free(p[i]);
	}
	return NULL;
}

/* The program under the preload: 0 when every child ended in time. */
static int program(const char *mode)
{
	big_mode = !strcmp(mode, "big");
	void *before = NULL;
	if (posix_memalign(&before, 16384, 100) != 0)
		return 2;
	pthread_t t[2];
	for (int i = 0; i < 2; i++)
		pthread_create(&t[i], NULL, churn, NULL);
	int hung = -1;
	for (int i = 0; i < CHILDREN && hung < 0; i++) {
		pid_t c = fork();
		if (c == 0) {
			if (big_mode) {
				free(before);
				_exit(0);
			}
			free(malloc(100));
			exit(0);
		}
		int st = 0;
		bool ended = false;
		for (uint64_t end = kt_now_ms() + CHILD_LIMIT_S * 1000u; !ended && kt_now_ms() < end;) {
			ended = waitpid(c, &st, WNOHANG) == c;
			if (!ended)
				kt_sleep_ms(2);
		}
		if (!ended) {
			hung = i;
			kill(c, SIGKILL);
			waitpid(c, &st, 0);
		} else if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
			fprintf(stderr, "child %d ended with status 0x%x\n", i, st);
			hung = i;
		}
	}
	atomic_store(&stop, true);
	for (int i = 0; i < 2; i++)
		pthread_join(t[i], NULL);
	free(before);
	if (hung >= 0) {
		fprintf(stderr, "mode %s: child %d of %d did not end within %d s (or failed)\n", mode, hung, CHILDREN,
			CHILD_LIMIT_S);
		return 1;
	}
	return 0;
}

static void run_mode(const char *mode)
{
	if (pr_skip())
		return;
	pr_result r;
	REQUIRE(pr_run(mode, RUN_LIMIT_S, &r) == 0, "could not start the preloaded run");
	CHECK(pr_ok(&r), "mode %s: %s, status 0x%x: %s", mode, r.timed_out ? "timed out" : "failed", r.status, r.err);
}

static void test_children_of_a_threaded_program_exit(void)
{
	run_mode("exit");
}

static void test_children_free_a_big_alignment_while_threads_make_them(void)
{
	run_mode("big");
}

int main(int argc, char **argv)
{
	if (pr_preloaded(argc, argv))
		return program(argv[2]);
	RUN(test_children_of_a_threaded_program_exit);
	RUN(test_children_free_a_big_alignment_while_threads_make_them);
	return ktest_summary();
}
