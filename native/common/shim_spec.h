/*
 * shim_spec.h - what boxlite-shim is told, defined once for the engine that
 * writes it (engine/ns.c) and the shim that reads it (shim/main.c).
 *
 * The command line is SHIM_FLAGS, one row per flag: the engine writes argv
 * from it (shim_spec_argv), the shim parses argv by it (shim_spec_parse),
 * and its usage text is printed from it (shim_spec_usage).  Both sides then
 * run the one check (shim_spec_check), which is also what boxlite_box_new
 * runs, so a box that is created is one its shim will not refuse.
 *
 * Besides the command line the shim gets three fds and one signal:
 */
#ifndef BOXLITE_SHIM_SPEC_H
#define BOXLITE_SHIM_SPEC_H

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "boxlite.h"
#include "common/error.h"

/* fd 3: the agent's connection to the host; fd 4: the status pipe, which
 * carries one line, "ok <shim pid>" or "error <errno> <message>"; fd 5 (with
 * --main): a memfd holding the main command.  Nothing above them is kept. */
#define SHIM_CONN_FD 3
#define SHIM_STATUS_FD 4
#define SHIM_MAIN_FD 5
#define SHIM_FIRST_FREE_FD 6
/* With --guest (a vm's guest): where the main command's stdout, stderr and
 * outcome go instead of the box directory's files; the guest init reads them. */
#define SHIM_MAIN_STDOUT_FD 6
#define SHIM_MAIN_STDERR_FD 7
#define SHIM_MAIN_OUTCOME_FD 8
#define SHIM_GUEST_FIRST_FREE_FD 9

/* To a shim: kill its box now.  The shim SIGKILLs the agent and exits once
 * it has reaped it, i.e. once the box's whole pid namespace is gone; a
 * SIGKILL of the shim itself would leave the agent to die a moment later.
 * SIGTERM (and SIGINT, SIGHUP) stop it gracefully. */
#define SHIM_KILL_NOW SIGUSR1

#define SHIM_MAX_LOWERS 128
#define SHIM_MAX_BINDS BOXLITE_MAX_MOUNTS
#define SHIM_HOSTNAME_MAX 64
/* In the box directory: where the agent listens (what box_connect
 * reaches), and the shim's stdout and stderr, which the engine opens. */
#define SHIM_AGENT_SOCKET "agent.sock"
#define SHIM_LOG_FILE "shim.log"

/* --bind / --bind-ro SOURCE TARGET: a host path mounted into the box. */
struct shim_bind {
	const char *source, *target;
	bool readonly;
};

/* --memory BYTES, --pids N, --cpu-millis N: 0 is no limit.
 * --pids-optional: the pids limit is a default, set only in cgroup v2 and
 * left out where it cannot be (the shim's log says why) instead of failing
 * the start. */
struct shim_limits {
	uint64_t memory;
	uint32_t pids, cpu_millis;
	bool pids_optional;
};

/* --vm-*: what boxlite-vmm, the vm engine's supervisor, runs the box's VM
 * with.  A supervisor takes all of them (boxlite-vmm) or none (boxlite-shim). */
struct shim_vm {
	const char *qemu;       /* qemu-system-x86_64 */
	const char *kernel;     /* the guest's */
	const char *initrd;     /* boxlite-guest as /init, the shim, the agent, modules */
	const char *root_image; /* ext4: each layer at /<basename of its --lower> */
	const char *accel;      /* "kvm" or "tcg" */
	uint32_t ready_ms;      /* from QEMU's start to the guest's status line */
	const char *kernel_args; /* after the kernel's own command line (qemu.c) */
};

/* The least guest RAM the guest's kernel and init run in. */
#define SHIM_VM_MIN_MEMORY_MIB 128

/* The kinds of value a flag takes. */
enum shim_arg {
	SHIM_ARG_SWITCH, /* none: the field becomes true */
	SHIM_ARG_TEXT,   /* a string */
	SHIM_ARG_U32,
	SHIM_ARG_U64,
	SHIM_ARG_PID,
	SHIM_ARG_LOWER,   /* repeated: lowers[] */
	SHIM_ARG_BIND,    /* repeated, two values: binds[] */
	SHIM_ARG_BIND_RO, /* the same, read-only */
};

/*
 * X(flag, kind, field, value, doc): field is a member of struct shim_spec.
 * A number 0, a switch off or a string NULL is not written: the shim's
 * default is the same.
 */
#define SHIM_FLAGS(X)                                                                             \
	X("--box-dir", SHIM_ARG_TEXT, box_dir, "DIR", "the box's directory (required)")          \
	X("--agent", SHIM_ARG_TEXT, agent, "PATH", "boxlite-agent, run as the box's init (required)") \
	X("--lower", SHIM_ARG_LOWER, lowers, "DIR", "an image layer, top-most first (one at least)") \
	X("--bind", SHIM_ARG_BIND, binds, "SOURCE TARGET", "a host path mounted into the box")   \
	X("--bind-ro", SHIM_ARG_BIND_RO, binds, "SOURCE TARGET", "the same, read-only")          \
	X("--hostname", SHIM_ARG_TEXT, hostname, "NAME", "the box's hostname (default: box)")    \
	X("--grace-ms", SHIM_ARG_U32, grace_ms, "N", "SIGTERM..SIGKILL grace when stopped")      \
	X("--drain-ms", SHIM_ARG_U32, drain_ms, "N", "output drained after a process exits")     \
	X("--owner-pid", SHIM_ARG_PID, owner_pid, "PID", "the box dies with this process")        \
	X("--detached", SHIM_ARG_SWITCH, detached, "", "outlive fd 3's peer; leave the spawner") \
	X("--main", SHIM_ARG_SWITCH, main, "", "fd 5 holds the main command (an EXEC payload)")  \
	X("--log-limit", SHIM_ARG_U64, log_limit, "BYTES", "of each main command log kept")      \
	X("--tmp-size", SHIM_ARG_U64, tmp_size, "BYTES", "of each of /tmp and /dev/shm")         \
	X("--disk-image", SHIM_ARG_TEXT, disk_image, "IMG", "the writable layer's ext4 image")   \
	X("--network", SHIM_ARG_TEXT, network, "HELPER", "slirp4netns: outbound network")         \
	X("--host-loopback", SHIM_ARG_SWITCH, host_loopback, "", "may reach the host's 127.0.0.1") \
	X("--memory", SHIM_ARG_U64, limits.memory, "BYTES", "memory limit")                       \
	X("--pids", SHIM_ARG_U32, limits.pids, "N", "processes and threads limit")                \
	X("--cpu-millis", SHIM_ARG_U32, limits.cpu_millis, "N", "CPU ms per second limit")        \
	X("--pids-optional", SHIM_ARG_SWITCH, limits.pids_optional, "", "--pids only where it can be set") \
	X("--guest", SHIM_ARG_SWITCH, guest, "", "in a vm's guest: main command output to fds 6-8")   \
	X("--guest-network", SHIM_ARG_SWITCH, guest_network, "", "in a vm's guest: share its network") \
	X("--guest-uid", SHIM_ARG_U32, guest_uid, "UID", "in a vm's guest: the box's root, the image's owner") \
	X("--guest-gid", SHIM_ARG_U32, guest_gid, "GID", "in a vm's guest: the same for groups")   \
	X("--vm-qemu", SHIM_ARG_TEXT, vm.qemu, "PATH", "vm: qemu-system-x86_64")                  \
	X("--vm-kernel", SHIM_ARG_TEXT, vm.kernel, "PATH", "vm: the guest's kernel")              \
	X("--vm-initrd", SHIM_ARG_TEXT, vm.initrd, "PATH", "vm: the guest's initramfs")           \
	X("--vm-root-image", SHIM_ARG_TEXT, vm.root_image, "IMG", "vm: the layers' ext4 image")   \
	X("--vm-accel", SHIM_ARG_TEXT, vm.accel, "kvm|tcg", "vm: the accelerator")                \
	X("--vm-ready-ms", SHIM_ARG_U32, vm.ready_ms, "N", "vm: the wait for the guest")           \
	X("--vm-kernel-args", SHIM_ARG_TEXT, vm.kernel_args, "TEXT", "vm: more kernel command line")

/*
 * The members SHIM_FLAGS names.  A macro so that the shim's own
 * struct shim_config can hold them as its members (an anonymous struct in
 * a union with a struct shim_spec): its code names cfg->box_dir as before,
 * and cfg->spec is the same storage for the functions below.
 */
#define SHIM_SPEC_MEMBERS                                                                         \
	const char *box_dir;                                                                       \
	const char *agent;                                                                         \
	const char *lowers[SHIM_MAX_LOWERS];                                                       \
	unsigned n_lowers;                                                                         \
	struct shim_bind binds[SHIM_MAX_BINDS];                                                    \
	unsigned n_binds;                                                                          \
	struct shim_limits limits;                                                                 \
	const char *network;    /* NULL: loopback only */                                          \
	bool host_loopback;                                                                        \
	const char *disk_image; /* NULL: the writable layer lives in the box dir */                \
	const char *hostname;                                                                      \
	uint64_t tmp_size;  /* 0: tmpfs's own, half the RAM */                                     \
	uint64_t log_limit; /* per stream; 0: no limit */                                          \
	uint32_t grace_ms, drain_ms;                                                               \
	pid_t owner_pid; /* 0: none */                                                             \
	bool detached;                                                                             \
	bool main;                                                                                 \
	bool guest;                                                                                \
	bool guest_network; /* the box keeps the guest's network namespace (the VM's NIC) */        \
	uint32_t guest_uid, guest_gid; /* the host runtime's ids: who owns the image in the guest */ \
	struct shim_vm vm;

struct shim_spec {
	SHIM_SPEC_MEMBERS
};

/* The shim's defaults, which the engine's values replace. */
void shim_spec_defaults(struct shim_spec *s);

/* Refuse (-1, EINVAL) what the shim could not build: every check of a
 * box's description that does not need the box's image or the host. */
int shim_spec_check(const struct shim_spec *s, bl_error *e);

/* The root itself, or on or under /proc, /dev or /sys (where the box gets
 * the kernel's interfaces from the shim or not at all), as written: "."
 * and ".." resolved lexically, as RESOLVE_IN_ROOT would at the root. */
bool shim_reserved_target(const char *path);

/* argv for the shim at path: at most shim_spec_argc(s) + 1 entries, NULL
 * last, into out.  Numbers are written into nums, which must outlive argv. */
size_t shim_spec_argc(const struct shim_spec *s);
#define SHIM_IS_NUMBER(flag, kind, field, value, doc)                                            \
	+((kind) == SHIM_ARG_U32 || (kind) == SHIM_ARG_U64 || (kind) == SHIM_ARG_PID)
struct shim_nums {
	char text[0 SHIM_FLAGS(SHIM_IS_NUMBER)][24];
};
void shim_spec_argv(const struct shim_spec *s, const char *path, struct shim_nums *nums,
		    char **out);

/* Parse argv (defaults first), then check it: 0, or -1 with e. */
int shim_spec_parse(struct shim_spec *s, int argc, char **argv, bl_error *e);

/* A status line (fd 4): "ok <pid>" -> 0 and *pid; "error <errno> <message>"
 * -> -1 with e that status and message; anything else (an empty line: the
 * supervisor exited early) -> -1 with e saying so.  The newline is cut. */
int shim_status_parse(char *line, pid_t *pid, bl_error *e);

/* "usage: NAME FLAG VALUE ..." one flag a line, from SHIM_FLAGS. */
void shim_spec_usage(const char *name, int fd);

#endif
