/* Unit tests of the wire codecs (native/protocol.c). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "common/protocol.h"

static void test_header_roundtrip(void)
{
	struct bl_frame_header in = {.len = 0x01020304, .type = BL_FRAME_STDERR, .flags = 0,
				     .id = 0x1122334455667788ull};
	uint8_t buf[BL_FRAME_HEADER_SIZE];
	bl_header_encode(&in, buf);
	struct bl_frame_header out;
	bl_header_decode(buf, &out);
	CHECK(out.len == in.len && out.type == in.type && out.flags == 0 && out.id == in.id);
}

static void test_exec_roundtrip(void)
{
	const char *argv[] = {"printf", "a\tb", "", NULL};
	const char *envp[] = {"PATH=/bin", "EMPTY=", NULL};
	size_t n = bl_exec_encoded_size(argv, envp, "/tmp");
	CHECK(n > 0);
	uint8_t *buf = malloc(n);
	CHECK(buf);
	struct bl_exec_params params = {.flags = BL_EXEC_STDIN, .timeout_ms = 1500, .kill_grace_ms = 7,
					.rows = 50, .cols = 132, .window = 65536};
	bl_exec_encode(argv, envp, "/tmp", &params, buf);
	struct bl_exec_request req;
	CHECK(bl_exec_decode(buf, n, &req) == 0);
	CHECK(req.argc == 3 && req.envc == 2 && req.params.flags == BL_EXEC_STDIN);
	CHECK(req.params.timeout_ms == 1500 && req.params.kill_grace_ms == 7);
	CHECK(req.params.rows == 50 && req.params.cols == 132 && req.params.window == 65536);
	CHECK(strcmp(req.argv[1], "a\tb") == 0 && strcmp(req.argv[2], "") == 0 && !req.argv[3]);
	CHECK(strcmp(req.envp[1], "EMPTY=") == 0 && !req.envp[2]);
	CHECK(strcmp(req.cwd, "/tmp") == 0);
	bl_exec_request_release(&req);
	free(buf);
}

static void test_exec_defaults(void)
{
	const char *argv[] = {"true", NULL};
	size_t n = bl_exec_encoded_size(argv, NULL, NULL);
	uint8_t *buf = malloc(n);
	CHECK(buf);
	struct bl_exec_params none = {0};
	bl_exec_encode(argv, NULL, NULL, &none, buf);
	struct bl_exec_request req;
	CHECK(bl_exec_decode(buf, n, &req) == 0);
	CHECK(req.envc == 0 && req.envp[0] == NULL && strcmp(req.cwd, "/") == 0 && req.params.flags == 0);
	bl_exec_request_release(&req);
	free(buf);
}

static void test_exec_too_large_is_refused(void)
{
	size_t big = BL_FRAME_MAX_PAYLOAD;
	char *huge = malloc(big + 1);
	CHECK(huge);
	memset(huge, 'a', big);
	huge[big] = '\0';
	const char *argv[] = {huge, NULL};
	CHECK(bl_exec_encoded_size(argv, NULL, NULL) == 0);
	free(huge);
}

static void test_malformed_exec_payloads(void)
{
	struct bl_exec_request req;
	uint8_t zero_argc[32] = {0};
	CHECK(bl_exec_decode(zero_argc, sizeof zero_argc, &req) == -EINVAL);
	/* argc 1 but no NUL-terminated string follows. */
	uint8_t unterminated[32] = {1, 0, 0, 0, [28] = 'a', 'b', 'c', 'd'};
	CHECK(bl_exec_decode(unterminated, sizeof unterminated, &req) == -EINVAL);
	/* Trailing bytes after the cwd. */
	uint8_t trailing[33] = {1, 0, 0, 0, [28] = 'a', 0, 0, 'x', 0};
	CHECK(bl_exec_decode(trailing, sizeof trailing, &req) == -EINVAL);
	/* Counts far beyond the payload. */
	uint8_t huge_counts[32] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
	CHECK(bl_exec_decode(huge_counts, sizeof huge_counts, &req) == -EINVAL);
	CHECK(bl_exec_decode(zero_argc, 3, &req) == -EINVAL);
}

static void test_random_payloads_never_crash(void)
{
	srand(12345);
	uint8_t buf[64];
	for (int round = 0; round < 200000; round++) {
		size_t len = (size_t)(rand() % (int)sizeof buf);
		for (size_t i = 0; i < len; i++)
			buf[i] = (uint8_t)(rand() % 4 == 0 ? 0 : rand() % 256);
		if (len >= 8) { /* small counts, so some payloads parse */
			buf[0] = (uint8_t)(rand() % 4);
			buf[1] = buf[2] = buf[3] = 0;
			buf[4] = (uint8_t)(rand() % 3);
			buf[5] = buf[6] = buf[7] = 0;
		}
		struct bl_exec_request req;
		if (bl_exec_decode(buf, len, &req) == 0) {
			for (uint32_t i = 0; i < req.argc; i++)
				CHECK(req.argv[i] != NULL);
			CHECK(req.argv[req.argc] == NULL && req.envp[req.envc] == NULL);
			bl_exec_request_release(&req);
		}
	}
}

static void test_exit_roundtrip(void)
{
	struct bl_exit_payload in = {.outcome = BL_WIRE_SIGNALED, .code = -1, .signal = 9, .error = 0};
	uint8_t buf[16];
	bl_exit_encode(&in, buf);
	struct bl_exit_payload out;
	bl_exit_decode(buf, &out);
	CHECK(out.outcome == in.outcome && out.code == -1 && out.signal == 9 && out.error == 0);
}

int main(void)
{
	RUN(test_header_roundtrip);
	RUN(test_exec_roundtrip);
	RUN(test_exec_defaults);
	RUN(test_exec_too_large_is_refused);
	RUN(test_malformed_exec_payloads);
	RUN(test_random_payloads_never_crash);
	RUN(test_exit_roundtrip);
	return 0;
}
