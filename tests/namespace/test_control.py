"""The control channel (<state_dir>/control) with pid1 as PID 1 of a
namespace: each command has its effect, bad input is refused in the log and
cannot grow pid1's memory or stall its loop. pid1 runs over a temporary
root (its /dev a private tmpfs), with only the control phase and a test
phase that registers restart actions (tests/namespace/control_phases.py)."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import time
from pathlib import Path

import pytest
from harness import Pid1, Timeout, wait_for

pytestmark = pytest.mark.namespace

PHASES = "pid1.phases=control,fake_restarts pid1.extra_phases=tests.namespace.control_phases pid1.stop_grace=1"


def start(pid1_ns, tmp_path: Path, **env: str) -> Pid1:
    root = tmp_path / "root"
    (root / "dev").mkdir(parents=True)
    wrapper = ["sh", "-c", 'mount -t tmpfs devtest "$0/dev" && exec "$@"', str(root)]
    run = pid1_ns(PHASES, root=str(root), wrapper=wrapper, env={"PID1_TEST_OUT": str(tmp_path / "events"), **env})
    run.wait_phase("control")
    run.wait_phase("fake_restarts")
    return run


def control(run: Pid1) -> Path:
    return run.state_dir / "control"


def events(tmp_path: Path) -> list[str]:
    try:
        return (tmp_path / "events").read_text().splitlines()
    except OSError:
        return []


def send(path: Path, data: bytes, timeout: float = 60) -> None:
    """Write data to the FIFO; fails at once if nobody reads it (ENXIO) and
    after `timeout` if pid1 stops reading."""
    fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
    deadline = time.monotonic() + timeout
    try:
        rest = memoryview(data)
        while rest:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([], [fd], [], left)[1]:
                raise Timeout(f"pid1 stopped reading {path}: {len(rest)} of {len(data)} bytes unsent")
            try:
                rest = rest[os.write(fd, rest) :]
            except BlockingIOError:
                continue
    finally:
        os.close(fd)


def busybox_echo(path: Path, line: str) -> None:
    """What a user types in the console container: busybox's shell, `echo >`."""
    done = subprocess.run(
        ["busybox", "sh", "-c", f'echo "{line}" > "{path}"'], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr


def rss_kib(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("VmRSS:")).split()[1])


def test_the_fifo_is_root_only(pid1_ns, tmp_path: Path) -> None:
    run = start(pid1_ns, tmp_path)
    st = control(run).stat()
    import stat

    assert stat.S_ISFIFO(st.st_mode) and st.st_uid == 0 and stat.S_IMODE(st.st_mode) == 0o600


def test_poweroff_is_an_orderly_stop(pid1_ns, tmp_path: Path) -> None:
    run = start(pid1_ns, tmp_path)
    busybox_echo(control(run), "poweroff")
    assert run.wait_exit(30) == -signal.SIGINT, run.describe()  # the kernel's answer to reboot(POWER_OFF)
    log = run.log()
    assert "control: poweroff" in log and "stop requested: poweroff (control channel)" in log, log
    assert "stop hook: control channel" in log and "stopped: poweroff" in log, log
    assert not control(run).exists()  # removed at stop: a late writer fails instead of hanging


def test_reboot_restarts_the_machine(pid1_ns, tmp_path: Path) -> None:
    run = start(pid1_ns, tmp_path)
    busybox_echo(control(run), "reboot")
    assert run.wait_exit(30) == -signal.SIGHUP, run.describe()
    assert "stop requested: reboot (control channel)" in run.log()


def test_restart_runs_the_registered_action(pid1_ns, tmp_path: Path) -> None:
    run = start(pid1_ns, tmp_path, PID1_TEST_RESTART_DELAY="1")
    busybox_echo(control(run), "restart console")
    wait_for("the console restart action", lambda: "restart console end" in events(tmp_path), 20, run.describe)
    assert events(tmp_path).count("restart console begin") == 1
    # a second request while one runs joins it instead of stacking up
    send(control(run), b"restart console\nrestart console\n")
    run.wait_log("control: restart console already in progress; ignored")
    wait_for("the second restart to end", lambda: events(tmp_path).count("restart console end") == 2, 20, run.describe)
    assert events(tmp_path).count("restart console begin") == 2
    send(control(run), b"  restart   dockerd  \n")  # spacing is forgiven
    wait_for("the dockerd restart action", lambda: "restart dockerd end" in events(tmp_path), 20, run.describe)


def test_restart_that_fails_is_logged(pid1_ns, tmp_path: Path) -> None:
    run = start(pid1_ns, tmp_path, PID1_TEST_RESTART_FAIL="dockerd")
    send(control(run), b"restart dockerd\n")
    run.wait_log("control: restart dockerd failed: RuntimeError('dockerd would not restart')")
    send(control(run), b"restart console\n")  # still serving
    wait_for("the console restart action", lambda: "restart console end" in events(tmp_path), 20, run.describe)


def test_unknown_commands_are_logged_and_ignored(pid1_ns, tmp_path: Path) -> None:
    run = start(pid1_ns, tmp_path)
    send(control(run), b"frobnicate\nrestart dom0\nrestart kernel\nPOWEROFF\n\nreboot now\n")
    run.wait_log(
        "control: unknown command 'frobnicate' ignored; expected poweroff, reboot or restart console|dom0|dockerd"
    )
    run.wait_log("control: restart dom0: nothing registered to restart it (is its phase running?)")
    run.wait_log("control: restart 'kernel': unknown; expected one of console, dom0, dockerd")
    run.wait_log("control: unknown command 'POWEROFF' ignored")
    run.wait_log("control: unknown command 'reboot now' ignored")
    state = run.wait_state("still running", lambda s: s["mode"] == "running" and s)
    assert state["stop_reason"] is None
    assert events(tmp_path) == []
    send(control(run), b"restart console\n")  # and the channel still works
    wait_for("the console restart action", lambda: "restart console end" in events(tmp_path), 20, run.describe)


def test_huge_lines_and_floods_cost_bounded_memory(pid1_ns, tmp_path: Path) -> None:
    run = start(pid1_ns, tmp_path)
    send(control(run), b"x" * 100 + b"\n")  # warm up the code paths before measuring
    run.wait_log("control: unknown command 'xxxxxxxx")
    before = rss_kib(run.pid)

    started = time.monotonic()
    send(control(run), b"y" * (1 << 20) + b"\n")  # 1 MiB without a newline
    send(control(run), b"z" * (32 << 20) + b"\n")  # 32 MiB: would show in RSS if buffered
    flood = b"".join(b"frobnicate %d\n" % i if i % 3 else b"\xff\xfe\x00 binary\n" for i in range(10_000))
    send(control(run), flood)
    send(control(run), b"restart console\n")
    wait_for("the command after the flood", lambda: "restart console end" in events(tmp_path), 30, run.describe)
    took = time.monotonic() - started
    after = rss_kib(run.pid)

    assert after - before < 4096, f"RSS grew from {before} to {after} KiB"
    log = run.log()
    assert log.count("control: line longer than 4096 bytes ignored") == 2, log[-3000:]
    # 10,000 bad lines make a bounded number of log lines, and say how many were held back
    assert log.count("control: unknown command") <= 30, log[-3000:]
    run.wait_log("more bad control lines ignored (messages rate-limited)", timeout=15)
    assert took < 20, f"pid1 took {took:.1f} s to take 33 MiB and 10,000 lines"
    assert run.state()["mode"] == "running"


def test_a_writer_with_no_pid1_fails_at_once(tmp_path: Path) -> None:
    """Negative control for the FIFO above: with no reader, the open fails
    (ENXIO, non-blocking), so the tests above really talk to pid1."""
    path = tmp_path / "control"
    os.mkfifo(path, 0o600)
    with pytest.raises(OSError) as caught:
        send(path, b"poweroff\n")
    assert caught.value.errno == 6  # ENXIO


def test_floods_of_valid_commands_are_coalesced(pid1_ns, tmp_path: Path) -> None:
    run = start(pid1_ns, tmp_path, PID1_TEST_RESTART_DELAY="2")
    send(control(run), b"restart console\n" * 5000)
    wait_for("the one restart", lambda: "restart console end" in events(tmp_path), 20, run.describe)
    assert events(tmp_path).count("restart console begin") <= 2, events(tmp_path)  # 5000 asked, one ran (+1 late)
    run.wait_log("more repeated control commands ignored (messages rate-limited)", timeout=15)
    assert run.log().count("already in progress; ignored") <= 20
    send(control(run), b"poweroff\n" * 5000)
    assert run.wait_exit(30) == -signal.SIGINT, run.describe()
    log = run.log()
    assert log.count("stop requested: poweroff") == 1, log[-3000:]
    assert log.count("poweroff already requested; ignored") <= 20, log[-3000:]


def test_no_restart_starts_once_a_stop_is_requested(pid1_ns, tmp_path: Path) -> None:
    run = start(pid1_ns, tmp_path)
    send(control(run), b"poweroff\nrestart console\n")
    assert run.wait_exit(30) == -signal.SIGINT, run.describe()
    assert "control: restart 'console' ignored: pid1 is stopping" in run.log(), run.log()[-3000:]
    assert events(tmp_path) == []
