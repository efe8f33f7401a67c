"""devices: /dev as userspace expects it. Needs nothing.

devtmpfs on /dev (unless mounted), devpts on /dev/pts (ptmxmode=666 so any
user's terminal works), tmpfs /dev/shm, mqueue, and the /dev/fd and
/dev/std* links. Anything already there is left alone.
"""

from __future__ import annotations

from pid1.linux.syscalls import MS_NODEV, MS_NOEXEC, MS_NOSUID
from pid1.mounting import MountSpec, ensure_mounted, ensure_symlink
from pid1.phases import Phase, PhaseContext


def device_mounts(root: str) -> list[MountSpec]:
    dev = root.rstrip("/") + "/dev"
    return [
        MountSpec("devtmpfs", dev, "devtmpfs", MS_NOSUID, "mode=755"),
        MountSpec("devpts", f"{dev}/pts", "devpts", MS_NOSUID | MS_NOEXEC, "gid=5,mode=620,ptmxmode=666"),
        MountSpec("shm", f"{dev}/shm", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777", mode=0o1777),
        MountSpec("mqueue", f"{dev}/mqueue", "mqueue", MS_NOSUID | MS_NODEV | MS_NOEXEC),
    ]


def device_links(root: str) -> list[tuple[str, str]]:
    dev = root.rstrip("/") + "/dev"
    return [
        ("/proc/self/fd", f"{dev}/fd"),
        ("/proc/self/fd/0", f"{dev}/stdin"),
        ("/proc/self/fd/1", f"{dev}/stdout"),
        ("/proc/self/fd/2", f"{dev}/stderr"),
    ]


async def run(ctx: PhaseContext) -> str:
    done = [spec.target for spec in device_mounts(ctx.root) if ensure_mounted(spec, ctx.mounts)]
    done += [link for target, link in device_links(ctx.root) if ensure_symlink(target, link)]
    ctx.log.open()  # /dev/kmsg exists now, if it did not at start
    return f"made {', '.join(done)}" if done else "already in place"


PHASE = Phase(name="devices", run=run, needs=())
