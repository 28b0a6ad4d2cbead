"""The Box API's wire facts, shared by ``boxlite serve`` (``server/``) and
the remote client (``remote/``): paths, headers, attach frames and the
prefix of our extension fields (tests/contract/ holds the contract)."""

from __future__ import annotations

EXTENSION = "boxlite_"  # every field, query and route segment of ours

# ---- paths (the contract's single-tenant shape: no {prefix} segment) ---------
CONFIG = "/v1/config"
BOXES = "/v1/boxes"
BOX = BOXES + "/{box_id}"
START = BOX + "/start"
STOP = BOX + "/stop"
EXEC = BOX + "/exec"
EXECUTION = BOX + "/executions/{exec_id}"
ATTACH = EXECUTION + "/attach"
SIGNAL = EXECUTION + "/signal"
RESIZE = EXECUTION + "/resize"
FILES = BOX + "/files"
LOGS = BOX + "/boxlite_logs/{stream}"  # an extension route: the contract has no logs
IMAGES = "/v1/images"
IMAGE = IMAGES + "/{image_id}"
PULL = IMAGES + "/pull"

IDEMPOTENCY_HEADER = "Idempotency-Key"
TAR = "application/x-tar"

# ---- attach ----------------------------------------------------------------------
# Server binary frames: one byte of stream, then its output.
FRAME_STDOUT = 0x01
FRAME_STDERR = 0x02
# Text frames, by their "type".
EXIT_FRAME = "exit"
ERROR_FRAME = "error"
CURSOR_FRAME = "boxlite_cursor"  # first, when the client sent ?cursor=
STDIN_EOF_FRAME = "stdin_eof"
SIGNAL_FRAME = "signal"
RESIZE_FRAME = "resize"
CURSOR_QUERY = "cursor"  # ?cursor=<stdout>,<stderr>
MAX_CLIENT_FRAME = 1 << 20  # the largest client frame a server takes (beyond: close 1009)
PING_INTERVAL_S = 15.0  # the contract's keepalive
DEAD_AFTER_S = 45.0  # "the absence of frames for >45s"
