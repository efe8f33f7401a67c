"""The console bridge: the VM's terminals (serial, VT1) <-> the console
container's TTY.

pid1 opens every console terminal once, with O_NOCTTY (so a terminal never
becomes pid1's controlling terminal) and in raw mode with ISIG off (so
Ctrl-C, Ctrl-Z, Ctrl-D and Ctrl-\\ are plain bytes the host line discipline
passes on instead of turning them into signals). While a console container
runs, `attach()` copies bytes both ways between all terminals and the
container's attach stream: output goes to every terminal, input comes from
any. The container's TTY does the terminal work (echo, line editing, signals
for its own foreground job). Between containers the terminals show one line
saying the console is restarting and why (`show_waiting`). A cursor position
query in the output never reaches a terminal: pid1 answers it (pid1.cursor),
unless a typed line sent to the container has not been echoed yet. That line
may have been on its way when the shell checked for pending input and asked;
the shell then reads it and runs it with its TTY cooked, and an answer
arriving then is echoed into the command's output (`^[[6;5R`). An unanswered
query costs nothing: busybox ash goes on without the answer.

Everything runs on the event loop: terminal input through `add_reader` on
non-blocking fds, output through `add_writer` when a terminal is slow, no
threads. A terminal that goes away (EIO, hang-up) is dropped and the others
carry on; one that stops taking output is skipped after a bounded wait so it
cannot stall the others.

Owns: ConsoleBridge (the terminals' fan-out and fan-in, the attach streams)
and the waiting line.
May use: pid1.console.terminal, pid1.cursor, the aiodocker container it is
given (attach, start, resize, wait) and the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pid1.console.terminal import OUTPUT_HIGH_WATER, OUTPUT_STALL_SECONDS, Terminal
from pid1.cursor import CursorTracker, Query, UnechoedLines

if TYPE_CHECKING:
    from pid1.engine.client import Container
    from pid1.log import Log

# A serial console reports 0x0: the container's TTY gets this size then.
DEFAULT_ROWS = 25
DEFAULT_COLUMNS = 80
READ_CHUNK = 4096
# dockerd replaces an empty detachKeys with its default, ctrl-p,ctrl-q (which
# would end the session on Ctrl-P, "previous line" in shells). This sequence
# is never typed in practice; were it typed, attach() reattaches anyway. The
# daemon holds back a lone first key (Ctrl-@, NUL) until the next keypress.
DETACH_KEYS = "ctrl-@,ctrl-^,ctrl-_,ctrl-@,ctrl-^,ctrl-_"
# A stream that ends while the container still runs is reattached, at most
# this many times in a row without any output in between.
MAX_QUIET_REATTACHES = 5
# How long a container whose stream ended gets to report that it stopped.
STILL_RUNNING_WAIT = 1.0
# How long a stream gets to bring a stopped container's last output.
STOPPED_OUTPUT_GRACE = 0.5
# Keystrokes typed while a stream is reattached wait for the next stream, up
# to this many reads; beyond that they are dropped (nobody types that fast,
# a paste into a dead stream should not grow pid1).
INPUT_BACKLOG_READS = 256
WAITING_PREFIX = "[pid1] console restarting: "
# A query split across reads is held back this long for the rest to come
# (pid1.cursor); output that ends in a lone ESC is not delayed longer.
HELD_OUTPUT_SECONDS = 0.05


@dataclass
class SessionEnd:
    """How one attach stream ended: whether any output came through, and
    whether dockerd said the container stopped (or could not say: gone)."""

    got_output: bool = False
    stopped: bool = False


def waiting_line(reason: str, columns: int) -> str:
    """The one line shown while no console runs: printable characters only,
    cut to fit the terminal so rewriting it in place never wraps."""
    clean = "".join(ch if ch.isprintable() else " " for ch in reason).strip() or "no reason given"
    line = WAITING_PREFIX + clean
    width = max(columns - 1, len(WAITING_PREFIX) + 3)
    return line if len(line) <= width else line[: width - 3] + "..."


class ConsoleBridge:
    """Bridges the console terminals to whichever console container runs.

    Made by the console_tty phase (the slot `Wiring.console_bridge`) and put
    in the console's ContainerSpec by the console phase; the
    system-container supervisor calls `attach(container)` for each console
    container (created with Tty, OpenStdin, not StdinOnce) and
    `show_waiting(reason)` while none runs.
    """

    def __init__(self, terminals: list[Terminal], log: Log) -> None:
        self.terminals: list[Terminal] = []
        self.log = log
        # Set while a session copies bytes (tests and the state view wait on it).
        self.ready = asyncio.Event()
        self.sessions = 0
        self._input: asyncio.Queue[bytes] | None = None
        self._waiting_shown = False
        self._closed = False
        # The terminals never see a cursor position query: pid1 answers it.
        self.cursor = CursorTracker(DEFAULT_ROWS, DEFAULT_COLUMNS)
        self.cursor_reports = 0  # queries answered, for the tests and the log
        self.cursor_reports_withheld = 0  # queries left unanswered: a line was on its way
        self._unechoed = UnechoedLines()
        self._flush_held: asyncio.TimerHandle | None = None
        for term in terminals:
            self.add_terminal(term)

    # --- terminals ---------------------------------------------------------------
    def add_terminal(self, term: Terminal) -> None:
        term.on_dead = self._drop
        self.terminals.append(term)
        asyncio.get_running_loop().add_reader(term.fd, self._on_input, term)

    def _on_input(self, term: Terminal) -> None:
        try:
            data = os.read(term.fd, READ_CHUNK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._drop(term, f"read: {exc.strerror}")
            return
        if not data:
            self._drop(term, "hang-up")
            return
        # Typed while no console runs: dropped, so a stray Ctrl-D cannot end
        # the next shell before it is seen. Typed while the same console is
        # reattached: kept for the next stream.
        if self._input is not None:
            with contextlib.suppress(asyncio.QueueFull):
                self._input.put_nowait(data)

    def _drop(self, term: Terminal, why: str) -> None:
        if term not in self.terminals:
            return
        self.terminals.remove(term)
        term.restore()
        term.close()
        left = ", ".join(t.path for t in self.terminals) or "none"
        self.log.warning(f"console terminal {term.path} went away ({why}); still bridged: {left}")

    def window_size(self) -> tuple[int, int]:
        """The size the container's TTY gets: the smallest size any terminal
        reports (so output fits all of them), else 25x80 (serial says 0x0)."""
        sizes = [s for s in (t.window_size() for t in self.terminals) if s[0] > 0 and s[1] > 0]
        if not sizes:
            return (DEFAULT_ROWS, DEFAULT_COLUMNS)
        return (min(r for r, _ in sizes), min(c for _, c in sizes))

    def _broadcast(self, data: bytes) -> tuple[bytes, list[Query]]:
        """Write `data` to every terminal, less any cursor position query;
        returns what was written and the queries it held."""
        if self._flush_held is not None:
            self._flush_held.cancel()
            self._flush_held = None
        data, queries = self.cursor.relay(data)
        self._write_all(data)
        if self.cursor.holds_output():
            self._flush_held = asyncio.get_running_loop().call_later(HELD_OUTPUT_SECONDS, self._release_held)
        return data, queries

    def _release_held(self) -> None:
        self._flush_held = None
        self._write_all(self.cursor.take_held())

    def _write_all(self, data: bytes) -> None:
        for term in list(self.terminals):
            term.write(data)

    async def _drain(self) -> None:
        for term in list(self.terminals):
            dropped = await term.wait_drained(OUTPUT_HIGH_WATER, OUTPUT_STALL_SECONDS)
            if dropped:
                self.log.warning(f"console terminal {term.path} took no output for {OUTPUT_STALL_SECONDS:.0f} s: "
                                 f"dropped {dropped} bytes; it gets what fits until it drains")  # fmt: skip

    # --- what the supervisor calls ----------------------------------------------------
    def show_waiting(self, reason: str) -> None:
        """Show (or rewrite in place) the one line saying the console is
        restarting and why, on every terminal."""
        if self._closed:
            return
        columns = self.window_size()[1]
        # The first line of a wait starts on a fresh line; later ones rewrite it.
        lead = "\r\x1b[K" if self._waiting_shown else "\r\n"
        self._broadcast((lead + waiting_line(reason, columns)).encode(errors="replace"))
        self._waiting_shown = True

    def announce(self, lines: list[str]) -> None:
        """Lines the person at the console should see now (the SSH host key
        fingerprints), each `[pid1] ...` on a line of its own, between the
        console's output as cloud images print theirs; a prompt shown before
        them is shown again by the next keypress's echo."""
        if self._closed or not lines:
            return
        text = "".join(f"\r\n[pid1] {''.join(ch if ch.isprintable() else '?' for ch in line)}" for line in lines)
        self._write_all((text + "\r\n").encode(errors="replace"))

    async def attach(self, container: Container, *, start: bool = False) -> None:
        """Bridge the terminals to `container`'s TTY until the container ends.

        With start=True the stream is opened before the container starts, so
        nothing it prints first is lost. The TTY size is set (resize) as soon
        as the container runs. A stream that ends while the container still
        runs (a detach sequence, a dockerd hiccup) is opened again. Returns
        when the container is gone or stopped, or dockerd went away; raises
        (EngineError, aiohttp's errors) only if the first attach, or the start
        asked for, fails.
        """
        quiet_reattaches = 0
        first = True
        # One input queue per container, across its streams: what is typed
        # between two streams reaches the second.
        self._input = queue = asyncio.Queue[bytes](maxsize=INPUT_BACKLOG_READS)
        self._unechoed = UnechoedLines()  # lines sent to an earlier container will never echo
        try:
            while not self._closed:
                ended = await self._session(container, queue, start=start and first, first=first)
                first = False
                if ended.stopped:
                    return
                quiet_reattaches = 0 if ended.got_output else quiet_reattaches + 1
                if quiet_reattaches > MAX_QUIET_REATTACHES:
                    self.log.warning(f"console {container.id[:12]}: attach stream keeps ending at once; giving up")
                    return
                self.log.notice(f"console {container.id[:12]}: attach stream ended while it runs; attaching again")
        finally:
            self._input = None

    async def close(self) -> None:
        """The stop hook: leave every terminal as pid1 found it."""
        self._closed = True
        for term in list(self.terminals):
            term.write(b"\r\n")
            term.restore()
            term.close()
        self.terminals.clear()

    # --- one attach stream ------------------------------------------------------------
    async def _session(
        self, container: Container, queue: asyncio.Queue[bytes], *, start: bool, first: bool
    ) -> SessionEnd:
        """One attach stream, pumped both ways until it ends, or until dockerd
        says the container stopped and the stream has had STOPPED_OUTPUT_GRACE
        to bring the last output."""
        stream = container.attach(stdin=True, stdout=True, stderr=True, logs=False, detach_keys=DETACH_KEYS)
        try:
            await stream.__aenter__()
        except Exception:
            if first:
                raise
            return SessionEnd()
        self.sessions += 1
        pump_in = asyncio.get_running_loop().create_task(self._pump_input(stream, queue))
        outcome = SessionEnd()
        tasks: list[asyncio.Future[Any]] = [pump_in]
        try:
            if start:
                await container.start()
            # dockerd's word on whether the container stopped: the stream alone is not (it ends a
            # moment before dockerd marks the exit, and dockerd never ends a stream opened on a
            # container that has just stopped).
            stopped = asyncio.ensure_future(container.wait())
            tasks.append(stopped)
            await self._resize(container)
            if self._waiting_shown:
                self._broadcast(b"\r\n")
                self._waiting_shown = False
            self.ready.set()
            pump_out = asyncio.ensure_future(self._pump_output(container, stream, pump_in, outcome))
            tasks.append(pump_out)
            await asyncio.wait({pump_out, stopped}, return_when=asyncio.FIRST_COMPLETED)
            if not pump_out.done():
                if stopped.exception() is None:  # it stopped: the stream brings the last output
                    await asyncio.wait({pump_out}, timeout=STOPPED_OUTPUT_GRACE)
                else:  # dockerd could not say (the wait broke): the stream tells
                    await pump_out
            else:  # the stream ended: dockerd gets a moment to mark the exit, if it is one
                await asyncio.wait({stopped}, timeout=STILL_RUNNING_WAIT)
            # returned (it stopped) or raised (it is gone, or dockerd is down): nothing to attach to
            outcome.stopped = stopped.done()
        finally:
            self.ready.clear()
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            with contextlib.suppress(Exception):
                await stream.close()
        return outcome

    async def _pump_output(
        self, container: Container, stream: Any, pump_in: asyncio.Task[None], outcome: SessionEnd
    ) -> None:
        """The stream's output -> every terminal, answering cursor queries,
        until the stream ends or stdin is gone."""
        while True:
            read = asyncio.ensure_future(stream.read_out())
            done, _ = await asyncio.wait({read, pump_in}, return_when=asyncio.FIRST_COMPLETED)
            if read not in done:  # stdin is gone: the stream is over
                read.cancel()
                return
            try:
                message = read.result()
            except Exception as exc:  # the connection broke (dockerd died): the stream is over
                self.log.warning(f"console {container.id[:12]}: attach stream broke: {exc!r}")
                return
            if message is None:
                return
            outcome.got_output = True
            output, queries = self._broadcast(message.data)
            echo_read = 0
            for query in queries:
                self._unechoed.received(output[echo_read : query.at])
                echo_read = query.at
                if self._unechoed.on_their_way():
                    self.cursor_reports_withheld += 1
                    continue
                # Written now, ahead of anything typed later: the shell is
                # still reading its line when the answer comes.
                await stream.write_in(query.report)
                self.cursor_reports += 1
            self._unechoed.received(output[echo_read:])
            await self._drain()

    async def _pump_input(self, stream: Any, queue: asyncio.Queue[bytes]) -> None:
        """Terminal input -> the container's stdin, in order. Returns when the
        stream no longer takes input."""
        while True:
            data = await queue.get()
            self._unechoed.sent(data)
            try:
                await stream.write_in(data)
            except Exception as exc:  # the stream closed under us (container gone)
                self.log.debug(f"console input stopped: {exc!r}")
                return

    async def _resize(self, container: Container) -> None:
        rows, columns = self.window_size()
        self.cursor.resize(rows, columns)
        try:
            await container.resize(h=rows, w=columns)
        except Exception as exc:  # it may have exited already; the stream tells
            self.log.warning(f"console {container.id[:12]}: cannot set its TTY to {rows}x{columns}: {exc}")
