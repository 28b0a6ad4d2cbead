/*
 * engine_ns.c - start a box with the Linux-namespaces engine: spawn
 * boxlite-shim, hand it one end of a socketpair (which becomes the agent's
 * connection), and wait for its one-line status report.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/pidfd.h"
#include "core/core.h"

/* A box set-up is milliseconds natively, but seconds under emulation. */
#define STATUS_TIMEOUT_MS 60000
#define STATUS_MAX 512
/* fds the shim receives: 3 = agent connection, 4 = status pipe, 5 = the
 * main command (with --main). */
#define SHIM_FD_CONN 3
#define SHIM_FD_STATUS 4
#define SHIM_FD_MAIN 5
#define FIRST_FREE_FD 6

static void set_err(char *err, size_t errlen, const char *what, int e)
{
	snprintf(err, errlen, "%s: %s", what, strerror(e));
}

/* Move fd to >= FIRST_FREE_FD, so the shim's dup2 targets never alias it. */
static int high_fd(int fd)
{
	int h = fcntl(fd, F_DUPFD_CLOEXEC, FIRST_FREE_FD);
	int e = errno;
	close(fd);
	errno = e;
	return h;
}

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
static int main_memfd(const struct bl_box *box, char *err, size_t errlen)
{
	int fd = (int)syscall(SYS_memfd_create, "boxlite-main", MFD_CLOEXEC);
	size_t off = 0;
	while (fd >= 0 && off < box->main_len) {
		ssize_t n = write(fd, box->main_req + off, box->main_len - off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			close(fd);
			fd = -1;
			break;
		}
		off += (size_t)n;
	}
	if (fd < 0 || (fd = high_fd(fd)) < 0)
		set_err(err, errlen, "the main command (memfd)", errno ? errno : EIO);
	return fd;
}

static int open_fds(const struct bl_box *box, struct spawn_fds *f, char *err, size_t errlen)
{
	f->conn[0] = f->conn[1] = f->status[0] = f->status[1] = f->log = f->main = -1;
	if (box->main_req && (f->main = main_memfd(box, err, errlen)) < 0)
		return -1;
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, f->conn) < 0) {
		set_err(err, errlen, "socketpair", errno);
		return -1;
	}
	if (pipe2(f->status, O_CLOEXEC) < 0) {
		set_err(err, errlen, "pipe2", errno);
		return -1;
	}
	char path[4096];
	if (snprintf(path, sizeof path, "%s/shim.log", box->dir) >= (int)sizeof path) {
		snprintf(err, errlen, "box directory path too long");
		return -1;
	}
	f->log = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
	if (f->log < 0) {
		set_err(err, errlen, path, errno);
		return -1;
	}
	if ((f->conn[1] = high_fd(f->conn[1])) < 0 || (f->status[1] = high_fd(f->status[1])) < 0 ||
	    (f->log = high_fd(f->log)) < 0) {
		set_err(err, errlen, "fcntl", errno);
		return -1;
	}
	return 0;
}

/* argv for the shim; numbers live in the caller's buffers. */
static char **build_argv(const boxlite_runtime *rt, const struct bl_box *box, char nums[8][24])
{
	size_t n_lowers = 0;
	while (box->lowers[n_lowers])
		n_lowers++;
	char **argv = calloc(38 + 2 * n_lowers + 3 * (size_t)box->n_mounts, sizeof(char *));
	if (!argv)
		return NULL;
	size_t i = 0;
	argv[i++] = rt->shim_path;
	argv[i++] = "--box-dir";
	argv[i++] = box->dir;
	argv[i++] = "--agent";
	argv[i++] = rt->agent_path;
	for (size_t l = 0; l < n_lowers; l++) {
		argv[i++] = "--lower";
		argv[i++] = box->lowers[l];
	}
	for (uint32_t m = 0; m < box->n_mounts; m++) {
		argv[i++] = box->mounts[m].readonly ? "--bind-ro" : "--bind";
		argv[i++] = box->mounts[m].source;
		argv[i++] = box->mounts[m].target;
	}
	snprintf(nums[0], 24, "%u", box->grace_ms);
	snprintf(nums[1], 24, "%u", box->drain_ms);
	snprintf(nums[2], 24, "%d", (int)box->owner_pid);
	if (box->detached)
		argv[i++] = "--detached";
	if (box->main_req)
		argv[i++] = "--main";
	argv[i++] = "--hostname";
	argv[i++] = box->hostname;
	argv[i++] = "--grace-ms";
	argv[i++] = nums[0];
	argv[i++] = "--drain-ms";
	argv[i++] = nums[1];
	argv[i++] = "--owner-pid";
	argv[i++] = nums[2];
	if (box->main_req) {
		snprintf(nums[6], 24, "%" PRIu64, box->log_limit);
		argv[i++] = "--log-limit";
		argv[i++] = nums[6];
	}
	snprintf(nums[7], 24, "%" PRIu64, box->tmp_size);
	argv[i++] = "--tmp-size";
	argv[i++] = nums[7];
	if (box->disk_image) {
		argv[i++] = "--disk-image";
		argv[i++] = box->disk_image;
	}
	if (box->network_helper) {
		argv[i++] = "--network";
		argv[i++] = box->network_helper;
		if (box->host_loopback)
			argv[i++] = "--host-loopback";
	}
	static const char *const limit_flags[] = {"--memory", "--pids", "--cpu-millis"};
	const uint64_t limits[] = {box->memory_limit, box->pids_limit, box->cpu_millis};
	for (size_t l = 0; l < 3; l++) {
		if (!limits[l])
			continue;
		snprintf(nums[3 + l], 24, "%" PRIu64, limits[l]);
		argv[i++] = (char *)limit_flags[l];
		argv[i++] = nums[3 + l];
	}
	if (box->pids_optional)
		argv[i++] = "--pids-optional";
	argv[i] = NULL;
	return argv;
}

static int file_actions(posix_spawn_file_actions_t *fa, const struct spawn_fds *f)
{
	int rc = posix_spawn_file_actions_init(fa);
	if (rc)
		return rc;
	if ((rc = posix_spawn_file_actions_addopen(fa, 0, "/dev/null", O_RDONLY, 0)) ||
	    (rc = posix_spawn_file_actions_adddup2(fa, f->log, 1)) ||
	    (rc = posix_spawn_file_actions_adddup2(fa, f->log, 2)) ||
	    (rc = posix_spawn_file_actions_adddup2(fa, f->conn[1], SHIM_FD_CONN)) ||
	    (rc = posix_spawn_file_actions_adddup2(fa, f->status[1], SHIM_FD_STATUS)) ||
	    (f->main >= 0 && (rc = posix_spawn_file_actions_adddup2(fa, f->main, SHIM_FD_MAIN))) ||
	    /* The embedding program's own inheritable fds stay out of the box. */
	    /* Without a main command fd 5 is not ours either. */
	    (rc = posix_spawn_file_actions_addclosefrom_np(fa, f->main >= 0 ? FIRST_FREE_FD
									      : SHIM_FD_MAIN)))
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

static int spawn_shim(const boxlite_runtime *rt, const struct bl_box *box, struct spawn_fds *f,
		      pid_t *pid, char *err, size_t errlen)
{
	char nums[8][24];
	char **argv = build_argv(rt, box, nums);
	if (!argv) {
		set_err(err, errlen, "spawn", ENOMEM);
		return -1;
	}
	posix_spawn_file_actions_t fa;
	posix_spawnattr_t attr;
	int rc = file_actions(&fa, f);
	if (rc == 0) {
		rc = spawn_attrs(&attr);
		if (rc == 0) {
			char *envp[] = {NULL};
			rc = posix_spawn(pid, rt->shim_path, &fa, &attr, argv, envp);
			posix_spawnattr_destroy(&attr);
		}
		posix_spawn_file_actions_destroy(&fa);
	}
	free(argv);
	if (rc) {
		set_err(err, errlen, rt->shim_path, rc);
		return -1;
	}
	return 0;
}

/* Wait until fd is readable, the runtime closes, or the deadline passes.
 * Returns 1 when readable, else -1 with err set. */
static int wait_readable(int fd, int closing_fd, int64_t deadline, char *err, size_t errlen)
{
	for (;;) {
		int64_t left = deadline - bl_now_ms();
		if (left <= 0) {
			snprintf(err, errlen, "box set-up timed out");
			return -1;
		}
		struct pollfd p[2] = {{.fd = fd, .events = POLLIN}, {.fd = closing_fd, .events = POLLIN}};
		int n = poll(p, 2, (int)left);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			set_err(err, errlen, "poll", errno);
			return -1;
		}
		if (p[1].revents) {
			snprintf(err, errlen, "runtime closed");
			return -1;
		}
		if (p[0].revents)
			return 1;
	}
}

/* Read the shim's status line.  Returns bytes read (line NUL-terminated), or
 * -1 on timeout, close or error with err set. */
static int read_status(int fd, int closing_fd, char *line, size_t cap, char *err, size_t errlen)
{
	size_t got = 0;
	int64_t deadline = bl_now_ms() + STATUS_TIMEOUT_MS;
	while (got < cap - 1 && !memchr(line, '\n', got)) {
		if (wait_readable(fd, closing_fd, deadline, err, errlen) < 0)
			return -1;
		ssize_t r = read(fd, line + got, cap - 1 - got);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			set_err(err, errlen, "read status", errno);
			return -1;
		}
		if (r == 0)
			break;
		got += (size_t)r;
	}
	line[got] = '\0';
	return (int)got;
}

/* "ok <shim pid>" -> 0; "error <errno> <message>" -> -1 with the message. */
static int parse_status(char *line, pid_t *shim, char *err, size_t errlen)
{
	char *nl = strchr(line, '\n');
	if (nl)
		*nl = '\0';
	int pid;
	if (sscanf(line, "ok %d", &pid) == 1 && pid > 0) {
		*shim = pid;
		return 0;
	}
	int e;
	int off = 0;
	if (sscanf(line, "error %d %n", &e, &off) == 1 && off > 0)
		snprintf(err, errlen, "%s", line + off);
	else
		snprintf(err, errlen, "box set-up failed: %s", line[0] ? line : "shim exited early");
	return -1;
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
static int follow_detached(int *pidfd, pid_t shim, char *err, size_t errlen)
{
	int shim_fd = bl_pidfd_open(shim);
	if (shim_fd < 0) {
		set_err(err, errlen, "pidfd_open (detached shim)", errno);
		return -1;
	}
	siginfo_t info;
	while (waitid(P_PIDFD, (id_t)*pidfd, &info, WEXITED) < 0 && errno == EINTR)
		;
	close(*pidfd);
	*pidfd = shim_fd;
	return 0;
}

int bl_engine_ns_spawn(const boxlite_runtime *rt, const struct bl_box *box, struct bl_spawned *out,
		       char *err, size_t errlen)
{
	struct spawn_fds f;
	pid_t pid;
	if (open_fds(box, &f, err, errlen) < 0 || spawn_shim(rt, box, &f, &pid, err, errlen) < 0) {
		close_fds(&f);
		return BOXLITE_ERR_ENGINE;
	}
	close_fd(&f.conn[1]);
	close_fd(&f.status[1]);
	close_fd(&f.log);
	close_fd(&f.main);
	/* Our unreaped child: its pid cannot be reused, so this is race-free. */
	int pidfd = bl_pidfd_open(pid);
	if (pidfd < 0) {
		set_err(err, errlen, "pidfd_open", errno);
		kill(pid, SIGKILL);
		while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
			;
		close_fds(&f);
		return BOXLITE_ERR_ENGINE;
	}
	char line[STATUS_MAX];
	pid_t shim = 0;
	if (read_status(f.status[0], rt->closing_fd, line, sizeof line, err, errlen) < 0 ||
	    parse_status(line, &shim, err, errlen) < 0 ||
	    (shim != pid && follow_detached(&pidfd, shim, err, errlen) < 0)) {
		kill_and_reap(pidfd);
		close(pidfd);
		close_fds(&f);
		return BOXLITE_ERR_ENGINE;
	}
	close_fd(&f.status[0]);
	out->pid = shim;
	out->pidfd = pidfd;
	out->conn_fd = f.conn[0];
	return BOXLITE_OK;
}

void bl_engine_ns_abandon(struct bl_spawned *sp)
{
	kill_and_reap(sp->pidfd);
	close(sp->pidfd);
	close(sp->conn_fd);
}
