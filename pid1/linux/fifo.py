"""FIFOs pid1 reads, and the bounded line splitter their readers share.

A FIFO is what a shell's `>` (or a busybox script in a container) can write
to: the control channel (pid1.control) and the event FIFOs of the dhcp and
ntp containers' scripts (EventFifo) are FIFOs pid1 holds and reads on the
event loop, never blocking it.

Owns: making a FIFO safely (ensure_fifo, open_fifo_reader: root's, mode
0600, no symlink followed), retiring it at the stop (retire_fifo),
LineReader (lines of bounded length, over-long ones dropped without being
kept), EventFifo (a FIFO of one-word event lines, read with a write end
held).
May use: the standard library only.
"""

from __future__ import annotations

import asyncio
import os
import stat
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

MAX_LINE = 4096
CHUNK = 4096
READS_PER_WAKE = 16  # 64 KiB per loop iteration at most
EVENT_LINE_MAX = 256  # an event is one word per line; anything longer is dropped


@dataclass
class LineReader:
    """Splits a byte stream into lines of at most max_line bytes; longer
    lines are dropped (reported once each) without being kept in memory."""

    max_line: int = MAX_LINE
    buffer: bytearray = field(default_factory=bytearray)
    discarding: bool = False
    dropped_bytes: int = 0

    def end(self) -> tuple[list[bytes], int]:
        """The writers closed: an unterminated line ends here (as feed())."""
        return self.feed(b"\n") if self.buffer or self.discarding else ([], 0)

    def feed(self, data: bytes) -> tuple[list[bytes], int]:
        """The complete lines in `data` and how many over-long lines ended in it."""
        lines: list[bytes] = []
        overlong = 0
        start = 0
        while start < len(data):
            newline = data.find(b"\n", start)
            end = len(data) if newline < 0 else newline
            piece = data[start:end]
            if self.discarding:
                self.dropped_bytes += len(piece)
            elif len(self.buffer) + len(piece) > self.max_line:
                self.discarding = True
                self.dropped_bytes = len(self.buffer) + len(piece)
                self.buffer.clear()
            else:
                self.buffer += piece
            if newline < 0:
                break
            if self.discarding:
                overlong += 1
                self.discarding = False
            else:
                lines.append(bytes(self.buffer))
                self.buffer.clear()
            start = newline + 1
        return lines, overlong


def ensure_fifo(path: str) -> None:
    """A FIFO (mode 0600) at path: a stale file or socket there is replaced,
    and so is the empty directory close() leaves (a directory with anything
    in it is not pid1's: that is an error)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        st = None
    if st is not None and stat.S_ISDIR(st.st_mode):
        os.rmdir(path)  # fails (ENOTEMPTY) on a directory pid1 did not leave
        st = None
    elif st is not None and not stat.S_ISFIFO(st.st_mode):
        os.unlink(path)
        st = None
    if st is None:
        os.mkfifo(path, 0o600)  # (the umask can only take bits away)
    elif stat.S_IMODE(st.st_mode) != 0o600:
        os.close(open_fifo_reader(path))  # its mode is set through an fd: a path can be swapped for a symlink


def open_fifo_reader(path: str) -> int:
    """The FIFO's read end (non-blocking, not following a symlink planted at
    path), made root's with mode 0600 through the fd, not the path."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOFOLLOW)
    try:
        st = os.fstat(fd)
        if not stat.S_ISFIFO(st.st_mode):
            raise OSError(f"{path} is not a FIFO (replaced while it was made?)")
        if st.st_uid != 0 and os.geteuid() == 0:
            os.fchown(fd, 0, 0)
        os.fchmod(fd, 0o600)
    except BaseException:
        os.close(fd)
        raise
    return fd


def retire_fifo(path: str) -> str | None:
    """Replace the FIFO at path by an empty directory, where a writer's open
    fails at once (EISDIR). Returns what went wrong, if anything."""
    try:
        if stat.S_ISFIFO(os.lstat(path).st_mode):
            os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        return f"cannot remove {path}: {exc.strerror or exc}"
    try:
        os.mkdir(path, 0o500)
    except FileExistsError:
        return f"{path} was made again (a late writer?) before the stop placeholder: left as it is"
    except OSError as exc:
        return f"cannot make the stop placeholder {path}: {exc.strerror or exc}"
    return None


class EventFifo:
    """A FIFO of one-word event lines (a container's script writes them),
    read on the loop: `events()` yields the lines that are one of `words`,
    in order; other lines, and lines over EVENT_LINE_MAX bytes, are dropped.

    Opened read-write and non-blocking: pid1 holding a write end means the
    read end never sees end-of-file (no busy loop when a writer closes), and
    the script's open never blocks while pid1 runs."""

    def __init__(self, path: str, words: tuple[str, ...]) -> None:
        ensure_fifo(path)
        self.words = words
        self.fd = os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        self.reader = LineReader(max_line=EVENT_LINE_MAX)
        self.queue: asyncio.Queue[str] = asyncio.Queue()

    def _readable(self) -> None:
        for _ in range(READS_PER_WAKE):  # bounded work per wake-up
            try:
                chunk = os.read(self.fd, CHUNK)
            except BlockingIOError:
                break
            if not chunk:
                break
            lines, _overlong = self.reader.feed(chunk)
            for line in lines:
                word = line.decode(errors="replace").strip()
                if word in self.words:
                    self.queue.put_nowait(word)

    async def events(self) -> AsyncIterator[str]:
        loop = asyncio.get_running_loop()
        loop.add_reader(self.fd, self._readable)
        try:
            while True:
                yield await self.queue.get()
        finally:
            loop.remove_reader(self.fd)

    def close(self) -> None:
        os.close(self.fd)
