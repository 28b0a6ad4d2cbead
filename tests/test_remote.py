"""The remote client against a real ``boxlite serve`` on loopback: what only
a client of a server has (tokens, a server out of reach, sockets that
break, ownership across the wire, asyncio, what the contract cannot carry).
Everything a local runtime also does runs in the parity modules, twice
(conftest.py's ``parity`` marker)."""

from __future__ import annotations

import asyncio
import hashlib
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from server_fixture import TOKEN, ServerProcess, free_port

import boxlite_ffi
from boxlite_ffi import aio
from boxlite_ffi.remote import RemoteRuntime

# 200000 numbered lines: any byte lost, repeated or reordered shows.
SEQUENCE = ["seq", "1", "200000"]
EXPECTED = hashlib.sha256("".join(f"{i}\n" for i in range(1, 200001)).encode()).hexdigest()


@pytest.fixture
def remote(server: ServerProcess) -> RemoteRuntime:
    with boxlite_ffi.connect(server.url, TOKEN) as rt:
        yield rt


def test_a_wrong_or_missing_token_is_an_authentication_error(server: ServerProcess) -> None:
    for token in ("not-the-token", None):
        with (
            boxlite_ffi.connect(server.url, token) as rt,
            pytest.raises(boxlite_ffi.AuthenticationError),
        ):
            rt.list()


def test_a_server_out_of_reach_is_a_connection_lost_error() -> None:
    unreachable = f"http://127.0.0.1:{free_port()}"
    with (
        boxlite_ffi.connect(unreachable, TOKEN, retry_for=0.3) as rt,
        pytest.raises(boxlite_ffi.ConnectionLostError),
    ):
        rt.list()
    with pytest.raises(boxlite_ffi.InvalidArgumentError):
        boxlite_ffi.connect("ftp://example", TOKEN)


def test_what_the_contract_cannot_carry_is_refused(remote: RemoteRuntime, rootfs: Path) -> None:
    for options in ({"volumes": ["/tmp:/tmp"]}, {"auto_remove": True}, {"accel": "tcg"}):
        with pytest.raises(boxlite_ffi.UnsupportedError):
            remote.create(rootfs=rootfs, **options)
    with pytest.raises(boxlite_ffi.UnsupportedError):
        remote.images.load(rootfs)
    with pytest.raises(boxlite_ffi.UnsupportedError):
        remote.images.pull("busybox:latest", progress=print)
    with remote.create(rootfs=rootfs) as box:
        execution = box.exec(["sleep", "30"])
        with pytest.raises(boxlite_ffi.InvalidArgumentError, match="not one a client may send"):
            execution.signal(signal.SIGSTOP)  # beyond the contract's whitelist
        execution.kill()  # SIGKILL is the contract's DELETE
        assert execution.wait(timeout=10).outcome is boxlite_ffi.Outcome.SIGNALED


def test_a_rootfs_outside_the_servers_allowed_directory_is_refused(
    remote: RemoteRuntime, tmp_path: Path
) -> None:
    with pytest.raises(boxlite_ffi.InvalidArgumentError, match="allow-rootfs"):
        remote.create(rootfs=tmp_path)


def test_broken_sockets_are_resumed_from_the_cursor(remote: RemoteRuntime, rootfs: Path) -> None:
    """Each break is an abort of the TCP connection under the socket, as a
    network would; the client reconnects with its cursor, and the stream is
    whole: nothing lost, nothing twice."""
    with remote.create(rootfs=rootfs) as box:
        execution = box.exec(SEQUENCE, output_window=64 << 10)
        channel = execution._sink.handle.native
        digest = hashlib.sha256()
        seen, breaks = 0, 0
        for chunk in execution.stdout:
            digest.update(chunk)
            seen += len(chunk)
            if seen > (breaks + 1) * 200_000 and breaks < 3:
                breaks += 1
                remote._t.soon(lambda: channel._socket.result().transport.abort())
        assert execution.wait(timeout=30).ok
        assert breaks == 3 and digest.hexdigest() == EXPECTED


def test_another_client_attaches_from_a_cursor(server: ServerProcess, rootfs: Path) -> None:
    with boxlite_ffi.connect(server.url, TOKEN) as first:
        box = first.create(rootfs=rootfs, detach=True)
        execution = box.exec(["sh", "-c", "echo one; read x; echo two"], stdin=True)
        assert next(iter(execution.stdout)) == b"one\n"
        cursor = execution.cursor
        execution.detach()
        assert execution.wait().outcome is boxlite_ffi.Outcome.DETACHED
    with boxlite_ffi.connect(server.url, TOKEN) as second:
        box = second.get(box.id)
        again = box.execution(execution.id, cursor=cursor)
        assert again.replay_start == cursor
        again.write_stdin(b"go\n")
        result = again.wait(timeout=10)
        assert result.ok and result.stdout == b"two\n"
        with pytest.raises(boxlite_ffi.NotFoundError):
            box.execution("0123456789abcdef")
        box.remove(force=True)


def test_owned_boxes_go_with_their_client_detached_ones_stay(
    server: ServerProcess, rootfs: Path
) -> None:
    with boxlite_ffi.connect(server.url, TOKEN) as rt:
        owned = rt.create(rootfs=rootfs)
        kept = rt.create(rootfs=rootfs, name="kept-remotely", detach=True)
        owned.start()
        kept.start()
        assert {i.id: i.detached for i in rt.list()} == {owned.id: False, kept.id: True}
    with boxlite_ffi.connect(server.url, TOKEN) as rt:
        assert [i.id for i in rt.list()] == [kept.id]
        assert rt.get("kept-remotely").status is boxlite_ffi.BoxStatus.RUNNING
        rt.remove("kept-remotely", force=True)
        with pytest.raises(boxlite_ffi.NotFoundError):
            rt.get("kept-remotely")


def test_a_program_that_ends_removes_its_boxes(server: ServerProcess, rootfs: Path) -> None:
    """The atexit hook, as a local runtime's: no close() called."""
    program = (
        "import sys, boxlite_ffi\n"
        "rt = boxlite_ffi.connect(sys.argv[1], sys.argv[2])\n"
        "print(rt.create(rootfs=sys.argv[3]).run(['echo', 'hi']).stdout.decode(), end='')\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", program, server.url, TOKEN, str(rootfs)],
        capture_output=True,
        timeout=60,
        check=True,
    )
    assert out.stdout == b"hi\n"
    with server.client() as client:
        assert client.get("/v1/boxes").json()["boxes"] == []


def test_boxes_are_found_again_after_the_server_restarts(tmp_path: Path, rootfs: Path) -> None:
    process = ServerProcess(tmp_path / "home", rootfs.parent)
    process.start()
    try:
        with boxlite_ffi.connect(process.url, TOKEN, retry_for=30) as rt:
            box = rt.create(rootfs=rootfs, name="survivor", detach=True)
            assert box.run(["echo", "before"]).stdout == b"before\n"
            process.restart()
            assert rt.get("survivor").status is boxlite_ffi.BoxStatus.RUNNING
            assert box.run(["echo", "after"]).stdout == b"after\n"
            box.remove(force=True)
    finally:
        process.stop()


def test_asyncio_twin(server: ServerProcess, rootfs: Path) -> None:
    async def main() -> None:
        async with aio.connect(server.url, TOKEN) as rt:
            async with await rt.create(rootfs=rootfs) as box:
                result = await box.run(["sh", "-c", "cat; echo err >&2"], input=b"in\n")
                assert (result.stdout, result.stderr) == (b"in\n", b"err\n")
                execution = await box.exec(SEQUENCE)
                digest = hashlib.sha256()
                async for chunk in execution.stdout:
                    digest.update(chunk)
                assert (await execution.wait()).ok and digest.hexdigest() == EXPECTED
                assert (await box.info()).status is boxlite_ffi.BoxStatus.RUNNING
            assert await rt.list() == []

    asyncio.run(main())


def test_fifty_clients_twenty_executions_each_nothing_lost(
    server: ServerProcess, rootfs: Path
) -> None:
    """A bounded load: 50 clients (each its own connection and thread), 20
    executions each, in 5 boxes; every output hashed against what it must
    be; nothing left on the server afterwards."""
    with boxlite_ffi.connect(server.url, TOKEN) as owner:
        boxes = [owner.create(rootfs=rootfs, detach=True) for _ in range(5)]
        for box in boxes:
            box.start()

        def client(n: int) -> int:
            with boxlite_ffi.connect(server.url, TOKEN) as rt:
                box = rt.get(boxes[n % len(boxes)].id)
                for i in range(20):
                    lines = 1000 + 37 * n + i
                    result = box.run(["sh", "-c", f"seq {lines}; echo {n}-{i} >&2"])
                    want = "".join(f"{k}\n" for k in range(1, lines + 1)).encode()
                    assert hashlib.sha256(result.stdout).digest() == hashlib.sha256(want).digest()
                    assert result.ok and result.stderr == f"{n}-{i}\n".encode()
            return n

        with ThreadPoolExecutor(50) as pool:
            assert sorted(pool.map(client, range(50))) == list(range(50))
        for box in boxes:
            box.remove(force=True)
    with server.client() as c:
        assert c.get("/v1/boxes").json()["boxes"] == []
        assert c.get("/v1/metrics").json()["total_commands_executed"] >= 1000


def test_over_tls_with_the_servers_certificate(tmp_path: Path, rootfs: Path) -> None:
    """https and wss, the server's self-signed certificate as the CA; a
    client that does not trust it is refused at the handshake."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    request = ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
    names = ["-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"]
    subprocess.run(
        ["openssl", *request, "-keyout", str(key), "-out", str(cert), *names],
        check=True,
        capture_output=True,
    )
    process = ServerProcess(
        tmp_path / "home", rootfs.parent, "--tls-cert", str(cert), "--tls-key", str(key)
    )
    process.start()
    try:
        assert process.url.startswith("https://")
        with (
            boxlite_ffi.connect(process.url, TOKEN, verify=str(cert)) as rt,
            rt.create(rootfs=rootfs) as box,
        ):
            execution = box.exec(SEQUENCE)  # output over wss
            digest = hashlib.sha256(execution.stdout.read()).hexdigest()
            assert execution.wait().ok and digest == EXPECTED
        with (
            boxlite_ffi.connect(process.url, TOKEN, retry_for=0) as untrusting,
            pytest.raises(boxlite_ffi.ConnectionLostError, match="CERTIFICATE_VERIFY"),
        ):
            untrusting.list()
    finally:
        process.stop()
