"""File descriptors the event loop reads (a FIFO, a pipe, an input device).

Owns: close_watched, the one way to stop reading such an fd and close it.
May use: the standard library only.
"""

from __future__ import annotations

import asyncio
import contextlib
import os


def close_watched(fd: int) -> None:
    """Take `fd` off the running loop's readers and close it. With no loop
    running (the stop's last steps, after the loop ended) there is no reader
    to take off; the fd is closed all the same."""
    with contextlib.suppress(RuntimeError):
        asyncio.get_running_loop().remove_reader(fd)
    os.close(fd)
