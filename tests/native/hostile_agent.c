/*
 * hostile_agent.c - a stand-in shim whose "agent" answers every EXEC with
 * random frames: every type an agent may send and some it may not, lengths
 * right and wrong, output beyond its window, EXITs no process could have
 * had, frames for executions that do not exist.  test_runtime runs it as
 * boxlite-shim to check that the host survives whatever a box sends.
 *
 *   hostile_agent SEED   (fd 3: the agent connection, fd 4: the status pipe)
 *   hostile_agent flood  answers each EXEC with 4 MiB of stdout, ignoring
 *                        its window, and never ends it
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/protocol.h"
#include "common/fdio.h"

static uint64_t state;

static uint32_t rnd(void) /* xorshift64*: repeatable from the seed */
{
	state ^= state >> 12;
	state ^= state << 25;
	state ^= state >> 27;
	return (uint32_t)((state * 2685821657736338717ull) >> 32);
}

static int send_frame(uint16_t type, uint64_t id, const uint8_t *payload, uint32_t len)
{
	uint8_t hdr[BL_FRAME_HEADER_SIZE];
	bl_header_encode(&(struct bl_frame_header){.len = len, .type = type, .id = id}, hdr);
	return fd_write_full(3, hdr, sizeof hdr) == sizeof hdr && fd_write_full(3, payload, len) == len
		       ? 0
		       : -1;
}

/* A length: usually one a frame of some type really has, sometimes not. */
static uint32_t some_len(void)
{
	static const uint32_t sizes[] = {0, 4, 8, 16, 24, 1, 15, 17, 4096, 70000, 300000};
	return sizes[rnd() % (sizeof sizes / sizeof *sizes)];
}

static uint16_t some_type(void)
{
	if (rnd() % 8 == 0)
		return (uint16_t)rnd(); /* anything at all */
	return (uint16_t)(BL_FRAME_HELLO + rnd() % (BL_FRAME_ATTACHED - BL_FRAME_HELLO + 1));
}

/* An EXIT payload: usually plausible, sometimes one no process could have. */
static void some_exit(uint8_t out[16])
{
	static const int32_t odd[] = {INT32_MAX, INT32_MIN, -1, 0, 65, 256, 1 << 20};
	struct bl_exit_payload e = {.outcome = 1 + rnd() % 4, .code = (int32_t)(rnd() % 256),
				    .signal = 1 + (int32_t)(rnd() % 31), .error = 2};
	switch (rnd() % 4) {
	case 0:
		e.signal = odd[rnd() % (sizeof odd / sizeof *odd)];
		break;
	case 1:
		e.code = odd[rnd() % (sizeof odd / sizeof *odd)];
		break;
	case 2:
		e.outcome = rnd();
		break;
	}
	bl_exit_encode(&e, out);
}

static int flood(uint64_t id, uint8_t *payload)
{
	memset(payload, 'x', BL_FRAME_DATA_CHUNK);
	for (int i = 0; i < 16; i++)
		if (send_frame(BL_FRAME_STDOUT, id, payload, BL_FRAME_DATA_CHUNK) < 0)
			return -1;
	return 0;
}

/* Answer one execution with a burst of frames, ending it (maybe) with EXIT. */
static int answer(uint64_t id, uint8_t *payload)
{
	for (uint32_t n = rnd() % 12; n > 0; n--) {
		uint64_t target = rnd() % 6 ? id : ((uint64_t)rnd() << 32 | rnd());
		uint16_t type = some_type();
		uint32_t len = some_len();
		for (uint32_t i = 0; i < len; i++)
			payload[i] = (uint8_t)rnd();
		if (type == BL_FRAME_EXIT && len == 16)
			some_exit(payload);
		if (send_frame(type, target, payload, len) < 0)
			return -1;
	}
	if (rnd() % 3 == 0)
		return 0; /* leave it running */
	some_exit(payload);
	return send_frame(BL_FRAME_EXIT, id, payload, 16);
}

int main(int argc, char **argv)
{
	bool flooding = argc > 1 && strcmp(argv[1], "flood") == 0;
	state = argc > 1 ? strtoull(argv[1], NULL, 10) * 2654435761u + 1 : 1;
	if (dprintf(4, "ok %d\n", (int)getpid()) < 0 || close(4) < 0)
		return 1;
	uint8_t *payload = malloc(BL_FRAME_MAX_PAYLOAD);
	if (!payload)
		return 1;
	uint8_t hdr[BL_FRAME_HEADER_SIZE];
	struct bl_frame_header h;
	/* Until the host drops the connection (it should, sooner or later). */
	while (fd_read_full(3, hdr, sizeof hdr) == sizeof hdr) {
		bl_header_decode(hdr, &h);
		if (h.len > BL_FRAME_MAX_PAYLOAD || fd_read_full(3, payload, h.len) != h.len)
			break;
		if (h.type == BL_FRAME_EXEC && (flooding ? flood(h.id, payload) : answer(h.id, payload)) < 0)
			break;
	}
	free(payload);
	return 0;
}
