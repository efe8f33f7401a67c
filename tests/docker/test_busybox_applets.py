"""`halt`, `poweroff` and `reboot` as a user types them: Debian's busybox
applets, run in a busybox container with `--pid host` on pid1's own engine.
In this tier pid1 is PID 1 of a namespace and dockerd runs in it, so the
container's "host" PID namespace is pid1's and the applet's kill(1, ...)
reaches pid1 (busybox has no telinit: halt SIGUSR1, poweroff SIGUSR2,
reboot SIGTERM). Each must run the whole orderly stop and end as it says;
the namespace's init then ends as reboot(2) makes it: SIGHUP for RESTART,
SIGINT for POWER_OFF and HALT."""

from __future__ import annotations

import signal

import pytest
from conftest import System

pytestmark = [pytest.mark.docker, pytest.mark.namespace]

BOOT_TIMEOUT = 120

APPLETS = [
    ("halt", "SIGUSR1", signal.SIGINT),
    ("poweroff", "SIGUSR2", signal.SIGINT),
    ("reboot", "SIGTERM", signal.SIGHUP),
]


def booted(system: System) -> None:
    system.run.wait_phase("console", timeout=BOOT_TIMEOUT)
    system.run.wait_phase("dom0", timeout=30)
    system.wait_running("console")
    system.wait_running("dom0")


@pytest.mark.parametrize(("applet", "sent", "ended_by"), APPLETS, ids=[a[0] for a in APPLETS])
def test_applet_from_a_pid_host_container_stops_and_ends_as_it_says(
    start_system, applet: str, sent: str, ended_by: int
) -> None:
    system = start_system()
    booted(system)
    # The engine stops under the client: its exit status is not the point.
    system.docker("run", "--rm", "--pid", "host", "busybox:latest", applet, check=False, timeout=60)
    code = system.run.wait_exit(60)
    assert code == -ended_by, f"the namespace's init ended with {code}, not -{ended_by.name}\n{system.describe()}"
    log = system.run.log()
    for line in (
        f"stop requested: {applet} (signal {sent})",
        f"stopping: {applet} (signal {sent})",
        "console: stopped in",
        "dom0: stopped in",
        "dockerd stopped in",
        "containerd stopped in",
        f"stopped: {applet}",
    ):
        assert line in log, f"{line!r} missing\n{system.describe()}"
    assert (system.run.state() or {}).get("stop_reason") == f"{applet} (signal {sent})", system.describe()
