"""A box's statuses, as its record in the store holds them.

    configured -> starting -> running -> stopping -> stopped
                                      -> exited   (its main command ended)
                           -> failed  (it could not start)
                                      -> lost     (its shim died unasked, or the host restarted)
    stopped, exited, failed, lost -> starting (start again: the writable layer stays)

Removing is not a status: a removed box's record is hidden from lookups
and kept a while, so a waiter still learns how its run ended.
"""

from __future__ import annotations

from collections.abc import Iterable

from ..errors import Code, InvalidArgumentError


class BoxStatus(Code):
    CONFIGURED = "configured"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    EXITED = "exited"
    FAILED = "failed"
    LOST = "lost"  # the run ended without a stop or an end of its main command


LIVE = frozenset({BoxStatus.STARTING, BoxStatus.RUNNING, BoxStatus.STOPPING})
ENDED = frozenset({BoxStatus.STOPPED, BoxStatus.EXITED, BoxStatus.FAILED, BoxStatus.LOST})


def wanted_statuses(
    status: BoxStatus | str | Iterable[BoxStatus | str] | None,
) -> set[BoxStatus] | None:
    """``list``'s filter: one status or several (None: every box)."""
    if status is None:
        return None
    try:
        values = [status] if isinstance(status, str) else list(status)
        return {BoxStatus(value) for value in values}
    except (TypeError, ValueError):
        raise InvalidArgumentError(f"unknown box status in {status!r}") from None
