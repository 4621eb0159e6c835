/*
 * test_fork_churn_attack3.c - fork() at random moments while the daemon
 * grows, shrinks, purges and trims (daemon_interval_ms 1, decay_ms 0) and
 * two threads allocate and free huge blocks (4-12 MiB: the huge cache, its
 * evictions for a grow), large runs and small blocks, near primary_max:
 * attacks on the fork handlers (pool.c: release_mu, pool->growing,
 * huge_evicted) that held.
 *
 * 40 forks (fewer under the sanitizers). Each child (one thread, the pool
 * inherited, alarm 20 s: a lock left held would hang it) checks that
 *   - the pool's capacity is the segments on its list (none a cut grow
 *     reserved: kp__primary_fork_child);
 *   - the forking thread's own blocks (small, large and a huge one) still
 *     hold their bytes;
 *   - it can allocate, write and free small, large and huge blocks, step
 *     its daemon, flush and destroy the pool, with no integrity event;
 * and the parent's workers verify every block they kept, with no event.
 */
#define _GNU_SOURCE 1
#include "ktest.h"

#include "internal.h"

#include <pthread.h>
#include <signal.h>
#include <sys/wait.h>

#define CONF "primary_initial:8m,primary_max:160m,daemon_interval_ms:1,decay_ms:0,backup:0,seed:9"
#define NW 2
#define KEEP 24

static kp_pool *pool;
static atomic_int stop;
static atomic_uint bad_bytes;

typedef struct kept {
	unsigned char *p;
	size_t n;
	unsigned char v;
} kept;

static void fill(kept *k, unsigned char *p, size_t n, unsigned char v)
{
	k->p = p;
	k->n = n;
	k->v = v;
	if (!p)
		return;
	/* first and last bytes and a stride: a huge block is not touched whole */
	for (size_t i = 0; i<n; i += n> 65536 ? 4093 : 1)
		p[i] = v;
	p[n - 1] = v;
}

static bool intact(const kept *k)
{
	if (!k->p)
		return true;
	for (size_t i = 0; i<k->n; i += k->n> 65536 ? 4093 : 1)
		if (k->p[i] != k->v)
			return false;
	return k->p[k->n - 1] == k->v;
}

static void *worker(void *arg)
{
	uint64_t s = (uint64_t)(uintptr_t)arg * 7919 + 1;
	kept k[KEEP];
	memset(k, 0, sizeof k);
	while (!atomic_load(&stop)) {
		unsigned i = (unsigned)kt_rand_range(&s, 0, KEEP - 1);
		if (k[i].p) {
			if (!intact(&k[i]))
				atomic_fetch_add(&bad_bytes, 1);
			kp_free(pool, k[i].p);
			k[i].p = NULL;
		}
		unsigned what = (unsigned)kt_rand_range(&s, 0, 9);
		size_t n = what == 0  ? kt_rand_range(&s, 4u << 20, 12u << 20)
			   : what < 3 ? kt_rand_range(&s, 40000, 900000)
				      : kt_rand_range(&s, 1, 4000);
		fill(&k[i], kp_alloc(pool, n, 0), n, (unsigned char)(i + 1));
	}
	for (unsigned i = 0; i < KEEP; i++)
		if (k[i].p) {
			if (!intact(&k[i]))
				atomic_fetch_add(&bad_bytes, 1);
			kp_free(pool, k[i].p);
		}
	return NULL;
}

static kept mine[3];

static int child(void)
{
	alarm(20);
	int bad = 0;
	size_t nseg = 0;
	for (kp__seg *s = pool->segs; s; s = s->next)
		nseg++;
	if (pool->capacity != nseg * KP_SEG_SIZE)
		bad |= 1;
	for (int i = 0; i < 3; i++)
		if (!intact(&mine[i]))
			bad |= 2;
	uint64_t s = 77;
	for (int round = 0; round < 4; round++) {
		kept k[16];
		for (int i = 0; i < 16; i++) {
			size_t n = i == 0 ? (8u << 20) : i < 4 ? 300000 : kt_rand_range(&s, 1, 3000);
			unsigned char *p = kp_alloc(pool, n, 0);
			/* NULL is the contract when the pool is exhausted: the
			 * child inherits the parent's workers' blocks (up to 48,
			 * a tenth of them 4-12 MiB) next to primary_max. A NULL
			 * is a failure unless the pool had no room for it (its
			 * segments, huge blocks and layout:outline's reserved
			 * segments, and the request or a new
			 * segment, past primary_max) and said so (KP_EV_OOM). */
			if (!p) {
				unsigned oom = kt_events_count(pool, KP_EV_OOM);
				size_t used =
					pool->capacity + atomic_load(&pool->huge_bytes) + atomic_load(&pool->ol_bytes);
				/* a huge block is charged its mapping: the request,
				 * its header and guard pages, page-rounded (huge.c,
				 * kp__huge_alloc: at most 3 pages more). Counted as n
				 * alone, a refusal 4 KiB short of "full" by this sum
				 * failed the test once in s25. */
				size_t want = n > KP_SEG_SIZE ? n + 3 * KP_PAGE : KP_SEG_SIZE;
				bool full = used + want > pool->conf.primary_max;
				fprintf(stderr, "   child: %zu bytes refused, %zu of %zu in use, %u OOM events\n", n,
					used, (size_t)pool->conf.primary_max, oom);
				if (!oom || !full)
					bad |= 4;
			}
			fill(&k[i], p, n, (unsigned char)(i + 9));
		}
		for (int i = 0; i < 16; i++) {
			if (!intact(&k[i]))
				bad |= 8;
			if (k[i].p && kp_free(pool, k[i].p) != 0)
				bad |= 16;
		}
		if (kp_daemon_step(pool, 50) < 0)
			bad |= 32;
	}
	for (int i = 0; i < 3; i++)
		if (mine[i].p && kp_free(pool, mine[i].p) != 0)
			bad |= 64;
	kp_thread_flush(pool);
	if (kt_stat(pool, "integrity.freelist_errors") || kt_stat(pool, "integrity.corruptions"))
		bad |= 128;
	kp_destroy(pool);
	return bad;
}

static void test_fork_churn(void)
{
	/* Not under TSan: each child's daemon restarts at its first allocation,
	 * and TSan refuses a child's new thread (die_after_fork) or, allowed,
	 * sees the parent's daemon thread's stack and id again ("dup thread
	 * with used id", as test_fork and test_fork_held note): 2-3 of 12
	 * children died of it in the lead's runs. */
	if (KT_TSAN) {
		printf("   skipped under TSan\n");
		return;
	}
	pool = kp_create(CONF);
	REQUIRE(pool, "kp_create: %s", kp_last_error());
	fill(&mine[0], kp_alloc(pool, 100, 0), 100, 0xa1);
	fill(&mine[1], kp_alloc(pool, 200000, 0), 200000, 0xa2);
	fill(&mine[2], kp_alloc(pool, 6u << 20, 0), 6u << 20, 0xa3);
	REQUIRE(mine[0].p && mine[1].p && mine[2].p, "the forking thread's blocks");
	pthread_t t[NW];
	atomic_store(&stop, 0);
	for (uintptr_t i = 0; i < NW; i++)
		REQUIRE(pthread_create(&t[i], NULL, worker, (void *)(i + 1)) == 0, "thread");
	unsigned forks = KT_SANITIZED ? 12 : 40, ok = 0, hung = 0, failed = 0;
	int codes = 0;
	uint64_t s = 5;
	for (unsigned f = 0; f < forks; f++) {
		kt_sleep_ms((unsigned)kt_rand_range(&s, 1, 25));
		pid_t pid = fork();
		REQUIRE(pid >= 0, "fork");
		if (pid == 0)
			_exit(child());
		int status = 0;
		waitpid(pid, &status, 0);
		if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
			ok++;
		} else if (WIFSIGNALED(status) && WTERMSIG(status) == SIGALRM) {
			hung++;
		} else {
			failed++;
			codes |= WIFEXITED(status) ? WEXITSTATUS(status) : 1000 + WTERMSIG(status);
		}
	}
	atomic_store(&stop, 1);
	for (int i = 0; i < NW; i++)
		pthread_join(t[i], NULL);
	printf("   %u forks beside huge/large/small churn and a 1 ms daemon: %u children sound, %u hung, %u failed "
	       "(codes %d); %llu grows, %llu shrinks in the parent\n",
	       forks, ok, hung, failed, codes, (unsigned long long)atomic_load(&pool->daemon.grows),
	       (unsigned long long)atomic_load(&pool->daemon.shrinks));
	CHECK(hung == 0, "%u children hung (a lock held at the fork)", hung);
	CHECK(failed == 0, "%u children failed, codes %d", failed, codes);
	CHECK(atomic_load(&bad_bytes) == 0, "%u blocks changed in the parent", atomic_load(&bad_bytes));
	for (int i = 0; i < 3; i++)
		CHECK(intact(&mine[i]), "the forking thread's block %d changed", i);
	for (int i = 0; i < 3; i++)
		kp_free(pool, mine[i].p);
	CHECK(kt_stat(pool, "integrity.freelist_errors") == 0, "freelist errors in the parent");
	kp_destroy(pool);
}

int main(void)
{
	RUN(test_fork_churn);
	return ktest_summary();
}
