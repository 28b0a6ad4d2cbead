"""The cost of persistence: create + start + exec + remove of a box, through
the Runtime (SQLite records, reconciliation, the monitor thread) and through
the native core alone (no store), interleaved, with bwrap as the baseline."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import boxlite_ffi
from boxlite_ffi.execution import Execution, _ExecSink
from boxlite_ffi.spec import native_config
from boxlite_ffi.state import boxdir
from boxlite_ffi.tree import remove_tree

from common import bwrap_true, report, rootfs, scratch, time_interleaved

ROUNDS = int(sys.argv[1]) if len(sys.argv) > 1 else 40


def with_store(rt: boxlite_ffi.Runtime, root: Path) -> None:
    box = rt.create(rootfs=root)
    box.start()
    assert box.run(["/bin/true"]).ok
    box.stop()
    box.remove()


def without_store(rt: boxlite_ffi.Runtime, root: Path, n: list[int]) -> None:
    native = rt.native
    n[0] += 1
    directory = rt.home / "bare" / str(n[0])
    directory.parent.mkdir(exist_ok=True)
    boxdir.make(directory)  # the native core takes only a marked box directory
    config = {
        "lowers": [str(root)],
        "hostname": "bare",
        "env": {},
        "workdir": None,
        "stop_grace_ms": 10_000,
        "drain_ms": 100,
    }
    handle = native.box_new(native_config(directory, config, False), owner_pid=os.getpid())
    native.box_start(handle).result()
    sink = _ExecSink(native, None, None)
    exec_handle = native.exec_start(handle, ["/bin/true"], ["PATH=/bin"], None, sink)
    sink.handle.attach(exec_handle)
    assert Execution(sink).wait().ok
    native.box_stop(handle).result()
    native.box_free(handle)
    remove_tree(directory)


def main() -> None:
    base = scratch()
    root = rootfs(base)
    bwrap = bwrap_true(root)
    assert bwrap is not None, "bwrap is the baseline: apt-get install bubblewrap"
    counter = [0]
    with boxlite_ffi.Runtime(base / "home") as rt:
        samples = time_interleaved(
            {
                "boxlite with the store": lambda: with_store(rt, root),
                "native core, no store": lambda: without_store(rt, root, counter),
                "bwrap --unshare-all": lambda: subprocess.run(bwrap, check=True),
            },
            ROUNDS,
        )
    report("create + start + exec + remove", samples, "boxlite with the store")
    mine, bare = (sorted(samples[k])[len(samples[k]) // 2] for k in list(samples)[:2])
    print(f"  persistence costs {(mine - bare) * 1e3:.2f} ms per box ({mine / bare:.2f}x)")
    shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
