/*
 * process_tree.c - find and signal every process of one execution.
 *
 * Its process group holds what it forks, but a daemon leaves the group
 * (setsid) and, double-forked, even its parentage (it is re-parented to us,
 * PID 1).  What it keeps is its environment: every execution's processes are
 * started with BOXLITE_EXEC=<id>, so a scan of /proc finds the daemons too.
 * A process that empties its environment AND leaves the group escapes this;
 * per-execution cgroups (issue 7) will close that gap.
 */
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "agent.h"

#define ENVIRON_MAX (64 * 1024) /* a marker past this much environment is missed */

void process_tree_marker(uint64_t id, char *out, size_t cap)
{
	snprintf(out, cap, "BOXLITE_EXEC=%016llx", (unsigned long long)id);
}

/* Is marker one whole NUL-separated entry of env[0..len)? */
static bool has_entry(const char *env, size_t len, const char *marker, size_t mlen)
{
	for (size_t pos = 0; pos < len;) {
		const char *entry = env + pos;
		size_t n = strnlen(entry, len - pos);
		if (n == mlen && memcmp(entry, marker, mlen) == 0)
			return true;
		pos += n + 1;
	}
	return false;
}

static bool carries_marker(long pid, const char *marker, char *buf)
{
	char path[64];
	snprintf(path, sizeof path, "/proc/%ld/environ", pid);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return false; /* gone already, or not ours to read */
	ssize_t n = read(fd, buf, ENVIRON_MAX);
	close(fd);
	return n > 0 && has_entry(buf, (size_t)n, marker, strlen(marker));
}

void process_tree_signal(pid_t pgid, const char *marker, int sig)
{
	kill(-pgid, sig); /* ESRCH: the group is empty */
	static char buf[ENVIRON_MAX];
	DIR *proc = opendir("/proc");
	if (!proc)
		return; /* the group was signalled; nothing more can be found */
	pid_t self = getpid();
	struct dirent *e;
	while ((e = readdir(proc))) {
		char *end;
		long pid = strtol(e->d_name, &end, 10);
		if (*end || pid <= 1 || pid == self)
			continue;
		if (carries_marker(pid, marker, buf))
			kill((pid_t)pid, sig);
	}
	closedir(proc);
}
