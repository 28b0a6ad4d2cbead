/*
 * disk.c - a size limit on a box's writable layer (--disk-image IMG): the
 * layer lives in IMG, an ext4 image the host made at its size, mounted
 * through a loop device in a mount namespace of the shim's own.  The box's
 * namespaces are made from it, so only they see the mount; when the last
 * of them ends, the kernel unmounts it and the loop device lets go of the
 * file (autoclear): nothing to clean up, whatever way the shim ends.
 * Loop devices and ext4 mounts need root: elsewhere the start fails and
 * says so.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/loop.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include "shim.h"

/* A free loop device backed by fd (autoclear); its path in out. */
static int attach_loop(int fd, char *out, size_t len, bl_error *e)
{
	int ctl = open("/dev/loop-control", O_RDWR | O_CLOEXEC);
	if (ctl < 0)
		return bl_error_errno(e, errno, "open /dev/loop-control");
	for (int tries = 0; tries < 16; tries++) {
		int n = ioctl(ctl, LOOP_CTL_GET_FREE);
		if (n < 0) {
			bl_error_errno(e, errno, "find a free loop device");
			break;
		}
		snprintf(out, len, "/dev/loop%d", n);
		int loop = open(out, O_RDWR | O_CLOEXEC);
		if (loop < 0) {
			bl_error_errno(e, errno, "open the loop device");
			break;
		}
		struct loop_config config = {.fd = (uint32_t)fd};
		config.info.lo_flags = LO_FLAGS_AUTOCLEAR;
		int rc = ioctl(loop, LOOP_CONFIGURE, &config);
		int err = errno;
		if (rc == 0) {
			close(ctl);
			return loop;
		}
		close(loop);
		bl_error_errno(e, err, "attach the disk image to a loop device");
		if (err != EBUSY) /* EBUSY: another process took it first */
			break;
	}
	close(ctl);
	return -1;
}

int disk_mount(struct shim_config *cfg, bl_error *e)
{
	int n = snprintf(cfg->layer_dir, sizeof cfg->layer_dir, "%s", cfg->box_dir);
	cfg->layer_rel = cfg->disk_image ? "disk" : ".";
	if (n >= (int)sizeof cfg->layer_dir ||
	    (cfg->disk_image && snprintf(cfg->layer_dir, sizeof cfg->layer_dir, "%s/disk",
					 cfg->box_dir) >= (int)sizeof cfg->layer_dir))
		return bl_error_errno(e, ENAMETOOLONG, "box directory");
	if (!cfg->disk_image)
		return 0;
	if (unshare(CLONE_NEWNS) < 0 || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
		return bl_error_errno(e, errno, "a mount namespace for the disk");
	int image = open(cfg->disk_image, O_RDWR | O_CLOEXEC);
	if (image < 0)
		return bl_error_errno(e, errno, "open the disk image");
	char device[32];
	int loop = attach_loop(image, device, sizeof device, e);
	close(image);
	if (loop < 0)
		return -1;
	int rc = 0;
	if ((mkdir(cfg->layer_dir, 0700) < 0 && errno != EEXIST) ||
	    mount(device, cfg->layer_dir, "ext4", MS_NOSUID | MS_NODEV, NULL) < 0)
		rc = bl_error_errno(e, errno, "mount the disk");
	close(loop); /* the mount holds the device now */
	return rc;
}
