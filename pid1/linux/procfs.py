"""Readers of /proc: the kernel command line, the capability bounding set,
the loaded modules and the filesystems the kernel knows.

Owns: those readers; each says what it returns when /proc cannot tell (not
mounted yet, no module support), never raising for that.
May use: `os` only (the standard library's open), so that the lightest entry
points (the modprobe front, which runs on every module request the kernel
and dockerd make, and pid1.kmod behind it) stay cheap and neither imports
the other to read a file.
"""

from __future__ import annotations

PROC_CMDLINE = "/proc/cmdline"
PROC_STATUS = "/proc/self/status"
CAP_LAST_CAP = "/proc/sys/kernel/cap_last_cap"

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
