"""Waiting for block devices that come late (a disk still being probed, a
CD-ROM whose driver just loaded): the kernel's uevents about block devices,
and `wait_for_devices`, the one bounded wait the storage and engine phases
use. The scan itself is pid1.blockdev's.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from pid1.linux.uevent import UeventSocket

POLL = 0.1  # with no uevent socket (no netlink), wait_for_devices scans again this often


def is_block_uevent(message: bytes) -> bool:
    """A kernel uevent ("ACTION@DEVPATH\\0KEY=VALUE\\0...") that adds or
    changes a block device (a disk, a partition, a loop device given a file)."""
    parts = message.split(b"\0")
    action = parts[0].split(b"@", 1)[0]
    return action in (b"add", b"change") and b"SUBSYSTEM=block" in parts


def removed_block_device(message: bytes) -> str | None:
    """The DEVNAME of a block device a kernel uevent says was removed, or None."""
    parts = message.split(b"\0")
    if parts[0].split(b"@", 1)[0] != b"remove" or b"SUBSYSTEM=block" not in parts:
        return None
    for part in parts:
        if part.startswith(b"DEVNAME="):
            return part[len(b"DEVNAME=") :].decode(errors="replace")
    return None


class UeventListener:
    """The kernel's device events (pid1.linux.uevent), read for block devices. Open
    it before the first scan so no device added between the scan and the
    wait is missed."""

    def __init__(self) -> None:
        self.events = UeventSocket.open()

    def fileno(self) -> int:
        return self.events.fileno()

    def drain(self) -> bool:
        """Read every queued event; True if one of them concerns a block device
        (or events were lost, which might have hidden one: assume a disk came)."""
        messages, lost = self.events.pending()
        return lost or any(is_block_uevent(message) for message in messages)

    def removed(self) -> tuple[set[str], bool]:
        """Read every queued event: the block devices removed, and whether
        events were lost (one of them might have been a removal)."""
        messages, lost = self.events.pending()
        return {name for name in map(removed_block_device, messages) if name}, lost

    def close(self) -> None:
        self.events.close()


async def readable(fd: int, timeout: float | None) -> None:
    """Wait until fd is readable or timeout seconds have passed (None: no bound)."""
    loop = asyncio.get_running_loop()
    ready = loop.create_future()
    loop.add_reader(fd, lambda: ready.done() or ready.set_result(None))
    try:
        await asyncio.wait_for(ready, timeout)
    except TimeoutError:
        pass
    finally:
        loop.remove_reader(fd)


Found = TypeVar("Found")


async def wait_for_devices(
    find: Callable[[], Awaitable[list[Found]]], deadline: float, on_wait: Callable[[float], None] | None = None
) -> list[Found]:
    """find() (a scan of the block devices), and again after each block
    device's uevent, until it finds something or the time.monotonic()
    `deadline` passes; its last result. The uevent socket is opened before
    the first scan, so no device added in between is missed; without one,
    find() runs every POLL seconds. on_wait(seconds left) is called once
    when the first scan finds nothing and there is time left to wait."""
    try:
        listener: UeventListener | None = UeventListener()
    except OSError:
        listener = None
    try:
        found = await find()
        if not found and on_wait is not None and (left := deadline - time.monotonic()) > 0:
            on_wait(left)
        while not found and (left := deadline - time.monotonic()) > 0:
            if listener is None:
                await asyncio.sleep(min(POLL, left))
            else:
                await readable(listener.fileno(), left)
                if not listener.drain():
                    continue  # an event about something else: keep waiting
            found = await find()
    finally:
        if listener is not None:
            listener.close()
    return found
