/* event_queue.c - bounded FIFO of typed events; see event_queue.h. */
#include "event_queue.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/clock.h"

static struct bl_event *event_new(enum bl_event_kind kind, void *ud, size_t extra)
{
	struct bl_event *ev = calloc(1, sizeof *ev + extra);
	if (ev) {
		ev->kind = kind;
		ev->user_data = ud;
	}
	return ev;
}

struct bl_event *bl_event_done(boxlite_done_cb cb, void *ud, int status, const char *message)
{
	struct bl_event *ev = event_new(BL_EV_DONE, ud, 0);
	if (!ev)
		return NULL;
	ev->done.cb = cb;
	ev->done.status = status;
	/* A message is a courtesy; losing it to ENOMEM must not lose the event. */
	ev->done.message = message ? strdup(message) : NULL;
	return ev;
}

struct bl_event *bl_event_output(boxlite_output_cb cb, void *ud, int stream, size_t len)
{
	struct bl_event *ev = event_new(BL_EV_OUTPUT, ud, len);
	if (!ev)
		return NULL;
	ev->output.cb = cb;
	ev->output.stream = stream;
	ev->output.len = len;
	return ev;
}

struct bl_event *bl_event_exit(boxlite_exit_cb cb, void *ud, const boxlite_exit *exit)
{
	struct bl_event *ev = event_new(BL_EV_EXIT, ud, 0);
	if (!ev)
		return NULL;
	ev->exit.cb = cb;
	ev->exit.exit = *exit;
	return ev;
}

void bl_event_free(struct bl_event *ev)
{
	if (!ev)
		return;
	if (ev->kind == BL_EV_DONE)
		free(ev->done.message);
	free(ev);
}

static int cond_init_monotonic(pthread_cond_t *c)
{
	pthread_condattr_t attr;
	int rc = pthread_condattr_init(&attr);
	if (rc)
		return rc;
	rc = pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
	if (!rc)
		rc = pthread_cond_init(c, &attr);
	pthread_condattr_destroy(&attr);
	return rc;
}

int bl_queue_init(struct bl_queue *q, size_t capacity)
{
	memset(q, 0, sizeof *q);
	q->capacity = capacity;
	if (pthread_mutex_init(&q->lock, NULL))
		return BOXLITE_ERR_NO_MEMORY;
	if (cond_init_monotonic(&q->not_empty)) {
		pthread_mutex_destroy(&q->lock);
		return BOXLITE_ERR_NO_MEMORY;
	}
	if (cond_init_monotonic(&q->not_full)) {
		pthread_cond_destroy(&q->not_empty);
		pthread_mutex_destroy(&q->lock);
		return BOXLITE_ERR_NO_MEMORY;
	}
	return BOXLITE_OK;
}

void bl_queue_destroy(struct bl_queue *q)
{
	struct bl_event *ev = q->head;
	while (ev) {
		struct bl_event *next = ev->next;
		bl_event_free(ev);
		ev = next;
	}
	q->head = q->tail = NULL;
	pthread_cond_destroy(&q->not_full);
	pthread_cond_destroy(&q->not_empty);
	pthread_mutex_destroy(&q->lock);
}

static void append(struct bl_queue *q, struct bl_event *ev)
{
	ev->next = NULL;
	if (q->tail)
		q->tail->next = ev;
	else
		q->head = ev;
	q->tail = ev;
	q->count++;
	pthread_cond_signal(&q->not_empty);
}

/* Wait on c until deadline (NULL: forever).  Returns false once it passed. */
static bool wait_until(pthread_cond_t *c, pthread_mutex_t *m, const struct timespec *deadline)
{
	if (!deadline) {
		pthread_cond_wait(c, m);
		return true;
	}
	return pthread_cond_timedwait(c, m, deadline) != ETIMEDOUT;
}

int bl_queue_push_stream(struct bl_queue *q, struct bl_event *ev, int timeout_ms)
{
	struct timespec deadline, *dl = NULL;
	if (timeout_ms >= 0) {
		deadline = bl_deadline_after_ms(timeout_ms);
		dl = &deadline;
	}
	pthread_mutex_lock(&q->lock);
	while (!q->closed && q->count >= q->capacity) {
		if (!wait_until(&q->not_full, &q->lock, dl) && q->count >= q->capacity && !q->closed) {
			pthread_mutex_unlock(&q->lock);
			return BOXLITE_ERR_TIMEOUT;
		}
	}
	if (q->closed) {
		pthread_mutex_unlock(&q->lock);
		return BOXLITE_ERR_RUNTIME_CLOSED;
	}
	append(q, ev);
	pthread_mutex_unlock(&q->lock);
	return BOXLITE_OK;
}

void bl_queue_push_terminal(struct bl_queue *q, struct bl_event *ev)
{
	pthread_mutex_lock(&q->lock);
	append(q, ev);
	pthread_mutex_unlock(&q->lock);
}

void bl_queue_close(struct bl_queue *q)
{
	pthread_mutex_lock(&q->lock);
	q->closed = true;
	pthread_cond_broadcast(&q->not_full);
	pthread_cond_broadcast(&q->not_empty);
	pthread_mutex_unlock(&q->lock);
}

void bl_queue_hold(struct bl_queue *q)
{
	pthread_mutex_lock(&q->lock);
	q->holds++;
	pthread_mutex_unlock(&q->lock);
}

void bl_queue_release(struct bl_queue *q)
{
	pthread_mutex_lock(&q->lock);
	q->holds--;
	if (q->holds == 0)
		pthread_cond_broadcast(&q->not_empty);
	pthread_mutex_unlock(&q->lock);
}

static bool finished(const struct bl_queue *q)
{
	return q->closed && q->count == 0 && q->holds == 0;
}

size_t bl_queue_pop_many(struct bl_queue *q, struct bl_event **out, size_t max, int timeout_ms,
			 int *status)
{
	struct timespec deadline, *dl = NULL;
	if (timeout_ms >= 0) {
		deadline = bl_deadline_after_ms(timeout_ms);
		dl = &deadline;
	}
	pthread_mutex_lock(&q->lock);
	while (q->count == 0 && !finished(q)) {
		if (!wait_until(&q->not_empty, &q->lock, dl) && q->count == 0) {
			pthread_mutex_unlock(&q->lock);
			*status = BOXLITE_ERR_TIMEOUT;
			return 0;
		}
	}
	if (q->count == 0) {
		pthread_mutex_unlock(&q->lock);
		*status = BOXLITE_ERR_RUNTIME_CLOSED;
		return 0;
	}
	size_t n = 0;
	while (n < max && q->head) {
		struct bl_event *ev = q->head;
		q->head = ev->next;
		ev->next = NULL;
		out[n++] = ev;
	}
	if (!q->head)
		q->tail = NULL;
	q->count -= n;
	/* Each slot freed is room for one waiting producer.  glibc's signal and
	 * broadcast make no system call when nobody waits. */
	if (n == 1)
		pthread_cond_signal(&q->not_full);
	else
		pthread_cond_broadcast(&q->not_full);
	pthread_mutex_unlock(&q->lock);
	*status = BOXLITE_OK;
	return n;
}

struct bl_event *bl_queue_pop(struct bl_queue *q, int timeout_ms, int *status)
{
	struct bl_event *ev = NULL;
	return bl_queue_pop_many(q, &ev, 1, timeout_ms, status) ? ev : NULL;
}
