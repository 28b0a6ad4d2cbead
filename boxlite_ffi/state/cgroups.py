"""What a box's cgroups say of it: the shim lists the cgroups it made in
``<box dir>/cgroups`` (one ``CONTROLLER PATH`` a line), and the memory
cgroup counts the kernel's OOM kills."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from . import boxdir


def _oom_kills(box_dir: Path) -> int:
    """How many processes the OOM killer took in the box's memory cgroup."""
    try:
        for line in (box_dir / boxdir.CGROUPS).read_text().splitlines():
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
