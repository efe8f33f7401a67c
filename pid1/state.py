"""The supervisor's state: one plain object, published on every change.

The state is a tree of dataclasses (its records and sections are typed in
pid1/state_schema.py) serialised atomically (write + rename) to
`<state_dir>/state.json`. Writes are coalesced to one per loop iteration, and
listeners (the VT2 view, the status file) are told after each write. The
supervisor owns the only instance; phases change it through their context.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from pid1.state_schema import (
    ClockState,
    ContainerState,
    EngineState,
    Mode,
    NetworkState,
    PhaseState,
    ReaperState,
    Record,
    SshState,
    StorageState,
    UserdataState,
)

LOG_RING_SIZE = 300  # lines
LOG_RING_BYTES = 64 * 1024  # of messages (UTF-8): 300 lines of 1 KiB would be 300 KiB per state write
LOG_LINE_MAX = 1024  # bytes of one message kept in the ring; the rest is cut (the kernel keeps ~1 KiB too)


def uptime() -> float:
    """Seconds since boot (CLOCK_BOOTTIME, what /proc/uptime shows)."""
    return time.clock_gettime(time.CLOCK_BOOTTIME)


@dataclass
class LogLine:
    time: float
    level: str
    message: str

    @property
    def size(self) -> int:
        return len(self.message.encode(errors="replace"))


class LogRing(deque):
    """The last log lines: at most `maxlen` lines and `max_bytes` bytes of
    messages (the oldest lines go first), so that neither many lines nor a
    few huge ones grow the state file. Only append() adds lines."""

    def __init__(
        self, lines: Iterable[LogLine] = (), maxlen: int = LOG_RING_SIZE, max_bytes: int = LOG_RING_BYTES
    ) -> None:
        super().__init__(maxlen=maxlen)
        self.max_bytes = max_bytes
        self.bytes = 0
        for line in lines:
            self.append(line)

    def __reduce__(self) -> tuple:  # copy and deepcopy: deque's would count the bytes twice
        return type(self), (list(self), self.maxlen, self.max_bytes)

    def append(self, line: LogLine) -> None:
        if len(self) == self.maxlen:
            self.bytes -= self[0].size
        super().append(line)
        self.bytes += line.size
        while self.bytes > self.max_bytes and len(self) > 1:
            self.bytes -= self.popleft().size


def cut_line(message: str, limit: int = LOG_LINE_MAX) -> str:
    """message, cut to at most `limit` UTF-8 bytes with a note of how much was cut."""
    raw = message.encode(errors="replace")
    if len(raw) <= limit:
        return message
    kept = raw[: limit - 40].decode(errors="ignore")
    return f"{kept}... ({len(raw) - len(kept.encode())} more bytes cut)"


@dataclass
class State:
    """The root: what state.json holds. Its records and sections are typed
    (pid1/state_schema.py); the view reads them."""

    pid: int = field(default_factory=os.getpid)
    booted_at: float = field(default_factory=uptime)
    mode: Mode = Mode.BOOTING
    stop_reason: str | None = None
    emergency_reason: str | None = None
    phases: dict[str, PhaseState] = field(default_factory=dict)
    milestones: dict[str, float] = field(default_factory=dict)
    storage: StorageState = field(default_factory=StorageState)
    network: NetworkState = field(default_factory=NetworkState)
    dockerd: EngineState = field(default_factory=EngineState)
    userdata: UserdataState = field(default_factory=UserdataState)
    clock: ClockState = field(default_factory=ClockState)
    ssh: SshState = field(default_factory=SshState)
    containers: dict[str, ContainerState] = field(default_factory=dict)
    reaper: ReaperState = field(default_factory=ReaperState)
    log: LogRing = field(default_factory=LogRing)
    updated: float = 0.0

    def to_json(self) -> dict[str, Any]:
        """The state as plain dicts and lists, shallowly: it shares the
        values (json.dumps and the renderer only read them). asdict would
        deep-copy every log line on each write."""
        data = {key: value.to_json() if isinstance(value, Record) else value for key, value in vars(self).items()}
        data["phases"] = {name: p.to_json() for name, p in self.phases.items()}
        data["containers"] = {role: c.to_json() for role, c in self.containers.items()}
        data["log"] = [vars(line) for line in self.log]
        return data


class StateStore:
    """Holds the State, writes it atomically and tells listeners, coalescing
    bursts of changes into one write per loop iteration."""

    def __init__(self, state_dir: str, state: State | None = None) -> None:
        self.state = state or State()
        self.state_dir = state_dir
        self.path = os.path.join(state_dir, "state.json")
        self.listeners: list[Callable[[State], None]] = []
        self.writes = 0
        self._scheduled = False

    def changed(self) -> None:
        """Mark the state changed; it is written once the current callbacks finish."""
        if self._scheduled:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.flush()
            return
        self._scheduled = True
        loop.call_soon(self.flush)

    def flush(self) -> None:
        self._scheduled = False
        self.state.updated = uptime()
        try:
            # Compact: json's C encoder only serves dumps without indent, and
            # this runs on every change (`python -m pid1 status` is the
            # readable view).
            text = json.dumps(self.state.to_json(), separators=(",", ":"), default=str)
            write_atomically(self.path, text + "\n")
            self.writes += 1
        except OSError as exc:
            # The state dir can vanish (a test, an unmounted /run): the state in
            # memory and on VT2 is still right; report once per failure burst.
            os.write(2, f"pid1: cannot write {self.path}: {exc}\n".encode())
        for listener in list(self.listeners):
            try:
                listener(self.state)
            except Exception as exc:
                os.write(2, f"pid1: state listener failed: {exc!r}\n".encode())


def write_atomically(path: str, text: str) -> None:
    """Write `text` to `path` so readers see the old or the new file, never half.

    Synchronous on purpose: the file is a few KiB on a tmpfs, cheaper than a
    thread hop through aiofiles."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp"
    # The state dir is shared with containers (dom0 has /run/pid1): whatever
    # sits at the temporary name is removed, and the file is made anew
    # (O_EXCL never follows a symlink planted there in between).
    try:
        os.unlink(tmp)
    except FileNotFoundError:
        pass
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)
    os.rename(tmp, path)
