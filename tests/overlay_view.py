"""What a stack of unpacked layer directories looks like to a box: mounted
by the kernel's overlayfs (as the shim mounts it: userxattr) in a user and
mount namespace of a child process, and listed from there."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

LISTER = r"""
import json, os, sys, subprocess
lowers, mnt, upper, work = sys.argv[1:5]
subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
    f"lowerdir={lowers},upperdir={upper},workdir={work},userxattr", mnt], check=True)
tree = {}
for root, dirs, files in os.walk(mnt):
    for name in dirs + files:
        path = os.path.join(root, name)
        rel = os.path.relpath(path, mnt)
        if os.path.islink(path):
            tree[rel] = ["link", os.readlink(path)]
        elif os.path.isdir(path):
            tree[rel] = ["dir"]
        elif os.path.isfile(path):
            tree[rel] = ["file", open(path, "rb").read().decode("latin-1")]
        else:
            tree[rel] = ["other"]
    dirs[:] = [d for d in dirs if not os.path.islink(os.path.join(root, d))]
print(json.dumps(tree))
"""


def merged_view(layers_top_first: list[Path]) -> dict[str, tuple[str, ...]]:
    """path -> ("dir",) | ("file", text) | ("link", target) | ("other",)."""
    with tempfile.TemporaryDirectory(prefix="overlay-view-") as tmp:
        mnt, upper, work = (Path(tmp) / n for n in ("mnt", "upper", "work"))
        for d in (mnt, upper, work):
            d.mkdir()
        lowers = ":".join(str(p) for p in layers_top_first)
        out = subprocess.run(
            ["unshare", "-Urm", sys.executable, "-c", LISTER, lowers, mnt, upper, work],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    return {k: tuple(v) for k, v in json.loads(out).items()}
