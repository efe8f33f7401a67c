"""The grow phase as PID 1 of a namespace, on a real disk: a sparse file laid
out as the disk image (GPT by sfdisk, ext4 on partition 3 by mke2fs), made
larger as a disk it was written to would be, and attached with
`losetup --partscan`, so the kernel has the partitions as it has a VM's.

pid1 runs its real phases from devices to grow (a no-op modules: the host
kernel has ext4) over a temporary root whose /dev is a private tmpfs: it
finds the partition by its label (one unique to the run), mounts it, and the
grow phase rewrites the loop device's GPT, tells the kernel and grows the
mounted ext4. Each loop device is detached at teardown, also on failure.
Nothing here opens a device the test did not attach.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from devtools.harness import GPT_TYPES, MIB, Pid1, make_disk_image, sfdisk, tmpfs_dev_wrapper, wait_for
from pid1.blockdev import read_ext_blocks
from pid1.gpt import Verdict, plan_growth
from pid1.linux import procfs

pytestmark = pytest.mark.namespace

DOCKER_START = 12288  # sectors: after 1 MiB, bios (1 MiB) and the ESP (4 MiB)
DOCKER_MIB = 64
DISK_MIB = 512  # the larger disk the image was written to
GPT_SECTORS = 34  # the protective MBR, the header and 32 sectors of entries


def can_resize_ext4() -> bool:
    """Whether pid1 under unshare gets CAP_SYS_RESOURCE, which
    EXT4_IOC_RESIZE_FS needs. Some CI containers drop it from the bounding
    set: there the table and the kernel's partition still grow, the
    filesystem cannot, and the phase must say so (the VM tests grow it)."""
    return "SYS_RESOURCE" not in procfs.missing_capabilities()


def unique_label() -> str:
    return f"DOCKER-{uuid.uuid4().hex[:9]}"  # 16 characters: ext4's maximum


def disk_image(path: Path, label: str, by_hand: Callable[[Path], object] | None = None) -> str:
    """The image with its ext4 (mke2fs at partition 3's offset, as a build
    without loop mounts makes it), changed by_hand(path) if given, then
    written to a larger disk. Returns the image's pid1.grow word (of the
    table as built)."""
    word = make_disk_image(path, docker_mib=DOCKER_MIB)
    subprocess.run(
        ["mke2fs", "-q", "-F", "-t", "ext4", "-L", label, "-E", f"offset={DOCKER_START * 512}", str(path),
         f"{DOCKER_MIB * 1024}k"],
        check=True, capture_output=True,
    )  # fmt: skip
    if by_hand is not None:
        by_hand(path)
    os.truncate(path, DISK_MIB * MIB)
    return word


@pytest.fixture
def attach() -> Iterator[Callable[[Path], str]]:
    """attach(image) -> /dev/loopN with its partitions; detached at teardown.
    --partscan lets the loop device have partitions and has the kernel read
    its table (synchronously); a kernel built without the GPT parser (some
    CI hosts' are) reads nothing, and then partx reads the table and adds
    the partitions with BLKPG_ADD_PARTITION: the kernel has them either way."""
    devices: list[str] = []

    def attach_image(image: Path) -> str:
        out = subprocess.run(["losetup", "--find", "--show", "--partscan", str(image)], capture_output=True,
                             text=True, check=True)  # fmt: skip
        devices.append(out.stdout.strip())
        name = os.path.basename(devices[-1])
        if not os.path.exists(f"/sys/class/block/{name}p3"):
            subprocess.run(["partx", "--add", devices[-1]], check=True, capture_output=True)
        wait_for(f"{name}p3 in sysfs", lambda: os.path.exists(f"/sys/class/block/{name}p3"), 10)
        return devices[-1]

    yield attach_image
    for device in devices:
        # Still mounted in a namespace that is going away: the kernel detaches
        # it when the last mount goes (losetup -d sets autoclear then).
        subprocess.run(["losetup", "-d", device], check=False, capture_output=True)


def boot(pid1_ns: Callable[..., Pid1], root: Path, label: str, word: str) -> Pid1:
    """pid1 as PID 1 with the grow phase and what it needs, as the image's kernel command line has it."""
    cmdline = (f"pid1.phases=grow pid1.extra_phases=tests.namespace.storage_phases pid1.storage_label={label} "
               f"pid1.storage_wait=0 pid1.grow={word}")  # fmt: skip
    return pid1_ns(cmdline, root=str(root), wrapper=tmpfs_dev_wrapper(root))


def grow_done(run: Pid1) -> str:
    return run.wait_phase("grow", timeout=60)["phases"]["grow"]["detail"]


def tables(image: Path) -> bytes:
    """The primary and the backup GPT areas of the file, and the protective MBR."""
    with open(image, "rb") as f:
        head = f.read(GPT_SECTORS * 512)
        f.seek(-33 * 512, os.SEEK_END)
        return head + f.read()


def partition_sectors(loop: str, number: int) -> int:
    with open(f"/sys/class/block/{os.path.basename(loop)}p{number}/size") as f:
        return int(f.read())


def test_the_image_grows_at_first_boot_and_not_at_the_second(attach, pid1_ns, tmp_path: Path) -> None:
    label = unique_label()
    image = tmp_path / "disk.img"
    word = disk_image(image, label)
    loop = attach(image)
    partition = f"{loop}p3"
    assert read_ext_blocks(partition)[0] * read_ext_blocks(partition)[1] == DOCKER_MIB * MIB

    first = boot(pid1_ns, tmp_path / "root1", label, word)
    detail = grow_done(first)
    grown_mib = DISK_MIB - 6 - 1  # to the last 1 MiB boundary before the backup GPT
    grew = f"grew {label} from {DOCKER_MIB} to {grown_mib} MiB"
    # The kernel has the new size (BLKPG) and the table on the disk says it (sfdisk checks both GPTs and their CRCs).
    assert detail.startswith(grew), first.describe()
    assert f"grow: {grew}" in first.log()
    assert partition_sectors(loop, 3) == grown_mib * 2048
    assert "No errors detected." in sfdisk("--verify", loop)
    listed = json.loads(sfdisk("--json", loop))["partitiontable"]
    assert [(p["start"], p["size"]) for p in listed["partitions"]][2] == (DOCKER_START, grown_mib * 2048), listed
    assert listed["lastlba"] == DISK_MIB * 2048 - 34
    # The mounted filesystem fills it (the superblock, read through the host's node, and df in the namespace).
    fs_bytes = read_ext_blocks(partition)[0] * read_ext_blocks(partition)[1]
    target = f"{tmp_path / 'root1'}/var/lib/docker"
    df_kib = int(first.nsenter(["df", "-k", "--output=size", target]).stdout.decode().split()[-1])
    if can_resize_ext4():
        assert detail == grew, first.describe()
        assert f"its ext4 grew from {DOCKER_MIB} to {grown_mib} MiB" in first.log(), first.describe()
        assert fs_bytes == grown_mib * MIB
        assert df_kib > (grown_mib - 40) * 1024  # what the filesystem offers, less its metadata
    else:
        assert detail == f"{grew}; its ext4 did not grow: Operation not permitted (no CAP_SYS_RESOURCE)", (
            first.describe()
        )
        assert fs_bytes == DOCKER_MIB * MIB and df_kib < DOCKER_MIB * 1024
        print("no CAP_SYS_RESOURCE here: the filesystem's growth was not checked (the VM tests check it)")
    first.stop()

    grown = tables(image)
    second = boot(pid1_ns, tmp_path / "root2", label, word)
    detail = grow_done(second)
    assert detail.startswith("already fills the disk"), second.describe()
    assert "grow: already fills the disk" in second.log()
    if can_resize_ext4():
        assert detail == "already fills the disk", second.describe()
    assert tables(image) == grown, "the second boot rewrote the table"
    assert partition_sectors(loop, 3) == grown_mib * 2048


def test_a_table_changed_by_hand_is_left_as_it_is(attach, pid1_ns, tmp_path: Path) -> None:
    label = unique_label()
    image = tmp_path / "disk.img"
    word = disk_image(image, label, by_hand=lambda path: sfdisk("-q", "--part-label", str(path), "3", "my-data"))
    before = tables(image)
    loop = attach(image)

    run = boot(pid1_ns, tmp_path / "root", label, word)
    assert grow_done(run) == "table changed by hand: left as it is", run.describe()
    assert f"not the image's {word} (pid1.grow): the table is not the image's as built" in run.log()
    assert tables(image) == before
    assert partition_sectors(loop, 3) == DOCKER_MIB * 2048
    assert read_ext_blocks(f"{loop}p3")[0] * read_ext_blocks(f"{loop}p3")[1] == DOCKER_MIB * MIB


def test_a_table_on_4k_sectors_grows_as_sfdisk_checks_it(tmp_path: Path) -> None:
    """pid1/gpt.py with 4096-byte LBAs, on a loop device with 4 KiB logical
    sectors (sfdisk 2.38 cannot be told a file's sector size): the plan read
    and written through the device, checked by sfdisk."""
    image = tmp_path / "4k.img"
    with open(image, "wb") as f:
        f.truncate(80 * MIB)
    out = subprocess.run(["losetup", "--find", "--show", "--sector-size", "4096", str(image)], capture_output=True,
                         text=True, check=True)  # fmt: skip
    loop = out.stdout.strip()
    try:
        sfdisk("-q", "--no-reread", loop, script=(
            f"label: gpt\nstart=1MiB, size=1MiB, type={GPT_TYPES['bios']}\nsize=4MiB, type={GPT_TYPES['ESP']}\n"
            f"type={GPT_TYPES['DOCKER']}, name=DOCKER\n"))  # fmt: skip
        fd = os.open(loop, os.O_RDWR | os.O_CLOEXEC)
        try:
            word = int.from_bytes(os.pread(fd, 4, 4096 + 88), "little")
            os.truncate(image, 300 * MIB)
            subprocess.run(["losetup", "--set-capacity", loop], check=True)  # the image written to a larger disk
            size = os.lseek(fd, 0, os.SEEK_END)
            assert size == 300 * MIB
            grown = plan_growth(lambda at, n: os.pread(fd, n, at), size, 4096, 3, word, None)
            assert grown.verdict is Verdict.GROW, grown.why
            for write in grown.writes:
                os.pwrite(fd, write.data, write.offset)
            os.fsync(fd)
        finally:
            os.close(fd)
        assert "No errors detected." in sfdisk("--verify", loop)
        table = json.loads(sfdisk("--json", loop))["partitiontable"]
        assert table["sectorsize"] == 4096
        docker = table["partitions"][2]
        assert (docker["start"] + docker["size"]) * 4096 == 299 * MIB, table
    finally:
        subprocess.run(["losetup", "-d", loop], check=False, capture_output=True)
