"""The control channel (<state_dir>/control) with pid1 as PID 1 of a
namespace: each command has its effect, bad input is refused in the log and
cannot grow pid1's memory or stall its loop. pid1 runs over a temporary
root (its /dev a private tmpfs), with only the control phase and a test
phase that registers restart actions (tests/namespace/control_phases.py)."""

from __future__ import annotations

import os
import select
import signal
import stat
import subprocess
import time
from pathlib import Path

import pytest

from devtools.harness import Pid1, Timeout, tmpfs_dev_wrapper, wait_for

pytestmark = pytest.mark.namespace

PHASES = "pid1.phases=control,fake_restarts pid1.extra_phases=tests.namespace.control_phases pid1.stop_grace=1"


def start(pid1_ns, tmp_path: Path, state_dir: Path | None = None, **env: str) -> Pid1:
    """pid1 over tmp_path/root; state_dir: another than the run's own (then
    the run's wait_* helpers do not see its state: wait on the log)."""
    root = tmp_path / "root"
    cmdline = PHASES + (f" pid1.state_dir={state_dir}" if state_dir else "")
    env = {"PID1_TEST_OUT": str(tmp_path / "events"), **env}
    run = pid1_ns(cmdline, root=str(root), wrapper=tmpfs_dev_wrapper(root), env=env)
    if state_dir:
        run.wait_log("phase control done")
        run.wait_log("phase fake_restarts done")
    else:
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
    assert stat.S_ISFIFO(st.st_mode) and st.st_uid == 0 and stat.S_IMODE(st.st_mode) == 0o600


def test_poweroff_is_an_orderly_stop(pid1_ns, tmp_path: Path) -> None:
    run = start(pid1_ns, tmp_path)
    busybox_echo(control(run), "poweroff")
    assert run.wait_exit(30) == -signal.SIGINT, run.describe()  # the kernel's answer to reboot(POWER_OFF)
    log = run.log()
    assert "control: poweroff" in log and "stop requested: poweroff (control channel)" in log, log
    assert "stop hook: control channel" in log and "stopped: poweroff" in log, log
    assert_a_late_writer_fails(control(run))


def assert_a_late_writer_fails(path: Path) -> None:
    """After the stop a writer fails at once: it neither blocks on a FIFO
    nobody reads nor makes a regular file nobody reads."""
    late = subprocess.run(
        ["busybox", "sh", "-c", f'echo poweroff > "{path}"'], capture_output=True, text=True, timeout=10
    )
    assert late.returncode != 0 and "Is a directory" in late.stderr, late
    assert path.is_dir() and not any(path.iterdir())


def test_a_command_without_newline_stands_alone(pid1_ns, tmp_path: Path) -> None:
    """The end of a writer (EOF) ends its line: `printf poweroff` is not
    glued to the next writer's line."""
    run = start(pid1_ns, tmp_path)
    send(control(run), b"restart console")
    wait_for("the console restart action", lambda: "restart console end" in events(tmp_path), 20, run.describe)
    send(control(run), b"restart dockerd")
    wait_for("the dockerd restart action", lambda: "restart dockerd end" in events(tmp_path), 20, run.describe)
    done = subprocess.run(["busybox", "sh", "-c", f'printf poweroff > "{control(run)}"'], timeout=30)
    assert done.returncode == 0
    assert run.wait_exit(30) == -signal.SIGINT, run.describe()
    assert "control: unknown command" not in run.log(), run.log()[-3000:]


def test_an_unterminated_huge_line_ends_with_its_writer(pid1_ns, tmp_path: Path) -> None:
    """A writer's line over 4 KiB without a newline is dropped when that
    writer closes; it does not swallow the next writer's command."""
    run = start(pid1_ns, tmp_path)
    send(control(run), b"x" * 10_000)
    run.wait_log("control: line longer than 4096 bytes ignored")
    busybox_echo(control(run), "poweroff")
    assert run.wait_exit(30) == -signal.SIGINT, run.describe()


def test_the_fifo_comes_back_after_a_stop(pid1_ns, tmp_path: Path) -> None:
    """The placeholder a stop leaves is replaced by the next pid1's FIFO (a
    pid1 that is not PID 1, or a state dir that outlived a reboot)."""
    first = start(pid1_ns, tmp_path)
    send(control(first), b"poweroff\n")
    assert first.wait_exit(30) == -signal.SIGINT, first.describe()
    assert control(first).is_dir()
    second = start(pid1_ns, tmp_path, state_dir=first.state_dir)
    assert stat.S_ISFIFO(control(first).lstat().st_mode)
    send(control(first), b"poweroff\n")
    assert second.wait_exit(30) == -signal.SIGINT, second.describe()


def test_a_symlink_at_the_fifo_path_is_not_followed(pid1_ns, tmp_path: Path) -> None:
    """A container that can write the state dir plants a symlink where the
    FIFO goes: pid1 replaces the link and leaves its target alone."""
    state_dir = tmp_path / "shared-state"
    state_dir.mkdir()
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    os.chmod(victim, 0o644)
    os.symlink(victim, state_dir / "control")
    start(pid1_ns, tmp_path, state_dir=state_dir)
    assert stat.S_ISFIFO((state_dir / "control").lstat().st_mode)
    assert victim.read_text() == "precious\n" and stat.S_IMODE(victim.stat().st_mode) == 0o644


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


def cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def test_writers_coming_and_going_leave_pid1_idle(pid1_ns, tmp_path: Path) -> None:
    """pid1 holds no write end (so it sees each writer's EOF); the hang-up
    that follows must not spin the loop: not after one writer, nor after
    writers racing each other's open and close."""
    run = start(pid1_ns, tmp_path)
    busybox_echo(control(run), "restart console")
    wait_for("the console restart action", lambda: "restart console end" in events(tmp_path), 20, run.describe)
    racers = [
        subprocess.Popen(
            [
                "busybox",
                "sh",
                "-c",
                f'i=0; while [ $i -lt 300 ]; do echo "bogus $i" > "{control(run)}"; i=$((i+1)); done',
            ]
        )
        for _ in range(4)
    ]
    for racer in racers:
        assert racer.wait(60) == 0
    run.wait_log("more bad control lines ignored (messages rate-limited)", timeout=15)
    before = cpu_ticks(run.pid)
    time.sleep(1.0)  # a measurement window, not a wait for a condition
    spent = cpu_ticks(run.pid) - before
    assert spent <= 10, f"pid1 used {spent} ticks of CPU in 1 s with no writer (a POLLHUP busy loop?)"
    busybox_echo(control(run), "poweroff")
    assert run.wait_exit(30) == -signal.SIGINT, run.describe()
