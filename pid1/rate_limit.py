"""The one rate limiter of pid1: at most `limit` events per `window` seconds,
and one report of how many were held back.

Owns `RateLimit`. Its users: the control channel's error and repeat
messages (pid1/control.py) and the daemons' warnings forwarded to pid1's log
(pid1/engine/log_pump.py), which /dev/kmsg's own rate limit would otherwise
drop together with pid1's lines. Standard library only.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class RateLimit:
    """`allow()` says yes `limit` times per window, then no until the window
    ends. When a window held something back, `report(count)` is called
    once: from a timer at the window's end (on the running loop), or, with
    no loop running, at the next `allow()` after it (no timer while nothing
    is held back)."""

    limit: int
    window: float
    report: Callable[[int], None]
    clock: Callable[[], float] = time.monotonic
    held_back: int = 0  # in the current window, not reported yet
    _window_start: float = -math.inf
    _count: int = 0
    _timer: asyncio.TimerHandle | None = field(default=None, repr=False)

    def allow(self) -> bool:
        now = self.clock()
        if now - self._window_start >= self.window:
            self.flush()
            self._window_start, self._count = now, 0
        if self._count < self.limit:
            self._count += 1
            return True
        self.held_back += 1
        if self._timer is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                pass  # reported at the next allow() after the window
            else:
                self._timer = loop.call_later(max(self._window_start + self.window - now, 0.0), self.flush)
        return False

    def flush(self) -> None:
        """Report what was held back (if anything) now."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.held_back:
            count, self.held_back = self.held_back, 0
            self.report(count)
