/*
 * network.c - a vm box's outbound network: passt, a user-mode TCP/IP stack
 * that turns the guest NIC's frames into sockets of its own (it drops to
 * nobody and sandboxes itself).  QEMU has no network of the host's (a
 * namespace of its own): only this socket.  The guest gets the namespace
 * engine's layout (guest/guest.h: 10.0.2.100, gateway 10.0.2.2, DNS
 * forwarded at 10.0.2.3); the gateway is not the host's loopback unless
 * the box may reach it (--host-loopback).
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "guest/guest.h"
#include "vmm.h"

extern char **environ;

int vm_network_start(const struct shim_spec *s, int messages, pid_t *pid, int *qemu_end, bl_error *e)
{
	*pid = -1;
	*qemu_end = -1;
	if (!s->network)
		return 0;
	int sp[2];
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp) < 0)
		return bl_error_errno(e, errno, "socketpair");
	char fd[16], mtu[16];
	snprintf(fd, sizeof fd, "%d", 3);
	snprintf(mtu, sizeof mtu, "%d", GUEST_NET_MTU);
	char *argv[24] = {(char *)s->network, "--foreground", "--quiet", "--one-off", "--ipv4-only",
			  "--fd", fd, "--address", GUEST_NET_ADDR, "--netmask", GUEST_NET_MASK,
			  "--gateway", GUEST_NET_GATEWAY, "--dns-forward", GUEST_NET_DNS, "--mtu", mtu};
	size_t argc = 17;
	if (!s->host_loopback)
		argv[argc++] = "--no-map-gw";
	posix_spawn_file_actions_t fa;
	int err = posix_spawn_file_actions_init(&fa);
	if (!err && !(err = posix_spawn_file_actions_adddup2(&fa, messages, 1)) &&
	    !(err = posix_spawn_file_actions_adddup2(&fa, messages, 2)) &&
	    !(err = posix_spawn_file_actions_adddup2(&fa, sp[1], 3)))
		err = posix_spawn(pid, s->network, &fa, NULL, argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	close(sp[1]);
	if (err) {
		close(sp[0]);
		*pid = -1;
		return bl_error_errno(e, err, "start the network helper %s", s->network);
	}
	*qemu_end = sp[0];
	return 0;
}

void vm_network_reap(pid_t pid)
{
	if (pid <= 0)
		return;
	/* QEMU's end is closed: passt (--one-off) is on its way out. */
	for (int i = 0; i < 200; i++) {
		pid_t got = waitpid(pid, NULL, WNOHANG);
		if (got == pid || (got < 0 && errno != EINTR))
			return;
		usleep(10000);
	}
	kill(pid, SIGKILL);
	while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
		;
}
