"""What a box's record says, as the API reports it: how a run ended
(``BoxExit``) and the box itself (``BoxInfo``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .exits import Outcome
from .status import BoxStatus
from .store import BoxRecord


@dataclass(frozen=True)
class BoxExit:
    """How a box's run ended (``Box.wait``).

    ``outcome`` is its main command's (EXITED with ``exit_code``, SIGNALED
    with ``signal``, FAILED_TO_START with ``reason``), LOST when the run
    ended unasked (``reason`` says how), or None when the box was stopped.  ``exit_code`` follows
    the shell: 128+n after signal n, 127/126 when the command could not be
    started.
    """

    status: BoxStatus
    outcome: Outcome | None
    exit_code: int | None
    signal: int | None
    reason: str | None
    finished: float | None

    @classmethod
    def of(cls, record: BoxRecord) -> BoxExit:
        outcome = None
        if record.status == BoxStatus.EXITED:
            outcome = Outcome.EXITED if record.exit_signal is None else Outcome.SIGNALED
        elif record.status == BoxStatus.FAILED and record.exit_code is not None:
            outcome = Outcome.FAILED_TO_START
        elif record.status == BoxStatus.LOST:
            outcome = Outcome.LOST
        return cls(
            BoxStatus(record.status),
            outcome,
            record.exit_code,
            record.exit_signal,
            record.reason,
            record.finished,
        )


@dataclass(frozen=True)
class BoxInfo:
    """A box as ``Runtime.list`` and ``Box.info`` report it."""

    id: str
    name: str | None
    image: str
    status: BoxStatus
    exit_code: int | None
    signal: int | None
    reason: str | None
    created: float
    started: float | None
    finished: float | None
    detached: bool
    auto_remove: bool
    config: dict[str, Any]
    engine: str  # "ns" or "vm"
    accelerator: str | None  # a vm box's: "kvm" or "tcg"

    @classmethod
    def of(cls, record: BoxRecord) -> BoxInfo:
        return cls(
            record.id,
            record.name,
            record.config.get("image", ""),
            BoxStatus(record.status),
            record.exit_code,
            record.exit_signal,
            record.reason,
            record.created,
            record.started,
            record.finished,
            record.detached,
            bool(record.config.get("auto_remove")),
            record.config,
            record.config.get("engine", "ns"),
            (record.config.get("vm") or {}).get("accel"),
        )
