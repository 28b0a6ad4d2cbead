/*
 * as_user.c - `boxlite-agent as-user USER -- COMMAND...`: run COMMAND as
 * USER of the box, the way the host runs a box's processes as its image's
 * User.  USER is "name", "uid", "name:group" or "uid:gid"; names are looked
 * up in the box's own /etc/passwd and /etc/group.  A user without a group
 * gets its passwd entry's (or 0, as docker does), and that group alone.
 * Exit codes as the shell's: 127 when COMMAND does not exist, 126 when it
 * cannot be executed, 125 when the user cannot be taken on.
 */
#include <errno.h>
#include <grp.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "agent.h"

#define USER_FAILED 125

/* A decimal id, or -1. */
static long number(const char *s)
{
	char *end;
	errno = 0;
	long v = strtol(s, &end, 10);
	return (errno || end == s || *end || v < 0 || v > 0x7fffffff) ? -1 : v;
}

/* Field `want` (0-based) of the line of an /etc/passwd-like file whose
 * first field is name (or, by_id, whose third is it); -1 if none. */
static long lookup(const char *file, const char *name, int want, bool by_id)
{
	FILE *f = fopen(file, "re");
	if (!f)
		return -1;
	char line[1024];
	long found = -1;
	while (found < 0 && fgets(line, sizeof line, f)) {
		char *fields[4] = {0}, *save = NULL, *p = line;
		for (int i = 0; i < 4 && (fields[i] = strtok_r(p, ":\n", &save)); i++)
			p = NULL;
		if (fields[0] && fields[2] && strcmp(by_id ? fields[2] : fields[0], name) == 0)
			found = fields[want] ? number(fields[want]) : -1;
	}
	fclose(f);
	return found;
}

/* Take on user ("USER[:GROUP]"); 0, or -1 with *e. */
static int become(const char *user, bl_error *e)
{
	char spec[256];
	snprintf(spec, sizeof spec, "%s", user);
	char *group = strchr(spec, ':');
	if (group)
		*group++ = '\0';
	long uid = number(spec);
	if (uid < 0)
		uid = lookup("/etc/passwd", spec, 2, false);
	long gid = -1;
	if (group)
		gid = number(group) >= 0 ? number(group) : lookup("/etc/group", group, 2, false);
	else if (uid >= 0) /* the user's own group, by its passwd entry, else 0 */
		gid = number(spec) >= 0 ? lookup("/etc/passwd", spec, 3, true)
				       : lookup("/etc/passwd", spec, 3, false);
	if (!group && gid < 0)
		gid = 0;
	if (uid < 0 || gid < 0)
		return bl_error_set(e, 0, "no user %s in the box", user);
	gid_t groups[1] = {(gid_t)gid};
	if (setgroups(1, groups) < 0 || setgid((gid_t)gid) < 0 || setuid((uid_t)uid) < 0)
		return bl_error_errno(e, errno, "become %s", user);
	return 0;
}

int as_user_main(int argc, char **argv)
{
	if (argc < 5 || strcmp(argv[3], "--") != 0) {
		fprintf(stderr, "usage: boxlite-agent as-user USER[:GROUP] -- COMMAND...\n");
		return USER_FAILED;
	}
	bl_error e;
	int code = USER_FAILED;
	if (become(argv[2], &e) == 0) {
		execvp(argv[4], argv + 4);
		int err = errno;
		code = err == ENOENT ? 127 : 126;
		bl_error_errno(&e, err, "%s", argv[4]);
	}
	fprintf(stderr, "boxlite: %s\n", e.msg);
	return code;
}
