"""Upgrades: boxes started by an earlier build, detached and still running
(or ended while nobody watched), are found, used, stopped, waited for and
reconciled by this one.  The earlier build is a real one: the commit
BASELINE of this repository, built from `git archive` into its own
directory and run in its own interpreter."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import boxlite_ffi
from boxlite_ffi import BoxStatus, Outcome

from procscan import box_processes

ROOT = Path(__file__).resolve().parents[1]
# The last build before the layout of issue 17 (the house): box directories,
# the store and the shim's command line as people's running boxes have them.
BASELINE = "7b3ad18"


def _baseline_available() -> bool:
    found = subprocess.run(
        ["git", "-C", str(ROOT), "cat-file", "-e", f"{BASELINE}^{{commit}}"],
        capture_output=True,
    )
    return found.returncode == 0


@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory to put on PYTHONPATH that imports the earlier build."""
    if not _baseline_available():
        pytest.skip(f"commit {BASELINE} is not in this clone's history (a shallow clone)")
    source = tmp_path_factory.mktemp("baseline")
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", BASELINE], capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(source)], input=archive, check=True)
    # In place: the extension and the shim and agent beside the sources.
    subprocess.run(
        [sys.executable, "setup.py", "-q", "build_ext", "--inplace"],
        cwd=source, check=True, capture_output=True,
    )  # fmt: skip
    return source


def run_baseline(site: Path, home: Path, code: str) -> str:
    """Run code with `rt` open on home under the earlier build; its stdout."""
    program = "import boxlite_ffi\n"
    program += f"assert boxlite_ffi.__file__.startswith({str(site)!r}), boxlite_ffi.__file__\n"
    program += f"with boxlite_ffi.Runtime({str(home)!r}) as rt:\n"
    program += textwrap.indent(textwrap.dedent(code), "    ")
    env = {**os.environ, "PYTHONPATH": str(site)}
    done = subprocess.run(
        [sys.executable, "-c", program],
        capture_output=True, text=True, timeout=120, env=env, cwd=site,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout


def live(pid: int) -> bool:
    """Running, not a zombie (a detached shim is not our child: init reaps it)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except FileNotFoundError:
        return False


def old_build_processes(site: Path) -> list[int]:
    """Live processes run from the earlier build's shim or agent binary."""
    found = []
    for entry in os.scandir("/proc"):
        try:
            if entry.name.isdigit() and os.readlink(f"/proc/{entry.name}/exe").startswith(
                str(site)
            ):
                found.append(int(entry.name))
        except OSError:
            continue  # gone, or a kernel thread
    return [pid for pid in found if live(pid)]


@pytest.fixture
def old_boxes(baseline: Path, home: Path, rootfs: Path) -> Iterator[dict[str, int]]:
    """Four boxes the earlier build left: running, ended on its own, to be
    killed, never started.  Their shims' pids, killed at the end whatever
    the test did."""
    out = run_baseline(
        baseline,
        home,
        f"""
        kept = rt.create(rootfs={str(rootfs)!r}, name="kept", detach=True)
        kept.run(["sh", "-c", "echo from-the-old-build > /root/mark"])
        batch = rt.create(rootfs={str(rootfs)!r}, name="batch", detach=True,
                          cmd=["sh", "-c", "echo logged; sleep 1; exit 7"])
        batch.start()
        doomed = rt.create(rootfs={str(rootfs)!r}, name="doomed", detach=True)
        doomed.start()
        rt.create(rootfs={str(rootfs)!r}, name="fresh", detach=True).close()
        for b in (kept, batch, doomed):
            print(b.name, b.shim_pid)
        """,
    )
    shims = {name: int(pid) for name, pid in (line.split() for line in out.splitlines())}
    assert all(live(pid) for pid in shims.values())
    assert len(old_build_processes(baseline)) == 6  # three shims, three agents
    yield shims
    for pid in shims.values():
        if live(pid):
            os.kill(pid, signal.SIGKILL)


def test_the_new_build_takes_over_the_old_builds_boxes(
    home: Path, baseline: Path, old_boxes: dict[str, int]
) -> None:
    os.kill(old_boxes["doomed"], signal.SIGKILL)  # dies with nobody watching
    deadline = time.monotonic() + 20
    while live(old_boxes["batch"]) and time.monotonic() < deadline:
        time.sleep(0.05)  # its main command ends with nobody watching
    with boxlite_ffi.Runtime(home) as rt:
        statuses = {str(info.name): info.status for info in rt.list()}
        assert statuses == {
            "kept": BoxStatus.RUNNING,
            "batch": BoxStatus.EXITED,
            "doomed": BoxStatus.LOST,
            "fresh": BoxStatus.CONFIGURED,
        }
        kept = rt.get("kept")
        assert kept.shim_pid == old_boxes["kept"]  # the old shim, reattached
        assert kept.run(["cat", "/root/mark"]).stdout == b"from-the-old-build\n"
        kept.stop()
        assert kept.status == BoxStatus.STOPPED and not live(old_boxes["kept"])
        kept.start()  # now by this build's shim, on the same writable layer
        assert kept.run(["cat", "/root/mark"]).stdout == b"from-the-old-build\n"

        batch = rt.get("batch")
        end = batch.wait(timeout=20)
        assert (end.outcome, end.exit_code) == (Outcome.EXITED, 7)
        assert batch.logs().stdout == b"logged\n"

        fresh = rt.get("fresh")
        fresh.start()
        assert fresh.run(["echo", "hi"]).stdout == b"hi\n"

        for name in ("kept", "batch", "doomed", "fresh"):
            rt.remove(name, force=True)
        assert rt.list() == []
    assert box_processes() == []
    assert old_build_processes(baseline) == []
