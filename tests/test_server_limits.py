"""The bounds a server enforces, on a server state in this process: the
same ``boxes.create`` the route runs, under small limits."""

from __future__ import annotations

from pathlib import Path

import pytest

from boxlite_ffi import InvalidArgumentError, LimitExceededError
from boxlite_ffi.server import boxes
from boxlite_ffi.server.errors import row_of
from boxlite_ffi.server.models import CreateBoxRequest
from boxlite_ffi.server.settings import Limits, Settings
from boxlite_ffi.server.state import ServerState


def test_max_boxes_and_memory(tmp_path: Path, rootfs: Path) -> None:
    limits = Limits(max_boxes=1, max_memory_mib=256)
    state = ServerState(Settings(home=tmp_path / "home", token="t", limits=limits,
                                 allow_rootfs=(rootfs.parent,)))  # fmt: skip
    try:
        with pytest.raises(InvalidArgumentError):
            boxes.create(state, CreateBoxRequest(rootfs_path=str(rootfs), memory_mib=512))
        made = boxes.create(state, CreateBoxRequest(rootfs_path=str(rootfs), memory_mib=256))
        assert made.status == 201 and made.body["memory_mib"] == 256
        with pytest.raises(LimitExceededError) as refused:
            boxes.create(state, CreateBoxRequest(rootfs_path=str(rootfs)))
        assert row_of(refused.value).status == 429
        assert row_of(refused.value).code == "resource_exhausted"
        state.runtime.remove(made.body["box_id"])
        boxes.create(state, CreateBoxRequest(rootfs_path=str(rootfs)))  # room again
    finally:
        for info in state.runtime.list():
            state.runtime.remove(info.id, force=True)
        state.close()
