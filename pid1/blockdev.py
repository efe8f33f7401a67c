"""Block devices and filesystem labels, read straight from the kernel's view.

No blkid, no udev: `/sys/class/block` lists the disks and partitions, each
one's `dev` file gives its device number (a node is made under /dev when
devtmpfs has none, e.g. in a test root), and the label comes from the
superblock itself: ext2/3/4, xfs and btrfs (the DOCKER disk), ISO 9660 and
vfat (a NoCloud `cidata` or OpenStack `config-2` volume); a partition's
disk and extent come from sysfs too. Nothing here writes to a device.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass
from typing import NamedTuple

from pid1.linux import syscalls

SECTOR = 512

# ext2/3/4: the superblock starts at 1024; s_magic (le16) at +56, s_volume_name[16] at +120.
EXT_SB = 1024
EXT_MAGIC = b"\x53\xef"
EXT_FEATURE_COMPAT_HAS_JOURNAL = 0x4
# Incompat/ro-compat features ext3 never had: their presence makes it ext4.
EXT4_INCOMPAT = 0x40 | 0x80 | 0x200 | 0x400 | 0x10000 | 0x8000  # extents, 64bit, flex_bg, mmp, inline_data, csum_seed
EXT4_RO_COMPAT = 0x8 | 0x20 | 0x40 | 0x400  # huge_file, dir_nlink, extra_isize, metadata_csum
# xfs: sb_magicnum "XFSB" at 0 (big endian), sb_fname[12] at 108.
XFS_MAGIC = b"XFSB"
XFS_LABEL = 108
# btrfs: the primary superblock is at 64 KiB; magic at +64, label[256] at +299.
BTRFS_SB = 65536
BTRFS_MAGIC = b"_BHRfS_M"
BTRFS_LABEL = 299
# ISO 9660: the primary volume descriptor is sector 16 (of 2048 bytes): type 1,
# "CD001", the volume identifier (32 bytes, space-padded) at +40.
ISO_PVD = 16 * 2048
ISO_MAGIC = b"\x01CD001"
# vfat: the boot sector's BS_FilSysType names the FAT; the label (11 bytes,
# space-padded) sits 0x47 for FAT32 and 0x2B for FAT12/16, as mkfs.fat writes it.
FAT32_TYPE, FAT32_LABEL = 0x52, 0x47
FAT16_TYPE, FAT16_LABEL = 0x36, 0x2B


class FsLabel(NamedTuple):
    fstype: str  # ext2, ext3, ext4, xfs, btrfs, iso9660, vfat
    label: str


def _cstring(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("utf-8", errors="replace")


def _ext_type(sb: bytes) -> str:
    compat = int.from_bytes(sb[92:96], "little")
    incompat = int.from_bytes(sb[96:100], "little")
    ro_compat = int.from_bytes(sb[100:104], "little")
    if incompat & EXT4_INCOMPAT or ro_compat & EXT4_RO_COMPAT:
        return "ext4"
    return "ext3" if compat & EXT_FEATURE_COMPAT_HAS_JOURNAL else "ext2"


def parse_superblocks(head: bytes, btrfs_sb: bytes, iso_pvd: bytes = b"") -> FsLabel | None:
    """The filesystem in a device's first 4 KiB (`head`), 4 KiB at 64 KiB and
    the 2 KiB at 32 KiB (where ISO 9660 keeps its volume descriptor)."""
    ext = head[EXT_SB : EXT_SB + 1024]
    if len(ext) >= 136 and ext[56:58] == EXT_MAGIC:
        return FsLabel(_ext_type(ext), _cstring(ext[120:136]))
    if len(head) >= XFS_LABEL + 12 and head[:4] == XFS_MAGIC:
        return FsLabel("xfs", _cstring(head[XFS_LABEL : XFS_LABEL + 12]))
    if len(btrfs_sb) >= BTRFS_LABEL + 256 and btrfs_sb[64:72] == BTRFS_MAGIC:
        return FsLabel("btrfs", _cstring(btrfs_sb[BTRFS_LABEL : BTRFS_LABEL + 256]))
    if iso_pvd[:6] == ISO_MAGIC:
        return FsLabel("iso9660", iso_pvd[40:72].decode("ascii", errors="replace").rstrip(" \0"))
    if head[510:512] == b"\x55\xaa":
        for kind, label_at in ((FAT32_TYPE, FAT32_LABEL), (FAT16_TYPE, FAT16_LABEL)):
            if head[kind : kind + 3] == b"FAT":
                label = head[label_at : label_at + 11].decode("ascii", errors="replace").rstrip(" \0")
                return FsLabel("vfat", "" if label == "NO NAME" else label)
    return None


def read_superblock(path: str) -> FsLabel | None:
    """(fstype, label) of the filesystem on a device or image file, or None
    when it holds none that pid1 knows (or is too short to hold one)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        head = os.pread(fd, 4096, 0)
        btrfs_sb = os.pread(fd, 4096, BTRFS_SB)
        iso_pvd = os.pread(fd, 2048, ISO_PVD)
    finally:
        os.close(fd)
    return parse_superblocks(head, btrfs_sb, iso_pvd)


@dataclass(frozen=True)
class BlockDevice:
    name: str  # the kernel's name in /sys/class/block (vda1, loop3, dm-0)
    devname: str  # the node's path below /dev (from DEVNAME in uevent)
    major: int
    minor: int
    sectors: int  # size in 512-byte sectors
    partition: bool


# Devices that cannot hold the docker disk: RAM disks and compressed swap.
SKIPPED_PREFIXES = ("ram", "zram")


def _read(path: str) -> str:
    with open(path) as f:
        return f.read().strip()


def _uevent(path: str) -> dict[str, str]:
    try:
        text = _read(path)
    except OSError:
        return {}
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def list_block_devices(sys_root: str = "/sys") -> list[BlockDevice]:
    """Disks and partitions the kernel knows, by name; empty devices (a loop
    device with nothing attached, a CD drive without a disc) are left out."""
    base = os.path.join(sys_root, "class/block")
    try:
        names = sorted(os.listdir(base))
    except OSError:
        return []
    found = []
    for name in names:
        if name.startswith(SKIPPED_PREFIXES):
            continue
        entry = os.path.join(base, name)
        try:
            major, minor = (int(x) for x in _read(os.path.join(entry, "dev")).split(":"))
            sectors = int(_read(os.path.join(entry, "size")))
        except (OSError, ValueError):
            continue  # vanished while listing, or not a block device entry
        if sectors == 0:
            continue
        uevent = _uevent(os.path.join(entry, "uevent"))
        devname = uevent.get("DEVNAME") or name.replace("!", "/")
        partition = uevent.get("DEVTYPE") == "partition" or os.path.exists(os.path.join(entry, "partition"))
        found.append(BlockDevice(name, devname, major, minor, sectors, partition))
    return found


def device_node(device: BlockDevice, dev_root: str = "/dev") -> str:
    """The path of the device's node under dev_root, made when missing (a
    devtmpfs has it already; a test root's tmpfs /dev does not). A node that
    exists but is not this device is an error: opening it would read another."""
    path = os.path.join(dev_root, device.devname)
    want = os.makedev(device.major, device.minor)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        try:
            syscalls.mknod_block(path, device.major, device.minor)
        except FileExistsError:
            pass  # made meanwhile (devtmpfs or a concurrent scan); checked below
        st = os.stat(path)
    if not stat.S_ISBLK(st.st_mode) or st.st_rdev != want:
        raise OSError(errno.EEXIST, f"{path} exists but is not block device {device.major}:{device.minor}")
    return path


@dataclass(frozen=True)
class Partition:
    """A partition as the kernel has it, and the disk that holds it."""

    disk: BlockDevice
    number: int  # the kernel's partition number (a GPT entry's index + 1)
    start: int  # in 512-byte sectors, as sysfs says
    sectors: int
    sector_size: int  # the disk's logical block size: a GPT's LBA


def partition_of(device: BlockDevice, sys_root: str = "/sys") -> Partition | None:
    """The disk holding `device` and where on it the device lies, from
    sysfs (a partition's directory sits in its disk's); None when the device
    is not a partition (a whole disk, a loop device without partitions)."""
    entry = os.path.realpath(os.path.join(sys_root, "class/block", device.name))
    try:
        number = int(_read(os.path.join(entry, "partition")))
        start = int(_read(os.path.join(entry, "start")))
        sectors = int(_read(os.path.join(entry, "size")))
        parent = os.path.dirname(entry)
        major, minor = (int(x) for x in _read(os.path.join(parent, "dev")).split(":"))
        disk_sectors = int(_read(os.path.join(parent, "size")))
    except (OSError, ValueError):
        return None
    try:
        sector_size = int(_read(os.path.join(parent, "queue/logical_block_size")))
    except (OSError, ValueError):
        sector_size = SECTOR
    name = os.path.basename(parent)
    devname = _uevent(os.path.join(parent, "uevent")).get("DEVNAME") or name.replace("!", "/")
    return Partition(BlockDevice(name, devname, major, minor, disk_sectors, False), number, start, sectors, sector_size)


# ext4's superblock: s_blocks_count_lo at +4, s_log_block_size at +24, the
# incompat features at +96 (64bit: 0x80) and s_blocks_count_hi at +0x150.
EXT4_FEATURE_INCOMPAT_64BIT = 0x80


def ext_blocks(superblock: bytes) -> tuple[int, int]:
    """(blocks, block size in bytes) of the ext2/3/4 superblock (the 1024
    bytes at 1024): the filesystem's size, which statfs does not give (its
    f_blocks leaves out the metadata)."""
    lo, log_size = int.from_bytes(superblock[4:8], "little"), int.from_bytes(superblock[24:28], "little")
    incompat = int.from_bytes(superblock[96:100], "little")
    hi = int.from_bytes(superblock[0x150:0x154], "little") if incompat & EXT4_FEATURE_INCOMPAT_64BIT else 0
    return hi << 32 | lo, 1024 << log_size


def read_ext_blocks(path: str) -> tuple[int, int]:
    """ext_blocks of the filesystem on the device (or image) at path; ValueError when it is not ext2/3/4."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        superblock = os.pread(fd, 1024, EXT_SB)
    finally:
        os.close(fd)
    if superblock[56:58] != EXT_MAGIC:
        raise ValueError(f"{path} holds no ext2/3/4 superblock")
    return ext_blocks(superblock)


@dataclass(frozen=True)
class LabelledDevice:
    device: BlockDevice
    path: str
    fstype: str
    label: str


@dataclass
class Scan:
    """What one pass over the block devices found."""

    match: LabelledDevice | None = None
    duplicates: list[LabelledDevice] | None = None  # more devices carrying the label (ignored)
    problems: list[str] | None = None  # devices that could not be read, with why
    seen: int = 0
    reading: str | None = None  # what the scan reads now: where it hangs, if it does
    # Every device with a filesystem pid1 can name, by kernel name: the
    # user-data volume, the DOCKER disk and any other label are found here
    # (one scan, not one per phase).
    labelled: list[LabelledDevice] | None = None
    # Every device node read (path -> device), labelled or not: a blank disk
    # autoformat makes DOCKER is one of them.
    nodes: dict[str, BlockDevice] | None = None
    hung: str | None = None  # set when the scan did not finish: where it stopped, and why

    def with_label(self, *labels: str) -> list[LabelledDevice]:
        return [d for d in self.labelled or () if d.label in labels]


def scan_for_label(label: str, sys_root: str = "/sys", dev_root: str = "/dev", scan: Scan | None = None) -> Scan:
    """Read every block device's superblock; the first (by name) whose label
    is `label` wins, so the choice does not depend on probing order. Fills
    `scan` when given (the caller can see how far a scan that hangs got)."""
    scan = scan if scan is not None else Scan()
    scan.duplicates, scan.problems, scan.labelled, scan.nodes = [], [], [], {}
    scan.reading = os.path.join(sys_root, "class/block")
    for device in list_block_devices(sys_root):
        scan.seen += 1
        scan.reading = os.path.join(dev_root, device.devname)
        try:
            path = device_node(device, dev_root)
            scan.nodes[path] = device
            found = read_superblock(path)
        except OSError as exc:
            scan.problems.append(f"{device.name}: {exc}")
            continue
        if found is None:
            continue
        scan.labelled.append(LabelledDevice(device, path, found.fstype, found.label))
    scan.reading = None
    pick_label(scan, label)
    return scan


class ScanHangs(Exception):
    """A scan did not finish within its bound (the message says where it was)."""


async def scan_bounded(label: str, sys_root: str, dev_root: str, timeout: float) -> Scan:
    """One scan off the loop (reading superblocks can block on a slow or
    hanging device), bounded: a thread cannot be killed, so one that hangs
    is left behind and ScanHangs says where it was."""
    from pid1.threads import bounded

    scan = Scan()
    try:
        return await bounded(scan_for_label, label, sys_root, dev_root, scan, timeout=timeout, name="pid1-disks")
    except TimeoutError:
        where = scan.reading or "the block devices"
        raise ScanHangs(f"reading {where} did not finish within {timeout:.0f} s (pid1.io_timeout)") from None


def pick_label(scan: Scan, label: str) -> Scan:
    """Set the scan's match (the first device by name labelled `label`) and
    duplicates (the others), for a label that may differ from the one the
    scan was made for (a user-data volume can name it)."""
    found = scan.with_label(label)
    scan.match, scan.duplicates = (found[0] if found else None), found[1:]
    return scan


def find_labelled_device(label: str, sys_root: str = "/sys", dev_root: str = "/dev") -> LabelledDevice | None:
    """The block device whose filesystem label is `label`, or None."""
    return scan_for_label(label, sys_root, dev_root).match
