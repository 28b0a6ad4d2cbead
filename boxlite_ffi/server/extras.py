"""What the contract says of a box that the runtime does not keep: its
``auto_stop``, ``auto_delete``, ``auto_resume`` and labels, in the server's
database by box id (a box made outside the server has the defaults)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from .db import ServerDb


@dataclass(frozen=True)
class BoxExtras:
    auto_stop: int  # idle seconds before the box is stopped; 0: never
    auto_delete: int = 0
    auto_resume: bool = True
    labels: dict[str, str] = field(default_factory=dict)


class ExtrasTable:
    def __init__(self, db: ServerDb, default_auto_stop: int) -> None:
        self._db = db
        self._default = BoxExtras(default_auto_stop)

    def put(self, box_id: str, extras: BoxExtras) -> None:
        with self._db.transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO box_settings VALUES (?, ?)",
                (box_id, json.dumps(asdict(extras))),
            )

    def get(self, box_id: str) -> BoxExtras:
        with self._db.transaction() as db:
            row = db.execute(
                "SELECT settings FROM box_settings WHERE box_id = ?", (box_id,)
            ).fetchone()
        return BoxExtras(**json.loads(row[0])) if row else self._default

    def drop(self, box_id: str) -> None:
        with self._db.transaction() as db:
            db.execute("DELETE FROM box_settings WHERE box_id = ?", (box_id,))
