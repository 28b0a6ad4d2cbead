"""The server's image routes, pulling from a real registry on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from registry_server import RegistryServer


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[RegistryServer]:
    server = RegistryServer(tmp_path / "registry")
    yield server
    server.stop()


def test_pull_list_get_and_run(
    client: httpx.Client, registry: RegistryServer, oci_image: Path
) -> None:
    ref = registry.push(oci_image, "serve/busybox:1")
    pulled = client.post("/v1/images/pull", json={"reference": ref})
    assert pulled.status_code == 200, pulled.text
    image = pulled.json()
    assert image["reference"] == ref and image["tag"] == "1"
    assert image["repository"] == f"{registry.host}/serve/busybox"
    assert image["id"].startswith("sha256:") and image["size_bytes"] > 0
    listed = client.get("/v1/images").json()["images"]
    assert image["id"] in [i["id"] for i in listed]
    assert client.get(f"/v1/images/{image['id']}").json()["id"] == image["id"]
    assert client.head(f"/v1/images/{image['id']}").status_code == 204
    box = client.post("/v1/boxes", json={"image": ref}).json()
    try:
        assert box["image"] == ref
        assert client.post(f"/v1/boxes/{box['box_id']}/start").status_code == 200
    finally:
        client.delete(f"/v1/boxes/{box['box_id']}", params={"force": "true"})


def test_unknown_images(client: httpx.Client, registry: RegistryServer) -> None:
    missing = "sha256:" + "0" * 64
    reply = client.get(f"/v1/images/{missing}")
    assert reply.status_code == 404 and reply.json()["error"]["code"] == "not_found"
    assert client.head(f"/v1/images/{missing}").status_code == 404
    for reference in (f"{registry.host}/no/such:1", "UPPER CASE!!", ""):
        reply = client.post("/v1/images/pull", json={"reference": reference})
        assert reply.status_code in (400, 422), reply.text
        assert reply.json()["error"]["code"] in ("image_pull_failed", "invalid_argument")


def test_image_paging(client: httpx.Client) -> None:
    seen, token = [], None
    while True:
        params = {"pageSize": 1, **({"pageToken": token} if token else {})}
        page = client.get("/v1/images", params=params).json()
        seen += [i["id"] for i in page["images"]]
        token = page.get("next_page_token")
        if not token:
            break
    assert seen == sorted(set(seen))
