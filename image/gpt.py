"""Reads a GUID partition table from a disk image file or a device, on the
build host: image/boot_media.py checks the table it wrote (and takes the
entry array's CRC for `pid1.grow`), image/esp.py finds the ESP and the BIOS
boot partition of the disk it upgrades. Read-only; sfdisk writes tables.

Needs nothing but the file. The disk image's layout, which pid1's grow
phase relies on, is in docs/image.md (the disk image).
"""

from __future__ import annotations

import struct
import uuid
import zlib
from dataclasses import dataclass
from pathlib import Path

SIGNATURE = b"EFI PART"
BIOS_BOOT = uuid.UUID("21686148-6449-6E6F-744E-656564454649")
EFI_SYSTEM = uuid.UUID("C12A7328-F81F-11D2-BA4B-00A0C93EC93B")
LINUX_DATA = uuid.UUID("0FC63DAF-8483-4772-8E79-3D69D8477DE4")
# The GPT header fields this module reads (UEFI 2.10, 5.3.2), after the signature.
HEADER = struct.Struct("<8sIII4xQQQQ16sQIII")
ENTRY = struct.Struct("<16s16sQQQ72s")
CRC_OFFSET = 88  # PartitionEntryArrayCRC32 in the header: what `pid1.grow` names


class TableError(ValueError):
    """The file holds no GPT this module can read; the message says why."""


@dataclass(frozen=True)
class Partition:
    number: int  # 1-based, as the kernel and sfdisk number them
    type: uuid.UUID
    guid: uuid.UUID
    first_lba: int
    last_lba: int
    name: str

    def offset(self, sector: int) -> int:
        return self.first_lba * sector

    def size(self, sector: int) -> int:
        return (self.last_lba - self.first_lba + 1) * sector


@dataclass(frozen=True)
class Table:
    sector: int  # logical sector size: 512, or 4096 on a 4Kn device
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
    with open(path, "rb") as disk:
        for sector in (512, 4096):
            disk.seek(sector)
            raw = disk.read(sector)
            if raw[:8] == SIGNATURE:
                break
        else:
            raise TableError(f"{path}: no GPT header ('EFI PART' at byte 512 or 4096)")
        fields = HEADER.unpack_from(raw)
        _, _, header_size, header_crc, _, backup, first, last, _, entries_lba, count, entry_size, entries_crc = fields
        if not 92 <= header_size <= sector:
            raise TableError(f"{path}: GPT header size {header_size}")
        check = bytearray(raw[:header_size])
        check[16:20] = bytes(4)
        if zlib.crc32(check) != header_crc:
            raise TableError(f"{path}: the GPT header's CRC does not match")
        if entry_size < ENTRY.size or count > 1024:
            raise TableError(f"{path}: GPT entries of {entry_size} bytes, {count} of them")
        disk.seek(entries_lba * sector)
        array = disk.read(count * entry_size)
    if len(array) != count * entry_size or zlib.crc32(array) != entries_crc:
        raise TableError(f"{path}: the GPT entry array's CRC does not match")
    partitions = []
    for number in range(count):
        kind, guid, start, end, _, name = ENTRY.unpack_from(array, number * entry_size)
        if kind != bytes(16):
            partitions.append(
                Partition(
                    number=number + 1,
                    type=uuid.UUID(bytes_le=kind),
                    guid=uuid.UUID(bytes_le=guid),
                    first_lba=start,
                    last_lba=end,
                    name=name.decode("utf-16-le").rstrip("\0"),
                )
            )
    return Table(sector, backup, first, last, entries_crc, tuple(partitions))
