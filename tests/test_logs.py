"""The main command's logs: byte-exact, the newest ``log_limit`` bytes of
each stream kept, across restarts; a box that floods its output cannot
fill the host disk, nor block on a log."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import boxlite_ffi
from boxlite_ffi import BoxStatus, InvalidArgumentError


def numbers(first: int, last: int) -> bytes:
    """What `seq first last` prints."""
    return b"".join(b"%d\n" % i for i in range(first, last + 1))


def kept(stream: bytes, limit: int) -> bytes:
    """What a log keeps of everything written: whole halves rotate out."""
    half = limit // 2
    if len(stream) <= half:
        return stream
    return stream[-(half + (len(stream) - half - 1) % half + 1) :]


def log_files(box: boxlite_ffi.Box) -> int:
    return sum(p.stat().st_size for p in box.directory.glob("std*.log*"))


def run_main(rt: boxlite_ffi.Runtime, script: str, **options: object) -> boxlite_ffi.Box:
    box = rt.create("host", cmd=["sh", "-c", script], **options)  # type: ignore[arg-type]
    box.start()
    assert box.wait(60).exit_code == 0
    return box


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    limit=st.integers(4096, 1 << 17),
    out=st.integers(0, 40000),
    err=st.integers(0, 20000),
)
def test_each_stream_keeps_its_newest_bytes(
    rt: boxlite_ffi.Runtime, limit: int, out: int, err: int
) -> None:
    with run_main(rt, f"seq 1 {out}; seq 1 {err} >&2", log_limit=limit) as box:
        logs = box.logs()
        assert logs.stdout == kept(numbers(1, out), limit)
        assert logs.stderr == kept(numbers(1, err), limit)
        assert log_files(box) <= 2 * limit
        box.remove()


def test_a_flood_cannot_fill_the_host_disk(rt: boxlite_ffi.Runtime) -> None:
    # 200 MiB of output against a 1 MiB limit; the box never waits on it.
    flood = "head -c 209715200 /dev/zero | tr '\\0' x; echo; echo end"
    with run_main(rt, flood, log_limit="1m") as box:
        logs = box.logs().stdout
        assert logs.endswith(b"x\nend\n") and set(logs[:-5]) == {ord("x")}
        assert 512 << 10 <= len(logs) <= 1 << 20
        assert log_files(box) <= 1 << 20
        box.remove()


def test_the_default_limit_is_32_mib(rt: boxlite_ffi.Runtime) -> None:
    with run_main(rt, "head -c 50331648 /dev/zero") as box:
        assert box.logs().stdout == bytes(32 << 20)
        box.remove()


def test_logs_go_on_across_restarts(rt: boxlite_ffi.Runtime) -> None:
    script = (
        "n=$(cat /n 2>/dev/null || echo 0); seq $((n + 1)) $((n + 3000)); echo $((n + 3000)) >/n"
    )
    with run_main(rt, script, log_limit=8192) as box:
        for _ in range(3):
            box.start()
            assert box.wait(60).exit_code == 0
        assert box.logs().stdout == kept(numbers(1, 12000), 8192)
        box.remove()


def test_a_read_during_rotations_is_one_piece(rt: boxlite_ffi.Runtime) -> None:
    """Reads while the shim rotates (every 2 KiB, so freed inodes are soon
    reused): always a contiguous run of the stream."""
    with rt.create("host", cmd=["seq", "1", "2000000"], log_limit=4096) as box:
        box.start()
        reads = 0
        while box.status is BoxStatus.RUNNING:
            lines = box.logs().stdout.split(b"\n")[1:-1]  # the first may be cut
            first = int(lines[0]) if lines else 0
            assert [int(n) for n in lines] == list(range(first, first + len(lines)))
            reads += 1
        assert reads > 10
        box.wait(60)
        assert box.logs().stdout == kept(numbers(1, 2000000), 4096)
        box.remove()


@pytest.mark.parametrize("limit", [0, 4095, "1k", "lots", -1, True])
def test_bad_log_limits_are_refused(rt: boxlite_ffi.Runtime, limit: object) -> None:
    with pytest.raises(InvalidArgumentError):
        rt.create("host", cmd=["true"], log_limit=limit)  # type: ignore[arg-type]
    assert rt.list() == []


def test_the_box_holds_no_log_file(rt: boxlite_ffi.Runtime) -> None:
    """The box writes to a pipe: it cannot seek, truncate or grow the file."""
    script = "readlink /proc/self/fd/1; readlink /proc/self/fd/2 >&2"
    with run_main(rt, script) as box:
        logs = box.logs()
        assert logs.stdout.startswith(b"pipe:") and logs.stderr.startswith(b"pipe:")
        assert not Path(box.directory / "stdout.log.1").exists()
        box.remove()
