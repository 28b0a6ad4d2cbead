/*
 * stdin_feed.c - bytes from the host into a process's stdin.
 *
 * STDIN frames queue here and are written as the pipe takes them; every
 * write is acknowledged to the host (STDIN_ACK with the byte count), which is
 * how a host write learns it has been taken: backpressure end to end, with
 * the pipe as the only buffer that matters.  When the reader goes away, what
 * is pending is dropped and the host is told once (STDIN_CLOSED).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "agent.h"

struct in_chunk {
	struct in_chunk *next;
	size_t len, off;
	uint8_t data[];
};

static void drop_pending(struct stdin_feed *in)
{
	while (in->head) {
		struct in_chunk *c = in->head;
		in->head = c->next;
		free(c);
	}
	in->tail = NULL;
}

static void close_feed(struct agent *ag, struct stdin_feed *in)
{
	if (in->fd >= 0) {
		epoll_ctl(ag->epfd, EPOLL_CTL_DEL, in->fd, NULL);
		close(in->fd);
		in->fd = -1;
	}
	drop_pending(in);
}

static void broken(struct agent *ag, struct execution *ex)
{
	close_feed(ag, &ex->in);
	exec_send(ex, BL_FRAME_STDIN_CLOSED, NULL, 0);
}

static void watch_writable(struct agent *ag, struct stdin_feed *in, bool want)
{
	if (want == in->watching)
		return;
	in->watching = want;
	if (agent_watch(ag, EPOLL_CTL_MOD, in->fd, want ? EPOLLOUT : 0, in) < 0)
		agent_die("epoll_ctl on a stdin pipe");
}

/* Write what the pipe takes now; acknowledge it; close when asked and done. */
static void pump(struct agent *ag, struct execution *ex)
{
	struct stdin_feed *in = &ex->in;
	uint32_t taken = 0;
	while (in->head) {
		struct in_chunk *c = in->head;
		ssize_t n = write(in->fd, c->data + c->off, c->len - c->off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			break;
		if (n < 0) { /* EPIPE: the reader is gone (SIGPIPE is ignored) */
			if (taken)
				exec_send(ex, BL_FRAME_STDIN_ACK, &taken, sizeof taken);
			broken(ag, ex);
			return;
		}
		taken += (uint32_t)n;
		c->off += (size_t)n;
		if (c->off == c->len) {
			in->head = c->next;
			if (!in->head)
				in->tail = NULL;
			free(c);
		}
	}
	if (taken)
		exec_send(ex, BL_FRAME_STDIN_ACK, &taken, sizeof taken);
	if (!in->head && in->close_requested)
		close_feed(ag, in);
	else
		watch_writable(ag, in, in->head != NULL);
}

void stdin_open(struct agent *ag, struct execution *ex, int fd, bool tty)
{
	ex->in = (struct stdin_feed){.kind = SRC_STDIN, .ex = ex, .fd = fd, .tty = tty};
	/* Registered idle: an error (the reader closing) is reported anyway. */
	if (fd >= 0 && agent_watch(ag, EPOLL_CTL_ADD, fd, 0, &ex->in) < 0)
		agent_die("epoll_ctl on a new stdin pipe");
}

void stdin_data(struct agent *ag, struct execution *ex, const uint8_t *data, size_t len)
{
	struct stdin_feed *in = &ex->in;
	if (in->fd < 0 || in->close_requested) {
		exec_send(ex, BL_FRAME_STDIN_CLOSED, NULL, 0);
		return;
	}
	if (len == 0)
		return;
	struct in_chunk *c = malloc(sizeof *c + len);
	if (!c)
		agent_die("out of memory queueing stdin");
	c->next = NULL;
	c->len = len;
	c->off = 0;
	memcpy(c->data, data, len);
	if (in->tail)
		in->tail->next = c;
	else
		in->head = c;
	in->tail = c;
	pump(ag, ex);
}

void stdin_request_close(struct agent *ag, struct execution *ex)
{
	if (ex->in.fd < 0 || ex->in.close_requested)
		return;
	if (ex->in.tty) {
		/* A terminal has no end: its reader takes VEOF (^D) as one. */
		static const uint8_t veof = 4;
		stdin_data(ag, ex, &veof, 1);
	}
	ex->in.close_requested = true;
	pump(ag, ex);
}

void stdin_ready(struct agent *ag, void *src)
{
	struct stdin_feed *in = src;
	if (in->fd >= 0)
		pump(ag, in->ex);
}

void stdin_release(struct agent *ag, struct execution *ex)
{
	close_feed(ag, &ex->in);
}

void stdin_forget(struct agent *ag, struct execution *ex)
{
	drop_pending(&ex->in);
	if (ex->in.fd < 0)
		return;
	if (ex->in.close_requested)
		close_feed(ag, &ex->in); /* the EOF its host asked for still happens */
	else
		watch_writable(ag, &ex->in, false);
}
