"""The box lifecycle driven from two processes at random, against a model:
every answer and every listing must be what the model says, from either
process, and exactly the running boxes have live processes."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

import boxlite_ffi

from lifecycle_ops import apply, listing
from procscan import box_processes

NAMES = st.sampled_from(["p", "q", "r"])  # never an id prefix (ids are hex)
SIDES = st.sampled_from(["here", "there"])
WORKER = Path(__file__).with_name("lifecycle_ops.py")


def expected(model: dict[str, str], op: str, name: str) -> str:
    """The answer the model predicts, updating the model."""
    status = model.get(name)
    if op == "create":
        if status is not None:
            return "err AlreadyExistsError"
        model[name] = "configured"
        return "ok"
    if status is None:
        return "err NotFoundError"
    if op == "start":
        model[name] = "running"
    elif op == "stop" and status == "running":
        model[name] = "stopped"
    elif op == "exec":
        if status == "stopped":
            return "err InvalidStateError not_running"
        model[name] = "running"  # a configured box starts on its first exec
    elif op == "remove" and status == "running":
        return "err InvalidStateError box_running"
    elif op in ("remove", "force_remove"):
        del model[name]
    return "ok"


class TwoProcesses(RuleBasedStateMachine):
    rootfs = ""  # set by the fixture below: hypothesis cannot take fixtures

    def __init__(self) -> None:
        super().__init__()
        self.tmp = tempfile.TemporaryDirectory()
        self.home = Path(self.tmp.name) / "home"
        self.rt = boxlite_ffi.Runtime(self.home)
        self.worker = subprocess.Popen(
            [sys.executable, str(WORKER), str(self.home), self.rootfs],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.model: dict[str, str] = {}

    def there(self, op: str, name: str) -> object:
        assert self.worker.stdin is not None and self.worker.stdout is not None
        self.worker.stdin.write(json.dumps([op, name]) + "\n")
        self.worker.stdin.flush()
        return json.loads(self.worker.stdout.readline())

    def do(self, side: str, op: str, name: str) -> None:
        want = expected(self.model, op, name)
        got = apply(self.rt, self.rootfs, op, name) if side == "here" else self.there(op, name)
        assert got == want, (side, op, name)

    @rule(side=SIDES, name=NAMES)
    def create(self, side: str, name: str) -> None:
        self.do(side, "create", name)

    @rule(side=SIDES, name=NAMES, op=st.sampled_from(["start", "stop", "exec"]))
    def run_state(self, side: str, name: str, op: str) -> None:
        self.do(side, op, name)

    @rule(side=SIDES, name=NAMES, force=st.booleans())
    def remove(self, side: str, name: str, force: bool) -> None:
        self.do(side, "force_remove" if force else "remove", name)

    @invariant()
    def both_processes_see_the_model(self) -> None:
        assert listing(self.rt) == self.model
        assert self.there("list", "") == self.model
        running = sum(1 for status in self.model.values() if status == "running")
        assert len(box_processes()) == 2 * running  # a shim and an agent each

    def teardown(self) -> None:
        for name in list(self.model):
            apply(self.rt, self.rootfs, "force_remove", name)
        assert self.worker.stdin is not None
        self.worker.stdin.close()
        self.worker.wait(timeout=30)
        self.rt.close()
        self.tmp.cleanup()


@pytest.fixture(scope="module", autouse=True)
def _rootfs(rootfs: Path) -> None:
    TwoProcesses.rootfs = str(rootfs)


TwoProcesses.TestCase.settings = settings(max_examples=25, stateful_step_count=20, deadline=None)
test_two_processes_follow_the_model = TwoProcesses.TestCase
