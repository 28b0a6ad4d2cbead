/*
 * boxlite-run - run one command in a box made from a root filesystem
 * directory, stream its output, and exit with its status:
 *
 *	boxlite-run ROOTFS COMMAND [ARG...]
 *
 * An embedder of libboxlite in one file.  The main thread makes the calls;
 * a drain thread of its own runs every callback (boxlite_runtime_drain), so
 * the main thread waits for a completion on a condition variable that the
 * callback signals.  A third thread takes SIGINT, SIGTERM and SIGHUP and
 * sends them to the command (any thread may call the API).  The shim and
 * agent come from the directory the build named (pkg-config's libexecdir),
 * or from $BOXLITE_LIBEXEC.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <boxlite.h>

#ifndef BOXLITE_RUN_LIBEXEC_DIR
#error "define BOXLITE_RUN_LIBEXEC_DIR (pkg-config --variable=libexecdir boxlite)"
#endif

/* What the exit status says when boxlite itself failed (as the boxlite CLI). */
#define EXIT_BOXLITE_FAILED 125

/* One completion the main thread waits for, signalled from a callback. */
struct waiter {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool done;
	int status;
	char message[256]; /* a callback's strings live only during the callback */
	boxlite_exit exit;
};

static void waiter_signal(struct waiter *w)
{
	pthread_mutex_lock(&w->lock);
	w->done = true;
	pthread_cond_signal(&w->cond);
	pthread_mutex_unlock(&w->lock);
}

static void waiter_wait(struct waiter *w)
{
	pthread_mutex_lock(&w->lock);
	while (!w->done)
		pthread_cond_wait(&w->cond, &w->lock);
	w->done = false;
	pthread_mutex_unlock(&w->lock);
}

/* ---- callbacks: all of them run on the drain thread ---- */

static void on_done(void *user_data, int status, const char *message)
{
	struct waiter *w = user_data;
	w->status = status;
	snprintf(w->message, sizeof w->message, "%s", message ? message : "");
	waiter_signal(w);
}

static bool write_all(int fd, const uint8_t *data, size_t len)
{
	while (len > 0) {
		ssize_t n = write(fd, data, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return false;
		data += n;
		len -= (size_t)n;
	}
	return true;
}

/* Returning acknowledges the chunk (no BOXLITE_EXEC_ACK_OUTPUT): a slow
 * reader of our stdout slows the command down, nothing piles up. */
static void on_output(void *user_data, int stream, const uint8_t *data, size_t len)
{
	(void)user_data;
	if (!write_all(stream == BOXLITE_STDERR ? STDERR_FILENO : STDOUT_FILENO, data, len))
		perror("boxlite-run: write");
}

static void on_exit_cb(void *user_data, const boxlite_exit *exit)
{
	struct waiter *w = user_data;
	w->exit = *exit;
	waiter_signal(w);
}

/* Until the runtime is closed and every event delivered. */
static void *drain_main(void *arg)
{
	boxlite_runtime *rt = arg;
	int n;
	while ((n = boxlite_runtime_drain(rt, 64, -1)) >= 0)
		;
	if (n != -BOXLITE_ERR_RUNTIME_CLOSED)
		fprintf(stderr, "boxlite-run: drain: %s\n", boxlite_status_name(-n));
	return NULL;
}

/* ---- signals to this program go to the command ---- */

struct relay {
	boxlite_runtime *rt;
	sigset_t signals;              /* blocked in every other thread, the library's too */
	_Atomic boxlite_handle exec;   /* the running execution, 0 for none */
	atomic_bool stopping;
};

static void on_signal_sent(void *user_data, int status, const char *message)
{
	(void)user_data, (void)status, (void)message; /* EXEC_CLOSED: it had just ended */
}

static void *relay_main(void *arg)
{
	struct relay *r = arg;
	for (;;) {
		int sig;
		if (sigwait(&r->signals, &sig) != 0)
			continue;
		if (atomic_load(&r->stopping))
			return NULL;
		/* A handle freed meanwhile is refused (INVALID_HANDLE), never reused. */
		boxlite_handle exec = atomic_load(&r->exec);
		if (exec)
			(void)boxlite_exec_signal(r->rt, exec, sig, on_signal_sent, NULL);
	}
}

/* ---- the box directory: ours, marked, removed at the end ---- */

static void remove_box_dir(const char *dir);

/* dir/name into buf, or -1 (ENAMETOOLONG) if it does not fit. */
static int join(char *buf, size_t size, const char *dir, const char *name)
{
	int n = snprintf(buf, size, "%s/%s", dir, name);
	if (n < 0 || (size_t)n >= size) {
		errno = ENAMETOOLONG;
		return -1;
	}
	return 0;
}

static int make_box_dir(char *dir, size_t size)
{
	const char *tmp = getenv("TMPDIR");
	if (join(dir, size, tmp && *tmp ? tmp : "/tmp", "boxlite-run-XXXXXX") < 0)
		return -1;
	if (!mkdtemp(dir)) /* 0700, as boxlite_box_new requires */
		return -1;
	char marker[4096];
	int fd = -1;
	if (join(marker, sizeof marker, dir, boxlite_box_marker()) == 0)
		fd = open(marker, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0 || close(fd) < 0) {
		int saved = errno;
		remove_box_dir(dir);
		errno = saved;
		return -1;
	}
	return 0;
}

static int remove_entry(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
	(void)st, (void)ftw;
	if ((type == FTW_DP ? rmdir(path) : unlink(path)) < 0)
		perror(path);
	return 0;
}

static void remove_box_dir(const char *dir)
{
	if (nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS) < 0)
		perror(dir);
}

/* ---- the program ---- */

static int fail(const char *what, int status, const char *message)
{
	fprintf(stderr, "boxlite-run: %s: %s%s%s\n", what, boxlite_status_name(status),
		message && *message ? ": " : "", message ? message : "");
	return EXIT_BOXLITE_FAILED;
}

/* The shell's convention, which boxlite_exit.exit_code follows. */
static int exit_status(const boxlite_exit *exit)
{
	if (exit->outcome == BOXLITE_OUTCOME_EXITED || exit->outcome == BOXLITE_OUTCOME_SIGNALED)
		return exit->exit_code;
	if (exit->outcome == BOXLITE_OUTCOME_FAILED_TO_START) {
		fprintf(stderr, "boxlite-run: cannot run the command: %s\n", strerror(exit->os_error));
		return exit->exit_code;
	}
	fprintf(stderr, "boxlite-run: the command ended with outcome %d (%s)\n", exit->outcome,
		boxlite_status_name(exit->error));
	return EXIT_BOXLITE_FAILED;
}

/* The outcome of an asynchronous call that returned rc, once its callback ran:
 * 0, or EXIT_BOXLITE_FAILED said on stderr. */
static int completed(struct waiter *w, int rc, const char *what)
{
	if (rc)
		return fail(what, rc, NULL);
	waiter_wait(w);
	return w->status ? fail(what, w->status, w->message) : 0;
}

static int run_command(boxlite_runtime *rt, boxlite_handle box, char **argv, struct waiter *w,
		       struct relay *relay)
{
	static const char *const env[] = {"PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
					  "HOME=/root", NULL};
	boxlite_exec_options options = {.argv = (const char *const *)argv, .env = env};
	boxlite_exec_callbacks callbacks = {on_output, on_exit_cb, w};
	boxlite_handle exec;
	int rc = boxlite_exec_start(rt, box, &options, &callbacks, &exec);
	if (rc)
		return fail("exec", rc, NULL);
	atomic_store(&relay->exec, exec);
	waiter_wait(w); /* the Exit, which comes after every output chunk */
	atomic_store(&relay->exec, 0);
	boxlite_exec_free(rt, exec);
	return exit_status(&w->exit);
}

/* Start the box, run the command, stop the box (a graceful end; freeing a
 * running box's handle would kill it). */
static int run_in_box(boxlite_runtime *rt, boxlite_handle box, char **argv, struct relay *relay)
{
	struct waiter w = {.lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER};
	int rc = completed(&w, boxlite_box_start(rt, box, on_done, &w), "start");
	if (rc == 0) {
		rc = run_command(rt, box, argv, &w, relay);
		int stopped = completed(&w, boxlite_box_stop(rt, box, on_done, &w), "stop");
		rc = stopped ? stopped : rc;
	}
	pthread_cond_destroy(&w.cond);
	pthread_mutex_destroy(&w.lock);
	return rc;
}

/* A box of the root filesystem in dir, the command in it. */
static int run_box(boxlite_runtime *rt, const char *rootfs, char **argv, const char *dir,
		   struct relay *relay)
{
	const char *const lowers[] = {rootfs, NULL};
	/* The box dies with this process, however it ends. */
	boxlite_box_options options = {.box_dir = dir, .lower_dirs = lowers, .owner_pid = getpid()};
	boxlite_handle box;
	int rc = boxlite_box_new(rt, &options, &box);
	if (rc)
		return fail("box", rc, rootfs);
	rc = run_in_box(rt, box, argv, relay);
	boxlite_box_free(rt, box);
	return rc;
}

static bool start_thread(pthread_t *thread, void *(*fn)(void *), void *arg)
{
	int err = pthread_create(thread, NULL, fn, arg);
	if (err)
		fprintf(stderr, "boxlite-run: pthread_create: %s\n", strerror(err));
	return err == 0;
}

static void join_thread(pthread_t thread)
{
	int err = pthread_join(thread, NULL);
	if (err)
		fprintf(stderr, "boxlite-run: pthread_join: %s\n", strerror(err));
}

/* The runtime, its drain thread and the signal relay around run_box. */
static int run(const char *rootfs, char **argv, const char *dir, const sigset_t *signals)
{
	const char *libexec = getenv("BOXLITE_LIBEXEC");
	boxlite_runtime_options options = {
		.libexec_dir = libexec && *libexec ? libexec : BOXLITE_RUN_LIBEXEC_DIR,
	};
	boxlite_runtime *rt;
	int rc = boxlite_runtime_new(&options, &rt);
	if (rc)
		return fail("runtime", rc, options.libexec_dir);
	struct relay relay = {.rt = rt, .signals = *signals};
	pthread_t drainer, relayer;
	rc = EXIT_BOXLITE_FAILED;
	if (!start_thread(&drainer, drain_main, rt))
		goto out_free;
	if (start_thread(&relayer, relay_main, &relay)) {
		rc = run_box(rt, rootfs, argv, dir, &relay);
		atomic_store(&relay.stopping, true);
		int err = pthread_kill(relayer, SIGTERM); /* blocked here: sigwait takes it */
		if (err)
			fprintf(stderr, "boxlite-run: pthread_kill: %s\n", strerror(err));
		else
			join_thread(relayer);
	}
	/* Close wakes the drain thread, which returns once it has delivered
	 * everything; only then may the runtime be freed. */
	boxlite_runtime_close(rt);
	join_thread(drainer);
out_free:
	boxlite_runtime_free(rt); /* reaps every box process */
	return rc;
}

int main(int argc, char **argv)
{
	if (argc < 3) {
		fprintf(stderr, "usage: %s ROOTFS COMMAND [ARG...]\n", argv[0]);
		return 2;
	}
	/* Blocked before any thread starts, so that every thread inherits the
	 * mask and only the relay's sigwait takes them (the library gives the
	 * box's processes an empty mask). */
	sigset_t signals;
	sigemptyset(&signals);
	sigaddset(&signals, SIGINT);
	sigaddset(&signals, SIGTERM);
	sigaddset(&signals, SIGHUP);
	int err = pthread_sigmask(SIG_BLOCK, &signals, NULL);
	if (err) {
		fprintf(stderr, "boxlite-run: pthread_sigmask: %s\n", strerror(err));
		return EXIT_BOXLITE_FAILED;
	}
	char dir[4096];
	if (make_box_dir(dir, sizeof dir) < 0) {
		perror("boxlite-run: box directory");
		return EXIT_BOXLITE_FAILED;
	}
	int rc = run(argv[1], argv + 2, dir, &signals);
	remove_box_dir(dir);
	return rc;
}
