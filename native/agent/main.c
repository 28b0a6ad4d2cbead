/*
 * main.c - boxlite-agent: set-up, the host connection, and the event loop.
 *
 *   boxlite-agent [--drain-ms N] [--grace-ms N]      (fd 3: the host connection)
 *
 * SIGTERM means "stop the box": every process gets SIGTERM, then SIGKILL
 * after the grace period; the agent exits once every EXIT is flushed.  The
 * host closing the connection means the box is abandoned: kill everything
 * and exit at once.
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

#define CONN_FD 3
#define OUT_HIGH (2u << 20) /* stop reading pipes above this much unsent */
#define OUT_LOW (512u << 10) /* and resume below this */
#define MAX_EVENTS 64
#define DEFAULT_DRAIN_MS 100
#define DEFAULT_GRACE_MS 10000

static enum src_kind conn_src = SRC_CONN, signal_src = SRC_SIGNAL, timer_src = SRC_TIMER;

/* Frames from the host: a header and up to BL_FRAME_MAX_PAYLOAD bytes. */
static uint8_t inbuf[BL_FRAME_HEADER_SIZE + BL_FRAME_MAX_PAYLOAD];
static size_t in_have;

_Noreturn void agent_die(const char *what)
{
	fprintf(stderr, "boxlite-agent: %s: %s\n", what, strerror(errno));
	exit(1);
}

int64_t agent_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
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
		int64_t left = deadline_ms - agent_now_ms();
		if (left < 1)
			left = 1; /* 0 would disarm */
		its.it_value.tv_sec = left / 1000;
		its.it_value.tv_nsec = (left % 1000) * 1000000;
	}
	if (timerfd_settime(ag->timerfd, 0, &its, NULL) < 0)
		agent_die("timerfd_settime");
}

/* ---- set-up ---- */

static uint32_t parse_ms(const char *s)
{
	char *end;
	errno = 0;
	unsigned long v = strtoul(s, &end, 10);
	if (errno || end == s || *end || v > 86400000ul) {
		fprintf(stderr, "boxlite-agent: bad milliseconds '%s'\n", s);
		exit(2);
	}
	return (uint32_t)v;
}

static void parse_args(struct agent *ag, int argc, char **argv)
{
	ag->drain_ms = DEFAULT_DRAIN_MS;
	ag->grace_ms = DEFAULT_GRACE_MS;
	for (int i = 1; i < argc; i++) {
		if (i + 1 < argc && strcmp(argv[i], "--drain-ms") == 0)
			ag->drain_ms = parse_ms(argv[++i]);
		else if (i + 1 < argc && strcmp(argv[i], "--grace-ms") == 0)
			ag->grace_ms = parse_ms(argv[++i]);
		else {
			fprintf(stderr, "usage: boxlite-agent [--drain-ms N] [--grace-ms N]\n");
			exit(2);
		}
	}
}

static void setup(struct agent *ag)
{
	/* The connection must never leak into the box's processes. */
	if (fcntl(CONN_FD, F_SETFD, FD_CLOEXEC) < 0)
		agent_die("fd 3 (the host connection)");
	int fl = fcntl(CONN_FD, F_GETFL);
	if (fl < 0 || fcntl(CONN_FD, F_SETFL, fl | O_NONBLOCK) < 0)
		agent_die("fcntl on the host connection");
	ag->conn = CONN_FD;
	if (prctl(PR_SET_NAME, "boxlite-agent", 0, 0, 0) < 0)
		agent_die("prctl(PR_SET_NAME)");
	/* A process closing its stdin is an EPIPE to handle, not our death. */
	if (signal(SIGPIPE, SIG_IGN) == SIG_ERR)
		agent_die("signal(SIGPIPE)");
	ag->pid1 = getpid() == 1;
	/* Outside a pid namespace (tests), still be the reaper of orphans. */
	if (!ag->pid1 && prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) < 0)
		agent_die("prctl(PR_SET_CHILD_SUBREAPER)");
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGCHLD);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	if (sigprocmask(SIG_BLOCK, &set, NULL) < 0)
		agent_die("sigprocmask");
	ag->sigfd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
	ag->timerfd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
	ag->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (ag->sigfd < 0 || ag->timerfd < 0 || ag->epfd < 0)
		agent_die("signalfd/timerfd/epoll");
	if (agent_watch(ag, EPOLL_CTL_ADD, ag->conn, EPOLLIN, &conn_src) < 0 ||
	    agent_watch(ag, EPOLL_CTL_ADD, ag->sigfd, EPOLLIN, &signal_src) < 0 ||
	    agent_watch(ag, EPOLL_CTL_ADD, ag->timerfd, EPOLLIN, &timer_src) < 0)
		agent_die("epoll_ctl");
	uint32_t version = BL_PROTO_VERSION;
	if (!outbuf_send(&ag->out, BL_FRAME_HELLO, 0, &version, sizeof version))
		agent_die("out of memory");
}

/* ---- stopping ---- */

static void kill_everything(struct agent *ag, int sig)
{
	if (ag->pid1)
		kill(-1, sig); /* every process in the namespace but us */
	else
		exec_kill_all(ag, sig);
}

static void begin_stop(struct agent *ag)
{
	if (ag->stopping)
		return;
	ag->stopping = true;
	ag->kill_at_ms = agent_now_ms() + ag->grace_ms;
	kill_everything(ag, SIGTERM);
	agent_arm_timer(ag, 0);
}

static _Noreturn void abandon(struct agent *ag)
{
	kill_everything(ag, SIGKILL);
	exit(0);
}

/* ---- the host connection ---- */

static void reply_result(struct agent *ag, uint64_t id, uint32_t token, int32_t err)
{
	uint8_t reply[8];
	memcpy(reply, &token, 4);
	memcpy(reply + 4, &err, 4);
	if (token && !outbuf_send(&ag->out, BL_FRAME_RESULT, id, reply, sizeof reply))
		agent_die("out of memory queueing a result");
}

/* Signal, and tell the host what happened when it asked (token != 0). */
static void on_signal_frame(struct agent *ag, uint64_t id, const uint8_t *body)
{
	uint32_t sig, token;
	memcpy(&sig, body, 4);
	memcpy(&token, body + 4, 4);
	reply_result(ag, id, token, sig >= 1 && sig <= 64 ? exec_signal(ag, id, (int)sig) : EINVAL);
}

static void on_resize_frame(struct agent *ag, uint64_t id, const uint8_t *body)
{
	uint16_t rows, cols;
	uint32_t token;
	memcpy(&rows, body, 2);
	memcpy(&cols, body + 2, 2);
	memcpy(&token, body + 4, 4);
	reply_result(ag, id, token, exec_resize(ag, id, rows, cols));
}

static void on_frame(struct agent *ag, const struct bl_frame_header *h, uint8_t *body)
{
	switch (h->type) {
	case BL_FRAME_EXEC:
		if (ag->stopping) /* the box is going away: refuse new work */
			exec_refuse(ag, h->id, ESHUTDOWN);
		else
			exec_start(ag, h->id, body, h->len);
		break;
	case BL_FRAME_STDIN:
		exec_stdin(ag, h->id, body, h->len);
		break;
	case BL_FRAME_STDIN_CLOSE:
		exec_stdin_close(ag, h->id);
		break;
	case BL_FRAME_SIGNAL:
		if (h->len == 8)
			on_signal_frame(ag, h->id, body);
		break;
	case BL_FRAME_RESIZE:
		if (h->len == 8)
			on_resize_frame(ag, h->id, body);
		break;
	case BL_FRAME_CREDIT:
		if (h->len == 8) {
			uint32_t out, err;
			memcpy(&out, body, 4);
			memcpy(&err, body + 4, 4);
			exec_credit(ag, h->id, out, err);
		}
		break;
	default: /* frames from a newer host: ignore */
		break;
	}
}

/* Parse every complete frame in inbuf; false on a protocol violation. */
static bool parse_frames(struct agent *ag)
{
	size_t pos = 0;
	while (in_have - pos >= BL_FRAME_HEADER_SIZE) {
		struct bl_frame_header h;
		bl_header_decode(inbuf + pos, &h);
		if (h.len > BL_FRAME_MAX_PAYLOAD)
			return false;
		if (in_have - pos < BL_FRAME_HEADER_SIZE + h.len)
			break;
		on_frame(ag, &h, inbuf + pos + BL_FRAME_HEADER_SIZE);
		pos += BL_FRAME_HEADER_SIZE + h.len;
	}
	memmove(inbuf, inbuf + pos, in_have - pos);
	in_have -= pos;
	return true;
}

static void conn_readable(struct agent *ag)
{
	ssize_t n;
	while ((n = read(ag->conn, inbuf + in_have, sizeof inbuf - in_have)) < 0 && errno == EINTR)
		;
	if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
		return;
	if (n <= 0)
		abandon(ag); /* the host is gone: nobody will ever read this box */
	in_have += (size_t)n;
	if (!parse_frames(ag)) {
		fprintf(stderr, "boxlite-agent: protocol violation from the host\n");
		abandon(ag);
	}
}

static void flush(struct agent *ag)
{
	if (ag->conn_broken)
		return;
	int rc = outbuf_flush(&ag->out, ag->conn);
	if (rc < 0) {
		ag->conn_broken = true;
		return;
	}
	bool want = rc == 1;
	if (want != ag->writing) {
		ag->writing = want;
		if (agent_watch(ag, EPOLL_CTL_MOD, ag->conn, EPOLLIN | (want ? EPOLLOUT : 0u),
				&conn_src) < 0)
			agent_die("epoll_ctl on the host connection");
	}
	/* Backpressure: a host that reads slowly stops us reading the pipes,
	 * and the processes block in write(). */
	bool pause = ag->out.bytes > OUT_HIGH || (ag->paused && ag->out.bytes > OUT_LOW);
	if (pause != ag->paused) {
		ag->paused = pause;
		exec_rewatch_all(ag);
	}
}

/* ---- the loop ---- */

static void on_signals(struct agent *ag)
{
	struct signalfd_siginfo si;
	while (read(ag->sigfd, &si, sizeof si) == (ssize_t)sizeof si) {
		if (si.ssi_signo == SIGTERM || si.ssi_signo == SIGINT)
			begin_stop(ag);
	}
	exec_reap(ag);
}

static void on_timer(struct agent *ag)
{
	uint64_t expirations;
	if (read(ag->timerfd, &expirations, sizeof expirations) < 0 && errno != EAGAIN)
		agent_die("read timerfd");
	if (ag->stopping && agent_now_ms() >= ag->kill_at_ms)
		kill_everything(ag, SIGKILL);
	exec_on_timer(ag);
}

static void dispatch(struct agent *ag, const struct epoll_event *ev)
{
	enum src_kind kind = *(enum src_kind *)ev->data.ptr;
	switch (kind) {
	case SRC_CONN:
		if (ev->events & EPOLLOUT)
			flush(ag);
		if (ev->events & (EPOLLIN | EPOLLHUP | EPOLLERR))
			conn_readable(ag);
		break;
	case SRC_SIGNAL:
		on_signals(ag);
		break;
	case SRC_TIMER:
		on_timer(ag);
		break;
	case SRC_PIPE:
		exec_pipe_ready(ag, ev->data.ptr);
		break;
	case SRC_STDIN:
		stdin_ready(ag, ev->data.ptr);
		break;
	}
}

static bool finished(const struct agent *ag)
{
	return ag->stopping && exec_none_left(ag) && (ag->out.head == NULL || ag->conn_broken);
}

int main(int argc, char **argv)
{
	/* The host runs copies as executions of this very binary. */
	if (argc > 1 && strncmp(argv[1], "copy-", 5) == 0)
		return copy_main(argc, argv);
	struct agent ag = {0};
	parse_args(&ag, argc, argv);
	setup(&ag);
	struct epoll_event evs[MAX_EVENTS];
	for (;;) {
		flush(&ag);
		if (finished(&ag))
			break;
		int n = epoll_wait(ag.epfd, evs, MAX_EVENTS, -1);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			agent_die("epoll_wait");
		for (int i = 0; i < n; i++)
			dispatch(&ag, &evs[i]);
		exec_free_dead(&ag);
	}
	/* Orphans may outlive every execution: take them down with the box. */
	kill_everything(&ag, SIGKILL);
	return 0;
}
