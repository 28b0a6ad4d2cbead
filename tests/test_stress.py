"""Exactly one Exit per execution while natural exit, kill, timeout, close
and runtime close race each other with random timing."""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path

import pytest

import boxlite_ffi
from boxlite_ffi import Outcome

# A second completion of one execution would raise inside a callback and be
# reported as unraisable: that fails the test.
pytestmark = [
    pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning"),
    pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning"),
]

ALLOWED = {
    "none": {Outcome.EXITED},
    "kill": {Outcome.EXITED, Outcome.SIGNALED},
    "close": {Outcome.EXITED, Outcome.FORCE_CLOSED},
    "timeout": {Outcome.EXITED, Outcome.TIMED_OUT},
}


def test_random_races_give_exactly_one_exit_each(home: Path, rootfs: Path) -> None:
    rng = random.Random(20261123)
    for round_ in range(25):
        rt = boxlite_ffi.Runtime(home / str(round_), queue_capacity=rng.choice([4, 64, 4096]))
        boxes = [rt.create(rootfs=rootfs) for _ in range(2)]
        plans = []
        for i in range(50):
            action = rng.choice(list(ALLOWED))
            delay = rng.random() * 0.05
            sleep = rng.choice(["0", "0.01", "0.05", "0.2"])
            timeout = rng.choice([0.01, 0.05]) if action == "timeout" else None
            script = f"echo {i}; sleep {sleep}; head -c {rng.randrange(0, 300_000)} /dev/zero"
            execution = boxes[i % 2].exec(["sh", "-c", script], timeout=timeout)
            plans.append((execution, action, delay))

        def act(execution: boxlite_ffi.Execution, action: str, delay: float, closing: bool) -> None:
            time.sleep(delay)
            try:
                if action == "kill":
                    execution.kill()
                elif action == "close":
                    execution.close()
            except boxlite_ffi.ExecClosedError:
                pass  # it ended first: the race may go either way
            except boxlite_ffi.RuntimeClosedError:
                assert closing  # only a closing runtime may refuse

        close_runtime = round_ % 3 == 2
        threads = [threading.Thread(target=act, args=(*plan, close_runtime)) for plan in plans]
        for t in threads:
            t.start()
        if close_runtime:
            time.sleep(rng.random() * 0.1)
            rt.close()
        for t in threads:
            t.join()
        for execution, action, _ in plans:
            try:
                result = execution.wait(timeout=30)
            except boxlite_ffi.RuntimeClosedError:
                assert close_runtime
                continue
            assert result.outcome in ALLOWED[action], (action, result)
        rt.close()
