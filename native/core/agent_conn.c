/* agent_conn.c - frame reader and writer for an agent connection. */
#include "agent_conn.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

struct out_frame {
	struct out_frame *next;
	uint8_t *data;
	size_t len, off;
};

struct bl_conn {
	int fd;
	/* reader */
	uint8_t hdr_buf[BL_FRAME_HEADER_SIZE];
	size_t hdr_got;
	struct bl_frame_header hdr;
	uint8_t *body; /* destination of the current body, NULL between frames */
	size_t body_got;
	uint8_t *scratch; /* BL_FRAME_MAX_PAYLOAD bytes, allocated on first use */
	/* writer */
	struct out_frame *out_head, *out_tail;
};

struct bl_conn *bl_conn_new(int fd)
{
	struct bl_conn *c = calloc(1, sizeof *c);
	if (c)
		c->fd = fd;
	return c;
}

void bl_conn_free(struct bl_conn *c)
{
	if (!c)
		return;
	while (c->out_head) {
		struct out_frame *f = c->out_head;
		c->out_head = f->next;
		free(f->data);
		free(f);
	}
	free(c->scratch);
	close(c->fd);
	free(c);
}

int bl_conn_fd(const struct bl_conn *c) { return c->fd; }

/* read(2) that maps EOF and errors onto connection states; >0 bytes read. */
static ssize_t read_some(int fd, uint8_t *buf, size_t len, enum bl_conn_status *st)
{
	for (;;) {
		ssize_t n = read(fd, buf, len);
		if (n > 0)
			return n;
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			*st = BL_CONN_AGAIN;
		else
			*st = n == 0 ? BL_CONN_CLOSED : BL_CONN_BROKEN;
		return -1;
	}
}

/* Start a body once the header is complete; false on a protocol error. */
static bool begin_body(struct bl_conn *c, const struct bl_conn_handler *h, void *ctx)
{
	bl_header_decode(c->hdr_buf, &c->hdr);
	if (c->hdr.len > BL_FRAME_MAX_PAYLOAD)
		return false;
	c->body = h->body_dest(ctx, &c->hdr);
	if (!c->body) {
		if (!c->scratch && !(c->scratch = malloc(BL_FRAME_MAX_PAYLOAD)))
			return false;
		c->body = c->scratch;
	}
	c->body_got = 0;
	return true;
}

enum bl_conn_status bl_conn_read(struct bl_conn *c, const struct bl_conn_handler *h, void *ctx,
				 size_t budget)
{
	size_t used = 0;
	enum bl_conn_status st = BL_CONN_AGAIN;
	while (used < budget) {
		if (!c->body) {
			ssize_t n = read_some(c->fd, c->hdr_buf + c->hdr_got,
					      BL_FRAME_HEADER_SIZE - c->hdr_got, &st);
			if (n < 0)
				return st;
			c->hdr_got += (size_t)n;
			used += (size_t)n;
			if (c->hdr_got < BL_FRAME_HEADER_SIZE)
				continue;
			if (!begin_body(c, h, ctx))
				return BL_CONN_BROKEN;
		}
		if (c->body_got < c->hdr.len) {
			ssize_t n = read_some(c->fd, c->body + c->body_got, c->hdr.len - c->body_got, &st);
			if (n < 0)
				return st;
			c->body_got += (size_t)n;
			used += (size_t)n;
			if (c->body_got < c->hdr.len)
				continue;
		}
		uint8_t *body = c->body;
		c->body = NULL;
		c->hdr_got = 0;
		if (!h->frame(ctx, &c->hdr, body))
			return BL_CONN_BUSY;
	}
	return BL_CONN_BUSY;
}

int bl_conn_send(struct bl_conn *c, uint8_t *frame, size_t len)
{
	struct out_frame *f = malloc(sizeof *f);
	if (!f) {
		free(frame);
		return -ENOMEM;
	}
	f->next = NULL;
	f->data = frame;
	f->len = len;
	f->off = 0;
	if (c->out_tail)
		c->out_tail->next = f;
	else
		c->out_head = f;
	c->out_tail = f;
	return 0;
}

int bl_conn_flush(struct bl_conn *c)
{
	while (c->out_head) {
		struct out_frame *f = c->out_head;
		/* MSG_NOSIGNAL: a dead agent must not SIGPIPE the host program. */
		ssize_t n = send(c->fd, f->data + f->off, f->len - f->off, MSG_NOSIGNAL);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return 1;
		if (n < 0)
			return -1;
		f->off += (size_t)n;
		if (f->off < f->len)
			continue;
		c->out_head = f->next;
		if (!c->out_head)
			c->out_tail = NULL;
		free(f->data);
		free(f);
	}
	return 0;
}
