/*
 * executions.c - the processes the host asked for: spawn them, pump their
 * pipes into output frames, reap them, and report each one's single EXIT.
 *
 * An execution ends when its main process has been reaped AND both pipes
 * reached EOF - or when the drain window after the reap has passed (a
 * background grandchild may hold the pipes open forever): then whatever is
 * already in the pipes is read and the pipes are closed.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
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

struct pipe_src {
	enum src_kind kind; /* SRC_PIPE; first, so the loop can tell sources apart */
	struct execution *ex;
	int fd;            /* read end, -1 once closed */
	uint16_t frame_type; /* BL_FRAME_STDOUT or BL_FRAME_STDERR */
};

struct execution {
	struct execution *next;
	uint64_t id;
	pid_t pid;
	struct pipe_src out, err;
	bool reaped;
	int status;
	int64_t drain_deadline_ms;
};

/* ---- lookup and teardown ---- */

static struct execution *find(struct agent *ag, uint64_t id)
{
	for (struct execution *ex = ag->execs; ex; ex = ex->next)
		if (ex->id == id)
			return ex;
	return NULL;
}

static void close_pipe(struct agent *ag, struct pipe_src *p)
{
	if (p->fd < 0)
		return;
	epoll_ctl(ag->epfd, EPOLL_CTL_DEL, p->fd, NULL); /* close would too; be explicit */
	close(p->fd);
	p->fd = -1;
}

static void send_exit(struct agent *ag, uint64_t id, uint32_t outcome, int code, int sig, int err)
{
	struct bl_exit_payload e = {.outcome = outcome, .code = code, .signal = sig, .error = err};
	uint8_t payload[16];
	bl_exit_encode(&e, payload);
	if (!outbuf_send(&ag->out, BL_FRAME_EXIT, id, payload, sizeof payload))
		agent_die("out of memory queueing an EXIT");
}

/* Report and forget ex if it is done. */
static void maybe_finish(struct agent *ag, struct execution *ex)
{
	if (!ex->reaped || ex->out.fd >= 0 || ex->err.fd >= 0)
		return;
	if (WIFSIGNALED(ex->status))
		send_exit(ag, ex->id, BL_WIRE_SIGNALED, 0, WTERMSIG(ex->status), 0);
	else
		send_exit(ag, ex->id, BL_WIRE_EXITED, WEXITSTATUS(ex->status), 0, 0);
	for (struct execution **p = &ag->execs; *p; p = &(*p)->next) {
		if (*p == ex) {
			*p = ex->next;
			break;
		}
	}
	/* Events of the current epoll batch may still name it. */
	ex->next = ag->dead;
	ag->dead = ex;
}

void exec_free_dead(struct agent *ag)
{
	while (ag->dead) {
		struct execution *ex = ag->dead;
		ag->dead = ex->next;
		free(ex);
	}
}

void exec_refuse(struct agent *ag, uint64_t id, int err)
{
	send_exit(ag, id, BL_WIRE_FAILED_TO_START, 0, 0, err);
}

/* ---- output ---- */

/* Read one chunk straight into a new frame: 1 data, 0 EOF, -1 nothing now. */
static int read_chunk(struct agent *ag, struct pipe_src *p)
{
	struct frame *f = frame_new(BL_FRAME_DATA_CHUNK);
	if (!f)
		agent_die("out of memory reading output");
	ssize_t n;
	while ((n = read(p->fd, f->data + BL_FRAME_HEADER_SIZE, BL_FRAME_DATA_CHUNK)) < 0 &&
	       errno == EINTR)
		;
	if (n <= 0) {
		bool again = n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
		free(f);
		/* EAGAIN: drained for now.  Other errors end the stream like EOF. */
		return again ? -1 : 0;
	}
	/* Give back what a short read left unused. */
	if ((size_t)n < BL_FRAME_DATA_CHUNK / 2) {
		struct frame *small = realloc(f, sizeof *f + BL_FRAME_HEADER_SIZE + (size_t)n);
		if (small)
			f = small;
	}
	frame_seal(f, p->frame_type, p->ex->id, (size_t)n);
	outbuf_push(&ag->out, f);
	return 1;
}

void exec_pipe_ready(struct agent *ag, void *src)
{
	struct pipe_src *p = src;
	if (p->fd < 0)
		return; /* closed earlier in this epoll batch */
	int r = read_chunk(ag, p);
	if (r == 0) {
		close_pipe(ag, p);
		maybe_finish(ag, p->ex);
	}
}

/* The drain window is over: take what the pipe holds now, then close it. */
static void final_read(struct agent *ag, struct pipe_src *p)
{
	size_t before = ag->out.bytes;
	while (p->fd >= 0 && ag->out.bytes - before < FINAL_READ_MAX && read_chunk(ag, p) > 0)
		;
	close_pipe(ag, p);
}

void exec_pause_all(struct agent *ag, bool paused)
{
	for (struct execution *ex = ag->execs; ex; ex = ex->next) {
		struct pipe_src *ps[2] = {&ex->out, &ex->err};
		for (int i = 0; i < 2; i++)
			if (ps[i]->fd >= 0 &&
			    agent_watch(ag, EPOLL_CTL_MOD, ps[i]->fd, paused ? 0 : EPOLLIN, ps[i]) < 0)
				agent_die("epoll_ctl on a pipe");
	}
}

/* ---- reaping and the drain window ---- */

static void arm_drain_timer(struct agent *ag)
{
	int64_t next = 0;
	for (struct execution *ex = ag->execs; ex; ex = ex->next)
		if (ex->reaped && (next == 0 || ex->drain_deadline_ms < next))
			next = ex->drain_deadline_ms;
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
		if (!ex)
			continue; /* an orphan that PID 1 inherited */
		ex->reaped = true;
		ex->status = status;
		ex->drain_deadline_ms = agent_now_ms() + ag->drain_ms;
		maybe_finish(ag, ex);
	}
	arm_drain_timer(ag);
}

void exec_drain_timer(struct agent *ag)
{
	int64_t now = agent_now_ms();
	struct execution *ex = ag->execs;
	while (ex) {
		struct execution *next = ex->next;
		if (ex->reaped && ex->drain_deadline_ms <= now) {
			final_read(ag, &ex->out);
			final_read(ag, &ex->err);
			maybe_finish(ag, ex);
		}
		ex = next;
	}
	arm_drain_timer(ag);
}

bool exec_none_left(const struct agent *ag) { return ag->execs == NULL; }

void exec_kill_all(struct agent *ag, int sig)
{
	for (struct execution *ex = ag->execs; ex; ex = ex->next)
		kill(-ex->pid, sig);
}

void exec_signal(struct agent *ag, uint64_t id, int sig)
{
	struct execution *ex = find(ag, id);
	/* Its session id stays reserved while any member lives: no reuse race. */
	if (ex)
		kill(-ex->pid, sig);
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
	sigset_t none;
	sigemptyset(&none);
	int rc = posix_spawnattr_init(attr);
	if (rc)
		return rc;
	/* Its own session, so a SIGNAL frame reaches the whole process group;
	 * an empty mask, since ours blocks what signalfd reads. */
	if ((rc = posix_spawnattr_setsigmask(attr, &none)) ||
	    (rc = posix_spawnattr_setflags(attr, POSIX_SPAWN_SETSID | POSIX_SPAWN_SETSIGMASK)))
		posix_spawnattr_destroy(attr);
	return rc;
}

static int spawn_actions(posix_spawn_file_actions_t *fa, const char *cwd, int out, int err)
{
	int rc = posix_spawn_file_actions_init(fa);
	if (rc)
		return rc;
	if ((rc = posix_spawn_file_actions_addopen(fa, 0, "/dev/null", O_RDONLY, 0)) ||
	    (rc = posix_spawn_file_actions_adddup2(fa, out, 1)) ||
	    (rc = posix_spawn_file_actions_adddup2(fa, err, 2)) ||
	    (rc = posix_spawn_file_actions_addchdir_np(fa, cwd)))
		posix_spawn_file_actions_destroy(fa);
	return rc;
}

/* glibc's posix_spawn shares our memory until the exec (CLONE_VFORK), which
 * is what makes a warm exec cheap, and reports exec and chdir failures as
 * its return value. */
static int spawn_process(const struct bl_exec_request *req, int out, int err, pid_t *pid)
{
	posix_spawnattr_t attr;
	posix_spawn_file_actions_t fa;
	int rc = use_path_of(req);
	if (rc || (rc = spawn_attrs(&attr)))
		return rc;
	if ((rc = spawn_actions(&fa, req->cwd, out, err)) == 0) {
		rc = posix_spawnp(pid, req->argv[0], &fa, &attr, req->argv, req->envp);
		posix_spawn_file_actions_destroy(&fa);
	}
	posix_spawnattr_destroy(&attr);
	return rc;
}

static struct execution *spawn(uint64_t id, const struct bl_exec_request *req, int *err)
{
	int out[2], errp[2];
	struct execution *ex = calloc(1, sizeof *ex);
	if (!ex) {
		*err = ENOMEM;
		return NULL;
	}
	if (make_pipe(out) < 0) {
		*err = errno;
		free(ex);
		return NULL;
	}
	if (make_pipe(errp) < 0) {
		*err = errno;
		close(out[0]);
		close(out[1]);
		free(ex);
		return NULL;
	}
	pid_t pid = 0;
	*err = spawn_process(req, out[1], errp[1], &pid);
	close(out[1]);
	close(errp[1]);
	if (*err) {
		close(out[0]);
		close(errp[0]);
		free(ex);
		return NULL;
	}
	ex->id = id;
	ex->pid = pid;
	ex->out = (struct pipe_src){SRC_PIPE, ex, out[0], BL_FRAME_STDOUT};
	ex->err = (struct pipe_src){SRC_PIPE, ex, errp[0], BL_FRAME_STDERR};
	return ex;
}

void exec_start(struct agent *ag, uint64_t id, uint8_t *payload, size_t len)
{
	struct bl_exec_request req;
	int rc = bl_exec_decode(payload, len, &req);
	if (rc < 0) {
		exec_refuse(ag, id, -rc);
		return;
	}
	int err = 0;
	struct execution *ex = find(ag, id) ? NULL : spawn(id, &req, &err);
	bl_exec_request_release(&req);
	if (!ex) {
		exec_refuse(ag, id, err ? err : EEXIST);
		return;
	}
	uint32_t events = ag->paused ? 0 : EPOLLIN;
	if (agent_watch(ag, EPOLL_CTL_ADD, ex->out.fd, events, &ex->out) < 0 ||
	    agent_watch(ag, EPOLL_CTL_ADD, ex->err.fd, events, &ex->err) < 0)
		agent_die("epoll_ctl on a new pipe");
	ex->next = ag->execs;
	ag->execs = ex;
	uint32_t pid = (uint32_t)ex->pid;
	if (!outbuf_send(&ag->out, BL_FRAME_STARTED, id, &pid, sizeof pid))
		agent_die("out of memory queueing STARTED");
}
