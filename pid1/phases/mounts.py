"""mounts: /proc, /sys, /run, /tmp and the cgroup hierarchies. Needs devices.

cgroups follow pid1.cgroups: v2 mounts the unified tree on /sys/fs/cgroup
(the default: Debian's dockerd 20.10 and containerd 1.6 support it fully, and
it is one mount instead of a dozen); v1 mounts a tmpfs there and one hierarchy
per enabled controller that /proc/cgroups lists. Mount points that exist
already are left alone, so running pid1 over a booted system changes nothing.
"""

from __future__ import annotations

import os

from pid1.linux.syscalls import MS_NODEV, MS_NOEXEC, MS_NOSUID, MS_RELATIME
from pid1.mounting import MountSpec, ensure_mounted, is_mountpoint
from pid1.phases import Phase, PhaseContext

BASIC = MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_RELATIME


def base_mounts(root: str) -> list[MountSpec]:
    r = root.rstrip("/")
    return [
        MountSpec("proc", f"{r}/proc", "proc", BASIC),
        MountSpec("sysfs", f"{r}/sys", "sysfs", BASIC),
        MountSpec("run", f"{r}/run", "tmpfs", MS_NOSUID | MS_NODEV, "mode=755"),
        MountSpec("tmp", f"{r}/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777", mode=0o1777),
    ]


def enabled_v1_controllers(proc_cgroups: str) -> list[str]:
    """Controller names /proc/cgroups marks enabled (its 4th column)."""
    names = []
    for line in proc_cgroups.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        parts = line.split()
        if len(parts) >= 4 and parts[3] == "1":
            names.append(parts[0])
    return names


def cgroup_mounts(root: str, layout: str, proc_cgroups: str) -> list[MountSpec]:
    base = root.rstrip("/") + "/sys/fs/cgroup"
    if layout == "v2":
        return [MountSpec("cgroup2", base, "cgroup2", BASIC, "nsdelegate")]
    specs = [MountSpec("cgroup", base, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=755")]
    specs += [
        MountSpec("cgroup", f"{base}/{name}", "cgroup", BASIC, name) for name in enabled_v1_controllers(proc_cgroups)
    ]
    return specs


async def run(ctx: PhaseContext) -> str:
    done = [spec.target for spec in base_mounts(ctx.root) if ensure_mounted(spec, ctx.mounts)]
    cgroup_root = ctx.path("sys/fs/cgroup")
    if is_mountpoint(cgroup_root):
        ctx.state.storage.cgroups = ctx.state.storage.cgroups or "already mounted"
    else:
        with open(ctx.path("proc/cgroups")) as f:
            table = f.read()
        for spec in cgroup_mounts(ctx.root, ctx.config.cgroups, table):
            if ensure_mounted(spec, ctx.mounts):
                done.append(spec.target)
        ctx.state.storage.cgroups = ctx.config.cgroups
    os.makedirs(ctx.path("run/pid1"), exist_ok=True)
    return f"mounted {', '.join(done)}" if done else "already in place"


PHASE = Phase(name="mounts", run=run, needs=("devices",))
