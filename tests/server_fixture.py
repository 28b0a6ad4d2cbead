"""A real ``boxlite serve`` on loopback for the server's tests: a child
process (``python -m boxlite_ffi.server``) on a free port, its own home,
token and allowed rootfs directory; and an httpx client carrying the token.

``ServerProcess.restart()`` stops it (SIGTERM, as an operator would) and
starts it again on the same home and port: detached boxes stay running.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

TOKEN = "test-token-0123456789"
START_TIMEOUT_S = 30.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerProcess:
    def __init__(self, home: Path, allow_rootfs: Path, *extra: str) -> None:
        self.home = home
        self.allow_rootfs = allow_rootfs
        self.extra = extra
        self.port = free_port()
        scheme = "https" if "--tls-cert" in extra else "http"
        self.url = f"{scheme}://127.0.0.1:{self.port}"
        self.log = home.parent / f"server-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {**os.environ, "BOXLITE_SERVE_TOKEN": TOKEN}
        argv = [sys.executable, "-m", "boxlite_ffi.server", "--home", str(self.home)]
        argv += ["--port", str(self.port), "--allow-rootfs", str(self.allow_rootfs), *self.extra]
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(argv, env=env, stdout=log, stderr=log)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited {self.proc.returncode}: {self.logs()}")
            try:
                # (Its certificate is the test's to check: not here.)
                ready = httpx.get(f"{self.url}/v1/config", timeout=1, verify=False)
                if ready.status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"the server did not answer in {START_TIMEOUT_S} s: {self.logs()}")

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def logs(self) -> str:
        return self.log.read_text(errors="replace")[-4000:] if self.log.exists() else ""

    def client(self, token: str | None = TOKEN) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60)


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory, rootfs: Path) -> Iterator[ServerProcess]:
    """One server for the session (its boxes are each test's to remove)."""
    process = ServerProcess(tmp_path_factory.mktemp("serve") / "home", rootfs.parent)
    process.start()
    yield process
    with process.client() as c:  # nothing a test forgot outlives the session
        for box in c.get("/v1/boxes").json().get("boxes", []):
            c.delete(f"/v1/boxes/{box['box_id']}", params={"force": "true"})
    process.stop()


@pytest.fixture
def client(server: ServerProcess) -> Iterator[httpx.Client]:
    with server.client() as c:
        yield c
