"""A vm box's VM, resolved when the box is created and kept in its record:
QEMU, the guest's kernel and initramfs, the image's root image and the
accelerator (accel.py).  All of it is cached, so a second box of the same
image costs a few file checks."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from ..errors import EngineError, InvalidArgumentError
from ..state.boxdir import SUPERVISORS
from .accel import Probe, choose
from .initramfs import initramfs
from .kernel import find_kernel
from .root_image import CACHE_PART as ROOT_IMAGE_CACHE
from .root_image import layer_name, root_image

QEMU = "qemu-system-x86_64"
# The guest's programs (name in the initramfs -> the executable's) and the
# modules they need; ext4 is built into Debian's cloud kernel.
GUEST_FILES = {
    "init": "boxlite-guest",
    "boxlite-shim": "boxlite-shim",
    "boxlite-agent": "boxlite-agent",
}
GUEST_MODULES = (
    "virtio_mmio",
    "virtio_console",
    "virtio_blk",
    "virtio_net",
    "overlay",
    "virtiofs",  # volumes
)
MAX_VOLUMES = 16  # GUEST_MAX_VOLUMES (native/guest/guest.h)
VMM = SUPERVISORS["vm"]
BOOT_CACHE = "vm"  # <home>/vm: initramfs builds, the accelerator probes' answers
ROOT_IMAGES = ROOT_IMAGE_CACHE  # <home>/images/vm


def _check_shares(sources: list[str]) -> None:
    """What the vm engine can share with a guest: directories (one virtiofsd
    each, which needs a root runtime), at most MAX_VOLUMES in all (a box's
    volumes and a rootfs= directory together, as boxlite-vmm counts them)."""
    if not sources:
        return
    if len(sources) > MAX_VOLUMES:
        raise InvalidArgumentError(f"at most {MAX_VOLUMES} volumes on the vm engine")
    if os.geteuid() != 0:
        raise InvalidArgumentError("volumes on the vm engine need a root runtime (virtiofsd)")
    for source in sources:
        if not Path(source).is_dir():
            raise InvalidArgumentError(
                f"volume source {source}: the vm engine shares directories, not files"
            )


def _is_layer(lower: Path) -> bool:
    try:
        layer_name(lower)
    except InvalidArgumentError:
        return False
    return True


def find_qemu() -> str:
    found = shutil.which(QEMU)
    if found is None:
        raise EngineError(f"the vm engine needs {QEMU}: apt-get install qemu-system-x86")
    return found


def vm_config(
    lowers: tuple[Path, ...],
    mounts: list[str],
    *,
    accel: str,
    ready_ms: int,
    root_images: Path,
    boot_cache: Path,
    libexec: Path,
    kernel: Path | None = None,
    kernel_args: str | None = None,
) -> dict[str, Any]:
    """The stored description of a box's VM (core.VmConfig's fields, and
    what BoxInfo reports): its image of lowers in root_images, its boot
    files in boot_cache."""
    # An image's layers go in a root image; a rootfs= directory is shared.
    layered = all(_is_layer(lower) for lower in lowers)
    _check_shares([*([] if layered else map(str, lowers)), *mounts])
    qemu = find_qemu()
    guest_kernel = find_kernel(kernel)
    files = {name: libexec / exe for name, exe in GUEST_FILES.items()}
    initrd = initramfs(guest_kernel, files, GUEST_MODULES, boot_cache)
    root = str(root_image(lowers, root_images)) if layered else None
    probe = Probe(libexec / VMM, qemu, guest_kernel.vmlinuz, guest_kernel.sha256, initrd)
    chosen = choose(accel, probe, boot_cache)
    return {
        "qemu": qemu,
        "kernel": str(guest_kernel.vmlinuz),
        "initrd": str(initrd),
        "root_image": root,
        "accel": chosen.name,
        "ready_ms": ready_ms,
        "accel_reason": chosen.reason,
        "kernel_release": guest_kernel.release,
        "kernel_args": kernel_args,
    }
