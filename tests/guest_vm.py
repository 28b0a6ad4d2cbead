"""A Linux guest under QEMU, for what this machine's own kernel cannot show
(cgroup layouts other than its own).

The guest is booted by ``boxlite-vmm boot``: the launcher of a vm box's
VM (native/vmm/qemu.c, its confinement included), with the vm engine's
kernel (Debian's cloud kernel, fetched by tests/run.sh) and an initramfs the
package builds (boxlite_ffi.vm.initramfs) of busybox, a shell script as
/init and the modules it needs.  The guest mounts this machine's root
read-only over virtiofs, an ext4 disk of its own on /tmp, and runs a Python
script with this machine's interpreter and installed boxlite, as root.  Its
console is the test's record; the script's exit code comes back on it.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from boxlite_ffi.errors import EngineError
from boxlite_ffi.home import libexec_dir
from boxlite_ffi.vm.engine import QEMU, VMM
from boxlite_ffi.vm.initramfs import initramfs
from boxlite_ffi.vm.kernel import Kernel, find_kernel

BUSYBOX = Path("/bin/busybox")
# Their dependencies come from modules.dep; ext4 is built in.
MODULES = ("virtio_mmio", "virtio_blk", "virtiofs", "overlay", "loop", "tun")
EXIT = re.compile(r"BOXLITE-GUEST-EXIT (\d+)")
# How /sys/fs/cgroup is mounted: and the kernel's say in it.
CGROUPS = {
    "v2": ("mount -t cgroup2 cgroup2 /newroot/sys/fs/cgroup", "cgroup_no_v1=all"),
    # systemd's hybrid layout, with memory the only v1 controller.
    "hybrid": (
        "mount -t tmpfs tmpfs /newroot/sys/fs/cgroup\n"
        "mkdir /newroot/sys/fs/cgroup/memory /newroot/sys/fs/cgroup/unified\n"
        "mount -t cgroup -o memory cgroup /newroot/sys/fs/cgroup/memory\n"
        "mount -t cgroup2 cgroup2 /newroot/sys/fs/cgroup/unified",
        "",
    ),
}

INIT = """#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t devtmpfs devtmpfs /dev
for m in $(cat /modules/order); do insmod /modules/$m || echo "insmod $m failed"; done
ip link set lo up
mkdir -p /newroot
mount -t virtiofs -o ro vol0 /newroot
mount -t ext4 /dev/vda /newroot/tmp
mount -t proc proc /newroot/proc
mount -t sysfs sysfs /newroot/sys
{cgroups}
mount -t devtmpfs devtmpfs /newroot/dev
mkdir -p /newroot/dev/pts /newroot/dev/shm
mount -t devpts devpts /newroot/dev/pts
mount -t tmpfs tmpfs /newroot/dev/shm
mount -t tmpfs tmpfs /newroot/run
exec switch_root /newroot /bin/sh /tmp/job.sh
"""

JOB = """export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/tmp PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
chmod 1777 /tmp
cd /tmp
{python} /tmp/script.py {args} 2>&1
echo "BOXLITE-GUEST-EXIT $?"
/bin/busybox poweroff -f
"""


def missing() -> str | None:
    """Why no guest can boot here, or None."""
    if shutil.which(QEMU) is None:
        return f"{QEMU} is not installed (Debian's qemu-system-x86)"
    if os.geteuid() != 0:
        return "sharing this machine's root with the guest (virtiofsd) needs root"
    try:
        find_kernel()
    except EngineError as e:
        return str(e)
    for tool in ("mkfs.ext4",):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    return None


def _initramfs(work: Path, kernel: Kernel, layout: str) -> Path:
    init = work / "init"
    init.write_text(INIT.replace("{cgroups}", CGROUPS[layout][0]))
    init.chmod(0o755)
    return initramfs(kernel, {"init": init, "bin/busybox": BUSYBOX}, MODULES, work)


def _disk(work: Path, script: Path, args: list[str], size: str) -> Path:
    """The guest's /tmp: an ext4 image holding the job and the script."""
    staging = work / "disk"
    staging.mkdir()
    (staging / "job.sh").write_text(JOB.format(python=sys.executable, args=shlex.join(args)))
    shutil.copy2(script, staging / "script.py")
    image = work / "disk.img"
    subprocess.run(
        ["mkfs.ext4", "-q", "-F", "-d", str(staging), str(image), size],
        check=True,
        capture_output=True,
    )
    return image


@dataclass
class GuestRun:
    exit_code: int | None  # the script's; None: the guest never said
    console: str  # and what QEMU said


def run_script(
    script: Path,
    work: Path,
    args: list[str],
    *,
    cgroups: str,
    timeout: float,
    memory_mb: int = 2048,
) -> GuestRun:
    """Boot a guest with the cgroups layout (CGROUPS), run script there as
    root with args, power off."""
    kernel = find_kernel()
    cmd = [
        str(libexec_dir() / VMM), "boot",
        "--qemu", str(shutil.which(QEMU)),
        "--kernel", str(kernel.vmlinuz),
        "--initrd", str(_initramfs(work, kernel, cgroups)),
        "--accel", "tcg",
        "--cpus", "2",
        "--memory", str(memory_mb),
        "--share", "/:ro",
        "--disk", str(_disk(work, script, args, "4G")),
        "--timeout-ms", str(int(timeout * 1000)),
    ]  # fmt: skip
    if CGROUPS[cgroups][1]:
        cmd += ["--append", CGROUPS[cgroups][1]]
    # boxlite-vmm kills the guest at the deadline; this bound is for itself.
    vmm = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout + 60)
    text = vmm.stdout.decode(errors="replace")
    found = EXIT.search(text)
    said = vmm.stderr.decode(errors="replace")
    return GuestRun(int(found[1]) if found else None, f"{text}\n{said}")
