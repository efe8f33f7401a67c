"""GUID partition tables (UEFI 2.10, section 5.3), read and grown in plain Python.

The one change pid1 makes to a partition table: the disk image's table,
written to a larger disk, gets its backup header and entries moved to the
disk's new end and its last partition extended to the new last usable LBA,
its end aligned down to 1 MiB (the image's partitions start on 1 MiB
boundaries, as sfdisk and the firmware vendors align them). `plan_growth`
decides from the bytes alone and returns the writes, in the order that
survives a power cut (see `Plan.writes`); the caller does the I/O. Nothing
here touches a device.

Growth is refused unless the table is exactly the image's as built: the
entry array's CRC32 equals the `pid1.grow` word the image build wrote on the
kernel command line, so a table a user changed by hand (or one grown
already) is never rewritten.

Owns: the GPT's layout, its checks and the growth plan. May use: the
standard library only.
"""

from __future__ import annotations

import enum
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass, replace

SIGNATURE = b"EFI PART"
HEADER_MIN = 92  # bytes the header's CRC covers in revision 1.0 (the rest of its sector is zeros)
ENTRY_MIN = 128
ENTRIES_MAX = 1 << 20  # bytes: the spec's minimum is 16 KiB; a larger array is not a table pid1 made
ALIGN = 1 << 20  # bytes: a grown partition ends on a 1 MiB boundary
# The protective MBR: four 16-byte entries at 446; type at +4, first LBA at +8, size in LBAs at +12.
MBR_ENTRIES = 446
MBR_SIGNATURE = b"\x55\xaa"
MBR_PROTECTIVE = 0xEE
NO_GUID = bytes(16)

# The header's fields, little-endian: bytes 0 to 92 of LBA 1 (and of the backup's LBA).
_HEADER = struct.Struct("<8sIIIIQQQQ16sQIII")


class Verdict(enum.Enum):
    """What plan_growth concluded (the value is what the log says, briefly)."""

    GROW = "grow"
    FILLS = "already fills the disk"
    CHANGED = "table changed by hand"
    MBR = "not a GPT disk"
    INVALID = "not a valid GPT"
    MISMATCH = "partition not as the kernel sees it"
    NOT_LAST = "not the last partition"
    TRUNCATED = "disk smaller than its table"


@dataclass(frozen=True)
class Header:
    revision: int
    size: int  # header_size: the bytes its CRC covers
    crc: int
    reserved: int
    my_lba: int
    alternate_lba: int
    first_usable: int
    last_usable: int
    disk_guid: bytes
    entries_lba: int
    entry_count: int
    entry_size: int
    entries_crc: int
    rest: bytes  # what a header_size over 92 covers beyond the known fields

    @classmethod
    def parse(cls, sector: bytes) -> Header:
        """The header in its sector (GptProblem when its size is impossible)."""
        fields = _HEADER.unpack_from(sector)
        size = fields[2]
        if not HEADER_MIN <= size <= len(sector):
            raise GptProblem(Verdict.INVALID, f"the GPT header's size is {size} bytes")
        return cls(*fields[1:], rest=sector[HEADER_MIN:size])

    def pack(self) -> bytes:
        """The header's `size` bytes, with its CRC as stored."""
        return _HEADER.pack(
            SIGNATURE, self.revision, self.size, self.crc, self.reserved, self.my_lba, self.alternate_lba,
            self.first_usable, self.last_usable, self.disk_guid, self.entries_lba, self.entry_count, self.entry_size,
            self.entries_crc,
        ) + self.rest  # fmt: skip

    def computed_crc(self) -> int:
        """The CRC32 of the header with its CRC field zeroed, as the spec defines it."""
        return zlib.crc32(replace(self, crc=0).pack())

    def sealed(self) -> Header:
        """The same header with its CRC computed anew."""
        return replace(self, crc=self.computed_crc())


@dataclass(frozen=True)
class Entry:
    number: int  # the kernel's partition number: its index in the array + 1
    type_guid: bytes
    first_lba: int
    last_lba: int
    name: str

    @property
    def used(self) -> bool:
        return self.type_guid != NO_GUID

    @property
    def sectors(self) -> int:
        return self.last_lba - self.first_lba + 1


@dataclass(frozen=True)
class Table:
    sector_size: int
    header: Header
    entries_raw: bytes  # the whole array, entry_count * entry_size bytes
    mbr_entry: int  # which of the MBR's four entries is the protective one

    def entry(self, number: int) -> Entry | None:
        """Entry `number` (1-based), None when the array has no such slot."""
        if not 1 <= number <= self.header.entry_count:
            return None
        at = (number - 1) * self.header.entry_size
        raw = self.entries_raw[at : at + ENTRY_MIN]
        first, last = struct.unpack_from("<QQ", raw, 32)
        name = raw[56:128].decode("utf-16-le", errors="replace").split("\0", 1)[0]
        return Entry(number, raw[:16], first, last, name)

    def used(self) -> list[Entry]:
        found = (self.entry(n) for n in range(1, self.header.entry_count + 1))
        return [e for e in found if e is not None and e.used]

    @property
    def entries_sectors(self) -> int:
        return -(-len(self.entries_raw) // self.sector_size)


class GptProblem(Exception):
    """Why a disk's table cannot be read as a GPT pid1 may grow."""

    def __init__(self, verdict: Verdict, why: str) -> None:
        super().__init__(why)
        self.verdict = verdict


Read = Callable[[int, int], bytes]  # read(offset, length): os.pread on the disk, or a slice of a file's bytes


def check_protective_mbr(sector0: bytes) -> int:
    """The index of the protective MBR's 0xEE entry. GptProblem(MBR) for an
    MBR disk (the kernel ignores a GPT behind it) or a hybrid MBR (partitions
    the MBR describes too, which growing the GPT would leave stale)."""
    if len(sector0) < 512 or sector0[510:512] != MBR_SIGNATURE:
        raise GptProblem(Verdict.MBR, "sector 0 holds no MBR (a GPT disk has a protective one)")
    types = [sector0[MBR_ENTRIES + 16 * i + 4] for i in range(4)]
    if MBR_PROTECTIVE not in types:
        raise GptProblem(Verdict.MBR, "an MBR partition table (no GPT protective entry)")
    if any(t not in (0, MBR_PROTECTIVE) for t in types) or types.count(MBR_PROTECTIVE) > 1:
        raise GptProblem(Verdict.MBR, "a hybrid MBR (MBR partitions beside the GPT)")
    return types.index(MBR_PROTECTIVE)


def read_table(read: Read, sector_size: int) -> Table:
    """The primary GPT (LBA 1 and its entry array), its CRCs checked.
    GptProblem when there is none, or it is not valid."""
    mbr_entry = check_protective_mbr(read(0, 512))
    sector = read(sector_size, sector_size)
    if sector[:8] != SIGNATURE:
        raise GptProblem(Verdict.MBR, "no GPT header at LBA 1")
    if len(sector) < HEADER_MIN:
        raise GptProblem(Verdict.INVALID, "the GPT header is cut short")
    header = Header.parse(sector)
    if header.computed_crc() != header.crc:
        raise GptProblem(Verdict.INVALID, "the GPT header's CRC is wrong")
    if header.my_lba != 1 or header.entries_lba < 2 or header.first_usable > header.last_usable:
        raise GptProblem(Verdict.INVALID, f"the GPT header's LBAs are not consistent ({header})")
    size = header.entry_count * header.entry_size
    if header.entry_size < ENTRY_MIN or header.entry_size % 8 or not 0 < size <= ENTRIES_MAX:
        raise GptProblem(Verdict.INVALID, f"{header.entry_count} entries of {header.entry_size} bytes")
    entries = read(header.entries_lba * sector_size, size)
    if len(entries) != size:
        raise GptProblem(Verdict.INVALID, "the GPT entry array is cut short")
    if zlib.crc32(entries) != header.entries_crc:
        raise GptProblem(Verdict.INVALID, "the GPT entry array's CRC is wrong")
    return Table(sector_size, header, entries, mbr_entry)


@dataclass(frozen=True)
class Write:
    offset: int  # bytes from the disk's start
    data: bytes
    what: str  # what it is, for the log when it fails
    flush: bool  # fsync before the next write


@dataclass(frozen=True)
class Plan:
    verdict: Verdict
    why: str  # one sentence for the log
    partition: Entry | None = None  # the partition as the table has it now
    new_last_lba: int | None = None  # its last LBA once grown (GROW)
    writes: tuple[Write, ...] = ()  # in order (GROW)


def aligned_end(last_usable: int, sector_size: int) -> int:
    """The last LBA of a partition that ends on a 1 MiB boundary at or before last_usable."""
    per = max(1, ALIGN // sector_size)
    return (last_usable + 1) // per * per - 1


def plan_growth(
    read: Read, disk_bytes: int, sector_size: int, number: int, word: int, kernel_extent: tuple[int, int] | None
) -> Plan:
    """Whether and how to grow partition `number` to the end of the disk.

    `word` is the pid1.grow value (the image's entry-array CRC32);
    `kernel_extent` the partition's (start, size) in 512-byte sectors as the
    kernel has it (sysfs), None to skip that check."""
    try:
        table = read_table(read, sector_size)
    except GptProblem as problem:
        return Plan(problem.verdict, str(problem))
    header = table.header
    part = table.entry(number)
    if part is None or not part.used:
        return Plan(Verdict.MISMATCH, f"the GPT has no partition {number}")
    scale = sector_size // 512
    extent = (part.first_lba * scale, part.sectors * scale)
    if kernel_extent is not None and extent != kernel_extent:
        return Plan(
            Verdict.MISMATCH,
            f"the kernel has partition {number} at 512-byte sectors {kernel_extent[0]}+{kernel_extent[1]}, "
            f"the GPT at {extent[0]}+{extent[1]}: the table changed since the kernel read it",
            part,
        )
    after = [e for e in table.used() if e.number != number and e.last_lba >= part.first_lba]
    if after:
        return Plan(
            Verdict.NOT_LAST, f"partition {after[0].number} ({after[0].name!r}) ends after partition {number} starts",
            part,
        )  # fmt: skip
    last_lba = disk_bytes // sector_size - 1
    if header.alternate_lba > last_lba:
        return Plan(
            Verdict.TRUNCATED, f"the GPT's backup header is at LBA {header.alternate_lba}, past the disk's end "
            f"(LBA {last_lba}): a copy cut short?", part,
        )  # fmt: skip
    last_usable = last_lba - table.entries_sectors - 1
    new_last = aligned_end(last_usable, sector_size)
    if part.last_lba >= new_last:
        return Plan(Verdict.FILLS, f"partition {number} ends at LBA {part.last_lba}, the disk's last usable "
                    f"LBA is {last_usable}", part)  # fmt: skip
    if header.entries_crc != word:
        return Plan(
            Verdict.CHANGED, f"the GPT entry array's CRC is {header.entries_crc:08x}, not the image's "
            f"{word:08x} (pid1.grow): the table is not the image's as built", part,
        )  # fmt: skip
    if header.alternate_lba == last_lba:  # the image's table, its backup at the disk's end already
        return Plan(Verdict.FILLS, f"the disk is the image's size ({last_lba + 1} sectors)", part)
    return Plan(Verdict.GROW, f"partition {number} grows from LBA {part.last_lba} to {new_last}", part, new_last,
                grown_writes(table, number, new_last, last_lba))  # fmt: skip


def grown_writes(table: Table, number: int, new_last: int, last_lba: int) -> tuple[Write, ...]:
    """The writes that move the backup GPT to `last_lba` and end partition
    `number` at `new_last`. The order is what survives a power cut at any
    point: the backup first (at the new end, where nothing the old table
    uses lies), then the primary's entries and last its header (until the
    header is written, the old primary stays whole, or, torn, fails its CRC
    and the firmware and kernel take the new backup), then the protective
    MBR's size (only a hint to tools)."""
    ss, header = table.sector_size, table.header
    at = (number - 1) * header.entry_size + 40  # the entry's last LBA
    entries = table.entries_raw[:at] + struct.pack("<Q", new_last) + table.entries_raw[at + 8 :]
    padded = entries + bytes(table.entries_sectors * ss - len(entries))
    backup_entries = last_lba - table.entries_sectors
    primary = replace(
        header, alternate_lba=last_lba, last_usable=backup_entries - 1, entries_crc=zlib.crc32(entries)
    ).sealed()
    backup = replace(primary, my_lba=last_lba, alternate_lba=1, entries_lba=backup_entries).sealed()
    mbr_size = struct.pack("<I", min(last_lba, 0xFFFFFFFF))  # the disk's size in LBAs, minus the MBR's
    return (
        Write(backup_entries * ss, padded, "the backup GPT entries", flush=False),
        Write(last_lba * ss, sector(backup.pack(), ss), "the backup GPT header", flush=True),
        Write(header.entries_lba * ss, padded, "the primary GPT entries", flush=False),
        Write(ss, sector(primary.pack(), ss), "the primary GPT header", flush=True),
        Write(MBR_ENTRIES + 16 * table.mbr_entry + 12, mbr_size, "the protective MBR's size", flush=True),
    )


def sector(data: bytes, sector_size: int) -> bytes:
    return data + bytes(sector_size - len(data))
