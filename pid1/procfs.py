"""Readers of /proc that the lightest entry points share: the modprobe front
(pid1.modprobe, which runs on every module request the kernel and dockerd
make) and pid1.kmod behind it. Imports only `os`, so that the front stays
cheap and neither imports the other to read a file.
"""

from __future__ import annotations


def loaded_modules(proc_modules: str = "/proc/modules") -> set[str]:
    """Names in /proc/modules (empty when the kernel has no module support)."""
    try:
        with open(proc_modules) as f:
            return {line.split(" ", 1)[0] for line in f if line.strip()}
    except OSError:
        return set()
