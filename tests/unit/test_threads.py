"""pid1.threads.bounded with real threads: a result and an error come back,
a timeout gives up at once and sets the abandon flag, and a thread that ends
after its loop has closed does no harm."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from pid1.threads import bounded


def test_the_result_and_the_error_come_back() -> None:
    async def both() -> None:
        assert await bounded(sum, [1, 2, 3], timeout=5) == 6
        with pytest.raises(ZeroDivisionError):
            await bounded(lambda: 1 / 0, timeout=5)

    asyncio.run(both())


def test_a_timeout_gives_up_and_the_thread_ends_later_without_harm(monkeypatch: pytest.MonkeyPatch) -> None:
    release, abandon = threading.Event(), threading.Event()
    errors: list[BaseException | None] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: errors.append(args.exc_value))

    def stuck() -> str:
        release.wait(10)
        return "late"

    async def give_up() -> float:
        began = time.monotonic()
        with pytest.raises(TimeoutError):
            await bounded(stuck, timeout=0.2, name="pid1-test-stuck", abandon=abandon)
        return time.monotonic() - began

    took = asyncio.run(give_up())  # the loop is closed when this returns
    assert 0.2 <= took < 1.5, took
    assert abandon.is_set()
    [thread] = [t for t in threading.enumerate() if t.name == "pid1-test-stuck"]
    assert thread.daemon, "a stuck thread must not hold the interpreter's exit"
    release.set()
    thread.join(5)
    assert not thread.is_alive(), "the abandoned thread did not end"
    assert errors == [], f"the thread's late answer to a closed loop raised: {errors}"
