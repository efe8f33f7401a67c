"""vt2: the live supervisor view on a terminal (VT2, Alt-F2) and the plain
text `<state_dir>/status`. Needs mounts (for /dev and the state dir).
Optional: a machine without VT2 still boots, and still gets the status file.

The terminal is `pid1.view_tty` (default tty2: <root>/dev/tty2; a full path
is used as it is; `none` turns it off). A missing terminal is skipped
quietly: that is the normal case in containers and tests. Both outputs are
redrawn from the state listener, so only a state change causes a redraw;
bursts are coalesced to at most one frame every MIN_INTERVAL seconds, and
nothing runs on a timer while the state is unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from dataclasses import dataclass, field
from typing import Any

from pid1.linux.terminal import TerminalMode, Tty, open_tty, terminal_path
from pid1.log import Log
from pid1.phases import Phase, PhaseContext
from pid1.state import State, uptime, write_atomically
from pid1.view.render import render, render_long
from pid1.view.text import ASCII_GLYPHS

MIN_INTERVAL = 0.25  # at most 4 frames a second
DEFAULT_SIZE = (25, 80)  # what a VT is; also used when a terminal reports 0x0
STATUS_COLUMNS = 80
STATUS_LOG_LINES = 40
DISABLED = ("none", "off", "no")
# Home, then each line followed by clear-to-end-of-line, then clear below:
# the screen is overwritten in place, so there is no flicker between frames.
HOME, CLEAR_EOL, CLEAR_BELOW, CLEAR_ALL = "\x1b[H", "\x1b[K", "\x1b[J", "\x1b[2J"
HIDE_CURSOR, SHOW_CURSOR = "\x1b[?25l", "\x1b[?25h"


def frame(lines: list[str], first: bool) -> bytes:
    body = (CLEAR_EOL + "\r\n").join(lines) + CLEAR_EOL + CLEAR_BELOW
    prefix = (HIDE_CURSOR + CLEAR_ALL if first else "") + HOME
    return (prefix + body).translate(ASCII_GLYPHS).encode("utf-8", errors="replace")


def fingerprint(data: dict[str, Any]) -> str:
    """What a frame shows, minus the clock: equal fingerprints, equal frames
    (but for the uptime in the header, which is not worth a wake-up)."""
    log = data.get("log") or []
    last = log[-1] if log else None
    rest = {key: value for key, value in data.items() if key not in ("updated", "log")}
    return json.dumps(rest, default=str) + f"|{len(log)}|{last}"


@dataclass
class LiveView:
    """Redraws the terminal and rewrites the status file after state changes."""

    log: Log
    status_path: str
    tty: Tty | None = None  # None: no terminal view, the status file only
    min_interval: float = MIN_INTERVAL
    frames: int = 0  # frames written to the terminal
    dropped: int = 0  # frames the terminal could not take (full buffer)
    status_writes: int = 0
    unchanged: int = 0  # state writes that changed nothing shown
    _drawn: str = ""
    _pending: bool = False
    _last: float = field(default=-1e9)
    _failed: set[str] = field(default_factory=set)

    def on_change(self, state: State) -> None:
        """The store's listener: schedule one redraw, no sooner than
        min_interval after the previous one."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if loop is None or state.mode == "stopping":
            # The stop's last steps (and anything logged after the loop ended)
            # must reach the screen: the loop may end before a delayed frame.
            self.redraw(state)
            return
        if self._pending:
            return
        self._pending = True
        delay = max(0.0, self._last + self.min_interval - time.monotonic())
        loop.call_later(delay, self.redraw, state)

    def redraw(self, state: State) -> None:
        self._pending = False
        try:
            data = state.to_json()
            mark = fingerprint(data)
            if mark == self._drawn:
                self.unchanged += 1  # written again with nothing new (a no-op changed()): no frame
                return
            self._drawn = mark
            self._last = time.monotonic()
            now = uptime()
            self.write_status(state, now)
            if self.tty is not None:
                self.write_terminal(self.tty, state, now)
        except Exception as exc:
            self.fail_once("render", f"view: cannot render the state: {exc!r}")

    def write_status(self, state: State, now: float) -> None:
        text = "\n".join(render_long(state, STATUS_COLUMNS, now, STATUS_LOG_LINES)) + "\n"
        try:
            write_atomically(self.status_path, text)
            self.status_writes += 1
        except OSError as exc:
            self.fail_once("status", f"view: cannot write {self.status_path}: {exc}")

    def write_terminal(self, tty: Tty, state: State, now: float) -> None:
        rows, cols = tty.size()
        rows, cols = (rows, cols) if rows and cols else DEFAULT_SIZE
        payload = frame(render(state, rows, cols, now), first=self.frames == 0)
        try:
            written = os.write(tty.fd, payload)
        except BlockingIOError:
            self.dropped += 1
            return
        except OSError as exc:
            # Logging changes the state, which would redraw and fail again:
            # report once and stop using the terminal.
            self.fail_once("tty", f"view: {tty.path} failed ({exc}); the view is off, status file only")
            self.close_terminal()
            return
        if written < len(payload):
            self.dropped += 1  # the next frame starts with HOME and repaints all
        self.frames += 1

    def fail_once(self, what: str, message: str) -> None:
        if what not in self._failed:
            self._failed.add(what)
            self.log.warning(message)

    def restore_terminal(self) -> None:
        """The stop: the cursor back on and the settings as they were (on a
        development machine the terminal outlives pid1)."""
        if self.tty is not None:
            with contextlib.suppress(OSError):
                os.write(self.tty.fd, SHOW_CURSOR.encode())
            self.tty.restore()

    def close_terminal(self) -> None:
        if self.tty is not None:
            self.tty.close()
            self.tty = None


def choose_terminal(ctx: PhaseContext) -> tuple[Tty | None, str]:
    """(the terminal or None, why) for pid1.view_tty."""
    name = ctx.config.view_tty
    if name.lower() in DISABLED:
        return None, f"pid1.view_tty={name}: no terminal view"
    path = terminal_path(name, ctx.root)
    if not os.path.exists(path):
        return None, f"no {path}: no terminal view"
    try:
        tty = open_tty(path, TerminalMode.VIEW)
    except OSError as exc:
        ctx.log.warning(f"view terminal {path} cannot be used ({exc.strerror or exc}): status file only")
        return None, f"{path} unusable"
    return tty, f"view on {path}"


async def run(ctx: PhaseContext) -> str:
    tty, why = choose_terminal(ctx)
    live = LiveView(log=ctx.log, status_path=os.path.join(ctx.config.state_dir, "status"), tty=tty)
    ctx.store.listeners.append(live.on_change)
    if tty is not None:

        async def restore() -> None:
            # vt2 runs early in the boot, so this hook runs late in the stop
            # (hooks run in reverse): the view shows the stop until then.
            live.restore_terminal()

        ctx.add_stop_hook("view terminal settings", restore)
    live.on_change(ctx.state)  # the first frame, without waiting for a change
    return f"{why}; status in {live.status_path}"


PHASE = Phase(name="vt2", run=run, needs=("mounts",), required=False)
