"""The stop when something goes wrong in it (issue 9, 4.11), with pid1 as a
real PID 1 of a namespace: a stop hook that raises what is not an Exception,
a supervisor crash after a stop was requested, emergency mode's own stop, and
a dockerd stop hook whose daemons ignore SIGTERM. Test phases:
tests/namespace/stop_phases.py (with scenario_phases' spawner)."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from devtools.harness import Pid1, wait_for

pytestmark = pytest.mark.namespace

PHASES = "pid1.extra_phases=tests.namespace.scenario_phases,tests.namespace.stop_phases"


def events(tmp_path: Path) -> list[str]:
    try:
        return (tmp_path / "events").read_text().splitlines()
    except OSError:
        return []


def start(pid1_ns, tmp_path: Path, phases: str, stop: str, extra: str = "", **env: str) -> Pid1:
    return pid1_ns(
        f"pid1.phases={phases} pid1.stop_grace=1 {PHASES} {extra}",
        env={"PID1_TEST_OUT": str(tmp_path / "events"), "PID1_TEST_STOP": stop, **env},
    )


@pytest.mark.parametrize("raises", ["hook_cancelled", "hook_exit"])
def test_a_hook_raising_cancelled_or_exit_does_not_end_the_stop(pid1_ns, tmp_path: Path, raises: str) -> None:
    run = start(pid1_ns, tmp_path, "raising_hooks,spawner", raises, PID1_TEST_SPAWN="1")
    run.wait_phase("raising_hooks")
    run.wait_phase("spawner")
    run.kill(signal.SIGPWR)
    assert run.wait_exit(30) == -signal.SIGINT, run.describe()  # powered off, as asked
    seen = events(tmp_path)
    assert "raiser-ran" in seen and "late-hook-ran" in seen, seen  # the hooks after the raiser still ran
    assert "child-got-term" in seen, seen  # and the rest of the orderly stop
    log = run.log()
    assert "stop hook raiser failed: " in log, run.describe()
    assert "supervisor crashed" not in log and "EMERGENCY" not in log, run.describe()
    assert "stopped: poweroff" in log, run.describe()


def test_a_crash_after_a_stop_request_still_carries_it_out(pid1_ns, tmp_path: Path) -> None:
    run = start(pid1_ns, tmp_path, "crash", "crash_after_reboot", PID1_TEST_SPAWN="1")
    # nobody sends a signal: the reboot the supervisor was asked for happens
    assert run.wait_exit(30) == -signal.SIGHUP, run.describe()
    log = run.log()
    assert "supervisor crashed" in log and "carrying out the reboot already requested" in log, run.describe()
    assert "child-got-term" in events(tmp_path), events(tmp_path)


def test_emergency_stop_terms_waits_then_kills_and_unmounts(pid1_ns, tmp_path: Path) -> None:
    target = tmp_path / "mnt"
    target.mkdir()
    run = start(pid1_ns, tmp_path, "crash", "mount,crash", PID1_TEST_SPAWN="1", PID1_TEST_MOUNT=str(target))
    run.wait_state("emergency mode", lambda s: s["mode"] == "emergency" and s)
    wait_for("children ready", lambda: {"trapper-ready", "ignorer-ready"} <= set(events(tmp_path)), 10, run.describe)
    began = time.monotonic()
    run.kill(signal.SIGPWR)
    assert run.wait_exit(30) == -signal.SIGINT, run.describe()
    took = time.monotonic() - began
    seen = events(tmp_path)
    assert "child-got-term" in seen, f"SIGTERM first: the trapping child saw none\n{seen}\n{run.describe()}"
    log = run.log()
    assert "emergency stop: poweroff" in log, run.describe()
    assert "sending SIGTERM to all processes" in log and "sending SIGKILL" in log, run.describe()
    assert took >= 1.0, f"the TERM-ignoring child got {took:.2f} s, less than pid1.stop_grace=1"
    assert f"unmounted {target}" in log, run.describe()


def test_dockerd_hook_fits_the_hook_timeout_with_stubborn_daemons(pid1_ns, tmp_path: Path) -> None:
    """dockerd and containerd ignore SIGTERM and the system containers never
    stop: every step runs to its own timeout, and the hook still ends on its
    own, with containerd stopped, before the supervisor's hook timeout."""
    run = start(pid1_ns, tmp_path, "stubborn_engine", "stubborn_engine")
    run.wait_phase("stubborn_engine")
    began = time.monotonic()
    run.kill(signal.SIGPWR)
    assert run.wait_exit(60) == -signal.SIGINT, run.describe()
    took = time.monotonic() - began
    log = run.log()
    assert "system-containers-stop-began" in events(tmp_path), events(tmp_path)
    assert "dockerd still running" in log and "containerd still running" in log, run.describe()
    assert "containerd stopped in" in log, run.describe()
    assert "stop hook dockerd did not end" not in log and "stop hook dockerd failed" not in log, run.describe()
    assert took < 30, f"the stop took {took:.1f} s\n{run.describe()}"
