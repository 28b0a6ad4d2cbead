/*
 * error.h - the one error type of the core, the shim and the agent.
 *
 * In the spirit of crun's libcrun_error_t: a status (an errno value, or 0
 * when no system call failed) and a message, to which each caller on the way
 * up prefixes what it was doing.  Unlike crun's it lives in the caller's
 * storage, not the heap: the shim fills it between clone and exec, and the
 * core completes operations that must never need memory.
 *
 *	static int open_log(const char *dir, bl_error *e)
 *	{
 *		int fd = open(...);
 *		if (fd < 0)
 *			return bl_error_errno(e, errno, "open %s/shim.log", dir);
 *		...
 *	}
 *	if (open_log(dir, e) < 0)
 *		return bl_error_wrap(e, "box set-up");  // "box set-up: open ...: EACCES"
 */
#ifndef BOXLITE_ERROR_H
#define BOXLITE_ERROR_H

#include <stdarg.h>
#include <stddef.h>

#define BL_ERROR_MAX 512

typedef struct bl_error {
	int status;             /* errno of the failure, 0 if none */
	char msg[BL_ERROR_MAX]; /* NUL-terminated; truncated, never overflowed */
} bl_error;

/* Each sets *e and returns -1, so a failing step is `return bl_error_...`. */
/* status and message as given. */
int bl_error_set(bl_error *e, int status, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* "<message>: <strerror(errnum)>", status errnum. */
int bl_error_errno(bl_error *e, int errnum, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* Prefix context: "<context>: <message so far>"; the status stays. */
int bl_error_wrap(bl_error *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The same for a helper of one's own that takes a format. */
int bl_error_vset(bl_error *e, int status, const char *fmt, va_list ap)
	__attribute__((format(printf, 3, 0)));
int bl_error_verrno(bl_error *e, int errnum, const char *fmt, va_list ap)
	__attribute__((format(printf, 3, 0)));

#endif
