/*
 * shim_spec.c - the shim's command line and its checks (shim_spec.h).
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>
#include <unistd.h>

#include "common/shim_spec.h"

struct row {
	const char *flag;
	enum shim_arg kind;
	size_t offset; /* of the field in struct shim_spec */
	const char *value, *doc;
};

#define SHIM_ROW(flag, kind, field, value, doc)                                                  \
	{flag, kind, offsetof(struct shim_spec, field), value, doc},
static const struct row ROWS[] = {SHIM_FLAGS(SHIM_ROW)};
#define N_ROWS (sizeof ROWS / sizeof ROWS[0])

void shim_spec_defaults(struct shim_spec *s)
{
	memset(s, 0, sizeof *s);
	s->hostname = BOXLITE_DEFAULT_HOSTNAME;
	s->grace_ms = BOXLITE_DEFAULT_STOP_GRACE_MS;
	s->drain_ms = BOXLITE_DEFAULT_DRAIN_MS;
}

/* ---- checks ---- */

static bool absolute(const char *path) { return path && path[0] == '/' && strlen(path) < PATH_MAX; }

/* path made relative to the root and lexically clean ("a/b"; "" for the
 * root): "." dropped, ".." taking the component before (none at the root,
 * as RESOLVE_IN_ROOT does), slashes collapsed. */
static void clean_path(const char *path, char out[PATH_MAX])
{
	size_t len = 0;
	out[0] = '\0';
	while (*path) {
		size_t n = strcspn(path, "/");
		if (n == 2 && path[0] == '.' && path[1] == '.') {
			while (len > 0 && out[len - 1] != '/')
				len--;
			if (len > 0)
				len--; /* its slash */
		} else if (n > 0 && !(n == 1 && path[0] == '.') && len + n + 2 < PATH_MAX) {
			if (len > 0)
				out[len++] = '/';
			memcpy(out + len, path, n);
			len += n;
		}
		out[len] = '\0';
		path += n + (path[n] == '/');
	}
}

bool shim_reserved_target(const char *path)
{
	static const char *const reserved[] = {"proc", "dev", "sys"};
	char rel[PATH_MAX];
	clean_path(path, rel);
	size_t first = strcspn(rel, "/");
	for (size_t i = 0; i < sizeof reserved / sizeof reserved[0]; i++)
		if (first == strlen(reserved[i]) && memcmp(rel, reserved[i], first) == 0)
			return true;
	return rel[0] == '\0';
}

static int check_box_dir(const char *dir, bl_error *e)
{
	if (!dir || !dir[0])
		return bl_error_set(e, EINVAL, "no box directory");
	/* Where other host processes reach the agent must fit a unix socket. */
	size_t room = sizeof ((struct sockaddr_un *)NULL)->sun_path;
	if (strlen(dir) + sizeof "/" SHIM_AGENT_SOCKET > room)
		return bl_error_set(e, ENAMETOOLONG,
				    "box directory %s: too long for its %s (a unix socket path of "
				    "at most %zu bytes)",
				    dir, SHIM_AGENT_SOCKET, room - 1);
	return 0;
}

static int check_lowers(const struct shim_spec *s, bl_error *e)
{
	if (s->n_lowers == 0)
		return bl_error_set(e, EINVAL, "no image layer (lower directory)");
	for (unsigned i = 0; i < s->n_lowers; i++) {
		const char *dir = s->lowers[i];
		/* overlayfs's option syntax: these would split or escape it. */
		if (!absolute(dir) || strpbrk(dir, ",:\\"))
			return bl_error_set(e, EINVAL,
					    "image layer '%s': not an absolute path free of ',', ':' "
					    "and '\\' (overlayfs's separators)",
					    dir ? dir : "");
	}
	return 0;
}

static int check_binds(const struct shim_spec *s, bl_error *e)
{
	for (unsigned i = 0; i < s->n_binds; i++) {
		const struct shim_bind *b = &s->binds[i];
		if (!absolute(b->source))
			return bl_error_set(e, EINVAL, "volume source '%s': not an absolute path",
					    b->source ? b->source : "");
		if (!absolute(b->target))
			return bl_error_set(e, EINVAL, "volume target '%s': not an absolute path",
					    b->target ? b->target : "");
		if (shim_reserved_target(b->target))
			return bl_error_set(e, EINVAL,
					    "volume target %s: reserved (/, /proc, /dev, /sys)",
					    b->target);
	}
	return 0;
}

static int check_optional_path(const char *what, const char *path, bl_error *e)
{
	if (path && !absolute(path))
		return bl_error_set(e, EINVAL, "%s '%s': not an absolute path", what, path);
	return 0;
}

/* More of the guest kernel's command line: one argument of QEMU's, so no
 * control characters, and bounded (the kernel's own limit is 2048 bytes,
 * ours and the guest init's come first). */
static int check_kernel_args(const char *args, bl_error *e)
{
	if (!args)
		return 0;
	size_t n = strlen(args);
	if (n > BOXLITE_MAX_VM_KERNEL_ARGS)
		return bl_error_set(e, EINVAL, "vm: kernel arguments longer than %d bytes",
				    BOXLITE_MAX_VM_KERNEL_ARGS);
	for (size_t i = 0; i < n; i++)
		if (args[i] < 0x20 || args[i] > 0x7e)
			return bl_error_set(e, EINVAL, "vm: kernel arguments are printable ASCII");
	return 0;
}

/* All of --vm-* or none; and what the vm engine cannot do yet. */
static int check_vm(const struct shim_spec *s, bl_error *e)
{
	const struct shim_vm *v = &s->vm;
	if (!v->qemu && !v->kernel && !v->initrd && !v->root_image && !v->accel && !v->ready_ms &&
	    !v->kernel_args)
		return 0;
	if (check_optional_path("qemu", v->qemu, e) < 0 ||
	    check_optional_path("kernel", v->kernel, e) < 0 ||
	    check_optional_path("initrd", v->initrd, e) < 0 ||
	    check_optional_path("root image", v->root_image, e) < 0)
		return -1;
	if (!v->qemu || !v->kernel || !v->initrd || !v->accel)
		return bl_error_set(e, EINVAL, "vm: qemu, kernel, initrd and accel are required");
	if (strcmp(v->accel, "kvm") != 0 && strcmp(v->accel, "tcg") != 0)
		return bl_error_set(e, EINVAL, "vm accelerator '%s': kvm or tcg", v->accel);
	if (!s->disk_image)
		return bl_error_set(e, EINVAL, "vm: a box's writable layer needs a disk image");
	if (check_kernel_args(v->kernel_args, e) < 0)
		return -1;
	if (s->limits.memory && s->limits.memory < (uint64_t)SHIM_VM_MIN_MEMORY_MIB << 20)
		return bl_error_set(e, EINVAL, "vm: memory below %d MiB cannot run the guest",
				    SHIM_VM_MIN_MEMORY_MIB);
	if (s->guest)
		return bl_error_set(e, EINVAL, "vm: --guest is the guest's shim's");
	return 0;
}

int shim_spec_check(const struct shim_spec *s, bl_error *e)
{
	if (check_vm(s, e) < 0)
		return -1;
	if (check_box_dir(s->box_dir, e) < 0 || check_lowers(s, e) < 0 || check_binds(s, e) < 0 ||
	    check_optional_path("network helper", s->network, e) < 0 ||
	    check_optional_path("disk image", s->disk_image, e) < 0)
		return -1;
	if (!s->hostname || !s->hostname[0] || strlen(s->hostname) > SHIM_HOSTNAME_MAX)
		return bl_error_set(e, EINVAL, "hostname '%s': not 1 to %d bytes",
				    s->hostname ? s->hostname : "", SHIM_HOSTNAME_MAX);
	if ((s->guest_uid || s->guest_gid) && !s->guest)
		return bl_error_set(e, EINVAL, "--guest-uid and --guest-gid are a vm guest's");
	if (s->guest_network && (!s->guest || s->network))
		return bl_error_set(e, EINVAL, "--guest-network is a vm guest's, without --network");
	if (s->host_loopback && !s->network)
		return bl_error_set(e, EINVAL, "host loopback without a network");
	if (s->limits.pids_optional && !s->limits.pids)
		return bl_error_set(e, EINVAL, "an optional pids limit without one");
	if (s->owner_pid < 0)
		return bl_error_set(e, EINVAL, "owner pid %d", (int)s->owner_pid);
	return 0;
}

/* ---- argv ---- */

/* The row of a flag kind SHIM_FLAGS has (every kind but text and numbers
 * is one flag). */
static const struct row *row_of_kind(enum shim_arg kind)
{
	for (const struct row *r = ROWS; r < ROWS + N_ROWS; r++)
		if (r->kind == kind)
			return r;
	return ROWS; /* not reached: the table holds every such kind */
}

static const void *field_of(const struct shim_spec *s, const struct row *r)
{
	return (const char *)s + r->offset;
}

static uint64_t number_of(const struct shim_spec *s, const struct row *r)
{
	const void *f = field_of(s, r);
	switch (r->kind) {
	case SHIM_ARG_U32:
		return *(const uint32_t *)f;
	case SHIM_ARG_U64:
		return *(const uint64_t *)f;
	case SHIM_ARG_PID:
		return (uint64_t)*(const pid_t *)f;
	default:
		return 0;
	}
}

size_t shim_spec_argc(const struct shim_spec *s)
{
	return 1 + 2 * N_ROWS + 2 * (size_t)s->n_lowers + 3 * (size_t)s->n_binds;
}

void shim_spec_argv(const struct shim_spec *s, const char *path, struct shim_nums *nums,
		    char **out)
{
	size_t i = 0, n = 0;
	out[i++] = (char *)path;
	for (const struct row *r = ROWS; r < ROWS + N_ROWS; r++) {
		const void *f = field_of(s, r);
		switch (r->kind) {
		case SHIM_ARG_SWITCH:
			if (*(const bool *)f)
				out[i++] = (char *)r->flag;
			break;
		case SHIM_ARG_TEXT:
			if (*(const char *const *)f) {
				out[i++] = (char *)r->flag;
				out[i++] = (char *)*(const char *const *)f;
			}
			break;
		case SHIM_ARG_U32:
		case SHIM_ARG_U64:
		case SHIM_ARG_PID: {
			uint64_t v = number_of(s, r);
			if (v) {
				snprintf(nums->text[n], sizeof nums->text[n], "%llu", (unsigned long long)v);
				out[i++] = (char *)r->flag;
				out[i++] = nums->text[n];
			}
			n++;
			break;
		}
		case SHIM_ARG_LOWER:
			for (unsigned l = 0; l < s->n_lowers; l++) {
				out[i++] = (char *)r->flag;
				out[i++] = (char *)s->lowers[l];
			}
			break;
		case SHIM_ARG_BIND:
			/* All binds at the first bind row, in their order: a volume
			 * inside another is mounted after it, whatever their modes. */
			for (unsigned b = 0; b < s->n_binds; b++) {
				out[i++] = (char *)row_of_kind(s->binds[b].readonly ? SHIM_ARG_BIND_RO
										    : SHIM_ARG_BIND)
					       ->flag;
				out[i++] = (char *)s->binds[b].source;
				out[i++] = (char *)s->binds[b].target;
			}
			break;
		case SHIM_ARG_BIND_RO:
			break; /* written with the others, above */
		}
	}
	out[i] = NULL;
}

/* ---- parsing ---- */

static int parse_number(const struct row *r, const char *text, uint64_t max, uint64_t *out,
			bl_error *e)
{
	char *end;
	errno = 0;
	unsigned long long v = text[0] >= '0' && text[0] <= '9' ? strtoull(text, &end, 10) : 0;
	if (text[0] < '0' || text[0] > '9' || errno || *end || v > max)
		return bl_error_set(e, EINVAL, "bad value for %s: '%s'", r->flag, text);
	*out = v;
	return 0;
}

/* The values of one flag (values[0], values[1] for a bind) into s. */
static int parse_one(struct shim_spec *s, const struct row *r, char **values, bl_error *e)
{
	void *f = (char *)s + r->offset;
	uint64_t v = 0;
	switch (r->kind) {
	case SHIM_ARG_SWITCH:
		*(bool *)f = true;
		return 0;
	case SHIM_ARG_TEXT:
		*(const char **)f = values[0];
		return 0;
	case SHIM_ARG_U32:
		if (parse_number(r, values[0], UINT32_MAX, &v, e) < 0)
			return -1;
		*(uint32_t *)f = (uint32_t)v;
		return 0;
	case SHIM_ARG_U64:
		if (parse_number(r, values[0], UINT64_MAX, &v, e) < 0)
			return -1;
		*(uint64_t *)f = v;
		return 0;
	case SHIM_ARG_PID:
		if (parse_number(r, values[0], INT32_MAX, &v, e) < 0)
			return -1;
		*(pid_t *)f = (pid_t)v;
		return 0;
	case SHIM_ARG_LOWER:
		if (s->n_lowers == SHIM_MAX_LOWERS)
			return bl_error_set(e, EINVAL, "more than %d %s", SHIM_MAX_LOWERS, r->flag);
		s->lowers[s->n_lowers++] = values[0];
		return 0;
	case SHIM_ARG_BIND:
	case SHIM_ARG_BIND_RO:
		if (s->n_binds == SHIM_MAX_BINDS)
			return bl_error_set(e, EINVAL, "more than %d binds", SHIM_MAX_BINDS);
		s->binds[s->n_binds++] =
		    (struct shim_bind){values[0], values[1], r->kind == SHIM_ARG_BIND_RO};
		return 0;
	}
	return bl_error_set(e, EINVAL, "%s: no such kind", r->flag);
}

static const struct row *row_of(const char *flag)
{
	for (const struct row *r = ROWS; r < ROWS + N_ROWS; r++)
		if (strcmp(r->flag, flag) == 0)
			return r;
	return NULL;
}

int shim_spec_parse(struct shim_spec *s, int argc, char **argv, bl_error *e)
{
	shim_spec_defaults(s);
	for (int i = 1; i < argc; i++) {
		const struct row *r = row_of(argv[i]);
		if (!r)
			return bl_error_set(e, EINVAL, "unknown argument '%s'", argv[i]);
		int values = r->kind == SHIM_ARG_SWITCH ? 0
			     : r->kind == SHIM_ARG_BIND || r->kind == SHIM_ARG_BIND_RO ? 2
											  : 1;
		if (argc - 1 - i < values)
			return bl_error_set(e, EINVAL, "%s needs %s", r->flag, r->value);
		if (parse_one(s, r, argv + i + 1, e) < 0)
			return -1;
		i += values;
	}
	if (!s->box_dir || !s->agent)
		return bl_error_set(e, EINVAL, "--box-dir and --agent are required");
	return shim_spec_check(s, e);
}

void shim_spec_usage(const char *name, int fd)
{
	dprintf(fd, "usage: %s FLAG... (fds: %d agent connection, %d status pipe, %d main command)\n",
		name, SHIM_CONN_FD, SHIM_STATUS_FD, SHIM_MAIN_FD);
	for (const struct row *r = ROWS; r < ROWS + N_ROWS; r++)
		dprintf(fd, "  %-16s %-14s %s\n", r->flag, r->value, r->doc);
}

int shim_status_parse(char *line, pid_t *pid, bl_error *e)
{
	char *nl = strchr(line, '\n');
	if (nl)
		*nl = '\0';
	int got;
	if (sscanf(line, "ok %d", &got) == 1 && got > 0) {
		*pid = got;
		return 0;
	}
	int status;
	int off = 0;
	if (sscanf(line, "error %d %n", &status, &off) == 1 && off > 0)
		return bl_error_set(e, status, "%s", line + off);
	return bl_error_set(e, 0, "box set-up failed: %s", line[0] ? line : "shim exited early");
}
