"""The server's box routes against a real server on loopback (ns boxes)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from server_fixture import ServerProcess

MakeBox = Callable[..., dict[str, Any]]


@pytest.fixture
def make_box(client: httpx.Client, rootfs: Path) -> Iterator[MakeBox]:
    """Create boxes from the busybox rootfs; every one is removed after the test."""
    made: list[str] = []

    def make(**fields: Any) -> dict[str, Any]:
        reply = client.post("/v1/boxes", json={"rootfs_path": str(rootfs), **fields})
        assert reply.status_code == 201, reply.text
        box = reply.json()
        made.append(box["box_id"])
        return box

    yield make
    for box_id in made:
        client.delete(f"/v1/boxes/{box_id}", params={"force": "true"})


def error_of(reply: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert reply.status_code == status, reply.text
    error: dict[str, Any] = reply.json()["error"]
    assert error["code"] == code, error
    assert error["request_id"] == reply.headers["X-Request-Id"]
    return error


def test_lifecycle(client: httpx.Client, make_box: MakeBox) -> None:
    box = make_box(name="life", memory_mib=256, cpus=1, env={"A": "1"})
    assert box["status"] == "configured" and box["boxlite_status"] == "configured"
    assert box["name"] == "life" and box["memory_mib"] == 256 and box["cpus"] == 1
    assert box["auto_stop"] == 900 and box["pid"] is None
    box_id = box["box_id"]
    assert client.get(f"/v1/boxes/{box_id}").json()["box_id"] == box_id
    assert client.get("/v1/boxes/life").json()["box_id"] == box_id
    head = client.head("/v1/boxes/life")
    assert head.status_code == 204 and head.content == b""
    started = client.post(f"/v1/boxes/{box_id}/start")
    assert started.status_code == 200, started.text
    assert started.json()["status"] == "running" and started.json()["pid"] > 0
    again = client.post(f"/v1/boxes/{box_id}/start")  # idempotent
    assert again.status_code == 200 and again.json()["status"] == "running"
    error_of(client.delete(f"/v1/boxes/{box_id}"), 409, "invalid_state")
    stopped = client.post(f"/v1/boxes/{box_id}/stop", json={"timeout_seconds": 5})
    assert stopped.status_code == 200 and stopped.json()["status"] == "stopped"
    assert client.post(f"/v1/boxes/{box_id}/start").json()["status"] == "running"
    assert client.delete(f"/v1/boxes/{box_id}", params={"force": "true"}).status_code == 204
    error_of(client.get(f"/v1/boxes/{box_id}"), 404, "not_found")
    assert client.head(f"/v1/boxes/{box_id}").status_code == 404


def test_list_filters_and_pages(client: httpx.Client, make_box: MakeBox) -> None:
    ids = [make_box()["box_id"] for _ in range(3)]
    client.post(f"/v1/boxes/{ids[1]}/start").raise_for_status()
    seen: list[str] = []
    token = None
    while True:
        params: dict[str, Any] = {"pageSize": 1, **({"pageToken": token} if token else {})}
        page = client.get("/v1/boxes", params=params).json()
        assert len(page["boxes"]) <= 1
        seen += [b["box_id"] for b in page["boxes"]]
        token = page.get("next_page_token")
        if not token:
            break
    assert [i for i in seen if i in ids] == ids  # oldest first, each once
    running = client.get("/v1/boxes", params={"status": "running"}).json()["boxes"]
    assert [b["box_id"] for b in running if b["box_id"] in ids] == [ids[1]]
    configured = client.get("/v1/boxes", params={"status": "configured"}).json()["boxes"]
    assert {b["box_id"] for b in configured} >= {ids[0], ids[2]}
    error_of(client.get("/v1/boxes", params={"pageToken": "garbage!"}), 400, "invalid_argument")
    error_of(client.get("/v1/boxes", params={"status": "bogus"}), 400, "invalid_argument")
    error_of(client.get("/v1/boxes", params={"pageSize": 0}), 400, "invalid_argument")


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"rootfs_path": "/"}, 400, "invalid_argument"),  # outside --allow-rootfs
        ({"rootfs_path": "ROOTFS/../../.."}, 400, "invalid_argument"),
        ({"image": "/etc"}, 400, "invalid_argument"),  # a path on the server
        ({"image": "host"}, 400, "invalid_argument"),
        ({"image": "nosuch:latest"}, 422, "image_pull_failed"),
        ({"rootfs_path": "ROOTFS", "image": "x"}, 400, "invalid_argument"),
        ({"rootfs_path": "ROOTFS", "isolation": "none"}, 400, "invalid_argument"),
        ({"rootfs_path": "ROOTFS", "cpus": 0}, 400, "invalid_argument"),
        ({"rootfs_path": "ROOTFS", "memory_mib": 1 << 40}, 400, "invalid_argument"),
        ({"rootfs_path": "ROOTFS", "name": "bad name!"}, 400, "invalid_argument"),
        ({"rootfs_path": "ROOTFS", "working_dir": "relative"}, 400, "invalid_argument"),
        ({"rootfs_path": "ROOTFS", "env": {"A=B": "x"}}, 400, "invalid_argument"),
        (
            {"rootfs_path": "ROOTFS", "volumes": [{"managed_volume": "v", "guest_path": "/v"}]},
            501,
            "unsupported",
        ),
        ({"rootfs_path": "ROOTFS", "secrets": [{"name": "a", "value": "b"}]}, 501, "unsupported"),
        ({"rootfs_path": "ROOTFS", "tty": True}, 501, "unsupported"),
        (
            {
                "rootfs_path": "ROOTFS",
                "network": {"outbound": {"mode": "enabled"}, "mode": "enabled"},
            },
            400,
            "invalid_argument",
        ),
        ({"rootfs_path": "ROOTFS", "boxlite_engine": "xen"}, 400, "invalid_argument"),
        ([1, 2, 3], 400, "invalid_argument"),
    ],
)
def test_create_refuses(
    client: httpx.Client, rootfs: Path, body: Any, status: int, code: str
) -> None:
    text = json.dumps(body).replace("ROOTFS", str(rootfs))
    reply = client.post("/v1/boxes", content=text, headers={"Content-Type": "application/json"})
    error_of(reply, status, code)
    assert not [b for b in client.get("/v1/boxes").json()["boxes"] if b["name"] == "bad name!"]


@pytest.mark.parametrize(
    "content", [b"{", b"\xff\xfe", b"null", b'{"rootfs_path": 5}', b"[" * 10000 + b"]" * 10000]
)
def test_malformed_json(client: httpx.Client, content: bytes) -> None:
    reply = client.post("/v1/boxes", content=content, headers={"Content-Type": "application/json"})
    error_of(reply, 400, "invalid_argument")


def test_huge_body(client: httpx.Client) -> None:
    huge = b'{"name": "' + b"x" * (2 << 20) + b'"}'
    error_of(client.post("/v1/boxes", content=huge), 413, "invalid_argument")

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it comes
        yield b'{"name": "'
        for _ in range(3):
            yield b"x" * (1 << 20)
        yield b'"}'

    error_of(client.post("/v1/boxes", content=chunks()), 413, "invalid_argument")


@pytest.mark.parametrize("box_id", ["nosuch", "x" * 129, "%00", "a%2Fb", "%C3%A9"])
def test_unknown_boxes(client: httpx.Client, box_id: str) -> None:
    for method, suffix in (
        ("GET", ""),
        ("POST", "/start"),
        ("POST", "/stop"),
        ("DELETE", ""),
        ("GET", "/metrics"),
        ("GET", "/files?path=/"),
    ):
        reply = client.request(method, f"/v1/boxes/{box_id}{suffix}")
        assert reply.status_code in (400, 404), (method, suffix, reply.text)
        assert reply.json()["error"]["code"] in ("not_found", "invalid_argument")


def test_idempotent_create_survives_a_restart(
    server: ServerProcess, client: httpx.Client, make_box: MakeBox, rootfs: Path
) -> None:
    key = str(uuid.uuid4())
    body = {"rootfs_path": str(rootfs), "name": "idem"}
    first = client.post("/v1/boxes", json=body, headers={"Idempotency-Key": key})
    assert first.status_code == 201
    box_id = first.json()["box_id"]
    try:
        again = client.post("/v1/boxes", json=body, headers={"Idempotency-Key": key})
        assert again.status_code == 201 and again.json()["box_id"] == box_id
        assert again.headers["Location"] == f"/v1/boxes/{box_id}"
        other = client.post(
            "/v1/boxes", json={**body, "name": "idem2"}, headers={"Idempotency-Key": key}
        )
        error_of(other, 422, "invalid_argument")
        started = client.post(f"/v1/boxes/{box_id}/start", headers={"Idempotency-Key": "s-" + key})
        assert started.status_code == 200
        server.restart()
        with server.client() as fresh:
            replay = fresh.post("/v1/boxes", json=body, headers={"Idempotency-Key": key})
            assert replay.status_code == 201 and replay.json()["box_id"] == box_id
            found = fresh.get(f"/v1/boxes/{box_id}").json()
            assert found["status"] == "running"  # detached: it outlived the server
            names = [b["name"] for b in fresh.get("/v1/boxes").json()["boxes"]]
            assert names.count("idem") == 1 and "idem2" not in names
    finally:
        with server.client() as fresh:
            fresh.delete(f"/v1/boxes/{box_id}", params={"force": "true"})


def test_unsupported_routes(client: httpx.Client, make_box: MakeBox) -> None:
    box_id = make_box()["box_id"]
    for method, path in (
        ("GET", "/v1/volumes"),
        ("POST", "/v1/volumes"),
        ("GET", "/v1/volumes/v1"),
        ("DELETE", "/v1/volumes/v1"),
        ("GET", "/v1/api-keys"),
        ("POST", "/v1/api-keys"),
        ("DELETE", "/v1/api-keys/k"),
        ("GET", f"/v1/boxes/{box_id}/snapshots"),
        ("POST", f"/v1/boxes/{box_id}/snapshots"),
        ("GET", f"/v1/boxes/{box_id}/snapshots/s"),
        ("POST", f"/v1/boxes/{box_id}/snapshots/s/restore"),
        ("POST", f"/v1/boxes/{box_id}/clone"),
        ("POST", f"/v1/boxes/{box_id}/export"),
        ("POST", "/v1/boxes/import"),
        ("POST", f"/v1/boxes/{box_id}/network/tunnel?port=80"),
    ):
        error_of(client.request(method, path), 501, "unsupported")


def test_metrics(client: httpx.Client, make_box: MakeBox) -> None:
    before = client.get("/v1/metrics").json()
    box_id = make_box()["box_id"]
    client.post(f"/v1/boxes/{box_id}/start").raise_for_status()
    metrics = client.get(f"/v1/boxes/{box_id}/metrics").json()
    assert metrics["commands_executed_total"] >= 0
    assert metrics["memory_bytes"] is None or metrics["memory_bytes"] > 0
    assert metrics["boxlite_cpu_seconds"] is None or metrics["boxlite_cpu_seconds"] >= 0
    client.post(f"/v1/boxes/{box_id}/stop").raise_for_status()
    after = client.get("/v1/metrics").json()
    assert after["boxes_created_total"] == before["boxes_created_total"] + 1
    assert after["boxes_stopped_total"] == before["boxes_stopped_total"] + 1


def test_config_reports_limits(client: httpx.Client) -> None:
    caps = client.get("/v1/config").json()["capabilities"]
    assert caps["max_concurrent_executions"] > 0 and caps["boxlite_max_executions"] > 0
    assert caps["boxlite_max_json_body_bytes"] == 1 << 20
    assert caps["file_transfer_max_bytes"] > 0 and caps["max_memory_mib"] > 0
