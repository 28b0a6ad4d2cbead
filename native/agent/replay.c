/*
 * replay.c - the last BL_REPLAY_MAX bytes of one output stream, addressed by
 * absolute stream offset, so a host that reattaches can ask for "everything
 * after byte N".  Byte o lives at buf[o % cap]; the buffer starts small and
 * doubles up to the limit, so a quiet execution costs little.
 */
#include <stdlib.h>
#include <string.h>

#include "agent.h"

#define REPLAY_FIRST (64u << 10)

static void put(struct replay *r, uint64_t at, const uint8_t *d, size_t n)
{
	size_t pos = (size_t)(at % r->cap);
	size_t first = r->cap - pos < n ? r->cap - pos : n;
	memcpy(r->buf + pos, d, first);
	memcpy(r->buf, d + first, n - first);
}

/* Room for want bytes (at most BL_REPLAY_MAX), keeping what is held. */
static void grow(struct replay *r, size_t want)
{
	size_t cap = r->cap ? r->cap : REPLAY_FIRST;
	while (cap < want && cap < BL_REPLAY_MAX)
		cap *= 2;
	if (cap == r->cap)
		return;
	uint8_t *buf = malloc(cap);
	if (!buf)
		agent_die("out of memory growing a replay buffer");
	struct replay bigger = {.buf = buf, .cap = cap, .start = r->start, .end = r->end};
	for (uint64_t o = r->start; o < r->end;) {
		uint8_t chunk[4096];
		size_t n = replay_copy(r, o, chunk, sizeof chunk);
		put(&bigger, o, chunk, n);
		o += n;
	}
	free(r->buf);
	*r = bigger;
}

void replay_append(struct replay *r, const uint8_t *d, size_t n)
{
	if (n > BL_REPLAY_MAX) { /* only the tail can be kept */
		r->start = r->end += n - BL_REPLAY_MAX;
		d += n - BL_REPLAY_MAX;
		n = BL_REPLAY_MAX;
	}
	if (r->end - r->start + n > r->cap)
		grow(r, (size_t)(r->end - r->start) + n);
	put(r, r->end, d, n);
	r->end += n;
	if (r->end - r->start > r->cap)
		r->start = r->end - r->cap;
}

size_t replay_copy(const struct replay *r, uint64_t from, uint8_t *dst, size_t max)
{
	if (from < r->start || from >= r->end)
		return 0;
	size_t n = r->end - from < max ? (size_t)(r->end - from) : max;
	size_t pos = (size_t)(from % r->cap);
	size_t first = r->cap - pos < n ? r->cap - pos : n;
	memcpy(dst, r->buf + pos, first);
	memcpy(dst + first, r->buf, n - first);
	return n;
}

void replay_free(struct replay *r)
{
	free(r->buf);
	*r = (struct replay){0};
}
