/*
 * supervise.c - the shim's life after set-up: wait for the agent to exit,
 * moving the main command's output and the box's messages to their logs
 * meanwhile.
 *
 * SIGTERM (stop the box) is forwarded to the agent, which terminates the
 * box's processes itself; if it is still alive grace + 2 s later, SIGKILL
 * ends the whole pid namespace.  SHIM_KILL_NOW (SIGUSR1: kill the box) sends that SIGKILL
 * at once, and so does the owner's death (a pidfd).  Either way the shim
 * exits only after reaping the agent, which, as the namespace's init, is
 * reaped only once every process in it is gone.
 */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/clock.h"
#include "shim.h"

#define KILL_MARGIN_MS 2000

void signal_agent(int pidfd, int sig)
{
	/* ESRCH: already exiting, the pidfd will report it. */
	if (bl_pidfd_signal(pidfd, sig) < 0 && errno != ESRCH)
		fprintf(stderr, "boxlite-shim: signal %d to the agent: %s\n", sig, strerror(errno));
}

static int signal_fd(void)
{
	sigset_t set;
	shim_signals(&set);
	return signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
}

int reap_agent(int pidfd)
{
	siginfo_t info;
	memset(&info, 0, sizeof info);
	while (waitid(P_PIDFD, (id_t)pidfd, &info, WEXITED) < 0) {
		if (errno != EINTR) {
			fprintf(stderr, "boxlite-shim: waitid: %s\n", strerror(errno));
			return 1;
		}
	}
	return info.si_code == CLD_EXITED && info.si_status == 0 ? 0 : 1;
}

int supervise(struct shim_config *cfg, int agent_pidfd, int owner_pidfd)
{
	int sfd = signal_fd();
	if (sfd < 0) {
		/* Without it a stop could not be graceful; a box must still end. */
		fprintf(stderr, "boxlite-shim: signalfd: %s\n", strerror(errno));
		signal_agent(agent_pidfd, SIGKILL);
		return reap_agent(agent_pidfd);
	}
	int64_t kill_at = -1;
	for (;;) {
		struct pollfd p[6] = {
			{.fd = agent_pidfd, .events = POLLIN},
			{.fd = sfd, .events = POLLIN},
			{.fd = owner_pidfd, .events = POLLIN}, /* -1 is ignored by poll */
			{.fd = cfg->logs[0].pipe_fd, .events = POLLIN},
			{.fd = cfg->logs[1].pipe_fd, .events = POLLIN},
			{.fd = cfg->logs[2].pipe_fd, .events = POLLIN},
		};
		int timeout = -1;
		if (kill_at >= 0)
			timeout = kill_at > bl_now_ms() ? (int)(kill_at - bl_now_ms()) : 0;
		int n = poll(p, 6, timeout);
		if (n < 0 && errno != EINTR) {
			fprintf(stderr, "boxlite-shim: poll: %s\n", strerror(errno));
			signal_agent(agent_pidfd, SIGKILL);
			break;
		}
		if (n > 0 && p[0].revents)
			break;
		for (size_t i = 0; n > 0 && i < 3; i++)
			if (p[3 + i].revents)
				log_pump(&cfg->logs[i]);
		if (n > 0 && p[1].revents) {
			struct signalfd_siginfo si;
			bool kill_now = false;
			while (read(sfd, &si, sizeof si) == (ssize_t)sizeof si)
				kill_now |= si.ssi_signo == SHIM_KILL_NOW;
			if (kill_now) {
				signal_agent(agent_pidfd, SIGKILL);
			} else if (kill_at < 0) {
				signal_agent(agent_pidfd, SIGTERM);
				kill_at = bl_now_ms() + cfg->grace_ms + KILL_MARGIN_MS;
			}
		}
		if (n > 0 && p[2].revents) {
			signal_agent(agent_pidfd, SIGKILL); /* the owner is gone */
			owner_pidfd = -1;
		}
		if (kill_at >= 0 && bl_now_ms() >= kill_at) {
			signal_agent(agent_pidfd, SIGKILL);
			kill_at = -1;
		}
	}
	close(sfd);
	return reap_agent(agent_pidfd);
}
