"""The native callbacks.  They run only inside boxlite_runtime_drain, i.e. on
a runtime's drain thread, and route each event to its sink by token."""

from __future__ import annotations

import sys
from types import SimpleNamespace
from typing import Any

from .._native import ffi, lib
from .tokens import TOKENS


def _token(user_data: object) -> int:
    return int(ffi.cast("uintptr_t", user_data))


def _report(where: str) -> None:
    """Hand the exception being handled to ``sys.unraisablehook``.

    A user callback's error cannot propagate through native code, and must
    never take the drain thread down with it.
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


@ffi.def_extern()
def _bl_on_done(user_data: object, status: int, message: object) -> None:
    sink = TOKENS.claim(_token(user_data))
    if sink is None:
        return
    text = ffi.string(message).decode(errors="replace") if message != ffi.NULL else None
    try:
        sink.on_done(status, text)
    except Exception:  # noqa: BLE001 - a sink error must not kill the drain thread
        _report("boxlite completion callback")


@ffi.def_extern()
def _bl_on_output(user_data: object, stream: int, data: object, length: int) -> None:
    sink = TOKENS.get(_token(user_data))
    if sink is None:
        return
    try:
        sink.on_output(stream, ffi.buffer(data, length)[:])
    except Exception:  # noqa: BLE001 - a sink error must not kill the drain thread
        _report("boxlite output callback")


@ffi.def_extern()
def _bl_on_exit(user_data: object, exit_info: Any) -> None:
    sink = TOKENS.claim(_token(user_data))
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
    except Exception:  # noqa: BLE001 - a sink error must not kill the drain thread
        _report("boxlite exit callback")


DONE = lib._bl_on_done
OUTPUT = lib._bl_on_output
EXIT = lib._bl_on_exit
