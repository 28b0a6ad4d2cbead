"""``RemoteImages``: a server's image cache, with ``Images``' API.  What
the contract cannot carry (loading an archive of this machine, removing,
pruning, registry credentials, progress) is ``UnsupportedError``."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from ..boxapi import IMAGE, IMAGES, PULL
from ..errors import UnsupportedError
from ..image.images import ImageInfo, PruneReport
from .views import image_info

if TYPE_CHECKING:
    from .transport import Transport


class RemoteImages:
    def __init__(self, transport: Transport) -> None:
        self._t = transport

    def pull(
        self,
        ref: str,
        *,
        username: str | None = None,
        password: str | None = None,
        auth_file: str | os.PathLike[str] | None = None,
        insecure: bool = False,
        progress: Any = None,
    ) -> ImageInfo:
        """The server pulls ``ref`` into its cache (with its own credentials)."""
        if username is not None or password is not None or auth_file is not None:
            raise UnsupportedError("registry credentials: the server pulls with its own")
        if progress is not None:
            raise UnsupportedError("pull progress: the contract reports none")
        body = {"reference": ref, "boxlite_insecure": insecure}
        reply = self._t.call(self._t.request("POST", PULL, json=body, idempotent=True))
        return image_info(reply.json())

    def inspect(self, ref: str) -> ImageInfo:
        path = IMAGE.format(image_id=quote(ref, safe="/:@"))
        return image_info(self._t.call(self._t.request("GET", path)).json())

    def load(self, path: str | os.PathLike[str], **options: Any) -> list[ImageInfo]:
        raise UnsupportedError("loading an image archive of this machine into a server's cache")

    def remove(self, ref: str) -> None:
        raise UnsupportedError("removing an image of a server's cache")

    def prune(self) -> PruneReport:
        raise UnsupportedError("pruning a server's cache")

    def list(self) -> list[ImageInfo]:  # last: its name is the builtin's above
        return [image_info(i) for i in self._t.call(self._t.every(IMAGES, "images"))]
