"""The server's discovery routes and its bearer token."""

from __future__ import annotations

import httpx
import pytest
from server_fixture import ServerProcess


def test_config_needs_no_token(server: ServerProcess) -> None:
    with server.client(token=None) as anonymous:
        reply = anonymous.get("/v1/config")
    assert reply.status_code == 200
    caps = reply.json()["capabilities"]
    assert caps["max_boxes_per_path_prefix"] >= 1
    assert caps["snapshots_enabled"] is False
    assert caps["boxlite_features"]["volumes"] is False
    assert caps["idempotency_key_lifetime"] == "PT24H"
    assert reply.headers["X-Request-Id"].startswith("req_")


def test_me(client: httpx.Client) -> None:
    reply = client.get("/v1/me")
    assert reply.status_code == 200
    body = reply.json()
    assert body["path_prefix"] is None and "path_prefix" in body
    assert body["principal_type"] == "service_account"
    assert "box:exec" in body["scopes"]
    assert not any(s.startswith("volume:") for s in body["scopes"])


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": "Basic dGVzdA=="},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer \u00e9t\u00e9".encode("latin-1")},
    ],
)
@pytest.mark.parametrize("path", ["/v1/me", "/v1/boxes", "/v1/images", "/v1/metrics"])
def test_token_required(server: ServerProcess, headers: dict[str, str | bytes], path: str) -> None:
    with httpx.Client(base_url=server.url, headers=headers) as c:
        reply = c.get(path)
    assert reply.status_code == 401
    error = reply.json()["error"]
    assert error["code"] == "unauthenticated" and error["type"] == "AuthError"
    assert reply.headers["WWW-Authenticate"] == "Bearer"


def test_unknown_route_is_the_contract_404(client: httpx.Client) -> None:
    reply = client.get("/v1/nowhere")
    assert reply.status_code == 404
    assert reply.json()["error"]["code"] == "not_found"


def test_request_id_round_trips(client: httpx.Client) -> None:
    reply = client.get("/v1/nowhere", headers={"X-Request-Id": "mine-42"})
    assert reply.headers["X-Request-Id"] == "mine-42"
    assert reply.json()["error"]["request_id"] == "mine-42"
