/*
 * boxlite-run - run one command in a box made from a root filesystem
 * directory, stream its output, and exit with its status:
 *
 *	boxlite-run ROOTFS COMMAND [ARG...]
 *
 * An embedder of libboxlite in one file.  The main thread makes the calls;
 * a drain thread of its own runs every callback (boxlite_runtime_drain), so
 * the main thread waits for a completion on a condition variable that the
 * callback signals.  The shim and agent come from the directory the build
 * named (pkg-config's libexecdir), or from $BOXLITE_LIBEXEC.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
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

static void waiter_init(struct waiter *w)
{
	memset(w, 0, sizeof *w);
	pthread_mutex_init(&w->lock, NULL);
	pthread_cond_init(&w->cond, NULL);
}

static void waiter_destroy(struct waiter *w)
{
	pthread_cond_destroy(&w->cond);
	pthread_mutex_destroy(&w->lock);
}

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

/* Start the box, run the command, stop the box; the box handle is freed by the caller. */
static int run_in_box(boxlite_runtime *rt, boxlite_handle box, char **argv)
{
	struct waiter w;
	waiter_init(&w);
	int rc = boxlite_box_start(rt, box, on_done, &w);
	if (rc)
		goto out_status;
	waiter_wait(&w);
	if (w.status) {
		rc = fail("start", w.status, w.message);
		goto out;
	}

	static const char *const env[] = {"PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
					  "HOME=/root", NULL};
	boxlite_exec_options exec_options = {.argv = (const char *const *)argv, .env = env};
	boxlite_exec_callbacks callbacks = {on_output, on_exit_cb, &w};
	boxlite_handle exec;
	rc = boxlite_exec_start(rt, box, &exec_options, &callbacks, &exec);
	if (rc) {
		fail("exec", rc, NULL);
	} else {
		waiter_wait(&w); /* the Exit comes after every output chunk */
		boxlite_exec_free(rt, exec);
	}
	int status = rc ? EXIT_BOXLITE_FAILED : exit_status(&w.exit);

	rc = boxlite_box_stop(rt, box, on_done, &w);
	if (rc)
		goto out_status;
	waiter_wait(&w);
	rc = w.status ? fail("stop", w.status, w.message) : status;
	goto out;
out_status:
	rc = fail("box", rc, NULL);
out:
	waiter_destroy(&w);
	return rc;
}

static int run(const char *rootfs, char **argv)
{
	const char *libexec = getenv("BOXLITE_LIBEXEC");
	boxlite_runtime_options rt_options = {
		.libexec_dir = libexec && *libexec ? libexec : BOXLITE_RUN_LIBEXEC_DIR,
	};
	boxlite_runtime *rt;
	int rc = boxlite_runtime_new(&rt_options, &rt);
	if (rc)
		return fail("runtime", rc, rt_options.libexec_dir);
	pthread_t drainer;
	if ((rc = pthread_create(&drainer, NULL, drain_main, rt)) != 0) {
		fprintf(stderr, "boxlite-run: pthread_create: %s\n", strerror(rc));
		boxlite_runtime_free(rt);
		return EXIT_BOXLITE_FAILED;
	}

	char dir[4096];
	bool have_dir = make_box_dir(dir, sizeof dir) == 0;
	if (!have_dir) {
		perror("boxlite-run: box directory");
		rc = EXIT_BOXLITE_FAILED;
	} else {
		const char *const lowers[] = {rootfs, NULL};
		boxlite_box_options box_options = {.box_dir = dir, .lower_dirs = lowers};
		boxlite_handle box;
		rc = boxlite_box_new(rt, &box_options, &box);
		if (rc) {
			rc = fail("box", rc, rootfs);
		} else {
			rc = run_in_box(rt, box, argv);
			boxlite_box_free(rt, box);
		}
	}

	/* Close wakes the drain thread, which returns once it has delivered
	 * everything; only then may the runtime be freed. */
	boxlite_runtime_close(rt);
	int err = pthread_join(drainer, NULL);
	if (err)
		fprintf(stderr, "boxlite-run: pthread_join: %s\n", strerror(err));
	boxlite_runtime_free(rt);
	if (have_dir)
		remove_box_dir(dir);
	return rc;
}

int main(int argc, char **argv)
{
	if (argc < 3) {
		fprintf(stderr, "usage: %s ROOTFS COMMAND [ARG...]\n", argv[0]);
		return 2;
	}
	return run(argv[1], argv + 2);
}
