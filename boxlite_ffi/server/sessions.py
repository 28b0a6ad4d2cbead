"""Execution sessions: the server stays attached to every execution it starts.

A ``Session`` owns one execution (always with a stdin pipe and ordered
output) and one asyncio task, its *pump*, which takes the execution's output
in the order the box read it into a *window*.  Every byte has a position:
its offset in its own stream, as ``Execution.cursor`` counts them, and a
global one (both streams together, in order).  A client attaches from a
cursor (``Attachment``) and is handed what it has not had, then live output.

The window is bounded (``Policy.window`` bytes, plus at most one chunk).  It
forgets its oldest bytes only to make room, and only bytes that were sent to
a client with at least ``Policy.reserve`` sent after them: what may still
have been in flight (socket buffers) when a client vanished.  When nothing
can be forgotten the pump stops taking output, so the native stream credit
is not returned, the agent stops reading the process's pipes and the process
blocks in ``write()``: a session without a client holds the process, not its
output.  A client that comes back with a cursor resumes exactly; one without
gets the whole window, which covers the reserve (a repeat, never a gap).

A session with no client for ``Policy.orphan_grace`` seconds is reaped:
SIGHUP, then SIGTERM, then SIGKILL, ``Policy.reap_step`` apart.  Once an
execution is being killed (reaped, ``Sessions.kill``, shutdown) its window
forgets the oldest bytes whether sent or not: a killed process leaves only
what its pipes hold, and its exit comes once that is taken.

Threads: none of its own.  Everything here runs on the server's event loop;
the native layer wakes it (``ChunkStream`` and futures are thread-safe).
``Sessions`` owns every pump and reaping task and one ticker task that
reaps orphans and forgets ended sessions; ``Sessions.close`` ends them all.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal as signals
import time
from collections import deque
from collections.abc import AsyncGenerator, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar, cast

from .. import aio
from ..errors import (
    BoxliteError,
    ExecClosedError,
    InvalidArgumentError,
    InvalidStateError,
    LimitExceededError,
    NotFoundError,
    StateReason,
)
from ..execution import STDERR, STDOUT, ExecResult
from ..spec import Env
from ..state.exits import Outcome
from ..streams import OutputChunk
from .state import ExecCounts

if TYPE_CHECKING:
    from ..box import Box
    from .settings import Settings
    from .state import ServerState

STREAMS = (STDOUT, STDERR)
STREAM_NUMBERS = {"stdout": STDOUT, "stderr": STDERR}
# Native credit per stream of a session's execution: what the agent may send
# beyond the window before the pump takes it (so at most twice this waits
# in the execution's streams).
STREAM_WINDOW = 256 * 1024
REAP_SIGNALS = (signals.SIGHUP, signals.SIGTERM, signals.SIGKILL)
REAP_STEP_S = 1.0  # between the reaping signals
ENDED_KEEP_S = 600.0  # an ended execution's output and exit, as long as the box keeps them
ENDED_PER_BOX = 64  # ended sessions kept per box, the oldest forgotten first
TICK_MAX_S = 1.0  # how often at most orphans and ended sessions are looked for
CLOSE_WAIT_S = 10.0  # for killed executions' exits at shutdown

Cursor = tuple[int, int]
T = TypeVar("T")


@dataclass(frozen=True)
class Policy:
    """The bounds of a server's sessions (from its ``Settings``)."""

    window: int
    orphan_grace: float
    max_per_box: int
    max_total: int
    reap_step: float = REAP_STEP_S
    ended_keep: float = ENDED_KEEP_S

    def __post_init__(self) -> None:
        if self.window < 2 * STREAM_WINDOW:
            raise InvalidArgumentError(f"the attach window must be at least {2 * STREAM_WINDOW}")
        if self.orphan_grace <= 0 or self.reap_step <= 0 or self.ended_keep <= 0:
            raise InvalidArgumentError("session grace periods must be positive")

    @property
    def reserve(self) -> int:
        """Sent bytes kept for a client that reconnects without a cursor."""
        return self.window // 2

    @classmethod
    def of(cls, settings: Settings) -> Policy:
        return cls(
            window=settings.attach_window_bytes,
            orphan_grace=settings.orphan_grace_seconds,
            max_per_box=settings.limits.max_executions_per_box,
            max_total=settings.limits.max_executions,
        )


@dataclass(frozen=True)
class Chunk:
    """Output of one stream: ``data`` starts at offset ``start`` of its
    stream and at global position ``pos`` (both streams, in order)."""

    seq: int
    stream: int  # STDOUT or STDERR
    start: int
    pos: int
    data: bytes

    @property
    def end(self) -> int:
        return self.start + len(self.data)

    @property
    def pos_end(self) -> int:
        return self.pos + len(self.data)


@dataclass(frozen=True)
class Exit:
    """How a session's execution ended, with its full outcome."""

    outcome: Outcome
    exit_code: int
    signal: int | None
    error_message: str | None
    duration_ms: int
    os_error: int | None = None

    @classmethod
    def of(cls, result: ExecResult, duration_ms: int) -> Exit:
        r = result
        return cls(r.outcome, r.exit_code, r.signal, r.error_message, duration_ms, r.os_error)

    @classmethod
    def lost(cls, error: BoxliteError, duration_ms: int) -> Exit:
        """The execution's end could not be learned (the runtime closed)."""
        return cls(Outcome.LOST, 255, None, error.message, duration_ms)


@dataclass
class Totals:
    """Monotonic counters of one box's sessions (for its metrics)."""

    started: int = 0
    failed: int = 0  # ended other than by exiting 0
    stdin_bytes: int = 0
    output_bytes: int = 0


class Session:
    """One execution the server started, and the window of its output."""

    def __init__(
        self, box_id: str, execution: aio.Execution, tty: bool, policy: Policy, totals: Totals
    ) -> None:
        self.box_id = box_id
        self.id = execution.id
        self.tty = tty
        self.started_at = time.time()
        self._clock = time.monotonic()
        self._execution = execution
        self._policy = policy
        self._totals = totals
        self._chunks: deque[Chunk] = deque()
        self._held = 0
        self._seq = 0
        self._first = {s: 0 for s in STREAMS}  # offset of the oldest byte held
        self._end = {s: 0 for s in STREAMS}  # offset after the newest
        self._sent = 0  # global position up to which a client was sent output
        self._client: Attachment | None = None
        self._idle_since: float | None = time.monotonic()
        self._killing = False
        self._exit: Exit | None = None
        self._ended_at: float | None = None
        self._changed = asyncio.Event()
        self._reaping: asyncio.Task[None] | None = None
        self.pump = asyncio.create_task(self._pump(), name=f"boxlite-session-{self.id}")

    def __repr__(self) -> str:
        return f"<Session {self.id} box={self.box_id} exit={self._exit}>"

    # ---- what a route asks ----------------------------------------------

    @property
    def exit(self) -> Exit | None:
        return self._exit

    @property
    def ended(self) -> bool:
        return self._exit is not None

    @property
    def attached(self) -> bool:
        return self._client is not None

    @property
    def produced(self) -> Cursor:
        """(stdout, stderr) bytes taken from the execution so far."""
        return self._end[STDOUT], self._end[STDERR]

    @property
    def window_start(self) -> Cursor:
        """(stdout, stderr) offsets of the oldest bytes still held."""
        return self._first[STDOUT], self._first[STDERR]

    @property
    def held(self) -> int:
        return self._held

    def duration_ms(self) -> int:
        return int((time.monotonic() - self._clock) * 1000)

    # ---- the pump -----------------------------------------------------------

    async def _pump(self) -> None:
        output = cast(AsyncGenerator[OutputChunk, None], aiter(self._execution.output))
        try:
            while True:
                await self._until(self._make_room)
                try:
                    item = await anext(output)
                except StopAsyncIteration:
                    break
                self._add(STREAM_NUMBERS[item.stream], item.data)
            end = Exit.of(await self._execution.wait(), self.duration_ms())
        except BoxliteError as error:
            end = Exit.lost(error, self.duration_ms())
        finally:
            await output.aclose()
        self._totals.failed += end.outcome is not Outcome.EXITED or end.exit_code != 0
        self._exit, self._ended_at = end, time.monotonic()
        self._notify()

    def _add(self, stream: int, data: bytes) -> None:
        pos = self._end[STDOUT] + self._end[STDERR]
        self._chunks.append(Chunk(self._seq, stream, self._end[stream], pos, data))
        self._seq += 1
        self._end[stream] += len(data)
        self._held += len(data)
        self._totals.output_bytes += len(data)
        self._notify()

    def _make_room(self) -> bool:
        """Forget what may be forgotten until the window has room; whether it has."""
        while self._held >= self._policy.window and self._chunks:
            oldest = self._chunks[0]
            if not self._forgettable(oldest):
                return False
            self._chunks.popleft()
            self._held -= len(oldest.data)
            self._first[oldest.stream] = oldest.end
        return True

    def _forgettable(self, chunk: Chunk) -> bool:
        if self._killing:
            return True
        if self._client is not None and chunk.seq >= self._client.next_seq:
            return False
        return chunk.pos_end <= self._sent - self._policy.reserve

    def _notify(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def _until(self, ready: Callable[[], bool]) -> None:
        while not ready():
            await self._changed.wait()

    # ---- clients ------------------------------------------------------------

    def attach(self, cursor: Cursor | None = None) -> Attachment:
        """The session's one client, from ``cursor`` (None: the window's
        start).  ``InvalidStateError`` (reason ``exec_busy``) while another
        is attached; ``InvalidArgumentError`` for a cursor past the output."""
        if self._client is not None:
            raise InvalidStateError(
                f"execution {self.id} has a client attached", StateReason.EXEC_BUSY
            )
        start = dict(self._first)
        if cursor is not None:
            for stream, offset in zip(STREAMS, check_cursor(cursor), strict=True):
                if offset > self._end[stream]:
                    raise InvalidArgumentError(
                        f"cursor {cursor}: only {self.produced} bytes were written"
                    )
                start[stream] = max(offset, self._first[stream])
        first = next((c.seq for c in self._chunks if c.end > start[c.stream]), self._seq)
        self._client = Attachment(self, start, first)
        self._idle_since = None
        self._notify()
        return self._client

    def _detach(self, client: Attachment) -> None:
        if self._client is client:
            self._client = None
            self._idle_since = time.monotonic()
            self._notify()

    def _piece(self, client: Attachment) -> Chunk | None:
        """The next output for ``client``, or None if it has it all."""
        if self._chunks and client.next_seq < self._chunks[0].seq:
            client.next_seq = self._chunks[0].seq  # forgotten while being killed
        while client.next_seq < self._seq:
            chunk = self._chunks[client.next_seq - self._chunks[0].seq]
            client.next_seq += 1
            skip = max(client.offsets[chunk.stream] - chunk.start, 0)
            client.offsets[chunk.stream] = chunk.end
            if skip < len(chunk.data):
                data = chunk.data[skip:]
                return Chunk(chunk.seq, chunk.stream, chunk.start + skip, chunk.pos + skip, data)
        return None

    def _sent_to(self, chunk: Chunk) -> None:
        if chunk.pos_end > self._sent:
            self._sent = chunk.pos_end
            self._notify()

    # ---- input and control ----------------------------------------------

    async def write(self, data: bytes) -> None:
        """Into stdin; returns once the pipe took it (its backpressure)."""
        await self._execution.write_stdin(data)
        self._totals.stdin_bytes += len(data)

    def close_stdin(self) -> None:
        self._execution.close_stdin()

    async def signal(self, signum: int) -> None:
        await self._execution.signal(signum)

    async def resize(self, rows: int, cols: int) -> None:
        if not self.tty:
            raise InvalidStateError(f"execution {self.id} has no terminal to resize")
        await self._execution.resize(rows, cols)

    def kill_now(self) -> None:
        """SIGKILL without waiting for its delivery (at a sync shutdown)."""
        self._killing = True
        with contextlib.suppress(BoxliteError):
            self._execution._inner.signal_future(signals.SIGKILL)

    async def kill(self) -> None:
        """SIGKILL; its output is then forgotten as needed for its exit to come."""
        self._killing = True
        self._notify()
        with contextlib.suppress(ExecClosedError):
            await self._execution.kill()

    # ---- reaping ------------------------------------------------------------

    def idle_for(self, now: float) -> float:
        """Seconds without a client (0 while one is attached)."""
        return 0.0 if self._idle_since is None else now - self._idle_since

    def ended_for(self, now: float) -> float:
        return 0.0 if self._ended_at is None else now - self._ended_at

    def reap(self) -> asyncio.Task[None]:
        """Start SIGHUP, SIGTERM, SIGKILL, a step apart (once)."""
        if self._reaping is None:
            self._reaping = asyncio.create_task(self._reap(), name=f"boxlite-reap-{self.id}")
        return self._reaping

    @property
    def reaping(self) -> asyncio.Task[None] | None:
        return self._reaping

    async def _reap(self) -> None:
        for signum in REAP_SIGNALS:
            if self.ended:
                return
            if signum == signals.SIGKILL:
                await self.kill()
            else:
                with contextlib.suppress(ExecClosedError):
                    await self.signal(signum)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.wait(), self._policy.reap_step)

    async def wait(self) -> Exit:
        await self._until(lambda: self._exit is not None)
        assert self._exit is not None
        return self._exit


@dataclass
class Attachment:
    """A session's client: what it was handed, from where it began."""

    session: Session
    offsets: dict[int, int]  # per stream: what it was handed up to
    next_seq: int
    start: Cursor = field(init=False)

    def __post_init__(self) -> None:
        self.start = self.offsets[STDOUT], self.offsets[STDERR]

    @property
    def cursor(self) -> Cursor:
        """(stdout, stderr) offsets after what it was handed."""
        return self.offsets[STDOUT], self.offsets[STDERR]

    async def next(self) -> Chunk | Exit:
        """The next output past its cursor, waiting for it; the Exit once
        the execution ended and it was handed everything."""
        session = self.session
        while True:
            if (piece := session._piece(self)) is not None:
                return piece
            if session.exit is not None:
                return session.exit
            await session._changed.wait()

    def sent(self, chunk: Chunk) -> None:
        """``chunk`` went out to the client (its send completed)."""
        self.session._sent_to(chunk)

    def close(self) -> None:
        """The client is gone: the session is an orphan from now on."""
        self.session._detach(self)


def check_cursor(cursor: Sequence[int]) -> Cursor:
    if len(cursor) != 2 or not all(
        isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in cursor
    ):
        raise InvalidArgumentError(f"a cursor is two offsets (stdout, stderr), not {cursor!r}")
    return cursor[0], cursor[1]


class Sessions:
    """A server's sessions, by execution id; owner of their tasks.  Made
    on the event loop they run on (``call`` reaches it from other threads)."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self._loop = asyncio.get_running_loop()
        self._sessions: dict[str, Session] = {}
        self._evicted: set[Session] = set()  # killed, their exit still to come
        self._starting: dict[str, int] = {}
        self._totals: dict[str, Totals] = {}
        self._ticker: asyncio.Task[None] | None = None
        self._closed = False

    # ---- the routes' calls ----------------------------------------------

    def call(self, work: Coroutine[object, object, T]) -> T:
        """Run ``work`` on the sessions' loop from another thread (a sync
        route's), and wait for it."""
        return asyncio.run_coroutine_threadsafe(work, self._loop).result()

    async def start(
        self,
        box: Box,
        argv: Sequence[str],
        *,
        env: Env | None = None,
        cwd: str | None = None,
        timeout: float | None = None,
        tty: bool = False,
        rows: int = 24,
        cols: int = 80,
        user: str | None = None,
    ) -> Session:
        """Run ``argv`` in ``box`` (started first if need be) as a new
        session; ``LimitExceededError`` beyond the policy's executions."""
        self._check_open()
        self._check_room(box.id)
        self._starting[box.id] = self._starting.get(box.id, 0) + 1
        try:
            execution = await aio.Box(box).exec(
                argv,
                env=env,
                cwd=cwd,
                stdin=True,
                ordered_output=True,
                timeout=timeout,
                tty=tty,
                rows=rows,
                cols=cols,
                output_window=STREAM_WINDOW,
                user=user,
            )
        finally:
            self._starting[box.id] -= 1
        totals = self._totals.setdefault(box.id, Totals())
        totals.started += 1
        session = Session(box.id, execution, tty, self.policy, totals)
        self._sessions[session.id] = session
        if self._closed:  # closed while the box started: nobody would end it
            await self._end(session)
            raise InvalidStateError("the server is shutting down")
        self._tick_soon()
        return session

    def get(self, box_id: str, exec_id: str) -> Session:
        session = self._sessions.get(exec_id)
        if session is None or session.box_id != box_id:
            raise NotFoundError(f"execution {exec_id!r} of box {box_id!r}")
        return session

    async def kill(self, box_id: str, exec_id: str) -> None:
        """SIGKILL and forget (DELETE): a client attached still gets the exit."""
        session = self.get(box_id, exec_id)
        del self._sessions[exec_id]
        if not session.ended:
            self._evicted.add(session)
            session.pump.add_done_callback(lambda _: self._evicted.discard(session))
            await session.kill()

    def count(self, box_id: str | None = None) -> ExecCounts:
        """``box_id``'s executions (every box's: None), for the metrics."""
        totals = self.totals(box_id)
        return ExecCounts(
            started=totals.started,
            failed=totals.failed,
            running=self.running(box_id),
            stdin_bytes=totals.stdin_bytes,
            output_bytes=totals.output_bytes,
        )

    def running(self, box_id: str | None = None) -> int:
        """Executions running (or starting) in ``box_id``, or in all boxes."""
        running = [s for s in self._sessions.values() if not s.ended]
        if box_id is None:
            return len(running) + len(self._evicted) + sum(self._starting.values())
        mine = [s for s in (*running, *self._evicted) if s.box_id == box_id]
        return len(mine) + self._starting.get(box_id, 0)

    def totals(self, box_id: str | None = None) -> Totals:
        """Monotonic counters of ``box_id``'s sessions (all boxes': None)."""
        if box_id is not None:
            return Totals(**vars(self._totals.get(box_id, Totals())))
        every = Totals()
        for one in self._totals.values():
            for name, value in vars(one).items():
                setattr(every, name, getattr(every, name) + value)
        return every

    def _check_open(self) -> None:
        if self._closed:
            raise InvalidStateError("the server is shutting down")

    def _check_room(self, box_id: str) -> None:
        if self.running(box_id) >= self.policy.max_per_box:
            raise LimitExceededError(
                f"box {box_id} runs {self.policy.max_per_box} executions, the most allowed"
            )
        if self.running() >= self.policy.max_total:
            raise LimitExceededError(
                f"the server runs {self.policy.max_total} executions, the most allowed"
            )

    # ---- orphans and ended sessions ---------------------------------------

    def _tick_soon(self) -> None:
        if self._ticker is None or self._ticker.done():
            self._ticker = asyncio.create_task(self._tick(), name="boxlite-sessions")

    async def _tick(self) -> None:
        p = self.policy
        period = min(TICK_MAX_S, p.orphan_grace / 4, p.ended_keep / 4)
        while True:
            await asyncio.sleep(period)
            self.sweep(time.monotonic())

    def sweep(self, now: float) -> None:
        """Reap orphans past their grace; forget old ended sessions."""
        ended: dict[str, list[Session]] = {}
        for session in list(self._sessions.values()):
            if session.ended:
                ended.setdefault(session.box_id, []).append(session)
            elif session.idle_for(now) >= self.policy.orphan_grace:
                session.reap()
        for of_box in ended.values():
            of_box.sort(key=lambda s: s.ended_for(now), reverse=True)
            for i, session in enumerate(of_box):
                old = session.ended_for(now) >= self.policy.ended_keep
                if not session.attached and (old or i < len(of_box) - ENDED_PER_BOX):
                    del self._sessions[session.id]

    # ---- shutdown -------------------------------------------------------------

    def close(self) -> None:
        """At once, from sync code: SIGKILL every running execution (no
        grace) and cancel every task.  ``aclose`` is the orderly way."""
        self._closed = True
        for task in (self._ticker, *self._tasks()):
            if task is not None:
                task.cancel()
        for session in (*self._sessions.values(), *self._evicted):
            if not session.ended:
                session.kill_now()
        self._sessions.clear()

    def _tasks(self) -> list[asyncio.Task[None]]:
        every = [*self._sessions.values(), *self._evicted]
        return [t for s in every for t in (s.pump, s.reaping) if t is not None]

    async def aclose(self) -> None:
        """End every session: running executions are reaped at once (HUP,
        TERM, KILL): nothing would reap them, nor keep their output, once
        the server is gone.  Then every task of ours is over."""
        self._closed = True
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
        sessions = [*self._sessions.values(), *self._evicted]
        self._sessions.clear()
        await asyncio.gather(*(self._end(s) for s in sessions))

    async def _end(self, session: Session) -> None:
        if not session.ended:
            with contextlib.suppress(asyncio.TimeoutError, BoxliteError):
                await asyncio.wait_for(session.reap(), CLOSE_WAIT_S)
        tasks = [t for t in (session.pump, session.reaping) if t is not None]
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.shield(session.pump), CLOSE_WAIT_S)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def open_sessions(state: ServerState) -> Sessions:
    """The app's hook (``app.create_app``): the sessions of ``state``'s server."""
    return Sessions(Policy.of(state.settings))
