"""One console terminal of the bridge: its output queue, written as the
terminal takes it, with bounded backpressure.

A terminal that is slow gets its output through `add_writer` when its fd is
writable again; one that takes nothing for OUTPUT_STALL_SECONDS is marked
stalled, so it cannot hold up the other terminals or the container. A write
error marks it dead (its bridge drops it).

Owns: Terminal, open_terminal (raw mode, through pid1.linux.terminal).
May use: the event loop and pid1.linux.terminal.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field

from pid1.linux.terminal import TerminalMode, Tty, open_tty

# Output waits (backpressure) while a terminal has more than this pending...
OUTPUT_HIGH_WATER = 64 * 1024
# ...but no longer than this: a terminal that takes nothing for that long
# (a VT with Scroll Lock on, a serial line held by flow control) is marked
# stalled: its pending output is dropped and, until it takes output again, it
# gets only what fits under the high-water mark, so it cannot hold up the
# other terminals or the container.
OUTPUT_STALL_SECONDS = 5.0


@dataclass
class Terminal:
    """One open console terminal: its fd, the attributes to restore, and the
    output it has not taken yet."""

    tty: Tty
    pending: bytearray = field(default_factory=bytearray)
    alive: bool = True
    stalled: bool = False
    dropped: int = 0  # output bytes this terminal lost while stalled
    on_dead: Callable[[Terminal, str], None] = lambda term, why: None
    _drained: asyncio.Event = field(default_factory=asyncio.Event)
    _writer_registered: bool = False

    @property
    def path(self) -> str:
        return self.tty.path

    @property
    def fd(self) -> int:
        return self.tty.fd

    def window_size(self) -> tuple[int, int]:
        """(rows, columns); (0, 0) when the terminal does not know (serial)."""
        return self.tty.size()

    def write(self, data: bytes) -> None:
        """Queue `data` and write what the terminal takes now; the rest goes
        out when the fd is writable again."""
        if not self.alive or not data:
            return
        if self.stalled and len(self.pending) + len(data) > OUTPUT_HIGH_WATER:
            self.dropped += len(data)
            return
        self.pending += data
        self._flush()

    def _flush(self) -> None:
        while self.pending and self.alive:
            try:
                written = os.write(self.fd, self.pending)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                self.on_dead(self, f"write: {exc.strerror}")
                return
            del self.pending[:written]
        loop = asyncio.get_running_loop()
        if self.pending and self.alive:
            self._drained.clear()
            if not self._writer_registered:
                loop.add_writer(self.fd, self._flush)
                self._writer_registered = True
            return
        self.stalled = False  # it took everything: back to full backpressure
        self._drained.set()
        if self._writer_registered:
            loop.remove_writer(self.fd)
            self._writer_registered = False

    async def wait_drained(self, high_water: int, timeout: float) -> int:
        """Wait until at most `high_water` bytes are pending. If the terminal
        takes nothing for `timeout` seconds, mark it stalled, drop what is
        pending and return how many bytes were dropped (0 otherwise). A
        stalled terminal is not waited for."""
        while self.alive and not self.stalled and len(self.pending) > high_water:
            before = len(self.pending)
            self._drained.clear()
            try:
                await asyncio.wait_for(self._drained.wait(), timeout)
            except TimeoutError:
                if len(self.pending) >= before:
                    dropped = len(self.pending)
                    self.dropped += dropped
                    self.pending.clear()
                    self.stalled = True
                    return dropped
        return 0

    def restore(self) -> None:
        """Put back the attributes the terminal had before pid1 opened it."""
        self.tty.restore()

    def close(self) -> None:
        self.alive = False
        self._drained.set()
        with contextlib.suppress(RuntimeError):  # no running loop: nothing registered
            loop = asyncio.get_running_loop()
            loop.remove_reader(self.fd)
            loop.remove_writer(self.fd)
        self._writer_registered = False
        self.tty.close()


def open_terminal(path: str) -> Terminal:
    """Open a console terminal for the bridge in raw mode (pid1.linux.terminal).
    Raises OSError if it cannot be opened or is not a terminal."""
    return Terminal(open_tty(path, TerminalMode.RAW))
