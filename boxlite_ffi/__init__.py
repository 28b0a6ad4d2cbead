"""boxlite_ffi: an embeddable sandbox runtime for Python with a native C core.

    with boxlite_ffi.Runtime() as rt:
        box = rt.create(rootfs="/path/to/rootfs")
        print(box.run(["echo", "hello"]).stdout)

``boxlite_ffi.aio`` offers the same API for asyncio.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .box import Box, BoxLogs
from .errors import (
    AlreadyExistsError,
    AuthenticationError,
    BoxliteError,
    BoxliteTimeoutError,
    ConnectionLostError,
    DigestMismatchError,
    DiskFullError,
    EngineError,
    ErrorCode,
    ExecClosedError,
    ImageError,
    ImageInUseError,
    ImageNotFoundError,
    ImageReason,
    ImageTooLargeError,
    InternalError,
    InvalidArgumentError,
    InvalidHandleError,
    InvalidStateError,
    LimitExceededError,
    NotABoxDirectoryError,
    NotFoundError,
    OutOfMemoryError,
    ProtocolError,
    RegistryNetworkError,
    RuntimeClosedError,
    StateReason,
    StoreCorruptError,
    StoreError,
    StoreLostError,
    StoreReason,
    SystemCallError,
    UnauthorizedError,
    UnsafePathError,
    UnsupportedError,
)
from .execution import ExecResult, Execution
from .image import ImageInfo, Images, Progress, PruneReport
from .paths import get_include, get_libexec_dir, get_library_dir, get_pkg_config_path
from .pool import PoolInfo
from .runtime import Runtime
from .state.exits import Outcome
from .state.recovery import RecoveredBox, RecoveryReport
from .state.status import BoxStatus
from .state.views import BoxExit, BoxInfo
from .streams import ChunkStream, OutputChunk, OutputStream

if TYPE_CHECKING:
    from .remote import RemoteRuntime

__version__ = "0.1.0"


def connect(url: str, token: str | None = None, **options: Any) -> RemoteRuntime:
    """A runtime whose boxes live on a server (``boxlite serve``), with the
    same API as ``Runtime`` (``boxlite_ffi.remote.RemoteRuntime``; needs
    the ``client`` extra)."""
    from .remote import connect as connect_remote  # httpx, websockets: only a client needs them

    return connect_remote(url, token, **options)


__all__ = [
    "AlreadyExistsError",
    "AuthenticationError",
    "Box",
    "BoxExit",
    "BoxInfo",
    "BoxLogs",
    "BoxStatus",
    "BoxliteError",
    "BoxliteTimeoutError",
    "ChunkStream",
    "ConnectionLostError",
    "DigestMismatchError",
    "DiskFullError",
    "EngineError",
    "ErrorCode",
    "ExecClosedError",
    "ExecResult",
    "Execution",
    "ImageError",
    "ImageInUseError",
    "ImageInfo",
    "ImageNotFoundError",
    "ImageReason",
    "ImageTooLargeError",
    "Images",
    "InternalError",
    "InvalidArgumentError",
    "InvalidHandleError",
    "InvalidStateError",
    "LimitExceededError",
    "NotABoxDirectoryError",
    "NotFoundError",
    "OutOfMemoryError",
    "Outcome",
    "OutputChunk",
    "OutputStream",
    "PoolInfo",
    "Progress",
    "ProtocolError",
    "PruneReport",
    "RecoveredBox",
    "RecoveryReport",
    "RegistryNetworkError",
    "Runtime",
    "RuntimeClosedError",
    "StateReason",
    "StoreCorruptError",
    "StoreError",
    "StoreLostError",
    "StoreReason",
    "SystemCallError",
    "UnauthorizedError",
    "UnsafePathError",
    "UnsupportedError",
    "connect",
    "get_include",
    "get_libexec_dir",
    "get_library_dir",
    "get_pkg_config_path",
]
