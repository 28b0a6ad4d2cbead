/*
 * fdio.h - whole-buffer reads and writes across EINTR and short counts,
 * shared by the core's tests, the shim and the agent.
 */
#ifndef BOXLITE_FDIO_H
#define BOXLITE_FDIO_H

#include <stddef.h>

/* Read until len bytes, EOF or an error; write until len bytes or an error
 * (errno set).  Both return the bytes done. */
size_t fd_read_full(int fd, void *buf, size_t len);
size_t fd_write_full(int fd, const void *buf, size_t len);

#endif
