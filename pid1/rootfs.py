"""The first thing PID 1 does on an initramfs: make `/` a root runc can pivot_root from.

The kernel's initramfs is the rootfs mount, which pivot_root(2) refuses to
move ("pivot_root: invalid argument" from runc). Measured fix, and the cheapest
one: bind-mount `/` on a directory, move that mount over `/` and chroot into
it. The files are the same (a bind mount of the same tmpfs), nothing is copied,
and runc keeps its real pivot_root (DOCKER_RAMDISK's move + chroot lets a
container's root escape with a chroot of its own).

Done in-process rather than by exec'ing python again in the new root: the
interpreter and the modules it has loaded are the same files either way, and a
second interpreter start costs guest time under emulation (docs/benchmarks.md,
"Start-up costs inside pid1"). It
must run before anything is mounted (a non-recursive bind would hide later
mounts) and before any file pid1 keeps open matters (there are none yet).

Then /proc is mounted, because the kernel command line pid1 reads at start is
in /proc/cmdline and nothing has mounted /proc when the kernel runs /init. The
mounts phase finds it mounted and leaves it.
"""

from __future__ import annotations

import os

from pid1.linux import syscalls

# statfs(2) f_type of the filesystems an initramfs root can be
RAMFS_MAGIC = 0x858458F6
TMPFS_MAGIC = 0x01021994
MOVED_ROOT = "/.pid1-root"  # where / is bind-mounted; stays as an empty directory (the marker)


def on_initramfs(root: str = "/") -> bool:
    """True when root is the kernel's initramfs and it has not been moved yet."""
    try:
        fstype = syscalls.statfs_type(root)
    except OSError:
        return False
    return fstype in (RAMFS_MAGIC, TMPFS_MAGIC) and not os.path.isdir(os.path.join(root, MOVED_ROOT.lstrip("/")))


def move_root() -> None:
    """`mount --bind / D; cd D; mount --move . /; chroot .` in this process."""
    os.mkdir(MOVED_ROOT, 0o755)
    syscalls.mount("/", MOVED_ROOT, None, syscalls.MS_BIND)
    try:
        os.chdir(MOVED_ROOT)
        syscalls.mount(".", "/", None, syscalls.MS_MOVE)
    except OSError:
        os.chdir("/")
        syscalls.umount(MOVED_ROOT)
        raise
    os.chroot(".")
    os.chdir("/")


def mount_proc() -> bool:
    if os.path.exists("/proc/self"):
        return False
    os.makedirs("/proc", exist_ok=True)
    syscalls.mount("proc", "/proc", "proc", syscalls.MS_NOSUID | syscalls.MS_NODEV | syscalls.MS_NOEXEC)
    return True


def prepare() -> list[str]:
    """PID 1's first step on an initramfs; returns lines for the log (which
    is not open yet). Errors are reported, never raised: dockerd still works
    with DOCKER_RAMDISK when the root stays unpivotable."""
    notes: list[str] = []
    if on_initramfs():
        try:
            move_root()
            notes.append(f"root: initramfs bind-mounted on {MOVED_ROOT}, moved over / and chrooted (pivot_root works)")
        except OSError as exc:
            notes.append(f"root: could not move the initramfs root ({exc}); containers need DOCKER_RAMDISK")
    try:
        if mount_proc():
            notes.append("root: mounted /proc to read the kernel command line")
    except OSError as exc:
        notes.append(f"root: cannot mount /proc: {exc}")
    return notes
