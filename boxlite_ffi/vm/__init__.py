"""What the vm engine's guest boots: Debian's kernel (kernel), an initramfs
of the guest's programs and the modules they need (initramfs), and one
read-only block image of an image's layers (root_image)."""

from __future__ import annotations

from .initramfs import initramfs
from .kernel import Kernel, fetch_kernel, find_kernel, kernel_dir
from .root_image import layer_name, root_image

__all__ = [
    "Kernel",
    "fetch_kernel",
    "find_kernel",
    "initramfs",
    "kernel_dir",
    "layer_name",
    "root_image",
]
