"""Bench-only phases (`pid1.extra_phases=bench.boot_phases`): a stand-in for
the real boot's DAG with its measured durations (DESIGN.md: modules ~0.8 s,
dockerd answering after ~4 s, images ~2 s, DHCP ~2.5 s), each logging a
line every 0.1-0.2 s while it works the way dockerd's output would, so the
view sees a boot's worth of state changes. Phase names carry a `sim-` prefix
so they never shadow the real phases.

`sim-devices` also counts the state writes (one per store flush, each of
which tells the view) and `sim-console` writes the count so far to
$PID1_BENCH_OUT when the simulated boot ends.
"""

from __future__ import annotations

import asyncio
import os

from pid1.phases import Phase, PhaseContext

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

flushes = [0]


def make(name: str, seconds: float, lines: int):
    async def run(ctx: PhaseContext) -> str:
        if name == "sim-devices":
            ctx.store.listeners.append(lambda state: flushes.__setitem__(0, flushes[0] + 1))
        for i in range(lines):
            await asyncio.sleep(seconds / lines)
            ctx.log.info(f"{name}: step {i + 1} of {lines}")
        if name == "sim-console":
            with open(os.environ["PID1_BENCH_OUT"], "w") as f:
                f.write(f"{flushes[0]}\n")
        return f"simulated {seconds:.2f} s"

    return run


PHASES = [
    Phase(name=name, run=make(name, seconds, lines), needs=needs, required=True, doc="simulated boot phase")
    for name, needs, seconds, lines in BOOT
]
