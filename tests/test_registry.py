"""Pulling from a real registry on loopback (Debian's docker-registry),
with images pushed by skopeo: anonymous, basic and bearer-token auth,
manifest lists, corrupted blobs, and a registry that dies mid-pull."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import boxlite_ffi
from boxlite_ffi import (
    DigestMismatchError,
    ImageNotFoundError,
    ImageReason,
    RegistryNetworkError,
    UnauthorizedError,
)

from imagebuild import Entry, tar_bytes, tar_directory, write_layout
from registry_server import (
    PASSWORD,
    SKOPEO,
    USER,
    RegistryServer,
    ThrottledProxy,
    TokenServer,
    free_port,
)

NOISE = 32 << 20


@pytest.fixture(scope="module")
def layout(tmp_path_factory: pytest.TempPathFactory, rootfs: Path) -> Path:
    """busybox, a layer of noise (more than loopback's socket buffers hold,
    so a registry killed mid-pull breaks the transfer), and a small top."""
    noise = tar_bytes([Entry("noise", data=os.urandom(NOISE))])
    top = tar_bytes([Entry("hello", data=b"pulled\n")])
    return write_layout(
        tmp_path_factory.mktemp("pushed") / "layout",
        [tar_directory(rootfs), noise, top],
        config={"Cmd": ["cat", "/hello"]},
    )


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[RegistryServer]:
    server = RegistryServer(tmp_path / "registry")
    yield server
    server.stop()


def test_pull_and_run(rt: boxlite_ffi.Runtime, registry: RegistryServer, layout: Path) -> None:
    ref = registry.push(layout, "demo/busybox:1")
    seen: list[boxlite_ffi.Progress] = []
    info = rt.images.pull(ref, progress=seen.append)
    assert info.tags == (ref,) and len(info.layers) == 3
    assert seen[-1].layers_done == 3 and seen[-1].bytes_done == seen[-1].bytes_total > NOISE
    box = rt.create(ref, use_image_cmd=True)
    box.start()
    assert box.wait().exit_code == 0 and box.logs().stdout == b"pulled\n"
    box.remove()
    again = rt.images.pull(ref)  # everything is cached: only the manifest is asked for
    assert again.id == info.id
    assert registry.requests("/blobs/") == 4  # config + 3 layers, once each


def test_pull_by_digest_and_docker_format(
    rt: boxlite_ffi.Runtime, registry: RegistryServer, layout: Path
) -> None:
    ref = registry.push(layout, "demo/v2s2:1", fmt="v2s2")
    info = rt.images.pull(ref)
    by_digest = rt.images.pull(f"{registry.host}/demo/v2s2@{info.id}")
    assert by_digest.id == info.id
    with pytest.raises(ImageNotFoundError) as caught:
        rt.images.pull(f"{registry.host}/demo/v2s2:nope")
    assert caught.value.reason == ImageReason.NOT_FOUND
    with pytest.raises(ImageNotFoundError):
        rt.images.pull(f"{registry.host}/demo/missing:1")


def test_a_manifest_list_picks_linux_amd64(
    rt: boxlite_ffi.Runtime, registry: RegistryServer, layout: Path, tmp_path: Path
) -> None:
    """An index with an arm64 decoy first; skopeo pushes both with --all."""
    decoy = write_layout(tmp_path / "decoy", [tar_bytes([Entry("arm", data=b"arm64")])])
    index = json.loads((layout / "index.json").read_text())
    decoy_index = json.loads((decoy / "index.json").read_text())
    multi = tmp_path / "multi"
    subprocess.run(["cp", "-a", layout, multi], check=True)
    for blob in (decoy / "blobs/sha256").iterdir():
        (multi / "blobs/sha256" / blob.name).write_bytes(blob.read_bytes())
    arm = dict(decoy_index["manifests"][0], platform={"os": "linux", "architecture": "arm64"})
    image_index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [arm, index["manifests"][0]],
    }
    data = json.dumps(image_index).encode()

    digest = hashlib.sha256(data).hexdigest()
    (multi / "blobs/sha256" / digest).write_bytes(data)
    top = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.index.v1+json",
                "digest": f"sha256:{digest}",
                "size": len(data),
            }
        ],
    }
    (multi / "index.json").write_text(json.dumps(top))
    ref = f"{registry.host}/demo/multi:1"
    subprocess.run(
        [
            SKOPEO,
            "copy",
            "-q",
            "--all",
            "--dest-tls-verify=false",
            f"oci:{multi}",
            f"docker://{ref}",
        ],
        check=True,
    )
    info = rt.images.pull(ref)
    assert info.id == index["manifests"][0]["digest"]
    with rt.create(ref) as box:
        assert box.run(["cat", "/hello"]).stdout == b"pulled\n"


def test_basic_auth(rt: boxlite_ffi.Runtime, tmp_path: Path, layout: Path) -> None:
    server = RegistryServer.with_basic_auth(tmp_path / "registry")
    try:
        ref = server.push(layout, "private/app:1", creds=True)
        with pytest.raises(UnauthorizedError) as caught:
            rt.images.pull(ref)
        assert caught.value.reason == ImageReason.UNAUTHORIZED
        with pytest.raises(UnauthorizedError):
            rt.images.pull(ref, username=USER, password="wrong")
        assert rt.images.pull(ref, username=USER, password=PASSWORD).tags == (ref,)
        # From a docker-style config file, as `docker login` writes it.
        config = tmp_path / "docker" / "config.json"
        config.parent.mkdir()
        auth = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        config.write_text(json.dumps({"auths": {server.host: {"auth": auth}}}))
        rt.images.remove(ref)
        rt.images.prune()
        assert rt.images.pull(ref, auth_file=config).tags == (ref,)
    finally:
        server.stop()


def test_bearer_token_auth(rt: boxlite_ffi.Runtime, tmp_path: Path, layout: Path) -> None:
    tokens = TokenServer(tmp_path / "tokens")
    server = RegistryServer(tmp_path / "registry", tokens.auth_config())
    try:
        ref = server.push(layout, "private/app:1", creds=True)
        with pytest.raises(UnauthorizedError):
            rt.images.pull(ref)  # anonymous: the token service refuses
        issued = tokens.issued
        info = rt.images.pull(ref, username=USER, password=PASSWORD)
        assert info.tags == (ref,)
        assert tokens.issued == issued + 1  # one token, shared by every fetch
        with rt.create(ref) as box:
            assert box.run(["cat", "/hello"]).stdout == b"pulled\n"
    finally:
        server.stop()
        tokens.close()


def test_a_corrupted_blob_is_refused(
    rt: boxlite_ffi.Runtime, registry: RegistryServer, layout: Path
) -> None:
    ref = registry.push(layout, "demo/corrupt:1")
    manifest = json.loads(
        subprocess.run(
            [SKOPEO, "inspect", "--raw", "--tls-verify=false", f"docker://{ref}"],
            check=True,
            capture_output=True,
        ).stdout
    )
    top = manifest["layers"][-1]["digest"]
    blob = registry.blob_file(top)
    data = bytearray(blob.read_bytes())
    data[-20] ^= 0xFF
    blob.write_bytes(bytes(data))
    with pytest.raises(DigestMismatchError) as caught:
        rt.images.pull(ref)
    assert caught.value.reason == ImageReason.DIGEST_MISMATCH
    assert rt.images.list() == []
    assert not (rt.home / "images/blobs/sha256" / top[7:]).exists()


def test_a_registry_that_dies_mid_pull(
    rt: boxlite_ffi.Runtime, registry: RegistryServer, layout: Path
) -> None:
    """Killed while the noise layer streams (through a proxy that passes
    it on at 16 MB/s, so it is still under way); the next pull fetches only
    what is missing, resuming the broken blob where it stopped."""
    registry.push(layout, "demo/flaky:1")
    proxy = ThrottledProxy(registry.port, 16_000_000)
    ref = f"127.0.0.1:{proxy.port}/demo/flaky:1"
    killed = threading.Event()

    def kill_midway(progress: boxlite_ffi.Progress) -> None:
        if not killed.is_set() and progress.bytes_done > 2 << 20:
            killed.set()
            registry.stop()

    try:
        _pull_through_a_dying_registry(rt, registry, layout, ref, kill_midway, killed)
    finally:
        proxy.close()


def _pull_through_a_dying_registry(
    rt: boxlite_ffi.Runtime,
    registry: RegistryServer,
    layout: Path,
    ref: str,
    kill_midway: Callable[[boxlite_ffi.Progress], None],
    killed: threading.Event,
) -> None:
    with pytest.raises(RegistryNetworkError) as caught:
        rt.images.pull(ref, progress=kill_midway)
    assert caught.value.reason == ImageReason.NETWORK and killed.is_set()
    noise = _manifest(layout)["layers"][1]["digest"]
    assert (rt.home / "images/ingest" / noise[7:]).stat().st_size > 0
    done_before = {p.name for p in (rt.home / "images/blobs/sha256").iterdir()}
    registry.start()
    seen: list[boxlite_ffi.Progress] = []
    info = rt.images.pull(ref, progress=seen.append)
    assert len(info.layers) == 3
    for name in done_before:  # finished blobs were not fetched again
        assert registry.requests(f"/blobs/sha256:{name}") <= 1
    assert registry.requests(f"/blobs/{noise}", status=206) == 1  # continued where it broke
    with rt.create(ref) as box:
        assert box.run(["sh", "-c", "wc -c < /noise"]).stdout.strip() == str(NOISE).encode()


def _manifest(layout: Path) -> dict:
    index = json.loads((layout / "index.json").read_text())
    return json.loads((layout / "blobs/sha256" / index["manifests"][0]["digest"][7:]).read_text())


def test_https_with_a_trusted_certificate(
    rt: boxlite_ffi.Runtime, tmp_path: Path, layout: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = RegistryServer(tmp_path / "registry", tls=True)
    try:
        ref = server.push(layout, "secure/app:1")
        with pytest.raises(RegistryNetworkError, match="certificate"):
            rt.images.pull(ref)  # speaks TLS, with a certificate nobody vouches for
        monkeypatch.setenv("SSL_CERT_FILE", str(server.cert))
        assert rt.images.pull(ref).tags == (ref,)
        with rt.create(ref) as box:
            assert box.run(["cat", "/hello"]).stdout == b"pulled\n"
    finally:
        server.stop()


def test_concurrent_pulls_of_one_image(
    rt: boxlite_ffi.Runtime, registry: RegistryServer, layout: Path, home: Path
) -> None:
    """Three threads of this runtime and another runtime on the same home:
    one copy of each blob and layer, nothing half made left behind."""
    ref = registry.push(layout, "demo/shared:1")
    other = boxlite_ffi.Runtime(home)
    results: list[object] = []

    def pull(runtime: boxlite_ffi.Runtime) -> None:
        try:
            results.append(runtime.images.pull(ref).id)
        except Exception as exc:  # noqa: BLE001 (reported below, whatever it is)
            results.append(exc)

    threads = [threading.Thread(target=pull, args=(r,)) for r in (rt, rt, rt, other)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    other.close()
    assert len(results) == 4 and len(set(results)) == 1, results
    assert isinstance(results[0], str), results
    images = home / "images"
    assert len(list((images / "layers").iterdir())) == 3  # no .unpack-* left
    assert list((images / "ingest").iterdir()) == []
    assert len(rt.images.list()) == 1


def test_nobody_listening(rt: boxlite_ffi.Runtime) -> None:
    with pytest.raises(RegistryNetworkError):
        rt.images.pull(f"127.0.0.1:{free_port()}/nothing:1")
