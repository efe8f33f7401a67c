"""The RAM check, PID 1's first step: in a machine with less RAM than the
system needs, the boot says so in one line on every console (/dev/kmsg at
the critical level, so even a `quiet` boot shows it) and halts, instead of
failing later in a way that names nothing (dockerd ended by the OOM killer,
the engine's image half unpacked).

The kernel unpacks the whole initramfs before it runs /init: image/build
puts /init, Python and pid1 in the parts unpacked first and the engine's
image last, so in a VM too small for all of it the unpack stops at the
engine (the kernel's "Initramfs unpacking failed: write error") and /init
still runs and gets here. The halt leaves the line on the screen; a power
off would close the VM's window.

sysinfo(2) (through sysconf) is MemTotal without /proc, which nothing has
mounted yet.
"""

from __future__ import annotations

import os

# The documented minimum: a VM of this size runs the system and containers (issue 14).
MIN_RAM_MIB = 512
# What the kernel reports for such a VM is less: the kernel's code and its
# reservations (a 512 MiB VM shows MemTotal 455 MiB under qemu with Debian's
# 6.1 kernel; firmware and other kernels take more). Below this, refuse.
MIN_MEMTOTAL_MIB = 400


def memtotal_mib() -> int:
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // (1 << 20)


def too_small(total_mib: int, minimum_mib: int = MIN_MEMTOTAL_MIB) -> str | None:
    """The one line to show when total_mib is below the minimum, else None."""
    if total_mib >= minimum_mib:
        return None
    return (
        f"only-docker needs a machine with at least {MIN_RAM_MIB} MiB of RAM; this one has {total_mib} MiB "
        f"(MemTotal, at least {minimum_mib} needed): halting"
    )


def say(line: str, kmsg: str = "/dev/kmsg") -> None:
    """The line on every console: /dev/kmsg at level 2 (critical), else stderr."""
    try:
        fd = os.open(kmsg, os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, f"<2>pid1: {line}\n".encode())
        finally:
            os.close(fd)
    except OSError:
        os.write(2, f"pid1: {line}\n".encode())
