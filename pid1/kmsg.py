"""Records for the kernel's log, /dev/kmsg ("<LEVEL>TAG: text"), which
dmesg and the serial console show: the format pid1's log writes, and a
one-shot writer for short-lived helpers (the modprobe the kernel runs has no
terminal).

Owns: LEVELS, KMSG_MAX, record, write_once.
May use: os only: the modprobe helper imports it on its start-up path.
"""

from __future__ import annotations

import os

# syslog levels as /dev/kmsg takes them ("<N>message")
LEVELS = {"error": 3, "warning": 4, "notice": 5, "info": 6, "debug": 7}
KMSG_MAX = 900  # the kernel truncates a record at ~1 KiB


def record(level: str, tag: str, text: str) -> bytes:
    """One kmsg record for one line of text (cut to KMSG_MAX characters)."""
    return f"<{LEVELS[level]}>{tag}: {text[:KMSG_MAX]}".encode(errors="replace")


def write_once(level: str, tag: str, text: str, path: str = "/dev/kmsg") -> None:
    """Open, write one record, close; silent when there is no kmsg or it
    refuses (rate limiting): a trace must never fail what it traces."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return
    try:
        os.write(fd, record(level, tag, text))
    except OSError:
        pass
    finally:
        os.close(fd)
