/* exec.c - execution handles and the claim-once Exit. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "core.h"
#include "common/protocol.h"

#define MAX_SIGNAL 64
#define DEFAULT_KILL_GRACE_MS 2000u

void bl_exec_ref(struct bl_exec *ex) { atomic_fetch_add(&ex->refs, 1); }

void bl_exec_unref(struct bl_exec *ex)
{
	if (!ex || atomic_fetch_sub(&ex->refs, 1) != 1)
		return;
	bl_event_free(ex->exit_ev); /* NULL once posted */
	bl_box_unref(ex->box);
	free(ex);
}

bool bl_exec_claim_exit(struct bl_exec *ex)
{
	bool expected = false;
	return atomic_compare_exchange_strong(&ex->exit_claimed, &expected, true);
}

void bl_exec_post_exit(struct bl_exec *ex, const boxlite_exit *exit)
{
	struct bl_event *ev = ex->exit_ev;
	ex->exit_ev = NULL;
	ev->exit.exit = *exit;
	bl_queue_push_terminal(&ex->box->rt->queue, ev);
}

void bl_exec_end(struct bl_exec *ex, int outcome, int error)
{
	if (!bl_exec_claim_exit(ex))
		return;
	boxlite_exit e = {.outcome = outcome, .exit_code = -1, .error = error};
	bl_exec_post_exit(ex, &e);
}

static struct bl_exec *exec_new(struct bl_box *box, const boxlite_exec_callbacks *cbs,
				const boxlite_exec_options *o)
{
	uint32_t flags = o->flags;
	struct bl_exec *ex = calloc(1, sizeof *ex);
	if (!ex)
		return NULL;
	boxlite_exit pending = {.outcome = BOXLITE_OUTCOME_LOST, .exit_code = -1};
	ex->exit_ev = bl_event_exit(cbs->on_exit, cbs->user_data, &pending);
	if (!ex->exit_ev) {
		free(ex);
		return NULL;
	}
	atomic_init(&ex->refs, 1);
	atomic_init(&ex->exit_claimed, false);
	/* A terminal's input is writable like a stdin pipe. */
	ex->has_stdin = flags & (BOXLITE_EXEC_STDIN | BOXLITE_EXEC_TTY);
	ex->has_tty = flags & BOXLITE_EXEC_TTY;
	ex->manual_ack = flags & BOXLITE_EXEC_ACK_OUTPUT;
	ex->window = o->window ? o->window : BOXLITE_EXEC_WINDOW_DEFAULT;
	ex->credit[0] = ex->credit[1] = ex->window;
	ex->on_output = cbs->on_output;
	ex->user_data = cbs->user_data;
	ex->box = box;
	bl_box_ref(box);
	return ex;
}

/* A durable id: random, so ids from many processes and restarts never meet. */
static int new_wire_id(uint64_t *id)
{
	do {
		if (getrandom(id, sizeof *id, 0) != (ssize_t)sizeof *id)
			return BOXLITE_ERR_IO;
	} while (*id == 0);
	return BOXLITE_OK;
}

/* Register ex and queue its first frame (EXEC or ATTACH), under rt->lock:
 * runtime close cannot slip in between the state check and the command, so
 * its CLOSE is ordered after us. */
static int send_first_frame_locked(boxlite_runtime *rt, struct bl_box *box, struct bl_exec *ex,
				   uint16_t type, uint8_t *frame, size_t len)
{
	if (rt->closed)
		return BOXLITE_ERR_RUNTIME_CLOSED;
	if (!box)
		return BOXLITE_ERR_INVALID_HANDLE;
	if (box->state != BL_BOX_RUNNING)
		return BOXLITE_ERR_INVALID_STATE;
	if (!(ex->id = bl_handles_add(&rt->handles, BL_HANDLE_EXEC, ex)))
		return BOXLITE_ERR_NO_MEMORY;
	struct bl_frame_header h = {.len = (uint32_t)(len - BL_FRAME_HEADER_SIZE), .type = type,
				    .id = ex->wire_id};
	bl_header_encode(&h, frame);
	int rc = bl_reactor_send_exec(rt->reactor, ex, frame, len);
	if (rc != BOXLITE_OK)
		bl_handles_remove(&rt->handles, ex->id, BL_HANDLE_EXEC);
	return rc;
}

static uint8_t *encode_exec(const boxlite_exec_options *o, size_t *len)
{
	size_t payload = bl_exec_encoded_size(o->argv, o->env, o->cwd);
	if (payload == 0)
		return NULL;
	uint8_t *frame = malloc(BL_FRAME_HEADER_SIZE + payload);
	if (!frame)
		return NULL;
	struct bl_exec_params params = {
		.flags = (o->flags & BOXLITE_EXEC_STDIN ? BL_EXEC_STDIN : 0) |
			 (o->flags & BOXLITE_EXEC_TTY ? BL_EXEC_TTY : 0),
		.timeout_ms = o->timeout_ms,
		.kill_grace_ms = o->kill_grace_ms ? o->kill_grace_ms : DEFAULT_KILL_GRACE_MS,
		.rows = o->rows,
		.cols = o->cols,
		.window = o->window ? o->window : BOXLITE_EXEC_WINDOW_DEFAULT,
	};
	bl_exec_encode(o->argv, o->env, o->cwd, &params, frame + BL_FRAME_HEADER_SIZE);
	*len = BL_FRAME_HEADER_SIZE + payload;
	return frame;
}

static bool valid_options(const boxlite_exec_options *o, const boxlite_exec_callbacks *cbs)
{
	return o && cbs && cbs->on_output && cbs->on_exit && o->argv && o->argv[0] &&
	       o->window != BL_CREDIT_UNLIMITED &&
	       (o->flags & ~(uint32_t)(BOXLITE_EXEC_STDIN | BOXLITE_EXEC_TTY |
				       BOXLITE_EXEC_ACK_OUTPUT)) == 0;
}

int boxlite_exec_start(boxlite_runtime *rt, boxlite_handle box_h, const boxlite_exec_options *options,
		       const boxlite_exec_callbacks *callbacks, boxlite_handle *out)
{
	if (!rt || !box_h || !out || !valid_options(options, callbacks))
		return BOXLITE_ERR_INVALID_ARGUMENT;
	size_t len;
	uint8_t *frame = encode_exec(options, &len);
	if (!frame) /* too large for one frame, or out of memory */
		return bl_exec_encoded_size(options->argv, options->env, options->cwd)
			       ? BOXLITE_ERR_NO_MEMORY
			       : BOXLITE_ERR_INVALID_ARGUMENT;
	uint64_t wire_id;
	int rc = new_wire_id(&wire_id);
	struct bl_exec *ex = NULL;
	pthread_mutex_lock(&rt->lock);
	struct bl_box *box = rt->closed ? NULL : bl_handles_get(&rt->handles, box_h, BL_HANDLE_BOX);
	if (rc == BOXLITE_OK && box && !(ex = exec_new(box, callbacks, options)))
		rc = BOXLITE_ERR_NO_MEMORY;
	if (rc == BOXLITE_OK) {
		if (ex)
			ex->wire_id = wire_id;
		rc = send_first_frame_locked(rt, box, ex, BL_FRAME_EXEC, frame, len);
	}
	pthread_mutex_unlock(&rt->lock);
	if (rc != BOXLITE_OK) {
		free(frame);
		bl_exec_unref(ex);
		return rc;
	}
	*out = ex->id;
	return BOXLITE_OK;
}

/* Under rt->lock: the execution behind h if its Exit is not claimed yet,
 * else NULL with *rc saying why. */
static struct bl_exec *live_exec_locked(boxlite_runtime *rt, boxlite_handle h, int *rc)
{
	struct bl_exec *ex = rt->closed ? NULL : bl_handles_get(&rt->handles, h, BL_HANDLE_EXEC);
	if (rt->closed)
		*rc = BOXLITE_ERR_RUNTIME_CLOSED;
	else if (!ex)
		*rc = BOXLITE_ERR_INVALID_HANDLE;
	else if (atomic_load(&ex->exit_claimed))
		*rc = BOXLITE_ERR_EXEC_CLOSED;
	else
		*rc = BOXLITE_OK;
	return *rc == BOXLITE_OK ? ex : NULL;
}

/* What a SIGNAL or RESIZE operation carries to the reactor. */
struct control {
	int sig;
	uint16_t rows, cols;
};

static int control_exec(boxlite_runtime *rt, boxlite_handle h, const struct control *ctl,
			boxlite_done_cb cb, void *user_data)
{
	int rc;
	struct bl_op *op = NULL;
	pthread_mutex_lock(&rt->lock);
	struct bl_exec *ex = live_exec_locked(rt, h, &rc);
	if (ex && !ctl->sig && !ex->has_tty)
		rc = BOXLITE_ERR_INVALID_STATE;
	else if (ex && !(op = bl_op_begin(rt, cb, user_data)))
		rc = BOXLITE_ERR_NO_MEMORY;
	if (op) {
		rc = ctl->sig ? bl_reactor_signal_exec(rt->reactor, ex, ctl->sig, op)
			      : bl_reactor_resize_exec(rt->reactor, ex, ctl->rows, ctl->cols, op);
		if (rc != BOXLITE_OK)
			bl_op_abandon_locked(rt, op);
	}
	pthread_mutex_unlock(&rt->lock);
	return rc;
}

int boxlite_exec_signal(boxlite_runtime *rt, boxlite_handle h, int sig, boxlite_done_cb cb,
			void *user_data)
{
	if (!rt || !h || !cb || sig < 1 || sig > MAX_SIGNAL)
		return BOXLITE_ERR_INVALID_ARGUMENT;
	struct control ctl = {.sig = sig};
	return control_exec(rt, h, &ctl, cb, user_data);
}

int boxlite_exec_resize(boxlite_runtime *rt, boxlite_handle h, uint16_t rows, uint16_t cols,
			boxlite_done_cb cb, void *user_data)
{
	if (!rt || !h || !cb || !rows || !cols)
		return BOXLITE_ERR_INVALID_ARGUMENT;
	struct control ctl = {.rows = rows, .cols = cols};
	return control_exec(rt, h, &ctl, cb, user_data);
}

/* STDIN frames for data, each at most BL_FRAME_DATA_CHUNK bytes; their ids
 * are filled in by address_stdin once the execution is known. */
static uint8_t *encode_stdin(const uint8_t *data, size_t len, size_t *frames_len)
{
	size_t n_frames = (len + BL_FRAME_DATA_CHUNK - 1) / BL_FRAME_DATA_CHUNK;
	*frames_len = len + n_frames * BL_FRAME_HEADER_SIZE;
	uint8_t *frames = malloc(*frames_len ? *frames_len : 1);
	if (!frames)
		return NULL;
	uint8_t *p = frames;
	for (size_t off = 0; off < len; off += BL_FRAME_DATA_CHUNK) {
		size_t n = len - off < BL_FRAME_DATA_CHUNK ? len - off : BL_FRAME_DATA_CHUNK;
		struct bl_frame_header h = {.len = (uint32_t)n, .type = BL_FRAME_STDIN};
		bl_header_encode(&h, p);
		memcpy(p + BL_FRAME_HEADER_SIZE, data + off, n);
		p += BL_FRAME_HEADER_SIZE + n;
	}
	return frames;
}

static void address_stdin(uint8_t *frames, size_t frames_len, uint64_t id)
{
	for (size_t off = 0; off < frames_len;) {
		struct bl_frame_header h;
		bl_header_decode(frames + off, &h);
		h.id = id;
		bl_header_encode(&h, frames + off);
		off += BL_FRAME_HEADER_SIZE + h.len;
	}
}

/* Under rt->lock: the execution if its stdin can take more, else NULL + rc. */
static struct bl_exec *stdin_target_locked(boxlite_runtime *rt, boxlite_handle h, int *rc)
{
	struct bl_exec *ex = live_exec_locked(rt, h, rc);
	if (ex && !ex->has_stdin) {
		*rc = BOXLITE_ERR_INVALID_STATE;
		return NULL;
	}
	return ex;
}

int boxlite_exec_write(boxlite_runtime *rt, boxlite_handle h, const uint8_t *data, size_t len,
		       boxlite_done_cb cb, void *user_data)
{
	if (!rt || !h || !cb || (len && !data) || len > BOXLITE_EXEC_WRITE_MAX)
		return BOXLITE_ERR_INVALID_ARGUMENT;
	size_t frames_len;
	uint8_t *frames = encode_stdin(data, len, &frames_len);
	if (!frames)
		return BOXLITE_ERR_NO_MEMORY;
	int rc;
	pthread_mutex_lock(&rt->lock);
	struct bl_exec *ex = stdin_target_locked(rt, h, &rc);
	if (ex && ex->stdin_closed)
		rc = BOXLITE_ERR_EXEC_CLOSED;
	struct bl_op *op = NULL;
	if (rc == BOXLITE_OK && !(op = bl_op_begin(rt, cb, user_data)))
		rc = BOXLITE_ERR_NO_MEMORY;
	if (rc == BOXLITE_OK) {
		address_stdin(frames, frames_len, ex->wire_id);
		/* Under the lock, so the frames are ordered with close_stdin. */
		rc = bl_reactor_write_exec(rt->reactor, ex, op, frames, frames_len, len);
		if (rc == BOXLITE_OK)
			frames = NULL;
		else
			bl_op_abandon_locked(rt, op);
	}
	pthread_mutex_unlock(&rt->lock);
	free(frames);
	return rc;
}

int boxlite_exec_close_stdin(boxlite_runtime *rt, boxlite_handle h)
{
	if (!rt || !h)
		return BOXLITE_ERR_INVALID_ARGUMENT;
	int rc;
	pthread_mutex_lock(&rt->lock);
	struct bl_exec *ex = stdin_target_locked(rt, h, &rc);
	if (ex && !ex->stdin_closed) {
		rc = bl_reactor_close_stdin(rt->reactor, ex);
		ex->stdin_closed = rc == BOXLITE_OK;
	}
	pthread_mutex_unlock(&rt->lock);
	return rc;
}

/* Whole quarter windows go back at once: few frames, and the agent still
 * has three quarters to go on while one travels. */
static uint32_t credit_due(uint64_t acked, uint32_t window)
{
	if (acked < window / 4)
		return 0;
	return acked > UINT32_MAX - 1 ? UINT32_MAX - 1 : (uint32_t)acked;
}

int boxlite_exec_ack(boxlite_runtime *rt, boxlite_handle h, int stream, size_t n)
{
	if (!rt || !h || (stream != BOXLITE_STDOUT && stream != BOXLITE_STDERR))
		return BOXLITE_ERR_INVALID_ARGUMENT;
	int rc;
	pthread_mutex_lock(&rt->lock);
	struct bl_exec *ex = live_exec_locked(rt, h, &rc);
	if (rc == BOXLITE_ERR_EXEC_CLOSED)
		rc = BOXLITE_OK; /* its output is no longer flow-controlled */
	if (ex) {
		uint64_t *acked = &ex->acked[stream == BOXLITE_STDERR];
		*acked += n;
		uint32_t give = credit_due(*acked, ex->window);
		if (give) {
			rc = bl_reactor_credit_exec(rt->reactor, ex, stream == BOXLITE_STDOUT ? give : 0,
						    stream == BOXLITE_STDERR ? give : 0);
			if (rc == BOXLITE_OK)
				*acked -= give;
		}
	}
	pthread_mutex_unlock(&rt->lock);
	return rc;
}

int boxlite_exec_free(boxlite_runtime *rt, boxlite_handle h)
{
	if (!rt || !h)
		return BOXLITE_ERR_INVALID_ARGUMENT;
	int rc = BOXLITE_OK;
	pthread_mutex_lock(&rt->lock);
	struct bl_exec *ex = bl_handles_get(&rt->handles, h, BL_HANDLE_EXEC);
	if (!ex)
		rc = BOXLITE_ERR_INVALID_HANDLE;
	else if (!rt->closed && !atomic_load(&ex->exit_claimed))
		rc = bl_reactor_force_close_exec(rt->reactor, ex);
	if (rc == BOXLITE_OK)
		bl_handles_remove(&rt->handles, h, BL_HANDLE_EXEC);
	pthread_mutex_unlock(&rt->lock);
	if (rc == BOXLITE_OK)
		bl_exec_unref(ex);
	return rc;
}

int boxlite_exec_id(boxlite_runtime *rt, boxlite_handle h, uint64_t *id)
{
	if (!rt || !h || !id)
		return BOXLITE_ERR_INVALID_ARGUMENT;
	pthread_mutex_lock(&rt->lock);
	struct bl_exec *ex = bl_handles_get(&rt->handles, h, BL_HANDLE_EXEC);
	if (ex)
		*id = ex->wire_id;
	pthread_mutex_unlock(&rt->lock);
	return ex ? BOXLITE_OK : BOXLITE_ERR_INVALID_HANDLE;
}

static uint8_t *encode_attach(const boxlite_attach_options *o, size_t *len)
{
	*len = BL_FRAME_HEADER_SIZE + BL_ATTACH_SIZE;
	uint8_t *frame = malloc(*len);
	if (!frame)
		return NULL;
	struct bl_attach_request a = {
		.from = {o->stdout_from, o->stderr_from},
		.window = o->window ? o->window : BOXLITE_EXEC_WINDOW_DEFAULT,
	};
	bl_attach_encode(&a, frame + BL_FRAME_HEADER_SIZE);
	return frame;
}

int boxlite_exec_attach(boxlite_runtime *rt, boxlite_handle box_h, uint64_t id,
			const boxlite_attach_options *options, const boxlite_exec_callbacks *callbacks,
			boxlite_done_cb cb, void *user_data, boxlite_handle *out)
{
	static const char *const no_argv[] = {"", NULL};
	if (!rt || !box_h || !id || !options || !cb || !out ||
	    (options->flags & ~(uint32_t)BOXLITE_EXEC_ACK_OUTPUT))
		return BOXLITE_ERR_INVALID_ARGUMENT;
	/* What exec_new needs of an execution it did not start. */
	boxlite_exec_options like = {.argv = no_argv, .flags = options->flags,
				     .window = options->window};
	if (!valid_options(&like, callbacks))
		return BOXLITE_ERR_INVALID_ARGUMENT;
	size_t len;
	uint8_t *frame = encode_attach(options, &len);
	if (!frame)
		return BOXLITE_ERR_NO_MEMORY;
	int rc = BOXLITE_OK;
	struct bl_exec *ex = NULL;
	pthread_mutex_lock(&rt->lock);
	struct bl_box *box = rt->closed ? NULL : bl_handles_get(&rt->handles, box_h, BL_HANDLE_BOX);
	if (box && !(ex = exec_new(box, callbacks, &like)))
		rc = BOXLITE_ERR_NO_MEMORY;
	else if (ex && !(ex->attach_op = bl_op_begin(rt, cb, user_data)))
		rc = BOXLITE_ERR_NO_MEMORY;
	if (rc == BOXLITE_OK) {
		if (ex) {
			ex->wire_id = id;
			ex->has_stdin = ex->has_tty = false; /* until the box says */
		}
		rc = send_first_frame_locked(rt, box, ex, BL_FRAME_ATTACH, frame, len);
	}
	if (rc != BOXLITE_OK && ex && ex->attach_op)
		bl_op_abandon_locked(rt, ex->attach_op);
	pthread_mutex_unlock(&rt->lock);
	if (rc != BOXLITE_OK) {
		free(frame);
		bl_exec_unref(ex);
		return rc;
	}
	*out = ex->id;
	return BOXLITE_OK;
}

int boxlite_exec_attach_info(boxlite_runtime *rt, boxlite_handle h, boxlite_attach_info *info)
{
	if (!rt || !h || !info)
		return BOXLITE_ERR_INVALID_ARGUMENT;
	pthread_mutex_lock(&rt->lock);
	struct bl_exec *ex = bl_handles_get(&rt->handles, h, BL_HANDLE_EXEC);
	if (ex)
		*info = ex->attach_info;
	pthread_mutex_unlock(&rt->lock);
	return ex ? BOXLITE_OK : BOXLITE_ERR_INVALID_HANDLE;
}

int boxlite_exec_detach(boxlite_runtime *rt, boxlite_handle h)
{
	if (!rt || !h)
		return BOXLITE_ERR_INVALID_ARGUMENT;
	int rc;
	pthread_mutex_lock(&rt->lock);
	struct bl_exec *ex = live_exec_locked(rt, h, &rc);
	if (ex)
		rc = bl_reactor_detach_exec(rt->reactor, ex);
	pthread_mutex_unlock(&rt->lock);
	return rc;
}

int boxlite_exit_status(const boxlite_exit *e)
{
	if (!e)
		return -1;
	switch (e->outcome) {
	case BOXLITE_OUTCOME_EXITED:
		return e->exit_code;
	case BOXLITE_OUTCOME_SIGNALED:
		return e->signal > 0 && e->signal < NSIG ? 128 + e->signal : -1;
	case BOXLITE_OUTCOME_TIMED_OUT:
		return 124; /* timeout(1)'s convention, distinct from any signal */
	case BOXLITE_OUTCOME_FAILED_TO_START:
		/* The shell's convention: 127 not found, 126 found but not runnable. */
		return e->os_error == ENOENT ? 127 : 126;
	default:
		return -1;
	}
}
