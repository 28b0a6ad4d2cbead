"""The remote client: ``boxlite_ffi.connect(url, token=...)`` returns a
runtime whose boxes live on a server (``boxlite serve``), with the same API
as a local ``Runtime`` (``boxlite_ffi.aio.connect`` for asyncio).  Needs
the ``client`` extra (httpx, websockets).  See docs/api.md, "Remote"."""

from .box import RemoteBox
from .images import RemoteImages
from .runtime import RemoteRuntime, connect

__all__ = ["RemoteBox", "RemoteImages", "RemoteRuntime", "connect"]
