"""Write an OCI image layout (the format skopeo and umoci read and write)
from layer tars and an image config: for images made on this machine."""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path
from typing import Any

from .media import OCI_INDEX, OCI_MANIFEST, PLATFORM

LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
CONFIG = "application/vnd.oci.image.config.v1+json"


def _blob(layout: Path, data: bytes, media_type: str) -> dict[str, Any]:
    digest = hashlib.sha256(data).hexdigest()
    path = layout / "blobs" / "sha256" / digest
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return {"mediaType": media_type, "digest": f"sha256:{digest}", "size": len(data)}


def write_layout(
    layout: Path,
    layers: list[bytes],
    *,
    config: dict[str, Any] | None = None,
    compress: bool = True,
    name: str | None = None,
) -> Path:
    """An OCI layout at ``layout`` whose one image applies the uncompressed
    layer tars ``layers`` in order; ``config`` is the image's ``config``
    object (Env, Cmd, …); ``name`` its ref.name annotation."""
    layout.mkdir(parents=True, exist_ok=True)
    (layout / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    descriptors = [
        _blob(
            layout,
            gzip.compress(raw, mtime=0) if compress else raw,
            LAYER_GZIP if compress else LAYER_TAR,
        )
        for raw in layers
    ]
    image_config = {
        **PLATFORM,
        "config": config or {},
        "rootfs": {
            "type": "layers",
            "diff_ids": ["sha256:" + hashlib.sha256(r).hexdigest() for r in layers],
        },
    }
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": _blob(layout, json.dumps(image_config).encode(), CONFIG),
        "layers": descriptors,
    }
    entry = _blob(layout, json.dumps(manifest).encode(), OCI_MANIFEST)
    entry["platform"] = dict(PLATFORM)
    if name:
        entry["annotations"] = {"org.opencontainers.image.ref.name": name}
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [entry]}
    (layout / "index.json").write_text(json.dumps(index))
    return layout
