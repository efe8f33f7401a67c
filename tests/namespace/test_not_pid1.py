"""pid1 started as an ordinary process (development): a child subreaper that
reaps what its children orphan and exits 0 at the end; and its log reaches
/dev/kmsg with the right syslog level."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from devtools.harness import REPO, wait_for

ENV = {**os.environ, "PYTHONPATH": str(REPO)}


def read_state(state: Path) -> dict:
    try:
        return json.loads((state / "state.json").read_text())
    except (OSError, ValueError):
        return {}


def test_subreaper_reaps_orphans_and_exits_zero(tmp_path: Path) -> None:
    state = tmp_path / "state"
    cmdline = f"pid1.phases=spawner pid1.extra_phases=tests.namespace.scenario_phases pid1.state_dir={state}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "pid1", "--cmdline", cmdline],
        env={**ENV, "PID1_TEST_ORPHANS": "300", "PID1_TEST_OUT": str(tmp_path / "events")},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for(
            "300 orphans reaped by the subreaper",
            lambda: read_state(state).get("reaper", {}).get("orphans_reaped", 0) >= 300,
            30,
            lambda: json.dumps(read_state(state).get("reaper")),
        )
        assert read_state(state)["phases"]["spawner"]["detail"] == "orphan maker exited 0"
        assert Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text() == ""
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0, out.decode()
    assert b"not PID 1, exiting" in out


def drain_kmsg(fd: int, into: list[str]) -> None:
    while True:
        try:
            into.append(os.read(fd, 8192).decode(errors="replace"))
        except BlockingIOError:
            return


def test_log_lines_reach_kmsg_with_their_level(tmp_path: Path) -> None:
    if not os.access("/dev/kmsg", os.R_OK | os.W_OK):
        pytest.skip("no readable /dev/kmsg here")
    marker = f"kmsgtest{os.getpid()}"
    kmsg = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
    os.lseek(kmsg, 0, os.SEEK_END)
    records: list[str] = []
    child = subprocess.Popen(
        [sys.executable, "-m", "pid1", "--cmdline", f"pid1.phases=none pid1.{marker}=1 pid1.state_dir={tmp_path}"],
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:

        def seen() -> bool:
            drain_kmsg(kmsg, records)
            return any(marker in r for r in records)

        wait_for("the warning on /dev/kmsg", seen, 10, lambda: "".join(records)[-2000:])
    finally:
        child.send_signal(signal.SIGTERM)
        child.wait(20)
        os.close(kmsg)
    line = next(r for r in records if marker in r)
    # a /dev/kmsg record reads back as "PRIO,SEQ,TIME,FLAGS;MESSAGE"; warning is 4
    assert int(line.split(",", 1)[0]) & 7 == 4, line
    assert f"pid1: unknown kernel command line key 'pid1.{marker}=1'" in line
