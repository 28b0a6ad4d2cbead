"""The main-job demo (``python3 -m boxlite_ffi.demo``) runs end to end: a
namespace box beside a VM box, each saying what ran it; without a usable vm
engine it says why and still succeeds."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from test_engines import needs_vm

from boxlite_ffi.vm.kernel import KERNEL_DIR_ENV


def demo(env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "boxlite_ffi.demo"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
    )


@needs_vm
def test_the_demo_runs_a_vm_box_beside_a_namespace_box() -> None:
    done = demo()
    assert done.returncode == 0, done.stderr
    host = os.uname().release
    ns = f"ns box: engine ns, accelerator none (the host's kernel), uname -r {host}\n"
    assert ns in done.stdout
    vm = re.search(r"^vm box: engine vm, accelerator (kvm|tcg), uname -r (\S+)$", done.stdout, re.M)
    assert vm, done.stdout
    assert vm[2] != host
    assert f"why {vm[1]}: " in done.stdout


def test_without_a_guest_kernel_the_demo_says_so_and_carries_on(tmp_path: Path) -> None:
    done = demo({KERNEL_DIR_ENV: str(tmp_path)})
    assert done.returncode == 0, done.stderr
    assert "ns box: engine ns" in done.stdout
    missing = f"no guest kernel in {tmp_path}|the vm engine needs qemu"  # kernel.py, engine.py
    assert re.search(f"^vm box: the vm engine cannot run here: ({missing})", done.stdout, re.M)
