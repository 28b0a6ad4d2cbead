/* protocol.c - frame and payload codecs shared by the runtime and the agent. */
#include "protocol.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* argc, envc, flags, timeout_ms, kill_grace_ms, rows|cols */
#define EXEC_FIXED 28u

static void put_u32(uint8_t *p, uint32_t v) { memcpy(p, &v, sizeof v); }
static uint32_t get_u32(const uint8_t *p)
{
	uint32_t v;
	memcpy(&v, p, sizeof v);
	return v;
}

void bl_header_encode(const struct bl_frame_header *h, uint8_t out[BL_FRAME_HEADER_SIZE])
{
	put_u32(out, h->len);
	memcpy(out + 4, &h->type, 2);
	memcpy(out + 6, &h->flags, 2);
	memcpy(out + 8, &h->id, 8);
}

void bl_header_decode(const uint8_t in[BL_FRAME_HEADER_SIZE], struct bl_frame_header *h)
{
	h->len = get_u32(in);
	memcpy(&h->type, in + 4, 2);
	memcpy(&h->flags, in + 6, 2);
	memcpy(&h->id, in + 8, 8);
}

static size_t strv_size(const char *const *v, uint32_t *count)
{
	size_t total = 0;
	uint32_t n = 0;
	for (; v && v[n]; n++)
		total += strlen(v[n]) + 1;
	*count = n;
	return total;
}

size_t bl_exec_encoded_size(const char *const *argv, const char *const *envp, const char *cwd)
{
	uint32_t argc, envc;
	size_t total = EXEC_FIXED + strv_size(argv, &argc) + strv_size(envp, &envc);
	total += (cwd ? strlen(cwd) : 0) + 1;
	if (argc == 0 || total > BL_FRAME_MAX_PAYLOAD)
		return 0;
	return total;
}

static uint8_t *put_strv(uint8_t *p, const char *const *v)
{
	for (size_t i = 0; v && v[i]; i++) {
		size_t n = strlen(v[i]) + 1;
		memcpy(p, v[i], n);
		p += n;
	}
	return p;
}

void bl_exec_encode(const char *const *argv, const char *const *envp, const char *cwd,
		    const struct bl_exec_params *params, uint8_t *out)
{
	uint32_t argc, envc;
	strv_size(argv, &argc);
	strv_size(envp, &envc);
	put_u32(out, argc);
	put_u32(out + 4, envc);
	put_u32(out + 8, params->flags);
	put_u32(out + 12, params->timeout_ms);
	put_u32(out + 16, params->kill_grace_ms);
	put_u32(out + 20, (uint32_t)params->rows << 16 | params->cols);
	put_u32(out + 24, params->window);
	uint8_t *p = put_strv(out + EXEC_FIXED, argv);
	p = put_strv(p, envp);
	size_t n = (cwd ? strlen(cwd) : 0);
	if (n)
		memcpy(p, cwd, n);
	p[n] = '\0';
}

/* Point v[0..n) at consecutive NUL-terminated strings starting at *pos. */
static int take_strings(uint8_t *payload, size_t len, size_t *pos, uint32_t n, char **v)
{
	for (uint32_t i = 0; i < n; i++) {
		uint8_t *start = payload + *pos;
		uint8_t *nul = memchr(start, '\0', len - *pos);
		if (!nul)
			return -EINVAL;
		v[i] = (char *)start;
		*pos = (size_t)(nul - payload) + 1;
	}
	v[n] = NULL;
	return 0;
}

int bl_exec_decode(uint8_t *payload, size_t len, struct bl_exec_request *req)
{
	memset(req, 0, sizeof *req);
	if (len < EXEC_FIXED + 1)
		return -EINVAL;
	uint32_t argc = get_u32(payload), envc = get_u32(payload + 4);
	/* Each string needs at least its NUL, which bounds both counts by len. */
	if (argc == 0 || argc > len || envc > len)
		return -EINVAL;
	req->argv = calloc((size_t)argc + 1, sizeof(char *));
	req->envp = calloc((size_t)envc + 1, sizeof(char *));
	if (!req->argv || !req->envp) {
		bl_exec_request_release(req);
		return -ENOMEM;
	}
	size_t pos = EXEC_FIXED;
	char *cwd[2];
	if (take_strings(payload, len, &pos, argc, req->argv) < 0 ||
	    take_strings(payload, len, &pos, envc, req->envp) < 0 ||
	    take_strings(payload, len, &pos, 1, cwd) < 0 || pos != len) {
		bl_exec_request_release(req);
		return -EINVAL;
	}
	req->argc = argc;
	req->envc = envc;
	req->params.flags = get_u32(payload + 8);
	req->params.timeout_ms = get_u32(payload + 12);
	req->params.kill_grace_ms = get_u32(payload + 16);
	uint32_t winsize = get_u32(payload + 20);
	req->params.rows = (uint16_t)(winsize >> 16);
	req->params.cols = (uint16_t)winsize;
	req->params.window = get_u32(payload + 24);
	req->cwd = cwd[0][0] ? cwd[0] : "/";
	return 0;
}

void bl_exec_request_release(struct bl_exec_request *req)
{
	free(req->argv);
	free(req->envp);
	req->argv = NULL;
	req->envp = NULL;
}

void bl_exit_encode(const struct bl_exit_payload *e, uint8_t out[16])
{
	memcpy(out, &e->outcome, 4);
	memcpy(out + 4, &e->code, 4);
	memcpy(out + 8, &e->signal, 4);
	memcpy(out + 12, &e->error, 4);
}

void bl_exit_decode(const uint8_t in[16], struct bl_exit_payload *e)
{
	memcpy(&e->outcome, in, 4);
	memcpy(&e->code, in + 4, 4);
	memcpy(&e->signal, in + 8, 4);
	memcpy(&e->error, in + 12, 4);
}

void bl_attach_encode(const struct bl_attach_request *a, uint8_t out[BL_ATTACH_SIZE])
{
	memcpy(out, &a->from[0], 8);
	memcpy(out + 8, &a->from[1], 8);
	memcpy(out + 16, &a->window, 4);
	memcpy(out + 20, &a->reserved, 4);
}

void bl_attach_decode(const uint8_t in[BL_ATTACH_SIZE], struct bl_attach_request *a)
{
	memcpy(&a->from[0], in, 8);
	memcpy(&a->from[1], in + 8, 8);
	memcpy(&a->window, in + 16, 4);
	memcpy(&a->reserved, in + 20, 4);
}

void bl_attached_encode(const struct bl_attached_reply *a, uint8_t out[BL_ATTACHED_SIZE])
{
	memcpy(out, &a->error, 4);
	memcpy(out + 4, &a->flags, 4);
	memcpy(out + 8, &a->start[0], 8);
	memcpy(out + 16, &a->start[1], 8);
}

void bl_attached_decode(const uint8_t in[BL_ATTACHED_SIZE], struct bl_attached_reply *a)
{
	memcpy(&a->error, in, 4);
	memcpy(&a->flags, in + 4, 4);
	memcpy(&a->start[0], in + 8, 8);
	memcpy(&a->start[1], in + 16, 8);
}
