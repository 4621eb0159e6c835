/*
 * guard_rig5.h - helpers of the guard attacks (sess16-hA5;
 * tests/test_guard_attack5.c):
 * /proc/self/maps read back (the mapping at an address, the mappings in a
 * range, the process's anonymous totals), a huge block's layout (its guard
 * page right past its mapping's end), writes that fault tested in a child.
 */
#ifndef GUARD_RIG5_H
#define GUARD_RIG5_H

#include "ktest.h"

#include "internal.h"

#include <signal.h>
#include <sys/wait.h>

#define MiB ((size_t)1 << 20)
#define SEGBASE(p) ((char *)((uintptr_t)(p) & ~(uintptr_t)(KP_SEG_SIZE - 1)))

/* ---- /proc/self/maps ----------------------------------------------------- */

typedef struct {
	uintptr_t lo, hi;
	char perm[5];
	bool anon;
} vma;

typedef bool (*vma_fn)(const vma *v, void *arg);

static __attribute__((unused)) void maps_walk(vma_fn fn, void *arg)
{
	FILE *f = fopen("/proc/self/maps", "r");
	if (!f)
		return;
	char line[512];
	while (fgets(line, sizeof line, f)) {
		vma v;
		unsigned long lo, hi, ino;
		int off = 0;
		if (sscanf(line, "%lx-%lx %4s %*s %*s %lu %n", &lo, &hi, v.perm, &ino, &off) < 4)
			continue;
		v.lo = lo;
		v.hi = hi;
		v.perm[4] = 0;
		const char *rest = line + off;
		while (*rest == ' ')
			rest++;
		v.anon = ino == 0 && (*rest == '\n' || *rest == 0);
		if (!fn(&v, arg))
			break;
	}
	fclose(f);
}

typedef struct {
	uintptr_t a;
	vma v;
	bool found;
} find_arg;

static __attribute__((unused)) bool find_cb(const vma *v, void *arg)
{
	find_arg *f = arg;
	if (f->a >= v->lo && f->a < v->hi) {
		f->v = *v;
		f->found = true;
		return false;
	}
	return true;
}

/* The mapping holding address a; false when none does. */
static __attribute__((unused)) bool vma_at(const void *a, vma *out)
{
	find_arg f = {.a = (uintptr_t)a};
	maps_walk(find_cb, &f);
	if (f.found)
		*out = f.v;
	return f.found;
}

typedef struct {
	uintptr_t lo, hi;
	size_t n;
} count_arg;

static __attribute__((unused)) bool count_cb(const vma *v, void *arg)
{
	count_arg *c = arg;
	c->n += v->lo < c->hi && v->hi > c->lo;
	return true;
}

/* How many mappings overlap [lo, hi). */
static __attribute__((unused)) size_t vmas_in(const void *lo, const void *hi)
{
	count_arg c = {(uintptr_t)lo, (uintptr_t)hi, 0};
	maps_walk(count_cb, &c);
	return c.n;
}

/* Mappings overlapping [lo, hi) outside the 4 MiB chunks a live segment of
 * the pool holds (the kernel maps a new segment or huge block where an old
 * one was). */
static __attribute__((unused)) size_t stray_vmas(kp_pool *pool, const char *lo, const char *hi)
{
	size_t n = 0;
	for (const char *c = SEGBASE(lo); c < hi; c += KP_SEG_SIZE) {
		kp__seg *s = kp__pagemap_get(c);
		if (s && s->pool == pool)
			continue;
		const char *a = c < lo ? lo : c, *b = c + KP_SEG_SIZE > hi ? hi : c + KP_SEG_SIZE;
		/* a normal segment's guard lies past its chunk (KP_SEG_MAP) */
		kp__seg *prev = kp__pagemap_get(c - KP_SEG_SIZE);
		if (prev && prev->pool == pool && prev->kind == KP_SEG_NORMAL && a < c + (KP_SEG_MAP - KP_SEG_SIZE))
			a = c + (KP_SEG_MAP - KP_SEG_SIZE);
		if (a < b)
			n += vmas_in(a, b);
	}
	return n;
}

typedef struct {
	size_t n, bytes, ro;
} totals;

static __attribute__((unused)) bool totals_cb(const vma *v, void *arg)
{
	totals *t = arg;
	if (v->anon) {
		t->n++;
		t->bytes += v->hi - v->lo;
		t->ro += strcmp(v->perm, "r--p") == 0;
	}
	return true;
}

/* The process's anonymous mappings: count, bytes, read-only ones. */
static __attribute__((unused)) totals anon_totals(void)
{
	totals t = {0, 0, 0};
	maps_walk(totals_cb, &t);
	return t;
}

/* ---- huge blocks ------------------------------------------------------------ */

static KT_RAW __attribute__((unused)) size_t seg_size(const char *s)
{
	return *(const volatile size_t *)&((const kp__seg *)s)->size;
}

static __attribute__((unused)) char *huge_base(const void *p)
{
	return (char *)p - 2 * KP_PAGE;
}

/* The huge block at p: header page and payload read-write up to the
 * mapping's end (base + size), and there a read-only page: the guard. */
static __attribute__((unused)) bool huge_layout_ok(const void *p, const char *what)
{
	char *s = huge_base(p);
	kp__seg *pm = kp__pagemap_get(p);
	if (pm != (kp__seg *)s) {
		CHECK(0, "%s: %p is not a huge block's payload (pagemap %p)", what, p, (void *)pm);
		return false;
	}
	size_t size = seg_size(s);
	vma g, body, last;
	bool have_g = vma_at(s + size, &g), have_b = vma_at(s, &body), have_l = vma_at(s + size - 1, &last);
	bool ok = have_g && have_b && have_l && strcmp(g.perm, "r--p") == 0 && g.lo == (uintptr_t)(s + size) &&
		  g.hi >= (uintptr_t)(s + size + KP_PAGE) && strcmp(body.perm, "rw-p") == 0 &&
		  strcmp(last.perm, "rw-p") == 0 && body.lo <= (uintptr_t)s;
	CHECK(ok,
	      "%s: huge block %p (mapping %p, %zu bytes): guard %s [%#lx, %#lx) %s, header %s, last payload page "
	      "%s",
	      what, p, (void *)s, size, have_g ? "at" : "missing", have_g ? (unsigned long)g.lo : 0ul,
	      have_g ? (unsigned long)g.hi : 0ul, have_g ? g.perm : "", have_b ? body.perm : "none",
	      have_l ? last.perm : "none");
	return ok;
}

static __attribute__((unused)) void child_fault(int sig)
{
	(void)sig;
	_exit(77);
}

/* A write at p, in a child: true if it faulted. */
static KT_RAW __attribute__((unused)) bool write_faults(const char *at)
{
	pid_t pid = fork();
	if (pid == 0) {
		struct sigaction sa;
		memset(&sa, 0, sizeof sa);
		sa.sa_handler = child_fault;
		sigaction(SIGSEGV, &sa, NULL);
		((volatile char *)at)[0] = 1;
		_exit(0);
	}
	int st = 0;
	waitpid(pid, &st, 0);
	return (WIFEXITED(st) && WEXITSTATUS(st) == 77) || (WIFSIGNALED(st) && WTERMSIG(st) == SIGSEGV);
}

/* A byte of every page of [p, p + n) written, in a child: the first offset
 * that faulted, or KT_OK. */
static KT_RAW __attribute__((unused)) size_t first_write_fault(const char *p, size_t n)
{
	int fd[2];
	if (pipe(fd) != 0)
		return 0;
	pid_t pid = fork();
	if (pid == 0) {
		close(fd[0]);
		struct sigaction sa;
		memset(&sa, 0, sizeof sa);
		sa.sa_handler = child_fault;
		sigaction(SIGSEGV, &sa, NULL);
		for (size_t off = 0; n;) {
			if (write(fd[1], &off, sizeof off) != (ssize_t)sizeof off)
				_exit(2);
			((volatile char *)p)[off] = ((volatile char *)p)[off];
			if (off == n - 1)
				break;
			off = off + KP_PAGE < n ? off + KP_PAGE : n - 1;
		}
		_exit(0);
	}
	close(fd[1]);
	size_t off = 0, last = 0;
	while (read(fd[0], &off, sizeof off) == (ssize_t)sizeof off)
		last = off;
	close(fd[0]);
	int st = 0;
	waitpid(pid, &st, 0);
	return WIFEXITED(st) && WEXITSTATUS(st) == 0 ? KT_OK : last;
}

static __attribute__((unused)) size_t os_fails(kp_pool *pool)
{
	return kt_events_count(pool, KP_EV_OS_FAIL);
}

/* Let what waits out its grace period be unmapped. */
static __attribute__((unused)) void settle(kp_pool *pool)
{
	for (int i = 0; i < 3; i++)
		kp_daemon_step(pool, 0);
}

#endif /* GUARD_RIG5_H */
