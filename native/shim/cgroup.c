/*
 * cgroup.c - a box's resource limits: memory (no swap beyond it), pids and
 * CPU, in a cgroup of the box's own, per controller.
 *
 * cgroup v2 where the unified hierarchy has the controller (the box's
 * cgroup then goes under a boxlite parent, see v2_parent), else under the
 * shim's own cgroup in the controller's v1 hierarchy: machines have
 * either, or a mix.  A limit that cannot be set (no controller, or no
 * right to make a cgroup: rootless without delegation) fails the start
 * with the reason; it is never silently dropped.  The directories made
 * are listed in DIR/cgroups ("<controller> <path>" per line) for the
 * host, which reads the OOM counter there, and removed once the box is
 * gone.
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

/* The shim's own cgroup in controller's v1 hierarchy (NULL: in v2), from
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
		bool match = !controller && !ctrls[1];
		for (char *c = strtok(ctrls + 1, ","); controller && c; c = strtok(NULL, ","))
			match |= strcmp(c, controller) == 0;
		if (match && snprintf(out, len, "%s", path) < (int)len)
			rc = 0;
	}
	fclose(f);
	return rc;
}

/* The unified hierarchy's mount: /sys/fs/cgroup on a v2 machine, else
 * the hybrid layout's /sys/fs/cgroup/unified. */
static const char *v2_root(void)
{
	struct statfs fs;
	return statfs(CGROUP_ROOT, &fs) == 0 && fs.f_type == CGROUP2_SUPER_MAGIC
		   ? CGROUP_ROOT
		   : CGROUP_ROOT "/unified";
}

/* Whether the unified hierarchy has the controller (its root lists it). */
static bool in_v2(const char *controller)
{
	char path[PATH_MAX], controllers[256] = "";
	snprintf(path, sizeof path, "%s/cgroup.controllers", v2_root());
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return false;
	ssize_t n = read(fd, controllers, sizeof controllers - 1);
	controllers[n > 0 ? n : 0] = '\0';
	close(fd);
	for (char *c = strtok(controllers, " \n"); c; c = strtok(NULL, " \n"))
		if (strcmp(c, controller) == 0)
			return true;
	return false;
}

/* The boxes' parent in v2.  v2 allows limits only in leaves whose
 * ancestors hand the controller down, and a cgroup with processes cannot
 * hand one down (except the root): the shim's own cgroup, which holds the
 * embedding program, is unusable.  As root, boxes get a parent at the
 * top, <v2 root>/boxlite, as runtimes using cgroupfs do.  Otherwise it is
 * beside the shim's own cgroup: a service manager that delegates a subtree
 * to a user (systemd's user@.service) runs the user's programs in leaves
 * of it, whose parent the user may write; without delegation, the user
 * may not, and the start fails saying so. */
static int v2_parent(char *out, size_t len)
{
	char own[PATH_MAX] = "";
	if (geteuid() != 0) {
		char *last = own_cgroup(NULL, own, sizeof own) == 0 ? strrchr(own, '/') : NULL;
		if (!last)
			return -1;
		*last = '\0'; /* "/a/b" -> "/a", "/" -> "" */
	}
	return snprintf(out, len, "%s%s/boxlite", v2_root(), own) < (int)len ? 0 : -1;
}

/* Where the box's cgroup for a controller goes: 2 and the v2 parent, 1
 * and the shim's cgroup in the controller's v1 hierarchy, or -1. */
static int cgroup_dir(const char *controller, char *out, size_t len)
{
	if (in_v2(controller))
		return v2_parent(out, len) == 0 ? 2 : -1;
	char own[PATH_MAX];
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

/* Swap limits exist only with swap accounting: without it, no swap
 * escape to close. */
static int put_swap(const char *dir, const char *file, const char *value)
{
	return put(dir, file, value) < 0 && errno != ENOENT ? -1 : 0;
}

/* The limit's files and values, by hierarchy version; 0 or -1 (errno). */
static int write_limit(const char *dir, int version, const char *controller,
		       const struct shim_limits *l)
{
	char v[64];
	if (strcmp(controller, "memory") == 0) {
		snprintf(v, sizeof v, "%" PRIu64, l->memory);
		if (version == 2)
			return put(dir, "memory.max", v) < 0 ? -1 : put_swap(dir, "memory.swap.max", "0");
		if (put(dir, "memory.limit_in_bytes", v) < 0)
			return -1;
		return put_swap(dir, "memory.memsw.limit_in_bytes", v);
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
	return put(dir, "cpu.cfs_period_us", "100000") < 0 ? -1 : put(dir, "cpu.cfs_quota_us", v);
}

static bool wanted(const struct shim_limits *l, const char *controller)
{
	return strcmp(controller, "memory") == 0 ? l->memory > 0
	       : strcmp(controller, "pids") == 0 ? l->pids > 0
						 : l->cpu_millis > 0;
}

static const char *const CONTROLLERS[] = {"memory", "pids", "cpu"};

/* v2: make the boxes' parent and have its parent and it hand the
 * controller down (writing what is already there changes nothing). */
static int hand_down(const char *parent, const char *controller)
{
	char plus[16], above[PATH_MAX];
	snprintf(plus, sizeof plus, "+%s", controller);
	snprintf(above, sizeof above, "%s", parent);
	*strrchr(above, '/') = '\0'; /* parent is "<v2 root>.../boxlite" */
	if (mkdir(parent, 0755) < 0 && errno != EEXIST)
		return errno;
	if (put(above, "cgroup.subtree_control", plus) < 0 ||
	    put(parent, "cgroup.subtree_control", plus) < 0)
		return errno ? errno : EIO;
	return 0;
}

/* One controller's cgroup for the box: made (and listed in cfg), its
 * limit set; 0, or -1 with *e naming the step (the caller names the
 * controller).  A default (optional) limit only in v2: joining a v1
 * cgroup costs each start a grace period of RCU (~5 ms), worth paying for
 * a limit asked for only. */
static int prepare_one(struct shim_config *cfg, const char *ctrl, const char *name,
		       bool optional, bl_error *e)
{
	char parent[PATH_MAX];
	struct shim_cgroup *cg = &cfg->cgroups[cfg->n_cgroups];
	int version = cgroup_dir(ctrl, parent, sizeof parent), err;
	if (version < 0)
		return bl_error_errno(e, ENOTSUP, "no such controller here");
	if (optional && version == 1)
		return bl_error_errno(e, ENOTSUP, "a v1 controller here");
	if (snprintf(cg->dir, sizeof cg->dir, "%s/boxlite-%s", parent, name) >= (int)sizeof cg->dir)
		return bl_error_errno(e, ENAMETOOLONG, "name a cgroup in %s", parent);
	if (version == 2 && (err = hand_down(parent, ctrl)) != 0)
		return bl_error_errno(e, err, "hand the controller down to %s", parent);
	if (mkdir(cg->dir, 0755) < 0 && errno != EEXIST)
		return bl_error_errno(e, errno, "make %s", cg->dir);
	cg->controller = ctrl;
	cg->version = version;
	cfg->n_cgroups++;
	if (write_limit(cg->dir, version, ctrl, &cfg->limits) < 0)
		return bl_error_errno(e, errno ? errno : EIO, "set the limit in %s", cg->dir);
	return 0;
}

/* A default limit (--pids-optional) that cannot be set here is left out,
 * and the shim's log says why (*why, the step in ctrl that failed): the box
 * starts without it.  Its cgroup, cgroups[at] if listed, goes. */
static void drop_optional(struct shim_config *cfg, unsigned at, const char *ctrl,
			  const bl_error *why)
{
	if (at < cfg->n_cgroups) {
		bool shared = false;
		for (unsigned i = 0; i < cfg->n_cgroups; i++)
			shared |= i != at && strcmp(cfg->cgroups[i].dir, cfg->cgroups[at].dir) == 0;
		if (!shared)
			(void)rmdir(cfg->cgroups[at].dir); /* empty: nothing joined yet */
		memmove(&cfg->cgroups[at], &cfg->cgroups[at + 1],
			(cfg->n_cgroups - at - 1) * sizeof cfg->cgroups[0]);
		cfg->n_cgroups--;
	}
	fprintf(stderr, "boxlite-shim: the default limit is not set: %s: %s\n", ctrl, why->msg);
}

/* DIR/cgroups, where the host reads the OOM counter; none without any. */
static int record(const struct shim_config *cfg, bl_error *e)
{
	char path[PATH_MAX];
	snprintf(path, sizeof path, "%s/cgroups", cfg->box_dir);
	int err = 0;
	if (!cfg->n_cgroups) { /* an earlier run's is out of date */
		err = unlink(path) < 0 && errno != ENOENT ? errno : 0;
	} else {
		FILE *f = fopen(path, "we");
		if (!f)
			return bl_error_errno(e, errno, "limit record the cgroups");
		for (unsigned i = 0; i < cfg->n_cgroups; i++)
			fprintf(f, "%s %s\n", cfg->cgroups[i].controller, cfg->cgroups[i].dir);
		err = ferror(f) ? EIO : 0;
		if (fclose(f) != 0 && !err)
			err = errno;
	}
	return err ? bl_error_errno(e, err, "limit record the cgroups") : 0;
}

int cgroup_prepare(struct shim_config *cfg, int *into, bl_error *e)
{
	const char *name = strrchr(cfg->box_dir, '/');
	name = name ? name + 1 : cfg->box_dir;
	*into = -1;
	for (size_t i = 0; i < 3; i++) {
		const char *ctrl = CONTROLLERS[i];
		if (!wanted(&cfg->limits, ctrl))
			continue;
		bool optional = cfg->limits.pids_optional && strcmp(ctrl, "pids") == 0;
		unsigned listed = cfg->n_cgroups;
		if (prepare_one(cfg, ctrl, name, optional, e) == 0)
			continue;
		if (!optional)
			return bl_error_wrap(e, "limit %s", ctrl);
		drop_optional(cfg, listed, ctrl, e);
	}
	if (record(cfg, e) < 0)
		return -1;
	for (unsigned i = 0; i < cfg->n_cgroups; i++) {
		const struct shim_cgroup *cg = &cfg->cgroups[i];
		if (cg->version != 2 || *into >= 0)
			continue; /* one v2 cgroup serves every v2 controller */
		if ((*into = open(cg->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0)
			return bl_error_errno(e, errno, "limit %s: open %s", cg->controller,
					      cg->dir);
	}
	return 0;
}

int cgroup_unjoinable(struct shim_config *cfg, int err, bl_error *e)
{
	unsigned at = cfg->n_cgroups;
	bl_error_errno(e, err, "join the box's cgroup");
	for (unsigned i = 0; i < cfg->n_cgroups; i++) {
		const struct shim_cgroup *cg = &cfg->cgroups[i];
		if (cg->version != 2)
			continue;
		bl_error_errno(e, err, "join %s", cg->dir);
		if (strcmp(cg->controller, "pids") != 0 || !cfg->limits.pids_optional)
			return bl_error_wrap(e, "limit %s", cg->controller); /* a limit asked for */
		at = i;
	}
	drop_optional(cfg, at, "pids", e);
	return record(cfg, e);
}

int cgroup_join(const struct shim_config *cfg, pid_t child, bl_error *e)
{
	char pid[16];
	snprintf(pid, sizeof pid, "%d", (int)child);
	for (unsigned i = 0; i < cfg->n_cgroups; i++) {
		const struct shim_cgroup *cg = &cfg->cgroups[i];
		if (cg->version == 2)
			continue; /* born there (CLONE_INTO_CGROUP) */
		if (put(cg->dir, "cgroup.procs", pid) < 0)
			return bl_error_errno(e, errno ? errno : EIO, "limit %s: join %s",
					      cg->controller, cg->dir);
	}
	return 0;
}

void cgroup_remove(const struct shim_config *cfg)
{
	for (unsigned i = 0; i < cfg->n_cgroups; i++) {
		/* The last processes of a box may still be leaving it; a v2
		 * cgroup shared by several controllers goes with the first. */
		const char *dir = cfg->cgroups[i].dir;
		for (int tries = 0; rmdir(dir) < 0 && errno == EBUSY && tries < 2000; tries++)
			nanosleep(&(struct timespec){0, 500 * 1000}, NULL);
	}
}
