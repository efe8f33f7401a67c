"""image/cpio.py: the initramfs carries the device nodes the kernel and
Python open before pid1 mounts devtmpfs (/dev/console for /init's stdio,
/dev/urandom for Python's hash seed on a CPU without RDRAND). The archive is
read back here with a newc parser of the test's own, and each node is
compared with the host's own node of that name (the kernel's numbering)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from image import cpio

HEADER = 110  # "070701" and 13 fields of 8 hex digits


def read_newc(archive: Path) -> dict[str, tuple[int, int, int, bytes]]:
    """name -> (mode, rdevmajor, rdevminor, data) for each entry before the trailer."""
    raw = archive.read_bytes()
    entries: dict[str, tuple[int, int, int, bytes]] = {}
    offset = 0
    while True:
        assert raw[offset : offset + 6] == b"070701", f"no newc magic at {offset}"
        fields = [int(raw[offset + 6 + 8 * i : offset + 14 + 8 * i], 16) for i in range(13)]
        mode, size, rmajor, rminor, namesize = fields[1], fields[6], fields[9], fields[10], fields[11]
        name_at = offset + HEADER
        name = raw[name_at : name_at + namesize - 1].decode()
        data_at = name_at + namesize + (-(HEADER + namesize) % 4)
        if name == "TRAILER!!!":
            return entries
        entries[name] = (mode, rmajor, rminor, raw[data_at : data_at + size])
        offset = data_at + size + (-size % 4)


def make_tree(root: Path, with_dev: bool = True) -> Path:
    (root / "usr/bin").mkdir(parents=True)
    (root / "usr/bin/tool").write_text("#!/bin/sh\n")
    os.symlink("usr/bin", root / "bin")
    if with_dev:
        (root / "dev").mkdir()
    return root


@pytest.mark.parametrize("name", ["console", "kmsg", "null", "random", "urandom"])
def test_the_archive_holds_each_early_device_node_as_the_kernel_numbers_it(tmp_path: Path, name: str) -> None:
    archive = tmp_path / "part.cpio"
    cpio.write_tree(make_tree(tmp_path / "stage"), archive)
    entries = read_newc(archive)
    assert f"dev/{name}" in entries, sorted(entries)
    mode, major, minor, data = entries[f"dev/{name}"]
    host = os.stat(f"/dev/{name}")
    assert stat.S_ISCHR(mode), f"dev/{name}: mode {mode:o} is not a character device"
    assert (major, minor) == (os.major(host.st_rdev), os.minor(host.st_rdev)), f"dev/{name}: {major}:{minor}"
    assert data == b""
    # stdio and random bytes for any user; the console stays root's, the kernel log as devtmpfs makes it
    expected = {"console": 0o600, "kmsg": 0o644}.get(name, 0o666)
    assert stat.S_IMODE(mode) == expected, f"dev/{name}: {stat.S_IMODE(mode):o}"


def test_the_rest_of_the_tree_is_kept_and_dev_comes_before_its_nodes(tmp_path: Path) -> None:
    archive = tmp_path / "part.cpio"
    count = cpio.write_tree(make_tree(tmp_path / "stage"), archive)
    entries = read_newc(archive)
    assert count == len(entries) + 1, "the trailer is counted too"
    assert stat.S_ISDIR(entries["dev"][0]) and stat.S_ISLNK(entries["bin"][0]) and entries["bin"][3] == b"usr/bin"
    assert entries["usr/bin/tool"][3] == b"#!/bin/sh\n"
    names = list(entries)
    assert all(names.index("dev") < names.index(f"dev/{node}") for node in ("console", "urandom"))


def test_a_part_without_dev_gets_no_nodes(tmp_path: Path) -> None:
    """Negative control: the later parts (python, pid1) have no /dev of their own."""
    archive = tmp_path / "part.cpio"
    cpio.write_tree(make_tree(tmp_path / "stage", with_dev=False), archive)
    entries = read_newc(archive)
    assert not [name for name in entries if name.startswith("dev")], sorted(entries)
    cpio.write_tree(make_tree(tmp_path / "stage2"), archive, device_nodes=False)
    assert sorted(read_newc(archive)) == ["bin", "dev", "usr", "usr/bin", "usr/bin/tool"]
