/*
 * test_nested_free_vet_attack36.c - a signal handler's kp_free of a bad
 * pointer, nested inside its thread's call on alloc.c's path of a
 * layout:outline pool (kpool.h: a handler may call kpool). Such a free is
 * set aside for the interrupted call's end, linked through the block's
 * first 8 bytes: outline.c's ol_deferred (the thread inside
 * free_classic_marked, its slot KP_OL_MARK_CLASSIC) or alloc.c's
 * classic_later (the thread inside kp__alloc_classic). Is the pointer
 * vetted before those 8 bytes are written?
 *
 * The window made on purpose, with no hook in kpool: the pool logs its
 * events to a pipe the test has filled, so the thread's own call blocks in
 * its event's write(2) inside that path (mode "outline": kp_free of a freed
 * 256 KiB block, a double free reported inside free_classic_marked; mode
 * "classic": kp_alloc of an impossible size, reported inside
 * kp__alloc_classic). Once /proc says the thread waits in write, it is
 * signalled, and its handler frees six bad pointers: an interior pointer of
 * a live 256 KiB block, a stack address, a freed 256 KiB block, another
 * pool's live 256 KiB block and 48-byte block, and a glibc block. Then the
 * pipe is drained and the thread's call ends. Asserted for each: the 8
 * bytes at it unchanged, kp_free's refusal returned, and one event naming
 * it (invalid_free; double_free for the freed block); the live blocks
 * free cleanly after. And a good free there, of a live 1-byte block aligned
 * to 64 (its canary, 1 byte in, under the link): freed, no event.
 * Found on main (f41f419): in mode "outline" all six were written (the
 * bytes changed, kp_free returned 0), in mode "classic" the two in the
 * pool's segments (the interior pointer, the freed block); and the 1-byte
 * block's free was reported an overflow and the block quarantined.
 * Reproduce:
 *   make -C allocator VARIANT=release build/release/tests/test_nested_free_vet_attack36 &&
 *   allocator/build/release/tests/test_nested_free_vet_attack36
 */
#define _GNU_SOURCE 1
#include "ktest.h"

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#define BIG (256u << 10) /* a large block of alloc.c's (past outline.c's classes, 64 KiB) */
#define NBAD 6

static kp_pool *pool, *other;
static void *bad[NBAD];
static const char *const bad_name[NBAD] = {
	"interior of a live 256 KiB block", "stack address", "freed 256 KiB block", "another pool's 256 KiB block",
	"another pool's 48-byte block",	    "glibc block"};
static const unsigned bad_kind[NBAD] = {KP_EV_INVALID_FREE, KP_EV_INVALID_FREE, KP_EV_DOUBLE_FREE,
					KP_EV_INVALID_FREE, KP_EV_INVALID_FREE, KP_EV_INVALID_FREE};
static uint64_t before[NBAD];
static int rc[NBAD];
static _Atomic bool entered, handled, done, ready, go;
static _Atomic pid_t wtid;
static int mode; /* 0: outline (free_classic_marked), 1: classic (kp__alloc_classic) */
static void *freed0;
static void *tiny; /* a live block of 1 byte aligned to 64: its canary under the link's 8 bytes */
static int tiny_rc;

static void handler(int sig)
{
	(void)sig;
	int e = errno;
	atomic_store(&entered, true);
	for (int i = 0; i < NBAD; i++)
		rc[i] = kp_free(pool, bad[i]);
	tiny_rc = kp_free(pool, tiny); /* a good free, set aside (nothing past it) */
	atomic_store(&handled, true);
	errno = e;
}

static void *work(void *arg)
{
	(void)arg;
	atomic_store(&wtid, (pid_t)syscall(SYS_gettid));
	/* the thread's slot names the pool (outline.h): its kp_free takes
	 * outline.c's way (kp__ol_free_slow), not alloc.c's at once */
	kp_free(pool, kp_alloc(pool, 48, 0));
	/* then the pipe is filled: no event of this warm-up blocks */
	atomic_store(&ready, true);
	while (!atomic_load(&go))
		kt_sleep_ms(1);
	if (mode == 0)
		kp_free(pool, freed0); /* a double free: its event's write blocks */
	else
		kp_alloc(pool, ((size_t)1 << 46) + 1, 0); /* past KP_REQ_MAX: bad_size's event blocks */
	atomic_store(&done, true);
	return NULL;
}

/* Is thread tid in write(2) (x86_64's number 1; elsewhere: asleep)? */
static bool in_write(pid_t tid)
{
	char path[64], buf[64] = {0};
	snprintf(path, sizeof path, "/proc/self/task/%d/syscall", (int)tid);
	int fd = open(path, O_RDONLY);
	if (fd < 0)
		return false;
	ssize_t n = read(fd, buf, sizeof buf - 1);
	close(fd);
#ifdef __x86_64__
	return n > 2 && buf[0] == '1' && buf[1] == ' ';
#else
	return n > 0 && buf[0] != 'r'; /* not "running" */
#endif
}

static void run_mode(int m)
{
	mode = m;
	atomic_store(&entered, false);
	atomic_store(&handled, false);
	atomic_store(&done, false);
	atomic_store(&ready, false);
	atomic_store(&go, false);
	atomic_store(&wtid, 0);
	int pfd[2];
	REQUIRE(pipe(pfd) == 0, "pipe");
	char conf[128];
	snprintf(conf, sizeof conf, "layout:outline,daemon:off,log_fd:%d", pfd[1]);
	pool = kp_create(conf);
	other = kp_create("layout:outline,daemon:off");
	REQUIRE(pool && other, "kp_create");
	char stack_buf[64] __attribute__((aligned(16)));
	memset(stack_buf, 0x5a, sizeof stack_buf);
	void *live = kp_alloc(pool, BIG, 0), *freed1 = kp_alloc(pool, BIG, 0);
	freed0 = kp_alloc(pool, BIG, 0);
	void *oblk = kp_alloc(other, BIG, 0), *osmall = kp_alloc(other, 48, 0);
	void *g = malloc(64);
	tiny = kp_alloc_aligned(pool, 1, 64, 0);
	REQUIRE(tiny, "the tiny block");
	memset(tiny, 0x77, 1);
	REQUIRE(live && freed1 && freed0 && oblk && osmall && g, "blocks");
	memset(live, 0x11, BIG);
	memset(oblk, 0x22, BIG);
	memset(osmall, 0x33, 48);
	memset(g, 0x44, 64);
	memset(freed1, 0x55, BIG);
	memset(freed0, 0x66, BIG);
	REQUIRE(kp_free(pool, freed1) == 0 && kp_free(pool, freed0) == 0, "frees");
	bad[0] = (char *)live + 4096;
	bad[1] = stack_buf + 16;
	bad[2] = freed1;
	bad[3] = oblk;
	bad[4] = osmall;
	bad[5] = g;
	for (int i = 0; i < NBAD; i++)
		before[i] = kt_raw_get(bad[i]);
	kp_event evs[256];
	kp_events_drain(pool, evs, 256); /* none of the test's yet */

	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = handler;
	sa.sa_flags = SA_RESTART;
	sigaction(SIGUSR1, &sa, NULL);
	pthread_t w;
	REQUIRE(pthread_create(&w, NULL, work, NULL) == 0, "pthread_create");
	while (!atomic_load(&ready))
		kt_sleep_ms(1);
	/* the pipe full, to the byte (each line must wait for a whole page) */
	fcntl(pfd[1], F_SETFL, O_NONBLOCK);
	static char junk[65536];
	while (write(pfd[1], junk, sizeof junk) > 0) {
	}
	while (write(pfd[1], junk, 1) > 0) {
	}
	fcntl(pfd[1], F_SETFL, 0);
	atomic_store(&go, true);
	uint64_t t0 = kt_now_ms();
	bool blocked = false;
	while (!blocked && kt_now_ms() - t0 < 20000) { /* 20 s: a loaded CI machine, TSan */
		pid_t tid = atomic_load(&wtid);
		blocked = tid && in_write(tid);
		if (!blocked)
			kt_sleep_ms(1);
	}
	CHECK(blocked, "the thread never blocked in its event's write");
	pthread_kill(w, SIGUSR1);
	/* the handler's own events write to the pipe too: drained once it runs
	 * (before, the thread's write could end first and leave the window).
	 * TSan runs a handler at its interceptor's exit, not inside write(2):
	 * there the write ends first, still inside the thread's call. */
	t0 = kt_now_ms();
	while (!KT_TSAN && !atomic_load(&entered) && kt_now_ms() - t0 < 20000)
		kt_sleep_ms(1);
	CHECK(KT_TSAN || atomic_load(&entered), "the handler never ran while the thread was blocked");
	fcntl(pfd[0], F_SETFL, O_NONBLOCK);
	while (!atomic_load(&done)) {
		if (read(pfd[0], junk, sizeof junk) <= 0)
			kt_sleep_ms(1);
	}
	pthread_join(w, NULL);
	signal(SIGUSR1, SIG_DFL);
	CHECK(atomic_load(&handled), "handler");

	size_t n = kp_events_drain(pool, evs, 256);
	for (int i = 0; i < NBAD; i++) {
		uint64_t now = kt_raw_get(bad[i]);
		CHECK(now == before[i], "mode %s: %s: its first 8 bytes written (%#llx, were %#llx)",
		      m ? "classic" : "outline", bad_name[i], (unsigned long long)now, (unsigned long long)before[i]);
		CHECK(rc[i] != 0, "mode %s: %s: kp_free returned 0", m ? "classic" : "outline", bad_name[i]);
		int mine = 0, wrong = 0;
		for (size_t k = 0; k < n; k++)
			if (evs[k].addr == (uintptr_t)bad[i]) {
				mine += evs[k].kind == bad_kind[i];
				wrong += evs[k].kind != bad_kind[i];
			}
		CHECK(mine == 1 && wrong == 0, "mode %s: %s: %d %s events, %d of other kinds",
		      m ? "classic" : "outline", bad_name[i], mine, kp_event_name(bad_kind[i]), wrong);
	}
	int tiny_ev = 0;
	for (size_t k = 0; k < n; k++)
		tiny_ev += evs[k].addr >= (uintptr_t)tiny - 64 && evs[k].addr <= (uintptr_t)tiny;
	CHECK(tiny_rc == 0 && tiny_ev == 0 && kp_usable_size(pool, tiny) == 0,
	      "mode %s: a live 1-byte block freed nested: rc %d, %d events (an overflow: the link over its canary), "
	      "usable %zu after",
	      m ? "classic" : "outline", tiny_rc, tiny_ev, kp_usable_size(pool, tiny));
	uint64_t lw = kt_raw_get(live);
	CHECK(lw == 0x1111111111111111ull, "the live block's first bytes %#llx", (unsigned long long)lw);
	CHECK(kp_free(pool, live) == 0, "the live block frees");
	CHECK(kp_free(other, oblk) == 0 && kp_free(other, osmall) == 0, "the other pool's blocks free");
	free(g);
	kp_destroy(pool);
	kp_destroy(other);
	close(pfd[0]);
	close(pfd[1]);
}

static void test_outline_deferral(void)
{
	run_mode(0);
}

static void test_classic_deferral(void)
{
	run_mode(1);
}

int main(void)
{
	RUN(test_outline_deferral);
	RUN(test_classic_deferral);
	return ktest_summary();
}
