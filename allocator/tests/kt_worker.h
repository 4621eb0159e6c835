/*
 * kt_worker.h - persistent worker threads for tests that need the same
 * thread to act several times (its thread cache kept between calls):
 * w_start, w_call(w, fn, arg) runs fn(arg) on w and waits, w_stop.
 */
#ifndef KT_WORKER_H
#define KT_WORKER_H

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

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

#endif
