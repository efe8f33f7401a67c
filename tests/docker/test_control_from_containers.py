"""The control channel and the status file as a user meets them: from a shell
in dom0 (busybox), through the /run/pid1 pid1 binds into its system
containers, with pid1 running a real dockerd as PID 1 of a namespace (see
conftest.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from conftest import System, run_key

from devtools.harness import REPO

pytestmark = [pytest.mark.docker, pytest.mark.namespace]

BOOT_TIMEOUT = 120
PHASES = "console,dom0,control,vt2"
# root is / in the docker tests: the default view terminal would be the host's tty2
NO_VT = "pid1.view_tty=none"


def booted(system: System) -> None:
    system.run.wait_phase("console", timeout=BOOT_TIMEOUT)
    system.run.wait_phase("dom0", timeout=30)
    system.run.wait_phase("control", timeout=30)
    state = system.run.wait_phase("vt2", timeout=30)
    assert state["phases"]["vt2"]["detail"].startswith("pid1.view_tty=none: no terminal view"), state["phases"]
    system.wait_running("console")
    system.wait_running("dom0")


def dom0_sh(system: System, script: str) -> str:
    return system.docker("exec", "dom0", "sh", "-c", script)


def plot_boot(system: System, out: Path) -> ET.Element:
    """The boot timeline of this run, as `python -m pid1 plot` draws it; also
    kept in $PID1_ARTIFACTS_DIR when that is set."""
    done = subprocess.run(
        [sys.executable, "-m", "pid1", "plot", "--state", str(system.run.state_dir / "state.json"), "-o", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    keep = os.environ.get("PID1_ARTIFACTS_DIR")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        (Path(keep) / "boot-namespace-docker.svg").write_bytes(out.read_bytes())
    return ET.parse(out).getroot()


def test_restart_console_from_dom0_makes_a_new_console(start_system, tmp_path: Path) -> None:
    system = start_system(NO_VT, phases=PHASES)
    booted(system)
    svg = plot_boot(system, tmp_path / "boot.svg")
    drawn = {rect.get("data-phase") for rect in svg.iter("{http://www.w3.org/2000/svg}rect")} - {None}
    assert {"dockerd", "images", "dom0", "console", "control", "vt2"} <= drawn, drawn
    before = system.inspect("console")
    dom0_sh(system, "echo restart console > /run/pid1/control")
    after = system.wait_running("console", timeout=60, other_than=run_key(before))
    assert after["Id"] != before["Id"], system.describe()  # removed and created afresh
    system.wait(
        "the new console in pid1's state", lambda: system.container_state("console").get("container_id") == after["Id"]
    )
    log = system.run.log()
    assert "control: restart console" in log and "console: restart requested" in log, system.describe()
    # dom0 was left alone
    assert system.inspect("dom0")["State"]["Running"]
    # the status file, read with busybox cat inside dom0, shows the new console
    system.wait(
        "the status file to show the new console",
        lambda: after["Id"][:12] in dom0_sh(system, "cat /run/pid1/status"),
    )
    status = dom0_sh(system, "cat /run/pid1/status")
    assert status.startswith("only-docker pid1 · up "), status
    assert any(line.split()[:2] == ["console", "running"] for line in status.splitlines()), status
    assert any(line.split()[:2] == ["dom0", "running"] for line in status.splitlines()), status


def test_unknown_command_from_dom0_is_logged_and_poweroff_stops(start_system) -> None:
    system = start_system(NO_VT, phases=PHASES)
    booted(system)
    dom0_sh(system, "echo 'restart everything' > /run/pid1/control")
    system.run.wait_log("control: restart 'everything': unknown; expected one of console, dom0, dockerd")
    assert system.run.state()["mode"] == "running"
    dom0_sh(system, "echo poweroff > /run/pid1/control")
    assert system.run.wait_exit(60) == -signal.SIGINT, system.describe()
    log = system.run.log()
    assert "stop requested: poweroff (control channel)" in log, log
