"""The server's file routes: tar streams in and out of a running box."""

from __future__ import annotations

import io
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest


def tar_of(entries: dict[str, bytes], **links: str) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name, data in entries.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o640
            tar.addfile(info, io.BytesIO(data))
        for name, target in links.items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            tar.addfile(info)
    return buffer.getvalue()


@pytest.fixture
def running(client: httpx.Client, rootfs: Path, tmp_path: Path) -> Iterator[str]:
    volume = tmp_path / "volume"
    volume.mkdir()
    reply = client.post("/v1/boxes", json={"rootfs_path": str(rootfs)})
    box_id: str = reply.json()["box_id"]
    try:
        client.post(f"/v1/boxes/{box_id}/start").raise_for_status()
        yield box_id
    finally:
        client.delete(f"/v1/boxes/{box_id}", params={"force": "true"})


def put(client: httpx.Client, box_id: str, path: str, body: bytes, **params: Any) -> httpx.Response:
    return client.put(
        f"/v1/boxes/{box_id}/files",
        params={"path": path, **params},
        content=body,
        headers={"Content-Type": "application/x-tar"},
    )


def test_round_trip(client: httpx.Client, running: str) -> None:
    payload = bytes(range(256)) * 4096 + b"\xff\xfe not utf-8"
    reply = put(client, running, "/app", tar_of({"data.bin": payload, "sub/a.txt": b"a\n"}))
    assert reply.status_code == 204, reply.text
    out = client.get(f"/v1/boxes/{running}/files", params={"path": "/app"})
    assert out.status_code == 200 and out.headers["content-type"] == "application/x-tar"
    with tarfile.open(fileobj=io.BytesIO(out.content)) as tar:
        names = tar.getnames()
        extracted = tar.extractfile("app/data.bin")
        assert extracted is not None and extracted.read() == payload
        assert tar.getmember("app/data.bin").mode & 0o777 == 0o640
    assert "app/sub/a.txt" in names


HOSTILE = {
    "dotdot": tar_of({"../escape": b"x"}),
    "absolute": tar_of({"/etc/absolute": b"x"}),
    "dotdot-inside": tar_of({"a/../../escape": b"x"}),
    "symlink-out": tar_of({}, link="/etc"),
    "symlink-up": tar_of({}, link="../../etc"),
    "not-tar": b"this is no tar archive" * 100,
    "empty": b"",
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_uploads(client: httpx.Client, running: str, name: str) -> None:
    reply = put(client, running, "/up", HOSTILE[name])
    assert reply.status_code == 400, reply.text
    assert reply.json()["error"]["code"] == "invalid_argument"


@pytest.mark.parametrize("path", ["relative", "", "/x\x00y"])
def test_bad_paths(client: httpx.Client, running: str, path: str) -> None:
    assert put(client, running, path, tar_of({"a": b"a"})).status_code == 400
    assert client.get(f"/v1/boxes/{running}/files", params={"path": path}).status_code == 400


def test_missing_source_is_the_clients_error(client: httpx.Client, running: str) -> None:
    reply = client.get(f"/v1/boxes/{running}/files", params={"path": "/no/such/file"})
    assert reply.status_code == 400, reply.text


def test_box_must_run(client: httpx.Client, rootfs: Path) -> None:
    box_id = client.post("/v1/boxes", json={"rootfs_path": str(rootfs)}).json()["box_id"]
    try:
        reply = put(client, box_id, "/app", tar_of({"a": b"a"}))
        assert reply.status_code == 409 and reply.json()["error"]["code"] == "invalid_state"
        assert client.get(f"/v1/boxes/{box_id}/files", params={"path": "/"}).status_code == 409
    finally:
        client.delete(f"/v1/boxes/{box_id}", params={"force": "true"})


def test_unsupported_options(client: httpx.Client, running: str) -> None:
    reply = put(client, running, "/app", tar_of({"a": b"a"}), overwrite="false")
    assert reply.status_code == 501
    reply = client.get(
        f"/v1/boxes/{running}/files", params={"path": "/", "follow_symlinks": "true"}
    )
    assert reply.status_code == 501
