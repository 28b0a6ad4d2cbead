"""A model test of the native queue through boxlite_runtime_post, drain and take.

Hypothesis drives random interleavings of post, drain and close against a
reference model: a FIFO with a capacity that refuses posts once closed.
"""

from __future__ import annotations

import collections
from pathlib import Path

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from boxlite_ffi._core import callbacks as _callbacks
from boxlite_ffi._core.tokens import TOKENS
from boxlite_ffi._native import ffi, lib
from boxlite_ffi.errors import ErrorCode
from boxlite_ffi.home import libexec_dir

CAPACITY = 4


class Recorder:
    def __init__(self, delivered: list[int]) -> None:
        self.delivered = delivered

    def on_done(self, status: int, message: str | None) -> None:
        self.delivered.append(status)


class QueueModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        opts = ffi.new("boxlite_runtime_options *")
        libexec = ffi.new("char[]", str(libexec_dir()).encode())
        opts.libexec_dir = libexec
        opts.queue_capacity = CAPACITY
        out = ffi.new("boxlite_runtime **")
        assert lib.boxlite_runtime_new(opts, out) == ErrorCode.OK
        self.rt = out[0]
        self.model: collections.deque[int] = collections.deque()
        self.closed = False
        self.delivered: list[int] = []
        self.owner = object()
        self.batch = _callbacks.Batch(6)

    @rule(status=st.integers(0, 1000))
    def post(self, status: int) -> None:
        token = TOKENS.register(self.owner, Recorder(self.delivered))
        rc = lib.boxlite_runtime_post(
            self.rt, _callbacks.DONE, ffi.cast("void *", token), status, 0
        )
        if self.closed:
            expected = ErrorCode.RUNTIME_CLOSED
        elif len(self.model) >= CAPACITY:
            expected = ErrorCode.TIMEOUT
        else:
            expected = ErrorCode.OK
        assert rc == expected
        if rc == ErrorCode.OK:
            self.model.append(status)
        else:
            TOKENS.claim(token)

    @rule(max_events=st.integers(1, 6))
    def drain(self, max_events: int) -> None:
        before = len(self.delivered)
        # Closing completes asynchronously (the reactor ends its executions
        # first), so the closed-and-empty answer may take a moment.
        timeout = 5000 if self.closed and not self.model else 0
        n = lib.boxlite_runtime_drain(self.rt, max_events, timeout)
        if self.closed and not self.model:
            assert n == -ErrorCode.RUNTIME_CLOSED
            return
        expected = [self.model.popleft() for _ in range(min(max_events, len(self.model)))]
        assert n == len(expected)
        assert self.delivered[before:] == expected

    @rule(max_events=st.integers(1, 6))
    def take(self, max_events: int) -> None:
        """The batch path the drain thread uses: take, dispatch, release."""
        before = len(self.delivered)
        timeout = 5000 if self.closed and not self.model else 0
        n = lib.boxlite_runtime_take(self.rt, self.batch.events, max_events, timeout)
        if self.closed and not self.model:
            assert n == -ErrorCode.RUNTIME_CLOSED
            return
        expected = [self.model.popleft() for _ in range(min(max_events, len(self.model)))]
        assert n == len(expected)
        assert len(self.delivered) == before  # taking runs nothing
        try:
            self.batch.dispatch(n)
        finally:
            lib.boxlite_runtime_release(self.rt, self.batch.events, n)
        assert self.delivered[before:] == expected

    @precondition(lambda self: not self.closed)
    @rule()
    def close(self) -> None:
        assert lib.boxlite_runtime_close(self.rt) == ErrorCode.OK
        self.closed = True

    @invariant()
    def nothing_lost_or_invented(self) -> None:
        assert TOKENS.count(self.owner) == len(self.model)

    def teardown(self) -> None:
        lib.boxlite_runtime_free(self.rt)  # releases what was never drained
        TOKENS.claim_all(self.owner)


QueueModel.TestCase.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
TestQueueModel = QueueModel.TestCase


def test_libexec_is_installed() -> None:
    assert (Path(str(libexec_dir())) / "boxlite-shim").is_file()
