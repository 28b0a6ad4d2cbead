/*
 * vmm.h - boxlite-vmm, the host-side supervisor of one vm box.
 *
 *   boxlite-vmm --box-dir DIR --lower DIR --disk-image IMG --vm-qemu PATH
 *               --vm-kernel PATH --vm-initrd PATH --vm-root-image IMG
 *               --vm-accel kvm|tcg [FLAG...]
 *   boxlite-vmm boot --qemu PATH --kernel PATH --initrd PATH --accel kvm|tcg
 *               [--memory MIB] [--cpus N] [--append ARGS] [--share DIR[:ro]]...
 *               [--disk IMAGE] [--until TEXT] [--timeout-ms N]
 *   boxlite-vmm probe QEMU KERNEL INITRD ACCEL TIMEOUT_MS
 *
 * The shim's command line, fds, signals, lock and files (common/shim_spec.h,
 * shim/shim.h), so the core and the Python layer see the same supervisor:
 * it runs the box's VM (qemu.c) and, in its guest, boxlite-guest runs the
 * box with boxlite-shim.  The vmm multiplexes over the VM's port
 * (common/mux.h): fd 3 (the spawner's connection) and every connection to
 * DIR/agent.sock, each a channel to the agent; the main command's output
 * into DIR/stdout.log and stderr.log (shim/logs.c) and its outcome into
 * DIR/exit (shim/main_command.c).  QEMU's own output and the guest's console
 * go to DIR/shim.log.
 *
 * SIGTERM: the guest stops the box (its grace period), then powers off;
 * SHIM_KILL_NOW, the owner's death, or a guest past its grace: QEMU is
 * killed.  The vmm exits once QEMU is reaped, with the guest shim's exit
 * code, or 1 when the guest ended without one (a panic, QEMU's death).
 *
 * boot: a guest with no box, by the same launcher (qemu.c): the kernel and
 * initramfs, the shares over virtiofs (tags vol0, vol1, ...), the disk as
 * a virtio-blk disk; its console on our stdout.  Exit 0 once the guest
 * powers off (or its console says --until), 1 when QEMU fails or is killed
 * at the deadline (10 minutes by default).  What tests/guest_vm.py boots.
 *
 * probe: boot the kernel and initramfs with accel to the guest init, which
 * says so and powers off; exit 0 if it did within TIMEOUT_MS, else 1 (QEMU
 * killed).  What "auto" tells KVM that can run a guest from KVM that cannot.
 */
#ifndef BOXLITE_VMM_H
#define BOXLITE_VMM_H

#include <stdbool.h>
#include <sys/types.h>

#include "guest/guest.h"
#include "shim/shim.h"

/* What QEMU is given: the port, the disks, where its output goes. */
struct qemu_io {
	int port;     /* our socketpair's other end: the virtio-serial port; -1: none */
	int root;     /* the layers' image, read-only; -1: none */
	int disk[2];  /* the box's disk, read-only and read-write (QEMU opens it
		       * either way, and an fd set answers with an fd of the same
		       * mode); -1: none */
	int messages; /* QEMU's stdout and stderr: the console */
	int net;      /* a stream socket to the network helper (passt); -1: no network */
	const char *append; /* more of the kernel's command line; NULL: none */
	const struct shim_config *cgroups; /* QEMU joins its cgroups (NULL: none) */
	int volumes[GUEST_MAX_VOLUMES];    /* connected to each volume's virtiofsd */
	unsigned n_volumes;
};

struct qemu {
	pid_t pid;
	int pidfd;
};

/* qemu.c: start QEMU for the VM s describes, confined (docs/security.md),
 * dying with us.  0 and *q, or -1 with e.  The fds of io stay ours. */
int qemu_start(const struct shim_spec *s, const struct qemu_io *io, struct qemu *q, bl_error *e);
void qemu_kill(const struct qemu *q);
/* The guest's RAM, in MiB. */
unsigned qemu_memory_mib(const struct shim_spec *s);
/* Reap it: its wait status. */
int qemu_reap(const struct qemu *q);

/* network.c: vm_network_start, with --network (passt's path), start the helper on one end
 * of a socketpair and give QEMU the other (*qemu_end); it exits when QEMU's
 * end closes.  vm_network_reap waits for it once QEMU is gone. */
int vm_network_start(const struct shim_spec *s, int messages, pid_t *pid, int *qemu_end, bl_error *e);
void vm_network_reap(pid_t pid);

/* volumes.c: vm_shares lists the directories shared with the guest, in
 * the order of their tags: the lowers when there is no root image (read-only),
 * then the volumes.  volumes_start runs one virtiofsd per share,
 * read-only ones on a read-only bind of it; io->volumes gets the vhost-user
 * connection to each.  0, or -1 with e (those started are in pids, for
 * volumes_reap, which waits for them once QEMU is gone). */
unsigned vm_shares(const struct shim_spec *s, struct shim_bind out[GUEST_MAX_VOLUMES]);
int volumes_start(const struct shim_spec *s, int messages, struct qemu_io *io,
		  pid_t pids[GUEST_MAX_VOLUMES], bl_error *e);
void volumes_reap(const struct shim_spec *s, const pid_t pids[GUEST_MAX_VOLUMES]);

/* boot.c */
int boot_main(int argc, char **argv);
int probe_main(int argc, char **argv);

#endif
