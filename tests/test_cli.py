"""The ``boxlite`` command, driven as a subprocess: exit codes, ``run --rm``
leaving nothing behind on any path, stdin, the box and image commands.
After each run: no live shim or agent, no record, no box directory."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from cli_driver import CLI, assert_nothing_left, boxlite, records
from imagebuild import busybox_rootfs, tar_directory, write_layout


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["host", "true"], 0),
        (["host", "sh", "-c", "exit 3"], 3),
        (["host", "sh", "-c", "kill -TERM $$"], 143),
        (["host", "sh", "-c", "kill -KILL $$"], 137),
        (["host", "sh", "-c", "kill -INT $$"], 130),
        (["--timeout", "0.3", "host", "sleep", "30"], 124),
        (["host", "/etc"], 126),
        (["host", "no-such-command"], 127),
        (["no-such-image:1", "true"], 125),
        (["--timeout", "soon", "host", "true"], 125),
        (["-u", "ghost", "host", "true"], 125),  # no such user in the box
        (["-u", "nobody", "host", "sh", "-c", "test $(id -u) = 65534"], 0),
        (["-v", "/no/such/dir:/x", "host", "true"], 125),
        (["-m", "64m", "host", "python3", "-c", "x = bytearray(300 << 20)"], 137),
        (["--memory", "lots", "host", "true"], 125),
        (["--pids-limit", "-1", "host", "true"], 125),
        (["--network", "outbound", "host", "grep", "-q", "tap0", "/proc/net/dev"], 0),
        (["host", "grep", "-q", "tap0", "/proc/net/dev"], 1),
    ],
)
def test_run_rm_exit_codes_and_nothing_left(home: Path, args: list[str], code: int) -> None:
    result = boxlite(home, "run", "--rm", *args)
    assert result.returncode == code, result.stderr
    if code == 125:
        assert result.stderr.count(b"\n") == 1 and result.stderr.startswith(b"boxlite")
    assert_nothing_left(home)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_run_rm_when_boxlite_itself_is_signalled(home: Path, sig: signal.Signals) -> None:
    """The signal reaches the box's command; its death is the exit code."""
    proc = subprocess.Popen(
        [*CLI, "--home", str(home), "run", "--rm", "host", "sh", "-c", "echo ready; exec sleep 60"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
    proc.send_signal(sig)
    assert proc.wait(timeout=30) == 128 + sig
    assert_nothing_left(home)


def test_run_rm_when_the_command_ignores_the_signal(home: Path) -> None:
    """A second signal kills it."""
    script = "trap '' TERM INT HUP; echo ready; sleep 60"
    proc = subprocess.Popen(
        [*CLI, "--home", str(home), "run", "--rm", "host", "sh", "-c", script],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    assert proc.poll() is None  # ignored, as the command chose
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 128 + signal.SIGKILL
    assert_nothing_left(home)


def test_tty_without_a_terminal_fails_at_once(home: Path) -> None:
    started = time.monotonic()
    result = boxlite(home, "run", "--rm", "-t", "host", "sh")
    assert result.returncode == 125 and b"TTY" in result.stderr
    assert time.monotonic() - started < 10
    assert_nothing_left(home)


def test_stdin_is_forwarded_with_its_eof(home: Path) -> None:
    data = os.urandom(300_000)
    result = boxlite(home, "run", "--rm", "-i", "host", "sha256sum", stdin=data)
    import hashlib

    assert result.returncode == 0
    assert result.stdout.split()[0].decode() == hashlib.sha256(data).hexdigest()
    result = boxlite(home, "run", "--rm", "host", "cat", stdin=b"not forwarded")
    assert result.stdout == b""  # without -i the box's stdin is empty
    assert_nothing_left(home)


def test_output_is_byte_exact_and_split(home: Path) -> None:
    script = r"printf 'a\000b\377'; printf 'err' >&2"
    result = boxlite(home, "run", "--rm", "host", "sh", "-c", script)
    assert (result.stdout, result.stderr) == (b"a\x00b\xff", b"err")


def test_box_lifecycle_commands(home: Path, tmp_path: Path) -> None:
    assert boxlite(home, "run", "--name", "kept", "host", "sh", "-c", "exit 4").returncode == 4
    created = boxlite(
        home, "create", "--name", "job", "host", "sh", "-c", "echo out; echo err >&2; exit 5"
    )
    assert created.returncode == 0
    box_id = created.stdout.strip().decode()
    listing = boxlite(home, "ls", "-a").stdout.decode().splitlines()
    assert listing[0].split() == ["ID", "NAME", "IMAGE", "STATUS", "CREATED"]
    assert {line.split()[1] for line in listing[1:]} == {"kept", "job"}
    assert boxlite(home, "ls").stdout.decode().splitlines()[1:] == []  # none running
    assert boxlite(home, "start", "job").returncode == 0
    assert boxlite(home, "wait", "job").stdout == b"5\n"
    logs = boxlite(home, "logs", box_id[:6])
    assert (logs.stdout, logs.stderr) == (b"out\n", b"err\n")
    info = json.loads(boxlite(home, "ls", "-a", "--format", "json").stdout)
    ended = next(i for i in info if i["name"] == "job")
    assert ended["status"] == "exited" and ended["exit_code"] == 5
    assert "exited (5)" in boxlite(home, "ps", "-a").stdout.decode()
    (inspected,) = json.loads(boxlite(home, "inspect", "job").stdout)
    assert inspected["id"] == box_id
    assert boxlite(home, "inspect", "nothing").returncode == 125

    idle = boxlite(home, "create", "--name", "idle", "--entrypoint", "sleep", "host", "60")
    assert idle.returncode == 0
    assert boxlite(home, "start", "idle").returncode == 0
    assert boxlite(home, "exec", "idle", "sh", "-c", "exit 9").returncode == 9
    (tmp_path / "in.txt").write_text("copied in\n")
    assert boxlite(home, "cp", str(tmp_path / "in.txt"), "idle:/tmp/").returncode == 0
    assert boxlite(home, "exec", "idle", "cat", "/tmp/in.txt").stdout == b"copied in\n"
    assert boxlite(home, "cp", "idle:/tmp/in.txt", str(tmp_path / "out")).returncode == 0
    assert (tmp_path / "out" / "in.txt").read_text() == "copied in\n"
    detached = boxlite(home, "exec", "-d", "idle", "sh", "-c", "sleep 0.2; touch /tmp/done")
    assert detached.returncode == 0 and len(detached.stdout.strip()) == 16
    # It runs on after that command's exit: /tmp/done appears (polled, since
    # each command here is a whole interpreter's start on a busy machine).
    probe = [
        "exec",
        "idle",
        "sh",
        "-c",
        "for i in $(seq 100); do test -e /tmp/done && exit 0; sleep 0.1; done; exit 1",
    ]
    assert boxlite(home, *probe).returncode == 0
    piped = boxlite(home, "exec", "-i", "idle", "tr", "a-z", "A-Z", stdin=b"through exec")
    assert (piped.returncode, piped.stdout) == (0, b"THROUGH EXEC")
    as_nobody = boxlite(home, "exec", "-u", "nobody", "idle", "id", "-u")
    assert (as_nobody.returncode, as_nobody.stdout) == (0, b"65534\n")
    assert boxlite(home, "exec", "-u", "a b", "idle", "true").returncode == 125
    assert boxlite(home, "restart", "idle").returncode == 0
    rm = boxlite(home, "rm", "idle")
    assert rm.returncode == 125 and b"running" in rm.stderr  # needs -f
    assert rm.stderr.count(b"\n") == 1
    assert boxlite(home, "stop", "idle").returncode == 0
    assert boxlite(home, "rm", "-f", "idle", "job", "kept").returncode == 0
    assert boxlite(home, "rm", "idle").returncode == 125
    assert_nothing_left(home)


def test_image_commands(home: Path, tmp_path: Path) -> None:
    layout = write_layout(tmp_path / "layout", [tar_directory(busybox_rootfs(tmp_path / "r"))])
    load = boxlite(home, "images", "load", "--tag", "bb:1", str(layout))
    assert load.returncode == 0 and load.stdout == b"bb:1\n"
    table = boxlite(home, "images", "ls").stdout.decode().splitlines()
    assert table[0].split() == ["NAME", "ID", "SIZE", "CREATED"] and table[1].startswith("bb:1")
    (image,) = json.loads(boxlite(home, "images", "--format", "json").stdout)
    assert image["tags"] == ["bb:1"]
    assert boxlite(home, "run", "--rm", "bb:1", "echo", "from bb").stdout == b"from bb\n"
    missing = boxlite(home, "images", "pull", "127.0.0.1:1/nothing:1")
    assert missing.returncode == 125 and missing.stderr.count(b"\n") == 1
    assert boxlite(home, "images", "rm", "bb:1").returncode == 0
    assert b"freed" in boxlite(home, "images", "prune").stdout
    assert boxlite(home, "version").stdout.startswith(b"boxlite ")
    assert_nothing_left(home)


def test_home_from_the_environment(home: Path) -> None:
    env = {**os.environ, "BOXLITE_HOME": str(home)}
    result = subprocess.run(
        [*CLI, "run", "--name", "here", "host", "true"], env=env, capture_output=True
    )
    assert result.returncode == 0
    assert len(records(home)) == 1
    subprocess.run([*CLI, "rm", "here"], env=env, check=True, capture_output=True)


def test_run_rm_signalled_at_any_moment_of_its_start(home: Path) -> None:
    """Signals land while the runtime opens, the box is made, started,
    attached: whenever it comes, nothing is left."""
    for i in range(15):
        proc = subprocess.Popen(
            [*CLI, "--home", str(home), "run", "--rm", "host", "sleep", "60"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(0.1 + i * 0.02)
        sig = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)[i % 3]
        proc.send_signal(sig)
        # Before Python has started up, the signal itself ends the process.
        assert proc.wait(timeout=30) in (128 + sig, -sig)
        assert_nothing_left(home)


def test_run_detached_with_rm(home: Path) -> None:
    started = boxlite(home, "run", "-d", "--rm", "--name", "once", "host", "sh", "-c", "exit 2")
    assert started.returncode == 0 and len(started.stdout.strip()) == 12
    deadline = time.monotonic() + 15
    while b"once" in boxlite(home, "ls", "-a").stdout and time.monotonic() < deadline:
        time.sleep(0.1)
    assert b"once" not in boxlite(home, "ls", "-a").stdout
    assert_nothing_left(home)


@pytest.mark.parametrize(
    "args",
    [
        ["start", "ghost"],
        ["stop", "ghost"],
        ["restart", "ghost"],
        ["rm", "ghost"],
        ["rm", "-f", "ghost"],
        ["wait", "ghost"],
        ["logs", "ghost"],
        ["exec", "ghost", "true"],
        ["inspect", "ghost"],
        ["cp", "ghost:/etc/passwd", "/tmp"],
        ["cp", "/etc/passwd", "ghost:/tmp"],
        ["images", "rm", "ghost"],
    ],
)
def test_an_unknown_box_is_boxlites_failure_in_every_command(home: Path, args: list[str]) -> None:
    """125 and one line saying what is wrong (stop, restart and rm said 1)."""
    result = boxlite(home, *args)
    assert result.returncode == 125
    assert result.stderr.count(b"\n") == 1 and b"'ghost'" in result.stderr, result.stderr
    assert b"internal error" not in result.stderr


def test_several_boxes_each_done_and_a_failure_is_125(home: Path) -> None:
    assert boxlite(home, "create", "--name", "one", "host", "true").returncode == 0
    result = boxlite(home, "rm", "one", "ghost")
    assert result.returncode == 125
    assert result.stdout == b"one\n" and result.stderr.count(b"\n") == 1
    assert records(home) == []


def test_a_host_error_is_one_line_not_an_internal_error(home: Path, tmp_path: Path) -> None:
    assert boxlite(home, "create", "--name", "one", "host", "true").returncode == 0
    (tmp_path / "file").write_text("")
    result = boxlite(home, "cp", "one:/etc/hostname", str(tmp_path / "file" / "dir"))
    assert result.returncode == 125
    assert result.stderr.count(b"\n") == 1 and b"internal error" not in result.stderr
    assert b"Not a directory" in result.stderr, result.stderr
    assert boxlite(home, "rm", "one").returncode == 0


@pytest.mark.parametrize(
    ("make", "says"),
    [
        ("file", b"not a directory"),
        ("under-a-file", b"not a directory"),
        ("empty", b"empty"),
    ],
)
def test_a_bad_home_is_said_clearly(tmp_path: Path, make: str, says: bytes) -> None:
    (tmp_path / "file").write_text("")
    home = {
        "file": str(tmp_path / "file"),
        "under-a-file": str(tmp_path / "file" / "home"),
        "empty": "",
    }[make]
    result = subprocess.run([*CLI, "--home", home, "ls"], capture_output=True, timeout=60)
    assert result.returncode == 125
    assert result.stderr.count(b"\n") == 1 and says in result.stderr, result.stderr
    assert b"internal error" not in result.stderr


def test_a_home_this_user_may_not_use_is_said_clearly() -> None:
    """As nobody, a home root made (mode 700): before, 'internal error:
    PermissionError'."""
    base = Path(os.environ.get("TMPDIR", "/tmp")) / f"boxlite-cli-home-{os.getpid()}"
    base.mkdir(mode=0o755)
    try:
        (base / "home").mkdir(mode=0o700)
        script = (
            "import os, sys\n"
            "from boxlite_ffi.cli import main\n"
            # main loads its modules on use: load them while this interpreter's
            # own files (under root's home, perhaps) are still readable
            "import boxlite_ffi, locale, boxlite_ffi.cli.box_commands\n"
            "boxlite_ffi.preload()\n"
            "os.setgroups([])\n"
            "os.setresgid(65534, 65534, 65534)\n"
            "os.setresuid(65534, 65534, 65534)\n"
            f"sys.exit(main(['--home', {str(base / 'home')!r}, 'ls']))\n"
        )
        result = subprocess.run(
            [CLI[0], "-P", "-c", script], capture_output=True, timeout=60, cwd=base
        )
        assert result.returncode == 125, result.stderr
        assert result.stderr.count(b"\n") == 1 and b"home" in result.stderr
        assert b"Permission denied" in result.stderr, result.stderr
        assert b"internal error" not in result.stderr
    finally:
        shutil.rmtree(base)


@pytest.mark.parametrize(
    "argv",
    [
        ["run", "--rm", "-e", "A=1", "--memory", "64m", "host", "sh", "-c", "true"],
        ["--home", "/h", "create", "--name", "x", "--engine", "ns", "host"],
        ["--home=/h", "ps", "-a", "--format", "json"],
        ["exec", "-it", "box", "sh"],
        ["images", "pull", "-q", "busybox"],
        ["images"],
        ["rm", "-f", "a", "b"],
        ["serve", "--port", "1"],
        ["version"],
    ],
)
def test_a_subcommand_built_alone_parses_as_with_all_the_others(argv: list[str]) -> None:
    """main builds only the subcommand argv names (what it costs to build
    them all is ~10 ms of a run): the result must be the same."""
    from boxlite_ffi.cli import _named, parser

    alone = parser(_named(argv))
    assert len(alone._subparsers._group_actions[0].choices) < 4  # type: ignore[union-attr]
    assert vars(alone.parse_args(argv)) == vars(parser().parse_args(argv))


def test_help_and_unknown_commands_list_every_subcommand() -> None:
    listed = subprocess.run([*CLI, "--help"], capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0 and "run,create,start" in listed.stdout
    unknown = subprocess.run([*CLI, "frobnicate"], capture_output=True, text=True, timeout=60)
    assert unknown.returncode == 125 and "'images'" in unknown.stderr, unknown.stderr
    run_help = subprocess.run([*CLI, "run", "--help"], capture_output=True, text=True, timeout=60)
    assert run_help.returncode == 0 and "--rm" in run_help.stdout
