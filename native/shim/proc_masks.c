/*
 * proc_masks.c - the box's /proc, as OCI runtimes leave it by default:
 * files that expose the host's kernel state masked (/dev/null bound over
 * them, an empty read-only tmpfs over directories), and the kernel's
 * tunables read-only.  The box's /proc is its own mount (its pid
 * namespace's), so nothing an image holds is on these paths.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <sys/mount.h>
#include <sys/stat.h>

#include "shim.h"

static const char *const MASKED[] = {
    "proc/kcore",     "proc/keys",	   "proc/timer_list", "proc/sched_debug",
    "proc/latency_stats", "proc/timer_stats", "proc/acpi",	   "proc/scsi",
    "proc/asound",
};
static const char *const READ_ONLY[] = {
    "proc/bus", "proc/fs", "proc/irq", "proc/sys", "proc/sysrq-trigger",
};
static const unsigned long PROC_FLAGS = MS_NOSUID | MS_NODEV | MS_NOEXEC;

static int mask(const char *root, const char *rel, bl_error *e)
{
	char path[PATH_MAX], null[PATH_MAX];
	snprintf(path, sizeof path, "%s/%s", root, rel);
	snprintf(null, sizeof null, "%s/dev/null", root);
	struct stat st;
	if (lstat(path, &st) < 0)
		return errno == ENOENT ? 0 : bl_error_errno(e, errno, "stat /%s", rel);
	int rc = S_ISDIR(st.st_mode)
		     ? mount("tmpfs", path, "tmpfs", MS_RDONLY | PROC_FLAGS, "size=0")
		     : mount(null, path, NULL, MS_BIND, NULL);
	return rc < 0 ? bl_error_errno(e, errno, "mask /%s", rel) : 0;
}

static int read_only(const char *root, const char *rel, bl_error *e)
{
	char path[PATH_MAX];
	snprintf(path, sizeof path, "%s/%s", root, rel);
	struct stat st;
	if (lstat(path, &st) < 0)
		return errno == ENOENT ? 0 : bl_error_errno(e, errno, "stat /%s", rel);
	if (mount(path, path, NULL, MS_BIND | MS_REC, NULL) < 0 ||
	    mount(NULL, path, NULL, MS_BIND | MS_REMOUNT | MS_RDONLY | PROC_FLAGS, NULL) < 0)
		return bl_error_errno(e, errno, "make /%s read-only", rel);
	return 0;
}

int mask_proc(const char *root, bl_error *e)
{
	for (size_t i = 0; i < sizeof MASKED / sizeof MASKED[0]; i++)
		if (mask(root, MASKED[i], e) < 0)
			return -1;
	for (size_t i = 0; i < sizeof READ_ONLY / sizeof READ_ONLY[0]; i++)
		if (read_only(root, READ_ONLY[i], e) < 0)
			return -1;
	return 0;
}
