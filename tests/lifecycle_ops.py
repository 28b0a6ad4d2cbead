"""One lifecycle operation on a box, as a comparable answer: used in the
test process and in its second process (run as a script: JSON lines on
stdin, answers on stdout) by the two-process model test."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import boxlite_ffi


def apply(rt: boxlite_ffi.Runtime, rootfs: str, op: str, name: str) -> str:
    """'ok', or 'err <ErrorClass> [reason]'."""
    try:
        if op == "create":
            rt.create(rootfs=rootfs, name=name, detach=True).close()
        elif op == "exec":
            assert rt.get(name).run(["true"]).ok
        elif op in ("remove", "force_remove"):
            rt.remove(name, force=op == "force_remove")
        else:
            getattr(rt.get(name), op)()  # start, stop
    except boxlite_ffi.InvalidStateError as exc:
        return f"err {type(exc).__name__} {exc.reason}"
    except boxlite_ffi.BoxliteError as exc:
        return f"err {type(exc).__name__}"
    return "ok"


def listing(rt: boxlite_ffi.Runtime) -> dict[str, str]:
    return {str(info.name): str(info.status) for info in rt.list()}


def serve(home: str, rootfs: str) -> None:
    with boxlite_ffi.Runtime(Path(home)) as rt:
        for line in sys.stdin:
            op, name = json.loads(line)
            answer = listing(rt) if op == "list" else apply(rt, rootfs, op, name)
            print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    serve(sys.argv[1], sys.argv[2])
