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
static int attach_loop(int fd, char *out, size_t len, const char **step)
{
	int ctl = open("/dev/loop-control", O_RDWR | O_CLOEXEC);
	*step = "open /dev/loop-control";
	if (ctl < 0)
		return -1;
	for (int tries = 0; tries < 16; tries++) {
		int n = ioctl(ctl, LOOP_CTL_GET_FREE);
		*step = "find a free loop device";
		if (n < 0)
			break;
		snprintf(out, len, "/dev/loop%d", n);
		int loop = open(out, O_RDWR | O_CLOEXEC);
		*step = "open the loop device";
		if (loop < 0)
			break;
		struct loop_config config = {.fd = (uint32_t)fd};
		config.info.lo_flags = LO_FLAGS_AUTOCLEAR;
		int rc = ioctl(loop, LOOP_CONFIGURE, &config);
		int err = errno;
		if (rc == 0) {
			close(ctl);
			return loop;
		}
		close(loop);
		errno = err;
		*step = "attach the disk image to a loop device";
		if (err != EBUSY) /* EBUSY: another process took it first */
			break;
	}
	int err = errno;
	close(ctl);
	errno = err;
	return -1;
}

int disk_mount(struct shim_config *cfg, const char **step)
{
	int n = snprintf(cfg->layer_dir, sizeof cfg->layer_dir, "%s", cfg->box_dir);
	cfg->layer_rel = cfg->disk_image ? "disk" : ".";
	if (!cfg->disk_image)
		return n < (int)sizeof cfg->layer_dir ? 0 : ENAMETOOLONG;
	if (snprintf(cfg->layer_dir, sizeof cfg->layer_dir, "%s/disk", cfg->box_dir) >=
	    (int)sizeof cfg->layer_dir)
		return ENAMETOOLONG;
	*step = "a mount namespace for the disk";
	if (unshare(CLONE_NEWNS) < 0 || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
		return errno;
	*step = "open the disk image";
	int image = open(cfg->disk_image, O_RDWR | O_CLOEXEC);
	if (image < 0)
		return errno;
	char device[32];
	int loop = attach_loop(image, device, sizeof device, step);
	int err = loop < 0 ? errno : 0;
	close(image);
	if (loop < 0)
		return err;
	*step = "mount the disk";
	if ((mkdir(cfg->layer_dir, 0700) < 0 && errno != EEXIST) ||
	    mount(device, cfg->layer_dir, "ext4", MS_NOSUID | MS_NODEV, NULL) < 0)
		err = errno;
	close(loop); /* the mount holds the device now */
	return err;
}
