/* Tests of the runtime's post-and-drain contract through the public API,
 * with stand-in shim scripts (the real box is tested from Python). */
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "boxlite.h"
#include "check.h"

static char libexec[64];
static char boxdir[96];

static void write_script(const char *name, const char *body)
{
	char path[128];
	snprintf(path, sizeof path, "%s/%s", libexec, name);
	FILE *f = fopen(path, "w");
	CHECK(f);
	CHECK(fprintf(f, "#!/bin/sh\n%s\n", body) > 0);
	CHECK(fclose(f) == 0);
	CHECK(chmod(path, 0755) == 0);
}

static boxlite_runtime *new_runtime(uint32_t capacity, const char *shim_body)
{
	write_script("boxlite-shim", shim_body);
	write_script("boxlite-agent", "exit 1");
	boxlite_runtime_options o = {.queue_capacity = capacity, .libexec_dir = libexec};
	boxlite_runtime *rt = NULL;
	CHECK(boxlite_runtime_new(&o, &rt) == BOXLITE_OK && rt);
	return rt;
}

struct record {
	int calls;
	int last_status;
	char message[256];
	pthread_t thread;
	int order[64];
};

static void on_done(void *ud, int status, const char *message)
{
	struct record *r = ud;
	if (r->calls < 64)
		r->order[r->calls] = status;
	r->calls++;
	r->last_status = status;
	r->thread = pthread_self();
	snprintf(r->message, sizeof r->message, "%s", message ? message : "");
}

static void test_null_arguments_are_refused(void)
{
	boxlite_runtime *rt = NULL;
	CHECK(boxlite_runtime_new(NULL, &rt) == BOXLITE_ERR_INVALID_ARGUMENT);
	boxlite_runtime_options none = {0};
	CHECK(boxlite_runtime_new(&none, &rt) == BOXLITE_ERR_INVALID_ARGUMENT);
	boxlite_runtime_options missing = {.libexec_dir = "/nonexistent"};
	CHECK(boxlite_runtime_new(&missing, &rt) == BOXLITE_ERR_ENGINE && rt == NULL);
	CHECK(boxlite_runtime_drain(NULL, 1, 0) == -BOXLITE_ERR_INVALID_ARGUMENT);
	CHECK(boxlite_runtime_close(NULL) == BOXLITE_ERR_INVALID_ARGUMENT);
	boxlite_runtime_free(NULL);

	rt = new_runtime(0, "exit 1");
	struct record r = {0};
	boxlite_handle h = 0;
	CHECK(boxlite_runtime_post(rt, NULL, &r, 0, 0) == BOXLITE_ERR_INVALID_ARGUMENT);
	CHECK(boxlite_runtime_drain(rt, 0, 0) == -BOXLITE_ERR_INVALID_ARGUMENT);
	CHECK(boxlite_box_new(rt, NULL, &h) == BOXLITE_ERR_INVALID_ARGUMENT);
	const char *lowers[] = {"/", NULL};
	boxlite_box_options bo = {.box_dir = boxdir, .lower_dirs = lowers};
	CHECK(boxlite_box_new(rt, &bo, NULL) == BOXLITE_ERR_INVALID_ARGUMENT);
	bo.log_limit = BOXLITE_MIN_LOG_LIMIT - 1;
	CHECK(boxlite_box_new(rt, &bo, &h) == BOXLITE_ERR_INVALID_ARGUMENT && h == 0);
	bo.log_limit = BOXLITE_MIN_LOG_LIMIT;
	CHECK(boxlite_box_new(rt, &bo, &h) == BOXLITE_OK && h != 0);
	int state = -1;
	CHECK(boxlite_box_state(rt, h, NULL) == BOXLITE_ERR_INVALID_ARGUMENT);
	CHECK(boxlite_box_state(rt, 0, &state) == BOXLITE_ERR_INVALID_ARGUMENT);
	CHECK(boxlite_box_state(rt, h, &state) == BOXLITE_OK && state == BOXLITE_BOX_NEW);
	CHECK(boxlite_box_start(rt, h, NULL, &r) == BOXLITE_ERR_INVALID_ARGUMENT);
	CHECK(boxlite_box_start(rt, 0, on_done, &r) == BOXLITE_ERR_INVALID_ARGUMENT);
	CHECK(boxlite_box_stop(rt, 0, on_done, &r) == BOXLITE_ERR_INVALID_ARGUMENT);
	CHECK(boxlite_box_free(rt, 0) == BOXLITE_ERR_INVALID_ARGUMENT);
	CHECK(boxlite_exec_signal(rt, 0, 9, on_done, &r) == BOXLITE_ERR_INVALID_ARGUMENT);
	CHECK(boxlite_exec_signal(rt, h, 9, NULL, &r) == BOXLITE_ERR_INVALID_ARGUMENT);
	CHECK(boxlite_exec_free(rt, 0) == BOXLITE_ERR_INVALID_ARGUMENT);
	CHECK(boxlite_exec_signal(rt, h, 0, on_done, &r) == BOXLITE_ERR_INVALID_ARGUMENT);
	CHECK(boxlite_exec_signal(rt, h, 65, on_done, &r) == BOXLITE_ERR_INVALID_ARGUMENT);
	CHECK(boxlite_exec_write(rt, 0, (const uint8_t *)"x", 1, on_done, &r) ==
	      BOXLITE_ERR_INVALID_ARGUMENT);
	CHECK(boxlite_exec_write(rt, h, NULL, 1, on_done, &r) == BOXLITE_ERR_INVALID_ARGUMENT);
	CHECK(boxlite_exec_write(rt, h, (const uint8_t *)"x", 1, NULL, &r) ==
	      BOXLITE_ERR_INVALID_ARGUMENT);
	CHECK(boxlite_exec_write(rt, h, (const uint8_t *)"x", BOXLITE_EXEC_WRITE_MAX + 1, on_done,
				 &r) == BOXLITE_ERR_INVALID_ARGUMENT);
	CHECK(boxlite_exec_write(rt, h, (const uint8_t *)"x", 1, on_done, &r) ==
	      BOXLITE_ERR_INVALID_HANDLE); /* a box handle */
	CHECK(boxlite_exec_close_stdin(rt, 0) == BOXLITE_ERR_INVALID_ARGUMENT);
	CHECK(boxlite_exec_close_stdin(rt, h) == BOXLITE_ERR_INVALID_HANDLE);
	/* Durable ids, attach, detach, connect: the same refusals. */
	uint64_t id;
	boxlite_handle e;
	boxlite_attach_options ao = {0};
	boxlite_attach_info info;
	boxlite_exec_callbacks cbs = {.on_output = NULL};
	CHECK(boxlite_exec_id(rt, h, &id) == BOXLITE_ERR_INVALID_HANDLE);
	CHECK(boxlite_exec_id(rt, h, NULL) == BOXLITE_ERR_INVALID_ARGUMENT);
	CHECK(boxlite_exec_attach_info(rt, h, &info) == BOXLITE_ERR_INVALID_HANDLE);
	CHECK(boxlite_exec_detach(rt, 0) == BOXLITE_ERR_INVALID_ARGUMENT);
	CHECK(boxlite_exec_detach(rt, h) == BOXLITE_ERR_INVALID_HANDLE);
	CHECK(boxlite_exec_attach(rt, h, 0, &ao, &cbs, on_done, &r, &e) ==
	      BOXLITE_ERR_INVALID_ARGUMENT); /* id 0 */
	CHECK(boxlite_exec_attach(rt, h, 7, &ao, &cbs, on_done, &r, &e) ==
	      BOXLITE_ERR_INVALID_ARGUMENT); /* no callbacks */
	ao.flags = BOXLITE_EXEC_TTY;
	CHECK(boxlite_exec_attach(rt, h, 7, &ao, &cbs, on_done, &r, &e) ==
	      BOXLITE_ERR_INVALID_ARGUMENT); /* only ACK_OUTPUT is a flag of attach */
	CHECK(boxlite_box_connect(rt, &bo, 0, 1, &e) == BOXLITE_ERR_INVALID_ARGUMENT);
	CHECK(boxlite_box_connect(rt, &bo, getpid(), 0, &e) == BOXLITE_ERR_INVALID_ARGUMENT);
	/* A live pid whose start time does not match is not the shim. */
	CHECK(boxlite_box_connect(rt, &bo, getpid(), 1, &e) == BOXLITE_ERR_NOT_FOUND);
	int32_t pid;
	CHECK(boxlite_box_pid(rt, h, &pid) == BOXLITE_ERR_INVALID_STATE); /* never started */
	bo.flags = 1u << 7;
	CHECK(boxlite_box_new(rt, &bo, &e) == BOXLITE_ERR_INVALID_ARGUMENT); /* unknown flag */
	bo.flags = 0;
	/* A main command needs an argv[0]; env and cwd without one mean nothing. */
	const char *no_args[] = {NULL}, *env[] = {"A=1", NULL}, *argv[] = {"true", NULL};
	bo.main_argv = no_args;
	CHECK(boxlite_box_new(rt, &bo, &e) == BOXLITE_ERR_INVALID_ARGUMENT);
	bo.main_argv = NULL;
	bo.main_env = env;
	CHECK(boxlite_box_new(rt, &bo, &e) == BOXLITE_ERR_INVALID_ARGUMENT);
	bo.main_argv = argv;
	CHECK(boxlite_box_new(rt, &bo, &e) == BOXLITE_OK);
	CHECK(boxlite_box_free(rt, e) == BOXLITE_OK);
	bo.main_argv = bo.main_env = NULL;
	/* Mounts: absolute paths, not onto "/", known flags, at most 64. */
	boxlite_mount mounts[BOXLITE_MAX_MOUNTS + 1];
	for (size_t i = 0; i <= BOXLITE_MAX_MOUNTS; i++)
		mounts[i] = (boxlite_mount){"/usr", "/usr", BOXLITE_MOUNT_READONLY};
	bo.mounts = mounts;
	bo.n_mounts = BOXLITE_MAX_MOUNTS + 1;
	CHECK(boxlite_box_new(rt, &bo, &e) == BOXLITE_ERR_INVALID_ARGUMENT);
	bo.n_mounts = 1;
	const boxlite_mount bad[] = {
	    {NULL, "/x", 0}, {"/usr", NULL, 0}, {"usr", "/x", 0},
	    {"/usr", "x", 0}, {"/usr", "/", 0},  {"/usr", "///", 0},
	    {"/usr", "/x", 1u << 5},
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		bo.mounts = &bad[i];
		CHECK(boxlite_box_new(rt, &bo, &e) == BOXLITE_ERR_INVALID_ARGUMENT);
	}
	bo.mounts = NULL;
	CHECK(boxlite_box_new(rt, &bo, &e) == BOXLITE_ERR_INVALID_ARGUMENT); /* n without array */
	bo.mounts = mounts;
	bo.n_mounts = BOXLITE_MAX_MOUNTS;
	CHECK(boxlite_box_new(rt, &bo, &e) == BOXLITE_OK);
	CHECK(boxlite_box_free(rt, e) == BOXLITE_OK);
	bo.mounts = NULL;
	bo.n_mounts = 0;
	/* A box handle is not an exec handle; a forged one finds nothing. */
	CHECK(boxlite_exec_free(rt, h) == BOXLITE_ERR_INVALID_HANDLE);
	CHECK(boxlite_box_free(rt, h ^ (1ull << 40)) == BOXLITE_ERR_INVALID_HANDLE);
	CHECK(boxlite_box_free(rt, h) == BOXLITE_OK);
	CHECK(boxlite_box_free(rt, h) == BOXLITE_ERR_INVALID_HANDLE); /* freed */
	CHECK(r.calls == 0);
	boxlite_runtime_free(rt);
}

static void test_post_drain_runs_on_caller_in_order(void)
{
	boxlite_runtime *rt = new_runtime(4, "exit 1");
	struct record r = {0};
	for (int i = 0; i < 4; i++)
		CHECK(boxlite_runtime_post(rt, on_done, &r, 100 + i, 0) == BOXLITE_OK);
	/* Full: a fifth post waits, then times out; nothing is dropped. */
	CHECK(boxlite_runtime_post(rt, on_done, &r, 999, 10) == BOXLITE_ERR_TIMEOUT);
	CHECK(boxlite_runtime_drain(rt, 2, 0) == 2);
	CHECK(boxlite_runtime_drain(rt, 10, 0) == 2);
	CHECK(boxlite_runtime_drain(rt, 10, 0) == 0);
	CHECK(r.calls == 4 && pthread_equal(r.thread, pthread_self()));
	for (int i = 0; i < 4; i++)
		CHECK(r.order[i] == 100 + i);
	boxlite_runtime_free(rt);
}

struct drainer {
	boxlite_runtime *rt;
	int result;
};

static void *drain_forever(void *arg)
{
	struct drainer *d = arg;
	int n;
	while ((n = boxlite_runtime_drain(d->rt, 16, -1)) >= 0)
		;
	d->result = n;
	return NULL;
}

static void test_close_wakes_blocked_drain(void)
{
	boxlite_runtime *rt = new_runtime(0, "exit 1");
	struct drainer d = {.rt = rt};
	pthread_t t;
	CHECK(pthread_create(&t, NULL, drain_forever, &d) == 0);
	usleep(20000);
	CHECK(boxlite_runtime_close(rt) == BOXLITE_OK);
	CHECK(boxlite_runtime_close(rt) == BOXLITE_OK); /* idempotent */
	CHECK(pthread_join(t, NULL) == 0);
	CHECK(d.result == -BOXLITE_ERR_RUNTIME_CLOSED);
	struct record r = {0};
	CHECK(boxlite_runtime_post(rt, on_done, &r, 0, 0) == BOXLITE_ERR_RUNTIME_CLOSED);
	boxlite_handle h;
	const char *lowers[] = {"/", NULL};
	boxlite_box_options bo = {.box_dir = boxdir, .lower_dirs = lowers};
	CHECK(boxlite_box_new(rt, &bo, &h) == BOXLITE_ERR_RUNTIME_CLOSED);
	boxlite_runtime_free(rt);
}

static void drain_until_closed(boxlite_runtime *rt)
{
	while (boxlite_runtime_drain(rt, 16, -1) >= 0)
		;
}

static void test_failed_start_reports_engine_error(void)
{
	boxlite_runtime *rt = new_runtime(0, "echo 'error 2 mount overlay: No such file' >&4; exit 1");
	const char *lowers[] = {"/", NULL};
	boxlite_box_options bo = {.box_dir = boxdir, .lower_dirs = lowers};
	boxlite_handle h;
	CHECK(boxlite_box_new(rt, &bo, &h) == BOXLITE_OK);
	struct record r = {0};
	CHECK(boxlite_box_start(rt, h, on_done, &r) == BOXLITE_OK);
	while (r.calls == 0)
		CHECK(boxlite_runtime_drain(rt, 1, 5000) >= 0);
	CHECK(r.calls == 1 && r.last_status == BOXLITE_ERR_ENGINE);
	CHECK(strstr(r.message, "mount overlay") != NULL);
	boxlite_runtime_close(rt);
	drain_until_closed(rt);
	CHECK(r.calls == 1);
	boxlite_runtime_free(rt);
}

static void test_close_completes_inflight_start_once(void)
{
	/* A shim that never reports: only close can end the start. */
	boxlite_runtime *rt = new_runtime(0, "exec sleep 30");
	const char *lowers[] = {"/", NULL};
	boxlite_box_options bo = {.box_dir = boxdir, .lower_dirs = lowers};
	struct record r[8] = {{0}};
	for (int i = 0; i < 8; i++) {
		boxlite_handle h;
		CHECK(boxlite_box_new(rt, &bo, &h) == BOXLITE_OK);
		CHECK(boxlite_box_start(rt, h, on_done, &r[i]) == BOXLITE_OK);
	}
	usleep(50000);
	CHECK(boxlite_runtime_close(rt) == BOXLITE_OK);
	drain_until_closed(rt);
	for (int i = 0; i < 8; i++)
		CHECK(r[i].calls == 1 && r[i].last_status == BOXLITE_ERR_RUNTIME_CLOSED);
	boxlite_runtime_free(rt); /* returns promptly: the spawns were cancelled */
}

static void test_free_releases_undelivered_events(void)
{
	boxlite_runtime *rt = new_runtime(64, "exit 1");
	struct record r = {0};
	for (int i = 0; i < 64; i++)
		CHECK(boxlite_runtime_post(rt, on_done, &r, i, 0) == BOXLITE_OK);
	boxlite_runtime_free(rt); /* LeakSanitizer proves the release */
	CHECK(r.calls == 0);
}

/* A runtime whose one box, run by a stand-in shim, has started. */
static boxlite_runtime *started_box(const char *shim_body, boxlite_handle *box)
{
	boxlite_runtime *rt = new_runtime(0, shim_body);
	const char *lowers[] = {"/", NULL};
	boxlite_box_options bo = {.box_dir = boxdir, .lower_dirs = lowers};
	CHECK(boxlite_box_new(rt, &bo, box) == BOXLITE_OK);
	struct record started = {0};
	CHECK(boxlite_box_start(rt, *box, on_done, &started) == BOXLITE_OK);
	while (started.calls == 0)
		CHECK(boxlite_runtime_drain(rt, 1, 5000) >= 0);
	CHECK(started.last_status == BOXLITE_OK);
	return rt;
}

struct exits {
	pthread_mutex_t lock;
	int n, failed;
};

static void ignore_output(void *ud, int stream, const uint8_t *data, size_t len)
{
	(void)ud, (void)stream, (void)data, (void)len;
}

static void count_exit(void *ud, const boxlite_exit *e)
{
	struct exits *x = ud;
	pthread_mutex_lock(&x->lock);
	x->n++;
	x->failed += e->outcome == BOXLITE_OUTCOME_FAILED_TO_START || e->outcome == BOXLITE_OUTCOME_LOST;
	pthread_mutex_unlock(&x->lock);
}

static int exits_seen(struct exits *x)
{
	pthread_mutex_lock(&x->lock);
	int n = x->n;
	pthread_mutex_unlock(&x->lock);
	return n;
}

/* Executions started on a box whose agent connection ends (the agent died,
 * or sent a frame the host refuses) each end once, as failed to start or
 * lost; nothing is freed twice (the sanitizer build checks).  The stand-in
 * shim ignores the SIGTERM the host sends it then, so the box stays up with
 * its connection gone: the window in which executions used to be freed twice. */
static void execs_on_broken_connection(const char *shim_body)
{
	enum { EXECS = 64 };
	boxlite_handle box;
	boxlite_runtime *rt = started_box(shim_body, &box);
	struct exits x = {.lock = PTHREAD_MUTEX_INITIALIZER};
	const char *argv[] = {"true", NULL};
	boxlite_exec_options eo = {.argv = argv};
	boxlite_exec_callbacks cb = {.on_output = ignore_output, .on_exit = count_exit, .user_data = &x};
	boxlite_handle execs[EXECS];
	int accepted = 0;
	for (int i = 0; i < EXECS; i++) {
		int rc = boxlite_exec_start(rt, box, &eo, &cb, &execs[accepted]);
		CHECK(rc == BOXLITE_OK || rc == BOXLITE_ERR_INVALID_STATE);
		accepted += rc == BOXLITE_OK;
		CHECK(boxlite_runtime_drain(rt, 16, 0) >= 0);
		usleep(1000);
	}
	while (exits_seen(&x) < accepted)
		CHECK(boxlite_runtime_drain(rt, 16, 5000) >= 0);
	CHECK(accepted > 0 && x.n == accepted && x.failed == accepted);
	for (int i = 0; i < accepted; i++)
		CHECK(boxlite_exec_free(rt, execs[i]) == BOXLITE_OK);
	CHECK(boxlite_box_free(rt, box) == BOXLITE_OK);
	boxlite_runtime_close(rt);
	drain_until_closed(rt);
	boxlite_runtime_free(rt);
}

static void test_execs_after_agent_death(void)
{
	execs_on_broken_connection("trap '' TERM; echo \"ok $$\" >&4; exec 3>&-; exec sleep 30");
}

static void test_execs_after_malformed_frame(void)
{
	/* A header whose length is far beyond the largest frame: the host must
	 * drop the connection, not read 4 GiB. */
	execs_on_broken_connection("trap '' TERM; echo \"ok $$\" >&4; printf '\\377\\377\\377\\377\\001\\000\\000\\000"
				   "\\000\\000\\000\\000\\000\\000\\000\\000' >&3; exec sleep 30");
}

static char hostile_agent[160];

struct one_exit {
	int exits;
};

static void note_exit(void *ud, const boxlite_exit *e)
{
	(void)e;
	((struct one_exit *)ud)->exits++;
}

/* The host survives whatever its agent sends, and still ends every
 * execution exactly once (the agent's EXIT, a force close, or lost with a
 * connection it dropped).  Run plain and under ASan/UBSan. */
static void test_hostile_agent_frames(void)
{
	enum { SEEDS = 40, EXECS = 12 };
	for (int seed = 1; seed <= SEEDS; seed++) {
		char body[256];
		snprintf(body, sizeof body, "exec %s %d", hostile_agent, seed);
		boxlite_handle box;
		boxlite_runtime *rt = started_box(body, &box);
		const char *argv[] = {"true", NULL};
		boxlite_exec_options eo = {.argv = argv, .window = 65536};
		struct one_exit seen[EXECS] = {{0}};
		boxlite_handle execs[EXECS];
		int n = 0;
		for (int i = 0; i < EXECS; i++) {
			boxlite_exec_callbacks cb = {ignore_output, note_exit, &seen[n]};
			int rc = boxlite_exec_start(rt, box, &eo, &cb, &execs[n]);
			CHECK(rc == BOXLITE_OK || rc == BOXLITE_ERR_INVALID_STATE);
			n += rc == BOXLITE_OK;
			CHECK(boxlite_runtime_drain(rt, 64, 10) >= 0);
		}
		for (int i = 0; i < n; i++) /* ends the ones still running */
			CHECK(boxlite_exec_free(rt, execs[i]) == BOXLITE_OK);
		for (int i = 0; i < n; i++)
			while (seen[i].exits == 0)
				CHECK(boxlite_runtime_drain(rt, 64, 5000) >= 0);
		CHECK(boxlite_box_free(rt, box) == BOXLITE_OK);
		boxlite_runtime_close(rt);
		drain_until_closed(rt);
		for (int i = 0; i < n; i++)
			CHECK(seen[i].exits == 1);
		boxlite_runtime_free(rt);
	}
}

struct flooded {
	size_t bytes;
	int outcome, exits;
};

static void count_bytes(void *ud, int stream, const uint8_t *data, size_t len)
{
	(void)stream, (void)data;
	((struct flooded *)ud)->bytes += len;
}

static void flooded_exit(void *ud, const boxlite_exit *e)
{
	struct flooded *f = ud;
	f->outcome = e->outcome;
	f->exits++;
}

/* An agent that sends more output than the execution's window (nobody
 * acknowledges it here) is broken: the host drops its connection and the
 * execution is lost, with no more than its window delivered, instead of
 * buffering whatever the box sends. */
static void test_output_beyond_the_window_is_refused(void)
{
	char body[256];
	snprintf(body, sizeof body, "exec %s flood", hostile_agent);
	boxlite_handle box, ex;
	boxlite_runtime *rt = started_box(body, &box);
	const char *argv[] = {"yes", NULL};
	boxlite_exec_options eo = {.argv = argv, .flags = BOXLITE_EXEC_ACK_OUTPUT, .window = 65536};
	struct flooded f = {0};
	boxlite_exec_callbacks cb = {count_bytes, flooded_exit, &f};
	CHECK(boxlite_exec_start(rt, box, &eo, &cb, &ex) == BOXLITE_OK);
	for (int i = 0; i < 100 && f.exits == 0; i++) /* 10 s at most */
		CHECK(boxlite_runtime_drain(rt, 64, 100) >= 0);
	CHECK(f.exits == 1 && f.outcome == BOXLITE_OUTCOME_LOST && f.bytes <= 65536);
	CHECK(boxlite_exec_free(rt, ex) == BOXLITE_OK);
	CHECK(boxlite_box_free(rt, box) == BOXLITE_OK);
	boxlite_runtime_close(rt);
	drain_until_closed(rt);
	boxlite_runtime_free(rt);
}

/* Take hands events over in queue order, as data, running no callback; a
 * take larger than what is ready returns what is (across the core's
 * internal chunks of 64). */
static void test_take_hands_over_in_order_without_callbacks(void)
{
	enum { N = 150 };
	boxlite_runtime *rt = new_runtime(256, "exit 1");
	struct record r = {0};
	for (int i = 0; i < N; i++)
		CHECK(boxlite_runtime_post(rt, on_done, &r, 1000 + i, 0) == BOXLITE_OK);
	boxlite_event evs[200];
	CHECK(boxlite_runtime_take(rt, evs, 200, 0) == N);
	CHECK(r.calls == 0);
	for (int i = 0; i < N; i++) {
		CHECK(evs[i].kind == BOXLITE_EVENT_DONE && evs[i].status == 1000 + i);
		CHECK(evs[i].user_data == &r && evs[i].message == NULL);
		CHECK(evs[i].on_done == on_done && !evs[i].on_output && !evs[i].on_exit);
	}
	boxlite_runtime_release(rt, evs, N);
	CHECK(boxlite_runtime_take(rt, evs, 200, 0) == 0);
	CHECK(r.calls == 0);
	boxlite_runtime_free(rt);
}

/* Batches smaller than what is queued continue where the last one ended;
 * events of several takes may be released together; a take waits for its
 * first event (and gives up after timeout_ms), not for the rest. */
static void test_take_partial_batches_and_timeout(void)
{
	boxlite_runtime *rt = new_runtime(0, "exit 1");
	struct record r = {0};
	for (int i = 0; i < 10; i++)
		CHECK(boxlite_runtime_post(rt, on_done, &r, i, 0) == BOXLITE_OK);
	boxlite_event evs[12];
	int got = 0;
	for (int want = 3; got < 10; got += want < 10 - got ? want : 10 - got)
		CHECK(boxlite_runtime_take(rt, evs + got, (size_t)want, 0) ==
		      (want < 10 - got ? want : 10 - got));
	for (int i = 0; i < 10; i++)
		CHECK(evs[i].status == i);
	boxlite_runtime_release(rt, evs, 6);
	boxlite_runtime_release(rt, evs + 6, 4);
	boxlite_runtime_release(rt, evs, 0);
	boxlite_runtime_release(rt, NULL, 3);
	struct timespec a, b;
	CHECK(clock_gettime(CLOCK_MONOTONIC, &a) == 0);
	CHECK(boxlite_runtime_take(rt, evs, 12, 50) == 0);
	CHECK(clock_gettime(CLOCK_MONOTONIC, &b) == 0);
	CHECK((b.tv_sec - a.tv_sec) * 1000 + (b.tv_nsec - a.tv_nsec) / 1000000 >= 45);
	CHECK(boxlite_runtime_take(rt, NULL, 12, 0) == -BOXLITE_ERR_INVALID_ARGUMENT);
	CHECK(boxlite_runtime_take(rt, evs, 0, 0) == -BOXLITE_ERR_INVALID_ARGUMENT);
	CHECK(boxlite_runtime_take(NULL, evs, 12, 0) == -BOXLITE_ERR_INVALID_ARGUMENT);
	CHECK(boxlite_runtime_take(rt, evs, (size_t)INT_MAX + 1, 0) == -BOXLITE_ERR_INVALID_ARGUMENT);
	CHECK(r.calls == 0);
	boxlite_runtime_free(rt);
}

static void *take_until_closed(void *arg)
{
	struct drainer *d = arg;
	boxlite_event evs[16];
	int n;
	while ((n = boxlite_runtime_take(d->rt, evs, 16, -1)) >= 0)
		boxlite_runtime_release(d->rt, evs, (size_t)n);
	d->result = n;
	return NULL;
}

/* A closed runtime still hands over what was queued, then says closed;
 * close wakes a take blocked on an empty queue; in-flight operations'
 * RUNTIME_CLOSED completions arrive through take as through drain. */
static void test_take_on_closed_runtime(void)
{
	boxlite_runtime *rt = new_runtime(0, "exec sleep 30");
	struct record r = {0};
	for (int i = 0; i < 3; i++)
		CHECK(boxlite_runtime_post(rt, on_done, &r, 7, 0) == BOXLITE_OK);
	const char *lowers[] = {"/", NULL};
	boxlite_box_options bo = {.box_dir = boxdir, .lower_dirs = lowers};
	boxlite_handle h;
	struct record started = {0};
	CHECK(boxlite_box_new(rt, &bo, &h) == BOXLITE_OK);
	CHECK(boxlite_box_start(rt, h, on_done, &started) == BOXLITE_OK);
	CHECK(boxlite_runtime_close(rt) == BOXLITE_OK);
	boxlite_event evs[8];
	int n, seen = 0, closed_starts = 0;
	while ((n = boxlite_runtime_take(rt, evs, 8, 5000)) > 0) {
		for (int i = 0; i < n; i++) {
			CHECK(evs[i].kind == BOXLITE_EVENT_DONE);
			seen += evs[i].user_data == &r && evs[i].status == 7;
			closed_starts += evs[i].user_data == &started &&
					 evs[i].status == BOXLITE_ERR_RUNTIME_CLOSED &&
					 evs[i].message && strcmp(evs[i].message, "runtime closed") == 0;
		}
		boxlite_runtime_release(rt, evs, (size_t)n);
	}
	CHECK(n == -BOXLITE_ERR_RUNTIME_CLOSED && seen == 3 && closed_starts == 1);
	CHECK(boxlite_runtime_take(rt, evs, 8, -1) == -BOXLITE_ERR_RUNTIME_CLOSED);
	CHECK(r.calls == 0 && started.calls == 0);
	boxlite_runtime_free(rt);

	rt = new_runtime(0, "exit 1");
	struct drainer d = {.rt = rt};
	pthread_t t;
	CHECK(pthread_create(&t, NULL, take_until_closed, &d) == 0);
	usleep(20000);
	CHECK(boxlite_runtime_close(rt) == BOXLITE_OK);
	CHECK(pthread_join(t, NULL) == 0);
	CHECK(d.result == -BOXLITE_ERR_RUNTIME_CLOSED);
	boxlite_runtime_free(rt);
}

/* An execution's output comes through take as byte-exact data that stays
 * valid until released, and its one Exit comes after all of it.  The
 * flooding agent sends 4 MiB whatever its window (1 MiB, nobody
 * acknowledging it here), so the host delivers exactly the window and then
 * drops it: LOST.  LeakSanitizer checks every payload freed by release. */
static void test_take_output_then_exit_last(void)
{
	char body[256];
	snprintf(body, sizeof body, "exec %s flood", hostile_agent);
	boxlite_handle box, ex;
	boxlite_runtime *rt = started_box(body, &box);
	const char *argv[] = {"yes", NULL};
	boxlite_exec_options eo = {.argv = argv, .flags = BOXLITE_EXEC_ACK_OUTPUT, .window = 1u << 20};
	int token;
	boxlite_exec_callbacks cb = {ignore_output, note_exit, &token};
	CHECK(boxlite_exec_start(rt, box, &eo, &cb, &ex) == BOXLITE_OK);
	size_t bytes = 0;
	int exits = 0, outputs_after_exit = 0, outcome = 0;
	boxlite_event evs[32];
	for (int turn = 0; turn < 100 && exits == 0; turn++) { /* 10 s at most */
		int n = boxlite_runtime_take(rt, evs, 32, 100);
		CHECK(n >= 0);
		for (int i = 0; i < n; i++) {
			CHECK(evs[i].user_data == &token);
			if (evs[i].kind == BOXLITE_EVENT_OUTPUT) {
				CHECK(evs[i].stream == BOXLITE_STDOUT && evs[i].on_output == ignore_output);
				outputs_after_exit += exits;
				for (size_t j = 0; j < evs[i].len; j++)
					CHECK(evs[i].data[j] == 'x');
				bytes += evs[i].len;
			} else {
				CHECK(evs[i].kind == BOXLITE_EVENT_EXIT && evs[i].on_exit == note_exit);
				exits++;
				outcome = evs[i].exit.outcome;
			}
		}
		boxlite_runtime_release(rt, evs, (size_t)n);
	}
	CHECK(exits == 1 && outputs_after_exit == 0 && outcome == BOXLITE_OUTCOME_LOST);
	CHECK(bytes == 1u << 20);
	CHECK(boxlite_exec_free(rt, ex) == BOXLITE_OK);
	CHECK(boxlite_box_free(rt, box) == BOXLITE_OK);
	boxlite_runtime_close(rt);
	int n;
	while ((n = boxlite_runtime_take(rt, evs, 32, -1)) >= 0) {
		for (int i = 0; i < n; i++)
			CHECK(evs[i].kind != BOXLITE_EVENT_EXIT || evs[i].user_data != &token);
		boxlite_runtime_release(rt, evs, (size_t)n);
	}
	boxlite_runtime_free(rt);
}

static void make_marker(const char *dir)
{
	char path[160];
	snprintf(path, sizeof path, "%s/%s", dir, boxlite_box_marker());
	FILE *f = fopen(path, "w");
	CHECK(f && fclose(f) == 0);
}

static void test_box_dir_must_be_a_box_directory(void)
{
	boxlite_runtime *rt = new_runtime(0, "exit 1");
	const char *lowers[] = {"/", NULL};
	char other[160], link[160], path[192];
	snprintf(other, sizeof other, "%s/not-a-box", libexec);
	snprintf(link, sizeof link, "%s/link", libexec);
	CHECK(mkdir(other, 0700) == 0 && symlink(boxdir, link) == 0);
	struct stat before, after;
	CHECK(stat("/etc", &before) == 0);
	boxlite_handle h = 0;
	const char *refused[] = {"/etc", other, link, "/nonexistent/box", "relative"};
	for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
		boxlite_box_options bo = {.box_dir = refused[i], .lower_dirs = lowers};
		CHECK(boxlite_box_new(rt, &bo, &h) == BOXLITE_ERR_NOT_BOX_DIR && h == 0);
		CHECK(boxlite_box_connect(rt, &bo, getpid(), 1, &h) == BOXLITE_ERR_NOT_BOX_DIR);
	}
	CHECK(stat("/etc", &after) == 0 && after.st_mode == before.st_mode);
	/* The marker must be a regular file, the directory closed to others. */
	snprintf(path, sizeof path, "%s/%s", other, boxlite_box_marker());
	CHECK(mkdir(path, 0700) == 0);
	boxlite_box_options bo = {.box_dir = other, .lower_dirs = lowers};
	CHECK(boxlite_box_new(rt, &bo, &h) == BOXLITE_ERR_NOT_BOX_DIR);
	CHECK(rmdir(path) == 0);
	make_marker(other);
	CHECK(chmod(other, 0755) == 0);
	CHECK(boxlite_box_new(rt, &bo, &h) == BOXLITE_ERR_NOT_BOX_DIR);
	CHECK(chmod(other, 0711) == 0); /* as the shim leaves it for a mapped box */
	CHECK(boxlite_box_new(rt, &bo, &h) == BOXLITE_OK && h != 0);
	CHECK(boxlite_box_free(rt, h) == BOXLITE_OK);
	CHECK(unlink(path) == 0 && rmdir(other) == 0 && unlink(link) == 0);
	boxlite_runtime_close(rt);
	drain_until_closed(rt);
	boxlite_runtime_free(rt);
}

/* box_new and config_check agree: status, and a message naming the fault. */
static void expect_refused(boxlite_runtime *rt, const boxlite_box_options *bo, int status,
			   const char *says)
{
	boxlite_handle h = 0;
	char msg[512] = "unset";
	CHECK(boxlite_box_new(rt, bo, &h) == status && h == 0);
	CHECK(boxlite_box_config_check(bo, msg, sizeof msg) == status);
	if (!strstr(msg, says))
		fprintf(stderr, "message: %s\n", msg);
	CHECK(strstr(msg, says));
}

static void expect_accepted(boxlite_runtime *rt, const boxlite_box_options *bo)
{
	boxlite_handle h = 0;
	char msg[64] = "unset";
	CHECK(boxlite_box_config_check(bo, msg, sizeof msg) == BOXLITE_OK && msg[0] == '\0');
	CHECK(boxlite_box_new(rt, bo, &h) == BOXLITE_OK && h != 0);
	CHECK(boxlite_box_free(rt, h) == BOXLITE_OK);
}

static void test_engines_are_found_by_name(void)
{
	boxlite_runtime *rt = new_runtime(0, "exit 1");
	const char *lowers[] = {"/", NULL};
	boxlite_box_options bo = {.box_dir = boxdir, .lower_dirs = lowers};
	expect_accepted(rt, &bo); /* NULL: the default */
	bo.engine = "";
	expect_accepted(rt, &bo);
	bo.engine = "ns";
	expect_accepted(rt, &bo);
	const char *unknown[] = {"qemu", "NS", "ns ", "n"};
	for (size_t i = 0; i < sizeof unknown / sizeof unknown[0]; i++) {
		bo.engine = unknown[i];
		expect_refused(rt, &bo, BOXLITE_ERR_INVALID_ARGUMENT, "unknown engine");
		boxlite_handle h = 0;
		CHECK(boxlite_box_connect(rt, &bo, getpid(), 1, &h) == BOXLITE_ERR_INVALID_ARGUMENT);
	}
	char msg[64];
	CHECK(boxlite_box_config_check(NULL, msg, sizeof msg) == BOXLITE_ERR_INVALID_ARGUMENT);
	boxlite_runtime_close(rt);
	drain_until_closed(rt);
	boxlite_runtime_free(rt);
}

/* What the shim refuses at start (common/shim_spec.c) box_new refuses. */
static void test_create_refuses_what_start_would(void)
{
	boxlite_runtime *rt = new_runtime(0, "exit 1");
	const char *lowers[] = {"/", NULL};
	boxlite_box_options bo = {.box_dir = boxdir, .lower_dirs = lowers};
	const char *bad_lowers[] = {"relative", "/a\\b", "/a,b", "/a:b"};
	for (size_t i = 0; i < sizeof bad_lowers / sizeof bad_lowers[0]; i++) {
		const char *one[] = {"/", bad_lowers[i], NULL};
		bo.lower_dirs = one;
		expect_refused(rt, &bo, BOXLITE_ERR_INVALID_ARGUMENT, bad_lowers[i]);
	}
	const char *many[130];
	for (size_t i = 0; i < 129; i++)
		many[i] = "/";
	many[129] = NULL;
	bo.lower_dirs = many;
	expect_refused(rt, &bo, BOXLITE_ERR_INVALID_ARGUMENT, "image layers");
	many[128] = NULL;
	expect_accepted(rt, &bo);
	bo.lower_dirs = lowers;
	const char *targets[] = {"/proc", "/dev/shm", "/sys/", "/a/../proc/x", "/.", "/a/.."};
	for (size_t i = 0; i < sizeof targets / sizeof targets[0]; i++) {
		boxlite_mount m = {"/usr", targets[i], 0};
		bo.mounts = &m;
		bo.n_mounts = 1;
		expect_refused(rt, &bo, BOXLITE_ERR_INVALID_ARGUMENT, "reserved");
	}
	boxlite_mount fine = {"/usr", "/process", 0};
	bo.mounts = &fine;
	expect_accepted(rt, &bo);
	bo.mounts = NULL;
	bo.n_mounts = 0;
	char host[66];
	memset(host, 'h', 65);
	host[65] = '\0';
	bo.hostname = host;
	expect_refused(rt, &bo, BOXLITE_ERR_INVALID_ARGUMENT, "hostname");
	host[64] = '\0';
	expect_accepted(rt, &bo);
	bo.hostname = "";
	expect_refused(rt, &bo, BOXLITE_ERR_INVALID_ARGUMENT, "hostname");
	bo.hostname = NULL;
	bo.network_helper = "slirp4netns";
	expect_refused(rt, &bo, BOXLITE_ERR_INVALID_ARGUMENT, "network helper");
	bo.network_helper = NULL;
	bo.flags = BOXLITE_BOX_HOST_LOOPBACK;
	expect_refused(rt, &bo, BOXLITE_ERR_INVALID_ARGUMENT, "loopback");
	bo.flags = BOXLITE_BOX_PIDS_OPTIONAL;
	expect_refused(rt, &bo, BOXLITE_ERR_INVALID_ARGUMENT, "pids");
	bo.flags = 0;
	bo.disk_image = "disk.img";
	expect_refused(rt, &bo, BOXLITE_ERR_INVALID_ARGUMENT, "disk image");
	bo.disk_image = NULL;
	/* The agent's socket is <box_dir>/agent.sock: a unix socket's path. */
	char longdir[160];
	int n = snprintf(longdir, sizeof longdir, "%s/", libexec);
	memset(longdir + n, 'd', (size_t)(97 - n));
	longdir[97] = '\0'; /* + "/agent.sock" = 108 bytes, one past sun_path */
	CHECK(mkdir(longdir, 0700) == 0);
	make_marker(longdir);
	bo.box_dir = longdir;
	expect_refused(rt, &bo, BOXLITE_ERR_INVALID_ARGUMENT, "too long");
	boxlite_handle h = 0;
	CHECK(boxlite_box_connect(rt, &bo, getpid(), 1, &h) == BOXLITE_ERR_INVALID_ARGUMENT);
	longdir[96] = '\0'; /* a sibling that just fits */
	CHECK(mkdir(longdir, 0700) == 0);
	make_marker(longdir);
	expect_accepted(rt, &bo);
	bo.box_dir = boxdir;
	boxlite_runtime_close(rt);
	drain_until_closed(rt);
	boxlite_runtime_free(rt);
}

static void test_exit_status_follows_the_shell(void)
{
	const struct {
		boxlite_exit exit;
		int status;
	} cases[] = {
	    {{.outcome = BOXLITE_OUTCOME_EXITED, .exit_code = 3}, 3},
	    {{.outcome = BOXLITE_OUTCOME_SIGNALED, .signal = 9}, 137},
	    {{.outcome = BOXLITE_OUTCOME_SIGNALED, .signal = 0}, -1},
	    {{.outcome = BOXLITE_OUTCOME_SIGNALED, .signal = 65}, -1},
	    {{.outcome = BOXLITE_OUTCOME_TIMED_OUT, .signal = 15}, 124},
	    {{.outcome = BOXLITE_OUTCOME_FAILED_TO_START, .os_error = 2}, 127},
	    {{.outcome = BOXLITE_OUTCOME_FAILED_TO_START, .os_error = 13}, 126},
	    {{.outcome = BOXLITE_OUTCOME_LOST, .exit_code = 5}, -1},
	    {{.outcome = BOXLITE_OUTCOME_FORCE_CLOSED}, -1},
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
		CHECK(boxlite_exit_status(&cases[i].exit) == cases[i].status);
	CHECK(boxlite_exit_status(NULL) == -1);
}

int main(int argc, char **argv)
{
	snprintf(libexec, sizeof libexec, "/tmp/boxlite-native-XXXXXX");
	CHECK(mkdtemp(libexec));
	snprintf(boxdir, sizeof boxdir, "%s/box", libexec);
	CHECK(mkdir(boxdir, 0700) == 0);
	make_marker(boxdir);
	(void)argc;
	/* Built beside this test (see the Makefile). */
	char *slash = strrchr(argv[0], '/');
	snprintf(hostile_agent, sizeof hostile_agent, "%.*s/hostile_agent",
		 slash ? (int)(slash - argv[0]) : 1, slash ? argv[0] : ".");
	CHECK(access(hostile_agent, X_OK) == 0);
	RUN(test_null_arguments_are_refused);
	RUN(test_post_drain_runs_on_caller_in_order);
	RUN(test_close_wakes_blocked_drain);
	RUN(test_failed_start_reports_engine_error);
	RUN(test_close_completes_inflight_start_once);
	RUN(test_free_releases_undelivered_events);
	RUN(test_execs_after_agent_death);
	RUN(test_execs_after_malformed_frame);
	RUN(test_hostile_agent_frames);
	RUN(test_output_beyond_the_window_is_refused);
	RUN(test_take_hands_over_in_order_without_callbacks);
	RUN(test_take_partial_batches_and_timeout);
	RUN(test_take_on_closed_runtime);
	RUN(test_take_output_then_exit_last);
	RUN(test_box_dir_must_be_a_box_directory);
	RUN(test_engines_are_found_by_name);
	RUN(test_create_refuses_what_start_would);
	RUN(test_exit_status_follows_the_shell);
	char cmd[128];
	snprintf(cmd, sizeof cmd, "rm -rf %s", libexec);
	CHECK(system(cmd) == 0);
	return 0;
}
