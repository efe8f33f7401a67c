"""A daemon's output: the log pump between a daemon's stdout/stderr pipe and
its log file, with its warnings and errors forwarded to pid1's log.

Owns `DaemonLog`: one per daemon run. Each line goes to `<state_dir>/<name>.log`
(DAEMON_LOG_MAX bytes, one old generation kept as `.1`) and to the boot's log
of that daemon in the host state (`Log.copy`). Lines at logrus' warning level
and above also go to pid1's log, at most LOUD_BURST per LOUD_WINDOW seconds
(pid1.rate_limit), then a count: /dev/kmsg's own rate limit would otherwise
drop pid1's lines too. Where stderr is not the console (development, tests)
every line is echoed there as well. The pipe is read on the loop.

May use: pid1.log, pid1.rate_limit, pid1.state (uptime).
"""

from __future__ import annotations

import asyncio
import os
import re
from dataclasses import dataclass, field

from pid1.linux.fds import close_watched
from pid1.log import Log, stderr_is_console
from pid1.rate_limit import RateLimit
from pid1.state import uptime

DAEMON_LOG_MAX = 1 << 20  # bytes per generation of <state_dir>/<name>.log
LONGEST_LINE = 16384  # bytes: a runaway line without a newline is cut here
# dockerd (logrus) says level=...; containerd too. Lines at these levels also
# go to pid1's log (and so to /dev/kmsg); the rest only to the daemon's file.
LOUD_LEVEL = re.compile(r"\blevel=(warning|error|fatal|panic)\b")
# ...at most this many per window and daemon: a crash loop makes dockerd and
# containerd say "stream copy error" and "cleaning up after shim" on every
# exit, and /dev/kmsg's rate limit would then drop pid1's own lines.
LOUD_BURST = 5
LOUD_WINDOW = 10.0


@dataclass
class DaemonLog:
    """Lines from a daemon's stdout/stderr pipe, read on the loop."""

    name: str
    path: str
    log: Log
    fd: int = -1
    echo: bool = field(default_factory=lambda: not stderr_is_console())
    _partial: bytes = b""
    _file: int = -1
    _loud: RateLimit = field(init=False)

    def __post_init__(self) -> None:
        self._loud = RateLimit(LOUD_BURST, LOUD_WINDOW, self._report_held_back)

    def open_pipe(self) -> int:
        """A pipe for the daemon's stdout+stderr; returns the write end (the
        caller hands it to spawn and closes it)."""
        read_end, write_end = os.pipe2(os.O_CLOEXEC)
        os.set_blocking(read_end, False)
        self.fd = read_end
        asyncio.get_running_loop().add_reader(read_end, self._readable)
        return write_end

    def _readable(self) -> None:
        try:
            data = os.read(self.fd, 65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:  # the daemon (and everything holding the pipe) is gone
            self.close()
            return
        *lines, self._partial = (self._partial + data).split(b"\n")
        if len(self._partial) > LONGEST_LINE:
            lines.append(self._partial)
            self._partial = b""
        for line in lines:
            self._line(line.decode(errors="replace").rstrip())

    def _line(self, text: str) -> None:
        if not text:
            return
        self._to_file(text)
        self.log.copy(self.name, text)
        if LOUD_LEVEL.search(text) and self._loud.allow():
            self.log.warning(f"{self.name}: {text}")
        elif self.echo:
            try:
                os.write(2, f"[{uptime():9.3f}] {self.name}: {text}\n".encode(errors="replace"))
            except OSError:
                pass

    def _report_held_back(self, count: int) -> None:
        self.log.info(f"{self.name}: {count} more warnings and errors in {self.path}")

    def _to_file(self, text: str) -> None:
        try:
            if self._file < 0:
                os.makedirs(os.path.dirname(self.path), exist_ok=True)
                self._file = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
            os.write(self._file, f"[{uptime():9.3f}] {text}\n".encode(errors="replace"))
            if os.fstat(self._file).st_size > DAEMON_LOG_MAX:
                os.close(self._file)
                self._file = -1
                os.replace(self.path, self.path + ".1")
        except OSError:
            pass  # the state dir may be gone (tests); the warnings still reach pid1's log

    def close(self) -> None:
        """Stop reading the pipe and close it and the log file."""
        if self.fd >= 0:
            close_watched(self.fd)
            self.fd = -1
        if self._partial:
            self._line(self._partial.decode(errors="replace"))
            self._partial = b""
        if self._file >= 0:  # one per daemon run: left open, a restart loop runs out of fds
            os.close(self._file)
            self._file = -1
