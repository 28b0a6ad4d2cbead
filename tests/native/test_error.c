/* Unit tests of the one error type (native/common/error.c). */
#include <errno.h>
#include <stdarg.h>
#include <string.h>

#include "check.h"
#include "common/error.h"

static void test_errno_and_wrap_build_a_path(void)
{
	bl_error e;
	CHECK(bl_error_errno(&e, ENOENT, "open %s", "/x/shim.log") == -1);
	CHECK(e.status == ENOENT);
	CHECK(bl_error_wrap(&e, "box %d", 7) == -1);
	CHECK(e.status == ENOENT);
	CHECK(strcmp(e.msg, "box 7: open /x/shim.log: No such file or directory") == 0);
}

static void test_set_keeps_status(void)
{
	bl_error e;
	CHECK(bl_error_set(&e, 0, "bad %s", "rootfs") == -1);
	CHECK(e.status == 0 && strcmp(e.msg, "bad rootfs") == 0);
}

static void test_long_context_truncates_never_overflows(void)
{
	char big[2 * BL_ERROR_MAX];
	memset(big, 'c', sizeof big - 1);
	big[sizeof big - 1] = '\0';
	bl_error e;
	bl_error_set(&e, EIO, "%s", big);
	CHECK(strlen(e.msg) == BL_ERROR_MAX - 1);
	bl_error_wrap(&e, "%s", big);
	CHECK(strlen(e.msg) == BL_ERROR_MAX - 1);
	CHECK(e.msg[BL_ERROR_MAX - 3] == ':' && e.msg[BL_ERROR_MAX - 2] == ' ');
	bl_error_set(&e, EIO, "tail");
	for (int i = 0; i < 200; i++)
		bl_error_wrap(&e, "step %d", i);
	CHECK(strlen(e.msg) < BL_ERROR_MAX && strncmp(e.msg, "step 199: step 198: ", 20) == 0);
}

/* A reporter of one's own, as copy.c's, passes its format on. */
static int own_fail(bl_error *e, int errnum, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static int own_fail(bl_error *e, int errnum, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int rc = errnum ? bl_error_verrno(e, errnum, fmt, ap) : bl_error_vset(e, 0, fmt, ap);
	va_end(ap);
	return rc;
}

static void test_va_list_forms_match_the_variadic_ones(void)
{
	bl_error a, b;
	CHECK(own_fail(&a, EXDEV, "linking %s to %s", "x", "../y") == -1);
	bl_error_errno(&b, EXDEV, "linking %s to %s", "x", "../y");
	CHECK(a.status == EXDEV && strcmp(a.msg, b.msg) == 0);
	CHECK(own_fail(&a, 0, "a corrupt %s", "header") == -1);
	CHECK(a.status == 0 && strcmp(a.msg, "a corrupt header") == 0);
}

int main(void)
{
	RUN(test_errno_and_wrap_build_a_path);
	RUN(test_set_keeps_status);
	RUN(test_long_context_truncates_never_overflows);
	RUN(test_va_list_forms_match_the_variadic_ones);
	return 0;
}
