"""pid1.autoformat as PID 1 of a namespace, on loop devices: a zero disk and
a disk as docker-machine makes it (boot2docker's magic, then its
userdata.tar with the SSH key) become DOCKER and the disk is used; a disk
holding a filesystem and one holding other data, both listed, are
byte-for-byte the same after the boot (the negative control)."""

from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path

import pytest
from test_storage import attach, make_ext4, start, storage_done, unique_label  # noqa: F401 (attach: a fixture)

from pid1.autoformat import BOOT2DOCKER_MAGIC
from pid1.blockdev import read_superblock

pytestmark = pytest.mark.namespace

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHyXlQ7L0k0pZ3bW1m8Xr2tO6D9mJb8+6b3fXoWkE0aH docker-machine"


def docker_machine_disk(path: Path, size_mb: int = 64) -> Path:
    """What docker-machine's MakeDiskImage writes: a tar whose first member is
    named (and holds) the magic, then .ssh/authorized_keys and authorized_keys2."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in ((BOOT2DOCKER_MAGIC.decode(), BOOT2DOCKER_MAGIC), (".ssh/authorized_keys", KEY.encode()),
                           (".ssh/authorized_keys2", KEY.encode())):  # fmt: skip
            member = tarfile.TarInfo(name)
            member.size, member.mode = len(data), 0o644
            tar.addfile(member, io.BytesIO(data))
    with open(path, "wb") as f:
        f.write(buffer.getvalue())
        f.truncate(size_mb << 20)
    return path


def zero_disk(path: Path, size_mb: int = 64) -> Path:
    with open(path, "wb") as f:
        f.truncate(size_mb << 20)
    return path


def data_disk(path: Path) -> Path:
    """Zeros but for a few bytes at 600 KiB: not blank."""
    zero_disk(path)
    with open(path, "r+b") as f:
        f.seek(600 * 1024)
        f.write(b"precious")
    return path


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_blank_disks_become_docker_and_others_are_left_byte_for_byte(attach, pid1_ns, tmp_path: Path) -> None:  # noqa: F811
    label = unique_label()
    images = {
        "zero": zero_disk(tmp_path / "zero.img"),
        "machine": docker_machine_disk(tmp_path / "machine.img"),
        "ext4": make_ext4(tmp_path / "ext4.img", "OTHER"),
        "data": data_disk(tmp_path / "data.img"),
    }
    before = {name: digest(image) for name, image in images.items() if name in ("ext4", "data")}
    loops = {name: attach(image) for name, image in images.items()}
    root = tmp_path / "root"
    listed = ",".join(loops[name] for name in ("zero", "machine", "ext4", "data"))
    run = start(pid1_ns, root, f"pid1.storage_label={label} pid1.autoformat={listed} pid1.phases=userdata")
    state = run.wait_phase("userdata", timeout=60)
    detail = state["phases"]["autoformat"]["detail"]
    assert detail == (f"{loops['zero']} formatted, {loops['machine']} formatted, {loops['ext4']} kept, "
                      f"{loops['data']} kept"), run.describe()  # fmt: skip
    log = run.log()
    assert f"autoformat: {loops['ext4']} holds data (a ext4 filesystem labelled 'OTHER'): not blank" in log
    assert f"autoformat: {loops['data']} holds data (non-zero bytes from offset 614400): not blank" in log
    assert storage_done(run)["mode"] == "disk", run.describe()
    # The boot2docker keys are in the host state on the disk that was mounted.
    keys = run.nsenter(["cat", f"{root}/var/lib/docker/only-docker/ssh/authorized_keys"]).stdout.decode()
    assert keys == KEY + "\n", run.describe()
    assert state["userdata"]["source"] == "boot2docker userdata.tar"
    run.stop()
    for name in ("zero", "machine"):
        assert read_superblock(loops[name]) == ("ext4", label), name
    after = {name: digest(images[name]) for name in before}
    assert after == before, "a disk that was not blank was changed"
