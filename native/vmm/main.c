/*
 * main.c - boxlite-vmm: set the box's directory up as the shim would, run
 * its VM, relay between the host's clients and the guest until QEMU ends
 * (vmm.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/mux.h"
#include "guest/guest.h"
#include "vmm.h"

/* After a stop's grace: the guest's own shutdown, then QEMU is killed. */
#define STOP_MARGIN_MS 5000
/* What QEMU may use beyond the guest's RAM (measured idle under TCG: a
 * 54 MiB translation cache and ~50 MiB of its own; docs/performance.md). */
#define QEMU_OVERHEAD_TCG_MIB 256
#define QEMU_OVERHEAD_KVM_MIB 128
/* After QEMU ends: what it wrote to the port before, read to its end. */
#define LAST_WORDS_MS 1000

enum src { SRC_MUX, SRC_LISTEN, SRC_SIGNAL, SRC_OWNER, SRC_QEMU, SRC_LOG0, SRC_LOG1, SRC_LOG2 };

struct vmm {
	struct shim_config cfg;
	struct mux mux;
	struct qemu qemu;
	pid_t network_pid;
	pid_t volume_pids[GUEST_MAX_VOLUMES];
	int epfd, sigfd, owner_pidfd;
	uint8_t *main;
	size_t main_len;
	bool ready, status_done, exited, qemu_gone, mux_dead;
	bool stop_asked; /* a stop came during boot: the guest is told once it runs the box */
	int guest_code;
	char status[BL_ERROR_MAX + 32];
	uint32_t next_chan;
	int64_t deadline; /* of the guest's status; then of a stop */
};

static int srcs[] = {SRC_MUX, SRC_LISTEN, SRC_SIGNAL, SRC_OWNER, SRC_QEMU, SRC_LOG0, SRC_LOG1, SRC_LOG2};

static _Noreturn void fail(struct vmm *v, const bl_error *e)
{
	char line[BL_ERROR_MAX + 32];
	snprintf(line, sizeof line, "error %d %s\n", e->status, e->msg);
	fputs(line + 6, stderr);
	if (v && v->qemu.pidfd >= 0) {
		qemu_kill(&v->qemu);
		(void)qemu_reap(&v->qemu);
	}
	if (v) {
		vm_network_reap(v->network_pid);
		volumes_reap(&v->cfg.spec, v->volume_pids);
		cgroup_remove(&v->cfg);
	}
	status_line(line);
	exit(1);
}

/* ---- the guest's description ---- */

/* The shim's argv for the guest: this box, as the guest sees it. */
static int guest_spec(struct vmm *v, bl_error *e)
{
	struct shim_spec g = v->cfg.spec;
	/* The layers in the root image, or shared directories; then volumes,
	 * shared: each at the guest's mount of it (vm_shares' order). */
	static char lowers[SHIM_MAX_LOWERS][PATH_MAX];
	static char shared[GUEST_MAX_VOLUMES][sizeof GUEST_VOLUME_DIR + 32];
	for (unsigned i = 0; i < GUEST_MAX_VOLUMES; i++)
		snprintf(shared[i], sizeof shared[i], GUEST_VOLUME_DIR "/" GUEST_VOLUME_TAG "%u", i);
	unsigned k = 0;
	for (unsigned i = 0; i < g.n_lowers; i++) {
		const char *base = strrchr(v->cfg.lowers[i], '/');
		snprintf(lowers[i], PATH_MAX, GUEST_IMAGE_DIR "/%s", base ? base + 1 : v->cfg.lowers[i]);
		g.lowers[i] = v->cfg.vm.root_image ? lowers[i] : shared[k++];
	}
	for (unsigned i = 0; i < g.n_binds && k < GUEST_MAX_VOLUMES; i++)
		g.binds[i].source = shared[k++];
	g.box_dir = GUEST_BOX_DIR;
	g.agent = GUEST_AGENT;
	g.guest = true;
	g.disk_image = NULL;
	g.owner_pid = 0;
	g.limits.memory = 0; /* the guest's RAM is the limit */
	g.log_limit = 0;     /* the logs are ours */
	g.guest_network = g.network != NULL; /* the VM's NIC, through our network helper */
	g.guest_uid = (uint32_t)geteuid(); /* whose files the image's are, in the guest too */
	g.guest_gid = (uint32_t)getegid();
	g.network = NULL;
	g.host_loopback = false;
	memset(&g.vm, 0, sizeof g.vm);
	struct shim_nums nums;
	char *argv[SHIM_MAX_LOWERS * 2 + SHIM_MAX_BINDS * 3 + 64];
	if (shim_spec_argc(&g) + 1 > sizeof argv / sizeof argv[0])
		return bl_error_set(e, E2BIG, "the guest's command line");
	shim_spec_argv(&g, GUEST_SHIM, &nums, argv);
	size_t len = 0;
	for (char **a = argv; *a; a++)
		len += strlen(*a) + 1;
	char *buf = malloc(len);
	if (!buf)
		return bl_error_errno(e, ENOMEM, "spec");
	size_t off = 0;
	for (char **a = argv; *a; a++) {
		memcpy(buf + off, *a, strlen(*a) + 1);
		off += strlen(*a) + 1;
	}
	int rc = mux_send(&v->mux, MUX_SPEC, MUX_CHAN_CONTROL, buf, len);
	free(buf);
	if (rc == 0 && v->main)
		rc = mux_send(&v->mux, MUX_MAIN, MUX_CHAN_CONTROL, v->main, v->main_len);
	if (rc == 0)
		rc = mux_send(&v->mux, MUX_GO, MUX_CHAN_CONTROL, NULL, 0);
	return rc < 0 ? bl_error_errno(e, ENOMEM, "mux") : 0;
}

/* The channels of the spawner's connection and the main command's logs,
 * before the guest can use them. */
static int host_channels(struct vmm *v, bl_error *e)
{
	if (mux_add(&v->mux, MUX_CHAN_PRIMARY, SHIM_CONN_FD, SHIM_CONN_FD, e) < 0)
		return -1;
	for (int i = 0; i < 2; i++) {
		int *fd = &v->cfg.main_fds[1 + i];
		if (*fd >= 0 && mux_add(&v->mux, MUX_CHAN_STDOUT + (uint32_t)i, -1, *fd, e) < 0)
			return -1;
		*fd = -1; /* the mux's now */
	}
	return 0;
}

static int on_control(void *ctx, const struct mux_hdr *h, const uint8_t *p, bl_error *e)
{
	struct vmm *v = ctx;
	switch (h->type) {
	case MUX_READY:
		if (v->ready)
			return bl_error_set(e, EPROTO, "the guest was ready twice");
		v->ready = true;
		return host_channels(v, e) < 0 || guest_spec(v, e) < 0 ? -1 : 0;
	case MUX_STATUS:
		if (v->status_done)
			return bl_error_set(e, EPROTO, "a second status from the guest");
		snprintf(v->status, sizeof v->status, "%.*s", (int)h->len, (const char *)p);
		v->status_done = true;
		return 0;
	case MUX_OUTCOME: {
		int *fd = &v->cfg.main_fds[3];
		if (*fd >= 0) {
			(void)fd_write_full(*fd, p, h->len < 64 ? h->len : 64);
			close(*fd);
			*fd = -1;
		}
		return 0;
	}
	case MUX_EXIT:
		if (h->len != 4)
			return bl_error_set(e, EPROTO, "the guest's exit of %u bytes", h->len);
		v->exited = true;
		v->guest_code = p[0];
		return 0;
	default:
		return bl_error_set(e, EPROTO, "the guest sent control frame %u", h->type);
	}
}

/* ---- set-up ---- */

static int read_main(struct vmm *v, bl_error *e)
{
	if (!v->cfg.main)
		return 0;
	struct stat st;
	if (fstat(SHIM_MAIN_FD, &st) < 0 || st.st_size > (off_t)BL_FRAME_MAX_PAYLOAD)
		return bl_error_errno(e, errno ? errno : E2BIG, "the main command (fd 5)");
	v->main_len = (size_t)st.st_size;
	if (!(v->main = malloc(v->main_len + 1)) ||
	    pread(SHIM_MAIN_FD, v->main, v->main_len, 0) != (ssize_t)v->main_len)
		return bl_error_errno(e, errno ? errno : EIO, "read the main command");
	close(SHIM_MAIN_FD);
	v->cfg.main_fds[0] = -1;
	return 0;
}

static int watch(struct vmm *v, int fd, int src)
{
	struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &srcs[src]};
	return fd < 0 ? 0 : epoll_ctl(v->epfd, EPOLL_CTL_ADD, fd, &ev);
}

static int prepare(struct vmm *v, bl_error *e)
{
	struct shim_config *cfg = &v->cfg;
	if (prctl(PR_SET_NAME, "boxlite-vmm", 0, 0, 0) < 0)
		return bl_error_errno(e, errno, "prctl(PR_SET_NAME)");
	if (lock_box(cfg, e) < 0 || main_command_prepare(cfg, e) < 0 ||
	    log_open(&cfg->logs[2], cfg->box_dir, SHIM_LOG_FILE, SHIM_LOG_LIMIT, true,
		     &cfg->messages_fd, e) < 0 ||
	    (cfg->listen_fd = listen_agent_socket(cfg, e)) < 0 || read_main(v, e) < 0)
		return -1;
	if (cfg->owner_pid > 0 && (v->owner_pidfd = bl_pidfd_open(cfg->owner_pid)) < 0)
		return bl_error_errno(e, errno, "watch owner %d", (int)cfg->owner_pid);
	sigset_t set;
	shim_signals(&set);
	if (sigprocmask(SIG_BLOCK, &set, NULL) < 0 ||
	    (v->sigfd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK)) < 0 ||
	    (v->epfd = epoll_create1(EPOLL_CLOEXEC)) < 0)
		return bl_error_errno(e, errno, "signals");
	if (chdir(cfg->box_dir) < 0)
		return bl_error_errno(e, errno, "chdir %s", cfg->box_dir);
	fprintf(stderr, "boxlite-vmm: vm box: qemu %s, accel %s, kernel %s\n", cfg->vm.qemu,
		cfg->vm.accel, cfg->vm.kernel);
	return 0;
}

static int open_disk(const char *path, int flags, bl_error *e)
{
	int fd = open(path, flags | O_CLOEXEC);
	if (fd < 0)
		return bl_error_errno(e, errno, "open %s", path);
	return fd;
}

/*
 * QEMU's memory on the host: the guest's RAM and what emulating it costs
 * (QEMU itself, its device state, and under TCG its translation cache),
 * bounded in a memory cgroup of the box's own (cgroup.c) where this host
 * lets one be made; elsewhere shim.log says it is not.  Its OOM counter is
 * the box's (DIR/cgroups), so a VM killed for memory ends as oom.
 */
static void bound_qemu(struct vmm *v)
{
	unsigned ram = qemu_memory_mib(&v->cfg.spec);
	unsigned overhead = strcmp(v->cfg.vm.accel, "kvm") == 0 ? QEMU_OVERHEAD_KVM_MIB
								: QEMU_OVERHEAD_TCG_MIB;
	struct shim_limits asked = v->cfg.limits;
	v->cfg.limits = (struct shim_limits){.memory = (uint64_t)(ram + overhead) << 20};
	bl_error e;
	int into = -1;
	if (cgroup_prepare(&v->cfg, &into, &e) < 0) {
		fprintf(stderr, "boxlite-vmm: QEMU's memory is not bounded on the host: %s\n", e.msg);
		cgroup_remove(&v->cfg);
		v->cfg.n_cgroups = 0;
	} else {
		fprintf(stderr, "boxlite-vmm: QEMU bounded to %u MiB (guest RAM %u + %u)\n",
			ram + overhead, ram, overhead);
	}
	if (into >= 0)
		close(into);
	v->cfg.limits = asked;
}

static int start_vm(struct vmm *v, bl_error *e)
{
	int sp[2];
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp) < 0)
		return bl_error_errno(e, errno, "socketpair");
	bound_qemu(v);
	struct qemu_io io = {.port = sp[1], .messages = v->cfg.messages_fd, .net = -1,
			     .cgroups = &v->cfg};
	if (vm_network_start(&v->cfg.spec, v->cfg.messages_fd, &v->network_pid, &io.net, e) < 0 ||
	    volumes_start(&v->cfg.spec, v->cfg.messages_fd, &io, v->volume_pids, e) < 0)
		return -1;
	io.root = -1;
	if ((v->cfg.vm.root_image && (io.root = open_disk(v->cfg.vm.root_image, O_RDONLY, e)) < 0) ||
	    (io.disk[0] = open_disk(v->cfg.disk_image, O_RDONLY, e)) < 0 ||
	    (io.disk[1] = open_disk(v->cfg.disk_image, O_RDWR, e)) < 0)
		return -1;
	int rc = qemu_start(&v->cfg.spec, &io, &v->qemu, e);
	close(sp[1]);
	if (io.root >= 0)
		close(io.root);
	close(io.disk[0]);
	close(io.disk[1]);
	if (io.net >= 0)
		close(io.net);
	for (unsigned i = 0; i < io.n_volumes; i++)
		close(io.volumes[i]);
	close(v->cfg.messages_fd);
	v->cfg.messages_fd = -1;
	if (rc < 0)
		return bl_error_wrap(e, "start qemu");
	if (mux_init(&v->mux, sp[0], on_control, v, e) < 0)
		return -1;
	v->deadline = bl_now_ms() + v->cfg.vm.ready_ms;
	if (watch(v, v->mux.epfd, SRC_MUX) < 0 || watch(v, v->qemu.pidfd, SRC_QEMU) < 0 ||
	    watch(v, v->sigfd, SRC_SIGNAL) < 0 || watch(v, v->owner_pidfd, SRC_OWNER) < 0 ||
	    watch(v, v->cfg.logs[0].pipe_fd, SRC_LOG0) < 0 ||
	    watch(v, v->cfg.logs[1].pipe_fd, SRC_LOG1) < 0 ||
	    watch(v, v->cfg.logs[2].pipe_fd, SRC_LOG2) < 0)
		return bl_error_errno(e, errno, "epoll_ctl");
	return 0;
}

/* ---- the loop ---- */

static void on_accept(struct vmm *v)
{
	int fd = accept4(v->cfg.listen_fd, NULL, NULL, SOCK_CLOEXEC);
	if (fd < 0)
		return;
	bl_error e;
	uint32_t id = v->next_chan++;
	if (mux_add(&v->mux, id, fd, fd, &e) < 0 || mux_send(&v->mux, MUX_OPEN, id, NULL, 0) < 0)
		fprintf(stderr, "boxlite-vmm: a client: %s\n", e.msg);
}

/* A graceful stop: the guest's shim stops the box, the guest powers off. */
static void ask_stop(struct vmm *v)
{
	v->stop_asked = true;
	if (!v->status_done || v->deadline)
		return; /* booting (the box is told once it runs), or told already */
	(void)mux_send(&v->mux, MUX_STOP, MUX_CHAN_CONTROL, NULL, 0);
	v->deadline = bl_now_ms() + v->cfg.grace_ms + STOP_MARGIN_MS;
}

static void on_signals(struct vmm *v)
{
	struct signalfd_siginfo si;
	bool kill_now = false, stop = false;
	while (read(v->sigfd, &si, sizeof si) == (ssize_t)sizeof si) {
		kill_now |= si.ssi_signo == SHIM_KILL_NOW;
		stop |= si.ssi_signo != SHIM_KILL_NOW;
	}
	if (kill_now)
		qemu_kill(&v->qemu);
	else if (stop)
		ask_stop(v);
}

/* One turn: wait until something happens or the deadline, handle it. */
static void turn(struct vmm *v)
{
	int timeout = -1;
	if (v->deadline)
		timeout = v->deadline > bl_now_ms() ? (int)(v->deadline - bl_now_ms()) : 0;
	struct epoll_event evs[16];
	int n = epoll_wait(v->epfd, evs, 16, timeout);
	for (int i = 0; i < n; i++) {
		int src = *(int *)evs[i].data.ptr;
		if (src == SRC_QEMU)
			v->qemu_gone = true;
		else if (src == SRC_LISTEN)
			on_accept(v);
		else if (src == SRC_SIGNAL)
			on_signals(v);
		else if (src == SRC_OWNER) {
			qemu_kill(&v->qemu); /* the owner is gone */
			epoll_ctl(v->epfd, EPOLL_CTL_DEL, v->owner_pidfd, NULL);
		} else if (src >= SRC_LOG0) {
			/* Once its writers are gone it is closed, and so out of the set. */
			(void)log_pump(&v->cfg.logs[src - SRC_LOG0]);
		}
	}
	bl_error e;
	if (!v->mux_dead && mux_run(&v->mux, &e) < 0) {
		v->mux_dead = true;
		epoll_ctl(v->epfd, EPOLL_CTL_DEL, v->mux.epfd, NULL);
		if (!v->qemu_gone) {
			fprintf(stderr, "boxlite-vmm: the guest's port: %s; the VM is killed\n", e.msg);
			qemu_kill(&v->qemu);
		}
	}
	if (v->deadline && bl_now_ms() >= v->deadline && !v->qemu_gone) {
		fprintf(stderr, "boxlite-vmm: the guest %s in time; the VM is killed\n",
			v->status_done ? "did not stop" : "did not run the box");
		qemu_kill(&v->qemu);
		v->deadline = 0;
	}
}

/* Until the guest reports its box's set-up: 0 when it is running. */
static int await_status(struct vmm *v, bl_error *e)
{
	while (!v->status_done && !v->qemu_gone)
		turn(v);
	if (!v->status_done) {
		int st = qemu_reap(&v->qemu);
		v->qemu.pidfd = -1;
		return bl_error_set(e, 0, "the VM ended before its box ran (wait status %d; see %s)",
				    st, SHIM_LOG_FILE);
	}
	v->deadline = 0;
	pid_t shim;
	return shim_status_parse(v->status, &shim, e);
}

static int relay(struct vmm *v)
{
	if (watch(v, v->cfg.listen_fd, SRC_LISTEN) < 0)
		fprintf(stderr, "boxlite-vmm: epoll_ctl: %s\n", strerror(errno));
	if (v->stop_asked)
		ask_stop(v);
	while (!v->qemu_gone)
		turn(v);
	int st = qemu_reap(&v->qemu);
	vm_network_reap(v->network_pid);
	volumes_reap(&v->cfg.spec, v->volume_pids);
	/* What the guest wrote before it powered off is still in the socket. */
	int64_t until = bl_now_ms() + LAST_WORDS_MS;
	while (!v->mux_dead && !v->exited && bl_now_ms() < until)
		turn(v);
	mux_free(&v->mux);
	cgroup_remove(&v->cfg);
	if (!v->exited) {
		fprintf(stderr, "boxlite-vmm: the VM ended (wait status %d) without the guest's exit: "
				"a kernel panic, or QEMU was killed\n", st);
		return 1;
	}
	return v->guest_code;
}

int main(int argc, char **argv)
{
	if (argc == 2 && strcmp(argv[1], "--help") == 0) {
		shim_spec_usage(argv[0], STDOUT_FILENO);
		return 0;
	}
	if (argc > 1 && strcmp(argv[1], "probe") == 0)
		return probe_main(argc, argv);
	if (argc > 1 && strcmp(argv[1], "boot") == 0)
		return boot_main(argc, argv);
	/* A client or the port hanging up is an error to handle, not our death. */
	if (signal(SIGPIPE, SIG_IGN) == SIG_ERR)
		return 2;
	static struct vmm v = {.qemu = {.pidfd = -1}, .owner_pidfd = -1,
			       .next_chan = MUX_CHAN_FIRST_CLIENT};
	/* Ours alone: QEMU inherits none of them. */
	if (fcntl(SHIM_STATUS_FD, F_SETFD, FD_CLOEXEC) < 0 ||
	    fcntl(SHIM_CONN_FD, F_SETFD, FD_CLOEXEC) < 0)
		return 2;
	bl_error e;
	if (shim_spec_parse(&v.cfg.spec, argc, argv, &e) < 0)
		fail(NULL, &e);
	if (!v.cfg.vm.qemu) {
		bl_error_set(&e, EINVAL, "boxlite-vmm needs --vm-*");
		fail(NULL, &e);
	}
	int release_fd = v.cfg.detached ? detach_from_spawner(&e) : -1;
	if (v.cfg.detached && release_fd < 0)
		fail(NULL, &e);
	if (prepare(&v, &e) < 0 || start_vm(&v, &e) < 0 || await_status(&v, &e) < 0)
		fail(&v, &e);
	char line[32];
	snprintf(line, sizeof line, "ok %d\n", (int)getpid());
	status_line(line);
	if (release_fd >= 0) {
		if (prctl(PR_SET_PDEATHSIG, 0, 0, 0, 0) < 0)
			fprintf(stderr, "boxlite-vmm: prctl: %s\n", strerror(errno));
		close(release_fd);
	}
	int code = relay(&v);
	for (size_t i = 0; i < 3; i++)
		log_close(&v.cfg.logs[i]);
	if (v.cfg.main_fds[3] >= 0)
		close(v.cfg.main_fds[3]);
	if (v.cfg.detached) {
		int fd = open(v.cfg.disk_image, O_RDONLY | O_CLOEXEC);
		if (fd >= 0 && fsync(fd) < 0)
			fprintf(stderr, "boxlite-vmm: sync the disk: %s\n", strerror(errno));
		if (fd >= 0)
			close(fd);
	}
	main_command_record(&v.cfg);
	return code;
}
