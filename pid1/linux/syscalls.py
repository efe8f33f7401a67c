"""The one module that talks to the kernel through ctypes.

Everything pid1 needs that the standard library does not wrap lives here as a
thin, typed function that raises OSError with the errno on failure, so the
logic above it stays plain Python and can be tested against a temporary root.
"""

from __future__ import annotations

import ctypes
import enum
import errno
import fcntl
import os
import struct
import termios
import time
from dataclasses import dataclass

# The soname directly: ctypes.util.find_library() runs ldconfig/gcc in
# subprocesses, a cost a boot notices (docs/benchmarks.md, "Start-up costs").
_libc = ctypes.CDLL("libc.so.6", use_errno=True)

# mount(2) flags
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_BIND = 4096
MS_MOVE = 8192
MS_RELATIME = 1 << 21


# prctl(2) options
PR_SET_CHILD_SUBREAPER = 36

SFD_NONBLOCK = os.O_NONBLOCK
SFD_CLOEXEC = os.O_CLOEXEC
SIGNALFD_SIGINFO_SIZE = 128


class RebootCommand(enum.IntEnum):
    """reboot(2) commands (LINUX_REBOOT_CMD_*)."""

    RESTART = 0x01234567
    HALT = 0xCDEF0123
    POWER_OFF = 0x4321FEDC
    CAD_ON = 0x89ABCDEF
    CAD_OFF = 0x00000000


def _check(result: int, what: str) -> int:
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return result


def mount(source: str, target: str, fstype: str | None, flags: int = 0, data: str = "") -> None:
    _libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
    _check(
        _libc.mount(
            source.encode(),
            target.encode(),
            fstype.encode() if fstype else None,
            flags,
            data.encode() if data else None,
        ),
        f"mount {source} on {target}",
    )


def umount(target: str, flags: int = 0) -> None:
    _check(_libc.umount2(target.encode(), flags), f"umount {target}")


def mknod_block(path: str, major: int, minor: int, mode: int = 0o600) -> None:
    os.mknod(path, mode | 0o060000, os.makedev(major, minor))


def reboot(command: RebootCommand) -> None:
    """reboot(2). In a child PID namespace the kernel ends the namespace's init
    instead of touching the machine (SIGINT for power-off/halt, SIGHUP for restart)."""
    _check(_libc.reboot(ctypes.c_int(int(command) - (1 << 32) if command > 0x7FFFFFFF else int(command))), "reboot")


# --- loop devices (linux/loop.h) ---------------------------------------------
LOOP_CTL_GET_FREE = 0x4C82
LOOP_CONFIGURE = 0x4C0A
LO_FLAGS_READ_ONLY = 1
LO_FLAGS_AUTOCLEAR = 4  # detach when the last user (the mount) goes
# struct loop_info64: device, inode, rdevice, offset, sizelimit (u64); number,
# encrypt_type, encrypt_key_size, flags (u32); file_name, crypt_name (64),
# encrypt_key (32); init[2] (u64): 232 bytes
_LOOP_INFO64 = struct.Struct("=5Q4I64s64s32s2Q")


def loop_config(fd: int, flags: int, name: str) -> bytes:
    """struct loop_config {u32 fd; u32 block_size; loop_info64 info; u64 reserved[8]} (304 bytes)."""
    info = _LOOP_INFO64.pack(0, 0, 0, 0, 0, 0, 0, 0, flags, name.encode()[:63], b"", b"", 0, 0)
    return struct.pack("=II", fd, 0) + info + bytes(64)


def mount_loop_read_only(image: str, target: str, fstype: str, control: str = "/dev/loop-control") -> str:
    """Mount the filesystem image file `image` on `target`, read-only, through
    a free loop device (LOOP_CONFIGURE, autoclear: the device detaches when
    it is unmounted); returns the device's path. The device stays open until
    the mount holds it, or autoclear would detach it at once. Another process
    can take the free device between the two ioctls (EBUSY): the next is tried."""
    backing = os.open(image, os.O_RDONLY | os.O_CLOEXEC)
    config = loop_config(backing, LO_FLAGS_READ_ONLY | LO_FLAGS_AUTOCLEAR, image)
    try:
        for attempt in range(8):
            ctl = os.open(control, os.O_RDWR | os.O_CLOEXEC)
            try:
                number = fcntl.ioctl(ctl, LOOP_CTL_GET_FREE)
            finally:
                os.close(ctl)
            device = os.path.join(os.path.dirname(control), f"loop{number}")
            loop = os.open(device, os.O_RDONLY | os.O_CLOEXEC)
            try:
                try:
                    fcntl.ioctl(loop, LOOP_CONFIGURE, config)
                except OSError as exc:
                    if exc.errno == errno.EBUSY and attempt < 7:
                        continue
                    raise
                mount(device, target, fstype, MS_RDONLY | MS_NODEV | MS_NOSUID)
                return device
            finally:
                os.close(loop)
        raise OSError(errno.EBUSY, f"no free loop device for {image}")
    finally:
        os.close(backing)


def run_when_idle() -> None:
    """The calling thread gets a CPU only when no other thread wants one (SCHED_IDLE)."""
    os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))


def sync() -> None:
    os.sync()


def statfs_type(path: str) -> int:
    """statfs(2)'s f_type (the filesystem's magic number) for path."""
    buf = ctypes.create_string_buffer(120)  # struct statfs on x86-64; f_type is its first long
    _check(_libc.statfs(path.encode(), buf), f"statfs {path}")
    return struct.unpack_from("l", buf.raw)[0] & 0xFFFFFFFF


def finit_module(fd: int, params: str = "", flags: int = 0) -> None:
    nr_finit_module = 313  # x86_64
    _libc.syscall.restype = ctypes.c_long
    _check(
        _libc.syscall(
            ctypes.c_long(nr_finit_module), ctypes.c_int(fd), ctypes.c_char_p(params.encode()), ctypes.c_int(flags)
        ),
        "finit_module",
    )


def signalfd(signals: set[int]) -> int:
    """A non-blocking, close-on-exec signalfd for `signals` (which the caller must block)."""
    mask = (ctypes.c_ulong * 16)()  # sigset_t is 1024 bits
    for sig in signals:
        bit = int(sig) - 1
        mask[bit // 64] |= 1 << (bit % 64)
    return _check(_libc.signalfd(-1, ctypes.byref(mask), SFD_NONBLOCK | SFD_CLOEXEC), "signalfd")


def read_signalfd(fd: int) -> list[tuple[int, int]]:
    """Drain a signalfd: a list of (signo, sending pid) for every queued signal."""
    out: list[tuple[int, int]] = []
    while True:
        try:
            buf = os.read(fd, SIGNALFD_SIGINFO_SIZE * 64)
        except BlockingIOError:
            return out
        if not buf:
            return out
        for off in range(0, len(buf) - SIGNALFD_SIGINFO_SIZE + 1, SIGNALFD_SIGINFO_SIZE):
            signo, _errno, _code, pid = struct.unpack_from("IiiI", buf, off)
            out.append((signo, pid))


def prctl(option: int, arg: int = 0) -> None:
    _check(_libc.prctl(option, ctypes.c_ulong(arg), 0, 0, 0), f"prctl {option}")


def set_child_subreaper() -> None:
    prctl(PR_SET_CHILD_SUBREAPER, 1)


def sethostname(name: str) -> None:
    raw = name.encode()
    _check(_libc.sethostname(raw, len(raw)), "sethostname")


def get_window_size(fd: int) -> tuple[int, int]:
    """(rows, columns) of the terminal on fd; (0, 0) when unknown."""
    rows, cols, _x, _y = struct.unpack("HHHH", fcntl.ioctl(fd, termios.TIOCGWINSZ, b"\0" * 8))
    return rows, cols


def set_window_size(fd: int, rows: int, cols: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


# --- posix_spawn -------------------------------------------------------------
# os.posix_spawn cannot express "reset every signal": it builds its sigsets with
# sigaddset(), which refuses glibc's two internal real-time signals (32, 33),
# and glibc's spawn then leaves exactly those ignored in the child. Building
# the attributes here, with raw sigset bits, gives children a truly clean
# signal state (empty SigIgn and SigBlk) while keeping vfork-style spawning,
# which is safe with worker threads running.
POSIX_SPAWN_SETSIGDEF = 0x04
POSIX_SPAWN_SETSIGMASK = 0x08
POSIX_SPAWN_SETSID = 0x80
_SIGSET_BYTES = 128
_OPAQUE_BYTES = 1024  # larger than glibc's posix_spawnattr_t (336) and file actions (80)


@dataclass(frozen=True)
class FileAction:
    """Open `path` on `fd` (with flags, mode) or, when path is None, dup2(source, fd)."""

    fd: int
    path: str | None = None
    flags: int = 0
    mode: int = 0
    source: int = -1


def _sigset(signals: range | set[int]) -> ctypes.Array:
    raw = (ctypes.c_ubyte * _SIGSET_BYTES)()
    for sig in signals:
        raw[(sig - 1) // 8] |= 1 << ((sig - 1) % 8)
    return raw


def spawn(program: str, argv: list[str], env: dict[str, str], actions: list[FileAction], setsid: bool = True) -> int:
    """posix_spawnp(3) with every signal reset to default, an empty signal mask,
    optionally a new session, and `actions` applied in order. Returns the pid."""
    attr = ctypes.create_string_buffer(_OPAQUE_BYTES)
    file_actions = ctypes.create_string_buffer(_OPAQUE_BYTES)
    _check(-_libc.posix_spawnattr_init(attr), "posix_spawnattr_init")
    _check(-_libc.posix_spawn_file_actions_init(file_actions), "posix_spawn_file_actions_init")
    try:
        flags = POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK | (POSIX_SPAWN_SETSID if setsid else 0)
        _check(-_libc.posix_spawnattr_setflags(attr, ctypes.c_short(flags)), "posix_spawnattr_setflags")
        _check(-_libc.posix_spawnattr_setsigdefault(attr, _sigset(range(1, 65))), "posix_spawnattr_setsigdefault")
        _check(-_libc.posix_spawnattr_setsigmask(attr, _sigset(set())), "posix_spawnattr_setsigmask")
        for action in actions:
            if action.path is None:
                rc = _libc.posix_spawn_file_actions_adddup2(file_actions, action.source, action.fd)
            else:
                rc = _libc.posix_spawn_file_actions_addopen(
                    file_actions, action.fd, action.path.encode(), action.flags, action.mode
                )
            _check(-rc, "posix_spawn_file_actions")
        c_argv = (ctypes.c_char_p * (len(argv) + 1))(*[a.encode() for a in argv], None)
        env_items = [f"{k}={v}".encode() for k, v in env.items()]
        c_env = (ctypes.c_char_p * (len(env_items) + 1))(*env_items, None)
        pid = ctypes.c_int(0)
        rc = _libc.posix_spawnp(ctypes.byref(pid), program.encode(), file_actions, attr, c_argv, c_env)
        if rc != 0:
            raise OSError(rc, f"spawn {program}: {os.strerror(rc)}")
        return pid.value
    finally:
        _libc.posix_spawn_file_actions_destroy(file_actions)
        _libc.posix_spawnattr_destroy(attr)


M_ARENA_MAX = -8  # mallopt(3)


def limit_malloc_arenas(count: int) -> None:
    """mallopt(M_ARENA_MAX, count): glibc gives every thread that mallocs an
    arena of its own, whose pages stay resident; pid1's few threads (bounded
    work, the boot-log writer, the loop's executor) are never hot enough to
    need one. Takes effect for threads started after it."""
    if _libc.mallopt(M_ARENA_MAX, count) != 1:
        raise OSError("mallopt(M_ARENA_MAX) refused")


def release_free_memory() -> None:
    """malloc_trim(0): hand the heap's free pages back to the kernel. Boot-time
    imports and JSON churn leave free pages resident in PID 1 otherwise."""
    _libc.malloc_trim(0)


class _Timeval(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_usec", ctypes.c_long)]


def set_realtime(seconds: float) -> None:
    """Step the wall clock (CLOCK_REALTIME) to `seconds` since the epoch; needs CAP_SYS_TIME."""
    time.clock_settime(time.CLOCK_REALTIME, seconds)


def adjtime(offset: float) -> None:
    """Slew the wall clock by `offset` seconds (adjtime(3): the kernel speeds
    it up or slows it down by 0.05 %); needs CAP_SYS_TIME."""
    whole = int(offset)
    delta = _Timeval(whole, round((offset - whole) * 1e6))
    _libc.adjtime.argtypes = [ctypes.POINTER(_Timeval), ctypes.c_void_p]
    _check(_libc.adjtime(ctypes.byref(delta), None), "adjtime")


# --- growing a partition and its filesystem ------------------------------------
BLKPG = 0x1269  # _IO(0x12, 105)
BLKPG_RESIZE_PARTITION = 3
EXT4_IOC_RESIZE_FS = 0x40086610  # _IOW('f', 16, __u64)


class _BlkpgPartition(ctypes.Structure):
    _fields_ = [
        ("start", ctypes.c_longlong),  # bytes
        ("length", ctypes.c_longlong),
        ("pno", ctypes.c_int),
        ("devname", ctypes.c_char * 64),
        ("volname", ctypes.c_char * 64),
    ]


class _BlkpgIoctlArg(ctypes.Structure):
    _fields_ = [("op", ctypes.c_int), ("flags", ctypes.c_int), ("datalen", ctypes.c_int), ("data", ctypes.c_void_p)]


def resize_partition(disk_fd: int, number: int, start: int, length: int) -> None:
    """BLKPG_RESIZE_PARTITION: tell the kernel partition `number` of the disk
    open on disk_fd now spans `length` bytes from `start` (which must be
    where it starts). Works while the partition is mounted, unlike
    BLKRRPART, which refuses a disk in use. Needs CAP_SYS_ADMIN."""
    part = _BlkpgPartition(start=start, length=length, pno=number)
    arg = _BlkpgIoctlArg(op=BLKPG_RESIZE_PARTITION, datalen=ctypes.sizeof(part), data=ctypes.addressof(part))
    _libc.ioctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p]
    _check(_libc.ioctl(disk_fd, BLKPG, ctypes.byref(arg)), f"BLKPG_RESIZE_PARTITION {number}")


def resize_ext4(fd: int, blocks: int) -> None:
    """EXT4_IOC_RESIZE_FS: grow the mounted ext4 filesystem that fd (any file
    or directory on it) belongs to, to `blocks` blocks, online (what
    resize2fs does for a mounted filesystem). Needs CAP_SYS_RESOURCE."""
    fcntl.ioctl(fd, EXT4_IOC_RESIZE_FS, struct.pack("Q", blocks))
