/*
 * logs.c - the main command's logs (shim.h): its stdout and stderr are
 * pipes the shim empties into DIR/stdout.log and DIR/stderr.log.
 *
 * The box never holds a log file, so it cannot grow one past the limit:
 * when a file reaches half the limit it becomes NAME.1 (replacing the
 * older half) and a new NAME starts.  Each stream thus keeps its newest
 * output, between half the limit and all of it, byte for byte.  The shim
 * reads whatever the box writes, so a box never blocks on its logs; when
 * the host cannot take them (a full disk), output is dropped and said so
 * once on the shim's stderr.
 *
 * The same goes for DIR/shim.log (SHIM_LOG_LIMIT): the agent and the
 * network helper write their messages to a pipe the shim empties into it,
 * so neither holds a host file (a compromised one cannot grow it, seek or
 * truncate it).  It is also where the shim's own stdout and stderr go
 * ("own"): they follow it to each new file, appending; the shim's few
 * messages of its own are not counted against the limit.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "shim.h"

#define CHUNK 65536

static int open_current(struct shim_log *l, int flags)
{
	int fd = open(l->path, O_WRONLY | O_CREAT | O_CLOEXEC | (l->own ? O_APPEND : 0) | flags, 0600);
	if (fd < 0)
		return errno;
	struct stat st;
	if (fstat(fd, &st) < 0 || lseek(fd, 0, SEEK_END) < 0 ||
	    (l->own && (dup2(fd, STDOUT_FILENO) < 0 || dup2(fd, STDERR_FILENO) < 0))) {
		int err = errno;
		close(fd);
		return err;
	}
	if (l->file_fd >= 0)
		close(l->file_fd);
	l->file_fd = fd;
	l->size = (uint64_t)st.st_size;
	return 0;
}

int log_open(struct shim_log *l, const char *dir, const char *name, uint64_t limit, bool own,
	     int *box_end, bl_error *e)
{
	l->pipe_fd = l->file_fd = -1;
	l->failed = false;
	l->limit = limit;
	l->own = own;
	if (snprintf(l->path, sizeof l->path, "%s/%s", dir, name) >= (int)sizeof l->path ||
	    snprintf(l->old, sizeof l->old, "%s/%s.1", dir, name) >= (int)sizeof l->old)
		return bl_error_errno(e, ENAMETOOLONG, "open %s", name);
	int p[2];
	if (pipe2(p, O_CLOEXEC) < 0)
		return bl_error_errno(e, errno, "%s's pipe", name);
	l->pipe_fd = p[0];
	*box_end = p[1];
	if (fcntl(l->pipe_fd, F_SETFL, O_NONBLOCK) < 0)
		return bl_error_errno(e, errno, "%s's pipe", name);
	int err = open_current(l, 0); /* a restart goes on where the last run stopped */
	return err ? bl_error_errno(e, err, "open %s", name) : 0;
}

static void fail(struct shim_log *l, const char *what)
{
	if (!l->failed)
		fprintf(stderr, "boxlite-shim: %s %s: %s; its output is dropped\n", what, l->path,
			strerror(errno));
	l->failed = true;
}

/* Append, starting a new file whenever the current one is half the limit. */
static void append(struct shim_log *l, const char *buf, size_t len)
{
	uint64_t limit = l->limit, half = limit / 2;
	while (len > 0 && !l->failed) {
		if (limit && l->size >= half) {
			if (rename(l->path, l->old) < 0) {
				fail(l, "rotate");
				return;
			}
			errno = open_current(l, O_TRUNC);
			if (errno) {
				fail(l, "reopen");
				return;
			}
		}
		size_t n = limit && half - l->size < len ? (size_t)(half - l->size) : len;
		size_t done = fd_write_full(l->file_fd, buf, n);
		l->size += done;
		if (done < n)
			fail(l, "write");
		buf += n;
		len -= n;
	}
}

bool log_pump(struct shim_log *l)
{
	char buf[CHUNK];
	if (l->pipe_fd < 0)
		return false;
	ssize_t n = read(l->pipe_fd, buf, sizeof buf);
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return false;
	if (n <= 0) { /* every writer is gone (or the pipe broke): done */
		close(l->pipe_fd);
		l->pipe_fd = -1;
		return false;
	}
	append(l, buf, (size_t)n);
	return true;
}

void log_close(struct shim_log *l)
{
	while (log_pump(l)) /* what the box wrote before it ended */
		;
	if (l->pipe_fd >= 0)
		close(l->pipe_fd);
	if (l->file_fd >= 0)
		close(l->file_fd);
	l->pipe_fd = l->file_fd = -1;
}
