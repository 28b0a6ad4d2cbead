/*
 * volumes.c - a vm box's shared directories: its volumes, and without a
 * root image (a rootfs= directory) its lowers.  Each is shared with the
 * guest over virtiofs by a virtiofsd of its own (QEMU's, from Debian's
 * qemu-system-common), which sandboxes itself (mount, pid and network
 * namespaces, pivot_root into the directory).  A read-only volume's
 * virtiofsd sees a read-only bind of it, so not even a compromised guest
 * kernel writes there.  Each daemon sees its share bound at a directory of
 * the box's (vfs-<i>), in a mount namespace of its own.  Each daemon's vhost-user socket is a listening
 * socket in the box's directory (closed to others), connected to by us
 * before the daemon starts, unlinked after: QEMU gets the connection.
 */
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "vmm.h"

#define VIRTIOFSD "/usr/lib/qemu/virtiofsd"
#define DAEMON_FD 3
#define VIEW_DIR "vfs-" /* <box dir>/vfs-<i>: where share i's daemon sees it */

/* A listening socket at path, and our connection to it: 0 or -1. */
static int socket_pair_at(const char *path, int *listening, int *connected, bl_error *e)
{
	struct sockaddr_un addr = {.sun_family = AF_UNIX};
	if (snprintf(addr.sun_path, sizeof addr.sun_path, "%s", path) >= (int)sizeof addr.sun_path)
		return bl_error_errno(e, ENAMETOOLONG, "%s", path);
	(void)unlink(path);
	*listening = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	*connected = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	int rc = *listening < 0 || *connected < 0 ||
			 bind(*listening, (struct sockaddr *)&addr, sizeof addr) < 0 ||
			 listen(*listening, 1) < 0 ||
			 connect(*connected, (struct sockaddr *)&addr, sizeof addr) < 0
		     ? bl_error_errno(e, errno, "the vhost-user socket %s", path)
		     : 0;
	(void)unlink(path);
	return rc;
}

/*
 * In the daemon's child, in a mount namespace of its own: the share bound
 * at view (a directory of the box's), read-only if it is.  The daemon's
 * sandbox pivots into view, never into the source's own path, so any
 * directory can be shared, "/" too (a pivot into the root itself is EBUSY).
 */
static int view_of(const struct shim_bind *b, const char *view)
{
	if (unshare(CLONE_NEWNS) < 0 || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0 ||
	    mount(b->source, view, NULL, MS_BIND | MS_REC, NULL) < 0)
		return -1;
	return b->readonly ? mount(NULL, view, NULL, MS_REMOUNT | MS_BIND | MS_RDONLY, NULL) : 0;
}

static pid_t start_daemon(const struct shim_bind *b, const char *view, int listening, int messages)
{
	char source[PATH_MAX + 16];
	snprintf(source, sizeof source, "source=%s", view);
	char fd[16];
	snprintf(fd, sizeof fd, "--fd=%d", DAEMON_FD);
	char *argv[] = {VIRTIOFSD, fd, "-o", source, "-o", "cache=auto", "-o", "sandbox=namespace",
			"-o", "log_level=warn", NULL};
	pid_t pid = fork();
	if (pid != 0)
		return pid;
	if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) < 0 || dup2(listening, DAEMON_FD) < 0 ||
	    dup2(messages, 1) < 0 || dup2(messages, 2) < 0 || view_of(b, view) < 0) {
		fprintf(stderr, "boxlite-vmm: share %s: %s\n", b->source, strerror(errno));
		_exit(127);
	}
	sigset_t none;
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	execv(VIRTIOFSD, argv);
	fprintf(stderr, "boxlite-vmm: %s: %s\n", VIRTIOFSD, strerror(errno));
	_exit(127);
}

unsigned vm_shares(const struct shim_spec *s, struct shim_bind out[GUEST_MAX_VOLUMES])
{
	unsigned n = 0;
	for (unsigned i = 0; !s->vm.root_image && i < s->n_lowers && n < GUEST_MAX_VOLUMES; i++)
		out[n++] = (struct shim_bind){s->lowers[i], NULL, true};
	for (unsigned i = 0; i < s->n_binds && n < GUEST_MAX_VOLUMES; i++)
		out[n++] = s->binds[i];
	return n;
}

int volumes_start(const struct shim_spec *s, int messages, struct qemu_io *io,
		  pid_t pids[GUEST_MAX_VOLUMES], bl_error *e)
{
	for (unsigned i = 0; i < GUEST_MAX_VOLUMES; i++)
		pids[i] = -1;
	size_t wanted = (s->vm.root_image ? 0 : s->n_lowers) + s->n_binds;
	if (wanted > GUEST_MAX_VOLUMES)
		return bl_error_set(e, EINVAL, "more than %d shared directories on the vm engine",
				    GUEST_MAX_VOLUMES);
	if (wanted && geteuid() != 0)
		return bl_error_set(e, EPERM, "shared directories on the vm engine need a root runtime "
					      "(virtiofsd)");
	struct shim_bind shares[GUEST_MAX_VOLUMES];
	unsigned n = vm_shares(s, shares);
	for (unsigned i = 0; i < n; i++) {
		char path[PATH_MAX], view[PATH_MAX];
		snprintf(path, sizeof path, "%s/vfs-%u.sock", s->box_dir, i);
		snprintf(view, sizeof view, "%s/" VIEW_DIR "%u", s->box_dir, i);
		int listening = -1, connected = -1;
		int rc = socket_pair_at(path, &listening, &connected, e);
		if (rc == 0 && mkdir(view, 0700) < 0 && errno != EEXIST)
			rc = bl_error_errno(e, errno, "mkdir %s", view);
		if (rc == 0 && (pids[i] = start_daemon(&shares[i], view, listening, messages)) < 0)
			rc = bl_error_errno(e, errno, "start %s", VIRTIOFSD);
		if (listening >= 0)
			close(listening); /* the daemon's now */
		if (rc < 0) {
			if (connected >= 0)
				close(connected);
			return -1;
		}
		io->volumes[io->n_volumes++] = connected;
	}
	return 0;
}

void volumes_reap(const struct shim_spec *s, const pid_t pids[GUEST_MAX_VOLUMES])
{
	for (unsigned i = 0; i < GUEST_MAX_VOLUMES; i++) {
		if (pids[i] <= 0)
			continue;
		char view[PATH_MAX];
		snprintf(view, sizeof view, "%s/" VIEW_DIR "%u", s->box_dir, i);
		(void)rmdir(view); /* a mount point only in the daemon's namespace */
		/* QEMU is gone, so is its connection: the daemon is exiting. */
		pid_t got = 0;
		for (int t = 0; t < 200 && (got = waitpid(pids[i], NULL, WNOHANG)) == 0; t++)
			usleep(10000);
		if (got != 0)
			continue; /* reaped, or not ours to wait for */
		kill(pids[i], SIGKILL);
		while (waitpid(pids[i], NULL, 0) < 0 && errno == EINTR)
			;
	}
}
