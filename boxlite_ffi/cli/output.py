"""How the ``boxlite`` command shows things: aligned tables, JSON for
scripts, one-line errors, and a progress bar for pulls on a terminal."""

from __future__ import annotations

import dataclasses
import enum
import json
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, TextIO

from ..state.status import BoxStatus

if TYPE_CHECKING:
    from ..image import Progress
    from ..state.recovery import RecoveryReport
    from ..state.views import BoxInfo


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], out: TextIO = sys.stdout) -> None:
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]
    for row in [headers, *rows]:
        out.write("   ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
        out.write("\n")


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {k: _plain(v) for k, v in dataclasses.asdict(value).items()}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def as_json(value: Any, out: TextIO = sys.stdout) -> None:
    json.dump(_plain(value), out, indent=2, sort_keys=True)
    out.write("\n")


def ago(when: float | None, now: float | None = None) -> str:
    if when is None:
        return ""
    seconds = max(0, int((now or time.time()) - when))
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size:
            n = seconds // size
            return f"{n} {unit}{'s' if n > 1 else ''} ago"
    return f"{seconds} second{'s' if seconds != 1 else ''} ago"


def status_text(info: BoxInfo) -> str:
    if info.status == BoxStatus.EXITED and info.exit_code is not None:
        return f"exited ({info.exit_code})"
    if info.status == BoxStatus.FAILED and info.reason:
        return f"failed ({info.reason})"
    return info.status.value


def box_rows(infos: Sequence[BoxInfo]) -> list[list[str]]:
    now = time.time()
    return [[i.id, i.name or "", i.image, status_text(i), ago(i.created, now)] for i in infos]


def size_text(n: int) -> str:
    value = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{n} B"


class ProgressBar:
    """One line on a terminal, redrawn at most ten times a second."""

    WIDTH = 30

    def __init__(self, out: TextIO = sys.stderr) -> None:
        self.out = out
        self.last = 0.0

    def __call__(self, p: Progress) -> None:
        now = time.monotonic()
        done = p.layers_done == p.layers_total
        if not done and now - self.last < 0.1:
            return
        self.last = now
        fraction = p.bytes_done / p.bytes_total if p.bytes_total else 1.0
        filled = int(fraction * self.WIDTH)
        bar = "#" * filled + "-" * (self.WIDTH - filled)
        self.out.write(
            f"\r{p.image}: [{bar}] {size_text(p.bytes_done)}/{size_text(p.bytes_total)}"
            f" layers {p.layers_done}/{p.layers_total}"
        )
        if done:
            self.out.write("\n")
        self.out.flush()


def error(message: str) -> None:
    """One line on stderr."""
    first = " ".join(str(message).split())
    sys.stderr.write(f"boxlite: {first}\n")


def recovery(report: RecoveryReport, out: TextIO = sys.stdout) -> None:
    """What ``boxlite recover`` did, one line per fact."""
    if report.store_moved_to is not None:
        out.write(f"old store kept as {report.store_moved_to}\n")
    for box in report.boxes:
        name = f" ({box.name})" if box.name else ""
        note = f": {box.note}" if box.note else ""
        out.write(f"box {box.id}{name} recovered, {box.status}{note}\n")
    for image in report.images:
        out.write(f"image {image} recorded\n")
    for tag in report.lost_tags:
        out.write(f"tag {tag} lost: only the old store knew it (boxlite images ls; tag again)\n")
    for path, why in report.skipped:
        out.write(f"left as it is: {path}: {why}\n")
    if not (report.boxes or report.images or report.store_moved_to):
        out.write("nothing to recover\n")
