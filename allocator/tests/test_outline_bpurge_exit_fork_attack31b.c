/*
 * test_outline_bpurge_exit_fork_attack31b.c - s31-att: purge_blocks
 * (outline.c, branch s31-mem) against thread exits (heap_abandon: the spans
 * in hand listed, the heap adopted by the next thread, heap_get) and fork.
 * A stepper thread runs the daemon's pass back to back (kp_daemon_step, 25
 * ms a step: a listed span's free blocks are purged one step after their
 * count settles). Each generation, NT threads take over the blocks the
 * last generation left (verify each, free half of them: cross-thread
 * frees into abandoned or adopted heaps' spans), allocate blocks of odd
 * classes of a page or more (written whole), free two in three of their
 * own, wait two steps (their spans listed with settled free blocks), leave
 * the rest and exit; meanwhile the main thread forks a child, which
 * verifies the blocks left (a snapshot under their lock), allocates,
 * writes and verifies blocks of its own while running passes, and exits
 * with the count of bad blocks. Asserted: no block loses a byte in parent
 * or child, no integrity event, the purge ran.
 * Held on s31-mem a08a69c (release, ASan, TSan; see the report).
 */
#define _GNU_SOURCE 1
#include "ktest.h"
#include "internal.h"

#include <pthread.h>
#include <stdatomic.h>
#include <sys/wait.h>
#include <unistd.h>

#define NT 3
#define M 90
#define GENS (KT_SANITIZED ? 20 : 80)
#define LEFT (NT * M)

static const size_t cls[] = {4608, 5120, 7168, 9216, 13312, 20480, 36864, 65536};
#define NCLS (sizeof cls / sizeof cls[0])

struct blk {
	unsigned char *p;
	size_t n;
	uint64_t salt;
};

static kp_pool *pool;
static atomic_bool stop;
static atomic_ulong bad, steps, salt_next = 1;
static pthread_mutex_t left_mu = PTHREAD_MUTEX_INITIALIZER;
static struct blk left[LEFT * 2];
static unsigned nleft;

static void verify_bad(const struct blk *b)
{
	if (kt_verify(b->p, b->n, b->salt) != KT_OK)
		atomic_fetch_add(&bad, 1);
}

static void *stepper(void *arg)
{
	(void)arg;
	while (!atomic_load(&stop)) {
		kp_daemon_step(pool, 25);
		atomic_fetch_add(&steps, 1);
	}
	return NULL;
}

static void wait_steps(unsigned k)
{
	unsigned long s0 = atomic_load(&steps);
	while (atomic_load(&steps) < s0 + k)
		sched_yield();
}

static void *worker(void *arg)
{
	uint64_t s = (uint64_t)(uintptr_t)arg * 0x9e3779b97f4a7c15ull + 1;
	struct blk mine[M], took[LEFT];
	unsigned nt = 0;
	/* the last generation's blocks: a share, verified, half freed */
	pthread_mutex_lock(&left_mu);
	unsigned share = nleft / 2 + 1;
	while (nleft && nt < share && nt < LEFT)
		took[nt++] = left[--nleft];
	pthread_mutex_unlock(&left_mu);
	for (unsigned i = 0; i < nt; i++) {
		verify_bad(&took[i]);
		if (i % 2 && kp_free(pool, took[i].p) != KP_OK)
			atomic_fetch_add(&bad, 1);
	}
	for (unsigned i = 0; i < M; i++) {
		size_t c = cls[kt_rand(&s) % NCLS];
		mine[i].n = c - 8 - kt_rand(&s) % 64;
		mine[i].p = kp_alloc(pool, mine[i].n, 0);
		if (!mine[i].p) {
			atomic_fetch_add(&bad, 1);
			continue;
		}
		mine[i].salt = atomic_fetch_add(&salt_next, 1);
		kt_fill(mine[i].p, mine[i].n, mine[i].salt);
	}
	for (unsigned i = 0; i < M; i++)
		if (mine[i].p && i % 3) {
			verify_bad(&mine[i]);
			kp_free(pool, mine[i].p);
			mine[i].p = NULL;
		}
	wait_steps(2); /* listed, settled: purged */
	for (unsigned i = 0; i < M; i++)
		if (mine[i].p)
			verify_bad(&mine[i]);
	pthread_mutex_lock(&left_mu);
	for (unsigned i = 0; i < M; i++)
		if (mine[i].p && nleft < sizeof left / sizeof left[0])
			left[nleft++] = mine[i];
		else if (mine[i].p)
			kp_free(pool, mine[i].p);
	for (unsigned i = 0; i < nt; i++)
		if (i % 2 == 0) {
			if (nleft < sizeof left / sizeof left[0])
				left[nleft++] = took[i];
			else
				kp_free(pool, took[i].p);
		}
	pthread_mutex_unlock(&left_mu);
	return NULL; /* the heap abandoned: its spans in hand listed */
}

/* the child: the snapshot of the blocks left verified, passes run, blocks
 * of its own written and verified; its exit status the bad count */
static int child_run(const struct blk *snap, unsigned n)
{
	unsigned b = 0;
	for (unsigned i = 0; i < n; i++)
		b += kt_verify(snap[i].p, snap[i].n, snap[i].salt) != KT_OK;
	struct blk own[64];
	uint64_t s = 4242;
	for (unsigned i = 0; i < 64; i++) {
		own[i].n = cls[kt_rand(&s) % NCLS] - 8 - kt_rand(&s) % 64;
		own[i].p = kp_alloc(pool, own[i].n, 0);
		if (!own[i].p) {
			b++;
			continue;
		}
		own[i].salt = 777 + i;
		kt_fill(own[i].p, own[i].n, own[i].salt);
		if (i % 2) {
			kp_free(pool, own[i].p);
			own[i].p = NULL;
		}
	}
	for (int k = 0; k < 4; k++)
		kp_daemon_step(pool, 25);
	for (unsigned i = 0; i < 64; i++)
		if (own[i].p)
			b += kt_verify(own[i].p, own[i].n, own[i].salt) != KT_OK;
	for (unsigned i = 0; i < n; i++)
		b += kt_verify(snap[i].p, snap[i].n, snap[i].salt) != KT_OK;
	b += kt_stat(pool, "integrity.double_frees") + kt_stat(pool, "integrity.overflows") != 0;
	return b > 100 ? 100 : (int)b;
}

static void test_exit_and_fork_during_purge(void)
{
	pool = kp_create("layout:outline,daemon:off,step_clock:on,prefault:off,decay_ms:100,seed:21");
	REQUIRE(pool, "kp_create: %s", kp_last_error());
	uint64_t purged0 = atomic_load(&pool->purged_bytes);
	pthread_t st;
	pthread_create(&st, NULL, stepper, NULL);
	unsigned child_bad = 0, children = 0, child_died = 0;
	static struct blk snap[LEFT * 2];
	for (int g = 0; g < GENS; g++) {
		pthread_t th[NT];
		for (unsigned t = 0; t < NT; t++)
			pthread_create(&th[t], NULL, worker, (void *)(uintptr_t)(g * NT + t + 1));
		kt_sleep_ms(2 + g % 5);
		/* fork mid-generation: the snapshot under the lock (no thread
		 * moves the blocks left meanwhile) */
		pthread_mutex_lock(&left_mu);
		unsigned n = nleft;
		memcpy(snap, left, n * sizeof snap[0]);
		fflush(stdout);
		pid_t pid = fork();
		if (pid == 0)
			_exit(child_run(snap, n));
		pthread_mutex_unlock(&left_mu);
		REQUIRE(pid > 0, "fork");
		int ws = 0;
		waitpid(pid, &ws, 0);
		children++;
		if (!WIFEXITED(ws))
			child_died++;
		else
			child_bad += WEXITSTATUS(ws);
		for (unsigned t = 0; t < NT; t++)
			pthread_join(th[t], NULL);
	}
	atomic_store(&stop, true);
	pthread_join(st, NULL);
	for (unsigned i = 0; i < nleft; i++) {
		verify_bad(&left[i]);
		if (kp_free(pool, left[i].p) != KP_OK)
			atomic_fetch_add(&bad, 1);
	}
	uint64_t purged = atomic_load(&pool->purged_bytes) - purged0;
	int64_t ev = kt_stat(pool, "integrity.double_frees") + kt_stat(pool, "integrity.invalid_frees") +
		     kt_stat(pool, "integrity.overflows") + kt_stat(pool, "integrity.corruptions");
	printf("   %d generations, %lu passes, %llu KiB purged by purge_blocks; bad blocks %lu; children %u: %u bad "
	       "blocks, %u died; events %lld\n",
	       GENS, atomic_load(&steps), (unsigned long long)(purged >> 10), atomic_load(&bad), children, child_bad,
	       child_died, (long long)ev);
	CHECK(atomic_load(&bad) == 0, "%lu blocks lost bytes", atomic_load(&bad));
	CHECK(child_bad == 0 && child_died == 0, "children: %u bad, %u died", child_bad, child_died);
	CHECK(ev == 0, "%lld integrity events", (long long)ev);
	CHECK(purged > 0, "purge_blocks ran");
	kp_destroy(pool);
}

int main(void)
{
	RUN(test_exit_and_fork_during_purge);
	return ktest_summary();
}
