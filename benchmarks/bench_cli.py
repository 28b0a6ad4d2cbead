"""``boxlite run --rm IMAGE true`` as a whole process, against
``python3 -c pass`` (the interpreter's own start-up, which the command pays
before doing anything) and ``bwrap --unshare-all … true``; with ``--before
DIR`` also the same command from another tree of the package (an A/B: a
``git archive`` of the commit before, with this tree's native parts).

    python benchmarks/bench_cli.py [ROUNDS] [--before DIR]

Every tree is byte-compiled first, as an installed package is: with
PYTHONDONTWRITEBYTECODE set, a run would otherwise time the compiler.  Three
runs, each interleaved; then where a run's time goes: its imports (in a
fresh process), and main's stages (in this one).
"""

from __future__ import annotations

import argparse
import compileall
import functools
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import boxlite_ffi
import boxlite_ffi.cli
from boxlite_ffi.box import Box
from boxlite_ffi.image.busybox import tar_of
from boxlite_ffi.image.images import Images
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


def _stages(home: Path, rounds: int) -> None:
    """Where main's own time goes, in this process once everything is
    imported (the parts overlap: exec includes start)."""
    spent: dict[str, list[float]] = {}

    def timed(owner: Any, name: str, label: str) -> None:
        fn = getattr(owner, name)

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent.setdefault(label, []).append(time.perf_counter() - start)

        setattr(owner, name, wrapper)

    timed(boxlite_ffi.cli, "parser", "parser (the run subcommand only)")
    timed(boxlite_ffi.Runtime, "__init__", "Runtime(): store open, reconcile")
    timed(Images, "resolve", "image resolve")
    timed(boxlite_ffi.Runtime, "create", "create: record, box directory")
    timed(Box, "start", "start (the native core)")
    timed(Box, "exec", "exec, start included")
    timed(Box, "remove", "remove: kill, wait, delete")
    timed(boxlite_ffi.Runtime, "close", "Runtime.close")
    timed(boxlite_ffi.cli, "main", "main, whole")
    for _ in range(rounds):
        boxlite_ffi.cli.main(["--home", str(home), "run", "--rm", "bb", "true"])
    print(f"## main's stages in-process, p50 of {rounds}, ms")
    for label, xs in spent.items():
        print(f"  {label:36} {p50(xs) * 1e3:7.2f}")


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
    _stages(home, opts.rounds)


if __name__ == "__main__":
    main()
