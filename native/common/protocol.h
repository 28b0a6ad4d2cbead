/*
 * protocol.h - the framed, multiplexed byte-stream protocol spoken between the
 * host runtime and boxlite-agent (PID 1 inside a box).
 *
 * Every message is one frame: a fixed 16-byte header followed by `len` payload
 * bytes.  Integers are in host byte order: both ends always run on the same
 * kernel (the vm engine's virtio port will pin little-endian, which is what
 * every supported host is).  Frames of one execution travel on one ordered
 * stream, so "Exit comes after every stream event" holds by construction: the
 * agent queues EXIT behind the execution's last output frame.
 */
#ifndef BOXLITE_PROTOCOL_H
#define BOXLITE_PROTOCOL_H

#include <stddef.h>
#include <stdint.h>

#define BL_PROTO_VERSION 2u
#define BL_FRAME_HEADER_SIZE 16u
/* Upper bound on one frame's payload; a peer announcing more is broken. */
#define BL_FRAME_MAX_PAYLOAD (1u << 20)
/* How much output the agent packs into one data frame. */
#define BL_FRAME_DATA_CHUNK (256u * 1024u)

enum bl_frame_type {
	/* host -> agent */
	BL_FRAME_EXEC = 1,        /* id: exec id; payload: bl_exec_request encoding */
	BL_FRAME_SIGNAL = 2,      /* id: exec id; payload: u32 signal, u32 token (0: no reply) */
	BL_FRAME_STDIN = 3,       /* id: exec id; payload: bytes for its stdin */
	BL_FRAME_STDIN_CLOSE = 4, /* id: exec id; no payload: EOF after what was sent */
	BL_FRAME_RESIZE = 5,      /* id: exec id; payload: u16 rows, u16 cols, u32 token */
	BL_FRAME_CREDIT = 6,      /* id: exec id; payload: u32 more stdout bytes it may send,
				   * u32 more stderr bytes (BL_CREDIT_UNLIMITED: stop counting) */
	BL_FRAME_ATTACH = 7,      /* id: exec id; payload: bl_attach_request: become the
				   * host of a running or recently ended execution */
	BL_FRAME_DETACH = 8,      /* id: exec id; no payload: stop being its host (it runs
				   * on, its output goes to the replay buffer only) */
	/* agent -> host */
	BL_FRAME_HELLO = 64,      /* id: 0; payload: u32 protocol version */
	BL_FRAME_STARTED = 65,    /* id: exec id; payload: u32 pid (in the box) */
	BL_FRAME_STDOUT = 66,     /* id: exec id; payload: raw bytes */
	BL_FRAME_STDERR = 67,     /* id: exec id; payload: raw bytes */
	BL_FRAME_EXIT = 68,       /* id: exec id; payload: bl_exit_payload */
	BL_FRAME_STDIN_ACK = 69,  /* id: exec id; payload: u32 stdin bytes now in its pipe */
	BL_FRAME_STDIN_CLOSED = 70, /* id: exec id; no payload: its stdin is gone, the
				     * bytes not yet acknowledged were dropped */
	BL_FRAME_RESULT = 71,     /* id: exec id; payload: u32 token, i32 errno (0: done);
				   * answers a SIGNAL or RESIZE that carried a token */
	BL_FRAME_ATTACHED = 72,   /* id: exec id; payload: bl_attached_reply, then the
				   * replayed output, then (if it ended) its EXIT */
};

struct bl_frame_header {
	uint32_t len;   /* payload bytes that follow the header */
	uint16_t type;  /* enum bl_frame_type */
	uint16_t flags; /* reserved, 0 */
	uint64_t id;    /* execution id, 0 for box-level frames */
};

/* Outcome of one execution as the agent saw it (wire values). */
enum bl_wire_outcome {
	BL_WIRE_EXITED = 1,          /* code valid */
	BL_WIRE_SIGNALED = 2,        /* signal valid */
	BL_WIRE_FAILED_TO_START = 3, /* error = errno of the failed exec/chdir/fork */
	BL_WIRE_TIMED_OUT = 4,       /* its timeout ended it; signal = the last one sent */
};

/*
 * Output flow control, per stream: each of an execution's stdout and stderr
 * starts with a window of bytes the agent may send; the host returns bytes
 * with CREDIT frames as its consumer takes them.  With no credit left the
 * agent stops reading that pipe, so its writers block in write(), like a
 * pipe nobody reads, and nothing else is held up.
 */
#define BL_CREDIT_UNLIMITED UINT32_MAX

/*
 * Reattaching.  Executions belong to the box, not to a connection: any
 * connection may ATTACH to one that has no host (its host's connection
 * ended), or that ended recently.  The agent keeps the last
 * BL_REPLAY_MAX bytes of each stream, so the new host receives the output
 * from the offset it asks for (its cursor: bytes of that stream it already
 * has), or from the oldest byte still kept, then live output.
 */
#define BL_REPLAY_MAX (1u << 20)
#define BL_ATTACH_SIZE 24u
#define BL_ATTACHED_SIZE 24u

struct bl_attach_request {
	uint64_t from[2]; /* stdout, stderr offsets to replay from */
	uint32_t window;  /* as in EXEC: replayed bytes count against it */
	uint32_t reserved;
};

/* ATTACHED flags: what the execution has, whether it already ended. */
#define BL_ATTACHED_STDIN 1u
#define BL_ATTACHED_TTY 2u
#define BL_ATTACHED_ENDED 4u

struct bl_attached_reply {
	int32_t error;     /* 0; ENOENT no such execution (or forgotten); EBUSY it has a host */
	uint32_t flags;    /* BL_ATTACHED_* */
	uint64_t start[2]; /* stdout, stderr offsets where the replay starts */
};

/* EXIT payload: four u32/i32 fields, 16 bytes. */
struct bl_exit_payload {
	uint32_t outcome; /* enum bl_wire_outcome */
	int32_t code;     /* exit code when EXITED */
	int32_t signal;   /* signal number when SIGNALED */
	int32_t error;    /* errno when FAILED_TO_START */
};

/*
 * EXEC payload encoding:
 *   u32 argc, u32 envc, u32 flags (BL_EXEC_*), u32 timeout_ms (0: none),
 *   u32 kill_grace_ms (SIGTERM..SIGKILL after a timeout),
 *   u16 rows, u16 cols (the terminal's size with BL_EXEC_TTY),
 *   u32 window (bytes of each stream it may send before the host's CREDIT;
 *       0 or BL_CREDIT_UNLIMITED: no flow control),
 *   then argc NUL-terminated strings, envc NUL-terminated "K=V" strings,
 *   then one NUL-terminated working directory ("" means "/").
 * argc >= 1.  The agent resolves argv[0] through PATH from the given env.
 */
/* EXEC flags. */
#define BL_EXEC_STDIN 1u /* stdin is a pipe fed by STDIN frames (else /dev/null) */
#define BL_EXEC_TTY 2u   /* stdin, stdout and stderr are one pseudo-terminal */

/* The fixed-size part of an EXEC request. */
struct bl_exec_params {
	uint32_t flags;
	uint32_t timeout_ms;
	uint32_t kill_grace_ms;
	uint16_t rows, cols;
	uint32_t window;
};

struct bl_exec_request {
	uint32_t argc;
	uint32_t envc;
	struct bl_exec_params params;
	char **argv; /* argc entries + NULL, pointing into the payload */
	char **envp; /* envc entries + NULL, pointing into the payload */
	const char *cwd;
};

/* Encode/decode a header into/from exactly BL_FRAME_HEADER_SIZE bytes. */
void bl_header_encode(const struct bl_frame_header *h, uint8_t out[BL_FRAME_HEADER_SIZE]);
void bl_header_decode(const uint8_t in[BL_FRAME_HEADER_SIZE], struct bl_frame_header *h);

/*
 * Size of the EXEC payload for argv/envp (NULL-terminated) and cwd (may be
 * NULL), or 0 if it would exceed BL_FRAME_MAX_PAYLOAD.
 */
size_t bl_exec_encoded_size(const char *const *argv, const char *const *envp, const char *cwd);
/* Write the EXEC payload into out (bl_exec_encoded_size bytes). */
void bl_exec_encode(const char *const *argv, const char *const *envp, const char *cwd,
		    const struct bl_exec_params *params, uint8_t *out);
/*
 * Parse an EXEC payload in place (payload must stay alive while req is used).
 * Allocates req->argv/envp; returns 0 or -errno (EINVAL for a malformed
 * payload, ENOMEM).  Release with bl_exec_request_release.
 */
int bl_exec_decode(uint8_t *payload, size_t len, struct bl_exec_request *req);
void bl_exec_request_release(struct bl_exec_request *req);

void bl_exit_encode(const struct bl_exit_payload *e, uint8_t out[16]);
void bl_attach_encode(const struct bl_attach_request *a, uint8_t out[BL_ATTACH_SIZE]);
void bl_attach_decode(const uint8_t in[BL_ATTACH_SIZE], struct bl_attach_request *a);
void bl_attached_encode(const struct bl_attached_reply *a, uint8_t out[BL_ATTACHED_SIZE]);
void bl_attached_decode(const uint8_t in[BL_ATTACHED_SIZE], struct bl_attached_reply *a);
void bl_exit_decode(const uint8_t in[16], struct bl_exit_payload *e);

#endif
