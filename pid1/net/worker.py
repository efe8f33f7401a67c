"""The netlink child as the network phase sees it: `python -m
pid1.net.netlink` started through the reaper (niced: its pyroute2 import
should not slow the console's start), its JSON-line events read from a
pipe on the loop until its deadline, and its end (killed if it lingers).

Owns: Worker, worker_args.
May use: the reaper it is given, pid1.net.mode.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from pid1.net.mode import net_mode_text

if TYPE_CHECKING:
    from pid1.net.mode import NetMode
    from pid1.reaper import Reaper

# The worker imports pyroute2 (costly under emulation) while the
# console container starts, which the user waits for: it yields the CPU.
WORKER_NICE = 10
# The worker's own deadline is the phase's; this is extra slack for its start
# (Python + pyroute2 import) before the phase stops waiting for it.
WORKER_GRACE = 15.0
# How long a worker that missed the phase's deadline may still run: it
# applies the interfaces' settings first thing, however late it starts
# (a loaded machine), and reports them; then it is killed.
WORKER_LATE_LIMIT = 300.0
WORKER_STOP_TIMEOUT = 2.0


TIMED_OUT = {"event": "error", "message": "the netlink worker did not answer in time"}


class Worker:
    """The `python -m pid1.net.netlink` child and the JSON events it prints."""

    def __init__(self, reaper: Reaper, args: list[str]) -> None:
        read_end, write_end = os.pipe2(os.O_CLOEXEC)
        try:
            # stderr: pid1's own (the worker reports its errors as events; a
            # crash before that still leaves its traceback on the console).
            argv = [sys.executable, "-m", "pid1.net.netlink", *args]
            self.child = reaper.spawn(argv, stdout=write_end, stderr=2, nice=WORKER_NICE)
        except BaseException:
            os.close(read_end)
            raise
        finally:
            os.close(write_end)
        self.read_end = read_end
        # Every event the child prints, for as long as it runs (None: its stdout closed). A reader
        # that stops waiting (the phase's deadline) leaves the rest here for a later one.
        self.queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self.reading: asyncio.Task | None = None

    async def _read(self) -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(self.read_end, "rb", buffering=0)
        )
        try:
            while line := await reader.readline():
                try:
                    self.queue.put_nowait(json.loads(line))
                except ValueError:
                    message = f"unreadable line from the netlink worker: {line[:200]!r}"
                    self.queue.put_nowait({"event": "error", "message": message})
        finally:
            transport.close()
            self.queue.put_nowait(None)

    async def events(self, deadline: float) -> AsyncIterator[dict[str, Any]]:
        """Events until the child closes its stdout, or TIMED_OUT once the
        deadline passes (the child may go on: a later call reads on)."""
        if self.reading is None:
            self.reading = asyncio.get_running_loop().create_task(self._read())
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                yield dict(TIMED_OUT)
                return
            try:
                event = await asyncio.wait_for(self.queue.get(), remaining)
            except TimeoutError:
                continue
            if event is None:
                return
            yield event

    async def finish(self) -> int | None:
        """Wait for the child briefly, then make sure it is gone; its status."""
        try:
            return await asyncio.wait_for(self.child.wait(), WORKER_STOP_TIMEOUT)
        except TimeoutError:
            self.child.signal(signal.SIGKILL)
            try:
                return await asyncio.wait_for(self.child.wait(), WORKER_STOP_TIMEOUT)
            except TimeoutError:
                return None


# A named interface that is not there at once may take this long to appear
# (a NIC whose driver loads late); then it is "absent" and the boot goes on.
LINK_WAIT = 5.0


def worker_args(mode: NetMode, deadline: float) -> list[str]:
    if mode.kind == "none":
        return ["--only-lo"]
    return ["--deadline", f"{deadline:.3f}", "--link-wait", f"{LINK_WAIT:g}", "--net", net_mode_text(mode)]
