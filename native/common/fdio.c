/*
 * fdio.c - whole-buffer reads and writes across EINTR and short counts
 * (fdio.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "fdio.h"

size_t fd_read_full(int fd, void *buf, size_t len)
{
	size_t got = 0;
	while (got < len) {
		ssize_t n = read(fd, (char *)buf + got, len - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		got += (size_t)n;
	}
	return got;
}

size_t fd_write_full(int fd, const void *buf, size_t len)
{
	size_t off = 0;
	while (off < len) {
		ssize_t n = write(fd, (const char *)buf + off, len - off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		off += (size_t)n;
	}
	return off;
}

int fd_memfd(const char *name, const void *data, size_t len)
{
	int fd = (int)syscall(SYS_memfd_create, name, MFD_CLOEXEC);
	if (fd < 0)
		return -1;
	errno = 0;
	if (fd_write_full(fd, data, len) != len) {
		int err = errno ? errno : EIO;
		close(fd);
		errno = err;
		return -1;
	}
	return fd;
}

int fd_move_above(int fd, int floor)
{
	int moved = fcntl(fd, F_DUPFD_CLOEXEC, floor);
	int err = errno;
	close(fd);
	errno = err;
	return moved;
}
