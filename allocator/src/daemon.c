/*
 * daemon.c - the grow daemon: one thread per pool keeping the primary sized
 * ahead of demand.
 *
 * A small state machine under d->mu: OFF -> RUNNING -> STOPPING -> OFF, and
 * RESTART in a fork child (the thread does not survive fork; the first slow
 * path in the child starts a new one). The thread waits on a condition
 * variable; the allocation path signals it when headroom falls under low_wm
 * (one atomic exchange decides who signals, so a burst costs one wake-up),
 * and daemon_interval_ms is the fallback timer. Each pass:
 *   1. grows, mapping and pre-faulting segments, until headroom >= the
 *      target (high_wm, shifted by the boost: daemon_target);
 *   2. shrinks, unmapping segments that stayed free for decay_ms while the
 *      headroom stays >= the same target and capacity >= primary_initial;
 *   3. refills the backup after use;
 *   4. unmaps what it released once no lookup can still read it (pagemap.c).
 * Tests drive passes without the thread through kp_daemon_step.
 */
#include "internal.h"

#include <signal.h>

uint64_t kp__pool_now(kp_pool *pool)
{
	return kp__now_ns() + atomic_load_explicit(&pool->daemon.clock_offset_ns, memory_order_relaxed);
}

/* The one headroom target of a pass: high_wm shifted by the boost, after
 * the boost has decayed one step per decay_ms without the allocation path
 * growing by itself. Growth fills the headroom up to it and shrink keeps it,
 * so that the two never undo each other: a pass grows only below the target,
 * and shrinks only what leaves at least the target (a band of one segment,
 * the hysteresis). Before, growth aimed at the boosted target while shrink
 * kept only high_wm: after a burst, each segment released was grown back at
 * the next pass (51 grows and 187 shrinks in the 5 s after a 500 MiB free). */
static size_t daemon_target(kp_pool *pool)
{
	uint64_t now = kp__pool_now(pool);
	int boost = atomic_load(&pool->grow_boost);
	if (boost && now - atomic_load(&pool->boost_at_ns) > (uint64_t)pool->conf.decay_ms * 1000000ull) {
		atomic_compare_exchange_strong(&pool->grow_boost, &boost, boost - 1);
		atomic_store(&pool->boost_at_ns, now);
	}
	return pool->conf.high_wm << atomic_load(&pool->grow_boost);
}

int kp__daemon_pass(kp_pool *pool)
{
	kp__daemon *d = &pool->daemon;
	int actions = 0;
	int saved = kp__os_caller;
	kp__os_caller = KP_CALLER_DAEMON;
	atomic_fetch_add(&d->passes, 1);
	size_t target = daemon_target(pool);
	while (kp__primary_headroom(pool) < target) {
		if (kp__primary_grow(pool, pool->conf.prefault) < 0) /* counts d->grows itself */
			break;
		actions++;
	}
	int shrunk = kp__primary_shrink(pool, target);
	atomic_fetch_add(&d->shrinks, (uint64_t)shrunk);
	actions += shrunk + kp__huge_cache_trim(pool, false);
	kp__grace_reclaim(pool); /* unmap what was released, once no reader can see it */
	uint64_t frees = atomic_load(&pool->bk_frees);
	if (frees != d->refilled_at && kp__backup_refill(pool)) {
		d->refilled_at = frees;
		atomic_fetch_add(&d->refills, 1);
	}
	/* The backup mode follows every change of the primary's use (units_take,
	 * units_give, grow): the pass need not take the pool lock for it. */
	pthread_mutex_lock(&d->mu);
	pthread_cond_broadcast(&d->pass_cv);
	pthread_mutex_unlock(&d->mu);
	kp__os_caller = saved;
	return actions;
}

static void *daemon_main(void *arg)
{
	kp_pool *pool = arg;
	kp__daemon *d = &pool->daemon;
	kp__os_caller = KP_CALLER_DAEMON;
	kp__os_thread_name(&pool->os, "kpool-daemon");
	pthread_mutex_lock(&d->mu);
	while (atomic_load(&d->state) == KP_D_RUNNING) {
		if (!atomic_load(&d->wake_pending)) {
			struct timespec ts;
			clock_gettime(CLOCK_REALTIME, &ts);
			uint64_t ns = (uint64_t)ts.tv_nsec + (uint64_t)pool->conf.daemon_interval_ms * 1000000ull;
			ts.tv_sec += (time_t)(ns / 1000000000ull);
			ts.tv_nsec = (long)(ns % 1000000000ull);
			pthread_cond_timedwait(&d->cv, &d->mu, &ts);
		}
		if (atomic_load(&d->state) != KP_D_RUNNING)
			break;
		if (atomic_exchange(&d->wake_pending, 0))
			atomic_fetch_add(&d->wakeups, 1);
		else
			atomic_fetch_add(&d->timer_wakeups, 1);
		pthread_mutex_unlock(&d->mu);
		kp__daemon_pass(pool);
		pthread_mutex_lock(&d->mu);
	}
	pthread_mutex_unlock(&d->mu);
	return NULL;
}

int kp__daemon_start(kp_pool *pool)
{
	kp__daemon *d = &pool->daemon;
	/* The daemon takes no signal meant for the application. */
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	atomic_store(&d->state, KP_D_RUNNING);
	int rc = pthread_create(&d->thread, NULL, daemon_main, pool);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (rc != 0) {
		atomic_store(&d->state, KP_D_OFF);
		kp__event(pool, KP_EV_DAEMON, KP_POOL_PRIMARY, NULL, 0, "daemon failed to start (%d)", rc);
		return -1;
	}
	kp__event(pool, KP_EV_DAEMON, KP_POOL_PRIMARY, NULL, 0, "daemon started");
	return 0;
}

void kp__daemon_stop(kp_pool *pool)
{
	kp__daemon *d = &pool->daemon;
	pthread_mutex_lock(&d->mu);
	int st = atomic_load(&d->state);
	if (st != KP_D_RUNNING) {
		atomic_store(&d->state, KP_D_OFF);
		pthread_mutex_unlock(&d->mu);
		return;
	}
	atomic_store(&d->state, KP_D_STOPPING);
	pthread_cond_signal(&d->cv);
	pthread_mutex_unlock(&d->mu);
	pthread_join(d->thread, NULL);
	atomic_store(&d->state, KP_D_OFF);
}

/* Called by the allocation path at a watermark: cheap when the daemon is
 * already awake (one atomic exchange), never blocks for long (the daemon
 * holds d->mu only between passes). */
void kp__daemon_kick(kp_pool *pool)
{
	kp__daemon *d = &pool->daemon;
	int st = atomic_load_explicit(&d->state, memory_order_relaxed);
	if (st == KP_D_RESTART) {
		int expect = KP_D_RESTART;
		if (atomic_compare_exchange_strong(&d->state, &expect, KP_D_OFF) && kp__daemon_start(pool) == 0)
			kp__event(pool, KP_EV_DAEMON, KP_POOL_PRIMARY, NULL, 0, "daemon restarted after fork");
		return;
	}
	if (st != KP_D_RUNNING || atomic_exchange(&d->wake_pending, 1))
		return;
	pthread_mutex_lock(&d->mu);
	pthread_cond_signal(&d->cv);
	pthread_mutex_unlock(&d->mu);
}

/* Wake the daemon and wait until *counter (passes or grows) moves, the
 * daemon stops, or the deadline passes (CLOCK_MONOTONIC ns). The condition
 * variable is broadcast after every pass and every segment the daemon adds;
 * the deadline is re-checked every millisecond. */
void kp__daemon_wait(kp_pool *pool, _Atomic uint64_t *counter, uint64_t deadline)
{
	kp__daemon *d = &pool->daemon;
	uint64_t seen = atomic_load(counter);
	kp__daemon_kick(pool);
	pthread_mutex_lock(&d->mu);
	while (atomic_load(counter) == seen && atomic_load(&d->state) == KP_D_RUNNING && kp__now_ns() < deadline) {
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += 1000000;
		if (ts.tv_nsec >= 1000000000) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000;
		}
		pthread_cond_timedwait(&d->pass_cv, &d->mu, &ts);
	}
	pthread_mutex_unlock(&d->mu);
}

/* The four calls below are control calls, never on the allocation path: they
 * look the pool up in the registry of live pools (one global mutex) before
 * they read a byte of it, so any pointer that is no live pool is refused. */
KP_EXPORT void kp_daemon_wake(kp_pool *pool)
{
	if (pool && kp__pool_live(pool, "kp_daemon_wake"))
		kp__daemon_kick(pool);
}

KP_EXPORT int kp_daemon_start(kp_pool *pool)
{
	if (!pool || !kp__pool_live(pool, "kp_daemon_start"))
		return KP_EINVAL;
	kp__daemon *d = &pool->daemon;
	int st = atomic_load(&d->state);
	do {
		if (st == KP_D_RUNNING)
			return 0;
		/* Claim the start with the transient STOPPING, which the
		 * allocation path's kick ignores (it starts a thread only from
		 * RESTART): no kpool lock is held across pthread_create. */
	} while (!atomic_compare_exchange_weak(&d->state, &st, KP_D_STOPPING));
	atomic_store(&d->wake_pending, 1); /* first pass at once, as kp_create */
	return kp__daemon_start(pool) == 0 ? 0 : KP_ENOMEM;
}

KP_EXPORT void kp_daemon_stop(kp_pool *pool)
{
	if (pool && kp__pool_live(pool, "kp_daemon_stop"))
		kp__daemon_stop(pool);
}

KP_EXPORT int kp_daemon_step(kp_pool *pool, uint64_t advance_ms)
{
	if (!pool || !kp__pool_live(pool, "kp_daemon_step"))
		return KP_EINVAL;
	atomic_fetch_add(&pool->daemon.clock_offset_ns, advance_ms * 1000000ull);
	return kp__daemon_pass(pool);
}
