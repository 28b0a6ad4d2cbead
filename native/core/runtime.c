/* runtime.c - runtime lifecycle, drain, and claim-once operations. */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "core.h"

#define DEFAULT_QUEUE_CAPACITY 4096u
#define DEFAULT_WORKERS 2u
#define MAX_WORKERS 64u

const char *boxlite_version(void) { return "0.1.0"; }

const char *boxlite_status_name(int status)
{
	static const char *const names[] = {
		"OK",		 "INVALID_ARGUMENT", "INVALID_HANDLE", "NOT_FOUND",   "ALREADY_EXISTS",
		"INVALID_STATE", "RUNTIME_CLOSED",   "EXEC_CLOSED",	   "IMAGE",	  "ENGINE",
		"NO_MEMORY",	 "IO",		     "PROTOCOL",	   "TIMEOUT",	  "INTERNAL",
		"UNSAFE_PATH",	 "NOT_BOX_DIR",	     "STORE",		   "NO_SPACE",
		"CONNECTION_LOST", "UNAUTHENTICATED",
	};
	if (status < 0 || (size_t)status >= sizeof names / sizeof names[0])
		return "UNKNOWN";
	return names[status];
}

/* ---- operations ---- */

struct bl_op *bl_op_begin(boxlite_runtime *rt, boxlite_done_cb cb, void *user_data)
{
	struct bl_op *op = calloc(1, sizeof *op);
	if (!op)
		return NULL;
	op->done_ev = bl_event_done(cb, user_data, BOXLITE_OK, NULL);
	if (!op->done_ev) {
		free(op);
		return NULL;
	}
	atomic_init(&op->claimed, false);
	op->next = rt->ops;
	if (rt->ops)
		rt->ops->prev = op;
	rt->ops = op;
	bl_queue_hold(&rt->queue);
	return op;
}

static bool claim(struct bl_op *op)
{
	bool expected = false;
	return atomic_compare_exchange_strong(&op->claimed, &expected, true);
}

static void post_done(boxlite_runtime *rt, struct bl_op *op, int status, const char *message)
{
	struct bl_event *ev = op->done_ev;
	op->done_ev = NULL;
	ev->done.status = status;
	ev->done.message = message ? strdup(message) : NULL;
	bl_queue_push_terminal(&rt->queue, ev);
}

/* Take op off rt->ops (caller holds rt->lock). */
static void unlink_op(boxlite_runtime *rt, struct bl_op *op)
{
	if (op->prev)
		op->prev->next = op->next;
	else
		rt->ops = op->next;
	if (op->next)
		op->next->prev = op->prev;
}

/* Free op and its unposted event, and let drain finish without it. */
static void release_op(boxlite_runtime *rt, struct bl_op *op)
{
	bl_event_free(op->done_ev); /* NULL once posted, by us or by close */
	free(op);
	bl_queue_release(&rt->queue);
}

void bl_op_complete(boxlite_runtime *rt, struct bl_op *op, int status, const char *message)
{
	pthread_mutex_lock(&rt->lock);
	unlink_op(rt, op);
	bool mine = claim(op);
	pthread_mutex_unlock(&rt->lock);
	if (mine)
		post_done(rt, op, status, message);
	release_op(rt, op);
}

void bl_op_abandon_locked(boxlite_runtime *rt, struct bl_op *op)
{
	unlink_op(rt, op);
	release_op(rt, op);
}

/* ---- runtime ---- */

static char *join_path(const char *dir, const char *name)
{
	size_t n = strlen(dir) + 1 + strlen(name) + 1;
	char *p = malloc(n);
	if (p)
		snprintf(p, n, "%s/%s", dir, name);
	return p;
}

static int check_executable(const char *path)
{
	return access(path, X_OK) == 0 ? BOXLITE_OK : BOXLITE_ERR_ENGINE;
}

static void runtime_destroy(boxlite_runtime *rt)
{
	if (rt->closing_fd >= 0)
		close(rt->closing_fd);
	bl_queue_destroy(&rt->queue);
	bl_handles_destroy(&rt->handles);
	pthread_mutex_destroy(&rt->lock);
	free(rt->libexec_dir);
	free(rt);
}

static int runtime_paths(boxlite_runtime *rt, const char *libexec_dir)
{
	char *shim = join_path(libexec_dir, "boxlite-shim");
	char *agent = join_path(libexec_dir, "boxlite-agent");
	rt->libexec_dir = strdup(libexec_dir);
	int rc = !shim || !agent || !rt->libexec_dir ? BOXLITE_ERR_NO_MEMORY
		 : check_executable(shim) || check_executable(agent) ? BOXLITE_ERR_ENGINE
								      : BOXLITE_OK;
	free(shim);
	free(agent);
	return rc;
}

int boxlite_runtime_new(const boxlite_runtime_options *options, boxlite_runtime **out)
{
	if (!options || !out || !options->libexec_dir)
		return BOXLITE_ERR_INVALID_ARGUMENT;
	if (options->queue_capacity > INT_MAX || options->worker_threads > MAX_WORKERS)
		return BOXLITE_ERR_INVALID_ARGUMENT;
	*out = NULL;
	boxlite_runtime *rt = calloc(1, sizeof *rt);
	if (!rt)
		return BOXLITE_ERR_NO_MEMORY;
	size_t cap = options->queue_capacity ? options->queue_capacity : DEFAULT_QUEUE_CAPACITY;
	if (pthread_mutex_init(&rt->lock, NULL)) {
		free(rt);
		return BOXLITE_ERR_NO_MEMORY;
	}
	if (bl_queue_init(&rt->queue, cap)) {
		pthread_mutex_destroy(&rt->lock);
		free(rt);
		return BOXLITE_ERR_NO_MEMORY;
	}
	bl_handles_init(&rt->handles);
	rt->closing_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (rt->closing_fd < 0) {
		runtime_destroy(rt);
		return BOXLITE_ERR_IO;
	}
	int rc = runtime_paths(rt, options->libexec_dir);
	if (rc) {
		runtime_destroy(rt);
		return rc;
	}
	rt->workers = bl_workers_new(options->worker_threads ? options->worker_threads : DEFAULT_WORKERS);
	if (!rt->workers) {
		runtime_destroy(rt);
		return BOXLITE_ERR_NO_MEMORY;
	}
	rt->reactor = bl_reactor_new(rt);
	if (!rt->reactor) {
		bl_workers_free(rt->workers);
		runtime_destroy(rt);
		return BOXLITE_ERR_NO_MEMORY;
	}
	*out = rt;
	return BOXLITE_OK;
}

static void dispatch(const struct bl_event *ev)
{
	switch (ev->kind) {
	case BL_EV_DONE:
		ev->done.cb(ev->user_data, ev->done.status, ev->done.message);
		break;
	case BL_EV_OUTPUT:
		ev->output.cb(ev->user_data, ev->output.stream, ev->data, ev->output.len);
		break;
	case BL_EV_EXIT:
		ev->exit.cb(ev->user_data, &ev->exit.exit);
		break;
	}
}

/* What follows an event's handling: the chunk's acknowledgement when the
 * core owes it, and the event's memory. */
static void finish(boxlite_runtime *rt, struct bl_event *ev)
{
	/* The ack fails only once the exec or the runtime is gone. */
	if (ev->kind == BL_EV_OUTPUT && ev->output.ack)
		(void)boxlite_exec_ack(rt, ev->output.ack, ev->output.stream, ev->output.len);
	bl_event_free(ev);
}

int boxlite_runtime_drain(boxlite_runtime *rt, int max_events, int timeout_ms)
{
	if (!rt || max_events <= 0)
		return -BOXLITE_ERR_INVALID_ARGUMENT;
	int n = 0;
	while (n < max_events) {
		int status;
		/* Only the first pop may wait: drain returns what is ready. */
		struct bl_event *ev = bl_queue_pop(&rt->queue, n == 0 ? timeout_ms : 0, &status);
		if (!ev) {
			if (status == BOXLITE_ERR_RUNTIME_CLOSED && n == 0)
				return -BOXLITE_ERR_RUNTIME_CLOSED;
			break;
		}
		dispatch(ev);
		finish(rt, ev);
		n++;
	}
	return n;
}

static void describe(boxlite_event *out, struct bl_event *ev)
{
	memset(out, 0, sizeof *out);
	out->user_data = ev->user_data;
	out->internal = ev;
	switch (ev->kind) {
	case BL_EV_DONE:
		out->kind = BOXLITE_EVENT_DONE;
		out->status = ev->done.status;
		out->message = ev->done.message;
		out->on_done = ev->done.cb;
		break;
	case BL_EV_OUTPUT:
		out->kind = BOXLITE_EVENT_OUTPUT;
		out->stream = ev->output.stream;
		out->data = ev->data;
		out->len = ev->output.len;
		out->on_output = ev->output.cb;
		break;
	case BL_EV_EXIT:
		out->kind = BOXLITE_EVENT_EXIT;
		out->exit = ev->exit.exit;
		out->on_exit = ev->exit.cb;
		break;
	}
}

/* Events popped per lock hold: a bound on the stack, not on a take. */
#define TAKE_CHUNK 64u

int boxlite_runtime_take(boxlite_runtime *rt, boxlite_event *out, size_t max, int timeout_ms)
{
	if (!rt || !out || max == 0 || max > INT_MAX)
		return -BOXLITE_ERR_INVALID_ARGUMENT;
	size_t n = 0;
	while (n < max) {
		struct bl_event *evs[TAKE_CHUNK];
		size_t want = max - n < TAKE_CHUNK ? max - n : TAKE_CHUNK;
		int status;
		/* Only the first pop may wait, as in drain. */
		size_t got = bl_queue_pop_many(&rt->queue, evs, want, n == 0 ? timeout_ms : 0, &status);
		if (got == 0 && status == BOXLITE_ERR_RUNTIME_CLOSED && n == 0)
			return -BOXLITE_ERR_RUNTIME_CLOSED;
		for (size_t i = 0; i < got; i++)
			describe(&out[n + i], evs[i]);
		n += got;
		if (got < want)
			break;
	}
	return (int)n;
}

void boxlite_runtime_release(boxlite_runtime *rt, const boxlite_event *evs, size_t n)
{
	if (!rt || !evs)
		return;
	for (size_t i = 0; i < n; i++)
		if (evs[i].internal)
			finish(rt, evs[i].internal);
}

int boxlite_runtime_post(boxlite_runtime *rt, boxlite_done_cb cb, void *user_data, int status,
			 int timeout_ms)
{
	if (!rt || !cb)
		return BOXLITE_ERR_INVALID_ARGUMENT;
	struct bl_event *ev = bl_event_done(cb, user_data, status, NULL);
	if (!ev)
		return BOXLITE_ERR_NO_MEMORY;
	int rc = bl_queue_push_stream(&rt->queue, ev, timeout_ms);
	if (rc)
		bl_event_free(ev);
	return rc;
}

/* Complete every op still in flight with RUNTIME_CLOSED.  Performers that
 * finish later lose the claim and only free their op. */
static void close_ops(boxlite_runtime *rt)
{
	for (struct bl_op *op = rt->ops; op; op = op->next)
		if (claim(op))
			post_done(rt, op, BOXLITE_ERR_RUNTIME_CLOSED, "runtime closed");
}

int boxlite_runtime_close(boxlite_runtime *rt)
{
	if (!rt)
		return BOXLITE_ERR_INVALID_ARGUMENT;
	pthread_mutex_lock(&rt->lock);
	if (rt->closed) {
		pthread_mutex_unlock(&rt->lock);
		return BOXLITE_OK;
	}
	rt->closed = true;
	/* Refuse stream pushes first, so a reactor blocked on a full queue wakes
	 * and every Exit it posts from now on lands after the last output. */
	bl_queue_close(&rt->queue);
	close_ops(rt);
	pthread_mutex_unlock(&rt->lock);
	uint64_t one = 1;
	if (write(rt->closing_fd, &one, sizeof one) < 0 && errno != EAGAIN)
		abort(); /* an eventfd write cannot fail short of a counter overflow */
	bl_reactor_close(rt->reactor);
	return BOXLITE_OK;
}

/* Drop every handle the user never freed. */
static void free_handles(boxlite_runtime *rt)
{
	struct bl_handle_table *t = &rt->handles;
	for (uint32_t i = 0; i < t->len; i++) {
		struct bl_handle_slot *s = &t->slots[i];
		if (s->kind == BL_HANDLE_BOX)
			bl_box_unref(s->object);
		else if (s->kind == BL_HANDLE_EXEC)
			bl_exec_unref(s->object);
		s->kind = BL_HANDLE_FREE;
		s->object = NULL;
	}
}

void boxlite_runtime_free(boxlite_runtime *rt)
{
	if (!rt)
		return;
	boxlite_runtime_close(rt);
	bl_workers_free(rt->workers);
	bl_reactor_free(rt->reactor);
	free_handles(rt);
	runtime_destroy(rt);
}
