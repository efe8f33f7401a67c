"""autoformat: blank devices listed in pid1.autoformat become the DOCKER disk
(pid1.autoformat decides what is blank; anything else is left untouched and
the log says what it holds). Needs disks (the devices the scan read) and
userdata_volume (a user-data volume may list the devices: it is read first).
Fills Wiring.formatted_disks, the devices it made DOCKER, which storage
uses at once without scanning again, and Wiring.boot2docker_files: a
boot2docker userdata.tar found on a device, which the userdata phase keeps
(its files and SSH keys) in the host state.
"""

from __future__ import annotations

import asyncio
import os

from pid1.autoformat import device_path, examine, mke2fs_argv
from pid1.blockdev import LabelledDevice, Scan
from pid1.phases import Phase, PhaseContext
from pid1.threads import bounded
from pid1.wiring import Wiring

EXAMINE_TIMEOUT = 10.0  # a device that does not answer a 1 MiB read in this time is skipped
FORMAT_TIMEOUT = 300.0


def tail(path: str, size: int = 600) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(max(os.fstat(f.fileno()).st_size - size, 0))
            return f.read().decode(errors="replace").strip()
    except OSError:
        return ""


async def format_device(ctx: PhaseContext, path: str) -> str | None:
    """mke2fs; None when it worked, else why not."""
    log_path = os.path.join(ctx.config.state_dir, "autoformat.log")
    child = ctx.reaper.spawn(mke2fs_argv(path, ctx.config.storage_label), stdout=log_path, stderr=log_path)
    try:
        code = await asyncio.wait_for(child.wait(), FORMAT_TIMEOUT)
    except TimeoutError:
        child.signal(9)
        return f"mke2fs did not finish within {FORMAT_TIMEOUT:.0f} s"
    return None if code == 0 else f"mke2fs exited with {code}: {tail(log_path)}"


def made_disk(scan: Scan, path: str, label: str) -> LabelledDevice | None:
    """The formatted device as the scan knows it (by device number: the
    name the user listed may be another path to the same node)."""
    try:
        rdev = os.stat(path).st_rdev
    except OSError:
        return None
    for node, device in (scan.nodes or {}).items():
        if os.makedev(device.major, device.minor) == rdev:
            return LabelledDevice(device, node, "ext4", label)
    return None


async def run(ctx: PhaseContext) -> str:
    ctx.wiring.formatted_disks = formatted = []
    if not ctx.config.autoformat:
        return "no device listed (pid1.autoformat)"
    scan = ctx.wiring.block_scan
    done = []
    for name in ctx.config.autoformat:
        path = device_path(name, ctx.path("dev"))
        try:
            verdict = await bounded(examine, path, timeout=EXAMINE_TIMEOUT, name="pid1-autoformat")
        except TimeoutError:
            ctx.log.warning(f"autoformat: {path} did not answer a read within {EXAMINE_TIMEOUT:.0f} s: left as it is")
            continue
        if not verdict.blank:
            ctx.log.notice(f"autoformat: {path} {verdict.why}")
            done.append(f"{path} kept")
            continue
        ctx.log.notice(f"autoformat: {path}: {verdict.why}: formatting it ext4, label {ctx.config.storage_label}")
        error = await format_device(ctx, path)
        if error:
            ctx.log.error(f"autoformat: {path}: {error}")
            done.append(f"{path} failed")
            continue
        if verdict.boot2docker_files:
            kept = ctx.wiring.maybe(Wiring.boot2docker_files)
            if kept is None:
                kept = ctx.wiring.boot2docker_files = {}
            kept.update(verdict.boot2docker_files)
            ctx.log.info(f"autoformat: {path}: kept {len(verdict.boot2docker_files)} files of its userdata.tar")
        made = made_disk(scan, path, ctx.config.storage_label)
        if made is None:
            ctx.log.warning(f"autoformat: {path} is not among the devices the scan read: storage looks for it again")
        else:
            formatted.append(made)
        done.append(f"{path} formatted")
    return ", ".join(done)


PHASE = Phase(name="autoformat", run=run, needs=("disks", "userdata_volume"), required=False,
              fills=(Wiring.formatted_disks, Wiring.boot2docker_files), uses=(Wiring.block_scan,))  # fmt: skip
