/*
 * lifetime.c - what a box's supervisor does for its box directory and its
 * spawner, whichever engine it is (boxlite-shim, boxlite-vmm): the status
 * line, the box's lock, leaving a spawner that must not reap it.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "shim.h"

void status_line(const char *line)
{
	/* A short write: the host stopped listening; our exit tells it the rest. */
	(void)fd_write_full(SHIM_STATUS_FD, line, strlen(line));
	close(SHIM_STATUS_FD);
}

/*
 * One shim per box: a write lock on DIR/lock, held until the shim exits.
 * A POSIX record lock, not flock: F_GETLK tells anyone who holds it, so
 * the lock both refuses a second start and names the shim of a box whose
 * record is out of date.  Never closed, so never dropped early.
 */
int lock_box(const struct shim_config *cfg, bl_error *e)
{
	char p[PATH_MAX];
	if (snprintf(p, sizeof p, "%s/lock", cfg->box_dir) >= (int)sizeof p)
		return bl_error_errno(e, ENAMETOOLONG, "box directory");
	int fd = open(p, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0)
		return bl_error_errno(e, errno, "open %s", p);
	struct flock lk = {.l_type = F_WRLCK, .l_whence = SEEK_SET};
	if (fcntl(fd, F_SETLK, &lk) < 0)
		return bl_error_errno(e, errno == EACCES || errno == EAGAIN ? EBUSY : errno,
				      "the box is running already (its lock is held)");
	return 0;
}

/* --detached: continue in a child that the spawner never has to reap.  The
 * parent stays until the status line is written (release_fd closes), so a
 * spawner that kills it during set-up takes the set-up down with it.
 * Returns release_fd, or -1. */
int detach_from_spawner(bl_error *e)
{
	int release[2];
	if (pipe2(release, O_CLOEXEC) < 0)
		return bl_error_errno(e, errno, "pipe2");
	pid_t pid = fork();
	if (pid < 0)
		return bl_error_errno(e, errno, "fork");
	if (pid > 0) {
		close(release[1]);
		char c;
		while (read(release[0], &c, 1) < 0 && errno == EINTR)
			;
		_exit(0);
	}
	close(release[0]);
	if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) < 0 || getppid() == 1)
		return bl_error_errno(e, errno, "follow the spawner");
	return release[1];
}

/* DIR/agent.sock, listening, CLOEXEC (the child dup2s it for the agent). */
int listen_agent_socket(const struct shim_config *cfg, bl_error *e)
{
	struct sockaddr_un addr = {.sun_family = AF_UNIX};
	if (snprintf(addr.sun_path, sizeof addr.sun_path, "%s/" SHIM_AGENT_SOCKET, cfg->box_dir) >=
	    (int)sizeof addr.sun_path)
		return bl_error_errno(e, ENAMETOOLONG,
				      "the box directory is too long for a unix socket path");
	if (unlink(addr.sun_path) < 0 && errno != ENOENT) /* left by an earlier run */
		return bl_error_errno(e, errno, "unlink %s", addr.sun_path);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return bl_error_errno(e, errno, "socket");
	if (bind(fd, (struct sockaddr *)&addr, sizeof addr) < 0 || listen(fd, 64) < 0) {
		int err = errno;
		close(fd);
		return bl_error_errno(e, err, "listen on %s", addr.sun_path);
	}
	return fd;
}

/* The signals a supervisor acts on (shim.h). */
void shim_signals(sigset_t *set)
{
	sigemptyset(set);
	sigaddset(set, SIGTERM);
	sigaddset(set, SIGINT);
	sigaddset(set, SIGHUP);
	sigaddset(set, SHIM_KILL_NOW);
}
