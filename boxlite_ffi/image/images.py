"""``Runtime.images``: the image cache of a home, filled from archives and
registries, listed, inspected and emptied; and what a box takes from an
image (its layer directories and its config)."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .._core.core import Mount
from ..errors import (
    ImageError,
    ImageInUseError,
    ImageNotFoundError,
    InvalidArgumentError,
    os_errors,
)
from ..state.store import ImageRecord, Store
from ..tree import remove_tree, tree_size
from . import host
from .content import Content
from .media import ImageConfig, parse_json
from .reference import Reference, normalize
from .unpack import DEFAULT_LIMITS, UnpackLimits

if TYPE_CHECKING:
    from .install import ProgressCallback

# archive.py, credentials.py, install.py and the vm's root images load in
# the methods that fill or empty the cache: a box only resolves an image.


@dataclass(frozen=True)
class ImageInfo:
    id: str  # the manifest digest
    tags: tuple[str, ...]
    size: int  # bytes of its blobs (compressed layers, config, manifest)
    created: float  # when it came into this cache
    layers: tuple[str, ...]  # diff_ids, bottom first
    config: ImageConfig


@dataclass(frozen=True)
class PruneReport:
    images: tuple[str, ...]  # ids of untagged, unused images deleted
    bytes_freed: int


@dataclass(frozen=True)
class ResolvedImage:
    """What a box is made from: its image's id and config, and its layer
    directories, top-most first (overlayfs's order)."""

    id: str | None  # None for the built-in host image
    config: ImageConfig
    lowers: tuple[Path, ...]
    mounts: tuple[Mount, ...] = ()


# What the cache is made of (and the vm's root images, vm/root_image.py);
# anything else under its root is left over.
_CACHE_PARTS = ("blobs", "ingest", "layers", "lock", host.NAME)


class Images:
    def __init__(self, root: Path, store: Store, limits: UnpackLimits = DEFAULT_LIMITS) -> None:
        self._content = Content(root, limits)
        self._store = store

    def load(
        self,
        path: str | os.PathLike[str],
        *,
        tag: str | None = None,
        progress: ProgressCallback | None = None,
    ) -> list[ImageInfo]:
        """Import every image of an OCI image layout (directory or tar) or
        a docker-archive tar; their own names are kept and ``tag`` is added.
        A layout's bare tag (skopeo's ``oci:DIR:TAG``) is named after the
        layout: ``DIR:TAG``."""
        source = Path(path)
        if not source.exists():
            raise ImageNotFoundError(f"{source} does not exist")
        if tag is not None:
            Reference.parse(tag)  # a name a pull could have given
        from .archive import open_archive
        from .install import install

        records = []
        with os_errors(f"loading {source}"), self._content.using(), open_archive(source) as archive:
            for manifest, digest, names in archive.images:
                tags = [normalize(n) for n in names]
                if tag is not None and normalize(tag) not in tags:
                    tags.append(normalize(tag))
                records.append(
                    install(self._content, self._store, archive, manifest, digest, tags, progress)
                )
        return [self._info(self._store.find_image(r.id)) for r in records]

    def pull(
        self,
        ref: str,
        *,
        username: str | None = None,
        password: str | None = None,
        auth_file: str | os.PathLike[str] | None = None,
        insecure: bool = False,
        progress: ProgressCallback | None = None,
    ) -> ImageInfo:
        """Fetch ``ref`` from its registry (linux/amd64), verifying every
        blob; what an interrupted pull fetched is not fetched again.
        Credentials: ``username``/``password``, else the registry's entry
        in ``auth_file`` (default: docker's config.json), else anonymous.
        ``insecure`` speaks plain HTTP (loopback registries always do)."""
        from .credentials import lookup
        from .distribution import Registry  # http, ssl: only a pull needs them
        from .install import install

        reference = Reference.parse(ref)
        if (username is None) != (password is None):
            raise InvalidArgumentError("give both username and password, or neither")
        credentials = (
            (username, password)
            if username is not None and password is not None
            else lookup(reference.registry, Path(auth_file) if auth_file else None)
        )
        registry = Registry(reference, credentials, insecure)
        with os_errors(f"pulling {ref}"), self._content.using():
            manifest, digest = registry.manifest()
            tags = [reference.name] if reference.tag else []
            record = install(self._content, self._store, registry, manifest, digest, tags, progress)
        return self._info(self._store.find_image(record.id))

    def list(self) -> list[ImageInfo]:
        """Every image of this home, newest first."""
        return [self._info(r) for r in self._store.images()]

    def inspect(self, ref: str) -> ImageInfo:
        """By name, id (``sha256:…``) or unique id prefix."""
        return self._info(self._find(ref))

    def remove(self, ref: str) -> None:
        """Remove a name; the image goes with its last name, or when ``ref``
        is its id.  ``ImageInUseError`` if a box uses it (remove the box
        first).  Its layers stay cached until ``prune``."""
        self._store.remove_image(ref, self._name(ref))

    def prune(self) -> PruneReport:
        """Delete images with no name that no box uses, then every blob,
        unpacked layer and partial download that no image needs, every vm
        root image of no image, and every host layer (or tree left by an
        older version) no box runs on."""
        from ..vm.root_image import CACHE_PART as VM_CACHE_PART
        from ..vm.root_image import root_image_path
        from ..vm.root_image import sweep as sweep_root_images

        with self._content.using(exclusive=True):
            removed = self._remove_untagged()
            keep_blobs, keep_layers, keep_roots = set(), set(), set()
            vm_dir = self._content.root / VM_CACHE_PART
            for record in self._store.images():
                keep_blobs |= {record.id, record.config, *(layer[0] for layer in record.layers)}
                keep_layers |= {layer[2] for layer in record.layers}
                keep_roots.add(root_image_path(self._lowers(record), vm_dir))
            freed = self._content.sweep(keep_blobs, keep_layers)
            freed += sweep_root_images(vm_dir, keep_roots)
            in_use = {Path(p) for p in self._store.lowers_in_use()}
            strays = [*(self._content.root / host.NAME).glob("*")]
            strays += [
                p
                for p in self._content.root.iterdir()
                if p.name not in (*_CACHE_PARTS, VM_CACHE_PART)
            ]
            for tree in strays:
                if not any(tree == p or tree in p.parents for p in in_use):
                    freed += tree_size(tree)
                    remove_tree(tree)
        return PruneReport(removed, freed)

    def _remove_untagged(self) -> tuple[str, ...]:
        removed: tuple[str, ...] = ()
        for record in self._store.images():
            if not record.tags:
                with contextlib.suppress(ImageInUseError):
                    self._store.remove_image(record.id)
                    removed += (record.id,)
        return removed

    def rebuild(self, tags: dict[str, str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """Record every image whose manifest is in the cache with all it
        needs (config; each layer unpacked, or its blob), named by those of
        ``tags`` (name -> id) that point at it: recovery's way back to the
        image records of a lost store.  (ids recorded, tags left unplaced)."""
        from .install import image_record

        placed: set[str] = set()
        recorded: tuple[str, ...] = ()
        with self._content.using():
            for digest, manifest, created in self._content.documents():
                try:
                    record = image_record(self._content, manifest, digest, created, [])
                except ImageError:
                    continue  # a config, or an image that lost a part: not one to use
                if not all(self._usable(layer) for layer in record.layers):
                    continue
                names = sorted(name for name, image in tags.items() if image == digest)
                self._store.add_image(record, names)
                placed.update(names)
                recorded += (digest,)
        return recorded, tuple(sorted(set(tags) - placed))

    def _usable(self, layer: tuple[str, str, str, int]) -> bool:
        return self._content.layer_path(layer[2]).is_dir() or self._content.has(layer[0])

    def hold(self) -> contextlib.AbstractContextManager[None]:
        """Keep prune off while a box is being made from what resolve gave."""
        return self._content.using()

    def resolve(self, ref: str) -> ResolvedImage:
        if ref == host.NAME:
            layer, mounts = host.host_layer(self._content.root)
            return ResolvedImage(None, host.CONFIG, (layer,), mounts)
        record = self._find(ref)
        return ResolvedImage(record.id, self._config(record), self._lowers(record))

    def _lowers(self, record: ImageRecord) -> tuple[Path, ...]:
        """Its layer directories, top-most first."""
        return tuple(self._content.layer_path(layer[2]) for layer in reversed(record.layers))

    def _find(self, ref: str) -> ImageRecord:
        return self._store.find_image(ref, self._name(ref))

    @staticmethod
    def _name(ref: str) -> str:
        if not isinstance(ref, str) or not ref:
            raise InvalidArgumentError(f"invalid image reference {ref!r}")
        return normalize(ref)

    def _config(self, record: ImageRecord) -> ImageConfig:
        return ImageConfig.parse(parse_json(self._content.read(record.config), "the config"))

    def _info(self, record: ImageRecord) -> ImageInfo:
        layers = tuple(layer[1] for layer in record.layers)
        return ImageInfo(
            record.id, record.tags, record.size, record.created, layers, self._config(record)
        )
