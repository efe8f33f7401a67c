"""The one parser of /proc/self/mountinfo (proc(5)): what is mounted where.

Owns: MountEntry, parse_mountinfo, and the questions asked of the table
(the mount visible at a path, the one holding a path, whether `/` is still
the kernel's rootfs).
May use: the standard library only.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

PROC_MOUNTINFO = "/proc/self/mountinfo"
# The kernel's initial root filesystem: pivot_root(2) cannot leave it.
INITRAMFS_TYPES = ("rootfs", "ramfs", "tmpfs")


@dataclass(frozen=True)
class MountEntry:
    target: str
    source: str
    fstype: str
    major: int
    minor: int
    mount_id: int = 0
    parent_id: int = 0


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo octal.
    out, i = [], 0
    while i < len(field):
        code = field[i + 1 : i + 4]
        if field[i] == "\\" and len(code) == 3 and all(c in "01234567" for c in code):
            out.append(chr(int(code, 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def parse_mountinfo(text: str) -> list[MountEntry]:
    """Every well-formed line, in the kernel's order (later mounts last);
    lines that are not (a truncated read) are skipped."""
    entries = []
    for line in text.splitlines():
        fields = line.split()
        if "-" not in fields or len(fields) < 10:
            continue
        sep = fields.index("-")
        try:
            major, minor = (int(x) for x in fields[2].split(":"))
            mount_id, parent_id = int(fields[0]), int(fields[1])
        except ValueError:
            continue
        target, source = _unescape(fields[4]), _unescape(fields[sep + 2])
        entries.append(MountEntry(target, source, fields[sep + 1], major, minor, mount_id, parent_id))
    return entries


def read_mountinfo(*paths: str) -> str:
    """The text of the first of `paths` that can be read (default: this
    process's table); "" when none can (/proc not mounted)."""
    for path in paths or (PROC_MOUNTINFO,):
        try:
            with open(path) as f:
                return f.read()
        except OSError:
            continue
    return ""


def mount_at(target: str, mountinfo: str) -> MountEntry | None:
    """The mount visible at `target` (the last one mounted there wins)."""
    found = None
    for entry in parse_mountinfo(mountinfo):
        if entry.target == target:
            found = entry
    return found


def mount_holding(path: str, mountinfo: str) -> MountEntry | None:
    """The mount that holds `path` (as given: resolve links first): the
    longest mount point that is `path` or a parent of it, the last mounted
    there winning."""
    best: MountEntry | None = None
    for entry in parse_mountinfo(mountinfo):
        inside = path == entry.target or path.startswith(entry.target.rstrip("/") + "/")
        if inside and (best is None or len(entry.target) >= len(best.target)):
            best = entry
    return best


def filesystem_type_of(path: str, mountinfo_path: str = PROC_MOUNTINFO) -> str | None:
    """The filesystem type of the mount holding `path`; None when unknown."""
    entry = mount_holding(os.path.realpath(path), read_mountinfo(mountinfo_path))
    return entry.fstype if entry else None


def root_is_initramfs(mountinfo: str) -> bool:
    """True when the visible `/` is still the kernel's rootfs mount itself
    (its own parent), i.e. pivot_root would fail; False once a root was
    moved over it (its parent is then hidden)."""
    root = mount_at("/", mountinfo)
    return root is not None and root.fstype in INITRAMFS_TYPES and root.mount_id == root.parent_id
