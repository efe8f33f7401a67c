"""pid1 as a real PID 1 of a fresh PID + mount namespace: reaping, clean
children, the orderly stop, failing phases. Only test-safe phases run (the
scenario phases), so nothing on the host is touched."""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path

import pytest

from devtools.harness import REPO, Pid1, namespace_processes, wait_for

pytestmark = pytest.mark.namespace

SCENARIO = "pid1.extra_phases=tests.namespace.scenario_phases"
STORM = str(REPO / "tests/namespace/orphan_storm.py")


def zombies(run: Pid1) -> list[dict[str, str]]:
    return [p for p in namespace_processes(run.pid) if p.get("State", "").startswith("Z")]


def run_storm(run: Pid1, count: int) -> None:
    done = run.nsenter([sys.executable, STORM, str(count)], timeout=120)
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) == count


def scenario_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {"PID1_TEST_OUT": str(tmp_path / "events"), **extra}


def events(tmp_path: Path) -> list[str]:
    try:
        return (tmp_path / "events").read_text().splitlines()
    except OSError:
        return []


def test_orphan_storm_is_reaped(pid1_ns, tmp_path: Path) -> None:
    run = pid1_ns(f"pid1.phases=spawner {SCENARIO}", env=scenario_env(tmp_path))
    run.wait_phase("spawner")
    run_storm(run, 10_000)
    wait_for("no zombie left in the namespace", lambda: not zombies(run), 30, run.describe)
    state = run.wait_state("reaper counters", lambda s: s["reaper"].get("orphans_reaped", 0) >= 10_000 and s)
    assert state["mode"] == "running"


def test_storm_leaves_zombies_without_a_reaper(pid1_ns, tmp_path: Path) -> None:
    """Negative control: the same storm under a PID 1 that never waits (sleep)
    leaves zombies, so the test above can fail."""
    run = pid1_ns("", program=["sleep", "1000"])
    run_storm(run, 200)
    left = wait_for("zombies to show up", lambda: len(zombies(run)) >= 200 and zombies(run), 10, run.describe)
    assert len(left) >= 200


def test_children_start_with_clean_signal_state(pid1_ns, tmp_path: Path) -> None:
    run = pid1_ns(f"pid1.phases=spawner {SCENARIO}", env=scenario_env(tmp_path, PID1_TEST_SPAWN="1"))
    state = run.wait_phase("spawner")
    sleeper = state["phases"]["spawner"]["detail"].split("=")[1]
    status = run.nsenter(["cat", f"/proc/{sleeper}/status"]).stdout.decode()
    fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
    assert int(fields["SigBlk"], 16) == 0, status
    assert int(fields["SigIgn"], 16) == 0, status
    # its own session, and no pid1 fd beyond 0-2
    stat = run.nsenter(["cat", f"/proc/{sleeper}/stat"]).stdout.decode()
    session = int(stat[stat.rindex(")") + 2 :].split()[3])
    assert session == int(sleeper), stat
    fds = run.nsenter(["ls", f"/proc/{sleeper}/fd"]).stdout.decode().split()
    assert sorted(fds, key=int) == ["0", "1", "2"], fds
    # spawn(nice=7) lowers that child's priority, and only that child's
    spawned = next(e for e in events(tmp_path) if e.startswith("spawned "))
    niced = dict(word.split("=") for word in spawned.split()[1:])["niced"]

    def nice_of(pid: str) -> int:
        stat = run.nsenter(["cat", f"/proc/{pid}/stat"]).stdout.decode()
        return int(stat[stat.rindex(")") + 2 :].split()[16])

    assert (nice_of(niced), nice_of(sleeper)) == (7, 0)
    # pid1 itself does block those signals: the reset above is real work
    pid1_status = Path(f"/proc/{run.pid}/status").read_text()
    assert int(dict(line.split(":\t") for line in pid1_status.splitlines() if ":\t" in line)["SigBlk"], 16) != 0


def test_sigterm_runs_the_orderly_stop(pid1_ns, tmp_path: Path) -> None:
    run = pid1_ns(f"pid1.phases=spawner pid1.stop_grace=1 {SCENARIO}", env=scenario_env(tmp_path, PID1_TEST_SPAWN="1"))
    run.wait_phase("spawner")
    wait_for("children ready", lambda: {"trapper-ready", "ignorer-ready"} <= set(events(tmp_path)), 10, run.describe)
    started = time.monotonic()
    run.kill(signal.SIGTERM)
    rc = run.wait_exit(30)
    took = time.monotonic() - started
    # SIGTERM ends in a reboot (busybox `reboot` sends it); in a PID namespace,
    # reboot(RESTART) ends the namespace's init with SIGHUP.
    assert rc == -signal.SIGHUP, f"unshare returned {rc}\n{run.describe()}"
    seen = events(tmp_path)
    hooks = [e for e in seen if e.startswith("hook-")]
    assert hooks == ["hook-second-registered", "hook-first-registered"], seen
    assert seen.index("hook-first-registered") < seen.index("child-got-term"), seen
    log = run.log()
    assert "sending SIGTERM to all processes" in log
    assert "sending SIGKILL" in log, "the TERM-ignoring child must need SIGKILL\n" + log
    assert 1.0 <= took < 10, took
    assert "stop requested: reboot (signal SIGTERM)" in log and "stopped: reboot" in log


def test_failing_phase_keeps_pid1_alive_and_reaping(pid1_ns, tmp_path: Path) -> None:
    run = pid1_ns(f"pid1.phases=after_boom,spawner {SCENARIO}", env=scenario_env(tmp_path, PID1_TEST_RAISE="optional"))
    state = run.wait_phase("boom", "failed")
    assert "scenario phase failed on purpose" in state["phases"]["boom"]["error"]
    run.wait_phase("after_boom")  # an optional phase's dependents go on
    run_storm(run, 500)
    wait_for("no zombie after the failure", lambda: not zombies(run), 20, run.describe)


def test_failing_required_phase_is_retried(pid1_ns, tmp_path: Path) -> None:
    run = pid1_ns(f"pid1.phases=after_boom {SCENARIO}", env=scenario_env(tmp_path, PID1_TEST_RAISE="required"))
    state = run.wait_state("boom retried", lambda s: s["phases"].get("boom", {}).get("attempts", 0) >= 2 and s, 10)
    assert state["phases"]["boom"]["status"] in ("retrying", "running")
    assert state["phases"]["after_boom"]["status"] == "pending"  # waits for a required need
    assert "after-raise ran" not in events(tmp_path)
    run_storm(run, 200)
    wait_for("no zombie while retrying", lambda: not zombies(run), 20, run.describe)
    run.kill(signal.SIGTERM)
    assert run.wait_exit(30) == -signal.SIGHUP


def test_second_sigterm_does_not_restart_the_stop(pid1_ns, tmp_path: Path) -> None:
    run = pid1_ns(
        f"pid1.phases=spawner pid1.stop_grace=1 {SCENARIO}",
        env=scenario_env(tmp_path, PID1_TEST_SPAWN="1", PID1_TEST_SLOW_HOOK="1"),
    )
    run.wait_phase("spawner")
    run.kill(signal.SIGUSR2)  # busybox `poweroff`
    wait_for("the slow hook to start", lambda: "hook-second-registered" in events(tmp_path), 10, run.describe)
    run.kill(signal.SIGTERM)  # busybox `reboot`
    run.kill(signal.SIGINT)
    assert run.wait_exit(30) == -signal.SIGINT  # power off, as the first request said
    seen = events(tmp_path)
    assert seen.count("hook-second-registered") == 1 and seen.count("hook-first-registered") == 1, seen
    assert run.log().count("already stopping") == 2


# The README's signal table. In a PID namespace reboot(2) ends its init with
# SIGHUP for RESTART and SIGINT for POWER_OFF and HALT.
SIGNAL_MAP = [
    (signal.SIGTERM, "reboot", signal.SIGHUP),  # busybox `reboot`
    (signal.SIGINT, "reboot", signal.SIGHUP),  # Ctrl-Alt-Del
    (signal.SIGUSR2, "poweroff", signal.SIGINT),  # busybox `poweroff`
    (signal.SIGPWR, "poweroff", signal.SIGINT),
    (signal.SIGUSR1, "halt", signal.SIGINT),  # busybox `halt`
]


@pytest.mark.parametrize(("signo", "action", "ended_by"), SIGNAL_MAP, ids=lambda v: getattr(v, "name", v))
def test_each_stop_signal_stops_in_order_and_ends_as_it_says(
    pid1_ns, tmp_path: Path, signo: int, action: str, ended_by: int
) -> None:
    run = pid1_ns(f"pid1.phases=spawner {SCENARIO}", env=scenario_env(tmp_path, PID1_TEST_SPAWN="1"))
    run.wait_phase("spawner")
    wait_for("children ready", lambda: "trapper-ready" in events(tmp_path), 10, run.describe)
    run.kill(signo)
    assert run.wait_exit(30) == -ended_by, run.describe()
    log = run.log()
    name = signal.Signals(signo).name
    assert f"stop requested: {action} (signal {name})" in log and f"stopped: {action}" in log, run.describe()
    assert "hook-first-registered" in events(tmp_path) and "child-got-term" in events(tmp_path), run.describe()


def test_sighup_logs_the_state_and_does_not_stop(pid1_ns, tmp_path: Path) -> None:
    run = pid1_ns(f"pid1.phases=spawner {SCENARIO}", env=scenario_env(tmp_path))
    run.wait_phase("spawner")
    run.kill(signal.SIGHUP)
    run.wait_log("state: mode=running phases: spawner=done")
    assert run.state()["mode"] == "running" and run.proc.poll() is None, run.describe()
    assert "stop requested" not in run.log(), run.describe()


def test_supervisor_crash_leads_to_emergency_mode(pid1_ns, tmp_path: Path) -> None:
    # pid1.console=none: the emergency shells must not open the host's terminals
    run = pid1_ns(f"pid1.phases=crash pid1.console=none {SCENARIO}", env=scenario_env(tmp_path, PID1_TEST_CRASH="1"))
    state = run.wait_state("emergency mode", lambda s: s["mode"] == "emergency" and s)
    assert "supervisor crash" in state["emergency_reason"]
    assert run.proc.poll() is None, "PID 1 must not exit"
    run_storm(run, 300)
    wait_for("no zombie in emergency mode", lambda: not zombies(run), 20, run.describe)
    run.kill(signal.SIGTERM)
    assert run.wait_exit(30) == -signal.SIGHUP  # a reboot, as SIGTERM asks, from emergency mode too
