"""storage: the docker data root. Needs mounts (/sys, /proc), modules (ext4),
disks (the scan of the block devices) and autoformat (the blank disks it
made DOCKER, and through it userdata_volume, which may name the label).

Takes the block device whose filesystem label is pid1.storage_label
(DOCKER), from the disks phase's scan or autoformat's list, the first by
name, and mounts it on pid1.docker_root (/var/lib/docker). With no such
disk, or one that fails to mount, a tmpfs goes there instead and the log and
state say "running from RAM" (and why); so does a scan that did not finish
within pid1.io_timeout (a device that hangs: the boot goes on without it).
A docker root that is a mount point already is left as it is and only
recorded. Nothing is ever formatted here.

Fills `Wiring.storage` (a StorageResult: the mode, the disk mounted and
where, and the callbacks to call when the mounted disk goes away) and uses `Wiring.block_scan`,
`Wiring.formatted_disks` and `Wiring.disk_drivers_loaded_at`.
"""

from __future__ import annotations

import asyncio
import os
import time

from pid1.blockdev import LabelledDevice, Scan, ScanHangs, read_superblock, scan_bounded
from pid1.blockwait import UeventListener, readable, wait_for_devices
from pid1.linux.mountinfo import MountEntry, mount_at, read_mountinfo
from pid1.mounting import MountSpec, ensure_mounted, is_mountpoint
from pid1.phases import Phase, PhaseContext
from pid1.state_schema import StorageMode, StorageStatus
from pid1.threads import bounded
from pid1.wiring import StorageResult, Wiring

# Without udev's event queue, a missing disk may just be a disk still being
# probed (virtio/USB/SCSI probing can finish after the driver's module is
# loaded). So when the first scan finds no labelled device, the phase waits
# up to pid1.storage_wait seconds, re-scanning on each block-device uevent
# from the kernel's netlink socket, the same events udev gets: a late disk is
# mounted the moment it appears, with no polling. inotify is no alternative:
# sysfs does not report new entries to it. The devices are read once more
# after the socket is open, so a disk added since the disks phase's scan is
# not missed.
# Without the socket (e.g. no netlink), the phase re-scans every
# pid1.blockwait.POLL seconds (wait_for_devices, which the engine phase's wait
# for its boot medium uses too).
# The wait counts from when the modules phase loaded the disk drivers, and
# is short (0.5 s by default): finit_module returns only after the async
# probing its module's init scheduled (do_init_module runs
# async_synchronize_full), so the disks behind ATA, AHCI, virtio and
# virtio-scsi drivers are there when the modules phase ends. The wait is for
# what settles later (a USB disk's settle delay, hardware slow to show up).
# pid1.storage_wait=0 skips it.
RAM_MODES = ("tmpfs", "ramfs")
# ext2 and ext3 are mounted by the ext4 driver (Debian's kernels have no
# separate ext2/ext3 drivers: CONFIG_EXT4_USE_FOR_EXT2), and ext4 is the
# module the modules phase loads.
MOUNT_TYPE = {"ext2": "ext4", "ext3": "ext4"}


def record(
    ctx: PhaseContext, mode: StorageMode, device: str, fstype: str, target: str, preexisting: bool,
    label: str | None = None, error: str | None = None,
) -> None:  # fmt: skip
    """Publish the storage mode in the state (next to what other phases keep
    in state.storage, e.g. cgroups); `run` fills the slot for later phases."""
    ctx.state.storage.update(mode=mode, device=device, fstype=fstype, label=label, error=error, target=target,
                             preexisting=preexisting)  # fmt: skip
    ctx.store.changed()


async def record_existing(ctx: PhaseContext, target: str) -> str:
    table = read_mountinfo(ctx.path("proc/self/mountinfo"), "/proc/self/mountinfo")
    entry = mount_at(os.path.realpath(target), table) or MountEntry(target, "?", "?", 0, 0)
    label = None
    if entry.source.startswith("/"):
        try:
            found = await bounded(read_superblock, entry.source, timeout=ctx.config.io_timeout, name="pid1-storage")
            label = found.label if found else None
        except (OSError, TimeoutError):
            pass  # a source that is not a readable device (a bind mount, a vanished node), or one that hangs
    mode = StorageMode.RAM if entry.fstype in RAM_MODES else StorageMode.DISK
    record(ctx, mode, device=entry.source, fstype=entry.fstype, label=label, target=target, preexisting=True)
    ctx.log.info(f"storage: {target} is mounted already ({entry.fstype} from {entry.source}): left as it is")
    return f"already mounted ({mode}: {entry.fstype} from {entry.source})"


def labelled_disks(scan: Scan, formatted: list[LabelledDevice], label: str) -> list[LabelledDevice]:
    """The devices carrying `label`, the first by kernel name first, so the
    choice does not depend on probing order (autoformat's are among them)."""
    found = {d.path: d for d in scan.with_label(label)}
    found.update({d.path: d for d in formatted if d.label == label})
    return sorted(found.values(), key=lambda d: d.device.name)


async def find_disk(
    ctx: PhaseContext, scan: Scan, formatted: list[LabelledDevice]
) -> tuple[list[LabelledDevice], float]:
    """The labelled disks, waiting up to storage_wait for one to appear when
    there is none. Returns them and the seconds spent waiting; ScanHangs
    when a scan does not finish."""
    label, sys_root, dev_root = ctx.config.storage_label, ctx.path("sys"), ctx.path("dev")
    disks = labelled_disks(scan, formatted, label)
    started = time.monotonic()
    if disks or ctx.config.storage_wait <= 0:
        return disks, 0.0
    # A late disk is one still being probed after its driver loaded: the wait
    # counts from when the modules phase loaded the disk drivers (the
    # docker_modules phase runs meanwhile), not from now.
    loaded_at = ctx.wiring.maybe(Wiring.disk_drivers_loaded_at)
    drivers_loaded = started if loaded_at is None else min(loaded_at, started)
    deadline = drivers_loaded + ctx.config.storage_wait
    timeout = ctx.config.io_timeout

    async def rescan() -> list[LabelledDevice]:
        return labelled_disks(await scan_bounded(label, sys_root, dev_root, timeout), formatted, label)

    def waiting(left: float) -> None:
        ctx.log.info(f"storage: no disk labelled {label} yet: waiting up to {left:.1f} s more for one")

    disks = await wait_for_devices(rescan, deadline, waiting)
    return disks, time.monotonic() - started


async def watch_disk(ctx: PhaseContext, disk: LabelledDevice, target: str, result: StorageResult) -> None:
    """The service: the mounted DOCKER disk going away (unplugged, a cloud
    volume detached) is said at once, in the log and the state, rather than
    left to the kernel's I/O errors. Nothing can be done for what dockerd
    writes there meanwhile; the machine stays up for what runs in memory.
    The result's when_disk_gone callbacks run first (the boot logs' end)."""
    try:
        listener = UeventListener()
    except OSError as exc:
        ctx.log.debug(f"storage: no uevent socket ({exc}): a removed disk is not noticed")
        return
    try:
        while True:
            await readable(listener.fileno(), None)
            gone, lost = listener.removed()
            if disk.device.devname in gone or (lost and not os.path.exists(disk.path)):
                for callback in result.when_disk_gone:
                    try:
                        callback()
                    except Exception as exc:
                        ctx.log.error(f"storage: after the disk went away: {exc!r}")
                error = (f"{disk.path} (label {disk.label}) was removed while mounted on {target}: docker's data "
                         "there can no longer be read or written; put the disk back and reboot")  # fmt: skip
                ctx.log.error(f"storage: {error}")
                ctx.state.storage.update(status=StorageStatus.GONE, error=error)
                ctx.store.changed()
                return
    finally:
        listener.close()


def mount_ram(ctx: PhaseContext, target: str, why: str, error: str | None = None) -> str:
    ensure_mounted(MountSpec("tmpfs", target, "tmpfs", data="mode=711", mode=0o711), ctx.mounts)
    record(ctx, StorageMode.RAM, device="tmpfs", fstype="tmpfs", error=error, target=target, preexisting=False)
    ctx.log.notice(f"running from RAM: {why}; docker data on {target} is lost at power-off")
    return f"running from RAM ({why})"


async def run(ctx: PhaseContext) -> str:
    result = StorageResult(mode=StorageMode.RAM)
    detail = await place_data_root(ctx, result)
    result.mode = ctx.state.storage.mode or StorageMode.RAM  # what record() said
    ctx.wiring.storage = result
    return detail


async def place_data_root(ctx: PhaseContext, result: StorageResult) -> str:
    """The labelled disk, else a tmpfs, on the data root (or the mount found there)."""
    target = ctx.path(ctx.config.docker_root)
    label = ctx.config.storage_label
    if is_mountpoint(target):
        return await record_existing(ctx, target)
    scan = ctx.wiring.block_scan
    if scan.hung:
        return mount_ram(ctx, target, f"the disk scan hangs: {scan.hung}", error=scan.hung)
    try:
        disks, waited = await find_disk(ctx, scan, ctx.wiring.maybe(Wiring.formatted_disks) or [])
    except ScanHangs as exc:
        ctx.log.error(f"storage: {exc}: a device does not answer")
        return mount_ram(ctx, target, f"the disk scan hangs: {exc}", error=str(exc))
    if not disks:
        why = f"no disk labelled {label} ({scan.seen} block devices checked, waited {waited:.1f} s)"
        return mount_ram(ctx, target, why)

    disk, duplicates = disks[0], disks[1:]
    for other in duplicates:
        ctx.log.warning(f"storage: {other.path} is labelled {label} too: ignored, using {disk.path}")
    spec = MountSpec(disk.path, target, MOUNT_TYPE.get(disk.fstype, disk.fstype), mode=0o711)
    try:
        # A mount can take seconds (journal replay): off the loop, like the scan.
        # The thread records the mount itself, so a stop that cancels this
        # phase meanwhile still unmounts it.
        await asyncio.to_thread(ensure_mounted, spec, ctx.mounts)
    except OSError as exc:
        # The kernel logs its reason (e.g. "EXT4-fs (vdb): bad geometry") to dmesg.
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        error = f"{disk.path} ({disk.fstype}, label {label}) failed to mount on {target}: {reason} (dmesg says why)"
        ctx.log.error(f"storage: {error}")
        return mount_ram(ctx, target, f"the disk labelled {label} failed to mount: {reason}", error=error)
    record(ctx, StorageMode.DISK, device=disk.path, fstype=disk.fstype, label=label, target=target, preexisting=False)
    result.device, result.target = disk, target
    ctx.log.notice(f"storage: {disk.path} ({disk.fstype}, label {label}) mounted on {target}")
    ctx.start_service("storage watch", lambda: watch_disk(ctx, disk, target, result))
    return f"{disk.path} ({disk.fstype}) on {target}"


PHASE = Phase(
    name="storage",
    run=run,
    needs=("mounts", "modules", "disks", "autoformat"),
    fills=(Wiring.storage,),
    uses=(Wiring.block_scan, Wiring.formatted_disks, Wiring.disk_drivers_loaded_at),
)
