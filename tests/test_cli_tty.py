"""``boxlite run -it`` on a real terminal, driven under tmux: the box gets
a pseudo-terminal of the caller's size, kept in sync on resize, and Ctrl-C
reaches the box's process, not boxlite."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from cli_driver import CLI, assert_nothing_left
from registry_server import RegistryServer

TMUX = shutil.which("tmux")
pytestmark = pytest.mark.skipif(TMUX is None, reason="tmux is not installed (tests/run.sh does)")


class Tmux:
    def __init__(self, socket: str) -> None:
        self.base = [str(TMUX), "-L", socket]

    def __call__(self, *args: str) -> str:
        return subprocess.run(
            [*self.base, *args], check=True, capture_output=True, text=True
        ).stdout

    def screen(self) -> str:
        return self("capture-pane", "-p", "-t", "box")

    def wait_for(self, check: Callable[[str], bool], timeout: float = 15) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            screen = self.screen()
            if check(screen):
                return screen
            time.sleep(0.05)
        raise AssertionError(f"the screen never showed it:\n{self.screen()}")

    def alive(self) -> bool:
        return (
            subprocess.run([*self.base, "has-session", "-t", "box"], capture_output=True).returncode
            == 0
        )


@pytest.fixture
def tmux(tmp_path: Path) -> Iterator[Tmux]:
    t = Tmux(f"boxlite-test-{tmp_path.name}")
    yield t
    subprocess.run([*t.base, "kill-server"], capture_output=True)


def test_a_terminal_of_the_callers_size_resize_and_ctrl_c(tmux: Tmux, tmp_path: Path) -> None:
    home, status = tmp_path / "home", tmp_path / "status"
    cli = " ".join(shlex.quote(a) for a in [*CLI, "--home", str(home)])
    command = f"{cli} run --rm -it host sh; echo $? > {status}"
    tmux("new-session", "-d", "-s", "box", "-x", "100", "-y", "30", command)
    tmux.wait_for(lambda s: "#" in s)
    tmux("send-keys", "-t", "box", "stty size", "Enter")
    tmux.wait_for(lambda s: "30 100" in s)
    tmux("resize-window", "-t", "box", "-x", "120", "-y", "40")
    time.sleep(0.3)  # SIGWINCH, then the resize travels to the box
    tmux("send-keys", "-t", "box", "clear; stty size", "Enter")
    tmux.wait_for(lambda s: "40 120" in s)
    tmux("send-keys", "-t", "box", "clear; sleep 60", "Enter")
    time.sleep(0.3)
    tmux("send-keys", "-t", "box", "C-c")
    tmux("send-keys", "-t", "box", "echo status=$?", "Enter")
    tmux.wait_for(lambda s: "status=130" in s)  # the box's sleep got SIGINT; its shell lives
    tmux("send-keys", "-t", "box", "exit 6", "Enter")
    deadline = time.monotonic() + 15
    while tmux.alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert status.read_text() == "6\n"
    assert_nothing_left(home)


def test_stdin_eof_from_a_pipe_ends_an_interactive_box(tmp_path: Path) -> None:
    home = tmp_path / "home"
    result = subprocess.run(
        [*CLI, "--home", str(home), "run", "--rm", "-i", "host", "sh"],
        input=b"echo one; echo two >&2; exit 4\n",
        capture_output=True,
        timeout=60,
    )
    assert (result.returncode, result.stdout, result.stderr) == (4, b"one\n", b"two\n")
    assert_nothing_left(home)


def test_a_pull_shows_progress_on_a_terminal_only(
    tmux: Tmux, tmp_path: Path, oci_image: Path
) -> None:
    registry = RegistryServer(tmp_path / "registry")
    try:
        ref = registry.push(oci_image, "demo/bar:1")
        home = tmp_path / "home"
        cli = " ".join(shlex.quote(a) for a in [*CLI, "--home", str(home)])
        command = f"{cli} images pull {ref}; sleep 60"
        tmux("new-session", "-d", "-s", "box", "-x", "160", "-y", "10", command)
        screen = tmux.wait_for(lambda s: "layers 3/3" in s)
        assert f"{ref}: [" in screen and "#" * 30 in screen
        piped = subprocess.run(
            [*CLI, "--home", str(tmp_path / "home2"), "images", "pull", ref], capture_output=True
        )
        assert piped.returncode == 0 and piped.stderr == b""
        assert piped.stdout.startswith(b"sha256:")
    finally:
        registry.stop()
