"""The supervisor view (pid1/view/) for typical states at 80x25 and
132x43, the status command on good and bad files, and the terminal frames
the vt2 phase writes."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

from devtools import sample_states
from devtools.sample_states import NOW_RUNNING, WALL_RUNNING
from pid1.phases.vt2 import frame
from pid1.state import State
from pid1.state_schema import NetworkState
from pid1.view.header import network_line
from pid1.view.render import MIN_LOG_LINES, render, render_long
from pid1.view.statefile import decode
from pid1.view.text import text_width

REPO = Path(__file__).resolve().parents[2]
SIZES = [(25, 80), (43, 132)]


def screen(name: str, rows: int, cols: int) -> list[str]:
    build, now = sample_states.ALL[name]
    return render(decode(State, build()), rows, cols, now, wall=WALL_RUNNING)


def text_of(lines: list[str]) -> str:
    return "\n".join(lines)


@pytest.mark.parametrize("name", sorted(sample_states.ALL))
@pytest.mark.parametrize(("rows", "cols"), SIZES)
def test_every_screen_fits(name: str, rows: int, cols: int) -> None:
    lines = screen(name, rows, cols)
    assert len(lines) == rows, text_of(lines)  # these states have enough log to fill the screen
    for line in lines:
        assert text_width(line) <= cols, f"{line!r} is {text_width(line)} cells wide"
        assert line.isprintable(), repr(line)


@pytest.mark.parametrize(("rows", "cols"), SIZES)
def test_booting(rows: int, cols: int) -> None:
    lines = screen("booting", rows, cols)
    text = text_of(lines)
    assert lines[0].startswith("only-docker pid1 · up 7.0s · booting")
    assert "disk /dev/vda (ext4, DOCKER)" in text
    assert "net:     —" in text  # no network section yet
    assert "starting, not answering yet" in text
    # the running phase shows the time so far; pending ones have no start
    assert any(line.split()[:2] == ["dockerd", "running"] and "2.0s" in line for line in lines), text
    assert any(line.split()[:2] == ["console", "pending"] for line in lines), text
    assert lines[-1].endswith("log line number 119 at level debug")  # newest last


@pytest.mark.parametrize(("rows", "cols"), SIZES)
def test_running(rows: int, cols: int) -> None:
    lines = screen("running", rows, cols)
    text = text_of(lines)
    assert "· running" in lines[0] and "up 5m00s" in lines[0]
    assert "dhcp eth0 10.0.2.15/24 gw 10.0.2.2" in text
    assert "lease 23h55m left of 1d00h" in text  # obtained 11.7 + 86400 - now 300
    assert "dockerd: pid 231, up 4m50s (since 9.20), 0 restarts · containerd running" in text
    for role in ("dhcp", "dom0", "console"):
        assert any(line.split()[:2] == [role, "running"] for line in lines), text
    if cols >= 132:
        assert "console-image:latest (tag console-image:latest) · 9a8b7c6d5e4f" in text
        assert "console     done      11.70   900ms" in text  # the full phase table fits
    else:
        # 13 phases do not fit beside the rest at 80x25: the finished ones collapse
        assert "done: devices 12ms, mounts 20ms" in text
    log = [line for line in lines if line.startswith("[")]
    assert len(log) >= MIN_LOG_LINES
    assert log[-1].endswith("log line number 119 at level debug")
    times = [float(line[1:10]) for line in log]
    assert times == sorted(times)


@pytest.mark.parametrize(("rows", "cols"), SIZES)
def test_crash_looping_console(rows: int, cols: int) -> None:
    lines = screen("crash_looping_console", rows, cols)
    row = next(line for line in lines if line.startswith("console ") and "backoff" in line)
    assert row.split()[:4] == ["console", "backoff", "—", "7"], row
    assert "busybox:latest (bundled fallback)" in row
    if cols >= 132:
        assert "fallback: console-image:latest exited 127 seven times in a row" in row
        # the rest of the line is cut, but it says when the next try is
        wide = render(decode(State, sample_states.crash_looping_console()), rows, 300, NOW_RUNNING)
        full = next(line for line in wide if line.startswith("console ") and "backoff" in line)
        assert "retry in 16.0s" in full and "last exit 127" in full


@pytest.mark.parametrize(("rows", "cols"), SIZES)
def test_ram_mode(rows: int, cols: int) -> None:
    text = text_of(screen("ram_mode", rows, cols))
    assert "boot:    running from RAM (tmpfs, lost at power-off)" in text
    if cols >= 132:
        assert "· no disk labelled DOCKER (4 block devices checked, waited 1.0 s)" in text


@pytest.mark.parametrize(("rows", "cols"), SIZES)
def test_offline(rows: int, cols: int) -> None:
    lines = screen("offline", rows, cols)
    net = next(line for line in lines if line.startswith("net:"))
    assert net.startswith("net:     dhcp eth0 offline: no lease within 15 s"), net
    assert not any(line.startswith("dhcp ") for line in lines)


def test_empty_state_says_dash_everywhere() -> None:
    lines = render(decode(State, {}), 25, 80, 1.0)
    text = text_of(lines)
    for prefix in ("boot:", "net:", "dockerd:"):
        assert f"{prefix}" in text and next(line for line in lines if line.startswith(prefix)).endswith("—")
    assert lines[0] == "only-docker pid1 · up 1.0s · booting"  # the state's first mode; no pid shown
    assert not any(line.startswith(("config:", "clock:", "ssh:")) for line in lines), text  # no such phase ran


def test_hostile_text_cannot_escape_the_line() -> None:
    """Control characters become spaces; wide characters count twice."""
    state = sample_states.running()
    state["log"].append({"time": 400.0, "level": "error", "message": "evil\x1b[2J\x1b]0;title\x07\ttab\rcr"})
    state["log"].append({"time": 401.0, "level": "info", "message": "宽" * 100})
    state["phases"]["modules"]["detail"] = "x\n" * 200
    for rows, cols in [*SIZES, (10, 20), (3, 5), (1, 1)]:
        lines = render(decode(State, state), rows, cols, NOW_RUNNING)
        assert len(lines) <= rows
        for line in lines:
            assert "\x1b" not in line and "\n" not in line and "\r" not in line and "\t" not in line
            assert text_width(line) <= cols, (rows, cols, line)
    assert render(decode(State, state), 0, 80, 1.0) == []


def test_wrong_shapes_do_not_raise() -> None:
    odd = {
        "mode": 7,
        "phases": {"a": "not a dict", "b": {"started": "x", "duration": None, "status": None}},
        "containers": [],
        "network": "up",
        "dockerd": {"pid": {"x": 1}, "up_since": True, "restarts": "many"},
        "log": [1, None, {"time": "x"}],
        "milestones": None,
    }
    for rows, cols in SIZES:
        lines = render(decode(State, odd), rows, cols, 10.0)
        assert all(text_width(line) <= cols for line in lines)
    assert render(decode(State, "not a dict"), 25, 80, 1.0)[0].startswith("only-docker pid1")


def test_long_form_has_every_phase_and_40_log_lines() -> None:
    lines = render_long(decode(State, sample_states.running()), 80, NOW_RUNNING)
    names = {line.split()[0] for line in lines if line.strip()}
    assert {name for name, *_ in sample_states.BOOT} <= names
    assert len([line for line in lines if line.startswith("[")]) == 40
    assert all(text_width(line) <= 80 for line in lines)


def test_terminal_frame_repaints_in_place() -> None:
    data = frame(["one", "two—three"], first=False)
    assert data.startswith(b"\x1b[H") and b"\x1b[2J" not in data  # no full clear: no flicker
    assert data == b"\x1b[Hone\x1b[K\r\ntwo-three\x1b[K\x1b[J"  # VT font-safe glyphs
    assert frame(["x"], first=True).startswith(b"\x1b[?25l\x1b[2J\x1b[H")


# --- python -m pid1 status ------------------------------------------------------------------
def run_status(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pid1", "status", *args], cwd=REPO, capture_output=True, text=True, timeout=30
    )


def test_status_prints_the_view(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_text(json.dumps(sample_states.running()))
    done = run_status("--state", str(path), "--rows", "25", "--cols", "80")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 25 and all(len(line) <= 80 for line in lines)
    assert "dockerd: pid 231" in done.stdout
    long = run_status("--state", str(path))  # not a terminal: the long form
    assert long.returncode == 0 and "console     done" in long.stdout


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "cannot read: No such file or directory"),
        (b"", "empty file"),
        (b'{"mode": "running", "phases": {"a": {"sta', "not valid JSON (truncated?)"),
        (b"\xff\xfe garbage", "not UTF-8"),
        (b"[1, 2]", "a JSON list, not a pid1 state object"),
        (b'{"hello": 1}', "without any pid1 state field"),
        (b'{"phases": [1]}', "field 'phases' is a list, expected an object"),
        (b'{"mode": "x", "log": {}}', "field 'log' is a dict, expected a list"),
    ],
)
def test_status_rejects_bad_files_in_one_line(tmp_path: Path, content: bytes | None, expected: str) -> None:
    path = tmp_path / "state.json"
    if content is not None:
        path.write_bytes(content)
    done = run_status("--state", str(path))
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.startswith(f"pid1 status: {path}: ") and expected in done.stderr, done.stderr


def test_status_of_a_half_written_real_state(tmp_path: Path) -> None:
    """Every prefix of a real state.json is either shown or refused cleanly."""
    full = json.dumps(sample_states.running(), indent=1).encode()
    path = tmp_path / "state.json"
    for cut in range(0, len(full), max(len(full) // 7, 1)):
        path.write_bytes(full[:cut])
        done = run_status("--state", str(path))
        assert done.returncode == 2 and "Traceback" not in done.stderr, (cut, done.stderr)


def test_the_shallow_state_json_is_the_whole_state() -> None:
    """to_json() shares values instead of deep-copying (it runs on every
    change); it must still carry every field, as dataclasses.asdict would."""
    import dataclasses

    from pid1.state import ContainerState, LogLine, PhaseState, State

    state = State(pid=1)
    state.phases["a"] = PhaseState(name="a", needs=["b"], required=True, status="done", started=1.0)
    state.containers["console"] = ContainerState(role="console", name="pid1-console", restarts=2)
    state.storage, state.network = {"mode": "ram"}, {"link": "eth0", "dns": ["1.1.1.1"]}
    state.log.append(LogLine(time=1.5, level="info", message="hello"))
    deep = dataclasses.asdict(state)
    deep["log"] = [dataclasses.asdict(line) for line in state.log]
    assert json.loads(json.dumps(state.to_json(), default=str)) == json.loads(json.dumps(deep, default=str))


def test_lease_time_left_from_wall_clock_or_uptime_stamps() -> None:
    wall = decode(NetworkState, sample_states.running()["network"])
    assert "lease 23h55m left of 1d00h" in network_line(wall, NOW_RUNNING, WALL_RUNNING)
    expired = network_line(wall, NOW_RUNNING, WALL_RUNNING + 86400)
    assert "lease of 1d00h expired 4m49s ago" in expired, expired
    # a machine without a real-time clock: `date +%s` counts from 0 at boot
    by_uptime = NetworkState(mode="dhcp", address="10.0.2.15", lease_seconds=600, lease_obtained=100)
    assert "lease 6m40s left of 10m00s" in network_line(by_uptime, 300.0, WALL_RUNNING)
    waiting = decode(NetworkState, {"mode": "dhcp", "link": "eth0", "status": "waiting for a lease"})
    assert network_line(waiting, 1.0, WALL_RUNNING) == "net:     dhcp eth0 waiting for a lease"


def test_a_state_write_that_changes_nothing_draws_nothing(tmp_path: Path) -> None:
    """Some phases call changed() without changing anything shown (a timer
    that finds nothing to do): the view must not redraw for those."""
    from pid1.log import Log
    from pid1.phases.vt2 import LiveView
    from pid1.state import LogLine, State

    state = State(pid=1)
    live = LiveView(log=Log(store=None), status_path=str(tmp_path / "status"))
    live.redraw(state)
    state.updated += 5  # what every write changes
    live.redraw(state)
    assert (live.status_writes, live.unchanged) == (1, 1)
    state.log.append(LogLine(time=1.0, level="info", message="something happened"))
    live.redraw(state)
    state.containers.clear()
    state.dockerd.daemon("dockerd").pid = 5
    live.redraw(state)
    state.dockerd.daemon("dockerd").pid = 6  # nested change, same record
    live.redraw(state)
    assert (live.status_writes, live.unchanged) == (4, 1)
    assert "something happened" in (tmp_path / "status").read_text()


@pytest.mark.parametrize("kind", ["a FIFO", "a directory"])
@pytest.mark.parametrize("command", ["status", "plot"])
def test_a_state_path_that_is_no_file_is_refused_at_once(tmp_path: Path, command: str, kind: str) -> None:
    """A FIFO at --state blocked open() forever (nobody writes it)."""
    path = tmp_path / "state.json"
    if kind == "a FIFO":
        os.mkfifo(path)
    else:
        path.mkdir()
    done = subprocess.run(
        [sys.executable, "-m", "pid1", command, "--state", str(path), "-o", str(tmp_path / "x.svg")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=10,
    )
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert done.stderr == f"pid1 {command}: {path}: not a regular file ({kind}), not a pid1 state\n"


@pytest.mark.parametrize("command", [["status", "--long"], ["plot", "-o", "-"]])
def test_ctrl_c_ends_status_and_plot(tmp_path: Path, command: list[str]) -> None:
    """The init blocks SIGINT (it reads it from a signalfd); the commands must
    not: here each is stuck writing to a full pipe when Ctrl-C comes."""
    state = sample_states.running()
    state["phases"] = {
        f"phase{i:04}": {"name": f"phase{i:04}", "needs": [], "status": "done", "started": 1.0, "ended": 2.0}
        for i in range(3000)
    }
    path = tmp_path / "state.json"
    path.write_text(json.dumps(state))
    read_end, write_end = os.pipe()
    proc = subprocess.Popen([sys.executable, "-m", "pid1", *command, "--state", str(path)], cwd=REPO, stdout=write_end)
    os.close(write_end)
    try:
        deadline = time.monotonic() + 20
        buffered = bytearray(4)
        while time.monotonic() < deadline and proc.poll() is None:
            fcntl.ioctl(read_end, termios.FIONREAD, buffered)
            if int.from_bytes(buffered, sys.byteorder) >= 65536:
                break  # the pipe is full: the command is blocked in write()
            time.sleep(0.02)
        assert proc.poll() is None, f"{command} ended before filling the pipe: {proc.returncode}"
        blocked = int(
            next(
                line for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines() if line.startswith("SigBlk:")
            ).split()[1],
            16,
        )
        assert not blocked & (1 << (signal.SIGINT - 1)), f"SIGINT is blocked: SigBlk {blocked:x}"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(10) == -signal.SIGINT
    finally:
        proc.kill()
        proc.wait()
        os.close(read_end)
