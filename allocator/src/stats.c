/*
 * stats.c - the counters as one JSON object. Readable at any time from any
 * thread: fast-path counters are summed over the live thread caches (each
 * written only by its thread) plus what exited threads left behind and the
 * calls served without a cache ("threads" counts the live caches).
 */
#include "internal.h"
#include "outline.h"

#include <stdarg.h>

typedef struct out {
	char *buf;
	size_t len, pos;
} out;

static void put(out *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(out *o, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	size_t room = o->pos < o->len ? o->len - o->pos : 0;
	/* kp__fmt, not vsnprintf: libc's printf machinery is 128 KiB of text
	 * (two fault-around windows) a program that never prints would have
	 * resident from its first stats on (test_destroy_peak) */
	o->pos += kp__fmt(room ? o->buf + o->pos : NULL, room, fmt, ap);
	va_end(ap);
}

#define U(x) ((unsigned long long)(x))
#define LD(x) U(atomic_load(&(x)))

static void put_os(out *o, const kp__oscount *c, int who)
{
	static const char *const names[KP_OS__N] = {"mmap", "munmap", "madvise", "mprotect", "other"};
	put(o, "{");
	for (int k = 0; k < KP_OS__N; k++)
		put(o, "%s\"%s\":%llu", k ? "," : "", names[k], U(atomic_load(&c->n[who][k])));
	put(o, "}");
}

void kp__stats_primary(kp_pool *pool, kp__primary_stats *st)
{
	uint64_t allocs = atomic_load(&pool->dead_allocs), frees = atomic_load(&pool->dead_frees);
	uint64_t in_use = atomic_load(&pool->dead_in_use);
	unsigned threads = 0;
	pthread_mutex_lock(&pool->lock);
	for (kp__tcache *tc = pool->tcaches; tc; tc = tc->next) {
		allocs += atomic_load_explicit(&tc->allocs, memory_order_relaxed);
		frees += atomic_load_explicit(&tc->frees, memory_order_relaxed);
		in_use += atomic_load_explicit(&tc->in_use, memory_order_relaxed);
		for (unsigned c = 0; c < KP_NCLASS; c++) {
			uint64_t a = atomic_load_explicit(&tc->bin[c].allocs, memory_order_relaxed);
			uint64_t f = atomic_load_explicit(&tc->bin[c].frees, memory_order_relaxed);
			allocs += a;
			frees += f;
			in_use += (a - f) * (kp__class_size[c] - KP_HDR);
		}
		threads++;
	}
	in_use += kp__ol_in_use(pool); /* layout:outline's blocks, from its spans (outline.c) */
	kp__ol_counts(pool, &allocs, &frees);
	size_t segments = 0, capacity = pool->capacity;
	size_t committed = (pool->units_total - pool->units_free) * KP_UNIT_SIZE;
	for (kp__seg *s = pool->segs; s; s = s->next)
		segments++;
	kp__ol_space(pool, &capacity, &segments, &committed); /* layout:outline's segments */
	*st = (kp__primary_stats){.allocs = allocs,
				  .frees = frees,
				  .in_use = in_use,
				  .capacity = capacity,
				  .segments = segments,
				  .committed = committed,
				  .threads = threads};
	pthread_mutex_unlock(&pool->lock);
	kp__stats_peak(pool, in_use);
}

void kp__stats_peak(kp_pool *pool, size_t in_use)
{
	if (!pool->ol)
		return;
	size_t peak = atomic_load_explicit(&pool->peak_out_bytes, memory_order_relaxed);
	while (peak < in_use && !atomic_compare_exchange_weak_explicit(&pool->peak_out_bytes, &peak, in_use,
								       memory_order_relaxed, memory_order_relaxed))
		;
}

static void xcount_add(uint64_t xc[5], const kp__xcount *x)
{
	xc[0] += atomic_load_explicit(&x->parked, memory_order_relaxed);
	xc[1] += atomic_load_explicit(&x->taken, memory_order_relaxed);
	xc[2] += atomic_load_explicit(&x->full, memory_order_relaxed);
	xc[3] += atomic_load_explicit(&x->empty, memory_order_relaxed);
	xc[4] += atomic_load_explicit(&x->returned, memory_order_relaxed);
}

/* The transfer cache's counts (kp__xcount): the pool's (exited threads,
 * the shared path, the drains) and each live cache's, under the pool lock,
 * which kp__tcache_release holds while it folds a cache's into the pool's
 * and unlists it: none is missed or counted twice. */
static void xfer_totals(kp_pool *pool, uint64_t xc[5])
{
	pthread_mutex_lock(&pool->lock);
	xcount_add(xc, &pool->xfer_count);
	for (const kp__tcache *tc = pool->tcaches; tc; tc = tc->next)
		xcount_add(xc, &tc->xcount);
	pthread_mutex_unlock(&pool->lock);
}

/* The daemon's sizing as kp_stats shows it: its target (bytes kept ahead),
 * the demand's rate and the bytes the allocation path faulted itself. On an
 * outline pool the inline primary's (large blocks: alloc.c's classic path)
 * plus the outline pass's (kp__ol_daemon_pass: its target and rate, and the
 * segments heaps took before the daemon pre-faulted them, ol->cold, which
 * counts those the allocation path mapped itself, ol->alloc_maps, past the
 * pool's first; each at most a segment of pages faulted on the allocating
 * thread). Before, an outline pool showed the inline primary's alone: 0, 0
 * and 0 after 256 MiB taken in 40 ms (test_memory.c, test_adaptive_target). */
static void daemon_sizing(kp_pool *pool, uint64_t *target, uint64_t *rate, uint64_t *faulted)
{
	kp__daemon *d = &pool->daemon;
	*target = atomic_load(&d->target);
	*rate = atomic_load(&d->rate);
	*faulted = atomic_load(&d->faulted);
	kp__ol *ol = pool->ol;
	if (!ol)
		return;
	*target += atomic_load_explicit(&ol->grow.shown_target, memory_order_relaxed);
	*rate += atomic_load_explicit(&ol->grow.shown_rate, memory_order_relaxed);
	*faulted += atomic_load_explicit(&ol->cold, memory_order_relaxed) * OL_SEG_SIZE;
}

int kp__stats_json(kp_pool *pool, char *buf, size_t len)
{
	kp__primary_stats ps;
	kp__stats_primary(pool, &ps);
	uint64_t allocs = ps.allocs, frees = ps.frees, in_use = ps.in_use;
	size_t capacity = ps.capacity, segments = ps.segments, committed = ps.committed;
	unsigned threads = ps.threads;

	out o = {buf, len, 0};
	put(&o, "{\"primary\":{\"layout\":\"%s\",\"capacity_bytes\":%llu,\"max_bytes\":%llu,\"in_use_bytes\":%llu,",
	    pool->conf.layout, U(capacity), U(pool->conf.primary_max), U(in_use));
	put(&o, "\"peak_in_use_bytes\":%llu,\"committed_bytes\":%llu,\"huge_bytes\":%llu,\"segments\":%llu,",
	    LD(pool->peak_out_bytes), U(committed), LD(pool->huge_bytes), U(segments));
	put(&o, "\"huge_cached_bytes\":%llu,", LD(pool->huge_cached_bytes));
	put(&o, "\"headroom_bytes\":%llu,\"allocs\":%llu,\"frees\":%llu,\"failures\":%llu,", LD(pool->headroom),
	    U(allocs), U(frees), LD(pool->failures));
	put(&o, "\"grows\":%llu,\"shrinks\":%llu,\"purges\":%llu,\"purged_bytes\":%llu},", LD(pool->grows),
	    LD(pool->shrinks), LD(pool->purges), LD(pool->purged_bytes));
	kp__backup *b = &pool->backup;
	put(&o, "\"backup\":{\"capacity_bytes\":%llu,\"in_use_bytes\":%llu,\"peak_in_use_bytes\":%llu,", U(b->size),
	    LD(b->in_use), LD(b->peak));
	put(&o, "\"allocs\":%llu,\"frees\":%llu,\"refusals\":%llu,\"active\":%s,\"enters\":%llu,\"leaves\":%llu},",
	    LD(pool->bk_allocs), LD(pool->bk_frees), LD(pool->bk_refusals),
	    atomic_load(&pool->backup_mode) ? "true" : "false", LD(pool->bk_enters), LD(pool->bk_leaves));
	kp__daemon *d = &pool->daemon;
	uint64_t target, rate, faulted;
	daemon_sizing(pool, &target, &rate, &faulted);
	int st = atomic_load(&d->state);
	put(&o, "\"daemon\":{\"running\":%s,\"state\":\"%s\",\"wakeups\":%llu,\"timer_wakeups\":%llu,",
	    st == KP_D_RUNNING ? "true" : "false",
	    st == KP_D_RUNNING	 ? "running"
	    : st == KP_D_RESTART ? "restart_pending"
	    : st == KP_D_OFF	 ? "off"
				 : "stopping",
	    LD(d->wakeups), LD(d->timer_wakeups));
	put(&o, "\"passes\":%llu,\"grows\":%llu,\"shrinks\":%llu,\"backup_refills\":%llu,", LD(d->passes), LD(d->grows),
	    LD(d->shrinks), LD(d->refills));
	put(&o,
	    "\"target_bytes\":%llu,\"prefaulted_bytes\":%llu,\"rate_bytes_per_s\":%llu,\"alloc_faulted_bytes\":%llu,",
	    U(target), LD(d->ready), U(rate), U(faulted));
	put(&o, "\"prefaulting\":%s,\"touched_pct\":%u},",
	    pool->conf.prefault && (pool->conf.prefault_touch == 0 || atomic_load(&d->prefaulting)) ? "true" : "false",
	    atomic_load(&d->touch_pct));
	put(&o, "\"integrity\":{\"double_frees\":%llu,\"invalid_frees\":%llu,\"corruptions\":%llu,\"bad_sizes\":%llu,",
	    LD(pool->double_frees), LD(pool->invalid_frees), LD(pool->corruptions), LD(pool->bad_sizes));
	put(&o, "\"overflows\":%llu,\"use_after_frees\":%llu,\"freelist_errors\":%llu,\"quarantined\":%llu},",
	    LD(pool->overflows), LD(pool->use_after_frees), LD(pool->freelist_errors), LD(pool->quarantined));
	uint64_t xc[5] = {0};
	xfer_totals(pool, xc);
	put(&o, "\"transfer\":{\"parked\":%llu,\"taken\":%llu,\"full\":%llu,\"empty\":%llu,\"returned\":%llu},",
	    U(xc[0]), U(xc[1]), U(xc[2]), U(xc[3]), U(xc[4]));
	put(&o, "\"faults\":{\"injected\":%llu,\"waits\":%llu,\"wait_successes\":%llu},", LD(pool->faults_injected),
	    LD(pool->waits), LD(pool->wait_successes));
	static const char *const who[KP_CALLER__N] = {"alloc", "daemon", "setup"};
	uint64_t total = 0;
	for (int w = 0; w < KP_CALLER__N; w++)
		for (int k = 0; k < KP_OS__N; k++)
			total += atomic_load(&pool->os.n[w][k]);
	put(&o, "\"syscalls\":{");
	for (int w = 0; w < KP_CALLER__N; w++) {
		put(&o, "\"%s\":", who[w]);
		put_os(&o, &pool->os, w);
		put(&o, ",");
	}
	put(&o, "\"total\":%llu},", U(total));
	put(&o, "\"events\":{\"recorded\":%llu,\"dropped\":%llu},\"threads\":%u}", LD(pool->ring.head),
	    LD(pool->ring.dropped), threads);
	if (len)
		buf[o.pos < len ? o.pos : len - 1] = 0;
	return (int)o.pos;
}
