/*
 * event_queue.h - the bounded per-runtime queue between native producers
 * (reactor, workers, close) and the thread that drains.
 *
 * Two kinds of push.  A stream push (output) waits while the queue is full and
 * is refused once the queue is closed: that is the backpressure path.  A
 * terminal push (a completion or an Exit) is always accepted, even past
 * capacity and after close: there is at most one per operation, so the excess
 * is bounded, and refusing one would break "completes exactly once".
 *
 * Producers that may still post terminal events hold the queue
 * (bl_queue_hold/release).  Drain reports closure only when the queue is
 * closed, empty and unheld, so no late completion is stranded.
 */
#ifndef BOXLITE_EVENT_QUEUE_H
#define BOXLITE_EVENT_QUEUE_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "boxlite.h"

enum bl_event_kind { BL_EV_DONE, BL_EV_OUTPUT, BL_EV_EXIT };

struct bl_event {
	struct bl_event *next;
	enum bl_event_kind kind;
	void *user_data;
	union {
		struct {
			boxlite_done_cb cb;
			int status;
			char *message; /* owned, may be NULL */
		} done;
		struct {
			boxlite_output_cb cb;
			int stream;
			size_t len;
			boxlite_handle ack; /* acknowledge len bytes once cb returns (0: no) */
		} output;
		struct {
			boxlite_exit_cb cb;
			boxlite_exit exit;
		} exit;
	};
	uint8_t data[]; /* output bytes, allocated with the event */
};

struct bl_queue {
	pthread_mutex_t lock;
	pthread_cond_t not_empty;
	pthread_cond_t not_full;
	struct bl_event *head, *tail;
	size_t count, capacity;
	unsigned holds; /* producers that may still post terminal events */
	bool closed;
};

/* Allocation helpers; each returns NULL when out of memory. */
struct bl_event *bl_event_done(boxlite_done_cb cb, void *ud, int status, const char *message);
struct bl_event *bl_event_output(boxlite_output_cb cb, void *ud, int stream, size_t len);
struct bl_event *bl_event_exit(boxlite_exit_cb cb, void *ud, const boxlite_exit *exit);
void bl_event_free(struct bl_event *ev);

int bl_queue_init(struct bl_queue *q, size_t capacity);
/* Free every undelivered event, then the queue's own resources. */
void bl_queue_destroy(struct bl_queue *q);

/*
 * Stream push: waits up to timeout_ms (negative: forever) for space.  Returns
 * BOXLITE_OK (the queue owns ev), BOXLITE_ERR_TIMEOUT or
 * BOXLITE_ERR_RUNTIME_CLOSED (ev still belongs to the caller).
 */
int bl_queue_push_stream(struct bl_queue *q, struct bl_event *ev, int timeout_ms);
/* Terminal push: never waits, never refuses; the queue owns ev. */
void bl_queue_push_terminal(struct bl_queue *q, struct bl_event *ev);

/* Refuse further stream pushes and wake every waiter.  Idempotent. */
void bl_queue_close(struct bl_queue *q);
void bl_queue_hold(struct bl_queue *q);
void bl_queue_release(struct bl_queue *q);

/*
 * Pop one event, waiting up to timeout_ms (negative: forever) when empty.
 * Returns the event (caller dispatches and frees it), or NULL with *status
 * set to BOXLITE_ERR_TIMEOUT or BOXLITE_ERR_RUNTIME_CLOSED.
 */
struct bl_event *bl_queue_pop(struct bl_queue *q, int timeout_ms, int *status);
/*
 * Pop up to max events into out, in order, under one lock: waits as
 * bl_queue_pop for the first, takes only what is ready after it.  Returns
 * how many (the caller owns them), or 0 with *status as bl_queue_pop's.
 */
size_t bl_queue_pop_many(struct bl_queue *q, struct bl_event **out, size_t max, int timeout_ms,
			 int *status);

#endif
