"""Blocking work off the loop, with a bound: `await bounded(fn, *args, timeout=...)`.

A read of a hanging disk, a module's init or a copy to a slow disk can block
for ever, and a thread cannot be killed. So the work runs in a daemon thread
of its own (not the default executor, whose threads the interpreter joins at
exit: a stop would wait on them), the caller waits at most `timeout` seconds,
and on a timeout or a cancellation the thread is left to end on its own: its
result is dropped, and `abandon` (when given) is set, so that work which can
check it stops at its next check and changes nothing more.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


async def bounded(
    fn: Callable[..., T], *args: Any, timeout: float, name: str = "pid1-work", abandon: threading.Event | None = None
) -> T:
    """fn(*args) in a daemon thread; TimeoutError after `timeout` seconds."""
    loop = asyncio.get_running_loop()
    outcome: asyncio.Future[T] = loop.create_future()

    def settle(result: Any, error: BaseException | None) -> None:
        if outcome.done():  # timed out or cancelled meanwhile: nobody waits for it
            return
        if error is not None:
            outcome.set_exception(error)
        else:
            outcome.set_result(result)

    def work() -> None:
        result: Any = None
        error: BaseException | None = None
        try:
            result = fn(*args)
        except Exception as exc:
            error = exc
        try:
            loop.call_soon_threadsafe(settle, result, error)
        except RuntimeError:
            pass  # the loop has closed: nobody waits for it

    threading.Thread(target=work, name=name, daemon=True).start()
    try:
        return await asyncio.wait_for(outcome, timeout)
    except (TimeoutError, asyncio.CancelledError):
        if abandon is not None:
            abandon.set()
        raise
