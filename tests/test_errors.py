"""Typed errors: stable codes from the header, one class per code, and the
native API refusing NULL and invalid handles without crashing."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import boxlite_ffi
from boxlite_ffi import ErrorCode, errors
from boxlite_ffi._core.callbacks import DONE
from boxlite_ffi._native import ffi, lib

HEADER = Path(__file__).resolve().parents[1] / "include" / "boxlite.h"


def test_codes_match_the_header() -> None:
    declared = dict(re.findall(r"BOXLITE_(?:ERR_)?(\w+) = (\d+),", HEADER.read_text()))
    for code in ErrorCode:
        assert int(declared[code.name]) == code.value
        assert ffi.string(lib.boxlite_status_name(code)).decode() == code.name
    assert ffi.string(lib.boxlite_status_name(999)).decode() == "UNKNOWN"


def test_one_exception_class_per_code() -> None:
    classes = set()
    for code in ErrorCode:
        if code is ErrorCode.OK:
            continue
        exc = errors.error_for(code, "why")
        assert isinstance(exc, boxlite_ffi.BoxliteError)
        assert exc.code is code and exc.message == "why"
        classes.add(type(exc))
    assert len(classes) == len(ErrorCode) - 1
    assert isinstance(errors.error_for(4242), boxlite_ffi.InternalError)
    assert issubclass(boxlite_ffi.NotFoundError, LookupError)
    assert issubclass(boxlite_ffi.InvalidHandleError, boxlite_ffi.InvalidArgumentError)


def test_null_and_invalid_handles_are_typed_errors(rt: boxlite_ffi.Runtime, rootfs: Path) -> None:
    native = rt.native
    box = rt.create(rootfs=rootfs)
    box.start()
    handle = box._live_handle()
    with native._use() as raw:
        assert lib.boxlite_box_start(raw, handle, ffi.NULL, ffi.NULL) == ErrorCode.INVALID_ARGUMENT
        assert lib.boxlite_box_start(raw, 0, DONE, ffi.NULL) == ErrorCode.INVALID_ARGUMENT
        assert (
            lib.boxlite_exec_start(raw, handle, ffi.NULL, ffi.NULL, ffi.NULL)
            == ErrorCode.INVALID_ARGUMENT
        )
        assert lib.boxlite_runtime_drain(raw, -1, 0) == -ErrorCode.INVALID_ARGUMENT
    assert lib.boxlite_box_free(ffi.NULL, handle) == ErrorCode.INVALID_ARGUMENT
    assert lib.boxlite_exec_signal(ffi.NULL, 1, 9, DONE, ffi.NULL) == ErrorCode.INVALID_ARGUMENT
    assert (
        lib.boxlite_exec_write(ffi.NULL, 1, b"x", 1, DONE, ffi.NULL) == ErrorCode.INVALID_ARGUMENT
    )
    for bogus in (0xDEAD_0000_0001, handle + 1, handle | (7 << 32)):
        with pytest.raises(boxlite_ffi.InvalidHandleError):
            native.box_free(bogus)
        with pytest.raises(boxlite_ffi.InvalidHandleError):
            native.exec_signal(bogus, 9)
    native.box_free(handle)
    with pytest.raises(boxlite_ffi.InvalidHandleError):
        native.box_free(handle)  # freed: stale
    with pytest.raises(boxlite_ffi.InvalidHandleError):
        native.box_start(handle).result()
    with pytest.raises(boxlite_ffi.InvalidArgumentError):
        native.exec_signal(0, 9)


def test_runtime_options_are_validated(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(boxlite_ffi.InvalidArgumentError):
        boxlite_ffi.Runtime(home, queue_capacity=-1)
    with pytest.raises(boxlite_ffi.InvalidArgumentError):
        boxlite_ffi.Runtime(home, workers=1000)
    with pytest.raises(boxlite_ffi.InvalidArgumentError):
        boxlite_ffi.Runtime(home, stop_grace=0)
    for bad in (float("nan"), float("inf"), "1", None):  # before: ValueError, TypeError
        with pytest.raises(boxlite_ffi.InvalidArgumentError):
            boxlite_ffi.Runtime(home, stop_grace=bad)  # type: ignore[arg-type]
        with pytest.raises(boxlite_ffi.InvalidArgumentError):
            boxlite_ffi.Runtime(home, drain_window=bad)  # type: ignore[arg-type]
    monkeypatch.setenv("BOXLITE_LIBEXEC", str(home / "nowhere"))
    with pytest.raises(boxlite_ffi.EngineError):
        boxlite_ffi.Runtime(home)


def test_home_defaults_to_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BOXLITE_HOME", str(tmp_path / "from-env"))
    with boxlite_ffi.Runtime() as rt:
        assert rt.home == tmp_path / "from-env"
        assert (rt.home / "boxes").is_dir()
    monkeypatch.delenv("BOXLITE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    with boxlite_ffi.Runtime() as rt:
        assert rt.home == tmp_path / "user" / ".boxlite"
