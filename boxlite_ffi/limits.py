"""A box's resource limits: create's arguments as the native core's, the
disk image a writable layer of limited size lives in, and what the box's
memory cgroup says of the kernel's OOM killer (the shim lists the cgroups it
made in ``<box dir>/cgroups``)."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Callable
from pathlib import Path

from ._native import lib
from .errors import EngineError, InvalidArgumentError
from .image.unpack import UnpackLimits

# Processes and threads of a box that asked for no limit (podman's
# default: room for any build, not for a fork bomb that takes the host's
# pids), where the pids controller is in cgroup v2: there the box starts in
# its cgroup at no cost, while joining a v1 one costs each start ~5 ms.
DEFAULT_PIDS = 2048
_SIZE = re.compile(r"(\d+)\s*([kmgt]?)i?b?")
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_size(value: int | str, what: str, least: int) -> int:
    """Bytes, from a number of them or a number with k, m, g or t."""
    found = None if isinstance(value, bool) else _SIZE.fullmatch(str(value).lower())
    if found is None:
        raise InvalidArgumentError(f"{what} {value!r}: bytes, or a number with k, m, g or t")
    size = int(found[1]) * _UNITS[found[2]]
    if not least <= size < 1 << 62:
        least_text = f"{least >> 20} MiB" if least >= 1 << 20 else f"{least >> 10} KiB"
        raise InvalidArgumentError(f"{what} {value!r}: at least {least_text}")
    return size


def parse_limits(
    memory: int | str | None,
    cpus: float | None,
    pids: int | None,
    log_limit: int | str | None = None,
    tmp_size: int | str | None = None,
) -> dict[str, int | bool]:
    """The native limits from create's arguments (absent: none, but for the
    default pids, log and tmp limits, the last two the native core's)."""
    limits: dict[str, int | bool] = {}
    if log_limit is not None:
        limits["log_limit"] = parse_size(log_limit, "log_limit", lib.BOXLITE_MIN_LOG_LIMIT)
    if tmp_size is not None:
        limits["tmp_size"] = parse_size(tmp_size, "tmp_size", lib.BOXLITE_MIN_TMP_SIZE)
    if memory is not None:
        limits["memory_limit"] = parse_size(memory, "memory", 1 << 20)
    if cpus is not None:
        if isinstance(cpus, bool) or not isinstance(cpus, int | float) or not 0.01 <= cpus <= 4096:
            raise InvalidArgumentError(f"cpus {cpus!r}: between 0.01 and 4096")
        limits["cpu_millis"] = round(cpus * 1000)
    if pids is None:  # a default, where this machine can enforce it
        limits.update(pids_limit=DEFAULT_PIDS, pids_optional=True)
    elif isinstance(pids, bool) or not isinstance(pids, int) or not 0 <= pids <= 1 << 22:
        raise InvalidArgumentError(f"pids {pids!r}: between 1 and {1 << 22}, or 0 for none")
    elif pids:
        limits["pids_limit"] = pids
    return limits


def unpack_limits(max_bytes: int | str, max_entries: int) -> UnpackLimits:
    """The runtime's bounds on one unpacked layer, from its arguments."""
    if isinstance(max_entries, bool) or not isinstance(max_entries, int) or max_entries < 1:
        raise InvalidArgumentError(f"max_layer_entries {max_entries!r}: a positive integer")
    return UnpackLimits(parse_size(max_bytes, "max_layer_size", 1 << 20), max_entries)


def _oom_kills(box_dir: Path) -> int:
    """How many processes the OOM killer took in the box's memory cgroup."""
    try:
        for line in (box_dir / "cgroups").read_text().splitlines():
            controller, _, path = line.partition(" ")
            if controller == "memory":
                for name in ("memory.events", "memory.oom_control"):  # v2, v1
                    counters = Path(path, name)
                    if counters.exists():
                        for entry in counters.read_text().splitlines():
                            key, _, value = entry.partition(" ")
                            if key == "oom_kill":
                                return int(value)
    except (OSError, ValueError):
        pass
    return 0


def oom_watch(box_dir: Path) -> Callable[[], bool]:
    """Whether the OOM killer has struck in the box since this call."""
    before = _oom_kills(box_dir)
    return lambda: _oom_kills(box_dir) > before


DISK_IMAGE = "disk.img"
DISK_MIN = 16 << 20


def make_disk(box_dir: Path, size: int) -> None:
    """The ext4 image the box's writable layer will live in (sparse: it
    takes only what is written)."""
    image = box_dir / DISK_IMAGE
    with open(image, "xb") as f:
        f.truncate(size)
    owner = f"{os.geteuid()}:{os.getegid()}"
    try:
        subprocess.run(
            ["mkfs.ext4", "-q", "-F", "-m", "0", "-E", f"root_owner={owner}", str(image)],
            check=True,
            capture_output=True,
        )
    except FileNotFoundError:
        raise EngineError("a disk limit needs mkfs.ext4 (apt-get install e2fsprogs)") from None
    except subprocess.CalledProcessError as exc:
        raise EngineError(
            f"mkfs.ext4 failed: {exc.stderr.decode(errors='replace').strip()}"
        ) from exc
