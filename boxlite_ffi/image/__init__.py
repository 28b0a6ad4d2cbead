"""OCI images: a content-addressed cache of blobs and unpacked layers,
filled from archives (``archive``) and registries (``distribution``)."""

from typing import TYPE_CHECKING

from .. import _lazy

# Loaded on first use (_lazy): a box's specification needs only media.py.
_LAZY = {
    "ImageInfo": ".images",
    "Images": ".images",
    "Progress": ".install",
    "ProgressCallback": ".install",
    "PruneReport": ".images",
    "ResolvedImage": ".images",
}

if TYPE_CHECKING:  # what _LAZY names, for type checkers
    from .images import ImageInfo, Images, PruneReport, ResolvedImage
    from .install import Progress, ProgressCallback
else:
    __getattr__, __dir__ = _lazy.exports(__name__, _LAZY)

__all__ = ["ImageInfo", "Images", "Progress", "ProgressCallback", "PruneReport", "ResolvedImage"]
