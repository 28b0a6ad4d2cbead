"""``boxlite run --rm IMAGE true`` as a whole process, against
``bwrap --unshare-all … true`` and ``python3 -c pass`` (the interpreter's
own start-up, which the command pays before doing anything).

    python benchmarks/bench_cli.py [ROUNDS]
"""

from __future__ import annotations

import subprocess
import sys

import boxlite_ffi
from boxlite_ffi.image.busybox import tar_of
from boxlite_ffi.image.oci_writer import write_layout

from common import bwrap_true, report, rootfs, scratch, time_interleaved

ROUNDS = int(sys.argv[1]) if len(sys.argv) > 1 else 30


def main() -> None:
    base = scratch()
    root = rootfs(base)
    home = base / "home"
    with boxlite_ffi.Runtime(home) as rt:
        rt.images.load(
            write_layout(base / "layout", [tar_of(root)], config={"Env": ["PATH=/bin"]}), tag="bb"
        )
    bwrap = bwrap_true(root)
    assert bwrap is not None, "bwrap is the baseline: apt-get install bubblewrap"
    cli = [sys.executable, "-P", "-m", "boxlite_ffi.cli", "--home", str(home), "run", "--rm"]
    samples = time_interleaved(
        {
            "boxlite run --rm bb true": lambda: subprocess.run([*cli, "bb", "true"], check=True),
            "boxlite run --rm host true": lambda: subprocess.run(
                [*cli, "host", "true"], check=True
            ),
            "bwrap --unshare-all true": lambda: subprocess.run(bwrap, check=True),
            "python3 -c pass": lambda: subprocess.run([sys.executable, "-c", "pass"], check=True),
        },
        ROUNDS,
    )
    report("a whole `run --rm` process", samples, "boxlite run --rm bb true")


if __name__ == "__main__":
    main()
