"""Read an OCI image layout directory and flatten it into a cached rootfs.

A layout (what ``skopeo copy … oci:DIR`` or ``umoci`` write) holds
``index.json`` and content-addressed ``blobs/``.  We pick the linux/amd64
manifest, verify every blob we read against its digest, and apply the
layers in order into ``<cache>/<manifest digest>/rootfs``; the rename of a
finished tree into place makes concurrent or interrupted unpacks harmless.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import re
import shutil
import tarfile
import tempfile
from pathlib import Path
from typing import Any

from .errors import ImageError
from .layer_unpack import apply_layer

INDEX_TYPES = {
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
}
LAYER_TYPES = {
    "application/vnd.oci.image.layer.v1.tar": None,
    "application/vnd.oci.image.layer.v1.tar+gzip": "gz",
    "application/vnd.docker.image.rootfs.diff.tar.gzip": "gz",
    "application/vnd.docker.image.rootfs.diff.tar": None,
}
PLATFORM = {"os": "linux", "architecture": "amd64"}
CHUNK = 1 << 20
HEX64 = re.compile(r"[0-9a-f]{64}")


def is_layout(path: Path) -> bool:
    return (path / "index.json").is_file() and (path / "oci-layout").is_file()


class OciLayout:
    def __init__(self, path: Path) -> None:
        if not is_layout(path):
            raise ImageError(f"{path} is not an OCI image layout (index.json, oci-layout)")
        self.path = path

    def blob_path(self, digest: str) -> Path:
        algo, _, hexdigest = digest.partition(":")
        if algo != "sha256" or not HEX64.fullmatch(hexdigest):
            raise ImageError(f"unsupported or malformed digest {digest!r}")
        path = self.path / "blobs" / algo / hexdigest
        if not path.is_file():
            raise ImageError(f"blob {digest} is missing from {self.path}")
        return path

    def verify(self, digest: str) -> Path:
        path = self.blob_path(digest)
        h = hashlib.sha256()
        with path.open("rb") as f:
            while chunk := f.read(CHUNK):
                h.update(chunk)
        if "sha256:" + h.hexdigest() != digest:
            raise ImageError(f"blob {digest} does not match its digest")
        return path

    def read_json(self, digest: str) -> Any:
        try:
            return json.loads(self.verify(digest).read_bytes())
        except ValueError as exc:
            raise ImageError(f"blob {digest} is not valid JSON: {exc}") from exc

    def manifest(self) -> tuple[str, dict[str, Any]]:
        """(digest, manifest) of the linux/amd64 image."""
        try:
            index = json.loads((self.path / "index.json").read_text())
        except ValueError as exc:
            raise ImageError(f"index.json is not valid JSON: {exc}") from exc
        for _depth in range(4):
            descriptor = _pick(index.get("manifests") or [])
            if descriptor.get("mediaType") not in INDEX_TYPES:
                return descriptor["digest"], self.read_json(descriptor["digest"])
            index = self.read_json(descriptor["digest"])
        raise ImageError("image indexes nested too deeply")

    def open_layer(self, descriptor: dict[str, Any]) -> io.BufferedIOBase:
        media_type = descriptor.get("mediaType", "")
        if media_type not in LAYER_TYPES:
            raise ImageError(f"unsupported layer media type {media_type!r}")
        raw = self.verify(descriptor["digest"]).open("rb")
        return gzip.GzipFile(fileobj=raw) if LAYER_TYPES[media_type] == "gz" else raw


def _pick(manifests: list[dict[str, Any]]) -> dict[str, Any]:
    if not manifests:
        raise ImageError("the image index lists no manifest")
    for m in manifests:
        platform = m.get("platform")
        if platform is None or all(platform.get(k) == v for k, v in PLATFORM.items()):
            return m
    raise ImageError("the image has no linux/amd64 manifest")


def image_config(layout_dir: Path) -> dict[str, Any]:
    """The ``config`` object of the image's configuration (Entrypoint, Cmd, …)."""
    layout = OciLayout(layout_dir)
    _, manifest = layout.manifest()
    try:
        config = layout.read_json(manifest["config"]["digest"]).get("config") or {}
    except (KeyError, TypeError, AttributeError) as exc:
        raise ImageError(f"{layout_dir}: the manifest names no image configuration") from exc
    if not isinstance(config, dict):
        raise ImageError(f"{layout_dir}: the image configuration is not an object")
    return config


def unpack(layout_dir: Path, cache: Path) -> Path:
    """The flattened rootfs of the layout's image, unpacked once into cache."""
    layout = OciLayout(layout_dir)
    digest, manifest = layout.manifest()
    final = cache / digest.replace(":", "-")
    rootfs = final / "rootfs"
    if rootfs.is_dir():
        return rootfs
    cache.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".unpack-", dir=cache))
    try:
        (staging / "rootfs").mkdir(mode=0o755)
        for descriptor in manifest.get("layers", []):
            with (
                layout.open_layer(descriptor) as stream,
                tarfile.open(fileobj=stream, mode="r:") as tar,
            ):
                apply_layer(staging / "rootfs", tar)
        (staging / "rootfs").chmod(0o755)
        try:
            staging.rename(final)
        except OSError:
            if not rootfs.is_dir():  # another unpacker won the race: use theirs
                raise
    except (OSError, tarfile.TarError, EOFError, KeyError) as exc:
        raise ImageError(f"cannot unpack {layout_dir}: {exc}") from exc
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return rootfs
