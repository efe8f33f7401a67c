"""Mount helpers shared by the host phases: mount a filesystem only when its
target is not a mount point already, and record it so the orderly stop can
unmount what pid1 mounted (and nothing else).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from pid1.linux import syscalls
from pid1.wiring import MountTable


@dataclass(frozen=True)
class MountSpec:
    source: str
    target: str
    fstype: str
    flags: int = 0
    data: str = ""
    mode: int = 0o755


def is_mountpoint(path: str) -> bool:
    """Works before /proc is mounted (st_dev differs from the parent's)."""
    return os.path.ismount(path)


def ensure_mounted(spec: MountSpec, mounted: MountTable) -> bool:
    """Mount spec unless its target is already a mount point; True if mounted
    now (and recorded in `mounted`). Safe from a worker thread."""
    if is_mountpoint(spec.target):
        return False
    os.makedirs(spec.target, mode=spec.mode, exist_ok=True)
    syscalls.mount(spec.source, spec.target, spec.fstype, spec.flags, spec.data)
    mounted.add(spec.target)
    return True


def ensure_symlink(target: str, link: str) -> bool:
    """Create link -> target unless link exists already; True if created."""
    if os.path.lexists(link):
        return False
    os.symlink(target, link)
    return True
