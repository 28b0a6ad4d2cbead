"""Timeouts end an execution's whole process tree, daemons included, with a
typed outcome; output produced before the timeout is kept."""

from __future__ import annotations

import time

import pytest

import boxlite_ffi
from boxlite_ffi import Outcome

pytestmark = pytest.mark.parity


def box_pids(box: boxlite_ffi.Box) -> list[str]:
    out = box.run(["sh", "-c", "for p in /proc/[0-9]*; do echo ${p#/proc/} $(cat $p/comm); done"])
    return [line for line in out.stdout.decode().splitlines() if "sleep" in line]


def test_timeout_is_its_own_outcome_and_keeps_earlier_output(box: boxlite_ffi.Box) -> None:
    result = box.run(["sh", "-c", "echo before; sleep 60; echo never"], timeout=0.5)
    assert result.outcome is Outcome.TIMED_OUT
    assert result.exit_code == 124 and result.signal is not None
    assert result.stdout == b"before\n"


def test_timeout_ends_daemonized_grandchildren(box: boxlite_ffi.Box) -> None:
    # A double-forked, setsid'd daemon leaves the process group and parentage.
    script = "(setsid sh -c 'sleep 300 & exit' &); sleep 300 & echo started; wait"
    result = box.run(["sh", "-c", script], timeout=0.5)
    assert result.outcome is Outcome.TIMED_OUT and result.stdout == b"started\n"
    assert box_pids(box) == []


def test_sigterm_ignored_means_sigkill_after_the_grace(box: boxlite_ffi.Box) -> None:
    started = time.monotonic()
    result = box.run(["sh", "-c", "trap '' TERM; while :; do sleep 0.1; done"], timeout=0.3)
    assert result.outcome is Outcome.TIMED_OUT
    assert result.signal == 9
    assert time.monotonic() - started < 10  # 0.3 s, then the 2 s grace: bounded
    assert box_pids(box) == []


def test_an_execution_that_finishes_in_time_is_untouched(box: boxlite_ffi.Box) -> None:
    result = box.run(["sh", "-c", "sleep 0.1; exit 3"], timeout=30)
    assert result.outcome is Outcome.EXITED and result.exit_code == 3


def test_invalid_timeouts_are_refused(box: boxlite_ffi.Box) -> None:
    for bad in (0, -1, 1e12):
        with pytest.raises(boxlite_ffi.InvalidArgumentError):
            box.exec(["true"], timeout=bad)
