/*
 * probe.c - boxlite-vmm probe: does this accelerator boot this kernel
 * (vmm.h)?  /dev/kvm may exist and still never run a guest (a nested
 * hypervisor that hangs a stock kernel), so only a boot in bounded time
 * tells.  The console is read for the guest init's answer.
 */
#include <errno.h>
#include <fcntl.h>
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

/* Read the console until the answer or the deadline: true if it came. */
static bool answered(int fd, int64_t deadline, char *seen, size_t cap)
{
	size_t have = 0;
	for (;;) {
		int64_t left = deadline - bl_now_ms();
		struct pollfd p = {.fd = fd, .events = POLLIN};
		if (left <= 0 || poll(&p, 1, (int)left) <= 0)
			return false;
		if (have == cap - 1) { /* keep the newest half */
			memmove(seen, seen + cap / 2, have - cap / 2);
			have -= cap / 2;
		}
		ssize_t n = read(fd, seen + have, cap - 1 - have);
		if (n <= 0)
			return false; /* QEMU is gone */
		have += (size_t)n;
		seen[have] = '\0';
		if (strstr(seen, GUEST_PROBE_OK))
			return true;
	}
}

int probe_main(int argc, char **argv)
{
	if (argc != 7) {
		fprintf(stderr, "usage: %s probe QEMU KERNEL INITRD ACCEL TIMEOUT_MS\n", argv[0]);
		return 2;
	}
	struct shim_spec s;
	memset(&s, 0, sizeof s);
	s.vm = (struct shim_vm){argv[2], argv[3], argv[4], NULL, argv[5], 0};
	s.limits.memory = PROBE_MEMORY;
	char *end;
	unsigned long timeout = strtoul(argv[6], &end, 10);
	int p[2];
	if (*end || !timeout || pipe2(p, O_CLOEXEC) < 0) {
		fprintf(stderr, "boxlite-vmm probe: bad timeout, or no pipe\n");
		return 2;
	}
	struct qemu_io io = {.port = -1, .root = -1, .disk = {-1, -1}, .messages = p[1], .net = -1, .probe = true};
	struct qemu q;
	bl_error e;
	int64_t start = bl_now_ms();
	if (qemu_start(&s, &io, &q, &e) < 0) {
		fprintf(stderr, "boxlite-vmm probe: %s\n", e.msg);
		return 1;
	}
	close(p[1]);
	char seen[CONSOLE_KEPT];
	seen[0] = '\0';
	bool ok = answered(p[0], start + (int64_t)timeout, seen, sizeof seen);
	int64_t took = bl_now_ms() - start;
	qemu_kill(&q); /* powering off already if it answered */
	(void)qemu_reap(&q);
	if (ok) {
		printf("ok %s %lld ms\n", argv[5], (long long)took);
		return 0;
	}
	fprintf(stderr, "boxlite-vmm probe: no guest with accel %s in %lu ms; its console:\n%s\n",
		argv[5], timeout, seen);
	return 1;
}
