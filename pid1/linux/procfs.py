"""Readers of /proc: the kernel command line, the capability bounding set,
the loaded modules, the filesystems the kernel knows, the console log level
(read and set) and which PID namespace this is.

Owns: those readers; each says what it returns when /proc cannot tell (not
mounted yet, no module support), never raising for that.
May use: `os` only (the standard library's open), so that the lightest entry
points (the modprobe front, which runs on every module request the kernel
and dockerd make, and pid1.kmod behind it) stay cheap and neither imports
the other to read a file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

PROC_CMDLINE = "/proc/cmdline"
PROC_STATUS = "/proc/self/status"
CAP_LAST_CAP = "/proc/sys/kernel/cap_last_cap"
PRINTK = "/proc/sys/kernel/printk"
# The inode number of the first PID namespace (PROC_PID_INIT_INO in the kernel).
INIT_PID_NS_INO = 0xEFFFFFFC

# Capability numbers -> names (linux/capability.h).
CAPABILITIES = (
    "CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID", "SETPCAP",
    "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST", "NET_ADMIN", "NET_RAW", "IPC_LOCK", "IPC_OWNER",
    "SYS_MODULE", "SYS_RAWIO", "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT", "SYS_ADMIN", "SYS_BOOT", "SYS_NICE",
    "SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "MKNOD", "LEASE", "AUDIT_WRITE", "AUDIT_CONTROL", "SETFCAP",
    "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG", "WAKE_ALARM", "BLOCK_SUSPEND", "AUDIT_READ", "PERFMON", "BPF",
    "CHECKPOINT_RESTORE",
)  # fmt: skip


def read_cmdline(path: str = PROC_CMDLINE) -> str:
    """The kernel command line; "" when /proc is not mounted (yet)."""
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def loaded_modules(proc_modules: str = "/proc/modules") -> set[str]:
    """Names in /proc/modules (empty when the kernel has no module support)."""
    try:
        with open(proc_modules) as f:
            return {line.split(" ", 1)[0] for line in f if line.strip()}
    except OSError:
        return set()


def kernel_filesystems(path: str = "/proc/filesystems") -> set[str]:
    """The filesystem types the kernel has now (built in or loaded); empty when unknown."""
    try:
        with open(path) as f:
            return {line.split()[-1] for line in f if line.strip()}
    except OSError:
        return set()


def missing_capabilities(status: str = PROC_STATUS, last_cap: str = CAP_LAST_CAP) -> list[str]:
    """Capabilities the kernel knows but this process's bounding set lacks
    (by name; a number past the table by its number); [] when unknown.

    --privileged asks runc for every capability the kernel knows, and runc
    fails ("unable to apply caps") when dockerd's bounding set lacks one; that
    happens only in a restricted sandbox (a container or CI runner), never on
    the VM, where PID 1 has them all."""
    try:
        with open(status) as f:
            bounding = next(int(line.split()[1], 16) for line in f if line.startswith("CapBnd:"))
        with open(last_cap) as f:
            last = int(f.read())
    except (OSError, StopIteration, ValueError, IndexError):
        return []
    return [CAPABILITIES[n] if n < len(CAPABILITIES) else str(n) for n in range(last + 1) if not bounding >> n & 1]


@dataclass
class ConsoleLevel:
    """The kernel's console log level (the first field of /proc/sys/kernel/printk):
    records of a lower syslog level print on the consoles. Lowered once, put
    back on request."""

    path: str = PRINTK
    saved: int | None = None

    def read(self) -> int:
        with open(self.path) as f:
            return int(f.read().split()[0])

    def write(self, level: int) -> None:
        # Writing one number sets only the first field; the others stay.
        with open(self.path, "w") as f:
            f.write(f"{level}\n")

    def lower(self, level: int) -> int:
        """Set the level to `level` if it is higher now; returns the level before."""
        before = self.read()
        if before > level:
            self.write(level)
            self.saved = before
        return before

    def restore(self) -> None:
        if self.saved is not None:
            self.write(self.saved)
            self.saved = None

    def prints(self, syslog_level: int) -> bool:
        """Whether the kernel prints records of `syslog_level` on the consoles
        now; False when unknown."""
        try:
            return self.read() > syslog_level
        except (OSError, ValueError, IndexError):
            return False


def in_first_pid_namespace() -> bool:
    """Whether this process is in the machine's first PID namespace (not a test's)."""
    try:
        return os.stat("/proc/self/ns/pid").st_ino == INIT_PID_NS_INO
    except OSError:
        return False
