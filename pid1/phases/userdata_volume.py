"""userdata_volume: the user-data on a volume, read before the disks are
used. Needs disks (its scan: the volume is one of the devices it read).

A NoCloud volume (filesystem label cidata or CIDATA, ISO 9660 or vfat, with
user-data and meta-data) or an OpenStack config-2 drive
(openstack/latest/user_data and meta_data.json), the first by device name
that has a user-data: mounted read-only, read (no symlinks followed, no
FIFO opened, 1 MiB at most), unmounted. A volume that cannot be read within
READ_TIMEOUT is skipped with the reason. Fills Wiring.volume_userdata for
the userdata phase, which applies the rest.

Because this runs before autoformat and storage, the user-data's keys about
the disks apply to this boot (the kernel command line still wins):
pid1.autoformat, pid1.storage_label, pid1.storage_wait, pid1.docker_root.
A user-data that cannot be parsed gives none; the userdata phase says why.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field

from pid1.blockdev import LabelledDevice, Scan
from pid1.config import KERNEL, USER_DATA, apply_settings
from pid1.host_state import MAX_READ
from pid1.linux import syscalls
from pid1.phases import Phase, PhaseContext
from pid1.threads import bounded
from pid1.wiring import Wiring

NOCLOUD_LABELS = ("cidata", "CIDATA")
CONFIG_DRIVE_LABELS = ("config-2", "CONFIG-2")
READ_TIMEOUT = 10.0  # a volume that does not answer in this time is skipped
# The user-data's keys that decide which disk is used, and how: from a volume
# (read before the disks are used) they apply to this boot.
DISK_KEYS = frozenset({"autoformat", "storage_label", "storage_wait", "docker_root"})


@dataclass(frozen=True)
class Found:
    source: str  # "nocloud /dev/sr0", "config-2 /dev/vdb", "kept copy", "url http://..."
    userdata: bytes
    metadata: bytes


@dataclass
class VolumeSource:
    """What this phase gives the userdata phase."""

    found: Found | None = None  # None: no volume with a user-data
    problems: list[str] = field(default_factory=list)  # volumes passed over, and why
    disk_keys: list[str] = field(default_factory=list)  # DISK_KEYS that applied from it


def read_bounded(path: str, limit: int = MAX_READ) -> bytes | None:
    """A regular file's first `limit` bytes, or None: no symlinks followed, no
    FIFO opened for reading (it could block for ever), nothing unbounded."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        return os.read(fd, limit)
    finally:
        os.close(fd)


def read_volume(device: LabelledDevice, mountpoint: str) -> Found:
    """Mount the volume read-only, read its user-data and meta-data, unmount."""
    os.makedirs(mountpoint, mode=0o700, exist_ok=True)
    flags = syscalls.MS_RDONLY | syscalls.MS_NOSUID | syscalls.MS_NODEV | syscalls.MS_NOEXEC
    syscalls.mount(device.path, mountpoint, device.fstype, flags)
    try:
        if device.label in CONFIG_DRIVE_LABELS:
            base = os.path.join(mountpoint, "openstack/latest")
            userdata = read_bounded(os.path.join(base, "user_data"))
            metadata = read_bounded(os.path.join(base, "meta_data.json"))
            kind = "config-2"
        else:
            userdata = read_bounded(os.path.join(mountpoint, "user-data"))
            metadata = read_bounded(os.path.join(mountpoint, "meta-data"))
            kind = "nocloud"
    finally:
        syscalls.umount(mountpoint)
    if userdata is None:
        raise FileNotFoundError(f"{kind} volume {device.path} has no user-data file")
    return Found(f"{kind} {device.path}", userdata, metadata or b"")


def volumes(scan: Scan) -> list[LabelledDevice]:
    return [d for d in scan.with_label(*NOCLOUD_LABELS, *CONFIG_DRIVE_LABELS) if d.fstype in ("iso9660", "vfat")]


async def first_volume(ctx: PhaseContext, scan: Scan) -> VolumeSource:
    """The first volume that has a user-data, and why the others had none."""
    source = VolumeSource()
    for device in volumes(scan):
        try:
            source.found = await bounded(read_volume, device, ctx.path("run/only-docker/source"),
                                         timeout=READ_TIMEOUT, name="userdata-read")  # fmt: skip
            return source
        except (OSError, TimeoutError) as exc:
            source.problems.append(f"{device.path} ({device.label}): {exc or f'no answer within {READ_TIMEOUT:.0f} s'}")
    return source


def apply_disk_keys(ctx: PhaseContext, found: Found, warnings: list[str]) -> list[str]:
    """DISK_KEYS of the volume's user-data onto the live config (the kernel
    command line wins); the keys that took."""
    from pid1.userdata import UserDataError, parse_userdata

    try:
        data = parse_userdata(found.userdata)
    except UserDataError:
        return []  # the userdata phase says why, once
    settings = {name: value for name, value in data.settings.items() if name in DISK_KEYS}
    for name in sorted(settings):
        if ctx.config.origins.get(name) == KERNEL:
            warnings.append(f"pid1.{name}: the kernel command line's value wins over the user-data's")
            del settings[name]
    return apply_settings(ctx.config, settings, USER_DATA, warnings)


def shown_value(value: object) -> str:
    return ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)


async def run(ctx: PhaseContext) -> str:
    source = await first_volume(ctx, ctx.wiring.block_scan)
    ctx.wiring.volume_userdata = source
    if source.found is None:
        return "no user-data volume" + (f" ({len(source.problems)} passed over)" if source.problems else "")
    warnings: list[str] = []
    source.disk_keys = apply_disk_keys(ctx, source.found, warnings)
    for warning in warnings:
        ctx.log.warning(f"userdata: {warning}")
    if source.disk_keys:
        shown = ", ".join(f"pid1.{name}={shown_value(getattr(ctx.config, name))}" for name in source.disk_keys)
        ctx.log.info(f"userdata: from {source.found.source}, for the disks: {shown}")
    return f"{source.found.source}" + (f": {', '.join(source.disk_keys)}" if source.disk_keys else "")


PHASE = Phase(name="userdata_volume", run=run, needs=("disks",), required=False,
              fills=(Wiring.volume_userdata,), uses=(Wiring.block_scan,))  # fmt: skip
