/*
 * error.c - the one error type (error.h).
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "error.h"

static void vformat(char *buf, size_t cap, const char *fmt, va_list ap)
{
	if (vsnprintf(buf, cap, fmt, ap) < 0)
		snprintf(buf, cap, "(unformattable message)");
}

int bl_error_vset(bl_error *e, int status, const char *fmt, va_list ap)
{
	vformat(e->msg, sizeof e->msg, fmt, ap);
	e->status = status;
	return -1;
}

int bl_error_verrno(bl_error *e, int errnum, const char *fmt, va_list ap)
{
	vformat(e->msg, sizeof e->msg, fmt, ap);
	size_t n = strlen(e->msg);
	snprintf(e->msg + n, sizeof e->msg - n, ": %s", strerror(errnum));
	e->status = errnum;
	return -1;
}

int bl_error_set(bl_error *e, int status, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	bl_error_vset(e, status, fmt, ap);
	va_end(ap);
	return -1;
}

int bl_error_errno(bl_error *e, int errnum, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	bl_error_verrno(e, errnum, fmt, ap);
	va_end(ap);
	return -1;
}

int bl_error_wrap(bl_error *e, const char *fmt, ...)
{
	char context[BL_ERROR_MAX];
	va_list ap;
	va_start(ap, fmt);
	vformat(context, sizeof context, fmt, ap);
	va_end(ap);
	/* Shift the message right past "<context>: ", dropping its tail. */
	size_t cap = sizeof e->msg - 1;
	size_t head = strlen(context) + 2;
	if (head > cap)
		head = cap;
	size_t kept = strnlen(e->msg, cap);
	if (kept > cap - head)
		kept = cap - head;
	memmove(e->msg + head, e->msg, kept);
	memcpy(e->msg, context, head - 2);
	e->msg[head - 2] = ':';
	e->msg[head - 1] = ' ';
	e->msg[head + kept] = '\0';
	return -1;
}
