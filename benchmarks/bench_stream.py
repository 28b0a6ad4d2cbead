"""1 GiB of stdout into Python: a box execution against Popen + read loop."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time

import boxlite_ffi

from common import rootfs, scratch

SIZE = int(sys.argv[1]) if len(sys.argv) > 1 else 1 << 30
# The same coreutils binary on both sides (busybox head writes 4 KiB at a time).
CMD = ["/usr/bin/head", "-c", str(SIZE), "/dev/zero"]


def popen_read() -> int:
    total = 0
    with subprocess.Popen(CMD, stdout=subprocess.PIPE) as p:
        assert p.stdout is not None
        while chunk := p.stdout.read1(1 << 20):
            total += len(chunk)
    return total


def box_read(box: boxlite_ffi.Box) -> int:
    total = 0
    for chunk in box.exec(CMD).stdout:
        total += len(chunk)
    return total


def main() -> None:
    base = scratch()
    with boxlite_ffi.Runtime(base / "home") as rt, rt.create(rootfs=rootfs(base, (CMD[0],))) as box:
        box.start()
        rates: dict[str, list[float]] = {"box stdout iteration": [], "Popen read loop": []}
        for _ in range(3):
            for name, fn in (
                ("box stdout iteration", lambda: box_read(box)),
                ("Popen read loop", popen_read),
            ):
                start = time.perf_counter()
                assert fn() == SIZE
                rates[name].append(SIZE / (time.perf_counter() - start) / 1e9)
    print(f"## {SIZE / 2**30:.2f} GiB of stdout into Python (best of 3)")
    for name, xs in rates.items():
        print(f"  {name:<22} {max(xs):6.2f} GB/s")
    ratio = max(rates["box stdout iteration"]) / max(rates["Popen read loop"])
    print(f"  box / Popen = {ratio:.2f}x")
    shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
