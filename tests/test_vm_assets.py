"""What a vm box's guest boots: the fetched kernel and its verification, the
initramfs (read back by our own parser and by cpio(1), and booted under
QEMU with busybox as init), and the root image of an image's layers
(loop-mounted and overlaid as the guest will)."""

from __future__ import annotations

import dataclasses
import hashlib
import lzma
import os
import shutil
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import boxlite_ffi
from boxlite_ffi.home import libexec_dir
from boxlite_ffi.paths import get_libexec_dir
from boxlite_ffi.vm import Kernel, fetch_kernel, find_kernel, initramfs
from boxlite_ffi.vm.initramfs import load_order, module_name
from boxlite_ffi.vm.kernel import FETCH_COMMAND, KERNEL_DIR_ENV, MANIFEST, RECORD
from boxlite_ffi.vm.root_image import CACHE_PART, layer_name, root_image

from imagebuild import Entry, busybox_rootfs, tar_bytes, tar_directory, write_layout

LIBEXEC = Path(get_libexec_dir())
AGENT, SHIM = LIBEXEC / "boxlite-agent", LIBEXEC / "boxlite-shim"
MODULES = ("virtio_mmio", "virtio_console", "virtio_blk", "overlay", "erofs", "ext4")
QEMU = shutil.which("qemu-system-x86_64")
BUSYBOX = Path("/bin/busybox")
ROOT = os.geteuid() == 0
NOBODY = 65534


@pytest.fixture(scope="module")
def kernel() -> Kernel:
    """The real cloud kernel: kept if cached (CI's run.sh fetches it)."""
    return fetch_kernel()


@dataclasses.dataclass
class Member:
    name: str
    mode: int
    rdev: tuple[int, int]
    data: bytes


def read_newc(data: bytes) -> list[Member]:
    """The archive's entries up to the trailer, by the format's definition."""
    members, at = [], 0
    while True:
        assert data[at : at + 6] == b"070701", f"no newc magic at {at}"
        fields = [int(data[at + 6 + 8 * i : at + 14 + 8 * i], 16) for i in range(13)]
        namesize, size = fields[11], fields[6]
        name = data[at + 110 : at + 110 + namesize - 1].decode()
        at += 110 + namesize
        at += -at % 4
        if name == "TRAILER!!!":
            assert not data[at:].strip(b"\0")
            return members
        members.append(Member(name, fields[1], (fields[9], fields[10]), data[at : at + size]))
        at += size
        at += -at % 4


def dependencies(kernel: Kernel) -> dict[str, set[str]]:
    assert kernel.modules is not None
    deps = {}
    for line in (kernel.modules / "modules.dep").read_text().splitlines():
        path, _, needs = line.partition(":")
        deps[module_name(path)] = {module_name(p) for p in needs.split()}
    return deps


# -- the kernel --------------------------------------------------------------


def test_the_fetched_kernel_is_recorded(kernel: Kernel) -> None:
    assert kernel.version and kernel.modules is not None and kernel.manifest is not None
    assert kernel.vmlinuz.name == f"vmlinuz-{kernel.release}"
    assert hashlib.sha256(kernel.vmlinuz.read_bytes()).hexdigest() == kernel.sha256
    found = find_kernel(kernel.vmlinuz)  # named by path: its release from the bzImage header
    assert (found.release, found.sha256, found.modules) == (kernel.release, kernel.sha256, None)
    done = subprocess.run(["sha256sum", "-c", "--quiet", MANIFEST], cwd=kernel.manifest.parent)
    assert done.returncode == 0


def test_fetch_kernel_fetches_keeps_and_repairs(kernel: Kernel, tmp_path: Path) -> None:
    """A real download into a directory of its own (as a user's --dir)."""
    dest = tmp_path / "kernel"
    fetched = fetch_kernel(dest)
    assert (fetched.release, fetched.version, fetched.sha256) == (
        kernel.release,
        kernel.version,
        kernel.sha256,
    )
    record = (dest / RECORD).stat()
    cli = subprocess.run(
        [sys.executable, "-m", "boxlite_ffi.vm", "fetch-kernel", "--dir", str(dest)],
        capture_output=True,
        text=True,
    )
    assert cli.returncode == 0, cli.stderr
    assert f"package version {kernel.version}" in cli.stdout and kernel.sha256 in cli.stdout
    assert (dest / RECORD).stat().st_ino == record.st_ino  # kept, not fetched again

    _flip_last_byte(fetched.vmlinuz)
    assert fetch_kernel(dest).sha256 == kernel.sha256  # a corrupt cache is fetched anew
    assert not list(dest.glob(".fetch-*"))


def test_fetch_kernel_into_an_unusable_directory_is_an_engine_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(boxlite_ffi.EngineError, match="cannot write the kernel cache"):
        fetch_kernel(tmp_path / "file" / "kernel")


def _kernel_copy(kernel: Kernel, dest: Path, modules: tuple[str, ...] = ()) -> Path:
    """A cache directory with the record, the kernel and some module files
    (copies: the test damages them)."""
    assert kernel.manifest is not None and kernel.modules is not None
    src = kernel.manifest.parent
    for rel in (
        RECORD,
        MANIFEST,
        kernel.vmlinuz.relative_to(src),
        *(kernel.modules.relative_to(src) / n for n in ("modules.dep", "modules.builtin")),
        *(p.relative_to(src) for p in load_order(kernel, modules)),
    ):
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src / rel, dest / rel)
    return dest


def _flip_last_byte(path: Path) -> None:
    with open(path, "r+b") as f:
        f.seek(-1, os.SEEK_END)
        last = f.read(1)
        f.seek(-1, os.SEEK_END)
        f.write(bytes([last[0] ^ 1]))


def test_a_damaged_kernel_is_refused_with_the_refetch_command(
    kernel: Kernel, tmp_path: Path
) -> None:
    copy = _kernel_copy(kernel, tmp_path / "kernel")
    assert find_kernel(copy).sha256 == kernel.sha256
    _flip_last_byte(copy / "boot" / kernel.vmlinuz.name)
    with pytest.raises(boxlite_ffi.EngineError, match=rf"corrupt.*{FETCH_COMMAND} --dir {copy}"):
        find_kernel(copy)


def test_a_damaged_module_is_refused(kernel: Kernel, tmp_path: Path) -> None:
    copy = find_kernel(_kernel_copy(kernel, tmp_path / "kernel", ("virtio_blk",)))
    assert copy.modules is not None
    initramfs(copy, {}, ["virtio_blk"], tmp_path / "cache")
    _flip_last_byte(copy.modules / "kernel/drivers/block/virtio_blk.ko")
    with pytest.raises(boxlite_ffi.EngineError, match=r"virtio_blk\.ko is not as fetched"):
        initramfs(copy, {}, ["virtio_blk"], tmp_path / "cache")


def test_no_kernel_names_the_fetch_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KERNEL_DIR_ENV, str(tmp_path / "empty"))
    with pytest.raises(boxlite_ffi.EngineError, match=rf"no guest kernel.*`{FETCH_COMMAND}`"):
        find_kernel()
    with pytest.raises(boxlite_ffi.EngineError, match="no kernel at"):
        find_kernel(tmp_path / "absent")
    (tmp_path / "not-a-kernel").write_bytes(b"\0" * 4096)
    with pytest.raises(boxlite_ffi.EngineError, match="not a Linux bzImage"):
        find_kernel(tmp_path / "not-a-kernel")


# -- the initramfs -----------------------------------------------------------


def test_the_initramfs_holds_files_devices_and_modules_in_order(
    kernel: Kernel, tmp_path: Path
) -> None:
    notes = tmp_path / "motd"
    notes.write_text("not a program\n")
    files = {"init": AGENT, "boxlite-shim": SHIM, "etc/motd": notes}
    image = initramfs(kernel, files, MODULES, tmp_path / "cache")
    members = {m.name: m for m in read_newc(image.read_bytes())}

    for name, path in files.items():
        assert members[name].data == path.read_bytes()
    assert members["init"].mode == stat.S_IFREG | 0o755
    assert members["etc/motd"].mode == stat.S_IFREG | 0o644
    for d in ("dev", "proc", "sys", "run", "modules", "etc"):
        assert members[d].mode == stat.S_IFDIR | 0o755
    console = members["dev/console"]
    assert (stat.S_IFMT(console.mode), console.rdev) == (stat.S_IFCHR, (5, 1))

    order = members["modules/order"].data.decode().split()
    names = [module_name(n) for n in order]
    deps = dependencies(kernel)
    assert set(names) == {"virtio_mmio", "virtio_console", "virtio_blk", "overlay", "erofs"} | {
        d for m in MODULES if m in deps for d in deps[m]
    }
    assert "ext4" not in names  # built into the cloud kernel
    for i, name in enumerate(names):
        assert deps[name] <= set(names[:i]), f"{name} comes before what it needs"
    assert set(order) == {n.removeprefix("modules/") for n in members if n.endswith(".ko")}
    assert kernel.modules is not None
    virtio = next(kernel.modules.rglob("virtio.ko"))
    assert members["modules/virtio.ko"].data == virtio.read_bytes()

    # cpio(1) reads the same archive (another implementation of the format)
    listed = subprocess.run(
        ["cpio", "-it", "--quiet"], stdin=image.open("rb"), capture_output=True, text=True
    )
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.split() == [m.name for m in read_newc(image.read_bytes())]


def test_the_initramfs_cache_hits_and_misses(kernel: Kernel, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    program = tmp_path / "program"
    shutil.copy(AGENT, program)
    first = initramfs(kernel, {"init": program}, ["virtio_blk"], cache)
    made = first.stat()
    again = initramfs(kernel, {"init": program}, ["virtio_blk"], cache)
    assert again == first and again.stat().st_mtime_ns == made.st_mtime_ns

    variants = [
        initramfs(kernel, {"init": program}, ["virtio_blk", "overlay"], cache),
        initramfs(kernel, {"agent": program}, ["virtio_blk"], cache),
        initramfs(dataclasses.replace(kernel, sha256="0" * 64), {"init": program}, [], cache),
    ]
    program.chmod(0o644)
    variants.append(initramfs(kernel, {"init": program}, ["virtio_blk"], cache))
    with open(program, "ab") as f:
        f.write(b"\0")
    variants.append(initramfs(kernel, {"init": program}, ["virtio_blk"], cache))
    assert len({first, *variants}) == 1 + len(variants)
    assert sorted(p.name for p in cache.iterdir()) == sorted(p.name for p in {first, *variants})


def test_concurrent_builders_leave_one_whole_initramfs(kernel: Kernel, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    made: list[Path] = []

    def build() -> None:
        made.append(initramfs(kernel, {"init": AGENT}, MODULES, cache))

    builders = [threading.Thread(target=build) for _ in range(4)]
    for t in builders:
        t.start()
    for t in builders:
        t.join()
    assert len(made) == 4 and len(set(made)) == 1
    assert list(cache.iterdir()) == [made[0]]  # no temp file left
    assert read_newc(made[0].read_bytes())[-1].name == "modules/order"


def test_a_missing_module_or_a_bad_name_is_a_typed_error(kernel: Kernel, tmp_path: Path) -> None:
    with pytest.raises(boxlite_ffi.EngineError, match="no module 'no_such_module'"):
        initramfs(kernel, {}, ["virtio_blk", "no-such-module"], tmp_path)
    assert load_order(kernel, ["ext4"]) == []  # built in: nothing to load
    for files in ({"../init": AGENT}, {"dev/x": AGENT}, {"init": AGENT, "/init": AGENT}):
        with pytest.raises(boxlite_ffi.InvalidArgumentError):
            initramfs(kernel, files, [], tmp_path)
    assert not list(tmp_path.iterdir())


def test_compressed_modules_go_in_decompressed(kernel: Kernel, tmp_path: Path) -> None:
    """A kernel directory of the user's, modules compressed as other
    distributions ship them."""
    assert kernel.modules is not None
    base = tmp_path / "k" / "lib" / "modules" / kernel.release
    (base / "kernel").mkdir(parents=True)
    (tmp_path / "k" / "boot").mkdir()
    shutil.copy(kernel.vmlinuz, tmp_path / "k" / "boot")
    ring = next(kernel.modules.rglob("virtio_ring.ko")).read_bytes()
    virtio = next(kernel.modules.rglob("virtio.ko")).read_bytes()
    (base / "kernel" / "virtio_ring.ko.xz").write_bytes(lzma.compress(ring))
    zstd = subprocess.run(["zstd", "-q", "-c"], input=virtio, capture_output=True, check=True)
    (base / "kernel" / "virtio.ko.zst").write_bytes(zstd.stdout)
    (base / "modules.dep").write_text(
        "kernel/virtio_ring.ko.xz:\nkernel/virtio.ko.zst: kernel/virtio_ring.ko.xz\n"
    )
    named = find_kernel(tmp_path / "k")
    assert (named.modules, named.version) == (base, None)
    members = {
        m.name: m for m in read_newc(initramfs(named, {}, ["virtio"], tmp_path).read_bytes())
    }
    assert members["modules/order"].data == b"virtio_ring.ko\nvirtio.ko\n"
    assert (members["modules/virtio_ring.ko"].data, members["modules/virtio.ko"].data) == (
        ring,
        virtio,
    )


BUSYBOX_INIT = """#!/bin/busybox sh
/bin/busybox mount -t proc proc /proc
for m in $(/bin/busybox cat /modules/order); do
    /bin/busybox insmod /modules/$m || { echo "MODULES-FAILED $m"; /bin/busybox poweroff -f; }
done
/bin/busybox grep -q virtio_blk /proc/modules && echo "boxlite-guest: probe ok"
/bin/busybox poweroff -f
"""


@pytest.mark.skipif(QEMU is None or not BUSYBOX.is_file(), reason="needs QEMU and busybox-static")
def test_the_initramfs_boots_and_loads_its_modules(kernel: Kernel, tmp_path: Path) -> None:
    """Under QEMU's microvm, as the engine boots it: every module loads in
    the order given."""
    init = tmp_path / "init"
    init.write_text(BUSYBOX_INIT)
    init.chmod(0o755)
    modules = [m for m in MODULES if m != "ext4"]
    image = initramfs(kernel, {"init": init, "bin/busybox": BUSYBOX}, modules, tmp_path)
    # The engine's own launcher: boxlite-vmm's probe boots it and waits for
    # the answer on the console (the init above gives it once loaded).
    assert QEMU is not None
    vmm = libexec_dir() / "boxlite-vmm"
    started = time.monotonic()
    cmd = [str(vmm), "probe", QEMU, str(kernel.vmlinuz), str(image), "tcg", "20000"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=40)
    assert done.returncode == 0, done.stderr
    assert time.monotonic() - started < 20


HANGING_INIT = """#!/bin/busybox sh
/bin/busybox mount -t proc proc /proc
echo "GUEST-UP $(/bin/busybox cat /proc/cmdline)"
exec /bin/busybox sleep 1000
"""


@pytest.mark.skipif(QEMU is None or not BUSYBOX.is_file(), reason="needs QEMU and busybox-static")
def test_boot_kills_a_guest_at_its_deadline_and_refuses_bad_arguments(
    kernel: Kernel, tmp_path: Path
) -> None:
    """boxlite-vmm boot (the launcher tests/guest_vm.py boots with): the
    console on its stdout, a guest that never powers off killed at the
    deadline and reported, nothing of QEMU left; a bad command line is 2."""
    init = tmp_path / "init"
    init.write_text(HANGING_INIT)
    init.chmod(0o755)
    image = initramfs(kernel, {"init": init, "bin/busybox": BUSYBOX}, [], tmp_path)
    assert QEMU is not None
    vmm = str(libexec_dir() / "boxlite-vmm")
    base = [vmm, "boot", "--qemu", QEMU, "--kernel", str(kernel.vmlinuz), "--initrd", str(image)]
    marker = f"boxlite.test={os.getpid()}-{time.monotonic_ns()}"  # in QEMU's argv
    done = subprocess.run(
        [*base, "--accel", "tcg", "--append", marker, "--timeout-ms", "8000"],
        capture_output=True,
        text=True,
        timeout=40,
    )
    assert done.returncode == 1, done.stderr
    assert "GUEST-UP" in done.stdout
    assert "no guest with accel tcg in 8000 ms" in done.stderr
    assert marker in done.stdout  # --append reached the guest's kernel
    left = subprocess.run(["pgrep", "-f", marker], capture_output=True, text=True)
    assert left.stdout == "", "QEMU outlived boxlite-vmm boot"
    for bad in (["--accel", "hvf"], ["--accel", "tcg", "--memory", "0"], ["--accel", "tcg", "x"]):
        refused = subprocess.run([*base, *bad], capture_output=True, text=True, timeout=10)
        assert refused.returncode == 2 and "usage:" in refused.stderr, bad


# -- the root image ----------------------------------------------------------


@pytest.fixture
def layered(tmp_path: Path) -> Path:
    """Three layers: busybox; files to delete, a setuid program and a hard
    link; whiteouts and an opaque directory."""
    base = tar_directory(busybox_rootfs(tmp_path / "rootfs"))
    extra = tar_bytes(
        [
            Entry("etc/removed", data=b"gone\n"),
            Entry("opt", "dir"),
            Entry("opt/app", "dir"),
            Entry("opt/app/old", data=b"old\n"),
            Entry("opt/keep", data=b"kept\n"),
            Entry("opt/su", data=b"#!/bin/sh\n", mode=0o4755),
            Entry("opt/su-too", "hardlink", target="opt/su"),
        ]
    )
    top = tar_bytes(
        [
            Entry("etc/.wh.removed"),
            Entry("opt/app/.wh..wh..opq"),
            Entry("opt/app/new", data=b"new\n"),
        ]
    )
    return write_layout(tmp_path / "layout", [base, extra, top])


@pytest.fixture
def mounted() -> Iterator[list[Path]]:
    """Mount points to unmount after the test, last first."""
    points: list[Path] = []
    yield points
    for point in reversed(points):
        subprocess.run(["umount", str(point)], check=False)


def _mount(points: list[Path], point: Path, *args: str) -> None:
    point.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", *args, str(point)], check=True, capture_output=True)
    points.append(point)


@pytest.mark.skipif(not ROOT, reason="loop-mounting the image needs root")
def test_the_root_image_holds_each_layer_as_the_guest_overlays_it(
    rt: boxlite_ffi.Runtime, home: Path, layered: Path, tmp_path: Path, mounted: list[Path]
) -> None:
    rt.images.load(layered, tag="layered:1")
    lowers = rt.images.resolve("layered:1").lowers
    image = root_image(lowers, home / "images" / CACHE_PART)

    disk = tmp_path / "disk"
    _mount(mounted, disk, "-o", "ro,loop", "-t", "ext4", str(image))
    assert sorted(p.name for p in disk.iterdir()) == sorted(
        ["lost+found", *(layer_name(lo) for lo in lowers)]
    )
    assert (disk.stat().st_uid, stat.S_IMODE(disk.stat().st_mode)) == (0, 0o755)
    top, extra, base = (disk / layer_name(lo) for lo in lowers)
    whiteout = os.lstat(top / "etc" / "removed")
    assert stat.S_ISCHR(whiteout.st_mode) and whiteout.st_rdev == 0
    assert os.getxattr(top / "opt" / "app", "user.overlay.opaque") == b"y"
    su, su_too = os.lstat(extra / "opt" / "su"), os.lstat(extra / "opt" / "su-too")
    assert stat.S_IMODE(su.st_mode) == 0o4755 and su.st_ino == su_too.st_ino
    assert os.readlink(base / "bin" / "sh") == "busybox"
    assert (base / "bin" / "busybox").read_bytes() == BUSYBOX.read_bytes()
    for lower in lowers:  # owners, modes and times as on the host
        for path in [lower, *lower.rglob("*")]:
            want, got = os.lstat(path), os.lstat(disk / lower.name / path.relative_to(lower))
            assert (got.st_mode, got.st_uid, got.st_gid) == (want.st_mode, want.st_uid, want.st_gid)
            if not stat.S_ISLNK(want.st_mode):
                assert got.st_mtime_ns // 10**9 == want.st_mtime_ns // 10**9, path

    merged = tmp_path / "merged"
    layers = ":".join(str(disk / layer_name(lo)) for lo in lowers)
    _mount(mounted, merged, "-t", "overlay", "-o", f"ro,userxattr,lowerdir={layers}", "overlay")
    assert not (merged / "etc" / "removed").exists()
    assert sorted(p.name for p in (merged / "opt" / "app").iterdir()) == ["new"]
    assert (merged / "opt" / "keep").read_text() == "kept\n"


# An unprivileged runtime: import while root, then drop to nobody for good.
AS_NOBODY = """
import os, sys
from pathlib import Path
import boxlite_ffi
from boxlite_ffi.vm.root_image import CACHE_PART, root_image
boxlite_ffi.preload()  # what it imports on use, too
os.setgroups([])
os.setresgid({nobody}, {nobody}, {nobody})
os.setresuid({nobody}, {nobody}, {nobody})
with boxlite_ffi.Runtime({home!r}) as rt:
    rt.images.load({layout!r}, tag="layered:1")
    lowers = rt.images.resolve("layered:1").lowers
    print(root_image(lowers, Path({home!r}) / "images" / CACHE_PART))
    print(" ".join(str(lo) for lo in lowers))
"""


@pytest.mark.skipif(not ROOT, reason="becoming nobody and loop-mounting need root")
def test_an_unprivileged_runtimes_root_image_holds_its_uid(
    layered: Path, tmp_path: Path, mounted: list[Path]
) -> None:
    """Unpacking keeps no owners: the image holds the runtime's uid (which
    the guest maps to root), and the whiteouts and opaque marks an
    unprivileged user could make."""
    base = Path(os.environ.get("TMPDIR", "/tmp")) / f"boxlite-vmassets-{os.getpid()}"
    base.mkdir(mode=0o755)
    try:
        shutil.copytree(layered, base / "layout")
        # The installed executables may be in root's home: a copy nobody reaches.
        shutil.copytree(libexec_dir(), base / "libexec")
        for path in [base, *base.rglob("*")]:
            os.lchown(path, NOBODY, NOBODY)
        script = AS_NOBODY.format(
            nobody=NOBODY, home=str(base / "home"), layout=str(base / "layout")
        )
        env = {**os.environ, "BOXLITE_LIBEXEC": str(base / "libexec")}
        done = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env
        )
        assert done.returncode == 0, done.stderr
        image, lowers = done.stdout.splitlines()
        disk = tmp_path / "disk"
        _mount(mounted, disk, "-o", "ro,loop", "-t", "ext4", image)
        top = disk / Path(lowers.split()[0]).name
        owners = {(st.st_uid, st.st_gid) for st in map(os.lstat, top.parent.rglob("*"))}
        owners -= {(0, 0)}  # lost+found
        assert owners == {(NOBODY, NOBODY)}
        assert os.lstat(top / "etc" / "removed").st_rdev == 0
        assert os.getxattr(top / "opt" / "app", "user.overlay.opaque") == b"y"
    finally:
        for point in reversed(mounted):
            subprocess.run(["umount", str(point)], check=False)
        mounted.clear()
        shutil.rmtree(base)


def test_the_root_image_cache_and_prune(rt: boxlite_ffi.Runtime, home: Path, layered: Path) -> None:
    rt.images.load(layered, tag="layered:1")
    lowers = rt.images.resolve("layered:1").lowers
    cache = home / "images" / CACHE_PART
    image = root_image(lowers, cache)
    made = image.stat()
    assert root_image(lowers, cache) == image and image.stat().st_mtime_ns == made.st_mtime_ns
    fewer = root_image(lowers[1:], cache)
    assert fewer != image
    assert sorted(cache.iterdir()) == sorted([image, fewer])  # no staging left

    rt.images.prune()  # the image's own stays; one of no image goes
    assert sorted(cache.iterdir()) == [image]
    rt.images.remove("layered:1")
    rt.images.prune()
    assert list(cache.iterdir()) == []


def test_layer_names_are_the_caches_own(tmp_path: Path) -> None:
    hexname = "ab" * 32
    assert layer_name(tmp_path / "layers" / hexname) == hexname
    with pytest.raises(boxlite_ffi.InvalidArgumentError, match="not a layer"):
        layer_name(tmp_path / "rootfs")
    with pytest.raises(boxlite_ffi.InvalidArgumentError, match="named twice"):
        root_image([tmp_path / hexname, tmp_path / "x" / hexname], tmp_path)
