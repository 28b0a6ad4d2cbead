/*
 * boxlite.h - the public C API of boxlite-ffi's native core.
 *
 * Model: post and drain.  Native threads (a reactor thread for I/O, worker
 * threads for blocking work) never call user code.  They post typed events to
 * a bounded per-runtime queue; user callbacks run only inside
 * boxlite_runtime_drain(), on the thread that calls it, with the queue lock
 * released (or the caller takes the events, boxlite_runtime_take, and
 * dispatches them itself).  A full queue makes producers wait (a stream
 * stops being read); it never drops an event.
 *
 * Handles: the runtime is a pointer; boxes and executions are 64-bit handles
 * carrying a generation, so a freed or never-issued handle is refused with
 * BOXLITE_ERR_INVALID_HANDLE instead of touching freed memory.  0 is the
 * NULL handle: passing it where a handle is required is INVALID_ARGUMENT.
 *
 * Return values: functions return BOXLITE_OK (0) or a positive boxlite_status
 * code; boxlite_runtime_drain and boxlite_runtime_take return a count or a
 * negated code.  A call that returns an error has taken no ownership and
 * will invoke no callback.  An asynchronous call that returns BOXLITE_OK
 * invokes its completion callback (or yields its event) exactly once.
 * Codes are stable: new ones may be added, none renumbered.
 *
 * Strings passed in are copied before the call returns.  Pointers passed to
 * callbacks are valid only during the callback.
 */
#ifndef BOXLITE_H
#define BOXLITE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Status codes (stable numbers). */
enum {
	BOXLITE_OK = 0,
	BOXLITE_ERR_INVALID_ARGUMENT = 1, /* NULL or out-of-range argument */
	BOXLITE_ERR_INVALID_HANDLE = 2,   /* freed, stale or unknown handle */
	BOXLITE_ERR_NOT_FOUND = 3,
	BOXLITE_ERR_ALREADY_EXISTS = 4,
	BOXLITE_ERR_INVALID_STATE = 5,    /* e.g. exec in a box that is not running */
	BOXLITE_ERR_RUNTIME_CLOSED = 6,   /* the runtime was closed */
	BOXLITE_ERR_EXEC_CLOSED = 7,      /* the execution already ended */
	BOXLITE_ERR_IMAGE = 8,
	BOXLITE_ERR_ENGINE = 9,           /* the box could not be created or run */
	BOXLITE_ERR_NO_MEMORY = 10,
	BOXLITE_ERR_IO = 11,              /* an operating-system call failed */
	BOXLITE_ERR_PROTOCOL = 12,        /* the agent broke the protocol */
	BOXLITE_ERR_TIMEOUT = 13,
	BOXLITE_ERR_INTERNAL = 14,
	BOXLITE_ERR_UNSAFE_PATH = 15,     /* a path or archive entry would land outside
					   * its destination */
	BOXLITE_ERR_NOT_BOX_DIR = 16,     /* box_dir is no box directory (boxlite_box_marker) */
	/* Raised by the Python layer only (the C core never returns them); numbered
	 * here so that no C code takes their numbers. */
	BOXLITE_ERR_STORE = 17,           /* the home's store is lost, corrupt or unusable */
	BOXLITE_ERR_NO_SPACE = 18,        /* the disk (or a quota) is full */
	BOXLITE_ERR_CONNECTION_LOST = 19, /* the remote client's server is out of reach */
	BOXLITE_ERR_UNAUTHENTICATED = 20, /* a server refused the client's token */
};

/* The name of the file that marks a box directory, made by whoever makes the
 * directory.  box_new and box_connect refuse (NOT_BOX_DIR) a box_dir that is
 * not a directory of the caller's effective uid, closed to group and others
 * but for search (0700 or 0711), holding this name as a regular file of the
 * caller's uid: a mistaken path (/etc, a home directory) is never chmodded or
 * written to by a box. */
const char *boxlite_box_marker(void);

/* How an execution ended (boxlite_exit.outcome). */
enum {
	BOXLITE_OUTCOME_EXITED = 1,          /* exit_code is the process's code */
	BOXLITE_OUTCOME_SIGNALED = 2,        /* signal ended it; exit_code = 128 + signal */
	BOXLITE_OUTCOME_TIMED_OUT = 3,       /* its timeout ended it; exit_code 124 */
	BOXLITE_OUTCOME_KILLED = 4,
	BOXLITE_OUTCOME_FORCE_CLOSED = 5,    /* freed while running, or runtime closed */
	BOXLITE_OUTCOME_LOST = 6,            /* the box went away before reporting it */
	BOXLITE_OUTCOME_FAILED_TO_START = 7, /* os_error says why; exit_code 126/127 */
	BOXLITE_OUTCOME_DETACHED = 8,        /* this handle let go (boxlite_exec_detach, or a
					      * kept box released): the execution runs on in
					      * its box, and boxlite_exec_attach finds it */
};

/* Output streams (boxlite_output_cb.stream). */
enum {
	BOXLITE_STDOUT = 1,
	BOXLITE_STDERR = 2,
};

typedef struct boxlite_exit {
	int outcome;   /* BOXLITE_OUTCOME_* */
	int exit_code; /* shell convention: code, 128 + signal, 126/127, -1 if none */
	int signal;    /* signal number, 0 if none */
	int error;     /* boxlite status when the runtime ended it (e.g. RUNTIME_CLOSED), else 0 */
	int os_error;  /* errno inside the box when FAILED_TO_START, else 0 */
} boxlite_exit;

/*
 * The shell's exit status of an outcome, as exit_code reports it: an
 * EXITED process's exit_code, 128 + signal for SIGNALED (a signal outside
 * 1..64: -1), 124 for TIMED_OUT, for FAILED_TO_START 127 when os_error is
 * ENOENT (not found) and 126 otherwise (found, not runnable); -1 for the
 * outcomes without a process's end (KILLED, FORCE_CLOSED, LOST, DETACHED).
 * Only outcome, exit_code (EXITED), signal and os_error are read.
 */
int boxlite_exit_status(const boxlite_exit *exit);

typedef struct boxlite_runtime boxlite_runtime;
typedef uint64_t boxlite_handle;

/* Completion of an asynchronous operation; message may be NULL. */
typedef void (*boxlite_done_cb)(void *user_data, int status, const char *message);
/* One chunk of an execution's output, byte-exact as the process wrote it. */
typedef void (*boxlite_output_cb)(void *user_data, int stream, const uint8_t *data, size_t len);
/* The end of an execution: exactly once, after every output chunk of it. */
typedef void (*boxlite_exit_cb)(void *user_data, const boxlite_exit *exit);

const char *boxlite_version(void);
/* Stable symbolic name of a status code ("INVALID_ARGUMENT"), "UNKNOWN" otherwise. */
const char *boxlite_status_name(int status);

/* ---- runtime ------------------------------------------------------------ */

typedef struct boxlite_runtime_options {
	uint32_t queue_capacity; /* events; 0 means 4096 */
	uint32_t worker_threads; /* 0 means 2 */
	const char *libexec_dir; /* required: directory holding boxlite-shim and boxlite-agent */
} boxlite_runtime_options;

int boxlite_runtime_new(const boxlite_runtime_options *options, boxlite_runtime **out);

/*
 * Dispatch up to max_events callbacks on the calling thread.  Waits up to
 * timeout_ms (negative: forever) for the first event.  Returns the number
 * dispatched (0 on timeout), or -BOXLITE_ERR_RUNTIME_CLOSED once the runtime
 * is closed and every event has been delivered.  Callbacks may call any
 * function of this API, including drain (nested) and close.
 */
int boxlite_runtime_drain(boxlite_runtime *rt, int max_events, int timeout_ms);

/* Event kinds (boxlite_event.kind). */
enum {
	BOXLITE_EVENT_DONE = 1,   /* a completion: status, message */
	BOXLITE_EVENT_OUTPUT = 2, /* a chunk of output: stream, data, len */
	BOXLITE_EVENT_EXIT = 3,   /* an execution's end: exit */
};

/*
 * One event as boxlite_runtime_take hands it over: what drain would pass to
 * its callback, and that callback (the one matching kind; the others NULL),
 * for a consumer that dispatches itself.  data and message stay valid until
 * the event is released.  Fields may be added at the end, never reordered.
 */
typedef struct boxlite_event {
	int kind;              /* BOXLITE_EVENT_* */
	int status;            /* DONE: the operation's status */
	int stream;            /* OUTPUT: BOXLITE_STDOUT or BOXLITE_STDERR */
	void *user_data;       /* as given with the callback */
	const char *message;   /* DONE: NUL-terminated, or NULL */
	const uint8_t *data;   /* OUTPUT: len bytes, byte-exact */
	size_t len;
	boxlite_exit exit;     /* EXIT */
	boxlite_done_cb on_done;
	boxlite_output_cb on_output;
	boxlite_exit_cb on_exit;
	void *internal;        /* the core's; not to be touched */
} boxlite_event;

/*
 * Drain's other half, for a consumer that dispatches events itself (one call
 * for many events, e.g. across a language boundary): move up to max ready
 * events into out[0..n), in queue order, without running any callback.
 * Waits as drain does; returns the same (n, 0 on timeout, or
 * -BOXLITE_ERR_RUNTIME_CLOSED once closed and every event taken).  The
 * caller then handles them in order and gives every one back with
 * boxlite_runtime_release, before boxlite_runtime_free: what drain does
 * after each callback (freeing the payload; for an execution without
 * BOXLITE_EXEC_ACK_OUTPUT, acknowledging the chunk) happens there.  max is
 * at most INT_MAX; 0 or out NULL is INVALID_ARGUMENT.
 * Take from one thread at a time, and do not mix it with drain: ordering
 * per execution (Exit last) holds for one consumer.
 */
int boxlite_runtime_take(boxlite_runtime *rt, boxlite_event *out, size_t max, int timeout_ms);

/* Release n taken events (out of one or more takes, each once); their data
 * and message are invalid afterwards.  n == 0 and evs == NULL do nothing. */
void boxlite_runtime_release(boxlite_runtime *rt, const boxlite_event *evs, size_t n);

/*
 * Post a user callback through the queue: cb(user_data, status, NULL) runs
 * inside a later drain.  Waits up to timeout_ms (negative: forever) while the
 * queue is full; returns BOXLITE_ERR_TIMEOUT if it stayed full.  Useful to wake
 * or hand work to the draining thread.
 */
int boxlite_runtime_post(boxlite_runtime *rt, boxlite_done_cb cb, void *user_data, int status,
			 int timeout_ms);

/*
 * Refuse new operations with RUNTIME_CLOSED, stop every box, and complete
 * every in-flight operation exactly once: pending completions with
 * RUNTIME_CLOSED, running executions with an Exit whose outcome is
 * FORCE_CLOSED and error RUNTIME_CLOSED.  Wakes blocked drains; keep draining
 * until drain returns -BOXLITE_ERR_RUNTIME_CLOSED to receive those.  Idempotent.
 */
int boxlite_runtime_close(boxlite_runtime *rt);

/* Close if needed, reap every box process, join every thread, and release
 * every undelivered event.  rt is invalid afterwards.  NULL is ignored. */
void boxlite_runtime_free(boxlite_runtime *rt);

/* ---- boxes -------------------------------------------------------------- */

/* A host path bind-mounted into a box (boxlite_box_options.mounts).  The
 * target is resolved inside the box's root, as if the root were "/" (an
 * image's symlinks cannot send it to a host path), and made when missing:
 * a directory, or an empty file when the source is not a directory.  The
 * bind is not recursive: mounts below the source stay out. */
typedef struct boxlite_mount {
	const char *source; /* absolute host path */
	const char *target; /* absolute path in the box, not "/" */
	uint32_t flags;     /* BOXLITE_MOUNT_READONLY */
} boxlite_mount;

enum {
	BOXLITE_MOUNT_READONLY = 1,
	BOXLITE_MAX_MOUNTS = 64,
};

/* What a NULL boxlite_box_options.hostname means. */
#define BOXLITE_DEFAULT_HOSTNAME "box"

/* What a 0 in boxlite_box_options' stop_grace_ms and drain_ms means; the
 * shim and the agent fall back to the same (one definition for them all,
 * the Python layer included). */
enum {
	BOXLITE_DEFAULT_STOP_GRACE_MS = 10000,
	BOXLITE_DEFAULT_DRAIN_MS = 100,
};

/* What the "vm" engine runs a box's VM with (boxlite_box_options.vm).  The
 * box's root is root_image, an ext4 image holding each of lower_dirs under
 * its last path component; its writable layer is disk_image's.  memory_limit
 * is the guest's RAM (BOXLITE_DEFAULT_VM_MEMORY without one), cpu_millis
 * rounded up its vCPUs (one without), pids_limit a limit in the guest. */
typedef struct boxlite_vm_options {
	const char *qemu;       /* qemu-system-x86_64's path */
	const char *kernel;     /* the guest's kernel */
	const char *initrd;     /* its initramfs: boxlite-guest as /init, the shim, the agent */
	const char *root_image; /* the layers' image */
	const char *accel;      /* "kvm" or "tcg" */
	uint32_t ready_ms;      /* how long the guest may take to run the box; 0: the default */
	const char *kernel_args; /* after the guest kernel's own command line; NULL: none
				  * (printable ASCII, at most BOXLITE_MAX_VM_KERNEL_ARGS bytes) */
} boxlite_vm_options;

typedef struct boxlite_box_options {
	const char *box_dir;               /* required: per-box state directory, exists */
	const char *const *lower_dirs;     /* required: NULL-terminated image layers, top-most first */
	const char *hostname;              /* NULL means "box" */
	uint32_t stop_grace_ms;            /* SIGTERM..SIGKILL grace on stop; 0: the default */
	uint32_t drain_ms;                 /* output drained after a process exits; 0: the default */
	int32_t owner_pid;                 /* the box dies with this process; 0 means none */
	uint32_t flags;                    /* BOXLITE_BOX_DETACHED */
	/* The box's main command, or NULL for none (the box idles until stopped).
	 * When it ends, so does the box: its outcome goes to <box_dir>/exit as
	 * one line, "exited <code>", "signaled <signal>" or "failed <errno>",
	 * unless the box was being stopped; its stdout and stderr are appended
	 * to <box_dir>/stdout.log and <box_dir>/stderr.log, at most log_limit
	 * bytes of each kept: a log that reaches half of it becomes
	 * <name>.log.1, replacing the one before.  Its stdin is /dev/null.
	 * main_env and main_cwd as for boxlite_exec_options. */
	const char *const *main_argv;
	const char *const *main_env;
	const char *main_cwd;
	const boxlite_mount *mounts; /* n_mounts host paths, after the box's own mounts */
	uint32_t n_mounts;           /* at most BOXLITE_MAX_MOUNTS */
	/* Resource limits, 0 for none, in a cgroup of the box's own (v2, or
	 * the controller's v1 hierarchy).  One that cannot be set here (no
	 * controller, no right to make a cgroup) fails the start: ENGINE. */
	uint64_t memory_limit;       /* bytes of memory, swap not on top */
	uint32_t pids_limit;         /* processes and threads */
	uint32_t cpu_millis;         /* CPU time per second, in ms (1000: one CPU) */
	/* Outbound network: the path of slirp4netns, a user-mode network stack
	 * the shim runs for the box; NULL: loopback only.  The host's loopback
	 * stays unreachable unless flags has BOXLITE_BOX_HOST_LOOPBACK. */
	const char *network_helper;
	/* A size limit on the writable layer: an ext4 image of that size (made
	 * by the caller, e.g. mkfs.ext4) holding it, loop-mounted for the box;
	 * NULL: the layer lives in box_dir, unlimited.  Needs root. */
	const char *disk_image;
	/* The main command's output kept per stream, in bytes: the newest,
	 * between half of it and all of it.  0 means BOXLITE_DEFAULT_LOG_LIMIT;
	 * less than BOXLITE_MIN_LOG_LIMIT is INVALID_ARGUMENT. */
	uint64_t log_limit;
	/* The size of each of the box's /tmp and /dev/shm (tmpfs), in bytes.
	 * 0 means BOXLITE_DEFAULT_TMP_SIZE; less than BOXLITE_MIN_TMP_SIZE is
	 * INVALID_ARGUMENT; more than a memory_limit is cut to it. */
	uint64_t tmp_size;
	/* What runs the box: NULL or "" means "ns" (Linux namespaces under a
	 * per-box supervisor, boxlite-shim); "vm" a micro-VM of its own under
	 * QEMU (boxlite-vmm), described by vm.  A name no engine has is
	 * INVALID_ARGUMENT. */
	const char *engine;
	const boxlite_vm_options *vm; /* required by "vm", refused by "ns" */
} boxlite_box_options;

enum {
	BOXLITE_DEFAULT_LOG_LIMIT = 32 << 20,
	BOXLITE_MIN_LOG_LIMIT = 4096,
	BOXLITE_DEFAULT_TMP_SIZE = 1 << 30,
	BOXLITE_MIN_TMP_SIZE = 1 << 20,
	BOXLITE_DEFAULT_VM_MEMORY_MIB = 512,
	BOXLITE_DEFAULT_VM_READY_MS = 60000,
	BOXLITE_MAX_VM_KERNEL_ARGS = 256,
};

/* Box flags (boxlite_box_options.flags). */
enum {
	BOXLITE_BOX_DETACHED = 1, /* the box outlives this runtime: freeing the handle or
				   * closing the runtime lets go of it (its executions
				   * run on) instead of killing it */
	BOXLITE_BOX_HOST_LOOPBACK = 2, /* with a network helper: the box may reach
					* the host's 127.0.0.1 (as 10.0.2.2) */
	BOXLITE_BOX_PIDS_OPTIONAL = 4, /* pids_limit is a default: set where the pids
					* controller is in cgroup v2 (the box's init
					* starts in its cgroup, at no cost); elsewhere,
					* or where it cannot be set, the box starts
					* without it (the shim's log says why) */
};

/* Box states (boxlite_box_state). */
enum {
	BOXLITE_BOX_NEW = 0,      /* described, never started */
	BOXLITE_BOX_STARTING = 1,
	BOXLITE_BOX_RUNNING = 2,
	BOXLITE_BOX_STOPPING = 3,
	BOXLITE_BOX_STOPPED = 4,  /* stopped, or ended on its own (its shim died) */
};

/* Describe a box (no process yet).  Synchronous.  Refuses (INVALID_ARGUMENT)
 * what its engine would refuse at start and can be told without the image
 * or the host: e.g. for "ns", a lower dir that is not absolute or holds
 * ',', ':' or '\\' (overlayfs's separators), a mount target that is "/"
 * or on or under /proc, /dev or /sys, a box_dir too long for its agent.sock
 * (a unix socket path), a hostname of more than 64 bytes. */
int boxlite_box_new(boxlite_runtime *rt, const boxlite_box_options *options, boxlite_handle *out);
/* What boxlite_box_new would return for options, without a runtime or a
 * handle: BOXLITE_OK, or its status with a message saying why (for a
 * caller validating a configuration before it records it).  The message,
 * "" on success, goes to message (len bytes, NUL-terminated, truncated). */
int boxlite_box_config_check(const boxlite_box_options *options, char *message, size_t len);
/* Start it.  cb gets OK, or ENGINE with a message when it could not start. */
int boxlite_box_start(boxlite_runtime *rt, boxlite_handle box, boxlite_done_cb cb, void *user_data);
/* Stop it: SIGTERM to every process, SIGKILL after the grace period.  cb runs
 * once no process of the box is left; stopping a stopped box succeeds. */
int boxlite_box_stop(boxlite_runtime *rt, boxlite_handle box, boxlite_done_cb cb, void *user_data);
/* The box's current state (BOXLITE_BOX_*) into *state. */
int boxlite_box_state(boxlite_runtime *rt, boxlite_handle box, int *state);
/* Release the handle.  A running box is killed at once, unless it is kept:
 * detached, or connected to with boxlite_box_connect. */
int boxlite_box_free(boxlite_runtime *rt, boxlite_handle box);

/*
 * A handle on a box that is already running, started by another runtime
 * (another process, or this program before a restart): options describe it
 * as it was created; shim_pid and shim_start_ticks (field 22 of
 * /proc/<pid>/stat) name its shim, so a reused pid is never mistaken for
 * it.  The box is RUNNING and kept: freeing the handle or closing the
 * runtime lets go of it.  NOT_FOUND when that shim is gone.  Synchronous.
 */
int boxlite_box_connect(boxlite_runtime *rt, const boxlite_box_options *options, int32_t shim_pid,
			uint64_t shim_start_ticks, boxlite_handle *out);
/* The pid of a running box's shim (what boxlite_box_connect takes). */
int boxlite_box_pid(boxlite_runtime *rt, boxlite_handle box, int32_t *pid);

/* ---- executions --------------------------------------------------------- */

/* Execution flags (boxlite_exec_options.flags). */
enum {
	BOXLITE_EXEC_STDIN = 1, /* stdin is a pipe fed by boxlite_exec_write; else /dev/null */
	BOXLITE_EXEC_TTY = 2,   /* one pseudo-terminal for stdin, stdout and stderr; its
				 * output arrives as stdout, writes go to its input */
	BOXLITE_EXEC_ACK_OUTPUT = 4, /* output counts against the window until the consumer
				      * calls boxlite_exec_ack; without this flag each chunk
				      * is acknowledged when its on_output callback returns */
};

/* Output window of an execution when boxlite_exec_options.window is 0. */
enum { BOXLITE_EXEC_WINDOW_DEFAULT = 2 << 20 };

typedef struct boxlite_exec_options {
	const char *const *argv; /* required, NULL-terminated, at least one element */
	const char *const *env;  /* NULL-terminated "K=V" list; NULL means empty */
	const char *cwd;         /* NULL means "/" */
	uint32_t flags;          /* BOXLITE_EXEC_* */
	uint32_t timeout_ms;     /* 0: none; else its whole process tree is ended after this */
	uint32_t kill_grace_ms;  /* after a timeout, SIGTERM..SIGKILL; 0 means 2000 */
	uint16_t rows, cols;     /* terminal size with BOXLITE_EXEC_TTY; 0 means 24 x 80 */
	uint32_t window;         /* flow control, per stream: bytes delivered but not yet
				  * acknowledged, at most; when a stream reaches it, the box
				  * stops reading that stream and its writers block in
				  * write().  Other streams and executions go on.
				  * 0 means BOXLITE_EXEC_WINDOW_DEFAULT. */
} boxlite_exec_options;

typedef struct boxlite_exec_callbacks {
	boxlite_output_cb on_output; /* required */
	boxlite_exit_cb on_exit;     /* required */
	void *user_data;
} boxlite_exec_callbacks;

/* Run a process in a running box (INVALID_STATE otherwise).  Output and the
 * single Exit arrive through the callbacks. */
int boxlite_exec_start(boxlite_runtime *rt, boxlite_handle box, const boxlite_exec_options *options,
		       const boxlite_exec_callbacks *callbacks, boxlite_handle *out);

/* An execution's id: random, unique in its box, valid across processes and
 * restarts (what boxlite_exec_attach takes).  Never 0. */
int boxlite_exec_id(boxlite_runtime *rt, boxlite_handle exec, uint64_t *id);

typedef struct boxlite_attach_options {
	uint64_t stdout_from, stderr_from; /* cursors: bytes of each stream already seen */
	uint32_t flags;                    /* BOXLITE_EXEC_ACK_OUTPUT only */
	uint32_t window;                   /* as in boxlite_exec_options */
} boxlite_attach_options;

/* What boxlite_exec_attach learned (boxlite_exec_attach_info). */
typedef struct boxlite_attach_info {
	uint64_t stdout_start, stderr_start; /* where the replay began: more than the
					      * cursor when older bytes were no longer kept */
	int has_stdin, has_tty, ended;
} boxlite_attach_info;

/*
 * Become the host of execution id in a running box: its output from the
 * cursors on (the box keeps the last 1 MiB of each stream), then live
 * output, then its single Exit - also when it already ended (outcomes are
 * kept for ten minutes).  *out is an execution handle like exec_start's;
 * cb reports whether the box accepted: OK (boxlite_exec_attach_info is
 * then valid), NOT_FOUND (no such execution, or forgotten), INVALID_STATE
 * (another host holds it).  When it did not, the Exit follows with outcome
 * LOST and that status as its error.
 */
int boxlite_exec_attach(boxlite_runtime *rt, boxlite_handle box, uint64_t id,
			const boxlite_attach_options *options, const boxlite_exec_callbacks *callbacks,
			boxlite_done_cb cb, void *user_data, boxlite_handle *out);
int boxlite_exec_attach_info(boxlite_runtime *rt, boxlite_handle exec, boxlite_attach_info *info);

/* Let go of a running execution without ending it: its Exit reports
 * DETACHED at once, and it runs on in its box for a later attach.
 * EXEC_CLOSED once the Exit has been claimed. */
int boxlite_exec_detach(boxlite_runtime *rt, boxlite_handle exec);
/* Send signal sig (1..64) to the execution's process group.  cb gets OK
 * once the agent has delivered it, EXEC_CLOSED if no process of the group was
 * left to receive it.  Refused synchronously with EXEC_CLOSED once the
 * execution's Exit has been claimed. */
int boxlite_exec_signal(boxlite_runtime *rt, boxlite_handle exec, int sig, boxlite_done_cb cb,
			void *user_data);
/* Resize the terminal of an execution started with BOXLITE_EXEC_TTY.  cb
 * gets OK once done, EXEC_CLOSED if its terminal is gone, INVALID_STATE if
 * it never had one. */
int boxlite_exec_resize(boxlite_runtime *rt, boxlite_handle exec, uint16_t rows, uint16_t cols,
			boxlite_done_cb cb, void *user_data);

/* Largest len one boxlite_exec_write accepts. */
enum { BOXLITE_EXEC_WRITE_MAX = 16 << 20 };

/*
 * Write len bytes (may be 0) to the stdin of an execution started with
 * BOXLITE_EXEC_STDIN; writes arrive in call order.  cb gets OK once the
 * process's stdin pipe has taken every byte - a process that does not read
 * holds the write back - or EXEC_CLOSED if its stdin went away first (the
 * process closed it or ended).  Refused synchronously with INVALID_STATE
 * without a stdin pipe, EXEC_CLOSED after boxlite_exec_close_stdin or the Exit.
 */
int boxlite_exec_write(boxlite_runtime *rt, boxlite_handle exec, const uint8_t *data, size_t len,
		       boxlite_done_cb cb, void *user_data);
/* End of input, after every write made before it.  Closing twice succeeds;
 * EXEC_CLOSED once the Exit has been claimed. */
int boxlite_exec_close_stdin(boxlite_runtime *rt, boxlite_handle exec);

/*
 * The consumer is done with n more bytes of one stream (BOXLITE_STDOUT or
 * BOXLITE_STDERR) of this execution's output (with BOXLITE_EXEC_ACK_OUTPUT):
 * that stream's window reopens by as much.  Acknowledging after the Exit is
 * harmless.  Synchronous.
 */
int boxlite_exec_ack(boxlite_runtime *rt, boxlite_handle exec, int stream, size_t n);

/* Release the handle.  A running execution is killed and its Exit reports
 * FORCE_CLOSED. */
int boxlite_exec_free(boxlite_runtime *rt, boxlite_handle exec);

#ifdef __cplusplus
}
#endif

#endif /* BOXLITE_H */
