"""Limits on the cgroup layouts the field has and this machine has not:
cgroup v2 only, and the hybrid one (memory in its v1 hierarchy, the other
controllers in v2).  This machine mounts every controller as v1, so each
layout runs in a guest under QEMU (guest_vm.py): Debian's kernel, this
machine's root read-only and boxlite as installed here.  The v2 guest also
runs an unprivileged runtime in a delegated subtree, with its user-mode
network (this machine keeps /dev/net/tun root's).  The checks themselves
are in cgroups_guest.py; here they must all pass."""

from __future__ import annotations

import os
from pathlib import Path

import guest_vm
import pytest

CHECKS = (
    "the_default_pids_limit",
    "a_limit_that_cannot_be_set_fails_the_start",
    "memory",
    "pids",
    "cpu",
    "all_limits_in_one_box",
)


# tests/run.sh provides QEMU and the kernel; CI must not skip this.
@pytest.mark.skipif(
    guest_vm.missing() is not None and not os.environ.get("CI"), reason=str(guest_vm.missing())
)
@pytest.mark.parametrize("layout", ["v2", "hybrid"])
def test_limits_on_a_cgroup_layout(tmp_path: Path, layout: str) -> None:
    assert guest_vm.missing() is None, guest_vm.missing()
    script = Path(__file__).with_name("cgroups_guest.py")
    run = guest_vm.run_script(script, tmp_path, [layout], cgroups=layout, timeout=300)
    assert run.exit_code == 0, run.console
    for check in CHECKS + (("rootless",) if layout == "v2" else ()):
        assert f"ok check_{check}" in run.console
