"""What pid1.autoformat calls blank, on bytes as the disks hold them."""

from __future__ import annotations

import io
import tarfile

from pid1.autoformat import BLANK_BYTES, BOOT2DOCKER_MAGIC, judge, mke2fs_argv


def test_zeros_are_blank_and_one_byte_is_not() -> None:
    assert judge("/dev/x", bytes(BLANK_BYTES)).blank
    head = bytearray(BLANK_BYTES)
    head[BLANK_BYTES - 1] = 1
    verdict = judge("/dev/x", bytes(head))
    assert not verdict.blank and f"non-zero bytes from offset {BLANK_BYTES - 1}" in verdict.why
    assert not judge("/dev/x", bytes(4096)).blank  # too small to hold a docker disk


def test_a_boot_sector_is_not_blank() -> None:
    head = bytearray(BLANK_BYTES)
    head[510:512] = b"\x55\xaa"
    assert "a partition table or boot sector" in judge("/dev/x", bytes(head)).why


def test_the_boot2docker_magic_is_blank_and_a_damaged_tar_gives_what_it_can() -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in ((BOOT2DOCKER_MAGIC.decode(), BOOT2DOCKER_MAGIC), ("../escape", b"x"), (".ssh/k", b"key")):
            member = tarfile.TarInfo(name)
            member.size = len(data)
            tar.addfile(member, io.BytesIO(data))
    whole = buffer.getvalue()
    verdict = judge("/dev/x", whole + bytes(BLANK_BYTES))
    assert verdict.blank and verdict.boot2docker_files == {".ssh/k": b"key"}  # no escape, no magic member
    damaged = judge("/dev/x", BOOT2DOCKER_MAGIC + b"\xff" * 2000)
    assert damaged.blank and damaged.boot2docker_files == {}


def test_the_format_is_ext4_with_the_storage_label() -> None:
    argv = mke2fs_argv("/dev/vdb", "DOCKER")
    assert argv[0] == "mke2fs" and argv[-1] == "/dev/vdb" and ["-t", "ext4"] == argv[3:5] and "DOCKER" in argv
