"""Test-only phases for the storage tests (`pid1.extra_phases=tests.namespace.storage_phases`).

A no-op `modules` replaces the real one: the test root has no kernel modules
(the host kernel has ext4 built in), and a storage test must not depend on
what a modprobe would do on the machine that runs it. Modules listed in
pid1.extra_phases load after the built-in ones, so this definition wins. It
declares the real one's slots (it may leave them unfilled, as the real one
does on a machine without modules).
"""

from __future__ import annotations

from pid1.phases import Phase, PhaseContext
from pid1.wiring import Wiring


async def no_modules(ctx: PhaseContext) -> str:
    return "skipped in the storage tests (the host kernel has ext4 built in)"


PHASES = [
    Phase(
        name="modules",
        run=no_modules,
        needs=("mounts",),
        required=False,
        fills=(Wiring.module_index, Wiring.disk_drivers_loaded_at),
    )
]
