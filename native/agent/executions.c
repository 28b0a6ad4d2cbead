/*
 * executions.c - the processes the host asked for: spawn them, pump their
 * pipes into output frames, reap them, and report each one's single EXIT.
 *
 * An execution ends when its main process has been reaped AND both pipes
 * reached EOF - or when the drain window after the reap has passed (a
 * background grandchild may hold the pipes open forever): then whatever is
 * already in the pipes is read and the pipes are closed.
 *
 * An execution belongs to the box, not to the connection that started it:
 * when its host goes, it runs on, its pipes read freely into the replay
 * buffers, until another host attaches.  An ended execution is kept (its
 * EXIT and replay buffers) for ENDED_KEEP_MS, at most MAX_ENDED of them, so
 * its outcome can still be asked for.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/wait.h>
#include <unistd.h>

#include "agent.h"

#define PIPE_SIZE (1 << 20)
/* At drain-window expiry, read at most this much more per pipe: enough for
 * a full pipe, bounded against a grandchild that keeps writing. */
#define FINAL_READ_MAX (2u * PIPE_SIZE)
#define DEFAULT_PATH "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#define MAX_ENDED 64
#define ENDED_KEEP_MS (10 * 60 * 1000)

/* ---- lookup and teardown ---- */

static struct execution *find_in(struct execution *list, uint64_t id)
{
	for (struct execution *ex = list; ex; ex = ex->next)
		if (ex->id == id)
			return ex;
	return NULL;
}

static struct execution *find(struct agent *ag, uint64_t id) { return find_in(ag->execs, id); }

/* A running execution that host c may drive. */
static struct execution *find_hosted(struct agent *ag, struct client *c, uint64_t id)
{
	struct execution *ex = find(ag, id);
	return ex && ex->host == c ? ex : NULL;
}

void exec_send(struct execution *ex, uint16_t type, const void *payload, size_t len)
{
	if (ex->host)
		client_send(ex->host, type, ex->id, payload, len);
}

/* Forget ended executions beyond the limits; the newest are first. */
static void trim_ended(struct agent *ag)
{
	int64_t too_old = bl_now_ms() - ENDED_KEEP_MS;
	size_t kept = 0;
	for (struct execution **p = &ag->ended; *p;) {
		struct execution *ex = *p;
		if (++kept <= MAX_ENDED && ex->ended_ms > too_old) {
			p = &ex->next;
			continue;
		}
		*p = ex->next;
		/* Events of the current epoll batch may still name it. */
		ex->next = ag->dead;
		ag->dead = ex;
	}
}

static void close_pipe(struct agent *ag, struct pipe_src *p)
{
	if (p->fd < 0)
		return;
	if (p->watched)
		epoll_ctl(ag->epfd, EPOLL_CTL_DEL, p->fd, NULL); /* close would too; be explicit */
	close(p->fd);
	p->fd = -1;
	p->watched = false;
}

static struct bl_exit_payload exit_of(struct execution *ex)
{
	if (ex->timed_out) {
		/* Nothing of a timed-out execution may outlive its report. */
		if (ex->kill_at_ms)
			process_tree_signal(ex->pid, ex->marker, SIGKILL);
		int sig = WIFSIGNALED(ex->status) ? WTERMSIG(ex->status) : ex->last_signal;
		return (struct bl_exit_payload){.outcome = BL_WIRE_TIMED_OUT, .signal = sig};
	}
	if (WIFSIGNALED(ex->status))
		return (struct bl_exit_payload){.outcome = BL_WIRE_SIGNALED,
						.signal = WTERMSIG(ex->status)};
	return (struct bl_exit_payload){.outcome = BL_WIRE_EXITED, .code = WEXITSTATUS(ex->status)};
}

static bool caught_up(const struct pipe_src *p) { return p->sent == p->replay.end; }

/* Its host (if any) has been sent every byte read so far. */
static bool delivered(const struct execution *ex)
{
	return !ex->host || (caught_up(&ex->out) && caught_up(&ex->err));
}

/* Report ex if it is done, and keep it among the ended. */
static void maybe_finish(struct agent *ag, struct execution *ex)
{
	if (!ex->reaped || ex->out.fd >= 0 || ex->err.fd >= 0 || !delivered(ex))
		return;
	stdin_release(ag, ex);
	struct bl_exit_payload e = exit_of(ex);
	bl_exit_encode(&e, ex->exit_payload);
	exec_send(ex, BL_FRAME_EXIT, ex->exit_payload, sizeof ex->exit_payload);
	for (struct execution **p = &ag->execs; *p; p = &(*p)->next) {
		if (*p == ex) {
			*p = ex->next;
			break;
		}
	}
	ex->host = NULL;
	ex->ended_ms = bl_now_ms();
	ex->next = ag->ended;
	ag->ended = ex;
	trim_ended(ag);
}

void exec_forget_ended(struct agent *ag)
{
	while (ag->ended) {
		struct execution *ex = ag->ended;
		ag->ended = ex->next;
		ex->next = ag->dead;
		ag->dead = ex;
	}
}

void exec_free_dead(struct agent *ag)
{
	while (ag->dead) {
		struct execution *ex = ag->dead;
		ag->dead = ex->next;
		replay_free(&ex->out.replay);
		replay_free(&ex->err.replay);
		free(ex);
	}
}

void exec_refuse(struct client *c, uint64_t id, int err)
{
	struct bl_exit_payload e = {.outcome = BL_WIRE_FAILED_TO_START, .error = err};
	uint8_t payload[16];
	bl_exit_encode(&e, payload);
	client_send(c, BL_FRAME_EXIT, id, payload, sizeof payload);
}

/* ---- output ---- */

static bool may_send(const struct pipe_src *p) { return p->unlimited || p->credit > 0; }

/* Without a host, output only goes to the replay buffer: no limit.  With
 * one, a pipe is read only once the host has been sent everything before
 * (replayed bytes first) and has credit. */
static bool may_read(const struct pipe_src *p)
{
	return !p->ex->host || (caught_up(p) && may_send(p));
}

/* Bytes the host may still be sent now, at most one frame's worth. */
static size_t sendable(const struct pipe_src *p)
{
	return p->unlimited || p->credit > BL_FRAME_DATA_CHUNK ? BL_FRAME_DATA_CHUNK
							       : (size_t)p->credit;
}

static void sent(struct pipe_src *p, struct frame *f, size_t n)
{
	frame_seal(f, p->frame_type, p->ex->id, n);
	outbuf_push(&p->ex->host->out, f);
	p->sent += n;
	if (!p->unlimited)
		p->credit -= n;
}

/* Watch a pipe while it may be read, and only then: a pipe left registered
 * with no interest would still report its hang-up, again and again. */
static void rewatch(struct agent *ag, struct pipe_src *p)
{
	const struct client *host = p->ex->host;
	bool want = p->fd >= 0 && !(host && host->paused) && may_read(p) && !p->ex->drain_over;
	if (want == p->watched)
		return;
	if (agent_watch(ag, want ? EPOLL_CTL_ADD : EPOLL_CTL_DEL, p->fd, EPOLLIN, p) < 0)
		agent_die("epoll_ctl on a pipe");
	p->watched = want;
}

static void rewatch_exec(struct agent *ag, struct execution *ex)
{
	rewatch(ag, &ex->out);
	rewatch(ag, &ex->err);
}

void exec_rewatch_all(struct agent *ag)
{
	for (struct execution *ex = ag->execs; ex; ex = ex->next)
		rewatch_exec(ag, ex);
}

/* Read one chunk (within the credit) straight into a new frame: the bytes
 * read, 0 at EOF, -1 when nothing is there now. */
static ssize_t read_chunk(struct pipe_src *p)
{
	size_t want = p->ex->host ? sendable(p) : BL_FRAME_DATA_CHUNK;
	struct frame *f = frame_new(want);
	if (!f)
		agent_die("out of memory reading output");
	ssize_t n;
	while ((n = read(p->fd, f->data + BL_FRAME_HEADER_SIZE, want)) < 0 && errno == EINTR)
		;
	if (n <= 0) {
		bool again = n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
		free(f);
		/* EAGAIN: drained for now.  Other errors end the stream like EOF. */
		return again ? -1 : 0;
	}
	/* Give back what a short read left unused. */
	if ((size_t)n < want / 2) {
		struct frame *small = realloc(f, sizeof *f + BL_FRAME_HEADER_SIZE + (size_t)n);
		if (small)
			f = small;
	}
	replay_append(&p->replay, f->data + BL_FRAME_HEADER_SIZE, (size_t)n);
	if (p->ex->host)
		sent(p, f, (size_t)n);
	else
		free(f);
	return n;
}

/* Send the host what the replay holds past what it was sent, within the
 * credit: the replay after an ATTACH. */
static void send_backlog(struct pipe_src *p)
{
	while (p->ex->host && !caught_up(p) && may_send(p)) {
		size_t want = sendable(p);
		struct frame *f = frame_new(want);
		if (!f)
			agent_die("out of memory replaying output");
		size_t n = replay_copy(&p->replay, p->sent, f->data + BL_FRAME_HEADER_SIZE, want);
		if (n == 0) { /* cannot happen: reading waits for the host */
			free(f);
			return;
		}
		sent(p, f, n);
	}
}

/* After the drain window: take what the pipe holds now (bounded against a
 * grandchild that keeps writing), then close it.  Stops early, pipe still
 * open, when the credit runs out: the rest follows the next CREDIT. */
static void final_read(struct agent *ag, struct pipe_src *p)
{
	while (p->fd >= 0 && may_read(p)) {
		ssize_t n = p->final_left ? read_chunk(p) : 0;
		if (n <= 0)
			close_pipe(ag, p);
		else
			p->final_left -= (size_t)n < p->final_left ? (size_t)n : p->final_left;
	}
}

static void finish_drain(struct agent *ag, struct execution *ex)
{
	final_read(ag, &ex->out);
	final_read(ag, &ex->err);
	rewatch_exec(ag, ex);
	maybe_finish(ag, ex);
}

void exec_pipe_ready(struct agent *ag, void *src)
{
	struct pipe_src *p = src;
	if (p->fd < 0 || !p->watched)
		return; /* closed or unwatched earlier in this epoll batch */
	ssize_t r = read_chunk(p);
	if (r == 0) {
		close_pipe(ag, p);
		maybe_finish(ag, p->ex);
	} else if (!may_read(p)) {
		rewatch(ag, p);
	}
}

/* Move ex's output along after its host or its credit changed. */
static void deliver(struct agent *ag, struct execution *ex)
{
	send_backlog(&ex->out);
	send_backlog(&ex->err);
	if (ex->ended_ms) { /* replaying an ended one: its EXIT comes last */
		if (ex->host && delivered(ex)) {
			exec_send(ex, BL_FRAME_EXIT, ex->exit_payload, sizeof ex->exit_payload);
			ex->host = NULL;
		}
	} else if (ex->drain_over) {
		finish_drain(ag, ex);
	} else {
		rewatch_exec(ag, ex);
		maybe_finish(ag, ex);
	}
}

static void add_credit(struct pipe_src *p, uint32_t n)
{
	if (n == BL_CREDIT_UNLIMITED)
		p->unlimited = true;
	else if (p->credit < UINT64_MAX - n)
		p->credit += n;
}

void exec_credit(struct agent *ag, struct client *c, uint64_t id, uint32_t out, uint32_t err)
{
	struct execution *ex = find_hosted(ag, c, id);
	if (!ex && (ex = find_in(ag->ended, id)) && ex->host != c)
		ex = NULL;
	if (!ex)
		return; /* over, and everything sent: nothing left to send */
	add_credit(&ex->out, out);
	add_credit(&ex->err, err);
	deliver(ag, ex);
}

/* ---- reaping and the drain window ---- */

static int64_t earliest(int64_t a, int64_t b)
{
	return a == 0 || (b != 0 && b < a) ? b : a;
}

/* The next moment something is due: a drain window, a timeout, a kill. */
static void arm_timer(struct agent *ag)
{
	int64_t next = 0;
	for (struct execution *ex = ag->execs; ex; ex = ex->next) {
		if (ex->reaped && !ex->drain_over)
			next = earliest(next, ex->drain_deadline_ms);
		if (!ex->timed_out)
			next = earliest(next, ex->timeout_at_ms);
		next = earliest(next, ex->kill_at_ms);
	}
	agent_arm_timer(ag, next);
}

static struct execution *find_pid(struct agent *ag, pid_t pid)
{
	for (struct execution *ex = ag->execs; ex; ex = ex->next)
		if (ex->pid == pid && !ex->reaped)
			return ex;
	return NULL;
}

void exec_reap(struct agent *ag)
{
	int status;
	pid_t pid;
	while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
		struct execution *ex = find_pid(ag, pid);
		if (!ex) {
			main_command_reaped(ag, pid, status); /* or an orphan PID 1 inherited */
			continue;
		}
		ex->reaped = true;
		ex->status = status;
		ex->drain_deadline_ms = bl_now_ms() + ag->drain_ms;
		maybe_finish(ag, ex);
	}
	arm_timer(ag);
}

static void time_out(struct execution *ex, int sig, int64_t kill_at)
{
	ex->timed_out = true;
	ex->last_signal = sig;
	ex->kill_at_ms = kill_at;
	process_tree_signal(ex->pid, ex->marker, sig);
}

void exec_on_timer(struct agent *ag)
{
	int64_t now = bl_now_ms();
	struct execution *ex = ag->execs;
	while (ex) {
		struct execution *next = ex->next;
		if (!ex->timed_out && ex->timeout_at_ms && now >= ex->timeout_at_ms && !ex->reaped)
			time_out(ex, SIGTERM, now + ex->kill_grace_ms);
		else if (ex->kill_at_ms && now >= ex->kill_at_ms)
			time_out(ex, SIGKILL, 0);
		if (ex->reaped && !ex->drain_over && ex->drain_deadline_ms <= now) {
			ex->drain_over = true;
			ex->out.final_left = ex->err.final_left = FINAL_READ_MAX;
			finish_drain(ag, ex);
		}
		ex = next;
	}
	arm_timer(ag);
}

bool exec_none_left(const struct agent *ag) { return ag->execs == NULL; }

void exec_kill_all(struct agent *ag, int sig)
{
	for (struct execution *ex = ag->execs; ex; ex = ex->next)
		kill(-ex->pid, sig);
}

void exec_stdin(struct agent *ag, struct client *c, uint64_t id, const uint8_t *data, size_t len)
{
	struct execution *ex = find_hosted(ag, c, id);
	if (ex) /* an execution already reported ended: its writes already failed */
		stdin_data(ag, ex, data, len);
}

void exec_stdin_close(struct agent *ag, struct client *c, uint64_t id)
{
	struct execution *ex = find_hosted(ag, c, id);
	if (ex)
		stdin_request_close(ag, ex);
}

int exec_resize(struct agent *ag, struct client *c, uint64_t id, uint16_t rows, uint16_t cols)
{
	struct execution *ex = find_hosted(ag, c, id);
	if (!ex || (ex->tty && ex->out.fd < 0))
		return ESRCH; /* gone, or its terminal already hung up */
	return ex->tty ? pty_resize(ex->out.fd, rows, cols) : ENOTTY;
}

int exec_signal(struct agent *ag, struct client *c, uint64_t id, int sig)
{
	struct execution *ex = find_hosted(ag, c, id);
	if (!ex)
		return ESRCH;
	/* Its group id stays reserved while any member lives: no reuse race. */
	return kill(-ex->pid, sig) < 0 ? errno : 0;
}

/* ---- starting ---- */

static int make_pipe(int fds[2])
{
	if (pipe2(fds, O_CLOEXEC) < 0)
		return -1;
	/* Bigger pipes mean fewer wakeups; the default is fine if refused. */
	(void)fcntl(fds[1], F_SETPIPE_SZ, PIPE_SIZE);
	int fl = fcntl(fds[0], F_GETFL);
	if (fl < 0 || fcntl(fds[0], F_SETFL, fl | O_NONBLOCK) < 0) {
		close(fds[0]);
		close(fds[1]);
		return -1;
	}
	return 0;
}

/* How the host names this binary, for its helpers (boxlite_ffi/agent/files.py).
 * The box's processes cannot reach /proc/1/exe (we are not dumpable); our
 * spawn, still sharing our memory, reaches it as its own /proc/self/exe. */
#define AGENT_NAME "/proc/1/exe"
#define AGENT_SELF "/proc/self/exe"

/* posix_spawnp searches the PATH of our own environment: use the request's. */
static int use_path_of(const struct bl_exec_request *req)
{
	const char *path = DEFAULT_PATH;
	for (char **v = req->envp; *v; v++)
		if (strncmp(*v, "PATH=", 5) == 0)
			path = *v + 5;
	return setenv("PATH", path, 1) < 0 ? errno : 0;
}

static int spawn_attrs(posix_spawnattr_t *attr)
{
	sigset_t none, pipe_sig;
	sigemptyset(&none);
	sigemptyset(&pipe_sig);
	sigaddset(&pipe_sig, SIGPIPE);
	int rc = posix_spawnattr_init(attr);
	if (rc)
		return rc;
	/* Its own session, so a SIGNAL frame reaches the whole process group;
	 * an empty mask, since ours blocks what signalfd reads; SIGPIPE back
	 * to its default, since we ignore it. */
	if ((rc = posix_spawnattr_setsigmask(attr, &none)) ||
	    (rc = posix_spawnattr_setsigdefault(attr, &pipe_sig)) ||
	    (rc = posix_spawnattr_setflags(attr, POSIX_SPAWN_SETSID | POSIX_SPAWN_SETSIGMASK |
							POSIX_SPAWN_SETSIGDEF)))
		posix_spawnattr_destroy(attr);
	return rc;
}

/* The three pipes of an execution: [0] read end, [1] write end.  With a
 * terminal: out[0] is its master, in[1] a dup of it, slave its path. */
struct stdio_pipes {
	int in[2], out[2], err[2];
	char slave[64];
};

static void close_fd(int *fd)
{
	if (*fd >= 0)
		close(*fd);
	*fd = -1;
}

static void close_pipes(struct stdio_pipes *p)
{
	int *fds[] = {&p->in[0], &p->in[1], &p->out[0], &p->out[1], &p->err[0], &p->err[1]};
	for (size_t i = 0; i < sizeof fds / sizeof fds[0]; i++)
		close_fd(fds[i]);
}

static int open_tty(struct stdio_pipes *p, const struct bl_exec_params *params)
{
	p->in[0] = p->in[1] = p->out[1] = p->err[0] = p->err[1] = -1;
	int err = pty_open(params->rows, params->cols, &p->out[0], p->slave, sizeof p->slave);
	if (err)
		return err;
	if ((p->in[1] = fcntl(p->out[0], F_DUPFD_CLOEXEC, 0)) < 0) {
		err = errno;
		close_fd(&p->out[0]);
	}
	return err;
}

/* A terminal; or output pipes, and a stdin pipe (write end non-blocking) if asked. */
static int open_pipes(struct stdio_pipes *p, const struct bl_exec_params *params)
{
	p->slave[0] = '\0';
	if (params->flags & BL_EXEC_TTY)
		return open_tty(p, params);
	bool with_stdin = params->flags & BL_EXEC_STDIN;
	p->in[0] = p->in[1] = -1;
	if (make_pipe(p->out) < 0)
		return errno;
	if (make_pipe(p->err) < 0) {
		int e = errno;
		close_fd(&p->out[0]);
		close_fd(&p->out[1]);
		return e;
	}
	if (with_stdin && (pipe2(p->in, O_CLOEXEC | O_NONBLOCK) < 0 ||
			   fcntl(p->in[0], F_SETFL, 0) < 0)) { /* the reader blocks */
		int e = errno;
		close_pipes(p);
		return e;
	}
	return 0;
}

/* A terminal (slave: its path) for all three, or in (-1: /dev/null), out, err. */
static int spawn_actions(posix_spawn_file_actions_t *fa, const char *cwd, const char *slave,
			 int in, int out, int err)
{
	int rc = posix_spawn_file_actions_init(fa);
	if (rc)
		return rc;
	if (slave) {
		/* Opened after setsid and without O_NOCTTY: it becomes the
		 * session's controlling terminal, so Ctrl-C and job control work. */
		if ((rc = posix_spawn_file_actions_addopen(fa, 0, slave, O_RDWR, 0)) ||
		    (rc = posix_spawn_file_actions_adddup2(fa, 0, 1)) ||
		    (rc = posix_spawn_file_actions_adddup2(fa, 0, 2)) ||
		    (rc = posix_spawn_file_actions_addchdir_np(fa, cwd)))
			posix_spawn_file_actions_destroy(fa);
		return rc;
	}
	if ((rc = in >= 0 ? posix_spawn_file_actions_adddup2(fa, in, 0)
			  : posix_spawn_file_actions_addopen(fa, 0, "/dev/null", O_RDONLY, 0)) ||
	    (rc = posix_spawn_file_actions_adddup2(fa, out, 1)) ||
	    (rc = posix_spawn_file_actions_adddup2(fa, err, 2)) ||
	    (rc = posix_spawn_file_actions_addchdir_np(fa, cwd)))
		posix_spawn_file_actions_destroy(fa);
	return rc;
}

/*
 * The OOM killer's choice in a box whose memory runs out: its processes
 * before the agent, whose death would end the box (as the second victim
 * of one shortage it was seen to go).  A process inherits the agent's
 * oom_score_adj at the fork; raising it needs no privilege, and the agent
 * may go back down to where it started, so it raises its own for the
 * spawn only (single-threaded: no one spawns meanwhile).  A box process
 * may lower itself to where the agent is again; it then only competes
 * with the agent, inside its own box.  Host processes (at 0, as a rule)
 * also go after box processes.
 */
#define BOX_OOM_SCORE_ADJ 500

static int oom_fd = -2;  /* /proc/self/oom_score_adj; -2: not opened yet, -1: cannot be */
static int agent_oom_adj; /* what the agent started with */

static void set_oom_score_adj(int value)
{
	char text[16];
	int len = snprintf(text, sizeof text, "%d", value);
	if (pwrite(oom_fd, text, (size_t)len, 0) < 0)
		fprintf(stderr, "boxlite-agent: oom_score_adj %d: %s\n", value, strerror(errno));
}

/* Lend a spawn the box's score (lend: true), or take it back. */
static void lend_oom_score(bool lend)
{
	if (oom_fd == -2) {
		char text[16] = "";
		oom_fd = open("/proc/self/oom_score_adj", O_RDWR | O_CLOEXEC);
		if (oom_fd < 0 || pread(oom_fd, text, sizeof text - 1, 0) < 0) {
			fprintf(stderr, "boxlite-agent: oom_score_adj: %s\n", strerror(errno));
			if (oom_fd >= 0)
				close(oom_fd);
			oom_fd = -1;
		}
		agent_oom_adj = atoi(text);
	}
	if (oom_fd >= 0 && agent_oom_adj < BOX_OOM_SCORE_ADJ)
		set_oom_score_adj(lend ? BOX_OOM_SCORE_ADJ : agent_oom_adj);
}

/* glibc's posix_spawn shares our memory until the exec (CLONE_VFORK), which
 * is what makes a warm exec cheap, and reports exec and chdir failures as
 * its return value. */
static int spawn_on(const struct bl_exec_request *req, const char *slave, int in, int out, int err,
		    char *marker, pid_t *pid)
{
	/* The request's environment plus the marker that finds its daemons. */
	char **envp = malloc(((size_t)req->envc + 2) * sizeof *envp);
	if (!envp)
		return ENOMEM;
	memcpy(envp, req->envp, (size_t)req->envc * sizeof *envp);
	envp[req->envc] = marker;
	envp[req->envc + 1] = NULL;
	posix_spawnattr_t attr;
	posix_spawn_file_actions_t fa;
	int rc = use_path_of(req);
	if (!rc && !(rc = spawn_attrs(&attr))) {
		if ((rc = spawn_actions(&fa, req->cwd, slave, in, out, err)) == 0) {
			lend_oom_score(true);
			const char *file = strcmp(req->argv[0], AGENT_NAME) ? req->argv[0] : AGENT_SELF;
			rc = posix_spawnp(pid, file, &fa, &attr, req->argv, envp);
			lend_oom_score(false);
			posix_spawn_file_actions_destroy(&fa);
		}
		posix_spawnattr_destroy(&attr);
	}
	free(envp);
	return rc;
}

int exec_spawn_process(const struct bl_exec_request *req, int in, int out, int err, char *marker,
		       pid_t *pid)
{
	return spawn_on(req, NULL, in, out, err, marker, pid);
}

static struct execution *spawn(struct agent *ag, uint64_t id, const struct bl_exec_request *req,
			       int *err)
{
	struct execution *ex = calloc(1, sizeof *ex);
	if (!ex) {
		*err = ENOMEM;
		return NULL;
	}
	struct stdio_pipes p;
	pid_t pid = 0;
	process_tree_marker(id, ex->marker, sizeof ex->marker);
	*err = open_pipes(&p, &req->params);
	if (!*err)
		*err = spawn_on(req, p.slave[0] ? p.slave : NULL, p.in[0], p.out[1], p.err[1],
				ex->marker, &pid);
	/* The child's ends are the child's alone now. */
	close_fd(&p.in[0]);
	close_fd(&p.out[1]);
	close_fd(&p.err[1]);
	if (*err) {
		close_pipes(&p);
		free(ex);
		return NULL;
	}
	ex->id = id;
	ex->pid = pid;
	if (req->params.timeout_ms) {
		ex->timeout_at_ms = bl_now_ms() + req->params.timeout_ms;
		ex->kill_grace_ms = req->params.kill_grace_ms;
	}
	ex->out = (struct pipe_src){.kind = SRC_PIPE, .ex = ex, .fd = p.out[0],
				    .frame_type = BL_FRAME_STDOUT};
	ex->err = (struct pipe_src){.kind = SRC_PIPE, .ex = ex, .fd = p.err[0],
				    .frame_type = BL_FRAME_STDERR};
	ex->tty = p.slave[0] != '\0';
	bool unlimited = req->params.window == 0 || req->params.window == BL_CREDIT_UNLIMITED;
	ex->out.credit = ex->err.credit = req->params.window;
	ex->out.unlimited = ex->err.unlimited = unlimited;
	ex->with_stdin = p.in[1] >= 0;
	stdin_open(ag, ex, p.in[1], ex->tty);
	return ex;
}

void exec_start(struct agent *ag, struct client *c, uint64_t id, uint8_t *payload, size_t len)
{
	struct bl_exec_request req;
	int rc = bl_exec_decode(payload, len, &req);
	if (rc < 0) {
		exec_refuse(c, id, -rc);
		return;
	}
	int err = 0;
	bool taken = find(ag, id) || find_in(ag->ended, id);
	struct execution *ex = taken ? NULL : spawn(ag, id, &req, &err);
	bl_exec_request_release(&req);
	if (!ex) {
		exec_refuse(c, id, err ? err : EEXIST);
		return;
	}
	ex->host = c;
	rewatch_exec(ag, ex);
	ex->next = ag->execs;
	ag->execs = ex;
	uint32_t pid = (uint32_t)ex->pid;
	exec_send(ex, BL_FRAME_STARTED, &pid, sizeof pid);
	if (ex->timeout_at_ms)
		arm_timer(ag);
}

/* ---- hosts coming and going ---- */

static void unhost(struct agent *ag, struct execution *ex)
{
	ex->host = NULL;
	stdin_forget(ag, ex);
	deliver(ag, ex);
}

void exec_orphan(struct agent *ag, struct client *c)
{
	for (struct execution *ex = ag->ended; ex; ex = ex->next)
		if (ex->host == c)
			ex->host = NULL;
	for (struct execution *ex = ag->execs; ex; ex = ex->next)
		if (ex->host == c)
			unhost(ag, ex);
}

void exec_detach(struct agent *ag, struct client *c, uint64_t id)
{
	struct execution *ex = find_hosted(ag, c, id);
	if (ex)
		unhost(ag, ex);
}

/* Where a replay from offset from can start: the oldest byte still held
 * when from is older, the end when from is past it. */
static uint64_t replay_start(const struct replay *r, uint64_t from)
{
	return from < r->start ? r->start : from > r->end ? r->end : from;
}

static void host_pipe(struct pipe_src *p, uint64_t from, uint32_t window)
{
	p->sent = replay_start(&p->replay, from);
	p->unlimited = window == 0 || window == BL_CREDIT_UNLIMITED;
	p->credit = window;
}

void exec_attach(struct agent *ag, struct client *c, uint64_t id, const uint8_t *payload)
{
	struct bl_attach_request req;
	bl_attach_decode(payload, &req);
	trim_ended(ag);
	struct execution *ex = find(ag, id);
	if (!ex)
		ex = find_in(ag->ended, id);
	struct bl_attached_reply reply = {.error = !ex ? ENOENT : ex->host ? EBUSY : 0};
	if (reply.error == 0) {
		host_pipe(&ex->out, req.from[0], req.window);
		host_pipe(&ex->err, req.from[1], req.window);
		reply.flags = (ex->with_stdin ? BL_ATTACHED_STDIN : 0) |
			      (ex->tty ? BL_ATTACHED_TTY : 0) | (ex->ended_ms ? BL_ATTACHED_ENDED : 0);
		reply.start[0] = ex->out.sent;
		reply.start[1] = ex->err.sent;
	}
	uint8_t body[BL_ATTACHED_SIZE];
	bl_attached_encode(&reply, body);
	client_send(c, BL_FRAME_ATTACHED, id, body, sizeof body);
	if (reply.error == 0) {
		ex->host = c;
		deliver(ag, ex);
	}
}
