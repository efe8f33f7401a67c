"""The orderly stop: cancel what still runs, run the stop hooks, end every
remaining process (SIGTERM, then SIGKILL after a grace), sync, unmount what
pid1 mounted. It gets a StopPlan (the tasks, hooks, mount table and grace,
which the supervisor hands over), the log, the state and the reaper, and
knows nothing of the supervisor. `end_processes` and `unmount_all` also
serve emergency mode's stop, which has no supervisor to lean on.

Crash-only: nothing here is needed for the next boot to be right; it only
makes the stop quick and clean.
"""

from __future__ import annotations

import asyncio
import errno
import os
import signal
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pid1.linux import syscalls
from pid1.state import uptime
from pid1.state_schema import Mode

if TYPE_CHECKING:
    from pid1.log import Log
    from pid1.phases import StopHook
    from pid1.reaper import Reaper
    from pid1.state import StateStore
    from pid1.wiring import MountTable

HOOK_TIMEOUT = 30.0
CANCEL_WAIT = 5.0  # how long the cancelled phases and services get to end
KILL_WAIT = 5.0
POLL = 0.02


PF_KTHREAD = 0x00200000  # include/linux/sched.h: kernel threads take no signals


def process_table(proc: str = "/proc") -> dict[int, tuple[int, int]]:
    """pid -> (parent pid, task flags) for every process visible in `proc`."""
    table: dict[int, tuple[int, int]] = {}
    for entry in os.listdir(proc):
        if not entry.isdigit():
            continue
        try:
            with open(f"{proc}/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # the command name may hold spaces and parentheses: split after the last ')'
        fields = stat[stat.rindex(b")") + 2 :].split()
        table[int(entry)] = (int(fields[1]), int(fields[6]))
    return table


def user_processes(proc: str = "/proc") -> list[int]:
    """Pids of every other process the stop must end: all user processes when
    PID 1 (kernel threads excluded: kill(-1, 0) still succeeds on them, so it
    cannot say "none left"), only pid1's descendants otherwise."""
    table = process_table(proc)
    me = os.getpid()
    if me == 1:
        return [pid for pid, (_, flags) in table.items() if pid != me and not flags & PF_KTHREAD]
    found: list[int] = []
    frontier = [me]
    while frontier:
        parent = frontier.pop()
        kids = [pid for pid, (ppid, _) in table.items() if ppid == parent]
        found.extend(kids)
        frontier.extend(kids)
    return found


def signal_all(signo: int) -> None:
    """Send signo to every other process: all of the PID namespace when PID 1
    (kill(-1) spares the caller), only pid1's descendants otherwise."""
    if os.getpid() == 1:
        try:
            os.kill(-1, signo)
        except ProcessLookupError:
            pass
        return
    for pid in user_processes():
        try:
            os.kill(pid, signo)
        except ProcessLookupError:
            pass


def any_process_left() -> bool:
    """True while some other user process is alive (zombies count until reaped)."""
    return bool(user_processes())


async def wait_for_no_processes(timeout: float) -> bool:
    deadline = uptime() + timeout
    while any_process_left():
        if uptime() >= deadline:
            return False
        # Descendants of our children are reaped by their own parents, so no
        # SIGCHLD reaches us for them: a short poll is the only signal.
        await asyncio.sleep(POLL)
    return True


async def end_processes(log: Log, grace: float) -> None:
    """SIGTERM to every other process, SIGKILL to what is left after `grace` s."""
    if not any_process_left():
        return
    log.info("sending SIGTERM to all processes")
    signal_all(signal.SIGTERM)
    if await wait_for_no_processes(grace):
        return
    log.warning(f"processes left after {grace:.1f} s: sending SIGKILL")
    signal_all(signal.SIGKILL)
    if not await wait_for_no_processes(KILL_WAIT):
        log.error("processes survived SIGKILL (stuck in the kernel); going on")


def unmount_all(log: Log, mounted: list[str]) -> None:
    """Unmount what pid1 mounted, last first; a busy one is remounted read-only."""
    for target in reversed(mounted):
        try:
            syscalls.umount(target)
            log.info(f"unmounted {target}")
        except OSError as exc:
            if exc.errno in (errno.EBUSY,):
                try:
                    syscalls.mount("none", target, None, syscalls.MS_REMOUNT | syscalls.MS_RDONLY)
                    log.info(f"{target} busy: remounted read-only")
                except OSError as exc2:
                    log.warning(f"cannot unmount or remount {target} read-only: {exc2}")
            else:
                log.warning(f"cannot unmount {target}: {exc}")


@dataclass
class StopPlan:
    """What the stop needs from the one who ran the boot."""

    action: str  # "poweroff", "reboot" or "halt": said in the log
    tasks: list[asyncio.Task]  # what still runs (phases, services, the boot): cancelled first
    # Run last registered first. Read when they run: the live list, as the mounts.
    hooks: Sequence[tuple[str, StopHook]]
    # Unmounted last first, read after everything else ended: a mount a
    # cancelled phase's thread finishes meanwhile is unmounted too.
    mounts: MountTable
    grace: float  # seconds between SIGTERM and SIGKILL (pid1.stop_grace)


async def cancel(tasks: list[asyncio.Task]) -> None:
    """Cancel the tasks still running and give them CANCEL_WAIT s to end."""
    running = [task for task in tasks if not task.done()]
    for task in running:
        task.cancel()
    if running:
        await asyncio.wait(running, timeout=CANCEL_WAIT)


async def run_hook(log: Log, name: str, hook: StopHook) -> None:
    """One stop hook, bounded by HOOK_TIMEOUT. Whatever it raises, even
    CancelledError or SystemExit, is logged and the stop goes on: a hook must
    not end the stop half-way (the supervisor would crash mid-stop). The hook
    runs in this task, not a task of its own (as asyncio.wait_for would
    make): the loop re-raises a task's SystemExit past every handler."""
    log.info(f"stop hook: {name}")
    try:
        async with asyncio.timeout(HOOK_TIMEOUT):
            await hook()
    except TimeoutError:
        log.error(f"stop hook {name} did not end within {HOOK_TIMEOUT:.0f} s: cancelled")
    except asyncio.CancelledError as exc:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise  # the stop itself is being cancelled (emergency mode took over)
        log.error(f"stop hook {name} failed: {exc!r}")
    except BaseException as exc:  # SystemExit too: see the docstring
        log.error(f"stop hook {name} failed: {exc!r}")


async def stop(plan: StopPlan, log: Log, store: StateStore, reaper: Reaper) -> None:
    state = store.state
    state.mode = Mode.STOPPING
    log.notice(f"stopping: {state.stop_reason}")
    await cancel(plan.tasks)
    for name, hook in reversed(plan.hooks):
        await run_hook(log, name, hook)
    await end_processes(log, plan.grace)
    reaper.reap()
    syscalls.sync()
    unmount_all(log, plan.mounts.targets())
    syscalls.sync()
    log.notice(f"stopped: {plan.action} at {uptime():.2f} s")
    store.flush()
