"""The host phases (devices, mounts, hostname) run for real as PID 1 of a
namespace, against a temporary root, and do nothing the second time."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import pytest

from devtools.harness import REPO, Pid1, wait_for

pytestmark = pytest.mark.namespace


def mount_points(run: Pid1) -> dict[str, str]:
    """target -> fstype, as the namespace sees it."""
    out = run.nsenter(["cat", "/proc/self/mountinfo"]).stdout.decode()
    table = {}
    for line in out.splitlines():
        fields = line.split()
        sep = fields.index("-")
        table[fields[4]] = fields[sep + 1]
    return table


def start_over_tmpfs_dev(pid1_ns, root: Path, cmdline: str) -> Pid1:
    """pid1 as PID 1 under `root`, whose /dev is a private tmpfs (sh mounts it
    and execs pid1, which stays PID 1), so the devices phase never writes into
    the host's devtmpfs."""
    (root / "dev").mkdir(parents=True)
    wrapper = ["sh", "-c", 'mount -t tmpfs devtest "$0/dev" && exec "$@"', str(root)]
    return pid1_ns(cmdline, root=str(root), wrapper=wrapper)


def test_host_phases_mount_everything_once(pid1_ns, tmp_path: Path) -> None:
    root = tmp_path / "root"
    run = start_over_tmpfs_dev(pid1_ns, root, "pid1.phases=hostname pid1.hostname=nsbox pid1.cgroups=v2")
    state = run.wait_phase("hostname")
    assert state["phases"]["mounts"]["status"] == "done", state
    # the cgroup tree is the host's: pid1 makes no cgroup in it
    assert "no first memory cgroup: not the machine's first PID namespace" in state["phases"]["mounts"]["detail"]
    mounts = mount_points(run)
    expected = {
        f"{root}/proc": "proc",
        f"{root}/sys": "sysfs",
        f"{root}/run": "tmpfs",
        f"{root}/tmp": "tmpfs",
        f"{root}/sys/fs/cgroup": "cgroup2",
        f"{root}/dev/pts": "devpts",
        f"{root}/dev/shm": "tmpfs",
        f"{root}/dev/mqueue": "mqueue",
    }
    for target, fstype in expected.items():
        assert mounts.get(target) == fstype, f"{target}: {mounts.get(target)}\n{run.describe()}"
    assert run.nsenter(["readlink", f"{root}/dev/fd"]).stdout.decode().strip() == "/proc/self/fd"
    assert run.nsenter(["hostname"]).stdout.decode().strip() == "nsbox"
    assert run.nsenter(["cat", f"{root}/etc/hostname"]).stdout.decode() == "nsbox\n"
    assert "ptmxmode=666" in run.nsenter(["grep", f"{root}/dev/pts", "/proc/self/mounts"]).stdout.decode()

    # A second pid1 (not PID 1: a child subreaper) over the booted root changes nothing.
    second = run.nsenter(
        [
            "sh",
            "-c",
            f"cd {REPO} && timeout -s TERM 5 {sys.executable} -m pid1 --root {root} "
            f"--cmdline 'pid1.state_dir={tmp_path}/state2 pid1.phases=hostname pid1.hostname=nsbox' 2>&1; true",
        ],
        timeout=30,
    )
    out = second.stdout.decode()
    for phase in ("devices", "mounts", "hostname"):
        assert f"phase {phase} done" in out and "already in place" in out, out
    assert "made " not in out and "mounted " not in out, out
    assert mount_points(run) == mounts

    run.kill(signal.SIGTERM)
    assert run.wait_exit(30) == -signal.SIGHUP  # SIGTERM: the orderly stop, then reboot
    log = run.log()
    for target in (f"{root}/tmp", f"{root}/run", f"{root}/sys/fs/cgroup", f"{root}/proc"):
        assert f"unmounted {target}" in log, log


def test_cgroup_v1_mounts_each_enabled_controller(pid1_ns, tmp_path: Path) -> None:
    root = tmp_path / "root"
    run = start_over_tmpfs_dev(pid1_ns, root, "pid1.phases=mounts pid1.cgroups=v1")
    run.wait_phase("mounts")
    mounts = mount_points(run)
    enabled = [line.split()[0] for line in Path("/proc/cgroups").read_text().splitlines()[1:] if line.split()[3] == "1"]
    assert mounts.get(f"{root}/sys/fs/cgroup") == "tmpfs"
    for name in enabled:
        assert mounts.get(f"{root}/sys/fs/cgroup/{name}") == "cgroup", (name, mounts)
    wait_for("pid1 still alive", lambda: run.proc.poll() is None, 1)
