/*
 * agent_conn.h - frame I/O on one non-blocking agent connection: a reader
 * state machine that lets the owner choose where each frame body lands (an
 * output event's own buffer, so data is copied once from the socket), and a
 * write buffer for frames to the agent.  Single-threaded (the reactor's).
 */
#ifndef BOXLITE_AGENT_CONN_H
#define BOXLITE_AGENT_CONN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/protocol.h"

struct bl_conn;

struct bl_conn_handler {
	/* Where the body of a frame with this header goes, or NULL to use the
	 * connection's own buffer (for control frames or discarded data). */
	uint8_t *(*body_dest)(void *ctx, const struct bl_frame_header *h);
	/* A whole frame arrived.  Returns false to stop reading for now. */
	bool (*frame)(void *ctx, const struct bl_frame_header *h, uint8_t *body);
};

enum bl_conn_status { BL_CONN_AGAIN, BL_CONN_BUSY, BL_CONN_CLOSED, BL_CONN_BROKEN };

struct bl_conn *bl_conn_new(int fd);
/* Close the fd and free buffers. */
void bl_conn_free(struct bl_conn *c);
int bl_conn_fd(const struct bl_conn *c);

/*
 * Read and dispatch frames until the socket would block (AGAIN), budget bytes
 * were read or the handler asked to pause (BUSY: call again), the peer closed
 * (CLOSED) or broke the protocol / failed (BROKEN).
 */
enum bl_conn_status bl_conn_read(struct bl_conn *c, const struct bl_conn_handler *h, void *ctx,
				 size_t budget);

/* Queue a whole frame for writing.  Takes ownership of frame whatever the
 * result: on -ENOMEM it is already freed. */
int bl_conn_send(struct bl_conn *c, uint8_t *frame, size_t len);
/* Write what the socket takes.  Returns 0 when everything is written, 1 when
 * some remains (wait for writability), -1 when the peer is gone. */
int bl_conn_flush(struct bl_conn *c);

#endif
