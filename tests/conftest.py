"""Shared fixtures: locally built images, a runtime per test, and the
leak check that fails any test leaving a shim or agent process alive."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import boxlite_ffi

from imagebuild import Entry, busybox_rootfs, tar_bytes, tar_directory, write_layout
from procscan import box_processes

# The real server on loopback (server, client): tests/server_fixture.py.
pytest_plugins = ["server_fixture"]


@pytest.fixture(autouse=True)
def no_leaked_box_processes() -> Iterator[None]:
    before = set(box_processes())
    yield
    deadline = time.monotonic() + 5
    while (leaked := set(box_processes()) - before) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not leaked, f"live box processes left behind: {sorted(leaked)}"


@pytest.fixture(scope="session")
def rootfs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return busybox_rootfs(tmp_path_factory.mktemp("image") / "rootfs")


@pytest.fixture(scope="session")
def oci_image(tmp_path_factory: pytest.TempPathFactory, rootfs: Path) -> Path:
    """Three layers: busybox; files to delete; whiteouts and an opaque dir."""
    base = tar_directory(rootfs)
    extra = tar_bytes(
        [
            Entry("etc/removed", data=b"gone\n"),
            Entry("opt", "dir"),
            Entry("opt/app", "dir"),
            Entry("opt/app/old", data=b"old\n"),
            Entry("opt/keep", data=b"kept\n"),
        ]
    )
    top = tar_bytes(
        [
            Entry("etc/.wh.removed"),
            Entry("opt/app/.wh..wh..opq"),
            Entry("opt/app/new", data=b"new\n"),
            Entry("etc/motd", data=b"from the top layer\n"),
        ]
    )
    return write_layout(tmp_path_factory.mktemp("oci") / "layout", [base, extra, top])


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A module marked ``parity`` runs each test that uses ``rt`` (or
    ``box``) twice: on a local runtime and on a server's (the remote client
    against the session's ``boxlite serve``), unless it is ``local_only``."""
    marked = metafunc.definition.get_closest_marker
    if "api" in metafunc.fixturenames and marked("parity") and not marked("local_only"):
        metafunc.parametrize("api", ["local", "remote"], indirect=True)


@pytest.fixture
def api(request: pytest.FixtureRequest) -> str:
    """Which runtime ``rt`` is: "local", or "remote" (see pytest_generate_tests)."""
    return str(getattr(request, "param", "local"))


@pytest.fixture
def rt(home: Path, api: str, request: pytest.FixtureRequest) -> Iterator[boxlite_ffi.Runtime]:
    if api == "remote":
        from server_fixture import TOKEN  # (a plugin: imported by pytest first)

        server = request.getfixturevalue("server")
        with boxlite_ffi.connect(server.url, TOKEN) as remote:
            yield remote  # type: ignore[misc]  (the same API: that is the point)
        return
    with boxlite_ffi.Runtime(home) as runtime:
        yield runtime


@pytest.fixture
def box(rt: boxlite_ffi.Runtime, rootfs: Path) -> Iterator[boxlite_ffi.Box]:
    with rt.create(rootfs=rootfs) as b:
        yield b


@pytest.fixture
def host_server() -> Iterator[tuple[str, int]]:
    """A TCP server on every address of the host, and the host's own
    (non-loopback) address."""
    server = socket.socket()
    server.bind(("0.0.0.0", 0))
    server.listen()

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                conn.sendall(b"hello from the host\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe_socket:
        probe_socket.connect(("192.0.2.1", 9))  # no packet is sent: it picks a route
        address = probe_socket.getsockname()[0]
    yield address, server.getsockname()[1]
    server.shutdown(socket.SHUT_RDWR)  # wakes the accept (a close alone would not)
    server.close()
    thread.join()
