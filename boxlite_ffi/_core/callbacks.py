"""The drain thread's dispatch: each native event to its sink, by token.

The drain thread takes events in batches (``boxlite_runtime_take``, one cffi
crossing for many) into a ``Batch`` and dispatches them from it.  The three ``extern
"Python"`` callbacks are the function pointers the native API requires with
every operation; they run only when someone calls ``boxlite_runtime_drain``
itself (the queue model test does) and share the handlers below.
"""

from __future__ import annotations

import sys
from types import SimpleNamespace
from typing import Any

from .._native import ffi, lib
from .tokens import TOKENS

_KIND_DONE = lib.BOXLITE_EVENT_DONE
_KIND_OUTPUT = lib.BOXLITE_EVENT_OUTPUT


def _token(user_data: object) -> int:
    return int(ffi.cast("uintptr_t", user_data))


def _report(where: str) -> None:
    """Hand the exception being handled to ``sys.unraisablehook``.

    A user callback's error cannot propagate through native code, and must
    never take the drain thread down with it (not even SystemExit: the
    drain thread is what frees the runtime; cffi's callbacks swallowed it
    too when every event was one).
    """
    exc_type, exc_value, exc_traceback = sys.exc_info()
    sys.unraisablehook(
        SimpleNamespace(
            exc_type=exc_type,
            exc_value=exc_value,
            exc_traceback=exc_traceback,
            err_msg=f"Exception ignored in {where}",
            object=None,
        )
    )


def _text(message: object) -> str | None:
    """A completion's message (a NULL char pointer: None)."""
    return ffi.string(message).decode(errors="replace") if message else None


def _done(token: int, status: int, text: str | None) -> None:
    sink = TOKENS.claim(token)
    if sink is None:
        return
    try:
        sink.on_done(status, text)
    except BaseException:  # noqa: BLE001 - nothing a sink raises may end the drain thread
        _report("boxlite completion callback")


def _output(token: int, stream: int, data: object, length: int) -> None:
    sink = TOKENS.get(token)
    if sink is None:
        return
    try:
        sink.on_output(stream, ffi.buffer(data, length)[:])
    except BaseException:  # noqa: BLE001 - nothing a sink raises may end the drain thread
        _report("boxlite output callback")


def _exit(token: int, exit_info: Any) -> None:
    sink = TOKENS.claim(token)
    if sink is None:
        return
    try:
        sink.on_exit(
            exit_info.outcome,
            exit_info.exit_code,
            exit_info.signal,
            exit_info.error,
            exit_info.os_error,
        )
    except BaseException:  # noqa: BLE001 - nothing a sink raises may end the drain thread
        _report("boxlite exit callback")


class Batch:
    """A reusable array for ``boxlite_runtime_take``, with views made once.

    The fields every event has (kind, token) and a completion's (status, the
    message pointer) are read through memoryviews striding the array, laid
    out as cffi says the header's struct is, so routing an event and
    completing an operation make no cdata object.
    """

    def __init__(self, size: int) -> None:
        self.events: Any = ffi.new("boxlite_event[]", size)
        self._views = [self.events[i] for i in range(size)]
        raw = memoryview(ffi.buffer(self.events))
        words, ints = raw.cast("P"), raw.cast("i")
        self._kinds = self._field(ints, "kind")
        self._status = self._field(ints, "status")
        self._tokens = self._field(words, "user_data")
        self._messages = self._field(words, "message")

    @staticmethod
    def _field(view: memoryview, name: str) -> memoryview:
        """Field name of every event, as view's items."""
        start = ffi.offsetof("boxlite_event", name)
        stride = ffi.sizeof("boxlite_event")
        assert start % view.itemsize == 0 and stride % view.itemsize == 0
        return view[start // view.itemsize :: stride // view.itemsize]

    def dispatch(self, n: int) -> None:
        """Route the first n taken events in order.

        Every event of a NativeRuntime carries one of this module's
        callbacks, so the kind says which handler, and the token which sink.
        """
        rows = zip(self._views, self._kinds[:n], self._tokens[:n], strict=False)
        for i, (ev, kind, token) in enumerate(rows):
            if kind == _KIND_OUTPUT:
                _output(token, ev.stream, ev.data, ev.len)
            elif kind == _KIND_DONE:
                message = self._messages[i]
                _done(token, self._status[i], _text(ev.message) if message else None)
            else:
                _exit(token, ev.exit)


@ffi.def_extern()
def _bl_on_done(user_data: object, status: int, message: object) -> None:
    _done(_token(user_data), status, _text(message))


@ffi.def_extern()
def _bl_on_output(user_data: object, stream: int, data: object, length: int) -> None:
    _output(_token(user_data), stream, data, length)


@ffi.def_extern()
def _bl_on_exit(user_data: object, exit_info: Any) -> None:
    _exit(_token(user_data), exit_info)


DONE = lib._bl_on_done
OUTPUT = lib._bl_on_output
EXIT = lib._bl_on_exit
