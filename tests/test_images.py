"""The image cache: loading OCI layouts and docker archives (made by our
own builder, by skopeo and by umoci), names, config, removal, pruning, and
archives that try to break out."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

import boxlite_ffi
from boxlite_ffi import (
    DigestMismatchError,
    ImageError,
    ImageInUseError,
    ImageNotFoundError,
    ImageReason,
    InvalidArgumentError,
    UnsafePathError,
)

from imagebuild import Entry, tar_bytes, tar_directory, write_layout

CI = bool(os.environ.get("CI"))
SKOPEO, UMOCI = shutil.which("skopeo"), shutil.which("umoci")
# tests/run.sh installs both; CI must not skip them.
needs_skopeo = pytest.mark.skipif(not SKOPEO and not CI, reason="skopeo is not installed")
needs_umoci = pytest.mark.skipif(not UMOCI and not CI, reason="umoci is not installed")


@pytest.fixture(scope="module")
def app_image(tmp_path_factory: pytest.TempPathFactory, rootfs: Path) -> Path:
    """busybox plus an app layer, with an image config that says how to run."""
    app = tar_bytes([Entry("app", "dir"), Entry("app/run.sh", data=b"echo ran $GREETING\n")])
    config = {
        "Env": ["PATH=/bin", "GREETING=hello"],
        "Entrypoint": ["sh"],
        "Cmd": ["/app/run.sh"],
        "WorkingDir": "/app",
    }
    return write_layout(
        tmp_path_factory.mktemp("app") / "layout", [tar_directory(rootfs), app], config=config
    )


def _manifest(layout: Path) -> dict:
    index = json.loads((layout / "index.json").read_text())
    return json.loads((layout / "blobs/sha256" / index["manifests"][0]["digest"][7:]).read_text())


def test_load_a_layout_and_run_its_config(rt: boxlite_ffi.Runtime, app_image: Path) -> None:
    seen = []
    (info,) = rt.images.load(app_image, tag="app:1", progress=seen.append)
    assert info.tags == ("app:1",) and info.id.startswith("sha256:")
    assert info.config.entrypoint == ("sh",) and info.config.workdir == "/app"
    assert seen[-1].layers_done == seen[-1].layers_total == 2
    assert seen[-1].bytes_done == seen[-1].bytes_total > 0
    assert [p.bytes_done for p in seen] == sorted(p.bytes_done for p in seen)
    with rt.create("app:1") as box:  # Env and WorkingDir apply to every exec
        assert box.run(["sh", "-c", 'echo "$GREETING $(pwd)"']).stdout == b"hello /app\n"
    box = rt.create("app:1", use_image_cmd=True)
    box.start()
    assert box.wait().exit_code == 0 and box.logs().stdout == b"ran hello\n"
    box.remove()
    box = rt.create("app:1", cmd=["-c", "echo a cmd follows the Entrypoint"])
    box.start()
    assert box.wait().exit_code == 0 and box.logs().stdout == b"a cmd follows the Entrypoint\n"
    box.remove()


def test_names_ids_and_prefixes(rt: boxlite_ffi.Runtime, app_image: Path) -> None:
    (info,) = rt.images.load(app_image, tag="app:1")
    rt.images.load(app_image, tag="registry.example:5000/team/app")
    again = rt.images.inspect("registry.example:5000/team/app:latest")
    assert again.id == info.id and set(again.tags) == {
        "app:1",
        "registry.example:5000/team/app:latest",
    }
    assert rt.images.inspect(info.id[:14]).id == info.id
    assert rt.images.inspect(info.id.removeprefix("sha256:")[:10]).id == info.id
    with pytest.raises(ImageNotFoundError) as caught:
        rt.images.inspect("nothing:here")
    assert caught.value.reason == ImageReason.NOT_FOUND
    with pytest.raises(ImageNotFoundError):
        rt.create("nothing:here")
    rt.images.remove("app:1")  # a name goes; the image stays under its other name
    assert rt.images.inspect(info.id).tags == ("registry.example:5000/team/app:latest",)
    rt.images.remove(info.id)
    assert rt.images.list() == []


def test_an_image_in_use_cannot_be_removed(rt: boxlite_ffi.Runtime, app_image: Path) -> None:
    rt.images.load(app_image, tag="app:1")
    box = rt.create("app:1")
    with pytest.raises(ImageInUseError, match=box.id) as caught:
        rt.images.remove("app:1")
    assert caught.value.reason == ImageReason.IN_USE
    assert rt.images.prune().bytes_freed == 0  # its layers are needed
    with box:  # an owned box goes when closed
        assert box.run(["true"]).ok
    rt.images.remove("app:1")
    report = rt.images.prune()
    assert report.bytes_freed > 1_000_000
    assert not list((rt.home / "images" / "layers").iterdir())
    assert not list((rt.home / "images" / "blobs" / "sha256").iterdir())


def test_shared_layers_are_unpacked_once(
    rt: boxlite_ffi.Runtime, tmp_path: Path, rootfs: Path
) -> None:
    base = tar_directory(rootfs)
    one = write_layout(tmp_path / "one", [base, tar_bytes([Entry("one", data=b"1")])])
    two = write_layout(tmp_path / "two", [base, tar_bytes([Entry("two", data=b"2")])])
    rt.images.load(one, tag="one")
    seen = []
    rt.images.load(two, tag="two", progress=seen.append)
    assert seen[-1].bytes_total < 1000  # the busybox layer was not copied again
    assert len(list((rt.home / "images" / "layers").iterdir())) == 3
    rt.images.remove("one")
    rt.images.prune()
    assert len(list((rt.home / "images" / "layers").iterdir())) == 2
    with rt.create("two") as box:
        assert box.run(["cat", "/two"]).stdout == b"2"


def test_a_tampered_blob_is_refused_and_nothing_is_kept(
    rt: boxlite_ffi.Runtime, tmp_path: Path
) -> None:
    layout = write_layout(tmp_path / "layout", [tar_bytes([Entry("f", data=b"ok" * 1000)])])
    blob = layout / "blobs/sha256" / _manifest(layout)["layers"][0]["digest"][7:]
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF
    blob.write_bytes(bytes(data))
    with pytest.raises(DigestMismatchError) as caught:
        rt.images.load(layout)
    assert caught.value.reason == ImageReason.DIGEST_MISMATCH
    assert rt.images.list() == []
    assert not list((rt.home / "images" / "layers").iterdir())


def test_a_layout_without_amd64(rt: boxlite_ffi.Runtime, tmp_path: Path) -> None:
    layout = write_layout(tmp_path / "layout", [tar_bytes([Entry("f")])])
    index = json.loads((layout / "index.json").read_text())
    index["manifests"][0]["platform"] = {"os": "linux", "architecture": "arm64"}
    (layout / "index.json").write_text(json.dumps(index))
    with pytest.raises(ImageNotFoundError, match="amd64"):
        rt.images.load(layout)


@pytest.mark.parametrize(
    "breakage",
    ["not json", '{"manifests": []}', '{"manifests": [{"digest": "sha256:../../etc"}]}'],
)
def test_broken_indexes(rt: boxlite_ffi.Runtime, tmp_path: Path, breakage: str) -> None:
    layout = write_layout(tmp_path / "layout", [tar_bytes([Entry("f")])])
    (layout / "index.json").write_text(breakage)
    with pytest.raises(ImageError):
        rt.images.load(layout)


def test_docker_archive_names_cannot_leave_the_archive(
    rt: boxlite_ffi.Runtime, tmp_path: Path
) -> None:
    archive = tmp_path / "evil"
    archive.mkdir()
    (tmp_path / "secret.json").write_text('{"rootfs": {"diff_ids": []}}')
    (archive / "manifest.json").write_text(
        json.dumps([{"Config": "../secret.json", "Layers": [], "RepoTags": ["evil:1"]}])
    )
    with pytest.raises(UnsafePathError):
        rt.images.load(archive)


def test_hostile_layers_through_load(rt: boxlite_ffi.Runtime, tmp_path: Path, rootfs: Path) -> None:
    """Every trick at once: the files land inside the image, none outside."""
    target = tmp_path / "target"
    target.mkdir()
    evil = tar_bytes(
        [
            Entry("../../escape-dotdot", data=b"x"),
            Entry("/escape-absolute", data=b"x"),
            Entry("link", "symlink", target=str(target)),
            Entry("link/through-symlink", data=b"x"),
        ]
    )
    layout = write_layout(tmp_path / "layout", [tar_directory(rootfs), evil])
    rt.images.load(layout, tag="evil")
    assert not list(target.iterdir())
    assert not (tmp_path / "escape-dotdot").exists() and not Path("/escape-absolute").exists()
    with rt.create("evil") as box:
        assert box.run(["cat", "/escape-dotdot", "/escape-absolute"]).stdout == b"xx"
    # The box's /tmp is a tmpfs over this one: look in the unpacked layer.
    landed = list((rt.home / "images/layers").glob(f"*/{str(target).lstrip('/')}/through-symlink"))
    assert len(landed) == 1
    bad_link = write_layout(
        tmp_path / "bad-link",
        [tar_bytes([Entry("hard", "hardlink", target="../../../../etc/passwd")])],
    )
    with pytest.raises(ImageError, match="no regular file"):
        rt.images.load(bad_link)


@needs_skopeo
def test_archives_written_by_skopeo(
    rt: boxlite_ffi.Runtime, app_image: Path, tmp_path: Path
) -> None:
    docker = tmp_path / "docker.tar"
    oci = tmp_path / "oci.tar"
    subprocess.run(
        [SKOPEO, "copy", "-q", f"oci:{app_image}", f"docker-archive:{docker}:app:docker"],
        check=True,
    )
    subprocess.run(
        [SKOPEO, "copy", "-q", f"oci:{app_image}", f"oci-archive:{oci}:ocitag"], check=True
    )
    (from_docker,) = rt.images.load(docker)
    assert from_docker.tags == ("app:docker",)
    (from_oci,) = rt.images.load(oci, tag="app:oci")
    assert from_oci.tags == ("app:oci", "oci:ocitag")  # a bare tag is named after the file
    assert from_oci.layers == from_docker.layers  # the same content, by diff_id
    for ref in ("app:docker", "app:oci"):
        with rt.create(ref) as box:
            assert box.run(["sh", "/app/run.sh"]).stdout == b"ran hello\n"
    with tarfile.open(docker) as tar:
        assert "manifest.json" in tar.getnames()


@needs_umoci
def test_a_layout_written_by_umoci(rt: boxlite_ffi.Runtime, rootfs: Path, tmp_path: Path) -> None:
    layout, bundle = tmp_path / "umoci", tmp_path / "bundle"
    umoci = [UMOCI, "--log", "error"]
    subprocess.run([*umoci, "init", "--layout", layout], check=True)
    subprocess.run([*umoci, "new", "--image", f"{layout}:base"], check=True)
    subprocess.run(
        [*umoci, "unpack", "--rootless", "--image", f"{layout}:base", bundle], check=True
    )
    shutil.copytree(rootfs, bundle / "rootfs", symlinks=True, dirs_exist_ok=True)
    subprocess.run([*umoci, "repack", "--image", f"{layout}:base", bundle], check=True)
    shutil.rmtree(bundle)
    subprocess.run(
        [*umoci, "unpack", "--rootless", "--image", f"{layout}:base", bundle], check=True
    )
    shutil.rmtree(bundle / "rootfs" / "etc")  # a whiteout, written by umoci
    (bundle / "rootfs" / "marker").write_text("second layer\n")
    subprocess.run([*umoci, "repack", "--image", f"{layout}:base", bundle], check=True)
    (info,) = rt.images.load(layout, tag="umoci-made:base")
    assert len(info.layers) == 2
    with rt.create("umoci-made:base") as box:
        out = box.run(["sh", "-c", "cat /marker; ls /etc 2>&1; true"])
        assert out.stdout.startswith(b"second layer\n") and b"No such file" in out.stdout


def test_an_image_of_many_layers(rt: boxlite_ffi.Runtime, tmp_path: Path, rootfs: Path) -> None:
    """More layers than mount(2)'s one page of options can name."""
    tops = [tar_bytes([Entry(f"layer{i}", data=str(i).encode())]) for i in range(100)]
    layout = write_layout(tmp_path / "layout", [tar_directory(rootfs), *tops])
    rt.images.load(layout, tag="tall")
    with rt.create("tall") as box:
        assert box.run(["sh", "-c", "cat /layer99 /layer0"]).stdout == b"990"


def test_prune_clears_trees_of_older_versions_no_box_uses(
    rt: boxlite_ffi.Runtime, rootfs: Path
) -> None:
    """An earlier version flattened images into images/sha256-*/rootfs."""
    used, unused = (rt.home / "images" / f"sha256-{c * 64}" for c in "ab")
    shutil.copytree(rootfs, used / "rootfs", symlinks=True)
    (unused / "rootfs").mkdir(parents=True)
    (unused / "rootfs" / "big").write_bytes(b"x" * 100_000)
    box = rt.create(rootfs=used / "rootfs")
    assert rt.images.prune().bytes_freed >= 100_000
    assert used.is_dir() and not unused.exists()
    with box:
        assert box.run(["true"]).ok


def test_a_zstd_layer(rt: boxlite_ffi.Runtime, tmp_path: Path, rootfs: Path) -> None:
    """A layer of media type tar+zstd, end to end."""
    try:
        from compression import zstd  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        from backports import zstd  # type: ignore[import-not-found, no-redef, unused-ignore]
    layout = write_layout(
        tmp_path / "layout",
        [tar_directory(rootfs), tar_bytes([Entry("z", data=b"zstd\n")])],
        compress=False,
    )
    index = json.loads((layout / "index.json").read_text())
    manifest = _manifest(layout)
    top = manifest["layers"][1]
    data = zstd.compress((layout / "blobs/sha256" / top["digest"][7:]).read_bytes())
    digest = hashlib.sha256(data).hexdigest()
    (layout / "blobs/sha256" / digest).write_bytes(data)
    top.update(
        mediaType="application/vnd.oci.image.layer.v1.tar+zstd",
        digest=f"sha256:{digest}",
        size=len(data),
    )
    raw = json.dumps(manifest).encode()
    (layout / "blobs/sha256" / hashlib.sha256(raw).hexdigest()).write_bytes(raw)
    index["manifests"][0].update(digest=f"sha256:{hashlib.sha256(raw).hexdigest()}", size=len(raw))
    (layout / "index.json").write_text(json.dumps(index))
    rt.images.load(layout, tag="zstd")
    with rt.create("zstd") as box:
        assert box.run(["cat", "/z"]).stdout == b"zstd\n"


@pytest.mark.skipif(
    os.geteuid() != 0, reason="users other than root need a root runtime's id range"
)
def test_the_images_user_applies(rt: boxlite_ffi.Runtime, tmp_path: Path, rootfs: Path) -> None:
    accounts = tar_bytes(
        [
            Entry("etc/passwd", data=b"root:x:0:0::/root:/bin/sh\napp:x:1000:1000::/:/bin/sh\n"),
            Entry("etc/group", data=b"root:x:0:\napp:x:1000:\n"),
        ]
    )
    layout = write_layout(
        tmp_path / "layout",
        [tar_directory(rootfs), accounts],
        config={"User": "app", "Cmd": ["id"]},
    )
    rt.images.load(layout, tag="as-app")
    with rt.create("as-app") as box:
        assert box.run(["id", "-u"]).stdout == b"1000\n"  # every exec, as the image says
        assert b"Permission denied" in box.run(["touch", "/root/x"]).stderr
        assert box.run(["no-such-command"]).exit_code == 127
        # Copies are root's work: into /root, where app may not write.
        box.copy_in(str(tmp_path / "layout" / "oci-layout"), "/root")
        assert box.run(["cat", "/root/oci-layout"]).stdout.startswith(b"{")
    box = rt.create("as-app", use_image_cmd=True)  # the main command too
    box.start()
    assert box.wait().exit_code == 0 and box.logs().stdout.startswith(b"uid=1000(app)")
    box.remove()
    with rt.create("as-app", user="root") as box:
        assert box.run(["id", "-u"]).stdout == b"0\n"
    with rt.create("as-app", user="0:1000") as box:
        assert box.run(["id", "-g"]).stdout == b"1000\n"
    with rt.create("as-app", user="ghost") as box:
        missing = box.run(["true"])
        assert missing.exit_code == 125 and b"no user ghost" in missing.stderr
    with pytest.raises(InvalidArgumentError):
        rt.create("as-app", user="a b")
    with rt.create("as-app") as box:  # one execution as another user
        assert box.run(["id", "-u"], user="root").stdout == b"0\n"
        assert box.run(["id", "-u"], user="1000:1000").stdout == b"1000\n"
        assert box.run(["id", "-u"]).stdout == b"1000\n"  # the box's own again
        assert box.run(["true"], user="ghost").exit_code == 125
        with pytest.raises(InvalidArgumentError):
            box.run(["true"], user="a b")
