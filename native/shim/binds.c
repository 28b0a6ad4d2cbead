/*
 * binds.c - host paths mounted into the box (--bind, --bind-ro).
 *
 * Each target is resolved with openat2(RESOLVE_IN_ROOT) against the new
 * root, so ".." and the image's own symlinks (absolute ones included) stay
 * inside it: an image cannot turn a bind onto a host path.  Missing
 * targets are made the same way, one component at a time.  The mount
 * itself goes through /proc/self/fd, onto exactly the inode resolved.
 *
 * No bind goes on the root itself nor on or under /proc, /dev and /sys,
 * the kernel's interfaces the box gets from the shim or not at all
 * (runc refuses them too): a target is refused as written, before
 * anything is made for it, and as resolved (an image's symlink /data ->
 * /proc is /proc).  The first is the specification's check
 * (shim_reserved_target), which boxlite_box_new runs too.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/openat2.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "shim.h"

/* Where fd ended up, relative to the root (root_path, as the kernel names
 * it); false when that cannot be told, or is not inside. */
static bool resolved_in_root(int fd, const char *root_path, char out[PATH_MAX])
{
	char link[64];
	snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
	ssize_t n = readlink(link, out, PATH_MAX - 1);
	if (n < 0)
		return false;
	out[n] = '\0';
	size_t len = strlen(root_path);
	if (strcmp(root_path, "/") == 0)
		return true;
	if (strncmp(out, root_path, len) != 0 || (out[len] != '/' && out[len] != '\0'))
		return false;
	memmove(out, out + len, (size_t)n - len + 1);
	return true;
}

static int open_in_root(int root, const char *path, int flags)
{
	struct open_how how = {
	    .flags = (uint64_t)(flags | O_CLOEXEC),
	    .resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS,
	};
	return (int)syscall(SYS_openat2, root, path, &how, sizeof how);
}

/* Create the last component of path (a directory, or an empty file) in its
 * parent, itself resolved in the root; an existing one is fine. */
static int make_in_root(int root, char *path, bool dir)
{
	char *slash = strrchr(path, '/');
	const char *name = slash + 1;
	*slash = '\0';
	int parent = open_in_root(root, path[0] ? path : "/", O_PATH | O_DIRECTORY);
	*slash = '/';
	if (parent < 0)
		return -1;
	int rc = dir ? mkdirat(parent, name, 0755)
		     : openat(parent, name, O_WRONLY | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0644);
	int err = errno;
	if (!dir && rc >= 0)
		close(rc);
	close(parent);
	errno = err;
	return rc < 0 && err != EEXIST ? -1 : 0;
}

/* The target as an O_PATH fd, its missing directories made on the way. */
static int open_target(int root, const char *target, bool dir, bl_error *e)
{
	char path[PATH_MAX];
	if (snprintf(path, sizeof path, "%s", target) >= (int)sizeof path)
		return bl_error_errno(e, ENAMETOOLONG, "bind target %s", target);
	for (char *p = path + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		int rc = make_in_root(root, path, true);
		*p = '/';
		if (rc < 0)
			return bl_error_errno(e, errno, "make the directories of bind target %s",
					      target);
	}
	size_t len = strlen(path);
	while (len > 1 && path[len - 1] == '/')
		path[--len] = '\0';
	if (make_in_root(root, path, dir) < 0)
		return bl_error_errno(e, errno, "make bind target %s", target);
	int fd = open_in_root(root, path, O_PATH);
	if (fd < 0)
		return bl_error_errno(e, errno, "open bind target %s", target);
	return fd;
}

/* A read-only remount must keep the flags the kernel locked on the source
 * mount (in a user namespace, dropping them fails with EPERM). */
static unsigned long locked_flags(const char *path)
{
	struct statvfs st;
	if (statvfs(path, &st) < 0)
		return 0;
	unsigned long flags = 0;
	static const unsigned long map[][2] = {
	    {ST_NOSUID, MS_NOSUID},	{ST_NODEV, MS_NODEV},	      {ST_NOEXEC, MS_NOEXEC},
	    {ST_NOATIME, MS_NOATIME}, {ST_NODIRATIME, MS_NODIRATIME}, {ST_RELATIME, MS_RELATIME},
	};
	for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
		if (st.f_flag & map[i][0])
			flags |= map[i][1];
	return flags;
}

/* Through a fresh fd: the one the bind went through names what is under it. */
static int make_readonly(int root, const struct shim_bind *b, bl_error *e)
{
	int fd = open_in_root(root, b->target, O_PATH);
	if (fd < 0)
		return bl_error_errno(e, errno, "open bind target %s", b->target);
	char at[64];
	snprintf(at, sizeof at, "/proc/self/fd/%d", fd);
	unsigned long flags = MS_REMOUNT | MS_BIND | MS_RDONLY | locked_flags(b->source);
	int rc = mount(NULL, at, NULL, flags, NULL);
	int err = errno;
	close(fd);
	return rc < 0 ? bl_error_errno(e, err, "make %s read-only", b->target) : 0;
}

static int bind_one(int root, const char *root_path, const struct shim_bind *b,
		    bl_error *e)
{
	if (shim_reserved_target(b->target))
		return bl_error_errno(e, EINVAL, "bind target %s: reserved (/, /proc, /dev, /sys)",
				      b->target);
	struct stat st;
	if (stat(b->source, &st) < 0)
		return bl_error_errno(e, errno, "bind source %s", b->source);
	int fd = open_target(root, b->target, S_ISDIR(st.st_mode), e);
	if (fd < 0)
		return -1;
	char where[PATH_MAX];
	if (!resolved_in_root(fd, root_path, where) || shim_reserved_target(where)) {
		close(fd);
		return bl_error_errno(e, EINVAL, "bind target %s: resolves to a reserved place",
				      b->target);
	}
	char at[64];
	snprintf(at, sizeof at, "/proc/self/fd/%d", fd);
	int rc = mount(b->source, at, NULL, MS_BIND, NULL);
	int err = errno;
	close(fd);
	if (rc < 0)
		return bl_error_errno(e, err, "bind %s on %s", b->source, b->target);
	return b->readonly ? make_readonly(root, b, e) : 0;
}

int bind_host_paths(const struct shim_config *cfg, const char *rootfs, bl_error *e)
{
	if (cfg->n_binds == 0)
		return 0;
	int root = open(rootfs, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (root < 0)
		return bl_error_errno(e, errno, "open %s", rootfs);
	char root_path[PATH_MAX], link[64];
	snprintf(link, sizeof link, "/proc/self/fd/%d", root);
	ssize_t n = readlink(link, root_path, sizeof root_path - 1);
	if (n < 0) {
		int err = errno;
		close(root);
		return bl_error_errno(e, err, "resolve %s", rootfs);
	}
	root_path[n] = '\0';
	int rc = 0;
	for (unsigned i = 0; i < cfg->n_binds && rc == 0; i++)
		rc = bind_one(root, root_path, &cfg->binds[i], e);
	close(root);
	return rc;
}
