"""Runtime: the entry point.  Owns one native runtime and its boxes."""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import os
import threading
import time
import weakref
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._core.core import NativeRuntime
from .agent import as_user
from .box import Box, BoxServices
from .errors import (
    BoxliteError,
    ImageError,
    ImageNotFoundError,
    InvalidArgumentError,
    NotFoundError,
    os_errors,
)
from .home import holds_state, libexec_dir, resolve_home, store_path
from .image import Images, ResolvedImage, host
from .image.media import ImageConfig
from .image.unpack import UnpackLimits
from .pool import PoolInfo, Pools, check_image, check_pools, check_size
from .spec import (
    DEFAULT_DRAIN_MS,
    DEFAULT_STOP_GRACE_MS,
    DEFAULT_VM_DISK,
    DISK_MIN,
    BoxSpec,
    box_identity,
    check_accel,
    check_cwd,
    check_engine,
    check_kernel_args,
    check_name,
    check_network,
    check_rootfs,
    check_volumes,
    env_dict,
    main_command,
    millis,
    native_config,
    parse_limits,
    parse_size,
    start_signature,
    unpack_limits,
    with_box_spec,
)
from .state import boxdir
from .state.disk import make_disk
from .state.monitor import Monitor
from .state.reconcile import reconcile
from .state.shim import KILL_NOW, signal_shim
from .state.status import BoxStatus, wanted_statuses
from .state.store import DELETE, POOLED, BoxRecord, Proc, Store
from .state.views import BoxExit, BoxInfo
from .tree import remove_tree

if TYPE_CHECKING:
    from .state.recovery import RecoveryReport

_LIVE: weakref.WeakSet[Runtime] = weakref.WeakSet()


@atexit.register
def _close_live_runtimes() -> None:
    # A program that forgets close() still leaves no box behind.
    for rt in list(_LIVE):
        rt.close()


class Runtime:
    """Creates and tracks boxes.  Use as a context manager.

    ``home`` (default ``$BOXLITE_HOME`` or ``~/.boxlite``) holds box
    directories and the image cache.  ``max_layer_size`` (bytes, or "16g")
    and ``max_layer_entries`` bound what one image layer may unpack to.
    ``engine`` is what runs boxes by default (``create``'s engine), and
    ``vm_kernel`` a guest kernel of the user's for the vm engine (a vmlinuz
    with what it needs built in, or a directory with ``boot/vmlinuz-*`` and
    ``lib/modules/*``) instead of the fetched Debian one, and
    ``vm_kernel_args`` more of its command line (after the engine's own: a
    later value of a parameter wins, e.g. ``"mitigations=off"`` or
    ``"sysctl.vm.panic_on_oom=1"``; printable ASCII, at most 256 bytes).
    ``pool`` maps images to a number of boxes of each to keep started
    (``{"host": 4}``): warm pools, see ``pool``.
    """

    def __init__(
        self,
        home: str | os.PathLike[str] | None = None,
        *,
        queue_capacity: int = 0,
        workers: int = 0,
        stop_grace: float = DEFAULT_STOP_GRACE_MS / 1000,
        drain_window: float = DEFAULT_DRAIN_MS / 1000,
        max_layer_size: int | str = UnpackLimits.max_bytes,
        max_layer_entries: int = UnpackLimits.max_entries,
        engine: str | None = None,
        vm_kernel: str | os.PathLike[str] | None = None,
        vm_kernel_args: str | None = None,
        pool: Mapping[str, int] | None = None,
    ) -> None:
        for value, what in ((queue_capacity, "queue_capacity"), (workers, "workers")):
            if not 0 <= value <= 0xFFFFFFFF:
                raise InvalidArgumentError(f"{what} out of range: {value}")
        limits = unpack_limits(max_layer_size, max_layer_entries)
        pools = check_pools(pool)
        self._engine = check_engine(engine)
        self._vm_kernel = Path(vm_kernel) if vm_kernel is not None else None
        self._vm_kernel_args = check_kernel_args(vm_kernel_args)
        self.home = resolve_home(home)
        self._grace_ms = millis(stop_grace, "stop_grace")
        self._drain_ms = millis(drain_window, "drain_window")
        self._store = Store(store_path(self.home), create=not holds_state(self.home))
        try:
            self._images = Images(self.home / "images", self._store, limits)
            self._reconcile_all()
        except BaseException:
            self._store.close()
            raise
        self._native = NativeRuntime(libexec_dir(), queue_capacity=queue_capacity, workers=workers)
        self._pools = Pools(self._store)
        self._monitor = Monitor(self._box_exited)
        self._services = BoxServices(self._native, self._store, self._monitor, self._forget)
        self._lock = threading.Lock()
        self._boxes: dict[str, Box] = {}
        _LIVE.add(self)
        try:
            for image, size in pools.items():
                self.pool(image, size)
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> Runtime:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        return self._native.closed

    @property
    def native(self) -> NativeRuntime:
        """The core layer (for tests and SDKs built on top)."""
        return self._native

    @property
    def images(self) -> Images:
        """The image cache of this home: load, pull, list, inspect, remove, prune."""
        return self._images

    @with_box_spec
    def create(self, spec: BoxSpec) -> Box:
        """Describe a new box (started by ``start()`` or the first exec).

        ``image`` is an image of ``images`` (name, id or id prefix), the
        built-in ``"host"`` (the host's /usr, /bin, /lib* and a sanitized
        /etc, read-only), or the path of an OCI layout or docker archive,
        loaded first; ``rootfs`` a root filesystem directory used read-only.
        Exactly one is required.  With a warm pool of the image (``pool``),
        a create that a pooled box can serve returns that box, running.

        ``memory`` (bytes, or "512m", "2g"), ``cpus`` (CPUs' worth of time,
        e.g. 0.5) and ``pids`` (processes and threads) limit the box, in a
        cgroup of its own; a process killed for lack of memory ends with
        outcome ``oom``.  A limit this machine cannot enforce (no
        controller, no right to make cgroups) makes ``start`` fail with
        ``EngineError``, never goes unenforced.  Without ``pids``, a box
        gets 2048 where the pids controller is in cgroup v2 and this
        runtime may use it (elsewhere none, and its ``shim.log`` says
        why); ``pids=0`` asks for none.

        ``disk`` (bytes, or "1g") limits the box's writable layer, which
        then lives in an ext4 image of that size (needs root: loop devices).
        ``tmp_size`` (bytes, or "64m"; 1 GiB by default) is the size of each
        of the box's /tmp and /dev/shm (memory, so never more than
        ``memory``): filling one ends in ENOSPC.

        A box has only its own loopback, unless ``network=True``: then
        outbound IPv4 through slirp4netns (a user-mode network stack from
        Debian's ``slirp4netns`` package), the box at 10.0.2.100 with DNS
        at 10.0.2.3; the host's own loopback stays unreachable unless
        ``host_loopback=True`` (then it is 10.0.2.2).

        ``volumes`` mounts host paths into the box: ``"HOST:BOX"``,
        ``"HOST:BOX:ro"`` (or ``:rw``, the default), or the same as a tuple.
        The image's Env (under ``env``) and WorkingDir (unless ``workdir``)
        apply to every process of the box.

        ``entrypoint`` + ``cmd`` is the box's main command: when it ends,
        so does the box (status ``exited``; ``wait`` says how, ``logs`` what
        it wrote: the newest ``log_limit`` bytes at most of each stream,
        and at least half that, 32 MiB by default).  A ``cmd`` alone runs
        after the image's Entrypoint; ``use_image_cmd=True`` runs the
        image's Entrypoint + Cmd.  Without any, the box idles until
        stopped, to be exec'd into.

        Every process of the box runs as the image's User, or ``user``.
        Only a root runtime's boxes (which have an id range) run users other
        than root: an unprivileged runtime raises ``ImageError`` for such an
        image's User (``user="root"`` overrides) and ``InvalidArgumentError``
        for such a ``user``.

        A box dies with this program, unless ``detach=True``: then closing
        it or the runtime lets go of it, and ``Runtime.get`` finds it again
        by id or name, from any process.  ``auto_remove=True`` deletes the
        box once its run is over.

        ``engine`` is what runs the box (the runtime's by default, which is
        ``$BOXLITE_ENGINE`` or ``"ns"``): ``"ns"``, Linux namespaces of the
        host's kernel, or ``"vm"``, a micro-VM of its own under QEMU with its
        own kernel (Debian's cloud kernel: ``python3 -m boxlite_ffi.vm
        fetch-kernel``).  A vm box's ``memory`` is its guest's RAM (512 MiB
        by default), ``cpus`` rounded up its vCPUs, ``disk`` its writable
        disk (8 GiB, sparse, by default).  ``accel`` picks QEMU's
        accelerator: ``"kvm"``, ``"tcg"`` (emulation) or ``"auto"``, KVM
        where a bounded probe boot shows it runs a guest; ``ready_timeout``
        (seconds) bounds the wait for the guest to run the box.
        ``BoxInfo.engine`` and ``accelerator`` say what ran it.
        """
        with self._images.hold():  # no prune between resolving and recording
            config = self._configure(spec)
            box = self._pools.take(start_signature(config, spec), config, spec.name)
            if box is None:
                box = self._new_box(spec, config)
        return self._tracked(box)

    def _configure(self, spec: BoxSpec) -> dict[str, Any]:
        """The configuration of a box of ``spec``, all but what depends on
        its id (its hostname) or costs time to make (a vm box's VM): enough
        to tell whether a warm pool's box can be it.  Under the images' hold."""
        if (spec.image is None) == (spec.rootfs is None):
            raise InvalidArgumentError("give exactly one of image= or rootfs=")
        check_name(spec.name)
        workdir = check_cwd(spec.workdir, "workdir")
        env = env_dict(spec.env)  # refuse a bad environment now, not at the first exec
        engine = check_engine(spec.engine, "engine") if spec.engine is not None else self._engine
        check_accel(spec.accel)
        millis(spec.ready_timeout, "ready_timeout")
        image, rootfs = spec.image, spec.rootfs
        made = self._image(image) if image is not None else None
        image_config = made.config if made else ImageConfig(())
        identity = box_identity(image_config, image, env, workdir, spec.user)
        main = main_command(image_config, spec.entrypoint, spec.cmd, spec.use_image_cmd)
        limits = parse_limits(spec.memory, spec.cpus, spec.pids, spec.log_limit, spec.tmp_size)
        return {
            "image": str(image if image is not None else rootfs),
            "image_id": made.id if made else None,
            "lowers": [str(p) for p in made.lowers] if made else [str(check_rootfs(rootfs))],
            "mounts": [
                list(dataclasses.astuple(m))
                for m in (*(made.mounts if made else ()), *check_volumes(spec.volumes))
            ],
            **identity,
            "main": as_user(identity["user"], main) if main else None,
            "limits": limits,
            "network": check_network(spec.network, spec.host_loopback, engine),
            "disk": parse_size(spec.disk, "disk", DISK_MIN) if spec.disk is not None else None,
            "auto_remove": spec.auto_remove,
            "stop_grace_ms": self._grace_ms,
            "drain_ms": self._drain_ms,
            "engine": engine,
        }

    def _new_box(self, spec: BoxSpec, config: dict[str, Any], *, pooled: bool = False) -> Box:
        """A box of a configuration from ``_configure``, recorded (a warm
        pool's when ``pooled``: see pool.py).  Under the images' hold."""
        box_id = os.urandom(6).hex()  # secrets.token_hex, without hmac's import
        config = config | {"hostname": spec.name or box_id}
        if pooled:
            config[POOLED] = True
        if config["engine"] == "vm":
            lowers = tuple(map(Path, config["lowers"]))
            sources = [source for source, _, _ in config["mounts"]]
            ready_ms = millis(spec.ready_timeout, "ready_timeout")
            config["vm"] = self._vm(lowers, sources, spec.accel, ready_ms)
        record = self._record(box_id, spec.name, config, spec.detach)
        return Box(self._services, record, self._dir(record.id))

    def pool(self, image: str, size: int, *, engine: str | None = None, wait: bool = False) -> None:
        """Keep ``size`` boxes of ``image`` (a name, id or path, as for
        ``create``) and ``engine`` (the runtime's by default) started and
        unused: a warm pool, filled in the background.  ``create`` takes
        one of them instead of starting a box when it asks for nothing a
        start fixes: the same image and engine, no ``rootfs``, no main
        command (``cmd``, ``entrypoint``, ``use_image_cmd``), no
        ``volumes``, ``memory``, ``cpus``, ``pids``, ``log_limit``,
        ``tmp_size``, ``network``, ``disk``, ``detach``, and ``accel``
        "auto"; ``name``, ``env``, ``workdir``, ``user`` and
        ``auto_remove`` are the create's.  Any other create, or one that
        finds the pool empty, starts a box as without a pool.  A taken box
        is the create's from then on (it never returns to the pool); its
        hostname is its id, whatever its name, and ``BoxInfo.started`` is
        when the pool started it.

        The pool keeps the image ``image`` names now (a later tag of the
        name is another image).  Its boxes are this runtime's: no ``list``
        or ``get`` sees them, and they go with ``close`` or the death of
        this program.  Calling again resizes the pool (0 empties it: its
        idle boxes are gone when this returns); ``wait=True`` returns once
        it is full, or raises why a start of one of its boxes failed.
        ``pools`` reports every pool."""
        image, size = check_image(image), check_size(size)
        engine = check_engine(engine, "engine") if engine is not None else self._engine
        with self._images.hold():
            spec = BoxSpec(self._image(image).id or host.NAME, engine=engine)
            signature = start_signature(self._configure(spec), spec)
        self._pools.resize(signature, image, engine, size, lambda: self._pooled(spec))
        if wait:
            self._pools.wait_full(signature)

    def _pooled(self, spec: BoxSpec) -> Box:
        """On the pool's thread: a new box for a pool of ``spec``."""
        with self._images.hold():
            return self._new_box(spec, self._configure(spec), pooled=True)

    def pools(self) -> list[PoolInfo]:
        """Every warm pool of this runtime (see ``pool``)."""
        return self._pools.infos()

    def _record(
        self, box_id: str, name: str | None, config: dict[str, Any], detach: bool
    ) -> BoxRecord:
        """Store a new box, its directory made in the same transaction."""
        directory = self._dir(box_id)
        owner = None if detach else Proc.me()
        record = BoxRecord(box_id, name, config, detach, time.time(), owner=owner)

        def make() -> None:
            boxdir.make(directory)
            try:
                # The native core's checks, before anything is recorded.
                self._native.box_check(native_config(directory, config, detach))
                disk = config["disk"] or (DEFAULT_VM_DISK if config["engine"] == "vm" else None)
                if disk:
                    with os_errors(f"making the disk of box {box_id}"):
                        make_disk(directory, disk)
            except BaseException:
                remove_tree(directory)
                raise

        self._store.add(record, also=make)
        if POOLED in config:
            return record  # no specification until taken (pool.py)
        try:
            boxdir.write_spec(directory, record)  # after the commit: see boxdir
        except BaseException:
            self._store.change(box_id, lambda r: DELETE, frees=True)
            boxdir.discard(directory)
            raise
        return record

    def _vm(
        self, lowers: tuple[Path, ...], mounts: list[str], accel: str, ready_ms: int
    ) -> dict[str, Any]:
        """A vm box's VM (vm/engine.py), its files in this home's caches."""
        from .vm.engine import BOOT_CACHE, ROOT_IMAGES, vm_config  # on use: the vm's stack

        return vm_config(
            lowers,
            mounts,
            accel=accel,
            ready_ms=ready_ms,
            root_images=self.home / "images" / ROOT_IMAGES,
            boot_cache=self.home / BOOT_CACHE,
            libexec=libexec_dir(),
            kernel=self._vm_kernel,
            kernel_args=self._vm_kernel_args,
        )

    def _image(self, image: str | os.PathLike[str]) -> ResolvedImage:
        """An image of the cache; a path that exists is loaded first."""
        if isinstance(image, os.PathLike) or (isinstance(image, str) and "/" in image):
            path = Path(image)
            if path.exists():
                loaded = self._images.load(path)
                if len(loaded) != 1:
                    raise ImageError(f"{path} holds {len(loaded)} images: load it, pick one")
                return self._images.resolve(loaded[0].id)
        if isinstance(image, os.PathLike):
            raise ImageNotFoundError(f"image {image} not found")
        if not isinstance(image, str):
            raise InvalidArgumentError(f"image {image!r}: a name, an id or a path")
        return self._images.resolve(image)

    def _dir(self, box_id: str) -> Path:
        return self.home / "boxes" / box_id

    def _settle(self, record: BoxRecord) -> BoxRecord:
        return reconcile(self._store, record.id, self._dir(record.id), record)

    def _track(self, record: BoxRecord) -> Box:
        return self._tracked(Box(self._services, record, self._dir(record.id)))

    def _tracked(self, box: Box) -> Box:
        with self._lock:
            self._boxes[box.id] = box
        return box

    def _forget(self, box: Box) -> None:
        with self._lock:
            if self._boxes.get(box.id) is box:
                del self._boxes[box.id]

    def _box_exited(self, box_id: str) -> BoxExit:
        """On the monitor thread: a watched shim is gone."""
        self._pools.exited(box_id)
        return BoxExit.of(reconcile(self._store, box_id, self._dir(box_id)))

    def get(self, id_or_name: str) -> Box:
        """A box by name, id or unique id prefix, from this runtime or any
        other on the same home.  ``NotFoundError`` when there is none."""
        record = self._store.find(id_or_name)
        with self._lock:
            box = self._boxes.get(record.id)
        if box is not None:
            return box
        record = self._settle(record)
        if record.removed:
            raise NotFoundError(f"box {id_or_name!r} was removed")
        return self._track(record)

    def list(
        self, status: BoxStatus | str | Iterable[BoxStatus | str] | None = None
    ) -> list[BoxInfo]:
        """Every box of this home (oldest first), reconciled with reality;
        only those in ``status`` (one or several) when given."""
        wanted = wanted_statuses(status)
        infos = []
        for record in self._store.all():
            settled = self._settle(record)
            if not settled.removed and (wanted is None or settled.status in wanted):
                infos.append(BoxInfo.of(settled))
        return infos

    def remove(self, id_or_name: str, *, force: bool = False) -> None:
        """Delete a box (see ``Box.remove``)."""
        self.get(id_or_name).remove(force=force)

    def _reconcile_all(self) -> None:
        """Bring every record in line with reality (and its directory's own
        files: a box made before they existed, or a crash between a create's
        commit and its specification), and sweep what is provably garbage:
        directories of removed boxes, and marked ones with no specification
        (``boxdir``).  Any other directory with no record stays: one with a
        specification is a box that ``recover`` takes in again."""
        for record in self._store.all(pooled=True):  # a dead runtime's pools too
            self._settle(record)
            directory = self._dir(record.id)
            kept = not record.removed and POOLED not in record.config
            if kept and not boxdir.has_spec(directory) and directory.is_dir():
                with contextlib.suppress(BoxliteError):  # a full disk: the next open
                    boxdir.mark(directory)
                    boxdir.write_spec(directory, record)
        with self._store.exclusive() as known:
            garbage = [
                d
                for d in (self.home / "boxes").iterdir()
                if known.get(d.name, False) or (d.name not in known and boxdir.is_garbage(d))
            ]
            for directory in garbage:
                signal_shim(directory, KILL_NOW, wait=True)  # nobody owns it any more
            # Moved aside under the lock (quick), deleted after it (maybe not).
            gone = [boxdir.move_aside(d) for d in garbage]
        for directory in gone:
            remove_tree(directory)

    @staticmethod
    def recover(home: str | os.PathLike[str] | None = None) -> RecoveryReport:
        """Rebuild the store of ``home`` (default as for ``Runtime``) from
        the home itself, when it is lost or damaged (``StoreLostError``,
        ``StoreCorruptError``), or take in boxes whose records are missing.

        A damaged store is moved aside, never deleted.  Box records come
        from each box directory's specification and are reconciled with
        reality (a detached box still running is found running, its
        writable layer untouched); image records come from the manifests in
        the image cache.  Tags only the store knew are lost, and reported.
        Nothing is deleted.  Call it while no other runtime uses the home."""
        from .state import recovery  # on use: it loads the image cache too

        return recovery.recover(resolve_home(home))

    def close(self) -> None:
        """Close every box (see ``Box.close``: the ones this program owns go
        with it), complete every pending operation."""
        if self._native.closed:
            return
        self._pools.stop_filling()
        self._monitor.close()
        self._native.close()  # ends a pooled box's start in flight
        pooled = self._pools.close()
        with self._lock:
            boxes = list(self._boxes.values())
        for box in [*boxes, *pooled]:
            box.close()
        self._store.close()
        _LIVE.discard(self)
