"""storage: the docker data root (placeholder until the label finder lands). Needs modules."""

from __future__ import annotations

from pid1.phases import Phase, PhaseContext


async def run(ctx: PhaseContext) -> str:
    return "not implemented yet"


PHASE = Phase(name="storage", run=run, needs=("mounts", "modules"), doc=__doc__ or "")
