"""The network phase against real parts: a veth pair between two network
namespaces the test makes, busybox `udhcpd` on the server side, and pid1 as
PID 1 on the client side (`nsenter --net=/run/netns/CLIENT unshare ...`) with its own
containerd + dockerd, the bundled pid1-dhcp image and the dhcp system
container running busybox `udhcpc` with pid1/net/udhcpc.script bound in.

Also, without docker: the udhcpc script itself against udhcpd, and the
netlink worker (`python -m pid1.net.netlink`) in a namespace.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from devtools.engine import docker_available, engine_cmdline
from devtools.harness import REPO, Pid1, wait_for
from devtools.netns import LEASE_SECONDS, NetPair, sh

pytestmark = [pytest.mark.namespace]

SCRIPT = REPO / "pid1" / "net" / "udhcpc.script"
_names = itertools.count()


@pytest.fixture
def netpair(tmp_path: Path) -> Iterator[NetPair]:
    if os.geteuid() != 0 or not shutil.which("ip") or not os.path.exists("/bin/busybox"):
        pytest.skip("needs root, iproute2 and busybox-static")
    n = next(_names)
    tag = f"{os.getpid() % 100000}-{n}"
    pair = NetPair(
        client=f"p1c-{tag}", server=f"p1s-{tag}", subnet=f"10.{200 + n % 50}.{os.getpid() % 250}", workdir=tmp_path
    )
    try:
        yield pair.create()
    finally:
        pair.destroy()


# --- the netlink worker and the script, without docker ----------------------------------------


def worker(pair: NetPair, *args: str, timeout: float = 30) -> list[dict]:
    done = subprocess.run(
        ["ip", "netns", "exec", pair.client, sys.executable, "-m", "pid1.net.netlink", *args],
        capture_output=True, text=True, timeout=timeout, env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    return [json.loads(line) for line in done.stdout.splitlines()] + [{"status": done.returncode, "err": done.stderr}]


def test_netlink_worker_brings_links_up_and_times_out_without_an_address(netpair: NetPair) -> None:
    began = time.monotonic()
    events = worker(netpair, "--timeout", "1.5")
    took = time.monotonic() - began
    assert events[0]["event"] == "links" and [x["name"] for x in events[0]["managed"]] == ["eth0"], events
    assert events[1]["event"] == "timeout" and events[-1]["status"] == 2, events
    assert 1.5 <= took < 6, took
    state = sh("ip", "-n", netpair.client, "-j", "link", "show").stdout
    up = {link["ifname"]: "UP" in link["flags"] for link in json.loads(state)}
    assert up == {"lo": True, "eth0": True}, up


def test_netlink_worker_applies_a_static_address(netpair: NetPair) -> None:
    address = f"{netpair.subnet}.7/24"
    events = worker(netpair, "--timeout", "5", "--static", address, "--gateway", netpair.server_ip)
    kinds = [e.get("event") for e in events[:-1]]
    assert kinds == ["links", "static", "ready"], events
    ready = events[2]
    assert (ready["link"], ready["address"], ready["prefixlen"], ready["gateway"]) == (
        "eth0", f"{netpair.subnet}.7", 24, netpair.server_ip,
    ), ready  # fmt: skip
    assert f"default via {netpair.server_ip} dev eth0" in netpair.client_routes()
    # The static address answers the server: a real path through the veth.
    sh("ip", "netns", "exec", netpair.server, "busybox", "ping", "-c", "1", "-W", "2", f"{netpair.subnet}.7")


def run_udhcpc(pair: NetPair, script: Path, seconds: float) -> tuple[str, Path]:
    """busybox udhcpc in the client namespace with busybox applets on PATH
    (what the dhcp container has), for `seconds`."""
    applets = pair.workdir / "bin"
    applets.mkdir(exist_ok=True)
    for name in sh("/bin/busybox", "--list").stdout.split():
        if not (applets / name).exists():
            (applets / name).symlink_to("/bin/busybox")
    net_dir = pair.workdir / "net"
    net_dir.mkdir(exist_ok=True)
    resolv = pair.workdir / "resolv.conf"
    resolv.write_text("# placeholder\n")
    env = ["env", "-i", f"PATH={applets}", f"RESOLV_CONF={resolv}", f"PID1_NET_DIR={net_dir}"]
    argv = ["ip", "netns", "exec", pair.client, *env, "busybox", "udhcpc", "-f", "-i", "eth0", "-s", str(script)]
    argv += ["-T", "1", "-t", "3", "-A", "3"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        out, _ = proc.communicate(timeout=seconds)
    except subprocess.TimeoutExpired:
        proc.terminate()
        out, _ = proc.communicate(timeout=5)
    return out, net_dir


def test_udhcpc_script_applies_lease_route_dns_and_renews(netpair: NetPair) -> None:
    netpair.start_udhcpd()
    out, net_dir = run_udhcpc(netpair, SCRIPT, LEASE_SECONDS + 2)
    seen = f"--- udhcpc ---\n{out}\n{netpair.describe()}"
    lease = dict(line.split("=", 1) for line in (net_dir / "lease").read_text().splitlines())
    assert lease["event"] == "renew" and int(lease["renewals"]) >= 1, f"{lease}\n{seen}"
    assert lease["ip"].startswith(f"{netpair.subnet}.") and lease["prefixlen"] == "24", seen
    [addr] = netpair.client_addresses()
    assert addr["local"] == lease["ip"] and addr["prefixlen"] == 24, seen
    # The lease is the address's lifetime, refreshed by the renew.
    assert 0 < addr["valid_life_time"] <= LEASE_SECONDS, seen
    assert f"default via {netpair.server_ip} dev eth0" in netpair.client_routes(), seen
    resolv = (netpair.workdir / "resolv.conf").read_text()
    assert resolv == f"search test.invalid\nnameserver {netpair.server_ip}\n", seen
    assert netpair.acks() >= 2, seen


def test_negative_control_udhcpc_without_the_script_gets_no_address(netpair: NetPair) -> None:
    """The DESIGN's trap: without a script udhcpc never brings the link up."""
    netpair.start_udhcpd()
    out, _ = run_udhcpc(netpair, Path("/nonexistent/script"), 4)
    assert netpair.client_addresses() == [], f"{out}\n{netpair.describe()}"


# --- pid1's network phase with its own dockerd ----------------------------------------------------


@pytest.fixture
def start_networked(pid1_ns, bundled_images_dir: Path) -> Iterator[Callable[..., Pid1]]:
    """start_networked(pair, extra_cmdline) -> pid1 as PID 1 inside pair.client,
    running the network phase and what it needs (containerd, dockerd, images)."""
    why = docker_available()
    if why:
        pytest.skip(why)
    workdirs: list[Path] = []
    runs: list[Pid1] = []

    def start(pair: NetPair, extra_cmdline: str = "") -> Pid1:
        workdir = Path(tempfile.mkdtemp(prefix="p1n-", dir="/var/tmp"))  # short: unix socket paths
        workdirs.append(workdir)
        root = workdir / "root"
        (root / "etc").mkdir(parents=True)
        (root / "etc" / "resolv.conf").write_text("# placeholder\n")
        cmdline = engine_cmdline("network", workdir, bundled_images_dir, extra_cmdline)
        run = pid1_ns(
            cmdline,
            root=str(root),
            env={"PID1_TEST_REAL_NETWORK": "1"},
            # nsenter switches only the network namespace: `ip netns exec` would
            # also mount a fresh /sys, hiding the cgroup mounts dockerd needs.
            prefix=["nsenter", f"--net=/run/netns/{pair.client}", "--"],
        )
        run.docker_socket = workdir / "d.sock"  # type: ignore[attr-defined]
        runs.append(run)
        return run

    yield start
    for run in runs:
        run.stop()  # SIGKILL to the namespace's PID 1 ends dockerd and the rest, before their files go
    for workdir in workdirs:
        shutil.rmtree(workdir, ignore_errors=True)


def pid1_rss_mib(run: Pid1) -> float:
    status = Path(f"/proc/{run.pid}/status").read_text()
    return int(status.split("VmRSS:")[1].split()[0]) / 1024


@pytest.mark.docker
def test_dhcp_lease_applied_phase_done_on_the_event_and_renewed(netpair: NetPair, start_networked) -> None:
    netpair.start_udhcpd()
    run = start_networked(netpair, "pid1.net_timeout=30")
    state = run.wait_phase("network", timeout=90)
    phase = state["phases"]["network"]
    net = state["network"]
    seen = f"{run.describe()}\n--- network ---\n{json.dumps(net, indent=1)}\n{netpair.describe()}"
    print(f"network phase: {phase['duration']:.2f} s ({phase['detail']}); images done at "
          f"{state['phases']['images']['ended']:.2f}, network at {phase['ended']:.2f} (uptime)")  # fmt: skip
    assert net["status"] == "up" and net["mode"] == "dhcp" and net["link"] == "eth0", seen
    # Done on the netlink event, well before the timeout.
    assert phase["duration"] < 15, seen
    assert net["address"].startswith(f"{netpair.subnet}.") and net["prefixlen"] == 24, seen
    assert net["gateway"] == netpair.server_ip and net["dns"] == [netpair.server_ip], seen
    assert net["lease_seconds"] == LEASE_SECONDS and net["server"] == netpair.server_ip, seen
    assert net["lease_obtained"] and abs(net["lease_obtained"] - time.time()) < 60, seen
    assert f"network up {net['address']}" in run.log(), seen
    assert "network up" in state["milestones"], seen
    # Applied for real in the client namespace (the container ran --net host there).
    assert [a["local"] for a in netpair.client_addresses()] == [net["address"]], seen
    assert f"default via {netpair.server_ip} dev eth0" in netpair.client_routes(), seen
    # DNS reached the machine's resolv.conf (under --root), written in place.
    assert f"nameserver {netpair.server_ip}" in Path(run.root, "etc", "resolv.conf").read_text(), seen
    assert state["containers"]["dhcp"]["status"] == "running", seen
    # The short lease is renewed by the client that keeps running in the container.
    lease_file = run.state_dir / "network" / "lease"
    renewed = wait_for(
        "a renewal",
        lambda: "renewals=" in (text := lease_file.read_text()) and "renewals=0" not in text and text,
        LEASE_SECONDS + 15,
        lambda: seen,
    )
    assert netpair.acks() >= 2, f"{renewed}\n{netpair.describe()}"
    # ... and pid1's state follows it (the script's event through the FIFO).
    after = run.wait_state("the renewal in the state", lambda s: (s["network"].get("renewals") or 0) >= 1 and s, 10)
    assert after["network"]["lease_obtained"] > net["lease_obtained"], f"{after['network']}\n{seen}"
    run.wait_log("network: lease renewed (1)")
    print(f"renewed: {netpair.acks()} ACKs from udhcpd\n{renewed}")
    print(f"PID 1 RSS with the network up: {pid1_rss_mib(run):.1f} MiB (pyroute2 ran in a child)")
    # A killed DHCP client is restarted by the system-container supervisor; the
    # new one deconfigures and gets the lease again, and the state follows.
    sh("docker", "-H", f"unix://{run.docker_socket}", "kill", "dhcp")
    run.wait_log("network: lease on eth0 lost", timeout=30)
    run.wait_state("up again", lambda s: s["network"]["status"] == "up" and run.log().count("network up ") >= 2, 30)
    assert [a["local"] for a in netpair.client_addresses()] == [net["address"]], netpair.describe()


@pytest.mark.docker
def test_no_server_phase_times_out_offline_and_boot_goes_on(netpair: NetPair, start_networked) -> None:
    timeout = 4
    run = start_networked(netpair, f"pid1.net_timeout={timeout}")
    state = run.wait_phase("network", timeout=90)
    phase = state["phases"]["network"]
    seen = f"{run.describe()}\n--- network ---\n{json.dumps(state['network'], indent=1)}"
    print(f"offline network phase: {phase['duration']:.2f} s with pid1.net_timeout={timeout}")
    assert phase["detail"].startswith("offline"), seen
    assert state["network"]["status"] == "offline", seen
    assert timeout <= phase["duration"] < timeout + 10, seen
    run.wait_log("going on offline")
    # The boot went on: every phase ended and pid1 runs.
    run.wait_state("boot done", lambda s: s["mode"] == "running")
    run.wait_log("boot done")
    # The DHCP client keeps trying: a server that appears later gives a lease.
    netpair.start_udhcpd()
    wait_for("a late lease", netpair.client_addresses, 30, lambda: f"{run.describe()}\n{netpair.describe()}")
    late = run.wait_state("the late lease in the state", lambda s: s["network"]["status"] == "up" and s, 10)
    [applied] = netpair.client_addresses()
    assert late["network"]["address"] == applied["local"], run.describe()
    run.wait_log(f"network up {applied['local']}")


@pytest.mark.docker
def test_static_address_applied_by_pid1_under_uvloop(netpair: NetPair, start_networked) -> None:
    address = f"{netpair.subnet}.7"
    run = start_networked(netpair, f"pid1.net=static:{address}/24,{netpair.server_ip},{netpair.server_ip}")
    state = run.wait_phase("network", timeout=90)
    net = state["network"]
    seen = f"{run.describe()}\n--- network ---\n{json.dumps(net, indent=1)}\n{netpair.describe()}"
    print(f"static network phase: {state['phases']['network']['duration']:.2f} s")
    assert (net["mode"], net["status"], net["address"], net["gateway"]) == (
        "static", "up", address, netpair.server_ip,
    ), seen  # fmt: skip
    assert [a["local"] for a in netpair.client_addresses()] == [address], seen
    assert Path(run.root, "etc", "resolv.conf").read_text() == f"nameserver {netpair.server_ip}\n", seen
    assert "dhcp" not in state["containers"], seen
    run.wait_log(f"network up {address}")
    sh("ip", "netns", "exec", netpair.server, "busybox", "ping", "-c", "1", "-W", "2", address)


@pytest.mark.docker
def test_none_brings_only_lo_up(netpair: NetPair, start_networked) -> None:
    run = start_networked(netpair, "pid1.net=none")
    state = run.wait_phase("network", timeout=90)
    seen = f"{run.describe()}\n{netpair.describe()}"
    assert state["phases"]["network"]["detail"] == "none: lo only", seen
    assert state["network"]["status"] == "none" and "dhcp" not in state["containers"], seen
    links = json.loads(sh("ip", "-n", netpair.client, "-j", "link", "show").stdout)
    up = {link["ifname"]: "UP" in link["flags"] for link in links}
    assert up == {"lo": True, "eth0": False}, f"{up}\n{seen}"


@pytest.mark.docker
def test_a_hostile_lease_file_from_the_dhcp_container_does_not_freeze_pid1(netpair: NetPair, start_networked) -> None:
    """The dhcp container runs unprivileged but writes the lease directory: it
    puts a FIFO there (an open without O_NONBLOCK would block PID 1's loop for
    ever), then a link to /dev/zero (a read without a bound never ends), and
    tells pid1 through the events FIFO. pid1 says why it ignores each and
    keeps working: a killed dhcp container is restarted each time."""
    run = start_networked(netpair, "pid1.net_timeout=3")
    run.wait_phase("network", timeout=90)

    def docker(*args: str) -> str:
        return sh("docker", "-H", f"unix://{run.docker_socket}", *args).stdout

    net_dir = "/run/pid1-net"
    attacks = {
        "FIFO": f"rm -f {net_dir}/lease && mkfifo {net_dir}/lease && echo bound > {net_dir}/events",
        "/dev/zero": f"rm -f {net_dir}/lease && ln -s /dev/zero {net_dir}/lease && echo renew > {net_dir}/events",
    }
    for round_no, (what, attack) in enumerate(attacks.items(), start=1):
        docker("exec", "dhcp", "sh", "-c", attack)
        run.wait_log(f"{run.state_dir}/network/lease ignored: ", timeout=10)
        docker("kill", "dhcp")  # only a loop that runs restarts it
        run.wait_state(
            f"the dhcp container restarted after the {what} lease",
            lambda s, n=round_no: (
                s["containers"]["dhcp"]["restarts"] >= n and s["containers"]["dhcp"]["status"] == "running"
            ),
            timeout=30,
        )
    assert run.log().count("network/lease ignored: ") >= 2, run.describe()
    assert "not a regular file" in run.log() and "a symbolic link, not followed" in run.log(), run.describe()


def test_dhcp_server_gone_the_lease_expires_visibly_and_comes_back_with_the_server(
    netpair: NetPair, start_networked
) -> None:
    """The DHCP server dies while the machine runs: the client's renewals go
    unanswered, the lease runs out, and the state says so (status, the lost
    address, the log line); pid1 stays responsive throughout (its state keeps
    following the client's events); the server's return gives the lease back."""
    netpair.start_udhcpd()
    run = start_networked(netpair, "pid1.net_timeout=30")
    state = run.wait_phase("network", timeout=90)
    first = state["network"]

    def seen() -> str:
        network = json.dumps((run.state() or {}).get("network"), indent=1)
        return f"{run.describe()}\n--- network ---\n{network}\n{netpair.describe()}"

    assert first["status"] == "up", seen()
    dhcp_restarts = state["containers"]["dhcp"]["restarts"]
    netpair.udhcpd.kill()
    netpair.udhcpd.wait(5)
    killed = time.monotonic()
    # The lease (LEASE_SECONDS) runs out unanswered: the client deconfigures,
    # and pid1's state follows.
    lost = run.wait_state(
        "the lease lost in the state",
        lambda s: s["network"]["status"] == "waiting for a lease" and s,
        LEASE_SECONDS + 20,
    )
    took = time.monotonic() - killed
    print(f"lease lost {took:.1f} s after the server died (lease {LEASE_SECONDS} s)")
    assert lost["network"]["address"] is None and lost["network"]["lease_event"] == "deconfig", seen()
    run.wait_log("network: lease on eth0 lost")
    assert took <= LEASE_SECONDS + 15, seen()
    wait_for("the address gone from eth0", lambda: not netpair.client_addresses(), 10, seen)
    # Nothing hangs: the client keeps asking (its discovers reach the state),
    # and the machine goes on running.
    run.wait_state("the client's failed discovers reported", lambda s: s["network"]["lease_event"] == "leasefail", 30)
    assert run.state()["mode"] == "running", seen()
    # The server comes back: the lease comes back, in the state and on the link.
    netpair.udhcpd_log.close()
    netpair.start_udhcpd()
    back = run.wait_state("up again", lambda s: s["network"]["status"] == "up" and s, 30)
    [applied] = netpair.client_addresses()
    assert back["network"]["address"] == applied["local"], seen()
    assert run.log().count("network up ") >= 2, seen()
    # The DHCP client rode it out in one container run: nothing was restarted.
    assert run.state()["containers"]["dhcp"]["restarts"] == dhcp_restarts, seen()
