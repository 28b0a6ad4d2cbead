/*
 * sandbox.c - inside the new namespaces: mounts, pivot_root, hostname,
 * loopback, then execveat of the agent as PID 1.
 *
 * Mount targets inside the root are created when missing and refused when
 * they are not plain directories or files: a symlink placed by the image
 * must never redirect a mount onto a host path.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <net/if.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "shim.h"

static const char *const DEV_NODES[] = {"null", "zero", "full", "random", "urandom", "tty"};

static int path_in(char *out, const char *root, const char *rel, bl_error *e)
{
	if (snprintf(out, PATH_MAX, "%s/%s", root, rel) >= PATH_MAX)
		return bl_error_errno(e, ENAMETOOLONG, "path %s/%s", root, rel);
	return 0;
}

/* A directory at path, created if absent; never a symlink. */
static int ensure_dir(const char *path, mode_t mode, bl_error *e)
{
	if (mkdir(path, mode) < 0 && errno != EEXIST)
		return bl_error_errno(e, errno, "mkdir %s", path);
	struct stat st;
	if (lstat(path, &st) < 0)
		return bl_error_errno(e, errno, "stat %s", path);
	if (!S_ISDIR(st.st_mode))
		return bl_error_errno(e, ENOTDIR, "mount point %s", path);
	return 0;
}

static int ensure_file(const char *path, bl_error *e)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0644);
	if (fd < 0)
		return bl_error_errno(e, errno, "create %s", path);
	close(fd);
	return 0;
}

static int do_mount(const char *src, const char *dst, const char *type, unsigned long flags,
		    const char *data, bl_error *e)
{
	if (mount(src, dst, type, flags, data) < 0)
		return bl_error_errno(e, errno, "mount %s on %s", type ? type : src ? src : "bind",
				      dst);
	return 0;
}

/* The listening socket and the main command's fds are the agent's to keep;
 * its stdout and stderr become shim.log's pipe (no host file: logs.c). */
static int pass_fds(const struct shim_config *cfg, bl_error *e)
{
	if (dup2(cfg->messages_fd, STDOUT_FILENO) < 0 || dup2(cfg->messages_fd, STDERR_FILENO) < 0)
		return bl_error_errno(e, errno, "give the agent shim.log's pipe");
	if (fcntl(cfg->listen_fd, F_SETFD, 0) < 0)
		return bl_error_errno(e, errno, "pass the listening socket");
	for (size_t i = 0; cfg->main && i < 4; i++)
		if (fcntl(cfg->main_fds[i], F_SETFD, 0) < 0)
			return bl_error_errno(e, errno, "pass the main command's fds");
	return 0;
}

/* A tmpfs of the box's (/tmp, /dev/shm), of at most cfg->tmp_size bytes. */
static int mount_tmp(const struct shim_config *cfg, const char *dir, bl_error *e)
{
	char opts[64] = "mode=1777";
	if (cfg->tmp_size)
		snprintf(opts, sizeof opts, "mode=1777,size=%llu", (unsigned long long)cfg->tmp_size);
	if (ensure_dir(dir, 01777, e) < 0)
		return -1;
	return do_mount("tmpfs", dir, "tmpfs", MS_NOSUID | MS_NODEV, opts, e);
}

static int mount_dev(const struct shim_config *cfg, const char *root, bl_error *e)
{
	char dev[PATH_MAX], p[PATH_MAX], host[32];
	if (path_in(dev, root, "dev", e) < 0 || ensure_dir(dev, 0755, e) < 0 ||
	    do_mount("tmpfs", dev, "tmpfs", MS_NOSUID | MS_NOEXEC, "mode=0755,size=1m", e) < 0)
		return -1;
	for (size_t i = 0; i < sizeof DEV_NODES / sizeof DEV_NODES[0]; i++) {
		snprintf(host, sizeof host, "/dev/%s", DEV_NODES[i]);
		if (path_in(p, dev, DEV_NODES[i], e) < 0 || ensure_file(p, e) < 0 ||
		    do_mount(host, p, NULL, MS_BIND, NULL, e) < 0)
			return -1;
	}
	if (path_in(p, dev, "pts", e) < 0 || ensure_dir(p, 0755, e) < 0 ||
	    do_mount("devpts", p, "devpts", MS_NOSUID | MS_NOEXEC,
		     "newinstance,ptmxmode=0666,mode=0620", e) < 0)
		return -1;
	if (path_in(p, dev, "shm", e) < 0 || mount_tmp(cfg, p, e) < 0)
		return -1;
	static const char *const links[][2] = {
		{"pts/ptmx", "ptmx"},	     {"/proc/self/fd", "fd"},
		{"/proc/self/fd/0", "stdin"}, {"/proc/self/fd/1", "stdout"},
		{"/proc/self/fd/2", "stderr"},
	};
	for (size_t i = 0; i < sizeof links / sizeof links[0]; i++) {
		if (path_in(p, dev, links[i][1], e) < 0)
			return -1;
		if (symlink(links[i][0], p) < 0)
			return bl_error_errno(e, errno, "symlink %s", p);
	}
	return 0;
}

static int build_root(const struct shim_config *cfg, const char *rootfs, bl_error *e)
{
	char p[PATH_MAX];
	if (do_mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL, e) < 0 ||
	    mount_overlay(cfg, rootfs, e) < 0)
		return -1;
	if (path_in(p, rootfs, "proc", e) < 0 || ensure_dir(p, 0555, e) < 0 ||
	    do_mount("proc", p, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL, e) < 0)
		return -1;
	if (mount_dev(cfg, rootfs, e) < 0 || mask_proc(rootfs, e) < 0)
		return -1;
	if (path_in(p, rootfs, "tmp", e) < 0 || mount_tmp(cfg, p, e) < 0 ||
	    bind_host_paths(cfg, rootfs, e) < 0)
		return -1;
	/* pivot_root(".", ".") stacks the old root on the new one; detaching it
	 * leaves only the box's root visible. */
	if (chdir(rootfs) < 0)
		return bl_error_errno(e, errno, "chdir %s", rootfs);
	if (syscall(SYS_pivot_root, ".", ".") < 0)
		return bl_error_errno(e, errno, "pivot_root");
	if (umount2(".", MNT_DETACH) < 0)
		return bl_error_errno(e, errno, "detach the host root");
	if (chdir("/") < 0)
		return bl_error_errno(e, errno, "chdir /");
	return 0;
}

static int loopback_up(bl_error *e)
{
	int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (s < 0)
		return bl_error_errno(e, errno, "socket for lo");
	struct ifreq ifr;
	memset(&ifr, 0, sizeof ifr);
	memcpy(ifr.ifr_name, "lo", 3);
	int rc = ioctl(s, SIOCGIFFLAGS, &ifr);
	if (rc == 0) {
		ifr.ifr_flags |= IFF_UP;
		rc = ioctl(s, SIOCSIFFLAGS, &ifr);
	}
	int err = errno;
	close(s);
	return rc < 0 ? bl_error_errno(e, err, "bring lo up") : 0;
}

/* Block until the parent wrote our id maps; false if it died instead. */
static bool wait_for_parent(int sync_fd)
{
	char c;
	ssize_t n;
	while ((n = read(sync_fd, &c, 1)) < 0 && errno == EINTR)
		;
	return n == 1;
}

int sandbox_enter(const struct shim_config *cfg, int agent_fd, int sync_fd, bl_error *e)
{
	/* The box must not outlive its shim, even one killed with SIGKILL. */
	if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) < 0)
		return bl_error_errno(e, errno, "prctl(PR_SET_PDEATHSIG)");
	if (!wait_for_parent(sync_fd))
		return bl_error_errno(e, ECHILD, "the shim went away during set-up");
	char rootfs[PATH_MAX];
	/* Relative to the box directory, the shim's cwd: the box's root may have
	 * no right to search the directories above it (a root runtime's home). */
	if (path_in(rootfs, ".", "rootfs", e) < 0)
		return -1;
	pid_t shim = getppid();
	if (setresgid(0, 0, 0) < 0 || setresuid(0, 0, 0) < 0)
		return bl_error_errno(e, errno, "become root in the user namespace");
	/* Changing to other host ids (a subordinate range) clears the parent
	 * death signal: set it again, then make sure the shim did not go in
	 * between. */
	if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) < 0)
		return bl_error_errno(e, errno, "prctl(PR_SET_PDEATHSIG)");
	if (getppid() != shim)
		return bl_error_errno(e, ECHILD, "the shim went away during set-up");
	if (build_root(cfg, rootfs, e) < 0)
		return -1;
	if (sethostname(cfg->hostname, strlen(cfg->hostname)) < 0)
		return bl_error_errno(e, errno, "sethostname");
	/* The guest's network is the guest init's to bring up (guest.h). */
	if (!cfg->guest_network && loopback_up(e) < 0)
		return -1;
	char drain[16], grace[16];
	snprintf(drain, sizeof drain, "%u", cfg->drain_ms);
	snprintf(grace, sizeof grace, "%u", cfg->grace_ms);
	char listen[16];
	snprintf(listen, sizeof listen, "%d", cfg->listen_fd);
	char main_fds[64];
	snprintf(main_fds, sizeof main_fds, "%d,%d,%d,%d", cfg->main_fds[0], cfg->main_fds[1],
		 cfg->main_fds[2], cfg->main_fds[3]);
	char *argv[12] = {"boxlite-agent", "--drain-ms", drain, "--grace-ms", grace, "--listen-fd", listen};
	size_t argc = 7;
	if (cfg->detached)
		argv[argc++] = "--detached";
	if (cfg->main) {
		argv[argc++] = "--main";
		argv[argc++] = main_fds;
	}
	if (pass_fds(cfg, e) < 0 || confine(e) < 0)
		return -1;
	char *envp[] = {"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", NULL};
	/* The agent starts with the signals it reads from a signalfd already
	 * blocked: as the namespace's init with no handler, it would silently
	 * drop a SIGTERM (a stop) that came before it blocked them itself. */
	sigset_t agent_reads;
	sigemptyset(&agent_reads);
	sigaddset(&agent_reads, SIGCHLD);
	sigaddset(&agent_reads, SIGTERM);
	sigaddset(&agent_reads, SIGINT);
	if (sigprocmask(SIG_SETMASK, &agent_reads, NULL) < 0)
		return bl_error_errno(e, errno, "sigprocmask");
	syscall(SYS_execveat, agent_fd, "", argv, envp, AT_EMPTY_PATH);
	return bl_error_errno(e, errno, "execute the agent");
}
