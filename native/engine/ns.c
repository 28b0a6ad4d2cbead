/*
 * ns.c - the Linux-namespaces engine: a box is boxlite-shim's, which builds
 * it in new namespaces of the host's kernel and supervises it
 * (supervisor.c spawns it).
 */
#include <errno.h>

#include "engine/engine.h"

/* A box set-up is milliseconds natively, but seconds under emulation. */
#define STATUS_TIMEOUT_MS 60000

static int ns_check(const struct bl_box_spec *box, bl_error *e)
{
	if (box->vm.qemu || box->vm.kernel)
		return bl_error_set(e, EINVAL, "vm options for the ns engine");
	return bl_supervisor_check(box, e);
}

static int ns_spawn(const struct bl_engine_host *host, const struct bl_box_spec *box,
		    struct bl_spawned *out, bl_error *e)
{
	return bl_supervisor_spawn(host, box, "boxlite-shim", STATUS_TIMEOUT_MS, out, e);
}

const struct bl_engine bl_engine_ns = {
    .name = "ns",
    .check = ns_check,
    .spawn = ns_spawn,
    .abandon = bl_supervisor_abandon,
    .signal = bl_supervisor_signal,
    .connect = bl_supervisor_connect,
};
