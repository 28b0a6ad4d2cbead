"""boxlite_ffi: an embeddable sandbox runtime for Python with a native C core.

    with boxlite_ffi.Runtime() as rt:
        box = rt.create(rootfs="/path/to/rootfs")
        print(box.run(["echo", "hello"]).stdout)

``boxlite_ffi.aio`` offers the same API for asyncio.
"""

from .box import Box, BoxLogs
from .errors import (
    AlreadyExistsError,
    BoxliteError,
    BoxliteTimeoutError,
    EngineError,
    ErrorCode,
    ExecClosedError,
    ImageError,
    InternalError,
    InvalidArgumentError,
    InvalidHandleError,
    InvalidStateError,
    NotFoundError,
    OutOfMemoryError,
    ProtocolError,
    RuntimeClosedError,
    StateReason,
    SystemCallError,
    UnsafePathError,
)
from .execution import ExecResult, Execution, Outcome
from .lifecycle import BoxExit, BoxInfo, BoxStatus
from .runtime import Runtime
from .streams import ChunkStream, OutputChunk, OutputStream

__version__ = "0.1.0"

__all__ = [
    "AlreadyExistsError",
    "Box",
    "BoxExit",
    "BoxInfo",
    "BoxLogs",
    "BoxStatus",
    "BoxliteError",
    "BoxliteTimeoutError",
    "ChunkStream",
    "EngineError",
    "ErrorCode",
    "ExecClosedError",
    "ExecResult",
    "Execution",
    "ImageError",
    "InternalError",
    "InvalidArgumentError",
    "InvalidHandleError",
    "InvalidStateError",
    "NotFoundError",
    "OutOfMemoryError",
    "Outcome",
    "OutputChunk",
    "OutputStream",
    "ProtocolError",
    "Runtime",
    "RuntimeClosedError",
    "StateReason",
    "SystemCallError",
    "UnsafePathError",
]
