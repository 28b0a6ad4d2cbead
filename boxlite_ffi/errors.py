"""Typed errors: one exception class per stable native status code."""

from __future__ import annotations

import errno
from collections.abc import Iterator
from contextlib import contextmanager
from enum import Enum, IntEnum
from typing import Generic, TypeVar


class ErrorCode(IntEnum):
    """The status codes of include/boxlite.h (stable numbers)."""

    OK = 0
    INVALID_ARGUMENT = 1
    INVALID_HANDLE = 2
    NOT_FOUND = 3
    ALREADY_EXISTS = 4
    INVALID_STATE = 5
    RUNTIME_CLOSED = 6
    EXEC_CLOSED = 7
    IMAGE = 8
    ENGINE = 9
    NO_MEMORY = 10
    IO = 11
    PROTOCOL = 12
    TIMEOUT = 13
    INTERNAL = 14
    UNSAFE_PATH = 15
    NOT_BOX_DIR = 16
    STORE = 17  # the Python layer's only
    NO_SPACE = 18  # the Python layer's only
    CONNECTION_LOST = 19  # the remote client's only
    UNAUTHENTICATED = 20  # the remote client's and the server's only


class BoxliteError(Exception):
    """Base of every boxlite error; ``code`` is the stable ErrorCode."""

    code: ErrorCode = ErrorCode.INTERNAL

    def __init__(self, message: str | None = None) -> None:
        self.message = message or self.code.name.lower().replace("_", " ")
        super().__init__(self.message)


class InvalidArgumentError(BoxliteError, ValueError):
    code = ErrorCode.INVALID_ARGUMENT


class InvalidHandleError(InvalidArgumentError):
    """A handle that was freed, is stale, or was never issued."""

    code = ErrorCode.INVALID_HANDLE


class NotFoundError(BoxliteError, LookupError):
    code = ErrorCode.NOT_FOUND


class AlreadyExistsError(BoxliteError):
    code = ErrorCode.ALREADY_EXISTS


class Code(str, Enum):
    """A stable text code: compares equal to, and prints as, its value."""

    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self.value), spec)


R = TypeVar("R", bound=Code)


class ReasonedError(BoxliteError, Generic[R]):
    """An error whose ``reason`` (a stable text code) says more than its
    numeric ``code``; each subclass names its default."""

    default_reason: R

    def __init__(self, message: str | None = None, reason: R | None = None) -> None:
        super().__init__(message)
        self.reason = reason or self.default_reason


class StateReason(Code):
    """Why an operation does not fit the state it found (stable codes)."""

    INVALID_STATE = "invalid_state"  # no more specific reason (e.g. from the native core)
    NOT_RUNNING = "not_running"  # configured or stopped: start it first
    BOX_RUNNING = "box_running"  # remove without force
    BOX_EXITED = "box_exited"  # its main command finished
    BOX_FAILED = "box_failed"  # it could not start
    BOX_STARTING = "box_starting"  # another process is starting it
    BOX_STOPPING = "box_stopping"
    BOX_CLOSED = "box_closed"  # this handle was closed
    EXEC_RUNNING = "exec_running"  # the execution has not ended
    EXEC_BUSY = "exec_busy"  # another handle holds the execution
    NOT_ORDERED = "not_ordered"  # Execution.output without ordered_output=True
    STDIN_NOT_OPEN = "stdin_not_open"  # write_stdin/close_stdin without stdin=True
    LIMIT_REACHED = "limit_reached"  # a configured bound (boxes, executions) is reached


class InvalidStateError(ReasonedError[StateReason]):
    """The operation does not fit the current state; ``reason`` says why."""

    code = ErrorCode.INVALID_STATE
    default_reason = StateReason.INVALID_STATE


class LimitExceededError(InvalidStateError):
    """A configured bound is reached (a server's boxes or executions): try
    again once something ended."""

    default_reason = StateReason.LIMIT_REACHED


class UnsupportedError(InvalidArgumentError):
    """A feature this runtime (or a server's contract) names but does not
    have: asking for it is refused, never silently ignored."""


class RuntimeClosedError(BoxliteError):
    code = ErrorCode.RUNTIME_CLOSED


class ExecClosedError(BoxliteError):
    code = ErrorCode.EXEC_CLOSED


class ImageReason(Code):
    """What went wrong with an image (stable codes)."""

    INVALID = "invalid"  # malformed, unsupported or unsafe content
    NOT_FOUND = "not_found"  # no such image, tag, manifest or blob
    UNAUTHORIZED = "unauthorized"  # the registry refused the credentials
    DIGEST_MISMATCH = "digest_mismatch"  # content does not match its digest
    NETWORK = "network"  # the registry could not be reached, or the transfer broke
    IN_USE = "in_use"  # a box uses the image
    TOO_LARGE = "too_large"  # a layer would unpack beyond the runtime's limits


class ImageError(ReasonedError[ImageReason]):
    """An image could not be loaded, pulled, unpacked or removed."""

    code = ErrorCode.IMAGE
    default_reason = ImageReason.INVALID


class ImageNotFoundError(ImageError, LookupError):
    default_reason = ImageReason.NOT_FOUND


class UnauthorizedError(ImageError, PermissionError):
    default_reason = ImageReason.UNAUTHORIZED


class DigestMismatchError(ImageError):
    default_reason = ImageReason.DIGEST_MISMATCH


class RegistryNetworkError(ImageError, ConnectionError):
    default_reason = ImageReason.NETWORK


class ImageInUseError(ImageError):
    default_reason = ImageReason.IN_USE


class ImageTooLargeError(ImageError):
    """A layer declares more bytes or entries than the runtime unpacks."""

    default_reason = ImageReason.TOO_LARGE


class EngineError(BoxliteError):
    code = ErrorCode.ENGINE


class OutOfMemoryError(BoxliteError, MemoryError):
    code = ErrorCode.NO_MEMORY


class SystemCallError(BoxliteError):
    code = ErrorCode.IO


class ProtocolError(BoxliteError):
    code = ErrorCode.PROTOCOL


class BoxliteTimeoutError(BoxliteError, TimeoutError):
    code = ErrorCode.TIMEOUT


class InternalError(BoxliteError):
    code = ErrorCode.INTERNAL


class UnsafePathError(BoxliteError):
    """A copied path or archive entry would land outside its destination
    (``..``, an absolute name, a link pointing out, a special file)."""

    code = ErrorCode.UNSAFE_PATH


class NotABoxDirectoryError(BoxliteError):
    """A box directory given to the native core is none the runtime made
    (no marker file, or not the caller's own directory closed to others)."""

    code = ErrorCode.NOT_BOX_DIR


class ConnectionLostError(BoxliteError, ConnectionError):
    """A server (``boxlite_ffi.connect``) could not be reached, or the
    connection broke and could not be taken up again in time.  What was in
    flight may or may not have happened: ``Idempotency-Key`` retries make
    creating, starting, stopping and removing safe to repeat."""

    code = ErrorCode.CONNECTION_LOST


class AuthenticationError(BoxliteError, PermissionError):
    """A server refused the request's bearer token (missing or wrong)."""

    code = ErrorCode.UNAUTHENTICATED


class StoreReason(Code):
    """What is wrong with the home's store, ``boxlite.db`` (stable codes)."""

    LOST = "lost"  # missing or empty, while the home holds boxes or images
    CORRUPT = "corrupt"  # not an SQLite database, or a damaged one
    UNUSABLE = "unusable"  # cannot be opened or written: read-only, no rights, I/O error


RECOVER_HINT = "run `boxlite recover` (or Runtime.recover()) to rebuild it from the home"


class StoreError(ReasonedError[StoreReason]):
    """The store cannot be used; ``reason`` says why.  Nothing was deleted:
    ``boxlite recover`` / ``Runtime.recover()`` is the way back for a lost
    or corrupt store."""

    code = ErrorCode.STORE
    default_reason = StoreReason.UNUSABLE


class StoreLostError(StoreError):
    default_reason = StoreReason.LOST


class StoreCorruptError(StoreError):
    default_reason = StoreReason.CORRUPT


class DiskFullError(BoxliteError, OSError):
    """The home's filesystem (or a quota on it) has no room left."""

    code = ErrorCode.NO_SPACE


_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


@contextmanager
def os_errors(what: str) -> Iterator[None]:
    """An OSError in the block as a typed error about ``what``: a full disk
    is a ``DiskFullError``, anything else a ``SystemCallError``."""
    try:
        yield
    except OSError as exc:
        if isinstance(exc, BoxliteError):
            raise
        cls = DiskFullError if exc.errno in _NO_SPACE else SystemCallError
        raise cls(f"{what}: {exc.strerror or exc}") from exc


_BY_CODE: dict[int, type[BoxliteError]] = {
    cls.code: cls
    for cls in (
        InvalidArgumentError,
        InvalidHandleError,
        NotFoundError,
        AlreadyExistsError,
        InvalidStateError,
        RuntimeClosedError,
        ExecClosedError,
        ImageError,
        EngineError,
        OutOfMemoryError,
        SystemCallError,
        ProtocolError,
        BoxliteTimeoutError,
        InternalError,
        UnsafePathError,
        NotABoxDirectoryError,
        StoreError,
        DiskFullError,
        ConnectionLostError,
        AuthenticationError,
    )
}


def error_for(code: int, message: str | None = None) -> BoxliteError:
    """The exception for a native status code (unknown codes are internal)."""
    cls = _BY_CODE.get(code)
    if cls is None:
        return InternalError(f"unknown status {code}: {message or ''}".rstrip(": "))
    return cls(message)


def check(status: int, message: str | None = None) -> None:
    """Raise the typed error for a non-zero native status."""
    if status != ErrorCode.OK:
        raise error_for(status, message)
