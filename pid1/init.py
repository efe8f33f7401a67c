"""Wires pid1 together and runs it: config, log, state, reaper, supervisor on
a uvloop loop, then the end of life (reboot(2) as PID 1, exit 0 otherwise).

PID 1 must never return from here with an exception: any unexpected error
leads to emergency mode, and if even that fails, to last_resort().
"""

from __future__ import annotations

import asyncio
import os
import time
import traceback
from collections.abc import Sequence

from pid1 import emergency, ram, rootfs, shutdown
from pid1.config import Config, parse_cmdline, quoting_hints
from pid1.linux import procfs, syscalls
from pid1.log import Log
from pid1.phases import BUILTIN_MODULES, load_phases, select_phases
from pid1.reaper import Reaper
from pid1.state import StateStore
from pid1.state_schema import Mode, ReaperState
from pid1.supervisor import STOP_SIGNALS, Supervisor
from pid1.wiring import MountTable

END_ACTIONS = {
    "poweroff": syscalls.RebootCommand.POWER_OFF,
    "reboot": syscalls.RebootCommand.RESTART,
    "halt": syscalls.RebootCommand.HALT,
}


def new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop

        return uvloop.new_event_loop()
    except ImportError:  # a development checkout without deps still boots
        return asyncio.new_event_loop()


def mark_fds_close_on_exec() -> None:
    """No fd pid1 inherited (beyond 0-2) may leak into the children it starts."""
    try:
        fds = [int(fd) for fd in os.listdir("/proc/self/fd")]
    except OSError:
        fds = list(range(3, 256))
    for fd in fds:
        if fd > 2:
            try:
                os.set_inheritable(fd, False)
            except OSError:
                pass


class ReaperCounters:
    """Publishes the reaper's counters to the state at most twice a second, so
    an orphan storm costs a handful of state writes, not one per SIGCHLD."""

    INTERVAL = 0.5

    def __init__(self, store: StateStore, reaper: Reaper, loop: asyncio.AbstractEventLoop) -> None:
        self.store, self.reaper, self.loop = store, reaper, loop
        self.pending = False

    def reaped(self, count: int) -> None:
        if not self.pending:
            self.pending = True
            self.loop.call_later(self.INTERVAL, self.publish)

    def publish(self) -> None:
        self.pending = False
        self.store.state.reaper = ReaperState(
            orphans_reaped=self.reaper.orphans_reaped,
            children_reaped=self.reaper.children_reaped,
            children_running=len(self.reaper.children),
        )
        self.store.changed()


def refuse_small_machine() -> None:
    """Below the minimum RAM: one line on the consoles, then halt (pid1.ram). Never returns then."""
    line = ram.too_small(ram.memtotal_mib())
    if line is None:
        return
    ram.say(line)
    syscalls.sync()
    try:
        syscalls.reboot(syscalls.RebootCommand.HALT)
    except OSError:
        pass
    last_resort()


def build_supervisor(config: Config, log: Log, store: StateStore, reaper: Reaper, root: str) -> Supervisor:
    phases, load_warnings = load_phases(BUILTIN_MODULES, config.extra_phases)
    chosen, warnings = select_phases(phases, config.phases)
    for warning in [*load_warnings, *warnings]:
        log.warning(warning)
    return Supervisor(config=config, log=log, store=store, reaper=reaper, phases=chosen, root=root)


def run(cmdline: str, root: str = "/", ignored_args: Sequence[str] = ()) -> int:
    is_pid1 = os.getpid() == 1
    # The kernel starts init with umask 0 (and a caller may pass any): every
    # file pid1 and its children make would be world-writable without this.
    os.umask(0o022)
    root_notes: list[str] = []
    if is_pid1 and root == "/":
        refuse_small_machine()
        # before anything else: a root runc can pivot_root from, and /proc for the command line
        root_notes = rootfs.prepare()
        cmdline = cmdline or procfs.read_cmdline()
    mark_fds_close_on_exec()
    syscalls.limit_malloc_arenas(1)  # before any thread starts
    config, warnings = parse_cmdline(cmdline)
    store = StateStore(config.state_dir)
    log = Log(store=store)
    log.open()
    log.notice(f"starting as pid {os.getpid()}{'' if is_pid1 else ' (child subreaper, not PID 1)'}")
    for note in root_notes:
        log.info(note)
    for warning in warnings:
        log.warning(warning)
    if ignored_args:
        shown = " ".join(repr(arg[:64]) for arg in ignored_args[:32])
        log.warning(
            f"ignoring {len(ignored_args)} argument(s) the kernel passed to init: {shown} "
            "(kernel command line words without '.' or '='; pid1 reads pid1.KEY=VALUE words from /proc/cmdline)"
        )
        for hint in quoting_hints(cmdline, ignored_args):
            log.warning(f"a value with spaces needs double quotes on the kernel command line: {hint}")
    if not is_pid1:
        syscalls.set_child_subreaper()
    else:
        try:
            # Ctrl-Alt-Del then sends SIGINT to PID 1 instead of an instant reboot.
            syscalls.reboot(syscalls.RebootCommand.CAD_OFF)
        except OSError:
            pass  # EINVAL inside a PID namespace
    loop = new_loop()
    asyncio.set_event_loop(loop)
    reaper = Reaper()
    reaper.on_reaped = ReaperCounters(store, reaper, loop).reaped
    reaper.install(loop)
    sup: Supervisor | None = None
    action = "poweroff"
    try:
        sup = build_supervisor(config, log, store, reaper, root)
        reaper.on_signal = sup.on_signal
        action = loop.run_until_complete(sup.run())
    except BaseException as exc:  # PID 1 must not die: degrade to emergency mode
        if not is_pid1 and isinstance(exc, KeyboardInterrupt):
            raise
        log.error(f"supervisor crashed: {exc!r}")
        log.error(traceback.format_exc())
        if sup is not None:
            sup.run_before_stop()  # emergency mode needs the person's attention: every line on the console
        # A stop already asked for is carried out, not forgotten.
        pending = sup.stop_action if sup is not None and sup.stop_requested.is_set() else None
        mounts = sup.mounts if sup is not None else MountTable()
        action = run_emergency(loop, config, log, store, reaper, f"supervisor crashed: {exc!r}", pending, mounts)
    return finish(action, is_pid1, log)


def run_emergency(
    loop: asyncio.AbstractEventLoop,
    config: Config,
    log: Log,
    store: StateStore,
    reaper: Reaper,
    reason: str,
    pending: str | None,
    mounts: MountTable,
) -> str:
    """Emergency mode until a stop signal (at once if a stop was `pending`),
    then the stop without the supervisor: end every process as the orderly
    stop does (SIGTERM, stop_grace, SIGKILL), sync, unmount what pid1 mounted."""
    result = {"action": pending or "poweroff"}
    stop = asyncio.Event()

    def on_signal(signo: int) -> None:
        if signo in STOP_SIGNALS and not stop.is_set():
            result["action"] = STOP_SIGNALS[signo]
            stop.set()

    reaper.on_signal = on_signal
    if pending is not None:
        store.state.mode, store.state.emergency_reason = Mode.EMERGENCY, reason
        store.changed()
        log.error(f"{reason}; carrying out the {pending} already requested")
        stop.set()
    while True:
        try:
            if not stop.is_set():
                loop.run_until_complete(emergency.run(config, log, store, reaper, reason, stop))
            log.notice(f"emergency stop: {result['action']}")
            loop.run_until_complete(emergency_stop(loop, log, config.stop_grace, mounts))
            return result["action"]
        except BaseException as exc:
            log.error(f"emergency mode failed: {exc!r}; trying again")
            time.sleep(1)


async def emergency_stop(loop: asyncio.AbstractEventLoop, log: Log, grace: float, mounts: MountTable) -> None:
    # Whatever the crashed supervisor left on the loop (and the emergency
    # shells, which would respawn) must not run during the stop.
    others = [task for task in asyncio.all_tasks(loop) if task is not asyncio.current_task()]
    for task in others:
        task.cancel()
    if others:
        await asyncio.wait(others, timeout=2)
    await shutdown.end_processes(log, grace)
    syscalls.sync()
    shutdown.unmount_all(log, mounts.targets())
    syscalls.sync()


def finish(action: str, is_pid1: bool, log: Log) -> int:
    if not is_pid1:
        log.notice(f"{action}: not PID 1, exiting")
        return 0
    syscalls.sync()
    try:
        syscalls.reboot(END_ACTIONS.get(action, syscalls.RebootCommand.POWER_OFF))
    except OSError as exc:
        log.error(f"reboot(2) failed: {exc}")
    last_resort()
    return 0


def last_resort() -> None:
    """Never returns: reap forever. Only reached when everything else failed."""
    while True:
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            time.sleep(1)
        except BaseException:
            time.sleep(1)
