/*
 * main.c - boxlite-guest: the guest's init (guest.h).  Brings the guest up,
 * takes the box's description from the host, runs boxlite-shim on it and
 * relays between the shim's fds and the port until the shim exits; then
 * reports and powers off.  PID 1 never exits: a failure is reported to the
 * host (and the console), and the guest powers off.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/fdio.h"
#include "common/mux.h"
#include "common/shim_spec.h"
#include "guest.h"

#define MAX_ARGS (4 * SHIM_MAX_LOWERS + 4 * SHIM_MAX_BINDS + 64)
/* After the shim: how long the main command's logs may take to drain. */
#define DRAIN_MS 5000

enum { SRC_MUX, SRC_SIGNAL, SRC_STATUS };

struct guest {
	struct mux mux;
	int epfd, sigfd;
	/* From the host. */
	char *spec;
	size_t spec_len;
	uint8_t *main;
	size_t main_len;
	bool go, stop;
	/* The shim: the process we spawned, and the one its status line names
	 * (a detached shim leaves the first). */
	pid_t spawned, shim;
	int status_fd, outcome_fd;
	char status[BL_ERROR_MAX + 32];
	size_t status_have;
	bool status_done, spawned_done, shim_done;
	int code;
};

static int src_ids[3] = {SRC_MUX, SRC_SIGNAL, SRC_STATUS};

static char *dup_bytes(const uint8_t *p, size_t n)
{
	char *c = malloc(n + 1);
	if (c) {
		memcpy(c, p, n);
		c[n] = '\0';
	}
	return c;
}

/* The host's frames on the control channel, and its new channels. */
static int on_control(void *ctx, const struct mux_hdr *h, const uint8_t *p, bl_error *e)
{
	struct guest *g = ctx;
	switch (h->type) {
	case MUX_SPEC:
		free(g->spec);
		g->spec_len = h->len;
		if (!(g->spec = dup_bytes(p, h->len)))
			return bl_error_errno(e, ENOMEM, "spec");
		return 0;
	case MUX_MAIN:
		free(g->main);
		g->main_len = h->len;
		if (!(g->main = (uint8_t *)dup_bytes(p, h->len)))
			return bl_error_errno(e, ENOMEM, "main");
		return 0;
	case MUX_GO:
		g->go = true;
		return 0;
	case MUX_STOP:
		g->stop = true;
		if (g->shim > 0 || g->spawned > 0)
			kill(g->shim > 0 ? g->shim : g->spawned, SIGTERM);
		return 0;
	case MUX_OPEN: {
		/* A host client for the agent, at the socket the shim made. */
		struct sockaddr_un addr = {.sun_family = AF_UNIX};
		snprintf(addr.sun_path, sizeof addr.sun_path, GUEST_BOX_DIR "/" SHIM_AGENT_SOCKET);
		int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (fd >= 0 && connect(fd, (struct sockaddr *)&addr, sizeof addr) == 0)
			return mux_add(&g->mux, h->chan, fd, fd, e) < 0 ? -1 : 0;
		if (fd >= 0)
			close(fd);
		return mux_send(&g->mux, MUX_CLOSE, h->chan, NULL, 0) < 0
			   ? bl_error_errno(e, ENOMEM, "mux")
			   : 0;
	}
	default:
		return bl_error_set(e, EPROTO, "unexpected control frame %u", h->type);
	}
}

/* The spec's strings as an argv. */
static int spec_argv(struct guest *g, char **argv, bl_error *e)
{
	size_t n = 0;
	for (size_t off = 0; off < g->spec_len; off += strlen(g->spec + off) + 1) {
		if (n + 1 >= MAX_ARGS)
			return bl_error_set(e, E2BIG, "the shim's argv is too long");
		argv[n++] = g->spec + off;
	}
	argv[n] = NULL;
	return n ? 0 : bl_error_set(e, EINVAL, "no shim argv");
}

/* Above the fds the shim is given, so no dup2 of the spawn hits one. */
static int high(int fd) { return fd < 0 ? -1 : fd_move_above(fd, SHIM_GUEST_FIRST_FREE_FD); }

/* fds for the shim: [0] fd 3 (the primary), [1] 4, [2] 5, [3..5] 6..8. */
struct shim_fds {
	int at[6];
	int ours[4]; /* the primary's other end; stdout, stderr, outcome read ends */
};

static int make_fds(struct guest *g, struct shim_fds *f, bl_error *e)
{
	int sp[2], st[2], p[3][2];
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp) < 0 || pipe2(st, O_CLOEXEC) < 0)
		return bl_error_errno(e, errno, "socketpair/pipe2");
	for (int i = 0; i < 3; i++)
		if (pipe2(p[i], O_CLOEXEC) < 0)
			return bl_error_errno(e, errno, "pipe2");
	f->at[0] = high(sp[1]);
	f->at[1] = high(st[1]);
	f->at[2] = g->main ? high(fd_memfd("boxlite-main", g->main, g->main_len)) : -1;
	if (g->main && f->at[2] < 0)
		return bl_error_errno(e, errno, "the main command (memfd)");
	for (int i = 0; i < 3; i++) {
		f->at[3 + i] = high(p[i][1]);
		f->ours[1 + i] = p[i][0];
	}
	f->ours[0] = sp[0];
	g->status_fd = st[0];
	return 0;
}

static int spawn_shim(struct guest *g, bl_error *e)
{
	char *argv[MAX_ARGS];
	struct shim_fds f = {.at = {-1, -1, -1, -1, -1, -1}, .ours = {-1, -1, -1, -1}};
	if (spec_argv(g, argv, e) < 0 || guest_mount_volumes(argv, e) < 0 || make_fds(g, &f, e) < 0)
		return -1;
	posix_spawn_file_actions_t fa;
	if (posix_spawn_file_actions_init(&fa))
		return bl_error_errno(e, ENOMEM, "spawn");
	static const int targets[6] = {SHIM_CONN_FD,       SHIM_STATUS_FD,      SHIM_MAIN_FD,
				       SHIM_MAIN_STDOUT_FD, SHIM_MAIN_STDERR_FD, SHIM_MAIN_OUTCOME_FD};
	posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
	for (int i = 0; i < 6; i++)
		if (f.at[i] >= 0)
			posix_spawn_file_actions_adddup2(&fa, f.at[i], targets[i]);
	char *envp[] = {NULL};
	int rc = posix_spawn(&g->spawned, GUEST_SHIM, &fa, NULL, argv, envp);
	posix_spawn_file_actions_destroy(&fa);
	for (int i = 0; i < 6; i++)
		if (f.at[i] >= 0)
			close(f.at[i]);
	if (rc)
		return bl_error_errno(e, rc, "run %s", GUEST_SHIM);
	g->outcome_fd = f.ours[3];
	struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &src_ids[SRC_STATUS]};
	if (epoll_ctl(g->epfd, EPOLL_CTL_ADD, g->status_fd, &ev) < 0 ||
	    mux_add(&g->mux, MUX_CHAN_PRIMARY, f.ours[0], f.ours[0], e) < 0 ||
	    mux_add(&g->mux, MUX_CHAN_STDOUT, f.ours[1], -1, e) < 0 ||
	    mux_add(&g->mux, MUX_CHAN_STDERR, f.ours[2], -1, e) < 0)
		return bl_error_errno(e, errno, "relay the shim");
	return 0;
}

/* The status line, as it comes; the host gets it whole. */
static void on_status(struct guest *g)
{
	ssize_t n = read(g->status_fd, g->status + g->status_have,
			 sizeof g->status - 1 - g->status_have);
	if (n < 0 && errno == EINTR)
		return;
	if (n > 0) {
		g->status_have += (size_t)n;
		if (!memchr(g->status, '\n', g->status_have) && g->status_have < sizeof g->status - 1)
			return;
	}
	g->status[g->status_have] = '\0';
	/* The host gets the line as it is; its pid, if any, is the shim to watch. */
	(void)mux_send(&g->mux, MUX_STATUS, MUX_CHAN_CONTROL, g->status, g->status_have);
	bl_error ignored;
	if (shim_status_parse(g->status, &g->shim, &ignored) < 0)
		g->shim = 0;
	epoll_ctl(g->epfd, EPOLL_CTL_DEL, g->status_fd, NULL);
	close(g->status_fd);
	g->status_fd = -1;
	g->status_done = true;
	if (g->shim > 0 && g->stop)
		kill(g->shim, SIGTERM);
	if (g->shim == g->spawned && g->spawned_done)
		g->shim_done = true;
}

/* Reap every child (PID 1 inherits orphans); note the shim's end. */
static void reap(struct guest *g)
{
	struct signalfd_siginfo si;
	while (read(g->sigfd, &si, sizeof si) == (ssize_t)sizeof si)
		;
	int status;
	pid_t pid;
	while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
		int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
		if (pid == g->spawned) {
			g->spawned_done = true;
			if (g->shim == 0 || g->shim == pid)
				g->code = code;
		}
		if (pid == g->shim) {
			g->shim_done = true;
			g->code = code;
		}
	}
}

static bool shim_over(const struct guest *g)
{
	if (!g->status_done)
		return false;
	return g->shim > 0 ? g->shim_done : g->spawned_done;
}

static int setup(struct guest *g, bl_error *e)
{
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGCHLD);
	if (sigprocmask(SIG_BLOCK, &set, NULL) < 0 ||
	    (g->sigfd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK)) < 0 ||
	    (g->epfd = epoll_create1(EPOLL_CLOEXEC)) < 0)
		return bl_error_errno(e, errno, "signalfd/epoll");
	int port = guest_open_port(e);
	if (port < 0 || mux_init(&g->mux, port, on_control, g, e) < 0)
		return -1;
	struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &src_ids[SRC_MUX]};
	struct epoll_event sv = {.events = EPOLLIN, .data.ptr = &src_ids[SRC_SIGNAL]};
	if (epoll_ctl(g->epfd, EPOLL_CTL_ADD, g->mux.epfd, &ev) < 0 ||
	    epoll_ctl(g->epfd, EPOLL_CTL_ADD, g->sigfd, &sv) < 0)
		return bl_error_errno(e, errno, "epoll_ctl");
	return mux_send(&g->mux, MUX_READY, MUX_CHAN_CONTROL, NULL, 0) < 0
		   ? bl_error_errno(e, ENOMEM, "mux")
		   : 0;
}

/* One turn of the loop: wait up to timeout_ms, handle what came. */
static int turn(struct guest *g, int timeout_ms, bl_error *e)
{
	struct epoll_event evs[8];
	int n = epoll_wait(g->epfd, evs, 8, timeout_ms);
	if (n < 0 && errno != EINTR)
		return bl_error_errno(e, errno, "epoll_wait");
	for (int i = 0; i < n; i++) {
		int kind = *(int *)evs[i].data.ptr;
		if (kind == SRC_SIGNAL)
			reap(g);
		else if (kind == SRC_STATUS)
			on_status(g);
	}
	return mux_run(&g->mux, e);
}

/* Whether a --lower is in the root image (else the lowers are shares). */
static bool uses_root_image(const struct guest *g)
{
	for (size_t off = 0; off < g->spec_len; off += strlen(g->spec + off) + 1)
		if (strncmp(g->spec + off, GUEST_IMAGE_DIR "/", sizeof GUEST_IMAGE_DIR) == 0)
			return true;
	return false;
}

static int run(struct guest *g, bl_error *e)
{
	while (!g->go)
		if (turn(g, -1, e) < 0)
			return -1;
	if (guest_network_up(e) < 0 || (uses_root_image(g) &&
	    guest_mount_disk(GUEST_ROOT_SERIAL, GUEST_IMAGE_DIR, true, e) < 0) ||
	    guest_mount_disk(GUEST_DISK_SERIAL, GUEST_BOX_DIR, false, e) < 0 || spawn_shim(g, e) < 0)
		return -1;
	while (!shim_over(g))
		if (turn(g, -1, e) < 0)
			return -1;
	/* The box is gone, and with it every writer of its logs. */
	int64_t until = bl_now_ms() + DRAIN_MS;
	while ((mux_has(&g->mux, MUX_CHAN_STDOUT) || mux_has(&g->mux, MUX_CHAN_STDERR)) &&
	       bl_now_ms() < until)
		if (turn(g, 50, e) < 0)
			return -1;
	char outcome[64];
	size_t got = fd_read_full(g->outcome_fd, outcome, sizeof outcome);
	if (got)
		(void)mux_send(&g->mux, MUX_OUTCOME, MUX_CHAN_CONTROL, outcome, got);
	return 0;
}

static void report_exit(struct guest *g, int code)
{
	uint8_t v[4] = {(uint8_t)code, (uint8_t)(code >> 8), (uint8_t)(code >> 16),
			(uint8_t)(code >> 24)};
	(void)mux_send(&g->mux, MUX_EXIT, MUX_CHAN_CONTROL, v, sizeof v);
	mux_flush(&g->mux, 5000);
}

int main(void)
{
	/* A closed channel is an error to handle, not PID 1's death. */
	signal(SIGPIPE, SIG_IGN);
	static struct guest g = {.status_fd = -1, .outcome_fd = -1, .mux = {.port = -1}};
	bl_error e = {0};
	int rc = guest_load_modules(&e) < 0 || guest_switch_root(&e) < 0 ||
			 guest_mount_system(&e) < 0
		     ? -1
		     : 0;
	if (rc == 0 && guest_cmdline_has(GUEST_PROBE_ARG)) {
		puts(GUEST_PROBE_OK);
		fflush(stdout);
		guest_power_off();
	}
	if (rc == 0)
		rc = setup(&g, &e);
	if (rc == 0)
		rc = run(&g, &e);
	if (rc < 0) {
		fprintf(stderr, "boxlite-guest: %s\n", e.msg);
		if (g.mux.port >= 0 && !g.status_done) {
			char line[BL_ERROR_MAX + 32];
			snprintf(line, sizeof line, "error %d guest: %s\n", e.status, e.msg);
			(void)mux_send(&g.mux, MUX_STATUS, MUX_CHAN_CONTROL, line, strlen(line));
		}
	}
	if (g.mux.port >= 0)
		report_exit(&g, rc < 0 ? 1 : g.code);
	guest_power_off();
}
