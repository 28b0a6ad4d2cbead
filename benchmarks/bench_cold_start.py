"""Cold start: a new box, /bin/true in it, its result, the box gone.

Baselines: `bwrap --unshare-all` one-shot /bin/true on the same rootfs, and
`subprocess.run(["/bin/true"])` with no sandbox at all.
"""

from __future__ import annotations

import shutil
import subprocess
import sys

import boxlite_ffi

from common import report, rootfs, scratch, time_interleaved

ROUNDS = int(sys.argv[1]) if len(sys.argv) > 1 else 40


def main() -> None:
    base = scratch()
    root = rootfs(base)
    bwrap = shutil.which("bwrap")
    with boxlite_ffi.Runtime(base / "home") as rt:

        def box_true() -> None:
            with rt.create(rootfs=root) as box:
                assert box.run(["/bin/true"]).ok

        def box_result_only() -> None:
            box = rt.create(rootfs=root)
            assert box.run(["/bin/true"]).ok
            closing.append(box)

        closing: list[boxlite_ffi.Box] = []
        fns = {"boxlite create+run+close": box_true, "boxlite create+run (result)": box_result_only}
        if bwrap:
            cmd = [
                bwrap,
                "--unshare-all",
                "--die-with-parent",
                "--ro-bind",
                str(root),
                "/",
                "--proc",
                "/proc",
                "--dev",
                "/dev",
                "--tmpfs",
                "/tmp",
                "/bin/true",
            ]
            fns["bwrap --unshare-all"] = lambda: subprocess.run(cmd, check=True)
        fns["subprocess.run(/bin/true)"] = lambda: subprocess.run(["/bin/true"], check=True)
        samples = time_interleaved(fns, ROUNDS)
        for box in closing:
            box.close()
    report("cold start to the result of /bin/true", samples, "boxlite create+run+close")
    shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
