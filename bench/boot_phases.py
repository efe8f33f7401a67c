"""Bench-only phases (`pid1.extra_phases=bench.boot_phases`).

`sim-*`: a stand-in for the real boot's DAG with its measured durations
(the durations of a real boot under KVM: modules ~0.8 s, dockerd answering
after ~4 s, images ~2 s, DHCP ~2.5 s), each logging a line every 0.1-0.2 s while it works, the way
dockerd's output would, so the view sees a boot's worth of state changes.
The `sim-` prefix keeps them from shadowing the real phases.

`bench-count`: counts the state writes (one per store flush, each of which
tells the view) from the start until every phase named in $PID1_BENCH_UNTIL
(comma-separated) has ended, then writes the count to $PID1_BENCH_OUT.
"""

from __future__ import annotations

import asyncio
import os

from pid1.phases import Phase, PhaseContext
from pid1.state import State

# name, needs, seconds, log lines while running
BOOT = [
    ("sim-devices", (), 0.01, 1),
    ("sim-mounts", ("sim-devices",), 0.02, 1),
    ("sim-modules", ("sim-mounts",), 0.76, 8),
    ("sim-storage", ("sim-modules",), 0.15, 2),
    ("sim-dockerd", ("sim-storage",), 4.15, 30),
    ("sim-images", ("sim-dockerd",), 2.0, 10),
    ("sim-network", ("sim-dockerd",), 2.5, 12),
    ("sim-dom0", ("sim-images",), 1.1, 6),
    ("sim-console", ("sim-images", "sim-network"), 0.9, 6),
]
ENDED = ("done", "failed", "cancelled")


def make(name: str, seconds: float, lines: int):
    async def run(ctx: PhaseContext) -> str:
        for i in range(lines):
            await asyncio.sleep(seconds / lines)
            ctx.log.info(f"{name}: step {i + 1} of {lines}")
        return f"simulated {seconds:.2f} s"

    return run


async def count_writes(ctx: PhaseContext) -> str:
    until = [name for name in os.environ.get("PID1_BENCH_UNTIL", "").split(",") if name]
    writes = [0]
    ended = asyncio.Event()

    def listener(state: State) -> None:
        writes[0] += 1
        if all(state.phases.get(n) is not None and state.phases[n].status in ENDED for n in until):
            ended.set()

    ctx.store.listeners.append(listener)
    await ended.wait()
    with open(os.environ["PID1_BENCH_OUT"], "w") as f:
        f.write(f"{writes[0]}\n")
    return f"{writes[0]} state writes until {', '.join(until)} ended"


PHASES = [
    Phase(name=name, run=make(name, seconds, lines), needs=needs, required=True) for name, needs, seconds, lines in BOOT
] + [Phase(name="bench-count", run=count_writes, required=False)]
