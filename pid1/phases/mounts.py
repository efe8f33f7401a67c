"""mounts: /proc, /sys, /run, /tmp and the cgroup hierarchies. Needs devices.

cgroups follow pid1.cgroups: v2 mounts the unified tree on /sys/fs/cgroup
(the default: Debian's dockerd 20.10 and containerd 1.6 support it fully, and
it is one mount instead of a dozen); v1 mounts a tmpfs there and one hierarchy
per enabled controller that /proc/cgroups lists. Mount points that exist
already are left alone, so running pid1 over a booted system changes nothing.

On a tree it mounted as the machine's PID 1 (a test's namespace shares the
host's tree), pid1 then makes one empty memory cgroup and keeps it
(make_first_memory_cgroup): the first memory cgroup switches the kernel's
kmem and socket accounting on, which rewrites code in the page allocator
and the socket paths on every CPU (static keys). Under qemu's TCG with two
vCPUs, that rewrite raced by the other vCPU in the allocator has hung both
vCPUs for good (at the first container's start, in pid1's boots and the
shell init's alike: docs/faults.md). Here nothing runs beside pid1 yet. It
is kept because removing it would switch the socket key off again, for the
first container to switch on. A failure is said in the detail; the boot
goes on.
"""

from __future__ import annotations

import os

from pid1.linux.procfs import in_first_pid_namespace
from pid1.linux.syscalls import MS_NODEV, MS_NOEXEC, MS_NOSUID, MS_RELATIME
from pid1.mounting import MountSpec, ensure_mounted, is_mountpoint
from pid1.phases import Phase, PhaseContext

BASIC = MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_RELATIME
FIRST_MEMORY_CGROUP = "pid1-first-memory-cgroup"


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


def make_first_memory_cgroup(cgroup_root: str, layout: str) -> str:
    """One empty memory cgroup made under `cgroup_root` (v2: with the memory
    controller enabled for the root's children; v1: in the memory
    hierarchy); what was done, or why not."""
    parent = cgroup_root if layout == "v2" else os.path.join(cgroup_root, "memory")
    child = os.path.join(parent, FIRST_MEMORY_CGROUP)
    try:
        if layout == "v2":
            with open(os.path.join(cgroup_root, "cgroup.subtree_control"), "w") as f:
                f.write("+memory")
        os.mkdir(child)
    except FileExistsError:
        return "first memory cgroup there already"
    except OSError as exc:
        return f"no first memory cgroup ({child}: {exc.strerror or exc})"
    return "first memory cgroup made"


async def run(ctx: PhaseContext) -> str:
    done = [spec.target for spec in base_mounts(ctx.root) if ensure_mounted(spec, ctx.mounts)]
    cgroup_root = ctx.path("sys/fs/cgroup")
    memory = ""
    if is_mountpoint(cgroup_root):
        ctx.state.storage.cgroups = ctx.state.storage.cgroups or "already mounted"
    else:
        with open(ctx.path("proc/cgroups")) as f:
            table = f.read()
        for spec in cgroup_mounts(ctx.root, ctx.config.cgroups, table):
            if ensure_mounted(spec, ctx.mounts):
                done.append(spec.target)
        ctx.state.storage.cgroups = ctx.config.cgroups
        memory = (
            make_first_memory_cgroup(cgroup_root, ctx.config.cgroups)
            if in_first_pid_namespace()
            else "no first memory cgroup: not the machine's first PID namespace (the tree is the host's)"
        )
    os.makedirs(ctx.path("run/pid1"), exist_ok=True)
    mounted = f"mounted {', '.join(done)}" if done else "already in place"
    return f"{mounted}; {memory}" if memory else mounted


PHASE = Phase(name="mounts", run=run, needs=("devices",))
