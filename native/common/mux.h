/*
 * mux.h - many byte streams over one: the vm engine's virtio-serial port.
 *
 * A virtio-serial port takes one host connection and one guest opener, but
 * a box has many host clients (the runtime that spawned it, others that
 * reattach, file copies beside executions) and the guest has more to say
 * (the main command's logs, its outcome).  The box's supervisor on the host
 * (boxlite-vmm) and the guest's init (boxlite-guest) each run one struct mux
 * over their end of the port; a channel joins a local fd on one side to a
 * local fd on the other.
 *
 * A frame is a 12-byte header, little-endian, then len bytes:
 *	u32 chan, u16 type, u16 flags (0), u32 len
 * Channel data is flow-controlled per channel and direction: a sender has
 * MUX_WINDOW bytes of credit to begin with, spends it on DATA, and gets it
 * back in CREDIT frames as the receiver delivers the bytes to its local fd.
 * A receiver thus never holds more than MUX_WINDOW bytes of one channel, and
 * a client that stops reading stalls its own channel only.
 *
 * Every byte from the other side is hostile (a guest is code the box runs):
 * a frame that breaks these rules ends the mux (mux_run fails), it never
 * makes a side buffer without bound.
 */
#ifndef BOXLITE_MUX_H
#define BOXLITE_MUX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/error.h"
#include "common/protocol.h"

#define MUX_HEADER_SIZE 12u
/* Control payloads carry a main command (an EXEC payload) at most. */
#define MUX_MAX_PAYLOAD (BL_FRAME_MAX_PAYLOAD + 64u)
#define MUX_DATA_CHUNK (64u * 1024u)
#define MUX_WINDOW (512u * 1024u)
/* Port output queued beyond this: channels are not read until it drains. */
#define MUX_OUT_HIGH (1u << 20)

enum mux_type {
	MUX_OPEN = 1,   /* host -> guest, chan: a new client channel, to the agent's socket */
	MUX_DATA = 2,   /* chan: bytes, within the receiver's credit */
	MUX_CREDIT = 3, /* chan: u32, more bytes the receiver takes */
	MUX_CLOSE = 4,  /* chan: the stream ended; what the receiver holds is delivered first */
	/* On MUX_CHAN_CONTROL, supervisor -> guest init. */
	MUX_SPEC = 16, /* the guest shim's argv: NUL-terminated strings */
	MUX_MAIN = 17, /* the main command: an EXEC payload */
	MUX_GO = 18,   /* the description is complete: build the box */
	MUX_STOP = 19, /* stop the box gracefully */
	/* On MUX_CHAN_CONTROL, guest init -> supervisor. */
	MUX_READY = 32,   /* the guest init runs (its first frame) */
	MUX_STATUS = 33,  /* the guest shim's status line */
	MUX_OUTCOME = 34, /* the main command's outcome line */
	MUX_EXIT = 35,    /* u32: the guest shim's exit code; the guest powers off */
};

#define MUX_CHAN_CONTROL 0u
#define MUX_CHAN_PRIMARY 1u /* the spawner's connection: the shim's fd 3 */
#define MUX_CHAN_STDOUT 2u  /* guest -> host: the main command's stdout */
#define MUX_CHAN_STDERR 3u
#define MUX_CHAN_FIRST_CLIENT 16u

struct mux_hdr {
	uint32_t chan;
	uint16_t type, flags;
	uint32_t len;
};

void mux_hdr_put(uint8_t out[MUX_HEADER_SIZE], const struct mux_hdr *h);
void mux_hdr_get(const uint8_t in[MUX_HEADER_SIZE], struct mux_hdr *h);
/* 0, or -1 with e: a header no peer may send (unknown type, flags, size). */
int mux_hdr_check(const struct mux_hdr *h, bl_error *e);

struct mux_chan;

/* What a side does with the frames the mux does not handle itself: control
 * frames and MUX_OPEN.  0, or -1 with e: the peer broke the protocol. */
typedef int (*mux_control_fn)(void *ctx, const struct mux_hdr *h, const uint8_t *payload,
			      bl_error *e);

struct mux {
	int port;
	int epfd; /* the mux's own: the port and the channels' fds; watch it for EPOLLIN */
	struct mux_chan *chans;
	struct mux_chan *dead; /* closed during this mux_run, freed at its end */
	uint8_t *in; /* a header and up to MUX_MAX_PAYLOAD bytes */
	size_t in_have;
	uint8_t *out; /* frames for the port */
	size_t out_len, out_off, out_cap;
	bool out_watched;
	bool port_eof;
	mux_control_fn control;
	void *ctx;
};

/* Run over port (non-blocking, taken over); 0 or -1. */
int mux_init(struct mux *m, int port, mux_control_fn control, void *ctx, bl_error *e);
/* Join channel id to local fds (either may be -1; the same fd twice for a
 * socket), taken over and made non-blocking.  0 or -1. */
int mux_add(struct mux *m, uint32_t id, int rfd, int wfd, bl_error *e);
/* Queue a frame (control, or MUX_OPEN); 0 or -1 (out of memory). */
int mux_send(struct mux *m, uint16_t type, uint32_t chan, const void *payload, size_t len);
/* Move what is ready now.  0; -1 with e when the port is gone or the peer
 * broke the protocol (the mux is then of no more use). */
int mux_run(struct mux *m, bl_error *e);
/* Whether a channel is still open. */
bool mux_has(const struct mux *m, uint32_t id);
/* Whether everything queued for the port was written. */
bool mux_flushed(const struct mux *m);
/* Write what is queued for the port, waiting up to timeout_ms. */
void mux_flush(struct mux *m, int timeout_ms);
void mux_free(struct mux *m);

#endif
