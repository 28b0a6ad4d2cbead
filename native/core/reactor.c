/*
 * reactor.c - the I/O thread.  It owns every running box's agent connection
 * and shim pidfd, routes frames to executions, and is the only thread that
 * posts execution events: output is posted in arrival order, and an Exit is
 * posted by whoever claims it - here, on this thread - so it always lands
 * after that execution's last output.
 *
 * Other threads talk to it through commands (a locked list plus an eventfd).
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "agent_conn.h"
#include "common/clock.h"
#include "core.h"
#include "common/protocol.h"

/* Bytes read from one connection before the others get a turn. */
#define READ_BUDGET (4u << 20)
/* How long letting go of a kept box waits for the agent to answer the
 * executions sent last. */
#define RELEASE_WAIT_MS 5000
#define MAX_EVENTS 64

enum source_kind { SRC_WAKE, SRC_CONN, SRC_PIDFD };

struct source {
	enum source_kind kind;
	struct bl_attachment *att;
};

/* A running box as the reactor sees it. */
struct bl_attachment {
	struct bl_attachment *next;
	struct bl_box *box; /* a reference */
	struct bl_reactor *r;
	struct bl_conn *conn;
	int pidfd;          /* borrowed from the box */
	struct source conn_src, pid_src;
	struct bl_exec *execs;    /* references */
	struct bl_event *pending; /* output event whose body is being read */
	struct bl_exec *pending_ex;
	bool hello, writing, shim_reaped, conn_done;
	bool violated; /* the agent broke the protocol: its connection is dropped */
	/* Let go of (a kept box), once the agent has answered every EXEC sent
	 * (so another runtime finds each execution), or at release_by. */
	bool releasing;
	int64_t release_by;
	bool dead; /* detached; freed after the current epoll batch */
};

enum cmd_kind {
	CMD_ATTACH,
	CMD_EXEC,
	CMD_SIGNAL,
	CMD_FORCE_CLOSE,
	CMD_DETACH,
	CMD_RELEASE,
	CMD_WRITE,
	CMD_CLOSE_STDIN,
	CMD_RESIZE,
	CMD_CREDIT,
	CMD_CLOSE,
	CMD_QUIT,
};

struct cmd {
	struct cmd *next;
	enum cmd_kind kind;
	struct bl_attachment *att;
	struct bl_exec *ex;
	struct bl_box *box; /* CMD_RELEASE */
	uint8_t *frame;
	size_t len;
	int sig;
	struct bl_op *op;   /* CMD_WRITE, CMD_SIGNAL, CMD_RESIZE */
	uint16_t rows, cols; /* CMD_RESIZE */
	uint32_t credit[2];  /* CMD_CREDIT: stdout, stderr */
	size_t data_len;    /* CMD_WRITE: stdin bytes inside frame */
};

struct bl_reactor {
	boxlite_runtime *rt;
	pthread_t thread;
	int epfd, wakefd;
	struct source wake_src;
	pthread_mutex_t lock; /* guards the command list */
	struct cmd *head, *tail;
	struct cmd *close_cmd, *quit_cmd; /* preallocated: closing never fails */
	struct bl_attachment *atts;
	struct bl_attachment *dead; /* detached during this epoll batch */
	bool closing, quitting;
};

/* ---- commands ---- */

static void enqueue(struct bl_reactor *r, struct cmd *c)
{
	c->next = NULL;
	pthread_mutex_lock(&r->lock);
	if (r->tail)
		r->tail->next = c;
	else
		r->head = c;
	r->tail = c;
	pthread_mutex_unlock(&r->lock);
	uint64_t one = 1;
	/* EAGAIN only when the counter is saturated: the reactor is awake. */
	while (write(r->wakefd, &one, sizeof one) < 0 && errno == EINTR)
		;
}

static struct cmd *cmd_new(enum cmd_kind kind)
{
	struct cmd *c = calloc(1, sizeof *c);
	if (c)
		c->kind = kind;
	return c;
}

int bl_reactor_attach(struct bl_reactor *r, struct bl_box *box, int pidfd, int conn_fd)
{
	int fl = fcntl(conn_fd, F_GETFL);
	if (fl < 0 || fcntl(conn_fd, F_SETFL, fl | O_NONBLOCK) < 0)
		return BOXLITE_ERR_IO;
	struct cmd *c = cmd_new(CMD_ATTACH);
	struct bl_attachment *a = calloc(1, sizeof *a);
	if (!c || !a) {
		free(c);
		free(a);
		return BOXLITE_ERR_NO_MEMORY;
	}
	/* The connection takes conn_fd over only once nothing can fail. */
	a->conn = bl_conn_new(conn_fd);
	if (!a->conn) {
		free(c);
		free(a);
		return BOXLITE_ERR_NO_MEMORY;
	}
	bl_box_ref(box);
	a->box = box;
	a->r = r;
	a->pidfd = pidfd;
	a->conn_src = (struct source){SRC_CONN, a};
	a->pid_src = (struct source){SRC_PIDFD, a};
	c->att = a;
	enqueue(r, c);
	return BOXLITE_OK;
}

/* Queue a command about one execution: a copy of fields, holding its own
 * reference on fields->ex. */
static int exec_cmd(struct bl_reactor *r, const struct cmd *fields)
{
	struct cmd *c = malloc(sizeof *c);
	if (!c)
		return BOXLITE_ERR_NO_MEMORY;
	*c = *fields;
	bl_exec_ref(c->ex);
	enqueue(r, c);
	return BOXLITE_OK;
}

int bl_reactor_send_exec(struct bl_reactor *r, struct bl_exec *ex, uint8_t *frame, size_t len)
{
	return exec_cmd(r, &(struct cmd){.kind = CMD_EXEC, .ex = ex, .frame = frame, .len = len});
}

int bl_reactor_signal_exec(struct bl_reactor *r, struct bl_exec *ex, int sig, struct bl_op *op)
{
	return exec_cmd(r, &(struct cmd){.kind = CMD_SIGNAL, .ex = ex, .sig = sig, .op = op});
}

int bl_reactor_force_close_exec(struct bl_reactor *r, struct bl_exec *ex)
{
	return exec_cmd(r, &(struct cmd){.kind = CMD_FORCE_CLOSE, .ex = ex});
}

int bl_reactor_detach_exec(struct bl_reactor *r, struct bl_exec *ex)
{
	return exec_cmd(r, &(struct cmd){.kind = CMD_DETACH, .ex = ex});
}

int bl_reactor_release(struct bl_reactor *r, struct bl_box *box)
{
	struct cmd *c = cmd_new(CMD_RELEASE);
	if (!c)
		return BOXLITE_ERR_NO_MEMORY;
	bl_box_ref(box);
	c->box = box;
	enqueue(r, c);
	return BOXLITE_OK;
}

int bl_reactor_write_exec(struct bl_reactor *r, struct bl_exec *ex, struct bl_op *op, uint8_t *frames,
			  size_t frames_len, size_t len)
{
	return exec_cmd(r, &(struct cmd){.kind = CMD_WRITE, .ex = ex, .frame = frames,
					 .len = frames_len, .op = op, .data_len = len});
}

int bl_reactor_resize_exec(struct bl_reactor *r, struct bl_exec *ex, uint16_t rows, uint16_t cols,
			   struct bl_op *op)
{
	return exec_cmd(r, &(struct cmd){.kind = CMD_RESIZE, .ex = ex, .rows = rows, .cols = cols,
					 .op = op});
}

int bl_reactor_credit_exec(struct bl_reactor *r, struct bl_exec *ex, uint32_t out, uint32_t err)
{
	return exec_cmd(r, &(struct cmd){.kind = CMD_CREDIT, .ex = ex, .credit = {out, err}});
}

int bl_reactor_close_stdin(struct bl_reactor *r, struct bl_exec *ex)
{
	return exec_cmd(r, &(struct cmd){.kind = CMD_CLOSE_STDIN, .ex = ex});
}

void bl_reactor_close(struct bl_reactor *r)
{
	struct cmd *c = r->close_cmd;
	r->close_cmd = NULL;
	if (c)
		enqueue(r, c);
}

/* ---- attachments ---- */

static int epoll_set(struct bl_reactor *r, int op, int fd, uint32_t events, struct source *src)
{
	struct epoll_event ev = {.events = events, .data.ptr = src};
	return epoll_ctl(r->epfd, op, fd, &ev);
}

static void signal_shim(struct bl_attachment *a, enum bl_engine_signal how)
{
	if (!a->shim_reaped && a->box->engine->signal(a->pidfd, how) < 0 && errno != ESRCH) {
		fprintf(stderr, "boxlite: %s the box's supervisor (pidfd %d): %s\n",
			how == BL_ENGINE_KILL ? "kill" : "stop", a->pidfd, strerror(errno));
		abort(); /* a pidfd of our own unreaped child is always valid */
	}
}

static void kill_shim(struct bl_attachment *a) { signal_shim(a, BL_ENGINE_KILL); }

static void reap_blocking(struct bl_attachment *a)
{
	siginfo_t info;
	while (waitid(P_PIDFD, (id_t)a->pidfd, &info, WEXITED) < 0 && errno == EINTR)
		;
	a->shim_reaped = true;
}

static void release(struct bl_reactor *r, struct bl_attachment *a);

static bool all_answered(const struct bl_attachment *a)
{
	for (const struct bl_exec *ex = a->execs; ex; ex = ex->next)
		if (ex->unanswered)
			return false;
	return true;
}

static void attach(struct bl_reactor *r, struct bl_attachment *a)
{
	a->box->att = a;
	a->next = r->atts;
	r->atts = a;
	if (epoll_set(r, EPOLL_CTL_ADD, bl_conn_fd(a->conn), EPOLLIN, &a->conn_src) < 0)
		a->conn_done = true; /* unsupervisable: end the box now */
	if (r->closing && a->box->kept) {
		release(r, a);
		return;
	}
	if (r->closing || a->conn_done)
		kill_shim(a);
	if (epoll_set(r, EPOLL_CTL_ADD, a->pidfd, EPOLLIN, &a->pid_src) < 0) {
		kill_shim(a); /* cannot watch it, so do not let it run */
		reap_blocking(a);
	}
}

/* Complete every write still waiting for acknowledgement: stdin is gone. */
static void fail_writes(struct bl_exec *ex)
{
	ex->stdin_gone = true;
	while (ex->writes) {
		struct bl_write *w = ex->writes;
		ex->writes = w->next;
		bl_op_complete(ex->box->rt, w->op, BOXLITE_ERR_EXEC_CLOSED, "stdin is closed");
		free(w);
	}
	ex->writes_tail = NULL;
}

/* The agent took n more stdin bytes: complete the writes they cover. */
static void ack_writes(struct bl_exec *ex, size_t n)
{
	while (ex->writes && n >= ex->writes->remaining) {
		struct bl_write *w = ex->writes;
		n -= w->remaining;
		ex->writes = w->next;
		bl_op_complete(ex->box->rt, w->op, BOXLITE_OK, NULL);
		free(w);
	}
	if (!ex->writes)
		ex->writes_tail = NULL;
	else
		ex->writes->remaining -= n;
}

/* Complete the signal whose result this is (0 sent, ESRCH nobody left). */
static void control_result(struct bl_exec *ex, uint32_t token, int32_t err)
{
	for (struct bl_control **p = &ex->controls; *p; p = &(*p)->next) {
		struct bl_control *s = *p;
		if (s->token != token)
			continue;
		*p = s->next;
		int rc = err == 0 ? BOXLITE_OK : err == ESRCH ? BOXLITE_ERR_EXEC_CLOSED : BOXLITE_ERR_IO;
		bl_op_complete(ex->box->rt, s->op, rc, err ? strerror(err) : NULL);
		free(s);
		return;
	}
}

static void fail_controls(struct bl_exec *ex)
{
	while (ex->controls) {
		struct bl_control *s = ex->controls;
		ex->controls = s->next;
		bl_op_complete(ex->box->rt, s->op, BOXLITE_ERR_EXEC_CLOSED, "the execution has ended");
		free(s);
	}
}

/* An attach that the box never answered: the execution is gone with it. */
static void fail_attach(struct bl_exec *ex, int status)
{
	if (ex->attach_op)
		bl_op_complete(ex->box->rt, ex->attach_op, status, NULL);
	ex->attach_op = NULL;
}

static void unlink_exec(struct bl_attachment *a, struct bl_exec *ex)
{
	fail_writes(ex);
	fail_controls(ex);
	fail_attach(ex, BOXLITE_ERR_EXEC_CLOSED);
	for (struct bl_exec **p = &a->execs; *p; p = &(*p)->next) {
		if (*p == ex) {
			*p = ex->next;
			ex->next = NULL;
			bl_exec_unref(ex);
			return;
		}
	}
}

static struct bl_exec *find_exec(struct bl_attachment *a, uint64_t id)
{
	for (struct bl_exec *ex = a->execs; ex; ex = ex->next)
		if (ex->wire_id == id)
			return ex;
	return NULL;
}

/* End every execution still routed through a: the box is gone. */
static void end_execs(struct bl_attachment *a, int outcome, int error)
{
	while (a->execs) {
		struct bl_exec *ex = a->execs;
		bl_exec_end(ex, outcome, error);
		unlink_exec(a, ex);
	}
}

static void detach_if_finished(struct bl_reactor *r, struct bl_attachment *a)
{
	if (!a->shim_reaped || !a->conn_done)
		return;
	for (struct bl_attachment **p = &r->atts; *p; p = &(*p)->next) {
		if (*p == a) {
			*p = a->next;
			break;
		}
	}
	end_execs(a, BOXLITE_OUTCOME_LOST, 0);
	a->box->att = NULL;
	bl_box_finished(a->box);
	/* Later events of this epoll batch may still name a: free it after. */
	a->dead = true;
	a->next = r->dead;
	r->dead = a;
}

static void free_attachment(struct bl_attachment *a)
{
	bl_event_free(a->pending);
	if (a->pending_ex)
		bl_exec_unref(a->pending_ex);
	bl_conn_free(a->conn);
	bl_box_unref(a->box);
	free(a);
}

static void free_dead(struct bl_reactor *r)
{
	while (r->dead) {
		struct bl_attachment *a = r->dead;
		r->dead = a->next;
		free_attachment(a);
	}
}

static void conn_finished(struct bl_reactor *r, struct bl_attachment *a)
{
	if (a->conn_done)
		return;
	a->conn_done = true;
	epoll_ctl(r->epfd, EPOLL_CTL_DEL, bl_conn_fd(a->conn), NULL);
	/* Executions the agent never reported on are lost with it.  The agent
	 * closes the connection early in its exit, before its mount namespace
	 * is torn down: the shim must outlive that to reap it, so it is asked
	 * to stop (a no-op if the agent is exiting), never killed here. */
	end_execs(a, BOXLITE_OUTCOME_LOST, 0);
	signal_shim(a, BL_ENGINE_STOP);
	detach_if_finished(r, a);
}

static void reap_shim(struct bl_reactor *r, struct bl_attachment *a)
{
	siginfo_t info;
	memset(&info, 0, sizeof info);
	int rc;
	while ((rc = waitid(P_PIDFD, (id_t)a->pidfd, &info, WEXITED | WNOHANG)) < 0 && errno == EINTR)
		;
	/* ECHILD: someone else reaped it (the host program's waitpid(-1)). */
	if (rc == 0 && info.si_pid == 0)
		return; /* spurious wakeup; still running */
	a->shim_reaped = true;
	epoll_ctl(r->epfd, EPOLL_CTL_DEL, a->pidfd, NULL);
	detach_if_finished(r, a);
}

static void flush_conn(struct bl_reactor *r, struct bl_attachment *a)
{
	int rc = bl_conn_flush(a->conn);
	bool want = rc == 1;
	if (rc < 0)
		return; /* the read side sees the same end and finishes it */
	if (want != a->writing && !a->conn_done) {
		a->writing = want;
		epoll_set(r, EPOLL_CTL_MOD, bl_conn_fd(a->conn), EPOLLIN | (want ? EPOLLOUT : 0u),
			  &a->conn_src);
	}
}

/* ---- frames from the agent ---- */

static uint8_t *body_dest(void *ctx, const struct bl_frame_header *h)
{
	struct bl_attachment *a = ctx;
	if (h->type != BL_FRAME_STDOUT && h->type != BL_FRAME_STDERR)
		return NULL;
	struct bl_exec *ex = find_exec(a, h->id);
	if (!ex || atomic_load(&ex->exit_claimed))
		return NULL; /* force-closed: its remaining output is discarded */
	int stream = h->type == BL_FRAME_STDOUT ? BOXLITE_STDOUT : BOXLITE_STDERR;
	uint64_t *credit = &ex->credit[stream == BOXLITE_STDERR];
	if (h->len > *credit) { /* beyond its window: the host would buffer without bound */
		a->violated = true;
		return NULL;
	}
	*credit -= h->len;
	a->pending = bl_event_output(ex->on_output, ex->user_data, stream, h->len);
	if (!a->pending)
		return NULL; /* cannot happen quietly: see on_output below */
	a->pending->output.ack = ex->manual_ack ? 0 : ex->id;
	bl_exec_ref(ex);
	a->pending_ex = ex;
	return a->pending->data;
}

static void on_output(struct bl_attachment *a, const struct bl_frame_header *h)
{
	struct bl_event *ev = a->pending;
	struct bl_exec *ex = a->pending_ex;
	a->pending = NULL;
	a->pending_ex = NULL;
	if (!ev) {
		/* No event: discarded on purpose, or allocation failed.  An exec
		 * that loses output to ENOMEM must not pretend it was whole. */
		struct bl_exec *live = find_exec(a, h->id);
		if (live && !atomic_load(&live->exit_claimed)) {
			bl_exec_end(live, BOXLITE_OUTCOME_LOST, BOXLITE_ERR_NO_MEMORY);
		}
		return;
	}
	/* Waits while the queue is full: the agent's buffer fills, then the
	 * process in the box blocks on its pipe.  Refused only after close,
	 * when this execution's Exit is already claimed. */
	if (atomic_load(&ex->exit_claimed) || bl_queue_push_stream(&a->box->rt->queue, ev, -1))
		bl_event_free(ev);
	bl_exec_unref(ex);
}

/* The Exit an agent's EXIT payload describes; false when no real process
 * could have ended that way (the payload is hostile or corrupt). */
static bool exit_from_wire(const struct bl_exit_payload *w, boxlite_exit *e)
{
	*e = (boxlite_exit){.exit_code = -1};
	bool real_signal = w->signal > 0 && w->signal < NSIG;
	bool real;
	switch (w->outcome) {
	case BL_WIRE_EXITED:
		e->outcome = BOXLITE_OUTCOME_EXITED;
		e->exit_code = w->code;
		real = w->code >= 0 && w->code <= 255;
		break;
	case BL_WIRE_SIGNALED:
		e->outcome = BOXLITE_OUTCOME_SIGNALED;
		e->signal = w->signal;
		real = real_signal;
		break;
	case BL_WIRE_TIMED_OUT:
		e->outcome = BOXLITE_OUTCOME_TIMED_OUT;
		e->signal = w->signal;
		real = real_signal;
		break;
	case BL_WIRE_FAILED_TO_START:
		e->outcome = BOXLITE_OUTCOME_FAILED_TO_START;
		e->os_error = w->error;
		real = w->error > 0 && w->error < 4096;
		break;
	default:
		return false;
	}
	e->exit_code = boxlite_exit_status(e);
	return real;
}

static void on_exit_frame(struct bl_attachment *a, const struct bl_frame_header *h, const uint8_t *body)
{
	struct bl_exec *ex = find_exec(a, h->id);
	if (!ex || h->len != 16)
		return;
	struct bl_exit_payload w;
	bl_exit_decode(body, &w);
	boxlite_exit e;
	if (!exit_from_wire(&w, &e)) {
		a->violated = true;
		return;
	}
	if (bl_exec_claim_exit(ex))
		bl_exec_post_exit(ex, &e);
	unlink_exec(a, ex);
}

static int attach_status(int32_t err)
{
	return err == 0 ? BOXLITE_OK : err == ENOENT ? BOXLITE_ERR_NOT_FOUND
	       : err == EBUSY			 ? BOXLITE_ERR_INVALID_STATE
						 : BOXLITE_ERR_PROTOCOL;
}

static void on_attached(struct bl_attachment *a, const struct bl_frame_header *h, const uint8_t *body)
{
	struct bl_exec *ex = find_exec(a, h->id);
	if (!ex || !ex->attach_op || h->len != BL_ATTACHED_SIZE)
		return;
	struct bl_attached_reply w;
	bl_attached_decode(body, &w);
	boxlite_runtime *rt = a->box->rt;
	pthread_mutex_lock(&rt->lock);
	ex->has_stdin = w.flags & BL_ATTACHED_STDIN;
	ex->has_tty = w.flags & BL_ATTACHED_TTY;
	ex->attach_info = (boxlite_attach_info){.stdout_start = w.start[0],
						.stderr_start = w.start[1],
						.has_stdin = ex->has_stdin,
						.has_tty = ex->has_tty,
						.ended = (w.flags & BL_ATTACHED_ENDED) != 0};
	pthread_mutex_unlock(&rt->lock);
	int status = attach_status(w.error);
	fail_attach(ex, status); /* OK completes it */
	if (status != BOXLITE_OK) {
		bl_exec_end(ex, BOXLITE_OUTCOME_LOST, status);
		unlink_exec(a, ex);
	}
}

static bool on_frame(void *ctx, const struct bl_frame_header *h, uint8_t *body)
{
	struct bl_attachment *a = ctx;
	struct bl_exec *ex;
	if (a->violated)
		return false; /* body_dest refused this frame */
	switch (h->type) {
	case BL_FRAME_HELLO:
		a->hello = h->len >= 4;
		break;
	case BL_FRAME_STDOUT:
	case BL_FRAME_STDERR:
		on_output(a, h);
		break;
	case BL_FRAME_EXIT:
		on_exit_frame(a, h, body);
		break;
	case BL_FRAME_ATTACHED:
		on_attached(a, h, body);
		break;
	case BL_FRAME_STDIN_ACK:
		if (h->len == 4 && (ex = find_exec(a, h->id))) {
			uint32_t n;
			memcpy(&n, body, 4);
			ack_writes(ex, n);
		}
		break;
	case BL_FRAME_STDIN_CLOSED:
		if ((ex = find_exec(a, h->id)))
			fail_writes(ex);
		break;
	case BL_FRAME_RESULT:
		if (h->len == 8 && (ex = find_exec(a, h->id))) {
			uint32_t token;
			int32_t err;
			memcpy(&token, body, 4);
			memcpy(&err, body + 4, 4);
			control_result(ex, token, err);
		}
		break;
	case BL_FRAME_STARTED:
		if ((ex = find_exec(a, h->id)))
			ex->unanswered = false;
		break;
	default: /* frames from newer agents: nothing to do */
		break;
	}
	return !a->violated;
}

static const struct bl_conn_handler handler = {.body_dest = body_dest, .frame = on_frame};

static void conn_readable(struct bl_reactor *r, struct bl_attachment *a)
{
	enum bl_conn_status st = bl_conn_read(a->conn, &handler, a, READ_BUDGET);
	if (st == BL_CONN_CLOSED || st == BL_CONN_BROKEN || a->violated)
		conn_finished(r, a);
	else if (a->releasing && all_answered(a))
		release(r, a);
}

/* The epoll wait: until the first release that waits for answers is due. */
static int next_timeout(struct bl_reactor *r)
{
	int64_t first = -1;
	for (struct bl_attachment *a = r->atts; a; a = a->next)
		if (a->releasing && (first < 0 || a->release_by < first))
			first = a->release_by;
	if (first < 0)
		return -1;
	int64_t left = first - bl_now_ms();
	return left > 0 ? (int)left : 0;
}

static void release_overdue(struct bl_reactor *r)
{
	for (struct bl_attachment *a = r->atts, *next; a; a = next) {
		next = a->next;
		if (a->releasing && bl_now_ms() >= a->release_by)
			release(r, a);
	}
}

/* ---- commands, run on the reactor ---- */

static struct bl_attachment *exec_attachment(struct bl_exec *ex)
{
	struct bl_attachment *a = ex->box->att;
	return a && !a->conn_done ? a : NULL;
}

/* An execution whose EXEC frame never reached the connection. */
static void exec_unsent(struct bl_exec *ex, int status)
{
	bool attaching = ex->attach_op != NULL;
	fail_attach(ex, status);
	bl_exec_end(ex, attaching ? BOXLITE_OUTCOME_LOST : BOXLITE_OUTCOME_FAILED_TO_START, status);
}

static void run_exec(struct bl_reactor *r, struct cmd *c)
{
	struct bl_attachment *a = exec_attachment(c->ex);
	uint8_t *frame = c->frame;
	c->frame = NULL; /* from here on the frame is this function's, then the connection's */
	if (!a || r->closing) {
		free(frame);
		exec_unsent(c->ex, r->closing ? BOXLITE_ERR_RUNTIME_CLOSED : BOXLITE_ERR_INVALID_STATE);
		return;
	}
	if (bl_conn_send(a->conn, frame, c->len) < 0) {
		exec_unsent(c->ex, BOXLITE_ERR_NO_MEMORY);
		return;
	}
	c->ex->next = a->execs; /* the command's reference moves to the list */
	c->ex->unanswered = true;
	a->execs = c->ex;
	c->ex = NULL;
	flush_conn(r, a);
}

/* Queue a small frame for the agent.  False when it could not be sent. */
static bool send_frame(struct bl_reactor *r, struct bl_attachment *a, uint16_t type, uint64_t id,
		       const void *payload, uint32_t len)
{
	uint8_t *frame = malloc(BL_FRAME_HEADER_SIZE + len);
	if (!frame)
		return false;
	struct bl_frame_header h = {.len = len, .type = type, .id = id};
	bl_header_encode(&h, frame);
	if (len)
		memcpy(frame + BL_FRAME_HEADER_SIZE, payload, len);
	if (bl_conn_send(a->conn, frame, BL_FRAME_HEADER_SIZE + len) < 0)
		return false;
	flush_conn(r, a);
	return true;
}

/* A SIGNAL or RESIZE frame: 4 bytes of argument, then the token (0: no
 * reply wanted). */
static bool send_control_frame(struct bl_reactor *r, struct bl_attachment *a, uint16_t type,
			       uint64_t id, const uint8_t arg[4], uint32_t token)
{
	uint8_t payload[8];
	memcpy(payload, arg, 4);
	memcpy(payload + 4, &token, 4);
	return send_frame(r, a, type, id, payload, sizeof payload);
}

static bool send_credit_frame(struct bl_reactor *r, struct bl_attachment *a, uint64_t id,
			      const uint32_t credit[2])
{
	return send_frame(r, a, BL_FRAME_CREDIT, id, credit, 2 * sizeof *credit);
}

static bool send_signal_frame(struct bl_reactor *r, struct bl_attachment *a, uint64_t id, int sig,
			      uint32_t token)
{
	uint8_t arg[4];
	uint32_t s = (uint32_t)sig;
	memcpy(arg, &s, 4);
	return send_control_frame(r, a, BL_FRAME_SIGNAL, id, arg, token);
}

/* Send a SIGNAL or RESIZE whose RESULT completes c->op. */
static void run_control(struct bl_reactor *r, struct cmd *c, uint16_t type, const uint8_t arg[4])
{
	struct bl_exec *ex = c->ex;
	struct bl_attachment *a = exec_attachment(ex);
	if (!a || !find_exec(a, ex->wire_id) || atomic_load(&ex->exit_claimed)) {
		bl_op_complete(r->rt, c->op, BOXLITE_ERR_EXEC_CLOSED, "the execution has ended");
		return;
	}
	struct bl_control *s = malloc(sizeof *s);
	if (++ex->last_token == 0)
		ex->last_token = 1; /* 0 means "no reply" on the wire */
	if (!s || !send_control_frame(r, a, type, ex->wire_id, arg, ex->last_token)) {
		free(s);
		bl_op_complete(r->rt, c->op, BOXLITE_ERR_NO_MEMORY, NULL);
		return;
	}
	*s = (struct bl_control){.next = ex->controls, .op = c->op, .token = ex->last_token};
	ex->controls = s;
}

static void run_signal(struct bl_reactor *r, struct cmd *c)
{
	uint8_t arg[4];
	uint32_t s = (uint32_t)c->sig;
	memcpy(arg, &s, 4);
	run_control(r, c, BL_FRAME_SIGNAL, arg);
}

static void run_resize(struct bl_reactor *r, struct cmd *c)
{
	uint8_t arg[4];
	memcpy(arg, &c->rows, 2);
	memcpy(arg + 2, &c->cols, 2);
	run_control(r, c, BL_FRAME_RESIZE, arg);
}

static void run_force_close(struct bl_reactor *r, struct cmd *c)
{
	struct bl_attachment *a = exec_attachment(c->ex);
	if (!bl_exec_claim_exit(c->ex))
		return;
	boxlite_exit e = {.outcome = BOXLITE_OUTCOME_FORCE_CLOSED, .exit_code = -1};
	bl_exec_post_exit(c->ex, &e);
	/* The process is killed; the list keeps the exec until the agent's own
	 * EXIT arrives, so its late output is recognised and dropped. */
	if (!a || !find_exec(a, c->ex->wire_id))
		return;
	/* Nobody reads it any more: let its last output flow, to be dropped. */
	static const uint32_t unlimited[2] = {BL_CREDIT_UNLIMITED, BL_CREDIT_UNLIMITED};
	if (!send_signal_frame(r, a, c->ex->wire_id, SIGKILL, 0) ||
	    !send_credit_frame(r, a, c->ex->wire_id, unlimited))
		kill_shim(a); /* cannot reach the process: end its box rather than leak it */
}

static void run_detach(struct bl_reactor *r, struct cmd *c)
{
	struct bl_attachment *a = exec_attachment(c->ex);
	if (!bl_exec_claim_exit(c->ex))
		return; /* it ended first: that Exit stands */
	boxlite_exit e = {.outcome = BOXLITE_OUTCOME_DETACHED, .exit_code = -1};
	bl_exec_post_exit(c->ex, &e);
	if (!a || !find_exec(a, c->ex->wire_id))
		return;
	/* Unrouted at once: whatever is still in flight for it is dropped. */
	if (!send_frame(r, a, BL_FRAME_DETACH, c->ex->wire_id, NULL, 0))
		kill_shim(a); /* the box would keep waiting on a host that is gone */
	unlink_exec(a, c->ex);
}

/* Let go of a kept box: its executions run on, its shim is not ours. */
static void release(struct bl_reactor *r, struct bl_attachment *a)
{
	if (a->conn_done && a->shim_reaped)
		return;
	/* An execution whose EXEC is still on its way (in a VM's port, say)
	 * would be lost to whoever attaches next: the agent answers first. */
	if (!a->conn_done && !all_answered(a) && (!a->releasing || bl_now_ms() < a->release_by)) {
		if (!a->releasing)
			a->release_by = bl_now_ms() + RELEASE_WAIT_MS;
		a->releasing = true;
		return;
	}
	a->releasing = false;
	end_execs(a, BOXLITE_OUTCOME_DETACHED, 0);
	if (!a->conn_done) {
		a->conn_done = true;
		epoll_ctl(r->epfd, EPOLL_CTL_DEL, bl_conn_fd(a->conn), NULL);
	}
	if (!a->shim_reaped) {
		a->shim_reaped = true;
		epoll_ctl(r->epfd, EPOLL_CTL_DEL, a->pidfd, NULL);
	}
	detach_if_finished(r, a);
}

static void run_release(struct bl_reactor *r, struct cmd *c)
{
	struct bl_attachment *a = c->box->att;
	if (a)
		release(r, a);
}

static void run_credit(struct bl_reactor *r, struct cmd *c)
{
	struct bl_attachment *a = exec_attachment(c->ex);
	struct bl_exec *ex = c->ex;
	if (!a || !find_exec(a, ex->wire_id) || atomic_load(&ex->exit_claimed))
		return;
	if (send_credit_frame(r, a, ex->wire_id, c->credit)) {
		ex->credit[0] += c->credit[0];
		ex->credit[1] += c->credit[1];
		return;
	}
	/* Its output would stall for good: end it rather than hang its reader. */
	bl_exec_end(ex, BOXLITE_OUTCOME_LOST, BOXLITE_ERR_NO_MEMORY);
	if (!send_signal_frame(r, a, ex->wire_id, SIGKILL, 0))
		kill_shim(a);
}

static void run_write(struct bl_reactor *r, struct cmd *c)
{
	struct bl_exec *ex = c->ex;
	struct bl_attachment *a = exec_attachment(ex);
	struct bl_write *w = NULL;
	bool alive = a && find_exec(a, ex->wire_id) && !ex->stdin_gone && !atomic_load(&ex->exit_claimed);
	if (!alive || (c->data_len && !(w = malloc(sizeof *w)))) {
		bl_op_complete(r->rt, c->op, alive ? BOXLITE_ERR_NO_MEMORY : BOXLITE_ERR_EXEC_CLOSED,
			       NULL);
		return;
	}
	if (c->data_len == 0) { /* nothing to wait for */
		bl_op_complete(r->rt, c->op, BOXLITE_OK, NULL);
		return;
	}
	uint8_t *frame = c->frame;
	c->frame = NULL;
	if (bl_conn_send(a->conn, frame, c->len) < 0) {
		free(w);
		bl_op_complete(r->rt, c->op, BOXLITE_ERR_NO_MEMORY, NULL);
		return;
	}
	*w = (struct bl_write){.op = c->op, .remaining = c->data_len};
	if (ex->writes_tail)
		ex->writes_tail->next = w;
	else
		ex->writes = w;
	ex->writes_tail = w;
	flush_conn(r, a);
}

static void run_close_stdin(struct bl_reactor *r, struct cmd *c)
{
	struct bl_attachment *a = exec_attachment(c->ex);
	if (!a || !find_exec(a, c->ex->wire_id))
		return;
	uint8_t *frame = malloc(BL_FRAME_HEADER_SIZE);
	struct bl_frame_header h = {.type = BL_FRAME_STDIN_CLOSE, .id = c->ex->wire_id};
	if (frame)
		bl_header_encode(&h, frame);
	if (!frame || bl_conn_send(a->conn, frame, BL_FRAME_HEADER_SIZE) < 0) {
		/* The process would wait for EOF forever: end it instead. */
		send_signal_frame(r, a, c->ex->wire_id, SIGKILL, 0);
		return;
	}
	flush_conn(r, a);
}

static void run_close(struct bl_reactor *r)
{
	r->closing = true;
	for (struct bl_attachment *a = r->atts, *next; a; a = next) {
		next = a->next;
		if (a->box->kept) {
			release(r, a);
			continue;
		}
		end_execs(a, BOXLITE_OUTCOME_FORCE_CLOSED, BOXLITE_ERR_RUNTIME_CLOSED);
		kill_shim(a);
	}
	/* Every Exit this reactor owed is posted: drain may now finish. */
	bl_queue_release(&r->rt->queue);
}

static void free_cmd(struct bl_reactor *r, struct cmd *c)
{
	if (c->op) /* a write that never ran (the reactor stopped first) */
		bl_op_complete(r->rt, c->op, BOXLITE_ERR_RUNTIME_CLOSED, NULL);
	free(c->frame);
	if (c->att) { /* an attach that never ran (workers stop before quit) */
		kill_shim(c->att);
		reap_blocking(c->att);
		free_attachment(c->att);
	}
	if (c->ex)
		bl_exec_unref(c->ex);
	bl_box_unref(c->box);
	free(c);
}

static void run_commands(struct bl_reactor *r)
{
	uint64_t n;
	while (read(r->wakefd, &n, sizeof n) < 0 && errno == EINTR)
		;
	pthread_mutex_lock(&r->lock);
	struct cmd *c = r->head;
	r->head = r->tail = NULL;
	pthread_mutex_unlock(&r->lock);
	while (c) {
		struct cmd *next = c->next;
		switch (c->kind) {
		case CMD_ATTACH:
			attach(r, c->att);
			c->att = NULL;
			break;
		case CMD_EXEC:
			run_exec(r, c);
			break;
		case CMD_SIGNAL:
			run_signal(r, c);
			c->op = NULL;
			break;
		case CMD_FORCE_CLOSE:
			run_force_close(r, c);
			break;
		case CMD_DETACH:
			run_detach(r, c);
			break;
		case CMD_RELEASE:
			run_release(r, c);
			break;
		case CMD_WRITE:
			run_write(r, c);
			c->op = NULL;
			break;
		case CMD_CLOSE_STDIN:
			run_close_stdin(r, c);
			break;
		case CMD_RESIZE:
			run_resize(r, c);
			c->op = NULL;
			break;
		case CMD_CREDIT:
			run_credit(r, c);
			break;
		case CMD_CLOSE:
			run_close(r);
			break;
		case CMD_QUIT:
			r->quitting = true;
			break;
		}
		free_cmd(r, c);
		c = next;
	}
}

/* ---- the loop ---- */

static void dispatch(struct bl_reactor *r, const struct epoll_event *ev)
{
	struct source *src = ev->data.ptr;
	if (src->kind == SRC_WAKE) {
		run_commands(r);
		return;
	}
	struct bl_attachment *a = src->att;
	if (src->kind == SRC_PIDFD) {
		reap_shim(r, a);
		return;
	}
	if (ev->events & EPOLLOUT)
		flush_conn(r, a);
	if (ev->events & (EPOLLIN | EPOLLHUP | EPOLLERR))
		conn_readable(r, a);
}

static void *reactor_main(void *arg)
{
	struct bl_reactor *r = arg;
	struct epoll_event evs[MAX_EVENTS];
	while (!(r->quitting && !r->atts)) {
		int n = epoll_wait(r->epfd, evs, MAX_EVENTS, next_timeout(r));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			abort(); /* only EBADF/EFAULT/EINVAL: a bug, not a condition */
		release_overdue(r);
		for (int i = 0; i < n; i++) {
			struct source *src = evs[i].data.ptr;
			if (src->kind == SRC_WAKE || !src->att->dead)
				dispatch(r, &evs[i]);
		}
		free_dead(r);
	}
	return NULL;
}

struct bl_reactor *bl_reactor_new(boxlite_runtime *rt)
{
	struct bl_reactor *r = calloc(1, sizeof *r);
	if (!r)
		return NULL;
	r->rt = rt;
	r->epfd = epoll_create1(EPOLL_CLOEXEC);
	r->wakefd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	r->close_cmd = cmd_new(CMD_CLOSE);
	r->quit_cmd = cmd_new(CMD_QUIT);
	r->wake_src.kind = SRC_WAKE;
	bool ok = r->epfd >= 0 && r->wakefd >= 0 && r->close_cmd && r->quit_cmd &&
		  pthread_mutex_init(&r->lock, NULL) == 0;
	if (ok && epoll_set(r, EPOLL_CTL_ADD, r->wakefd, EPOLLIN, &r->wake_src) == 0) {
		bl_queue_hold(&rt->queue); /* released once close has ended every exec */
		if (pthread_create(&r->thread, NULL, reactor_main, r) == 0)
			return r;
		bl_queue_release(&rt->queue);
	}
	if (ok)
		pthread_mutex_destroy(&r->lock);
	if (r->epfd >= 0)
		close(r->epfd);
	if (r->wakefd >= 0)
		close(r->wakefd);
	free(r->close_cmd);
	free(r->quit_cmd);
	free(r);
	return NULL;
}

void bl_reactor_free(struct bl_reactor *r)
{
	struct cmd *q = r->quit_cmd;
	r->quit_cmd = NULL;
	enqueue(r, q);
	pthread_join(r->thread, NULL);
	struct cmd *c = r->head; /* none are left in practice; free regardless */
	while (c) {
		struct cmd *next = c->next;
		free_cmd(r, c);
		c = next;
	}
	free(r->close_cmd);
	pthread_mutex_destroy(&r->lock);
	close(r->epfd);
	close(r->wakefd);
	free(r);
}
