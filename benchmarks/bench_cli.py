"""``boxlite run --rm IMAGE true`` as a whole process, against
``python3 -c pass`` (the interpreter's own start-up, which the command pays
before doing anything) and ``bwrap --unshare-all … true``; with ``--before
DIR`` also the same command from another tree of the package (an A/B: a
``git archive`` of the commit before, with this tree's native parts).

    python benchmarks/bench_cli.py [ROUNDS] [--before DIR]

Every tree is byte-compiled first, as an installed package is: with
PYTHONDONTWRITEBYTECODE set, a run would otherwise time the compiler.  Three
runs, each interleaved; then where one run's time goes (imports, the rest).
"""

from __future__ import annotations

import argparse
import compileall
import os
import statistics
import subprocess
import sys
from pathlib import Path

import boxlite_ffi
from boxlite_ffi.image.busybox import tar_of
from boxlite_ffi.image.oci_writer import write_layout

from common import bwrap_true, p50, report, rootfs, scratch, time_interleaved

RUNS = 3
SUBJECT = "boxlite run --rm bb true"
# In a fresh process: what `run` imports before it opens a runtime.
IMPORTS = "import boxlite_ffi.cli, boxlite_ffi.cli.box_commands, boxlite_ffi.runtime"


def _env(tree: Path | None) -> dict[str, str]:
    env = dict(os.environ)
    if tree is not None:
        env["PYTHONPATH"] = str(tree)
    return env


def _command(home: Path, tree: Path | None) -> tuple[list[str], dict[str, str]]:
    cli = [sys.executable, "-P", "-m", "boxlite_ffi.cli", "--home", str(home), "run", "--rm"]
    return [*cli, "bb", "true"], _env(tree)


def _imports_ms(tree: Path | None, rounds: int) -> float:
    code = f"import time; t = time.perf_counter(); {IMPORTS}; print(time.perf_counter() - t)"
    times = [
        float(
            subprocess.run(
                [sys.executable, "-P", "-c", code],
                capture_output=True, text=True, check=True, env=_env(tree),
            ).stdout
        )
        for _ in range(rounds)
    ]  # fmt: skip
    return statistics.median(times) * 1e3


def main() -> None:
    args = argparse.ArgumentParser()
    args.add_argument("rounds", nargs="?", type=int, default=30)
    args.add_argument("--before", type=Path, help="another tree holding boxlite_ffi/")
    opts = args.parse_args()
    trees = {"": None} | ({"before: ": opts.before} if opts.before else {})
    for tree in [Path(boxlite_ffi.__file__).parent.parent, *filter(None, trees.values())]:
        compileall.compile_dir(tree / "boxlite_ffi", quiet=1)
    base = scratch()
    root = rootfs(base)
    home = base / "home"
    with boxlite_ffi.Runtime(home) as rt:
        rt.images.load(
            write_layout(base / "layout", [tar_of(root)], config={"Env": ["PATH=/bin"]}), tag="bb"
        )
    bwrap = bwrap_true(root)
    assert bwrap is not None, "bwrap is the baseline: apt-get install bubblewrap"
    fns = {}
    for label, tree in trees.items():
        argv, env = _command(home, tree)
        fns[f"{label}{SUBJECT}"] = lambda a=argv, e=env: subprocess.run(a, check=True, env=e)
    fns["bwrap --unshare-all true"] = lambda: subprocess.run(bwrap, check=True)
    fns["python3 -c pass"] = lambda: subprocess.run([sys.executable, "-c", "pass"], check=True)
    ratios: dict[str, list[float]] = {label: [] for label in trees}
    for run in range(1, RUNS + 1):
        samples = time_interleaved(fns, opts.rounds)
        report(f"a whole `run --rm` process, run {run}", samples, SUBJECT)
        floor = p50(samples["python3 -c pass"])
        for label in trees:
            ratios[label].append(p50(samples[f"{label}{SUBJECT}"]) / floor)
    print("## x `python3 -c pass`, p50 of each run")
    for label, rs in ratios.items():
        print(f"  {label or 'this tree: '}{' '.join(f'{r:.2f}x' for r in rs)}")
    print("## imports of a run (fresh process, median of 10), ms")
    for label, tree in trees.items():
        print(f"  {label or 'this tree: '}{_imports_ms(tree, 10):.1f}")


if __name__ == "__main__":
    main()
