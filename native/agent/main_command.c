/*
 * main_command.c - the box's main command (agent.h): spawned at start-up
 * with its output going straight to the logs the shim opened, and reaped
 * like any child.  Its end is the box's end; how it ended goes to the
 * shim, one line on the outcome pipe, unless the box was being stopped
 * (then the box is "stopped", not "exited").
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "agent.h"

bool main_command_parse(struct main_command *m, const char *arg)
{
	char *end;
	const char *p = arg;
	for (size_t i = 0; i < 4; i++) {
		errno = 0;
		long v = strtol(p, &end, 10);
		if (errno || end == p || v < 0 || v > 65535 || *end != (i < 3 ? ',' : '\0'))
			return false;
		m->fds[i] = (int)v;
		p = end + 1;
	}
	return true;
}

static void report(struct main_command *m, const char *line)
{
	size_t len = strlen(line);
	/* One short write into an empty pipe: whole, or the shim sees none. */
	if (write(m->fds[3], line, len) != (ssize_t)len)
		fprintf(stderr, "boxlite-agent: report the main command's end: %s\n",
			strerror(errno));
	close(m->fds[3]);
	m->fds[3] = -1;
}

/* Read the whole EXEC payload from its memfd; NULL with errno set. */
static uint8_t *read_request(int fd, size_t *len)
{
	struct stat st;
	if (fstat(fd, &st) < 0)
		return NULL;
	uint8_t *buf = malloc(st.st_size > 0 ? (size_t)st.st_size : 1);
	size_t got = 0;
	while (buf && got < (size_t)st.st_size) {
		ssize_t n = pread(fd, buf + got, (size_t)st.st_size - got, (off_t)got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			errno = n < 0 ? errno : EIO;
			free(buf);
			return NULL;
		}
		got += (size_t)n;
	}
	*len = got;
	return buf;
}

static int spawn_main(struct main_command *m, bl_error *e)
{
	size_t len;
	uint8_t *payload = read_request(m->fds[0], &len);
	if (!payload)
		return bl_error_errno(e, errno, "read the main command");
	struct bl_exec_request req;
	int err = -bl_exec_decode(payload, len, &req);
	if (err) {
		bl_error_errno(e, err, "decode the main command");
	} else {
		char marker[32];
		process_tree_marker(0, marker, sizeof marker);
		err = exec_spawn_process(&req, -1, m->fds[1], m->fds[2], marker, &m->pid);
		if (err)
			bl_error_errno(e, err, "start the main command");
		bl_exec_request_release(&req);
	}
	free(payload);
	return err ? -1 : 0;
}

int main_command_start(struct agent *ag, bl_error *e)
{
	struct main_command *m = &ag->main;
	/* The box's processes must not inherit any of these. */
	for (size_t i = 0; i < 4; i++)
		if (fcntl(m->fds[i], F_SETFD, FD_CLOEXEC) < 0)
			return bl_error_errno(e, errno, "the main command's fds");
	bl_error failed;
	int rc = spawn_main(m, &failed);
	for (size_t i = 0; i < 3; i++) {
		close(m->fds[i]); /* the command has its own copies of the logs */
		m->fds[i] = -1;
	}
	if (rc < 0) {
		/* The host learns the errno from the shim; the log, the rest. */
		fprintf(stderr, "boxlite-agent: %s\n", failed.msg);
		char line[32];
		snprintf(line, sizeof line, "failed %d\n", failed.status);
		report(m, line);
		m->pid = -1;
		agent_end(ag);
	}
	return 0;
}

bool main_command_reaped(struct agent *ag, pid_t pid, int status)
{
	struct main_command *m = &ag->main;
	if (m->pid <= 0 || pid != m->pid)
		return false;
	m->pid = -1;
	if (!ag->stopping) {
		char line[32];
		if (WIFSIGNALED(status))
			snprintf(line, sizeof line, "signaled %d\n", WTERMSIG(status));
		else
			snprintf(line, sizeof line, "exited %d\n", WEXITSTATUS(status));
		report(m, line);
	}
	agent_end(ag);
	return true;
}
