"""A PhaseContext for calling one phase (or a function that takes a context)
outside the supervisor, in a unit test: the config, root, log, store and
wiring given, the phase's own view of the wiring, and every callback
(start_service, add_stop_hook, add_before_stop, request_stop) one that
fails the test when called, naming the phase. What the test leaves out is
None, so a phase that touches it fails loudly too."""

from __future__ import annotations

from typing import Any

from pid1.config import Config
from pid1.log import Log
from pid1.phases import Phase, PhaseContext
from pid1.state import StateStore
from pid1.wiring import MountTable, RestartRegistry, Wiring


def phase_context(
    phase: Phase,
    *,
    config: Config | None = None,
    root: str = "/",
    log: Log | None = None,
    store: StateStore | None = None,
    wiring: Wiring | None = None,
) -> PhaseContext:
    def unused(*args: Any) -> None:
        raise AssertionError(f"phase {phase.name} called what this test gives it no use for: {args!r}")

    return PhaseContext(
        config=config if config is not None else Config(),
        log=log,  # type: ignore[arg-type]  # None: a call on it fails the test
        store=store,  # type: ignore[arg-type]
        reaper=None,  # type: ignore[arg-type]
        wiring=(wiring if wiring is not None else Wiring()).view(phase),
        mounts=MountTable(),
        restart_actions=RestartRegistry(),
        start_service=unused,
        add_stop_hook=unused,
        add_before_stop=unused,
        request_stop=unused,
        root=root,
    )
