"""stdin throughput: bytes written into a box process's stdin, against
`subprocess.Popen` writing to the same program on the host."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time

import boxlite_ffi

from common import rootfs, scratch

SIZE = int(sys.argv[1]) if len(sys.argv) > 1 else 256 << 20
CHUNK = 1 << 20
# The same coreutils cat on both sides (busybox cat reads 4 KiB at a time).
CMD = ["/usr/bin/cat"]


def popen_write(block: bytes) -> None:
    with subprocess.Popen(CMD, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL) as p:
        assert p.stdin is not None
        for _ in range(SIZE // CHUNK):
            p.stdin.write(block)
        p.stdin.close()


def box_write(box: boxlite_ffi.Box, block: bytes) -> None:
    execution = box.exec(["sh", "-c", "/usr/bin/cat > /dev/null"], stdin=True)
    for _ in range(SIZE // CHUNK):
        execution.write_stdin(block)
    execution.close_stdin()
    assert execution.wait().ok


def main() -> None:
    base = scratch()
    block = b"\xa5" * CHUNK
    with (
        boxlite_ffi.Runtime(base / "home") as rt,
        rt.create(rootfs=rootfs(base, tuple(CMD))) as box,
    ):
        box.start()
        rates: dict[str, list[float]] = {"box write_stdin": [], "Popen stdin.write": []}
        for _ in range(3):
            for name, fn in (
                ("box write_stdin", lambda: box_write(box, block)),
                ("Popen stdin.write", lambda: popen_write(block)),
            ):
                start = time.perf_counter()
                fn()
                rates[name].append(SIZE / (time.perf_counter() - start) / 1e9)
    print(f"## {SIZE >> 20} MiB into a process's stdin, 1 MiB writes (best of 3)")
    for name, xs in rates.items():
        print(f"  {name:<20} {max(xs):6.2f} GB/s")
    print(f"  box / Popen = {max(rates['box write_stdin']) / max(rates['Popen stdin.write']):.2f}x")
    shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
