/*
 * pidfd.h - the pidfd system calls glibc 2.36 does not wrap.
 */
#ifndef BOXLITE_PIDFD_H
#define BOXLITE_PIDFD_H

#include <signal.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <unistd.h>

static inline int bl_pidfd_open(pid_t pid) { return (int)syscall(SYS_pidfd_open, pid, 0); }

/* 0, or -1 with errno (ESRCH: the process has exited). */
static inline int bl_pidfd_signal(int pidfd, int sig)
{
	return (int)syscall(SYS_pidfd_send_signal, pidfd, sig, NULL, 0);
}

#endif
