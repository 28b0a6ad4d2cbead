"""Shared helpers: timing percentiles, a busybox rootfs, ratio reports.

Every benchmark times its baseline in the same process, interleaved with the
measured operation, and prints ratios: this machine is noisy, ratios less so.
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from boxlite_ffi.image.busybox import busybox_rootfs


def scratch() -> Path:
    return Path(tempfile.mkdtemp(prefix="boxlite-bench-"))


def rootfs(base: Path, host_programs: tuple[str, ...] = ()) -> Path:
    """Busybox, plus host programs (with their shared libraries) so a box
    and its baseline can run the very same binary."""
    root = busybox_rootfs(base / "rootfs")
    for program in host_programs:
        for path in [program, *_shared_libraries(program)]:
            dest = root / path.lstrip("/")
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, dest)
    return root


def bwrap_true(root: Path) -> list[str] | None:
    """A one-shot `bwrap --unshare-all` /bin/true on root; None without bwrap."""
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        return None
    mounts = ["--ro-bind", str(root), "/", "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]
    return [bwrap, "--unshare-all", "--die-with-parent", *mounts, "/bin/true"]


def _shared_libraries(program: str) -> list[str]:
    out = subprocess.run(["ldd", program], capture_output=True, text=True, check=True).stdout
    return [w for line in out.splitlines() for w in line.split() if w.startswith("/")]


def time_interleaved(fns: dict[str, Callable[[], object]], rounds: int) -> dict[str, list[float]]:
    """Seconds per call of each function, alternating so drift hits all alike."""
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for fn in fns.values():
        fn()  # warm up
    for _ in range(rounds):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            samples[name].append(time.perf_counter() - start)
    return samples


def p50(xs: list[float]) -> float:
    return statistics.median(xs)


def p90(xs: list[float]) -> float:
    return statistics.quantiles(xs, n=10)[-1]


def report(title: str, samples: dict[str, list[float]], subject: str) -> None:
    """p50/p90 of each, and the subject's p50 as a multiple of each baseline's."""
    print(f"## {title}")
    mine = p50(samples[subject])
    for name, xs in samples.items():
        line = f"  {name:<28} p50 {p50(xs) * 1e3:8.2f} ms  p90 {p90(xs) * 1e3:8.2f} ms"
        if name != subject and not name.startswith("boxlite"):
            line += f"   boxlite takes {mine / p50(xs):5.2f}x this"
        print(line)
