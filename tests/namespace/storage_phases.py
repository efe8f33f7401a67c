"""Test-only phases for the storage tests (`pid1.extra_phases=tests.namespace.storage_phases`).

A no-op `modules` replaces the real one: the test root has no kernel modules
(the host kernel has ext4 built in), and a storage test must not depend on
what a modprobe would do on the machine that runs it. Modules listed in
pid1.extra_phases load after the built-in ones, so this definition wins. It
is the real declaration with another `run`, so it declares the real one's
needs and slots (it leaves them unfilled, as the real one does on a machine
without modules).
"""

from __future__ import annotations

import dataclasses

from pid1.phases import PhaseContext
from pid1.phases.modules import PHASES as BUILTIN


async def no_modules(ctx: PhaseContext) -> str:
    return "skipped in the storage tests (the host kernel has ext4 built in)"


PHASES = [dataclasses.replace(next(p for p in BUILTIN if p.name == "modules"), run=no_modules)]
