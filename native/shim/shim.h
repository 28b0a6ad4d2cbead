/*
 * shim.h - boxlite-shim, the host-side supervisor of one box.
 *
 *   boxlite-shim --box-dir DIR --agent PATH --lower DIR [FLAG...]
 *
 * Its flags, fds and signals are common/shim_spec.h's (SHIM_FLAGS, which
 * `boxlite-shim --help` prints), the one specification the engine writes
 * and the shim parses and checks.
 *
 * fd 3 is the agent's connection to the host, fd 4 the status pipe: exactly
 * one line, "ok <shim pid>" or "error <errno> <message>" (a bl_error: the
 * step that failed, in the context it failed in, and the system's reason).
 * The agent also listens on DIR/agent.sock, where other host processes connect.
 * The shim's stdout and stderr are DIR/shim.log (the host opens it); the
 * shim keeps it to SHIM_LOG_LIMIT, and the agent and the network helper
 * write theirs to a pipe the shim empties into it (logs.c).
 *
 * --detached: the box outlives the connection on fd 3, and the shim leaves
 * the process that spawned it (a fork whose parent exits once the status
 * line is written), so that process never has to reap it; the pid in the
 * status line is then the one to watch.
 *
 * SIGTERM, SIGINT, SIGHUP: stop the box (gracefully); SHIM_KILL_NOW
 * (SIGUSR1): kill it now.
 *
 * The shim holds a write lock (fcntl) on DIR/lock while it lives: one shim
 * per box, and F_GETLK names it.
 *
 * --main: fd 5 holds the box's main command (an EXEC payload).  The agent
 * runs it with stdout and stderr going to pipes the shim appends to
 * DIR/stdout.log and DIR/stderr.log, keeping at most --log-limit BYTES of
 * each (logs.c); when it ends, so does the box, and the shim writes its
 * outcome to DIR/exit (main_command.c).
 *
 * main.c builds the box (sandbox.c runs in the cloned child, which becomes
 * the agent) and then supervises it (supervise.c) until the agent is gone.
 */
#ifndef BOXLITE_SHIM_H
#define BOXLITE_SHIM_H

#include <limits.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "common/error.h"
#include "common/fdio.h"
#include "common/pidfd.h"
#include "common/shim_spec.h"

/* DIR/shim.log keeps at most this much of what the agent, the network
 * helper and the shim say. */
#define SHIM_LOG_LIMIT (1u << 20)

/* A log (logs.c): the pipe its writers write to, the file it goes to. */
struct shim_log {
	int pipe_fd; /* the read end; -1 once every writer is gone */
	int file_fd;
	uint64_t size;  /* of the current file */
	uint64_t limit; /* of the file and its older half together; 0: none */
	bool own;       /* the shim's own stdout and stderr go to the file too */
	bool failed;    /* the host refused a write: the rest is dropped */
	char path[PATH_MAX], old[PATH_MAX + 4];
};

/* One of the box's cgroups (cgroup.c). */
struct shim_cgroup {
	const char *controller;
	int version; /* 1 or 2 */
	char dir[PATH_MAX + 64];
};

struct shim_config {
	/* What the command line says (common/shim_spec.h): cfg->box_dir and
	 * the others by name, cfg->spec for its functions, in the same storage. */
	union {
		struct shim_spec spec;
		struct {
			SHIM_SPEC_MEMBERS
		};
	};
	struct shim_cgroup cgroups[3]; /* made for the limits */
	unsigned n_cgroups;
	pid_t network_pid;    /* the helper, once started */
	int network_exit_fd;  /* its exit pipe's write end */
	bool idmapped;          /* root runtime: the box's ids are a subordinate range */
	uint32_t uid_base, gid_base;
	char layer_dir[PATH_MAX]; /* where upper/ and work/ are: the box dir, or its disk */
	const char *layer_rel;    /* the same, relative to the box dir ("." or "disk") */
	int listen_fd; /* DIR/agent.sock; the agent inherits it */
	/* With --main, what the agent inherits for it: the command, the two
	 * logs, and the write end of the pipe it reports the outcome on. */
	int main_fds[4];
	int outcome_fd; /* the read end of that pipe; -1 without --main */
	struct shim_log logs[3]; /* stdout, stderr (with --main); shim.log */
	int messages_fd; /* shim.log's pipe: the agent's and the network helper's
			  * stdout and stderr; -1 once they have it */
};

/*
 * Every step of the set-up that can fail takes a bl_error, fills it and
 * returns -1 (the context is added on the way up); main.c alone turns it
 * into the status line.
 *
 * sandbox.c: the child side, run right after clone.  Waits for sync_fd
 * (the id maps are written), builds the root filesystem, and executes the
 * agent from agent_fd.  Only returns on failure (-1, *e filled in), for the
 * parent to report: it alone owns the status line and the clean-up.
 */
int sandbox_enter(const struct shim_config *cfg, int agent_fd, int sync_fd, bl_error *e);

/* confine.c: cut the capability bounding set, set no_new_privs, install
 * the seccomp filter; the last step before the agent is executed. */
int confine(bl_error *e);

/* proc_masks.c: mask the host-revealing files of rootfs/proc, make its
 * tunables read-only (after /proc and /dev are mounted). */
int mask_proc(const char *rootfs, bl_error *e);

/*
 * cgroup.c: cgroup_prepare makes the box's cgroups with the limits asked
 * for, before the clone; *into is the v2 one's fd (-1: none), for the
 * clone to start the box's init in (CLONE_INTO_CGROUP: no migration, which
 * costs a grace period of RCU, ~5 ms here).  If that clone fails with err,
 * cgroup_unjoinable drops the v2 cgroup if it holds only a default limit
 * (0) or returns err.  cgroup_join moves the (still waiting) init into the
 * v1 ones.  Each returns 0, or -1 with *e saying "limit <controller>: <step>".
 * After the box is gone, or after a failure, cgroup_remove removes them.
 */
int cgroup_prepare(struct shim_config *cfg, int *into, bl_error *e);
int cgroup_unjoinable(struct shim_config *cfg, int err, bl_error *e);
int cgroup_join(const struct shim_config *cfg, pid_t child, bl_error *e);
void cgroup_remove(const struct shim_config *cfg);

/* network.c: with --network, start the user-mode network helper for the
 * (still waiting) box init and wait until its network is up; 0 or -1.
 * After the box: stop and reap it. */
int network_start(struct shim_config *cfg, pid_t child, bl_error *e);
void network_stop(struct shim_config *cfg);

/* idmap.c: a runtime running as root gives its boxes a range of 65536
 * otherwise unused ids (idmap_wanted says so, and finds it).  idmap_write
 * writes a process's maps; idmap_mounts swaps the layers and bind sources
 * for id-mapped clones (in a mount namespace of the shim's own) and gives
 * the writable layer to the range's root. */
bool idmap_wanted(struct shim_config *cfg);
int idmap_write(const struct shim_config *cfg, pid_t pid, bl_error *e);
int idmap_mounts(struct shim_config *cfg, bl_error *e);
/* The box's writable layer (upper/, work/) to the range's root; the last
 * step of idmap_mounts, and all a vm's guest needs (no clones there). */
int idmap_own_layer(const struct shim_config *cfg, bl_error *e);

/* disk.c: with --disk-image, mount the writable layer's image (in a mount
 * namespace of the shim's own) on DIR/disk; set layer_dir either way.
 * 0 or -1. */
int disk_mount(struct shim_config *cfg, bl_error *e);

/* overlay.c: the image's layers and the box's writable layer on rootfs. */
int mount_overlay(const struct shim_config *cfg, const char *rootfs, bl_error *e);

/*
 * binds.c: mount each --bind source onto its target inside the new root
 * (before pivot_root), the target resolved as if rootfs were "/".
 */
int bind_host_paths(const struct shim_config *cfg, const char *rootfs, bl_error *e);

/*
 * main_command.c: before the box is built, drop the outcome of an earlier
 * run and, with --main, open what the agent needs for the main command.
 * Returns 0 or -1.  After the agent
 * is reaped, record the outcome it reported, if any, in DIR/exit
 * (atomically: a reader sees all of it or nothing).
 */
int main_command_prepare(struct shim_config *cfg, bl_error *e);
void main_command_record(const struct shim_config *cfg);

/* logs.c: log_open makes the pipe (its write end, CLOEXEC, in *box_end)
 * and opens DIR/NAME, to keep at most limit bytes (own: the shim's stdout
 * and stderr go there too); 0 or -1.  log_pump moves what the pipe
 * holds now into the file, false once there was nothing to move;
 * log_close moves the rest, once the box is gone, and closes both. */
int log_open(struct shim_log *l, const char *dir, const char *name, uint64_t limit, bool own,
	     int *box_end, bl_error *e);
bool log_pump(struct shim_log *l);
void log_close(struct shim_log *l);

/* lifetime.c: status_line writes the one status line to SHIM_STATUS_FD and
 * closes it; lock_box takes DIR/lock for the supervisor's life (0 or -1);
 * detach_from_spawner continues in a child the spawner need not reap and
 * returns the fd whose close releases the spawner (or -1). */
void status_line(const char *line);
int lock_box(const struct shim_config *cfg, bl_error *e);
int detach_from_spawner(bl_error *e);
/* DIR/agent.sock, listening, CLOEXEC: an fd, or -1. */
int listen_agent_socket(const struct shim_config *cfg, bl_error *e);

/* supervise.c: run until the agent exits; returns the shim's exit code.
 * signal_agent sends sig to the box's init (gone already: no error);
 * reap_agent waits for it, and returns 0 only for a clean exit;
 * shim_signals gives the signals the shim acts on (above), blocked from
 * before the clone until supervise() reads them from a signalfd. */
void shim_signals(sigset_t *set);
int supervise(struct shim_config *cfg, int agent_pidfd, int owner_pidfd);
void signal_agent(int pidfd, int sig);
int reap_agent(int pidfd);

#endif
