"""A newc cpio writer: what the kernel unpacks as an initramfs.

Written here instead of running cpio(1) so that the archive is the same
bytes for the same tree (sorted names, owner root, one fixed mtime, inode
numbers in order) and so /dev holds device nodes without mknod. Before pid1
mounts devtmpfs over them, the kernel opens /dev/console for /init's stdin,
stdout and stderr, and Python reads /dev/urandom for its hash seed when
getrandom() would block: on a CPU without RDRAND (qemu's default model) the
kernel's random pool is not ready that early, and without the node Python
stops with "_Py_HashRandomization_Init: failed to get random numbers".
/dev/kmsg is there for pid1's RAM check (pid1/ram.py), which speaks before
anything is mounted.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

MTIME = 1686355200  # Debian 12's release day: any fixed instant works
# Entries that cannot be files in a tree built without root: (path, mode, major, minor).
# The majors and minors are the kernel's fixed ones (Documentation/admin-guide/devices.txt).
DEVICE_NODES = [
    ("dev/console", stat.S_IFCHR | 0o600, 5, 1),
    ("dev/kmsg", stat.S_IFCHR | 0o644, 1, 11),
    ("dev/null", stat.S_IFCHR | 0o666, 1, 3),
    ("dev/random", stat.S_IFCHR | 0o666, 1, 8),
    ("dev/urandom", stat.S_IFCHR | 0o666, 1, 9),
]


def _header(ino: int, mode: int, nlink: int, size: int, rmajor: int, rminor: int, name: bytes) -> bytes:
    fields = (ino, mode, 0, 0, nlink, MTIME, size, 0, 0, rmajor, rminor, len(name) + 1, 0)
    return b"070701" + b"".join(b"%08X" % value for value in fields)


def _pad(length: int) -> bytes:
    return b"\0" * (-length % 4)


class Writer:
    def __init__(self, out) -> None:
        self.out = out
        self.ino = 0
        self.count = 0

    def entry(self, name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0)) -> None:
        self.ino += 1
        self.count += 1
        raw = name.encode()
        nlink = 2 if stat.S_ISDIR(mode) else 1
        head = _header(self.ino, mode, nlink, len(data), rdev[0], rdev[1], raw) + raw + b"\0"
        self.out.write(head + _pad(len(head)))
        if data:
            self.out.write(data + _pad(len(data)))

    def file(self, name: str, path: Path, mode: int) -> None:
        self.entry(name, mode, path.read_bytes())

    def trailer(self) -> None:
        self.entry("TRAILER!!!", 0)


def write_tree(root: Path, archive: Path, device_nodes: bool = True) -> int:
    """Write every entry under root (not root itself) to archive; returns the count."""
    tmp = archive.with_name(archive.name + ".tmp")
    entries: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        for name in dirnames + filenames:
            entries.append(name if rel == "." else f"{rel}/{name}")
    nodes = {path: (mode, major, minor) for path, mode, major, minor in DEVICE_NODES} if device_nodes else {}
    if nodes and not (root / "dev").is_dir():
        nodes = {}
    with open(tmp, "wb") as out:
        writer = Writer(out)
        # sorted: a directory always comes before what it holds
        for name in sorted(set(entries) | set(nodes)):
            if name in nodes:
                mode, major, minor = nodes[name]
                writer.entry(name, mode, rdev=(major, minor))
                continue
            path = root / name
            st = path.lstat()
            if stat.S_ISLNK(st.st_mode):
                writer.entry(name, stat.S_IFLNK | 0o777, os.readlink(path).encode())
            elif stat.S_ISDIR(st.st_mode):
                writer.entry(name, stat.S_IFDIR | stat.S_IMODE(st.st_mode))
            elif stat.S_ISREG(st.st_mode):
                writer.file(name, path, stat.S_IFREG | stat.S_IMODE(st.st_mode))
            else:
                raise ValueError(f"{path}: not a file, directory or symlink")
        writer.trailer()
        count = writer.count
    os.replace(tmp, archive)
    return count
