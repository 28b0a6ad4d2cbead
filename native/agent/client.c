/*
 * client.c - host connections.  The box's creator is fd 3; when the shim
 * hands the agent a listening socket, more hosts connect there to attach to
 * executions (another process, or the creator again after a restart).  Each
 * connection has its own FIFO of frames and its own backpressure: a host
 * that reads slowly pauses the pipes of its own executions only.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "agent.h"

#define OUT_HIGH (2u << 20) /* stop reading its pipes above this much unsent */
#define OUT_LOW (512u << 10) /* and resume below this */
#define INBUF_SIZE (BL_FRAME_HEADER_SIZE + BL_FRAME_MAX_PAYLOAD)

void client_send(struct client *c, uint16_t type, uint64_t id, const void *payload, size_t len)
{
	if (!outbuf_send(&c->out, type, id, payload, len))
		agent_die("out of memory queueing a frame");
}

int client_add(struct agent *ag, int fd, bool primary, bl_error *e)
{
	struct client *c = calloc(1, sizeof *c);
	if (!c || !(c->in = malloc(INBUF_SIZE))) {
		free(c);
		return bl_error_errno(e, ENOMEM, "out of memory for a host connection");
	}
	c->kind = SRC_CONN;
	c->fd = fd;
	c->primary = primary;
	if (agent_watch(ag, EPOLL_CTL_ADD, fd, EPOLLIN, c) < 0) {
		int err = errno;
		free(c->in);
		free(c);
		return bl_error_errno(e, err, "epoll_ctl on a host connection");
	}
	c->next = ag->clients;
	ag->clients = c;
	uint32_t version = BL_PROTO_VERSION;
	client_send(c, BL_FRAME_HELLO, 0, &version, sizeof version);
	return 0;
}

int client_accept(struct agent *ag, bl_error *e)
{
	int fd;
	while ((fd = accept4(ag->listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK)) >= 0)
		if (client_add(ag, fd, false, e) < 0) {
			close(fd);
			return -1;
		}
	/* EAGAIN: all taken.  Anything else (EMFILE, a peer that gave up) only
	 * costs that one connection; the listener stays. */
	return 0;
}

static void drop_frames(struct outbuf *o)
{
	while (o->head) {
		struct frame *f = o->head;
		o->head = f->next;
		free(f);
	}
	o->tail = NULL;
	o->bytes = 0;
}

/* The connection ended or broke. */
static void client_close(struct agent *ag, struct client *c)
{
	if (c->gone)
		return;
	if (c->primary && !ag->detached)
		agent_abandon(ag); /* nobody will ever read this box */
	c->gone = true;
	exec_orphan(ag, c);
	epoll_ctl(ag->epfd, EPOLL_CTL_DEL, c->fd, NULL);
	close(c->fd);
	c->fd = -1;
	drop_frames(&c->out);
}

static void on_frame(struct agent *ag, struct client *c, const struct bl_frame_header *h,
		     uint8_t *body)
{
	uint32_t a, b;
	switch (h->type) {
	case BL_FRAME_EXEC:
		if (ag->stopping) /* the box is going away: refuse new work */
			exec_refuse(c, h->id, ESHUTDOWN);
		else
			exec_start(ag, c, h->id, body, h->len);
		break;
	case BL_FRAME_ATTACH:
		if (h->len == BL_ATTACH_SIZE)
			exec_attach(ag, c, h->id, body);
		break;
	case BL_FRAME_DETACH:
		exec_detach(ag, c, h->id);
		break;
	case BL_FRAME_STDIN:
		exec_stdin(ag, c, h->id, body, h->len);
		break;
	case BL_FRAME_STDIN_CLOSE:
		exec_stdin_close(ag, c, h->id);
		break;
	case BL_FRAME_SIGNAL:
	case BL_FRAME_RESIZE:
		if (h->len != 8)
			break;
		memcpy(&a, body, 4);
		memcpy(&b, body + 4, 4); /* the token: 0 means no reply */
		int32_t err;
		if (h->type == BL_FRAME_SIGNAL) {
			err = a >= 1 && a <= 64 ? exec_signal(ag, c, h->id, (int)a) : EINVAL;
		} else {
			uint16_t rows, cols;
			memcpy(&rows, body, 2);
			memcpy(&cols, body + 2, 2);
			err = exec_resize(ag, c, h->id, rows, cols);
		}
		uint8_t reply[8];
		memcpy(reply, &b, 4);
		memcpy(reply + 4, &err, 4);
		if (b)
			client_send(c, BL_FRAME_RESULT, h->id, reply, sizeof reply);
		break;
	case BL_FRAME_CREDIT:
		if (h->len == 8) {
			memcpy(&a, body, 4);
			memcpy(&b, body + 4, 4);
			exec_credit(ag, c, h->id, a, b);
		}
		break;
	default: /* frames from a newer host: ignore */
		break;
	}
}

/* Handle every complete frame in c->in; false on a protocol violation. */
static bool parse_frames(struct agent *ag, struct client *c)
{
	size_t pos = 0;
	while (c->in_have - pos >= BL_FRAME_HEADER_SIZE && !c->gone) {
		struct bl_frame_header h;
		bl_header_decode(c->in + pos, &h);
		if (h.len > BL_FRAME_MAX_PAYLOAD)
			return false;
		if (c->in_have - pos < BL_FRAME_HEADER_SIZE + h.len)
			break;
		on_frame(ag, c, &h, c->in + pos + BL_FRAME_HEADER_SIZE);
		pos += BL_FRAME_HEADER_SIZE + h.len;
	}
	memmove(c->in, c->in + pos, c->in_have - pos);
	c->in_have -= pos;
	return true;
}

static void readable(struct agent *ag, struct client *c)
{
	ssize_t n;
	while ((n = read(c->fd, c->in + c->in_have, INBUF_SIZE - c->in_have)) < 0 && errno == EINTR)
		;
	if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
		return;
	if (n <= 0) {
		client_close(ag, c);
		return;
	}
	c->in_have += (size_t)n;
	if (!parse_frames(ag, c)) {
		fprintf(stderr, "boxlite-agent: protocol violation from a host\n");
		client_close(ag, c);
	}
}

void client_ready(struct agent *ag, struct client *c, uint32_t events)
{
	if (c->gone)
		return;
	if (events & (EPOLLIN | EPOLLHUP | EPOLLERR))
		readable(ag, c);
}

/* Send what c takes; true when its paused state changed. */
static bool flush(struct agent *ag, struct client *c)
{
	int rc = outbuf_flush(&c->out, c->fd);
	if (rc < 0) {
		client_close(ag, c);
		return false;
	}
	bool want = rc == 1;
	if (want != c->writing) {
		c->writing = want;
		if (agent_watch(ag, EPOLL_CTL_MOD, c->fd, EPOLLIN | (want ? EPOLLOUT : 0u), c) < 0)
			agent_die("epoll_ctl on a host connection");
	}
	/* Backpressure: a host that reads slowly stops its pipes being read,
	 * and the processes block in write(). */
	bool pause = c->out.bytes > OUT_HIGH || (c->paused && c->out.bytes > OUT_LOW);
	if (pause == c->paused)
		return false;
	c->paused = pause;
	return true;
}

void client_flush_all(struct agent *ag)
{
	bool changed = false;
	for (struct client *c = ag->clients; c; c = c->next)
		if (!c->gone && flush(ag, c))
			changed = true;
	if (changed)
		exec_rewatch_all(ag);
}

bool client_all_flushed(const struct agent *ag)
{
	for (const struct client *c = ag->clients; c; c = c->next)
		if (!c->gone && c->out.head)
			return false;
	return true;
}

void client_free_gone(struct agent *ag)
{
	for (struct client **p = &ag->clients; *p;) {
		struct client *c = *p;
		if (!c->gone) {
			p = &c->next;
			continue;
		}
		*p = c->next;
		drop_frames(&c->out);
		free(c->in);
		free(c);
	}
}
