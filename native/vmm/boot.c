/*
 * boot.c - a guest with no box (vmm.h): boxlite-vmm boot, and the
 * accelerator probe.  Both go through the launcher of a box's VM (qemu.c:
 * its command line and its confinement), so the guests tests boot
 * (tests/guest_vm.py) run the way a box's VM runs, and the probe asks
 * exactly the question a box's start would.  The console is read for an
 * answer (--until) and kept for the report; QEMU is killed at the deadline.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/clock.h"
#include "guest/guest.h"
#include "vmm.h"

#define PROBE_MEMORY (128ull << 20)
#define CONSOLE_KEPT 4096

struct boot {
	struct shim_spec spec; /* vm, limits, binds (the shares) */
	const char *disk;      /* NULL: none */
	const char *append;    /* to the kernel's command line */
	const char *until;     /* NULL: until the guest powers off */
	unsigned long timeout_ms;
	bool echo;             /* the console to our stdout */
	char seen[CONSOLE_KEPT]; /* the console's newest part */
	size_t have;
};

enum boot_end { BOOT_ANSWERED, BOOT_POWERED_OFF, BOOT_TIMED_OUT, BOOT_FAILED };

/* A console chunk: echoed, and kept (its newest half when full). */
static void took(struct boot *b, const char *data, size_t n)
{
	if (b->echo && write(STDOUT_FILENO, data, n) < 0)
		b->echo = false; /* our reader is gone: keep booting, stop echoing */
	while (n) {
		if (b->have == sizeof b->seen - 1) {
			memmove(b->seen, b->seen + sizeof b->seen / 2, b->have - sizeof b->seen / 2);
			b->have -= sizeof b->seen / 2;
		}
		size_t k = sizeof b->seen - 1 - b->have;
		k = k < n ? k : n;
		memcpy(b->seen + b->have, data, k);
		b->have += k;
		b->seen[b->have] = '\0';
		data += k;
		n -= k;
	}
}

/* Follow the console until the answer, QEMU's end or the deadline. */
static enum boot_end follow(struct boot *b, int console, const struct qemu *q, int64_t deadline)
{
	for (;;) {
		int64_t left = deadline - bl_now_ms();
		struct pollfd p[2] = {{.fd = console, .events = POLLIN}, {.fd = q->pidfd, .events = POLLIN}};
		int n = left > 0 ? poll(p, 2, (int)left) : 0;
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return n == 0 ? BOOT_TIMED_OUT : BOOT_FAILED;
		if (!p[0].revents) /* QEMU is gone, and the console read to its end */
			return BOOT_POWERED_OFF;
		char buf[4096];
		ssize_t got = read(console, buf, sizeof buf);
		if (got == 0) /* every writer gone: QEMU too */
			return BOOT_POWERED_OFF;
		if (got < 0 && errno != EINTR)
			return BOOT_FAILED;
		if (got > 0)
			took(b, buf, (size_t)got);
		if (b->until && strstr(b->seen, b->until))
			return BOOT_ANSWERED;
	}
}

/* Boot b: how it ended, with QEMU and the shares' daemons reaped. */
static enum boot_end run(struct boot *b, bl_error *e)
{
	int console[2];
	if (pipe2(console, O_CLOEXEC) < 0)
		return bl_error_errno(e, errno, "pipe"), BOOT_FAILED;
	struct qemu_io io = {.port = -1, .root = -1, .disk = {-1, -1}, .messages = console[1], .net = -1,
			     .append = b->append};
	pid_t shares[GUEST_MAX_VOLUMES];
	char dir[] = "/tmp/boxlite-boot-XXXXXX"; /* the shares' sockets, briefly */
	enum boot_end end = BOOT_FAILED;
	b->spec.box_dir = mkdtemp(dir);
	if (!b->spec.box_dir) {
		bl_error_errno(e, errno, "mkdtemp");
		goto out;
	}
	if (b->disk && ((io.disk[0] = open(b->disk, O_RDONLY | O_CLOEXEC)) < 0 ||
			(io.disk[1] = open(b->disk, O_RDWR | O_CLOEXEC)) < 0)) {
		bl_error_errno(e, errno, "open %s", b->disk);
		goto out;
	}
	if (volumes_start(&b->spec, console[1], &io, shares, e) < 0)
		goto out;
	struct qemu q;
	int64_t start = bl_now_ms();
	if (qemu_start(&b->spec, &io, &q, e) == 0) {
		close(console[1]);
		console[1] = -1;
		end = follow(b, console[0], &q, start + (int64_t)b->timeout_ms);
		qemu_kill(&q); /* powering off already, or past its time */
		int st = qemu_reap(&q);
		if (end == BOOT_POWERED_OFF && st != 0)
			end = BOOT_FAILED;
		close(q.pidfd);
		if (end == BOOT_FAILED)
			bl_error_set(e, EIO, "qemu ended with wait status %d", st);
	}
	volumes_reap(&b->spec, shares);
out:
	for (unsigned i = 0; i < io.n_volumes; i++)
		close(io.volumes[i]);
	for (int i = 0; i < 2; i++)
		if (io.disk[i] >= 0)
			close(io.disk[i]);
	if (console[1] >= 0)
		close(console[1]);
	close(console[0]);
	if (b->spec.box_dir)
		rmdir(b->spec.box_dir);
	return end;
}

static int usage(const char *me)
{
	fprintf(stderr,
		"usage: %s boot --qemu PATH --kernel PATH --initrd PATH --accel kvm|tcg\n"
		"          [--memory MIB] [--cpus N] [--append ARGS] [--share DIR[:ro]]...\n"
		"          [--disk IMAGE] [--until TEXT] [--timeout-ms N]\n"
		"       %s probe QEMU KERNEL INITRD ACCEL TIMEOUT_MS\n",
		me, me);
	return 2;
}

static bool number(const char *s, unsigned long *out)
{
	char *end;
	errno = 0;
	*out = strtoul(s, &end, 10);
	return *s && !*end && !errno && *out;
}

/* A share: DIR or DIR:ro, at the guest's tag vol<i> (guest.h). */
static bool share(struct shim_spec *s, char *arg)
{
	size_t n = strlen(arg);
	bool ro = n > 3 && strcmp(arg + n - 3, ":ro") == 0;
	if (ro)
		arg[n - 3] = '\0';
	if (s->n_binds == GUEST_MAX_VOLUMES || arg[0] != '/')
		return false;
	s->binds[s->n_binds++] = (struct shim_bind){arg, NULL, ro};
	return true;
}

static bool parse(struct boot *b, int argc, char **argv)
{
	static const struct option opts[] = {
		{"qemu", required_argument, NULL, 'q'},   {"kernel", required_argument, NULL, 'k'},
		{"initrd", required_argument, NULL, 'i'}, {"accel", required_argument, NULL, 'a'},
		{"memory", required_argument, NULL, 'm'}, {"cpus", required_argument, NULL, 'c'},
		{"append", required_argument, NULL, 'A'}, {"share", required_argument, NULL, 's'},
		{"disk", required_argument, NULL, 'd'},   {"until", required_argument, NULL, 'u'},
		{"timeout-ms", required_argument, NULL, 't'}, {NULL, 0, NULL, 0},
	};
	struct shim_vm *vm = &b->spec.vm;
	unsigned long v;
	int c;
	optind = 2; /* after "boot" */
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'q': vm->qemu = optarg; break;
		case 'k': vm->kernel = optarg; break;
		case 'i': vm->initrd = optarg; break;
		case 'a': vm->accel = optarg; break;
		case 'A':
			if (strlen(optarg) > BOXLITE_MAX_VM_KERNEL_ARGS)
				return false;
			b->append = optarg;
			break;
		case 'd': b->disk = optarg; break;
		case 'u': b->until = optarg; break;
		case 's':
			if (!share(&b->spec, optarg))
				return false;
			break;
		case 'm':
			if (!number(optarg, &v) || v > (1ul << 20))
				return false;
			b->spec.limits.memory = (uint64_t)v << 20;
			break;
		case 'c':
			if (!number(optarg, &v) || v > 256)
				return false;
			b->spec.limits.cpu_millis = (uint32_t)v * 1000;
			break;
		case 't':
			if (!number(optarg, &b->timeout_ms))
				return false;
			break;
		default:
			return false;
		}
	}
	return optind == argc && vm->qemu && vm->kernel && vm->initrd && vm->accel &&
	       (strcmp(vm->accel, "kvm") == 0 || strcmp(vm->accel, "tcg") == 0);
}

/* What a boot's end says: on stderr, with the console's tail where no
 * guest answered; the exit code. */
static int report(const char *what, const struct boot *b, enum boot_end end, const bl_error *e)
{
	switch (end) {
	case BOOT_ANSWERED:
	case BOOT_POWERED_OFF:
		return 0;
	case BOOT_TIMED_OUT:
		fprintf(stderr, "boxlite-vmm %s: no guest with accel %s in %lu ms", what, b->spec.vm.accel,
			b->timeout_ms);
		break;
	case BOOT_FAILED:
		fprintf(stderr, "boxlite-vmm %s: %s", what, e->msg);
		break;
	}
	if (!b->echo)
		fprintf(stderr, "; its console:\n%s\n", b->seen);
	else
		fputc('\n', stderr);
	return 1;
}

static struct boot *new_boot(void)
{
	static struct boot b; /* one a process */
	memset(&b, 0, sizeof b);
	b.timeout_ms = 600000;
	return &b;
}

int boot_main(int argc, char **argv)
{
	struct boot *b = new_boot();
	if (!parse(b, argc, argv))
		return usage(argv[0]);
	b->echo = true;
	bl_error e = {0};
	enum boot_end end = run(b, &e);
	if (b->until && end == BOOT_POWERED_OFF) {
		bl_error_set(&e, EIO, "the guest powered off without %s", b->until);
		end = BOOT_FAILED;
	}
	return report("boot", b, end, &e);
}

int probe_main(int argc, char **argv)
{
	struct boot *b = new_boot();
	if (argc != 7 || !number(argv[6], &b->timeout_ms))
		return usage(argv[0]);
	b->spec.vm = (struct shim_vm){argv[2], argv[3], argv[4], NULL, argv[5], 0, NULL};
	b->spec.limits.memory = PROBE_MEMORY;
	b->append = GUEST_PROBE_ARG;
	b->until = GUEST_PROBE_OK;
	bl_error e = {0};
	int64_t start = bl_now_ms();
	enum boot_end end = run(b, &e);
	if (end == BOOT_ANSWERED) {
		printf("ok %s %lld ms\n", argv[5], (long long)(bl_now_ms() - start));
		return 0;
	}
	if (end == BOOT_POWERED_OFF)
		end = BOOT_TIMED_OUT; /* it ended without answering */
	return report("probe", b, end, &e);
}
