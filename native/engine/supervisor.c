/*
 * supervisor.c - what the engines share (engine.h): a box's supervisor
 * (boxlite-shim, boxlite-vmm) is spawned with the shim's command line and
 * fds (common/shim_spec.h): one end of a socketpair that becomes the
 * agent's connection, the status pipe whose one line says how the set-up
 * went, the main command's memfd.  Other runtimes reach the agent on
 * DIR/agent.sock.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/fdio.h"
#include "common/pidfd.h"
#include "common/shim_spec.h"
#include "engine/engine.h"

#define STATUS_MAX 512

/* Above the shim's fixed fds, so its dup2 targets never alias it. */
static int high_fd(int fd) { return fd_move_above(fd, SHIM_FIRST_FREE_FD); }

struct spawn_fds {
	int conn[2];   /* [0] ours, [1] the shim's */
	int status[2]; /* [0] ours, [1] the shim's */
	int log;
	int main; /* a memfd holding the main command, or -1 */
};

static void close_fd(int *fd)
{
	if (*fd >= 0)
		close(*fd);
	*fd = -1;
}

static void close_fds(struct spawn_fds *f)
{
	close_fd(&f->conn[0]);
	close_fd(&f->conn[1]);
	close_fd(&f->status[0]);
	close_fd(&f->status[1]);
	close_fd(&f->log);
	close_fd(&f->main);
}

/* The main command in a sealed-off memfd, read by the agent (pread). */
static int main_memfd(const struct bl_box_spec *box, bl_error *e)
{
	int fd = fd_memfd("boxlite-main", box->main_req, box->main_len);
	if (fd < 0 || (fd = high_fd(fd)) < 0)
		bl_error_errno(e, errno, "the main command (memfd)");
	return fd;
}

static int open_fds(const struct bl_box_spec *box, struct spawn_fds *f, bl_error *e)
{
	f->conn[0] = f->conn[1] = f->status[0] = f->status[1] = f->log = f->main = -1;
	if (box->main_req && (f->main = main_memfd(box, e)) < 0)
		return -1;
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, f->conn) < 0)
		return bl_error_errno(e, errno, "socketpair");
	if (pipe2(f->status, O_CLOEXEC) < 0)
		return bl_error_errno(e, errno, "pipe2");
	char path[4096];
	if (snprintf(path, sizeof path, "%s/" SHIM_LOG_FILE, box->dir) >= (int)sizeof path)
		return bl_error_set(e, 0, "box directory path too long");
	f->log = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
	if (f->log < 0)
		return bl_error_errno(e, errno, "%s", path);
	if ((f->conn[1] = high_fd(f->conn[1])) < 0 || (f->status[1] = high_fd(f->status[1])) < 0 ||
	    (f->log = high_fd(f->log)) < 0)
		return bl_error_errno(e, errno, "fcntl");
	return 0;
}

void bl_supervisor_spec_of(const struct bl_box_spec *box, struct shim_spec *s)
{
	shim_spec_defaults(s);
	s->box_dir = box->dir;
	for (char **l = box->lowers; *l && s->n_lowers < SHIM_MAX_LOWERS; l++)
		s->lowers[s->n_lowers++] = *l;
	for (uint32_t m = 0; m < box->n_mounts && m < SHIM_MAX_BINDS; m++)
		s->binds[s->n_binds++] = (struct shim_bind){
		    box->mounts[m].source, box->mounts[m].target, box->mounts[m].readonly};
	s->hostname = box->hostname;
	s->grace_ms = box->grace_ms;
	s->drain_ms = box->drain_ms;
	s->owner_pid = box->owner_pid;
	s->detached = box->detached;
	s->main = box->main_req != NULL;
	s->log_limit = box->main_req ? box->log_limit : 0;
	s->tmp_size = box->tmp_size;
	s->disk_image = box->disk_image;
	s->network = box->network_helper;
	s->host_loopback = box->host_loopback;
	s->vm = (struct shim_vm){box->vm.qemu,       box->vm.kernel,   box->vm.initrd,
				 box->vm.root_image, box->vm.accel,    box->vm.ready_ms,
				 box->vm.kernel_args};
	s->limits = (struct shim_limits){box->memory_limit, box->pids_limit, box->cpu_millis,
					 box->pids_optional};
}

int bl_supervisor_check(const struct bl_box_spec *box, bl_error *e)
{
	size_t n_lowers = 0;
	while (box->lowers[n_lowers])
		n_lowers++;
	if (n_lowers > SHIM_MAX_LOWERS)
		return bl_error_set(e, EINVAL, "more than %d image layers", SHIM_MAX_LOWERS);
	if (box->n_mounts > SHIM_MAX_BINDS)
		return bl_error_set(e, EINVAL, "more than %d mounts", SHIM_MAX_BINDS);
	struct shim_spec s;
	bl_supervisor_spec_of(box, &s);
	return shim_spec_check(&s, e);
}

static int file_actions(posix_spawn_file_actions_t *fa, const struct spawn_fds *f)
{
	int rc = posix_spawn_file_actions_init(fa);
	if (rc)
		return rc;
	if ((rc = posix_spawn_file_actions_addopen(fa, 0, "/dev/null", O_RDONLY, 0)) ||
	    (rc = posix_spawn_file_actions_adddup2(fa, f->log, 1)) ||
	    (rc = posix_spawn_file_actions_adddup2(fa, f->log, 2)) ||
	    (rc = posix_spawn_file_actions_adddup2(fa, f->conn[1], SHIM_CONN_FD)) ||
	    (rc = posix_spawn_file_actions_adddup2(fa, f->status[1], SHIM_STATUS_FD)) ||
	    (f->main >= 0 && (rc = posix_spawn_file_actions_adddup2(fa, f->main, SHIM_MAIN_FD))) ||
	    /* The embedding program's own inheritable fds stay out of the box. */
	    /* Without a main command fd 5 is not ours either. */
	    (rc = posix_spawn_file_actions_addclosefrom_np(fa, f->main >= 0 ? SHIM_FIRST_FREE_FD
									      : SHIM_MAIN_FD)))
		posix_spawn_file_actions_destroy(fa);
	return rc;
}

/* Default dispositions and an empty mask: the host program may ignore or
 * block signals (Python ignores SIGPIPE), and both survive exec.  Own
 * session: a terminal's Ctrl-C reaches the host program, which decides. */
static int spawn_attrs(posix_spawnattr_t *attr)
{
	sigset_t all, none;
	sigfillset(&all);
	sigemptyset(&none);
	int rc = posix_spawnattr_init(attr);
	if (rc)
		return rc;
	if ((rc = posix_spawnattr_setsigdefault(attr, &all)) ||
	    (rc = posix_spawnattr_setsigmask(attr, &none)) ||
	    (rc = posix_spawnattr_setflags(attr, POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK |
							POSIX_SPAWN_SETSID)))
		posix_spawnattr_destroy(attr);
	return rc;
}

static int spawn_supervisor(const struct bl_engine_host *host, const char *exe,
			    const struct shim_spec *spec, struct spawn_fds *f, pid_t *pid, bl_error *e)
{
	char shim[PATH_MAX];
	if (snprintf(shim, sizeof shim, "%s/%s", host->libexec_dir, exe) >= (int)sizeof shim)
		return bl_error_errno(e, ENAMETOOLONG, "%s", host->libexec_dir);
	struct shim_nums nums;
	char **argv = calloc(shim_spec_argc(spec) + 1, sizeof(char *));
	if (!argv)
		return bl_error_errno(e, ENOMEM, "spawn");
	shim_spec_argv(spec, shim, &nums, argv);
	posix_spawn_file_actions_t fa;
	posix_spawnattr_t attr;
	int rc = file_actions(&fa, f);
	if (rc == 0) {
		rc = spawn_attrs(&attr);
		if (rc == 0) {
			char *envp[] = {NULL};
			rc = posix_spawn(pid, shim, &fa, &attr, argv, envp);
			posix_spawnattr_destroy(&attr);
		}
		posix_spawn_file_actions_destroy(&fa);
	}
	free(argv);
	if (rc)
		return bl_error_errno(e, rc, "%s", shim);
	return 0;
}

/* Wait until fd is readable, the runtime closes, or the deadline passes.
 * Returns 1 when readable, else -1 with e set. */
static int wait_readable(int fd, int closing_fd, int64_t deadline, bl_error *e)
{
	for (;;) {
		int64_t left = deadline - bl_now_ms();
		if (left <= 0)
			return bl_error_set(e, 0, "box set-up timed out");
		struct pollfd p[2] = {{.fd = fd, .events = POLLIN}, {.fd = closing_fd, .events = POLLIN}};
		int n = poll(p, 2, (int)left);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return bl_error_errno(e, errno, "poll");
		if (p[1].revents)
			return bl_error_set(e, 0, "runtime closed");
		if (p[0].revents)
			return 1;
	}
}

/* Read the shim's status line.  Returns bytes read (line NUL-terminated), or
 * -1 on timeout, close or error with e set. */
static int read_status(int fd, int closing_fd, uint32_t timeout_ms, char *line, size_t cap,
		       bl_error *e)
{
	size_t got = 0;
	int64_t deadline = bl_now_ms() + timeout_ms;
	while (got < cap - 1 && !memchr(line, '\n', got)) {
		if (wait_readable(fd, closing_fd, deadline, e) < 0)
			return -1;
		ssize_t r = read(fd, line + got, cap - 1 - got);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return bl_error_errno(e, errno, "read status");
		if (r == 0)
			break;
		got += (size_t)r;
	}
	line[got] = '\0';
	return (int)got;
}

static void kill_and_reap(int pidfd)
{
	if (bl_pidfd_signal(pidfd, SIGKILL) < 0 && errno != ESRCH)
		return; /* cannot signal: do not wait forever either */
	siginfo_t info;
	int rc;
	while ((rc = waitid(P_PIDFD, (id_t)pidfd, &info, WEXITED)) < 0 && errno == EINTR)
		;
	if (rc < 0 && errno == ECHILD) { /* a detached shim: wait for its exit all the same */
		struct pollfd p = {.fd = pidfd, .events = POLLIN};
		while (poll(&p, 1, -1) < 0 && errno == EINTR)
			;
	}
}

/* A detached shim left the process we spawned, which exits now: reap that
 * one, and watch the shim itself (not our child: its exit is seen through
 * the pidfd, and someone else reaps it). */
static int follow_detached(int *pidfd, pid_t shim, bl_error *e)
{
	int shim_fd = bl_pidfd_open(shim);
	if (shim_fd < 0)
		return bl_error_errno(e, errno, "pidfd_open (detached shim)");
	siginfo_t info;
	while (waitid(P_PIDFD, (id_t)*pidfd, &info, WEXITED) < 0 && errno == EINTR)
		;
	close(*pidfd);
	*pidfd = shim_fd;
	return 0;
}

int bl_supervisor_spawn(const struct bl_engine_host *host, const struct bl_box_spec *box,
			const char *exe, uint32_t timeout_ms, struct bl_spawned *out, bl_error *e)
{
	char agent[PATH_MAX];
	if (snprintf(agent, sizeof agent, "%s/boxlite-agent", host->libexec_dir) >= (int)sizeof agent)
		return bl_error_errno(e, ENAMETOOLONG, "%s", host->libexec_dir);
	struct shim_spec spec;
	bl_supervisor_spec_of(box, &spec);
	spec.agent = agent; /* the box's init (ns); a vm's guest has its own */
	struct spawn_fds f;
	pid_t pid;
	if (open_fds(box, &f, e) < 0 || spawn_supervisor(host, exe, &spec, &f, &pid, e) < 0) {
		close_fds(&f);
		return -1;
	}
	close_fd(&f.conn[1]);
	close_fd(&f.status[1]);
	close_fd(&f.log);
	close_fd(&f.main);
	/* Our unreaped child: its pid cannot be reused, so this is race-free. */
	int pidfd = bl_pidfd_open(pid);
	if (pidfd < 0) {
		bl_error_errno(e, errno, "pidfd_open");
		kill(pid, SIGKILL);
		while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
			;
		close_fds(&f);
		return -1;
	}
	char line[STATUS_MAX];
	pid_t shim = 0;
	if (read_status(f.status[0], host->closing_fd, timeout_ms, line, sizeof line, e) < 0 ||
	    shim_status_parse(line, &shim, e) < 0 ||
	    (shim != pid && follow_detached(&pidfd, shim, e) < 0)) {
		kill_and_reap(pidfd);
		close(pidfd);
		close_fds(&f);
		return -1;
	}
	close_fd(&f.status[0]);
	out->pid = shim;
	out->pidfd = pidfd;
	out->conn_fd = f.conn[0];
	return 0;
}

void bl_supervisor_abandon(struct bl_spawned *sp)
{
	kill_and_reap(sp->pidfd);
	close(sp->pidfd);
	close(sp->conn_fd);
}

int bl_supervisor_signal(int pidfd, enum bl_engine_signal how)
{
	return bl_pidfd_signal(pidfd, how == BL_ENGINE_KILL ? SHIM_KILL_NOW : SIGTERM);
}

/* The agent listens on DIR/agent.sock (ns: the agent itself; vm: the
 * supervisor, for the agent in its guest). */
int bl_supervisor_connect(const struct bl_box_spec *box, int pidfd, bl_error *e)
{
	(void)pidfd; /* the socket is the box's own: no need to ask the shim */
	struct sockaddr_un addr = {.sun_family = AF_UNIX};
	if (snprintf(addr.sun_path, sizeof addr.sun_path, "%s/" SHIM_AGENT_SOCKET, box->dir) >=
	    (int)sizeof addr.sun_path)
		return bl_error_errno(e, ENAMETOOLONG, "%s/" SHIM_AGENT_SOCKET, box->dir);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return bl_error_errno(e, errno, "socket");
	if (connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0) {
		bl_error_errno(e, errno, "connect %s", addr.sun_path);
		close(fd);
		return -1;
	}
	return fd;
}
