/*
 * system.c - the guest's kernel brought up by its init (guest.h): the
 * filesystems every box needs, the modules of the initramfs, the port and
 * the disks, and power-off.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <net/if.h>
#include <net/route.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/reboot.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "common/fdio.h"
#include "guest.h"

/* Devices appear as their drivers probe, a moment after the module loads. */
#define DEVICE_WAIT_MS 10000

static int mount_one(const char *src, const char *dir, const char *type, unsigned long flags,
		     const char *data, bl_error *e)
{
	if (mkdir(dir, 0755) < 0 && errno != EEXIST)
		return bl_error_errno(e, errno, "mkdir %s", dir);
	if (mount(src, dir, type, flags, data) < 0)
		return bl_error_errno(e, errno, "mount %s on %s", type, dir);
	return 0;
}

/* Copy file from the initramfs to the new root. */
static int copy_file(const char *name, const char *to, bl_error *e)
{
	char dst[256];
	snprintf(dst, sizeof dst, "%s%s", to, name);
	int in = open(name, O_RDONLY | O_CLOEXEC);
	int out = open(dst, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0755);
	char buf[65536];
	ssize_t n = 0;
	while (in >= 0 && out >= 0 && (n = read(in, buf, sizeof buf)) > 0)
		if (fd_write_full(out, buf, (size_t)n) != (size_t)n) {
			n = -1;
			break;
		}
	int err = errno;
	if (in >= 0)
		close(in);
	if (out >= 0)
		close(out);
	if (in < 0 || out < 0 || n < 0)
		return bl_error_errno(e, err, "copy %s", name);
	unlink(name); /* the initramfs's pages are freed with it */
	return 0;
}

/*
 * The initramfs is rootfs, which pivot_root cannot leave, and the shim
 * pivots into each box's root: so the guest's root becomes a tmpfs holding
 * what the shim needs, moved over / (as switch_root does).
 */
int guest_switch_root(bl_error *e)
{
	static const char *const keep[] = {GUEST_SHIM, GUEST_AGENT};
	const char *to = "/sysroot";
	if (mount_one("tmpfs", to, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755", e) < 0)
		return -1;
	for (size_t i = 0; i < sizeof keep / sizeof keep[0]; i++)
		if (copy_file(keep[i], to, e) < 0)
			return -1;
	if (chdir(to) < 0 || mount(".", "/", NULL, MS_MOVE, NULL) < 0 || chroot(".") < 0 ||
	    chdir("/") < 0)
		return bl_error_errno(e, errno, "move the guest's root");
	return 0;
}

int guest_mount_system(bl_error *e)
{
	const unsigned long nosuid = MS_NOSUID | MS_NODEV | MS_NOEXEC;
	if (mount_one("proc", "/proc", "proc", nosuid, NULL, e) < 0 ||
	    mount_one("sysfs", "/sys", "sysfs", nosuid, NULL, e) < 0 ||
	    mount_one("devtmpfs", "/dev", "devtmpfs", MS_NOSUID | MS_NOEXEC, "mode=0755", e) < 0 ||
	    mount_one("cgroup2", "/sys/fs/cgroup", "cgroup2", nosuid, NULL, e) < 0 ||
	    mount_one("tmpfs", "/run", "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755", e) < 0)
		return -1;
	return 0;
}

int guest_load_modules(bl_error *e)
{
	FILE *order = fopen("/modules/order", "re");
	if (!order)
		return errno == ENOENT ? 0 : bl_error_errno(e, errno, "/modules/order");
	char name[256], path[300];
	int rc = 0;
	while (rc == 0 && fscanf(order, "%255s", name) == 1) {
		snprintf(path, sizeof path, "/modules/%s", name);
		int fd = open(path, O_RDONLY | O_CLOEXEC);
		if (fd < 0 || (syscall(SYS_finit_module, fd, "", 0) < 0 && errno != EEXIST))
			rc = bl_error_errno(e, errno, "load module %s", name);
		if (fd >= 0)
			close(fd);
	}
	fclose(order);
	return rc;
}

static void nap(void)
{
	struct timespec ts = {0, 5 * 1000 * 1000};
	nanosleep(&ts, NULL);
}

/* The first word of a sysfs file, into out. */
static bool read_word(const char *path, char *out, size_t cap)
{
	FILE *f = fopen(path, "re");
	if (!f)
		return false;
	bool ok = fgets(out, (int)cap, f) != NULL;
	fclose(f);
	if (ok)
		out[strcspn(out, "\n")] = '\0';
	return ok;
}

/* The entry of dir whose attr file holds want, as /dev/<entry>, waiting
 * for it to appear. */
static int find_device(const char *dir, const char *attr, const char *want, char *dev,
		       size_t cap, bl_error *e)
{
	for (int waited = 0; waited < DEVICE_WAIT_MS; waited += 5, nap()) {
		DIR *d = opendir(dir);
		struct dirent *ent;
		while (d && (ent = readdir(d))) {
			char path[512], got[128];
			if (ent->d_name[0] == '.')
				continue;
			snprintf(path, sizeof path, "%s/%s/%s", dir, ent->d_name, attr);
			if (read_word(path, got, sizeof got) && strcmp(got, want) == 0) {
				snprintf(dev, cap, "/dev/%s", ent->d_name);
				closedir(d);
				if (access(dev, F_OK) == 0)
					return 0;
				d = NULL;
				break;
			}
		}
		if (d)
			closedir(d);
	}
	return bl_error_set(e, ENODEV, "no device %s in %s", want, dir);
}

int guest_open_port(bl_error *e)
{
	char dev[300];
	if (find_device("/sys/class/virtio-ports", "name", GUEST_PORT_NAME, dev, sizeof dev, e) < 0)
		return -1;
	int fd = open(dev, O_RDWR | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0)
		return bl_error_errno(e, errno, "open %s", dev);
	return fd;
}

int guest_mount_disk(const char *serial, const char *dir, bool readonly, bl_error *e)
{
	char dev[300];
	if (find_device("/sys/block", "serial", serial, dev, sizeof dev, e) < 0)
		return -1;
	unsigned long flags = MS_NOATIME | (readonly ? MS_RDONLY : 0);
	return mount_one(dev, dir, "ext4", flags, readonly ? "noload" : NULL, e);
}

static int set_addr(int fd, unsigned long req, const char *dev, const char *addr, bl_error *e)
{
	struct ifreq ifr = {0};
	snprintf(ifr.ifr_name, sizeof ifr.ifr_name, "%s", dev);
	struct sockaddr_in *sin = (struct sockaddr_in *)&ifr.ifr_addr;
	sin->sin_family = AF_INET;
	inet_pton(AF_INET, addr, &sin->sin_addr);
	return ioctl(fd, req, &ifr) < 0 ? bl_error_errno(e, errno, "%s %s", dev, addr) : 0;
}

static int link_up(int fd, const char *dev, int mtu, bl_error *e)
{
	struct ifreq ifr = {0};
	snprintf(ifr.ifr_name, sizeof ifr.ifr_name, "%s", dev);
	if (mtu) {
		ifr.ifr_mtu = mtu;
		if (ioctl(fd, SIOCSIFMTU, &ifr) < 0)
			return bl_error_errno(e, errno, "%s mtu", dev);
	}
	if (ioctl(fd, SIOCGIFFLAGS, &ifr) < 0)
		return bl_error_errno(e, errno, "%s flags", dev);
	ifr.ifr_flags |= IFF_UP;
	return ioctl(fd, SIOCSIFFLAGS, &ifr) < 0 ? bl_error_errno(e, errno, "%s up", dev) : 0;
}

static int default_route(int fd, bl_error *e)
{
	struct rtentry rt = {0};
	struct sockaddr_in *gw = (struct sockaddr_in *)&rt.rt_gateway;
	struct sockaddr_in *dst = (struct sockaddr_in *)&rt.rt_dst;
	struct sockaddr_in *mask = (struct sockaddr_in *)&rt.rt_genmask;
	gw->sin_family = dst->sin_family = mask->sin_family = AF_INET;
	inet_pton(AF_INET, GUEST_NET_GATEWAY, &gw->sin_addr);
	rt.rt_flags = RTF_UP | RTF_GATEWAY;
	return ioctl(fd, SIOCADDRT, &rt) < 0 ? bl_error_errno(e, errno, "default route") : 0;
}

int guest_network_up(bl_error *e)
{
	int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return bl_error_errno(e, errno, "socket");
	int rc = link_up(fd, "lo", 0, e);
	if (rc == 0 && access("/sys/class/net/" GUEST_NET_DEVICE, F_OK) == 0)
		rc = set_addr(fd, SIOCSIFADDR, GUEST_NET_DEVICE, GUEST_NET_ADDR, e) < 0 ||
			     set_addr(fd, SIOCSIFNETMASK, GUEST_NET_DEVICE, GUEST_NET_MASK, e) < 0 ||
			     link_up(fd, GUEST_NET_DEVICE, GUEST_NET_MTU, e) < 0 ||
			     default_route(fd, e) < 0
			 ? -1
			 : 0;
	close(fd);
	return rc;
}

int guest_mount_volumes(char **argv, bl_error *e)
{
	if (mkdir(GUEST_VOLUME_DIR, 0755) < 0 && errno != EEXIST)
		return bl_error_errno(e, errno, "mkdir %s", GUEST_VOLUME_DIR);
	const size_t prefix = strlen(GUEST_VOLUME_DIR "/");
	for (char **a = argv; *a && a[1]; a++) {
		bool ro = strcmp(*a, "--bind-ro") == 0 || strcmp(*a, "--lower") == 0;
		if ((!ro && strcmp(*a, "--bind") != 0) ||
		    strncmp(a[1], GUEST_VOLUME_DIR "/", prefix) != 0)
			continue;
		const char *tag = a[1] + prefix;
		if (mount_one(tag, a[1], "virtiofs", MS_NOSUID | MS_NODEV | (ro ? MS_RDONLY : 0), NULL,
			      e) < 0)
			return -1;
	}
	return 0;
}

bool guest_cmdline_has(const char *word)
{
	char line[4096];
	if (!read_word("/proc/cmdline", line, sizeof line))
		return false;
	size_t n = strlen(word);
	for (char *p = line; (p = strstr(p, word)); p += n)
		if ((p == line || p[-1] == ' ') && (p[n] == ' ' || p[n] == '\0'))
			return true;
	return false;
}

_Noreturn void guest_power_off(void)
{
	sync();
	if (umount2(GUEST_BOX_DIR, 0) < 0 && errno != EINVAL)
		fprintf(stderr, "boxlite-guest: unmount the box's disk: %s\n", strerror(errno));
	sync();
	reboot(RB_POWER_OFF);
	for (;;) /* PID 1 must not exit: that panics the kernel */
		pause();
}
