/*
 * fdio.h - whole-buffer reads and writes across EINTR and short counts, and
 * the fds a supervisor hands its child, shared by the core, the shim, the
 * agent, the vmm and the guest init.
 */
#ifndef BOXLITE_FDIO_H
#define BOXLITE_FDIO_H

#include <stddef.h>

/* Read until len bytes, EOF or an error; write until len bytes or an error
 * (errno set).  Both return the bytes done. */
size_t fd_read_full(int fd, void *buf, size_t len);
size_t fd_write_full(int fd, const void *buf, size_t len);

/* A CLOEXEC memfd called name holding len bytes of data: an fd, or -1 with
 * errno (EIO for a short write). */
int fd_memfd(const char *name, const void *data, size_t len);
/* fd moved to the lowest free fd >= floor (CLOEXEC), so that dup2s to the
 * fds below it never alias it; the old fd is closed either way.  The new fd,
 * or -1 with errno. */
int fd_move_above(int fd, int floor);

#endif
