"""Images from local archives: an OCI image layout (a directory, or a tar
of one, as skopeo, umoci or buildah write them) and a docker-archive tar
(``docker save``: ``manifest.json`` with RepoTags, a config and layer tars).

Only names the archive itself lists are read, and a directory's names must
stay inside it; every blob is verified on its way into the cache."""

from __future__ import annotations

import hashlib
import posixpath
import tarfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from ..errors import ImageError, ImageNotFoundError, UnsafePathError
from .content import CHUNK, Content
from .media import (
    DOCKER_MANIFEST,
    INDEX_TYPES,
    MAX_DOCUMENT,
    Descriptor,
    canonical_json,
    check_digest,
    digest_of,
    media_type,
    parse_any_json,
    parse_json,
    pick_platform,
    verify,
)

REF_NAME = "org.opencontainers.image.ref.name"
CONTAINERD_NAME = "io.containerd.image.name"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
MAX_NESTING = 4


class _Slice:
    """``size`` bytes of a file from ``offset`` (a member of a plain tar),
    readable in parallel with other slices of the same file."""

    def __init__(self, path: Path, offset: int, size: int) -> None:
        self.file = open(path, "rb")  # noqa: SIM115 (closed by close())
        self.file.seek(offset)
        self.left = size

    def read(self, n: int = -1) -> bytes:
        n = self.left if n < 0 else min(n, self.left)
        data = self.file.read(n)
        self.left -= len(data)
        return data

    def close(self) -> None:
        self.file.close()


class _Files:
    """The files of an archive, by their names in it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.tar: tarfile.TarFile | None = None
        self.members: dict[str, tarfile.TarInfo] = {}
        self.lock = threading.Lock()  # a compressed tar is read by one thread at a time
        self.plain = True  # a plain tar's members are read in place, in parallel
        if path.is_dir():
            self.root = path.resolve()
            return
        try:
            try:
                self.tar = tarfile.open(path, "r:")  # noqa: SIM115 (closed by close())
            except tarfile.ReadError:
                self.tar, self.plain = tarfile.open(path, "r:*"), False  # noqa: SIM115
            for member in self.tar:
                self.members[posixpath.normpath(member.name).lstrip("/")] = member
        except (OSError, tarfile.TarError, EOFError) as exc:
            raise ImageError(f"{path} is neither a directory nor a readable tar: {exc}") from exc

    def close(self) -> None:
        if self.tar is not None:
            self.tar.close()

    def _dir_path(self, name: str) -> Path:
        path = (self.root / name).resolve()
        if not path.is_relative_to(self.root):
            raise UnsafePathError(f"{name!r} points outside {self.path}")
        return path

    def exists(self, name: str) -> bool:
        if self.tar is None:
            return self._dir_path(name).is_file()
        member = self.members.get(posixpath.normpath(name))
        return member is not None and member.isfile()

    @contextmanager
    def open(self, name: str) -> Iterator[IO[bytes]]:
        if posixpath.isabs(name) or ".." in name.split("/"):
            raise UnsafePathError(f"archive entry {name!r} is outside the archive")
        if self.tar is None:
            try:
                with open(self._dir_path(name), "rb") as f:
                    yield f
            except FileNotFoundError:
                raise ImageNotFoundError(f"{name} is missing from {self.path}") from None
            return
        member = self.members.get(posixpath.normpath(name))
        if member is None or not member.isfile():
            raise ImageNotFoundError(f"{name} is missing from {self.path}")
        if self.plain:
            piece = _Slice(self.path, member.offset_data, member.size)
            try:
                yield piece  # type: ignore[misc]
            finally:
                piece.close()
            return
        with self.lock:
            extracted = self.tar.extractfile(member)
            assert extracted is not None  # a regular file
            yield extracted

    def read(self, name: str) -> bytes:
        with self.open(name) as f:
            data = f.read(MAX_DOCUMENT + 1)
        if len(data) > MAX_DOCUMENT:
            raise ImageError(f"{name} in {self.path} is larger than {MAX_DOCUMENT} bytes")
        return data


@dataclass
class Archive:
    """What an archive holds: images (manifest, digest, names) and where
    each blob of theirs is in it."""

    files: _Files
    images: list[tuple[bytes, str, list[str]]] = field(default_factory=list)
    blob_names: dict[str, str] = field(default_factory=dict)

    def fetch(
        self,
        descriptor: Descriptor,
        content: Content,
        on_bytes: Callable[[int], None],
        cancelled: threading.Event,
    ) -> None:
        name = self.blob_names.get(descriptor.digest, _blob_name(descriptor.digest))
        with self.files.open(name) as stream:
            content.put_stream(stream, descriptor.digest, descriptor.size, on_bytes, cancelled)


def _blob_name(digest: str) -> str:
    return "blobs/" + check_digest(digest).replace(":", "/")


@contextmanager
def open_archive(path: Path) -> Iterator[Archive]:
    """The images of the archive at ``path``."""
    files = _Files(path)
    try:
        archive = Archive(files)
        if files.exists("manifest.json"):
            _read_docker(archive)
        elif files.exists("index.json"):
            _read_oci(archive, path.name.split(".", 1)[0])
        else:
            raise ImageError(f"{path} holds neither an OCI image layout nor a docker archive")
        yield archive
    finally:
        files.close()


def _read_oci(archive: Archive, default_repo: str) -> None:
    index = parse_json(archive.files.read("index.json"), "index.json")
    entries = index.get("manifests")
    if not isinstance(entries, list) or not entries:
        raise ImageError("index.json lists no manifest")
    groups: dict[str | None, list[Any]] = {}
    for entry in entries:
        notes = entry.get("annotations") if isinstance(entry, dict) else None
        notes = notes if isinstance(notes, dict) else {}
        ref = notes.get(CONTAINERD_NAME) or notes.get(REF_NAME)
        groups.setdefault(ref if isinstance(ref, str) else None, []).append(entry)
    for ref, group in groups.items():
        descriptor = pick_platform({"manifests": group})
        manifest = _resolve_index(archive, descriptor)
        names = (
            [] if ref is None else [ref if (":" in ref or "/" in ref) else f"{default_repo}:{ref}"]
        )
        archive.images.append((*manifest, names))


def _resolve_index(archive: Archive, descriptor: Descriptor) -> tuple[bytes, str]:
    """The manifest a descriptor leads to, through nested indexes."""
    for _ in range(MAX_NESTING):
        data = verify(archive.files.read(_blob_name(descriptor.digest)), descriptor.digest)
        doc = parse_json(data, f"blob {descriptor.digest}")
        if media_type(doc) not in INDEX_TYPES:
            return data, descriptor.digest
        descriptor = pick_platform(doc)
    raise ImageError("image indexes nested too deeply")


def _read_docker(archive: Archive) -> None:
    entries = parse_any_json(archive.files.read("manifest.json"), "manifest.json")
    if not isinstance(entries, list) or not entries:
        raise ImageError("manifest.json lists no image")
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("Layers"), list):
            raise ImageError("manifest.json: an entry without Config or Layers")
        config = archive.files.read(str(entry.get("Config")))
        config_digest = digest_of(config)
        archive.blob_names[config_digest] = str(entry["Config"])
        layers = [_docker_layer(archive, str(name)) for name in entry["Layers"]]
        manifest = {
            "schemaVersion": 2,
            "mediaType": DOCKER_MANIFEST,
            "config": {"mediaType": DOCKER_CONFIG, "digest": config_digest, "size": len(config)},
            "layers": layers,
        }
        data = canonical_json(manifest)
        tags = entry.get("RepoTags") or []
        archive.images.append((data, digest_of(data), [str(t) for t in tags]))


def _docker_layer(archive: Archive, name: str) -> dict[str, Any]:
    """A layer's descriptor: its digest is in its name (``blobs/sha256/…``)
    in newer archives, otherwise it is computed here."""
    hexdigest = posixpath.basename(name) if name.startswith("blobs/sha256/") else ""
    with archive.files.open(name) as f:
        h, size = hashlib.sha256(), 0
        while chunk := f.read(CHUNK):
            h.update(chunk)
            size += len(chunk)
    digest = "sha256:" + h.hexdigest()
    if hexdigest and digest != check_digest("sha256:" + hexdigest):
        raise ImageError(f"{name} does not match its digest")
    archive.blob_names[digest] = name
    return {"mediaType": DOCKER_LAYER, "digest": digest, "size": size}
