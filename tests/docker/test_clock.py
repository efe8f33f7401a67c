"""The clock against real parts: pid1 as PID 1 in a network namespace the
test makes (a veth to a second namespace), its own dockerd, and the `ntp`
system container running pid1's SNTP client against devtools/sntp_server.py,
which serves this machine's time plus 10 minutes from the other namespace.

The clock is not namespaced: a container with CAP_SYS_TIME here would set
the host's clock. So these run pid1.ntp=query (the client measures, never
sets; the container gets no CAP_SYS_TIME, and noop_host_phases refuses any
other mode), and each test checks that the host's wall clock kept pace with
CLOCK_MONOTONIC. Setting the clock for real is the VM test's
(tests/vm/test_first_boot_vm.py).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from test_network import netpair  # noqa: F401 (the fixture)

from devtools.engine import docker_available, engine_cmdline
from devtools.harness import Pid1, wait_for
from devtools.netns import NetPair

pytestmark = [pytest.mark.docker]

OFFSET = 600.0  # the test server's clock is 10 minutes ahead


class HostClock:
    """The host's wall clock against CLOCK_MONOTONIC: a step of either
    shows as a difference between their deltas."""

    def __init__(self) -> None:
        self.wall, self.mono = time.time(), time.monotonic()

    def drift(self) -> float:
        return (time.time() - self.wall) - (time.monotonic() - self.mono)


@pytest.fixture
def host_clock() -> Iterator[HostClock]:
    clock = HostClock()
    yield clock
    assert abs(clock.drift()) < 0.5, f"the host's wall clock moved by {clock.drift():+.3f} s against CLOCK_MONOTONIC"


@pytest.fixture
def sntp_server(netpair: NetPair) -> Iterator[Callable[[], subprocess.Popen]]:  # noqa: F811
    started: list[subprocess.Popen] = []

    def start() -> subprocess.Popen:
        argv = ["ip", "netns", "exec", netpair.server, sys.executable, "-m", "devtools.sntp_server"]
        proc = subprocess.Popen([*argv, netpair.server_ip, str(OFFSET)], stdout=subprocess.PIPE, text=True)
        assert "sntp_server:" in proc.stdout.readline(), "the test SNTP server did not start"
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.terminate()
        proc.wait(5)


@pytest.fixture
def start_clocked(pid1_ns, bundled_images_dir: Path) -> Iterator[Callable[..., Pid1]]:
    """start_clocked(pair, phases, extra) -> pid1 in pair.client with a static
    address, the real network and ntp phases, pid1.ntp=query."""
    why = docker_available()
    if why:
        pytest.skip(why)
    runs: list[Pid1] = []

    def start(pair: NetPair, phases: str = "ntp,vt2", extra: str = "") -> Pid1:
        workdir = Path(subprocess.check_output(["mktemp", "-d", "/var/tmp/p1t-XXXXXX"], text=True).strip())
        root = workdir / "root"
        (root / "etc").mkdir(parents=True)
        (root / "etc" / "resolv.conf").write_text("# no DNS in this test\n")
        net = f"pid1.net=static:{pair.subnet}.7/24,{pair.server_ip}"
        extra = f"{net} pid1.ntp=query pid1.view_tty=none {extra}"
        cmdline = engine_cmdline(phases, workdir, bundled_images_dir, extra)
        run = pid1_ns(
            cmdline,
            root=str(root),
            env={"PID1_TEST_REAL_NETWORK": "1", "PID1_TEST_REAL_NTP": "1"},
            prefix=["nsenter", f"--net=/run/netns/{pair.client}", "--"],
        )
        run.docker_socket = workdir / "d.sock"  # type: ignore[attr-defined]
        describe = run.describe
        run.describe = lambda: f"{describe()}\n{ntp_logs(run)}"  # type: ignore[method-assign]
        run.workdir_engine = workdir  # type: ignore[attr-defined]
        runs.append(run)
        return run

    yield start
    for run in runs:
        run.stop()
        subprocess.run(["rm", "-rf", str(run.workdir_engine)], check=False)  # type: ignore[attr-defined]


def ntp_logs(run: Pid1) -> str:
    done = subprocess.run(["docker", "-H", f"unix://{run.docker_socket}", "logs", "--tail", "20", "ntp"],
                          capture_output=True, text=True, timeout=30)  # fmt: skip
    return f"--- docker logs ntp ---\n{done.stdout}{done.stderr}"


def inspect(run: Pid1, name: str) -> dict:
    out = subprocess.run(
        ["docker", "-H", f"unix://{run.docker_socket}", "inspect", name], capture_output=True, text=True, timeout=30
    ).stdout
    return json.loads(out or "[{}]")[0]


def test_ntp_container_measures_a_clock_ten_minutes_off_without_setting_it(
    netpair: NetPair,  # noqa: F811
    sntp_server,
    start_clocked,
    host_clock: HostClock,
) -> None:
    server = sntp_server()
    run = start_clocked(netpair, extra=f"pid1.ntp_servers={netpair.server_ip}")
    state = run.wait_state("the clock measured", lambda s: s.get("clock", {}).get("status") == "synced" and s, 120)
    clock = state["clock"]
    seen = f"{run.describe()}\n--- clock ---\n{json.dumps(clock, indent=1)}"
    print(f"clock: {json.dumps(clock)}")
    assert clock["mode"] == "query" and clock["source"] == "pid1.ntp_servers", seen
    assert clock["server"] == netpair.server_ip and clock["address"] == netpair.server_ip, seen
    assert abs(clock["offset"] - OFFSET) < 1.0, seen
    assert clock["stratum"] == 2 and clock["steps"] == 0 and clock["last_step"] is None, seen
    ip = netpair.server_ip
    run.wait_log(f" s off {ip} ({ip}); pid1.ntp=query: not set", timeout=5)  # a warning: more than a minute
    # 600 s off is not a right clock: no milestone for whoever waits on it.
    assert "clock synced" not in state["milestones"], seen
    # The container: not privileged, no CAP_SYS_TIME in query mode, host network, own PID namespace.
    info = inspect(run, "ntp")
    host = info["HostConfig"]
    assert host["Privileged"] is False and not host.get("CapAdd"), host
    assert host["NetworkMode"] == "host" and host["PidMode"] in ("", None), host
    assert server.poll() is None, "the test SNTP server died"
    # The VT2 line says it.
    path, line = run.state_dir / "status", f"clock:   query only, not set · {ip} · offset +"
    status = wait_for(
        "the status file's clock line",
        lambda: path.exists() and line in (text := path.read_text()) and text,
        10,
        run.describe,
    )
    shown = status.split(line, 1)[1]
    assert abs(float(shown.split("s", 1)[0]) - OFFSET) < 1.0, status


def test_no_server_reachable_says_unsynced_and_the_boot_goes_on(
    netpair: NetPair,  # noqa: F811
    start_clocked,
    host_clock: HostClock,
) -> None:
    run = start_clocked(netpair, phases="ntp,vt2,console", extra=f"pid1.ntp_servers={netpair.server_ip}")
    state = run.wait_state("unsynced", lambda s: s.get("clock", {}).get("status") == "unsynced" and s, 120)
    seen = f"{run.describe()}\n--- clock ---\n{json.dumps(state['clock'], indent=1)}"
    assert netpair.server_ip in (state["clock"]["error"] or ""), seen
    run.wait_log("clock: not synced: ")
    run.wait_state("boot done", lambda s: s["mode"] == "running", 60)
    state = run.wait_state(
        "console running", lambda s: s["containers"].get("console", {}).get("status") == "running" and s, 30
    )
    assert state["phases"]["ntp"]["status"] == "done" and "clock synced" not in state["milestones"], seen
    status = run.state_dir / "status"
    # The view is rendered again after each change: wait for the one after the round
    wait_for("'not synced' in the status file",
             lambda: status.exists() and "clock:   not synced" in status.read_text(), 10, run.describe)  # fmt: skip
