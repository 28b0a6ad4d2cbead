/*
 * cgroup.c - a box's resource limits: memory (no swap beyond it), pids and
 * CPU, in a cgroup of its own under the shim's, per controller.
 *
 * cgroup v2 where the controller is there (the unified hierarchy), else the
 * controller's v1 hierarchy: machines have either, or a mix.  A limit that
 * cannot be set (no controller, or no right to make a cgroup: rootless
 * without delegation) fails the start with the reason; it is never
 * silently dropped.  The directories made are listed in DIR/cgroups
 * ("<controller> <path>" per line) for the host, which reads the OOM
 * counter there, and removed once the box is gone.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <time.h>
#include <unistd.h>

#include "shim.h"

#define CGROUP_ROOT "/sys/fs/cgroup"
#define CGROUP2_SUPER_MAGIC 0x63677270

/* The shim's own cgroup in the hierarchy of controller (NULL: v2), from
 * /proc/self/cgroup; 0 or -1. */
static int own_cgroup(const char *controller, char *out, size_t len)
{
	FILE *f = fopen("/proc/self/cgroup", "re");
	if (!f)
		return -1;
	char line[PATH_MAX + 64];
	int rc = -1;
	while (rc < 0 && fgets(line, sizeof line, f)) {
		char *ctrls = strchr(line, ':'), *path = ctrls ? strchr(ctrls + 1, ':') : NULL;
		if (!path)
			continue;
		*path++ = '\0';
		path[strcspn(path, "\n")] = '\0';
		bool match = !controller ? strcmp(ctrls + 1, "") == 0 : false;
		for (char *c = strtok(ctrls + 1, ","); controller && c; c = strtok(NULL, ","))
			match |= strcmp(c, controller) == 0;
		if (match && snprintf(out, len, "%s", path) < (int)len)
			rc = 0;
	}
	fclose(f);
	return rc;
}

/* Where a controller lives: its v2 directory if the unified hierarchy has
 * it, else its v1 hierarchy's. */
static int cgroup_dir(const char *controller, char *out, size_t len)
{
	char own[PATH_MAX], controllers[256] = "";
	struct statfs fs;
	const char *v2 = statfs(CGROUP_ROOT, &fs) == 0 && fs.f_type == CGROUP2_SUPER_MAGIC
			     ? CGROUP_ROOT
			     : CGROUP_ROOT "/unified";
	if (own_cgroup(NULL, own, sizeof own) == 0) {
		char path[PATH_MAX + 64];
		snprintf(path, sizeof path, "%s%s/cgroup.controllers", v2, own);
		int fd = open(path, O_RDONLY | O_CLOEXEC);
		if (fd >= 0) {
			ssize_t n = read(fd, controllers, sizeof controllers - 1);
			controllers[n > 0 ? n : 0] = '\0';
			close(fd);
		}
		for (char *c = strtok(controllers, " \n"); c; c = strtok(NULL, " \n"))
			if (strcmp(c, controller) == 0)
				return snprintf(out, len, "%s%s", v2, own) < (int)len ? 2 : -1;
	}
	if (own_cgroup(controller, own, sizeof own) < 0)
		return -1;
	const char *sub = strcmp(own, "/") == 0 ? "" : own;
	return snprintf(out, len, CGROUP_ROOT "/%s%s", controller, sub) < (int)len ? 1 : -1;
}

static int put(const char *dir, const char *file, const char *value)
{
	char path[PATH_MAX + 64];
	snprintf(path, sizeof path, "%s/%s", dir, file);
	int fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	size_t len = strlen(value);
	ssize_t n = write(fd, value, len);
	int err = errno;
	close(fd);
	errno = n == (ssize_t)len ? 0 : (n < 0 ? err : EIO);
	return n == (ssize_t)len ? 0 : -1;
}

/* The limit's files and values, by hierarchy version. */
static int write_limit(const char *dir, int version, const char *controller,
		       const struct shim_limits *l)
{
	char v[64];
	if (strcmp(controller, "memory") == 0) {
		snprintf(v, sizeof v, "%" PRIu64, l->memory);
		if (version == 2)
			return put(dir, "memory.max", v) || (put(dir, "memory.swap.max", "0") && errno != ENOENT);
		if (put(dir, "memory.limit_in_bytes", v) < 0)
			return -1;
		/* memsw exists only with swap accounting: without it, no swap escape to close. */
		return put(dir, "memory.memsw.limit_in_bytes", v) < 0 && errno != ENOENT ? -1 : 0;
	}
	if (strcmp(controller, "pids") == 0) {
		snprintf(v, sizeof v, "%" PRIu32, l->pids);
		return put(dir, "pids.max", v);
	}
	uint64_t quota = (uint64_t)l->cpu_millis * 100; /* per 100 ms period */
	if (version == 2) {
		snprintf(v, sizeof v, "%" PRIu64 " 100000", quota);
		return put(dir, "cpu.max", v);
	}
	snprintf(v, sizeof v, "%" PRIu64, quota);
	return put(dir, "cpu.cfs_period_us", "100000") || put(dir, "cpu.cfs_quota_us", v);
}

static bool wanted(const struct shim_limits *l, const char *controller)
{
	return strcmp(controller, "memory") == 0 ? l->memory > 0
	       : strcmp(controller, "pids") == 0 ? l->pids > 0
						 : l->cpu_millis > 0;
}

static const char *const CONTROLLERS[] = {"memory", "pids", "cpu"};

int cgroup_enter(const struct shim_config *cfg, pid_t child, const char **step)
{
	char list[3 * (PATH_MAX + 16)] = "", pid[16];
	snprintf(pid, sizeof pid, "%d", (int)child);
	const char *name = strrchr(cfg->box_dir, '/');
	name = name ? name + 1 : cfg->box_dir;
	for (size_t i = 0; i < 3; i++) {
		const char *ctrl = CONTROLLERS[i];
		if (!wanted(&cfg->limits, ctrl))
			continue;
		char parent[PATH_MAX], dir[PATH_MAX + 64];
		int version = cgroup_dir(ctrl, parent, sizeof parent);
		*step = ctrl;
		if (version < 0)
			return ENOTSUP; /* no such controller here */
		if (snprintf(dir, sizeof dir, "%s/boxlite-%s", parent, name) >= (int)sizeof dir)
			return ENAMETOOLONG;
		if (mkdir(dir, 0755) < 0 && errno != EEXIST)
			return errno;
		size_t n = strlen(list);
		snprintf(list + n, sizeof list - n, "%s %s\n", ctrl, dir);
		if (write_limit(dir, version, ctrl, &cfg->limits) < 0 || put(dir, "cgroup.procs", pid) < 0)
			return errno ? errno : EIO;
	}
	if (!list[0])
		return 0;
	char path[PATH_MAX];
	snprintf(path, sizeof path, "%s/cgroups", cfg->box_dir);
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	*step = "record the cgroups";
	if (fd < 0)
		return errno;
	int err = fd_write_full(fd, list, strlen(list)) == strlen(list) ? 0 : errno;
	close(fd);
	return err;
}

void cgroup_remove(const struct shim_config *cfg)
{
	char path[PATH_MAX], line[PATH_MAX + 16];
	snprintf(path, sizeof path, "%s/cgroups", cfg->box_dir);
	FILE *f = fopen(path, "re");
	if (!f)
		return;
	while (fgets(line, sizeof line, f)) {
		char *dir = strchr(line, ' ');
		if (!dir)
			continue;
		dir[strcspn(dir, "\n")] = '\0';
		/* The last processes of a box may still be leaving it. */
		for (int tries = 0; rmdir(dir + 1) < 0 && errno == EBUSY && tries < 2000; tries++)
			nanosleep(&(struct timespec){0, 500 * 1000}, NULL);
	}
	fclose(f);
}
