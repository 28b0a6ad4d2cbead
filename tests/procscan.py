"""Find live box processes (supervisors, agents, QEMU) by scanning /proc.

Only the boxes of the boxlite_ffi this test run imports count: a shim whose
--agent lies in its libexec directory, and the agents and network helpers
under such a shim.  So two suites on one machine (two checkouts, each
installed in a virtualenv of its own) do not take each other's boxes for
leaks."""

from __future__ import annotations

import os

from boxlite_ffi.home import libexec_dir

# A box's supervisor (the shim, or the vm engine's boxlite-vmm) and what runs
# under it: the agent, the network helpers, QEMU (its name cut to 15 bytes),
# the vm engine's virtiofsd.
SUPERVISORS = {"boxlite-shim", "boxlite-vmm"}
BOX_PROCESS_NAMES = {
    *SUPERVISORS,
    "boxlite-agent",
    "slirp4netns",
    "qemu-system-x86",
    "passt",
    "passt.avx2",
    "virtiofsd",
}


def _read(pid: int, name: str) -> bytes:
    with open(f"/proc/{pid}/{name}", "rb") as f:
        return f.read()


def _ours(pid: int, comm: str, parents: dict[int, int], shims: set[int]) -> bool:
    """Whether this process belongs to a box of our installed package."""
    if comm in SUPERVISORS:
        return pid in shims
    for _ in range(4):  # agent and helper: a child or grandchild of the shim
        pid = parents.get(pid, 0)
        if pid in shims:
            return True
    return False


def box_processes() -> list[tuple[int, str]]:
    """(pid, name) of every live, non-zombie shim or agent of ours."""
    ours_agent = os.fsencode(libexec_dir() / "boxlite-agent")
    live: dict[int, str] = {}
    parents: dict[int, int] = {}
    shims: set[int] = set()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        try:
            comm = _read(pid, "comm").decode().strip()
            state, ppid = _read(pid, "stat").rsplit(b")", 1)[1].split()[:2]
            parents[pid] = int(ppid)
            if comm not in BOX_PROCESS_NAMES or state == b"Z":
                continue
            live[pid] = comm
            if comm in SUPERVISORS and ours_agent in _read(pid, "cmdline").split(b"\0"):
                shims.add(pid)
        except (OSError, ValueError):
            continue  # exited while we looked
    return sorted((pid, comm) for pid, comm in live.items() if _ours(pid, comm, parents, shims))
