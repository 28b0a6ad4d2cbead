/*
 * main_command.c - the shim's part in a box's main command: the pipes its
 * output goes to (logs.c), and the record of how it ended (shim.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "shim.h"

static int path_in(char *out, const char *dir, const char *name)
{
	return snprintf(out, PATH_MAX, "%s/%s", dir, name) >= PATH_MAX ? ENAMETOOLONG : 0;
}

/* In a vm's guest the main command's output and outcome go to the guest
 * init's pipes (fds 6-8), which carry them to the host's supervisor. */
static int guest_sinks(struct shim_config *cfg, bl_error *e)
{
	static const int fds[3] = {SHIM_MAIN_STDOUT_FD, SHIM_MAIN_STDERR_FD, SHIM_MAIN_OUTCOME_FD};
	for (size_t i = 0; i < 3; i++)
		if (fcntl(fds[i], F_SETFD, FD_CLOEXEC) < 0)
			return bl_error_errno(e, errno, "the guest's main command fd %d", fds[i]);
	if (!cfg->main)
		return 0;
	if (fcntl(SHIM_MAIN_FD, F_SETFD, FD_CLOEXEC) < 0)
		return bl_error_errno(e, errno, "the main command (fd 5)");
	cfg->main_fds[0] = SHIM_MAIN_FD;
	for (size_t i = 0; i < 3; i++)
		cfg->main_fds[1 + i] = fds[i];
	return 0;
}

int main_command_prepare(struct shim_config *cfg, bl_error *e)
{
	for (size_t i = 0; i < 4; i++)
		cfg->main_fds[i] = -1;
	cfg->outcome_fd = cfg->logs[0].pipe_fd = cfg->logs[1].pipe_fd = -1;
	cfg->logs[0].file_fd = cfg->logs[1].file_fd = -1;
	char p[PATH_MAX];
	int err = path_in(p, cfg->box_dir, "exit");
	if (err || (unlink(p) < 0 && errno != ENOENT))
		return bl_error_errno(e, err ? err : errno, "remove the outcome of the last run");
	if (cfg->guest)
		return guest_sinks(cfg, e);
	if (!cfg->main)
		return 0;
	if (fcntl(SHIM_MAIN_FD, F_SETFD, FD_CLOEXEC) < 0)
		return bl_error_errno(e, errno, "the main command (fd 5)");
	cfg->main_fds[0] = SHIM_MAIN_FD;
	if (log_open(&cfg->logs[0], cfg->box_dir, "stdout.log", cfg->log_limit, false,
		     &cfg->main_fds[1], e) < 0 ||
	    log_open(&cfg->logs[1], cfg->box_dir, "stderr.log", cfg->log_limit, false,
		     &cfg->main_fds[2], e) < 0)
		return bl_error_wrap(e, "open the main command's logs");
	int report[2];
	if (pipe2(report, O_CLOEXEC) < 0)
		return bl_error_errno(e, errno, "pipe2");
	cfg->outcome_fd = report[0];
	cfg->main_fds[3] = report[1];
	return 0;
}

/* The agent's one line, e.g. "exited 3\n"; empty when it reported none. */
static size_t read_report(int fd, char *buf, size_t cap)
{
	size_t got = fd_read_full(fd, buf, cap - 1);
	buf[got] = '\0';
	return got && buf[got - 1] == '\n' ? got : 0; /* a torn line is no report */
}

void main_command_record(const struct shim_config *cfg)
{
	char report[64], line[128], tmp[PATH_MAX], final[PATH_MAX];
	if (cfg->outcome_fd < 0 || !read_report(cfg->outcome_fd, report, sizeof report))
		return;
	struct timespec now;
	clock_gettime(CLOCK_REALTIME, &now);
	/* "<outcome> <value> <finished, ms since the epoch>" */
	int len = snprintf(line, sizeof line, "%.*s %lld\n", (int)strlen(report) - 1, report,
			   (long long)now.tv_sec * 1000 + now.tv_nsec / 1000000);
	if (path_in(tmp, cfg->box_dir, "exit.tmp") || path_in(final, cfg->box_dir, "exit"))
		return;
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	bool ok = fd >= 0 && fd_write_full(fd, line, (size_t)len) == (size_t)len && fsync(fd) == 0;
	if (fd >= 0)
		close(fd);
	if (!ok || rename(tmp, final) < 0)
		fprintf(stderr, "boxlite-shim: record the main command's outcome: %s\n",
			strerror(errno));
}
