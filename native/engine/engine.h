/*
 * engine.h - the seam between the core and what runs a box.
 *
 * An engine is a const table of operations (struct bl_engine), looked up
 * by name (bl_engine_find) when a box is described and held by the box; the
 * core calls no engine by name.  What every engine shares, and the core
 * relies on:
 *   - a box runs under one supervisor, a host process per box (ns: the
 *     shim, which is the box's namespaces' parent; a micro-VM engine: the
 *     process that runs the VM).  The core watches and reaps it through a
 *     pidfd, and the box is over when that process is;
 *   - the box's agent speaks the protocol of common/protocol.h over one
 *     connected byte stream (ns: a unix socketpair the agent inherits; a VM:
 *     a virtio-serial port the supervisor forwards), which the core's
 *     reactor owns once the engine hands it over;
 *   - a box directory the caller made (boxlite_box_marker) holds what
 *     outlives a runtime: the supervisor's lock and log, the main command's
 *     exit file and logs, and the socket where other runtimes reach the
 *     agent (connect).
 * spawn runs on a worker thread and may block (until the agent runs, or
 * closing_fd says the runtime closes); signal runs under the runtime's lock
 * or on the reactor thread, and must not block; check and connect run on
 * the caller's thread in boxlite_box_new and boxlite_box_connect.
 *
 * A second engine is one more table in engine.c: its own check (what its
 * supervisor refuses), a spawn that hands over the same struct bl_spawned,
 * and a connect to wherever its supervisor lets other runtimes reach the
 * agent.  Nothing in the core changes.
 */
#ifndef BOXLITE_ENGINE_H
#define BOXLITE_ENGINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "common/error.h"

/* A box as boxlite_box_new described it; immutable afterwards. */
struct bl_box_spec {
	char *dir;
	char **lowers; /* NULL-terminated, top-most first */
	char *hostname;
	uint32_t grace_ms, drain_ms;
	int32_t owner_pid;
	bool detached;     /* BOXLITE_BOX_DETACHED */
	uint8_t *main_req; /* the main command as an EXEC payload; NULL: none */
	size_t main_len;
	struct bl_mount {
		char *source, *target;
		bool readonly;
	} *mounts;
	uint32_t n_mounts;
	uint64_t memory_limit;
	uint32_t pids_limit, cpu_millis;
	bool pids_optional;   /* BOXLITE_BOX_PIDS_OPTIONAL */
	uint64_t log_limit;   /* bytes of each main command log kept */
	uint64_t tmp_size;    /* bytes of each of /tmp and /dev/shm */
	char *network_helper; /* NULL: no network */
	char *disk_image;     /* NULL: no size limit on the writable layer */
	bool host_loopback;
	struct bl_vm_spec { /* engine "vm" (boxlite_vm_options); all NULL otherwise */
		char *qemu, *kernel, *initrd, *root_image, *accel;
		uint32_t ready_ms;
		char *kernel_args;
	} vm;
};

/* What the runtime gives every engine. */
struct bl_engine_host {
	const char *libexec_dir; /* boxlite-shim, boxlite-agent, ... */
	int closing_fd;          /* readable once the runtime closes: give up */
};

/* A box whose agent runs: its supervisor and the agent's byte stream. */
struct bl_spawned {
	pid_t pid;   /* the supervisor */
	int pidfd;   /* on it */
	int conn_fd; /* connected to the agent */
};

enum bl_engine_signal {
	BL_ENGINE_STOP, /* gracefully: the box's processes get its grace period */
	BL_ENGINE_KILL, /* now; the supervisor exits once nothing of the box is left */
};

struct bl_engine {
	const char *name; /* what boxlite_box_options.engine names */
	/* 0, or -1 with e: a box its supervisor would refuse at spawn (what
	 * can be told without the box's image or the host's state). */
	int (*check)(const struct bl_box_spec *box, bl_error *e);
	/* Start the box's supervisor and wait until its agent runs.  0 and *out,
	 * or -1 with e and nothing left running. */
	int (*spawn)(const struct bl_engine_host *host, const struct bl_box_spec *box,
		     struct bl_spawned *out, bl_error *e);
	/* Kill and reap a spawned box that will not be used; close its fds. */
	void (*abandon)(struct bl_spawned *sp);
	/* Ask a running box's supervisor (pidfd) to stop or die: 0, or -1 with
	 * errno (ESRCH: it is exiting already). */
	int (*signal)(int pidfd, enum bl_engine_signal how);
	/* A new byte stream to the agent of a box another runtime spawned,
	 * whose supervisor pidfd names (already checked to be it): an fd, or
	 * -1 with e. */
	int (*connect)(const struct bl_box_spec *box, int pidfd, bl_error *e);
};

/* The engine called name; NULL or "" is the default ("ns").  NULL with e
 * for a name no engine has. */
const struct bl_engine *bl_engine_find(const char *name, bl_error *e);

/* The engines (engine.c lists them). */
extern const struct bl_engine bl_engine_ns, bl_engine_vm;

/*
 * supervisor.c: what both engines do the same, since each box's supervisor
 * is a process the engine spawns with the shim's command line and fds
 * (common/shim_spec.h): spawn it and wait for its status line (up to
 * timeout_ms), abandon, signal, connect to DIR/agent.sock.  spec_of gives
 * the shim's specification of a box (the strings stay the box's); check
 * is shim_spec_check of it, after refusing more layers or mounts than a
 * supervisor takes.
 */
struct shim_spec;
void bl_supervisor_spec_of(const struct bl_box_spec *box, struct shim_spec *s);
int bl_supervisor_check(const struct bl_box_spec *box, bl_error *e);
int bl_supervisor_spawn(const struct bl_engine_host *host, const struct bl_box_spec *box,
			const char *exe, uint32_t timeout_ms, struct bl_spawned *out, bl_error *e);
void bl_supervisor_abandon(struct bl_spawned *sp);
int bl_supervisor_signal(int pidfd, enum bl_engine_signal how);
int bl_supervisor_connect(const struct bl_box_spec *box, int pidfd, bl_error *e);

#endif
