"""A stand-in for the network phase in the docker tests that run in the
host's network namespace (which pid1 must not reconfigure): the host's
loopback is the network, and the phase says so."""

from __future__ import annotations

from pid1.phases import Phase, PhaseContext


async def network(ctx: PhaseContext) -> str:
    ctx.state.network.update(mode="host", status="up")
    return "the host's network (test stand-in)"


PHASES = [Phase(name="network", run=network, needs=("images",))]
