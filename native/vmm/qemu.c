/*
 * qemu.c - one VM: QEMU's command line, and QEMU started with the least
 * privilege it works with (docs/security.md).
 *
 * The microvm machine, direct kernel boot, no default devices, no display:
 * the console (a serial port) on QEMU's stdout, a virtio-serial port on an
 * fd we hold the other end of, two virtio-blk disks passed as fds (QEMU opens
 * no path of the box's), and with a network a virtio-net NIC whose frames go
 * over a socket to the user-mode stack (network.c).  QEMU runs in namespaces of its own (mount, IPC,
 * UTS, network: it has no network of the host's), with no new privileges,
 * its own seccomp sandbox, and a root runtime's QEMU as an id of its own that
 * owns nothing (under KVM with a /dev/kvm node of that id's, in its mount
 * namespace); it gets SIGKILL when we die.
 */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "guest/guest.h"
#include "vmm.h"

/* A root runtime's QEMU runs as QEMU_ID_BASE + our pid: an id no file is
 * owned by, and no other box's QEMU has (pids of live processes differ). */
#define QEMU_ID_BASE 0x70000000u
#define MAX_ARGS (64 + 4 * GUEST_MAX_VOLUMES)
#define MAX_TEXTS (16 + 2 * GUEST_MAX_VOLUMES)

/* The host's TSC rate: under emulation microvm has no other clock to
 * calibrate against, and without the hint its boot hangs at times. */
static unsigned tsc_khz(void)
{
	unsigned khz = 0;
	FILE *f = fopen("/sys/devices/system/cpu/cpu0/tsc_freq_khz", "re");
	if (f) {
		int n = fscanf(f, "%u", &khz);
		fclose(f);
		if (n == 1 && khz)
			return khz;
	}
	f = fopen("/proc/cpuinfo", "re");
	char line[256];
	double mhz = 0;
	while (f && fgets(line, sizeof line, f))
		if (sscanf(line, "cpu MHz : %lf", &mhz) == 1 || sscanf(line, "cpu MHz\t: %lf", &mhz) == 1)
			break;
	if (f)
		fclose(f);
	return (unsigned)(mhz * 1000);
}

struct argv {
	char *v[MAX_ARGS + 1];
	char text[MAX_TEXTS][512];
	int n, texts;
	/* Ours, then boot's and the user's (each at most BOXLITE_MAX_VM_KERNEL_ARGS). */
	char cmdline[128 + 2 * BOXLITE_MAX_VM_KERNEL_ARGS];
};

static void add(struct argv *a, const char *s)
{
	if (a->n < MAX_ARGS)
		a->v[a->n++] = (char *)s;
}

static const char *fmt(struct argv *a, const char *f, ...) __attribute__((format(printf, 2, 3)));
static const char *fmt(struct argv *a, const char *f, ...)
{
	if (a->texts >= MAX_TEXTS)
		return "";
	va_list ap;
	va_start(ap, f);
	vsnprintf(a->text[a->texts], sizeof a->text[0], f, ap);
	va_end(ap);
	return a->text[a->texts++];
}

unsigned qemu_memory_mib(const struct shim_spec *s)
{
	return s->limits.memory ? (unsigned)(s->limits.memory >> 20) : BOXLITE_DEFAULT_VM_MEMORY_MIB;
}

static unsigned vcpus(const struct shim_spec *s)
{
	return s->limits.cpu_millis ? (s->limits.cpu_millis + 999) / 1000 : 1;
}

static void build(struct argv *a, const struct shim_spec *s, const struct qemu_io *io)
{
	bool kvm = strcmp(s->vm.accel, "kvm") == 0;
	add(a, s->vm.qemu);
	add(a, "-M");
	/* vhost-user (volumes): the guest's RAM shared with each virtiofsd. */
	add(a, io->n_volumes ? "microvm,memory-backend=ram" : "microvm");
	add(a, "-accel");
	add(a, s->vm.accel);
	add(a, "-cpu");
	add(a, kvm ? "host" : "max");
	add(a, "-smp");
	add(a, fmt(a, "%u", vcpus(s)));
	add(a, "-m");
	add(a, fmt(a, "%u", qemu_memory_mib(s)));
	add(a, "-nodefaults");
	add(a, "-no-user-config");
	add(a, "-no-reboot");
	add(a, "-display");
	add(a, "none");
	add(a, "-serial");
	add(a, "stdio");
	add(a, "-sandbox");
	add(a, "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny");
	add(a, "-kernel");
	add(a, s->vm.kernel);
	add(a, "-initrd");
	add(a, s->vm.initrd);
	add(a, "-append");
	const char *more[] = {io->append, s->vm.kernel_args};
	int n = snprintf(a->cmdline, sizeof a->cmdline,
			 "console=ttyS0 quiet panic=-1 pci=off tsc_early_khz=%u", tsc_khz());
	for (size_t i = 0; i < 2; i++)
		if (more[i] && n > 0 && (size_t)n < sizeof a->cmdline)
			n += snprintf(a->cmdline + n, sizeof a->cmdline - (size_t)n, " %s", more[i]);
	add(a, a->cmdline);
	if (io->net >= 0) {
		add(a, "-netdev");
		add(a, fmt(a, "stream,id=net,addr.type=fd,addr.str=%d", io->net));
		add(a, "-device");
		add(a, "virtio-net-device,netdev=net");
	}
	if (io->n_volumes) {
		add(a, "-object");
		add(a, fmt(a, "memory-backend-memfd,id=ram,size=%uM,share=on", qemu_memory_mib(s)));
		add(a, "-global");
		add(a, "virtio-mmio.force-legacy=false");
	}
	for (unsigned i = 0; i < io->n_volumes; i++) {
		add(a, "-chardev");
		add(a, fmt(a, "socket,id=vfs%u,fd=%d", i, io->volumes[i]));
		add(a, "-device");
		add(a, fmt(a, "vhost-user-fs-device,chardev=vfs%u,tag=" GUEST_VOLUME_TAG "%u", i, i));
	}
	if (io->port >= 0) {
		add(a, "-device");
		add(a, "virtio-serial-device");
		add(a, "-chardev");
		add(a, fmt(a, "socket,id=port,fd=%d", io->port));
		add(a, "-device");
		add(a, "virtserialport,chardev=port,name=" GUEST_PORT_NAME);
	}
	if (io->root >= 0) {
		add(a, "-add-fd");
		add(a, fmt(a, "fd=%d,set=1", io->root));
		add(a, "-drive");
		add(a, "if=none,id=root,file=/dev/fdset/1,format=raw,readonly=on");
		add(a, "-device");
		add(a, "virtio-blk-device,drive=root,serial=" GUEST_ROOT_SERIAL);
	}
	if (io->disk[0] < 0)
		return;
	add(a, "-add-fd");
	add(a, fmt(a, "fd=%d,set=2", io->disk[0]));
	add(a, "-add-fd");
	add(a, fmt(a, "fd=%d,set=2", io->disk[1]));
	add(a, "-drive");
	add(a, "if=none,id=disk,file=/dev/fdset/2,format=raw,discard=unmap");
	add(a, "-device");
	add(a, "virtio-blk-device,drive=disk,serial=" GUEST_DISK_SERIAL);
}

/* In the child: an fd QEMU is given stays open across exec. */
static int keep(int fd) { return fd < 0 ? 0 : fcntl(fd, F_SETFD, 0); }

/* QEMU's id: one no file is owned by and no other box's QEMU has. */
static uid_t qemu_id(void) { return QEMU_ID_BASE + (uid_t)getppid(); }

/*
 * Under KVM, in QEMU's own mount namespace (root runtime): a /dev/kvm of
 * its id's own, the same device, bound over the host's (which is often
 * root's alone), so QEMU runs unprivileged with that one device.  0, or
 * -1 with errno.
 */
static int own_kvm(void)
{
	struct stat st;
	if (stat("/dev/kvm", &st) < 0)
		return -1;
	if (!S_ISCHR(st.st_mode)) {
		errno = ENODEV;
		return -1;
	}
	if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0 ||
	    mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NOEXEC, "size=4k,mode=0700") < 0 ||
	    mknod("/tmp/kvm", S_IFCHR | 0600, st.st_rdev) < 0 ||
	    chown("/tmp/kvm", qemu_id(), qemu_id()) < 0 ||
	    mount("/tmp/kvm", "/dev/kvm", NULL, MS_BIND, NULL) < 0)
		return -1;
	return umount2("/tmp", MNT_DETACH); /* the bind stays */
}

/* Drop to QEMU's id (a root runtime's); 0, or -1 with errno. */
static int drop_ids(void)
{
	if (geteuid() != 0)
		return 0;
	uid_t id = qemu_id();
	if (setgroups(0, NULL) < 0 || setresgid(id, id, id) < 0 || setresuid(id, id, id) < 0)
		return -1;
	/* A changed id is not dumpable, so /proc/self would be root's: QEMU
	 * reads its kernel and initrd through /proc/self/fd. */
	return prctl(PR_SET_DUMPABLE, 1, 0, 0, 0);
}

/* Into the cgroups bounding QEMU (cgroup.c's, listed in cfg): "0" is the
 * writer itself. */
static int join_cgroups(const struct qemu_io *io)
{
	for (unsigned i = 0; io->cgroups && i < io->cgroups->n_cgroups; i++) {
		char path[PATH_MAX + 80];
		snprintf(path, sizeof path, "%s/cgroup.procs", io->cgroups->cgroups[i].dir);
		int fd = open(path, O_WRONLY | O_CLOEXEC);
		if (fd < 0 || write(fd, "0", 1) != 1) {
			if (fd >= 0)
				close(fd);
			return -1;
		}
		close(fd);
	}
	return 0;
}

static _Noreturn void child(struct argv *a, const struct qemu_io *io, bool kvm)
{
	sigset_t none;
	sigemptyset(&none);
	const char *step = "prepare";
	if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) < 0 || sigprocmask(SIG_SETMASK, &none, NULL) < 0)
		goto fail;
	step = "redirect";
	int null = open("/dev/null", O_RDONLY | O_CLOEXEC);
	if (null < 0 || dup2(null, 0) < 0 || dup2(io->messages, 1) < 0 || dup2(io->messages, 2) < 0)
		goto fail;
	close(null);
	step = "keep fds";
	if (keep(io->port) < 0 || keep(io->root) < 0 || keep(io->disk[0]) < 0 || keep(io->disk[1]) < 0 ||
	    keep(io->net) < 0)
		goto fail;
	for (unsigned i = 0; i < io->n_volumes; i++)
		if (keep(io->volumes[i]) < 0)
			goto fail;
	step = "join its cgroups";
	if (join_cgroups(io) < 0)
		goto fail;
	step = "unshare";
	if (geteuid() == 0 &&
	    unshare(CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWUTS | CLONE_NEWNET) < 0)
		goto fail;
	step = "a /dev/kvm of its own";
	if (geteuid() == 0 && kvm && own_kvm() < 0)
		goto fail;
	step = "drop ids";
	if (drop_ids() < 0 || prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 || chdir("/") < 0)
		goto fail;
	execv(a->v[0], a->v);
	step = "exec";
fail:
	fprintf(stderr, "boxlite-vmm: qemu: %s: %s\n", step, strerror(errno));
	_exit(127);
}

/* QEMU reads paths: our kernel and initrd, whatever their directories,
 * through fds it inherits. */
static int open_by_fd(struct argv *a, int slot, bl_error *e)
{
	int fd = open(a->v[slot], O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return bl_error_errno(e, errno, "open %s", a->v[slot]);
	a->v[slot] = (char *)fmt(a, "/proc/self/fd/%d", fd);
	return fd;
}

int qemu_start(const struct shim_spec *s, const struct qemu_io *io, struct qemu *q, bl_error *e)
{
	struct argv a = {.n = 0};
	build(&a, s, io);
	a.v[a.n] = NULL;
	int files[2] = {-1, -1};
	for (int i = 0, k = 0; i < a.n && k < 2; i++)
		if (strcmp(a.v[i], "-kernel") == 0 || strcmp(a.v[i], "-initrd") == 0)
			if ((files[k++] = open_by_fd(&a, i + 1, e)) < 0)
				goto fail;
	pid_t pid = fork();
	if (pid < 0) {
		bl_error_errno(e, errno, "fork");
		goto fail;
	}
	if (pid == 0) {
		(void)keep(files[0]);
		(void)keep(files[1]);
		child(&a, io, strcmp(s->vm.accel, "kvm") == 0);
	}
	for (int k = 0; k < 2; k++)
		close(files[k]);
	q->pid = pid;
	if ((q->pidfd = bl_pidfd_open(pid)) < 0) {
		bl_error_errno(e, errno, "pidfd_open (qemu)");
		kill(pid, SIGKILL);
		while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
			;
		return -1;
	}
	return 0;
fail:
	for (int k = 0; k < 2; k++)
		if (files[k] >= 0)
			close(files[k]);
	return -1;
}

void qemu_kill(const struct qemu *q)
{
	if (bl_pidfd_signal(q->pidfd, SIGKILL) < 0 && errno != ESRCH)
		fprintf(stderr, "boxlite-vmm: kill qemu: %s\n", strerror(errno));
}

int qemu_reap(const struct qemu *q)
{
	int status = 0;
	while (waitpid(q->pid, &status, 0) < 0 && errno == EINTR)
		;
	return status;
}
