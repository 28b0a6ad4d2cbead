"""Find live box processes (shims and agents) by scanning /proc."""

from __future__ import annotations

import os

BOX_PROCESS_NAMES = {"boxlite-shim", "boxlite-agent", "slirp4netns"}


def box_processes() -> list[tuple[int, str]]:
    """(pid, name) of every live, non-zombie shim or agent."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/comm") as f:
                comm = f.read().strip()
            with open(f"/proc/{entry.name}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue  # exited while we looked
        if comm in BOX_PROCESS_NAMES and state != "Z":
            found.append((int(entry.name), comm))
    return found
