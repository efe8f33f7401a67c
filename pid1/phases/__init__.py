"""Boot phases: what a phase is, what it gets, and the list of them.

A phase is a coroutine function `run(ctx)` with a name, the names of the
phases it needs, and the wiring slots it fills and uses (pid1/wiring.py). The
supervisor runs every phase whose needs are done, concurrently. Each phase
module defines `PHASE` (or `PHASES`) and imports what is heavy (the Docker client,
pyroute2) inside `run`, so that importing this package costs nothing at boot.
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pid1.wiring import MountTable, RestartRegistry, Slot, Wiring, check_wiring

if TYPE_CHECKING:
    from pid1.config import Config
    from pid1.log import Log
    from pid1.reaper import Reaper
    from pid1.state import StateStore

# The built-in phases, in the order the DAG is listed (not the order they run).
BUILTIN_MODULES = (
    "pid1.phases.devices",
    "pid1.phases.mounts",
    "pid1.phases.hostname",
    "pid1.phases.memory",
    "pid1.phases.engine",
    "pid1.phases.modules",
    "pid1.phases.disks",
    "pid1.phases.userdata_volume",
    "pid1.phases.autoformat",
    "pid1.phases.storage",
    "pid1.phases.grow",
    "pid1.phases.userdata",
    "pid1.phases.runcmd",
    "pid1.phases.dockerd",
    "pid1.phases.images",
    "pid1.phases.network",
    "pid1.phases.userdata_url",
    "pid1.phases.ntp",
    "pid1.phases.swarm",
    "pid1.phases.system",
    "pid1.phases.ssh",
    "pid1.phases.vt2",
    "pid1.phases.control",
    "pid1.phases.console_tty",
    "pid1.phases.powerbutton",
    "pid1.phases.console_log",
)


@dataclass(frozen=True)
class Phase:
    name: str
    run: Callable[[PhaseContext], Awaitable[Any]]
    needs: tuple[str, ...] = ()
    # required: failures are retried with backoff until it succeeds (the boot
    # waits for it); optional: a failure is logged and dependents go on.
    required: bool = True
    # The wiring slots this phase fills, and those it reads (each filled by a
    # phase among its needs: select_phases checks it).
    fills: tuple[Slot[Any], ...] = ()
    uses: tuple[Slot[Any], ...] = ()


StopHook = Callable[[], Awaitable[None]]


@dataclass(kw_only=True)
class PhaseContext:
    """What a phase may use. Everything but `wiring` is shared by all phases;
    `wiring` is the phase's own view of the slots (what it declared). The
    supervisor owns the services, stop hooks, mount table and restart
    registry; phases add to them through these."""

    config: Config
    log: Log
    store: StateStore
    reaper: Reaper
    wiring: Wiring
    mounts: MountTable
    restart_actions: RestartRegistry
    # start_service(name, factory): run factory() until it returns, restarted with backoff if it raises.
    start_service: Callable[[str, Callable[[], Awaitable[None]]], None]
    add_stop_hook: Callable[[str, StopHook], None]
    # add_before_stop(callback): called when a stop is requested, before it is logged.
    add_before_stop: Callable[[Callable[[], None]], None]
    # request_stop(action, why): action "poweroff" or "reboot" (the control channel).
    request_stop: Callable[[str, str], None]
    root: str = "/"

    @property
    def state(self):
        return self.store.state

    def path(self, *parts: str) -> str:
        """A path under the context's root (a temporary directory in tests)."""
        joined = "/".join(p.strip("/") for p in parts)
        return self.root.rstrip("/") + "/" + joined


def load_phases(modules: Iterable[str], extra: Iterable[str] = ()) -> tuple[dict[str, Phase], list[str]]:
    """The phases of `modules` (pid1's own: one that fails to import is a bug
    and raises) and of `extra` (pid1.extra_phases: one that does not import
    or defines no phase is left out with a warning naming it and why), and
    the warnings."""
    phases: dict[str, Phase] = {}
    warnings: list[str] = []
    for module_name in modules:
        phases.update(module_phases(importlib.import_module(module_name)))
    for module_name in extra:
        try:
            found = module_phases(importlib.import_module(module_name))
        except (Exception, SystemExit) as exc:  # a typo or a broken module must not stop the boot
            warnings.append(f"pid1.extra_phases: cannot load {module_name!r}: {exc!r}; its phases are left out")
            continue
        if not found:
            warnings.append(f"pid1.extra_phases: {module_name!r} defines no PHASE or PHASES: ignored")
        phases.update(found)
    return phases, warnings


def module_phases(module: Any) -> dict[str, Phase]:
    found = list(getattr(module, "PHASES", ()))
    if hasattr(module, "PHASE"):
        found.append(module.PHASE)
    for phase in found:
        if not isinstance(phase, Phase):
            raise TypeError(f"{module.__name__}: {phase!r} is not a Phase")
    return {phase.name: phase for phase in found}


def select_phases(phases: dict[str, Phase], wanted: Iterable[str]) -> tuple[dict[str, Phase], list[str]]:
    """The wanted phases and everything they need (all phases when `wanted` is
    empty), plus warnings for names that do not exist and needs left unmet.
    ValueError for a dependency cycle, or a phase that uses a slot no phase
    among its needs fills (pid1.wiring.check_wiring)."""
    warnings: list[str] = []
    wanted = list(wanted)
    if wanted == ["none"]:
        return {}, warnings  # supervise and reap only (benchmarks, demos)
    if not wanted:
        chosen = dict(phases)
    else:
        chosen = {}
        stack = []
        for name in wanted:
            if name in phases:
                stack.append(name)
            else:
                warnings.append(f"unknown phase {name!r} in pid1.phases: ignored")
        while stack:
            name = stack.pop()
            if name in chosen:
                continue
            chosen[name] = phases[name]
            stack.extend(n for n in phases[name].needs if n in phases)
    for phase in chosen.values():
        for need in phase.needs:
            if need not in chosen:
                warnings.append(f"phase {phase.name} needs unknown phase {need!r}: treated as done")
    cycle = find_cycle(chosen)
    if cycle:
        raise ValueError(f"phase dependency cycle: {' -> '.join(cycle)}")
    problems = check_wiring(chosen)
    if problems:
        raise ValueError("phase wiring: " + "; ".join(problems))
    return chosen, warnings


def find_cycle(phases: dict[str, Phase]) -> list[str] | None:
    visiting: list[str] = []
    done: set[str] = set()

    def visit(name: str) -> list[str] | None:
        if name in done or name not in phases:
            return None
        if name in visiting:
            return [*visiting[visiting.index(name) :], name]
        visiting.append(name)
        for need in phases[name].needs:
            found = visit(need)
            if found:
                return found
        visiting.pop()
        done.add(name)
        return None

    for name in phases:
        found = visit(name)
        if found:
            return found
    return None
