"""Warm pools: create + the first result with a started box waiting, against
the same one-shot bwrap run as bench_cold_start.py.

    python3 benchmarks/bench_pool.py [rounds] [runs]

One image made of the very rootfs bwrap runs on (busybox).  Each round
times, interleaved: ``create`` (taking the pool's box) + ``run(["/bin/true"])``
to its result; the same create forced cold (a ``tmp_size`` no pool has: a
box started on the spot); ``bwrap --unshare-all`` /bin/true; and
``subprocess.run(["/bin/true"])``.  Before each timed step the pool is full
again (``pool(..., wait=True)``, untimed) and the pool's thread leaves a
take be for 50 ms, so no refill runs while anything is timed.  Every run
prints its ratios; the last lines are the spread between runs.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections.abc import Callable

import boxlite_ffi
from boxlite_ffi.image.busybox import tar_of
from boxlite_ffi.image.oci_writer import write_layout

from common import bwrap_true, p50, report, rootfs, scratch

ROUNDS = int(sys.argv[1]) if len(sys.argv) > 1 else 30
RUNS = int(sys.argv[2]) if len(sys.argv) > 2 else 3
IMAGE = "bench/pool:1"
POOL = 2
WARM = "boxlite pooled create+run"
COLD = "boxlite cold create+run"
BWRAP = "bwrap --unshare-all"
PLAIN = "subprocess.run(/bin/true)"


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def one_run(rt: boxlite_ffi.Runtime, bwrap: list[str]) -> dict[str, list[float]]:
    samples: dict[str, list[float]] = {WARM: [], COLD: [], BWRAP: [], PLAIN: []}
    for i in range(ROUNDS + 1):
        rt.pool(IMAGE, POOL, wait=True)
        start = time.perf_counter()
        warm = rt.create(IMAGE)
        assert warm.run(["/bin/true"]).ok
        took = time.perf_counter() - start
        info = warm.info()
        assert info.started is not None and info.started < info.created, "not from the pool"
        warm.close()
        rt.pool(IMAGE, POOL, wait=True)
        start = time.perf_counter()
        cold = rt.create(IMAGE, tmp_size="64m")
        assert cold.run(["/bin/true"]).ok
        cold_took = time.perf_counter() - start
        cold.close()
        baseline = timed(lambda: subprocess.run(bwrap, check=True))
        plain = timed(lambda: subprocess.run(["/bin/true"], check=True))
        if i == 0:
            continue  # warm-up
        samples[WARM].append(took)
        samples[COLD].append(cold_took)
        samples[BWRAP].append(baseline)
        samples[PLAIN].append(plain)
    return samples


def main() -> None:
    base = scratch()
    root = rootfs(base)
    bwrap = bwrap_true(root)
    if bwrap is None:
        sys.exit("bench_pool needs bwrap (apt-get install bubblewrap)")
    layout = write_layout(base / "layout", [tar_of(root)], config={"Env": ["PATH=/bin"]})
    ratios: dict[str, list[float]] = {BWRAP: [], PLAIN: [], COLD: []}
    with boxlite_ffi.Runtime(base / "home") as rt:
        rt.images.load(layout, tag=IMAGE)
        for run in range(1, RUNS + 1):
            samples = one_run(rt, bwrap)
            report(f"run {run}: create + first result, pool of {POOL}", samples, WARM)
            mine = p50(samples[WARM])
            for name in ratios:
                ratios[name].append(mine / p50(samples[name]))
            print(f"  pooled / cold boxlite: {mine / p50(samples[COLD]):5.2f}x")
    print(f"## spread over {RUNS} runs (pooled p50 / baseline p50)")
    for name, values in ratios.items():
        print(f"  {name:<28} {min(values):5.2f}x - {max(values):5.2f}x")
    shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
