/*
 * kt_worker.h - persistent worker threads for tests that need the same
 * thread to act several times (its thread cache kept between calls):
 * w_start, w_call(w, fn, arg) runs fn(arg) on w and waits, w_stop.
 * kt_cache_holder(pool): a thread that holds a cache of pool, empty, until
 * kt_cache_release (or the process ends): a flush parks batches only while
 * a second thread's cache could take them (tcache.c, park_ok), so a test
 * that parks from one thread at a time (a producer that left, then a
 * consumer) keeps one alive beside it. A test that forks releases it
 * first: under TSan, a child that makes a thread may be given the id of
 * one that did not cross the fork ("dup thread with used id").
 */
#ifndef KT_WORKER_H
#define KT_WORKER_H

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "kpool.h"

typedef struct worker {
	pthread_t t;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	void (*fn)(void *);
	void *arg;
	int busy, quit;
} worker;

static inline void *kt_worker_main(void *p)
{
	worker *w = p;
	pthread_mutex_lock(&w->mu);
	for (;;) {
		while (!w->busy && !w->quit)
			pthread_cond_wait(&w->cv, &w->mu);
		if (!w->busy)
			break;
		pthread_mutex_unlock(&w->mu);
		w->fn(w->arg);
		pthread_mutex_lock(&w->mu);
		w->busy = 0;
		pthread_cond_broadcast(&w->cv);
	}
	pthread_mutex_unlock(&w->mu);
	return NULL;
}

static inline void w_start(worker *w)
{
	memset(w, 0, sizeof *w);
	pthread_mutex_init(&w->mu, NULL);
	pthread_cond_init(&w->cv, NULL);
	if (pthread_create(&w->t, NULL, kt_worker_main, w) != 0)
		abort();
}

static inline void w_call(worker *w, void (*fn)(void *), void *arg)
{
	pthread_mutex_lock(&w->mu);
	w->fn = fn;
	w->arg = arg;
	w->busy = 1;
	pthread_cond_broadcast(&w->cv);
	while (w->busy)
		pthread_cond_wait(&w->cv, &w->mu);
	pthread_mutex_unlock(&w->mu);
}

static inline void w_stop(worker *w)
{
	pthread_mutex_lock(&w->mu);
	w->quit = 1;
	pthread_cond_broadcast(&w->cv);
	pthread_mutex_unlock(&w->mu);
	pthread_join(w->t, NULL);
	pthread_mutex_destroy(&w->mu);
	pthread_cond_destroy(&w->cv);
}

static inline void kt_hold_cache_fn(void *arg)
{
	kp_pool *pool = arg;
	void *p = kp_alloc(pool, 1000, 0); /* a class no test of parking uses */
	kp_free(pool, p);
	kp_thread_flush(pool); /* its bins empty again (nothing is parked yet) */
}

/* Left running, the worker waits until the process (a test's child)
 * ends; its cache is gone with the pool, whose id no later call matches. */
static inline worker *kt_cache_holder(kp_pool *pool)
{
	static worker holders[8];
	static unsigned n;
	if (n == sizeof holders / sizeof holders[0])
		abort();
	w_start(&holders[n]);
	w_call(&holders[n], kt_hold_cache_fn, pool);
	return &holders[n++];
}

/* The holder's thread exits: its cache (empty) goes back to the pool. */
static inline void kt_cache_release(worker *w)
{
	w_stop(w);
}

#endif
