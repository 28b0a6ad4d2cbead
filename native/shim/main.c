/*
 * main.c - boxlite-shim: parse the command line, build the box, report its
 * status on fd 4, then supervise it (see shim.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "shim.h"

#define NAMESPACES \
	(CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWUTS | CLONE_NEWNET)

/* ---- status line, and failing ---- */

/* A failure once the box's cgroups are made removes them, and once its
 * init is cloned (pidfd), takes that down first: a cgroup cannot go while
 * a process is in it. */
static struct {
	struct shim_config *cfg;
	int pidfd;
} undo = {NULL, -1};

/* The one place a failure becomes the shim's report: its log, the undoing
 * of what the set-up did so far, the status line, the exit code. */
static _Noreturn void fail(int code, const bl_error *e)
{
	char line[BL_ERROR_MAX + 32];
	snprintf(line, sizeof line, "error %d %s\n", e->status, e->msg);
	fputs(line + 6, stderr); /* the shim log */
	if (undo.pidfd >= 0) {
		signal_agent(undo.pidfd, SIGKILL);
		(void)reap_agent(undo.pidfd);
	}
	if (undo.cfg)
		cgroup_remove(undo.cfg);
	status_line(line);
	exit(code);
}

/* ---- arguments ---- */

/* By the one table (common/shim_spec.h), and its checks. */
static void parse_args(struct shim_config *cfg, int argc, char **argv)
{
	bl_error e;
	if (shim_spec_parse(&cfg->spec, argc, argv, &e) < 0)
		fail(2, &e);
	if (cfg->vm.qemu) {
		bl_error_set(&e, EINVAL, "--vm-* are boxlite-vmm's");
		fail(2, &e);
	}
}

/* ---- set-up on the host side ---- */

static int make_box_dirs(const struct shim_config *cfg, bl_error *e)
{
	static const char *const subdirs[] = {"upper", "work", "rootfs"};
	char p[PATH_MAX];
	for (size_t i = 0; i < sizeof subdirs / sizeof subdirs[0]; i++) {
		const char *in = i < 2 ? cfg->layer_dir : cfg->box_dir;
		if (snprintf(p, sizeof p, "%s/%s", in, subdirs[i]) >= (int)sizeof p)
			return bl_error_errno(e, ENAMETOOLONG, "box directory");
		if (mkdir(p, 0755) < 0 && errno != EEXIST)
			return bl_error_errno(e, errno, "mkdir %s", p);
	}
	return 0;
}

static int write_file(pid_t pid, const char *name, const char *text, bl_error *e)
{
	char path[64];
	snprintf(path, sizeof path, "/proc/%d/%s", (int)pid, name);
	int fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return bl_error_errno(e, errno, "open %s", path);
	ssize_t n = write(fd, text, strlen(text));
	int err = errno;
	close(fd);
	if (n != (ssize_t)strlen(text))
		return bl_error_errno(e, n < 0 ? err : EIO, "write %s", path);
	return 0;
}

/* Root in the box is the shim's own user outside: nothing more. */
static int write_id_maps(pid_t child, bl_error *e)
{
	char uid_map[64], gid_map[64];
	snprintf(uid_map, sizeof uid_map, "0 %u 1\n", (unsigned)geteuid());
	snprintf(gid_map, sizeof gid_map, "0 %u 1\n", (unsigned)getegid());
	if (write_file(child, "setgroups", "deny", e) < 0 ||
	    write_file(child, "uid_map", uid_map, e) < 0 ||
	    write_file(child, "gid_map", gid_map, e) < 0)
		return -1;
	return 0;
}

/* The writable layer is mounted volatile (no sync when the box stops).  A
 * detached box is kept for later runs, maybe after a reboot, so its end
 * waits for the layer to reach the disk. */
static void sync_writable_layer(const struct shim_config *cfg)
{
	int fd = open(cfg->layer_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0 || syncfs(fd) < 0)
		fprintf(stderr, "boxlite-shim: sync %s: %s\n", cfg->layer_dir, strerror(errno));
	if (fd >= 0)
		close(fd);
}

/* Where the agent's and the network helper's messages go: DIR/shim.log,
 * or in a vm's guest the shim's own stderr (the guest's console, which the
 * host's supervisor keeps in its shim.log). */
static int messages_open(struct shim_config *cfg, bl_error *e)
{
	if (!cfg->guest)
		return log_open(&cfg->logs[2], cfg->box_dir, SHIM_LOG_FILE, SHIM_LOG_LIMIT, true,
				&cfg->messages_fd, e);
	cfg->logs[2].pipe_fd = cfg->logs[2].file_fd = -1;
	if ((cfg->messages_fd = fcntl(STDERR_FILENO, F_DUPFD_CLOEXEC, SHIM_GUEST_FIRST_FREE_FD)) < 0)
		return bl_error_errno(e, errno, "stderr");
	return 0;
}

/* What the host-side set-up hands the box and the supervision. */
struct prepared {
	int agent_fd;    /* the agent's executable (O_PATH) */
	int owner_pidfd; /* --owner-pid's, or -1 */
};

/* Everything before the clone: the box directory, its lock and layers,
 * the logs, the socket, the agent, and the signals supervise() reads. */
static int prepare(struct shim_config *cfg, struct prepared *out, bl_error *e)
{
	if (prctl(PR_SET_NAME, "boxlite-shim", 0, 0, 0) < 0)
		return bl_error_errno(e, errno, "prctl(PR_SET_NAME)");
	if (lock_box(cfg, e) < 0) /* after the fork: record locks are not inherited */
		return -1;
	if (disk_mount(cfg, e) < 0)
		return bl_error_wrap(e, "disk limit");
	if (make_box_dirs(cfg, e) < 0)
		return -1;
	if ((cfg->idmapped = idmap_wanted(cfg)) &&
	    (cfg->guest ? idmap_own_layer(cfg, e) : idmap_mounts(cfg, e)) < 0)
		return bl_error_wrap(e, "map the box's ids");
	if (main_command_prepare(cfg, e) < 0 ||
	    messages_open(cfg, e) < 0 ||
	    (cfg->listen_fd = listen_agent_socket(cfg, e)) < 0)
		return -1;
	if ((out->agent_fd = open(cfg->agent, O_PATH | O_CLOEXEC)) < 0)
		return bl_error_errno(e, errno, "open agent %s", cfg->agent);
	out->owner_pidfd = -1;
	if (cfg->owner_pid > 0 && (out->owner_pidfd = bl_pidfd_open(cfg->owner_pid)) < 0)
		return bl_error_errno(e, errno, "watch owner %d", (int)cfg->owner_pid);
	/* Signals wait in the mask until supervise() reads them. */
	sigset_t set;
	shim_signals(&set);
	if (sigprocmask(SIG_BLOCK, &set, NULL) < 0)
		return bl_error_errno(e, errno, "sigprocmask");
	/* The box starts in its directory: relative paths reach it without
	 * searching the directories above, which the box's root may not. */
	if (chdir(cfg->box_dir) < 0)
		return bl_error_errno(e, errno, "chdir %s", cfg->box_dir);
	return 0;
}

/* The box's init, in new namespaces, and in the cgroup of fd into if >= 0. */
static pid_t clone_box(const struct shim_config *cfg, int *pidfd, int into)
{
	struct clone_args args;
	memset(&args, 0, sizeof args);
	/* In a vm's guest with a network, the box has the guest's: the VM is
	 * the box, and its NIC is the box's network. */
	args.flags = (cfg->guest_network ? NAMESPACES & ~CLONE_NEWNET : NAMESPACES) | CLONE_PIDFD |
		     (into >= 0 ? CLONE_INTO_CGROUP : 0);
	args.cgroup = into >= 0 ? (uint64_t)into : 0;
	args.pidfd = (uint64_t)(uintptr_t)pidfd;
	args.exit_signal = SIGCHLD;
	return (pid_t)syscall(SYS_clone3, &args, sizeof args);
}

/* The cloned child's side: build the box and become the agent.  It is a
 * copy of the (single-threaded) shim, not a vfork, so formatting its error
 * is as safe as in the shim; but the status line and the clean-up are the
 * parent's, so the error goes there whole, through the error pipe (whose
 * end closes on exec: no report is success). */
static _Noreturn void be_the_box(const struct shim_config *cfg, int agent_fd, int sync_fd,
				 int err_fd)
{
	bl_error e = {0};
	(void)sandbox_enter(cfg, agent_fd, sync_fd, &e);
	ssize_t n = write(err_fd, &e, sizeof e); /* less than PIPE_BUF: one write */
	_exit(n == (ssize_t)sizeof e ? 1 : 2);
}

/* The child's report: 0 if none (it executed the agent), else -1 with it. */
static int read_box_error(int fd, bl_error *e)
{
	bl_error got;
	size_t n = fd_read_full(fd, &got, sizeof got);
	if (n == 0)
		return 0;
	if (n < sizeof got)
		return bl_error_errno(e, EIO, "box set-up (truncated report)");
	got.msg[sizeof got.msg - 1] = '\0';
	*e = got;
	return -1;
}

/* Clone the box's init into its cgroups and namespaces, give it its id
 * maps and network, release it, and wait for its set-up to end in the
 * agent's exec.  Returns its pidfd, or -1 (undo then knows what to undo). */
static int start_box(struct shim_config *cfg, int agent_fd, bl_error *e)
{
	int sync_pipe[2], err_pipe[2];
	if (pipe2(sync_pipe, O_CLOEXEC) < 0 || pipe2(err_pipe, O_CLOEXEC) < 0)
		return bl_error_errno(e, errno, "pipe2");
	int pidfd = -1, into;
	undo.cfg = cfg;
	if (cgroup_prepare(cfg, &into, e) < 0)
		return -1;
	pid_t child = clone_box(cfg, &pidfd, into);
	if (child < 0 && into >= 0) {
		if (cgroup_unjoinable(cfg, errno, e) < 0)
			return -1;
		child = clone_box(cfg, &pidfd, -1); /* without the default limit */
	}
	if (child < 0)
		return bl_error_errno(e, errno, "clone namespaces");
	if (child == 0) {
		close(sync_pipe[1]);
		close(err_pipe[0]);
		be_the_box(cfg, agent_fd, sync_pipe[0], err_pipe[1]);
	}
	close(sync_pipe[0]);
	close(err_pipe[1]);
	close(agent_fd);
	close(cfg->listen_fd);
	for (size_t i = 0; i < 4; i++)
		if (cfg->main_fds[i] >= 0)
			close(cfg->main_fds[i]); /* the agent's now */
	close(SHIM_CONN_FD); /* the agent holds it now; its end is the box's end */
	undo.pidfd = pidfd;
	if (into >= 0)
		close(into);
	if (cgroup_join(cfg, child, e) < 0)
		return -1;
	if (!cfg->idmapped ? write_id_maps(child, e) < 0 : idmap_write(cfg, child, e) < 0)
		return -1;
	if (network_start(cfg, child, e) < 0)
		return -1;
	close(cfg->messages_fd); /* its writers hold it now: the box's init, the network helper */
	cfg->messages_fd = -1;
	if (write(sync_pipe[1], "g", 1) != 1)
		return bl_error_errno(e, errno, "release the box");
	close(sync_pipe[1]);
	int rc = read_box_error(err_pipe[0], e);
	close(err_pipe[0]);
	return rc < 0 ? -1 : pidfd;
}

int main(int argc, char **argv)
{
	if (argc == 2 && strcmp(argv[1], "--help") == 0) {
		shim_spec_usage(argv[0], STDOUT_FILENO);
		return 0;
	}
	struct shim_config cfg;
	memset(&cfg, 0, sizeof cfg);
	/* The status pipe is ours alone: never inherited by the agent. */
	if (fcntl(SHIM_STATUS_FD, F_SETFD, FD_CLOEXEC) < 0)
		return 2;
	parse_args(&cfg, argc, argv);
	bl_error e;
	struct prepared box = {.agent_fd = -1, .owner_pidfd = -1};
	int release_fd = cfg.detached ? detach_from_spawner(&e) : -1;
	if (cfg.detached && release_fd < 0)
		fail(1, &e);
	int pidfd = -1;
	if (prepare(&cfg, &box, &e) < 0 || (pidfd = start_box(&cfg, box.agent_fd, &e)) < 0)
		fail(1, &e);
	char line[32];
	snprintf(line, sizeof line, "ok %d\n", (int)getpid());
	status_line(line);
	if (release_fd >= 0) {
		/* Set up: no longer tied to the spawner, which may now go. */
		if (prctl(PR_SET_PDEATHSIG, 0, 0, 0, 0) < 0) {
			bl_error_errno(&e, errno, "prctl(PR_SET_PDEATHSIG)");
			fail(1, &e);
		}
		close(release_fd);
	}
	int code = supervise(&cfg, pidfd, box.owner_pidfd);
	network_stop(&cfg);
	cgroup_remove(&cfg);
	for (size_t i = 0; i < 3; i++)
		log_close(&cfg.logs[i]);
	if (cfg.detached)
		sync_writable_layer(&cfg);
	main_command_record(&cfg);
	return code;
}
