"""How things end: an execution's outcomes, the shell's exit-code rule, and
the end of a box's main command as its shim records it in ``<dir>/exit``
(``exited N MILLIS``, ``signaled N MILLIS`` or ``failed ERRNO MILLIS``)."""

from __future__ import annotations

import enum
import os
from pathlib import Path

from .._core.core import failed_status, signaled_status
from . import boxdir
from .status import BoxStatus
from .store import Change


class Outcome(enum.Enum):
    """How an execution ended (BOXLITE_OUTCOME_* in include/boxlite.h, in
    its order: tests/test_facts.py checks it)."""

    EXITED = "exited"
    SIGNALED = "signaled"
    TIMED_OUT = "timed_out"
    KILLED = "killed"
    FORCE_CLOSED = "force_closed"
    LOST = "lost"
    FAILED_TO_START = "failed_to_start"
    DETACHED = "detached"  # let go of (Execution.detach): it runs on in its box
    OOM = "oom"  # SIGKILLed while its box's memory limit made the kernel kill (exit code 137)


# The native outcome numbers; OOM is the Python layer's own reading of KILLED.
NATIVE_OUTCOMES = {i: o for i, o in enumerate(Outcome, start=1) if o is not Outcome.OOM}


def read_exit(box_dir: Path) -> Change | None:
    """The end the shim recorded for the main command, as record fields."""
    try:
        what, value, millis = (box_dir / boxdir.EXIT).read_text().split()
        number, finished = int(value), int(millis) / 1000
    except (OSError, ValueError):
        return None
    if what == "exited":
        return {"status": BoxStatus.EXITED, "exit_code": number, "finished": finished}
    if what == "signaled":
        return {
            "status": BoxStatus.EXITED,
            "exit_code": signaled_status(number),
            "exit_signal": number,
            "finished": finished,
        }
    reason = f"the main command could not start: {os.strerror(number)}"
    fields: Change = {"status": BoxStatus.FAILED, "exit_code": failed_status(number)}
    return fields | {"reason": reason, "finished": finished}
