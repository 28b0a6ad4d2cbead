"""Peers: boxlite against crun and podman on the same busybox rootfs.

Install the peers first (the test suite does not need them):

    apt-get install -y crun podman

Each round times, interleaved, a cold start to the result of /bin/true
(boxlite create + run + close; ``crun run``; ``podman run --rm``) and a warm
exec of /bin/true into a running box or container (``Box.run``; ``crun
exec``; ``podman exec``).  No subject gets a cgroup (crun
``--cgroup-manager=disabled``, podman ``--cgroups disabled``; boxlite's
boxes have no limits here) or a network.  Run as root.

crun refuses a hybrid cgroup layout whose v2 mount holds controllers (this
machine's: v1 controllers, hugetlb in v2); the benchmark then re-executes
itself in a mount namespace of its own with an empty tmpfs over
/sys/fs/cgroup/unified, for every subject alike.  A peer that still cannot
run here is reported with its error, not timed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import boxlite_ffi

from common import report, rootfs, scratch, time_interleaved

ROUNDS = int(sys.argv[1]) if len(sys.argv) > 1 else 30
UNIFIED = Path("/sys/fs/cgroup/unified")
HIDDEN = "BOXLITE_BENCH_UNIFIED_HIDDEN"
PODMAN_FLAGS = ["--network", "none", "--cgroups", "disabled", "--log-driver", "none"]


def _hybrid_with_v2_controllers() -> bool:
    try:
        return bool((UNIFIED / "cgroup.controllers").read_text().split())
    except OSError:
        return False


def _reexec_with_unified_hidden() -> None:
    script = f'mount -t tmpfs none {UNIFIED} && exec "$@"'
    argv = ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh"]
    os.environ[HIDDEN] = "1"
    os.execvp("unshare", [*argv, sys.executable, *sys.argv])


def _bundle(base: Path, root: Path, args: list[str]) -> Path:
    """An OCI bundle of crun's default spec on root, running args."""
    bundle = base / f"bundle-{args[0].rsplit('/', 1)[-1]}"
    bundle.mkdir()
    subprocess.run(["crun", "spec"], cwd=bundle, check=True)
    spec = json.loads((bundle / "config.json").read_text())
    spec["root"] = {"path": str(root), "readonly": True}
    spec["process"].update(terminal=False, args=args)
    (bundle / "config.json").write_text(json.dumps(spec))
    return bundle


def _works(cmd: list[str]) -> str | None:
    """None if cmd runs, else its error's first line."""
    done = subprocess.run(cmd, capture_output=True, text=True)
    return None if done.returncode == 0 else (done.stderr.strip().splitlines() or ["?"])[0]


class Crun:
    def __init__(self, base: Path, root: Path) -> None:
        self.once = _bundle(base, root, ["/bin/true"])
        self.idle = _bundle(base, root, ["/bin/sleep", "1000000"])
        self.n = 0

    def crun(self, *args: str) -> list[str]:
        return ["crun", "--cgroup-manager=disabled", *args]

    def run(self) -> None:
        self.n += 1
        subprocess.run(
            self.crun("run", "--bundle", str(self.once), f"bench-{os.getpid()}-{self.n}"),
            check=True,
        )

    def start_idle(self) -> str:
        name = f"bench-idle-{os.getpid()}"
        subprocess.run(self.crun("run", "-d", "--bundle", str(self.idle), name), check=True)
        return name

    def stop_idle(self, name: str) -> None:
        subprocess.run(self.crun("delete", "-f", name), check=False)


def _subjects(
    base: Path, root: Path
) -> tuple[dict[str, Callable[[], object]], list[Callable[[], None]]]:
    """Cold-start subjects, warm-exec subjects (named "exec: ..."), and what
    tears the warm ones down."""
    rt = boxlite_ffi.Runtime(base / "home")
    box = rt.create(rootfs=root)
    box.start()

    def cold_boxlite() -> None:
        with rt.create(rootfs=root) as fresh:
            assert fresh.run(["/bin/true"]).ok

    fns: dict[str, Callable[[], object]] = {
        "boxlite create+run+close": cold_boxlite,
        "exec: boxlite Box.run": lambda: box.run(["/bin/true"]),
    }
    teardown: list[Callable[[], None]] = [box.close, rt.close]
    if shutil.which("crun"):
        crun = Crun(base, root)
        if (why := _works(crun.crun("run", "--bundle", str(crun.once), "bench-probe"))) is None:
            idle = crun.start_idle()
            teardown.insert(0, lambda: crun.stop_idle(idle))
            fns["crun run"] = crun.run
            fns["exec: crun exec"] = lambda: subprocess.run(
                crun.crun("exec", idle, "/bin/true"), check=True
            )
        else:
            print(f"crun not timed: {why}")
    if shutil.which("podman"):
        run = ["podman", "run", "--rm", *PODMAN_FLAGS, "--rootfs", str(root), "/bin/true"]
        if (why := _works(run)) is None:
            name = f"bench-idle-{os.getpid()}"
            subprocess.run(
                [
                    "podman",
                    "run",
                    "-d",
                    "--name",
                    name,
                    *PODMAN_FLAGS,
                    "--rootfs",
                    str(root),
                    "/bin/sleep",
                    "1000000",
                ],
                check=True,
                capture_output=True,
            )
            teardown.insert(
                0,
                lambda: subprocess.run(
                    ["podman", "rm", "-f", "-t", "0", name], check=False, capture_output=True
                ),
            )
            fns["podman run --rm"] = lambda: subprocess.run(run, check=True)
            fns["exec: podman exec"] = lambda: subprocess.run(
                ["podman", "exec", name, "/bin/true"], check=True
            )
        else:
            print(f"podman not timed: {why}")
    return fns, teardown


def main() -> None:
    if os.geteuid() != 0:
        sys.exit("bench_peers needs root (crun and podman as root)")
    if _hybrid_with_v2_controllers() and not os.environ.get(HIDDEN):
        _reexec_with_unified_hidden()
    base = scratch()
    root = rootfs(base)
    fns, teardown = _subjects(base, root)
    try:
        samples = time_interleaved(fns, ROUNDS)
    finally:
        for step in teardown:
            step()
    cold = {k: v for k, v in samples.items() if not k.startswith("exec: ")}
    warm = {k: v for k, v in samples.items() if k.startswith("exec: ")}
    report("cold start to the result of /bin/true", cold, "boxlite create+run+close")
    report("warm exec of /bin/true", warm, "exec: boxlite Box.run")
    shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
