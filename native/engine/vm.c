/*
 * vm.c - the micro-VM engine: a box is boxlite-vmm's, which runs it in a
 * VM of its own under QEMU, with its own kernel.  In the guest the same
 * boxlite-shim builds the same box (native/guest), so what the core sees is
 * what the ns engine gives it: a supervisor process and a byte stream to the
 * agent, which boxlite-vmm multiplexes over the VM's port.
 */
#include <errno.h>
#include <stdio.h>

#include "common/shim_spec.h"
#include "engine/engine.h"

/* The supervisor's own wait for the guest is vm.ready_ms; past it, and this
 * margin, it is hung. */
#define STATUS_MARGIN_MS 10000

static int vm_check(const struct bl_box_spec *box, bl_error *e)
{
	if (!box->vm.qemu)
		return bl_error_set(e, EINVAL, "the vm engine needs its options (boxlite_box_options.vm)");
	if (bl_supervisor_check_counts(box, e) < 0)
		return -1;
	struct shim_spec s;
	bl_supervisor_spec_of(box, &s);
	return shim_spec_check(&s, e);
}

static int vm_spawn(const struct bl_engine_host *host, const struct bl_box_spec *box,
		    struct bl_spawned *out, bl_error *e)
{
	/* The guest has its own agent; the host's is named for the one spec's sake. */
	char agent[4096];
	if (snprintf(agent, sizeof agent, "%s/boxlite-agent", host->libexec_dir) >= (int)sizeof agent)
		return bl_error_errno(e, ENAMETOOLONG, "%s", host->libexec_dir);
	struct shim_spec spec;
	bl_supervisor_spec_of(box, &spec);
	spec.agent = agent;
	return bl_supervisor_spawn(host, box, "boxlite-vmm", &spec,
				   box->vm.ready_ms + STATUS_MARGIN_MS, out, e);
}

const struct bl_engine bl_engine_vm = {
    .name = "vm",
    .check = vm_check,
    .spawn = vm_spawn,
    .abandon = bl_supervisor_abandon,
    .signal = bl_supervisor_signal,
    .connect = bl_supervisor_connect,
};
