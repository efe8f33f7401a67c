"""The live view with pid1 as PID 1 of a namespace: a pty stands in for
VT2 (`pid1.view_tty=/dev/pts/N`). Frames fit the terminal's size, follow
state changes, are coalesced under a burst of changes, and stop when
nothing changes; `<state_dir>/status` follows along."""

from __future__ import annotations

import signal
import termios
import time
from pathlib import Path

import pytest
from test_control import control, events, send

from devtools.harness import Pid1, wait_for
from devtools.pty import ViewScreen
from pid1.control import ERROR_WINDOW
from pid1.phases.vt2 import MIN_INTERVAL

pytestmark = pytest.mark.namespace

PHASES = "pid1.phases=vt2,control,fake_restarts pid1.extra_phases=tests.namespace.control_phases"


def screen_lines(frame: str) -> list[str]:
    """A frame's text lines, without the clear-to-end-of-line and clear-below
    codes (and the extra CR the pty's output processing adds before LF)."""
    body = frame.replace("\x1b[J", "")
    return [line.replace("\x1b[K", "").rstrip("\r") for line in body.split("\n")]


def has_row(text: str, *first_words: str) -> bool:
    return any(line.split()[: len(first_words)] == list(first_words) for line in text.splitlines())


def restarts_ended(tmp_path: Path) -> int:
    """How many restarts ended, or -1 while one is still running (a read of
    a burst split in two can start one more than there were bursts)."""
    seen = events(tmp_path)
    ended = seen.count("restart dockerd end")
    return ended if ended == seen.count("restart dockerd begin") else -1


def start(pid1_ns, tmp_path: Path, screen: ViewScreen, **env: str) -> Pid1:
    root = tmp_path / "root"
    (root / "dev").mkdir(parents=True)
    wrapper = ["sh", "-c", 'mount -t tmpfs devtest "$0/dev" && exec "$@"', str(root)]
    run = pid1_ns(
        f"{PHASES} pid1.view_tty={screen.path}",
        root=str(root),
        wrapper=wrapper,
        env={"PID1_TEST_OUT": str(tmp_path / "events"), **env},
    )
    run.wait_phase("control")
    run.wait_phase("fake_restarts")
    run.wait_phase("vt2")
    return run


@pytest.fixture
def screen():
    made = ViewScreen(rows=30, cols=100)
    yield made
    made.close()


def test_the_view_fits_the_terminal_and_follows_the_state(pid1_ns, tmp_path: Path, screen: ViewScreen) -> None:
    run = start(pid1_ns, tmp_path, screen)
    wait_for("a frame showing every phase done", lambda: "fake_restarts" in "".join(screen.frames()[-1:]), 10)
    frame = screen.frames()[-1]
    lines = screen_lines(frame)
    assert 12 <= len(lines) <= 30, lines  # as many log lines as there are, up to the screen's rows
    assert all(len(line) <= 100 for line in lines), lines
    assert lines[0].startswith("only-docker pid1 | up ")  # VT-safe glyphs on the terminal
    assert any(line.startswith("vt2 ") and "view on " + screen.path in line for line in lines), lines
    assert not termios.tcgetattr(screen.slave)[3] & termios.ECHO  # keys typed on VT2 do not scribble
    # a state change shows up on the screen and in the status file
    send(control(run), b"frobnicate\n")
    wait_for("the error on screen", lambda: "'frobnicate' ignored" in "".join(screen.frames()[-1:]), 10, run.describe)
    status = run.state_dir / "status"
    wait_for("the error in the status file", lambda: "'frobnicate' ignored" in status.read_text(), 10, run.describe)
    text = status.read_text()
    assert text.startswith("only-docker pid1 · up ") and has_row(text, "control", "done"), text
    assert all(len(line) <= 80 for line in text.splitlines())


def test_redraws_are_coalesced_and_stop_when_idle(pid1_ns, tmp_path: Path, screen: ViewScreen) -> None:
    run = start(pid1_ns, tmp_path, screen)
    wait_for("the boot frames", lambda: "fake_restarts" in "".join(screen.frames()[-1:]), 10)
    # A burst of state changes: each restart logs two lines (and writes an event).
    started = time.monotonic()
    for _ in range(10):
        send(control(run), b"restart dockerd\n" * 50)
        time.sleep(0.05)
    last_sent = time.monotonic()
    wait_for("every restart to end", lambda: restarts_ended(tmp_path) >= 10, 20, run.describe)
    # The rate limiter sums up the repeats it held back when its window ends,
    # up to ERROR_WINDOW after the last command (a slow burst spans two windows).
    wait_for("the last rate-limit window to end", lambda: time.monotonic() > last_sent + ERROR_WINDOW, 10)
    if run.log().count("already in progress; ignored") >= 10:
        run.wait_log("more repeated control commands ignored", timeout=10)
    last_message = run.state()["log"][-1]["message"][:40]
    wait_for("the frame of the last change", lambda: last_message in "".join(screen.frames()[-1:]), 10, run.describe)
    ended = screen.settled("the last coalesced frame", 2 * MIN_INTERVAL)
    frames = screen.frames_between(started, ended)
    allowed = (ended - started) / 0.25 + 2
    assert 1 <= frames <= allowed, f"{frames} frames in {ended - started:.2f} s (at most {allowed:.0f})"
    # Idle: nothing changes, nothing is drawn (no timer tick).
    quiet_from = time.monotonic()
    time.sleep(3)  # a window, not a wait: the property is that nothing is drawn in it
    assert screen.frames_between(quiet_from, time.monotonic()) == 0, screen.frames()[-1]
    # One change, one frame.
    before = len(screen.frames())
    send(control(run), b"frobnicate\n")
    wait_for("a frame for the change", lambda: len(screen.frames()) > before, 10, run.describe)
    screen.settled("the frames for the change", 2 * MIN_INTERVAL)
    assert len(screen.frames()) - before == 1
    assert "'frobnicate' ignored" in screen.frames()[-1]


def test_no_terminal_still_writes_the_status_file(pid1_ns, tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "dev").mkdir(parents=True)
    wrapper = ["sh", "-c", 'mount -t tmpfs devtest "$0/dev" && exec "$@"', str(root)]
    run = pid1_ns("pid1.phases=vt2", root=str(root), wrapper=wrapper)  # default tty2: not in this /dev
    state = run.wait_phase("vt2")
    assert state["phases"]["vt2"]["detail"].startswith(f"no {root}/dev/tty2: no terminal view"), state
    status = run.state_dir / "status"
    wait_for(
        "the status file", lambda: status.exists() and has_row(status.read_text(), "vt2", "done"), 10, run.describe
    )


def test_the_last_frame_shows_the_stop(pid1_ns, tmp_path: Path, screen: ViewScreen) -> None:
    run = start(pid1_ns, tmp_path, screen)
    send(control(run), b"poweroff\n")
    assert run.wait_exit(30) == -signal.SIGINT, run.describe()
    wait_for("the final frame", lambda: "stopped: poweroff" in "".join(screen.frames()[-1:]), 5, run.describe)
    assert "stopping" in screen_lines(screen.frames()[-1])[0]
    assert "stopped: poweroff" in (run.state_dir / "status").read_text()
    # the terminal is put back as it was: echo on, cursor shown
    assert termios.tcgetattr(screen.slave)[3] & termios.ECHO
    assert b"\x1b[?25h" in screen.data
