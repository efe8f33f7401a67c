"""Blank disks made into the DOCKER disk, opt-in (`pid1.autoformat=DEV,...`).

A listed device is formatted only when it is blank: its first MiB is all
zeros, or it starts with boot2docker's magic, `boot2docker, please
format-me`. That magic is how docker-machine hands a new VM its SSH keys: the
disk starts with a tar whose first member has that name, and the keys and
files after it are kept (pid1.host_state) before the disk is formatted.
Anything else on a listed device (a filesystem, a partition table, any data)
is never touched, and the log says what was found. Formatting is Debian's
mke2fs: ext4, label DOCKER.

The checks are plain Python on what is read; the phase that calls them owns
the process (the reaper) and the log.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field

BLANK_BYTES = 1024 * 1024
BOOT2DOCKER_MAGIC = b"boot2docker, please format-me"
# docker-machine's userdata.tar is a few KiB; bound what is taken from it.
MAX_TAR_MEMBERS = 64
MAX_TAR_FILE = 256 * 1024


@dataclass
class Verdict:
    """What a listed device holds, and whether it may be formatted."""

    device: str
    blank: bool
    why: str
    boot2docker_files: dict[str, bytes] = field(default_factory=dict)  # path in the tar -> content


def device_path(name: str, dev_root: str = "/dev") -> str:
    """`sda` -> /dev/sda; a full path is taken as it is."""
    return name if name.startswith("/") else os.path.join(dev_root, name)


def examine(path: str) -> Verdict:
    """Read the device's first MiB (never writes) and judge it."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as exc:
        return Verdict(path, False, f"cannot be opened: {exc.strerror}")
    try:
        if not stat.S_ISBLK(os.fstat(fd).st_mode):
            return Verdict(path, False, "is not a block device")
        head = os.pread(fd, BLANK_BYTES, 0)
    except OSError as exc:
        return Verdict(path, False, f"cannot be read: {exc.strerror}")
    finally:
        os.close(fd)
    return judge(path, head)


def judge(path: str, head: bytes) -> Verdict:
    if head.startswith(BOOT2DOCKER_MAGIC):
        return Verdict(path, True, "boot2docker's format-me magic", boot2docker_files=read_userdata_tar(head))
    if len(head) < BLANK_BYTES:
        return Verdict(path, False, f"is only {len(head)} bytes: too small for the docker disk")
    if head.count(0) == len(head):
        return Verdict(path, True, "its first MiB is all zeros")
    return Verdict(path, False, f"holds data ({describe(head)}): not blank, left as it is")


def describe(head: bytes) -> str:
    """A word on what is there, for the log."""
    from pid1.blockdev import parse_superblocks

    found = parse_superblocks(head[:4096], b"", head[32768 : 32768 + 2048])
    if found is not None:
        return (
            f"a {found.fstype} filesystem labelled {found.label!r}" if found.label else f"a {found.fstype} filesystem"
        )
    if head[510:512] == b"\x55\xaa":
        return "a partition table or boot sector"
    first = next(i for i, byte in enumerate(head) if byte)
    return f"non-zero bytes from offset {first}"


def read_userdata_tar(head: bytes) -> dict[str, bytes]:
    """The regular files of docker-machine's userdata.tar (bounded); a damaged
    tar gives what could be read before the damage."""
    import io
    import tarfile

    files: dict[str, bytes] = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(head), mode="r:") as tar:
            for count, member in enumerate(tar):
                if count >= MAX_TAR_MEMBERS:
                    break
                name = member.name.removeprefix("./").lstrip("/")
                if not member.isfile() or member.size > MAX_TAR_FILE or ".." in name.split("/") or not name:
                    continue
                extracted = tar.extractfile(member)
                if extracted is not None and not name.startswith(BOOT2DOCKER_MAGIC.decode()):
                    files[name] = extracted.read()
    except (tarfile.TarError, OSError, EOFError):
        pass
    return files


def mke2fs_argv(path: str, label: str) -> list[str]:
    # -F: no question on a device it finds odd; -E lazy_itable_init keeps the
    # format seconds long on a big disk (the kernel finishes it in the background).
    return ["mke2fs", "-q", "-F", "-t", "ext4", "-L", label, "-E", "lazy_itable_init=1,lazy_journal_init=1", path]
