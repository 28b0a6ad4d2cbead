"""A Linux guest under QEMU, for what this machine's own kernel cannot show
(cgroup layouts other than its own).

The guest boots Debian's kernel (fetched by tests/run.sh into KERNEL_DIR)
with a small initramfs of busybox and the modules it needs, mounts this
machine's root read-only over virtio-9p, an ext4 disk of its own on /tmp,
and runs a Python script with this machine's interpreter and installed
boxlite, as root.  Its console is the test's record; the script's exit
code comes back on it.
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

KERNEL_DIR = Path(os.environ.get("BOXLITE_TEST_KERNEL", "/var/cache/boxlite-test/kernel"))
QEMU = shutil.which("qemu-system-x86_64")
BUSYBOX = Path("/bin/busybox")
# In load order's roots; their dependencies come from modules.dep.
MODULES = (
    "virtio_pci",
    "virtio_blk",
    "9pnet_virtio",
    "9p",
    "crc32c_generic",
    "ext4",
    "overlay",
    "loop",
    "tun",
)
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
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=512000,cache=loose hostroot /newroot
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
    if QEMU is None:
        return "qemu-system-x86_64 is not installed (Debian's qemu-system-x86)"
    if not kernel_image():
        return f"no kernel in {KERNEL_DIR} (tests/run.sh fetches it)"
    for tool in ("cpio", "mkfs.ext4"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    return None


def kernel_image() -> Path | None:
    found = sorted(KERNEL_DIR.glob("boot/vmlinuz-*"))
    return found[-1] if found else None


def _modules(release: str) -> list[Path]:
    """The .ko files for MODULES, each after what it depends on."""
    base = KERNEL_DIR / "lib" / "modules" / release
    paths: dict[str, str] = {}
    deps: dict[str, list[str]] = {}
    for line in (base / "modules.dep").read_text().splitlines():
        path, _, needs = line.partition(":")
        name = Path(path).name.removesuffix(".ko")
        paths[name] = path
        deps[name] = [Path(p).name.removesuffix(".ko") for p in needs.split()]
    order: list[str] = []

    def visit(name: str) -> None:
        if name not in order:
            for dep in reversed(deps[name]):  # modules.dep lists the nearest first
                visit(dep)
            order.append(name)

    for name in MODULES:
        visit(name)
    return [base / paths[name] for name in order]


def _initramfs(work: Path, release: str, layout: str) -> Path:
    root = work / "initramfs"
    for sub in ("bin", "proc", "dev", "modules", "newroot"):
        (root / sub).mkdir(parents=True)
    shutil.copy2(BUSYBOX, root / "bin" / "busybox")
    (root / "init").write_text(INIT.replace("{cgroups}", CGROUPS[layout][0]))
    (root / "init").chmod(0o755)
    modules = _modules(release)
    for ko in modules:
        shutil.copy2(ko, root / "modules" / ko.name)
    (root / "modules" / "order").write_text("\n".join(ko.name for ko in modules) + "\n")
    names = sorted(str(p.relative_to(root)) for p in root.rglob("*"))
    image = work / "initramfs.cpio"
    with open(image, "wb") as out:
        subprocess.run(
            ["cpio", "--quiet", "-o", "-H", "newc"],
            input="\n".join(names).encode(),
            stdout=out,
            cwd=root,
            check=True,
        )
    return image


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
    kernel = kernel_image()
    assert kernel is not None and QEMU is not None
    release = kernel.name.removeprefix("vmlinuz-")
    console = work / "console.log"
    cmd = [
        QEMU,
        "-accel", "tcg",
        "-cpu", "max",
        "-smp", "2",
        "-m", str(memory_mb),
        "-nodefaults",
        "-no-user-config",
        "-no-reboot",
        "-display", "none",
        "-serial", f"file:{console}",
        "-kernel", str(kernel),
        "-initrd", str(_initramfs(work, release, cgroups)),
        "-append", f"console=ttyS0 panic=-1 quiet {CGROUPS[cgroups][1]}",
        "-fsdev", "local,id=hostroot,path=/,security_model=none,readonly=on,multidevs=remap",
        "-device", "virtio-9p-pci,fsdev=hostroot,mount_tag=hostroot",
        "-drive", f"file={_disk(work, script, args, '4G')},format=raw,if=virtio",
    ]  # fmt: skip
    try:
        qemu = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout)
        said = qemu.stderr.decode(errors="replace")
    except subprocess.TimeoutExpired:
        said = f"(the guest was killed after {timeout} s)"
    text = console.read_bytes().decode(errors="replace") if console.exists() else ""
    found = EXIT.search(text)
    return GuestRun(int(found[1]) if found else None, f"{text}\n{said}")
