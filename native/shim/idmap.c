/*
 * idmap.c - when the runtime is root: root in the box is not root on the
 * host, but the first of 65536 otherwise unused ids (a subordinate range:
 * /etc/subuid's entry for "boxlite" or "root", else ID_BASE_DEFAULT).
 *
 * The box's user namespace maps that range.  What the box reads (its
 * image's layers, volumes, the host image's directories) is owned on disk
 * by the runtime's ids, so the shim gives the box idmapped clones of them:
 * made in a mount namespace of the shim's own before the box is cloned, with
 * a throwaway user namespace of the same mapping, they show host root's
 * files as the box's root's.  The box's writable layer (upper/, work/) is
 * owned by the range's root; what the box writes there belongs to the range.
 *
 * In a vm's guest (--guest) the range starts at --guest-uid/--guest-gid, the
 * host runtime's ids, which own the image's files there (0 for a root
 * runtime: the guest's own ids one to one): the guest is not the host, so
 * its root need not be hidden, and the layers and volumes (virtiofs, which
 * takes no id-mapped mounts) need no clones.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "shim.h"

#define ID_COUNT 65536
#define ID_BASE_DEFAULT 1000000000u

/* The first range of at least ID_COUNT ids /etc/subuid (or subgid) gives
 * one of names; the default otherwise. */
static uint32_t subordinate_base(const char *file)
{
	static const char *const names[] = {"boxlite", "root"};
	FILE *f = fopen(file, "re");
	char line[256];
	uint32_t found = 0;
	for (size_t n = 0; f && !found && n < sizeof names / sizeof names[0]; n++) {
		rewind(f);
		while (!found && fgets(line, sizeof line, f)) {
			char name[64];
			unsigned long start, count;
			if (sscanf(line, "%63[^:]:%lu:%lu", name, &start, &count) == 3 &&
			    strcmp(name, names[n]) == 0 && count >= ID_COUNT && start > 0 &&
			    start + ID_COUNT <= UINT32_MAX)
				found = (uint32_t)start;
		}
	}
	if (f)
		fclose(f);
	return found ? found : ID_BASE_DEFAULT;
}

bool idmap_wanted(struct shim_config *cfg)
{
	if (geteuid() != 0)
		return false;
	if (cfg->guest) { /* the VM is the boundary: the guest's ids, from the image's owner */
		cfg->uid_base = cfg->guest_uid;
		cfg->gid_base = cfg->guest_gid;
		return true;
	}
	cfg->uid_base = subordinate_base("/etc/subuid");
	cfg->gid_base = subordinate_base("/etc/subgid");
	return true;
}

static int write_map(pid_t pid, const char *file, uint32_t base)
{
	char path[64], map[64];
	snprintf(path, sizeof path, "/proc/%d/%s", (int)pid, file);
	snprintf(map, sizeof map, "0 %" PRIu32 " %d\n", base, ID_COUNT);
	int fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	size_t len = strlen(map);
	int rc = fd_write_full(fd, map, len) == len ? 0 : -1;
	int err = errno;
	close(fd);
	errno = err;
	return rc;
}

int idmap_write(const struct shim_config *cfg, pid_t pid, bl_error *e)
{
	if (write_map(pid, "uid_map", cfg->uid_base) < 0 ||
	    write_map(pid, "gid_map", cfg->gid_base) < 0)
		return bl_error_errno(e, errno, "write the box's id maps");
	return 0;
}

/* A user namespace with the box's mapping, as an fd (its process is gone). */
static int mapping_userns(const struct shim_config *cfg, bl_error *e)
{
	int ready[2];
	if (pipe2(ready, O_CLOEXEC) < 0)
		return bl_error_errno(e, errno, "a user namespace to map ids with");
	pid_t pid = fork();
	if (pid < 0) {
		int err = errno;
		close(ready[0]);
		close(ready[1]);
		return bl_error_errno(e, err, "a user namespace to map ids with");
	}
	if (pid == 0) {
		char c;
		close(ready[1]);
		_exit(unshare(CLONE_NEWUSER) < 0 || read(ready[0], &c, 1) < 0 ? 1 : 0);
	}
	close(ready[0]);
	char path[64];
	snprintf(path, sizeof path, "/proc/%d/ns/user", (int)pid);
	int fd = -1;
	bl_error_errno(e, ETIMEDOUT, "a user namespace to map ids with");
	/* The child unshares on its own time: wait until its namespace is new. */
	for (int tries = 0; tries < 1000; tries++) {
		struct stat mine, its;
		if (stat("/proc/self/ns/user", &mine) == 0 && stat(path, &its) == 0 &&
		    mine.st_ino != its.st_ino) {
			if (write_map(pid, "uid_map", cfg->uid_base) < 0 ||
			    write_map(pid, "gid_map", cfg->gid_base) < 0 ||
			    (fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
				bl_error_errno(e, errno, "a user namespace to map ids with");
			break;
		}
		usleep(100);
	}
	close(ready[1]); /* lets it exit; the fd keeps the namespace */
	while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
		;
	return fd;
}

/* An idmapped clone of source, mounted on at (made, a dir or a file). */
static int idmapped_clone(const char *source, const char *at, int userns)
{
	struct stat st;
	if (stat(source, &st) < 0)
		return -1;
	if (S_ISDIR(st.st_mode)) {
		if (mkdir(at, 0755) < 0 && errno != EEXIST)
			return -1;
	} else {
		int fd = open(at, O_WRONLY | O_CREAT | O_CLOEXEC, 0644); /* a file's mount point */
		if (fd < 0)
			return -1;
		close(fd);
	}
	int tree = (int)syscall(SYS_open_tree, AT_FDCWD, source, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC);
	if (tree < 0)
		return -1;
	struct mount_attr attr = {.attr_set = MOUNT_ATTR_IDMAP, .userns_fd = (uint64_t)userns};
	int rc = (int)syscall(SYS_mount_setattr, tree, "", AT_EMPTY_PATH, &attr, sizeof attr);
	if (rc == 0)
		rc = (int)syscall(SYS_move_mount, tree, "", AT_FDCWD, at, MOVE_MOUNT_F_EMPTY_PATH);
	int err = errno;
	close(tree);
	errno = err;
	return rc;
}

int idmap_mounts(struct shim_config *cfg, bl_error *e)
{
	if (unshare(CLONE_NEWNS) < 0 || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
		return bl_error_errno(e, errno, "a mount namespace for the id-mapped layers");
	int userns = mapping_userns(cfg, e);
	if (userns < 0)
		return -1;
	int rc = 0;
	char dir[PATH_MAX];
	snprintf(dir, sizeof dir, "%s/mapped", cfg->box_dir);
	/* The box's root must search the box directory (its cwd) and this one;
	 * nobody else can reach them (the home above is 0700). */
	if ((mkdir(dir, 0711) < 0 && errno != EEXIST) || chmod(dir, 0711) < 0 ||
	    chmod(cfg->box_dir, 0711) < 0)
		rc = bl_error_errno(e, errno, "make the id-mapped mount points");
	/* The box mounts the clones: <box>/mapped/l<i> for each layer (short
	 * paths, too, in its overlay options), b<i> for each bind source. */
	for (unsigned i = 0; !rc && i < cfg->n_lowers + cfg->n_binds; i++) {
		bool layer = i < cfg->n_lowers;
		const char **source = layer ? &cfg->lowers[i] : &cfg->binds[i - cfg->n_lowers].source;
		char at[PATH_MAX + 16], *rel;
		snprintf(at, sizeof at, "%s/%c%u", dir, layer ? 'l' : 'b', i);
		/* The box finds it relative to the box directory (its cwd). */
		if (asprintf(&rel, "mapped/%c%u", layer ? 'l' : 'b', i) < 0)
			rc = bl_error_errno(e, ENOMEM, "%s", *source);
		else if (idmapped_clone(*source, at, userns) < 0)
			rc = bl_error_errno(e, errno, "%s", *source);
		else
			*source = rel; /* the shim's until it exits */
	}
	close(userns);
	return rc ? rc : idmap_own_layer(cfg, e);
}

int idmap_own_layer(const struct shim_config *cfg, bl_error *e)
{
	/* The writable layer belongs to the range's root. */
	static const char *const own[] = {"upper", "work"};
	for (size_t i = 0; i < 2; i++) {
		char path[PATH_MAX + 8];
		snprintf(path, sizeof path, "%s/%s", cfg->layer_dir, own[i]);
		if (chown(path, cfg->uid_base, cfg->gid_base) < 0)
			return bl_error_errno(e, errno, "give the writable layer to the box's root");
	}
	return 0;
}
