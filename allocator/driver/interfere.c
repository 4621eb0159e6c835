/*
 * interfere.c - system-call noise while the allocator works: threads in the
 * driver's process and sibling processes, each making one kind of call at a
 * configured rate (or flat out).
 *
 * The shared state (call counts, calls in flight, the end of the last call,
 * the stop flag) lives in one MAP_SHARED page, so that sibling processes
 * report through it as the threads do. The driver's threads read it to mark
 * an outlier "interference in flight": two relaxed loads, only for outliers.
 *
 * brk in a thread only sets the break to where it is (the call and its lock,
 * without moving the break under the process's malloc, which owns it);
 * in a sibling process it really grows and shrinks the heap.
 */
#include "kpdriver.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

/* A sleeping interference thread wakes at least this often to see the stop
 * flag: the run ends at most 10 ms late. */
#define STOP_POLL_NS 10000000ull
#define MAX_WORKERS (KPD_MAX_INTERF * 16)

struct shared {
	_Atomic int stop;
	_Atomic int inflight;
	_Atomic uint64_t last_end;
	_Atomic uint64_t calls[KPD_IF__COUNT];
	_Atomic uint64_t errors;
};

struct kpd_interference {
	struct shared *sh;
	pthread_t th[MAX_WORKERS];
	unsigned nth;
	pid_t pid[MAX_WORKERS];
	unsigned npid;
};

struct worker {
	struct shared *sh;
	const struct kpd_interf *f;
	bool in_process;
};

static const long PAGE = 4096;

static void err(struct shared *sh)
{
	atomic_fetch_add_explicit(&sh->errors, 1, memory_order_relaxed);
}

static void touch_pages(unsigned char *p, uint64_t size, uint64_t stride)
{
	for (uint64_t o = 0; o < size; o += stride)
		((volatile unsigned char *)p)[o] = 1;
}

struct region {
	unsigned char *p;
	int fd;
};

static void call_once(struct worker *w, struct region *r)
{
	const struct kpd_interf *f = w->f;
	struct shared *sh = w->sh;
	switch (f->kind) {
	case KPD_IF_MMAP:
	case KPD_IF_FAULTS: {
		void *p = mmap(NULL, f->size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (p == MAP_FAILED) {
			err(sh);
			break;
		}
		touch_pages(p, f->kind == KPD_IF_FAULTS ? f->size : 1, (uint64_t)PAGE);
		munmap(p, f->size);
		break;
	}
	case KPD_IF_MADVISE:
		touch_pages(r->p, f->size, 16 * (uint64_t)PAGE);
		if (madvise(r->p, f->size, MADV_DONTNEED) != 0)
			err(sh);
		break;
	case KPD_IF_MPROTECT:
		if (mprotect(r->p, f->size, PROT_READ) != 0 || mprotect(r->p, f->size, PROT_READ | PROT_WRITE) != 0)
			err(sh);
		break;
	case KPD_IF_BRK:
		if (w->in_process) {
			void *old = sbrk((intptr_t)f->size);
			if (old == (void *)-1) {
				err(sh);
				break;
			}
			touch_pages(old, f->size, (uint64_t)PAGE);
			sbrk(-(intptr_t)f->size);
		} else {
			long cur = syscall(SYS_brk, 0);
			syscall(SYS_brk, cur);
		}
		break;
	case KPD_IF_FSYNC: {
		static const char page[4096];
		if (pwrite(r->fd, page, sizeof(page), 0) != (ssize_t)sizeof(page) || fsync(r->fd) != 0)
			err(sh);
		break;
	}
	case KPD_IF_FORK: {
		pid_t pid = fork();
		if (pid == 0)
			_exit(0);
		if (pid < 0)
			err(sh);
		else
			while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
				;
		break;
	}
	case KPD_IF_GETPID: syscall(SYS_getpid); break;
	case KPD_IF_YIELD: sched_yield(); break;
	case KPD_IF__COUNT: break;
	}
}

static int region_open(const struct kpd_interf *f, struct region *r)
{
	r->p = NULL;
	r->fd = -1;
	if (f->kind == KPD_IF_MADVISE || f->kind == KPD_IF_MPROTECT) {
		void *p = mmap(NULL, f->size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (p == MAP_FAILED)
			return -1;
		r->p = p;
	} else if (f->kind == KPD_IF_FSYNC) {
		const char *dir = getenv("TMPDIR");
		char path[512];
		snprintf(path, sizeof(path), "%s/kpdrive-fsync-XXXXXX", dir && *dir ? dir : "/tmp");
		r->fd = mkstemp(path);
		if (r->fd < 0)
			return -1;
		unlink(path);
	}
	return 0;
}

static void region_close(const struct kpd_interf *f, struct region *r)
{
	if (r->p)
		munmap(r->p, f->size);
	if (r->fd >= 0)
		close(r->fd);
}

static void worker_loop(struct worker *w)
{
	struct shared *sh = w->sh;
	struct region r;
	if (region_open(w->f, &r) != 0) {
		err(sh);
		return;
	}
	uint64_t start = kpd_now(), k = 0;
	double period = w->f->rate > 0 ? 1e9 / w->f->rate : 0;
	pid_t parent = getppid();
	while (!atomic_load_explicit(&sh->stop, memory_order_relaxed)) {
		atomic_fetch_add_explicit(&sh->inflight, 1, memory_order_relaxed);
		call_once(w, &r);
		atomic_fetch_sub_explicit(&sh->inflight, 1, memory_order_relaxed);
		uint64_t now = kpd_now();
		atomic_store_explicit(&sh->last_end, now, memory_order_relaxed);
		atomic_fetch_add_explicit(&sh->calls[w->f->kind], 1, memory_order_relaxed);
		k++;
		if (w->in_process && (k & 255) == 0 && getppid() != parent)
			break; /* the driver died */
		if (period <= 0)
			continue;
		uint64_t due = start + (uint64_t)((double)k * period);
		while (now < due && !atomic_load_explicit(&sh->stop, memory_order_relaxed)) {
			uint64_t until = due - now > STOP_POLL_NS ? now + STOP_POLL_NS : due;
			struct timespec ts = {.tv_sec = (time_t)(until / 1000000000ull),
					      .tv_nsec = (long)(until % 1000000000ull)};
			clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL);
			now = kpd_now();
		}
	}
	region_close(w->f, &r);
}

static void *thread_main(void *arg)
{
	struct worker *w = arg;
	worker_loop(w);
	free(w);
	return NULL;
}

static int ensure(struct kpd_run *run)
{
	if (run->intf)
		return 0;
	run->intf = calloc(1, sizeof(*run->intf));
	if (!run->intf)
		return -1;
	void *p = mmap(NULL, sizeof(struct shared), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED) {
		free(run->intf);
		run->intf = NULL;
		return -1;
	}
	run->intf->sh = p; /* zero-filled by mmap */
	return 0;
}

int kpd_interfere_start_processes(struct kpd_run *run)
{
	if (ensure(run) != 0) {
		snprintf(run->error, sizeof(run->error), "interference: out of memory");
		return -1;
	}
	struct kpd_interference *in = run->intf;
	pid_t parent = getpid();
	for (unsigned i = 0; i < run->prog->ninterf; i++) {
		const struct kpd_interf *f = &run->prog->interf[i];
		for (unsigned j = 0; f->process && j < f->threads && in->npid < MAX_WORKERS; j++) {
			fflush(NULL);
			pid_t pid = fork();
			if (pid < 0) {
				snprintf(run->error, sizeof(run->error), "fork: %s", strerror(errno));
				return -1;
			}
			if (pid == 0) {
				prctl(PR_SET_PDEATHSIG, SIGKILL);
				if (getppid() != parent)
					_exit(0);
				struct worker w = {.sh = in->sh, .f = f, .in_process = true};
				worker_loop(&w);
				_exit(0);
			}
			in->pid[in->npid++] = pid;
		}
	}
	return 0;
}

int kpd_interfere_start_threads(struct kpd_run *run)
{
	struct kpd_interference *in = run->intf;
	for (unsigned i = 0; i < run->prog->ninterf; i++) {
		const struct kpd_interf *f = &run->prog->interf[i];
		for (unsigned j = 0; !f->process && j < f->threads && in->nth < MAX_WORKERS; j++) {
			struct worker *w = malloc(sizeof(*w));
			if (!w)
				return -1;
			*w = (struct worker){.sh = in->sh, .f = f};
			int rc = pthread_create(&in->th[in->nth], NULL, thread_main, w);
			if (rc) {
				free(w);
				snprintf(run->error, sizeof(run->error), "interference thread: %s", strerror(rc));
				return -1;
			}
			in->nth++;
		}
	}
	return 0;
}

void kpd_interfere_stop(struct kpd_run *run)
{
	struct kpd_interference *in = run->intf;
	if (!in)
		return;
	atomic_store(&in->sh->stop, 1);
	for (unsigned i = 0; i < in->nth; i++)
		pthread_join(in->th[i], NULL);
	in->nth = 0;
	for (unsigned i = 0; i < in->npid; i++)
		while (waitpid(in->pid[i], NULL, 0) < 0 && errno == EINTR)
			;
	in->npid = 0;
}

void kpd_interfere_free(struct kpd_run *run)
{
	if (!run->intf)
		return;
	kpd_interfere_stop(run);
	munmap(run->intf->sh, sizeof(struct shared));
	free(run->intf);
	run->intf = NULL;
}

bool kpd_interfere_busy_since(const struct kpd_run *run, uint64_t t)
{
	const struct shared *sh = run->intf ? run->intf->sh : NULL;
	if (!sh)
		return false;
	return atomic_load_explicit(&sh->inflight, memory_order_relaxed) > 0 ||
	       atomic_load_explicit(&sh->last_end, memory_order_relaxed) >= t;
}

void kpd_interfere_counts(const struct kpd_run *run, uint64_t calls[KPD_IF__COUNT], uint64_t *errors)
{
	const struct shared *sh = run->intf ? run->intf->sh : NULL;
	for (int k = 0; k < KPD_IF__COUNT; k++)
		calls[k] = sh ? atomic_load(&sh->calls[k]) : 0;
	*errors = sh ? atomic_load(&sh->errors) : 0;
}
