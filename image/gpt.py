"""A GUID partition table of a disk image file or a device, on the build
host: image/boot_media.py checks the table it wrote (and takes the entry
array's CRC for `pid1.grow`), image/esp.py finds the ESP and the BIOS boot
partition of the disk it upgrades. Read-only; sfdisk writes tables.

The parsing is pid1's own (pid1.gpt, the grow phase's: one reader of GPTs,
CRCs checked); this adds the file, the sector size (512, or 4096 on a 4Kn
device) and the partitions by type. The disk image's layout is in
docs/image.md (the disk image).
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from pathlib import Path

from pid1 import gpt as pid1_gpt

BIOS_BOOT = uuid.UUID("21686148-6449-6E6F-744E-656564454649")
EFI_SYSTEM = uuid.UUID("C12A7328-F81F-11D2-BA4B-00A0C93EC93B")
LINUX_DATA = uuid.UUID("0FC63DAF-8483-4772-8E79-3D69D8477DE4")
CRC_OFFSET = 88  # PartitionEntryArrayCRC32 in the header: what `pid1.grow` names


class TableError(ValueError):
    """The file holds no GPT this module can read; the message says why."""


@dataclass(frozen=True)
class Partition:
    number: int  # 1-based, as the kernel and sfdisk number them
    type: uuid.UUID
    first_lba: int
    last_lba: int
    name: str

    def offset(self, sector: int) -> int:
        return self.first_lba * sector

    def size(self, sector: int) -> int:
        return (self.last_lba - self.first_lba + 1) * sector


@dataclass(frozen=True)
class Table:
    sector: int
    backup_lba: int
    first_usable: int
    last_usable: int
    entries_crc: int
    partitions: tuple[Partition, ...]

    def by_type(self, kind: uuid.UUID) -> Partition:
        found = [p for p in self.partitions if p.type == kind]
        if len(found) != 1:
            raise TableError(f"{len(found)} partitions of type {kind}, expected one")
        return found[0]


def read_table(path: Path) -> Table:
    """The primary GPT of path (a file or a block device), its CRCs checked."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        problems = []
        for sector in (512, 4096):
            try:
                table = pid1_gpt.read_table(lambda at, n: os.pread(fd, n, at), sector)
                break
            except pid1_gpt.GptProblem as exc:
                problems.append(f"{sector}-byte sectors: {exc}")
        else:
            raise TableError(f"{path}: no GPT ({'; '.join(problems)})")
    finally:
        os.close(fd)
    header = table.header
    partitions = tuple(
        Partition(e.number, uuid.UUID(bytes_le=e.type_guid), e.first_lba, e.last_lba, e.name) for e in table.used()
    )
    return Table(sector, header.alternate_lba, header.first_usable, header.last_usable, header.entries_crc, partitions)
