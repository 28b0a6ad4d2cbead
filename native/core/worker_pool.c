/* worker_pool.c - threads for blocking work, so neither callers nor the
 * reactor wait on a box's set-up. */
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>

#include "core.h"

struct job {
	struct job *next;
	void (*fn)(void *);
	void *arg;
};

struct bl_workers {
	pthread_mutex_t lock;
	pthread_cond_t wake;
	struct job *head, *tail;
	bool stopping;
	unsigned n_threads;
	pthread_t threads[];
};

static void *worker_main(void *arg)
{
	struct bl_workers *w = arg;
	pthread_mutex_lock(&w->lock);
	for (;;) {
		while (!w->head && !w->stopping)
			pthread_cond_wait(&w->wake, &w->lock);
		struct job *job = w->head;
		if (!job) /* stopping, and every queued job has run */
			break;
		w->head = job->next;
		if (!w->head)
			w->tail = NULL;
		pthread_mutex_unlock(&w->lock);
		job->fn(job->arg);
		free(job);
		pthread_mutex_lock(&w->lock);
	}
	pthread_mutex_unlock(&w->lock);
	return NULL;
}

static void stop_and_join(struct bl_workers *w, unsigned started)
{
	pthread_mutex_lock(&w->lock);
	w->stopping = true;
	pthread_cond_broadcast(&w->wake);
	pthread_mutex_unlock(&w->lock);
	for (unsigned i = 0; i < started; i++)
		pthread_join(w->threads[i], NULL);
}

struct bl_workers *bl_workers_new(unsigned threads)
{
	struct bl_workers *w = calloc(1, sizeof *w + threads * sizeof(pthread_t));
	if (!w)
		return NULL;
	if (pthread_mutex_init(&w->lock, NULL)) {
		free(w);
		return NULL;
	}
	if (pthread_cond_init(&w->wake, NULL)) {
		pthread_mutex_destroy(&w->lock);
		free(w);
		return NULL;
	}
	for (unsigned i = 0; i < threads; i++) {
		if (pthread_create(&w->threads[i], NULL, worker_main, w)) {
			stop_and_join(w, i);
			pthread_cond_destroy(&w->wake);
			pthread_mutex_destroy(&w->lock);
			free(w);
			return NULL;
		}
	}
	w->n_threads = threads;
	return w;
}

int bl_workers_submit(struct bl_workers *w, void (*fn)(void *), void *arg)
{
	struct job *job = malloc(sizeof *job);
	if (!job)
		return BOXLITE_ERR_NO_MEMORY;
	job->next = NULL;
	job->fn = fn;
	job->arg = arg;
	pthread_mutex_lock(&w->lock);
	if (w->tail)
		w->tail->next = job;
	else
		w->head = job;
	w->tail = job;
	pthread_cond_signal(&w->wake);
	pthread_mutex_unlock(&w->lock);
	return BOXLITE_OK;
}

void bl_workers_free(struct bl_workers *w)
{
	stop_and_join(w, w->n_threads);
	pthread_cond_destroy(&w->wake);
	pthread_mutex_destroy(&w->lock);
	free(w);
}
