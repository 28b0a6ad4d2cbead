"""Running the ``boxlite`` command in tests, and checking it left nothing:
no live shim or agent, no box record, no box directory."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from procscan import box_processes

CLI = [sys.executable, "-P", "-m", "boxlite_ffi.cli"]


def boxlite(
    home: Path, *args: str, stdin: bytes | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [*CLI, "--home", str(home), *args],
        input=stdin if stdin is not None else b"",
        capture_output=True,
        timeout=timeout,
    )


def records(home: Path) -> list[str]:
    """Box records not removed, read straight from SQLite: opening a
    runtime would tidy up what a leak left and hide it."""
    db = home / "boxlite.db"
    if not db.exists():
        return []
    with sqlite3.connect(db) as conn:
        if not conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'boxes'").fetchone():
            return []  # the first open never got as far as making the table
        return [row[0] for row in conn.execute("SELECT id FROM boxes WHERE removed IS NULL")]


def assert_nothing_left(home: Path) -> None:
    deadline = time.monotonic() + 5
    while box_processes() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert box_processes() == []
    assert records(home) == []
    boxes = home / "boxes"
    assert not boxes.exists() or list(boxes.iterdir()) == []
