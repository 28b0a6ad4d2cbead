/* outbuf.c - the FIFO of frames waiting to be sent to the host. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "agent.h"

struct frame *frame_new(size_t cap)
{
	struct frame *f = malloc(sizeof *f + BL_FRAME_HEADER_SIZE + cap);
	if (f) {
		f->next = NULL;
		f->len = f->off = 0;
	}
	return f;
}

void frame_seal(struct frame *f, uint16_t type, uint64_t id, size_t len)
{
	struct bl_frame_header h = {.len = (uint32_t)len, .type = type, .id = id};
	bl_header_encode(&h, f->data);
	f->len = BL_FRAME_HEADER_SIZE + len;
}

void outbuf_push(struct outbuf *o, struct frame *f)
{
	f->next = NULL;
	if (o->tail)
		o->tail->next = f;
	else
		o->head = f;
	o->tail = f;
	o->bytes += f->len;
}

bool outbuf_send(struct outbuf *o, uint16_t type, uint64_t id, const void *payload, size_t len)
{
	struct frame *f = frame_new(len);
	if (!f)
		return false;
	if (len)
		memcpy(f->data + BL_FRAME_HEADER_SIZE, payload, len);
	frame_seal(f, type, id, len);
	outbuf_push(o, f);
	return true;
}

int outbuf_flush(struct outbuf *o, int fd)
{
	while (o->head) {
		struct frame *f = o->head;
		/* MSG_NOSIGNAL: a vanished host is an error to handle, not a death. */
		ssize_t n = send(fd, f->data + f->off, f->len - f->off, MSG_NOSIGNAL);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return errno == EAGAIN || errno == EWOULDBLOCK ? 1 : -1;
		f->off += (size_t)n;
		o->bytes -= (size_t)n;
		if (f->off < f->len)
			continue;
		o->head = f->next;
		if (!o->head)
			o->tail = NULL;
		free(f);
	}
	return 0;
}
