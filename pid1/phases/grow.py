"""grow: the disk image's DOCKER partition grows to fill a larger disk, once.
Needs storage (it uses Wiring.storage: the ext4 partition it mounted) and
the pid1.grow word (the image's GPT entry CRC, which the image build puts on
the kernel command line; without it nothing is read or written).

The table is rewritten only while it is exactly the image's as built, GPT,
with DOCKER its last partition (pid1/gpt.py decides); then the kernel is
told the partition's new size and the mounted ext4 grows online. An ext4
smaller than a partition that fills the disk already (a growth a power cut
interrupted) grows too. Anything else is left as it is, and the log says why.

Owns: the grow phase (what it reads, writes and says). May use: pid1.gpt
(the decision and the writes), pid1.blockdev (sysfs, nodes, the ext4
superblock), pid1.linux.syscalls (the resize ioctls), pid1.threads.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pid1.blockdev import LabelledDevice, device_node, partition_of, read_ext_blocks
from pid1.linux import procfs, syscalls
from pid1.phases import Phase, PhaseContext
from pid1.threads import bounded
from pid1.wiring import Wiring

if TYPE_CHECKING:
    from pid1.gpt import Plan

MIB = 1 << 20


@dataclass(frozen=True)
class Outcome:
    detail: str  # the phase's detail: what VT2 and the state show
    why: str = ""  # what the log adds
    level: str = "info"  # the log's level: notice (grown), info, warning (refused)


def mib(n_bytes: int) -> str:
    return f"{n_bytes / MIB:.0f}"


def apply(fd: int, plan: Plan) -> None:
    """The plan's writes, in order, flushed where it says."""
    for write in plan.writes:
        if os.pwrite(fd, write.data, write.offset) != len(write.data):
            raise OSError(f"a short write of {write.what}")
        if write.flush:
            os.fsync(fd)


def grow_ext4(partition_node: str, target: str, part_bytes: int) -> tuple[int, int] | None:
    """Grow the ext4 mounted on target to fill part_bytes; (old, new) sizes in
    bytes, or None when it fills its partition already."""
    blocks, block_size = read_ext_blocks(partition_node)
    wanted = part_bytes // block_size
    if wanted <= blocks:
        return None
    fd = os.open(target, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        syscalls.resize_ext4(fd, wanted)
    finally:
        os.close(fd)
    grown, _ = read_ext_blocks(partition_node)  # the superblock as the mounted filesystem wrote it
    return blocks * block_size, grown * block_size


def fill_partition(disk: LabelledDevice, target: str, part_bytes: int) -> tuple[str, str]:
    """Grow the ext4 to fill its partition if it does not: what to say (empty
    when it fills it already) and the log level. A failure is said, not
    raised: the partition is grown, and the next boot tries the filesystem again."""
    try:
        fs = grow_ext4(disk.path, target, part_bytes)
    except OSError as exc:  # the kernel logs its reasons, but not a missing capability
        lacking = " (no CAP_SYS_RESOURCE)" if "SYS_RESOURCE" in procfs.missing_capabilities() else ""
        return f"its ext4 did not grow: {exc.strerror or exc}{lacking}", "warning"
    if fs is None:
        return "", "info"
    return f"its ext4 grew from {mib(fs[0])} to {mib(fs[1])} MiB", "notice"


def grow_disk(disk: LabelledDevice, target: str, word: int, sys_root: str, dev_root: str) -> Outcome:
    """Plan and, when the table is the image's, grow (blocking: run it off the loop)."""
    # Here, not at the top: most boots have no pid1.grow word, and the GPT
    # code's dataclasses are slow to import under emulation (docs/benchmarks.md).
    from pid1.gpt import Verdict, plan_growth

    part = partition_of(disk.device, sys_root)
    if part is None:
        return Outcome("not a partition: left as it is", f"{disk.path} is a whole disk", "warning")
    node = device_node(part.disk, dev_root)
    fd = os.open(node, os.O_RDWR | os.O_CLOEXEC)  # no O_EXCL: the kernel refuses it while a partition is mounted
    try:
        size = os.lseek(fd, 0, os.SEEK_END)
        plan = plan_growth(
            lambda at, n: os.pread(fd, n, at), size, part.sector_size, part.number, word, (part.start, part.sectors)
        )
        where = f"partition {part.number} of {node}"
        if plan.verdict is Verdict.FILLS:
            said, level = fill_partition(disk, target, part.sectors * 512)
            return Outcome("; ".join(filter(None, ("already fills the disk", said))), f"{where}: {plan.why}", level)
        if plan.verdict is not Verdict.GROW or plan.new_last_lba is None or plan.partition is None:
            return Outcome(f"{plan.verdict.value}: left as it is", f"{where}: {plan.why}", "warning")
        apply(fd, plan)
        new_bytes = (plan.new_last_lba - plan.partition.first_lba + 1) * part.sector_size
        try:
            syscalls.resize_partition(fd, part.number, part.start * 512, new_bytes)
        except OSError as exc:
            return Outcome(
                f"table grown, the kernel not told: {exc.strerror or exc}",
                f"{where}: the GPT now ends the partition at LBA {plan.new_last_lba}; the kernel sees it, and the "
                "filesystem grows, at the next boot",
                "warning",
            )
    finally:
        os.close(fd)
    grew = f"grew {disk.label} from {mib(part.sectors * 512)} to {mib(new_bytes)} MiB"
    said, level = fill_partition(disk, target, new_bytes)
    if level == "warning":
        return Outcome(f"{grew}; {said}", where, level)
    return Outcome(grew, f"{where}; {said or 'its ext4 filled it already'}", "notice")


async def run(ctx: PhaseContext) -> str:
    if not ctx.config.grow:
        return "off (no pid1.grow word)"
    storage = ctx.wiring.storage
    disk, target = storage.device, storage.target
    if disk is None or target is None:
        return "nothing to grow: running from RAM" if storage.mode == "ram" else "nothing to grow: mounted before pid1"
    if disk.fstype != "ext4":
        ctx.log.warning(
            f"grow: {disk.path} ({disk.label}) is {disk.fstype}, not ext4: not grown (pid1 grows ext4 only)"
        )
        return f"{disk.fstype}, not ext4: not grown"
    word = int(ctx.config.grow, 16)  # the config checked it: 8 hex digits
    try:
        outcome = await bounded(
            grow_disk, disk, target, word, ctx.path("sys"), ctx.path("dev"), timeout=ctx.config.io_timeout,
            name="pid1-grow",
        )  # fmt: skip
    except TimeoutError:
        ctx.log.warning(f"grow: {disk.path} still growing after {ctx.config.io_timeout:.0f} s (pid1.io_timeout)")
        return "still growing (pid1.io_timeout)"
    ctx.log.write(outcome.level, f"grow: {outcome.detail} ({outcome.why})")
    return outcome.detail


PHASE = Phase(name="grow", run=run, needs=("storage",), uses=(Wiring.storage,), required=False)
