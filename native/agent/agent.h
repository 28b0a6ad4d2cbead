/*
 * agent.h - boxlite-agent, PID 1 inside a box.
 *
 * One thread, one epoll loop.  Host connections (fd 3 from the box's
 * creator, more accepted on an optional listening socket) carry EXEC and
 * SIGNAL frames in; HELLO, STARTED, STDOUT, STDERR and EXIT frames out.  Each
 * execution is a forked process in its own session with separate stdout and
 * stderr pipes, and has at most one host: the connection that started it or
 * last attached to it.  Its frames queue in that connection's FIFO (outbuf),
 * so its EXIT, queued after its pipes are done, always follows its last
 * output.  An execution whose host went away runs on; its output is kept in
 * a bounded replay buffer for the next host that attaches.
 */
#ifndef BOXLITE_AGENT_H
#define BOXLITE_AGENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "common/clock.h"
#include "common/error.h"
#include "common/protocol.h"

/* What an epoll event's data.ptr points at: every source starts with one. */
enum src_kind { SRC_CONN, SRC_LISTEN, SRC_SIGNAL, SRC_TIMER, SRC_PIPE, SRC_STDIN };

/* ---- outbuf.c: the FIFO of frames for the host ---- */

struct frame {
	struct frame *next;
	size_t len, off; /* bytes in data, bytes already sent */
	uint8_t data[];  /* header, then payload */
};

struct outbuf {
	struct frame *head, *tail;
	size_t bytes; /* unsent bytes: the backpressure measure */
};

/* A frame with room for cap payload bytes; finish it with frame_seal. */
struct frame *frame_new(size_t cap);
/* Write the header for a payload of len bytes (len <= the frame's cap). */
void frame_seal(struct frame *f, uint16_t type, uint64_t id, size_t len);
void outbuf_push(struct outbuf *o, struct frame *f);
/* Send what the socket takes: 0 all sent, 1 would block, -1 broken. */
int outbuf_flush(struct outbuf *o, int fd);
/* Queue a frame with a small payload; false when out of memory. */
bool outbuf_send(struct outbuf *o, uint16_t type, uint64_t id, const void *payload, size_t len);

/* ---- replay.c: the recent output of one stream ---- */

struct replay {
	uint8_t *buf;
	size_t cap;
	uint64_t start, end; /* stream offsets held: [start, end) */
};

void replay_append(struct replay *r, const uint8_t *d, size_t n);
/* Copy up to max bytes from stream offset from; 0 when none are held. */
size_t replay_copy(const struct replay *r, uint64_t from, uint8_t *dst, size_t max);
void replay_free(struct replay *r);

/* ---- client.c: host connections ---- */

struct agent;
struct execution;

struct client {
	enum src_kind kind; /* SRC_CONN */
	struct client *next;
	int fd;
	bool primary; /* fd 3: its end abandons the box unless it is detached */
	bool writing; /* EPOLLOUT armed */
	bool paused;  /* its executions' pipes are not read: outbuf over its high mark */
	bool gone;    /* closed; freed after the epoll batch */
	struct outbuf out;
	size_t in_have;
	uint8_t *in; /* a header and up to BL_FRAME_MAX_PAYLOAD bytes */
};

/* Take fd over as a host connection and greet it (HELLO); 0 or -1 (out of
 * memory, epoll: the agent cannot go on). */
int client_add(struct agent *ag, int fd, bool primary, bl_error *e);
int client_accept(struct agent *ag, bl_error *e);
void client_ready(struct agent *ag, struct client *c, uint32_t events);
/* Send what every connection takes; pause or resume reading pipes. */
void client_flush_all(struct agent *ag);
/* Every connection has sent everything, or cannot any more. */
bool client_all_flushed(const struct agent *ag);
void client_free_gone(struct agent *ag);
/* Queue a small frame for c; dies when out of memory. */
void client_send(struct client *c, uint16_t type, uint64_t id, const void *payload, size_t len);

/* ---- executions.c ---- */

/* One output pipe of an execution, as an epoll source. */
struct pipe_src {
	enum src_kind kind; /* SRC_PIPE; first, so the loop can tell sources apart */
	struct execution *ex;
	int fd;              /* read end, -1 once closed */
	uint16_t frame_type; /* BL_FRAME_STDOUT or BL_FRAME_STDERR */
	bool watched;        /* registered with epoll (reading) */
	size_t final_left;   /* after the drain window: bytes it may still yield */
	/* Output bytes the host lets it send; with none left the pipe is not
	 * read, so only the writers of this pipe block. */
	uint64_t credit;
	bool unlimited;
	struct replay replay; /* what it read lately, for a host that reattaches */
	uint64_t sent;        /* stream offset its host has been sent up to */
};

struct in_chunk;

/* The write end of an execution's stdin and what waits to go into it. */
struct stdin_feed {
	enum src_kind kind; /* SRC_STDIN */
	struct execution *ex;
	int fd;   /* -1: never a pipe, closed, or broken */
	bool tty; /* fd is the terminal: EOF is the VEOF character, not a close */
	struct in_chunk *head, *tail;
	bool close_requested;
	bool watching; /* EPOLLOUT armed */
};

struct execution {
	struct execution *next;
	uint64_t id;
	struct client *host; /* NULL while nobody is attached */
	pid_t pid;
	char marker[32]; /* BOXLITE_EXEC=<id>, in its processes' environment */
	struct pipe_src out, err;
	struct stdin_feed in;
	bool reaped;
	int status;
	int64_t drain_deadline_ms;
	bool drain_over; /* the window passed: take what the pipes hold, then end */
	/* Timeout: SIGTERM to its tree at timeout_at, SIGKILL at kill_at. */
	int64_t timeout_at_ms, kill_at_ms; /* 0: none / not pending */
	uint32_t kill_grace_ms;
	bool timed_out;
	int last_signal;
	bool tty;        /* out.fd is the terminal's master side */
	bool with_stdin; /* started with a stdin pipe or a terminal */
	/* Once ended: its EXIT, kept with its replay for a while. */
	uint8_t exit_payload[16];
	int64_t ended_ms;
};

/* Frames from host c about execution id. */
void exec_start(struct agent *ag, struct client *c, uint64_t id, uint8_t *payload, size_t len);
/* Report to c that an execution could not start (errno err). */
void exec_refuse(struct client *c, uint64_t id, int err);
void exec_attach(struct agent *ag, struct client *c, uint64_t id, const uint8_t *payload);
/* Signal an execution's process group: 0, or errno (ESRCH: none left). */
int exec_signal(struct agent *ag, struct client *c, uint64_t id, int sig);
/* Resize an execution's terminal: 0, or errno (ENOTTY: it has none). */
int exec_resize(struct agent *ag, struct client *c, uint64_t id, uint16_t rows, uint16_t cols);
/* Host c is gone: its executions run on without one. */
void exec_orphan(struct agent *ag, struct client *c);
/* Host c lets go of one execution (DETACH). */
void exec_detach(struct agent *ag, struct client *c, uint64_t id);
/* Queue a small frame for ex's host, if it has one. */
void exec_send(struct execution *ex, uint16_t type, const void *payload, size_t len);

/* Spawn req in its own session with stdin, stdout and stderr on in (-1:
 * /dev/null), out and err; marker is added to its environment.  0 or errno. */
int exec_spawn_process(const struct bl_exec_request *req, int in, int out, int err, char *marker,
		       pid_t *pid);

/* ---- pty.c ---- */

/* A master (non-blocking, CLOEXEC) and its slave's path, sized rows x cols. */
int pty_open(uint16_t rows, uint16_t cols, int *master, char *slave, size_t cap);
int pty_resize(int master, uint16_t rows, uint16_t cols);
/* A pipe of an execution became readable (or hung up). */
void exec_pipe_ready(struct agent *ag, void *pipe_src);
/* Reap every exited child; finish the executions that are done. */
void exec_reap(struct agent *ag);
/* Timeouts and drain windows that are due; re-arms the timer. */
void exec_on_timer(struct agent *ag);
/* Start or stop reading pipes after a host's paused changed (backpressure). */
void exec_rewatch_all(struct agent *ag);
/* A CREDIT frame: more output bytes for an execution's stdout and stderr. */
void exec_credit(struct agent *ag, struct client *c, uint64_t id, uint32_t out, uint32_t err);
/* Signal every execution's process group (when not PID 1). */
void exec_kill_all(struct agent *ag, int sig);
bool exec_none_left(const struct agent *ag);
/* STDIN and STDIN_CLOSE frames for an execution. */
void exec_stdin(struct agent *ag, struct client *c, uint64_t id, const uint8_t *data, size_t len);
void exec_stdin_close(struct agent *ag, struct client *c, uint64_t id);

/* ---- process_tree.c: every process of one execution ---- */

void process_tree_marker(uint64_t id, char *out, size_t cap);
/* Signal its process group and every process carrying its marker. */
void process_tree_signal(pid_t pgid, const char *marker, int sig);

/* ---- stdin_feed.c: host bytes into a process's stdin, acknowledged ---- */

/* Take over fd (non-blocking write end, or a dup of a terminal's master);
 * -1 means the process has no stdin to feed. */
void stdin_open(struct agent *ag, struct execution *ex, int fd, bool tty);
void stdin_data(struct agent *ag, struct execution *ex, const uint8_t *data, size_t len);
void stdin_request_close(struct agent *ag, struct execution *ex);
/* The pipe became writable, or its reader went away. */
void stdin_ready(struct agent *ag, void *src);
/* The execution is over: drop what is pending, close the pipe. */
void stdin_release(struct agent *ag, struct execution *ex);
/* Its host is gone: drop the bytes it sent that the pipe has not taken
 * (their writes never completed), keep the pipe for the next host. */
void stdin_forget(struct agent *ag, struct execution *ex);
/* Free the executions forgotten during the last epoll batch. */
void exec_free_dead(struct agent *ag);
/* Forget every ended execution (the agent is exiting). */
void exec_forget_ended(struct agent *ag);

/* ---- main_command.c: the box's main command, whose end is the box's ---- */

struct main_command {
	pid_t pid;     /* -1: none or reaped; 0: to be started */
	int fds[4];    /* the command (EXEC payload), stdout log, stderr log, outcome pipe */
};

/* "--main R,O,E,X": the four fds the shim passed; false if malformed. */
bool main_command_parse(struct main_command *m, const char *arg);
/* Spawn it (with --main); a command that cannot start ends the box.
 * -1 only if the agent cannot go on. */
int main_command_start(struct agent *ag, bl_error *e);
/* Was pid the main command?  Then report how it ended and end the box. */
bool main_command_reaped(struct agent *ag, pid_t pid, int status);

/* ---- copy.c: `boxlite-agent copy-in DIR` / `copy-out PATH` (tar on stdio) ---- */

int copy_main(int argc, char **argv);

/* as_user.c: `as-user USER -- COMMAND...`, COMMAND as a user of the box. */
int as_user_main(int argc, char **argv);

/* ---- main.c: the agent's shared state ---- */

struct agent {
	int epfd, sigfd, timerfd;
	int listen_fd; /* -1: only the creator's connection */
	bool pid1;
	bool detached; /* the box outlives its creator's connection */
	bool stopping; /* SIGTERM received */
	uint32_t drain_ms, grace_ms;
	int64_t kill_at_ms; /* when stopping: SIGKILL everything at this time */
	struct client *clients;
	struct execution *execs;
	struct execution *ended; /* newest first, kept for reattaching hosts */
	struct execution *dead;  /* forgotten, freed after the epoll batch */
	struct main_command main;
};

/* Stop the box at once: kill everything, exit. */
_Noreturn void agent_abandon(struct agent *ag);
/* End the box: SIGKILL to every process; the agent exits once their EXITs
 * are flushed. */
void agent_end(struct agent *ag);

/* Register fd with epoll for src; events 0 means registered but idle. */
int agent_watch(struct agent *ag, int op, int fd, uint32_t events, void *src);
/* Arm the single timerfd for the earliest of the pending deadlines. */
void agent_arm_timer(struct agent *ag, int64_t deadline_ms);
/* The agent's one report of a failure it cannot go on from: "boxlite-agent:
 * <message>" on its stderr (the shim's log), exit status 1. */
_Noreturn void agent_fail(const bl_error *e);
/* Out of memory or a broken invariant deep in an event handler (what and
 * errno): PID 1 cannot limp on, and no caller could do other than exit,
 * so it goes straight to agent_fail instead of up through every handler. */
_Noreturn void agent_die(const char *what);

#endif
