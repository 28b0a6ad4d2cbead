"""Cold start: a new box, /bin/true in it, its result, the box gone.

Each round times, interleaved: a box from create to the result of
/bin/true, then its close (all processes gone, directory deleted); a one-shot
`bwrap --unshare-all` /bin/true on the same rootfs; and
`subprocess.run(["/bin/true"])` with no sandbox at all.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time

import boxlite_ffi

from common import bwrap_true, report, rootfs, scratch

ROUNDS = int(sys.argv[1]) if len(sys.argv) > 1 else 40


def timed(fn: object) -> float:
    start = time.perf_counter()
    fn()  # type: ignore[operator]
    return time.perf_counter() - start


def main() -> None:
    base = scratch()
    root = rootfs(base)
    bwrap_cmd = bwrap_true(root)
    samples: dict[str, list[float]] = {
        "boxlite create+run+close": [],
        "boxlite create+run (result)": [],
        "bwrap --unshare-all": [],
        "subprocess.run(/bin/true)": [],
    }
    with boxlite_ffi.Runtime(base / "home") as rt:
        for i in range(ROUNDS + 1):
            start = time.perf_counter()
            box = rt.create(rootfs=root)
            assert box.run(["/bin/true"]).ok
            result = time.perf_counter() - start
            box.close()
            total = time.perf_counter() - start
            baseline = timed(lambda: subprocess.run(bwrap_cmd, check=True)) if bwrap_cmd else 0.0
            plain = timed(lambda: subprocess.run(["/bin/true"], check=True))
            if i == 0:
                continue  # warm-up
            samples["boxlite create+run+close"].append(total)
            samples["boxlite create+run (result)"].append(result)
            samples["bwrap --unshare-all"].append(baseline)
            samples["subprocess.run(/bin/true)"].append(plain)
    if not bwrap_cmd:
        del samples["bwrap --unshare-all"]
    report("cold start to the result of /bin/true", samples, "boxlite create+run+close")
    shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
