"""Test-only phases, added with `pid1.extra_phases=tests.namespace.scenario_phases`.

Each is driven by environment variables the test sets (pid1's environment),
so one module serves every namespace scenario:
  PID1_TEST_OUT        a file the phases append events to (one per line)
  PID1_TEST_SPAWN      "1": spawn children for the signal-state and stop tests
  PID1_TEST_RAISE      "optional" / "required": a phase that raises
  PID1_TEST_SLOW_HOOK  seconds the second stop hook takes
  PID1_TEST_ORPHANS    N: spawn a child that makes N orphans by double fork
  PID1_TEST_CRASH      "1": a phase that crashes the supervisor itself
"""

from __future__ import annotations

import asyncio
import os
import sys

from pid1.phases import Phase, PhaseContext


def record(line: str) -> None:
    with open(os.environ["PID1_TEST_OUT"], "a") as f:
        f.write(line + "\n")


async def spawn_children(ctx: PhaseContext) -> str:
    orphans = os.environ.get("PID1_TEST_ORPHANS")
    if orphans:
        storm = os.path.join(os.path.dirname(__file__), "orphan_storm.py")
        maker = ctx.reaper.spawn([sys.executable, storm, orphans])
        return f"orphan maker exited {await maker.wait()}"
    if os.environ.get("PID1_TEST_SPAWN") != "1":
        return "nothing to spawn"
    out = os.environ["PID1_TEST_OUT"]
    sleeper = ctx.reaper.spawn(["sleep", "1000"])
    trapper = ctx.reaper.spawn(
        [
            "sh",
            "-c",
            f'trap "echo child-got-term >> {out}; exit 0" TERM; echo trapper-ready >> {out}; '
            "while :; do sleep 0.05; done",
        ]
    )
    ignorer = ctx.reaper.spawn(["sh", "-c", f'trap "" TERM; echo ignorer-ready >> {out}; while :; do sleep 0.05; done'])
    niced = ctx.reaper.spawn(["sleep", "1000"], nice=7)
    record(f"spawned sleeper={sleeper.pid} trapper={trapper.pid} ignorer={ignorer.pid} niced={niced.pid}")

    async def first_hook() -> None:
        record("hook-first-registered")

    async def second_hook() -> None:
        record("hook-second-registered")
        await asyncio.sleep(float(os.environ.get("PID1_TEST_SLOW_HOOK", "0")))

    ctx.add_stop_hook("first-registered", first_hook)
    ctx.add_stop_hook("second-registered", second_hook)
    return f"sleeper={sleeper.pid}"


async def raise_error(ctx: PhaseContext) -> str:
    raise RuntimeError("scenario phase failed on purpose")


async def after_raise(ctx: PhaseContext) -> str:
    record("after-raise ran")
    return "ran"


mode = os.environ.get("PID1_TEST_RAISE", "")
PHASES = [Phase(name="spawner", run=spawn_children)]
if mode:
    PHASES += [
        Phase(name="boom", run=raise_error, required=(mode == "required")),
        Phase(name="after_boom", run=after_raise, needs=("boom",)),
    ]


async def crash_supervisor(ctx: PhaseContext) -> str:
    # SystemExit is not an Exception: it escapes the phase wrapper and the
    # event loop, as a bug in the supervisor itself would.
    raise SystemExit("scenario: supervisor crash")


if os.environ.get("PID1_TEST_CRASH") == "1":
    PHASES.append(Phase(name="crash", run=crash_supervisor, needs=("spawner",)))
