"""disks: the one scan of the block devices. Needs mounts (/sys, /dev) and
modules (the disk drivers, and their probing done).

Reads every block device's superblock (pid1.blockdev) once and fills
Wiring.block_scan: the user-data volume (userdata_volume), the blank disks
(autoformat) and the DOCKER disk (storage) are all found in it. A device
that does not answer within pid1.io_timeout ends the scan: the scan says
where it stopped (`hung`), and the boot goes on without the devices not
read. Nothing is mounted or written here.
"""

from __future__ import annotations

from pid1.blockdev import Scan, ScanHangs, scan_bounded
from pid1.phases import Phase, PhaseContext
from pid1.wiring import Wiring


async def run(ctx: PhaseContext) -> str:
    config = ctx.config
    try:
        scan = await scan_bounded(config.storage_label, ctx.path("sys"), ctx.path("dev"), config.io_timeout)
    except ScanHangs as exc:
        ctx.log.error(f"disks: {exc}: a device does not answer")
        ctx.wiring.block_scan = Scan(labelled=[], nodes={}, problems=[], hung=str(exc))
        return f"hangs: {exc}"
    for problem in scan.problems or ():
        ctx.log.info(f"disks: cannot read {problem}")
    ctx.wiring.block_scan = scan
    labels = ", ".join(f"{d.path} {d.fstype} {d.label!r}" for d in scan.labelled or ()) or "no labelled filesystem"
    return f"{scan.seen} block devices: {labels}"


PHASE = Phase(name="disks", run=run, needs=("mounts", "modules"), fills=(Wiring.block_scan,))
