/* box.c - box handles and lifecycle: new, start, stop, free. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

#include "core.h"
#include "common/pidfd.h"
#include "common/protocol.h"

#define MAX_LOWERS 128

void bl_box_ref(struct bl_box *box) { atomic_fetch_add(&box->refs, 1); }

static void box_destroy(struct bl_box *box)
{
	if (box->pidfd >= 0)
		close(box->pidfd);
	for (char **p = box->lowers; p && *p; p++)
		free(*p);
	free(box->lowers);
	free(box->dir);
	free(box->hostname);
	free(box->main_req);
	for (uint32_t i = 0; i < box->n_mounts; i++) {
		free(box->mounts[i].source);
		free(box->mounts[i].target);
	}
	free(box->mounts);
	free(box->network_helper);
	free(box->disk_image);
	free(box);
}

void bl_box_unref(struct bl_box *box)
{
	if (box && atomic_fetch_sub(&box->refs, 1) == 1)
		box_destroy(box);
}

static int copy_lowers(struct bl_box *box, const char *const *lowers)
{
	size_t n = 0;
	while (lowers[n]) {
		if (!lowers[n][0] || strchr(lowers[n], ':') || strchr(lowers[n], ','))
			return BOXLITE_ERR_INVALID_ARGUMENT; /* overlay option separators */
		if (++n > MAX_LOWERS)
			return BOXLITE_ERR_INVALID_ARGUMENT;
	}
	if (n == 0)
		return BOXLITE_ERR_INVALID_ARGUMENT;
	box->lowers = calloc(n + 1, sizeof(char *));
	if (!box->lowers)
		return BOXLITE_ERR_NO_MEMORY;
	for (size_t i = 0; i < n; i++)
		if (!(box->lowers[i] = strdup(lowers[i])))
			return BOXLITE_ERR_NO_MEMORY;
	return BOXLITE_OK;
}

static bool usable_path(const char *path)
{
	return path && path[0] == '/' && strlen(path) < PATH_MAX;
}

static int copy_mounts(struct bl_box *box, const boxlite_mount *mounts, uint32_t n)
{
	if (n == 0)
		return BOXLITE_OK;
	if (!mounts || n > BOXLITE_MAX_MOUNTS)
		return BOXLITE_ERR_INVALID_ARGUMENT;
	for (uint32_t i = 0; i < n; i++) {
		const boxlite_mount *m = &mounts[i];
		if (!usable_path(m->source) || !usable_path(m->target) ||
		    strspn(m->target, "/") == strlen(m->target) ||
		    (m->flags & ~(uint32_t)BOXLITE_MOUNT_READONLY))
			return BOXLITE_ERR_INVALID_ARGUMENT;
	}
	if (!(box->mounts = calloc(n, sizeof *box->mounts)))
		return BOXLITE_ERR_NO_MEMORY;
	for (uint32_t i = 0; i < n; i++) {
		box->n_mounts++;
		box->mounts[i].readonly = mounts[i].flags & BOXLITE_MOUNT_READONLY;
		if (!(box->mounts[i].source = strdup(mounts[i].source)) ||
		    !(box->mounts[i].target = strdup(mounts[i].target)))
			return BOXLITE_ERR_NO_MEMORY;
	}
	return BOXLITE_OK;
}

/* The main command travels to the agent as an EXEC payload (no stdin, no
 * timeout): the encoding both sides already speak. */
static int encode_main(struct bl_box *box, const boxlite_box_options *o)
{
	if (!o->main_argv)
		return o->main_env || o->main_cwd ? BOXLITE_ERR_INVALID_ARGUMENT : BOXLITE_OK;
	size_t len = bl_exec_encoded_size(o->main_argv, o->main_env, o->main_cwd);
	if (len == 0)
		return BOXLITE_ERR_INVALID_ARGUMENT; /* no argv[0], or too large */
	if (!(box->main_req = malloc(len)))
		return BOXLITE_ERR_NO_MEMORY;
	struct bl_exec_params params = {0};
	bl_exec_encode(o->main_argv, o->main_env, o->main_cwd, &params, box->main_req);
	box->main_len = len;
	return BOXLITE_OK;
}

const char *boxlite_box_marker(void) { return ".boxlite-box"; }

static bool ours(const struct stat *st) { return st->st_uid == geteuid(); }

/* box_dir is a box directory (see boxlite_box_marker in boxlite.h): checked
 * through fds, so a path swapped for a symlink meanwhile is not followed. */
static int check_box_dir(const char *path)
{
	int dir = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (dir < 0)
		return errno == ENOMEM ? BOXLITE_ERR_NO_MEMORY : BOXLITE_ERR_NOT_BOX_DIR;
	struct stat st;
	int rc = BOXLITE_ERR_NOT_BOX_DIR;
	if (fstat(dir, &st) == 0 && ours(&st) && (st.st_mode & 0066) == 0) {
		int marker = openat(dir, boxlite_box_marker(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
		if (marker >= 0) {
			if (fstat(marker, &st) == 0 && S_ISREG(st.st_mode) && ours(&st))
				rc = BOXLITE_OK;
			close(marker);
		}
	}
	close(dir);
	return rc;
}

static int box_configure(struct bl_box *box, const boxlite_box_options *o)
{
	const uint32_t known =
	    BOXLITE_BOX_DETACHED | BOXLITE_BOX_HOST_LOOPBACK | BOXLITE_BOX_PIDS_OPTIONAL;
	if (!o->box_dir || !o->box_dir[0] || !o->lower_dirs || o->owner_pid < 0 ||
	    (o->flags & ~known) || (o->network_helper && !usable_path(o->network_helper)) ||
	    (o->disk_image && !usable_path(o->disk_image)) ||
	    ((o->flags & BOXLITE_BOX_HOST_LOOPBACK) && !o->network_helper) ||
	    (o->log_limit && o->log_limit < BOXLITE_MIN_LOG_LIMIT) ||
	    (o->tmp_size && o->tmp_size < BOXLITE_MIN_TMP_SIZE) ||
	    ((o->flags & BOXLITE_BOX_PIDS_OPTIONAL) && !o->pids_limit))
		return BOXLITE_ERR_INVALID_ARGUMENT;
	const char *host = o->hostname ? o->hostname : "box";
	if (!host[0] || strlen(host) > 64)
		return BOXLITE_ERR_INVALID_ARGUMENT;
	int rc = check_box_dir(o->box_dir);
	if (rc || (rc = copy_lowers(box, o->lower_dirs)) || (rc = encode_main(box, o)) || (rc = copy_mounts(box, o->mounts, o->n_mounts)))
		return rc;
	box->dir = strdup(o->box_dir);
	box->hostname = strdup(host);
	if (!box->dir || !box->hostname)
		return BOXLITE_ERR_NO_MEMORY;
	box->grace_ms = o->stop_grace_ms ? o->stop_grace_ms : BOXLITE_DEFAULT_STOP_GRACE_MS;
	box->drain_ms = o->drain_ms ? o->drain_ms : BOXLITE_DEFAULT_DRAIN_MS;
	box->owner_pid = o->owner_pid;
	box->host_loopback = o->flags & BOXLITE_BOX_HOST_LOOPBACK;
	if ((o->network_helper && !(box->network_helper = strdup(o->network_helper))) ||
	    (o->disk_image && !(box->disk_image = strdup(o->disk_image))))
		return BOXLITE_ERR_NO_MEMORY;
	box->memory_limit = o->memory_limit;
	box->pids_limit = o->pids_limit;
	box->cpu_millis = o->cpu_millis;
	box->pids_optional = o->flags & BOXLITE_BOX_PIDS_OPTIONAL;
	box->log_limit = o->log_limit ? o->log_limit : BOXLITE_DEFAULT_LOG_LIMIT;
	/* tmpfs pages are the box's memory: a bound past its limit is none. */
	box->tmp_size = o->tmp_size ? o->tmp_size : BOXLITE_DEFAULT_TMP_SIZE;
	if (box->memory_limit && box->tmp_size > box->memory_limit)
		box->tmp_size = box->memory_limit;
	box->detached = o->flags & BOXLITE_BOX_DETACHED;
	box->kept = box->detached;
	return BOXLITE_OK;
}

static int box_alloc(const boxlite_box_options *options, boxlite_runtime *rt, struct bl_box **out)
{
	struct bl_box *box = calloc(1, sizeof *box);
	if (!box)
		return BOXLITE_ERR_NO_MEMORY;
	atomic_init(&box->refs, 1);
	box->rt = rt;
	box->pidfd = -1;
	int rc = box_configure(box, options);
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

/* Worker: spawn the shim, then hand the running box to the reactor. */
static void start_job_run(void *arg)
{
	struct start_job *job = arg;
	struct bl_box *box = job->box;
	boxlite_runtime *rt = box->rt;
	struct bl_spawned sp;
	char err[256] = "";
	int rc = bl_engine_ns_spawn(rt, box, &sp, err, sizeof err);
	bool spawned = rc == BOXLITE_OK;

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
		bl_engine_ns_abandon(&sp);
	if (rc != BOXLITE_OK && !err[0])
		snprintf(err, sizeof err, "%s", boxlite_status_name(rc));
	bl_op_complete(rt, job->op, rc, rc ? err : NULL);
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
		if (box->state == BL_BOX_RUNNING && bl_pidfd_signal(box->pidfd, SIGTERM) < 0 &&
		    errno != ESRCH) {
			fprintf(stderr, "boxlite: SIGTERM to shim: %s\n", strerror(errno));
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
			bl_pidfd_signal(box->pidfd, BL_SHIM_KILL_NOW);
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

static int connect_agent(const char *box_dir)
{
	struct sockaddr_un addr = {.sun_family = AF_UNIX};
	if (snprintf(addr.sun_path, sizeof addr.sun_path, "%s/agent.sock", box_dir) >=
	    (int)sizeof addr.sun_path)
		return -1;
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd >= 0 && connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0) {
		close(fd);
		fd = -1;
	}
	return fd;
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
	int conn = pidfd >= 0 ? connect_agent(box->dir) : -1;
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
