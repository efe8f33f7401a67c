"""The supervisor: runs the phase DAG, keeps services alive, turns signals
into an orderly stop, and publishes every change to the state.

It knows phases only by their name, needs and policy. A phase whose needs are
done starts at once, concurrently with every other such phase. Required phases
are retried with capped backoff (the error is in the state meanwhile);
optional ones are logged and their dependents go on. Services (long-running
watchers a phase starts, e.g. "keep dockerd alive") are restarted with backoff
if they raise, and cancelled at stop.

Owns: Supervisor (the DAG run, services, signals, the stop plan). May use:
pid1.backoff, pid1.config, pid1.log, pid1.phases, pid1.reaper, pid1.shutdown,
pid1.state, pid1.wiring, pid1.linux.syscalls.
"""

from __future__ import annotations

import asyncio
import signal
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from pid1 import shutdown
from pid1.backoff import Backoff
from pid1.config import Config
from pid1.linux import syscalls
from pid1.log import Log
from pid1.phases import Phase, PhaseContext, StopHook
from pid1.reaper import Reaper
from pid1.state import StateStore, uptime
from pid1.state_schema import Mode, PhaseState, PhaseStatus
from pid1.wiring import MountTable, RestartRegistry, Wiring

RETRY_FIRST = 0.5
RETRY_CAP = 30.0

# Each stop signal and how its orderly stop ends (the README's signal table).
# Debian's busybox has no telinit: its applets signal PID 1 the way busybox
# init expects, so these follow busybox init. SIGTERM is all busybox `reboot`
# sends, and busybox init reboots on it: a stop that ends in a reboot.
STOP_SIGNALS = {
    signal.SIGTERM: "reboot",  # busybox `reboot`, `kill -TERM 1`
    signal.SIGINT: "reboot",  # what the kernel sends PID 1 on Ctrl-Alt-Del with CAD off
    signal.SIGUSR2: "poweroff",  # busybox `poweroff`
    signal.SIGPWR: "poweroff",  # a UPS daemon's "power is failing"
    signal.SIGUSR1: "halt",  # busybox `halt`
}
DUMP_SIGNAL = signal.SIGHUP  # logs a one-line state summary


@dataclass
class Supervisor:
    config: Config
    log: Log
    store: StateStore
    reaper: Reaper
    phases: dict[str, Phase]
    root: str = "/"
    retry_first: float = RETRY_FIRST
    stop_hooks: list[tuple[str, StopHook]] = field(default_factory=list)
    # Called when a stop is requested, before it is logged (e.g. the console
    # log level put back, so the whole stop shows on the console).
    before_stop: list[Callable[[], None]] = field(default_factory=list)
    mounts: MountTable = field(default_factory=MountTable)
    restart_actions: RestartRegistry = field(default_factory=RestartRegistry)
    wiring: Wiring = field(default_factory=Wiring)
    stop_requested: asyncio.Event = field(default_factory=asyncio.Event)
    stop_action: str = "poweroff"
    _phase_tasks: dict[str, asyncio.Task] = field(default_factory=dict)
    _service_tasks: dict[str, asyncio.Task] = field(default_factory=dict)
    _done: dict[str, asyncio.Event] = field(default_factory=dict)

    def context(self, phase: Phase) -> PhaseContext:
        """What `phase` gets: the supervisor's tables and its own view of the wiring."""
        return PhaseContext(
            config=self.config,
            log=self.log,
            store=self.store,
            reaper=self.reaper,
            wiring=self.wiring.view(phase),
            mounts=self.mounts,
            restart_actions=self.restart_actions,
            start_service=self.start_service,
            add_stop_hook=self.add_stop_hook,
            add_before_stop=self.before_stop.append,
            request_stop=self.request_stop,
            root=self.root,
        )

    # --- signals ---------------------------------------------------------------
    def on_signal(self, signo: int) -> None:
        if signo in STOP_SIGNALS:
            self.request_stop(STOP_SIGNALS[signo], f"signal {signal.Signals(signo).name}")
        elif signo == DUMP_SIGNAL:
            phases = ", ".join(f"{p.name}={p.status}" for p in self.store.state.phases.values())
            self.log.notice(f"state: mode={self.store.state.mode} phases: {phases}")
        else:
            self.log.info(f"ignoring {signal.Signals(signo).name}")

    def request_stop(self, action: str, why: str) -> None:
        if self.stop_requested.is_set():
            self.log.warning(f"{why}: already stopping ({self.stop_action}), ignored")
            return
        self.run_before_stop()
        self.stop_action = action
        self.store.state.stop_reason = f"{action} ({why})"
        self.log.notice(f"stop requested: {action} ({why})")
        self.stop_requested.set()

    def run_before_stop(self) -> None:
        """The before_stop callbacks (also on the way into emergency mode)."""
        for callback in self.before_stop:
            try:
                callback()
            except Exception as exc:
                self.log.error(f"before the stop: {exc!r}")

    # --- services and stop hooks --------------------------------------------------
    def add_stop_hook(self, name: str, hook: StopHook) -> None:
        self.stop_hooks.append((name, hook))

    def start_service(self, name: str, factory: Callable[[], Awaitable[None]]) -> None:
        """Run factory() until it returns; restart it with backoff when it raises."""
        if name in self._service_tasks and not self._service_tasks[name].done():
            raise RuntimeError(f"service {name} already running")
        self._service_tasks[name] = asyncio.get_running_loop().create_task(self._keep_service(name, factory))

    async def _keep_service(self, name: str, factory: Callable[[], Awaitable[None]]) -> None:
        backoff = Backoff(RETRY_FIRST, RETRY_CAP)
        while True:
            started = uptime()
            try:
                await factory()
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if uptime() - started > RETRY_CAP:
                    backoff.reset()
                delay = backoff.next()
                self.log.error(f"service {name} failed: {exc!r}; restarting in {delay:.1f} s")
                self.log.debug(traceback.format_exc())
                await asyncio.sleep(delay)

    # --- the phase DAG ---------------------------------------------------------------
    async def run_phases(self) -> None:
        """Start every phase; returns when all have ended (done or failed)."""
        state = self.store.state
        for phase in self.phases.values():
            state.phases[phase.name] = PhaseState(name=phase.name, needs=list(phase.needs), required=phase.required)
            self._done[phase.name] = asyncio.Event()
        self.store.changed()
        loop = asyncio.get_running_loop()
        for phase in self.phases.values():
            task = loop.create_task(self._run_phase(phase, self.context(phase)), name=f"phase-{phase.name}")
            self._phase_tasks[phase.name] = task
        await asyncio.gather(*self._phase_tasks.values(), return_exceptions=True)
        if not self.stop_requested.is_set():
            state.mode = Mode.RUNNING
            self.log.notice(f"boot done at {uptime():.2f} s")
            syscalls.release_free_memory()

    async def _run_phase(self, phase: Phase, ctx: PhaseContext) -> None:
        record = self.store.state.phases[phase.name]
        try:
            for need in phase.needs:
                if need in self._done:
                    await self._done[need].wait()
            backoff = Backoff(self.retry_first, RETRY_CAP)
            while True:
                record.attempts += 1
                record.status = PhaseStatus.RUNNING
                record.started = round(uptime(), 3)
                record.ended = record.duration = None
                self.store.changed()
                try:
                    detail = await phase.run(ctx)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    record.error = f"{type(exc).__name__}: {exc}"
                    record.ended = round(uptime(), 3)
                    record.duration = round(record.ended - record.started, 3)
                    if not phase.required:
                        record.status = PhaseStatus.FAILED
                        self.log.warning(f"phase {phase.name} failed (optional, going on): {record.error}")
                        self.log.debug(traceback.format_exc())
                        return
                    delay = backoff.next()
                    record.status = PhaseStatus.RETRYING
                    self.store.changed()
                    self.log.error(
                        f"phase {phase.name} failed: {record.error}; retry {record.attempts} in {delay:.1f} s"
                    )
                    self.log.debug(traceback.format_exc())
                    await asyncio.sleep(delay)
                    continue
                record.status = PhaseStatus.DONE
                record.error = None
                record.detail = str(detail) if detail is not None else None
                record.ended = round(uptime(), 3)
                record.duration = round(record.ended - record.started, 3)
                extra = f": {record.detail}" if record.detail else ""
                self.log.info(
                    f"phase {phase.name} done in {record.duration * 1000:.0f} ms (uptime {record.ended:.2f} s){extra}"
                )
                return
        except asyncio.CancelledError:
            if record.status not in (PhaseStatus.DONE, PhaseStatus.FAILED):
                record.status = PhaseStatus.CANCELLED
            raise
        finally:
            self._done[phase.name].set()
            self.store.changed()

    # --- the whole life ----------------------------------------------------------------
    async def run(self) -> str:
        """Boot, supervise until a stop is requested, stop in order.
        Returns the stop action: "poweroff", "reboot" or "halt"."""
        self.store.state.mode = Mode.BOOTING
        boot = asyncio.get_running_loop().create_task(self.run_phases(), name="boot")
        await self.stop_requested.wait()
        await shutdown.stop(self.stop_plan(boot), self.log, self.store, self.reaper)
        return self.stop_action

    def stop_plan(self, boot: asyncio.Task | None) -> shutdown.StopPlan:
        """What the stop needs: what still runs, the hooks, the mounts, the grace."""
        tasks = [*self._phase_tasks.values(), *self._service_tasks.values()]
        if boot is not None:
            tasks.append(boot)
        return shutdown.StopPlan(
            action=self.stop_action,
            tasks=tasks,
            hooks=self.stop_hooks,
            mounts=self.mounts,
            grace=self.config.stop_grace,
        )
