"""The contract's JSON (with our extensions) as the types a local runtime
returns: ``BoxInfo``, ``BoxExit``, ``ImageInfo``."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ..errors import ProtocolError
from ..image.images import ImageInfo
from ..image.media import ImageConfig
from ..state.exits import Outcome
from ..state.status import BoxStatus
from ..state.views import BoxExit, BoxInfo

# A contract server's statuses, for a box without ``boxlite_status``.
CONTRACT_STATUSES = {
    "configured": BoxStatus.CONFIGURED,
    "running": BoxStatus.RUNNING,
    "stopping": BoxStatus.STOPPING,
    "stopped": BoxStatus.STOPPED,
    "failed": BoxStatus.FAILED,
}


def stamp(text: object) -> float | None:
    """An RFC 3339 time as seconds since the epoch."""
    if not isinstance(text, str):
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise ProtocolError(f"not a time: {text!r}") from None


def status_of(box: dict[str, Any]) -> BoxStatus:
    ours = box.get("boxlite_status")
    try:
        return BoxStatus(ours) if ours is not None else CONTRACT_STATUSES[box["status"]]
    except (KeyError, ValueError):
        raise ProtocolError(f"box {box.get('box_id')!r} has no status we know") from None


def box_info(box: dict[str, Any], *, detached: bool) -> BoxInfo:
    """``detached``: whether this client let go of it (a server's boxes all are)."""
    return BoxInfo(
        id=box["box_id"],
        name=box.get("name"),
        image=box.get("image", ""),
        status=status_of(box),
        exit_code=box.get("boxlite_exit_code"),
        signal=box.get("boxlite_signal"),
        reason=box.get("boxlite_reason"),
        created=stamp(box.get("created_at")) or 0.0,
        started=stamp(box.get("boxlite_started_at")),
        finished=stamp(box.get("boxlite_finished_at")),
        detached=detached,
        auto_remove=False,
        config={},  # the server's record of it stays there
        engine=box.get("boxlite_engine", "ns"),
        accelerator=box.get("boxlite_accelerator"),
    )


def box_exit(box: dict[str, Any]) -> BoxExit:
    outcome = box.get("boxlite_outcome")
    return BoxExit(
        status=status_of(box),
        outcome=Outcome(outcome) if outcome is not None else None,
        exit_code=box.get("boxlite_exit_code"),
        signal=box.get("boxlite_signal"),
        reason=box.get("boxlite_reason"),
        finished=stamp(box.get("boxlite_finished_at")),
    )


def image_info(image: dict[str, Any]) -> ImageInfo:
    config = image.get("boxlite_config") or {}
    layers = tuple(image.get("boxlite_layers") or ())
    tags = image.get("boxlite_tags")
    return ImageInfo(
        id=image["id"],
        tags=tuple(tags) if tags is not None else (image["reference"],),
        size=image.get("size_bytes") or 0,
        created=stamp(image.get("cached_at")) or 0.0,
        layers=layers,
        config=ImageConfig(
            layers,
            tuple(config.get("env", ())),
            tuple(config.get("entrypoint", ())),
            tuple(config.get("cmd", ())),
            config.get("workdir", ""),
            config.get("user", ""),
        ),
    )
