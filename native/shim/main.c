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

/* ---- status line, and dying ---- */

static void status_line(const char *line)
{
	/* A short write: the host stopped listening; our exit tells it the rest. */
	(void)fd_write_full(SHIM_STATUS_FD, line, strlen(line));
	close(SHIM_STATUS_FD);
}

/* A failure once the box's cgroups are made removes them, and once its
 * init is cloned (pidfd), takes that down first: a cgroup cannot go while
 * a process is in it. */
static struct {
	struct shim_config *cfg;
	int pidfd;
} undo = {NULL, -1};

static _Noreturn void die(int code, int err, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static _Noreturn void die(int code, int err, const char *fmt, ...)
{
	char msg[256], line[400];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	snprintf(line, sizeof line, "error %d %s%s%s\n", err, msg, err ? ": " : "",
		 err ? strerror(err) : "");
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
		die(2, e.status, "%s", e.msg);
}

/* ---- set-up on the host side ---- */

static void make_box_dirs(const struct shim_config *cfg)
{
	static const char *const subdirs[] = {"upper", "work", "rootfs"};
	char p[PATH_MAX];
	for (size_t i = 0; i < sizeof subdirs / sizeof subdirs[0]; i++) {
		const char *in = i < 2 ? cfg->layer_dir : cfg->box_dir;
		if (snprintf(p, sizeof p, "%s/%s", in, subdirs[i]) >= (int)sizeof p)
			die(1, ENAMETOOLONG, "box directory");
		if (mkdir(p, 0755) < 0 && errno != EEXIST)
			die(1, errno, "mkdir %s", p);
	}
}

static void write_file(pid_t pid, const char *name, const char *text)
{
	char path[64];
	snprintf(path, sizeof path, "/proc/%d/%s", (int)pid, name);
	int fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		die(1, errno, "open %s", path);
	ssize_t n = write(fd, text, strlen(text));
	int err = errno;
	close(fd);
	if (n != (ssize_t)strlen(text))
		die(1, n < 0 ? err : EIO, "write %s", path);
}

/* Root in the box is the shim's own user outside: nothing more. */
static void write_id_maps(pid_t child)
{
	char map[64];
	write_file(child, "setgroups", "deny");
	snprintf(map, sizeof map, "0 %u 1\n", (unsigned)geteuid());
	write_file(child, "uid_map", map);
	snprintf(map, sizeof map, "0 %u 1\n", (unsigned)getegid());
	write_file(child, "gid_map", map);
}

/* DIR/agent.sock, listening, CLOEXEC (the child dup2s it for the agent). */
static int listen_socket(const struct shim_config *cfg)
{
	struct sockaddr_un addr = {.sun_family = AF_UNIX};
	if (snprintf(addr.sun_path, sizeof addr.sun_path, "%s/" SHIM_AGENT_SOCKET, cfg->box_dir) >=
	    (int)sizeof addr.sun_path)
		die(1, ENAMETOOLONG, "the box directory is too long for a unix socket path");
	if (unlink(addr.sun_path) < 0 && errno != ENOENT) /* left by an earlier run */
		die(1, errno, "unlink %s", addr.sun_path);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		die(1, errno, "socket");
	if (bind(fd, (struct sockaddr *)&addr, sizeof addr) < 0 || listen(fd, 64) < 0)
		die(1, errno, "listen on %s", addr.sun_path);
	return fd;
}

/*
 * One shim per box: a write lock on DIR/lock, held until the shim exits.
 * A POSIX record lock, not flock: F_GETLK tells anyone who holds it, so
 * the lock both refuses a second start and names the shim of a box whose
 * record is out of date.  Never closed, so never dropped early.
 */
static void lock_box(const struct shim_config *cfg)
{
	char p[PATH_MAX];
	if (snprintf(p, sizeof p, "%s/lock", cfg->box_dir) >= (int)sizeof p)
		die(1, ENAMETOOLONG, "box directory");
	int fd = open(p, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0)
		die(1, errno, "open %s", p);
	struct flock lk = {.l_type = F_WRLCK, .l_whence = SEEK_SET};
	if (fcntl(fd, F_SETLK, &lk) < 0)
		die(1, errno == EACCES || errno == EAGAIN ? EBUSY : errno,
		    "the box is running already (its lock is held)");
}

/* --detached: continue in a child that the spawner never has to reap.  The
 * parent stays until the status line is written (release_fd closes), so a
 * spawner that kills it during set-up takes the set-up down with it. */
static int detach_from_spawner(void)
{
	int release[2];
	if (pipe2(release, O_CLOEXEC) < 0)
		die(1, errno, "pipe2");
	pid_t pid = fork();
	if (pid < 0)
		die(1, errno, "fork");
	if (pid > 0) {
		close(release[1]);
		char c;
		while (read(release[0], &c, 1) < 0 && errno == EINTR)
			;
		_exit(0);
	}
	close(release[0]);
	if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) < 0 || getppid() == 1)
		die(1, errno, "follow the spawner");
	return release[1];
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

/* The box's init, in new namespaces, and in the cgroup of fd into if >= 0. */
static pid_t clone_box(int *pidfd, int into)
{
	struct clone_args args;
	memset(&args, 0, sizeof args);
	args.flags = NAMESPACES | CLONE_PIDFD | (into >= 0 ? CLONE_INTO_CGROUP : 0);
	args.cgroup = into >= 0 ? (uint64_t)into : 0;
	args.pidfd = (uint64_t)(uintptr_t)pidfd;
	args.exit_signal = SIGCHLD;
	return (pid_t)syscall(SYS_clone3, &args, sizeof args);
}

static void read_setup_error(int fd, struct setup_error *e)
{
	memset(e, 0, sizeof *e);
	size_t got = fd_read_full(fd, e, sizeof *e);
	if (got > 0 && got < sizeof *e)
		snprintf(e->step, sizeof e->step, "box set-up (truncated report)");
	e->step[sizeof e->step - 1] = '\0';
	if (got == 0)
		e->err = 0;
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
	int release_fd = cfg.detached ? detach_from_spawner() : -1;
	if (prctl(PR_SET_NAME, "boxlite-shim", 0, 0, 0) < 0)
		die(1, errno, "prctl(PR_SET_NAME)");
	lock_box(&cfg); /* after the fork: record locks are not inherited */
	const char *step;
	int err = disk_mount(&cfg, &step);
	if (err)
		die(1, err, "disk limit: %s", step);
	make_box_dirs(&cfg);
	if ((cfg.idmapped = idmap_wanted(&cfg)) && (err = idmap_mounts(&cfg, &step)) != 0)
		die(1, err, "map the box's ids: %s", step);
	err = main_command_prepare(&cfg, &step);
	if (err)
		die(1, err, "%s", step);
	if ((err = log_open(&cfg.logs[2], cfg.box_dir, SHIM_LOG_FILE, SHIM_LOG_LIMIT, true,
			    &cfg.messages_fd)) != 0)
		die(1, err, "open shim.log");
	cfg.listen_fd = listen_socket(&cfg);
	int agent_fd = open(cfg.agent, O_PATH | O_CLOEXEC);
	if (agent_fd < 0)
		die(1, errno, "open agent %s", cfg.agent);
	int owner_pidfd = -1;
	if (cfg.owner_pid > 0 && (owner_pidfd = bl_pidfd_open(cfg.owner_pid)) < 0)
		die(1, errno, "watch owner %d", (int)cfg.owner_pid);
	/* Signals wait in the mask until supervise() reads them. */
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGHUP);
	sigaddset(&set, SHIM_KILL_NOW);
	if (sigprocmask(SIG_BLOCK, &set, NULL) < 0)
		die(1, errno, "sigprocmask");
	int sync_pipe[2], err_pipe[2];
	if (pipe2(sync_pipe, O_CLOEXEC) < 0 || pipe2(err_pipe, O_CLOEXEC) < 0)
		die(1, errno, "pipe2");

	/* The box starts in its directory: relative paths reach it without
	 * searching the directories above, which the box's root may not. */
	if (chdir(cfg.box_dir) < 0)
		die(1, errno, "chdir %s", cfg.box_dir);
	int pidfd = -1, into;
	undo.cfg = &cfg;
	if ((err = cgroup_prepare(&cfg, &into, &step)) != 0)
		die(1, err, "limit %s", step);
	pid_t child = clone_box(&pidfd, into);
	if (child < 0 && into >= 0) {
		if ((err = cgroup_unjoinable(&cfg, errno, &step)) != 0)
			die(1, err, "limit %s", step);
		child = clone_box(&pidfd, -1); /* without the default limit */
	}
	if (child < 0)
		die(1, errno, "clone namespaces");
	if (child == 0) {
		close(sync_pipe[1]);
		close(err_pipe[0]);
		struct setup_error e = {0};
		sandbox_enter(&cfg, agent_fd, sync_pipe[0], &e);
		ssize_t n = write(err_pipe[1], &e, sizeof e);
		_exit(n == (ssize_t)sizeof e ? 1 : 2);
	}
	close(sync_pipe[0]);
	close(err_pipe[1]);
	close(agent_fd);
	close(cfg.listen_fd);
	for (size_t i = 0; i < 4; i++)
		if (cfg.main_fds[i] >= 0)
			close(cfg.main_fds[i]); /* the agent's now */
	close(SHIM_CONN_FD); /* the agent holds it now; its end is the box's end */
	undo.pidfd = pidfd;
	if (into >= 0)
		close(into);
	if ((err = cgroup_join(&cfg, child, &step)) != 0)
		die(1, err, "limit %s", step);
	if (!cfg.idmapped)
		write_id_maps(child);
	else if (idmap_write(&cfg, child) < 0)
		die(1, errno, "write the box's id maps");
	if ((err = network_start(&cfg, child, &step)) != 0)
		die(1, err, "%s", step);
	close(cfg.messages_fd); /* its writers hold it now: the box's init, the network helper */
	cfg.messages_fd = -1;
	if (write(sync_pipe[1], "g", 1) != 1)
		die(1, errno, "release the box");
	close(sync_pipe[1]);

	struct setup_error e;
	read_setup_error(err_pipe[0], &e);
	close(err_pipe[0]);
	if (e.err || e.step[0])
		die(1, e.err, "%s", e.step);
	char line[32];
	snprintf(line, sizeof line, "ok %d\n", (int)getpid());
	status_line(line);
	if (release_fd >= 0) {
		/* Set up: no longer tied to the spawner, which may now go. */
		if (prctl(PR_SET_PDEATHSIG, 0, 0, 0, 0) < 0)
			die(1, errno, "prctl(PR_SET_PDEATHSIG)");
		close(release_fd);
	}
	int code = supervise(&cfg, pidfd, owner_pidfd);
	network_stop(&cfg);
	cgroup_remove(&cfg);
	for (size_t i = 0; i < 3; i++)
		log_close(&cfg.logs[i]);
	if (cfg.detached)
		sync_writable_layer(&cfg);
	main_command_record(&cfg);
	return code;
}
