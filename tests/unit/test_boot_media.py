"""The boot media's pieces that need no boot loader packages: the disk
image's table as sfdisk writes it from DiskLayout (the grow contract),
image/gpt.py reading it back (and refusing what it must), the one grub.cfg
text, image/esp's word edits, and the BIOS boot sectors' patch."""

from __future__ import annotations

import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import pytest

from image import boot_media, esp, gpt

needs_sfdisk = pytest.mark.skipif(shutil.which("sfdisk") is None, reason="sfdisk missing (apt-get install fdisk)")
MIB = 1 << 20


def layout_disk(tmp_path: Path) -> Path:
    layout = boot_media.LAYOUT
    path = tmp_path / "disk.img"
    with open(path, "wb") as f:
        f.truncate(layout.total_mib * MIB)
    subprocess.run(["sfdisk", "--quiet", "--no-reread", "--no-tell-kernel", str(path)],
                   input=layout.sfdisk_script().encode(), check=True, capture_output=True)  # fmt: skip
    return path


@needs_sfdisk
def test_the_table_is_the_contracts(tmp_path: Path) -> None:
    path = layout_disk(tmp_path)
    table = gpt.read_table(path)
    rows = [(p.number, p.name, p.type, p.first_lba) for p in table.partitions]
    assert rows == [
        (1, "bios", gpt.BIOS_BOOT, 2048),
        (2, "ESP", gpt.EFI_SYSTEM, 4096),
        (3, "DOCKER", gpt.LINUX_DATA, (2 + 256) * 2048),
    ], rows
    assert table.partitions[-1].last_lba == table.last_usable == table.backup_lba - 33
    assert table.partitions[1].size(512) == 256 * MIB
    # the CRC `pid1.grow` names is the header's PartitionEntryArrayCRC32 (LBA 1, byte 88)
    raw = path.read_bytes()
    assert struct.unpack_from("<I", raw, 512 + gpt.CRC_OFFSET)[0] == table.entries_crc
    # every build writes the same table: fixed GUIDs
    (tmp_path / "again").mkdir()
    assert gpt.read_table(layout_disk(tmp_path / "again")).entries_crc == table.entries_crc


@needs_sfdisk
def test_a_table_changed_by_hand_has_another_crc(tmp_path: Path) -> None:
    path = layout_disk(tmp_path)
    before = gpt.read_table(path).entries_crc
    subprocess.run(["sfdisk", "--quiet", "--no-reread", "--no-tell-kernel", "--part-label", str(path), "1", "mine"],
                   check=True, capture_output=True)  # fmt: skip
    assert gpt.read_table(path).entries_crc != before


@needs_sfdisk
def test_a_damaged_table_is_refused_with_the_reason(tmp_path: Path) -> None:
    path = layout_disk(tmp_path)
    raw = bytearray(path.read_bytes())
    entries = struct.unpack_from("<Q", raw, 512 + 72)[0] * 512
    raw[entries + 56] ^= 0xFF  # a byte of the first entry's name
    damaged = tmp_path / "damaged.img"
    damaged.write_bytes(raw)
    with pytest.raises(gpt.TableError, match="entry array's CRC is wrong"):
        gpt.read_table(damaged)
    raw = bytearray(path.read_bytes())
    raw[512 + 40] ^= 0xFF  # the header's first usable LBA
    damaged.write_bytes(raw)
    with pytest.raises(gpt.TableError, match="header's CRC is wrong"):
        gpt.read_table(damaged)
    blank = tmp_path / "blank.img"
    blank.write_bytes(bytes(MIB))
    with pytest.raises(gpt.TableError, match="no GPT"):
        gpt.read_table(blank)


def boot_set() -> boot_media.BootSet:
    return boot_media.BootSet(Path("k"), (Path("i"),), "console=ttyS0 printk.devkmsg=on", "abc123")


def test_one_grub_cfg_names_the_release_and_carries_the_machine_words() -> None:
    cfg = boot_media.grub_cfg(boot_set(), "pid1.grow=0123abcd")
    assert 'set machine_words="pid1.grow=0123abcd"' in cfg
    assert "linux /only-docker/abc123/vmlinuz console=ttyS0 printk.devkmsg=on $machine_words\n" in cfg
    assert "initrd /only-docker/abc123/initrd.img\n" in cfg and cfg.endswith("boot\n")
    assert esp.release_of(cfg) == "abc123" and esp.machine_words(cfg) == ["pid1.grow=0123abcd"]
    several = boot_media.BootSet(Path("k"), (Path("a"), Path("b")), "x", "r")
    assert "initrd /only-docker/r/initrd0.img /only-docker/r/initrd1.img\n" in boot_media.grub_cfg(several)
    with pytest.raises(ValueError, match="GRUB would change"):
        boot_media.grub_cfg(boot_set(), 'pid1.hostname="my box"')


def test_words_merge_replace_and_remove() -> None:
    current = ["pid1.grow=0123abcd", "quiet"]
    assert esp.merge_words(current, ["pid1.console_log=all"], []) == [*current, "pid1.console_log=all"]
    assert esp.merge_words(current, ["pid1.grow=ffffffff"], []) == ["quiet", "pid1.grow=ffffffff"]
    assert esp.merge_words(current, [], ["pid1.grow"]) == ["quiet"]
    cfg = boot_media.grub_cfg(boot_set(), "pid1.grow=0123abcd")
    changed = esp.with_machine_words(cfg, ["a=1", "b"])
    assert esp.machine_words(changed) == ["a=1", "b"] and esp.release_of(changed) == "abc123"
    assert changed.replace('"a=1 b"', '"pid1.grow=0123abcd"') == cfg
    with pytest.raises(esp.EspError, match="GRUB would change"):
        esp.with_machine_words(cfg, ["$(reboot)"])


def test_the_bios_boot_sectors_point_at_core_img() -> None:
    boot_img = bytearray(512)
    boot_img[0x66:0x68] = b"\xeb\x05"
    core_img = bytearray(4 * 512)
    core_img[0x1F4:0x1FC] = (2).to_bytes(8, "little")  # diskboot.img's default
    core_img[0x1FC:0x1FE] = (3).to_bytes(2, "little")  # the sectors after it, as grub-mkimage sets
    mbr, core = boot_media.bios_boot_sectors(bytes(boot_img), bytes(core_img), 2048)
    assert len(mbr) == 0x1B8  # the disk signature and the partition table stay the disk's
    assert int.from_bytes(mbr[0x5C:0x64], "little") == 2048 and mbr[0x66:0x68] == b"\x90\x90"
    assert int.from_bytes(core[0x1F4:0x1FC], "little") == 2049
    assert core[0x1FC:0x1FE] == core_img[0x1FC:0x1FE] and len(core) == len(core_img)


def test_gpt_reads_a_4k_sector_table(tmp_path: Path) -> None:
    """A 4Kn device's table starts at byte 4096 (made by hand: sfdisk on a file is 512)."""
    sector = 4096
    entry = struct.pack("<16s16sQQQ72s", gpt.LINUX_DATA.bytes_le, bytes(16), 6, 9, 0, "DOCKER".encode("utf-16-le"))
    array = entry + bytes(128 * 127)
    header = bytearray(struct.pack("<8sIII4xQQQQ16sQIII", b"EFI PART", 0x10000, 92, 0, 1, 15, 6, 9, bytes(16), 2,
                                   128, 128, zlib.crc32(array)))  # fmt: skip
    header[16:20] = struct.pack("<I", zlib.crc32(header))
    disk = bytearray(16 * sector)
    disk[446 + 4], disk[510:512] = 0xEE, b"\x55\xaa"  # the protective MBR
    disk[sector : sector + 92] = header
    disk[2 * sector : 2 * sector + len(array)] = array
    path = tmp_path / "4kn.img"
    path.write_bytes(disk)
    table = gpt.read_table(path)
    assert (
        table.sector == 4096 and table.partitions[0].name == "DOCKER" and table.partitions[0].offset(4096) == 6 * 4096
    )
