/*
 * core.h - the native core's internal objects and who owns what.
 *
 * Threads:
 *   - caller threads: the public API; validate, update state under rt->lock,
 *     and hand work to a worker or the reactor.  They never block on either.
 *   - worker threads (worker_pool.c): blocking work (spawning a box's shim and
 *     waiting for it to report ready).
 *   - the reactor thread (reactor.c): owns every agent connection, every
 *     execution's routing, and the reaping of shims.  It is the only poster
 *     of execution events, which is what keeps output and Exit ordered.
 *   - the draining thread: runs user callbacks (runtime.c, boxlite_runtime_drain),
 *     or takes events to dispatch itself (boxlite_runtime_take/release).
 *
 * Locks: rt->lock guards the handle table, the op list, and box state fields
 * marked (rt->lock).  The queue has its own lock and is never taken while
 * holding rt->lock except for a terminal push (which never waits).
 */
#ifndef BOXLITE_CORE_H
#define BOXLITE_CORE_H

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "boxlite.h"
#include "engine/engine.h"
#include "event_queue.h"
#include "handle_table.h"

struct bl_reactor;
struct bl_workers;
struct bl_attachment;

/* An asynchronous operation whose completion is claimed exactly once: by its
 * performer, or by runtime close (RUNTIME_CLOSED).  Each op holds the queue. */
struct bl_op {
	struct bl_op *prev, *next; /* rt->ops (rt->lock) */
	struct bl_op *waiter_next; /* a box's stop waiters (rt->lock) */
	struct bl_event *done_ev; /* preallocated, so completing never needs memory */
	atomic_bool claimed;
};

struct boxlite_runtime {
	pthread_mutex_t lock;
	bool closed;                    /* (rt->lock) */
	struct bl_handle_table handles; /* (rt->lock) */
	struct bl_op *ops;              /* in-flight operations (rt->lock) */
	struct bl_queue queue;
	struct bl_reactor *reactor;
	struct bl_workers *workers;
	/* Readable once the runtime closes: a box start waiting for its shim
	 * gives up at once instead of holding boxlite_runtime_free. */
	int closing_fd;
	char *libexec_dir; /* what engines find their executables in */
};

/* The public BOXLITE_BOX_* values. */
enum bl_box_state {
	BL_BOX_NEW = BOXLITE_BOX_NEW,
	BL_BOX_STARTING = BOXLITE_BOX_STARTING,
	BL_BOX_RUNNING = BOXLITE_BOX_RUNNING,
	BL_BOX_STOPPING = BOXLITE_BOX_STOPPING,
	BL_BOX_STOPPED = BOXLITE_BOX_STOPPED,
};

struct bl_exec;

struct bl_box {
	atomic_int refs;
	boxlite_runtime *rt;
	/* Immutable after boxlite_box_new. */
	const struct bl_engine *engine;
	struct bl_box_spec spec;
	bool kept; /* detached or connected: let go of, never killed, on free and close */
	/* (rt->lock) */
	enum bl_box_state state;
	bool freed;               /* the handle is gone: kill on sight */
	int pidfd;                /* its supervisor's; closed only when the box is destroyed */
	pid_t shim_pid;           /* its supervisor */
	struct bl_op *stop_waiters;
	struct bl_attachment *att; /* reactor-owned while the box runs */
};

/* A stdin write waiting for the agent's acknowledgements (reactor). */
struct bl_write {
	struct bl_write *next;
	struct bl_op *op;
	size_t remaining; /* bytes not yet acknowledged */
};

/* A SIGNAL or RESIZE waiting for the agent's RESULT (reactor). */
struct bl_control {
	struct bl_control *next;
	struct bl_op *op;
	uint32_t token;
};

struct bl_exec {
	atomic_int refs;
	uint64_t id;      /* its handle */
	uint64_t wire_id; /* its id in the box: random, durable, immutable */
	struct bl_box *box;
	bool has_stdin;    /* immutable; for an attach, set before attach_op completes */
	bool has_tty;      /* likewise */
	bool manual_ack;   /* immutable: BOXLITE_EXEC_ACK_OUTPUT */
	uint32_t window;   /* immutable: bytes in flight per stream, at most */
	uint64_t acked[2]; /* stdout, stderr bytes acknowledged and not yet
			    * returned to the agent (rt->lock) */
	uint64_t credit[2]; /* stdout, stderr bytes the agent may still send
			     * (reactor): more is a broken agent, not buffered */
	bool stdin_closed; /* close requested (rt->lock) */
	bool stdin_gone;   /* the agent said its stdin is gone (reactor) */
	bool unanswered;   /* its EXEC is sent, and neither STARTED nor EXIT came (reactor) */
	struct bl_write *writes, *writes_tail; /* in write order (reactor) */
	struct bl_control *controls;           /* awaiting results (reactor) */
	uint32_t last_token;                   /* (reactor) */
	boxlite_output_cb on_output;
	void *user_data;
	struct bl_op *attach_op;  /* boxlite_exec_attach awaiting ATTACHED (reactor) */
	boxlite_attach_info attach_info; /* (rt->lock) */
	struct bl_event *exit_ev; /* preallocated Exit; posted by the claimer */
	atomic_bool exit_claimed; /* exactly one Exit: whoever flips this posts it */
	struct bl_exec *next;     /* its attachment's executions (reactor) */
};

/* ---- runtime.c ---- */
/* Register an op (caller holds rt->lock and has checked rt->closed); NULL
 * when out of memory. */
struct bl_op *bl_op_begin(boxlite_runtime *rt, boxlite_done_cb cb, void *user_data);
/* Claim and post the completion (unless close claimed it), then free op. */
void bl_op_complete(boxlite_runtime *rt, struct bl_op *op, int status, const char *message);
/* Drop an op whose call is failing synchronously: no callback will run.
 * The caller holds rt->lock since bl_op_begin, so close cannot have claimed it. */
void bl_op_abandon_locked(boxlite_runtime *rt, struct bl_op *op);

/* ---- box.c ---- */
void bl_box_ref(struct bl_box *box);
void bl_box_unref(struct bl_box *box);
/* The reactor saw the box's shim exit and its connection end. */
void bl_box_finished(struct bl_box *box);

/* ---- exec.c ---- */
void bl_exec_ref(struct bl_exec *ex);
void bl_exec_unref(struct bl_exec *ex);
/* Claim the Exit; true for exactly one caller per execution. */
bool bl_exec_claim_exit(struct bl_exec *ex);
/* Claim and post an Exit that the runtime decided (not the agent). */
void bl_exec_end(struct bl_exec *ex, int outcome, int error);
/* Post the Exit the agent reported (already claimed by the caller). */
void bl_exec_post_exit(struct bl_exec *ex, const boxlite_exit *exit);

/* ---- worker_pool.c ---- */
struct bl_workers *bl_workers_new(unsigned threads);
/* Run fn(arg) on a worker.  Returns BOXLITE_OK or NO_MEMORY. */
int bl_workers_submit(struct bl_workers *w, void (*fn)(void *), void *arg);
/* Run every queued job, then join every thread and free. */
void bl_workers_free(struct bl_workers *w);

/* ---- reactor.c ---- */
struct bl_reactor *bl_reactor_new(boxlite_runtime *rt);
/* Commands; each takes its own reference on the objects it names. */
int bl_reactor_attach(struct bl_reactor *r, struct bl_box *box, int pidfd, int conn_fd);
int bl_reactor_send_exec(struct bl_reactor *r, struct bl_exec *ex, uint8_t *frame, size_t len);
int bl_reactor_signal_exec(struct bl_reactor *r, struct bl_exec *ex, int sig, struct bl_op *op);
int bl_reactor_resize_exec(struct bl_reactor *r, struct bl_exec *ex, uint16_t rows, uint16_t cols,
			   struct bl_op *op);
int bl_reactor_force_close_exec(struct bl_reactor *r, struct bl_exec *ex);
/* Stop being ex's host, leaving it running; its Exit says DETACHED. */
int bl_reactor_detach_exec(struct bl_reactor *r, struct bl_exec *ex);
/* Let go of a kept box: end its executions here (DETACHED), close the
 * connection, stop watching its shim.  The box runs on. */
int bl_reactor_release(struct bl_reactor *r, struct bl_box *box);
/* frames: STDIN frames holding len bytes in all (NULL when len is 0). */
int bl_reactor_write_exec(struct bl_reactor *r, struct bl_exec *ex, struct bl_op *op, uint8_t *frames,
			  size_t frames_len, size_t len);
int bl_reactor_close_stdin(struct bl_reactor *r, struct bl_exec *ex);
/* Return stdout and stderr bytes of output window to the agent. */
int bl_reactor_credit_exec(struct bl_reactor *r, struct bl_exec *ex, uint32_t out, uint32_t err);
/* Runtime close: kill every box, end every execution.  Never fails. */
void bl_reactor_close(struct bl_reactor *r);
/* Wait until every attached box is reaped, then join and free. */
void bl_reactor_free(struct bl_reactor *r);

#endif
