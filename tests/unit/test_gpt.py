"""pid1/gpt.py against tables util-linux's sfdisk wrote on plain files (no
root), laid out as the disk image is (harness.make_disk_image): the table
read back, the grown table byte for byte what sfdisk itself writes for the
same change, and the refusals: a table changed by hand, DOCKER not last, a
bad CRC, an MBR or hybrid disk, a disk smaller than its table, a partition
the kernel sees elsewhere. A power cut after any of the planned writes
leaves a table sfdisk reads as the old or the new one."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from devtools.harness import GPT_TYPES, MIB, grow_word, make_disk_image, sfdisk
from pid1.config import parse_cmdline
from pid1.gpt import Plan, Verdict, plan_growth, read_table

pytestmark = pytest.mark.skipif(shutil.which("sfdisk") is None, reason="sfdisk missing (tests/run installs fdisk)")

DISK_MIB = 300  # the larger disk the image is written to


def plan(path: Path, word: str, number: int = 3, sector_size: int = 512, kernel: tuple[int, int] | None = None) -> Plan:
    data = path.read_bytes()
    return plan_growth(lambda at, n: data[at : at + n], len(data), sector_size, number, int(word, 16), kernel)


def apply(path: Path, writes, upto: int | None = None) -> None:
    with open(path, "r+b") as f:
        for write in writes[:upto]:
            f.seek(write.offset)
            f.write(write.data)


def listed(path: Path, *options: str) -> dict:
    return json.loads(sfdisk(*options, "--json", str(path)))["partitiontable"]


def blank(path: Path, size: int) -> Path:
    with open(path, "wb") as f:
        f.truncate(size)
    return path


def written_to_larger_disk(image: Path, tmp_path: Path, mib: int = DISK_MIB) -> Path:
    disk = tmp_path / "disk.img"
    shutil.copyfile(image, disk)
    os.truncate(disk, mib * MIB)
    return disk


@pytest.fixture
def image(tmp_path: Path) -> tuple[Path, str]:
    path = tmp_path / "only-docker.img"
    return path, make_disk_image(path)


def test_the_table_sfdisk_wrote_is_read_as_sfdisk_lists_it(image) -> None:
    path, word = image
    data = path.read_bytes()
    table = read_table(lambda at, n: data[at : at + n], 512)
    assert f"{table.header.entries_crc:08x}" == word
    ours = [(e.number, e.first_lba, e.sectors, e.name, e.type_guid) for e in table.used()]
    theirs = listed(path)["partitions"]
    assert [(n + 1, p["start"], p["size"], p["name"]) for n, p in enumerate(theirs)] == [o[:4] for o in ours]
    assert ours[2][4] == bytes.fromhex("af3dc60f838472478e793d69d8477de4")  # GPT_TYPES["DOCKER"], mixed-endian
    assert GPT_TYPES["DOCKER"] == theirs[2]["type"]


@pytest.mark.parametrize("to_last_lba", [False, True], ids=["aligned-end", "ends-at-last-usable-lba"])
def test_the_grown_table_is_what_sfdisk_writes_for_the_same_change(tmp_path: Path, to_last_lba: bool) -> None:
    image = tmp_path / "only-docker.img"
    word = make_disk_image(image, docker_to_last_lba=to_last_lba)
    disk = written_to_larger_disk(image, tmp_path)
    grown = plan(disk, word)
    assert grown.verdict is Verdict.GROW, grown.why
    new_last = DISK_MIB * 2048 - 2048 - 1  # the backup GPT takes 33 sectors: DOCKER ends at the last MiB before it
    assert grown.new_last_lba == new_last and grown.partition is not None
    apply(disk, grown.writes)

    # sfdisk's own: the backup GPT moved to the end (--relocate), then partition 3 resized to the same size.
    by_sfdisk = written_to_larger_disk(image, tmp_path / "sfdisk") if (tmp_path / "sfdisk").mkdir() is None else None
    assert by_sfdisk is not None
    sfdisk("-q", "--relocate", "gpt-bak-std", str(by_sfdisk))
    sfdisk("-q", "-N", "3", str(by_sfdisk), script=f",{new_last - grown.partition.first_lba + 1}\n")
    assert disk.read_bytes() == by_sfdisk.read_bytes()  # both headers, both arrays, the protective MBR's size

    assert "No errors detected." in sfdisk("--verify", str(disk))
    table = listed(disk)
    assert table["lastlba"] == DISK_MIB * 2048 - 34
    docker = table["partitions"][2]
    assert (docker["start"] + docker["size"]) * 512 % MIB == 0  # ends on a 1 MiB boundary


def test_after_growing_the_table_fills_the_disk_and_is_not_the_images_any_more(image, tmp_path: Path) -> None:
    path, word = image
    disk = written_to_larger_disk(path, tmp_path)
    apply(disk, plan(disk, word).writes)
    assert grow_word(disk) != word  # the entry array changed: a second boot's plan cannot grow it
    again = plan(disk, word)
    assert again.verdict is Verdict.FILLS and again.writes == (), again.why
    assert again.verdict.value == "already fills the disk"


def test_the_image_on_a_disk_of_its_own_size_fills_it(image) -> None:
    path, word = image
    found = plan(path, word)
    assert found.verdict is Verdict.FILLS and found.writes == (), found.why


def test_a_disk_with_no_whole_mib_more_for_docker_is_not_rewritten(image, tmp_path: Path) -> None:
    path, word = image
    disk = tmp_path / "disk.img"
    shutil.copyfile(path, disk)
    os.truncate(disk, path.stat().st_size + 16 * 1024)  # 32 sectors more: the backup GPT moves, DOCKER cannot grow
    found = plan(disk, word)
    assert found.verdict is Verdict.FILLS and found.writes == (), found.why


@pytest.mark.parametrize(
    "by_hand",
    [
        ("--part-label", "3", "my-data"),  # a partition renamed
        ("--part-type", "3", "0657FD6D-A4AB-43C4-84E5-0933C84B4F4F"),  # DOCKER made swap
        ("-N", "3", ",32MiB\n"),  # DOCKER shrunk, free space left at the end
    ],
    ids=["renamed", "retyped", "shrunk"],
)
def test_a_table_changed_by_hand_is_left_as_it_is(image, tmp_path: Path, by_hand: tuple[str, ...]) -> None:
    path, word = image
    disk = written_to_larger_disk(path, tmp_path)
    option, number, *rest = by_hand
    if option == "-N":
        sfdisk("-q", "--no-reread", option, number, str(disk), script=rest[0])
    else:
        sfdisk("-q", option, str(disk), number, *rest)
    before = disk.read_bytes()
    found = plan(disk, word)
    assert found.verdict is Verdict.CHANGED and found.writes == (), found.why
    assert f"not the image's {word} (pid1.grow)" in found.why
    assert disk.read_bytes() == before


def test_the_image_with_the_right_word_grows_and_the_wrong_word_does_not(image, tmp_path: Path) -> None:
    """The control for the test above: the same disk, the only difference the word."""
    path, word = image
    disk = written_to_larger_disk(path, tmp_path)
    assert plan(disk, word).verdict is Verdict.GROW
    other = f"{int(word, 16) ^ 1:08x}"
    assert plan(disk, other).verdict is Verdict.CHANGED


def test_docker_not_the_last_partition_is_left_as_it_is(image, tmp_path: Path) -> None:
    path, _ = image
    disk = written_to_larger_disk(path, tmp_path)
    sfdisk("-q", "--append", str(disk), script=f"size=8MiB, type={GPT_TYPES['DOCKER']}, name=after\n")
    os.truncate(disk, 2 * DISK_MIB * MIB)  # and written to a larger disk again
    found = plan(disk, grow_word(disk))  # the word of this very table: only the layout refuses it
    assert found.verdict is Verdict.NOT_LAST and found.writes == (), found.why
    assert "partition 4 ('after') ends after partition 3 starts" in found.why
    assert plan(disk, grow_word(disk), number=4).verdict is Verdict.GROW  # the control: partition 4 is last


@pytest.mark.parametrize(
    "offset, what",
    [(512 + 56, "the GPT header's CRC is wrong"), (1024 + 128 * 2 + 60, "the GPT entry array's CRC is wrong")],
    ids=["header", "entries"],
)
def test_a_bad_crc_is_left_as_it_is(image, tmp_path: Path, offset: int, what: str) -> None:
    path, word = image
    disk = written_to_larger_disk(path, tmp_path)
    data = bytearray(disk.read_bytes())
    data[offset] ^= 0x01  # a bit of the disk GUID, or of DOCKER's name
    disk.write_bytes(data)
    found = plan(disk, word)
    assert found.verdict is Verdict.INVALID and found.why == what and found.writes == ()


def test_an_mbr_disk_is_left_as_it_is(tmp_path: Path) -> None:
    disk = blank(tmp_path / "mbr.img", 100 * MIB)
    sfdisk("-q", str(disk), script="label: dos\nstart=1MiB, size=16MiB\nstart=17MiB, type=83\n")
    found = plan(disk, "00000000")
    assert found.verdict is Verdict.MBR and "an MBR partition table" in found.why


def test_a_hybrid_mbr_is_left_as_it_is(image, tmp_path: Path) -> None:
    path, word = image
    disk = written_to_larger_disk(path, tmp_path)
    data = bytearray(disk.read_bytes())
    data[446 + 16 + 4] = 0x83  # an MBR partition beside the protective entry (gdisk's hybrid)
    disk.write_bytes(data)
    found = plan(disk, word)
    assert found.verdict is Verdict.MBR and "hybrid" in found.why


def test_no_gpt_behind_the_protective_mbr_is_left_as_it_is(image, tmp_path: Path) -> None:
    path, word = image
    disk = written_to_larger_disk(path, tmp_path)
    data = bytearray(disk.read_bytes())
    data[512:1024] = bytes(512)
    disk.write_bytes(data)
    assert plan(disk, word).verdict is Verdict.MBR


def test_a_disk_smaller_than_its_table_is_left_as_it_is(image, tmp_path: Path) -> None:
    path, word = image
    os.truncate(path, path.stat().st_size - MIB)
    found = plan(path, word)
    assert found.verdict is Verdict.TRUNCATED and "past the disk's end" in found.why


def test_a_partition_the_kernel_sees_elsewhere_is_left_as_it_is(image, tmp_path: Path) -> None:
    path, word = image
    disk = written_to_larger_disk(path, tmp_path)
    assert plan(disk, word, kernel=(12288, 131072)).verdict is Verdict.GROW  # the kernel's view, in 512-byte sectors
    found = plan(disk, word, kernel=(12288, 65536))
    assert found.verdict is Verdict.MISMATCH and "the table changed since the kernel read it" in found.why
    assert plan(disk, word, number=5).verdict is Verdict.MISMATCH  # no such partition


def test_the_writes_come_backup_first_and_each_header_after_its_entries(image, tmp_path: Path) -> None:
    path, word = image
    writes = plan(written_to_larger_disk(path, tmp_path), word).writes
    assert [(w.what, w.flush) for w in writes] == [
        ("the backup GPT entries", False),
        ("the backup GPT header", True),
        ("the primary GPT entries", False),
        ("the primary GPT header", True),
        ("the protective MBR's size", True),
    ]


@pytest.mark.parametrize("done", range(6))
def test_a_power_cut_between_writes_leaves_the_old_or_the_new_table(image, tmp_path: Path, done: int) -> None:
    """A cut after `done` writes: sfdisk (which, like the kernel and the
    firmware, takes the backup when the primary is damaged) reads either the
    old partition or the grown one, never a broken table."""
    path, word = image
    disk = written_to_larger_disk(path, tmp_path)
    grown = plan(disk, word)
    apply(disk, grown.writes, upto=done)
    docker = listed(disk)["partitions"][2]
    old, new = grown.partition.sectors, grown.new_last_lba - grown.partition.first_lba + 1
    assert docker["size"] == (old if done < 3 else new), docker  # from the 3rd on, the primary is new or broken
    after = plan(disk, word)  # the next boot: grows what was not finished, or finds it done
    if done < 3:
        assert after.verdict is Verdict.GROW
    elif done == 3:  # the primary's entries written, not its header: its CRC fails, nothing is touched
        assert after.verdict is Verdict.INVALID
        sfdisk("-q", "--relocate", "gpt-bak-std", str(disk))  # the repair docs/storage.md gives: both from the backup
        assert plan(disk, word).verdict is Verdict.FILLS  # then the next boot grows the ext4 to the partition
    else:
        assert after.verdict is Verdict.FILLS


def test_a_malformed_grow_word_is_a_warning_and_no_growth() -> None:
    for bad in ("1A2B3C4D", "1a2b3c4", "1a2b3c4d5", "zzzzzzzz", "0x1a2b3c"):
        config, warnings = parse_cmdline(f"pid1.grow={bad}")
        assert config.grow == "", bad
        assert warnings == [
            f"bad value for pid1.grow: {bad!r}: expected the image's GPT entry CRC, 8 lowercase hex digits "
            "(e.g. 1a2b3c4d): DOCKER is not grown; keeping default ''"
        ]
    config, warnings = parse_cmdline("pid1.grow=1a2b3c4d")
    assert (config.grow, warnings) == ("1a2b3c4d", [])
