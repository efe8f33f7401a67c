"""The one backoff of pid1: a delay that doubles from `first` up to `cap`.

Owns `Backoff`. Every retry loop of pid1 waits by it: the supervisor's phase
retries and services, the engine's readiness probe and daemon restarts, the
system containers' restarts and event resubscribes, and the clock client's
rounds (pid1/sntp.py, which runs in a container: so this module uses the
standard library only and imports nothing of pid1).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Backoff:
    """Doubling delays, capped: `next()` gives first, 2*first, 4*first... up
    to cap; `reset()` (after a stable run) starts over.

    With `immediate`, the first try after a reset waits nothing: a service
    that ran well and then failed once is restarted at once, and only a
    second failure in a row starts the doubling."""

    first: float
    cap: float
    immediate: bool = False
    tries: int = 0  # since the last reset

    def delay(self, tries: int) -> float:
        """The wait before try number `tries` (1: the first) since a reset."""
        doublings = tries - (2 if self.immediate else 1)
        if doublings < 0:
            return 0.0
        return min(self.first * 2 ** min(doublings, 64), self.cap)

    def next(self) -> float:
        self.tries += 1
        return self.delay(self.tries)

    def reset(self) -> None:
        self.tries = 0
