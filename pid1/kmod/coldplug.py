"""The devices that want drivers: every modalias under /sys/devices (the
coldplug walk), and ModaliasWatch, the modaliases of devices added later,
read from the kernel's uevents.

Owns: read_modalias, scan_modaliases, uevent_modalias, ModaliasWatch.
May use: pid1.linux.uevent (the one uevent socket); reads sysfs only.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from pid1.linux.uevent import UeventSocket

if TYPE_CHECKING:
    import socket

# Room for the burst of events a driver's load makes (a virtio or ATA driver adds many devices at once).
RECEIVE_BUFFER = 1 << 20


def read_modalias(path: str) -> str | None:
    try:
        with open(path, "rb") as f:
            text = f.read().decode(errors="replace").strip()
    except OSError:
        return None  # a device gone meanwhile, or an attribute that refuses reads
    return text or None


def scan_modaliases(devices_dir: str) -> list[str]:
    """Every distinct `modalias` under /sys/devices, in walk order. sysfs links
    every device many times over; following only real directories (never
    symlinks) visits each device once and keeps the walk finite."""
    seen: dict[str, None] = {}
    stack = [devices_dir]
    while stack:
        directory = stack.pop()
        try:
            it = os.scandir(directory)
        except OSError:
            continue
        subdirs = []
        with it:
            for entry in it:
                try:
                    if entry.is_symlink():
                        continue
                    if entry.name == "modalias" and entry.is_file(follow_symlinks=False):
                        alias = read_modalias(entry.path)
                        if alias:
                            seen.setdefault(alias, None)
                    elif entry.is_dir(follow_symlinks=False):
                        subdirs.append(entry.path)
                except OSError:
                    continue
        stack.extend(reversed(subdirs))
    return list(seen)


def uevent_modalias(message: bytes) -> str | None:
    """MODALIAS of a kernel "add" uevent ("add@DEVPATH\\0KEY=VALUE\\0..."), else None."""
    if not message.startswith(b"add@"):
        return None
    for field_ in message.split(b"\0")[1:]:
        if field_.startswith(b"MODALIAS="):
            return field_[len(b"MODALIAS=") :].decode(errors="replace").strip() or None
    return None


class ModaliasWatch:
    """The kernel's uevents, read for the modaliases of devices added while
    modules load (a driver adds devices: virtio_pci the virtio devices, an
    ATA driver the SCSI devices behind it), so that finding their drivers
    needs no second walk of /sys (slow under emulation: docs/benchmarks.md).
    `take()` returns None when events may have been lost (the queue
    overflowed): walk /sys again then."""

    def __init__(self, sock: socket.socket) -> None:
        self.events = UeventSocket(sock)

    @classmethod
    def open(cls) -> ModaliasWatch | None:
        """None where uevents cannot be had (no netlink, no permission)."""
        try:
            events = UeventSocket.open(receive_buffer=RECEIVE_BUFFER)
        except OSError:
            return None
        return cls(events.sock)

    def take(self) -> list[str] | None:
        messages, lost = self.events.pending()
        if lost:
            return None
        found: dict[str, None] = {}
        for message in messages:
            alias = uevent_modalias(message)
            if alias:
                found.setdefault(alias, None)
        return list(found)

    def close(self) -> None:
        self.events.close()
