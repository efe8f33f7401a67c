"""Ptys that stand in for the machine's terminals in the tests and benchmarks.

- `ViewScreen`: the view's terminal (VT2). A thread drains the master side
  and keeps every byte with the time it came, so a test can split it into
  frames (each starts with cursor home) and count the frames of a period.
- `Terminal`: the console's terminal. The test types on the master side and
  waits (bounded) for a pattern in what comes back; nothing drains it
  meanwhile, so a terminal nobody reads fills up as a real stuck one does.
  With `answers_late` it answers a cursor position query as a slow terminal
  does (a serial line under TCG, a loaded host): LATE_ANSWER_SECONDS after
  it read the query.

Stdlib only.
"""

from __future__ import annotations

import fcntl
import os
import re
import select
import struct
import termios
import threading
import time
from collections.abc import Callable

from devtools.harness import wait_for

HOME = b"\x1b[H"
LATE_ANSWER_SECONDS = 0.3
CURSOR_QUERY = "\x1b[6n"


def open_pty(rows: int | None = None, cols: int | None = None) -> tuple[int, int, str]:
    """(master, slave, the slave's path), the slave sized rows x cols when given."""
    master, slave = os.openpty()
    if rows and cols:
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
    return master, slave, os.ttyname(slave)


class ViewScreen:
    """The master side of the view's pty: everything pid1 writes, with arrival times."""

    def __init__(self, rows: int = 25, cols: int = 80) -> None:
        self.master, self.slave, self.path = open_pty(rows, cols)
        self.data = bytearray()
        self.chunks: list[tuple[float, int]] = []  # (time, frames started in the chunk)
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        while True:
            try:
                chunk = os.read(self.master, 65536)
            except OSError:
                return
            if not chunk:
                return
            with self.lock:
                self.data += chunk
                self.chunks.append((time.monotonic(), chunk.count(HOME)))

    def frames(self) -> list[str]:
        """Every frame's text so far, oldest first."""
        with self.lock:
            text = bytes(self.data).decode("utf-8", errors="replace")
        return text.split(HOME.decode())[1:]

    def frame_count(self) -> int:
        with self.lock:
            return sum(n for _, n in self.chunks)

    def frames_between(self, start: float, end: float) -> int:
        with self.lock:
            return sum(n for t, n in self.chunks if start <= t <= end)

    def quiet_for(self, seconds: float) -> bool:
        """Nothing has arrived for `seconds`."""
        with self.lock:
            last = self.chunks[-1][0] if self.chunks else 0.0
        return time.monotonic() - last >= seconds

    def settled(self, what: str, quiet: float, timeout: float = 10) -> float:
        """Wait (bounded) until nothing has come for `quiet` seconds (say,
        twice the view's coalescing interval). Returns when the last chunk came."""
        wait_for(what, lambda: self.quiet_for(quiet), timeout, lambda: (self.frames() or [""])[-1][:2000])
        with self.lock:
            return self.chunks[-1][0] if self.chunks else 0.0

    def close(self) -> None:
        os.close(self.master)
        os.close(self.slave)


class Terminal:
    """The master side of the console's pty: what the test types and what it reads back."""

    def __init__(self, answers_late: bool = False) -> None:
        self.master, self.slave, self.path = open_pty()
        os.set_blocking(self.master, False)
        self.seen = ""
        self.answers_late = answers_late
        self.queries_seen = 0
        self._owed = 0  # answers not sent yet
        self._answer_due: float | None = None

    def type(self, text: str | bytes) -> None:
        os.write(self.master, text.encode() if isinstance(text, str) else text)

    def _read_some(self, timeout: float) -> None:
        if self._answer_due is not None:
            timeout = min(timeout, self._answer_due - time.monotonic())
        ready, _, _ = select.select([self.master], [], [], max(timeout, 0))
        if ready:
            try:
                data = os.read(self.master, 65536).decode(errors="replace")
            except OSError:  # BlockingIOError, or EIO once the slave side is gone
                return
            self.seen += data
            self.queries_seen += data.count(CURSOR_QUERY)
            if self.answers_late:
                self._owed += data.count(CURSOR_QUERY)
                if self._owed and self._answer_due is None:
                    self._answer_due = time.monotonic() + LATE_ANSWER_SECONDS
        if self._answer_due is not None and time.monotonic() >= self._answer_due:
            self.type("\x1b[25;5R" * self._owed)
            self._owed, self._answer_due = 0, None

    def expect(self, pattern: str, timeout: float, after: int = 0, describe: Callable[[], str] = str) -> re.Match:
        """Wait (bounded) until `pattern` shows up in the output from offset `after`."""
        deadline = time.monotonic() + timeout
        while True:
            found = re.compile(pattern).search(self.seen, after)
            if found:
                return found
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(
                    f"{pattern!r} not on the screen within {timeout} s; screen after offset {after}:\n"
                    f"{self.seen[after:]!r}\n{describe()}"
                )
            self._read_some(min(left, 0.2))

    def settle(self, seconds: float) -> None:
        """Read whatever arrives for `seconds` (used only where absence is the point)."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            self._read_some(left)

    def close(self) -> None:
        for fd in (self.master, self.slave):
            try:
                os.close(fd)
            except OSError:
                pass
