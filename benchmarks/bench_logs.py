"""What the main command's logs cost: a box whose main command writes 256 MiB
to stdout (the shim pumps it from a pipe into the log, rotating at half the
limit) against the same busybox `head` on the host writing to a file
directly, and through a pipe and `cat` (the shape of the shim's pump).

    python benchmarks/bench_logs.py [ROUNDS]
"""

from __future__ import annotations

import subprocess
import sys

import boxlite_ffi

from common import p50, report, rootfs, scratch, time_interleaved

ROUNDS = int(sys.argv[1]) if len(sys.argv) > 1 else 8
SIZE = 256 << 20


def main() -> None:
    base = scratch()
    root = rootfs(base)
    busybox = str(root / "bin" / "busybox")
    out = base / "out.log"
    head = f"{busybox} head -c {SIZE} /dev/zero"
    with boxlite_ffi.Runtime(base / "home") as rt:

        def box(limit: str) -> None:
            cmd = ["/bin/busybox", "head", "-c", str(SIZE), "/dev/zero"]
            with rt.create(rootfs=root, cmd=cmd, log_limit=limit) as b:
                b.start()
                assert b.wait(120).exit_code == 0
                b.remove()

        samples = time_interleaved(
            {
                "boxlite, no rotation": lambda: box("1g"),
                "boxlite, rotating at 4m": lambda: box("8m"),
                "host head > file": lambda: subprocess.run(f"{head} > {out}", shell=True),
                "host head | cat > file": lambda: subprocess.run(
                    f"{head} | {busybox} cat > {out}", shell=True
                ),
            },
            ROUNDS,
        )
    report(f"main command writing {SIZE >> 20} MiB to its log", samples, "boxlite, no rotation")
    rotating = p50(samples["boxlite, rotating at 4m"]) / p50(samples["boxlite, no rotation"])
    print(f"  rotating: {rotating:.2f}x no rotation")
    print(f"  boxlite: {SIZE / p50(samples['boxlite, no rotation']) / 2**20:.0f} MiB/s")


if __name__ == "__main__":
    main()
