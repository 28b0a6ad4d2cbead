"""OCI and Docker image documents: digests, media types, manifests, configs.

Everything here is a pure function of bytes already in hand; fetching and
storing them is the job of the content store and its sources.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from ..errors import DigestMismatchError, ImageError, ImageNotFoundError

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_LIST})
MANIFEST_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
# Layer media type -> compression ("" for a plain tar).
LAYER_TYPES = {
    "application/vnd.oci.image.layer.v1.tar": "",
    "application/vnd.oci.image.layer.v1.tar+gzip": "gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd": "zstd",
    "application/vnd.docker.image.rootfs.diff.tar": "",
    "application/vnd.docker.image.rootfs.diff.tar.gzip": "gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar": "",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip": "gzip",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip": "gzip",
}
PLATFORM = {"os": "linux", "architecture": "amd64"}
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
# Manifests, indexes and configs are small; a bigger one is hostile.
MAX_DOCUMENT = 4 << 20


def check_digest(digest: object) -> str:
    if not isinstance(digest, str) or not _DIGEST.fullmatch(digest):
        raise ImageError(f"unsupported or malformed digest {digest!r}")
    return digest


def digest_of(data: bytes) -> str:
    import hashlib  # on use: a box's specification imports this module for ImageConfig

    return "sha256:" + hashlib.sha256(data).hexdigest()


def verify(data: bytes, digest: str) -> bytes:
    if digest_of(data) != digest:
        raise DigestMismatchError(f"content does not match its digest {digest}")
    return data


def parse_json(data: bytes, what: str) -> dict[str, Any]:
    doc = parse_any_json(data, what)
    if not isinstance(doc, dict):
        raise ImageError(f"{what} is not a JSON object")
    return doc


def parse_any_json(data: bytes, what: str) -> Any:
    if len(data) > MAX_DOCUMENT:
        raise ImageError(f"{what} is larger than {MAX_DOCUMENT} bytes")
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ImageError(f"{what} is not valid JSON: {exc}") from exc


def canonical_json(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int

    @classmethod
    def of(cls, doc: object, what: str) -> Descriptor:
        if not isinstance(doc, dict):
            raise ImageError(f"{what} is not a descriptor")
        size = doc.get("size")
        if not isinstance(size, int) or size < 0:
            raise ImageError(f"{what} has no valid size")
        return cls(str(doc.get("mediaType", "")), check_digest(doc.get("digest")), size)


def media_type(doc: dict[str, Any]) -> str:
    """A document's media type; old Docker lists and manifests say so only
    by their shape."""
    kind = doc.get("mediaType")
    if isinstance(kind, str) and kind:
        return kind
    return OCI_INDEX if "manifests" in doc else OCI_MANIFEST


def pick_platform(index: dict[str, Any]) -> Descriptor:
    """The linux/amd64 entry of an image index (or the only unlabelled one)."""
    entries = index.get("manifests")
    if not isinstance(entries, list) or not entries:
        raise ImageError("the image index lists no manifest")
    for entry in entries:
        platform = entry.get("platform") if isinstance(entry, dict) else None
        if platform is None or all(platform.get(k) == v for k, v in PLATFORM.items()):
            return Descriptor.of(entry, "an index entry")
    raise ImageNotFoundError("the image has no linux/amd64 manifest")


@dataclass(frozen=True)
class Manifest:
    config: Descriptor
    layers: tuple[Descriptor, ...]

    @classmethod
    def parse(cls, doc: dict[str, Any]) -> Manifest:
        layers = doc.get("layers")
        if not isinstance(layers, list):
            raise ImageError("the manifest lists no layers")
        parsed = tuple(Descriptor.of(d, f"layer {i}") for i, d in enumerate(layers))
        for layer in parsed:
            if layer.media_type not in LAYER_TYPES:
                raise ImageError(f"unsupported layer media type {layer.media_type!r}")
        return cls(Descriptor.of(doc.get("config"), "the manifest's config"), parsed)


@dataclass(frozen=True)
class ImageConfig:
    """What a box takes from its image."""

    diff_ids: tuple[str, ...]
    env: tuple[str, ...] = ()
    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    workdir: str = ""
    user: str = ""

    @classmethod
    def parse(cls, doc: dict[str, Any]) -> ImageConfig:
        rootfs = doc.get("rootfs") or {}
        diff_ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
        if not isinstance(diff_ids, list):
            raise ImageError("the image configuration lists no diff_ids")
        config = doc.get("config") or {}
        if not isinstance(config, dict):
            raise ImageError("the image configuration's config is not an object")
        return cls(
            tuple(check_digest(d) for d in diff_ids),
            _strings(config, "Env"),
            _strings(config, "Entrypoint"),
            _strings(config, "Cmd"),
            _string(config, "WorkingDir"),
            _string(config, "User"),
        )


def _strings(config: dict[str, Any], key: str) -> tuple[str, ...]:
    value = config.get(key) or []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ImageError(f"the image's {key} is not a list of strings")
    return tuple(value)


def _string(config: dict[str, Any], key: str) -> str:
    value = config.get(key) or ""
    if not isinstance(value, str):
        raise ImageError(f"the image's {key} is not a string")
    return value


def chain_ids(diff_ids: tuple[str, ...]) -> list[str]:
    """The OCI ChainIDs: each names a layer *with everything below it*,
    which is what an unpacked layer directory depends on."""
    chain: list[str] = []
    for diff_id in diff_ids:
        chain.append(diff_id if not chain else digest_of(f"{chain[-1]} {diff_id}".encode()))
    return chain
