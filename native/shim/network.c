/*
 * network.c - opt-in outbound network for a box: slirp4netns, a user-mode
 * TCP/IP stack, gives the box's network namespace a tap0 (10.0.2.100/24,
 * gateway 10.0.2.2, DNS 10.0.2.3) and carries its traffic through sockets
 * of the shim's own user.  The host's loopback stays out of reach unless
 * asked for (--disable-host-loopback otherwise).
 *
 * The helper is the shim's child: it is started before the box is released
 * (its network is up when the first process runs), it exits when the shim's
 * end of its exit pipe closes (the shim's exit, however it comes), and the
 * shim reaps it after the box.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <spawn.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "shim.h"

extern char **environ;

#define READY_TIMEOUT_MS 10000

static int wait_ready(int fd)
{
	struct pollfd p = {.fd = fd, .events = POLLIN};
	int n;
	while ((n = poll(&p, 1, READY_TIMEOUT_MS)) < 0 && errno == EINTR)
		;
	if (n == 0)
		return ETIMEDOUT;
	char c;
	return n > 0 && read(fd, &c, 1) == 1 ? 0 : EPIPE; /* EOF: it died first */
}

int network_start(struct shim_config *cfg, pid_t child, bl_error *e)
{
	if (!cfg->network)
		return 0;
	int ready[2], exit_pipe[2];
	if (pipe2(ready, O_CLOEXEC) < 0)
		return bl_error_errno(e, errno, "make the network helper's pipes");
	if (pipe2(exit_pipe, O_CLOEXEC) < 0) {
		int err = errno;
		close(ready[0]);
		close(ready[1]);
		return bl_error_errno(e, err, "make the network helper's pipes");
	}
	/* The helper keeps the ready pipe's write end and the exit pipe's read
	 * end, as its fds 3 and 4. */
	char pid[16];
	snprintf(pid, sizeof pid, "%d", (int)child);
	/* Its own system call filter and, as root, sandbox (a mount namespace,
	 * no capabilities but binding low ports): it parses what the box sends. */
	char userns[48];
	snprintf(userns, sizeof userns, "--userns-path=/proc/%d/ns/user", (int)child);
	char *argv[12] = {(char *)cfg->network, "--configure", "--mtu=65520", "--ready-fd=3",
			  "--exit-fd=4", "--enable-seccomp", userns};
	size_t argc = 7;
	if (geteuid() == 0) /* its mount namespace needs privilege an unprivileged user lacks */
		argv[argc++] = "--enable-sandbox";
	if (!cfg->host_loopback)
		argv[argc++] = "--disable-host-loopback";
	argv[argc++] = pid;
	argv[argc++] = "tap0";
	posix_spawn_file_actions_t fa;
	int err = posix_spawn_file_actions_init(&fa);
	/* Its messages go to shim.log through the pipe, bounded like the agent's. */
	if (!err && !(err = posix_spawn_file_actions_adddup2(&fa, cfg->messages_fd, 1)) &&
	    !(err = posix_spawn_file_actions_adddup2(&fa, cfg->messages_fd, 2)) &&
	    !(err = posix_spawn_file_actions_adddup2(&fa, ready[1], 3)) &&
	    !(err = posix_spawn_file_actions_adddup2(&fa, exit_pipe[0], 4)))
		err = posix_spawn(&cfg->network_pid, cfg->network, &fa, NULL, argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	close(ready[1]);
	close(exit_pipe[0]);
	if (err) {
		close(exit_pipe[1]);
		close(ready[0]);
		return bl_error_errno(e, err, "start the network helper");
	}
	cfg->network_exit_fd = exit_pipe[1];
	err = wait_ready(ready[0]);
	close(ready[0]);
	if (err == EPIPE)
		return bl_error_errno(e, err, "slirp4netns gave up before the box's network was up"
					      " (its reason is in shim.log)");
	return err ? bl_error_errno(e, err, "bring the box's network up") : 0;
}

void network_stop(struct shim_config *cfg)
{
	if (cfg->network_pid <= 0)
		return;
	close(cfg->network_exit_fd); /* its signal to exit */
	while (waitpid(cfg->network_pid, NULL, 0) < 0 && errno == EINTR)
		;
	cfg->network_pid = 0;
}
