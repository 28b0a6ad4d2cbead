"""``python3 -m boxlite_ffi.server``: the same as ``boxlite serve``."""

from __future__ import annotations

import sys

from .cli import main

sys.exit(main())
