"""boxlite_ffi: an embeddable sandbox runtime for Python with a native C core.

    with boxlite_ffi.Runtime() as rt:
        box = rt.create(rootfs="/path/to/rootfs")
        print(box.run(["echo", "hello"]).stdout)

``boxlite_ffi.aio`` offers the same API for asyncio.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import _lazy
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

# Loaded on first use (_lazy): the command line pays only for what it runs.
_LAZY = {
    "Box": ".box",
    "BoxExit": ".state.views",
    "BoxInfo": ".state.views",
    "BoxLogs": ".box",
    "BoxStatus": ".state.status",
    "ChunkStream": ".streams",
    "ExecResult": ".execution",
    "Execution": ".execution",
    "ImageInfo": ".image.images",
    "Images": ".image.images",
    "Outcome": ".state.exits",
    "OutputChunk": ".streams",
    "OutputStream": ".streams",
    "PoolInfo": ".pool",
    "Progress": ".image.install",
    "PruneReport": ".image.images",
    "RecoveredBox": ".state.recovery",
    "RecoveryReport": ".state.recovery",
    "Runtime": ".runtime",
    "get_include": ".paths",
    "get_libexec_dir": ".paths",
    "get_library_dir": ".paths",
    "get_pkg_config_path": ".paths",
}
# What the package imports inside the functions that need it, beyond _LAZY's
# modules (tests/test_lazy_exports.py finds every such import in the source).
_ON_USE = (
    ".image.archive",
    ".image.credentials",
    ".image.distribution",
    ".image.install",
    ".state.recovery",
    ".vm.engine",
    "asyncio",
    "gzip",
    "hashlib",
    "subprocess",
    "tarfile",
    "tempfile",
)


def preload() -> None:
    """Import now every module the package would import on first use: for a
    program that drops its privileges after importing boxlite_ffi, when the
    interpreter's own files may then be out of its reach."""
    from .image.unpack import zstd_module

    _lazy.preload(__name__, [*_LAZY.values(), *_ON_USE])
    zstd_module()


if TYPE_CHECKING:  # what _LAZY names, for type checkers (a typo stays an error)
    from .box import Box, BoxLogs
    from .execution import ExecResult, Execution
    from .image.images import ImageInfo, Images, PruneReport
    from .image.install import Progress
    from .paths import get_include, get_libexec_dir, get_library_dir, get_pkg_config_path
    from .pool import PoolInfo
    from .remote import RemoteRuntime
    from .runtime import Runtime
    from .state.exits import Outcome
    from .state.recovery import RecoveredBox, RecoveryReport
    from .state.status import BoxStatus
    from .state.views import BoxExit, BoxInfo
    from .streams import ChunkStream, OutputChunk, OutputStream
else:
    __getattr__, __dir__ = _lazy.exports(__name__, _LAZY)

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
    "preload",
]
