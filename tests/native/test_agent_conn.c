/* Unit tests of the host's frame reader (native/agent_conn.c) against a
 * hostile or broken agent: split frames, oversized lengths, random bytes. */
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/agent_conn.h"
#include "check.h"

struct seen {
	int frames;
	size_t bytes;
	uint8_t own[64]; /* where small STDOUT bodies are directed */
	uint32_t last_type;
};

static uint8_t *body_dest(void *ctx, const struct bl_frame_header *h)
{
	struct seen *s = ctx;
	return h->type == BL_FRAME_STDOUT && h->len <= sizeof s->own ? s->own : NULL;
}

static bool on_frame(void *ctx, const struct bl_frame_header *h, uint8_t *body)
{
	struct seen *s = ctx;
	(void)body;
	s->frames++;
	s->bytes += h->len;
	s->last_type = h->type;
	return true;
}

static const struct bl_conn_handler handler = {.body_dest = body_dest, .frame = on_frame};

static void make_pair(int fds[2])
{
	CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) == 0);
	CHECK(fcntl(fds[0], F_SETFL, O_NONBLOCK) == 0);
}

static void put_frame(int fd, uint16_t type, uint32_t len, const void *body)
{
	uint8_t hdr[BL_FRAME_HEADER_SIZE];
	struct bl_frame_header h = {.len = len, .type = type, .id = 7};
	bl_header_encode(&h, hdr);
	CHECK(write(fd, hdr, sizeof hdr) == (ssize_t)sizeof hdr);
	if (body) /* NULL: a header that promises a body never sent */
		CHECK(write(fd, body, len) == (ssize_t)len);
}

static void test_frames_split_at_every_byte(void)
{
	int fds[2];
	make_pair(fds);
	struct bl_conn *c = bl_conn_new(fds[0]);
	CHECK(c);
	uint8_t buf[BL_FRAME_HEADER_SIZE + 5];
	struct bl_frame_header h = {.len = 5, .type = BL_FRAME_STDOUT, .id = 1};
	bl_header_encode(&h, buf);
	memcpy(buf + BL_FRAME_HEADER_SIZE, "hello", 5);
	struct seen s = {0};
	for (size_t i = 0; i < sizeof buf; i++) { /* one byte at a time */
		CHECK(write(fds[1], buf + i, 1) == 1);
		CHECK(bl_conn_read(c, &handler, &s, 1 << 20) == BL_CONN_AGAIN);
	}
	CHECK(s.frames == 1 && s.bytes == 5 && memcmp(s.own, "hello", 5) == 0);
	close(fds[1]);
	CHECK(bl_conn_read(c, &handler, &s, 1 << 20) == BL_CONN_CLOSED);
	bl_conn_free(c);
}

static void test_oversized_length_breaks_the_connection(void)
{
	int fds[2];
	make_pair(fds);
	struct bl_conn *c = bl_conn_new(fds[0]);
	CHECK(c);
	put_frame(fds[1], BL_FRAME_STDOUT, BL_FRAME_MAX_PAYLOAD + 1, NULL);
	struct seen s = {0};
	CHECK(bl_conn_read(c, &handler, &s, 1 << 20) == BL_CONN_BROKEN);
	CHECK(s.frames == 0);
	close(fds[1]);
	bl_conn_free(c);
}

static void test_large_and_unknown_frames_use_the_scratch_buffer(void)
{
	int fds[2];
	make_pair(fds);
	int size = 4 << 20;
	CHECK(setsockopt(fds[1], SOL_SOCKET, SO_SNDBUF, &size, sizeof size) == 0);
	struct bl_conn *c = bl_conn_new(fds[0]);
	CHECK(c);
	uint8_t *big = calloc(1, 100000);
	CHECK(big);
	put_frame(fds[1], 999, 100000, big); /* unknown type */
	put_frame(fds[1], BL_FRAME_STDOUT, 100000, big); /* too big for s.own */
	put_frame(fds[1], BL_FRAME_EXIT, 0, NULL);
	free(big);
	struct seen s = {0};
	while (bl_conn_read(c, &handler, &s, 1 << 20) == BL_CONN_BUSY)
		;
	CHECK(s.frames == 3 && s.bytes == 200000 && s.last_type == BL_FRAME_EXIT);
	close(fds[1]);
	bl_conn_free(c);
}

static void test_random_streams_never_crash(void)
{
	srand(4242);
	for (int round = 0; round < 300; round++) {
		int fds[2];
		make_pair(fds);
		struct bl_conn *c = bl_conn_new(fds[0]);
		CHECK(c);
		uint8_t buf[4096];
		size_t n = (size_t)(rand() % (int)sizeof buf);
		for (size_t i = 0; i < n; i++)
			buf[i] = (uint8_t)rand();
		/* Mostly plausible headers, so bodies are read too. */
		for (size_t off = 0; off + BL_FRAME_HEADER_SIZE <= n; off += 64) {
			uint32_t len = (uint32_t)(rand() % 48);
			memcpy(buf + off, &len, 4);
		}
		CHECK(write(fds[1], buf, n) == (ssize_t)n);
		close(fds[1]);
		struct seen s = {0};
		enum bl_conn_status st;
		while ((st = bl_conn_read(c, &handler, &s, 1 << 20)) == BL_CONN_BUSY)
			;
		CHECK(st == BL_CONN_CLOSED || st == BL_CONN_BROKEN);
		bl_conn_free(c);
	}
}

static void test_writes_queue_in_order(void)
{
	int fds[2];
	make_pair(fds);
	struct bl_conn *c = bl_conn_new(fds[0]);
	CHECK(c);
	for (int i = 0; i < 3; i++) {
		uint8_t *frame = malloc(4);
		CHECK(frame);
		memset(frame, 'a' + i, 4);
		CHECK(bl_conn_send(c, frame, 4) == 0);
	}
	CHECK(bl_conn_flush(c) == 0);
	char got[13] = {0};
	CHECK(read(fds[1], got, 12) == 12);
	CHECK(strcmp(got, "aaaabbbbcccc") == 0);
	close(fds[1]);
	uint8_t *late = malloc(4);
	CHECK(late);
	CHECK(bl_conn_send(c, late, 4) == 0);
	CHECK(bl_conn_flush(c) == -1); /* the agent is gone: no SIGPIPE, an error */
	bl_conn_free(c);
}

int main(void)
{
	RUN(test_frames_split_at_every_byte);
	RUN(test_oversized_length_breaks_the_connection);
	RUN(test_large_and_unknown_frames_use_the_scratch_buffer);
	RUN(test_random_streams_never_crash);
	RUN(test_writes_queue_in_order);
	return 0;
}
