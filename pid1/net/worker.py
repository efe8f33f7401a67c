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

if TYPE_CHECKING:
    from pid1.net.mode import NetMode
    from pid1.reaper import Reaper

# The worker imports pyroute2 (costly under emulation) while the
# console container starts, which the user waits for: it yields the CPU.
WORKER_NICE = 10
# The worker's own deadline is the phase's; this is extra slack for its start
# (Python + pyroute2 import) before PID 1 gives up on it and kills it.
WORKER_GRACE = 15.0
WORKER_STOP_TIMEOUT = 2.0


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

    async def events(self, deadline: float) -> AsyncIterator[dict[str, Any]]:
        """Events until the child closes its stdout or the deadline passes."""
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(self.read_end, "rb", buffering=0)
        )
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    yield {"event": "error", "message": "the netlink worker did not answer in time"}
                    return
                try:
                    line = await asyncio.wait_for(reader.readline(), remaining)
                except TimeoutError:
                    continue
                if not line:
                    return
                try:
                    yield json.loads(line)
                except ValueError:
                    yield {"event": "error", "message": f"unreadable line from the netlink worker: {line[:200]!r}"}
        finally:
            transport.close()

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


def worker_args(mode: NetMode, deadline: float) -> list[str]:
    if mode.kind == "none":
        return ["--only-lo"]
    args = ["--deadline", f"{deadline:.3f}"]
    if mode.kind == "static":
        args += ["--static", mode.address or ""]
        if mode.gateway:
            args += ["--gateway", mode.gateway]
        else:
            args.append("--no-wait")  # no default route will come: the address is enough
    return args
