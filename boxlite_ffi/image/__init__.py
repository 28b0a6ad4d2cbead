"""OCI images: a content-addressed cache of blobs and unpacked layers,
filled from archives (``archive``) and registries (``distribution``)."""

from .images import ImageInfo, Images, PruneReport, ResolvedImage
from .install import Progress, ProgressCallback

__all__ = ["ImageInfo", "Images", "Progress", "ProgressCallback", "PruneReport", "ResolvedImage"]
