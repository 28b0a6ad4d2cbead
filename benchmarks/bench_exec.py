"""Warm exec: /bin/true in a running box, against subprocess.run."""

from __future__ import annotations

import shutil
import subprocess
import sys

import boxlite_ffi

from common import report, rootfs, scratch, time_interleaved

ROUNDS = int(sys.argv[1]) if len(sys.argv) > 1 else 300


def main() -> None:
    base = scratch()
    with boxlite_ffi.Runtime(base / "home") as rt, rt.create(rootfs=rootfs(base)) as box:
        box.start()

        def box_true() -> None:
            assert box.run(["/bin/true"]).ok

        samples = time_interleaved(
            {
                "box.run(/bin/true)": box_true,
                "subprocess.run(/bin/true)": lambda: subprocess.run(["/bin/true"]),
            },
            ROUNDS,
        )
    report("exec round trip of /bin/true", samples, "box.run(/bin/true)")
    shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
