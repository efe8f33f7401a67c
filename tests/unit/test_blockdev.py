"""pid1.blockdev against real filesystem images made by the real mkfs tools on
plain files, checked against blkid (util-linux) as the reference; the sysfs
listing and node creation against this machine's kernel and loop devices."""

from __future__ import annotations

import os
import select
import shutil
import stat
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from pid1 import blockdev, blockwait
from pid1.blockdev import FsLabel, read_superblock

MKFS = {
    "ext2": (["mke2fs", "-q", "-F", "-t", "ext2", "-L"], 8),
    "ext3": (["mke2fs", "-q", "-F", "-t", "ext3", "-L"], 16),
    "ext4": (["mke2fs", "-q", "-F", "-t", "ext4", "-L"], 16),
    # xfsprogs >= 5.19 refuses filesystems under 300 MB; the file is sparse.
    "xfs": (["mkfs.xfs", "-q", "-f", "-L"], 300),
    "btrfs": (["mkfs.btrfs", "-q", "-f", "-L"], 128),
}
# ext and xfs fill their whole field (no NUL); mkfs.btrfs keeps 254 of its 256 bytes.
MAX_LABEL = {"ext2": 16, "ext3": 16, "ext4": 16, "xfs": 12, "btrfs": 254}


def make_image(path: Path, fstype: str, label: str) -> Path:
    argv, size_mb = MKFS[fstype]
    if shutil.which(argv[0]) is None:
        pytest.skip(f"{argv[0]} is not installed")
    with open(path, "wb") as f:
        f.truncate(size_mb << 20)
    subprocess.run([*argv, label, str(path)], check=True, capture_output=True)
    return path


def blkid(path: Path) -> FsLabel | None:
    """What util-linux's blkid says about the image (the reference)."""
    out = subprocess.run(["blkid", "-p", "-o", "export", str(path)], capture_output=True, text=True)
    fields = dict(line.split("=", 1) for line in out.stdout.splitlines() if "=" in line)
    if "TYPE" not in fields:
        return None
    return FsLabel(fields["TYPE"], fields.get("LABEL", ""))


@pytest.mark.parametrize("fstype", sorted(MKFS))
def test_label_of_a_real_image(tmp_path: Path, fstype: str) -> None:
    image = make_image(tmp_path / f"{fstype}.img", fstype, "DOCKER")
    assert read_superblock(str(image)) == FsLabel(fstype, "DOCKER")
    assert read_superblock(str(image)) == blkid(image)


def make_cidata(path: Path, fstype: str, label: str) -> Path:
    """A NoCloud volume as users make one: cloud-localds's ISO (xorriso's
    mkisofs emulation with -volid, Joliet and Rock Ridge) or a vfat image
    (mkfs.vfat -n, files put in with mtools, no mount)."""
    files = path.parent / f"{path.name}.d"
    files.mkdir()
    (files / "user-data").write_text("#cloud-config\nhostname: x\n")
    (files / "meta-data").write_text("instance-id: i-1\n")
    if fstype == "iso9660":
        subprocess.run(["xorriso", "-as", "mkisofs", "-quiet", "-o", str(path), "-volid", label, "-joliet", "-rock",
                        str(files)], check=True, capture_output=True)  # fmt: skip
    else:
        if shutil.which("mkfs.vfat") is None or shutil.which("mcopy") is None:
            pytest.skip("dosfstools and mtools are needed (tests/run installs them)")
        subprocess.run(["mkfs.vfat", "-n", label, "-C", str(path), "2048"], check=True, capture_output=True)
        subprocess.run(["mcopy", "-i", str(path), str(files / "user-data"), str(files / "meta-data"), "::"],
                       check=True, capture_output=True)  # fmt: skip
    return path


@pytest.mark.parametrize(("fstype", "label"), [("iso9660", "cidata"), ("iso9660", "config-2"), ("vfat", "CIDATA")])
def test_label_of_a_nocloud_or_config_drive_volume(tmp_path: Path, fstype: str, label: str) -> None:
    image = make_cidata(tmp_path / f"{label}.img", fstype, label)
    assert read_superblock(str(image)) == FsLabel(fstype, label)
    assert read_superblock(str(image)) == blkid(image)


@pytest.mark.parametrize("fstype", sorted(MKFS))
def test_label_of_maximum_length(tmp_path: Path, fstype: str) -> None:
    label = ("DOCKER-" + "x" * 300)[: MAX_LABEL[fstype]]
    image = make_image(tmp_path / f"{fstype}.img", fstype, label)
    assert read_superblock(str(image)) == FsLabel(fstype, label)
    assert read_superblock(str(image)) == blkid(image)


def test_another_label_is_read_as_it_is(tmp_path: Path) -> None:
    image = make_image(tmp_path / "data.img", "ext4", "data")
    assert read_superblock(str(image)) == FsLabel("ext4", "data")


def test_no_label(tmp_path: Path) -> None:
    image = make_image(tmp_path / "empty-label.img", "ext4", "")
    assert read_superblock(str(image)) == FsLabel("ext4", "")


def test_zeroed_file_holds_no_filesystem(tmp_path: Path) -> None:
    image = tmp_path / "zero.img"
    image.write_bytes(b"\0" * (1 << 20))
    assert read_superblock(str(image)) is None
    assert blkid(image) is None


@pytest.mark.parametrize(("fstype", "keep"), [("ext4", 1100), ("ext4", 0), ("xfs", 100), ("btrfs", 65536 + 200)])
def test_truncated_image_holds_no_filesystem(tmp_path: Path, fstype: str, keep: int) -> None:
    """Cut off inside the superblock (before the label ends): not a filesystem, no crash."""
    image = make_image(tmp_path / f"{fstype}.img", fstype, "DOCKER")
    with open(image, "r+b") as f:
        f.truncate(keep)
    assert read_superblock(str(image)) is None


def test_damaged_ext4_still_has_its_label(tmp_path: Path) -> None:
    """The storage fallback relies on this: the label is found, the mount fails."""
    image = make_image(tmp_path / "bad.img", "ext4", "DOCKER")
    with open(image, "r+b") as f:
        f.seek(1024 + 24)  # s_log_block_size
        f.write((40).to_bytes(4, "little"))
    assert read_superblock(str(image)) == FsLabel("ext4", "DOCKER")


def test_missing_file_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_superblock(str(tmp_path / "nothing"))


def test_ext_generation_from_features(tmp_path: Path) -> None:
    """An ext4 with only ext3's features is ext3 to blkid and to pid1."""
    image = tmp_path / "plain.img"
    with open(image, "wb") as f:
        f.truncate(16 << 20)
    subprocess.run(["mke2fs", "-q", "-F", "-t", "ext3", "-O", "^dir_index", str(image)], check=True)
    assert read_superblock(str(image)).fstype == "ext3" == blkid(image).fstype


# --- sysfs and device nodes ----------------------------------------------------------


def proc_partitions() -> dict[str, tuple[int, int, int]]:
    """name -> (major, minor, size in KiB) from /proc/partitions."""
    rows = {}
    for line in Path("/proc/partitions").read_text().splitlines()[2:]:
        major, minor, blocks, name = line.split()
        rows[name] = (int(major), int(minor), int(blocks))
    return rows


def test_block_devices_match_the_kernels_partition_table() -> None:
    listed = {d.name: d for d in blockdev.list_block_devices("/sys")}
    expected = {
        name: row
        for name, row in proc_partitions().items()
        if row[2] > 0 and not name.startswith(blockdev.SKIPPED_PREFIXES)
    }
    assert {name: (d.major, d.minor, d.sectors // 2) for name, d in listed.items()} == expected
    for name, device in listed.items():
        assert device.partition == os.path.exists(f"/sys/class/block/{name}/partition")


def test_no_sysfs_means_no_devices(tmp_path: Path) -> None:
    assert blockdev.list_block_devices(str(tmp_path)) == []


@pytest.fixture
def loop_image(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """(loop device, label): an ext4 image with a label unique to this run,
    attached to a free loop device, detached at teardown."""
    if os.geteuid() != 0:
        pytest.skip("loop devices need root")
    label = f"T{uuid.uuid4().hex[:12]}"
    image = make_image(tmp_path / "loop.img", "ext4", label)
    loop = subprocess.run(["losetup", "--find", "--show", str(image)], capture_output=True, text=True, check=True)
    device = loop.stdout.strip()
    try:
        yield device, label
    finally:
        subprocess.run(["losetup", "-d", device], check=False)


def test_find_labelled_loop_device_makes_its_node(tmp_path: Path, loop_image: tuple[str, str]) -> None:
    """A /dev without nodes (a test root's tmpfs): the node is made from sysfs' numbers."""
    device, label = loop_image
    dev_root = tmp_path / "dev"
    dev_root.mkdir()
    found = blockdev.find_labelled_device(label, "/sys", str(dev_root))
    assert found is not None
    assert found.path == str(dev_root / os.path.basename(device))
    assert (found.fstype, found.label) == ("ext4", label)
    st = os.stat(found.path)
    assert stat.S_ISBLK(st.st_mode) and st.st_rdev == os.stat(device).st_rdev
    # Negative control: nobody carries a label nobody made.
    assert blockdev.find_labelled_device(label + "-none", "/sys", str(dev_root)) is None


def test_a_wrong_node_is_refused(tmp_path: Path, loop_image: tuple[str, str]) -> None:
    device, label = loop_image
    dev_root = tmp_path / "dev"
    dev_root.mkdir()
    (dev_root / os.path.basename(device)).write_text("not a device")
    scan = blockdev.scan_for_label(label, "/sys", str(dev_root))
    assert scan.match is None
    assert any(p.startswith(os.path.basename(device)) and "not block device" in p for p in scan.problems), scan


def test_uevent_listener_hears_a_loop_device_attach(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("loop devices need root")
    image = make_image(tmp_path / "ev.img", "ext4", "EV")
    listener = blockwait.UeventListener()
    try:
        listener.drain()  # discard whatever was queued before
        loop = subprocess.run(["losetup", "--find", "--show", str(image)], capture_output=True, text=True, check=True)
        try:
            heard = False
            for _ in range(50):  # bounded: up to 5 s
                if select.select([listener], [], [], 0.1)[0] and listener.drain():
                    heard = True
                    break
            assert heard, "no block uevent within 5 s of losetup"
        finally:
            subprocess.run(["losetup", "-d", loop.stdout.strip()], check=False)
    finally:
        listener.close()


# --- parsing ---------------------------------------------------------------------------


def test_uevent_classification() -> None:
    add = b"add@/devices/virtual/block/loop3\0ACTION=add\0DEVPATH=/devices/virtual/block/loop3\0SUBSYSTEM=block\0"
    assert blockwait.is_block_uevent(add)
    assert blockwait.is_block_uevent(add.replace(b"add", b"change"))
    assert not blockwait.is_block_uevent(add.replace(b"add", b"remove"))
    assert not blockwait.is_block_uevent(b"add@/devices/x\0ACTION=add\0SUBSYSTEM=net\0")
    assert not blockwait.is_block_uevent(b"libudev\0\xfe\xed")


def test_a_removal_uevent_names_the_block_device_and_nothing_else_does() -> None:
    removal = (
        b"remove@/devices/pci0000:00/0000:00:04.0/virtio1/block/vda\0ACTION=remove\0SUBSYSTEM=block\0DEVNAME=vda\0"
    )
    assert blockwait.removed_block_device(removal) == "vda"
    assert blockwait.removed_block_device(removal.replace(b"remove", b"add")) is None
    assert blockwait.removed_block_device(removal.replace(b"SUBSYSTEM=block", b"SUBSYSTEM=net")) is None


@pytest.mark.parametrize("options", [[], ["-b", "4096"], ["-O", "64bit", "-b", "1024"]], ids=["default", "4k", "64bit"])
def test_ext_block_count_is_what_dumpe2fs_says(tmp_path: Path, options: list[str]) -> None:
    image = tmp_path / "ext4.img"
    with open(image, "wb") as f:
        f.truncate(48 << 20)
    subprocess.run(["mke2fs", "-q", "-F", "-t", "ext4", *options, str(image)], check=True, capture_output=True)
    out = subprocess.run(["dumpe2fs", "-h", str(image)], capture_output=True, text=True, check=True).stdout
    fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    assert blockdev.read_ext_blocks(str(image)) == (int(fields["Block count"]), int(fields["Block size"]))


def test_ext_block_count_refuses_what_is_not_ext(tmp_path: Path) -> None:
    image = tmp_path / "zeros.img"
    image.write_bytes(bytes(4096))
    with pytest.raises(ValueError, match="no ext2/3/4 superblock"):
        blockdev.read_ext_blocks(str(image))


def fake_sysfs(root: Path, disk: str, part: str | None) -> None:
    """A sysfs tree as the kernel lays out a virtio disk and its third partition."""
    disk_dir = root / "devices/pci0000:00/0000:00:04.0/virtio1/block" / disk
    (disk_dir / "queue").mkdir(parents=True)
    (disk_dir / "dev").write_text("254:0\n")
    (disk_dir / "size").write_text("4194304\n")
    (disk_dir / "uevent").write_text(f"MAJOR=254\nMINOR=0\nDEVNAME={disk}\nDEVTYPE=disk\n")
    (disk_dir / "queue/logical_block_size").write_text("512\n")
    (root / "class/block").mkdir(parents=True)
    os.symlink(f"../../devices/pci0000:00/0000:00:04.0/virtio1/block/{disk}", root / "class/block" / disk)
    if part:
        (disk_dir / part).mkdir()
        for name, value in {"dev": "254:3", "partition": "3", "start": "12288", "size": "4180992"}.items():
            (disk_dir / part / name).write_text(value + "\n")
        os.symlink(f"../../devices/pci0000:00/0000:00:04.0/virtio1/block/{disk}/{part}", root / "class/block" / part)


def test_a_partition_knows_its_disk_and_extent(tmp_path: Path) -> None:
    fake_sysfs(tmp_path, "vda", "vda3")
    part = blockdev.BlockDevice("vda3", "vda3", 254, 3, 4180992, True)
    found = blockdev.partition_of(part, str(tmp_path))
    assert found == blockdev.Partition(blockdev.BlockDevice("vda", "vda", 254, 0, 4194304, False), 3, 12288, 4180992,
                                       512)  # fmt: skip
    whole = blockdev.BlockDevice("vda", "vda", 254, 0, 4194304, False)
    assert blockdev.partition_of(whole, str(tmp_path)) is None  # the negative control: a whole disk
