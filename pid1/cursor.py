"""Where the console's cursor is, from the bytes pid1 relays to the terminals,
so that pid1 answers a cursor position query (ESC[6n) itself.

A shell asks where the cursor is (busybox ash, after each prompt) and goes
on without waiting. Every bridged terminal would answer, each after its own
round trip, and an answer that arrives once the shell has stopped reading is
echoed by the container's cooked TTY into the next command's output
(`^[[25;5R`). So the query never reaches a terminal: `CursorTracker.relay`
removes it from the output and returns the report pid1 writes to the
container's input at once, computed from a model of a VT100-style terminal
that is only as deep as the cursor's position needs (printing with deferred
wrap, CR/LF/BS/TAB, the CSI cursor movements, save/restore). Everything
else, colours and erasing included, passes through untouched.

An answer is safe only while the asking shell still reads its line. The
bridge answers none while a typed line may be on its way (`UnechoedLines`).

Needs nothing but the bytes; no I/O here.
"""

from __future__ import annotations

import re
import time
from collections import deque
from dataclasses import dataclass, field

QUERY = b"\x1b[6n"
# A query split across two reads: these tails are held back until the rest comes.
QUERY_PREFIXES = (QUERY[:1], QUERY[:2], QUERY[:3])
# An unfinished escape sequence longer than this is not tracked further
# (a runaway OSC): its bytes still pass through.
MAX_SEQUENCE = 512
TAB = 8

TOKEN = re.compile(
    rb"(?P<text>[\x20-\x7e]+)"
    rb"|(?P<utf8>[\x80-\xff]+)"
    rb"|\x1b\[(?P<params>[0-?]*)[ -/]*(?P<final>[@-~])"
    rb"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)"  # OSC: a title, a colour; no movement
    rb"|\x1b(?P<esc>[^\[\]])"
    rb"|(?P<ctl>[\x00-\x1a\x1c-\x1f])",
)
# What is left at the end of a read when a sequence is not finished yet.
UNFINISHED = re.compile(rb"\x1b(?:\[[0-?]*[ -/]*|\][^\x07\x1b]*|)\Z")
LINE_END = re.compile(rb"\r\n?|\n")
# What a typed line's echo is recognised by: its last printable characters,
# spaces left out (a shell wraps a long line with CR CR LF, redraws a tab
# completion, erases with BS SPACE BS).
NEEDLE_CHARS = 32
TYPED = re.compile(rb"\x1b(?:\[[0-?]*[ -/]*[@-~]|O.|.)|(?P<text>[!-~\x80-\xff]+)")  # keys like ESC [ A: no text
ECHOED = re.compile(
    rb"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)|.)|(?P<text>[!-~\x80-\xff]+)|(?P<lf>\n)"
)
# Output kept to look for the echo of the line being typed (an interactive
# typist's characters come back before the line end is sent).
ECHO_WINDOW = 4096
# A line whose echo never shows (echo off for a password, a line recalled
# from history or changed by the editor) has reached the shell after this
# long, whatever the load: it stops withholding answers.
LINE_TRANSIT_SECONDS = 5.0
# Lines typed ahead beyond this are not counted: a count this high already
# withholds every answer until they come back.
MAX_UNECHOED = 64


@dataclass(frozen=True)
class Query:
    """A cursor query removed from the output: where it was (an offset in the
    output returned with it) and the report that answers it."""

    at: int
    report: bytes


@dataclass(frozen=True)
class TypedLine:
    """A line end sent to the container, and how its echo is recognised."""

    needle: bytes  # the line's last printable characters, spaces left out
    ended_at: float  # time.monotonic() when its line end was sent


@dataclass
class UnechoedLines:
    """Typed lines the container may not have read yet.

    A line is on its way until the output shows its echo: the line's own
    last characters, then a new line, read after its line end was sent. Other
    output is no sign: the prompt and the banner a shell prints before the
    line reaches it come back after the line was sent, and a query the shell
    writes after them would be answered into the cooked TTY that runs the
    line, which echoes it (`^[[6;5R`). A line whose echo never shows (echo
    off, a line recalled from history) stops counting LINE_TRANSIT_SECONDS
    after it was sent. Lines come back in the order they were sent.
    """

    lines: deque[TypedLine] = field(default_factory=deque)
    _typing: bytearray = field(default_factory=bytearray)  # the line being typed, printable characters
    _output: bytearray = field(default_factory=bytearray)  # printable output since the first line began
    _needle_seen: bool = False  # the first line's characters came back; its new line is next

    @property
    def count(self) -> int:
        return len(self.lines)

    def sent(self, data: bytes, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        at = 0
        for end in LINE_END.finditer(data):
            self._type(data[at : end.start()])
            self._end_line(now)
            at = end.end()
        self._type(data[at:])

    def received(self, data: bytes) -> None:
        if not self.lines and not self._typing:
            return
        for token in ECHOED.finditer(data):
            if token.lastgroup == "text":
                text = token.group()
                self._output += text
                del self._output[:-ECHO_WINDOW]
                # only where the text just added can complete it: a flood of output stays linear
                self._needle_seen = self._needle_seen or self._first_echoed(len(text) + NEEDLE_CHARS)
            elif token.lastgroup == "lf" and self._needle_seen:
                self._arrived()

    def on_their_way(self, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        while self.lines and now - self.lines[0].ended_at > LINE_TRANSIT_SECONDS:
            self._arrived()
        return bool(self.lines)

    def _type(self, data: bytes) -> None:
        if data and not self.lines and not self._typing:
            self._output.clear()  # a new first line: only what comes back from now on is its echo
        for token in TYPED.finditer(data):
            if token.lastgroup == "text":
                self._typing += token.group()
                del self._typing[:-NEEDLE_CHARS]

    def _end_line(self, now: float) -> None:
        if not self.lines and not self._typing:
            self._output.clear()  # an empty first line: its echo is the next new line
        if len(self.lines) < MAX_UNECHOED:
            self.lines.append(TypedLine(bytes(self._typing), now))
            if len(self.lines) == 1:
                self._needle_seen = self._first_echoed()
        self._typing.clear()

    def _first_echoed(self, tail: int = ECHO_WINDOW) -> bool:
        return bool(self.lines) and self.lines[0].needle in self._output[-tail:]

    def _arrived(self) -> None:
        self.lines.popleft()
        self._output.clear()  # the next line's echo comes after this one's
        self._needle_seen = self._first_echoed()


@dataclass
class CursorTracker:
    """The cursor of a `rows` x `columns` terminal, 1-based, as a VT would move it."""

    rows: int = 25
    columns: int = 80
    row: int = 1
    column: int = 1
    wrap_pending: bool = False  # the last column was written: the next character wraps
    saved: tuple[int, int] = (1, 1)
    _unfinished: bytes = b""  # an escape sequence cut by the end of a read (tracking only)
    _held: bytes = b""  # a possible start of a query, held back from the terminals

    def resize(self, rows: int, columns: int) -> None:
        self.rows, self.columns = max(rows, 1), max(columns, 1)
        self._clamp()

    def report(self) -> bytes:
        """The answer a terminal gives to ESC[6n: ESC[row;columnR."""
        return b"\x1b[%d;%dR" % (self.row, self.column)

    def relay(self, data: bytes) -> tuple[bytes, list[Query]]:
        """Output for the terminals (`data` without cursor queries) and the
        queries, each with the report for where the cursor was then."""
        data = self._held + data
        self._held = b""
        if data.endswith(QUERY_PREFIXES):
            cut = max(len(p) for p in QUERY_PREFIXES if data.endswith(p))
            data, self._held = data[:-cut], data[-cut:]
        queries: list[Query] = []
        pieces = data.split(QUERY)
        at = 0
        for index, piece in enumerate(pieces):
            self._track(piece)
            at += len(piece)
            if index < len(pieces) - 1:
                queries.append(Query(at, self.report()))
        return b"".join(pieces), queries

    def holds_output(self) -> bool:
        return bool(self._held)

    def take_held(self) -> bytes:
        """The held-back bytes, when no more output came to complete a query."""
        held, self._held = self._held, b""
        self._track(held)
        return held

    # --- the model ----------------------------------------------------------------------------
    def _track(self, data: bytes) -> None:
        data = self._unfinished + data
        self._unfinished = b""
        tail = UNFINISHED.search(data)
        if tail and len(data) - tail.start() <= MAX_SEQUENCE:
            data, self._unfinished = data[: tail.start()], data[tail.start() :]
        for token in TOKEN.finditer(data):
            kind = token.lastgroup
            if kind == "text":
                self._print(len(token.group()))
            elif kind == "utf8":  # continuation bytes take no cell
                self._print(sum(1 for byte in token.group() if not 0x80 <= byte <= 0xBF))
            elif kind == "final":
                self._csi(token.group("params"), token.group("final"))
            elif kind == "esc":
                self._escape(token.group("esc"))
            elif kind == "ctl":
                self._control(token.group()[0])

    def _print(self, count: int) -> None:
        if count <= 0:
            return
        if self.wrap_pending:
            self._line_feed()
            self.column, self.wrap_pending = 1, False
        last = self.column - 1 + count - 1  # the cell of the last character, 0-based from this row
        for _ in range(last // self.columns):
            self._line_feed()
        cell = last % self.columns + 1
        if cell < self.columns:
            self.column = cell + 1
        else:
            self.column, self.wrap_pending = self.columns, True

    def _line_feed(self) -> None:
        self.row = min(self.row + 1, self.rows)  # at the bottom the screen scrolls

    def _control(self, byte: int) -> None:
        if byte == 0x0D:  # CR
            self.column, self.wrap_pending = 1, False
        elif byte in (0x0A, 0x0B, 0x0C):  # LF, VT, FF
            self._line_feed()
            self.wrap_pending = False
        elif byte == 0x08:  # BS
            self.column, self.wrap_pending = max(self.column - 1, 1), False
        elif byte == 0x09:  # TAB
            self.column = min((self.column - 1) // TAB * TAB + TAB + 1, self.columns)

    def _escape(self, final: bytes) -> None:
        if final == b"7":
            self.saved = (self.row, self.column)
        elif final == b"8":
            self.row, self.column = self.saved
        elif final == b"c":  # reset
            self.row, self.column = 1, 1
        elif final == b"D":  # index
            self._line_feed()
        elif final == b"E":  # next line
            self._line_feed()
            self.column = 1
        elif final == b"M":  # reverse index
            self.row = max(self.row - 1, 1)
        else:
            return
        self.wrap_pending = False
        self._clamp()

    def _csi(self, params: bytes, final: bytes) -> None:
        if params.startswith((b"?", b">", b"<", b"=")):
            return  # private modes: no movement
        numbers = [int(p) if p.isdigit() else 0 for p in params.split(b";")]
        first = numbers[0] or 1
        second = numbers[1] if len(numbers) > 1 and numbers[1] else 1
        if final == b"A":
            self.row -= first
        elif final == b"B" or final == b"e":
            self.row += first
        elif final == b"C" or final == b"a":
            self.column += first
        elif final == b"D":
            self.column -= first
        elif final == b"E":
            self.row, self.column = self.row + first, 1
        elif final == b"F":
            self.row, self.column = self.row - first, 1
        elif final == b"G" or final == b"`":
            self.column = first
        elif final == b"d":
            self.row = first
        elif final in (b"H", b"f"):
            self.row, self.column = first, second
        elif final == b"r":  # scrolling region: the cursor goes home
            self.row, self.column = 1, 1
        elif final == b"s":
            self.saved = (self.row, self.column)
        elif final == b"u":
            self.row, self.column = self.saved
        else:
            return  # colours, erasing, modes: the cursor stays
        self.wrap_pending = False
        self._clamp()

    def _clamp(self) -> None:
        self.row = min(max(self.row, 1), self.rows)
        self.column = min(max(self.column, 1), self.columns)
