"""The clock against real parts: pid1 as PID 1 in a network namespace the
test makes (a veth to a second namespace), its own dockerd, and the `ntp`
system container running pid1's SNTP client against devtools/sntp_server.py,
which serves this machine's time plus an offset (10 minutes, or a right
0.25 s) from the other namespace:

- pid1.ntp_servers names it: the state and VT2 show the 10 minutes, and no
  milestone comes for a clock that far off;
- nothing names it but busybox udhcpd's option 42 in the lease: the ntp
  container asks it, the milestone comes, and runcmd, waiting for it
  (pid1.runcmd_wait_clock), runs after it;
- a lease without option 42: the fallback pool.ntp.org, which resolves to
  nothing in these namespaces: unsynced, and runcmd runs after its bound;
- a lease with option 42 that comes after the network phase went on offline:
  the ntp container is restarted with its server.

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
from test_userdata import put_user_data

from devtools.engine import docker_available, engine_cmdline
from devtools.harness import Pid1, wait_for
from devtools.netns import NetPair

pytestmark = [pytest.mark.docker]

OFFSET = 600.0  # the test server's clock is 10 minutes ahead
RIGHT_OFFSET = 0.25  # within pid1's 0.5 s: a measured clock this close is a right one
RUNCMD_MARK = "runcmd-ran"  # what the user-data's runcmd writes into /run/pid1 (dom0's view of the state dir)
RUNCMD_USER_DATA = f"#cloud-config\nruncmd:\n  - touch /run/pid1/{RUNCMD_MARK}\n"


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

    def start(offset: float = OFFSET) -> subprocess.Popen:
        argv = ["ip", "netns", "exec", netpair.server, sys.executable, "-m", "devtools.sntp_server"]
        proc = subprocess.Popen([*argv, netpair.server_ip, str(offset)], stdout=subprocess.PIPE, text=True)
        assert "sntp_server:" in proc.stdout.readline(), "the test SNTP server did not start"
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.terminate()
        proc.wait(5)


@pytest.fixture
def start_clocked(pid1_ns, bundled_images_dir: Path) -> Iterator[Callable[..., Pid1]]:
    """start_clocked(pair, phases, extra, dhcp, user_data, net_timeout) -> pid1
    in pair.client with a static address (or DHCP from pair's udhcpd), the
    real network and ntp phases, pid1.ntp=query, and user_data as the kept copy."""
    why = docker_available()
    if why:
        pytest.skip(why)
    runs: list[Pid1] = []

    def start(pair: NetPair, phases: str = "ntp,vt2", extra: str = "", dhcp: bool = False,
              user_data: str | None = None, net_timeout: float = 30) -> Pid1:  # fmt: skip
        workdir = Path(subprocess.check_output(["mktemp", "-d", "/var/tmp/p1t-XXXXXX"], text=True).strip())
        root = workdir / "root"
        (root / "etc").mkdir(parents=True)
        if user_data is not None:  # where pid1 looks: the host state under --root (ctx.path)
            put_user_data(root / str(workdir).lstrip("/"), user_data)
        (root / "etc" / "resolv.conf").write_text("# no DNS in this test\n")
        static = f"pid1.net=static:{pair.subnet}.7/24,{pair.server_ip}"
        net = f"pid1.net=dhcp pid1.net_timeout={net_timeout:g}" if dhcp else static
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


def test_dhcp_option_42_gives_the_ntp_servers_and_runcmd_waits_for_the_right_clock(
    netpair: NetPair,  # noqa: F811
    sntp_server,
    start_clocked,
    host_clock: HostClock,
) -> None:
    """Nothing configured: udhcpd's option 42 (ntpsrv) reaches the lease, and
    the ntp container asks that server. Its clock is right (0.25 s off), so
    the milestone comes, and runcmd, which waits for it
    (pid1.runcmd_wait_clock), runs once it has. The negative control (a lease
    without option 42) is the next test's."""
    ip = netpair.server_ip
    netpair.start_udhcpd(options=(f"ntpsrv {ip}",))
    sntp_server(RIGHT_OFFSET)
    run = start_clocked(netpair, phases="ntp,vt2,dom0,runcmd", extra="pid1.runcmd_wait_clock=120", dhcp=True,
                        user_data=RUNCMD_USER_DATA)  # fmt: skip
    state = run.wait_phase("runcmd", timeout=180)
    clock, net = state["clock"], state["network"]
    lease = (run.state_dir / "network" / "lease").read_text()
    seen = f"{run.describe()}\n--- clock ---\n{json.dumps(clock, indent=1)}\n--- lease ---\n{lease}"
    print(f"lease: {lease.split()}\nclock: {json.dumps(clock)}")
    assert net["mode"] == "dhcp" and net["status"] == "up" and net["server"] == ip, seen
    assert f"ntp={ip}" in lease.splitlines(), seen
    assert clock["servers"] == [ip] and clock["source"] == "DHCP option 42", seen
    assert f"{ip} (DHCP option 42)" in state["phases"]["ntp"]["detail"], seen
    assert clock["status"] == "synced" and clock["server"] == ip and clock["address"] == ip, seen
    assert abs(clock["offset"] - RIGHT_OFFSET) < 0.1, seen
    # runcmd waited for the milestone, then ran
    synced_at, runcmd = state["milestones"].get("clock synced"), state["phases"]["runcmd"]
    assert synced_at is not None and synced_at <= runcmd["ended"], seen
    assert runcmd["detail"].startswith("ran 1 for instance"), seen
    run.wait_log("runcmd: the clock is synced", timeout=5)
    assert (run.state_dir / RUNCMD_MARK).exists(), seen


def test_no_server_reachable_says_unsynced_and_the_boot_goes_on(
    netpair: NetPair,  # noqa: F811
    start_clocked,
    host_clock: HostClock,
) -> None:
    """A lease without option 42 and nothing configured: the fallback,
    pool.ntp.org, which does not resolve in the test's namespaces (the
    lease's DNS server is udhcpd's address, with nothing on port 53). The
    boot goes on, and runcmd, waiting for a right clock for at most 3 s,
    runs after them anyway."""
    netpair.start_udhcpd()
    run = start_clocked(netpair, phases="ntp,vt2,console,dom0,runcmd", extra="pid1.runcmd_wait_clock=3", dhcp=True,
                        user_data=RUNCMD_USER_DATA)  # fmt: skip
    state = run.wait_state("unsynced", lambda s: s.get("clock", {}).get("status") == "unsynced" and s, 120)
    clock = state["clock"]
    seen = f"{run.describe()}\n--- clock ---\n{json.dumps(clock, indent=1)}\n{netpair.describe()}"
    assert state["network"]["mode"] == "dhcp" and state["network"]["status"] == "up", seen
    assert clock["servers"] == ["pool.ntp.org"] and clock["source"] == "default", seen
    assert "pool.ntp.org: does not resolve" in (clock["error"] or ""), seen
    run.wait_log("runcmd: the clock is not synced after 3 s (pid1.runcmd_wait_clock); running anyway", timeout=60)
    runcmd = run.wait_phase("runcmd", timeout=60)["phases"]["runcmd"]
    assert runcmd["duration"] >= 3 and runcmd["detail"].startswith("ran 1 for instance"), runcmd
    assert (run.state_dir / RUNCMD_MARK).exists(), run.describe()
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


def test_a_lease_after_the_network_phase_went_offline_still_gives_its_ntp_servers(
    netpair: NetPair,  # noqa: F811
    sntp_server,
    start_clocked,
    host_clock: HostClock,
) -> None:
    """No DHCP server within pid1.net_timeout: the network phase goes on
    offline and the ntp container starts with pool.ntp.org. The lease that
    comes later names the test's server (option 42): ntp restarts with it."""
    ip = netpair.server_ip
    sntp_server(RIGHT_OFFSET)
    run = start_clocked(netpair, dhcp=True, net_timeout=2)
    state = run.wait_phase("ntp", timeout=120)
    seen = f"{run.describe()}\n{netpair.describe()}"
    assert state["network"]["status"] == "offline", seen
    assert state["clock"]["servers"] == ["pool.ntp.org"] and state["clock"]["source"] == "default", seen
    first = inspect(run, "ntp")["Id"]
    netpair.start_udhcpd(options=(f"ntpsrv {ip}",))
    state = run.wait_state("synced to the lease's server",
                           lambda s: s["clock"].get("status") == "synced" and s["clock"].get("server") == ip and s,
                           90)  # fmt: skip
    clock = state["clock"]
    seen = f"{run.describe()}\n--- clock ---\n{json.dumps(clock, indent=1)}\n{netpair.describe()}"
    assert clock["servers"] == [ip] and clock["source"] == "DHCP option 42", seen
    assert abs(clock["offset"] - RIGHT_OFFSET) < 0.1 and "clock synced" in state["milestones"], seen
    run.wait_log(f"ntp: the lease came after the ntp phase: {ip} (DHCP option 42); restarting ntp", timeout=5)
    assert inspect(run, "ntp")["Id"] != first, seen
