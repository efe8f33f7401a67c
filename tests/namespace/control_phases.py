"""Test-only phase for the control channel tests, added with
`pid1.extra_phases=tests.namespace.control_phases`: `fake_restarts`
registers restart actions for console and dockerd (not dom0, to test the
"nothing registered" error) that append `restart NAME` to $PID1_TEST_OUT.
The console action takes PID1_TEST_RESTART_DELAY seconds (default 0), so a
test can see a second request coalesce into the running one.
"""

from __future__ import annotations

import asyncio
import os

from pid1.phases import Phase, PhaseContext


def record(line: str) -> None:
    with open(os.environ["PID1_TEST_OUT"], "a") as f:
        f.write(line + "\n")


def action(name: str):
    async def restart() -> None:
        record(f"restart {name} begin")
        await asyncio.sleep(float(os.environ.get("PID1_TEST_RESTART_DELAY", "0")))
        if os.environ.get("PID1_TEST_RESTART_FAIL") == name:
            raise RuntimeError(f"{name} would not restart")
        record(f"restart {name} end")

    return restart


async def run(ctx: PhaseContext) -> str:
    for name in ("console", "dockerd"):
        ctx.restart_actions.register(name, action(name))
    return "restart actions for console, dockerd"


PHASES = [Phase(name="fake_restarts", run=run, needs=(), required=False)]
