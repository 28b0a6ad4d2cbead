/*
 * overlay.c - the box's root: its image's layers (read-only) under its own
 * writable layer, stacked by overlayfs.
 *
 * A few layers fit the classic mount(2) option string (one page).  More
 * go through the mount API one "lowerdir+" at a time (Linux 6.8+), so an
 * image of many layers with long cache paths still mounts.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include "shim.h"

/* mount(2) copies at most one page of options. */
#define MOUNT_DATA_MAX 4096

/* userxattr first: image layers mark opaque directories with
 * user.overlay.opaque, which unprivileged users can set.  Older kernels
 * lack volatile or userxattr: the plainer variants are for them. */
static const struct {
	bool is_volatile, userxattr;
} VARIANTS[] = {{true, true}, {false, true}, {true, false}, {false, false}};

/*
 * A box's writable layer is scratch space: "volatile" skips the upper
 * filesystem's sync when the overlay goes away, so stopping a box that
 * wrote gigabytes does not wait for the disk.  The kernel leaves a marker
 * that refuses a second volatile mount until it is removed; a restarted
 * box removes its own (its previous run ended cleanly: we reaped it).
 */
static void clear_volatile_marker(const char *layer_dir)
{
	/* work/work/incompat/volatile/dirty, all made mode 000 by the kernel. */
	static const char *const dirs[] = {"work/work", "work/work/incompat",
					   "work/work/incompat/volatile"};
	char p[PATH_MAX];
	for (size_t i = 0; i < sizeof dirs / sizeof dirs[0]; i++) {
		snprintf(p, sizeof p, "%s/%s", layer_dir, dirs[i]);
		if (chmod(p, 0700) < 0)
			return; /* nothing (more) to clear */
	}
	snprintf(p, sizeof p, "%s/work/work/incompat/volatile/dirty", layer_dir);
	unlink(p);
	for (size_t i = sizeof dirs / sizeof dirs[0]; i-- > 1;) {
		snprintf(p, sizeof p, "%s/%s", layer_dir, dirs[i]);
		rmdir(p);
	}
}

/* The classic option string; -1 with errno E2BIG when it does not fit. */
static int mount_classic(const struct shim_config *cfg, const char *rootfs, bool vol, bool ux)
{
	char opts[MOUNT_DATA_MAX];
	size_t n = (size_t)snprintf(opts, sizeof opts, "lowerdir=");
	for (unsigned i = 0; i < cfg->n_lowers && n < sizeof opts; i++)
		n += (size_t)snprintf(opts + n, sizeof opts - n, "%s%s", i ? ":" : "", cfg->lowers[i]);
	if (n < sizeof opts)
		n += (size_t)snprintf(opts + n, sizeof opts - n,
				      ",upperdir=%s/upper,workdir=%s/work%s%s", cfg->layer_rel,
				      cfg->layer_rel, vol ? ",volatile" : "", ux ? ",userxattr" : "");
	if (n >= sizeof opts) {
		errno = E2BIG;
		return -1;
	}
	return mount("overlay", rootfs, "overlay", 0, opts);
}

static int set_string(int fs, const char *key, const char *value)
{
	return fsconfig(fs, FSCONFIG_SET_STRING, key, value, 0);
}

/* The mount API, one lower layer per call. */
static int mount_by_api(const struct shim_config *cfg, const char *rootfs, bool vol, bool ux)
{
	char upper[PATH_MAX + 8], work[PATH_MAX + 8];
	snprintf(upper, sizeof upper, "%s/upper", cfg->layer_rel);
	snprintf(work, sizeof work, "%s/work", cfg->layer_rel);
	int fs = fsopen("overlay", FSOPEN_CLOEXEC);
	if (fs < 0)
		return -1;
	int rc = 0;
	for (unsigned i = 0; i < cfg->n_lowers && rc == 0; i++)
		rc = set_string(fs, "lowerdir+", cfg->lowers[i]);
	if (rc == 0)
		rc = set_string(fs, "upperdir", upper) || set_string(fs, "workdir", work) ||
		     (vol && fsconfig(fs, FSCONFIG_SET_FLAG, "volatile", NULL, 0)) ||
		     (ux && fsconfig(fs, FSCONFIG_SET_FLAG, "userxattr", NULL, 0)) ||
		     fsconfig(fs, FSCONFIG_CMD_CREATE, NULL, NULL, 0);
	int mnt = rc == 0 ? fsmount(fs, FSMOUNT_CLOEXEC, 0) : -1;
	int err = errno;
	close(fs);
	if (mnt < 0) {
		errno = err;
		return -1;
	}
	rc = move_mount(mnt, "", AT_FDCWD, rootfs, MOVE_MOUNT_F_EMPTY_PATH);
	err = errno;
	close(mnt);
	errno = err;
	return rc;
}

int mount_overlay(const struct shim_config *cfg, const char *rootfs, bl_error *e)
{
	clear_volatile_marker(cfg->layer_rel);
	int first_err = 0;
	for (size_t i = 0; i < sizeof VARIANTS / sizeof VARIANTS[0]; i++) {
		bool vol = VARIANTS[i].is_volatile, ux = VARIANTS[i].userxattr;
		int rc = mount_classic(cfg, rootfs, vol, ux);
		if (rc < 0 && errno == E2BIG)
			rc = mount_by_api(cfg, rootfs, vol, ux);
		if (rc == 0)
			return 0;
		if (!first_err) /* the first error is the one worth reporting */
			first_err = errno;
		if (errno != EINVAL && errno != EPERM)
			break;
	}
	return bl_error_errno(e, first_err, "mount overlay (%u layers)", cfg->n_lowers);
}
