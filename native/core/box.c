/* box.c - box handles and lifecycle: new, start, stop, free. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core.h"
#include "common/pidfd.h"
#include "common/protocol.h"

void bl_box_ref(struct bl_box *box) { atomic_fetch_add(&box->refs, 1); }

static void spec_free(struct bl_box_spec *s)
{
	for (char **p = s->lowers; p && *p; p++)
		free(*p);
	free(s->lowers);
	free(s->dir);
	free(s->hostname);
	free(s->main_req);
	for (uint32_t i = 0; i < s->n_mounts; i++) {
		free(s->mounts[i].source);
		free(s->mounts[i].target);
	}
	free(s->mounts);
	free(s->network_helper);
	free(s->disk_image);
	free(s->vm.qemu);
	free(s->vm.kernel);
	free(s->vm.initrd);
	free(s->vm.root_image);
	free(s->vm.accel);
	free(s->vm.kernel_args);
}


static void box_destroy(struct bl_box *box)
{
	if (box->pidfd >= 0)
		close(box->pidfd);
	spec_free(&box->spec);
	free(box);
}

void bl_box_unref(struct bl_box *box)
{
	if (box && atomic_fetch_sub(&box->refs, 1) == 1)
		box_destroy(box);
}

/* Each sets e and returns the status, for `return invalid(e, ...)`. */
static int invalid(bl_error *e, const char *what)
{
	bl_error_set(e, EINVAL, "%s", what);
	return BOXLITE_ERR_INVALID_ARGUMENT;
}

static int no_memory(bl_error *e)
{
	bl_error_set(e, ENOMEM, "out of memory");
	return BOXLITE_ERR_NO_MEMORY;
}

/* A copy of s, or NULL as given; false when out of memory. */
static bool copy_string(char **out, const char *s)
{
	*out = s ? strdup(s) : NULL;
	return !s || *out;
}

/* The vm engine's options, copied; without any, the spec's stay NULL. */
static bool copy_vm(struct bl_vm_spec *vm, const boxlite_vm_options *o)
{
	if (!o)
		return true;
	vm->ready_ms = o->ready_ms ? o->ready_ms : BOXLITE_DEFAULT_VM_READY_MS;
	return copy_string(&vm->qemu, o->qemu) && copy_string(&vm->kernel, o->kernel) &&
	       copy_string(&vm->initrd, o->initrd) && copy_string(&vm->root_image, o->root_image) &&
	       copy_string(&vm->accel, o->accel) && copy_string(&vm->kernel_args, o->kernel_args);
}

static int copy_lowers(struct bl_box_spec *spec, const char *const *lowers, bl_error *e)
{
	size_t n = 0;
	while (lowers[n])
		n++;
	if (n == 0)
		return invalid(e, "no image layer (lower_dirs is empty)");
	if (!(spec->lowers = calloc(n + 1, sizeof(char *))))
		return no_memory(e);
	for (size_t i = 0; i < n; i++)
		if (!copy_string(&spec->lowers[i], lowers[i]))
			return no_memory(e);
	return BOXLITE_OK;
}

static int copy_mounts(struct bl_box_spec *spec, const boxlite_mount *mounts, uint32_t n,
		       bl_error *e)
{
	if (n == 0)
		return BOXLITE_OK;
	if (!mounts || n > BOXLITE_MAX_MOUNTS)
		return invalid(e, "mounts: NULL, or more than BOXLITE_MAX_MOUNTS");
	for (uint32_t i = 0; i < n; i++)
		if (!mounts[i].source || !mounts[i].target ||
		    (mounts[i].flags & ~(uint32_t)BOXLITE_MOUNT_READONLY))
			return invalid(e, "a mount without a source or target, or with unknown flags");
	if (!(spec->mounts = calloc(n, sizeof *spec->mounts)))
		return no_memory(e);
	for (uint32_t i = 0; i < n; i++) {
		spec->n_mounts++;
		spec->mounts[i].readonly = mounts[i].flags & BOXLITE_MOUNT_READONLY;
		if (!copy_string(&spec->mounts[i].source, mounts[i].source) ||
		    !copy_string(&spec->mounts[i].target, mounts[i].target))
			return no_memory(e);
	}
	return BOXLITE_OK;
}

/* The main command travels to the agent as an EXEC payload (no stdin, no
 * timeout): the encoding both sides already speak. */
static int encode_main(struct bl_box_spec *spec, const boxlite_box_options *o, bl_error *e)
{
	if (!o->main_argv)
		return o->main_env || o->main_cwd ? invalid(e, "main_env or main_cwd without main_argv")
						  : BOXLITE_OK;
	size_t len = bl_exec_encoded_size(o->main_argv, o->main_env, o->main_cwd);
	if (len == 0)
		return invalid(e, "main command: no argv[0], or too large");
	if (!(spec->main_req = malloc(len)))
		return no_memory(e);
	struct bl_exec_params params = {0};
	bl_exec_encode(o->main_argv, o->main_env, o->main_cwd, &params, spec->main_req);
	spec->main_len = len;
	return BOXLITE_OK;
}

const char *boxlite_box_marker(void) { return ".boxlite-box"; }

static bool ours(const struct stat *st) { return st->st_uid == geteuid(); }

/* box_dir is a box directory (see boxlite_box_marker in boxlite.h): checked
 * through fds, so a path swapped for a symlink meanwhile is not followed. */
static int check_box_dir(const char *path, bl_error *e)
{
	int dir = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (dir < 0 && errno == ENOMEM)
		return no_memory(e);
	struct stat st;
	int rc = BOXLITE_ERR_NOT_BOX_DIR;
	if (dir >= 0 && fstat(dir, &st) == 0 && ours(&st) && (st.st_mode & 0066) == 0) {
		int marker = openat(dir, boxlite_box_marker(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
		if (marker >= 0) {
			if (fstat(marker, &st) == 0 && S_ISREG(st.st_mode) && ours(&st))
				rc = BOXLITE_OK;
			close(marker);
		}
	}
	if (dir >= 0)
		close(dir);
	if (rc)
		bl_error_set(e, ENOTDIR,
			     "%s: no box directory (one of this user's, closed to others, holding %s)",
			     path, boxlite_box_marker());
	return rc;
}

/* What the API itself refuses, before any engine is asked. */
static int check_options(const boxlite_box_options *o, bl_error *e)
{
	const uint32_t known =
	    BOXLITE_BOX_DETACHED | BOXLITE_BOX_HOST_LOOPBACK | BOXLITE_BOX_PIDS_OPTIONAL;
	if (!o->box_dir || !o->box_dir[0] || !o->lower_dirs)
		return invalid(e, "box_dir and lower_dirs are required");
	if (o->owner_pid < 0 || (o->flags & ~known))
		return invalid(e, "a negative owner_pid, or unknown flags");
	if (o->log_limit && o->log_limit < BOXLITE_MIN_LOG_LIMIT)
		return invalid(e, "log_limit below BOXLITE_MIN_LOG_LIMIT");
	if (o->tmp_size && o->tmp_size < BOXLITE_MIN_TMP_SIZE)
		return invalid(e, "tmp_size below BOXLITE_MIN_TMP_SIZE");
	return BOXLITE_OK;
}

static void set_numbers(struct bl_box_spec *spec, const boxlite_box_options *o)
{
	spec->grace_ms = o->stop_grace_ms ? o->stop_grace_ms : BOXLITE_DEFAULT_STOP_GRACE_MS;
	spec->drain_ms = o->drain_ms ? o->drain_ms : BOXLITE_DEFAULT_DRAIN_MS;
	spec->owner_pid = o->owner_pid;
	spec->host_loopback = o->flags & BOXLITE_BOX_HOST_LOOPBACK;
	spec->memory_limit = o->memory_limit;
	spec->pids_limit = o->pids_limit;
	spec->cpu_millis = o->cpu_millis;
	spec->pids_optional = o->flags & BOXLITE_BOX_PIDS_OPTIONAL;
	spec->log_limit = o->log_limit ? o->log_limit : BOXLITE_DEFAULT_LOG_LIMIT;
	/* tmpfs pages are the box's memory: a bound past its limit is none. */
	spec->tmp_size = o->tmp_size ? o->tmp_size : BOXLITE_DEFAULT_TMP_SIZE;
	if (spec->memory_limit && spec->tmp_size > spec->memory_limit)
		spec->tmp_size = spec->memory_limit;
	spec->detached = o->flags & BOXLITE_BOX_DETACHED;
}

/* spec (zeroed, spec_free'd by the caller either way) from o, checked by
 * the engine o names, which goes to *engine. */
static int configure(struct bl_box_spec *spec, const struct bl_engine **engine,
		     const boxlite_box_options *o, bl_error *e)
{
	int rc = check_options(o, e);
	if (rc)
		return rc;
	if (!(*engine = bl_engine_find(o->engine, e)))
		return BOXLITE_ERR_INVALID_ARGUMENT;
	if ((rc = check_box_dir(o->box_dir, e)) || (rc = copy_lowers(spec, o->lower_dirs, e)) ||
	    (rc = encode_main(spec, o, e)) || (rc = copy_mounts(spec, o->mounts, o->n_mounts, e)))
		return rc;
	if (!copy_string(&spec->dir, o->box_dir) ||
	    !copy_string(&spec->hostname, o->hostname ? o->hostname : BOXLITE_DEFAULT_HOSTNAME) ||
	    !copy_string(&spec->network_helper, o->network_helper) ||
	    !copy_string(&spec->disk_image, o->disk_image) || !copy_vm(&spec->vm, o->vm))
		return no_memory(e);
	set_numbers(spec, o);
	return (*engine)->check(spec, e) < 0 ? BOXLITE_ERR_INVALID_ARGUMENT : BOXLITE_OK;
}

int boxlite_box_config_check(const boxlite_box_options *options, char *message, size_t len)
{
	bl_error e = {0};
	int rc = BOXLITE_ERR_INVALID_ARGUMENT;
	struct bl_box_spec spec = {0};
	const struct bl_engine *engine;
	if (!options)
		bl_error_set(&e, EINVAL, "no options");
	else
		rc = configure(&spec, &engine, options, &e);
	spec_free(&spec);
	if (message && len)
		snprintf(message, len, "%s", rc ? e.msg : "");
	return rc;
}

static int box_alloc(const boxlite_box_options *options, boxlite_runtime *rt, struct bl_box **out)
{
	struct bl_box *box = calloc(1, sizeof *box);
	if (!box)
		return BOXLITE_ERR_NO_MEMORY;
	atomic_init(&box->refs, 1);
	box->rt = rt;
	box->pidfd = -1;
	bl_error e;
	int rc = configure(&box->spec, &box->engine, options, &e);
	box->kept = box->spec.detached;
	if (rc)
		box_destroy(box);
	else
		*out = box;
	return rc;
}

int boxlite_box_new(boxlite_runtime *rt, const boxlite_box_options *options, boxlite_handle *out)
{
	if (!rt || !options || !out)
		return BOXLITE_ERR_INVALID_ARGUMENT;
	struct bl_box *box;
	int rc = box_alloc(options, rt, &box);
	if (rc)
		return rc;
	pthread_mutex_lock(&rt->lock);
	uint64_t h = rt->closed ? 0 : bl_handles_add(&rt->handles, BL_HANDLE_BOX, box);
	rc = rt->closed ? BOXLITE_ERR_RUNTIME_CLOSED : (h ? BOXLITE_OK : BOXLITE_ERR_NO_MEMORY);
	pthread_mutex_unlock(&rt->lock);
	if (rc) {
		box_destroy(box);
		return rc;
	}
	*out = h;
	return BOXLITE_OK;
}

/* Look up a box under rt->lock; sets *rc when it cannot be used. */
static struct bl_box *lookup_locked(boxlite_runtime *rt, boxlite_handle h, int *rc)
{
	if (rt->closed) {
		*rc = BOXLITE_ERR_RUNTIME_CLOSED;
		return NULL;
	}
	struct bl_box *box = bl_handles_get(&rt->handles, h, BL_HANDLE_BOX);
	*rc = box ? BOXLITE_OK : BOXLITE_ERR_INVALID_HANDLE;
	return box;
}

struct start_job {
	struct bl_box *box;
	struct bl_op *op;
};

/* Worker: spawn the box, then hand it, running, to the reactor. */
static void start_job_run(void *arg)
{
	struct start_job *job = arg;
	struct bl_box *box = job->box;
	boxlite_runtime *rt = box->rt;
	struct bl_spawned sp;
	const struct bl_engine_host host = {rt->libexec_dir, rt->closing_fd};
	bl_error e = {0};
	bool spawned = box->engine->spawn(&host, &box->spec, &sp, &e) == 0;
	int rc = spawned ? BOXLITE_OK : BOXLITE_ERR_ENGINE;

	pthread_mutex_lock(&rt->lock);
	if (spawned) {
		if (rt->closed)
			rc = BOXLITE_ERR_RUNTIME_CLOSED;
		else if (box->freed)
			rc = BOXLITE_ERR_INVALID_HANDLE;
		else if ((rc = bl_reactor_attach(rt->reactor, box, sp.pidfd, sp.conn_fd)) == BOXLITE_OK) {
			box->pidfd = sp.pidfd;
			box->shim_pid = sp.pid;
		}
	}
	box->state = rc == BOXLITE_OK ? BL_BOX_RUNNING : BL_BOX_NEW;
	pthread_mutex_unlock(&rt->lock);

	if (spawned && rc != BOXLITE_OK)
		box->engine->abandon(&sp);
	if (rc != BOXLITE_OK && !e.msg[0])
		snprintf(e.msg, sizeof e.msg, "%s", boxlite_status_name(rc));
	bl_op_complete(rt, job->op, rc, rc ? e.msg : NULL);
	bl_box_unref(box);
	free(job);
}

int boxlite_box_start(boxlite_runtime *rt, boxlite_handle h, boxlite_done_cb cb, void *user_data)
{
	if (!rt || !h || !cb)
		return BOXLITE_ERR_INVALID_ARGUMENT;
	struct start_job *job = calloc(1, sizeof *job);
	if (!job)
		return BOXLITE_ERR_NO_MEMORY;
	int rc;
	pthread_mutex_lock(&rt->lock);
	struct bl_box *box = lookup_locked(rt, h, &rc);
	if (box && box->state != BL_BOX_NEW && box->state != BL_BOX_STOPPED)
		rc = BOXLITE_ERR_INVALID_STATE;
	if (rc == BOXLITE_OK && !(job->op = bl_op_begin(rt, cb, user_data)))
		rc = BOXLITE_ERR_NO_MEMORY;
	if (rc == BOXLITE_OK) {
		job->box = box;
		bl_box_ref(box);
		box->state = BL_BOX_STARTING;
		if (box->pidfd >= 0) { /* from a previous run, already reaped */
			close(box->pidfd);
			box->pidfd = -1;
		}
	}
	pthread_mutex_unlock(&rt->lock);
	if (rc == BOXLITE_OK && bl_workers_submit(rt->workers, start_job_run, job) != BOXLITE_OK) {
		pthread_mutex_lock(&rt->lock);
		box->state = BL_BOX_NEW;
		pthread_mutex_unlock(&rt->lock);
		bl_op_complete(rt, job->op, BOXLITE_ERR_NO_MEMORY, "no worker");
		bl_box_unref(box);
		free(job);
		return BOXLITE_OK; /* the callback reports it, exactly once */
	}
	if (rc != BOXLITE_OK)
		free(job);
	return rc;
}

int boxlite_box_stop(boxlite_runtime *rt, boxlite_handle h, boxlite_done_cb cb, void *user_data)
{
	if (!rt || !h || !cb)
		return BOXLITE_ERR_INVALID_ARGUMENT;
	int rc;
	pthread_mutex_lock(&rt->lock);
	struct bl_box *box = lookup_locked(rt, h, &rc);
	if (box && box->state == BL_BOX_STARTING)
		rc = BOXLITE_ERR_INVALID_STATE;
	struct bl_op *op = NULL;
	if (rc == BOXLITE_OK && !(op = bl_op_begin(rt, cb, user_data)))
		rc = BOXLITE_ERR_NO_MEMORY;
	bool already = rc == BOXLITE_OK && (box->state == BL_BOX_NEW || box->state == BL_BOX_STOPPED);
	if (rc == BOXLITE_OK && !already) {
		/* The reactor completes waiters once the shim is reaped. */
		op->waiter_next = box->stop_waiters;
		box->stop_waiters = op;
		/* ESRCH: the shim is already exiting; the reaping still happens. */
		if (box->state == BL_BOX_RUNNING &&
		    box->engine->signal(box->pidfd, BL_ENGINE_STOP) < 0 && errno != ESRCH) {
			fprintf(stderr, "boxlite: stop the box's supervisor: %s\n", strerror(errno));
			abort(); /* a pidfd of our own child cannot be invalid */
		}
		box->state = BL_BOX_STOPPING;
	}
	pthread_mutex_unlock(&rt->lock);
	if (already)
		bl_op_complete(rt, op, BOXLITE_OK, NULL);
	return rc;
}

int boxlite_box_state(boxlite_runtime *rt, boxlite_handle h, int *state)
{
	if (!rt || !h || !state)
		return BOXLITE_ERR_INVALID_ARGUMENT;
	int rc;
	pthread_mutex_lock(&rt->lock);
	struct bl_box *box = lookup_locked(rt, h, &rc);
	if (box)
		*state = (int)box->state;
	pthread_mutex_unlock(&rt->lock);
	return rc;
}

int boxlite_box_free(boxlite_runtime *rt, boxlite_handle h)
{
	if (!rt || !h)
		return BOXLITE_ERR_INVALID_ARGUMENT;
	pthread_mutex_lock(&rt->lock);
	struct bl_box *box = bl_handles_remove(&rt->handles, h, BL_HANDLE_BOX);
	if (box) {
		box->freed = true;
		bool live = box->state == BL_BOX_RUNNING || box->state == BL_BOX_STOPPING;
		if (live && box->kept && !rt->closed)
			bl_reactor_release(rt->reactor, box); /* on failure, runtime close still will */
		else if (live && !box->kept && box->pidfd >= 0)
			(void)box->engine->signal(box->pidfd, BL_ENGINE_KILL);
	}
	pthread_mutex_unlock(&rt->lock);
	if (!box)
		return BOXLITE_ERR_INVALID_HANDLE;
	bl_box_unref(box);
	return BOXLITE_OK;
}

void bl_box_finished(struct bl_box *box)
{
	boxlite_runtime *rt = box->rt;
	pthread_mutex_lock(&rt->lock);
	box->state = BL_BOX_STOPPED;
	struct bl_op *waiters = box->stop_waiters;
	box->stop_waiters = NULL;
	pthread_mutex_unlock(&rt->lock);
	while (waiters) {
		struct bl_op *next = waiters->waiter_next;
		bl_op_complete(rt, waiters, BOXLITE_OK, NULL);
		waiters = next;
	}
}

int boxlite_box_pid(boxlite_runtime *rt, boxlite_handle h, int32_t *pid)
{
	if (!rt || !h || !pid)
		return BOXLITE_ERR_INVALID_ARGUMENT;
	int rc;
	pthread_mutex_lock(&rt->lock);
	struct bl_box *box = lookup_locked(rt, h, &rc);
	if (box && box->state != BL_BOX_RUNNING)
		rc = BOXLITE_ERR_INVALID_STATE;
	else if (box)
		*pid = box->shim_pid;
	pthread_mutex_unlock(&rt->lock);
	return rc;
}

/* Field 22 of /proc/<pid>/stat: when the process started, in clock ticks
 * since boot.  0 when it cannot be read. */
static uint64_t start_ticks(pid_t pid)
{
	char path[64], buf[1024];
	snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	ssize_t n = read(fd, buf, sizeof buf - 1);
	close(fd);
	if (n <= 0)
		return 0;
	buf[n] = '\0';
	char *p = strrchr(buf, ')'); /* the name may hold spaces and parentheses */
	for (int field = 2; p && field < 22; field++)
		p = strchr(p + 1, ' ');
	return p ? strtoull(p + 1, NULL, 10) : 0;
}

/* A pidfd on the shim the caller named, or -1: gone, or the pid reused. */
static int open_shim(pid_t pid, uint64_t ticks)
{
	int pidfd = bl_pidfd_open(pid);
	/* Checked after the pidfd is held: the pid cannot be reused now. */
	if (pidfd >= 0 && start_ticks(pid) != ticks) {
		close(pidfd);
		pidfd = -1;
	}
	return pidfd;
}

int boxlite_box_connect(boxlite_runtime *rt, const boxlite_box_options *options, int32_t shim_pid,
			uint64_t shim_start_ticks, boxlite_handle *out)
{
	if (!rt || !options || !out || shim_pid <= 0 || !shim_start_ticks)
		return BOXLITE_ERR_INVALID_ARGUMENT;
	struct bl_box *box;
	int rc = box_alloc(options, rt, &box);
	if (rc)
		return rc;
	box->kept = true;
	int pidfd = open_shim(shim_pid, shim_start_ticks);
	bl_error e;
	int conn = pidfd >= 0 ? box->engine->connect(&box->spec, pidfd, &e) : -1;
	if (conn < 0) {
		if (pidfd >= 0)
			close(pidfd);
		box_destroy(box);
		return BOXLITE_ERR_NOT_FOUND;
	}
	pthread_mutex_lock(&rt->lock);
	uint64_t h = rt->closed ? 0 : bl_handles_add(&rt->handles, BL_HANDLE_BOX, box);
	rc = rt->closed ? BOXLITE_ERR_RUNTIME_CLOSED : (h ? BOXLITE_OK : BOXLITE_ERR_NO_MEMORY);
	if (rc == BOXLITE_OK && (rc = bl_reactor_attach(rt->reactor, box, pidfd, conn)) == BOXLITE_OK) {
		box->pidfd = pidfd;
		box->shim_pid = shim_pid;
		box->state = BL_BOX_RUNNING;
	} else if (h) {
		bl_handles_remove(&rt->handles, h, BL_HANDLE_BOX);
	}
	pthread_mutex_unlock(&rt->lock);
	if (rc) {
		close(conn);
		close(pidfd);
		box_destroy(box);
		return rc;
	}
	*out = h;
	return BOXLITE_OK;
}
