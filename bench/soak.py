#!/usr/bin/env python3
"""Soak benchmark: pid1 with its own containerd + dockerd as PID 1 of a
namespace (the docker tier's machinery: devtools.harness and
devtools.engine), for N minutes, with a random fault from the
docs/faults.md's faults injected every few seconds.

pid1 runs in the client end of a veth pair (devtools.netns.NetPair) whose
server end runs busybox udhcpd, with the network phase and its dhcp
container. The faults (the ones a namespace can have; the VM-only ones are
not here):
  console-kill, dom0-kill   SIGKILL to the container's process (a crash)
  shim-kill                 SIGKILL to the console's containerd-shim
  dockerd-kill, containerd-kill   SIGKILL to the daemon
  console-image             console-image:latest tagged, or deleted (`rmi -f`)
                            under the running console, then the console exits
  disk-full                 the data root (a 256 MiB ext4 on a loop device)
                            filled for 2 s, then freed
  control-flood             thousands of garbage writes to the control FIFO
  dhcp-server-gone          udhcpd killed; once the state says the lease is
                            lost (a 20 s lease), it is started again, and
                            the network must come back up

After each fault it waits for recovery: the fault was noticed (the restart
counters in the state moved) and exactly one console and one dom0 run, in
`docker ps` and in pid1's state. The next fault comes 3-8 s later. Once a
second it checks the invariants:
  - exactly one console and one dom0 within 15 s of each fault (never two);
  - no zombie in the namespace seen twice in a row (1 s old);
  - pid1's fd count within +-4 of the start;
  - pid1's RSS within +8 MiB of the start;
  - the state file parses.
It prints the faults injected, the recoveries, the worst, p50 and p95
recovery time, and every invariant violation (goal: none).

Run as root: `.venv/bin/python bench/soak.py [--minutes 30] [--seed N]`.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devtools.engine import engine_cmdline
from devtools.harness import Pid1, namespace_processes
from devtools.netns import NetPair
from image import bundled_images

RECOVERY_BOUND = 15.0
FD_SLACK = 4
RSS_SLACK_MIB = 8.0
DISK_SIZE = "256M"
ROLES = ("console", "dom0")
LEASE_SECONDS = 20
LEASE_LOST_BOUND = LEASE_SECONDS + 20.0


@dataclass
class Machine:
    run: Pid1
    workdir: Path
    data_root: Path
    net: NetPair

    @property
    def socket(self) -> Path:
        return self.workdir / "d.sock"

    def docker(self, *args: str, check: bool = False, timeout: float = 30) -> subprocess.CompletedProcess:
        try:
            done = subprocess.run(
                ["docker", "-H", f"unix://{self.socket}", *args], capture_output=True, text=True, timeout=timeout
            )
        except subprocess.TimeoutExpired as exc:
            return subprocess.CompletedProcess(exc.cmd, 124, "", f"timed out after {timeout} s")
        if check and done.returncode != 0:
            raise RuntimeError(f"docker {' '.join(args)}: {done.stderr.strip()}")
        return done

    def state(self) -> dict[str, Any] | None:
        return self.run.state()

    def processes(self) -> list[dict[str, str]]:
        return namespace_processes(self.run.pid)

    def pid_of(self, name: str) -> int | None:
        found = [p for p in self.processes() if p["Name"] == name]
        return int(found[0]["pid"]) if found else None

    def container_pid(self, name: str) -> int | None:
        """The host pid of a container's main process (docker gives the namespace's)."""
        done = self.docker("inspect", "--format", "{{.Id}}", name)
        if done.returncode != 0:
            return None
        container_id = done.stdout.strip()
        for proc in self.processes():
            if proc["Name"].startswith("containerd-shim"):
                try:
                    argv = Path(f"/proc/{proc['pid']}/cmdline").read_bytes()
                except OSError:
                    continue
                if container_id.encode() in argv:
                    kids = Path(f"/proc/{proc['pid']}/task/{proc['pid']}/children").read_text().split()
                    return int(kids[0]) if kids else None
        return None

    def shim_of(self, name: str) -> int | None:
        pid = self.container_pid(name)
        if pid is None:
            return None
        try:
            return int(Path(f"/proc/{pid}/status").read_text().split("PPid:\t")[1].split()[0])
        except (OSError, IndexError, ValueError):
            return None


def counters(state: dict[str, Any] | None) -> dict[str, int]:
    state = state or {}
    found = {f"{r}.restarts": ((state.get("containers") or {}).get(r) or {}).get("restarts", 0) for r in ROLES}
    for daemon in ("dockerd", "containerd"):
        found[f"{daemon}.restarts"] = ((state.get("dockerd") or {}).get(daemon) or {}).get("restarts", 0)
    return found


def one_each(machine: Machine) -> tuple[bool, str]:
    """Exactly one console and one dom0 running, in docker ps and in the state."""
    done = machine.docker("ps", "--filter", "label=pid1.role", "--format", "{{.Names}}", timeout=10)
    if done.returncode != 0:
        return False, f"docker ps: {done.stderr.strip()[:120]}"
    names = Counter(done.stdout.split())
    if any(names[r] > 1 for r in ROLES):
        return False, f"two of a role: {dict(names)}"
    if any(names[r] != 1 for r in ROLES):
        return False, f"running: {dict(names)}"
    state = machine.state() or {}
    statuses = {r: ((state.get("containers") or {}).get(r) or {}).get("status") for r in ROLES}
    if any(s != "running" for s in statuses.values()):
        return False, f"state: {statuses}"
    if ((state.get("dockerd") or {}).get("dockerd") or {}).get("status") != "running":
        return False, "state: dockerd not running"
    return True, "one console and one dom0"


# --- the faults ---------------------------------------------------------------------------------


@dataclass
class Fault:
    name: str
    inject: Callable[[Machine], None]
    # which counters must have moved before the fault counts as recovered
    moves: tuple[str, ...] = ()
    # a fault that lasts: the condition it leads to (checked once a second
    # meanwhile, within LEASE_LOST_BOUND), then what ends it
    reached: Callable[[Machine], bool] | None = None
    end: Callable[[Machine], None] | None = None
    # what else must hold again for a recovery
    back: Callable[[Machine], bool] = lambda machine: True


def network_status(machine: Machine) -> str | None:
    return ((machine.state() or {}).get("network") or {}).get("status")


def dhcp_server_gone(machine: Machine) -> None:
    machine.net.udhcpd.kill()
    machine.net.udhcpd.wait(5)
    machine.net.udhcpd_log.close()


def kill(pid: int | None) -> None:
    if pid is not None:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def console_image(machine: Machine) -> None:
    tags = machine.docker("images", "--format", "{{.Repository}}:{{.Tag}}").stdout.split()
    if "console-image:latest" in tags:
        machine.docker("rmi", "-f", "console-image:latest")  # soak-console:1 keeps the image
    else:
        machine.docker("tag", "soak-console:1", "console-image:latest")
    kill(machine.container_pid("console"))


def disk_full(machine: Machine) -> None:
    filler = machine.data_root / "soak-filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for size in (1 << 20, 4096):
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
        time.sleep(2)  # full for a while: dockerd and pid1 keep going
    finally:
        os.close(fd)
        filler.unlink()


def control_flood(machine: Machine) -> None:
    control = machine.run.state_dir / "control"
    payloads = (b"bogus\n", b"restart nothing\n", b"y" * 5000 + b"\n", b"\xff\n")
    for n in range(3000):
        try:
            fd = os.open(control, os.O_WRONLY | os.O_NONBLOCK)
        except OSError:
            return
        try:
            os.write(fd, payloads[n % len(payloads)])
        except BlockingIOError:
            time.sleep(0.001)
        finally:
            os.close(fd)


FAULTS = (
    Fault("console-kill", lambda m: kill(m.container_pid("console")), ("console.restarts",)),
    Fault("dom0-kill", lambda m: kill(m.container_pid("dom0")), ("dom0.restarts",)),
    Fault("shim-kill", lambda m: kill(m.shim_of("console")), ("console.restarts",)),
    Fault("dockerd-kill", lambda m: kill(m.pid_of("dockerd")), ("dockerd.restarts",)),
    Fault("containerd-kill", lambda m: kill(m.pid_of("containerd")), ("containerd.restarts", "dockerd.restarts")),
    Fault("console-image", console_image, ("console.restarts",)),
    Fault("disk-full", disk_full),
    Fault("control-flood", control_flood),
    Fault(
        "dhcp-server-gone",
        dhcp_server_gone,
        reached=lambda m: network_status(m) == "waiting for a lease",
        end=lambda m: m.net.start_udhcpd(LEASE_SECONDS),
        back=lambda m: network_status(m) == "up",
    ),
)


# --- the invariants -----------------------------------------------------------------------------


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def fd_targets(pid: int) -> Counter[str]:
    """What pid's fds point at, anonymous inodes and sockets by kind only."""
    found: Counter[str] = Counter()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        found[target.split(":[")[0] if ":[" in target else target] += 1
    return found


def rss_mib(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(status.split("VmRSS:")[1].split()[0]) / 1024


@dataclass
class Watch:
    machine: Machine
    fds: int
    rss: float
    violations: list[str] = field(default_factory=list)
    seconds_in_violation: Counter[str] = field(default_factory=Counter)
    last_shown: dict[str, str] = field(default_factory=dict)
    start_fds: Counter[str] = field(default_factory=Counter)
    zombies_seen: set[str] = field(default_factory=set)
    checks: int = 0
    max_fds: int = 0
    max_rss: float = 0.0

    def violation(self, kind: str, what: str) -> None:
        """Counted once per check; recorded (and printed) when it differs from
        the last one of its kind, so a lasting violation is one line."""
        self.seconds_in_violation[kind] += 1
        if self.last_shown.get(kind) == what:
            return
        self.last_shown[kind] = what
        stamp = f"[{time.strftime('%H:%M:%S')}] "
        self.violations.append(stamp + what)
        print(f"VIOLATION {stamp}{what}", flush=True)

    def check(self, in_recovery: bool) -> None:
        """One round of the once-a-second checks (one_each outside a recovery window only)."""
        self.checks += 1
        pid = self.machine.run.pid
        try:
            json.loads((self.machine.run.state_dir / "state.json").read_text())
        except (OSError, ValueError) as exc:
            self.violation("state", f"state file unreadable: {exc}")
        zombies = {p["pid"] for p in self.machine.processes() if p.get("State", "").startswith("Z")}
        for old in zombies & self.zombies_seen:
            self.violation("zombie", f"zombie {old} for over 1 s")
        self.zombies_seen = zombies
        fds, rss = fd_count(pid), rss_mib(pid)
        self.max_fds, self.max_rss = max(self.max_fds, fds), max(self.max_rss, rss)
        if abs(fds - self.fds) > FD_SLACK:
            self.violation("fds", f"pid1 has {fds} fds (start: {self.fds})")
        if rss > self.rss + RSS_SLACK_MIB:
            self.violation("rss", f"pid1 RSS {rss:.1f} MiB (start: {self.rss:.1f} MiB)")
        if not in_recovery:
            ok, why = one_each(self.machine)
            if not ok:
                self.violation("one-each", f"between faults: {why}")


# --- the run ------------------------------------------------------------------------------------


def start(top: Path, images: Path) -> Machine:
    """pid1 in the client end of a veth pair whose server end runs udhcpd,
    its data root a small ext4 on a loop device, its root (for resolv.conf)
    a directory of its own."""
    workdir = top / "machine"
    data_root = workdir / "data"
    data_root.mkdir(parents=True)
    root = workdir / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "resolv.conf").write_text("# placeholder\n")
    disk = top / "docker.img"
    subprocess.run(["truncate", "-s", DISK_SIZE, str(disk)], check=True)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-m", "0", "-L", "DOCKER", str(disk)], check=True)
    subprocess.run(["mount", "-o", "loop", str(disk), str(data_root)], check=True)
    tag = os.getpid() % 100000
    net = NetPair(client=f"p1sc-{tag}", server=f"p1ss-{tag}", subnet=f"10.199.{tag % 250}", workdir=top).create()
    try:
        return start_pid1(top, images, net, data_root, root)
    except BaseException:
        net.destroy()
        raise


def start_pid1(top: Path, images: Path, net: NetPair, data_root: Path, root: Path) -> Machine:
    workdir = top / "machine"
    net.start_udhcpd(LEASE_SECONDS)
    cmdline = engine_cmdline("console,dom0,control,network", workdir, images, "pid1.net_timeout=30")
    run = Pid1(
        workdir=workdir / "run",
        cmdline=cmdline,
        root=str(root),
        prefix=["nsenter", f"--net=/run/netns/{net.client}", "--"],
    )
    run.workdir.mkdir(parents=True)
    machine = Machine(run=run, workdir=workdir, data_root=data_root, net=net)
    run.start()
    run.wait_phase("console", timeout=120)
    run.wait_phase("dom0", timeout=60)
    run.wait_state("the network up", lambda s: s["network"].get("status") == "up", 60)
    layer = bundled_images.rootfs_layer("/bin/busybox", {"etc/flavour": (b"soak", 0o644)})
    done = subprocess.run(
        ["docker", "-H", f"unix://{machine.socket}", "import", "-c", 'CMD ["sh"]', "-", "soak-console:1"],
        input=layer, capture_output=True, timeout=60,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"docker import: {done.stderr.decode(errors='replace')}")
    return machine


def wait_settled(machine: Machine, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not one_each(machine)[0]:
        if time.monotonic() > deadline:
            raise RuntimeError(f"not settled: {one_each(machine)[1]}\n{machine.run.describe()}")
        time.sleep(0.2)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def soak(machine: Machine, minutes: float, rng: random.Random) -> int:
    wait_settled(machine)
    time.sleep(2)  # past the first start's loose ends (the console's bridge, the state's first writes)
    pid = machine.run.pid
    watch = Watch(machine, fds=fd_count(pid), rss=rss_mib(pid), start_fds=fd_targets(pid))
    print(f"start: pid1 {watch.fds} fds, RSS {watch.rss:.1f} MiB; soaking for {minutes:g} min", flush=True)
    injected: Counter[str] = Counter()
    recoveries: dict[str, list[float]] = {}
    ends = time.monotonic() + minutes * 60
    next_check = time.monotonic()
    while time.monotonic() < ends:
        fault = rng.choice(FAULTS)
        before = counters(machine.state())
        injected[fault.name] += 1
        fault.inject(machine)
        if fault.reached is not None:
            lasts = time.monotonic()
            while not fault.reached(machine) and time.monotonic() - lasts < LEASE_LOST_BOUND:
                if time.monotonic() >= next_check:
                    watch.check(in_recovery=False)
                    next_check = time.monotonic() + 1.0
                time.sleep(0.1)
            if not fault.reached(machine):
                watch.violation("reached", f"{fault.name}: not seen in the state within {LEASE_LOST_BOUND:.0f} s")
            if fault.end is not None:
                fault.end(machine)
        injected_at = time.monotonic()
        recovered_at = None
        while time.monotonic() - injected_at < RECOVERY_BOUND:
            now = counters(machine.state())
            if all(now[c] > before[c] for c in fault.moves) and fault.back(machine) and one_each(machine)[0]:
                recovered_at = time.monotonic()
                break
            if time.monotonic() >= next_check:
                watch.check(in_recovery=True)
                next_check += 1.0
            time.sleep(0.1)
        if recovered_at is None:
            watch.violation(
                "recovery", f"{fault.name}: no recovery within {RECOVERY_BOUND:.0f} s ({one_each(machine)[1]})"
            )
            wait_settled(machine, 120)
        else:
            recoveries.setdefault(fault.name, []).append(recovered_at - injected_at)
        gap_ends = time.monotonic() + rng.uniform(3, 8)
        while time.monotonic() < min(gap_ends, ends):
            if time.monotonic() >= next_check:
                watch.check(in_recovery=False)
                next_check = time.monotonic() + 1.0
            time.sleep(0.1)
    report(injected, recoveries, watch)
    return 1 if watch.violations else 0


def report(injected: Counter[str], recoveries: dict[str, list[float]], watch: Watch) -> None:
    every = [t for times in recoveries.values() for t in times]
    print(f"\nfaults injected: {sum(injected.values())}; recovered within {RECOVERY_BOUND:.0f} s: {len(every)}")
    print(f"{'fault':<16} {'n':>4} {'p50 s':>7} {'p95 s':>7} {'worst s':>8}")
    for fault in FAULTS:
        times = recoveries.get(fault.name, [])
        if times:
            print(f"{fault.name:<16} {injected[fault.name]:>4} {statistics.median(times):>7.2f} "
                  f"{percentile(times, 0.95):>7.2f} {max(times):>8.2f}")  # fmt: skip
        elif injected[fault.name]:
            print(f"{fault.name:<16} {injected[fault.name]:>4}   (none recovered)")
    if every:
        print(f"{'all':<16} {len(every):>4} {statistics.median(every):>7.2f} "
              f"{percentile(every, 0.95):>7.2f} {max(every):>8.2f}")  # fmt: skip
    print(f"invariant checks: {watch.checks}; pid1 fds start {watch.fds}, max {watch.max_fds}; "
          f"RSS start {watch.rss:.1f} MiB, max {watch.max_rss:.1f} MiB")  # fmt: skip
    grown = fd_targets(watch.machine.run.pid) - watch.start_fds
    if grown:
        print("pid1's fds added since the start:", ", ".join(f"{n} x {t}" for t, n in grown.most_common()))
    seconds = ", ".join(f"{kind} {n} s" for kind, n in watch.seconds_in_violation.most_common()) or "none"
    print(f"invariant violations: {len(watch.violations)} (checks in violation: {seconds})")
    for line in watch.violations[:40]:
        print(f"  {line}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--seed", type=int, default=None, help="the fault sequence's random seed (printed)")
    opts = parser.parse_args()
    if os.geteuid() != 0:
        print("bench/soak.py: run as root (namespaces, a loop mount, dockerd)", file=sys.stderr)
        return 2
    seed = opts.seed if opts.seed is not None else random.randrange(1 << 30)
    print(f"seed {seed}")
    top = Path(tempfile.mkdtemp(prefix="p1s-", dir="/var/tmp"))  # short: unix socket paths
    machine = None
    try:
        images = top / "images"
        bundled_images.build(images)
        machine = start(top, images)
        return soak(machine, opts.minutes, random.Random(seed))
    finally:
        if machine is not None:
            machine.run.stop()  # SIGKILL to the namespace's PID 1 ends every process in it
            machine.net.destroy()
        subprocess.run(["umount", "-l", str(top / "machine" / "data")], check=False, capture_output=True)
        shutil.rmtree(top, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
