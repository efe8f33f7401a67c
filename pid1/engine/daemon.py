"""A daemon pid1 keeps running (containerd, dockerd): spawn it through the
reaper, wait until it answers, spawn it again when it exits, stop it.

Owns `Daemon` and `wait_until` (the readiness poll: READY_FIRST_DELAY
doubling to READY_MAX_DELAY, never a fixed sleep). A daemon that exits is
spawned again at once after a run of STABLE_RUN seconds, else after
RESTART_FIRST doubling to RESTART_CAP (pid1.backoff); a spawn that fails (a
missing binary) is retried the same way and never ends the service. Each
daemon's state is `state.dockerd.NAME` (pid, status: DaemonStatus, argv,
restarts, up_since, ready_after, last_exit, error, stopped_in); its output
goes through its log pump (pid1/engine/log_pump.py).

May use: pid1.backoff, pid1.engine.log_pump, pid1.engine.status, pid1.state;
the reaper and the log it is given.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pid1.backoff import Backoff
from pid1.engine.log_pump import DaemonLog
from pid1.engine.status import DaemonStatus
from pid1.layout import SYSTEM_PATH
from pid1.state import uptime

if TYPE_CHECKING:
    from pid1.log import Log
    from pid1.reaper import Child, Reaper
    from pid1.state import StateStore

READY_FIRST_DELAY = 0.005
READY_MAX_DELAY = 0.1
READY_TIMEOUT = 60.0
RESTART_FIRST = 0.1
RESTART_CAP = 10.0
STABLE_RUN = 30.0  # a daemon up this long restarts at once next time it dies
KILLED_EXIT_TIMEOUT = 1.0  # a SIGKILLed daemon still in the kernel (D state) is left to the final stop


def daemon_env() -> dict[str, str]:
    """pid1's environment without what would make a daemon think a service
    manager is listening (systemd's notify socket, socket activation)."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("NOTIFY_SOCKET", "LISTEN_"))}
    env.setdefault("PATH", SYSTEM_PATH)
    return env


async def socket_answers(path: str) -> bool:
    """Whether a unix socket at `path` accepts a connection."""
    try:
        _reader, writer = await asyncio.open_unix_connection(path)
    except OSError:
        return False
    writer.close()
    return True


async def wait_until(probe: Callable[[], Awaitable[bool]], timeout: float, alive: Callable[[], bool]) -> bool:
    """Call probe with a fast bounded backoff until it says yes; False on
    timeout or as soon as `alive()` says the daemon died."""
    deadline = uptime() + timeout
    backoff = Backoff(READY_FIRST_DELAY, READY_MAX_DELAY)
    while True:
        if await probe():
            return True
        if not alive() or uptime() >= deadline:
            return False
        await asyncio.sleep(backoff.next())


@dataclass
class Daemon:
    """One daemon pid1 keeps running: spawn, readiness, restart, stop."""

    name: str
    argv: Callable[[], list[str]]  # asked at every spawn
    env: dict[str, str]
    probe: Callable[[], Awaitable[bool]]  # does it answer?
    log: Log
    reaper: Reaper
    store: StateStore
    log_dir: str  # where <name>.log goes (the state dir)
    before_spawn: Callable[[], None] = lambda: None
    # Called each time it is back after an exit (not at the first start).
    after_restart: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    child: Child | None = None
    up: asyncio.Event = field(default_factory=asyncio.Event)  # set while it answers
    stopping: bool = False  # the orderly stop began: no restarts from here on
    restarts: int = 0
    spawned_at: float = 0.0
    ready_after: float | None = None

    @property
    def log_path(self) -> str:
        return os.path.join(self.log_dir, f"{self.name}.log")

    def record(self, **changes: Any) -> None:
        self.store.state.dockerd.daemon(self.name).update(**changes)
        self.store.changed()

    def alive(self) -> bool:
        return self.child is not None and self.child.returncode is None

    def spawn(self) -> None:
        self.before_spawn()
        argv = self.argv()
        output = DaemonLog(self.name, self.log_path, self.log)
        write_end = output.open_pipe()
        try:
            self.child = self.reaper.spawn(argv, env=self.env, stdout=write_end, stderr=write_end)
        except OSError:
            output.close()
            raise
        finally:
            os.close(write_end)
        self.spawned_at = uptime()
        self.log.info(f"{self.name} started (pid {self.child.pid}): {' '.join(argv)}")
        self.record(pid=self.child.pid, status=DaemonStatus.STARTING, argv=argv, restarts=self.restarts)

    async def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        if not await wait_until(self.probe, timeout, self.alive):
            code = self.child.returncode if self.child else None
            why = f"exited with status {code}" if code is not None else f"did not answer within {timeout:.0f} s"
            self.record(status=DaemonStatus.FAILED, error=why)
            raise RuntimeError(f"{self.name} {why} (see {self.log_path})")
        self.ready_after = round(uptime() - self.spawned_at, 3)
        self.record(status=DaemonStatus.RUNNING, up_since=round(uptime(), 3), ready_after=self.ready_after, error=None)
        self.up.set()

    async def keep_alive(self) -> None:
        """The service: wait for the daemon to exit, spawn it again with backoff."""
        backoff = Backoff(RESTART_FIRST, RESTART_CAP)
        while not self.stopping:
            assert self.child is not None
            code = await self.child.wait()
            self.up.clear()
            if self.stopping:
                return
            ran = uptime() - self.spawned_at
            if ran >= STABLE_RUN:
                backoff.reset()
                delay = 0.0
            else:
                delay = backoff.next()
            self.restarts += 1
            self.log.error(f"{self.name} exited with status {code} after {ran:.1f} s; restarting in {delay:.1f} s")
            self.record(status=DaemonStatus.RESTARTING, last_exit=code, restarts=self.restarts, up_since=None)
            while True:  # until a spawn works (a missing binary must not end the service)
                await asyncio.sleep(delay)
                if self.stopping:
                    return
                try:
                    self.spawn()
                    break
                except OSError as exc:
                    delay = backoff.next()
                    self.log.error(f"{self.name} cannot be started: {exc}; trying again in {delay:.1f} s")
                    self.record(status=DaemonStatus.FAILED, error=str(exc))
            try:
                await self.wait_ready()
                self.log.notice(f"{self.name} is back after {self.ready_after * 1000:.0f} ms")
                for callback in self.after_restart:
                    try:
                        await callback()
                    except Exception as exc:
                        self.log.error(f"{self.name}: after-restart step failed: {exc!r}")
            except RuntimeError as exc:  # it died or hung while starting: the next round handles it
                self.log.error(f"{self.name} restart failed: {exc}")
                if self.alive():
                    self.child.signal(signal.SIGKILL)

    async def restart(self) -> None:
        """Restart on request (the control channel): SIGTERM; keep_alive spawns it again."""
        if self.alive():
            self.log.notice(f"{self.name}: restart requested")
            self.child.signal(signal.SIGTERM)

    async def stop(self, timeout: float) -> None:
        """SIGTERM, SIGKILL after `timeout`; returns once it has exited."""
        self.stopping = True
        self.up.clear()
        if not self.alive():
            return
        assert self.child is not None
        began = uptime()
        self.child.signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.child.wait(), timeout)
        except TimeoutError:
            self.log.warning(f"{self.name} still running {timeout:.0f} s after SIGTERM: SIGKILL")
            self.child.signal(signal.SIGKILL)
            try:
                await asyncio.wait_for(self.child.wait(), KILLED_EXIT_TIMEOUT)
            except TimeoutError:
                self.log.error(f"{self.name} survived SIGKILL for {KILLED_EXIT_TIMEOUT:.0f} s; going on")
                return
        self.log.info(f"{self.name} stopped in {(uptime() - began) * 1000:.0f} ms")
        self.record(status=DaemonStatus.STOPPED, stopped_in=round(uptime() - began, 3))
