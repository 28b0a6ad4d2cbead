/*
 * copy.c - the agent's file-copy helper: `boxlite-agent copy-in DIR` unpacks
 * a tar stream from stdin into DIR, `boxlite-agent copy-out PATH` writes PATH
 * as a tar stream to stdout.  The host runs it as an ordinary execution of
 * /proc/1/exe, so copies get that machinery (stdin and output flow control,
 * timeouts, one Exit) for free, and a hostile archive can only crash a
 * short-lived process in the box, never PID 1.
 *
 * Format: ustar headers with GNU long names ('L') and long link names ('K'),
 * sizes and times in octal or base-256; what Python's tarfile writes with
 * GNU_FORMAT.  Every path of an archive is resolved beneath DIR by the
 * kernel (openat2 with RESOLVE_BENEATH): `..`, absolute names and symlinks
 * met on the way out are refused, and so are symlinks or hard links whose
 * target leaves DIR.  copy-out sends regular files, directories and
 * symlinks: PATH itself being anything else (a device would stream forever,
 * a fifo block) is refused, one inside a directory is left out.  A file is
 * sent as read() gives it: a read error or a file that shrank fails the
 * copy, and one whose size says 0 (a /proc file) is read whole first, up to
 * PSEUDO_MAX.  Exit status: 0 done, 1 I/O error, 2 malformed archive, 3 an
 * entry would land outside DIR, 4 PATH is no file, directory or symlink
 * (message on stderr).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "agent.h"
#include "common/error.h"
#include "common/fdio.h"

enum { COPY_OK = 0, COPY_IO = 1, COPY_MALFORMED = 2, COPY_UNSAFE = 3, COPY_UNSUPPORTED = 4 };

#define BLOCK 512
#define NAME_MAX_LEN 4096
#define PSEUDO_MAX (16u << 20) /* a file whose size says 0, read whole first */

struct tar_header {
	char name[100], mode[8], uid[8], gid[8], size[12], mtime[12], chksum[8];
	char typeflag, linkname[100], magic[6], version[2], uname[32], gname[32];
	char devmajor[8], devminor[8], prefix[155], pad[12];
};
_Static_assert(sizeof(struct tar_header) == BLOCK, "a tar header is one block");

/* Each failing step fills *error (errnum: the errno that says why, 0 for
 * none) and returns status, the exit status that classifies it; copy_main
 * reports the error. */
static int fail(bl_error *error, int status, int errnum, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static int fail(bl_error *error, int status, int errnum, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	if (errnum)
		bl_error_verrno(error, errnum, fmt, ap);
	else
		bl_error_vset(error, 0, fmt, ap);
	va_end(ap);
	return status;
}

/* ---- numbers: octal, or base-256 when the top bit is set ---- */

static bool parse_number(const char *field, size_t len, uint64_t *out)
{
	const unsigned char *f = (const unsigned char *)field;
	uint64_t v = 0;
	if (f[0] & 0x80) {
		if (f[0] != 0x80) /* negative, or more than 64 bits */
			return false;
		for (size_t i = 1; i < len; i++) {
			if (v >> 56)
				return false;
			v = v << 8 | f[i];
		}
		*out = v;
		return true;
	}
	size_t i = 0;
	while (i < len && f[i] == ' ')
		i++;
	for (; i < len && f[i] >= '0' && f[i] <= '7'; i++) {
		if (v >> 60)
			return false;
		v = v << 3 | (uint64_t)(f[i] - '0');
	}
	if (i < len && f[i] != ' ' && f[i] != '\0')
		return false;
	*out = v;
	return true;
}

static void put_number(char *field, size_t len, uint64_t v)
{
	if (v >> (3 * (len - 1))) { /* does not fit in octal: base-256 */
		memset(field, 0, len);
		field[0] = (char)0x80;
		for (size_t i = len - 1; i > 0 && v; i--, v >>= 8)
			field[i] = (char)(v & 0xff);
		return;
	}
	snprintf(field, len, "%0*llo", (int)len - 1, (unsigned long long)v);
}

/* A name field: NUL-padded, unterminated when it fills the field exactly
 * (longer names travel in a GNU long-name entry before the header). */
static void put_string(char *field, size_t len, const char *s)
{
	size_t n = strlen(s);
	memcpy(field, s, n < len ? n : len);
}

static unsigned checksum(const struct tar_header *h)
{
	const unsigned char *p = (const unsigned char *)h;
	unsigned sum = 0;
	for (size_t i = 0; i < BLOCK; i++)
		sum += (i >= offsetof(struct tar_header, chksum) &&
			i < offsetof(struct tar_header, chksum) + sizeof h->chksum)
			       ? ' '
			       : p[i];
	return sum;
}

/* ---- paths beneath the destination ---- */

/* Lexically: relative, no empty or `..` component climbing above the top. */
static bool stays_inside(const char *base_dir, const char *path)
{
	if (path[0] == '/')
		return false;
	int depth = 0;
	for (const char *p = base_dir; *p;) { /* depth of the entry's directory */
		size_t n = strcspn(p, "/");
		if (n && !(n == 1 && p[0] == '.'))
			depth++;
		p += n + (p[n] == '/');
	}
	for (const char *p = path; *p;) {
		size_t n = strcspn(p, "/");
		if (n == 2 && p[0] == '.' && p[1] == '.') {
			if (--depth < 0)
				return false;
		} else if (n && !(n == 1 && p[0] == '.')) {
			depth++;
		}
		p += n + (p[n] == '/');
	}
	return true;
}

static int open_beneath(int root, const char *path, int flags)
{
	struct open_how how = {
		.flags = (uint64_t)(flags | O_CLOEXEC),
		.resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS,
	};
	return (int)syscall(SYS_openat2, root, path, &how, sizeof how);
}

/* Split name into its directory (opened beneath root) and last component. */
static int open_parent(int root, char *name, const char **base)
{
	char *slash = strrchr(name, '/');
	if (!slash) {
		*base = name;
		return fcntl(root, F_DUPFD_CLOEXEC, 0);
	}
	*slash = '\0';
	*base = slash + 1;
	int fd = open_beneath(root, name, O_PATH | O_DIRECTORY);
	*slash = '/';
	return fd;
}

/* ---- copy-in ---- */

struct entry {
	struct tar_header h;
	char name[NAME_MAX_LEN], link[NAME_MAX_LEN];
	uint64_t size, mode, mtime;
};

/* A deferred directory: its mode and mtime are set after its contents. */
struct dir_fixup {
	struct dir_fixup *next;
	char *name;
	mode_t mode;
	time_t mtime;
};

static int skip_data(uint64_t size, bl_error *error)
{
	char buf[BLOCK];
	for (uint64_t left = (size + BLOCK - 1) / BLOCK; left; left--)
		if (fd_read_full(0, buf, BLOCK) != BLOCK)
			return fail(error, COPY_MALFORMED, 0, "the archive ends inside an entry");
	return COPY_OK;
}

/* The body of an 'L' or 'K' entry: one long name. */
static int read_long_name(uint64_t size, char *out, bl_error *error)
{
	if (size == 0 || size >= NAME_MAX_LEN)
		return fail(error, COPY_MALFORMED, 0, "a long name of %llu bytes",
			    (unsigned long long)size);
	char buf[NAME_MAX_LEN + BLOCK];
	size_t padded = (size_t)((size + BLOCK - 1) / BLOCK * BLOCK);
	if (fd_read_full(0, buf, padded) != padded)
		return fail(error, COPY_MALFORMED, 0, "the archive ends inside a long name");
	memcpy(out, buf, (size_t)size);
	out[size] = '\0';
	return COPY_OK;
}

static void field_string(char *out, const char *field, size_t len)
{
	size_t n = strnlen(field, len);
	memcpy(out, field, n);
	out[n] = '\0';
}

/* Read the next real entry (long names folded in).  1 entry, 0 end. */
static int next_entry(struct entry *e, int *status, bl_error *error)
{
	bool long_name = false, long_link = false;
	for (;;) {
		if (fd_read_full(0, &e->h, BLOCK) != BLOCK) {
			*status = fail(error, COPY_MALFORMED, 0,
				       "the archive ends without its end marker");
			return 0;
		}
		if (e->h.name[0] == '\0') { /* a zero block: the end */
			*status = COPY_OK;
			return 0;
		}
		uint64_t sum;
		if (!parse_number(e->h.chksum, sizeof e->h.chksum, &sum) || sum != checksum(&e->h) ||
		    !parse_number(e->h.size, sizeof e->h.size, &e->size) ||
		    !parse_number(e->h.mode, sizeof e->h.mode, &e->mode) ||
		    !parse_number(e->h.mtime, sizeof e->h.mtime, &e->mtime)) {
			*status = fail(error, COPY_MALFORMED, 0, "a corrupt header");
			return 0;
		}
		if (e->h.typeflag == 'L' || e->h.typeflag == 'K') {
			char *dest = e->h.typeflag == 'L' ? e->name : e->link;
			if ((*status = read_long_name(e->size, dest, error)) != COPY_OK)
				return 0;
			*(e->h.typeflag == 'L' ? &long_name : &long_link) = true;
			continue;
		}
		if (!long_name) {
			char prefix[156], name[101];
			field_string(prefix, e->h.prefix, sizeof e->h.prefix);
			field_string(name, e->h.name, sizeof e->h.name);
			snprintf(e->name, sizeof e->name, "%s%s%s", prefix, prefix[0] ? "/" : "", name);
		}
		if (!long_link)
			field_string(e->link, e->h.linkname, sizeof e->h.linkname);
		return 1;
	}
}

static int write_body(int fd, uint64_t size, const char *name, bl_error *error)
{
	char buf[64 * BLOCK];
	uint64_t left = (size + BLOCK - 1) / BLOCK * BLOCK;
	while (left) {
		size_t chunk = left < sizeof buf ? (size_t)left : sizeof buf;
		if (fd_read_full(0, buf, chunk) != chunk)
			return fail(error, COPY_MALFORMED, 0, "the archive ends inside %s", name);
		size_t data = size < chunk ? (size_t)size : chunk;
		if (fd >= 0 && data && fd_write_full(fd, buf, data) != data)
			return fail(error, COPY_IO, errno, "writing %s", name);
		size -= data;
		left -= chunk;
	}
	return COPY_OK;
}

/* Set an extracted file's or directory's mode and mtime (atime untouched). */
static int set_mode_and_mtime(int fd, mode_t mode, time_t mtime, const char *name, bl_error *error)
{
	struct timespec times[2] = {{.tv_nsec = UTIME_OMIT}, {.tv_sec = mtime}};
	if (fchmod(fd, mode) < 0 || futimens(fd, times) < 0)
		return fail(error, COPY_IO, errno, "setting the mode or time of %s", name);
	return COPY_OK;
}

static int extract_file(int parent, const char *base, struct entry *e, bl_error *error)
{
	if (unlinkat(parent, base, 0) < 0 && errno != ENOENT)
		return fail(error, COPY_IO, errno, "replacing %s", e->name);
	int fd = openat(parent, base, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0)
		return fail(error, COPY_IO, errno, "creating %s", e->name);
	int status = write_body(fd, e->size, e->name, error);
	if (status == COPY_OK)
		status = set_mode_and_mtime(fd, (mode_t)(e->mode & 07777), (time_t)e->mtime,
					    e->name, error);
	if (close(fd) < 0 && status == COPY_OK)
		status = fail(error, COPY_IO, errno, "writing %s", e->name);
	return status;
}

static int extract_dir(int parent, const char *base, struct entry *e, struct dir_fixup **fixups,
		       bl_error *error)
{
	if (mkdirat(parent, base, 0700) < 0 && errno != EEXIST)
		return fail(error, COPY_IO, errno, "creating %s", e->name);
	struct dir_fixup *f = malloc(sizeof *f);
	if (!f || !(f->name = strdup(e->name))) {
		free(f);
		return fail(error, COPY_IO, 0, "out of memory");
	}
	f->mode = (mode_t)(e->mode & 07777);
	f->mtime = (time_t)e->mtime;
	f->next = *fixups;
	*fixups = f;
	return COPY_OK;
}

/* The status of openat2's refusal err: a path leaving DIR (EXDEV, or a
 * symlink: ELOOP) is unsafe, any other failure I/O. */
static int escapes(int err)
{
	return err == EXDEV || err == ELOOP ? COPY_UNSAFE : COPY_IO;
}

static int extract_link(int root, int parent, const char *base, struct entry *e, bl_error *error)
{
	char dir[NAME_MAX_LEN];
	snprintf(dir, sizeof dir, "%s", e->name);
	char *slash = strrchr(dir, '/');
	*(slash ? slash : dir) = '\0';
	bool symbolic = e->h.typeflag == '2';
	/* A hard link names a path from the top; a symlink, from its directory. */
	if (!e->link[0] || !stays_inside(symbolic ? dir : "", e->link))
		return fail(error, COPY_UNSAFE, 0, "%s links outside the destination (%s)", e->name,
			    e->link);
	if (unlinkat(parent, base, 0) < 0 && errno != ENOENT)
		return fail(error, COPY_IO, errno, "replacing %s", e->name);
	if (symbolic) {
		struct timespec times[2] = {{.tv_nsec = UTIME_OMIT}, {.tv_sec = (time_t)e->mtime}};
		if (symlinkat(e->link, parent, base) < 0 ||
		    utimensat(parent, base, times, AT_SYMLINK_NOFOLLOW) < 0)
			return fail(error, COPY_IO, errno, "creating %s", e->name);
		return COPY_OK;
	}
	const char *target_base;
	int target_parent = open_parent(root, e->link, &target_base);
	if (target_parent < 0)
		return fail(error, escapes(errno), errno, "linking %s to %s", e->name, e->link);
	int rc = linkat(target_parent, target_base, parent, base, 0);
	int err = errno;
	close(target_parent);
	return rc < 0 ? fail(error, COPY_IO, err, "linking %s", e->name) : COPY_OK;
}

static int extract(int root, struct entry *e, struct dir_fixup **fixups, bl_error *error)
{
	/* Trailing slashes (directories) and leading "./" carry no meaning. */
	size_t n = strlen(e->name);
	while (n > 1 && e->name[n - 1] == '/')
		e->name[--n] = '\0';
	if (!stays_inside("", e->name) || !strcmp(e->name, ".."))
		return fail(error, COPY_UNSAFE, 0, "%s would land outside the destination",
			    e->name);
	const char *base;
	int parent = open_parent(root, e->name, &base);
	if (parent < 0)
		return fail(error, escapes(errno), errno, "%s: its directory", e->name);
	int status;
	switch (e->h.typeflag) {
	case '0':
	case '\0':
	case '7':
		status = extract_file(parent, base, e, error);
		break;
	case '5':
		status = extract_dir(parent, base, e, fixups, error);
		break;
	case '1':
	case '2':
		status = extract_link(root, parent, base, e, error);
		break;
	default:
		status = fail(error, COPY_UNSAFE, 0, "%s: entry type '%c' is not copied", e->name,
			      e->h.typeflag);
	}
	close(parent);
	if (status == COPY_OK && e->h.typeflag != '0' && e->h.typeflag != '\0' &&
	    e->h.typeflag != '7')
		status = skip_data(e->size, error);
	return status;
}

/* Directories last, deepest first (the list is in reverse order). */
static int fix_dirs(int root, struct dir_fixup *f, int status, bl_error *error)
{
	while (f) {
		struct dir_fixup *next = f->next;
		int fd = status == COPY_OK ? open_beneath(root, f->name, O_RDONLY | O_DIRECTORY) : -1;
		if (status == COPY_OK && fd < 0)
			status = fail(error, COPY_IO, errno, "%s", f->name);
		if (fd >= 0) {
			status = set_mode_and_mtime(fd, f->mode, f->mtime, f->name, error);
			close(fd);
		}
		free(f->name);
		free(f);
		f = next;
	}
	return status;
}

static int make_dirs(const char *path)
{
	char buf[NAME_MAX_LEN];
	if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf)
		return -1;
	for (char *p = buf + 1;; p++) {
		if (*p != '/' && *p != '\0')
			continue;
		char c = *p;
		*p = '\0';
		if (mkdir(buf, 0755) < 0 && errno != EEXIST)
			return -1;
		if (!(*p = c))
			return 0;
	}
}

static int copy_in(const char *dest, bl_error *error)
{
	if (make_dirs(dest) < 0)
		return fail(error, COPY_IO, errno, "creating %s", dest);
	int root = open(dest, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (root < 0)
		return fail(error, COPY_IO, errno, "%s", dest);
	struct entry *e = malloc(sizeof *e);
	if (!e)
		return fail(error, COPY_IO, 0, "out of memory");
	struct dir_fixup *fixups = NULL;
	int status = COPY_OK;
	while (status == COPY_OK && next_entry(e, &status, error))
		status = extract(root, e, &fixups, error);
	status = fix_dirs(root, fixups, status, error);
	free(e);
	close(root);
	return status;
}

/* ---- copy-out ---- */

static int emit(const void *buf, size_t len, bl_error *error)
{
	if (fd_write_full(1, buf, len) != len)
		return fail(error, COPY_IO, errno, "writing the archive");
	return COPY_OK;
}

/* Zeros after size bytes of data, up to the next block. */
static int emit_padding(uint64_t size, bl_error *error)
{
	static const char zeros[BLOCK];
	size_t tail = (size_t)(size % BLOCK);
	return tail ? emit(zeros, BLOCK - tail, error) : COPY_OK;
}

/* One header block; name and link cut to their fields (see emit_header). */
static int emit_block_header(const char *name, const char *link, char type, uint64_t mode,
			     uint64_t size, uint64_t mtime, bl_error *error)
{
	struct tar_header h;
	memset(&h, 0, sizeof h);
	put_string(h.name, sizeof h.name, name);
	if (link)
		put_string(h.linkname, sizeof h.linkname, link);
	put_number(h.mode, sizeof h.mode, mode);
	put_number(h.uid, sizeof h.uid, 0);
	put_number(h.gid, sizeof h.gid, 0);
	put_number(h.size, sizeof h.size, size);
	put_number(h.mtime, sizeof h.mtime, mtime);
	h.typeflag = type;
	memcpy(h.magic, "ustar ", 6);
	memcpy(h.version, " ", 2);
	put_number(h.chksum, 7, checksum(&h));
	return emit(&h, BLOCK, error);
}

/* A GNU long-name entry ('L' or 'K') carrying text. */
static int emit_long(char type, const char *text, bl_error *error)
{
	size_t len = strlen(text) + 1;
	if (emit_block_header("././@LongLink", NULL, type, 0, len, 0, error) ||
	    emit(text, len, error))
		return COPY_IO;
	return emit_padding(len, error);
}

static int emit_header(const char *name, const struct stat *st, char type, const char *link,
		       uint64_t size, bl_error *error)
{
	if (strlen(name) >= sizeof((struct tar_header *)0)->name && emit_long('L', name, error))
		return COPY_IO;
	if (link && strlen(link) >= sizeof((struct tar_header *)0)->linkname &&
	    emit_long('K', link, error))
		return COPY_IO;
	return emit_block_header(name, link, type, st->st_mode & 07777, size,
				 st->st_mtime > 0 ? (uint64_t)st->st_mtime : 0, error);
}

/* The file's bytes as its header announced, cut if it grew meanwhile; one
 * that shrank fails the copy (its header is out already, and zeros would be
 * content it never had). */
static int emit_file_body(int fd, uint64_t size, const char *name, bl_error *error)
{
	char buf[64 * BLOCK];
	uint64_t left = size;
	while (left) {
		size_t want = left < sizeof buf ? (size_t)left : sizeof buf;
		ssize_t n = read(fd, buf, want);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return fail(error, COPY_IO, errno, "reading %s", name);
		if (n == 0)
			return fail(error, COPY_IO, 0, "%s shrank by %llu bytes while it was copied",
				    name, (unsigned long long)left);
		if (emit(buf, (size_t)n, error))
			return COPY_IO;
		left -= (uint64_t)n;
	}
	return emit_padding(size, error);
}

/* A file whose size says 0: a /proc or /sys file has content all the same,
 * and its real size is known only once it is read (up to PSEUDO_MAX). */
static int emit_unsized_file(int fd, const struct stat *st, const char *name, bl_error *error)
{
	char *data = NULL;
	size_t len = 0, cap = 0;
	int status = COPY_OK;
	for (;;) {
		if (len == cap) {
			if (cap == PSEUDO_MAX) {
				status = fail(error, COPY_IO, 0,
					      "%s says it has 0 bytes but holds more than %u", name,
					      PSEUDO_MAX);
				break;
			}
			cap = cap ? 2 * cap : 64 * BLOCK;
			char *grown = realloc(data, cap);
			if (!grown) {
				status = fail(error, COPY_IO, ENOMEM, "reading %s", name);
				break;
			}
			data = grown;
		}
		ssize_t n = read(fd, data + len, cap - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			status = fail(error, COPY_IO, errno, "reading %s", name);
			break;
		}
		if (n == 0)
			break;
		len += (size_t)n;
	}
	if (status == COPY_OK)
		status = emit_header(name, st, '0', NULL, len, error);
	if (status == COPY_OK && len)
		status = emit(data, len, error);
	if (status == COPY_OK)
		status = emit_padding(len, error);
	free(data);
	return status;
}

static const char *kind_of(mode_t mode)
{
	if (S_ISCHR(mode))
		return "a character device";
	if (S_ISBLK(mode))
		return "a block device";
	if (S_ISFIFO(mode))
		return "a fifo";
	if (S_ISSOCK(mode))
		return "a socket";
	return "no file, directory or symlink";
}

static int archive(int dirfd, const char *base, const char *name, bl_error *error);

static int archive_dir(int fd, const char *name, bl_error *error)
{
	DIR *d = fdopendir(fd);
	if (!d) {
		close(fd);
		return fail(error, COPY_IO, errno, "%s", name);
	}
	int status = COPY_OK;
	struct dirent *de;
	char child[NAME_MAX_LEN];
	while (status == COPY_OK && (errno = 0, de = readdir(d))) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		if (snprintf(child, sizeof child, "%s/%s", name, de->d_name) >= (int)sizeof child)
			status = fail(error, COPY_IO, 0, "%s/%s: name too long", name, de->d_name);
		else
			status = archive(dirfd(d), de->d_name, child, error);
	}
	if (status == COPY_OK && errno)
		status = fail(error, COPY_IO, errno, "listing %s", name);
	closedir(d);
	return status;
}

static int archive(int dirfd, const char *base, const char *name, bl_error *error)
{
	struct stat st;
	if (fstatat(dirfd, base, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return fail(error, COPY_IO, errno, "%s", name);
	if (S_ISLNK(st.st_mode)) {
		char target[NAME_MAX_LEN];
		ssize_t n = readlinkat(dirfd, base, target, sizeof target - 1);
		if (n < 0)
			return fail(error, COPY_IO, errno, "%s", name);
		target[n] = '\0';
		return emit_header(name, &st, '2', target, 0, error);
	}
	if (!S_ISDIR(st.st_mode) && !S_ISREG(st.st_mode))
		return COPY_OK; /* devices, fifos, sockets: not file content */
	int fd = openat(dirfd, base, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
	if (fd < 0)
		return fail(error, COPY_IO, errno, "%s", name);
	struct stat opened;
	if (fstat(fd, &opened) < 0 || (opened.st_mode & S_IFMT) != (st.st_mode & S_IFMT)) {
		close(fd);
		return fail(error, COPY_IO, 0, "%s changed while it was copied", name);
	}
	if (S_ISDIR(st.st_mode)) {
		int status = emit_header(name, &st, '5', NULL, 0, error);
		if (status != COPY_OK) {
			close(fd);
			return status;
		}
		return archive_dir(fd, name, error);
	}
	int status;
	if (st.st_size == 0) {
		status = emit_unsized_file(fd, &st, name, error);
	} else {
		status = emit_header(name, &st, '0', NULL, (uint64_t)st.st_size, error);
		if (status == COPY_OK)
			status = emit_file_body(fd, (uint64_t)st.st_size, name, error);
	}
	close(fd);
	return status;
}

static int copy_out(const char *path, bl_error *error)
{
	char copy[NAME_MAX_LEN];
	if (snprintf(copy, sizeof copy, "%s", path) >= (int)sizeof copy)
		return fail(error, COPY_IO, 0, "%s: name too long", path);
	size_t n = strlen(copy);
	while (n > 1 && copy[n - 1] == '/')
		copy[--n] = '\0';
	char *slash = strrchr(copy, '/');
	const char *base = slash ? slash + 1 : copy;
	const char *dir = slash ? (slash == copy ? "/" : copy) : ".";
	if (slash)
		*slash = '\0';
	if (!*base || !strcmp(base, "..") || !strcmp(base, "."))
		return fail(error, COPY_IO, 0, "%s: name a file or directory", path);
	int dirfd = open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (dirfd < 0)
		return fail(error, COPY_IO, errno, "%s", dir);
	struct stat st;
	if (fstatat(dirfd, base, &st, AT_SYMLINK_NOFOLLOW) == 0 && !S_ISDIR(st.st_mode) &&
	    !S_ISREG(st.st_mode) && !S_ISLNK(st.st_mode)) {
		close(dirfd);
		return fail(error, COPY_UNSUPPORTED, 0, "%s is %s", path, kind_of(st.st_mode));
	}
	int status = archive(dirfd, base, base, error);
	close(dirfd);
	char end[2 * BLOCK] = {0};
	return status == COPY_OK ? emit(end, sizeof end, error) : status;
}

static int copy(int argc, char **argv, bl_error *error)
{
	if (argc == 3 && !strcmp(argv[1], "copy-in"))
		return copy_in(argv[2], error);
	if (argc == 3 && !strcmp(argv[1], "copy-out"))
		return copy_out(argv[2], error);
	return fail(error, COPY_IO, 0, "usage: boxlite-agent copy-in DIR | copy-out PATH");
}

int copy_main(int argc, char **argv)
{
	bl_error error;
	int status = copy(argc, argv, &error);
	if (status != COPY_OK)
		fprintf(stderr, "boxlite copy: %s\n", error.msg);
	return status;
}
