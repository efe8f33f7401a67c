"""The control channel: a FIFO at `<state_dir>/control` that takes one
command per line, so `echo poweroff > /run/pid1/control` works from any
container that has /run/pid1, with nothing but busybox.

Commands: `poweroff`, `reboot`, `restart NAME` (NAME: console, dom0, dockerd,
or any restart action a phase registered in `ctx.restart_actions`).
Anything else gets a clear error in the log and is ignored.

Why a FIFO and not a unix socket: a shell's `>` can open a FIFO but not a
socket. The FIFO is read non-blocking from the event loop.

A FIFO has no boundaries between writers, but its reader sees end-of-file
when the last writer closes: that ends the line too, so `printf poweroff`
(no newline) is a command of its own and cannot be glued to the next
writer's. pid1 holds no write end, so the EOF is seen. Once seen, the read
end would stay readable (POLLHUP) until a writer comes: pid1 then reads on
a fresh open of the same FIFO, which only reports a hang-up after a new
writer has come and gone (the kernel compares writer counts with the
reader's open), unless a writer opened in between, then the old end keeps
watching for that writer's close. Writers that overlap in time share one
stream, as with any FIFO; a line of up to PIPE_BUF (4 KiB) is written whole.

Bad input cannot hurt pid1: a line longer than MAX_LINE bytes is dropped
up to its newline (or its writer's end) without being buffered, each
wake-up reads at most READS_PER_WAKE chunks before yielding to the loop,
and error messages are rate-limited, so a flood costs bounded memory and
bounded time per loop iteration.

At stop the FIFO is replaced by an empty directory: a late `echo poweroff >
control` then fails at once (`Is a directory`) instead of blocking on a
FIFO nobody reads or leaving a regular file nobody reads.

Owns: the ControlChannel (commands, restarts, the stop requests). May use:
pid1.linux.fifo (the FIFO and its line reader), pid1.rate_limit, pid1.log.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from pid1.linux.fds import close_watched
from pid1.linux.fifo import CHUNK, MAX_LINE, READS_PER_WAKE, LineReader, ensure_fifo, open_fifo_reader, retire_fifo
from pid1.log import Log
from pid1.rate_limit import RateLimit

ERRORS_PER_WINDOW = 10
ERROR_WINDOW = 5.0
KNOWN_TARGETS = ("console", "dom0", "dockerd")

RestartAction = Callable[[], Awaitable[Any]]


def limited_log(log: Log, level: str, what: str) -> Callable[[str], None]:
    """A writer of `level` log lines that passes at most ERRORS_PER_WINDOW per
    ERROR_WINDOW seconds; the number held back is logged once the window ends."""
    write = getattr(log, level)  # a Log method: "error", "info"
    limit = RateLimit(
        ERRORS_PER_WINDOW, ERROR_WINDOW, lambda count: write(f"control: {count} more {what} (messages rate-limited)")
    )

    def limited(message: str) -> None:
        if limit.allow():
            write(message)

    return limited


@dataclass
class ControlChannel:
    path: str
    log: Log
    request_stop: Callable[[str, str], None]
    # The phases' restart actions, looked up when a command comes (the phases
    # that register them may start after this channel).
    restart_actions: Callable[[], dict[str, RestartAction]]
    # True once pid1 is stopping: no restart may start then (it would race the stop).
    stopping: Callable[[], bool] = lambda: False
    reader: LineReader = field(default_factory=LineReader)
    read_fd: int = -1
    commands: int = 0
    rejected: int = 0
    stop_requested: str | None = None
    _errors: Callable[[str], None] | None = None
    _repeats: Callable[[str], None] | None = None
    _restarting: dict[str, asyncio.Task] = field(default_factory=dict)

    def open(self) -> None:
        """Make the FIFO (replacing a stale file or pid1's stop placeholder) and start reading it."""
        ensure_fifo(self.path)
        self.read_fd = open_fifo_reader(self.path)
        self._errors = limited_log(self.log, "error", "bad control lines ignored")
        self._repeats = limited_log(self.log, "info", "repeated control commands ignored")
        asyncio.get_running_loop().add_reader(self.read_fd, self.on_readable)

    def close(self) -> None:
        """Stop reading and put the stop placeholder in the FIFO's place."""
        for task in self._restarting.values():
            task.cancel()  # a restart still running must not outlive the stop's hooks
        if self.read_fd >= 0:
            close_watched(self.read_fd)
        self.read_fd = -1
        problem = retire_fifo(self.path)
        if problem:
            self.log.warning(f"control: {problem}")

    def on_readable(self) -> None:
        try:
            for _ in range(READS_PER_WAKE):
                try:
                    data = os.read(self.read_fd, CHUNK)
                except BlockingIOError:
                    return
                if not data:  # every writer closed: the end of their line
                    self.take(*self.reader.end())
                    self.watch_next_writers()
                    return
                self.take(*self.reader.feed(data))
        except Exception as exc:  # a bug here must not take the channel (or pid1) down
            self.log.error(f"control: reading {self.path} failed: {exc!r}")

    def take(self, lines: list[bytes], overlong: int) -> None:
        for _ in range(overlong):
            self.reject(f"control: line longer than {MAX_LINE} bytes ignored")
        for line in lines:
            self.handle(line)

    def watch_next_writers(self) -> None:
        """After EOF: read on a fresh open of the FIFO, which reports a
        hang-up only once the next writers have closed (the old one would
        report it forever). If a writer already came in between, the fresh
        open would miss that writer's close: keep the old one then."""
        loop = asyncio.get_running_loop()
        try:
            fresh = os.open(f"/proc/self/fd/{self.read_fd}", os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:  # (fd exhaustion): pause rather than spin on the hang-up
            self.log.error(f"control: cannot reopen {self.path}: {exc}; reading again in 1 s")
            loop.remove_reader(self.read_fd)
            loop.call_later(1.0, self.resume_reading)
            return
        try:
            data = os.read(fresh, CHUNK)
        except BlockingIOError:
            data = None  # a writer holds the FIFO open
        if data == b"":  # no writer: the fresh end is clean
            loop.remove_reader(self.read_fd)
            os.close(self.read_fd)
            self.read_fd = fresh
            loop.add_reader(self.read_fd, self.on_readable)
            return
        os.close(fresh)
        if data:
            self.take(*self.reader.feed(data))

    def resume_reading(self) -> None:
        if self.read_fd >= 0:  # (not closed by the stop meanwhile)
            asyncio.get_running_loop().add_reader(self.read_fd, self.on_readable)

    def reject(self, message: str) -> None:
        self.rejected += 1
        assert self._errors is not None
        self._errors(message)

    def repeat(self, message: str) -> None:
        """A command that is already being carried out: a flood of them must
        not flood the log either."""
        assert self._repeats is not None
        self._repeats(message)

    def handle(self, raw: bytes) -> None:
        text = raw.decode("utf-8", errors="replace").strip()
        if not text:
            return
        shown = "".join(ch if ch.isprintable() else "?" for ch in text)[:80]
        words = text.split()
        if words == ["poweroff"] or words == ["reboot"]:
            if self.stop_requested is not None:
                self.repeat(f"control: {words[0]}: {self.stop_requested} already requested; ignored")
                return
            self.commands += 1
            self.stop_requested = words[0]
            self.log.notice(f"control: {words[0]}")
            self.request_stop(words[0], "control channel")
        elif len(words) == 2 and words[0] == "restart":
            self.restart(words[1])
        else:
            self.reject(
                f"control: unknown command {shown!r} ignored; "
                f"expected poweroff, reboot or restart {'|'.join(KNOWN_TARGETS)}"
            )

    def restart(self, target: str) -> None:
        if self.stopping() or self.stop_requested is not None:
            self.repeat(f"control: restart {target[:40]!r} ignored: pid1 is stopping")
            return
        action = self.restart_actions().get(target)
        if action is None:
            shown = "".join(ch if ch.isprintable() else "?" for ch in target)[:40]
            if target in KNOWN_TARGETS:
                self.reject(f"control: restart {target}: nothing registered to restart it (is its phase running?)")
            else:
                self.reject(f"control: restart {shown!r}: unknown; expected one of {', '.join(KNOWN_TARGETS)}")
            return
        running = self._restarting.get(target)
        if running is not None and not running.done():
            self.repeat(f"control: restart {target} already in progress; ignored")
            return
        self.commands += 1
        self.log.notice(f"control: restart {target}")
        self._restarting[target] = asyncio.get_running_loop().create_task(self._run_restart(target, action))

    async def _run_restart(self, target: str, action: RestartAction) -> None:
        try:
            await action()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.log.error(f"control: restart {target} failed: {exc!r}")
