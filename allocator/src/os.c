/*
 * os.c - the only file that makes system calls.
 *
 * Every call is counted by kind and by caller (the allocation path, or the
 * grow daemon, which marks its thread with kp__os_caller). The counters live
 * in the pool (kp__oscount) so a test or a report can prove that the
 * allocation path made none in steady state.
 */
#define _GNU_SOURCE /* mremap */
#include "internal.h"

#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <link.h>
#include <linux/membarrier.h>
#include <sched.h>
#include <stdlib.h>
#include <stdio.h>
#include <sys/auxv.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/sysinfo.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23 /* Linux 5.14 */
#endif

__thread int kp__os_caller = KP_CALLER_ALLOC;

static const char *const kind_names[KP_OS__N] = {"mmap", "munmap", "madvise", "mprotect", "other"};

int kp__os_kind(const char *name, size_t len)
{
	for (int k = 0; k < KP_OS__N; k++)
		if (strlen(kind_names[k]) == len && !memcmp(kind_names[k], name, len))
			return k;
	return -1;
}

static void count(kp__oscount *c, int kind)
{
	if (c)
		atomic_fetch_add_explicit(&c->n[kp__os_caller][kind], 1, memory_order_relaxed);
}

int kp__os_fault_arm(kp__oscount *c, int kind, int mode, uint64_t n, double p, uint64_t seed)
{
	if (kind < 0 || kind >= KP_OS__N)
		return -1;
	kp__fault *f = &c->fault[kind];
	atomic_store(&f->mode, KP_FAULT_OFF);
	atomic_store(&f->calls, 0);
	atomic_store(&f->n, n);
	atomic_store(&f->p32, (uint64_t)(p * 4294967296.0));
	atomic_store(&f->rng, seed);
	atomic_store(&f->mode, mode);
	return 0;
}

static uint64_t splitmix(uint64_t x)
{
	x += 0x9e3779b97f4a7c15ull;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
	return x ^ (x >> 31);
}

/* Count the call, and decide whether to fail it on purpose. */
static bool enter(kp__oscount *c, int kind)
{
	count(c, kind);
	if (!c)
		return false;
	kp__fault *f = &c->fault[kind];
	int mode = atomic_load_explicit(&f->mode, memory_order_relaxed);
	if (KP_LIKELY(mode == KP_FAULT_OFF))
		return false;
	uint64_t k = atomic_fetch_add(&f->calls, 1) + 1, n = atomic_load(&f->n);
	bool hit = false;
	if (mode == KP_FAULT_NTH) {
		hit = k == n;
		if (hit)
			atomic_store(&f->mode, KP_FAULT_OFF);
	} else if (mode == KP_FAULT_EVERY) {
		hit = n && k % n == 0;
	} else {
		uint64_t r = splitmix(atomic_fetch_add(&f->rng, 0x9e3779b97f4a7c15ull));
		hit = (r >> 32) < atomic_load(&f->p32);
	}
	if (hit) {
		atomic_fetch_add(&f->injected, 1);
		if (c->pool) {
			atomic_fetch_add(&c->pool->faults_injected, 1);
			kp__event(c->pool, KP_EV_FAULT_INJECTED, KP_POOL_PRIMARY, NULL, 0,
				  "injected %s failure (call %llu)", kind_names[kind], (unsigned long long)k);
		}
		errno = ENOMEM;
	}
	return hit;
}

void *kp__os_map(kp__oscount *c, size_t size, size_t align, bool populate)
{
	if (align < KP_PAGE)
		align = KP_PAGE;
	size_t over = size + align - KP_PAGE;
	if (over < size)
		return NULL;
	const int prot = PROT_READ | PROT_WRITE, flags = MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE;
	char *p;
	if (align > KP_PAGE && size % align == 0) {
		/* The kernel places a new mapping just below the previous one, so
		 * after one aligned segment the next plain mmap is usually aligned
		 * too: one call instead of three. */
		if (enter(c, KP_OS_MMAP))
			return NULL;
		p = mmap(NULL, size, prot, flags, -1, 0);
		if (p == MAP_FAILED)
			return NULL;
		if (((uintptr_t)p & (align - 1)) == 0) {
			if (populate)
				kp__os_populate(c, p, size);
			return p;
		}
		kp__os_unmap_clean(c, p, size); /* fresh: nothing poisoned */
	}
	if (enter(c, KP_OS_MMAP))
		return NULL;
	p = mmap(NULL, over, prot, flags, -1, 0);
	if (p == MAP_FAILED)
		return NULL;
	/* Trim the mapping to an aligned window: head and tail go back. */
	char *a = (char *)(((uintptr_t)p + align - 1) & ~(uintptr_t)(align - 1));
	if (a > p)
		kp__os_unmap_clean(c, p, (size_t)(a - p));
	size_t tail = (size_t)((p + over) - (a + size));
	if (tail)
		kp__os_unmap_clean(c, a + size, tail);
	if (populate)
		kp__os_populate(c, a, size);
	return a;
}

static int unmap(kp__oscount *c, void *p, size_t size, bool clean)
{
	if (enter(c, KP_OS_MUNMAP))
		return -ENOMEM;
	/* The range may be mapped again by anyone: leave no poison behind. */
	if (!clean)
		KP_UNPOISON(p, size);
	return munmap(p, size) == 0 ? 0 : -errno;
}

int kp__os_unmap(kp__oscount *c, void *p, size_t size)
{
	return unmap(c, p, size, false);
}

int kp__os_unmap_clean(kp__oscount *c, void *p, size_t size)
{
	return unmap(c, p, size, true);
}

int kp__os_remap(kp__oscount *c, void *p, size_t old, size_t size, void *to)
{
	if (enter(c, KP_OS_OTHER))
		return -ENOMEM;
	void *q = to ? mremap(p, old, size, MREMAP_MAYMOVE | MREMAP_FIXED, to) : mremap(p, old, size, 0);
	return q == MAP_FAILED ? -errno : 0;
}

void *kp__os_reserve(kp__oscount *c, size_t size)
{
	if (enter(c, KP_OS_MMAP))
		return NULL;
	void *p = mmap(NULL, size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	return p == MAP_FAILED ? NULL : p;
}

int kp__os_protect(kp__oscount *c, void *p, size_t size, bool rw)
{
	if (enter(c, KP_OS_MPROTECT))
		return -ENOMEM;
	return mprotect(p, size, rw ? PROT_READ | PROT_WRITE : PROT_NONE) == 0 ? 0 : -errno;
}

int kp__os_guard(kp__oscount *c, void *p, size_t size)
{
	if (enter(c, KP_OS_MPROTECT))
		return -ENOMEM;
	return mprotect(p, size, PROT_READ) == 0 ? 0 : -errno;
}

/* Older kernels (no MADV_POPULATE_WRITE): fault every page in for writing
 * by an atomic add of 0 to its first byte. The daemon pre-faults pages a
 * heap may be writing at the same moment (a spare taken within a step, the
 * cold segments' missing pages): an atomic read-modify-write cannot lose
 * that write, where the plain v[off] = v[off] of before (s28) read the
 * zero page, then stored its 0 over a block's first bytes written between
 * the read and the store's fault (test_outline_prefault_touch_attack28:
 * 52-150 of 400,000 live blocks' first bytes undone, no event). Pool
 * memory that ASan may consider poisoned, and the program's plain writes
 * to the same byte, hence no instrumentation. */
__attribute__((no_sanitize("thread"))) static KP_NOASAN void touch_pages(void *p, size_t size)
{
	for (size_t off = 0; off < size; off += KP_PAGE)
		__atomic_fetch_add((char *)p + off, 0, __ATOMIC_RELAXED);
}

int kp__os_populate(kp__oscount *c, void *p, size_t size)
{
	if (enter(c, KP_OS_MADVISE))
		return -ENOMEM;
	if (madvise(p, size, MADV_POPULATE_WRITE) == 0)
		return 0;
	if (errno == EINVAL)
		touch_pages(p, size);
	return 0;
}

/* Whether the first page at p is resident (mincore): the daemon's test of
 * whether the allocation path reached the end of what was pre-faulted for it
 * (daemon.c). A failed call reads as resident. */
bool kp__os_page_resident(kp__oscount *c, void *p)
{
	unsigned char v = 1;
	if (enter(c, KP_OS_OTHER) || mincore(p, KP_PAGE, &v) != 0)
		return true;
	return v & 1;
}

/* Pre-fault the pages of [p, p+size) that are not resident, found with
 * mincore (0.1 ms for 64 MiB here, where MADV_POPULATE_WRITE walks 64 MiB of
 * resident pages in 25 ms): the daemon calls it on its whole target each
 * pass. Returns the bytes it faulted in. */
size_t kp__os_populate_missing(kp__oscount *c, void *p, size_t size)
{
	unsigned char vec[1024];
	size_t done = 0;
	for (size_t off = 0; off < size; off += sizeof vec * KP_PAGE) {
		size_t n = size - off < sizeof vec * KP_PAGE ? size - off : sizeof vec * KP_PAGE;
		size_t np = (n + KP_PAGE - 1) / KP_PAGE;
		char *base = (char *)p + off;
		if (enter(c, KP_OS_OTHER) || mincore(base, n, vec) != 0) {
			kp__os_populate(c, base, n);
			done += n;
			continue;
		}
		for (size_t i = 0; i < np;) {
			if (vec[i] & 1) {
				i++;
				continue;
			}
			size_t j = i;
			while (j < np && !(vec[j] & 1))
				j++;
			size_t len = (j - i) * KP_PAGE;
			if (i * KP_PAGE + len > n)
				len = n - i * KP_PAGE;
			kp__os_populate(c, base + i * KP_PAGE, len);
			done += len;
			i = j;
		}
	}
	return done;
}

/* Give back the resident pages of [p, p + size) (MADV_DONTNEED: anonymous
 * private memory reads as zero on its next touch, which faults it in
 * again). mincore first, one call per 4 MiB: a range with no resident page
 * costs no madvise, and one madvise covers a window from its first resident
 * page to its last (non-resident pages inside cost the kernel a page-table
 * walk, not a fault). Returns the bytes that were resident. */
size_t kp__os_purge_whole(kp__oscount *c, void *p, size_t size, bool *whole)
{
	unsigned char vec[1024];
	size_t given = 0;
	*whole = true;
	for (size_t off = 0; off < size; off += sizeof vec * KP_PAGE) {
		size_t n = size - off < sizeof vec * KP_PAGE ? size - off : sizeof vec * KP_PAGE;
		size_t np = (n + KP_PAGE - 1) / KP_PAGE, first = np, last = 0, res = 0;
		char *base = (char *)p + off;
		if (enter(c, KP_OS_OTHER) || mincore(base, n, vec) != 0) {
			*whole = false;
			continue; /* not known resident: left alone */
		}
		for (size_t i = 0; i < np; i++)
			if (vec[i] & 1) {
				first = first < i ? first : i;
				last = i;
				res++;
			}
		if (!res)
			continue;
		size_t end = (last + 1) * KP_PAGE < n ? (last + 1) * KP_PAGE : n;
		if (enter(c, KP_OS_MADVISE) ||
		    madvise(base + first * KP_PAGE, end - first * KP_PAGE, MADV_DONTNEED) != 0)
			*whole = false;
		else
			given += res * KP_PAGE;
	}
	return given;
}

size_t kp__os_purge(kp__oscount *c, void *p, size_t size)
{
	bool whole;
	return kp__os_purge_whole(c, p, size, &whole);
}

bool kp__os_discard(kp__oscount *c, void *p, size_t size)
{
	if (enter(c, KP_OS_MADVISE))
		return false;
	return madvise(p, size, MADV_DONTNEED) == 0;
}

bool kp__os_resident(kp__oscount *c, void *p, size_t size)
{
	unsigned char vec[1024];
	for (size_t off = 0; off < size; off += sizeof vec * KP_PAGE) {
		size_t n = size - off < sizeof vec * KP_PAGE ? size - off : sizeof vec * KP_PAGE;
		if (enter(c, KP_OS_OTHER) || mincore((char *)p + off, n, vec) != 0)
			return false;
		for (size_t i = 0; i < (n + KP_PAGE - 1) / KP_PAGE; i++)
			if (!(vec[i] & 1))
				return false;
	}
	return true;
}

void kp__os_hugepage(kp__oscount *c, void *p, size_t size)
{
	if (enter(c, KP_OS_MADVISE))
		return;
	(void)madvise(p, size, MADV_HUGEPAGE); /* advice: a kernel without THP says EINVAL, and that is fine */
}

/* A purged kept huge mapping (huge.c, huge_purge_kept): khugepaged may make
 * any 2 MiB of an eligible mapping with one page resident a huge page, all
 * 512 resident. The header's pages stay resident in the first 2 MiB, so
 * within a scan (10 s by default) a purged kept mapping held 2 MiB again
 * (test_huge_cache_miss: 2 x 2,040 KiB, failed under load). */
void kp__os_nohugepage(kp__oscount *c, void *p, size_t size)
{
	if (enter(c, KP_OS_MADVISE))
		return;
	(void)madvise(p, size, MADV_NOHUGEPAGE); /* advice: EINVAL without THP, and that is fine */
}

void kp__os_thread_name(kp__oscount *c, const char *name)
{
	count(c, KP_OS_OTHER);
	prctl(PR_SET_NAME, name, 0, 0, 0);
}

void kp__os_random(kp__oscount *c, void *buf, size_t len)
{
	count(c, KP_OS_OTHER);
	char *b = buf;
	while (len) {
		ssize_t n = getrandom(b, len, 0);
		if (n <= 0) {
			/* No entropy source: fall back to the clock and addresses. */
			uint64_t x = kp__mix(kp__now_ns() ^ (uintptr_t)b);
			n = (ssize_t)(len < 8 ? len : 8);
			memcpy(b, &x, (size_t)n);
		}
		b += n;
		len -= (size_t)n;
	}
}

/* The clock: the kernel's vDSO function, called directly. libc's
 * clock_gettime only calls it too, but sits in a 64 KiB window of libc's
 * text (the time functions) that nothing else a small program runs touches,
 * and a fault there maps the whole window (fault-around): up to 64 KiB of
 * its peak RSS for a wrapper (small_objects under the preload: 16 pages of
 * libc's text more than under glibc's malloc, by clock_gettime alone;
 * tests/test_create_libc.c). The symbol is looked up once in the vDSO's
 * own ELF image (as the kernel's tools/testing/selftests/vDSO/parse_vdso.c
 * does: PT_DYNAMIC's DT_SYMTAB, DT_STRTAB and DT_HASH); libc's wrapper is
 * the fallback when there is no vDSO or no such symbol, and when the vDSO's
 * function fails. */
typedef int (*clock_fn)(clockid_t, struct timespec *);

static clock_fn vdso_lookup(void)
{
	uintptr_t base = (uintptr_t)getauxval(AT_SYSINFO_EHDR);
	if (!base)
		return NULL;
	const ElfW(Ehdr) *eh = (const ElfW(Ehdr) *)base;
	if (memcmp(eh->e_ident, ELFMAG, SELFMAG) ||
	    eh->e_ident[EI_CLASS] != (sizeof(void *) == 8 ? ELFCLASS64 : ELFCLASS32))
		return NULL;
	const ElfW(Phdr) *ph = (const ElfW(Phdr) *)(base + eh->e_phoff);
	uintptr_t bias = 0;
	const ElfW(Dyn) *dyn = NULL;
	bool loaded = false;
	for (unsigned i = 0; i < eh->e_phnum; i++) {
		if (ph[i].p_type == PT_LOAD && !loaded)
			bias = base + ph[i].p_offset - ph[i].p_vaddr, loaded = true;
		else if (ph[i].p_type == PT_DYNAMIC)
			dyn = (const ElfW(Dyn) *)(base + ph[i].p_offset);
	}
	if (!loaded || !dyn)
		return NULL;
	const ElfW(Sym) *sym = NULL;
	const char *str = NULL;
	const ElfW(Word) *hash = NULL;
	for (; dyn->d_tag != DT_NULL; dyn++) {
		if (dyn->d_tag == DT_SYMTAB)
			sym = (const ElfW(Sym) *)(bias + dyn->d_un.d_ptr);
		else if (dyn->d_tag == DT_STRTAB)
			str = (const char *)(bias + dyn->d_un.d_ptr);
		else if (dyn->d_tag == DT_HASH)
			hash = (const ElfW(Word) *)(bias + dyn->d_un.d_ptr);
	}
	if (!sym || !str || !hash)
		return NULL;
	for (ElfW(Word) i = 0; i < hash[1]; i++) { /* hash[1]: nchain, the count of symbols */
		const ElfW(Sym) *s = &sym[i];
		if ((s->st_info & 0xf) == STT_FUNC && s->st_shndx != SHN_UNDEF &&
		    (s->st_info >> 4 == STB_GLOBAL || s->st_info >> 4 == STB_WEAK) &&
		    !strcmp(str + s->st_name, "__vdso_clock_gettime"))
			return (clock_fn)(bias + s->st_value);
	}
	return NULL;
}

static _Atomic(clock_fn) vdso_clock;

/* clock_gettime(CLOCK_MONOTONIC), served by the vDSO: no system call.
 * Racing first calls look up the same address. */
uint64_t kp__now_ns(void)
{
	clock_fn f = atomic_load_explicit(&vdso_clock, memory_order_relaxed);
	if (KP_UNLIKELY(!f)) {
		f = vdso_lookup();
		if (!f)
			f = clock_gettime;
		atomic_store_explicit(&vdso_clock, f, memory_order_relaxed);
	}
	struct timespec ts;
	if (KP_UNLIKELY(f(CLOCK_MONOTONIC, &ts) != 0))
		clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* CLOCK_REALTIME, the clock of pthread_cond_timedwait's and
 * pthread_mutex_timedlock's deadlines, by the same vDSO function: the
 * daemon's wait (every pass) called libc's wrapper, whose window of time
 * functions nothing else of a small program touches (s35: bench-prodcons
 * under the preload, setarch -R, 16 pages of libc's text for it). */
void kp__realtime(struct timespec *ts)
{
	if (KP_UNLIKELY(!atomic_load_explicit(&vdso_clock, memory_order_relaxed)))
		(void)kp__now_ns(); /* the lookup */
	clock_fn f = atomic_load_explicit(&vdso_clock, memory_order_relaxed);
	if (KP_UNLIKELY(f(CLOCK_REALTIME, ts) != 0))
		clock_gettime(CLOCK_REALTIME, ts);
}

long kp__os_write(kp__oscount *c, int fd, const void *buf, size_t len)
{
	count(c, KP_OS_OTHER);
	return (long)write(fd, buf, len);
}

int kp__os_open_log(kp__oscount *c, const char *path)
{
	count(c, KP_OS_OTHER);
	return open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
}

void kp__os_close(kp__oscount *c, int fd)
{
	count(c, KP_OS_OTHER);
	close(fd);
}

/* ---- membarrier: the releasing side of a grace period (pagemap.c) -------- */
/* Register for MEMBARRIER_CMD_PRIVATE_EXPEDITED (Linux 4.14). 0, or -errno
 * (ENOSYS, EINVAL, or a sandbox's EPERM): the readers then fence themselves. */
int kp__os_membarrier_register(kp__oscount *c)
{
	count(c, KP_OS_OTHER);
	return syscall(__NR_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0, 0) == 0 ? 0 : -errno;
}

/* Every running thread of the process executes a full memory barrier before
 * this returns (an IPI to the CPUs running them; a thread not running has
 * passed one in the context switch). Not subject to fault injection: it
 * takes no memory, and a grace period cannot end without it. 0 or -errno. */
int kp__os_membarrier(kp__oscount *c)
{
	count(c, KP_OS_OTHER);
	return syscall(__NR_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0) == 0 ? 0 : -errno;
}

int kp__os_tid(void)
{
	return (int)syscall(SYS_gettid);
}

void kp__os_die(const char *line)
{
	/* Every signal held off first (abort lets SIGABRT through): a handler
	 * let in here, its thread's call refused, called into the pool and
	 * met the refusal again, nested in the line's write (SA_NODEFER
	 * handlers, a signal every ~5 us), and under ASan a round died of
	 * SIGSEGV in ASan's report instead of this abort
	 * (test_outline_signal_nested_attack33; test_die_signals_attack35: 47
	 * handler calls inside a blocked write before, none now). */
	sigset_t all;
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, NULL);
	ssize_t n = write(2, line, strlen(line));
	(void)n;
	abort();
}

void kp__os_signals_off(sigset_t *old)
{
	sigset_t all;
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, old);
}

void kp__os_signals_back(const sigset_t *old)
{
	pthread_sigmask(SIG_SETMASK, old, NULL);
}

/* Through syscall(), whose window of libc the mappings' calls touch
 * anyway: libc's sched_yield wrapper sits in a window of file-system calls
 * (open, stat, access, ...) a small program may never touch, 16 pages of
 * its peak RSS (s35: bench-prodcons' spinning threads, setarch -R). */
void kp__os_yield(kp__oscount *c)
{
	count(c, KP_OS_OTHER);
	syscall(SYS_sched_yield);
}

/* ---- what the machine allows (primary_max:0) ------------------------------ */

/* A small file's first len - 1 bytes, NUL-terminated, through syscall():
 * libc's open sits in a 64 KiB window of its text that a small program
 * otherwise never touches (fault-around; tests/test_create_libc.c). The
 * byte count, or -1. */
static ssize_t file_read(const char *path, char *buf, size_t len)
{
	long fd = syscall(SYS_openat, AT_FDCWD, path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	long n = syscall(SYS_read, fd, buf, len - 1);
	syscall(SYS_close, fd);
	if (n >= 0)
		buf[n] = 0;
	return n;
}

/* The process's threads, zombies included, and whether its first thread
 * (the group's leader: main's) has ended, from /proc/self/stat (its state
 * and num_threads fields). 0, or -1 when it cannot be read. Three calls
 * (open, read, close), counted as one other. */
int kp__os_threads(kp__oscount *c, unsigned *threads, bool *leader_gone)
{
	count(c, KP_OS_OTHER);
	char buf[1024];
	ssize_t n = file_read("/proc/self/stat", buf, sizeof buf);
	const char *p = NULL; /* the last ')': the name may hold ')' and spaces (no strrchr: a libc import
			       * more moved the preload's bss a page, test_preload's resident test) */
	for (ssize_t i = 0; i < n; i++)
		if (buf[i] == ')')
			p = buf + i;
	if (!p || p[1] != ' ')
		return -1;
	p += 2;
	*leader_gone = *p == 'Z' || *p == 'X';
	for (int field = 3; field < 20; field++) { /* state is field 3, num_threads 20 */
		while (*p && *p != ' ')
			p++;
		if (*p++ != ' ')
			return -1;
	}
	unsigned v = 0;
	for (; *p >= '0' && *p <= '9'; p++)
		v = v * 10 + (unsigned)(*p - '0');
	*threads = v;
	return v ? 0 : -1;
}

/* The number in a small file (a cgroup's memory.max: "max" or bytes), or
 * SIZE_MAX when it says "max", is missing or unreadable. open/read only: no
 * stdio, nothing allocated (kp_create may run inside the preload's malloc). */
static size_t file_number(const char *path)
{
	char buf[64];
	ssize_t n = file_read(path, buf, sizeof buf);
	if (n <= 0 || buf[0] < '0' || buf[0] > '9')
		return SIZE_MAX;
	size_t v = 0;
	for (ssize_t i = 0; i < n && buf[i] >= '0' && buf[i] <= '9'; i++)
		v = v > SIZE_MAX / 10 ? SIZE_MAX : v * 10 + (size_t)(buf[i] - '0');
	return v;
}

/* The tightest limit in file leaf of the cgroup at p[0..len) (a path from
 * /proc/self/cgroup, "/" for the root) and of its ancestors, under root. */
static size_t tightest(const char *root, size_t rlen, const char *p, size_t len, const char *leaf, size_t llen)
{
	char path[640];
	size_t best = SIZE_MAX;
	for (;;) {
		/* root p[0..len) leaf, without snprintf */
		if (rlen + len + llen + 1 <= sizeof path) {
			memcpy(path, root, rlen);
			memcpy(path + rlen, p, len);
			memcpy(path + rlen + len, leaf, llen + 1);
			size_t v = file_number(path);
			best = v < best ? v : best;
		}
		while (len > 1 && p[len - 1] != '/')
			len--;
		if (len <= 1)
			break;
		len--; /* the parent */
	}
	return best;
}

/* The length of the path that starts at p and ends its line. Not strcspn:
 * its SSE4.2 code is a 64 KiB window of libc no other call touches. */
static size_t line_len(const char *p)
{
	size_t len = 0;
	while (p[len] && p[len] != '\n')
		len++;
	return len;
}

/* The tightest memory limit of this process's cgroup and its ancestors, from
 * /proc/self/cgroup: cgroup v2's memory.max ("0::/path"), and cgroup v1's
 * memory.limit_in_bytes ("N:memory:/path", or the root's where the path is
 * not mounted: a container sees its own group as the root), else SIZE_MAX.
 * Before v1's own group was read, a process in a v1 group of 256 MiB took
 * no limit at all, and the OOM killer ended it where kp_alloc should have
 * said NULL (tests/test_cgroup_limits.py). */
static size_t cgroup_limit(void)
{
	static const char v2[] = "/sys/fs/cgroup", v2leaf[] = "/memory.max";
	static const char v1[] = "/sys/fs/cgroup/memory", v1leaf[] = "/memory.limit_in_bytes";
	char line[1024];
	ssize_t n = file_read("/proc/self/cgroup", line, sizeof line);
	size_t best = SIZE_MAX;
	if (n > 3) {
		char *p = strstr(line, "0::/");
		if (p && (p == line || p[-1] == '\n')) {
			p += 3;
			size_t v = tightest(v2, sizeof v2 - 1, p, line_len(p), v2leaf, sizeof v2leaf - 1);
			best = v < best ? v : best;
		}
		p = strstr(line, ":memory:/");
		if (p) {
			p += 8;
			size_t v = tightest(v1, sizeof v1 - 1, p, line_len(p), v1leaf, sizeof v1leaf - 1);
			best = v < best ? v : best;
		}
	}
	size_t v1root = file_number("/sys/fs/cgroup/memory/memory.limit_in_bytes");
	return v1root < best ? v1root : best;
}

/* The bytes this process holds resident now (/proc/self/statm's second
 * field, in pages), or 0 when it cannot be read. */
size_t kp__os_self_resident(void)
{
	char buf[128];
	ssize_t n = file_read("/proc/self/statm", buf, sizeof buf);
	const char *p = buf;
	if (n <= 0)
		return 0;
	while (*p && *p != ' ')
		p++;
	size_t pages = 0;
	for (p++; p < buf + n && *p >= '0' && *p <= '9'; p++)
		pages = pages * 10 + (size_t)(*p - '0');
	return pages * (size_t)KP_PAGE;
}

size_t kp__os_as_limit(void)
{
	/* through syscall() (kp__os_yield's reason: libc's getrlimit wrapper
	 * sits in its window of file-system calls); the kernel's struct rlimit
	 * is libc's on 64-bit Linux */
	struct rlimit rl;
	return syscall(SYS_getrlimit, RLIMIT_AS, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY ? (size_t)rl.rlim_cur
											   : SIZE_MAX;
}

size_t kp__os_memory_limit(void)
{
	/* sysinfo(2) as sysconf(_SC_PHYS_PAGES) reads it, through syscall():
	 * sysconf's jump table and sysinfo's wrapper are each a 64 KiB window of
	 * libc that a small program never touches otherwise (fault-around) */
	struct sysinfo si;
	bool ok = syscall(SYS_sysinfo, &si) == 0;
	size_t unit = ok && si.mem_unit ? si.mem_unit : 1;
	size_t phys = ok && si.totalram ? (size_t)si.totalram * unit : (size_t)1 << 40;
	/* swap: the machine allows it too (Linux's overcommit heuristic counts
	 * it); sysinfo's totalswap is /proc/meminfo's SwapTotal, which was read
	 * into 4 KiB on the stack: kp_create, which the first malloc of a
	 * program under the preload runs, took the stack two pages deeper than
	 * the program ever did (test_create_stack) */
	size_t swap = ok ? (size_t)si.totalswap * unit : 0;
	size_t machine = phys + swap, cg = cgroup_limit();
	return cg < machine ? cg : machine;
}
