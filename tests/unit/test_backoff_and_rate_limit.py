"""pid1.backoff and pid1.rate_limit, the one backoff and the one rate limiter
every retry loop and every flood guard of pid1 uses."""

from __future__ import annotations

import asyncio

import pytest

from pid1.backoff import Backoff
from pid1.rate_limit import RateLimit


def test_a_backoff_doubles_to_its_cap_and_starts_over_after_a_reset() -> None:
    backoff = Backoff(0.1, 1.0)
    assert [backoff.next() for _ in range(6)] == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0])
    backoff.reset()
    assert backoff.next() == pytest.approx(0.1)


def test_an_immediate_backoff_waits_nothing_before_its_first_try() -> None:
    backoff = Backoff(0.1, 10.0, immediate=True)
    assert [backoff.next() for _ in range(4)] == pytest.approx([0.0, 0.1, 0.2, 0.4])
    # the delay for a count kept elsewhere (a container's failures in a row)
    assert [backoff.delay(n) for n in (0, 1, 2, 3, 200)] == pytest.approx([0.0, 0.0, 0.1, 0.2, 10.0])


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_rate_limit_holds_back_the_excess_and_reports_it_once() -> None:
    """Without a loop: the count held back is reported at the first allow()
    of the next window; a quiet window reports nothing."""
    clock, reports = Clock(), []
    limit = RateLimit(3, 10.0, reports.append, clock=clock)
    assert [limit.allow() for _ in range(5)] == [True, True, True, False, False]
    assert reports == []
    clock.now += 10.0
    assert limit.allow() is True
    assert reports == [2]
    clock.now += 10.0
    assert limit.allow() is True
    assert reports == [2], "a window that held nothing back reports nothing"


def test_on_a_loop_the_report_comes_when_the_window_ends() -> None:
    async def scenario() -> tuple[list[int], list[int]]:
        reports: list[int] = []
        limit = RateLimit(2, 0.05, reports.append)
        allowed = [limit.allow() for _ in range(6)]
        assert reports == [], "reported before its window ended"
        for _ in range(100):  # bounded: 1 s
            if reports:
                break
            await asyncio.sleep(0.01)
        return [int(a) for a in allowed], reports

    allowed, reports = asyncio.run(scenario())
    assert allowed == [1, 1, 0, 0, 0, 0]
    assert reports == [4]
