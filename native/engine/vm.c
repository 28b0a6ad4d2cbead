/*
 * vm.c - the micro-VM engine: a box is boxlite-vmm's, which runs it in a
 * VM of its own under QEMU, with its own kernel.  In the guest the same
 * boxlite-shim builds the same box (native/guest), so what the core sees is
 * what the ns engine gives it: a supervisor process and a byte stream to the
 * agent, which boxlite-vmm multiplexes over the VM's port.
 */
#include <errno.h>

#include "engine/engine.h"

/* The supervisor's own wait for the guest is vm.ready_ms; past it, and this
 * margin, it is hung. */
#define STATUS_MARGIN_MS 10000

static int vm_check(const struct bl_box_spec *box, bl_error *e)
{
	if (!box->vm.qemu)
		return bl_error_set(e, EINVAL, "the vm engine needs its options (boxlite_box_options.vm)");
	return bl_supervisor_check(box, e);
}

static int vm_spawn(const struct bl_engine_host *host, const struct bl_box_spec *box,
		    struct bl_spawned *out, bl_error *e)
{
	return bl_supervisor_spawn(host, box, "boxlite-vmm", box->vm.ready_ms + STATUS_MARGIN_MS,
				   out, e);
}

const struct bl_engine bl_engine_vm = {
    .name = "vm",
    .check = vm_check,
    .spawn = vm_spawn,
    .abandon = bl_supervisor_abandon,
    .signal = bl_supervisor_signal,
    .connect = bl_supervisor_connect,
};
