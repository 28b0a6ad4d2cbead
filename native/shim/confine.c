/*
 * confine.c - the last step before the agent: what a box's processes may
 * still do with the privilege they hold in their user namespace.
 *
 * - The capability bounding set is cut to the set OCI runtimes give a
 *   container by default: no CAP_SYS_ADMIN (mount, namespaces), no
 *   CAP_SYS_PTRACE, CAP_NET_ADMIN, CAP_SYS_MODULE, CAP_SYS_TIME...; a
 *   process of the box can never get more, setuid binaries included.
 *   Without CAP_SYS_PTRACE, no process of the box can trace or read the
 *   agent, which makes itself not dumpable (native/agent/main.c).
 * - no_new_privs: execve never grants privilege (setuid and file
 *   capabilities are ignored); it is also what lets an unprivileged
 *   process install the seccomp filter.
 * - A seccomp filter refuses, with EPERM, the system calls a sandbox never
 *   needs (docs/security.md lists them): kernel keyrings, bpf, perf,
 *   kexec and modules, clock changes, mount and namespace changes, swap,
 *   accounting, and the rest below; io_uring gets ENOSYS.  32-bit x86
 *   system calls are refused outright: the filter's list names the 64-bit
 *   ones.
 *
 * All three are inherited across fork and execve, so they hold for every
 * process the agent starts.
 */
#include <errno.h>
#include <sched.h>
#include <seccomp.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/prctl.h>
#include <linux/capability.h>

#include "shim.h"

/* What a box keeps (docker's and podman's default set). */
static const int KEPT_CAPS[] = {
    CAP_CHOWN,	  CAP_DAC_OVERRIDE, CAP_FOWNER,		  CAP_FSETID, CAP_KILL,
    CAP_SETGID,	  CAP_SETUID,	    CAP_SETPCAP,	  CAP_NET_BIND_SERVICE,
    CAP_NET_RAW,  CAP_SYS_CHROOT,   CAP_MKNOD,		  CAP_AUDIT_WRITE, CAP_SETFCAP,
};

/* Refused with EPERM: nothing a box's programs need, each a door to the
 * kernel's less travelled parts or to the host's state. */
static const char *const REFUSED[] = {
    "add_key",		"request_key",	   "keyctl",		/* kernel keyrings */
    "bpf",		"perf_event_open", "userfaultfd",	/* kernel attack surface */
    "kexec_load",	"kexec_file_load", "init_module",	"finit_module",
    "delete_module",	"create_module",   "query_module",	"get_kernel_syms",
    "clock_settime",	"clock_adjtime",   "settimeofday",	"adjtimex",
    "mount",		"umount2",	   "pivot_root",	"fsopen",
    "fsconfig",		"fsmount",	   "move_mount",	"open_tree",
    "fspick",		"mount_setattr",   "unshare",		"setns",
    "swapon",		"swapoff",	   "acct",		"reboot",
    "syslog",		"quotactl",	   "quotactl_fd",	"nfsservctl",
    "lookup_dcookie",	"open_by_handle_at", "name_to_handle_at", "iopl",
    "ioperm",		"uselib",	   "_sysctl",		"vhangup",
    "memfd_secret",	"kcmp",					/* memory the kernel hides; comparing others' kernel objects */
};

/* Refused with ENOSYS, as by a kernel built without it: io_uring, whose
 * history of kernel bugs makes it a favourite way out of sandboxes (docker
 * refuses it too).  Its users (liburing, libuv, tokio) then fall back to
 * plain system calls, as they must on such kernels. */
static const char *const ABSENT[] = {"io_uring_setup", "io_uring_enter", "io_uring_register"};

static int drop_capabilities(bl_error *e)
{
	for (int cap = 0; cap <= CAP_LAST_CAP; cap++) {
		bool kept = false;
		for (size_t i = 0; i < sizeof KEPT_CAPS / sizeof KEPT_CAPS[0]; i++)
			kept |= KEPT_CAPS[i] == cap;
		if (!kept && prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0 && errno != EINVAL)
			return bl_error_errno(e, errno, "drop capability %d from the bounding set",
					      cap);
	}
	if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0 && errno != EINVAL)
		return bl_error_errno(e, errno, "clear the ambient capabilities");
	return 0;
}

/* clone with a namespace flag: a box makes no namespaces.  clone3 hides
 * its flags behind a pointer, so it gets ENOSYS: libc falls back to clone. */
static int refuse_new_namespaces(scmp_filter_ctx ctx)
{
	static const uint64_t NS_FLAGS[] = {CLONE_NEWNS,  CLONE_NEWUTS, CLONE_NEWIPC,
					    CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET,
					    CLONE_NEWCGROUP};
	int rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(clone3), 0);
	for (size_t i = 0; rc == 0 && i < sizeof NS_FLAGS / sizeof NS_FLAGS[0]; i++)
		rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(clone), 1,
				      SCMP_A0(SCMP_CMP_MASKED_EQ, NS_FLAGS[i], NS_FLAGS[i]));
	return rc;
}

/* A name libseccomp does not know on x86-64 (the obsolete module calls) has
 * no number to refuse. */
static int refuse(scmp_filter_ctx ctx, const char *name, int err)
{
	int nr = seccomp_syscall_resolve_name(name);
	return nr == __NR_SCMP_ERROR ? 0 : seccomp_rule_add(ctx, SCMP_ACT_ERRNO(err), nr, 0);
}

static int install_filter(bl_error *e)
{
	scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);
	if (!ctx)
		return bl_error_errno(e, ENOMEM, "seccomp_init");
	int rc = seccomp_attr_set(ctx, SCMP_FLTATR_CTL_NNP, 1);
	for (size_t i = 0; rc == 0 && i < sizeof REFUSED / sizeof REFUSED[0]; i++)
		rc = refuse(ctx, REFUSED[i], EPERM);
	for (size_t i = 0; rc == 0 && i < sizeof ABSENT / sizeof ABSENT[0]; i++)
		rc = refuse(ctx, ABSENT[i], ENOSYS);
	if (rc == 0)
		rc = refuse_new_namespaces(ctx);
	if (rc == 0) /* the filter's names are x86-64's: other ABIs get nothing */
		rc = seccomp_attr_set(ctx, SCMP_FLTATR_ACT_BADARCH, SCMP_ACT_KILL_PROCESS);
	if (rc == 0)
		rc = seccomp_load(ctx);
	seccomp_release(ctx);
	return rc < 0 ? bl_error_errno(e, -rc, "install the seccomp filter") : 0;
}

int confine(bl_error *e)
{
	if (drop_capabilities(e) < 0)
		return -1;
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
		return bl_error_errno(e, errno, "prctl(PR_SET_NO_NEW_PRIVS)");
	return install_filter(e);
}
