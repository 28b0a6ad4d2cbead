/*
 * main.c - boxlite-agent: set-up, the host connection, and the event loop.
 *
 *   boxlite-agent [--drain-ms N] [--grace-ms N] [--listen-fd N] [--detached]
 *                 [--main CMD_FD,STDOUT_FD,STDERR_FD,OUTCOME_FD]
 *
 * fd 3 is the creator's connection; --listen-fd a listening socket where
 * more hosts connect.  SIGTERM means "stop the box": every process gets
 * SIGTERM, then SIGKILL after the grace period; the agent exits once every
 * EXIT is flushed.  The creator closing its connection means the box is
 * abandoned (kill everything, exit at once) unless the box is --detached:
 * then its executions run on, for a host to attach to later.  With --main,
 * the box's main command runs from the start, and its end ends the box.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include "agent.h"
#include "boxlite.h" /* the defaults */

#define CONN_FD 3
#define MAX_EVENTS 64

static enum src_kind listen_src = SRC_LISTEN, signal_src = SRC_SIGNAL, timer_src = SRC_TIMER;

_Noreturn void agent_fail(const bl_error *e)
{
	fprintf(stderr, "boxlite-agent: %s\n", e->msg);
	exit(1);
}

_Noreturn void agent_die(const char *what)
{
	bl_error e;
	bl_error_errno(&e, errno, "%s", what);
	agent_fail(&e);
}

int agent_watch(struct agent *ag, int op, int fd, uint32_t events, void *src)
{
	struct epoll_event ev = {.events = events, .data.ptr = src};
	return epoll_ctl(ag->epfd, op, fd, &ev);
}

void agent_arm_timer(struct agent *ag, int64_t deadline_ms)
{
	if (ag->stopping && (deadline_ms == 0 || ag->kill_at_ms < deadline_ms))
		deadline_ms = ag->kill_at_ms;
	struct itimerspec its = {0};
	if (deadline_ms > 0) {
		int64_t left = deadline_ms - bl_now_ms();
		if (left < 1)
			left = 1; /* 0 would disarm */
		its.it_value.tv_sec = left / 1000;
		its.it_value.tv_nsec = (left % 1000) * 1000000;
	}
	if (timerfd_settime(ag->timerfd, 0, &its, NULL) < 0)
		agent_die("timerfd_settime");
}

/* ---- set-up ---- */

static uint32_t parse_number(const char *s, unsigned long max)
{
	char *end;
	errno = 0;
	unsigned long v = strtoul(s, &end, 10);
	if (errno || end == s || *end || v > max) {
		fprintf(stderr, "boxlite-agent: bad number '%s'\n", s);
		exit(2);
	}
	return (uint32_t)v;
}

static void parse_args(struct agent *ag, int argc, char **argv)
{
	ag->drain_ms = BOXLITE_DEFAULT_DRAIN_MS;
	ag->grace_ms = BOXLITE_DEFAULT_STOP_GRACE_MS;
	ag->listen_fd = -1;
	ag->main.pid = -1; /* none */
	for (int i = 1; i < argc; i++) {
		if (i + 1 < argc && strcmp(argv[i], "--drain-ms") == 0)
			ag->drain_ms = parse_number(argv[++i], 86400000ul);
		else if (i + 1 < argc && strcmp(argv[i], "--grace-ms") == 0)
			ag->grace_ms = parse_number(argv[++i], 86400000ul);
		else if (i + 1 < argc && strcmp(argv[i], "--listen-fd") == 0)
			ag->listen_fd = (int)parse_number(argv[++i], 65535);
		else if (strcmp(argv[i], "--detached") == 0)
			ag->detached = true;
		else if (i + 1 < argc && strcmp(argv[i], "--main") == 0 &&
			 main_command_parse(&ag->main, argv[++i]))
			ag->main.pid = 0; /* to be started */
		else {
			fprintf(stderr, "usage: boxlite-agent [--drain-ms N] [--grace-ms N] "
					"[--listen-fd N] [--detached] [--main R,O,E,X]\n");
			exit(2);
		}
	}
}

/* An inherited fd: ours alone (CLOEXEC), non-blocking. */
static int take_fd(int fd, const char *what, bl_error *e)
{
	int fl = fcntl(fd, F_GETFL);
	if (fcntl(fd, F_SETFD, FD_CLOEXEC) < 0 || fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
		return bl_error_errno(e, errno, "%s", what);
	return 0;
}

static int setup(struct agent *ag, bl_error *e)
{
	/* The connections must never leak into the box's processes. */
	if (take_fd(CONN_FD, "fd 3 (the host connection)", e) < 0 ||
	    (ag->listen_fd >= 0 && take_fd(ag->listen_fd, "the listening socket", e) < 0))
		return -1;
	if (prctl(PR_SET_NAME, "boxlite-agent", 0, 0, 0) < 0)
		return bl_error_errno(e, errno, "prctl(PR_SET_NAME)");
	/* A process closing its stdin is an EPIPE to handle, not our death. */
	if (signal(SIGPIPE, SIG_IGN) == SIG_ERR)
		return bl_error_errno(e, errno, "signal(SIGPIPE)");
	ag->pid1 = getpid() == 1;
	/* Outside a pid namespace (tests), still be the reaper of orphans. */
	if (!ag->pid1 && prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) < 0)
		return bl_error_errno(e, errno, "prctl(PR_SET_CHILD_SUBREAPER)");
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGCHLD);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	if (sigprocmask(SIG_BLOCK, &set, NULL) < 0)
		return bl_error_errno(e, errno, "sigprocmask");
	ag->sigfd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
	ag->timerfd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
	ag->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (ag->sigfd < 0 || ag->timerfd < 0 || ag->epfd < 0)
		return bl_error_errno(e, errno, "signalfd/timerfd/epoll");
	if (agent_watch(ag, EPOLL_CTL_ADD, ag->sigfd, EPOLLIN, &signal_src) < 0 ||
	    agent_watch(ag, EPOLL_CTL_ADD, ag->timerfd, EPOLLIN, &timer_src) < 0 ||
	    (ag->listen_fd >= 0 &&
	     agent_watch(ag, EPOLL_CTL_ADD, ag->listen_fd, EPOLLIN, &listen_src) < 0))
		return bl_error_errno(e, errno, "epoll_ctl");
	return client_add(ag, CONN_FD, true, e);
}

/* ---- stopping ---- */

static void kill_everything(struct agent *ag, int sig)
{
	if (ag->pid1) {
		kill(-1, sig); /* every process in the namespace but us */
		return;
	}
	exec_kill_all(ag, sig);
	if (ag->main.pid > 0)
		kill(-ag->main.pid, sig);
}

static void begin_stop(struct agent *ag)
{
	if (ag->stopping)
		return;
	ag->stopping = true;
	ag->kill_at_ms = bl_now_ms() + ag->grace_ms;
	kill_everything(ag, SIGTERM);
	agent_arm_timer(ag, 0);
}

void agent_end(struct agent *ag)
{
	ag->stopping = true;
	ag->kill_at_ms = bl_now_ms();
	kill_everything(ag, SIGKILL);
	agent_arm_timer(ag, 0);
}

_Noreturn void agent_abandon(struct agent *ag)
{
	kill_everything(ag, SIGKILL);
	exit(0);
}

/* ---- the loop ---- */

/*
 * A stop comes from the shim, outside the box's pid namespace: the kernel
 * gives such a signal si_pid 0, and kill() (pidfd_send_signal) gives it
 * SI_USER, which no process can forge for another (rt_sigqueueinfo wants
 * a negative si_code).  The box's processes reach PID 1 with the signals
 * it reads here (blocked, so the kernel does not drop them as it drops
 * those of its SIG_DFL ones), and must not stop the box with them.
 * SIGCHLD, forged or not, only makes it reap, which is harmless.
 */
static bool from_the_host(const struct agent *ag, const struct signalfd_siginfo *si)
{
	return !ag->pid1 || (si->ssi_pid == 0 && si->ssi_code == SI_USER);
}

static void on_signals(struct agent *ag)
{
	struct signalfd_siginfo si;
	while (read(ag->sigfd, &si, sizeof si) == (ssize_t)sizeof si) {
		if ((si.ssi_signo == SIGTERM || si.ssi_signo == SIGINT) && from_the_host(ag, &si))
			begin_stop(ag);
	}
	exec_reap(ag);
}

static int on_timer(struct agent *ag, bl_error *e)
{
	uint64_t expirations;
	if (read(ag->timerfd, &expirations, sizeof expirations) < 0 && errno != EAGAIN)
		return bl_error_errno(e, errno, "read timerfd");
	if (ag->stopping && bl_now_ms() >= ag->kill_at_ms)
		kill_everything(ag, SIGKILL);
	exec_on_timer(ag);
	return 0;
}

static int dispatch(struct agent *ag, const struct epoll_event *ev, bl_error *e)
{
	enum src_kind kind = *(enum src_kind *)ev->data.ptr;
	switch (kind) {
	case SRC_CONN:
		client_ready(ag, ev->data.ptr, ev->events);
		break;
	case SRC_LISTEN:
		return client_accept(ag, e);
	case SRC_SIGNAL:
		on_signals(ag);
		break;
	case SRC_TIMER:
		return on_timer(ag, e);
	case SRC_PIPE:
		exec_pipe_ready(ag, ev->data.ptr);
		break;
	case SRC_STDIN:
		stdin_ready(ag, ev->data.ptr);
		break;
	}
	return 0;
}

static bool finished(const struct agent *ag)
{
	return ag->stopping && exec_none_left(ag) && client_all_flushed(ag);
}

/* The box's life: its main command, if any, then events until it ends. */
static int run(struct agent *ag, bl_error *e)
{
	if (ag->main.pid == 0 && main_command_start(ag, e) < 0)
		return -1;
	struct epoll_event evs[MAX_EVENTS];
	for (;;) {
		client_flush_all(ag);
		if (finished(ag))
			return 0;
		int n = epoll_wait(ag->epfd, evs, MAX_EVENTS, -1);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return bl_error_errno(e, errno, "epoll_wait");
		for (int i = 0; i < n; i++)
			if (dispatch(ag, &evs[i], e) < 0)
				return -1;
		exec_free_dead(ag);
		client_free_gone(ag);
	}
}

int main(int argc, char **argv)
{
	/*
	 * First: the box's processes (its root included) must not trace us,
	 * read our memory, or take our descriptors (/proc/1/fd, pidfd_getfd):
	 * not dumpable, that takes CAP_SYS_PTRACE in the box's user namespace,
	 * which the box never has (confine.c).  What we spawn shares our
	 * memory, so this, until its exec makes it an ordinary process again.
	 * The helpers below (file copies, as-user until its exec) are box
	 * processes running this binary: not dumpable either, so their
	 * /proc/<pid>/exe, our host file, stays out of the box's reach.
	 */
	bl_error e;
	if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) < 0) {
		bl_error_errno(&e, errno, "prctl(PR_SET_DUMPABLE)");
		agent_fail(&e);
	}
	/* The host runs copies as executions of this very binary. */
	if (argc > 1 && strncmp(argv[1], "copy-", 5) == 0)
		return copy_main(argc, argv);
	if (argc > 1 && strcmp(argv[1], "as-user") == 0)
		return as_user_main(argc, argv);
	struct agent ag = {0};
	parse_args(&ag, argc, argv);
	if (setup(&ag, &e) < 0 || run(&ag, &e) < 0)
		agent_fail(&e);
	/* Orphans may outlive every execution: take them down with the box. */
	kill_everything(&ag, SIGKILL);
	exec_forget_ended(&ag);
	exec_free_dead(&ag);
	for (struct client *c = ag.clients; c; c = c->next)
		c->gone = true;
	client_free_gone(&ag);
	return 0;
}
