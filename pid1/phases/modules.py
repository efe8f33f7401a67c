"""modules: kernel modules (placeholder until the modprobe lands). Needs mounts."""

from __future__ import annotations

from pid1.phases import Phase, PhaseContext


async def run(ctx: PhaseContext) -> str:
    return "not implemented yet"


PHASE = Phase(name="modules", run=run, needs=("mounts",), required=False, doc=__doc__ or "")
