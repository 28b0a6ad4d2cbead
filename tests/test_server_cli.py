"""``boxlite serve``'s command line: the generated token, the warning off
loopback, bad flags."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
from server_fixture import free_port

BOXLITE = [sys.executable, "-m", "boxlite_ffi.cli"]


def serve(home: Path, *flags: str) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "BOXLITE_SERVE_TOKEN"}
    argv = [*BOXLITE, "--home", str(home), "serve", "--port", str(port), *flags]
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            httpx.get(f"http://127.0.0.1:{port}/v1/config", timeout=1)
            break
        except httpx.TransportError:
            time.sleep(0.05)
    return proc, port


def stop(proc: subprocess.Popen[bytes]) -> str:
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    return err.decode()


def test_a_token_is_generated_once(tmp_path: Path) -> None:
    home = tmp_path / "home"
    proc, port = serve(home)
    err = stop(proc)
    token_file = home / "serve.token"
    assert str(token_file) in err
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    token = token_file.read_text().strip()
    proc, port = serve(home)  # the same token again, not a new one
    try:
        url = f"http://127.0.0.1:{port}/v1/me"
        assert httpx.get(url, headers={"Authorization": f"Bearer {token}"}).status_code == 200
        assert httpx.get(url, headers={"Authorization": "Bearer other"}).status_code == 401
    finally:
        assert "a new token" not in stop(proc)


def test_token_file_and_warning_off_loopback(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("from-a-file\n")
    proc, port = serve(tmp_path / "home", "--host", "0.0.0.0", "--token-file", str(secret))
    try:
        url = f"http://127.0.0.1:{port}/v1/me"
        assert httpx.get(url, headers={"Authorization": "Bearer from-a-file"}).status_code == 200
    finally:
        err = stop(proc)
    assert "WARNING" in err and "without TLS" in err


def test_bad_flags(tmp_path: Path) -> None:
    home = str(tmp_path / "home")
    for flags in (
        ["--tls-cert", "x"],
        ["--allow-rootfs", str(tmp_path / "none")],
        ["--port", "70000"],
    ):
        done = subprocess.run([*BOXLITE, "--home", home, "serve", *flags], capture_output=True)
        assert done.returncode == 125, done.stderr
        assert done.stderr.decode().count("\n") == 1
