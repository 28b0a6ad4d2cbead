"""Which accelerator runs a vm box: ``kvm`` where /dev/kvm can run a guest,
``tcg`` (QEMU's emulation) where it cannot.

``/dev/kvm`` being there proves nothing (a nested hypervisor may hang a
stock kernel in its decompressor), so ``auto`` boots the guest's kernel and
initramfs once under KVM, bounded in time (``boxlite-vmm probe``), and keeps
the answer per host boot, kernel and initramfs (content-addressed, so its
name says what it holds).  The answers are the user's, not a home's
(``$XDG_CACHE_HOME/boxlite`` or ``~/.cache/boxlite``): what they depend on
is this machine and this user, so a new home does not probe again.  Where
that directory cannot be made (a user without a home directory), the home's
boot cache keeps them.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import EngineError

KVM_DEVICE = Path("/dev/kvm")
BOOT_ID = Path("/proc/sys/kernel/random/boot_id")
PROBE_TIMEOUT_MS = 10_000  # real KVM boots in well under a second
CACHE_FILE = "accel.json"


@dataclass(frozen=True)
class Accel:
    name: str  # "kvm" or "tcg"
    reason: str  # why, for the box's record and log


@dataclass(frozen=True)
class Probe:
    """What a probe boot needs: the supervisor and what it boots."""

    vmm: Path
    qemu: str
    kernel: Path
    kernel_sha256: str
    initrd: Path


def user_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "boxlite"


def _cache_dir(fallback: Path) -> Path:
    """The user's cache directory, else fallback (made either way)."""
    for directory in (user_cache(), fallback):
        try:
            directory.mkdir(parents=True, exist_ok=True)
            if os.access(directory, os.W_OK):
                return directory
        except OSError:
            continue
    fallback.mkdir(parents=True, exist_ok=True)  # its error, if it cannot be
    return fallback


def choose(requested: str, probe: Probe, cache_dir: Path) -> Accel:
    """The accelerator for ``requested`` ("auto", "kvm", "tcg");
    ``EngineError`` when kvm is asked for and cannot run a guest here.
    ``cache_dir`` keeps the probes' answers where the user's cache cannot."""
    if requested == "tcg":
        return Accel("tcg", "tcg asked for")
    works, why = kvm_works(probe, cache_dir)
    if works:
        return Accel("kvm", why)
    if requested == "kvm":
        raise EngineError(f"accel='kvm': {why}; use accel='tcg' or 'auto'")
    return Accel("tcg", f"emulation: {why}")


def kvm_works(probe: Probe, cache_dir: Path) -> tuple[bool, str]:
    if not KVM_DEVICE.exists():
        return False, f"no {KVM_DEVICE}"
    if not os.access(KVM_DEVICE, os.R_OK | os.W_OK):
        return False, f"{KVM_DEVICE} is not open to this user"
    key = f"{BOOT_ID.read_text().strip()} {probe.kernel_sha256} {probe.initrd.name}"
    with _locked(_cache_dir(cache_dir) / CACHE_FILE) as known:
        if key not in known:
            known[key] = _probe(probe)
        works, why = known[key]
    return bool(works), str(why)


def _probe(p: Probe) -> tuple[bool, str]:
    cmd = [str(p.vmm), "probe", p.qemu, str(p.kernel), str(p.initrd), "kvm", str(PROBE_TIMEOUT_MS)]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=PROBE_TIMEOUT_MS / 1000 + 30)
    if run.returncode == 0:
        return True, f"kvm: a probe boot answered ({run.stdout.strip()})"
    return False, f"{KVM_DEVICE} did not boot a guest in {PROBE_TIMEOUT_MS} ms (probe boot)"


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[dict[str, Any]]:
    """The cache's entries, read and written back under its lock."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with os.fdopen(os.dup(fd), "r+") as f:
            text = f.read()
            try:
                known = json.loads(text) if text else {}
            except ValueError:
                known = {}  # a torn write of an earlier run: probe again
            before = dict(known)
            yield known
            if known != before:
                f.seek(0)
                f.truncate()
                json.dump(known, f)
    finally:
        os.close(fd)
