"""Bring one image into the cache from wherever its blobs come from (a
registry, an archive): its manifest and config, every layer blob fetched
(concurrently, by the source's threads) and unpacked in order on the
calling thread as soon as the blobs below it are in, then its record.

Progress callbacks run on the calling thread, one at a time."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

from ..errors import ImageError
from ..state.store import ImageRecord, Store
from .content import Content
from .media import Descriptor, ImageConfig, Manifest, chain_ids, parse_json, verify

FETCHERS = 4


@dataclass(frozen=True)
class Progress:
    """How far a pull or load is: bytes of blobs fetched or copied, and
    layers ready to use (fetched and unpacked, or found in the cache)."""

    image: str
    bytes_done: int
    bytes_total: int
    layers_done: int
    layers_total: int


ProgressCallback = Callable[[Progress], None]


class BlobSource(Protocol):
    def fetch(
        self,
        descriptor: Descriptor,
        content: Content,
        on_bytes: Callable[[int], None],
        cancelled: threading.Event,
    ) -> None:
        """Put the blob into ``content`` (verified), or raise; give up
        soon once ``cancelled`` is set."""


class _Tracker:
    """Byte counts arrive from fetcher threads; callbacks run here."""

    def __init__(self, image: str, total: int, layers: int, callback: ProgressCallback | None):
        self.image, self.total, self.layers = image, total, layers
        self.callback = callback
        self.bytes = self.layers_done = 0
        self.deltas: queue.SimpleQueue[int] = queue.SimpleQueue()

    def add(self, n: int) -> None:  # any thread
        self.deltas.put(n)

    def pump(self, wait: float = 0.0) -> None:
        """Take in what the fetchers did (waiting up to ``wait`` for news)."""
        try:
            self.bytes += self.deltas.get(timeout=wait) if wait else self.deltas.get_nowait()
        except queue.Empty:
            return
        self._take_all()
        self.report()

    def _take_all(self) -> None:
        while not self.deltas.empty():
            self.bytes += self.deltas.get_nowait()

    def layer_done(self) -> None:
        self.layers_done += 1
        self._take_all()
        self.report()

    def report(self) -> None:
        if self.callback is not None:
            done = min(self.bytes, self.total)
            self.callback(Progress(self.image, done, self.total, self.layers_done, self.layers))


def install(
    content: Content,
    store: Store,
    source: BlobSource,
    manifest: bytes,
    digest: str,
    tags: list[str],
    progress: ProgressCallback | None,
) -> ImageRecord:
    """Install the image whose manifest is ``manifest`` (digest ``digest``);
    call with ``content.using()`` held."""
    content.put(verify(manifest, digest), digest)
    parsed = Manifest.parse(parse_json(manifest, "the manifest"))
    if not content.has(parsed.config.digest):
        source.fetch(parsed.config, content, lambda n: None, threading.Event())
    record = image_record(content, manifest, digest, time.time(), tags)
    config = ImageConfig.parse(parse_json(content.read(parsed.config.digest), "the config"))
    chain = [layer[2] for layer in record.layers]
    needed = [
        i
        for i, layer in enumerate(parsed.layers)
        if not content.layer_path(chain[i]).is_dir() and not content.has(layer.digest)
    ]
    total = sum(parsed.layers[i].size for i in needed)
    tracker = _Tracker(tags[0] if tags else digest, total, len(parsed.layers), progress)
    tracker.report()
    cancelled = threading.Event()
    # The pool's exit joins every fetcher: none outlives the install.
    with ThreadPoolExecutor(FETCHERS, thread_name_prefix="boxlite-fetch") as pool:
        fetches = {
            i: pool.submit(source.fetch, parsed.layers[i], content, tracker.add, cancelled)
            for i in needed
        }
        try:
            for i, layer in enumerate(parsed.layers):
                if i in fetches:
                    _await(fetches[i], tracker)
                content.unpack(layer.digest, config.diff_ids[i], chain[: i + 1])
                tracker.layer_done()
        except BaseException:
            cancelled.set()
            for future in fetches.values():
                future.cancel()
            raise
    store.add_image(record, tags)
    return record


def image_record(
    content: Content, manifest: bytes, digest: str, created: float, tags: list[str]
) -> ImageRecord:
    """The record of the image whose manifest (digest ``digest``) and config
    are in the cache; what ``install`` stores, and recovery rebuilds."""
    parsed = Manifest.parse(parse_json(manifest, "the manifest"))
    config = ImageConfig.parse(parse_json(content.read(parsed.config.digest), "the config"))
    if len(config.diff_ids) != len(parsed.layers):
        raise ImageError("the manifest and its config disagree on the number of layers")
    chain = chain_ids(config.diff_ids)
    layers = tuple(
        (layer.digest, config.diff_ids[i], chain[i], layer.size)
        for i, layer in enumerate(parsed.layers)
    )
    size = len(manifest) + parsed.config.size + sum(layer.size for layer in parsed.layers)
    return ImageRecord(digest, parsed.config.digest, layers, size, created, tuple(tags))


def _await(future: Future[None], tracker: _Tracker) -> None:
    while not future.done():
        tracker.pump(wait=0.05)
    tracker.pump()
    future.result()
