/*
 * guest.h - boxlite-guest, /init of a vm box's guest.
 *
 * The guest runs the same box as the ns engine builds on a host: it brings
 * the guest's kernel up (system.c: its filesystems, the modules in
 * /modules/order, the virtio port and disks) and then runs boxlite-shim,
 * which builds the box in namespaces of the guest's kernel with the very
 * confinement it gives a box on a host, with boxlite-agent as the box's init.
 * main.c relays between the shim's fds and the host's supervisor
 * (boxlite-vmm) over the port (common/mux.h):
 *
 *	host supervisor                          guest init
 *	SPEC (the shim's argv), MAIN?, GO  --->  mounts the disks, runs the shim
 *	                                  <---  READY, then STATUS (its line)
 *	chan 1 <-> the shim's fd 3; chan 2, 3 <- the main command's stdout, stderr
 *	OPEN chan N                        --->  a connection to the agent's socket
 *	STOP                               --->  SIGTERM to the shim
 *	                                  <---  OUTCOME, EXIT (its code); power off
 *
 * The disks are found by their serial numbers (GUEST_ROOT_SERIAL: the image's
 * layers, read-only; GUEST_DISK_SERIAL: the box's directory, its writable
 * layer in it), the port by its name (GUEST_PORT_NAME).
 */
#ifndef BOXLITE_GUEST_H
#define BOXLITE_GUEST_H

#include <stdbool.h>

#include "common/error.h"

#define GUEST_PORT_NAME "boxlite"
#define GUEST_ROOT_SERIAL "boxlite-root"
#define GUEST_DISK_SERIAL "boxlite-disk"
/* Where the guest mounts them, and where the shim and the agent are. */
#define GUEST_IMAGE_DIR "/run/image"
#define GUEST_BOX_DIR "/run/box"
#define GUEST_SHIM "/boxlite-shim"
#define GUEST_AGENT "/boxlite-agent"
/* A vm box's volumes (and without a root image its lowers, a rootfs=
 * directory): each host directory shared over virtiofs (one
 * virtiofsd each, on the host) with the tag GUEST_VOLUME_TAG<i>, mounted at
 * GUEST_VOLUME_DIR/<tag> in the guest and bound into the box from there. */
#define GUEST_VOLUME_DIR "/run/vol"
#define GUEST_VOLUME_TAG "vol"
#define GUEST_MAX_VOLUMES 16

/* On the kernel's command line: boot, say so on the console, power off. */
#define GUEST_PROBE_ARG "boxlite.probe"
#define GUEST_PROBE_OK "boxlite-guest: probe ok"

/* A vm box's network, as the host's user-mode stack (passt) is told it:
 * the guest at GUEST_NET_ADDR, its gateway and DNS forwarder beside it (the
 * namespace engine's slirp4netns layout). */
#define GUEST_NET_ADDR "10.0.2.100"
#define GUEST_NET_MASK "255.255.255.0"
#define GUEST_NET_GATEWAY "10.0.2.2"
#define GUEST_NET_DNS "10.0.2.3"
#define GUEST_NET_MTU 65520
#define GUEST_NET_DEVICE "eth0"

/* system.c, in this order: the modules of /modules/order; a root the shim
 * can pivot out of; the filesystems every box needs. */
int guest_load_modules(bl_error *e);
int guest_switch_root(bl_error *e);
int guest_mount_system(bl_error *e);
/* lo, and GUEST_NET_DEVICE if the VM has one: 0 or -1. */
int guest_network_up(bl_error *e);
/* The port, opened read-write: an fd, or -1 with e. */
int guest_open_port(bl_error *e);
/* Mount the disk whose serial is serial on dir: 0 or -1. */
int guest_mount_disk(const char *serial, const char *dir, bool readonly, bl_error *e);
/* Mount the virtiofs share behind each of the shim's --lower, --bind and
 * --bind-ro sources under GUEST_VOLUME_DIR (read-only but for --bind): 0
 * or -1. */
int guest_mount_volumes(char **argv, bl_error *e);
/* Whether the kernel's command line has word. */
bool guest_cmdline_has(const char *word);
/* Write back and unmount the box's disk, then power off: never returns. */
_Noreturn void guest_power_off(void);

#endif
